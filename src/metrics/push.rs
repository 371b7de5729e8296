//! Metrics of push notifications (`/push` on the admin server). No user
//! or mailbox labels: only fixed result words.

use prometheus::{IntCounter, IntCounterVec, Registry};

use super::{counter, counter_vec, MetricsError};

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

pub struct PushMetrics {
    events: IntCounterVec,
    woken: IntCounter,
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
        };
        for x in PushResult::ALL {
            m.events.with_label_values(&[x.as_str()]);
        }
        Ok(m)
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
