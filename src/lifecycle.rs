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
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
