//! The authenticated phase: a full-duplex relay that understands IMAP
//! framing in both directions (lines, `{N}`, `{N+}`, `~{N}` literals) and
//! streams literal data without buffering it whole. Bytes pass unchanged;
//! the framing view is what later features hook into.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::cache::flow::Flow;

mod down;
mod track;
mod up;
use down::backend_to_client;
use track::set_idling;
use up::client_to_backend;

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

/// Temporary, until the relay reports an [`EndReason`] itself: how a relay
/// end that stops the session ends it (same labels as [`RelayEnd::as_str`]).
/// `Released` is the client's logout. `Parked` hands the session on to
/// parking and is converted only when parking could not take it, which
/// ends the session as a backend error (as the relay does itself when a
/// park fails).
///
/// [`EndReason`]: crate::session::end::EndReason
impl From<RelayEnd> for crate::session::end::EndReason {
    fn from(end: RelayEnd) -> Self {
        use crate::session::end::EndReason as E;
        match end {
            RelayEnd::Logout | RelayEnd::Released => E::Logout,
            RelayEnd::ClientClosed => E::ClientClosed,
            RelayEnd::BackendClosed => E::BackendClosed,
            RelayEnd::ClientError => E::ClientError,
            RelayEnd::BackendError | RelayEnd::Parked => E::BackendError,
            RelayEnd::IdleTimeout => E::IdleTimeout,
            RelayEnd::Shutdown => E::Shutdown,
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
    /// Bytes of proxy answers queued and not yet written to the client.
    /// The client-to-backend direction stops reading the client while this
    /// is at [`INJECT_MAX`] (a client that pipelines and never reads cannot
    /// make imapmux buffer its answers without bound).
    inject_bytes: AtomicUsize,
    /// The backend-to-client direction wrote a proxy answer.
    inject_drained: Notify,
    /// The cache flow's prefetch completed (backend side to client side).
    prefetch_ready: Notify,
    /// Per-command metrics (client tags matched with tagged answers).
    meter: Option<crate::metrics::CommandMeter>,
    /// Client commands sent to the backend and not yet answered.
    in_flight: AtomicI64,
    /// The backend answered a command (`in_flight` went down).
    answered: Notify,
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
    /// The backend accepted an IDLE (wakes the parking timer).
    idle_started: Notify,
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
        inject_bytes: AtomicUsize::new(0),
        inject_drained: Notify::new(),
        prefetch_ready: Notify::new(),
        idle_gauge: metrics.as_ref().map(|m| m.park.idling.clone()),
        idle_counted: AtomicBool::new(false),
        idle_started: Notify::new(),
        meter: metrics.map(crate::metrics::CommandMeter::new),
        in_flight: AtomicI64::new(0),
        answered: Notify::new(),
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
                    // No timer while the client is not idling: woken when
                    // the backend accepts an IDLE.
                    let started = shared.idle_started.notified();
                    if shared.idling_since_ms.load(Ordering::Acquire) == 0 {
                        started.await;
                    }
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

/// Most bytes of proxy answers (cache hits, refusals) queued for a client
/// before imapmux stops reading its commands. One answer may exceed it
/// (bounded by the cache's `max_item_size`); the next waits.
pub(crate) const INJECT_MAX: usize = 256 * 1024;

/// Queue a proxy answer without waiting (one-off messages: BYE).
fn push_inject(shared: &Shared, msg: Inject) {
    shared
        .inject_bytes
        .fetch_add(msg.bytes.len(), Ordering::AcqRel);
    lock(&shared.injected).push_back(msg);
    shared.inject_ready.notify_one();
}

/// Queue a proxy answer once the queue is below [`INJECT_MAX`]: until then
/// the caller (the client-to-backend direction) reads no more commands.
async fn inject(shared: &Shared, msg: Inject) {
    loop {
        let drained = shared.inject_drained.notified();
        if shared.inject_bytes.load(Ordering::Acquire) < INJECT_MAX {
            return push_inject(shared, msg);
        }
        drained.await;
    }
}

/// The backend-to-client direction wrote `n` bytes of proxy answers.
fn injected_written(shared: &Shared, n: usize) {
    shared.inject_bytes.fetch_sub(n, Ordering::AcqRel);
    shared.inject_drained.notify_one();
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
