//! What the client-facing protocols share beyond IMAP's own session: the
//! protocol a listener speaks ([`Protocol`]), SASL decoding ([`sasl`]), the
//! event interface of a line protocol's pre-auth state machine
//! ([`PreAuthMachine`]), and the thin driver that runs such a machine over a
//! socket, logs in through the same auth, penalty, routing and backend
//! layers as IMAP, then relays bytes ([`driver`], [`relay`]). POP3
//! ([`crate::pop3`]) and ManageSieve ([`crate::sieve`]) are built on it.

pub mod backend;
pub mod config;
pub mod driver;
pub mod relay;
pub mod sasl;

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

pub use crate::identity::Credentials;
pub use crate::session::preauth::CloseReason;

/// The protocol a listener speaks to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// IMAP4rev1/IMAP4rev2 (the default).
    #[default]
    Imap,
    /// POP3 (RFC 1939, STLS RFC 2595, SASL RFC 5034, CAPA RFC 2449).
    Pop3,
    /// ManageSieve (RFC 5804).
    #[serde(alias = "managesieve")]
    Sieve,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Imap, Protocol::Pop3, Protocol::Sieve];

    /// The metric label, the config value and the log word.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Sieve => "sieve",
        }
    }
}

/// How a login failed, as the client is told: the IMAP status, response
/// code and text the login flow decided ([`crate::session`]), which each
/// protocol renders in its own syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal<'a> {
    /// `NO` (or `BAD`).
    pub status: &'a str,
    /// An IMAP response code: `AUTHENTICATIONFAILED`, `UNAVAILABLE`,
    /// `LIMIT`, …
    pub code: Option<&'a str>,
    pub text: &'a str,
}

/// What a line protocol's pre-auth state machine asks of the driver.
#[derive(Debug, PartialEq, Eq)]
pub enum FrontEvent {
    /// Write these bytes to the client.
    Send(Bytes),
    /// Flush, run the TLS handshake, then call
    /// [`PreAuthMachine::tls_established`].
    StartTls,
    /// Authenticate and log in, then call [`PreAuthMachine::login_ok`] or
    /// [`PreAuthMachine::login_failed`]. No input is processed meanwhile.
    Login(Credentials),
    /// Flush and close the connection.
    Close(CloseReason),
}

/// The sans-I/O pre-auth phase of a line protocol (POP3, ManageSieve):
/// fed client bytes and time, it returns events.
pub trait PreAuthMachine: Send {
    /// Feed bytes read from the client.
    fn input(&mut self, data: &[u8]);
    /// The next event for the driver.
    fn poll(&mut self) -> Option<FrontEvent>;
    /// When the pre-auth timeout fires.
    fn deadline(&self) -> Instant;
    /// The timer fired at `now`.
    fn timeout(&mut self, now: Instant);
    /// The TLS handshake asked by [`FrontEvent::StartTls`] completed.
    fn tls_established(&mut self);
    /// The login succeeded: answer the client.
    fn login_ok(&mut self);
    /// The login failed: answer the client (and count the failure).
    fn login_failed(&mut self, refusal: &Refusal<'_>);
    /// After login: the bytes the client pipelined after its login.
    fn take_pipelined(&mut self) -> BytesMut;
    /// What the client is told when the server shuts down before login.
    fn shutdown_notice(&self) -> &'static [u8];
}
