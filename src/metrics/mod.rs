//! Prometheus metrics: one [`Metrics`] per process (a private
//! `prometheus::Registry`), shared as `Arc<Metrics>` by the listeners,
//! sessions, health checks and the admin server ([`crate::admin`]).
//!
//! Every name starts with `imapmux_` and follows Prometheus naming: units
//! in the name (`_seconds`, `_bytes`), `_total` on counters. Labels only
//! ever hold bounded values chosen by imapmux (listener index, TLS mode,
//! result and reason words, configured backend names, command names from a
//! fixed list): never user names, addresses or mailbox names.
//!
//! Callers use the small methods below (`login`, `command_done`, …) and
//! guards that decrement "open" gauges on drop; values owned by other
//! parts (backend up/down, cache counters, live session bytes) are read
//! when Prometheus scrapes.

pub mod auth;
pub mod command;
pub mod doveadm;
pub mod ops;
pub mod park;
pub mod pool;
pub mod protocol;
pub mod push;
mod sampled;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use thiserror::Error;

pub use command::{command_label, CommandResult};
pub use sampled::SessionBytes;

use crate::cache::FetchCache;
use crate::config::ListenerMode;
use crate::lifecycle::EndReason;
use crate::relay::Counters;
use crate::route::Router;

/// A metrics registration or encoding problem (a bug, not bad input).
#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    #[error("metrics: {0} was already attached")]
    AlreadyAttached(&'static str),
}

/// Latency buckets for logins and backend connects (seconds).
const LOGIN_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Latency buckets for commands (seconds).
const COMMAND_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Session length buckets (seconds).
const SESSION_BUCKETS: &[f64] = &[
    1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];

/// The outcome of a client login, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    /// Logged in to the backend.
    Ok,
    /// Credentials refused (by the backend or the auth source).
    Failed,
    /// No backend could serve the user (down, unreachable, backend error).
    Unavailable,
}

impl LoginResult {
    pub const ALL: [LoginResult; 3] = [
        LoginResult::Ok,
        LoginResult::Failed,
        LoginResult::Unavailable,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::Failed => "failed",
            LoginResult::Unavailable => "unavailable",
        }
    }
}

/// Why a client connection was refused at accept time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// `server.max_connections` reached.
    MaxConnections,
    /// PROXY protocol listener: untrusted source, bad or missing header.
    ProxyProtocol,
    /// `server.max_preauth_per_ip` reached for the client's address.
    PerIpPreauth,
    /// `server.max_sessions_per_user_ip` reached: a login refused with
    /// `NO [LIMIT]` (the connection stays open, not logged in).
    PerUserIp,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [
        RejectReason::MaxConnections,
        RejectReason::ProxyProtocol,
        RejectReason::PerIpPreauth,
        RejectReason::PerUserIp,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::MaxConnections => "max_connections",
            RejectReason::ProxyProtocol => "proxy_protocol",
            RejectReason::PerIpPreauth => "per_ip_preauth",
            RejectReason::PerUserIp => "per_user_ip",
        }
    }
}

/// The `mode` label of a listener.
pub fn mode_label(mode: ListenerMode) -> &'static str {
    match mode {
        ListenerMode::Starttls => "starttls",
        ListenerMode::Implicit => "implicit",
        ListenerMode::Plaintext => "plaintext",
    }
}

/// All of imapmux's metrics.
pub struct Metrics {
    registry: Registry,
    client_open: IntGauge,
    client_max: IntGauge,
    accepted: IntCounterVec,
    rejected: IntCounterVec,
    preauth_shortened: IntCounter,
    accept_errors: IntCounter,
    tls_failures: IntCounterVec,
    logins: IntCounterVec,
    auth_duration: HistogramVec,
    commands: IntCounterVec,
    command_duration: HistogramVec,
    sessions_ended: IntCounterVec,
    session_duration: Histogram,
    backend_open: IntGaugeVec,
    backend_up: IntGaugeVec,
    backend_connect_duration: HistogramVec,
    backend_login_duration: HistogramVec,
    backend_errors: IntCounterVec,
    health_failures: IntCounterVec,
    live_bytes: Arc<sampled::LiveBytes>,
    router: arc_swap::ArcSwapOption<Router>,
    cache_attached: OnceLock<()>,
    pub auth: auth::AuthMetrics,
    pub pool: pool::PoolMetrics,
    pub park: park::ParkMetrics,
    pub push: push::PushMetrics,
    pub doveadm: doveadm::DoveadmMetrics,
    pub protocol: protocol::ProtocolMetrics,
    pub ops: ops::OpsMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter(r: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    let c = IntCounter::with_opts(Opts::new(name, help))?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    let g = IntGauge::with_opts(Opts::new(name, help))?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> Result<HistogramVec, MetricsError> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Result<Metrics, MetricsError> {
        let r = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new(
                "imapmux_build_info",
                "Always 1; the version label is the imapmux version.",
            ),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        r.register(Box::new(build))?;
        let start = gauge(
            &r,
            "imapmux_start_time_seconds",
            "When the process started, in seconds since the Unix epoch.",
        )?;
        start.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        );
        let live_bytes = Arc::new(sampled::LiveBytes::default());
        r.register(Box::new(live_bytes.collector()?))?;
        r.register(Box::new(sampled::compress_collector()?))?;
        let m = Metrics {
            client_open: gauge(
                &r,
                "imapmux_client_connections_open",
                "Client connections open now (every state, pre-auth included).",
            )?,
            client_max: gauge(
                &r,
                "imapmux_client_connections_max",
                "Most client connections allowed at once (server.max_connections).",
            )?,
            accepted: counter_vec(
                &r,
                "imapmux_client_connections_accepted_total",
                "Client connections accepted, by listener (index in the config) and mode.",
                &["listener", "mode"],
            )?,
            rejected: counter_vec(
                &r,
                "imapmux_client_connections_rejected_total",
                "Client connections refused, by reason: at accept (max_connections, per_ip_preauth, proxy_protocol after the PROXY header) or, for per_user_ip, a login refused with NO [LIMIT].",
                &["reason"],
            )?,
            preauth_shortened: counter(
                &r,
                "imapmux_client_connections_preauth_shortened_total",
                "Client connections accepted while more than 3/4 of server.max_connections were open, given timeouts.preauth_under_pressure instead of timeouts.preauth.",
            )?,
            accept_errors: counter(
                &r,
                "imapmux_listener_accept_errors_total",
                "Errors from accept() on the client listeners (e.g. out of file descriptors).",
            )?,
            tls_failures: counter_vec(
                &r,
                "imapmux_tls_handshake_failures_total",
                "Client TLS handshakes that failed (error) or timed out, by listener mode.",
                &["mode", "reason"],
            )?,
            logins: counter_vec(
                &r,
                "imapmux_logins_total",
                "Client logins (LOGIN and AUTHENTICATE) by result: ok, failed (credentials refused), unavailable (no backend could serve).",
                &["result"],
            )?,
            auth_duration: histogram_vec(
                &r,
                "imapmux_auth_duration_seconds",
                "Time from a client's login command to imapmux's answer (auth, routing, backend connect and login), by result.",
                LOGIN_BUCKETS,
                &["result"],
            )?,
            commands: counter_vec(
                &r,
                "imapmux_commands_total",
                "Commands relayed after login and answered by the backend, by command (fixed list, else other) and result (ok, no, bad).",
                &["command", "result"],
            )?,
            command_duration: histogram_vec(
                &r,
                "imapmux_command_duration_seconds",
                "Time from a client command to the backend's tagged answer, by command (IDLE is not timed).",
                COMMAND_BUCKETS,
                &["command"],
            )?,
            sessions_ended: counter_vec(
                &r,
                "imapmux_sessions_ended_total",
                "Client connections ended, by how they ended.",
                &["reason"],
            )?,
            session_duration: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "imapmux_session_duration_seconds",
                        "Length of client connections, accept to close.",
                    )
                    .buckets(SESSION_BUCKETS.to_vec()),
                )?;
                r.register(Box::new(h.clone()))?;
                h
            },
            backend_open: gauge_vec(
                &r,
                "imapmux_backend_connections_open",
                "Relayed (logged-in) connections to each backend open now.",
                &["backend"],
            )?,
            backend_up: gauge_vec(
                &r,
                "imapmux_backend_up",
                "1 when health checks consider the backend up, else 0.",
                &["backend"],
            )?,
            backend_connect_duration: histogram_vec(
                &r,
                "imapmux_backend_connect_duration_seconds",
                "Time to connect to a backend for a client login: TCP, TLS, greeting and capabilities.",
                LOGIN_BUCKETS,
                &["backend"],
            )?,
            backend_login_duration: histogram_vec(
                &r,
                "imapmux_backend_login_duration_seconds",
                "Time for a backend to answer the login imapmux sends for a client (ID included).",
                LOGIN_BUCKETS,
                &["backend"],
            )?,
            backend_errors: counter_vec(
                &r,
                "imapmux_backend_errors_total",
                "Failed backend connections for client logins, by backend, stage (connect, login) and kind.",
                &["backend", "stage", "kind"],
            )?,
            health_failures: counter_vec(
                &r,
                "imapmux_backend_health_check_failures_total",
                "Failed backend health checks.",
                &["backend"],
            )?,
            auth: auth::AuthMetrics::new(&r)?,
            pool: pool::PoolMetrics::new(&r)?,
            park: park::ParkMetrics::new(&r)?,
            push: push::PushMetrics::new(&r)?,
            doveadm: doveadm::DoveadmMetrics::new(&r)?,
            protocol: protocol::ProtocolMetrics::new(&r)?,
            ops: ops::OpsMetrics::new(&r)?,
            registry: r,
            live_bytes,
            router: arc_swap::ArcSwapOption::empty(),
            cache_attached: OnceLock::new(),
        };
        // Series that alerts and rates need from the start (rate() misses
        // the first increment of a series born at 1).
        for r in LoginResult::ALL {
            m.logins.with_label_values(&[r.as_str()]);
            m.auth_duration.with_label_values(&[r.as_str()]);
        }
        for r in RejectReason::ALL {
            m.rejected.with_label_values(&[r.as_str()]);
        }
        Ok(m)
    }

    /// The registry, e.g. to add process metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Read backend up/down from the router at scrape time, and create
    /// every per-backend series at zero.
    pub fn attach_router(&self, router: Arc<Router>) -> Result<(), MetricsError> {
        for b in router.backends() {
            let n = b.name.as_str();
            self.backend_open.with_label_values(&[n]);
            self.backend_connect_duration.with_label_values(&[n]);
            self.backend_login_duration.with_label_values(&[n]);
            self.health_failures.with_label_values(&[n]);
            for stage in ["connect", "login"] {
                for kind in crate::backend::BackendError::KINDS {
                    self.backend_errors.with_label_values(&[n, stage, kind]);
                }
            }
            self.backend_up
                .with_label_values(&[n])
                .set(b.is_up().into());
        }
        // A reload attaches the new router; series of removed backends stay
        // (Prometheus counters must not vanish while the process lives).
        self.router.store(Some(router));
        Ok(())
    }

    /// Export the FETCH cache's counters and sizes (read at scrape time).
    pub fn attach_cache(&self, cache: Arc<FetchCache>, max_bytes: u64) -> Result<(), MetricsError> {
        self.cache_attached
            .set(())
            .map_err(|_| MetricsError::AlreadyAttached("cache"))?;
        self.registry
            .register(Box::new(sampled::cache_collector(cache, max_bytes)?))?;
        Ok(())
    }

    pub fn set_max_connections(&self, n: usize) {
        self.client_max.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    // ----- listeners -----

    /// The accepted-connections counter of one listener (resolve once).
    /// Also creates the listener mode's TLS failure series at zero.
    pub fn accepted_counter(&self, listener: usize, mode: ListenerMode) -> IntCounter {
        if mode != ListenerMode::Plaintext {
            for reason in ["error", "timeout"] {
                self.tls_failures
                    .with_label_values(&[mode_label(mode), reason]);
            }
        }
        self.accepted
            .with_label_values(&[&listener.to_string(), mode_label(mode)])
    }

    /// A client connection was accepted: counts it open until the guard drops.
    pub fn client_connection_opened(&self) -> GaugeGuard {
        GaugeGuard::new(self.client_open.clone())
    }

    pub fn connection_rejected(&self, reason: RejectReason) {
        self.rejected.with_label_values(&[reason.as_str()]).inc();
    }

    /// A connection was accepted under pressure: shorter pre-auth timeout.
    pub fn preauth_shortened(&self) {
        self.preauth_shortened.inc();
    }

    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }

    // ----- sessions -----

    /// A client TLS handshake failed; `timeout` tells a timeout from an error.
    pub fn tls_handshake_failed(&self, mode: ListenerMode, timeout: bool) {
        let reason = if timeout { "timeout" } else { "error" };
        self.tls_failures
            .with_label_values(&[mode_label(mode), reason])
            .inc();
    }

    /// A client login finished (`secs` from the command to the answer).
    pub fn login(&self, result: LoginResult, secs: f64) {
        self.logins.with_label_values(&[result.as_str()]).inc();
        self.auth_duration
            .with_label_values(&[result.as_str()])
            .observe(secs);
    }

    /// An auth source answered (or the auth cache did).
    pub fn auth_request(&self, source: &str, result: &str, took: Option<Duration>) {
        self.auth.request(source, result, took);
    }

    /// A relayed command was answered. `command` should come from
    /// [`command_label`] (other strings are counted as `other`). IDLE is
    /// counted but not timed: its length is the client's choice.
    pub fn command_done(&self, command: &str, result: CommandResult, secs: f64) {
        let command = command::COMMAND_LABELS
            .iter()
            .find(|l| **l == command)
            .copied()
            .unwrap_or("other");
        self.commands
            .with_label_values(&[command, result.as_str()])
            .inc();
        if command != "idle" {
            self.command_duration
                .with_label_values(&[command])
                .observe(secs);
        }
    }

    /// Count the session's bytes in the client byte totals while it runs.
    pub fn session_bytes(&self, counters: Arc<Counters>) -> SessionBytes {
        self.live_bytes.add(counters)
    }

    /// A client connection ended; `reason` gives the label
    /// ([`EndReason::as_str`]: `logout`, `client_closed`, …).
    pub fn session_ended(&self, reason: EndReason, duration: Duration) {
        self.sessions_ended
            .with_label_values(&[reason.as_str()])
            .inc();
        self.session_duration.observe(duration.as_secs_f64());
    }

    // ----- backends -----

    /// A relayed connection to `backend`: counted open until the guard drops.
    pub fn backend_connection(&self, backend: &str) -> GaugeGuard {
        GaugeGuard::new(self.backend_open.with_label_values(&[backend]))
    }

    /// Connected to a backend (TCP, TLS, greeting, capabilities) in `secs`.
    pub fn backend_connected(&self, backend: &str, secs: f64) {
        self.backend_connect_duration
            .with_label_values(&[backend])
            .observe(secs);
    }

    /// The backend answered the login (OK or NO) in `secs`.
    pub fn backend_logged_in(&self, backend: &str, secs: f64) {
        self.backend_login_duration
            .with_label_values(&[backend])
            .observe(secs);
    }

    /// A backend connection for a client failed at `stage` (`connect` or
    /// `login`) with error kind `kind` (`BackendError::kind`).
    pub fn backend_error(&self, backend: &str, stage: &'static str, kind: &'static str) {
        self.backend_errors
            .with_label_values(&[backend, stage, kind])
            .inc();
    }

    pub fn health_check_failed(&self, backend: &str) {
        self.health_failures.with_label_values(&[backend]).inc();
    }

    // ----- output -----

    /// Refresh scrape-time values and gather every family.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        if let Some(router) = self.router.load_full() {
            for b in router.backends() {
                self.backend_up
                    .with_label_values(&[&b.name])
                    .set(b.is_up().into());
                for p in crate::front::Protocol::ALL {
                    if crate::front::backend::endpoint(b, p).is_some() {
                        self.protocol
                            .backend_up
                            .with_label_values(&[&b.name, p.as_str()])
                            .set(b.is_up_for(p).into());
                    }
                }
            }
        }
        self.registry.gather()
    }

    /// The Prometheus text exposition format (0.0.4).
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// `Content-Type` of [`encode`](Self::encode)'s output.
    pub fn content_type() -> &'static str {
        prometheus::TEXT_FORMAT
    }
}

/// Increments a gauge now and decrements it on drop.
#[derive(Debug)]
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn new(g: IntGauge) -> Self {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn names_labels_and_guards() {
        let m = Metrics::new().unwrap();
        m.set_max_connections(100);
        m.accepted_counter(1, ListenerMode::Implicit).inc();
        let g = m.client_connection_opened();
        m.login(LoginResult::Failed, 0.2);
        m.command_done("fetch", CommandResult::Ok, 0.01);
        m.command_done("idle", CommandResult::Ok, 600.0);
        m.command_done("user-chosen", CommandResult::Bad, 0.01);
        m.tls_handshake_failed(ListenerMode::Starttls, true);
        m.session_ended(EndReason::Logout, Duration::from_secs(3));
        m.connection_rejected(RejectReason::PerIpPreauth);
        m.preauth_shortened();
        let b = m.backend_connection("b1");
        let t = m.encode().unwrap();
        for (series, v) in [
            ("imapmux_client_connections_open", 1.0),
            ("imapmux_client_connections_max", 100.0),
            (
                "imapmux_client_connections_accepted_total{listener=\"1\",mode=\"implicit\"}",
                1.0,
            ),
            ("imapmux_logins_total{result=\"failed\"}", 1.0),
            ("imapmux_logins_total{result=\"ok\"}", 0.0),
            (
                "imapmux_commands_total{command=\"other\",result=\"bad\"}",
                1.0,
            ),
            (
                "imapmux_commands_total{command=\"idle\",result=\"ok\"}",
                1.0,
            ),
            (
                "imapmux_tls_handshake_failures_total{mode=\"starttls\",reason=\"timeout\"}",
                1.0,
            ),
            ("imapmux_sessions_ended_total{reason=\"logout\"}", 1.0),
            ("imapmux_backend_connections_open{backend=\"b1\"}", 1.0),
            ("imapmux_client_received_bytes_total", 0.0),
            (
                "imapmux_client_connections_rejected_total{reason=\"per_ip_preauth\"}",
                1.0,
            ),
            (
                "imapmux_client_connections_rejected_total{reason=\"per_user_ip\"}",
                0.0,
            ),
            ("imapmux_client_connections_preauth_shortened_total", 1.0),
        ] {
            assert_eq!(value(&t, series), Some(v), "{series} in\n{t}");
        }
        assert!(!t.contains("imapmux_command_duration_seconds_count{command=\"idle\"}"));
        assert!(t.contains("imapmux_build_info{version=\""));
        assert!(!t.contains("imapmux_cache_"));
        drop((g, b));
        let t = m.encode().unwrap();
        assert_eq!(value(&t, "imapmux_client_connections_open"), Some(0.0));
        assert_eq!(
            value(&t, "imapmux_backend_connections_open{backend=\"b1\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn backend_error_kinds_are_all_listed() {
        use crate::backend::BackendError as E;
        let io = || std::io::Error::other("x");
        for e in [
            E::Connect(io()),
            E::Timeout("t"),
            E::Tls(io()),
            E::Io(io()),
            E::Refused("r".into()),
            E::Protocol("p".into()),
            E::Closed,
            E::Login(Box::new(E::Timeout("login"))),
        ] {
            assert!(E::KINDS.contains(&e.kind()), "{}", e.kind());
        }
    }

    #[test]
    fn cache_metrics_when_attached() {
        let m = Metrics::new().unwrap();
        let cache = Arc::new(FetchCache::new(&crate::cache::CacheConfig::default()));
        cache
            .counters
            .hits
            .fetch_add(5, std::sync::atomic::Ordering::Relaxed);
        m.attach_cache(cache.clone(), 1024).unwrap();
        assert!(m.attach_cache(cache, 1024).is_err());
        let t = m.encode().unwrap();
        assert_eq!(value(&t, "imapmux_cache_hits_total"), Some(5.0));
        assert_eq!(value(&t, "imapmux_cache_max_bytes"), Some(1024.0));
        assert!(t.contains("# TYPE imapmux_cache_entries gauge"));
        assert!(t.contains("# TYPE imapmux_cache_evictions_total counter"));
    }
}
