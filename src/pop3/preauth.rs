//! The POP3 AUTHORIZATION state, where imapmux itself is the POP3 server
//! (RFC 1939 §4, CAPA RFC 2449, STLS RFC 2595, AUTH RFC 5034, response
//! codes RFC 2449/RFC 3206).
//!
//! Sans-I/O: feed client bytes with [`PreAuthMachine::input`], then drain
//! [`PreAuthMachine::poll`] for events. Commands are taken one line at a
//! time from a bounded buffer; nothing the client sent before a `STLS`
//! survives the TLS handshake (RFC 2595 §4, the CVE-2011-0411 class).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo
)]
#![deny(clippy::disallowed_methods)] // no clock reads: see clippy.toml

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::front::sasl::{self, ResponseError};
use crate::front::{CloseReason, FrontEvent, PreAuthMachine, Refusal};
use crate::identity::{Credentials, Mechanism};
use crate::imap::response::sanitize_text;

/// Settings for one client connection's AUTHORIZATION state.
#[derive(Debug, Clone)]
pub struct Pop3Config {
    /// The connection is already encrypted (implicit TLS, or after STLS).
    pub tls_active: bool,
    /// STLS may be offered on this connection.
    pub starttls_available: bool,
    /// USER/PASS and AUTH are allowed without TLS.
    pub allow_plaintext_auth: bool,
    pub greeting: String,
    /// Longest line accepted (commands and SASL responses), CRLF included.
    pub max_line: usize,
    pub max_auth_failures: u32,
    pub max_bad_commands: u32,
    /// When the client must have logged in.
    pub deadline: Instant,
}

/// The longest user name or password taken (as in IMAP's pre-auth
/// literals).
const MAX_FIELD: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Commands; `user` once USER was accepted.
    Authorization {
        user: Option<Vec<u8>>,
    },
    /// A `+` challenge was sent for AUTH; waiting for the response line.
    SaslResponse(SaslStep),
    LoginPending,
    StartTlsPending,
    LoggedIn,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SaslStep {
    Plain,
    LoginUser,
    LoginPassword { user: Vec<u8> },
}

/// The POP3 pre-auth state machine.
pub struct Pop3PreAuth {
    cfg: Pop3Config,
    state: State,
    buf: BytesMut,
    events: VecDeque<FrontEvent>,
    auth_failures: u32,
    bad_commands: u32,
}

impl Pop3PreAuth {
    pub fn new(cfg: Pop3Config) -> Self {
        let mut s = Pop3PreAuth {
            cfg,
            state: State::Authorization { user: None },
            buf: BytesMut::new(),
            events: VecDeque::new(),
            auth_failures: 0,
            bad_commands: 0,
        };
        let greeting = format!("+OK {}\r\n", sanitize_text(&s.cfg.greeting));
        s.send(greeting);
        s
    }

    fn auth_allowed(&self) -> bool {
        self.cfg.tls_active || self.cfg.allow_plaintext_auth
    }

    /// The CAPA answer in the current state (RFC 2449 §5).
    pub fn capabilities(&self) -> String {
        let mut c = String::from("+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
        if self.auth_allowed() {
            c.push_str("USER\r\nSASL PLAIN LOGIN\r\n");
        }
        if !self.cfg.tls_active && self.cfg.starttls_available {
            c.push_str("STLS\r\n");
        }
        c.push_str("IMPLEMENTATION imapmux\r\n.\r\n");
        c
    }

    fn send(&mut self, s: impl Into<Bytes>) {
        self.events.push_back(FrontEvent::Send(s.into()));
    }

    fn close(&mut self, why: CloseReason) {
        self.state = State::Closed;
        self.buf.clear();
        self.events.push_back(FrontEvent::Close(why));
    }

    fn err(&mut self, text: &str) {
        self.send(format!("-ERR {text}\r\n"));
    }

    fn bad(&mut self, text: &str) {
        self.err(text);
        self.bad_commands += 1;
        if self.bad_commands >= self.cfg.max_bad_commands {
            self.err("Too many invalid commands.");
            self.close(CloseReason::TooManyErrors);
        }
    }

    fn count_auth_failure(&mut self) {
        self.auth_failures += 1;
        if self.auth_failures >= self.cfg.max_auth_failures {
            self.err("Too many authentication failures.");
            self.close(CloseReason::AuthFailures);
        }
    }

    /// A login refused here, before any backend was asked.
    fn auth_failed(&mut self) {
        self.err("[AUTH] Authentication failed.");
        self.count_auth_failure();
        self.state = State::Authorization { user: None };
    }

    fn process(&mut self) {
        while self.events.is_empty() {
            if !matches!(
                self.state,
                State::Authorization { .. } | State::SaslResponse(_)
            ) {
                return;
            }
            let Some(nl) = memchr::memchr(b'\n', &self.buf) else {
                if self.buf.len() > self.cfg.max_line {
                    self.err("Line too long.");
                    self.close(CloseReason::ProtocolError);
                }
                return;
            };
            let line = self.buf.split_to(nl + 1).freeze();
            if line.len() > self.cfg.max_line {
                self.err("Line too long.");
                self.close(CloseReason::ProtocolError);
                return;
            }
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match std::mem::replace(&mut self.state, State::Authorization { user: None }) {
                State::SaslResponse(step) => self.sasl_response(step, line),
                State::Authorization { user } => {
                    self.state = State::Authorization { user };
                    self.command(line);
                }
                other => self.state = other,
            }
        }
    }

    fn command(&mut self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        let (verb, arg) = match memchr::memchr(b' ', line) {
            Some(i) => (line.get(..i).unwrap_or_default(), line.get(i + 1..)),
            None => (line, None),
        };
        let verb = verb.to_ascii_uppercase();
        match (verb.as_slice(), arg) {
            (b"CAPA", None) => {
                let caps = self.capabilities();
                self.send(caps);
            }
            (b"QUIT", None) => {
                self.send("+OK Logging out.\r\n");
                self.close(CloseReason::Logout);
            }
            (b"STLS", None) => self.stls(),
            (b"USER", Some(name)) if !name.is_empty() => self.user(name),
            (b"PASS", Some(pass)) => self.pass(pass),
            (b"AUTH", None) => self.send("+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"),
            (b"AUTH", Some(args)) => self.auth(args),
            (b"APOP", _) => self.bad("APOP is not supported."),
            (
                b"STAT" | b"LIST" | b"RETR" | b"DELE" | b"NOOP" | b"RSET" | b"TOP" | b"UIDL"
                | b"LAST",
                _,
            ) => self.bad("Not logged in."),
            (b"CAPA" | b"QUIT" | b"STLS" | b"USER" | b"PASS", _) => self.bad("Invalid arguments."),
            _ => self.bad("Unknown command."),
        }
    }

    fn stls(&mut self) {
        if self.cfg.tls_active {
            return self.bad("TLS is already active.");
        }
        if !self.cfg.starttls_available {
            return self.bad("STLS is not available on this port.");
        }
        self.send("+OK Begin TLS negotiation now.\r\n");
        // Anything pipelined after STLS arrived in plaintext and must not
        // be taken as sent over TLS (RFC 2595 §4, CVE-2011-0411 class).
        self.buf.clear();
        self.state = State::StartTlsPending;
        self.events.push_back(FrontEvent::StartTls);
    }

    /// Refuse a login before TLS where that is not allowed. True when
    /// refused.
    fn refuse_plaintext(&mut self) -> bool {
        if self.auth_allowed() {
            return false;
        }
        self.bad("[AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections; use STLS.");
        true
    }

    fn user(&mut self, name: &[u8]) {
        if self.refuse_plaintext() {
            return;
        }
        if name.len() > MAX_FIELD {
            return self.bad("User name too long.");
        }
        self.state = State::Authorization {
            user: Some(name.to_vec()),
        };
        self.send("+OK\r\n");
    }

    fn pass(&mut self, pass: &[u8]) {
        if self.refuse_plaintext() {
            return;
        }
        let State::Authorization { user: Some(user) } =
            std::mem::replace(&mut self.state, State::Authorization { user: None })
        else {
            return self.bad("USER first.");
        };
        if pass.len() > MAX_FIELD {
            return self.bad("Password too long.");
        }
        self.request_login(sasl::credentials(
            user,
            pass.to_vec(),
            None,
            Mechanism::Login,
        ));
    }

    fn auth(&mut self, args: &[u8]) {
        let mut it = args.split(|b| *b == b' ');
        let mech = it.next().unwrap_or_default().to_ascii_uppercase();
        let initial = it.next();
        if it.next().is_some() {
            return self.bad("Invalid AUTH arguments.");
        }
        let step = match mech.as_slice() {
            b"PLAIN" => SaslStep::Plain,
            b"LOGIN" => SaslStep::LoginUser,
            _ => return self.bad("Unsupported authentication mechanism."),
        };
        if self.refuse_plaintext() {
            return;
        }
        match initial {
            Some(ir) => self.sasl_response(step, ir),
            None => self.challenge(step),
        }
    }

    fn challenge(&mut self, step: SaslStep) {
        self.send(match step {
            SaslStep::Plain => "+ \r\n",
            SaslStep::LoginUser => "+ VXNlcm5hbWU6\r\n",
            SaslStep::LoginPassword { .. } => "+ UGFzc3dvcmQ6\r\n",
        });
        self.state = State::SaslResponse(step);
    }

    fn sasl_response(&mut self, step: SaslStep, response: &[u8]) {
        self.state = State::Authorization { user: None };
        let decoded = match sasl::decode_response(response) {
            Ok(d) => d,
            Err(ResponseError::Cancelled) => return self.bad("Authentication cancelled."),
            Err(ResponseError::InvalidBase64) => return self.bad("Invalid base64 data."),
        };
        if decoded.len() > 3 * MAX_FIELD {
            return self.bad("SASL response too large.");
        }
        match step {
            SaslStep::Plain => match sasl::parse_plain(&decoded) {
                Some(plain) => self.request_login(plain.credentials()),
                None => self.bad("Invalid PLAIN SASL response."),
            },
            SaslStep::LoginUser => self.challenge(SaslStep::LoginPassword { user: decoded }),
            SaslStep::LoginPassword { user } => {
                self.request_login(sasl::credentials(user, decoded, None, Mechanism::Login))
            }
        }
    }

    fn request_login(&mut self, creds: Option<Credentials>) {
        let Some(creds) = creds else {
            return self.auth_failed();
        };
        self.state = State::LoginPending;
        self.events.push_back(FrontEvent::Login(creds));
    }
}

/// A failed login in POP3's words: the RFC 2449/3206 response code for
/// the IMAP code the login flow decided.
pub fn refusal_line(r: &Refusal<'_>) -> String {
    let code = match r.code.map(str::to_ascii_uppercase).as_deref() {
        Some("UNAVAILABLE" | "SERVERBUG") => "SYS/TEMP",
        Some("LIMIT" | "INUSE") => "IN-USE",
        _ => "AUTH",
    };
    format!("-ERR [{code}] {}\r\n", sanitize_text(r.text))
}

impl PreAuthMachine for Pop3PreAuth {
    fn input(&mut self, data: &[u8]) {
        if matches!(self.state, State::Closed | State::LoggedIn) {
            return;
        }
        self.buf.extend_from_slice(data);
    }

    fn poll(&mut self) -> Option<FrontEvent> {
        if self.events.is_empty() {
            self.process();
        }
        self.events.pop_front()
    }

    fn deadline(&self) -> Instant {
        self.cfg.deadline
    }

    fn timeout(&mut self, now: Instant) {
        if now >= self.cfg.deadline
            && !matches!(
                self.state,
                State::Closed | State::LoggedIn | State::LoginPending
            )
        {
            self.err("Disconnected for inactivity.");
            self.close(CloseReason::Timeout);
        }
    }

    fn tls_established(&mut self) {
        if self.state == State::StartTlsPending {
            self.cfg.tls_active = true;
            self.state = State::Authorization { user: None };
        }
    }

    fn login_ok(&mut self) {
        if self.state == State::LoginPending {
            self.send("+OK Logged in.\r\n");
            self.state = State::LoggedIn;
        }
    }

    fn login_failed(&mut self, refusal: &Refusal<'_>) {
        if self.state != State::LoginPending {
            return;
        }
        self.send(refusal_line(refusal));
        self.state = State::Authorization { user: None };
        self.count_auth_failure();
    }

    fn take_pipelined(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }

    fn shutdown_notice(&self) -> &'static [u8] {
        b"-ERR [SYS/TEMP] Server shutting down.\r\n"
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
#[path = "preauth_tests.rs"]
#[allow(clippy::disallowed_methods)] // the tests make deadlines from the clock
mod tests;
