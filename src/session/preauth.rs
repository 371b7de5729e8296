//! The not-authenticated state, where imapmux itself is the IMAP server.
//!
//! Sans-I/O: feed client bytes with [`PreAuth::input`], then drain
//! [`PreAuth::poll`] for events (bytes to send, start TLS, log in, close).
//! Time is passed in; nothing here touches a socket.
#![deny(clippy::disallowed_methods)] // no clock reads: see clippy.toml

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

pub use crate::identity::{Credentials, Mechanism};
use crate::imap::command::{parse_command, tag_of, trim_crlf, Arg, Command, ParseError};
use crate::imap::framing::{Frame, Framer};
use crate::imap::response::sanitize_text;
use crate::lifecycle::EndReason;

/// Settings for one client connection's pre-auth phase.
#[derive(Debug, Clone)]
pub struct PreAuthConfig {
    /// The connection is already encrypted (implicit TLS, or after STARTTLS).
    pub tls_active: bool,
    /// STARTTLS may be offered on this connection.
    pub starttls_available: bool,
    /// LOGIN/AUTHENTICATE are allowed without TLS.
    pub allow_plaintext_auth: bool,
    /// Offer AUTHENTICATE OAUTHBEARER and XOAUTH2 (the token is passed to
    /// the backend, which must offer the same mechanism).
    pub sasl_oauth: bool,
    pub greeting: String,
    pub max_line: usize,
    /// Largest literal accepted before login (user names, passwords).
    pub max_literal: usize,
    pub max_auth_failures: u32,
    pub max_bad_commands: u32,
    /// When the client must have logged in.
    pub deadline: Instant,
    /// The client is a trusted webmail or proxy (`server.trusted_networks`):
    /// its ID may name the real client's address and the proxy TTL.
    pub trusted: bool,
}

/// What a trusted client's ID said of the client behind it (RFC 2971 ID
/// fields as Dovecot's proxy and webmails send them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// `x-originating-ip`.
    pub ip: Option<std::net::IpAddr>,
    /// `x-originating-port`.
    pub port: Option<u16>,
    /// `x-proxy-ttl`: hops left.
    pub ttl: Option<u32>,
}

/// Why the pre-auth phase closed the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Logout,
    Timeout,
    TooManyErrors,
    AuthFailures,
    ProtocolError,
}

impl From<CloseReason> for EndReason {
    fn from(r: CloseReason) -> EndReason {
        match r {
            CloseReason::Logout => EndReason::Logout,
            CloseReason::Timeout => EndReason::PreauthTimeout,
            CloseReason::TooManyErrors => EndReason::TooManyErrors,
            CloseReason::AuthFailures => EndReason::AuthFailures,
            CloseReason::ProtocolError => EndReason::ProtocolError,
        }
    }
}

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Write these bytes to the client.
    Send(Bytes),
    /// Flush, then run the TLS handshake and call [`PreAuth::tls_established`].
    StartTls,
    /// Authenticate and log in to a backend, then call [`PreAuth::login_ok`]
    /// or [`PreAuth::login_failed`]. No input is processed meanwhile.
    Login {
        tag: String,
        credentials: Credentials,
    },
    /// Flush and close the connection.
    Close(CloseReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Commands,
    /// A `+` challenge was sent for AUTHENTICATE, waiting for the
    /// response line.
    SaslResponse {
        tag: String,
        step: SaslStep,
    },
    LoginPending,
    StartTlsPending,
    LoggedIn,
    Closed,
}

/// Which SASL response is expected next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SaslStep {
    /// PLAIN's only message: `authzid NUL authcid NUL password`.
    Plain,
    /// LOGIN's user name (after `+ VXNlcm5hbWU6`, "Username:").
    LoginUser,
    /// LOGIN's password (after `+ UGFzc3dvcmQ6`, "Password:").
    LoginPassword { user: Vec<u8> },
    /// OAUTHBEARER's or XOAUTH2's only message.
    OAuth(Mechanism),
}

/// Why an OAuth SASL message was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OAuthError {
    /// Does not follow the mechanism's syntax: BAD.
    Malformed(&'static str),
    /// Well-formed but names no user, so it cannot be routed: NO.
    NoUser,
}

/// Parse an OAUTHBEARER client response (RFC 7628 §3.1):
/// `gs2-header %x01 *(key=value %x01) %x01`, gs2-header `n,a=USER,`
/// (`y` instead of `n` is fine; channel binding `p=` is not supported).
/// Returns the user (`=2C`/`=3D` decoded) and the bearer token.
fn parse_oauthbearer(msg: &[u8]) -> Result<(Vec<u8>, Vec<u8>), OAuthError> {
    use OAuthError::Malformed;
    let sep = memchr::memchr(0x01, msg).ok_or(Malformed("missing separator"))?;
    let (gs2, rest) = (&msg[..sep], &msg[sep + 1..]);
    let gs2 = gs2
        .strip_suffix(b",")
        .ok_or(Malformed("invalid GS2 header"))?;
    let authzid = match gs2 {
        [b'n' | b'y', b',', authzid @ ..] => authzid,
        [b'p', b'=', ..] => return Err(Malformed("channel binding is not supported")),
        _ => return Err(Malformed("invalid GS2 header")),
    };
    let user = match authzid {
        [] => None,
        [b'a', b'=', name @ ..] => Some(decode_saslname(name).ok_or(Malformed("invalid a="))?),
        _ => return Err(Malformed("invalid GS2 header")),
    };
    let mut token = None;
    for (key, value) in kv_pairs(rest)? {
        if key == b"auth" {
            if token.is_some() {
                return Err(Malformed("duplicate auth="));
            }
            token = Some(bearer_token(value)?);
        }
    }
    let token = token.ok_or(Malformed("missing auth="))?;
    match user {
        Some(u) if !u.is_empty() => Ok((u, token)),
        _ => Err(OAuthError::NoUser),
    }
}

/// Parse an XOAUTH2 client response:
/// `user=USER %x01 auth=Bearer TOKEN %x01 %x01`.
fn parse_xoauth2(msg: &[u8]) -> Result<(Vec<u8>, Vec<u8>), OAuthError> {
    use OAuthError::Malformed;
    let (mut user, mut token) = (None, None);
    for (key, value) in kv_pairs(msg)? {
        match key {
            b"user" if user.is_some() => return Err(Malformed("duplicate user=")),
            b"user" => user = Some(value.to_vec()),
            b"auth" if token.is_some() => return Err(Malformed("duplicate auth=")),
            b"auth" => token = Some(bearer_token(value)?),
            _ => {}
        }
    }
    let token = token.ok_or(Malformed("missing auth="))?;
    match user {
        Some(u) if !u.is_empty() => Ok((u, token)),
        _ => Err(OAuthError::NoUser),
    }
}

/// One `key=value` field of an OAuth SASL message.
type KeyValue<'a> = (&'a [u8], &'a [u8]);

/// The `key=value` pairs of `%x01`-separated fields (empty fields, such as
/// the terminating `%x01 %x01`, are skipped).
fn kv_pairs(fields: &[u8]) -> Result<Vec<KeyValue<'_>>, OAuthError> {
    fields
        .split(|b| *b == 0x01)
        .filter(|f| !f.is_empty())
        .map(|f| {
            let eq = memchr::memchr(b'=', f).ok_or(OAuthError::Malformed("field without ="))?;
            let (key, value) = (&f[..eq], &f[eq + 1..]);
            if key.is_empty() || !key.iter().all(u8::is_ascii_alphabetic) {
                return Err(OAuthError::Malformed("invalid key"));
            }
            Ok((key, value))
        })
        .collect()
}

/// The token of an `auth=` value `Bearer TOKEN` (scheme case-insensitive).
/// The token must be printable ASCII without spaces, so that it can be
/// put into the message for the backend as it is.
fn bearer_token(value: &[u8]) -> Result<Vec<u8>, OAuthError> {
    let malformed = OAuthError::Malformed("auth= is not a bearer token");
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return Err(malformed);
    }
    let token = value[7..].trim_ascii_start();
    if token.is_empty() || !token.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(malformed);
    }
    Ok(token.to_vec())
}

/// Decode a GS2 saslname (RFC 5801): `=2C` is `,`, `=3D` is `=`; any other
/// `=` or a bare `,` is invalid.
fn decode_saslname(name: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'=' => {
                match name.get(i + 1..i + 3) {
                    Some(b"2C") => out.push(b','),
                    Some(b"3D") => out.push(b'='),
                    _ => return None,
                }
                i += 3;
            }
            b',' => return None,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The pre-auth state machine.
pub struct PreAuth {
    cfg: PreAuthConfig,
    state: State,
    framer: Framer,
    buf: BytesMut,
    lines: Vec<Bytes>,
    literals: Vec<Bytes>,
    literal: BytesMut,
    /// Bytes of the command being assembled.
    command_bytes: usize,
    events: VecDeque<Event>,
    auth_failures: u32,
    bad_commands: u32,
    /// `name` from the client's ID, for logs.
    pub client_name: Option<String>,
    /// From a trusted client's ID: the client behind it.
    forwarded: Option<Forwarded>,
}

impl PreAuth {
    pub fn new(cfg: PreAuthConfig) -> Self {
        let framer = Framer::new(cfg.max_line);
        let mut s = PreAuth {
            cfg,
            state: State::Commands,
            framer,
            buf: BytesMut::new(),
            lines: Vec::new(),
            literals: Vec::new(),
            literal: BytesMut::new(),
            command_bytes: 0,
            events: VecDeque::new(),
            auth_failures: 0,
            bad_commands: 0,
            client_name: None,
            forwarded: None,
        };
        let greeting = format!(
            "* OK [CAPABILITY {}] {}\r\n",
            s.capabilities(),
            sanitize_text(&s.cfg.greeting)
        );
        s.send(greeting);
        s
    }

    /// Capabilities offered in the current state.
    pub fn capabilities(&self) -> String {
        let mut caps = String::from("IMAP4rev1 SASL-IR LITERAL+ ID");
        if !self.cfg.tls_active && self.cfg.starttls_available {
            caps.push_str(" STARTTLS");
        }
        if self.auth_allowed() {
            caps.push_str(" AUTH=PLAIN AUTH=LOGIN");
            if self.cfg.sasl_oauth {
                caps.push_str(" AUTH=OAUTHBEARER AUTH=XOAUTH2");
            }
        } else {
            caps.push_str(" LOGINDISABLED");
        }
        caps
    }

    fn auth_allowed(&self) -> bool {
        self.cfg.tls_active || self.cfg.allow_plaintext_auth
    }

    /// When the pre-auth timeout fires.
    pub fn deadline(&self) -> Instant {
        self.cfg.deadline
    }

    /// True once a login succeeded; the driver then takes over.
    pub fn is_logged_in(&self) -> bool {
        self.state == State::LoggedIn
    }

    fn send(&mut self, s: impl Into<Bytes>) {
        self.events.push_back(Event::Send(s.into()));
    }

    fn close(&mut self, why: CloseReason) {
        self.state = State::Closed;
        self.buf.clear();
        self.events.push_back(Event::Close(why));
    }

    /// Next event for the driver.
    pub fn poll(&mut self) -> Option<Event> {
        if self.events.is_empty() {
            self.process();
        }
        self.events.pop_front()
    }

    /// Feed bytes read from the client.
    pub fn input(&mut self, data: &[u8]) {
        if matches!(self.state, State::Closed | State::LoggedIn) {
            return;
        }
        self.buf.extend_from_slice(data);
    }

    /// The pre-auth timer fired at `now`.
    pub fn timeout(&mut self, now: Instant) {
        if now >= self.cfg.deadline
            && !matches!(
                self.state,
                State::Closed | State::LoggedIn | State::LoginPending
            )
        {
            self.send("* BYE Disconnected for inactivity.\r\n");
            self.close(CloseReason::Timeout);
        }
    }

    /// The TLS handshake after STARTTLS completed.
    pub fn tls_established(&mut self) {
        if self.state == State::StartTlsPending {
            self.cfg.tls_active = true;
            self.state = State::Commands;
        }
    }

    /// The backend accepted the login: reply with its capabilities.
    pub fn login_ok(&mut self, tag: &str, backend_capabilities: &str) {
        if self.state != State::LoginPending {
            return;
        }
        self.send(format!(
            "{tag} OK [CAPABILITY {backend_capabilities}] Logged in\r\n"
        ));
        self.state = State::LoggedIn;
    }

    /// The login failed: `code` like `AUTHENTICATIONFAILED`, `text` shown
    /// to the client.
    pub fn login_failed(&mut self, tag: &str, status: &str, code: Option<&str>, text: &str) {
        if self.state != State::LoginPending {
            return;
        }
        let code = code
            .map(|c| format!("[{}] ", sanitize_text(c)))
            .unwrap_or_default();
        self.send(format!("{tag} {status} {code}{}\r\n", sanitize_text(text)));
        self.state = State::Commands;
        self.count_auth_failure();
    }

    /// A login refused here, before any backend was asked.
    fn auth_failed(&mut self, tag: &str, text: &str) {
        self.send(format!("{tag} NO [AUTHENTICATIONFAILED] {text}\r\n"));
        self.count_auth_failure();
    }

    fn count_auth_failure(&mut self) {
        self.auth_failures += 1;
        if self.auth_failures >= self.cfg.max_auth_failures {
            self.send("* BYE Too many authentication failures.\r\n");
            self.close(CloseReason::AuthFailures);
        }
    }

    /// After login: the bytes the client pipelined after its login command,
    /// to be relayed to the backend.
    pub fn take_pipelined(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }

    fn process(&mut self) {
        while self.events.is_empty() {
            match self.state {
                State::Commands | State::SaslResponse { .. } => {}
                _ => return,
            }
            let Some(frame) = self.framer.next_frame(&mut self.buf) else {
                return;
            };
            self.on_frame(frame);
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        // A line longer than the bound: no legitimate pre-auth command is.
        // (The framer splits a long line only while waiting for its end; one
        // that arrived whole may still exceed the bound.)
        let too_long = match &frame {
            Frame::LineChunk { .. } => true,
            Frame::Line { bytes, .. } => bytes.len() > self.cfg.max_line,
            Frame::Literal { .. } => false,
        };
        if too_long {
            self.send("* BYE Line too long.\r\n");
            self.close(CloseReason::ProtocolError);
            return;
        }
        match frame {
            Frame::LineChunk { .. } => {}
            Frame::Literal { bytes, remaining } => {
                self.literal.extend_from_slice(&bytes);
                if remaining == 0 {
                    let lit = std::mem::take(&mut self.literal).freeze();
                    self.literals.push(lit);
                }
            }
            Frame::Line { bytes, literal, .. } => {
                if let State::SaslResponse { .. } = &self.state {
                    let State::SaslResponse { tag, step } =
                        std::mem::replace(&mut self.state, State::Commands)
                    else {
                        return;
                    };
                    self.sasl_response(&tag, step, trim_crlf(&bytes));
                    if literal.is_some() {
                        // A literal cannot follow a SASL response; resync.
                        self.framer.cancel_literal();
                    }
                    return;
                }
                self.command_bytes += bytes.len();
                self.lines.push(bytes);
                match literal {
                    Some(spec) => {
                        let too_big = spec.len > self.cfg.max_literal as u64
                            || self.command_bytes as u64 + spec.len > self.cfg.max_line as u64;
                        self.command_bytes += spec.len as usize;
                        if too_big {
                            if spec.sync {
                                // The client waits for `+`; refuse instead.
                                let tag = tag_of(&self.lines[0]).unwrap_or("*").to_string();
                                self.framer.cancel_literal();
                                self.reset_command();
                                self.send(format!("{tag} BAD [TOOBIG] Literal too large.\r\n"));
                                self.count_bad();
                            } else {
                                self.send("* BYE [TOOBIG] Literal too large.\r\n");
                                self.close(CloseReason::ProtocolError);
                            }
                        } else if spec.sync {
                            self.send("+ OK\r\n");
                        }
                    }
                    None => self.command_complete(),
                }
            }
        }
    }

    fn reset_command(&mut self) {
        self.lines.clear();
        self.literals.clear();
        self.literal.clear();
        self.command_bytes = 0;
    }

    fn count_bad(&mut self) {
        self.bad_commands += 1;
        if self.bad_commands >= self.cfg.max_bad_commands {
            self.send("* BYE Too many invalid commands.\r\n");
            self.close(CloseReason::TooManyErrors);
        }
    }

    fn bad(&mut self, tag: &str, text: &str) {
        self.send(format!("{tag} BAD {text}\r\n"));
        self.count_bad();
    }

    fn command_complete(&mut self) {
        let lines = std::mem::take(&mut self.lines);
        let literals = std::mem::take(&mut self.literals);
        self.reset_command();
        if lines.len() == 1 && trim_crlf(&lines[0]).is_empty() {
            return; // empty line: ignore, as servers do
        }
        match parse_command(&lines, &literals) {
            Ok(cmd) => self.execute(cmd),
            Err(ParseError::BadTag) => self.bad("*", "Invalid tag."),
            Err(ParseError::NoCommand) => {
                let tag = tag_of(&lines[0]).unwrap_or("*").to_string();
                self.bad(&tag, "Missing command.");
            }
            Err(ParseError::Syntax(why)) => {
                let tag = tag_of(&lines[0]).unwrap_or("*").to_string();
                self.bad(&tag, &format!("Syntax error: {why}."));
            }
        }
    }

    fn execute(&mut self, cmd: Command) {
        let tag = cmd.tag.as_str();
        match cmd.name.as_str() {
            "CAPABILITY" if cmd.args.is_empty() => {
                let caps = self.capabilities();
                self.send(format!(
                    "* CAPABILITY {caps}\r\n{tag} OK Capability completed.\r\n"
                ));
            }
            "NOOP" if cmd.args.is_empty() => self.send(format!("{tag} OK NOOP completed.\r\n")),
            "LOGOUT" if cmd.args.is_empty() => {
                self.send(format!(
                    "* BYE Logging out\r\n{tag} OK Logout completed.\r\n"
                ));
                self.close(CloseReason::Logout);
            }
            "STARTTLS" if cmd.args.is_empty() => {
                if self.cfg.tls_active {
                    self.bad(tag, "TLS is already active.");
                } else if !self.cfg.starttls_available {
                    self.bad(tag, "STARTTLS is not available on this port.");
                } else {
                    self.send(format!("{tag} OK Begin TLS negotiation now.\r\n"));
                    // Anything pipelined after STARTTLS arrived in plaintext
                    // and must not be trusted (RFC 9051 §11.1, CVE-2011-0411 class).
                    self.buf.clear();
                    self.framer = Framer::new(self.cfg.max_line);
                    self.state = State::StartTlsPending;
                    self.events.push_back(Event::StartTls);
                }
            }
            "ID" => self.id(&cmd),
            "LOGIN" => self.login(&cmd),
            "AUTHENTICATE" => self.authenticate(&cmd),
            "CAPABILITY" | "NOOP" | "LOGOUT" | "STARTTLS" => self.bad(tag, "Unexpected arguments."),
            "SELECT" | "EXAMINE" | "CREATE" | "DELETE" | "RENAME" | "SUBSCRIBE" | "UNSUBSCRIBE"
            | "LIST" | "LSUB" | "NAMESPACE" | "STATUS" | "APPEND" | "IDLE" | "CHECK" | "CLOSE"
            | "UNSELECT" | "EXPUNGE" | "SEARCH" | "FETCH" | "STORE" | "COPY" | "MOVE" | "UID"
            | "ENABLE" | "GETQUOTAROOT" | "GETQUOTA" | "GETMETADATA" | "SETMETADATA" | "NOTIFY"
            | "COMPRESS" => self.bad(tag, "Command not permitted before login."),
            _ => self.bad(tag, "Unknown command."),
        }
    }

    /// What a trusted client's ID said of the client behind it.
    pub fn forwarded(&self) -> Option<&Forwarded> {
        self.forwarded.as_ref()
    }

    fn id(&mut self, cmd: &Command) {
        let tag = &cmd.tag;
        match cmd.args.as_slice() {
            [Arg::Nil] => {}
            [Arg::List(items)] if items.len() % 2 == 0 && items.len() <= 60 => {
                let mut fwd = Forwarded::default();
                for pair in items.chunks(2) {
                    if let (Some(k), Some(v)) = (pair[0].as_astring(), pair[1].as_astring()) {
                        if self.cfg.trusted {
                            let text = std::str::from_utf8(v).ok().map(str::trim);
                            let k = k.to_ascii_lowercase();
                            match k.as_slice() {
                                b"x-originating-ip" => fwd.ip = text.and_then(|t| t.parse().ok()),
                                b"x-originating-port" => {
                                    fwd.port = text.and_then(|t| t.parse().ok())
                                }
                                b"x-proxy-ttl" => fwd.ttl = text.and_then(|t| t.parse().ok()),
                                _ => {}
                            }
                        }
                        if k.eq_ignore_ascii_case(b"name") {
                            self.client_name = Some(
                                sanitize_text(&String::from_utf8_lossy(v))
                                    .chars()
                                    .take(64)
                                    .collect(),
                            );
                        }
                    }
                }
                if fwd != Forwarded::default() {
                    self.forwarded = Some(fwd);
                }
            }
            _ => return self.bad(tag, "Invalid ID arguments."),
        }
        self.send(format!(
            "* ID (\"name\" \"imapmux\" \"version\" \"{}\")\r\n{tag} OK ID completed.\r\n",
            env!("CARGO_PKG_VERSION")
        ));
    }

    fn refuse_plaintext(&mut self, tag: &str) -> bool {
        if self.auth_allowed() {
            return false;
        }
        self.send(format!(
            "{tag} NO [PRIVACYREQUIRED] Plaintext authentication is disabled; use STARTTLS or the TLS port.\r\n"
        ));
        true
    }

    fn login(&mut self, cmd: &Command) {
        let tag = cmd.tag.clone();
        let (user, pass) = match cmd.args.as_slice() {
            [u, p] => match (u.as_astring(), p.as_astring()) {
                (Some(u), Some(p)) => (u.to_vec(), p.to_vec()),
                _ => return self.bad(&tag, "Invalid LOGIN arguments."),
            },
            _ => return self.bad(&tag, "LOGIN needs a user name and a password."),
        };
        if self.refuse_plaintext(&tag) {
            return;
        }
        self.request_login(tag, user, pass, None, Mechanism::Login);
    }

    fn request_login(
        &mut self,
        tag: String,
        user: Vec<u8>,
        password: Vec<u8>,
        authzid: Option<Vec<u8>>,
        mechanism: Mechanism,
    ) {
        let Some(credentials) = crate::front::sasl::credentials(user, password, authzid, mechanism)
        else {
            return self.auth_failed(&tag, "Authentication failed.");
        };
        self.state = State::LoginPending;
        self.events.push_back(Event::Login { tag, credentials });
    }

    fn authenticate(&mut self, cmd: &Command) {
        let tag = cmd.tag.clone();
        let (mech, initial) = match cmd.args.as_slice() {
            [Arg::Atom(m)] => (m.clone(), None),
            [Arg::Atom(m), Arg::Atom(ir)] => (m.clone(), Some(ir.clone())),
            _ => return self.bad(&tag, "Invalid AUTHENTICATE arguments."),
        };
        let step = match mech.to_ascii_uppercase().as_slice() {
            b"PLAIN" => SaslStep::Plain,
            b"LOGIN" => SaslStep::LoginUser,
            b"OAUTHBEARER" if self.cfg.sasl_oauth => SaslStep::OAuth(Mechanism::OAuthBearer),
            b"XOAUTH2" if self.cfg.sasl_oauth => SaslStep::OAuth(Mechanism::XOAuth2),
            _ => {
                self.send(format!(
                    "{tag} NO [CANNOT] Unsupported authentication mechanism.\r\n"
                ));
                return;
            }
        };
        if self.refuse_plaintext(&tag) {
            return;
        }
        match initial {
            Some(ir) => self.sasl_response(&tag, step, &ir),
            None => self.challenge(tag, step),
        }
    }

    /// Send the `+` challenge for `step` and wait for the client's response.
    fn challenge(&mut self, tag: String, step: SaslStep) {
        self.send(match step {
            SaslStep::LoginUser => "+ VXNlcm5hbWU6\r\n",
            SaslStep::LoginPassword { .. } => "+ UGFzc3dvcmQ6\r\n",
            SaslStep::Plain | SaslStep::OAuth(_) => "+ \r\n",
        });
        self.state = State::SaslResponse { tag, step };
    }

    /// A SASL response (the initial one from the command line, or a line
    /// sent after a `+` challenge): decode it and take the next step.
    fn sasl_response(&mut self, tag: &str, step: SaslStep, response: &[u8]) {
        use crate::front::sasl::ResponseError;
        let decoded = match crate::front::sasl::decode_response(response) {
            Ok(d) => d,
            Err(ResponseError::Cancelled) => return self.bad(tag, "Authentication cancelled."),
            Err(ResponseError::InvalidBase64) => {
                return self.bad(tag, "Invalid base64 in SASL response.")
            }
        };
        match step {
            SaslStep::Plain => self.sasl_plain(tag, &decoded),
            SaslStep::LoginUser => {
                if self.too_big(tag, &[&decoded]) {
                    return;
                }
                self.challenge(tag.to_string(), SaslStep::LoginPassword { user: decoded });
            }
            SaslStep::LoginPassword { user } => {
                if self.too_big(tag, &[&decoded]) {
                    return;
                }
                self.request_login(tag.to_string(), user, decoded, None, Mechanism::Login);
            }
            SaslStep::OAuth(mechanism) => self.sasl_oauth(tag, mechanism, &decoded),
        }
    }

    /// Refuse SASL fields longer than the literal bound that applies to the
    /// same values in LOGIN: `BAD [TOOBIG]`. True when refused.
    fn too_big(&mut self, tag: &str, fields: &[&[u8]]) -> bool {
        if fields.iter().all(|f| f.len() <= self.cfg.max_literal) {
            return false;
        }
        self.bad(tag, "[TOOBIG] SASL response too large.");
        true
    }

    fn sasl_plain(&mut self, tag: &str, decoded: &[u8]) {
        match crate::front::sasl::parse_plain(decoded) {
            Some(p) => {
                let authz = p.authzid.unwrap_or_default();
                if self.too_big(tag, &[authz, p.user, p.password]) {
                    return;
                }
                self.request_login(
                    tag.to_string(),
                    p.user.to_vec(),
                    p.password.to_vec(),
                    p.authzid.map(<[u8]>::to_vec),
                    Mechanism::Plain,
                );
            }
            None => self.bad(tag, "Invalid PLAIN SASL response."),
        }
    }

    /// OAUTHBEARER or XOAUTH2: the token is not checked here; the backend
    /// (its token introspection) decides.
    fn sasl_oauth(&mut self, tag: &str, mechanism: Mechanism, decoded: &[u8]) {
        let parsed = match mechanism {
            Mechanism::XOAuth2 => parse_xoauth2(decoded),
            _ => parse_oauthbearer(decoded),
        };
        match parsed {
            Ok((user, token)) => {
                // The token is bounded by the line length only: JWTs can be
                // longer than a password literal.
                if self.too_big(tag, &[&user]) {
                    return;
                }
                self.request_login(tag.to_string(), user, token, None, mechanism)
            }
            Err(OAuthError::Malformed(why)) => self.bad(
                tag,
                &format!("Invalid {} SASL response: {why}.", mechanism.as_str()),
            ),
            Err(OAuthError::NoUser) => {
                self.auth_failed(tag, "Authentication failed: a user name is required.")
            }
        }
    }
}

#[cfg(test)]
#[path = "preauth_tests.rs"]
#[allow(clippy::disallowed_methods)] // the tests make deadlines from the clock
mod tests;
