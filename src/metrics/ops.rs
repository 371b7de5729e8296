//! Metrics of the operations API: actions by kind and result, sessions
//! asked to end, drained backends, per-user overrides. No user names in
//! labels (backend names are configuration, not users).

use prometheus::{IntCounterVec, IntGauge, Registry};

use super::{counter_vec, gauge, MetricsError};

pub struct OpsMetrics {
    actions: IntCounterVec,
    stopped: IntCounterVec,
    pub drained: IntGauge,
    pub overrides: IntGauge,
}

/// Every `action` of `imapmux_ops_actions_total`.
pub const ACTIONS: &[&str] = &[
    "sessions",
    "backends",
    "kick",
    "drain",
    "undrain",
    "weight",
    "move",
    "cache_stats",
    "cache_purge",
];
/// Every `result` of `imapmux_ops_actions_total`.
pub const RESULTS: &[&str] = &["ok", "bad_request", "unauthorized", "forbidden", "error"];

impl OpsMetrics {
    pub fn new(r: &Registry) -> Result<OpsMetrics, MetricsError> {
        let m = OpsMetrics {
            actions: counter_vec(
                r,
                "imapmux_ops_actions_total",
                "Calls of the operations API (imapmux ctl), by action and result (ok, bad_request, unauthorized, forbidden, error).",
                &["action", "result"],
            )?,
            stopped: counter_vec(
                r,
                "imapmux_ops_sessions_stopped_total",
                "Client sessions (attached or parked) the operator asked to end, by cause: kick, move, drain.",
                &["cause"],
            )?,
            drained: gauge(
                r,
                "imapmux_ops_backends_drained",
                "Backends drained by the operator (no new logins) now.",
            )?,
            overrides: gauge(
                r,
                "imapmux_ops_user_overrides",
                "Per-user route overrides (imapmux ctl move) in force now.",
            )?,
        };
        for a in ACTIONS {
            for res in RESULTS {
                m.actions.with_label_values(&[a, res]);
            }
        }
        for c in ["kick", "move", "drain"] {
            m.stopped.with_label_values(&[c]);
        }
        Ok(m)
    }

    /// One API call. `action` and `result` must be from [`ACTIONS`] and
    /// [`RESULTS`] (others are counted as `unknown`).
    pub fn action(&self, action: &str, result: &str) {
        let a = ACTIONS
            .iter()
            .find(|x| **x == action)
            .copied()
            .unwrap_or("unknown");
        let r = RESULTS
            .iter()
            .find(|x| **x == result)
            .copied()
            .unwrap_or("error");
        self.actions.with_label_values(&[a, r]).inc();
    }

    pub fn stopped(&self, cause: &'static str, n: usize) {
        self.stopped.with_label_values(&[cause]).inc_by(n as u64);
    }
}
