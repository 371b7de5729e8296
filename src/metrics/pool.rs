//! Metrics of backend connection reuse (connection multiplexing).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use super::{counter, counter_vec, gauge, MetricsError};

pub struct PoolMetrics {
    pub pooled: IntGauge,
    pub reuses: IntCounter,
    releases: IntCounterVec,
    discards: IntCounterVec,
}

impl PoolMetrics {
    pub fn new(r: &Registry) -> Result<PoolMetrics, MetricsError> {
        let m = PoolMetrics {
            pooled: gauge(
                r,
                "imapmux_backend_connections_pooled",
                "Logged-in backend connections kept after a client logged out, waiting for reuse.",
            )?,
            reuses: counter(
                r,
                "imapmux_backend_reuses_total",
                "Client logins served by a pooled backend connection instead of a new backend login.",
            )?,
            releases: counter_vec(
                r,
                "imapmux_backend_releases_total",
                "Client logouts, by what became of the backend connection: pooled, or closed (state left behind, commands in flight, cleanup failed, reuse off).",
                &["result"],
            )?,
            discards: counter_vec(
                r,
                "imapmux_backend_pool_discards_total",
                "Pooled backend connections closed without reuse, by reason (expired, evicted, probe_failed).",
                &["reason"],
            )?,
        };
        for x in ["pooled", "closed"] {
            m.releases.with_label_values(&[x]);
        }
        for x in ["expired", "evicted", "probe_failed"] {
            m.discards.with_label_values(&[x]);
        }
        Ok(m)
    }

    pub fn released(&self, pooled: bool) {
        self.releases
            .with_label_values(&[if pooled { "pooled" } else { "closed" }])
            .inc();
    }

    pub fn discarded(&self, reason: &'static str, n: usize) {
        self.discards.with_label_values(&[reason]).inc_by(n as u64);
    }
}
