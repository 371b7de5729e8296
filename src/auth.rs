//! Authentication: decides whether a client may log in and with which
//! credentials imapmux logs in to the backend. This issue ships the
//! passthrough authenticator (the backend's verdict is final); other
//! sources plug in behind the same trait.

use async_trait::async_trait;

use crate::session::{ClientInfo, Credentials};

/// What an authenticator decided.
#[derive(Debug, Clone)]
pub enum AuthDecision {
    /// Log in to the backend with these credentials. `verified` is true when
    /// the authenticator checked the password itself; otherwise the
    /// backend's answer is the verdict. `backend` may name the backend the
    /// directory assigned to the user.
    Login {
        credentials: Credentials,
        backend: Option<String>,
        verified: bool,
    },
    /// Refuse, with an IMAP response code (e.g. `AUTHENTICATIONFAILED`).
    Reject { code: &'static str, text: String },
}

#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    async fn authenticate(&self, credentials: &Credentials, client: &ClientInfo) -> AuthDecision;
}

/// Log in to the backend with the client's own credentials.
#[derive(Debug, Default)]
pub struct Passthrough;

#[async_trait]
impl Authenticator for Passthrough {
    async fn authenticate(&self, credentials: &Credentials, _client: &ClientInfo) -> AuthDecision {
        AuthDecision::Login {
            credentials: credentials.clone(),
            backend: None,
            verified: false,
        }
    }
}
