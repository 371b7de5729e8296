//! One client connection: the sans-I/O pre-auth state machine
//! ([`preauth`]), the client stream type ([`stream`]), the thin driver
//! that runs them over sockets ([`conn`]) and the login flow it calls
//! (`login`: auth → route → backend login).

pub mod conn;
pub mod end;
mod login;
pub mod mailbox;
pub mod park;
pub mod parked;
pub mod preauth;
pub mod stream;

use std::net::SocketAddr;

pub use preauth::{Credentials, Mechanism};

/// Who the client is, as seen on the wire.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client's address (after PROXY protocol, when used).
    pub peer: SocketAddr,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// Session id, shared with the backend (x-session-id) and in logs.
    pub session_id: String,
}

/// A short unique session id (base64 of time and a counter), like Dovecot's.
pub fn new_session_id() -> String {
    use base64::Engine;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut bytes = [0u8; 12];
    bytes[..6].copy_from_slice(&t.to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&n.to_be_bytes()[2..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
