//! COMPRESS=DEFLATE (RFC 4978) in the relay core: imapmux answers the
//! command itself, and the driver turns compression on for the client
//! stream right after the tagged OK is written. The backend connection
//! never sees it (its framing stays plain), so a compressed session parks,
//! re-attaches and is reused like any other.
//!
//! Order of events: COMPRESS arrives with nothing else in flight → the OK
//! is queued (`Queued`) → once it is in the client queue nothing more goes
//! there and no more client input is read (`Switching`) → the driver sees
//! [`RelaySession::deflate_due`], waits until the OK is written and
//! flushed, wraps the stream and calls [`RelaySession::deflate_started`]
//! with what it read meanwhile being compressed data (`On`).

use bytes::{Bytes, BytesMut};

use super::{Inject, RelaySession};
use crate::imap::command::trim_crlf;
use crate::metrics::command::CommandResult;
use crate::relay::ledger::Command;

/// Where COMPRESS=DEFLATE stands for the client stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeflateState {
    Off,
    /// The OK waits for its turn toward the client.
    Queued,
    /// The OK is in the client queue: the driver switches after it.
    Switching,
    On,
}

impl DeflateState {
    /// Between the command and the switch: client input and further
    /// output wait.
    pub(super) fn pending(self) -> bool {
        matches!(self, DeflateState::Queued | DeflateState::Switching)
    }
}

impl RelaySession {
    /// `COMPRESS <mechanism>` (no literal). Returns false when the relay
    /// does not offer compression (the caller refuses it as before).
    pub(super) fn compress_command(&mut self, cmd: &Command, line: &[u8]) -> bool {
        if self.cfg.compress.is_none() {
            return false;
        }
        let arg = trim_crlf(line.get(cmd.args_at..).unwrap_or_default());
        let tag = &cmd.tag;
        let (reply, ok) = if self.deflate != DeflateState::Off {
            (
                format!("{tag} NO [COMPRESSIONACTIVE] DEFLATE active via COMPRESS.\r\n"),
                false,
            )
        } else if !arg.eq_ignore_ascii_case(b"DEFLATE") {
            (
                format!("{tag} BAD Unknown compression mechanism.\r\n"),
                false,
            )
        } else if !self.ledger.is_empty()
            || !self.injects.is_empty()
            || self.held.is_some()
            || self.awaiting_plus.is_some()
        {
            // Responses still to come would straddle the switch.
            (
                format!(
                    "{tag} NO [CANNOT] Can't use COMPRESS while other commands are running.\r\n"
                ),
                false,
            )
        } else {
            (format!("{tag} OK Begin compression.\r\n"), true)
        };
        let result = if ok {
            CommandResult::Ok
        } else {
            CommandResult::No
        };
        self.answered_here(cmd, result);
        self.inject_pending += reply.len();
        self.injects.push_back(Inject {
            bytes: Bytes::from(reply),
            then: None,
            compress: ok,
        });
        if ok {
            self.deflate = DeflateState::Queued;
        }
        self.flush_injects();
        true
    }

    /// The level to turn compression on at, once the OK is written: the
    /// driver then wraps the stream (after flushing it) and calls
    /// [`RelaySession::deflate_started`].
    pub fn deflate_due(&self) -> Option<u32> {
        (self.deflate == DeflateState::Switching && self.to_client.is_empty())
            .then_some(self.cfg.compress)
            .flatten()
    }

    /// The driver turned compression on. Returns the client bytes read
    /// after the COMPRESS line: compressed data, for the stream to inflate.
    pub fn deflate_started(&mut self, now: std::time::Instant) -> BytesMut {
        self.deflate = DeflateState::On;
        let pending = std::mem::take(&mut self.client_in);
        // What waited for the switch (backend data, imapmux's own answers).
        self.process_backend(now);
        // An operator's stop that waited for the switch goes out now.
        self.try_soft_close(now);
        pending
    }

    /// Whether the client stream is compressed.
    pub fn compressed(&self) -> bool {
        self.deflate == DeflateState::On
    }

    /// A backend `* CAPABILITY` line as the client must see it: COMPRESS
    /// is imapmux's, whatever the backend offers.
    pub(super) fn client_capability_line(&self, line: &[u8]) -> Option<Bytes> {
        let rest = line.get(..13)?;
        if !rest.eq_ignore_ascii_case(b"* CAPABILITY ") {
            return None;
        }
        let text = std::str::from_utf8(trim_crlf(line.get(13..)?)).ok()?;
        let theirs = text
            .split(' ')
            .any(|c| c.to_ascii_uppercase().starts_with("COMPRESS="));
        if !theirs && self.cfg.compress.is_none() {
            return None;
        }
        let mut out = String::from("* CAPABILITY");
        for cap in text.split(' ').filter(|c| !c.is_empty()) {
            if !cap.to_ascii_uppercase().starts_with("COMPRESS=") {
                out.push(' ');
                out.push_str(cap);
            }
        }
        if self.cfg.compress.is_some() {
            out.push_str(" COMPRESS=DEFLATE");
        }
        out.push_str("\r\n");
        Some(Bytes::from(out))
    }
}
