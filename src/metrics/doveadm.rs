//! Metrics of the batch poll through Dovecot's doveadm HTTP API
//! (`[[pool.backend]] doveadm_url`). Labels: the configured backend name
//! and fixed result words; never user or mailbox names.

use prometheus::{HistogramVec, IntCounterVec, Registry};

use super::{counter_vec, histogram_vec, MetricsError};

/// Every `result` of `imapmux_doveadm_poll_requests_total`.
pub const RESULTS: &[&str] = &[
    "ok",
    "unauthorized",
    "http_error",
    "timeout",
    "connect",
    "bad_response",
];

pub struct DoveadmMetrics {
    requests: IntCounterVec,
    batch: HistogramVec,
    duration: HistogramVec,
    command_errors: IntCounterVec,
}

impl DoveadmMetrics {
    pub fn new(r: &Registry) -> Result<DoveadmMetrics, MetricsError> {
        Ok(DoveadmMetrics {
            requests: counter_vec(
                r,
                "imapmux_doveadm_poll_requests_total",
                "Batch poll requests to a backend's doveadm HTTP API, by result: ok, unauthorized (401/403: check doveadm_api_key_file), http_error (another status), timeout, connect (no connection or it broke), bad_response (too large or not doveadm's JSON).",
                &["backend", "result"],
            )?,
            batch: histogram_vec(
                r,
                "imapmux_doveadm_poll_batch_size",
                "Watched mailboxes (of parked clients' users) asked in one doveadm request.",
                &[1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0],
                &["backend"],
            )?,
            duration: histogram_vec(
                r,
                "imapmux_doveadm_poll_duration_seconds",
                "Time of one doveadm batch poll request, from sending to the whole answer read.",
                &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                &["backend"],
            )?,
            command_errors: counter_vec(
                r,
                "imapmux_doveadm_poll_command_errors_total",
                "Mailboxes doveadm could not report in an answered batch, by error: no_user (the login name is not a userdb user), no_mailbox, other. Their watchers check over IMAP instead.",
                &["backend", "error"],
            )?,
        })
    }

    /// Make the series of `backend` exist from the start (rate() misses
    /// the first increment of a series born at 1).
    pub fn backend(&self, backend: &str) {
        for r in RESULTS {
            self.requests.with_label_values(&[backend, r]);
        }
        for e in crate::multiplex::doveadm::ERROR_LABELS {
            self.command_errors.with_label_values(&[backend, e]);
        }
        self.batch.with_label_values(&[backend]);
        self.duration.with_label_values(&[backend]);
    }

    /// One request of `n` mailboxes ended with `result` after `secs`.
    pub fn request(&self, backend: &str, result: &str, n: usize, secs: f64) {
        self.requests.with_label_values(&[backend, result]).inc();
        self.batch.with_label_values(&[backend]).observe(n as f64);
        self.duration.with_label_values(&[backend]).observe(secs);
    }

    pub fn command_error(&self, backend: &str, error: &str) {
        self.command_errors
            .with_label_values(&[backend, error])
            .inc();
    }
}
