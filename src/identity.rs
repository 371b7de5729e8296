//! Who a session is: the client as seen on the wire ([`ClientInfo`]) and
//! the credentials it logged in with ([`Credentials`]). Shared by the
//! session, auth and backend layers, so it lives below all three.

use std::fmt;
use std::net::SocketAddr;

/// Client credentials. Debug output never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    /// The password, or for [`Mechanism::is_oauth`] mechanisms the OAuth
    /// bearer token.
    pub password: Vec<u8>,
    /// SASL authorization identity, when it differs from `user`.
    pub authzid: Option<String>,
    pub mechanism: Mechanism,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("authzid", &self.authzid)
            .field("mechanism", &self.mechanism)
            .finish()
    }
}

/// How the client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// User name and password: the LOGIN command or AUTHENTICATE LOGIN.
    Login,
    /// AUTHENTICATE PLAIN (RFC 4616).
    Plain,
    /// AUTHENTICATE OAUTHBEARER (RFC 7628): the password is a bearer token.
    OAuthBearer,
    /// AUTHENTICATE XOAUTH2 (Google's format): the password is a bearer token.
    XOAuth2,
}

impl Mechanism {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mechanism::Login => "LOGIN",
            Mechanism::Plain => "PLAIN",
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::XOAuth2 => "XOAUTH2",
        }
    }

    /// True when the password is an OAuth bearer token, which only the
    /// token's issuer (through the backend) can verify.
    pub fn is_oauth(&self) -> bool {
        matches!(self, Mechanism::OAuthBearer | Mechanism::XOAuth2)
    }
}

/// Who the client is, as seen on the wire.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client's address (after PROXY protocol, when used).
    pub peer: SocketAddr,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// Session id, shared with the backend (x-session-id) and in logs.
    pub session_id: String,
    /// Proxy hops this session may still take (`x-proxy-ttl`, as Dovecot's
    /// proxy counts them): [`PROXY_TTL`] from a client, less from a trusted
    /// proxy in front that said so. At 1 or less a login is refused
    /// (a routing loop between proxies).
    pub proxy_ttl: u32,
}

/// Hops a session may take through proxies (Dovecot's LOGIN_PROXY_TTL).
pub const PROXY_TTL: u32 = 5;

impl ClientInfo {
    /// A client connected from `peer` to `local`.
    pub fn new(peer: SocketAddr, local: SocketAddr, session_id: String) -> Self {
        ClientInfo {
            peer,
            local,
            session_id,
            proxy_ttl: PROXY_TTL,
        }
    }
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
