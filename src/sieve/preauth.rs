//! The ManageSieve non-authenticated state, where imapmux itself is the
//! server (RFC 5804 §1.7, §2.1 AUTHENTICATE, §2.2 STARTTLS, §2.4
//! CAPABILITY, §2.3 LOGOUT, §2.13 NOOP).
//!
//! Sans-I/O: feed client bytes with [`PreAuthMachine::input`], then drain
//! [`PreAuthMachine::poll`] for events. Commands are framed by the IMAP
//! framer (ManageSieve strings are IMAP's: quoted, or literals `{N+}` /
//! `{N}`), bounded per line and literal; nothing sent before STARTTLS
//! survives the TLS handshake.
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
use crate::identity::Mechanism;
use crate::imap::framing::{Frame, Framer};

/// Settings for one client connection's non-authenticated state.
#[derive(Debug, Clone)]
pub struct SieveConfig {
    /// The connection is already encrypted (after STARTTLS).
    pub tls_active: bool,
    /// STARTTLS may be offered on this connection.
    pub starttls_available: bool,
    /// AUTHENTICATE is allowed without TLS.
    pub allow_plaintext_auth: bool,
    pub greeting: String,
    /// The backend's Sieve capability lines to advertise (`"SIEVE" "…"`,
    /// `"NOTIFY" "…"`, `"MAXREDIRECTS" "…"`), each CRLF-terminated.
    pub sieve_capabilities: String,
    pub max_line: usize,
    /// Largest literal accepted before login.
    pub max_literal: usize,
    pub max_auth_failures: u32,
    pub max_bad_commands: u32,
    pub deadline: Instant,
}

/// The Sieve extensions advertised when no backend reported its own yet
/// (Dovecot 2.3 Pigeonhole's defaults).
pub const DEFAULT_SIEVE_CAPABILITIES: &str = "\"SIEVE\" \"fileinto reject envelope encoded-character vacation subaddress comparator-i;ascii-numeric relational regex imap4flags copy include variables body enotify environment mailbox date index ihave duplicate mime foreverypart extracttext\"\r\n\"NOTIFY\" \"mailto\"\r\n";

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Commands,
    /// A challenge was sent for AUTHENTICATE; waiting for the response.
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

/// One token of a command: an atom, or a string (quoted or literal).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Atom(Vec<u8>),
    Str(Vec<u8>),
}

/// A quoted string's content (escapes undone) and what follows its
/// closing quote, from just after the opening quote; `None` when it is
/// not terminated.
pub(crate) fn take_quoted(tail: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut v = Vec::new();
    let mut it = tail.iter().enumerate();
    while let Some((i, c)) = it.next() {
        match c {
            b'"' => return Some((v, tail.get(i + 1..).unwrap_or_default())),
            b'\\' => v.push(*it.next()?.1),
            c => v.push(*c),
        }
    }
    None
}

/// Split a command (its line parts, each followed by the literal it
/// announced) into tokens. Linear, no recursion. `None`: syntax error.
fn tokenize(parts: &[(Bytes, Option<Bytes>)]) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    for (line, literal) in parts {
        let l = line.strip_suffix(b"\n").unwrap_or(line);
        let mut l = l.strip_suffix(b"\r").unwrap_or(l);
        if literal.is_some() {
            // drop the `{N}` / `{N+}` announcement
            let open = memchr::memrchr(b'{', l)?;
            l = l.get(..open)?;
        }
        let mut rest = l;
        loop {
            while let Some(r) = rest.strip_prefix(b" ") {
                rest = r;
            }
            let Some((&c, tail)) = rest.split_first() else {
                break;
            };
            if c == b'"' {
                let (s, after) = take_quoted(tail)?;
                out.push(Token::Str(s));
                rest = after;
            } else {
                let end = rest.iter().position(|c| *c == b' ').unwrap_or(rest.len());
                let (atom, after) = rest.split_at_checked(end)?;
                out.push(Token::Atom(atom.to_vec()));
                rest = after;
            }
        }
        if let Some(lit) = literal {
            out.push(Token::Str(lit.to_vec()));
        }
    }
    Some(out)
}

/// A ManageSieve quoted string of `text` (made printable, one line).
pub fn quoted(text: &str) -> String {
    let mut o = String::with_capacity(text.len() + 2);
    o.push('"');
    for c in crate::imap::response::sanitize_text(text).chars() {
        if c == '"' || c == '\\' {
            o.push('\\');
        }
        o.push(c);
    }
    o.push('"');
    o
}

/// A failed login in ManageSieve's words (`TRYLATER` for what the user
/// cannot fix).
pub fn refusal_line(r: &Refusal<'_>) -> String {
    let code = match r.code.map(str::to_ascii_uppercase).as_deref() {
        Some("UNAVAILABLE" | "SERVERBUG" | "LIMIT" | "INUSE") => "(TRYLATER) ",
        _ => "",
    };
    format!("NO {code}{}\r\n", quoted(r.text))
}

/// The ManageSieve pre-auth state machine.
pub struct SievePreAuth {
    cfg: SieveConfig,
    state: State,
    framer: Framer,
    buf: BytesMut,
    /// The command being assembled: line parts and their literals.
    parts: Vec<(Bytes, Option<Bytes>)>,
    literal: BytesMut,
    command_bytes: usize,
    events: VecDeque<FrontEvent>,
    auth_failures: u32,
    bad_commands: u32,
}

impl SievePreAuth {
    pub fn new(cfg: SieveConfig) -> Self {
        let framer = Framer::new(cfg.max_line);
        let mut s = SievePreAuth {
            cfg,
            state: State::Commands,
            framer,
            buf: BytesMut::new(),
            parts: Vec::new(),
            literal: BytesMut::new(),
            command_bytes: 0,
            events: VecDeque::new(),
            auth_failures: 0,
            bad_commands: 0,
        };
        let greeting = format!("{}OK {}\r\n", s.capabilities(), quoted(&s.cfg.greeting));
        s.send(greeting);
        s
    }

    fn auth_allowed(&self) -> bool {
        self.cfg.tls_active || self.cfg.allow_plaintext_auth
    }

    /// The capability lines in the current state (RFC 5804 §1.7).
    pub fn capabilities(&self) -> String {
        let mut c = String::from("\"IMPLEMENTATION\" \"imapmux\"\r\n");
        if self.auth_allowed() {
            c.push_str("\"SASL\" \"PLAIN LOGIN\"\r\n");
        } else {
            c.push_str("\"SASL\" \"\"\r\n");
        }
        c.push_str(&self.cfg.sieve_capabilities);
        if !self.cfg.tls_active && self.cfg.starttls_available {
            c.push_str("\"STARTTLS\"\r\n");
        }
        c.push_str("\"VERSION\" \"1.0\"\r\n");
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

    fn bye(&mut self, text: &str, why: CloseReason) {
        self.send(format!("BYE {}\r\n", quoted(text)));
        self.close(why);
    }

    fn no(&mut self, text: &str) {
        self.send(format!("NO {}\r\n", quoted(text)));
        self.bad_commands += 1;
        if self.bad_commands >= self.cfg.max_bad_commands {
            self.bye("Too many invalid commands.", CloseReason::TooManyErrors);
        }
    }

    fn count_auth_failure(&mut self) {
        self.auth_failures += 1;
        if self.auth_failures >= self.cfg.max_auth_failures {
            self.bye(
                "Too many authentication failures.",
                CloseReason::AuthFailures,
            );
        }
    }

    fn process(&mut self) {
        while self.events.is_empty() {
            if !matches!(self.state, State::Commands | State::SaslResponse(_)) {
                return;
            }
            let Some(frame) = self.framer.next_frame(&mut self.buf) else {
                return;
            };
            self.on_frame(frame);
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        match frame {
            Frame::LineChunk { .. } => self.bye("Line too long.", CloseReason::ProtocolError),
            Frame::Line { bytes, .. } if bytes.len() > self.cfg.max_line => {
                self.bye("Line too long.", CloseReason::ProtocolError)
            }
            Frame::Literal { bytes, remaining } => {
                self.literal.extend_from_slice(&bytes);
                if remaining == 0 {
                    let lit = std::mem::take(&mut self.literal).freeze();
                    if let Some(last) = self.parts.last_mut() {
                        last.1 = Some(lit);
                    }
                }
            }
            Frame::Line { bytes, literal, .. } => {
                self.command_bytes += bytes.len();
                match literal {
                    Some(spec) => {
                        let too_big = spec.len > self.cfg.max_literal as u64
                            || self.command_bytes as u64 + spec.len > self.cfg.max_line as u64;
                        if too_big {
                            // The client sends the data without waiting:
                            // it cannot be skipped safely.
                            return self.bye("Literal too large.", CloseReason::ProtocolError);
                        }
                        self.command_bytes += spec.len as usize;
                        // An empty literal has no Literal frame.
                        let lit = (spec.len == 0).then(Bytes::new);
                        self.parts.push((bytes, lit));
                    }
                    None => {
                        self.parts.push((bytes, None));
                        self.command_complete();
                    }
                }
            }
        }
    }

    fn command_complete(&mut self) {
        let parts = std::mem::take(&mut self.parts);
        self.command_bytes = 0;
        let tokens = tokenize(&parts);
        if let State::SaslResponse(step) = std::mem::replace(&mut self.state, State::Commands) {
            return match tokens.as_deref() {
                Some([Token::Str(r)]) => self.sasl_response(step, r),
                _ => self.no("Invalid SASL response."),
            };
        }
        let Some(tokens) = tokens else {
            return self.no("Syntax error.");
        };
        let Some((Token::Atom(verb), args)) = tokens.split_first() else {
            if tokens.is_empty() {
                return; // empty line
            }
            return self.no("Syntax error.");
        };
        match (verb.to_ascii_uppercase().as_slice(), args) {
            (b"CAPABILITY", []) => {
                let caps = self.capabilities();
                self.send(format!("{caps}OK \"Capability completed.\"\r\n"));
            }
            (b"NOOP", []) => self.send("OK \"NOOP completed.\"\r\n"),
            // RFC 5804 §2.13: the tag comes back in a TAG response code
            // (sieve-connect resyncs after STARTTLS with it).
            (b"NOOP", [Token::Str(tag)]) => {
                let tag = quoted(&String::from_utf8_lossy(tag));
                self.send(format!("OK (TAG {tag}) \"NOOP completed.\"\r\n"));
            }
            (b"LOGOUT", []) => {
                self.send("OK \"Logout completed.\"\r\n");
                self.close(CloseReason::Logout);
            }
            (b"STARTTLS", []) => self.starttls(),
            (b"AUTHENTICATE", args) => self.authenticate(args),
            (
                b"HAVESPACE" | b"PUTSCRIPT" | b"LISTSCRIPTS" | b"SETACTIVE" | b"GETSCRIPT"
                | b"DELETESCRIPT" | b"RENAMESCRIPT" | b"CHECKSCRIPT" | b"UNAUTHENTICATE",
                _,
            ) => self.no("Authenticate first."),
            (b"CAPABILITY" | b"NOOP" | b"LOGOUT" | b"STARTTLS", _) => self.no("Invalid arguments."),
            _ => self.no("Unknown command."),
        }
    }

    fn starttls(&mut self) {
        if self.cfg.tls_active {
            return self.no("TLS is already active.");
        }
        if !self.cfg.starttls_available {
            return self.no("STARTTLS is not available on this port.");
        }
        self.send("OK \"Begin TLS negotiation now.\"\r\n");
        // Anything pipelined after STARTTLS arrived in plaintext.
        self.buf.clear();
        self.framer = Framer::new(self.cfg.max_line);
        self.state = State::StartTlsPending;
        self.events.push_back(FrontEvent::StartTls);
    }

    fn authenticate(&mut self, args: &[Token]) {
        let (mech, initial) = match args {
            [Token::Str(m) | Token::Atom(m)] => (m, None),
            [Token::Str(m) | Token::Atom(m), Token::Str(ir)] => (m, Some(ir.clone())),
            _ => return self.no("Invalid AUTHENTICATE arguments."),
        };
        let step = match mech.to_ascii_uppercase().as_slice() {
            b"PLAIN" => SaslStep::Plain,
            b"LOGIN" => SaslStep::LoginUser,
            _ => return self.no("Unsupported authentication mechanism."),
        };
        if !self.auth_allowed() {
            self.send("NO (ENCRYPT-NEEDED) \"Plaintext authentication disallowed on non-secure connections; use STARTTLS.\"\r\n");
            self.bad_commands += 1;
            return;
        }
        match initial {
            Some(ir) => self.sasl_response(step, &ir),
            None => self.challenge(step),
        }
    }

    fn challenge(&mut self, step: SaslStep) {
        self.send(match step {
            SaslStep::Plain => "\"\"\r\n",
            SaslStep::LoginUser => "\"VXNlcm5hbWU6\"\r\n",
            SaslStep::LoginPassword { .. } => "\"UGFzc3dvcmQ6\"\r\n",
        });
        self.state = State::SaslResponse(step);
    }

    fn sasl_response(&mut self, step: SaslStep, response: &[u8]) {
        let decoded = match sasl::decode_response(response) {
            Ok(d) => d,
            Err(ResponseError::Cancelled) => return self.no("Authentication cancelled."),
            Err(ResponseError::InvalidBase64) => return self.no("Invalid base64 data."),
        };
        match step {
            SaslStep::Plain => match sasl::parse_plain(&decoded) {
                Some(plain) => self.request_login(plain.credentials()),
                None => self.no("Invalid PLAIN SASL response."),
            },
            SaslStep::LoginUser => self.challenge(SaslStep::LoginPassword { user: decoded }),
            SaslStep::LoginPassword { user } => {
                let creds = sasl::credentials(user, decoded, None, Mechanism::Login);
                self.request_login(creds)
            }
        }
    }

    fn request_login(&mut self, creds: Option<crate::identity::Credentials>) {
        match creds {
            Some(c) => {
                self.state = State::LoginPending;
                self.events.push_back(FrontEvent::Login(c));
            }
            None => {
                self.send("NO \"Authentication failed.\"\r\n");
                self.count_auth_failure();
            }
        }
    }
}

impl PreAuthMachine for SievePreAuth {
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
            self.bye("Disconnected for inactivity.", CloseReason::Timeout);
        }
    }

    fn tls_established(&mut self) {
        if self.state == State::StartTlsPending {
            self.cfg.tls_active = true;
            self.state = State::Commands;
            // RFC 5804 §2.2: the capabilities again, then OK.
            let caps = self.capabilities();
            self.send(format!("{caps}OK \"TLS negotiation successful.\"\r\n"));
        }
    }

    fn login_ok(&mut self) {
        if self.state == State::LoginPending {
            self.send("OK \"Logged in.\"\r\n");
            self.state = State::LoggedIn;
        }
    }

    fn login_failed(&mut self, refusal: &Refusal<'_>) {
        if self.state != State::LoginPending {
            return;
        }
        self.send(refusal_line(refusal));
        self.state = State::Commands;
        self.count_auth_failure();
    }

    fn take_pipelined(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }

    fn shutdown_notice(&self) -> &'static [u8] {
        b"BYE (TRYLATER) \"Server shutting down.\"\r\n"
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
