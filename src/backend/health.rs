//! Health checks: connect + greeting (+ TLS as configured) on an interval;
//! `fall` consecutive failures mark a backend down, `rise` successes up.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::config::HealthConfig;
use crate::front::Protocol;
use crate::metrics::Metrics;
use crate::route::Backend;

/// Counts consecutive results and decides the state (pure).
#[derive(Debug, Clone)]
pub struct Hysteresis {
    fall: u32,
    rise: u32,
    failures: u32,
    successes: u32,
}

impl Hysteresis {
    pub fn new(fall: u32, rise: u32) -> Self {
        Hysteresis {
            fall: fall.max(1),
            rise: rise.max(1),
            failures: 0,
            successes: 0,
        }
    }

    /// Record one check; returns the new up/down state if it should change.
    pub fn record(&mut self, ok: bool, currently_up: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (!currently_up && self.successes >= self.rise).then_some(true)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (currently_up && self.failures >= self.fall).then_some(false)
        }
    }
}

/// Check one backend once.
pub async fn check(backend: &Backend, cfg: &HealthConfig) -> Result<(), super::BackendError> {
    let mut conn = super::connect(backend, cfg.timeout, cfg.timeout).await?;
    let _ = conn.stream.write_all(b"H1 LOGOUT\r\n").await;
    let _ = conn.stream.shutdown().await;
    Ok(())
}

/// Check one backend's service for `protocol` once (connect, TLS as
/// configured, greeting).
pub async fn check_protocol(
    backend: &Backend,
    protocol: Protocol,
    cfg: &HealthConfig,
) -> Result<(), super::BackendError> {
    let endpoint = crate::front::backend::endpoint(backend, protocol);
    match (protocol, endpoint) {
        (Protocol::Imap, _) => check(backend, cfg).await,
        (Protocol::Pop3, Some(e)) => crate::pop3::backend::check(backend, e, cfg.timeout).await,
        (Protocol::Sieve, Some(e)) => crate::sieve::backend::check(backend, e, cfg.timeout).await,
        (_, None) => Ok(()),
    }
}

/// Run health checks for `backend`'s service for `protocol` until
/// `shutdown` flips; failures are counted in `metrics` (the up/down state
/// is kept on `backend`: [`Backend::is_up`] for IMAP, which routing
/// follows, [`Backend::is_up_for`] for the others).
pub async fn run(
    backend: Arc<Backend>,
    protocol: Protocol,
    cfg: HealthConfig,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut h = Hysteresis::new(cfg.fall, cfg.rise);
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let p = protocol.as_str();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let result = check_protocol(&backend, protocol, &cfg).await;
        if result.is_err() {
            metrics.health_check_failed(&backend.name);
        }
        if let Some(up) = h.record(result.is_ok(), backend.is_up_for(protocol)) {
            backend.set_up_for(protocol, up);
            match &result {
                Ok(()) => tracing::info!(backend = %backend.name, protocol = p, "backend is up"),
                Err(e) => {
                    tracing::warn!(backend = %backend.name, protocol = p, error = %e, "backend is down")
                }
            }
        } else if let Err(e) = &result {
            tracing::debug!(backend = %backend.name, protocol = p, error = %e, "health check failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Hysteresis;

    #[test]
    fn fall_and_rise() {
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(h.record(false, true), None);
        assert_eq!(h.record(false, true), Some(false));
        assert_eq!(h.record(true, false), None);
        assert_eq!(h.record(false, false), None);
        assert_eq!(h.record(true, false), None);
        assert_eq!(h.record(true, false), None);
        assert_eq!(h.record(true, false), Some(true));
        assert_eq!(h.record(true, true), None);
    }
}
