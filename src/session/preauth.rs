//! The not-authenticated state, where imapmux itself is the IMAP server.
//!
//! Sans-I/O: feed client bytes with [`PreAuth::input`], then drain
//! [`PreAuth::poll`] for events (bytes to send, start TLS, log in, close).
//! Time is passed in; nothing here touches a socket.

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use base64::Engine;
use bytes::{Bytes, BytesMut};

use crate::imap::command::{parse_command, tag_of, trim_crlf, Arg, Command, ParseError};
use crate::imap::framing::{Frame, Framer};
use crate::imap::response::sanitize_text;

/// Settings for one client connection's pre-auth phase.
#[derive(Debug, Clone)]
pub struct PreAuthConfig {
    /// The connection is already encrypted (implicit TLS, or after STARTTLS).
    pub tls_active: bool,
    /// STARTTLS may be offered on this connection.
    pub starttls_available: bool,
    /// LOGIN/AUTHENTICATE are allowed without TLS.
    pub allow_plaintext_auth: bool,
    pub greeting: String,
    pub max_line: usize,
    /// Largest literal accepted before login (user names, passwords).
    pub max_literal: usize,
    pub max_auth_failures: u32,
    pub max_bad_commands: u32,
    /// When the client must have logged in.
    pub deadline: Instant,
}

/// Client credentials. Debug output never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Login,
    Plain,
}

impl Mechanism {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mechanism::Login => "LOGIN",
            Mechanism::Plain => "PLAIN",
        }
    }
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

impl CloseReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::Logout => "logout",
            CloseReason::Timeout => "preauth_timeout",
            CloseReason::TooManyErrors => "too_many_errors",
            CloseReason::AuthFailures => "auth_failures",
            CloseReason::ProtocolError => "protocol_error",
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
    /// `+ ` sent for AUTHENTICATE PLAIN, waiting for the response line.
    SaslResponse {
        tag: String,
    },
    LoginPending,
    StartTlsPending,
    LoggedIn,
    Closed,
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
            caps.push_str(" AUTH=PLAIN");
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
        self.auth_failures += 1;
        self.state = State::Commands;
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
        match frame {
            Frame::LineChunk { .. } => {
                // A line longer than the bound: no legitimate pre-auth command is.
                self.send("* BYE Line too long.\r\n");
                self.close(CloseReason::ProtocolError);
            }
            Frame::Literal { bytes, remaining } => {
                self.literal.extend_from_slice(&bytes);
                if remaining == 0 {
                    let lit = std::mem::take(&mut self.literal).freeze();
                    self.literals.push(lit);
                }
            }
            Frame::Line { bytes, literal, .. } => {
                if let State::SaslResponse { tag } = &self.state {
                    let tag = tag.clone();
                    self.state = State::Commands;
                    self.sasl_plain_response(&tag, trim_crlf(&bytes));
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
                    "* BYE Logging out.\r\n{tag} OK Logout completed.\r\n"
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

    fn id(&mut self, cmd: &Command) {
        let tag = &cmd.tag;
        match cmd.args.as_slice() {
            [Arg::Nil] => {}
            [Arg::List(items)] if items.len() % 2 == 0 && items.len() <= 60 => {
                for pair in items.chunks(2) {
                    if let (Some(k), Some(v)) = (pair[0].as_astring(), pair[1].as_astring()) {
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
        let user = match String::from_utf8(user) {
            Ok(u) if !u.is_empty() && !u.contains(['\0', '\r', '\n']) => u,
            _ => {
                self.send(format!(
                    "{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
                ));
                self.auth_failures += 1;
                return;
            }
        };
        let authzid = match authzid.map(String::from_utf8) {
            None => None,
            Some(Ok(a)) if a.is_empty() || a == user => None,
            Some(Ok(a)) => Some(a),
            Some(Err(_)) => {
                self.send(format!(
                    "{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
                ));
                self.auth_failures += 1;
                return;
            }
        };
        self.state = State::LoginPending;
        self.events.push_back(Event::Login {
            tag,
            credentials: Credentials {
                user,
                password,
                authzid,
                mechanism,
            },
        });
    }

    fn authenticate(&mut self, cmd: &Command) {
        let tag = cmd.tag.clone();
        let (mech, initial) = match cmd.args.as_slice() {
            [Arg::Atom(m)] => (m.clone(), None),
            [Arg::Atom(m), Arg::Atom(ir)] => (m.clone(), Some(ir.clone())),
            _ => return self.bad(&tag, "Invalid AUTHENTICATE arguments."),
        };
        if !mech.eq_ignore_ascii_case(b"PLAIN") {
            self.send(format!(
                "{tag} NO [CANNOT] Unsupported authentication mechanism.\r\n"
            ));
            return;
        }
        if self.refuse_plaintext(&tag) {
            return;
        }
        match initial {
            Some(ir) => self.sasl_plain_response(&tag, &ir),
            None => {
                self.send("+ \r\n");
                self.state = State::SaslResponse { tag };
            }
        }
    }

    fn sasl_plain_response(&mut self, tag: &str, response: &[u8]) {
        if response == b"*" {
            return self.bad(tag, "Authentication cancelled.");
        }
        let decoded = if response == b"=" {
            Some(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(response)
                .ok()
        };
        let Some(decoded) = decoded else {
            return self.bad(tag, "Invalid base64 in SASL response.");
        };
        let mut parts = decoded.splitn(3, |b| *b == 0);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(authz), Some(user), Some(pass)) if !user.is_empty() => {
                let authz = (!authz.is_empty()).then(|| authz.to_vec());
                self.request_login(
                    tag.to_string(),
                    user.to_vec(),
                    pass.to_vec(),
                    authz,
                    Mechanism::Plain,
                );
            }
            _ => self.bad(tag, "Invalid PLAIN SASL response."),
        }
    }
}

#[cfg(test)]
#[path = "preauth_tests.rs"]
mod tests;
