//! The I/O of push fan-out: one task sends the [`Outbox`]'s batches over
//! HTTP (hyper's pooled client, every request bounded in time, at most one
//! in flight per peer), one task resolves the peer names every refresh.
//! The decisions (what, to whom, when) are the outbox's.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use thiserror::Error;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::outbox::{Batch, Health, Limits, Outbox, Tally};
use super::peers::{Sources, Target};
use super::{outcome, ForwardAuth, InstanceId, Outcome, FORWARDED_HEADER, INSTANCE_HEADER};
use crate::metrics::Metrics;
use crate::multiplex::push::PushEvent;

/// Whole forwarded request: connect, send, answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP connect to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// One DNS lookup of a peer name.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Most of a peer's answer body read (then dropped).
const MAX_ANSWER: usize = 4 * 1024;

/// Settings of the fan-out.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    pub targets: Vec<Target>,
    /// How often names are looked up again.
    pub refresh: Duration,
    pub auth: ForwardAuth,
    /// This process's admin address, when it is a specific one (not
    /// `0.0.0.0`): never a peer.
    pub own: Option<SocketAddr>,
    pub limits: Limits,
}

#[derive(Debug, Error)]
enum SendError {
    #[error("bad peer URI: {0}")]
    Uri(#[from] hyper::http::Error),
    #[error("{0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The fan-out, shared by the admin server (which hands it events) and
/// its tasks.
pub struct Fanout {
    me: InstanceId,
    outbox: Mutex<Outbox>,
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Start forwarding: the sender task, and the lookup task when a peer is
/// given by name.
pub fn start(cfg: FanoutConfig, me: InstanceId, metrics: Arc<Metrics>) -> Arc<Fanout> {
    let (f, sources) = Fanout::new(&cfg, me.clone(), metrics);
    let sender = Arc::new(Sender::new(cfg.auth.clone(), me));
    tokio::spawn(send_loop(f.clone(), sender));
    if sources.needs_lookups() {
        tokio::spawn(lookup_loop(f.clone(), sources, cfg.refresh));
    }
    f
}

impl Fanout {
    /// The fan-out with the configured addresses as peers (names are
    /// looked up by [`start`]'s task), without its tasks: nothing is sent.
    pub fn new(
        cfg: &FanoutConfig,
        me: InstanceId,
        metrics: Arc<Metrics>,
    ) -> (Arc<Fanout>, Sources) {
        let f = Arc::new(Fanout {
            me,
            outbox: Mutex::new(Outbox::new(cfg.limits, cfg.own)),
            wake: Notify::new(),
            metrics,
        });
        let sources = Sources::new(cfg.targets.clone());
        f.set_peers(&sources.all());
        (f, sources)
    }

    /// This process's instance id.
    pub fn instance(&self) -> &InstanceId {
        &self.me
    }

    /// Forward `events` (accepted from a direct push) to every peer.
    pub fn forward(&self, events: &[PushEvent]) {
        let (t, pending) = {
            let mut o = lock(&self.outbox);
            (o.enqueue(events), o.pending())
        };
        self.count(&t, pending);
        if t.queued > 0 {
            self.wake.notify_one();
        }
    }

    fn set_peers(&self, addrs: &BTreeSet<SocketAddr>) {
        let (change, pending, n) = {
            let mut o = lock(&self.outbox);
            let c = o.set_peers(addrs);
            (c, o.pending(), o.peer_count())
        };
        for a in &change.added {
            tracing::info!(peer = %a, "push fan-out: new peer");
        }
        for a in &change.removed {
            tracing::info!(peer = %a, "push fan-out: peer gone");
        }
        if change.ignored > 0 {
            tracing::warn!(
                ignored = change.ignored,
                "push fan-out: more peer addresses than {}; the rest are not forwarded to",
                super::outbox::MAX_PEERS
            );
        }
        self.metrics.push.set_peers(n);
        self.count(&change.tally, pending);
        self.wake.notify_one();
    }

    fn count(&self, t: &Tally, pending: usize) {
        let m = &self.metrics.push;
        m.forward_events("delivered", t.delivered);
        m.forward_events("refused", t.refused);
        m.forward_events("queue_full", t.queue_full);
        m.forward_events("peer_gone", t.peer_gone);
        m.set_forward_pending(pending);
    }

    /// A request ended: tell the outbox, count, log a change of health.
    fn done(&self, batch: Batch, r: Result<Outcome, SendError>) {
        let peer = batch.peer;
        let (outcome, why) = match r {
            Ok(o) => (o, None),
            Err(e) => (Outcome::Failed, Some(e)),
        };
        let (t, health, pending, n) = {
            let mut o = lock(&self.outbox);
            let (t, h) = o.done(batch, outcome, Instant::now());
            (t, h, o.pending(), o.peer_count())
        };
        let result = match outcome {
            Outcome::Delivered => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "error",
            Outcome::Myself => "self",
        };
        self.metrics.push.forward_request(result);
        self.metrics.push.set_peers(n);
        self.count(&t, pending);
        let why = why.map(|e| e.to_string()).unwrap_or_default();
        match (health, outcome) {
            (Health::Recovered, _) => {
                tracing::info!(peer = %peer, "push fan-out: peer answers again")
            }
            (Health::Failing, Outcome::Refused) => tracing::warn!(
                peer = %peer,
                "push fan-out: the peer refuses forwarded pushes (is admin.push_secret the same on every replica?)"
            ),
            (Health::Failing, _) => tracing::warn!(
                peer = %peer,
                error = %why,
                "push fan-out: peer unreachable; retrying with backoff"
            ),
            (Health::Myself, _) => {
                tracing::info!(peer = %peer, "push fan-out: this address is this process; skipped")
            }
            (Health::Same, _) => {}
        }
    }
}

/// Send every batch the outbox releases; wait for new events, answers
/// and the end of backoffs.
async fn send_loop(f: Arc<Fanout>, sender: Arc<Sender>) {
    let mut inflight: JoinSet<(Batch, Result<Outcome, SendError>)> = JoinSet::new();
    // The peer of each request task, in case one is lost (panics).
    let mut tasks: HashMap<tokio::task::Id, SocketAddr> = HashMap::new();
    loop {
        let (batches, t, next, pending) = {
            let mut o = lock(&f.outbox);
            let (b, t) = o.take_batches(Instant::now());
            (b, t, o.next_retry(), o.pending())
        };
        f.count(&t, pending);
        for b in batches {
            let (s, peer) = (sender.clone(), b.peer);
            let h = inflight.spawn(async move {
                let r = s.send(&b).await;
                (b, r)
            });
            tasks.insert(h.id(), peer);
        }
        let backoff = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = f.wake.notified() => {}
            Some(r) = inflight.join_next_with_id() => match r {
                Ok((id, (batch, r))) => {
                    tasks.remove(&id);
                    f.done(batch, r);
                }
                Err(e) => {
                    let peer = tasks.remove(&e.id());
                    tracing::error!(?peer, error = %e, "push fan-out: a request task failed");
                    if let Some(p) = peer {
                        let (t, pending) = {
                            let mut o = lock(&f.outbox);
                            (o.abandon(p), o.pending())
                        };
                        f.count(&t, pending);
                    }
                }
            },
            _ = backoff => {}
        }
    }
}

/// Look the peer names up every `every`; a change of addresses changes
/// the peer set.
async fn lookup_loop(f: Arc<Fanout>, mut sources: Sources, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: BTreeSet<Target> = BTreeSet::new();
    loop {
        tick.tick().await;
        let names: Vec<Target> = sources.names().cloned().collect();
        let mut changed = false;
        for t in names {
            let answer =
                match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(t.lookup()))
                    .await
                {
                    Ok(Ok(addrs)) => Ok(addrs.collect::<BTreeSet<SocketAddr>>()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
                };
            match &answer {
                Ok(_) if failing.remove(&t) => {
                    tracing::info!(name = %t.name, "push fan-out: peer name resolves again")
                }
                Err(e) if failing.insert(t.clone()) => tracing::warn!(
                    name = %t.name,
                    error = %e,
                    "push fan-out: cannot resolve the peer name; keeping its last addresses"
                ),
                _ => {}
            }
            changed |= sources.update(&t, answer.ok());
        }
        if changed {
            f.set_peers(&sources.all());
        }
    }
}

/// The HTTP side of forwarding.
struct Sender {
    client: Client<HttpConnector, Full<Bytes>>,
    auth: ForwardAuth,
    me: InstanceId,
}

impl Sender {
    fn new(auth: ForwardAuth, me: InstanceId) -> Sender {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Sender { client, auth, me }
    }

    /// POST `batch` to the peer's `/push`; what its answer means.
    async fn send(&self, batch: &Batch) -> Result<Outcome, SendError> {
        let uri = format!("http://{}{}", batch.peer, crate::admin::PUSH_PATH);
        let req = hyper::Request::post(uri)
            .header(AUTHORIZATION, self.auth.header())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(FORWARDED_HEADER, self.me.header())
            .body(Full::new(batch.body.clone()))?;
        let exchange = async {
            let resp = self.client.request(req).await?;
            let status = resp.status().as_u16();
            let instance = resp.headers().get(INSTANCE_HEADER).cloned();
            // Read (a bounded part of) the answer so the connection can
            // be reused; its content does not matter.
            let _ = Limited::new(resp.into_body(), MAX_ANSWER).collect().await;
            Ok::<_, SendError>(outcome(
                status,
                instance.as_ref().map(HeaderValue::as_bytes),
                &self.me,
            ))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| SendError::Timeout(REQUEST_TIMEOUT))?
    }
}
