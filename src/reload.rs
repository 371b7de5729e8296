//! Reloading the configuration and certificates without a restart: on
//! SIGHUP, and when the config file or a certificate/key/CA file it names
//! changes (checked by content every `server.reload_check_interval`, which
//! also catches Kubernetes' symlink swap of mounted ConfigMaps/Secrets).
//!
//! A new configuration is built completely (config parsed and validated,
//! backend pools and TLS contexts built) before it replaces the running one;
//! if anything fails, the error is logged and the running configuration
//! stays. Open sessions keep the configuration they started with; new
//! connections get the new one. Listener addresses and modes, and the cache
//! settings, need a restart (logged when they change).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::admin::Readiness;
use crate::config::{Config, ListenerMode};
use crate::metrics::Metrics;
use crate::route::Router;
use crate::session::conn::Context;

/// A content fingerprint of the config file and every file it names.
pub fn fingerprint(path: &Path, cfg: &Config) -> u64 {
    let mut files: Vec<PathBuf> = vec![path.to_path_buf()];
    files.extend(cfg.tls.cert_file.iter().cloned());
    files.extend(cfg.tls.key_file.iter().cloned());
    for c in &cfg.tls.certificates {
        files.push(c.cert_file.clone());
        files.push(c.key_file.clone());
    }
    for p in &cfg.pools {
        for b in &p.backends {
            files.extend(b.ca_file.iter().cloned());
        }
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for f in files {
        h.update(f.as_os_str().as_encoded_bytes());
        match std::fs::read(&f) {
            Ok(bytes) => h.update(&bytes),
            Err(e) => h.update(format!("{:?}", e.kind()).as_bytes()),
        }
    }
    h.digest()
}

type ListenerKey = (
    String,
    ListenerMode,
    crate::front::Protocol,
    bool,
    Vec<ipnet::IpNet>,
);

fn listener_key(cfg: &Config) -> Vec<ListenerKey> {
    cfg.listeners
        .iter()
        .map(|l| {
            (
                l.address.clone(),
                l.mode,
                l.protocol,
                l.proxy_protocol,
                l.trusted_proxies.clone(),
            )
        })
        .collect()
}

/// Build the context for a new configuration from `path`, keeping what
/// lives across reloads (metrics, cache, auth, shutdown signal).
pub fn build(path: &Path, old: &Context) -> anyhow::Result<(Context, Arc<Router>)> {
    let cfg = Config::load(path)?;
    // The operator's routing changes live on; the state file (which
    // another replica or the operator may have changed) is read again.
    let routes = old.router.state().clone();
    routes.set_file(cfg.routing.state_file.as_deref())?;
    let (router, tls) = crate::server::build_parts(&cfg, &routes)?;
    if listener_key(&cfg) != listener_key(&old.config) {
        tracing::warn!(
            "listener changes (address, mode, protocol, PROXY protocol) take effect after a restart"
        );
    }
    if cfg.cache.enabled != old.config.cache.enabled
        || cfg.cache.max_bytes != old.config.cache.max_bytes
    {
        tracing::warn!("cache.enabled and cache.max_bytes changes take effect after a restart");
    }
    if cfg.admin != old.config.admin {
        tracing::warn!("[admin] changes (address, push secret) take effect after a restart");
    }
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    let auth = if cfg.auth == old.config.auth {
        old.auth.clone()
    } else {
        crate::auth::build(&cfg.auth, Some(old.metrics.clone()))?
    };
    let penalty = if cfg.auth.penalty == old.config.auth.penalty {
        old.penalty.clone()
    } else {
        Arc::new(crate::auth::penalty::Penalty::new(&cfg.auth.penalty))
    };
    let ctx = Context {
        config: Arc::new(cfg),
        router: router.clone(),
        auth,
        penalty,
        tls,
        metrics: old.metrics.clone(),
        cache: old.cache.clone(),
        close_now: old.close_now.clone(),
        mux: old.mux.clone(),
        ops: old.ops.clone(),
    };
    Ok((ctx, router))
}

/// Watch for SIGHUP and file changes until `stop` flips; `on_router` is
/// called with each new router (to restart health checks).
pub async fn watch<F>(
    path: PathBuf,
    ctx: Arc<ArcSwap<Context>>,
    readiness: Arc<Readiness>,
    mut stop: watch::Receiver<bool>,
    mut on_router: F,
) where
    F: FnMut(&Router, &Config, &Arc<Metrics>, &watch::Receiver<bool>) + Send + 'static,
{
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file changes only");
            None
        }
    };
    let mut last = fingerprint(&path, &ctx.load().config);
    loop {
        let every = ctx.load().config.server.reload_check_interval;
        let poll = async {
            if every.is_zero() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(every.max(Duration::from_millis(100))).await;
        };
        let hup_recv = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let reason = tokio::select! {
            _ = hup_recv => "SIGHUP",
            _ = poll => {
                if fingerprint(&path, &ctx.load().config) == last {
                    continue;
                }
                "file change"
            }
            _ = stop.changed() => return,
        };
        let current = ctx.load_full();
        match build(&path, &current) {
            Ok((new_ctx, router)) => {
                let cfg = new_ctx.config.clone();
                let metrics = new_ctx.metrics.clone();
                ctx.store(Arc::new(new_ctx));
                readiness.set_router(router.clone());
                if let Err(e) = metrics.attach_router(router.clone()) {
                    tracing::warn!(error = %e, "metrics: cannot attach the new backends");
                }
                on_router(&router, &cfg, &metrics, &stop);
                tracing::info!(reason, "configuration reloaded");
            }
            Err(e) => {
                tracing::error!(
                    reason,
                    "reload rejected, the running configuration stays: {e:#}"
                );
            }
        }
        last = fingerprint(&path, &ctx.load().config);
    }
}
