//! Metrics by client protocol (IMAP, POP3, ManageSieve): connections,
//! logins, logged-in sessions and client bytes. No user names.

use std::sync::atomic::Ordering;

use prometheus::{IntCounterVec, IntGaugeVec, Registry};

use super::{counter_vec, gauge_vec, GaugeGuard, LoginResult, MetricsError};
use crate::front::Protocol;
use crate::relay::Counters;

pub struct ProtocolMetrics {
    accepted: IntCounterVec,
    logins: IntCounterVec,
    sessions: IntGaugeVec,
    bytes: IntCounterVec,
    pub(super) backend_up: IntGaugeVec,
}

impl ProtocolMetrics {
    pub fn new(r: &Registry) -> Result<ProtocolMetrics, MetricsError> {
        let m = ProtocolMetrics {
            accepted: counter_vec(
                r,
                "imapmux_protocol_connections_accepted_total",
                "Client connections accepted, by protocol (imap, pop3, sieve).",
                &["protocol"],
            )?,
            logins: counter_vec(
                r,
                "imapmux_protocol_logins_total",
                "Client logins by protocol and result (ok, failed, unavailable); imapmux_logins_total is their sum.",
                &["protocol", "result"],
            )?,
            sessions: gauge_vec(
                r,
                "imapmux_protocol_sessions_open",
                "Logged-in client sessions open now, by protocol.",
                &["protocol"],
            )?,
            bytes: counter_vec(
                r,
                "imapmux_protocol_client_bytes_total",
                "Bytes of ended client sessions, by protocol and direction (in: from clients, out: to clients).",
                &["protocol", "direction"],
            )?,
            backend_up: gauge_vec(
                r,
                "imapmux_backend_protocol_up",
                "1 when health checks consider the backend's service for the protocol up, else 0 (only services that are configured).",
                &["backend", "protocol"],
            )?,
        };
        for p in Protocol::ALL {
            for r in LoginResult::ALL {
                m.logins.with_label_values(&[p.as_str(), r.as_str()]);
            }
        }
        Ok(m)
    }

    /// Label series of the protocols a listener speaks exist from the start.
    pub fn listening(&self, p: Protocol) {
        self.accepted.with_label_values(&[p.as_str()]);
        self.sessions.with_label_values(&[p.as_str()]);
        for d in ["in", "out"] {
            self.bytes.with_label_values(&[p.as_str(), d]);
        }
    }

    pub fn accepted(&self, p: Protocol) {
        self.accepted.with_label_values(&[p.as_str()]).inc();
    }

    pub fn login(&self, p: Protocol, result: LoginResult) {
        self.logins
            .with_label_values(&[p.as_str(), result.as_str()])
            .inc();
    }

    /// A logged-in session: counted open until the guard drops.
    pub fn session_open(&self, p: Protocol) -> GaugeGuard {
        GaugeGuard::new(self.sessions.with_label_values(&[p.as_str()]))
    }

    /// An ended session's client bytes.
    pub fn session_bytes(&self, p: Protocol, c: &Counters) {
        self.bytes
            .with_label_values(&[p.as_str(), "in"])
            .inc_by(c.client_to_backend.load(Ordering::Relaxed));
        self.bytes
            .with_label_values(&[p.as_str(), "out"])
            .inc_by(c.backend_to_client.load(Ordering::Relaxed));
    }
}
