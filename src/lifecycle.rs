//! The lifecycle of a client session, as types: the [`Phase`] it is in and
//! the [`EndReason`] it ended with (the `reason` label of
//! `imapmux_sessions_ended_total` and the `end=` word of the session log
//! line). Shared by the pre-auth driver, the relay core and parking.

/// Where a client session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TLS, greeting, capabilities, login: imapmux is the server.
    PreAuth,
    /// Logged in, relayed to a backend connection.
    Attached,
    /// Idling without a backend connection (IDLE offload).
    Parked,
    /// Over.
    Ended,
}

impl Phase {
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::PreAuth => "preauth",
            Phase::Attached => "attached",
            Phase::Parked => "parked",
            Phase::Ended => "ended",
        }
    }
}

/// How a client session ended. Every variant has a fixed metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client logged out (answered by the backend, or by imapmux when
    /// it kept the backend connection for reuse).
    Logout,
    ClientClosed,
    ClientError,
    BackendClosed,
    BackendError,
    /// No client input for `timeouts.idle`.
    IdleTimeout,
    /// imapmux is shutting down (end of the drain time).
    Shutdown,
    /// A parked client's mailbox was recreated (new UIDVALIDITY).
    UidvalidityChanged,
    /// The client broke the protocol (e.g. a parked client sent something
    /// other than DONE, too much of it).
    ProtocolError,
    PreauthTimeout,
    TooManyErrors,
    AuthFailures,
    TlsHandshakeFailed,
    TlsHandshakeTimeout,
    /// An implicit-TLS listener without a TLS configuration.
    NoTlsConfig,
    /// The operator ended the user's sessions (`imapmux ctl kick`, `move`).
    Kicked,
    /// The operator drained the session's backend (`imapmux ctl backend drain`).
    Drained,
}

impl EndReason {
    /// Every reason, for tests and for pre-registering metric labels.
    pub const ALL: &'static [EndReason] = &[
        EndReason::Logout,
        EndReason::ClientClosed,
        EndReason::ClientError,
        EndReason::BackendClosed,
        EndReason::BackendError,
        EndReason::IdleTimeout,
        EndReason::Shutdown,
        EndReason::UidvalidityChanged,
        EndReason::ProtocolError,
        EndReason::PreauthTimeout,
        EndReason::TooManyErrors,
        EndReason::AuthFailures,
        EndReason::TlsHandshakeFailed,
        EndReason::TlsHandshakeTimeout,
        EndReason::NoTlsConfig,
        EndReason::Kicked,
        EndReason::Drained,
    ];

    /// The metric label and log word.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::ClientClosed => "client_closed",
            EndReason::ClientError => "client_error",
            EndReason::BackendClosed => "backend_closed",
            EndReason::BackendError => "backend_error",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::Shutdown => "shutdown",
            EndReason::UidvalidityChanged => "uidvalidity_changed",
            EndReason::ProtocolError => "protocol_error",
            EndReason::PreauthTimeout => "preauth_timeout",
            EndReason::TooManyErrors => "too_many_errors",
            EndReason::AuthFailures => "auth_failures",
            EndReason::TlsHandshakeFailed => "tls_handshake_failed",
            EndReason::TlsHandshakeTimeout => "tls_handshake_timeout",
            EndReason::NoTlsConfig => "no_tls_config",
            EndReason::Kicked => "kicked",
            EndReason::Drained => "drained",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator's request that a session end (`imapmux ctl kick`, `move`,
/// `backend drain`): `* BYE` at a safe point (nothing in flight but IDLE,
/// the client between two commands, never inside an APPEND), and at the
/// latest after `within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub reason: EndReason,
    pub within: std::time::Duration,
}

impl Stop {
    /// The `* BYE` line the client gets.
    pub fn bye(&self) -> &'static [u8] {
        match self.reason {
            EndReason::Drained => b"* BYE [UNAVAILABLE] Server maintenance; please reconnect.\r\n",
            _ => b"* BYE [UNAVAILABLE] Session ended by the administrator.\r\n",
        }
    }
}

/// Where a session learns that the operator wants it to end: set once
/// (the first request wins), read without a lock on every relay turn,
/// waited for by one task at a time.
#[derive(Debug, Default)]
pub struct StopSignal {
    /// Set once `stop` holds a request.
    stopping: std::sync::atomic::AtomicBool,
    stop: std::sync::Mutex<Option<Stop>>,
    notify: tokio::sync::Notify,
}

impl StopSignal {
    /// Ask the session to end (the first request wins).
    pub fn stop(&self, s: Stop) {
        let mut cur = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        if cur.is_none() {
            *cur = Some(s);
            self.stopping
                .store(true, std::sync::atomic::Ordering::Release);
            drop(cur);
            self.notify.notify_one();
        }
    }

    /// The request to end, if one was made.
    pub fn requested(&self) -> Option<Stop> {
        if !self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        *self.stop.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until the session is asked to end. Cancel-safe; one waiter.
    pub async fn stopped(&self) -> Stop {
        loop {
            let n = self.notify.notified();
            if let Some(s) = self.requested() {
                return s;
            }
            n.await;
        }
    }

    /// [`StopSignal::stopped`] of `signal`, or never without one.
    pub async fn of(signal: Option<&StopSignal>) -> Stop {
        match signal {
            Some(s) => s.stopped().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_snake_case_words() {
        let mut seen = std::collections::HashSet::new();
        for r in EndReason::ALL {
            let s = r.as_str();
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(seen.insert(s), "duplicate label {s}");
        }
    }
}
