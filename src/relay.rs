//! The authenticated phase: a full-duplex relay that understands IMAP
//! framing in both directions (lines, `{N}`, `{N+}`, `~{N}` literals) and
//! streams literal data without buffering it whole. Bytes pass unchanged;
//! the framing view is what later features hook into.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::cache::flow::{Disposition, Flow, Upstream};
use crate::imap::framing::{Framer, Piece};

/// How the relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// The client logged out and the backend closed.
    Logout,
    ClientClosed,
    BackendClosed,
    ClientError,
    BackendError,
    IdleTimeout,
    Shutdown,
    /// The client logged out; imapmux answered it and kept the backend
    /// connection, clean and idle, for reuse.
    Released,
    /// The client idled long enough: imapmux ended the IDLE on the backend
    /// (DONE, its tagged answer kept from the client) and hands both
    /// connections back, to park the client.
    Parked,
}

impl RelayEnd {
    pub fn as_str(&self) -> &'static str {
        match self {
            RelayEnd::Logout => "logout",
            RelayEnd::ClientClosed => "client_closed",
            RelayEnd::BackendClosed => "backend_closed",
            RelayEnd::ClientError => "client_error",
            RelayEnd::BackendError => "backend_error",
            RelayEnd::IdleTimeout => "idle_timeout",
            RelayEnd::Shutdown => "shutdown",
            RelayEnd::Released => "logout",
            RelayEnd::Parked => "parked",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub max_line: usize,
    /// Client inactivity before `* BYE` (RFC 9051: at least 30 minutes).
    pub idle_timeout: Duration,
    /// How long to wait for a message boundary to send a BYE.
    pub bye_grace: Duration,
    /// How long the backend may take to answer the cache's prefetch.
    pub prefetch_timeout: Duration,
    /// Answer a LOGOUT itself and hand the backend connection back (for
    /// reuse) when nothing is in flight and the session changed no state
    /// that would outlive it.
    pub release_on_logout: bool,
    /// Park a client idling (IDLE) this long with nothing else in flight.
    pub park_after: Option<Duration>,
}

/// What [`relay`] hands back.
pub struct RelayOutcome<C, B> {
    pub end: RelayEnd,
    /// The backend connection and what it sent after the last answer
    /// ([`RelayEnd::Released`], [`RelayEnd::Parked`]).
    pub backend: Option<(B, BytesMut)>,
    /// The client connection and its unprocessed input ([`RelayEnd::Parked`]).
    pub client: Option<(C, BytesMut)>,
    /// For [`RelayEnd::Parked`]: the selected mailbox, whether read-only,
    /// and the tag of the client's IDLE.
    pub parked: Option<(String, bool, String)>,
}

/// Byte counters of a relay (shared so they survive cancellation).
#[derive(Debug, Default)]
pub struct Counters {
    pub client_to_backend: AtomicU64,
    pub backend_to_client: AtomicU64,
}

/// State shared by the two directions.
#[derive(Debug)]
struct Shared {
    /// Tag of a command waiting for the backend's `+` for a sync literal.
    awaiting_plus: Mutex<Option<String>>,
    awaiting: AtomicBool,
    /// The backend refused the literal: the client will not send it.
    cancel_literal: AtomicBool,
    logout: AtomicBool,
    /// Milliseconds since `start` of the last client input.
    last_client_ms: AtomicU64,
    start: Instant,
    /// The FETCH cache flow, when the cache is on.
    flow: Option<Mutex<Flow>>,
    /// What the proxy says itself, for the backend-to-client direction to
    /// send between two messages (no channel: nothing allocated until used).
    injected: Mutex<VecDeque<Inject>>,
    inject_ready: Notify,
    /// The cache flow's prefetch completed (backend side to client side).
    prefetch_ready: Notify,
    /// Per-command metrics (client tags matched with tagged answers).
    meter: Option<crate::metrics::CommandMeter>,
    /// Client commands sent to the backend and not yet answered.
    in_flight: AtomicI64,
    /// The session changed backend state that would outlive it (ENABLE,
    /// CONDSTORE enabled by use, NOTIFY…): its connection is not reused.
    dirty: AtomicBool,
    /// The client's IDLE: its tag (from the command to the tagged answer).
    idle_tag: Mutex<Option<String>>,
    /// Milliseconds since `start` when the backend accepted the IDLE (`+`),
    /// 0 when not idling.
    idling_since_ms: AtomicU64,
    /// imapmux sent DONE to park the client.
    parking: AtomicBool,
    park_now: Notify,
    /// SELECT/EXAMINE waiting for its answer: (tag, mailbox, read-only).
    pending_select: Mutex<Option<(String, Option<String>, bool)>>,
    /// The selected mailbox as the client sees it (`None`: none, or unknown).
    selected: Mutex<Option<(String, bool)>>,
    /// Sessions idling attached (`imapmux_client_sessions_idle_attached`).
    idle_gauge: Option<prometheus::IntGauge>,
    idle_counted: AtomicBool,
}

/// Record whether the client is idling (IDLE accepted by the backend).
fn set_idling(shared: &Shared, since_ms: u64) {
    shared.idling_since_ms.store(since_ms, Ordering::Release);
    let on = since_ms != 0;
    if shared.idle_counted.swap(on, Ordering::AcqRel) != on {
        if let Some(g) = &shared.idle_gauge {
            if on {
                g.inc();
            } else {
                g.dec();
            }
        }
    }
}

/// Something the proxy itself says to the client, at a message boundary.
#[derive(Debug)]
struct Inject {
    bytes: Bytes,
    then_close: bool,
    /// After closing the client, hand the backend connection back.
    release: bool,
}

/// Read buffers start small, so an idle session costs little memory, and
/// double up to the maximum while data streams (large literals).
const READ_MIN: usize = 512;
const READ_MAX: usize = 64 * 1024;

/// Adaptive read-buffer sizing for one direction.
#[derive(Debug)]
struct Sizer {
    next: usize,
    spare: usize,
}

impl Sizer {
    fn new() -> Self {
        Sizer {
            next: READ_MIN,
            spare: 0,
        }
    }

    /// Make room before a read; give memory back once a burst is over.
    fn prepare(&mut self, buf: &mut BytesMut) {
        if buf.is_empty() && buf.capacity() > 2 * self.next {
            *buf = BytesMut::new();
        }
        if buf.capacity() - buf.len() < self.next / 2 {
            buf.reserve(self.next);
        }
        self.spare = buf.capacity() - buf.len();
    }

    /// Adapt to how much the last read brought.
    fn after_read(&mut self, n: usize) {
        if n >= self.spare {
            self.next = (self.next * 2).min(READ_MAX);
        } else if n < self.next / 8 {
            self.next = (self.next / 2).max(READ_MIN);
        }
    }
}

/// Relay between `client` and `backend` until one side ends. `client_buf`
/// holds bytes the client already sent (pipelined after LOGIN),
/// `backend_buf` bytes the backend already sent after the login response.
/// With [`RelayEnd::Released`] the backend connection comes back (with
/// what it sent after the last answer).
#[allow(clippy::too_many_arguments)]
pub async fn relay<C, B>(
    (client, client_buf): (C, BytesMut),
    (backend, backend_buf): (B, BytesMut),
    cfg: &RelayConfig,
    counters: &Counters,
    flow: Option<Flow>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    mut shutdown: watch::Receiver<bool>,
) -> RelayOutcome<C, B>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let mut up_buf = client_buf;
    let (mut backend_r, mut backend_w) = tokio::io::split(backend);
    let mut down_buf = backend_buf;
    let shared = Shared {
        awaiting_plus: Mutex::new(None),
        awaiting: AtomicBool::new(false),
        cancel_literal: AtomicBool::new(false),
        logout: AtomicBool::new(false),
        last_client_ms: AtomicU64::new(0),
        start: Instant::now(),
        flow: flow.map(Mutex::new),
        injected: Mutex::new(VecDeque::new()),
        inject_ready: Notify::new(),
        prefetch_ready: Notify::new(),
        idle_gauge: metrics.as_ref().map(|m| m.park.idling.clone()),
        idle_counted: AtomicBool::new(false),
        meter: metrics.map(crate::metrics::CommandMeter::new),
        in_flight: AtomicI64::new(0),
        dirty: AtomicBool::new(false),
        idle_tag: Mutex::new(None),
        idling_since_ms: AtomicU64::new(0),
        parking: AtomicBool::new(false),
        park_now: Notify::new(),
        pending_select: Mutex::new(None),
        selected: Mutex::new(None),
    };
    let end = {
        let up = client_to_backend(
            &mut client_r,
            &mut up_buf,
            &mut backend_w,
            cfg,
            &shared,
            counters,
        );
        let down = backend_to_client(
            &mut backend_r,
            &mut down_buf,
            &mut client_w,
            cfg,
            &shared,
            counters,
        );
        tokio::pin!(up);
        tokio::pin!(down);
        let idle = cfg.idle_timeout;
        let idle_check = async {
            loop {
                let last = Duration::from_millis(shared.last_client_ms.load(Ordering::Relaxed));
                let due = shared.start + last + idle;
                if Instant::now() >= due {
                    return;
                }
                tokio::time::sleep_until(due).await;
            }
        };
        tokio::pin!(idle_check);
        // When to park an idling client (re-checked after every wake).
        let park_check = async {
            let Some(after) = cfg.park_after else {
                return std::future::pending().await;
            };
            loop {
                let since = shared.idling_since_ms.load(Ordering::Acquire);
                if since == 0 {
                    tokio::time::sleep(Duration::from_millis(250).min(after)).await;
                    continue;
                }
                let due = shared.start + Duration::from_millis(since) + after;
                if Instant::now() < due {
                    tokio::time::sleep_until(due).await;
                    continue;
                }
                let parkable = shared.idling_since_ms.load(Ordering::Acquire) == since
                    && shared.in_flight.load(Ordering::Acquire) == 1
                    && !shared.dirty.load(Ordering::Relaxed)
                    && !shared.awaiting.load(Ordering::Acquire)
                    && lock(&shared.injected).is_empty()
                    && lock(&shared.selected).is_some();
                if parkable {
                    return;
                }
                tracing::debug!(
                    in_flight = shared.in_flight.load(Ordering::Acquire),
                    dirty = shared.dirty.load(Ordering::Relaxed),
                    awaiting = shared.awaiting.load(Ordering::Acquire),
                    selected = lock(&shared.selected).is_some(),
                    "not parking yet"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        tokio::pin!(park_check);
        let mut bye_sent: Option<RelayEnd> = None;
        let mut bye_deadline = None;
        let mut up_released = false;
        let mut up_parked = false;
        let mut park_fired = false;
        loop {
            let grace = async {
                match bye_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                end = &mut up, if !up_released && !up_parked => {
                    match end {
                        // The answer to the LOGOUT goes out from the other side.
                        RelayEnd::Released => up_released = true,
                        // DONE went to the backend; its answer is awaited below.
                        RelayEnd::Parked => up_parked = true,
                        end => break end,
                    }
                    bye_deadline = Some(Instant::now() + cfg.bye_grace);
                }
                end = &mut down => {
                    break match (end, up_released, up_parked) {
                        (RelayEnd::Released, true, _) => RelayEnd::Released,
                        (RelayEnd::Released, false, _) => RelayEnd::Logout,
                        (RelayEnd::Parked, _, true) => RelayEnd::Parked,
                        (RelayEnd::Parked, _, false) => RelayEnd::BackendError,
                        (end, _, _) => bye_sent.filter(|_| end == RelayEnd::Shutdown).unwrap_or(end),
                    };
                }
                _ = &mut park_check, if !park_fired && !up_released && bye_sent.is_none() => {
                    park_fired = true;
                    shared.parking.store(true, Ordering::Release);
                    shared.park_now.notify_one();
                }
                _ = &mut idle_check, if bye_sent.is_none() && !up_released => {
                    push_inject(&shared, Inject { bytes: Bytes::from_static(b"* BYE Autologout; idle for too long.\r\n"), then_close: true, release: false });
                    bye_sent = Some(RelayEnd::IdleTimeout);
                    bye_deadline = Some(Instant::now() + cfg.bye_grace);
                }
                changed = shutdown.changed(), if bye_sent.is_none() && !up_released => {
                    if changed.is_err() || *shutdown.borrow() {
                        push_inject(&shared, Inject { bytes: Bytes::from_static(b"* BYE [UNAVAILABLE] Server shutting down.\r\n"), then_close: true, release: false });
                        bye_sent = Some(RelayEnd::Shutdown);
                        bye_deadline = Some(Instant::now() + cfg.bye_grace);
                    }
                }
                _ = grace => break if up_released { RelayEnd::Logout } else if up_parked { RelayEnd::BackendError } else { bye_sent.unwrap_or(RelayEnd::Shutdown) },
            }
        }
    };
    set_idling(&shared, 0);
    let mut out = RelayOutcome {
        end,
        backend: None,
        client: None,
        parked: None,
    };
    match end {
        RelayEnd::Released => out.backend = Some((backend_r.unsplit(backend_w), down_buf)),
        RelayEnd::Parked => {
            let selected = lock(&shared.selected).clone();
            let tag = lock(&shared.idle_tag).clone();
            if let (Some((mailbox, ro)), Some(tag)) = (selected, tag) {
                out.parked = Some((mailbox, ro, tag));
                out.backend = Some((backend_r.unsplit(backend_w), down_buf));
                out.client = Some((client_r.unsplit(client_w), up_buf));
            } else {
                out.end = RelayEnd::BackendError;
            }
        }
        _ => {}
    }
    out
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let Some((last, rest)) = l.split_last() {
        if matches!(last, b'\r' | b'\n') {
            l = rest;
        } else {
            break;
        }
    }
    l
}

/// Track what parking needs: the client's IDLE, and the mailbox it selected.
fn note_session_command(shared: &Shared, tag: &str, name: &str, line: &[u8], literal: bool) {
    match name {
        "IDLE" => *lock(&shared.idle_tag) = Some(tag.to_string()),
        "SELECT" | "EXAMINE" => {
            // The name is known only without literals (the usual case).
            let mailbox = if literal {
                None
            } else {
                crate::imap::command::parse_command(&[Bytes::copy_from_slice(line)], &[])
                    .ok()
                    .and_then(|c| {
                        c.args
                            .first()
                            .and_then(|a| a.as_astring())
                            .and_then(|m| String::from_utf8(m.to_vec()).ok())
                    })
            };
            *lock(&shared.pending_select) = Some((tag.to_string(), mailbox, name == "EXAMINE"));
        }
        "CLOSE" | "UNSELECT" => {
            *lock(&shared.pending_select) = Some((tag.to_string(), None, false));
        }
        _ => {}
    }
}

/// A tagged answer from the backend: settle IDLE and SELECT tracking.
/// Returns true when it answers the IDLE imapmux ended to park the client.
fn note_tagged(shared: &Shared, line: &[u8]) -> bool {
    let tag_end = memchr::memchr(b' ', line).unwrap_or(line.len());
    let tag = &line[..tag_end];
    let ok = line[tag_end..]
        .get(1..3)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"OK"));
    {
        let mut pending = lock(&shared.pending_select);
        if pending
            .as_ref()
            .is_some_and(|(t, _, _)| t.as_bytes() == tag)
        {
            if let Some((_, mailbox, ro)) = pending.take() {
                // A failed SELECT leaves no mailbox selected (RFC 9051 §6.3.2).
                *lock(&shared.selected) = mailbox.filter(|_| ok).map(|m| (m, ro));
            }
        }
    }
    let mut idle = lock(&shared.idle_tag);
    if idle.as_deref().is_some_and(|t| t.as_bytes() == tag) {
        set_idling(shared, 0);
        if shared.parking.load(Ordering::Acquire) {
            return true;
        }
        *idle = None;
    }
    false
}

/// Commands whose effect outlives the session on the backend connection
/// (or that may enable CONDSTORE/QRESYNC by use, RFC 7162 §3.1).
fn leaves_state(name: &str, line: &[u8]) -> bool {
    if matches!(
        name,
        "ENABLE" | "NOTIFY" | "LANGUAGE" | "COMPRESS" | "CONTEXT" | "X-DOVECOT-FINISH"
    ) {
        return true;
    }
    let upper = line.to_ascii_uppercase();
    [&b"CONDSTORE"[..], b"MODSEQ", b"QRESYNC", b"CHANGEDSINCE"]
        .iter()
        .any(|w| memchr::memmem::find(&upper, w).is_some())
}

/// First word after the tag, upper-cased, and the tag.
fn command_of(line: &[u8]) -> Option<(&[u8], String)> {
    let sp = memchr::memchr(b' ', line)?;
    let rest = &line[sp + 1..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    Some((
        &line[..sp],
        String::from_utf8_lossy(&rest[..end]).to_ascii_uppercase(),
    ))
}

#[allow(clippy::too_many_arguments)]
async fn client_to_backend<R, W>(
    client: &mut R,
    buf: &mut BytesMut,
    mut backend: &mut W,
    cfg: &RelayConfig,
    shared: &Shared,
    counters: &Counters,
) -> RelayEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut framer = Framer::new(cfg.max_line);
    let mut sizer = Sizer::new();
    let mut cur_tag = String::new();
    loop {
        if shared.cancel_literal.swap(false, Ordering::AcqRel) {
            framer.cancel_literal();
        }
        // Pass on every complete frame in `buf`.
        let mut off = 0;
        let mut written = 0;
        while let Some((piece, len)) = framer.step(&buf[off..]) {
            if let Piece::Line { first, literal, .. } = piece {
                let line = &buf[off..off + len];
                if first {
                    let up = shared
                        .flow
                        .as_ref()
                        .map(|f| lock(f).on_client_command(line, literal.is_some()))
                        .unwrap_or(Upstream::Forward);
                    let up = match up {
                        Upstream::Prefetch(cmd) => {
                            // Our own FETCH of what some messages miss goes
                            // first, alone; the client's command waits for it.
                            if write_out(&mut backend, &buf[written..off]).await.is_err()
                                || write_out(&mut backend, &cmd).await.is_err()
                            {
                                return RelayEnd::BackendError;
                            }
                            counters
                                .client_to_backend
                                .fetch_add((off - written) as u64, Ordering::Relaxed);
                            written = off;
                            match wait_prefetch(shared, cfg.prefetch_timeout).await {
                                Some(next) => next,
                                None => return RelayEnd::BackendError,
                            }
                        }
                        other => other,
                    };
                    let answered_here = matches!(up, Upstream::Answer(_));
                    match up {
                        // The line goes on unchanged with the bytes around it.
                        Upstream::Forward | Upstream::Prefetch(_) => {}
                        Upstream::Replace(rep) => {
                            // The cache flow rewrote the command (a FETCH it
                            // can partly answer): send the new line instead.
                            if write_out(&mut backend, &buf[written..off]).await.is_err()
                                || write_out(&mut backend, &rep).await.is_err()
                            {
                                return RelayEnd::BackendError;
                            }
                            counters
                                .client_to_backend
                                .fetch_add((off - written + len) as u64, Ordering::Relaxed);
                            written = off + len;
                        }
                        Upstream::Answer(resp) => {
                            // Answered from the cache: nothing goes to the
                            // backend; the answer goes out between messages.
                            if write_out(&mut backend, &buf[written..off]).await.is_err() {
                                return RelayEnd::BackendError;
                            }
                            counters
                                .client_to_backend
                                .fetch_add((off - written + len) as u64, Ordering::Relaxed);
                            written = off + len;
                            push_inject(
                                shared,
                                Inject {
                                    bytes: resp.into(),
                                    then_close: false,
                                    release: false,
                                },
                            );
                        }
                    }
                    let line = &buf[off..off + len];
                    if let Some(m) = &shared.meter {
                        m.client_line(line);
                    }
                    if let Some((tag, name)) = command_of(line) {
                        cur_tag = String::from_utf8_lossy(tag).into_owned();
                        if leaves_state(&name, line) {
                            shared.dirty.store(true, Ordering::Relaxed);
                        }
                        let quiet = shared.in_flight.load(Ordering::Acquire) == 0
                            && !shared.awaiting.load(Ordering::Acquire)
                            && !shared.dirty.load(Ordering::Relaxed);
                        match name.as_str() {
                            "LOGOUT" if cfg.release_on_logout && literal.is_none() && quiet => {
                                // Answer it here; the backend connection
                                // stays logged in, for the next login.
                                if write_out(&mut backend, &buf[written..off]).await.is_err() {
                                    return RelayEnd::BackendError;
                                }
                                counters
                                    .client_to_backend
                                    .fetch_add((off - written + len) as u64, Ordering::Relaxed);
                                let reply = format!(
                                    "* BYE Logging out.\r\n{cur_tag} OK Logout completed.\r\n"
                                );
                                push_inject(
                                    shared,
                                    Inject {
                                        bytes: reply.into(),
                                        then_close: true,
                                        release: true,
                                    },
                                );
                                return RelayEnd::Released;
                            }
                            "LOGOUT" => {
                                shared.logout.store(true, Ordering::Relaxed);
                                shared.in_flight.fetch_add(1, Ordering::AcqRel);
                            }
                            // COMPRESS would change the framing under us and
                            // STARTTLS is only valid before login.
                            "COMPRESS" | "STARTTLS" if literal.is_none() => {
                                let reply = format!("{cur_tag} NO [CANNOT] {name} is not available through this proxy.\r\n");
                                if write_out(&mut backend, &buf[written..off]).await.is_err() {
                                    return RelayEnd::BackendError;
                                }
                                counters
                                    .client_to_backend
                                    .fetch_add((off - written) as u64, Ordering::Relaxed);
                                written = off + len;
                                push_inject(
                                    shared,
                                    Inject {
                                        bytes: reply.into(),
                                        then_close: false,
                                        release: false,
                                    },
                                );
                            }
                            _ if !answered_here => {
                                shared.in_flight.fetch_add(1, Ordering::AcqRel);
                                note_session_command(
                                    shared,
                                    &cur_tag,
                                    &name,
                                    line,
                                    literal.is_some(),
                                );
                            }
                            _ => {}
                        }
                    } else if trim_line(line).eq_ignore_ascii_case(b"DONE") {
                        set_idling(shared, 0);
                    }
                }
                if let Some(spec) = literal {
                    if spec.sync {
                        *lock(&shared.awaiting_plus) = Some(cur_tag.clone());
                        shared.awaiting.store(true, Ordering::Release);
                    }
                }
            }
            off += len;
        }
        if off > written {
            if write_out(&mut backend, &buf[written..off]).await.is_err() {
                return RelayEnd::BackendError;
            }
            counters
                .client_to_backend
                .fetch_add((off - written) as u64, Ordering::Relaxed);
        }
        buf.advance(off);
        sizer.prepare(buf);
        let read = tokio::select! {
            // Parking wins a tie: a DONE the client sent meanwhile stays
            // unread and wakes the parked session at once.
            biased;
            _ = shared.park_now.notified() => {
                if shared.idling_since_ms.load(Ordering::Acquire) == 0 {
                    // The client ended its IDLE first: no parking this time.
                    shared.parking.store(false, Ordering::Release);
                    continue;
                }
                // End the IDLE on the backend; the other direction keeps its
                // tagged answer from the client.
                if write_out(&mut backend, b"DONE\r\n").await.is_err() {
                    return RelayEnd::BackendError;
                }
                return RelayEnd::Parked;
            }
            r = client.read_buf(buf) => r,
        };
        match read {
            // A client that closes without TLS close_notify is still just closing.
            Ok(0) => return closed(shared),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return closed(shared),
            Ok(n) => {
                sizer.after_read(n);
                let ms = shared.start.elapsed().as_millis() as u64;
                shared.last_client_ms.store(ms, Ordering::Relaxed);
            }
            Err(_) => return RelayEnd::ClientError,
        }
    }
}

/// Wait until the backend answered our prefetch; then what to send for the
/// client's command. `None`: the backend did not answer in time.
async fn wait_prefetch(shared: &Shared, timeout: Duration) -> Option<Upstream> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(up) = shared.flow.as_ref().and_then(|f| lock(f).after_prefetch()) {
            return Some(up);
        }
        if tokio::time::timeout_at(deadline, shared.prefetch_ready.notified())
            .await
            .is_err()
        {
            return None;
        }
    }
}

fn push_inject(shared: &Shared, msg: Inject) {
    lock(&shared.injected).push_back(msg);
    shared.inject_ready.notify_one();
}

fn closed(shared: &Shared) -> RelayEnd {
    if shared.logout.load(Ordering::Relaxed) {
        RelayEnd::Logout
    } else {
        RelayEnd::ClientClosed
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn write_out<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    w.write_all(data).await?;
    w.flush().await
}

async fn backend_to_client<R, W>(
    backend: &mut R,
    buf: &mut BytesMut,
    mut client: &mut W,
    cfg: &RelayConfig,
    shared: &Shared,
    counters: &Counters,
) -> RelayEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut framer = Framer::new(cfg.max_line);
    let mut sizer = Sizer::new();
    let mut queued: VecDeque<Inject> = VecDeque::new();
    loop {
        let mut off = 0;
        let mut pass_from = 0;
        // Only built when the cache flow holds back or rewrites a response.
        let mut rewritten: Option<BytesMut> = None;
        while let Some((piece, len)) = framer.step(&buf[off..]) {
            if let Piece::Line { first: true, .. } = piece {
                let line = &buf[off..off + len];
                if let Some(m) = &shared.meter {
                    m.backend_line(line);
                }
                if line.starts_with(b"+") {
                    if lock(&shared.idle_tag).is_some()
                        && shared.idling_since_ms.load(Ordering::Acquire) == 0
                    {
                        let ms = shared.start.elapsed().as_millis() as u64;
                        set_idling(shared, ms.max(1));
                    }
                } else if !line.starts_with(b"* ")
                    && !line.starts_with(crate::cache::flow::PREFETCH_TAG_PREFIX)
                {
                    shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                    if note_tagged(shared, line) {
                        // The answer to imapmux's DONE: the client never
                        // sees it. What came before it goes out.
                        let before = match rewritten.as_mut() {
                            Some(out) => {
                                out.extend_from_slice(&buf[pass_from..off]);
                                write_out(&mut client, out).await
                            }
                            None => write_out(&mut client, &buf[..off]).await,
                        };
                        if before.is_err() {
                            return RelayEnd::ClientError;
                        }
                        buf.advance(off + len);
                        return RelayEnd::Parked;
                    }
                }
                if shared.awaiting.load(Ordering::Acquire) {
                    note_continuation(shared, &buf[off..off + len]);
                }
            }
            if let Some(f) = &shared.flow {
                let (first, end) = match piece {
                    Piece::Line { first, literal, .. } => (first, literal.is_none()),
                    Piece::LineChunk { first } => (first, false),
                    Piece::Literal { .. } => (false, false),
                };
                let mut f = lock(f);
                let disposition = f.on_backend_frame(&buf[off..off + len], first, end);
                if f.prefetch_done() {
                    shared.prefetch_ready.notify_one();
                }
                if disposition == Disposition::Hold {
                    let out = rewritten.get_or_insert_with(BytesMut::new);
                    out.extend_from_slice(&buf[pass_from..off]);
                    pass_from = off + len;
                    if let Some(o) = f.take_output() {
                        out.extend_from_slice(&o);
                    }
                }
            }
            off += len;
        }
        if off > 0 {
            let result = match rewritten.as_mut() {
                None => write_out(&mut client, &buf[..off]).await.map(|_| off),
                Some(out) => {
                    out.extend_from_slice(&buf[pass_from..off]);
                    write_out(&mut client, out).await.map(|_| out.len())
                }
            };
            match result {
                Ok(n) => counters
                    .backend_to_client
                    .fetch_add(n as u64, Ordering::Relaxed),
                Err(_) => return RelayEnd::ClientError,
            };
            buf.advance(off);
        }
        queued.extend(lock(&shared.injected).drain(..));
        // What the proxy says itself goes out between two messages only.
        if framer.at_boundary() && buf.is_empty() {
            while let Some(msg) = queued.pop_front() {
                if let Some(m) = &shared.meter {
                    m.proxy_answer(&msg.bytes);
                }
                if write_out(&mut client, &msg.bytes).await.is_err() {
                    return RelayEnd::ClientError;
                }
                counters
                    .backend_to_client
                    .fetch_add(msg.bytes.len() as u64, Ordering::Relaxed);
                if msg.then_close {
                    let _ = client.shutdown().await;
                    return if msg.release {
                        RelayEnd::Released
                    } else {
                        RelayEnd::Shutdown
                    };
                }
            }
        }
        sizer.prepare(buf);
        tokio::select! {
            // Proxy answers first: they were queued before any later
            // command reached the backend.
            biased;
            _ = shared.inject_ready.notified() => {}
            r = backend.read_buf(buf) => match r {
                Ok(0) => {
                    let _ = client.shutdown().await;
                    return if shared.logout.load(Ordering::Relaxed) { RelayEnd::Logout } else { RelayEnd::BackendClosed };
                }
                Ok(n) => sizer.after_read(n),
                Err(_) => return RelayEnd::BackendError,
            },
        }
    }
}

/// The backend answered while a sync literal was pending: `+` lets the
/// client send it; a tagged answer refuses it.
fn note_continuation(shared: &Shared, line: &[u8]) {
    let mut waiting = lock(&shared.awaiting_plus);
    if line.starts_with(b"+") {
        shared.awaiting.store(false, Ordering::Release);
        *waiting = None;
    } else if let Some(tag) = waiting.as_deref() {
        if line.starts_with(tag.as_bytes()) && line.get(tag.len()) == Some(&b' ') {
            shared.cancel_literal.store(true, Ordering::Release);
            shared.awaiting.store(false, Ordering::Release);
            *waiting = None;
        }
    }
}
