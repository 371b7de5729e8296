//! Running the proxy: build everything from the config, start health
//! checks, the admin server and listeners, and shut down gracefully on
//! SIGTERM/SIGINT (report not ready, stop accepting, let sessions drain,
//! then `* BYE` the rest).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::admin::{AdminState, Readiness};
use crate::config::{Config, ListenerMode};
use crate::listener::limits::Limits;
use crate::listener::{accept_loop, bind_all};
use crate::metrics::Metrics;
use crate::route::Router;
use crate::session::conn::Context;

/// The parts of a running configuration that are built from it (and so
/// can fail on bad files): backend pools with their TLS client contexts,
/// and the client-facing TLS acceptor when a listener needs one. Used at
/// startup, on reload and by `check-config`.
pub fn build_parts(
    cfg: &Config,
    routes: &Arc<crate::ops::routes::RouteState>,
) -> anyhow::Result<(Arc<Router>, Option<tokio_rustls::TlsAcceptor>)> {
    let router = Arc::new(
        Router::from_config(cfg)
            .context("building backend pools")?
            .with_state(routes.clone()),
    );
    let needs_tls = cfg
        .listeners
        .iter()
        .any(|l| l.mode != ListenerMode::Plaintext);
    let tls = if needs_tls {
        Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            &cfg.tls,
        )?))
    } else {
        None
    };
    Ok((router, tls))
}

/// Log out pooled backend connections past their idle time, every second.
fn start_pool_janitor(
    pool: Arc<crate::multiplex::pool::BackendPool>,
    metrics: Arc<Metrics>,
    timeout: Duration,
) {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_secs(1));
        loop {
            t.tick().await;
            let old = pool.expire(std::time::Instant::now());
            if !old.is_empty() {
                metrics.pool.discarded("expired", old.len());
                metrics.pool.pooled.set(pool.len() as i64);
                for c in old {
                    tokio::spawn(crate::multiplex::pool::logout(c, timeout));
                }
            }
        }
    });
}

/// Run until a shutdown signal; returns when every session is gone.
/// `path` is the config file, re-read on SIGHUP and when it (or a
/// certificate file) changes.
pub async fn run(cfg: Config, path: std::path::PathBuf) -> anyhow::Result<()> {
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    let cfg = Arc::new(cfg);
    let routes = Arc::new(crate::ops::routes::RouteState::open(
        cfg.routing.state_file.as_deref(),
    )?);
    let ops = Arc::new(crate::ops::Ops::new(routes.clone()));
    let tokens = cfg.admin.load_tokens()?;
    let (router, tls) = build_parts(&cfg, &routes)?;
    let metrics = Arc::new(Metrics::new()?);
    metrics.set_max_connections(cfg.server.max_connections);
    metrics.attach_router(router.clone())?;
    let readiness = Arc::new(Readiness::new(router.clone()));
    let listeners = bind_all(&cfg).await?;
    let admin = match &cfg.admin.address {
        Some(a) => Some(crate::admin::bind(a).await?),
        None => None,
    };
    let secrets = cfg.admin.load_secrets()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (close_tx, close_rx) = watch::channel(false);
    let cache = cfg.cache.enabled.then(|| {
        let c = Arc::new(crate::cache::FetchCache::new(&cfg.cache));
        let c2 = c.clone();
        // moka evicts lazily: let it catch up regularly.
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            loop {
                t.tick().await;
                c2.run_pending_tasks();
            }
        });
        (c, Arc::new(crate::cache::flow::Templates::default()))
    });
    if let Some((c, _)) = &cache {
        metrics.attach_cache(c.clone(), cfg.cache.max_bytes.as_u64())?;
    }
    let pool = cfg
        .multiplex
        .pool_config()
        .map(|c| Arc::new(crate::multiplex::pool::BackendPool::new(c)));
    if let Some(p) = &pool {
        start_pool_janitor(p.clone(), metrics.clone(), cfg.timeouts.backend_response);
    }
    let watch = (!cfg.multiplex.idle_offload_after.is_zero()).then(|| {
        Arc::new(crate::multiplex::watch::Registry::new(
            crate::multiplex::watch::WatchConfig {
                poll_interval: cfg.multiplex.poll_interval,
                connect_timeout: cfg.timeouts.backend_connect,
                response_timeout: cfg.timeouts.backend_response,
                max_concurrent_resumes: cfg.multiplex.max_concurrent_resumes,
            },
            Some(metrics.clone()),
        ))
    });
    if let Some(w) = &watch {
        crate::multiplex::poll::start(
            w,
            &router,
            cfg.timeouts.backend_response,
            Some(metrics.clone()),
        );
    }
    let ctx = Arc::new(arc_swap::ArcSwap::from_pointee(Context {
        cache,
        config: cfg.clone(),
        router: router.clone(),
        auth: crate::auth::build(&cfg.auth, Some(metrics.clone()))
            .context("building the auth source")?,
        penalty: Arc::new(crate::auth::penalty::Penalty::new(&cfg.auth.penalty)),
        tls,
        metrics: metrics.clone(),
        close_now: close_rx,
        mux: crate::multiplex::Multiplex {
            pool: pool.clone(),
            watch: watch.clone(),
        },
        ops: ops.clone(),
    }));
    let mut health_stop = start_health(&router, &cfg, &metrics, &stop_rx);
    let reload_task = {
        let (ctx, readiness, stop_rx) = (ctx.clone(), readiness.clone(), stop_rx.clone());
        tokio::spawn(async move {
            crate::reload::watch(
                path,
                ctx,
                readiness,
                stop_rx,
                move |router, cfg, metrics, stop| {
                    let _ = health_stop.send(true);
                    health_stop = start_health(router, cfg, metrics, stop);
                },
            )
            .await
        })
    };
    // Shared by every listener; kept for the process's life (a reload
    // changes the per-address limits, not the global budget).
    let limits = Arc::new(Limits::new(cfg.server.max_connections));
    let mut accepts = Vec::new();
    for l in listeners {
        accepts.push(tokio::spawn(accept_loop(
            l,
            ctx.clone(),
            limits.clone(),
            stop_rx.clone(),
        )));
    }
    readiness.set_listeners_bound();
    // The admin server lives until run() returns: /readyz says "draining"
    // and /metrics stays readable while sessions drain.
    let (_admin_stop, admin_stop_rx) = watch::channel(false);
    let admin_task = admin.map(|l| {
        let instance = crate::multiplex::fanout::InstanceId::random()
            .unwrap_or_else(|| crate::multiplex::fanout::InstanceId::fixed("unknown"));
        let (push_secret, fanout) = match secrets {
            Some((secret, auth)) => (
                Some(secret),
                start_fanout(&cfg, auth, l.local_addr().ok(), &instance, &metrics),
            ),
            None => (None, None),
        };
        let state = Arc::new(AdminState {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            push_secret,
            wake: match &watch {
                Some(w) => w.clone() as Arc<dyn crate::multiplex::wake::WakeSink>,
                None => Arc::new(crate::multiplex::wake::NoWake),
            },
            api: tokens.enabled().then(|| {
                let api = Arc::new(crate::ops::api::Api {
                    tokens: tokens.clone(),
                    ctx: ctx.clone(),
                    ops: ops.clone(),
                    instance: std::env::var("HOSTNAME")
                        .ok()
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| instance.as_str().to_string()),
                });
                api.update_gauges();
                api
            }),
            instance,
            fanout,
        });
        tokio::spawn(crate::admin::serve(l, state, admin_stop_rx))
    });
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "imapmux started");
    let _reload_task = reload_task;

    shutdown_signal().await;
    readiness.set_draining();
    let drain = cfg.timeouts.drain;
    tracing::info!(
        drain_secs = drain.as_secs(),
        "shutting down: no new connections, draining sessions"
    );
    let _ = stop_tx.send(true);
    for a in accepts {
        let _ = a.await;
    }
    let active = || limits.open();
    let deadline = tokio::time::Instant::now() + drain;
    while active() > 0 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown_signal() => {
                tracing::warn!("second signal: closing sessions now");
                break;
            }
        }
    }
    if active() > 0 {
        tracing::info!(
            sessions = active(),
            "drain time over: sending BYE to remaining sessions"
        );
        let _ = close_tx.send(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if let Some(t) = admin_task {
        t.abort();
    }
    tracing::info!("imapmux stopped");
    Ok(())
}

/// Push fan-out to the other replicas, when `admin.push_peers` or
/// `admin.push_peers_dns` is set. `own`: the bound admin address.
fn start_fanout(
    cfg: &Config,
    auth: crate::multiplex::fanout::ForwardAuth,
    own: Option<std::net::SocketAddr>,
    instance: &crate::multiplex::fanout::InstanceId,
    metrics: &Arc<Metrics>,
) -> Option<Arc<crate::multiplex::fanout::Fanout>> {
    if !cfg.admin.fanout_enabled() {
        return None;
    }
    let fc = crate::multiplex::fanout::FanoutConfig {
        targets: cfg.admin.peer_targets(),
        refresh: cfg.admin.push_peers_refresh,
        auth,
        own: own.filter(|a| !a.ip().is_unspecified()),
        limits: Default::default(),
    };
    tracing::info!(
        peers = ?cfg.admin.push_peers,
        dns = ?cfg.admin.push_peers_dns,
        instance = instance.as_str(),
        "push fan-out on"
    );
    Some(crate::multiplex::fanout::start(
        fc,
        instance.clone(),
        metrics.clone(),
    ))
}

/// Health checks for every backend of `router`, until the returned sender
/// flips (a reload replaced the router) or the server stops.
fn start_health(
    router: &Router,
    cfg: &Config,
    metrics: &Arc<Metrics>,
    server_stop: &watch::Receiver<bool>,
) -> watch::Sender<bool> {
    let (tx, rx) = watch::channel(false);
    let services = router.backends().flat_map(|b| {
        crate::front::Protocol::ALL
            .into_iter()
            .filter(|p| crate::front::backend::endpoint(b, *p).is_some())
            .map(move |p| (b, p))
    });
    for (b, protocol) in services {
        let (b, hc, m, mut server_stop, mut rx) = (
            b.clone(),
            cfg.health.clone(),
            metrics.clone(),
            server_stop.clone(),
            rx.clone(),
        );
        tokio::spawn(async move {
            let (gen_tx, gen_rx) = watch::channel(false);
            let checks = crate::backend::health::run(b, protocol, hc, m, gen_rx);
            tokio::pin!(checks);
            tokio::select! {
                _ = &mut checks => {}
                _ = server_stop.changed() => { let _ = gen_tx.send(true); }
                _ = rx.changed() => { let _ = gen_tx.send(true); }
            }
        });
    }
    tx
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
