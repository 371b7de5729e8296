//! One client connection: the sans-I/O pre-auth state machine
//! ([`preauth`]), the client stream type ([`stream`]), the thin driver
//! that runs them over sockets ([`conn`]) and the login flow it calls
//! (`login`: auth → route → backend login).

pub mod conn;
pub mod end;
pub(crate) mod login;
pub mod mailbox;
pub mod preauth;
pub mod stream;

pub use crate::identity::{new_session_id, ClientInfo, Credentials, Mechanism};
