//! Multiplexing: backend connections follow active users, not open
//! clients. Everything that makes that so lives here:
//!
//! - [`pool`]: logged-in backend connections kept after a client's LOGOUT
//!   (per backend, mailbox owner and credentials; aged out), handed to the
//!   owner's next login after a NOOP probe.
//! - [`park`]: IDLE offload. A client idling long enough is parked: its
//!   backend connection is released, its selected mailbox's view
//!   ([`view`]: UIDs, flags or modseq) is kept, and it is caught up with
//!   exactly the responses it would have seen attached, until it needs the
//!   backend again.
//! - [`watch`]: one watcher per (backend, mailbox owner) shared by that
//!   owner's parked sessions: it learns of changes (push, else polling)
//!   and answers snapshots of a mailbox.
//! - [`push`] and [`wake`]: the push endpoint's body format and secret
//!   (Dovecot's push-notification plugin via Lua/OX), and the sink that
//!   wakes watchers.
//! - [`poll`] and [`doveadm`]: polling without a connection per user: one
//!   batch request per backend and interval to Dovecot's doveadm HTTP API
//!   for every watched mailbox; a change wakes its watcher as a push does.
//! - [`fanout`]: a push that reaches one replica is forwarded to the
//!   others (peers from config or DNS; bounded queues; never forwarded
//!   twice).
//!
//! Identity (who a session is) comes from [`crate::identity`]; connections
//! and commands from [`crate::backend`]. Sessions use this module; it does
//! not reach back into the relay.

pub mod doveadm;
pub mod fanout;
pub mod park;
pub mod parked;
pub mod poll;
pub mod pool;
pub mod push;
pub mod view;
pub mod wake;
pub mod watch;
