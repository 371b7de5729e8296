//! Metrics of IDLE offload: parked client sessions, watchers, parks,
//! wakes by cause, resync time.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Registry};

use super::{counter, counter_vec, gauge, MetricsError};

pub struct ParkMetrics {
    pub parked: IntGauge,
    pub idling: IntGauge,
    pub watchers: IntGauge,
    /// Backend connections the watchers hold now.
    watcher_connections: IntGauge,
    pub parks: IntCounter,
    /// Parked sessions that needed the backend again (a command DONE,
    /// IDLE, NOOP, CHECK or LOGOUT could not answer).
    reattaches: IntCounter,
    wakes: IntCounterVec,
    pub resync_duration: Histogram,
}

/// Every `cause` of `imapmux_wakes_total`.
pub const WAKE_CAUSES: &[&str] = &["done", "push", "poll"];

impl ParkMetrics {
    pub fn new(r: &Registry) -> Result<ParkMetrics, MetricsError> {
        let resync_duration = Histogram::with_opts(
            HistogramOpts::new(
                "imapmux_resync_duration_seconds",
                "Time to learn what changed in a parked client's mailbox (EXAMINE, UID list, changed flags).",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )?;
        r.register(Box::new(resync_duration.clone()))?;
        let m = ParkMetrics {
            parked: gauge(
                r,
                "imapmux_client_sessions_parked",
                "Client sessions in IDLE whose backend connection imapmux released (parked).",
            )?,
            idling: gauge(
                r,
                "imapmux_client_sessions_idle_attached",
                "Client sessions in IDLE still holding their backend connection.",
            )?,
            watchers: gauge(
                r,
                "imapmux_backend_watchers",
                "Watchers of parked clients' mailboxes (one per backend and user); see imapmux_backend_watcher_connections for the backend connections they hold.",
            )?,
            watcher_connections: gauge(
                r,
                "imapmux_backend_watcher_connections",
                "Backend connections held by watchers now: while polling over IMAP (one per watcher), or briefly after a wake-up (push, doveadm poll) to resync parked clients.",
            )?,
            parks: counter(
                r,
                "imapmux_parks_total",
                "IDLE client sessions parked (backend connection released).",
            )?,
            reattaches: counter(
                r,
                "imapmux_reattaches_total",
                "Parked client sessions re-attached to a backend connection because a command needed the backend (DONE, IDLE, NOOP, CHECK and LOGOUT are answered while parked).",
            )?,
            wakes: counter_vec(
                r,
                "imapmux_wakes_total",
                "Parked sessions woken, by cause: done (the client ended its IDLE), push (a push notification), poll (the watcher's poll saw a change).",
                &["cause"],
            )?,
            resync_duration,
        };
        for c in WAKE_CAUSES {
            m.wakes.with_label_values(&[c]);
        }
        Ok(m)
    }

    /// Counts a parked session for as long as the guard lives.
    pub fn parked_session(&self) -> super::GaugeGuard {
        super::GaugeGuard::new(self.parked.clone())
    }

    /// Counts a watcher's backend connection for as long as the guard lives.
    pub fn watcher_connection(&self) -> super::GaugeGuard {
        super::GaugeGuard::new(self.watcher_connections.clone())
    }

    pub fn reattach(&self) {
        self.reattaches.inc();
    }

    pub fn wake(&self, cause: &str) {
        self.wakes.with_label_values(&[cause]).inc();
    }
}
