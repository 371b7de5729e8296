//! Metrics of the auth sources and the brute-force defence. No user or
//! address labels: only the source name and fixed result values.

use std::time::Duration;

use prometheus::{HistogramVec, IntCounterVec, Registry};

use super::{counter_vec, histogram_vec, MetricsError, LOGIN_BUCKETS};

pub struct AuthMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    penalties: IntCounterVec,
}

/// Every `result` label value of `imapmux_auth_source_requests_total`.
pub const RESULTS: &[&str] = &["ok", "rejected", "error", "cached_ok", "cached_rejected"];

impl AuthMetrics {
    pub fn new(r: &Registry) -> Result<AuthMetrics, MetricsError> {
        let m = AuthMetrics {
            requests: counter_vec(
                r,
                "imapmux_auth_source_requests_total",
                "Logins checked by the auth source (passwd-file, http, ldap), by result; cached_* were answered by the auth result cache.",
                &["source", "result"],
            )?,
            duration: histogram_vec(
                r,
                "imapmux_auth_source_duration_seconds",
                "Time the auth source took to answer (cache hits excluded).",
                LOGIN_BUCKETS,
                &["source"],
            )?,
            penalties: counter_vec(
                r,
                "imapmux_auth_penalty_total",
                "Login attempts delayed or refused by the brute-force defence.",
                &["action"],
            )?,
        };
        for a in ["delayed", "refused"] {
            m.penalties.with_label_values(&[a]);
        }
        Ok(m)
    }

    /// Create the series of `source` at zero (alerts and rates need them).
    pub fn init_source(&self, source: &str) {
        for r in RESULTS {
            self.requests.with_label_values(&[source, r]);
        }
    }

    pub fn request(&self, source: &str, result: &str, took: Option<Duration>) {
        self.requests.with_label_values(&[source, result]).inc();
        if let Some(t) = took {
            self.duration
                .with_label_values(&[source])
                .observe(t.as_secs_f64());
        }
    }

    pub fn penalty(&self, action: &'static str) {
        self.penalties.with_label_values(&[action]).inc();
    }
}
