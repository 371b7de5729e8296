//! [`RelaySession`]: the authenticated phase of one client session as a
//! sans-I/O state machine, in the manner of quinn-proto's `Connection`.
//!
//! Inputs: bytes from the client, bytes from the backend, end of either
//! stream, shutdown, and `now` (the core never reads the clock). Outputs:
//! bytes for each side ([`RelaySession::client_transmit`],
//! [`RelaySession::backend_transmit`]), whether each side may be read
//! (bounded queues: backpressure), one deadline
//! ([`RelaySession::poll_timeout`]) and, once, how it finished
//! ([`Finish`]: ended, backend released for reuse, or client to park).
//!
//! It owns the in-flight command ledger (each command parsed once), the
//! mailbox view, IDLE and parking state, synchronizing literals waiting
//! for the backend's `+`, and the answers imapmux gives itself (sent only
//! between two backend messages). Features are [`Hook`]s.

pub(crate) mod backend;
mod client;
mod compress;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use self::compress::DeflateState;
use super::hooks::Hook;
use super::ledger::{Command, Completed, Ledger};
use super::outq::OutQueue;
use crate::imap::enabled::Enabled;
use crate::imap::framing::{Framer, LiteralSpec, Piece};
use crate::imap::mailbox::Tracker;
use crate::imap::select::SelectReply;
use crate::lifecycle::{EndReason, Phase};

/// Most bytes queued toward one side before the relay stops reading the
/// other side.
pub const OUT_MAX: usize = 256 * 1024;

/// Most bytes of imapmux's own answers (cache hits, refusals) not yet
/// written to the client before imapmux stops reading its commands. One
/// answer may exceed it (bounded by the cache's `max_item_size`).
pub const INJECT_MAX: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub max_line: usize,
    /// Client inactivity before `* BYE` (RFC 9051: at least 30 minutes).
    pub idle_timeout: Duration,
    /// How long to wait for a message boundary to send a BYE (and for the
    /// client to take it).
    pub bye_grace: Duration,
    /// How long the backend may take to answer a hook's prefetch.
    pub prefetch_timeout: Duration,
    /// Answer a LOGOUT itself and hand the backend connection back (for
    /// reuse) when nothing is in flight and the session changed no state
    /// that would outlive it.
    pub release_on_logout: bool,
    /// Park a client idling (IDLE) this long with nothing else in flight.
    pub park_after: Option<Duration>,
    /// Keep the selected mailbox's sequence → UID map (a hook serves
    /// FETCH from it).
    pub track_uids: bool,
    /// The mailbox already selected on the backend connection (a parked
    /// session re-attached), so the view starts with it.
    pub selected: Option<SelectedMailbox>,
    /// Extensions already enabled on the backend connection for this
    /// client (a parked session re-attached).
    pub enabled: Enabled,
    /// COMPRESS=DEFLATE may be turned on, at this level.
    pub compress: Option<u32>,
    /// The client stream is compressed already (a re-attached session).
    pub compressed: bool,
}

impl RelayConfig {
    /// The settings the transcript tests start from (no parking, no
    /// reuse, the UID map kept, COMPRESS not offered).
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        RelayConfig {
            max_line: 65536,
            idle_timeout: Duration::from_secs(1800),
            bye_grace: Duration::from_secs(5),
            prefetch_timeout: Duration::from_secs(30),
            release_on_logout: false,
            park_after: None,
            track_uids: true,
            selected: None,
            enabled: Default::default(),
            compress: None,
            compressed: false,
        }
    }
}

/// A mailbox selected before the relay started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedMailbox {
    pub name: String,
    pub read_only: bool,
    pub uidvalidity: u32,
    /// Every message's UID, in sequence order.
    pub uids: Vec<u32>,
    /// Its SELECT answer, if nothing changed since.
    pub select_reply: Option<Arc<SelectReply>>,
}

/// The session's buffers, borrowed for one turn of the driver.
pub struct Io<'a> {
    pub client_in: &'a mut BytesMut,
    pub backend_in: &'a mut BytesMut,
    pub to_client: Pending<'a>,
    pub to_backend: Pending<'a>,
}

/// Bytes queued toward one side, for a (vectored) write.
#[derive(Debug, Clone, Copy)]
pub struct Pending<'a>(&'a OutQueue);

impl<'a> Pending<'a> {
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Whether chunks cut from an input buffer (without a copy) wait here.
    pub fn holds_chunks(&self) -> bool {
        self.0.holds_chunks()
    }

    /// Fill `out` with the queued pieces in order; returns how many.
    pub fn slices(&self, out: &mut [std::io::IoSlice<'a>]) -> usize {
        self.0.slices(out)
    }
}

/// What a parked client needs to be resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub mailbox: String,
    pub read_only: bool,
    /// The tag of the client's IDLE (its tagged OK is owed).
    pub idle_tag: String,
    /// What the client enabled (the parked view answers in that shape).
    pub enabled: Enabled,
    /// The mailbox's SELECT answer, if nothing changed since it.
    pub select_reply: Option<Arc<SelectReply>>,
}

/// How the relay finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The session is over.
    End(EndReason),
    /// The client logged out; imapmux answered it and keeps the backend
    /// connection, logged in and idle, for reuse.
    Release,
    /// The client idled long enough: imapmux ended the IDLE on the backend
    /// (its tagged answer kept from the client); park the client.
    Park(Parked),
}

impl Finish {
    /// Whether what is queued for the client should still be written.
    pub fn flush_client(&self) -> bool {
        !matches!(
            self,
            Finish::End(EndReason::ClientClosed | EndReason::ClientError)
        )
    }
}

/// What imapmux says itself, sent between two backend messages.
#[derive(Debug)]
struct Inject {
    bytes: Bytes,
    then: Option<Finish>,
    /// Compression starts right after these bytes (COMPRESS's OK).
    compress: bool,
}

#[derive(Debug)]
struct Idle {
    tag: Box<str>,
    /// The client sent DONE (a late `+` does not start idling).
    done: bool,
    /// When the backend accepted it (`+`).
    since: Option<Instant>,
}

/// An operator's request to end the session at a safe point.
#[derive(Debug, Clone, Copy)]
struct SoftClose {
    bye: &'static [u8],
    reason: EndReason,
    /// BYE now, safe point or not.
    deadline: Instant,
}

/// A client command held back: waiting for a hook's prefetch.
#[derive(Debug)]
struct Held {
    cmd: Command,
    line: Bytes,
    literal: Option<LiteralSpec>,
    hook: usize,
    deadline: Instant,
}

pub struct RelaySession {
    cfg: RelayConfig,
    client_in: BytesMut,
    backend_in: BytesMut,
    /// Client-to-backend and backend-to-client framing.
    up: Framer,
    down: Framer,
    /// A client piece found but not processed yet (the ledger was full).
    stepped: Option<(Piece, usize)>,
    held: Option<Held>,
    to_backend: OutQueue,
    to_client: OutQueue,
    injects: VecDeque<Inject>,
    /// Injected bytes queued toward the client and not written yet: end
    /// offsets in the client stream, and lengths.
    inject_marks: VecDeque<(u64, usize)>,
    client_pushed: u64,
    client_written: u64,
    /// Bytes of injected answers not written to the client yet.
    inject_pending: usize,
    ledger: Ledger,
    view: Tracker,
    hooks: Vec<Box<dyn Hook>>,
    /// Tag of the command whose synchronizing literal waits for `+`.
    awaiting_plus: Option<Box<str>>,
    /// Tag of the client message being read (literals continue it).
    cur_tag: Box<str>,
    idle: Option<Idle>,
    /// COMPRESS=DEFLATE toward the client (compress.rs).
    deflate: DeflateState,
    /// imapmux sent DONE to park the client.
    parking: bool,
    /// The session changed backend state that outlives it (the
    /// connection is not reused).
    dirty: bool,
    /// Of that state, some that a parked session cannot reproduce (it
    /// does reproduce [`Enabled`]).
    unparkable: bool,
    enabled: Enabled,
    logout: bool,
    last_client: Instant,
    /// A closing answer is queued; the session ends at this deadline at
    /// the latest.
    closing: Option<Instant>,
    /// The operator asked the session to end at the next safe point.
    soft: Option<SoftClose>,
    finish: Option<Finish>,
}

impl std::fmt::Debug for RelaySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySession")
            .field("in_flight", &self.ledger.len())
            .field("finish", &self.finish)
            .finish()
    }
}

impl RelaySession {
    /// A relay starting at `now`. `client_in`: what the client sent after
    /// its login (pipelined); `backend_in`: what the backend sent after
    /// the login answer.
    pub fn new(
        cfg: RelayConfig,
        client_in: BytesMut,
        backend_in: BytesMut,
        hooks: Vec<Box<dyn Hook>>,
        now: Instant,
    ) -> Self {
        let mut view = if cfg.track_uids {
            Tracker::default()
        } else {
            Tracker::without_uid_map()
        };
        if let Some(m) = &cfg.selected {
            view.assume_selected(
                &m.name,
                m.read_only,
                m.uidvalidity,
                &m.uids,
                m.select_reply.clone(),
            );
        }
        let cfg_enabled = cfg.enabled;
        let cfg_compressed = cfg.compressed;
        let mut s = RelaySession {
            up: Framer::new(cfg.max_line),
            down: Framer::new(cfg.max_line),
            cfg,
            client_in,
            backend_in,
            stepped: None,
            held: None,
            to_backend: OutQueue::default(),
            to_client: OutQueue::default(),
            injects: VecDeque::new(),
            inject_marks: VecDeque::new(),
            client_pushed: 0,
            client_written: 0,
            inject_pending: 0,
            ledger: Ledger::default(),
            view,
            hooks,
            awaiting_plus: None,
            cur_tag: "".into(),
            idle: None,
            deflate: if cfg_compressed {
                DeflateState::On
            } else {
                DeflateState::Off
            },
            parking: false,
            dirty: cfg_enabled.any(),
            unparkable: false,
            enabled: cfg_enabled,
            logout: false,
            last_client: now,
            closing: None,
            soft: None,
            finish: None,
        };
        s.process_backend(now);
        s.process_client(now);
        s
    }

    pub fn phase(&self) -> Phase {
        match self.finish {
            None => Phase::Attached,
            Some(Finish::Park(_)) => Phase::Parked,
            Some(_) => Phase::Ended,
        }
    }

    /// How the relay finished, once it has.
    pub fn finished(&self) -> Option<&Finish> {
        self.finish.as_ref()
    }

    /// The mailbox view (selected mailbox, sequence → UID map).
    pub fn view(&self) -> &Tracker {
        &self.view
    }

    /// Client commands in flight.
    pub fn in_flight(&self) -> usize {
        self.ledger.len()
    }

    /// The session changed backend state that outlives it.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    // ----- input -----

    /// Whether the driver should read the client now.
    pub fn wants_client_read(&self) -> bool {
        self.finish.is_none()
            && !self.deflate.pending()
            && self.closing.is_none()
            && !self.parking
            && self.held.is_none()
            && self.stepped.is_none()
            && self.to_backend.len() < OUT_MAX
            && self.inject_outstanding() < INJECT_MAX
    }

    /// Whether the driver should read the backend now.
    pub fn wants_backend_read(&self) -> bool {
        self.finish.is_none()
            && self.deflate != DeflateState::Switching
            && self.to_client.len() < OUT_MAX
    }

    /// The input buffers (for the driver to read into) and the output
    /// (for it to write from), borrowed together so one `select!` can
    /// read both sides and write both sides. After reading into a buffer,
    /// call [`RelaySession::client_data`] / [`RelaySession::backend_data`].
    pub fn io(&mut self) -> Io<'_> {
        Io {
            client_in: &mut self.client_in,
            backend_in: &mut self.backend_in,
            to_client: Pending(&self.to_client),
            to_backend: Pending(&self.to_backend),
        }
    }

    /// Client bytes were read into [`Io::client_in`].
    pub fn client_data(&mut self, now: Instant) {
        self.last_client = now;
        self.process_client(now);
        self.try_soft_close(now);
    }

    /// Backend bytes were read into [`Io::backend_in`].
    pub fn backend_data(&mut self, now: Instant) {
        self.process_backend(now);
        // Answers may have unblocked client commands (ledger, prefetch).
        self.process_client(now);
        self.try_soft_close(now);
    }

    /// Feed client bytes (tests, simple drivers).
    pub fn client_input(&mut self, data: &[u8], now: Instant) {
        self.client_in.extend_from_slice(data);
        self.client_data(now);
    }

    /// Feed backend bytes (tests, simple drivers).
    pub fn backend_input(&mut self, data: &[u8], now: Instant) {
        self.backend_in.extend_from_slice(data);
        self.backend_data(now);
    }

    /// The client closed its side (`error`: it failed).
    pub fn client_closed(&mut self, error: bool) {
        if self.finish.is_some() {
            return;
        }
        self.finish = Some(Finish::End(if error {
            EndReason::ClientError
        } else if self.logout {
            EndReason::Logout
        } else {
            EndReason::ClientClosed
        }));
    }

    /// The backend closed its side (`error`: it failed).
    pub fn backend_closed(&mut self, error: bool) {
        if self.finish.is_some() {
            return;
        }
        self.finish = Some(Finish::End(if error {
            EndReason::BackendError
        } else if self.logout {
            EndReason::Logout
        } else {
            EndReason::BackendClosed
        }));
    }

    /// Writing to the client failed.
    pub fn client_write_failed(&mut self) {
        if !matches!(self.finish, Some(Finish::End(_))) {
            self.finish = Some(Finish::End(EndReason::ClientError));
        }
    }

    /// Writing to the backend failed.
    pub fn backend_write_failed(&mut self) {
        if self.finish.is_none() {
            self.finish = Some(Finish::End(EndReason::BackendError));
        }
    }

    /// imapmux is shutting down: `* BYE` at the next message boundary.
    pub fn shutdown(&mut self, now: Instant) {
        self.close_with(
            b"* BYE [UNAVAILABLE] Server shutting down.\r\n",
            EndReason::Shutdown,
            now,
        );
    }

    /// The operator asked the session to end: `bye` goes out at the first
    /// safe point (no client command in flight but an IDLE, the client
    /// between two commands: never inside an APPEND or its literal), or
    /// at `deadline` whatever the session is doing. Client commands not
    /// yet started wait (they never reach the backend; the client sees
    /// the BYE instead of their answers).
    pub fn close_softly(
        &mut self,
        bye: &'static [u8],
        reason: EndReason,
        deadline: Instant,
        now: Instant,
    ) {
        if self.soft.is_some() || self.closing.is_some() || self.finish.is_some() {
            return;
        }
        self.soft = Some(SoftClose {
            bye,
            reason,
            deadline,
        });
        self.try_soft_close(now);
    }

    /// Between two client commands, with nothing in flight but an IDLE.
    fn at_safe_point(&self) -> bool {
        let idle_only = self
            .idle
            .as_ref()
            .is_some_and(|i| !i.done && self.ledger.only_idle(&i.tag));
        (self.ledger.is_empty() || idle_only)
            && self.up.at_boundary()
            && self.stepped.is_none()
            && self.held.is_none()
            && self.awaiting_plus.is_none()
            && !self.parking
            && !self.deflate.pending()
    }

    fn try_soft_close(&mut self, now: Instant) {
        let Some(s) = self.soft else { return };
        if self.finish.is_some() || self.closing.is_some() {
            self.soft = None;
            return;
        }
        if self.at_safe_point() || now >= s.deadline {
            self.soft = None;
            self.close_with(s.bye, s.reason, now);
        }
    }

    // ----- output -----

    /// The next bytes to write to the client.
    pub fn client_transmit(&self) -> Option<&[u8]> {
        self.to_client.front()
    }

    /// `n` bytes of [`RelaySession::client_transmit`] (or of
    /// [`Io::to_client`]) were written.
    pub fn client_sent(&mut self, n: usize, now: Instant) {
        self.to_client.consume(n);
        self.client_written += n as u64;
        while let Some((end, len)) = self.inject_marks.front().copied() {
            if end > self.client_written {
                break;
            }
            self.inject_pending -= len;
            self.inject_marks.pop_front();
        }
        if self.stepped.is_some() {
            // Room again: commands held for it go on.
            self.process_client(now);
        }
        self.try_soft_close(now);
    }

    pub fn backend_transmit(&self) -> Option<&[u8]> {
        self.to_backend.front()
    }

    pub fn backend_sent(&mut self, n: usize, now: Instant) {
        self.to_backend.consume(n);
        if self.stepped.is_some() {
            self.process_client(now);
        }
    }

    /// Take the unprocessed input of both sides (after [`Finish::Release`]
    /// or [`Finish::Park`]): client bytes, backend bytes.
    pub fn take_input(&mut self) -> (BytesMut, BytesMut) {
        (
            std::mem::take(&mut self.client_in),
            std::mem::take(&mut self.backend_in),
        )
    }

    // ----- time -----

    /// The next instant [`RelaySession::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finish.is_some() {
            return None;
        }
        let mut next = match self.closing {
            Some(d) => d,
            None => self.last_client + self.cfg.idle_timeout,
        };
        if let Some(h) = &self.held {
            next = next.min(h.deadline);
        }
        if let Some(p) = self.park_due() {
            next = next.min(p);
        }
        if let Some(s) = &self.soft {
            next = next.min(s.deadline);
        }
        Some(next)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.finish.is_some() {
            return;
        }
        self.try_soft_close(now);
        if let Some(d) = self.closing {
            if now >= d {
                // No message boundary (or no room) in time for the BYE.
                self.finish = Some(match self.injects.back().and_then(|i| i.then.clone()) {
                    Some(Finish::End(r)) => Finish::End(r),
                    _ => Finish::End(EndReason::Logout),
                });
            }
            return;
        }
        if self.held.as_ref().is_some_and(|h| now >= h.deadline) {
            self.finish = Some(Finish::End(EndReason::BackendError));
            return;
        }
        if now >= self.last_client + self.cfg.idle_timeout {
            self.close_with(
                b"* BYE Autologout; idle for too long.\r\n",
                EndReason::IdleTimeout,
                now,
            );
            return;
        }
        if self.park_due().is_some_and(|d| now >= d) {
            // End the IDLE on the backend; its tagged answer parks.
            self.to_backend.push_slice(b"DONE\r\n");
            self.parking = true;
        }
    }

    /// When to park, if the session could be parked now.
    fn park_due(&self) -> Option<Instant> {
        let after = self.cfg.park_after?;
        let idle = self.idle.as_ref()?;
        let since = idle.since?;
        let parkable = !self.parking
            && self.closing.is_none()
            && self.soft.is_none()
            && self.ledger.only_idle(&idle.tag)
            && !self.unparkable
            && self.awaiting_plus.is_none()
            && self.held.is_none()
            && self.injects.is_empty()
            && self.inject_outstanding() == 0
            && !self.view.changing()
            && self.view.selected.as_ref().is_some_and(|m| {
                // The watcher names mailboxes in modified UTF-7; a UTF-8
                // name (UTF8=ACCEPT) is the same only when ASCII.
                !self.enabled.utf8_accept || m.name.is_ascii()
            });
        parkable.then_some(since + after)
    }

    // ----- shared helpers -----

    fn inject_outstanding(&self) -> usize {
        self.inject_pending
    }

    /// Whether a new client command may be taken now: room toward the
    /// backend, few enough of imapmux's own answers waiting for the
    /// client, and a free place in the ledger.
    fn room_for_command(&self) -> bool {
        self.to_backend.len() < OUT_MAX
            && self.inject_pending < INJECT_MAX
            && !self.ledger.is_full()
    }

    /// Queue an answer of imapmux's own for the client.
    fn inject(&mut self, bytes: Bytes, then: Option<Finish>) {
        self.inject_pending += bytes.len();
        self.injects.push_back(Inject {
            bytes,
            then,
            compress: false,
        });
        self.flush_injects();
    }

    /// Move queued answers to the client at a backend message boundary.
    fn flush_injects(&mut self) {
        // While COMPRESS is being switched on, nothing goes toward the
        // client: it would go out uncompressed (a BYE of a shutdown or an
        // idle timeout goes once the stream is compressed).
        if !self.down.at_boundary()
            || self.finish.is_some()
            || self.deflate == DeflateState::Switching
        {
            return;
        }
        while let Some(i) = self.injects.pop_front() {
            let n = i.bytes.len();
            self.to_client.push(i.bytes);
            self.client_pushed += n as u64;
            self.inject_marks.push_back((self.client_pushed, n));
            if i.compress {
                // Nothing more toward the client until the driver has
                // turned compression on after these bytes.
                self.deflate = DeflateState::Switching;
                return;
            }
            if let Some(f) = i.then {
                self.finish = Some(f);
                self.injects.clear();
                return;
            }
        }
    }

    /// Send `bye` at the next boundary and end with `reason`.
    fn close_with(&mut self, bye: &'static [u8], reason: EndReason, now: Instant) {
        if self.closing.is_some() || self.finish.is_some() {
            return;
        }
        self.closing = Some(now + self.cfg.bye_grace);
        self.inject(Bytes::from_static(bye), Some(Finish::End(reason)));
    }

    /// Bytes for the client that came from the backend.
    fn pass_to_client(&mut self, bytes: Bytes) {
        self.client_pushed += bytes.len() as u64;
        self.to_client.push(bytes);
    }

    fn completed(&mut self, done: &Completed) {
        for h in &mut self.hooks {
            h.completed(done);
        }
    }

    fn set_idling(&mut self, on: bool) {
        for h in &mut self.hooks {
            h.idling(on);
        }
    }
}

#[cfg(test)]
impl RelaySession {
    /// Client bytes that arrived but are not processed yet.
    fn client_buf_for_test(&mut self) -> &mut BytesMut {
        &mut self.client_in
    }

    /// Everything queued for the backend, as if written, as text.
    pub(crate) fn drain_to_backend(&mut self, now: Instant) -> String {
        let mut out = Vec::new();
        while let Some(d) = self.backend_transmit() {
            let n = d.len();
            out.extend_from_slice(d);
            self.backend_sent(n, now);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Everything queued for the client, as if written, as text.
    pub(crate) fn drain_to_client(&mut self, now: Instant) -> String {
        let mut out = Vec::new();
        while let Some(d) = self.client_transmit() {
            let n = d.len();
            out.extend_from_slice(d);
            self.client_sent(n, now);
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests make instants from the clock
mod tests;
