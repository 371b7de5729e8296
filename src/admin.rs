//! The admin HTTP server (`[admin] address`): `/metrics` (Prometheus text
//! format), `/healthz` (the process is alive), `/readyz` (listeners
//! bound, at least one backend up, not draining), all GET and HEAD only;
//! and, when a push secret is configured, `/push` (POST or PUT, see
//! [`crate::multiplex::push`]): Dovecot's push notifications, which wake parked IDLE
//! clients, and are forwarded to the other replicas unless a replica
//! forwarded them ([`crate::multiplex::fanout`]). HTTP/1.1 only; request heads are bounded, and only `/push`
//! reads a body (authenticated first, at most [`MAX_BODY`] bytes).
//! With an operations token configured, `/api/v1/` is the operations API
//! ([`crate::ops::api`]; bodies of at most 16 KiB, token checked first).
//!
//! Probes must always get an answer, so idle connections cannot lock the
//! server: at most [`MAX_CONNECTIONS`] are open, and a new connection
//! beyond that closes the one that has waited longest without a request
//! being answered (idle keep-alive, or a request head that never
//! completes). A connection whose request is being answered is never
//! closed this way.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE,
    WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::metrics::push::PushResult;
use crate::metrics::Metrics;
use crate::multiplex::fanout::{Fanout, InstanceId, Origin, FORWARDED_HEADER, INSTANCE_HEADER};
use crate::multiplex::push::{PushSecret, MAX_BODY};
use crate::multiplex::wake::WakeSink;
use crate::route::Router;

/// Most admin connections open at once. A new connection beyond this
/// closes the one idle longest; only when every connection is answering a
/// request is the new one closed instead.
pub const MAX_CONNECTIONS: usize = 64;
/// Bound on a request head (request line + headers), in bytes.
const MAX_HEAD: usize = 16 * 1024;
/// Time a client has to send a complete request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a push client has to send its body, once authenticated.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Where Dovecot's push notifications go.
pub const PUSH_PATH: &str = "/push";

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("admin.address {address:?}: not a HOST:PORT socket address")]
    Address { address: String },
    #[error("admin.address {address}: cannot bind: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// What `/readyz` looks at.
#[derive(Debug)]
pub struct Readiness {
    router: arc_swap::ArcSwap<Router>,
    listeners_bound: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    pub fn new(router: Arc<Router>) -> Self {
        Readiness {
            router: arc_swap::ArcSwap::new(router),
            listeners_bound: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    /// After a configuration reload: look at the new backends.
    pub fn set_router(&self, router: Arc<Router>) {
        self.router.store(router);
    }

    /// Every client listener is bound and accepting.
    pub fn set_listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::Release);
    }

    /// Shutdown began: report not ready so load balancers stop sending.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.is_draining() {
            return Err("draining");
        }
        if !self.listeners_bound.load(Ordering::Acquire) {
            return Err("listeners not bound yet");
        }
        if !self.router.load().backends().any(|b| b.is_up()) {
            return Err("no backend is up");
        }
        Ok(())
    }
}

/// Everything the admin handlers need.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// The secret `/push` requires; `None`: no `/push` (404).
    pub push_secret: Option<PushSecret>,
    /// Told about every accepted push event.
    pub wake: Arc<dyn WakeSink>,
    /// This process's name among the replicas (push fan-out).
    pub instance: InstanceId,
    /// Forwards pushes from Dovecot to the other replicas, when configured.
    pub fanout: Option<Arc<Fanout>>,
    /// The operations API (`/api/v1/`), when a token is configured.
    pub api: Option<Arc<crate::ops::api::Api>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("readiness", &self.readiness)
            .field("push", &self.push_secret.is_some())
            .field("instance", &self.instance)
            .field("fanout", &self.fanout.is_some())
            .finish_non_exhaustive()
    }
}

/// Bind the admin address (fails startup when it cannot).
pub async fn bind(address: &str) -> Result<TcpListener, AdminError> {
    let addr: SocketAddr = address.parse().map_err(|_| AdminError::Address {
        address: address.to_string(),
    })?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind {
            address: addr,
            source,
        })
}

/// The open admin connections: which are answering a request, and since
/// when the others have been idle (accepted, or their last answer).
#[derive(Debug, Default)]
struct Conns {
    next: u64,
    open: HashMap<u64, Conn>,
}

#[derive(Debug)]
struct Conn {
    idle_since: Instant,
    busy: bool,
    close: oneshot::Sender<()>,
}

/// One connection's entry in [`Conns`]; removed on drop.
struct ConnEntry {
    conns: Arc<Mutex<Conns>>,
    id: u64,
}

fn lock(conns: &Mutex<Conns>) -> std::sync::MutexGuard<'_, Conns> {
    conns.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conns {
    /// Register a new connection, closing the connection idle longest if
    /// `max` are open. `None` when all `max` are busy answering.
    fn admit(
        conns: &Arc<Mutex<Conns>>,
        max: usize,
        now: Instant,
    ) -> Option<(ConnEntry, oneshot::Receiver<()>)> {
        let mut c = lock(conns);
        if c.open.len() >= max {
            let oldest = c
                .open
                .iter()
                .filter(|(_, e)| !e.busy)
                .min_by_key(|(_, e)| e.idle_since)
                .map(|(id, _)| *id)?;
            if let Some(e) = c.open.remove(&oldest) {
                let _ = e.close.send(());
            }
        }
        let (tx, rx) = oneshot::channel();
        c.next += 1;
        let id = c.next;
        c.open.insert(
            id,
            Conn {
                idle_since: now,
                busy: false,
                close: tx,
            },
        );
        let entry = ConnEntry {
            conns: conns.clone(),
            id,
        };
        Some((entry, rx))
    }
}

impl ConnEntry {
    /// A request head arrived (`true`) or its answer is ready (`false`).
    fn set_busy(&self, busy: bool) {
        if let Some(e) = lock(&self.conns).open.get_mut(&self.id) {
            e.busy = busy;
            e.idle_since = Instant::now();
        }
    }
}

impl Drop for ConnEntry {
    fn drop(&mut self) {
        lock(&self.conns).open.remove(&self.id);
    }
}

/// Serve admin requests until `stop` flips (or its sender is dropped).
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    let local = listener.local_addr().ok();
    tracing::info!(address = ?local, "admin server listening");
    let conns = Arc::new(Mutex::new(Conns::default()));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
                continue;
            }
        };
        let Some((entry, closed)) = Conns::admit(&conns, MAX_CONNECTIONS, Instant::now()) else {
            tracing::debug!("admin server: every connection is busy; closing a new one");
            drop(tcp);
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let entry = Arc::new(entry);
            let e = entry.clone();
            let service = hyper::service::service_fn(move |req| {
                let (state, e) = (state.clone(), e.clone());
                async move {
                    e.set_busy(true);
                    let r = match &state.api {
                        Some(api) if req.uri().path().starts_with(crate::ops::api::PREFIX) => {
                            api.respond(peer, req).await
                        }
                        // Without a token the API does not exist.
                        None if req.uri().path().starts_with(crate::ops::api::PREFIX) => {
                            text(StatusCode::NOT_FOUND, "not found\n")
                        }
                        _ => respond(&state, req).await,
                    };
                    e.set_busy(false);
                    Ok::<_, Infallible>(r)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                },
                _ = closed => tracing::debug!("admin connection closed to make room for a new one"),
            }
            drop(entry);
        });
    }
    tracing::info!("admin server stopped");
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Answer one request: `/push` reads its body, everything else is
/// [`handle`]d from the head alone.
pub async fn respond<B>(state: &AdminState, req: Request<B>) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if req.uri().path() != PUSH_PATH {
        return handle(state, &req);
    }
    let (parts, body) = req.into_parts();
    if let Some(r) = push_head_refusal(state, &parts.method, &parts.headers) {
        return r;
    }
    let forwarded = parts
        .headers
        .get(FORWARDED_HEADER)
        .map(HeaderValue::as_bytes);
    let origin = Origin::of(forwarded, &state.instance);
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await;
    let bytes = match read {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return push_refused(state, StatusCode::PAYLOAD_TOO_LARGE, "body too large")
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "push: reading the body failed");
            return push_refused(state, StatusCode::BAD_REQUEST, "cannot read the body");
        }
        Err(_) => return push_refused(state, StatusCode::REQUEST_TIMEOUT, "body too slow"),
    };
    push_body(state, &bytes, origin)
}

/// The checks of a push request that need only its head: push on (else
/// 404), the secret (401), the method (405), the announced length (413).
/// `Some(answer)` refuses the request.
fn push_head_refusal(
    state: &AdminState,
    method: &Method,
    headers: &hyper::HeaderMap,
) -> Option<Response<Full<Bytes>>> {
    let Some(secret) = &state.push_secret else {
        return Some(text(StatusCode::NOT_FOUND, "not found\n"));
    };
    let auth = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    if !secret.authorizes(auth) {
        state.metrics.push.events(PushResult::Unauthorized, 1);
        tracing::debug!(
            credentials = auth.is_some(),
            "push: refused, missing or wrong secret"
        );
        let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
        let h = r.headers_mut();
        h.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"imapmux push\""),
        );
        h.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"imapmux push\""),
        );
        return Some(r);
    }
    if method != Method::POST && method != Method::PUT {
        let mut r = push_refused(state, StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST, PUT"));
        return Some(r);
    }
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return Some(push_refused(
            state,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large",
        ));
    }
    None
}

/// An authenticated push body: parse, wake, forward (a direct push only),
/// count. The answer names this process ([`INSTANCE_HEADER`]), so a
/// replica that finds itself among its peers learns it.
fn push_body(state: &AdminState, body: &[u8], origin: Origin) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(INSTANCE_HEADER, state.instance.header());
    if origin == Origin::Myself {
        // Our own forward came back: handled before it was sent.
        tracing::debug!("push: forwarded to this process itself; ignored");
        return r;
    }
    let events = match crate::multiplex::push::parse(body) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::debug!(error = %e, "push: bad body");
            return push_refused(state, StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    // One wake-up per (user, mailbox), however many events name it (the
    // Lua script sends one per kind of change in a transaction).
    let mut done = std::collections::HashSet::new();
    let mut woken = 0;
    for ev in &events {
        let n = if done.insert((ev.user.as_str(), ev.mailbox.as_str())) {
            state.wake.wake(&ev.user, &ev.mailbox)
        } else {
            0
        };
        woken += n;
        // Debug-quoted: names come from the secret's holders, but a line
        // break in one must still not forge a log line.
        tracing::debug!(
            user = ?ev.user,
            mailbox = ?ev.mailbox,
            event = ?ev.event,
            woken = n,
            from_peer = origin == Origin::Peer,
            "push event"
        );
    }
    state
        .metrics
        .push
        .events(PushResult::Accepted, events.len());
    state.metrics.push.woken(woken);
    match (origin, &state.fanout) {
        (Origin::Direct, Some(f)) => f.forward(&events),
        (Origin::Peer, _) => state.metrics.push.from_peers(events.len()),
        _ => {}
    }
    r
}

/// A refused (authenticated) push request, counted as `bad_request`.
fn push_refused(state: &AdminState, status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    state.metrics.push.events(PushResult::BadRequest, 1);
    text(status, format!("{why}\n"))
}

/// Route one request from its head (pure: no I/O besides reading shared
/// state). `/push` needs its body: use [`respond`].
pub fn handle<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => match state.metrics.encode() {
            Ok(body) => {
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(Metrics::content_type()),
                );
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "encoding metrics failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n")
            }
        },
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match state.readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        "/" => text(StatusCode::OK, "imapmux admin: /metrics /healthz /readyz\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
