//! One client connection: the sans-I/O pre-auth state machine
//! ([`preauth`]), the thin driver that runs it and the relay over sockets
//! ([`conn`]) and the login flow it calls (`login`: auth → route →
//! backend login). The types other layers share with it live below them
//! all: [`crate::stream`], [`crate::lifecycle`], [`crate::imap::mailbox`].

pub mod conn;
pub(crate) mod login;
pub mod preauth;

pub use crate::identity::{new_session_id, ClientInfo, Credentials, Mechanism};
