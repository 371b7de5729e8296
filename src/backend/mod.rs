//! Connections to backend IMAP servers: connect (plaintext, STARTTLS or
//! implicit TLS), read the greeting, forward the client's address to trusted
//! backends (ID x-originating-ip…), log in, learn the post-login
//! capabilities. The command text is built by the pure functions in
//! [`login`]; `connect.rs` and `login_io.rs` are the I/O around them. Here
//! the connection types, the errors and the line reader they share.

pub mod command;
mod connect;
pub mod health;
pub mod login;
mod login_io;

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::imap::framing::Framer;
use crate::imap::response::parse_capability_data;

pub use command::Answer;
pub use connect::connect;
pub(crate) use connect::tls_wrap;
pub use login::LoginStep;

/// The log target of the backend connection's lines, also those logged
/// from `login_io.rs`: `imapmux::backend`.
const LOG_TARGET: &str = module_path!();

/// A byte stream to a backend (TCP or TLS over TCP).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

pub type BoxStream = Box<dyn Stream>;

/// Where a backend connection attempt failed. Errors that happened after
/// credentials may have reached the backend are wrapped in
/// [`BackendError::Login`]; see [`BackendError::retry`].
#[derive(Debug, Error)]
pub enum BackendError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("timed out during {0}")]
    Timeout(&'static str),
    #[error("TLS: {0}")]
    Tls(io::Error),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("backend refused service: {0}")]
    Refused(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("connection closed by backend")]
    Closed,
    /// Failed once the login (and with it the credentials) was on its way
    /// to the backend: trying another backend would send them again.
    #[error("login: {0}")]
    Login(Box<BackendError>),
}

impl BackendError {
    /// Every value [`kind`](Self::kind) returns (metric label values).
    pub const KINDS: &'static [&'static str] = &[
        "connect", "timeout", "tls", "io", "refused", "protocol", "closed",
    ];

    /// Short label for logs and metrics (a [`Login`](Self::Login) error is
    /// labelled by what went wrong, like any other).
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Login(e) => e.kind(),
            BackendError::Connect(_) => "connect",
            BackendError::Timeout(_) => "timeout",
            BackendError::Tls(_) => "tls",
            BackendError::Io(_) => "io",
            BackendError::Refused(_) => "refused",
            BackendError::Protocol(_) => "protocol",
            BackendError::Closed => "closed",
        }
    }

    /// True when the error happened before any credentials were sent to
    /// the backend, so another candidate backend may be tried: every error
    /// of [`connect()`], and of [`Connected::login`] those before its first
    /// write. Meant for that candidate choice; a command failing on a
    /// connection already logged in is not such a question.
    pub fn retry(&self) -> bool {
        !matches!(self, BackendError::Login(_))
    }

    /// A [`Timeout`](Self::Timeout) renamed after the stage it happened in.
    fn at_stage(self, stage: &'static str) -> Self {
        match self {
            BackendError::Timeout(_) => BackendError::Timeout(stage),
            e => e,
        }
    }
}

/// An established, not yet logged-in backend connection.
pub struct Connected {
    pub(crate) stream: BoxStream,
    reader: Reader,
    pub capabilities: Vec<String>,
}

/// A logged-in backend connection, ready to relay.
pub struct LoggedIn {
    pub stream: BoxStream,
    /// Bytes already read from the backend after the login response.
    pub buf: BytesMut,
    pub capabilities: Vec<String>,
    /// When the backend accepted the login: the reuse pool hands out no
    /// connection older than `multiplex.reuse_max_age` (credentials are
    /// verified again after that, so a revoked password stops working).
    pub logged_in_at: std::time::Instant,
}

/// The backend's answer to the login.
pub enum LoginOutcome {
    Ok(LoggedIn),
    /// Tagged NO/BAD: relay status, code and text to the client.
    Rejected {
        status: &'static str,
        code: Option<String>,
        text: String,
    },
}

const MAX_LINE: usize = 65_536;

/// Reads backend response lines before the relay starts.
struct Reader {
    buf: BytesMut,
    framer: Framer,
    timeout: Duration,
}

impl Reader {
    fn new(timeout: Duration) -> Self {
        Reader {
            buf: BytesMut::with_capacity(4096),
            framer: Framer::new(MAX_LINE),
            timeout,
        }
    }

    /// Read the next complete line (literal data in it is skipped).
    async fn read_line<S: AsyncRead + Unpin + ?Sized>(
        &mut self,
        s: &mut S,
        stage: &'static str,
    ) -> Result<Bytes, BackendError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        command::next_line(s, &mut self.buf, &mut self.framer, deadline, stage).await
    }

    /// Send a command and wait for its tagged OK; untagged lines are dropped.
    async fn command_ok<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
        &mut self,
        s: &mut S,
        tag: &str,
        cmd: &str,
        stage: &'static str,
    ) -> Result<(), BackendError> {
        match command::run(s, &mut self.buf, tag, cmd, self.timeout, |_| {})
            .await
            .map_err(|e| e.at_stage(stage))?
        {
            Answer::Ok => Ok(()),
            Answer::No(text) | Answer::Bad(text) => {
                Err(BackendError::Refused(format!("{stage}: {text}")))
            }
        }
    }

    /// The capabilities from `* CAPABILITY` (none if refused).
    async fn capability<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
        &mut self,
        s: &mut S,
    ) -> Result<Vec<String>, BackendError> {
        let mut caps = Vec::new();
        command::run(s, &mut self.buf, "C1", "CAPABILITY", self.timeout, |l| {
            if let Some(c) = parse_capability_data(l) {
                caps = c;
            }
        })
        .await
        .map_err(|e| e.at_stage("capability"))?;
        Ok(caps)
    }
}

/// Capabilities passed to the client after login: the backend's, minus
/// what cannot work through the proxy (COMPRESS changes framing; the
/// pre-login-only ones make no sense after login).
pub fn client_capabilities(backend_caps: &[String]) -> String {
    backend_caps
        .iter()
        .filter(|c| {
            let u = c.to_ascii_uppercase();
            !(u.starts_with("COMPRESS=")
                || u == "STARTTLS"
                || u == "LOGINDISABLED"
                || u.starts_with("AUTH="))
        })
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_errors_keep_the_kind_of_their_cause() {
        let cause = || BackendError::Io(std::io::Error::other("x"));
        assert!(cause().retry());
        let e = BackendError::Login(Box::new(cause()));
        assert_eq!(e.kind(), "io");
        assert!(!e.retry());
        assert_eq!(e.to_string(), "login: I/O: x");
    }
}
