//! Metrics of push notifications (`/push` on the admin server) and of
//! their fan-out to the other replicas. No user, mailbox or peer labels:
//! only fixed result words.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use super::{counter, counter_vec, gauge, MetricsError};

/// The `result` of a push request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// Authenticated and understood; counted once per event.
    Accepted,
    /// Missing or wrong shared secret.
    Unauthorized,
    /// Wrong method, body too large, too slow, or not a push event.
    BadRequest,
}

impl PushResult {
    pub const ALL: [PushResult; 3] = [
        PushResult::Accepted,
        PushResult::Unauthorized,
        PushResult::BadRequest,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PushResult::Accepted => "accepted",
            PushResult::Unauthorized => "unauthorized",
            PushResult::BadRequest => "bad_request",
        }
    }
}

/// Every `result` of `imapmux_push_forward_requests_total`: ok (2xx),
/// refused (4xx, dropped), error (no answer, timeout, 5xx: retried),
/// self (the peer is this process: skipped from then on).
pub const FORWARD_REQUEST_RESULTS: &[&str] = &["ok", "refused", "error", "self"];
/// Every `result` of `imapmux_push_forward_events_total`.
pub const FORWARD_EVENT_RESULTS: &[&str] = &["delivered", "refused", "queue_full", "peer_gone"];

pub struct PushMetrics {
    events: IntCounterVec,
    woken: IntCounter,
    from_peers: IntCounter,
    forward_requests: IntCounterVec,
    forward_events: IntCounterVec,
    forward_pending: IntGauge,
    peers: IntGauge,
}

impl PushMetrics {
    pub fn new(r: &Registry) -> Result<PushMetrics, MetricsError> {
        let m = PushMetrics {
            events: counter_vec(
                r,
                "imapmux_push_events_total",
                "Push notifications received on the admin server's /push, by result: accepted (one per event), unauthorized and bad_request (one per request).",
                &["result"],
            )?,
            woken: counter(
                r,
                "imapmux_push_woken_total",
                "Parked IDLE clients woken by accepted push events.",
            )?,
            from_peers: counter(
                r,
                "imapmux_push_peer_events_total",
                "Accepted push events that another replica forwarded (woken here, never forwarded again).",
            )?,
            forward_requests: counter_vec(
                r,
                "imapmux_push_forward_requests_total",
                "Push requests forwarded to other replicas, by result: ok, refused (4xx: events dropped), error (no answer, timeout, 5xx: retried after a backoff), self (the peer was this process).",
                &["result"],
            )?,
            forward_events: counter_vec(
                r,
                "imapmux_push_forward_events_total",
                "Push events forwarded to other replicas, one per event and peer, by result: delivered, refused (dropped), queue_full (the peer's queue was full: its oldest event was dropped), peer_gone (the peer left the peer set with events queued).",
                &["result"],
            )?,
            forward_pending: gauge(
                r,
                "imapmux_push_forward_pending",
                "Push events waiting to be forwarded or in flight, summed over peers.",
            )?,
            peers: gauge(
                r,
                "imapmux_push_peers",
                "Replicas that push notifications are forwarded to (admin.push_peers, admin.push_peers_dns).",
            )?,
        };
        for x in PushResult::ALL {
            m.events.with_label_values(&[x.as_str()]);
        }
        for x in FORWARD_REQUEST_RESULTS {
            m.forward_requests.with_label_values(&[x]);
        }
        for x in FORWARD_EVENT_RESULTS {
            m.forward_events.with_label_values(&[x]);
        }
        Ok(m)
    }

    /// `n` accepted events came from a peer.
    pub fn from_peers(&self, n: usize) {
        self.from_peers.inc_by(n as u64);
    }

    /// A forwarded request ended with `result` (one of
    /// [`FORWARD_REQUEST_RESULTS`]).
    pub fn forward_request(&self, result: &'static str) {
        self.forward_requests.with_label_values(&[result]).inc();
    }

    /// `n` forwarded events ended with `result` (one of
    /// [`FORWARD_EVENT_RESULTS`]).
    pub fn forward_events(&self, result: &'static str, n: usize) {
        if n > 0 {
            self.forward_events
                .with_label_values(&[result])
                .inc_by(n as u64);
        }
    }

    pub fn set_forward_pending(&self, n: usize) {
        self.forward_pending.set(n as i64);
    }

    pub fn set_peers(&self, n: usize) {
        self.peers.set(n as i64);
    }

    /// `n` events (requests, for the refusals) ended with `result`.
    pub fn events(&self, result: PushResult, n: usize) {
        self.events
            .with_label_values(&[result.as_str()])
            .inc_by(n as u64);
    }

    /// Accepted events woke `n` parked clients.
    pub fn woken(&self, n: usize) {
        self.woken.inc_by(n as u64);
    }
}
