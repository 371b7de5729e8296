//! Connections to backend IMAP servers: connect (plaintext, STARTTLS or
//! implicit TLS), read the greeting, forward the client's address to trusted
//! backends (ID x-originating-ip…), log in, learn the post-login
//! capabilities. The command text is built by the pure functions in
//! [`login`]; this module is the I/O around them.

pub mod command;
pub mod health;
pub mod login;
pub mod pool;
pub mod wake;
pub mod watch;

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::BackendTls;
use crate::imap::framing::Framer;
use crate::imap::response::{parse_capability_data, parse_status, Kind, Status, StatusLine};
use crate::route::Backend;
use crate::session::{ClientInfo, Credentials};

pub use command::Answer;
pub use login::LoginStep;

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
    /// of [`connect`], and of [`Connected::login`] those before its first
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

/// Read the greeting: its capabilities, if it carried them.
async fn greeting<S: AsyncRead + Unpin + ?Sized>(
    r: &mut Reader,
    s: &mut S,
) -> Result<Vec<String>, BackendError> {
    let line = r.read_line(s, "greeting").await?;
    let status =
        parse_status(&line).ok_or_else(|| BackendError::Protocol("unparsable greeting".into()))?;
    match status.status {
        Status::Ok => Ok(status.capabilities().unwrap_or_default()),
        Status::Bye => Err(BackendError::Refused(status.text)),
        _ => Err(BackendError::Protocol("unexpected greeting".into())),
    }
}

/// Connect to `backend`, (START)TLS as configured, read the greeting and
/// the pre-login capabilities. Every error here happened before any
/// credentials were sent, so another backend may be tried.
pub async fn connect(
    backend: &Backend,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Connected, BackendError> {
    let mut tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(&backend.cfg.address))
        .await
        .map_err(|_| BackendError::Timeout("connect"))?
        .map_err(BackendError::Connect)?;
    tcp.set_nodelay(true).map_err(BackendError::Connect)?;
    let mut reader = Reader::new(response_timeout);
    let (mut stream, mut caps): (BoxStream, Vec<String>) = match backend.cfg.tls {
        BackendTls::None => {
            let caps = greeting(&mut reader, &mut tcp).await?;
            (Box::new(tcp), caps)
        }
        BackendTls::Implicit => {
            let mut tls = tls_wrap(backend, tcp, connect_timeout).await?;
            let caps = greeting(&mut reader, &mut tls).await?;
            (Box::new(tls), caps)
        }
        BackendTls::Starttls => {
            greeting(&mut reader, &mut tcp).await?;
            reader
                .command_ok(&mut tcp, "S1", "STARTTLS", "starttls")
                .await?;
            if !reader.buf.is_empty() {
                return Err(BackendError::Protocol(
                    "data pipelined after STARTTLS response".into(),
                ));
            }
            reader = Reader::new(response_timeout);
            // Capabilities learned before TLS are discarded (RFC 9051 §6.2.1).
            (
                Box::new(tls_wrap(backend, tcp, connect_timeout).await?),
                Vec::new(),
            )
        }
    };
    if caps.is_empty() {
        caps = reader.capability(&mut stream).await?;
    }
    Ok(Connected {
        stream,
        reader,
        capabilities: caps,
    })
}

async fn tls_wrap(
    backend: &Backend,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, BackendError> {
    let cfg = backend
        .tls
        .clone()
        .ok_or_else(|| BackendError::Protocol("TLS requested without a TLS config".into()))?;
    let connector = tokio_rustls::TlsConnector::from(cfg);
    tokio::time::timeout(timeout, connector.connect(backend.server_name.clone(), tcp))
        .await
        .map_err(|_| BackendError::Timeout("TLS handshake"))?
        .map_err(BackendError::Tls)
}

/// What [`Connected::login`] sends: the first write (ID, then the login
/// command), the answers to the backend's expected `+` challenges, and the
/// answer to an unexpected one.
struct LoginPlan {
    first: Vec<u8>,
    /// Answers to `+` challenges, last one first.
    pending: Vec<Vec<u8>>,
    error_answer: Vec<u8>,
    id_sent: bool,
}

impl LoginPlan {
    fn new(
        creds: &Credentials,
        client: Option<&ClientInfo>,
        caps: &[String],
    ) -> Result<LoginPlan, BackendError> {
        let mut first = Vec::new();
        if let Some(client) = client {
            first.extend_from_slice(&login::id_command("I1", client));
        }
        let steps = login::login_steps("L1", creds, caps).map_err(BackendError::Refused)?;
        let mut pending = Vec::new();
        // Unexpected challenges are cancelled, unless the mechanism says otherwise.
        let mut error_answer = b"*\r\n".to_vec();
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                LoginStep::Send(b) if i == 0 => first.extend_from_slice(&b),
                LoginStep::Send(b) | LoginStep::AfterContinuation(b) => pending.push(b),
                LoginStep::OnErrorChallenge(b) => error_answer = b,
            }
        }
        pending.reverse();
        Ok(LoginPlan {
            first,
            pending,
            error_answer,
            id_sent: client.is_some(),
        })
    }
}

impl Connected {
    /// Forward the client's address (trusted backends only), then log in.
    /// An error once the first byte of the login is written is a
    /// [`BackendError::Login`] (not [`retry`](BackendError::retry)able);
    /// before that (the backend lacks the mechanism) it is not.
    pub async fn login(
        mut self,
        creds: &Credentials,
        client: Option<&ClientInfo>,
    ) -> Result<LoginOutcome, BackendError> {
        let plan = LoginPlan::new(creds, client, &self.capabilities)?;
        let wrap = |e| BackendError::Login(Box::new(e));
        let (st, caps_from_data) = self.exchange(plan).await.map_err(wrap)?;
        match st.status {
            Status::Ok => {
                let caps = match st.capabilities().or(caps_from_data) {
                    Some(c) => c,
                    None => self
                        .reader
                        .capability(&mut self.stream)
                        .await
                        .map_err(wrap)?,
                };
                Ok(LoginOutcome::Ok(LoggedIn {
                    stream: self.stream,
                    buf: self.reader.buf,
                    capabilities: caps,
                    logged_in_at: std::time::Instant::now(),
                }))
            }
            Status::No | Status::Bad => Ok(LoginOutcome::Rejected {
                status: if st.status == Status::No { "NO" } else { "BAD" },
                code: st.code,
                text: st.text,
            }),
            _ => Err(wrap(BackendError::Protocol(
                "unexpected login response".into(),
            ))),
        }
    }

    /// Send the plan and answer the challenges, up to the login's tagged
    /// status; also the capabilities of a `* CAPABILITY` seen meanwhile.
    async fn exchange(
        &mut self,
        mut plan: LoginPlan,
    ) -> Result<(StatusLine, Option<Vec<String>>), BackendError> {
        self.stream.write_all(&plan.first).await?;
        self.stream.flush().await?;
        let mut id_done = !plan.id_sent;
        let mut caps_from_data: Option<Vec<String>> = None;
        loop {
            let line = self.reader.read_line(&mut self.stream, "login").await?;
            if line.starts_with(b"+") {
                let answer = match plan.pending.pop() {
                    Some(next) => next,
                    None => {
                        // A SASL error challenge (OAuth: base64 JSON with
                        // the reason) or an unexpected one: answer it so
                        // that the backend finishes with its tagged status.
                        tracing::debug!(
                            challenge = %login::describe_challenge(&line),
                            "backend sent a SASL error challenge"
                        );
                        std::mem::replace(&mut plan.error_answer, b"*\r\n".to_vec())
                    }
                };
                self.stream.write_all(&answer).await?;
                self.stream.flush().await?;
                continue;
            }
            if let Some(c) = parse_capability_data(&line) {
                caps_from_data = Some(c);
                continue;
            }
            let Some(st) = parse_status(&line) else {
                continue;
            };
            match &st.kind {
                Kind::Tagged(t) if t == "I1" => id_done = true,
                Kind::Tagged(t) if t == "L1" => {
                    if !id_done {
                        return Err(BackendError::Protocol("login answered before ID".into()));
                    }
                    return Ok((st, caps_from_data));
                }
                Kind::Untagged if st.status == Status::Bye => {
                    return Err(BackendError::Refused(st.text))
                }
                _ => {}
            }
        }
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
    use crate::session::Mechanism;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    fn connected(stream: tokio::io::DuplexStream, caps: &str) -> Connected {
        Connected {
            stream: Box::new(stream),
            reader: Reader::new(Duration::from_secs(5)),
            capabilities: caps.split(' ').map(String::from).collect(),
        }
    }

    fn oauth(mechanism: Mechanism) -> Credentials {
        Credentials {
            user: "u".into(),
            password: b"tok".to_vec(),
            authzid: None,
            mechanism,
        }
    }

    /// A backend that refuses the token the way Dovecot does: an error
    /// challenge, then (once answered) a tagged NO. Returns what it got.
    async fn refusing_backend(io: tokio::io::DuplexStream) -> Vec<String> {
        let (r, mut w) = tokio::io::split(io);
        let mut r = BufReader::new(r);
        let mut got = Vec::new();
        for reply in [
            &b"+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\n"[..],
            b"L1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
        ] {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            got.push(line);
            w.write_all(reply).await.unwrap();
        }
        got
    }

    #[tokio::test]
    async fn oauth_error_challenge_is_answered_and_the_no_relayed() {
        for (mech, answer) in [
            (Mechanism::OAuthBearer, "AQ==\r\n"),
            (Mechanism::XOAuth2, "\r\n"),
        ] {
            let (ours, theirs) = tokio::io::duplex(4096);
            let backend = tokio::spawn(refusing_backend(theirs));
            let caps = format!("IMAP4rev1 SASL-IR AUTH=PLAIN AUTH={}", mech.as_str());
            let outcome = connected(ours, &caps)
                .login(&oauth(mech), None)
                .await
                .unwrap();
            let LoginOutcome::Rejected { status, code, .. } = outcome else {
                panic!("login accepted");
            };
            assert_eq!(
                (status, code.as_deref()),
                ("NO", Some("AUTHENTICATIONFAILED"))
            );
            let got = backend.await.unwrap();
            assert!(
                got[0].starts_with(&format!("L1 AUTHENTICATE {} ", mech.as_str())),
                "{got:?}"
            );
            assert_eq!(got[1], answer);
        }
    }

    #[tokio::test]
    async fn oauth_without_backend_mechanism_sends_nothing() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let err = connected(ours, "IMAP4rev1 SASL-IR AUTH=PLAIN")
            .login(&oauth(Mechanism::XOAuth2), None)
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(&err, BackendError::Refused(m) if m.contains("AUTH=XOAUTH2")),
            "{err}"
        );
        // Nothing was sent: another backend may be tried.
        assert!(err.retry());
        // the connection was dropped without a byte written
        let mut buf = Vec::new();
        theirs.read_to_end(&mut buf).await.unwrap();
        assert!(buf.is_empty(), "{buf:?}");
    }

    /// A backend that reads the login and answers `reply` (then closes).
    async fn login_with(reply: &'static [u8]) -> BackendError {
        let (ours, theirs) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(theirs);
            let mut line = String::new();
            BufReader::new(r).read_line(&mut line).await.unwrap();
            w.write_all(reply).await.unwrap();
            if reply.is_empty() {
                return; // closes at once
            }
            std::future::pending::<()>().await;
        });
        let creds = Credentials {
            user: "u".into(),
            password: b"pw".to_vec(),
            authzid: None,
            mechanism: Mechanism::Login,
        };
        let mut c = connected(ours, "IMAP4rev1 AUTH=PLAIN");
        c.reader = Reader::new(Duration::from_millis(300));
        c.login(&creds, None).await.err().expect("login failed")
    }

    #[tokio::test]
    async fn errors_once_the_login_is_sent_are_not_retried() {
        for (reply, kind) in [
            (&b""[..], "closed"),
            (b"* BYE going away\r\n", "refused"),
            (b"* OK still thinking\r\n", "timeout"),
            (b"L1 PREAUTH what\r\n", "protocol"),
            // OK without capabilities: the CAPABILITY asked after it fails.
            (b"L1 OK done\r\n* BYE\r\n", "refused"),
        ] {
            let e = login_with(reply).await;
            assert!(matches!(e, BackendError::Login(_)), "{e:?}");
            assert_eq!(e.kind(), kind, "{e}");
            assert!(!e.retry(), "{e}");
        }
    }

    fn backend_at(addr: std::net::SocketAddr) -> std::sync::Arc<Backend> {
        let cfg = crate::config::Config::parse(
            &format!(
                "[[listener]]\naddress = \"127.0.0.1:1143\"\nmode = \"plaintext\"\n\
                 [[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b1\"\naddress = \"{addr}\"\n"
            ),
            std::path::Path::new("t"),
        )
        .unwrap();
        let router = crate::route::Router::from_config(&cfg).unwrap();
        router.pools[0].backends[0].clone()
    }

    /// A backend on a local port that greets each connection with
    /// `greeting`, answers a CAPABILITY with BYE, then keeps it open.
    async fn greeting_backend(greeting: &'static [u8]) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            c.write_all(greeting).await.unwrap();
            if greeting.is_empty() {
                return;
            }
            let mut line = String::new();
            let (r, mut w) = c.split();
            let _ = BufReader::new(r).read_line(&mut line).await;
            let _ = w.write_all(b"* BYE no capabilities today\r\n").await;
            std::future::pending::<()>().await;
        });
        addr
    }

    #[tokio::test]
    async fn connect_errors_are_retried() {
        let t = Duration::from_millis(300);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = connect(&backend_at(closed), t, t)
            .await
            .err()
            .expect("refused");
        assert_eq!(e.kind(), "connect");
        assert!(e.retry(), "{e}");
        for (greeting, kind) in [
            (&b""[..], "closed"),
            (b"* BYE too busy\r\n", "refused"),
            (b"* PREAUTH hi\r\n", "protocol"),
            (b"* OK", "timeout"),
            (b"* OK hi\r\n", "refused"), // the CAPABILITY got BYE
        ] {
            let addr = greeting_backend(greeting).await;
            let e = connect(&backend_at(addr), t, t)
                .await
                .err()
                .expect("failed");
            assert_eq!(e.kind(), kind, "{e}");
            assert!(e.retry(), "{e}");
        }
    }

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
