//! The I/O driver of one client connection: the not-authenticated phase
//! (`preauth.rs`: TLS at the edge, the pre-auth state machine fed from the
//! socket, the login), then the relay, parking and resuming, and the
//! backend connection's release to the reuse pool. One log line when the
//! session ends.

mod preauth;
pub(crate) use preauth::{count_session, handshake};
#[cfg(test)]
mod sizes;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{ClientInfo, Credentials};
use crate::auth::penalty::Penalty;
use crate::auth::Authenticator;
use crate::backend::{self, LoggedIn};
use crate::config::{Config, ListenerMode};
use crate::imap::enabled::Enabled;
use crate::lifecycle::EndReason;
use crate::listener::limits::Admission;
use crate::metrics::Metrics;
use crate::multiplex::park::Outcome;
use crate::multiplex::pool::CredKey;
use crate::multiplex::Multiplex;
use crate::relay::{relay, Counters, Finish, Hook, MetricsHook, RelayConfig, RelayOutcome};
use crate::route::{Backend, Router};
use crate::stream::ClientStream;

/// The log target of the session's lines, also those logged from
/// `preauth.rs` and `session/login.rs`: `imapmux::session::conn`, which the
/// fail2ban filter (config/fail2ban) and log filters match.
pub(crate) const LOG_TARGET: &str = module_path!();

/// Everything a connection needs, shared by all connections.
pub struct Context {
    pub config: Arc<Config>,
    pub router: Arc<Router>,
    pub auth: Arc<dyn Authenticator>,
    /// Failed-login counters (kept across reloads).
    pub penalty: Arc<Penalty>,
    pub tls: Option<TlsAcceptor>,
    pub metrics: Arc<Metrics>,
    /// The FETCH cache and its learned response orders, when enabled.
    pub cache: Option<(
        Arc<crate::cache::FetchCache>,
        Arc<crate::cache::flow::Templates>,
    )>,
    /// Flips to true when sessions must end (end of the drain time).
    pub close_now: watch::Receiver<bool>,
    /// The reuse pool and the watchers of parked sessions.
    pub mux: Multiplex,
    /// Live sessions and the operator's routing changes (kept across
    /// reloads).
    pub ops: Arc<crate::ops::Ops>,
}

/// How a session ended, for the log line.
pub(super) struct Summary {
    user: Option<String>,
    backend: Option<String>,
    end: EndReason,
    /// Backend login name and credential key, for the reuse pool.
    reuse: Option<(String, CredKey)>,
    /// The backend and the credentials that logged in to it, kept while
    /// IDLE offload may need to log in again.
    retained: Option<(Arc<Backend>, Credentials, String)>,
}

/// Serve one accepted client connection to its end. `admission` (the
/// listener's decisions and the connection's slots in the per-address
/// limits) lives as long as the session.
pub async fn serve(
    ctx: Arc<Context>,
    tcp: TcpStream,
    client: ClientInfo,
    mode: ListenerMode,
    mut admission: Admission,
) {
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let bytes = ctx.metrics.session_bytes(counters.clone());
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let registered =
        ctx.ops
            .registry
            .register(&client.session_id, client.peer, counters.clone(), since);
    let summary = run(
        &ctx,
        tcp,
        (&client, registered.entry()),
        mode,
        &counters,
        &mut admission,
    )
    .await;
    drop(registered);
    drop(bytes);
    ctx.metrics.session_ended(summary.end, started.elapsed());
    ctx.metrics
        .protocol
        .session_bytes(crate::front::Protocol::Imap, &counters);
    tracing::info!(
        session = %client.session_id,
        client = %client.peer,
        user = summary.user.as_deref().unwrap_or("-"),
        backend = summary.backend.as_deref().unwrap_or("-"),
        bytes_in = counters.client_to_backend.load(std::sync::atomic::Ordering::Relaxed),
        bytes_out = counters.backend_to_client.load(std::sync::atomic::Ordering::Relaxed),
        duration_ms = started.elapsed().as_millis() as u64,
        end = summary.end.as_str(),
        "session ended"
    );
}

async fn run(
    ctx: &Context,
    tcp: TcpStream,
    (client, entry): (&ClientInfo, &Arc<crate::ops::registry::SessionEntry>),
    mode: ListenerMode,
    counters: &Counters,
    admission: &mut Admission,
) -> Summary {
    let mut summary = Summary {
        user: None,
        backend: None,
        end: EndReason::ClientClosed,
        reuse: None,
        retained: None,
    };
    let Some((stream, pipelined, logged_in, who)) = Box::pin(preauth::phase(
        ctx,
        tcp,
        (client, entry),
        mode,
        counters,
        &mut summary,
        admission,
    ))
    .await
    else {
        return summary;
    };
    // From here on the session is who the login was for (the client
    // behind a trusted webmail or proxy, when its ID said so).
    let client = who.as_ref().unwrap_or(client);
    // Counted open (by protocol) while logged in, parked time included.
    let _open = ctx
        .metrics
        .protocol
        .session_open(crate::front::Protocol::Imap);
    let mut client_side = (stream, pipelined);
    let mut li = logged_in;
    // After a parked session re-attached: the mailbox it has selected and
    // what it enabled.
    let mut selected = None;
    let mut enabled = Enabled::default();
    loop {
        entry.set_phase(crate::lifecycle::Phase::Attached);
        let (mut relay_cfg, reusable, parkable) = relay_config(ctx, &summary, &li);
        relay_cfg.selected = selected.take();
        relay_cfg.enabled = enabled;
        relay_cfg.compressed = client_side.0.is_compressed();
        let mut hooks = hooks(ctx, &summary);
        hooks.push(Box::new(crate::ops::hook::MailboxHook::new(entry.clone())));
        // Counted open for as long as the relay runs.
        let backend_conn = summary
            .backend
            .as_deref()
            .map(|b| ctx.metrics.backend_connection(b));
        // Only the stream and its buffered bytes live on in the relay.
        let LoggedIn {
            stream: backend_stream,
            buf: backend_buf,
            capabilities,
            logged_in_at,
        } = li;
        // Kept only when the connection may be reused or parked (one
        // string). The list is freed now: a shadowed binding would live on
        // to the end of the loop body, through the relay and the parking.
        let joined = (reusable || parkable).then(|| capabilities.join(" "));
        drop(capabilities);
        let capabilities = joined;
        // Boxed: while the session is parked, the relay's state is freed.
        let out = Box::pin(relay(
            client_side,
            (backend_stream, backend_buf),
            relay_cfg,
            counters,
            hooks,
            ctx.close_now.clone(),
            Some(entry.stop_signal()),
        ))
        .await;
        drop(backend_conn);
        // What follows runs in its own box: while the session is parked,
        // its task holds the parked state and nothing of the relay.
        let next = match after_relay(
            ctx,
            (client, &**entry),
            counters,
            &mut summary,
            out,
            (capabilities, logged_in_at),
        ) {
            Next::Park(parking) => {
                entry.set_phase(crate::lifecycle::Phase::Parked);
                parking.await
            }
            Next::Release(release) => {
                release.await;
                break;
            }
            Next::Stop => break,
        };
        match next {
            Outcome::Resumed {
                client,
                pipelined,
                backend,
                selected: now,
                enabled: on,
                on: reattached_to,
            } => {
                if summary.backend.as_deref() != Some(reattached_to.name.as_str()) {
                    summary.backend = Some(reattached_to.name.clone());
                    if let Some(r) = summary.retained.as_mut() {
                        r.0 = reattached_to.clone();
                    }
                }
                if let Some(user) = &summary.user {
                    entry.set_login(user, &reattached_to.name);
                }
                client_side = (client, pipelined);
                li = backend;
                selected = Some(*now);
                enabled = on;
            }
            Outcome::Ended(end) => {
                summary.end = end;
                break;
            }
        }
    }
    summary
}

/// The relay's settings for the session as it stands, and whether its
/// backend connection may be reused (released on logout) and parked.
fn relay_config(ctx: &Context, summary: &Summary, li: &LoggedIn) -> (RelayConfig, bool, bool) {
    let cfg = &ctx.config;
    let has = |c: &str| crate::imap::response::has_capability(&li.capabilities, c);
    let reusable = ctx.mux.pool.is_some() && summary.reuse.is_some() && has("UNSELECT");
    let parkable = ctx.mux.watch.is_some()
        && summary.retained.is_some()
        && !cfg.multiplex.idle_offload_after.is_zero();
    let relay_cfg = RelayConfig {
        max_line: cfg.server.max_line_length,
        idle_timeout: cfg.timeouts.idle,
        bye_grace: std::time::Duration::from_secs(5),
        prefetch_timeout: cfg.timeouts.backend_response,
        release_on_logout: reusable,
        park_after: parkable.then_some(cfg.multiplex.idle_offload_after),
        track_uids: ctx.cache.is_some(),
        selected: None,
        enabled: Enabled::default(),
        compress: cfg.server.compress.then_some(cfg.server.compress_level),
        compressed: false,
    };
    (relay_cfg, reusable, parkable)
}

/// Features hook into the relay core: the FETCH cache, metrics.
fn hooks(ctx: &Context, summary: &Summary) -> Vec<Box<dyn Hook>> {
    let mut hooks: Vec<Box<dyn Hook>> = Vec::with_capacity(3);
    if let (Some((cache, templates)), Some(backend), Some(user)) =
        (&ctx.cache, &summary.backend, &summary.user)
    {
        hooks.push(Box::new(crate::cache::flow::Flow::new(
            cache.clone(),
            templates.clone(),
            backend,
            user,
        )));
    }
    hooks.push(Box::new(MetricsHook::new(ctx.metrics.clone())));
    hooks
}

/// What follows a relay, each in its own box (see [`after_relay`]).
enum Next<'a> {
    /// The session is parked until it resumes or ends.
    Park(Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>),
    /// The backend connection is cleaned and pooled; the session is over.
    Release(Pin<Box<dyn Future<Output = ()> + Send + 'a>>),
    /// The session is over (`summary.end` set).
    Stop,
}

/// After a relay: a session that parks goes on in [`Next::Park`] (its
/// client side and, once it resumes, a new backend connection); any other
/// end stops it, with `summary.end` set. Synchronous, so that what the
/// session keeps while parked is the park future alone.
fn after_relay<'a>(
    ctx: &'a Context,
    (client, entry): (&'a ClientInfo, &'a crate::ops::registry::SessionEntry),
    counters: &'a Counters,
    summary: &mut Summary,
    out: RelayOutcome<ClientStream, backend::BoxStream>,
    (capabilities, logged_in_at): (Option<String>, Instant),
) -> Next<'a> {
    // Consumed where used: nothing of the relay stays allocated while the
    // session is parked.
    let caps = |capabilities: Option<String>| {
        capabilities
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .map(String::from)
            .collect::<Vec<_>>()
    };
    match (out.finish, out.backend, out.client) {
        (Finish::Park(parked), Some((bstream, bbuf)), Some((cstream, cbuf))) => {
            let Some((backend, creds, user)) = summary.retained.clone() else {
                // Parking without what parking needs (never: the core
                // parks only when the session may be parked).
                summary.end = EndReason::BackendError;
                return Next::Stop;
            };
            let old = LoggedIn {
                stream: bstream,
                buf: bbuf,
                capabilities: caps(capabilities),
                logged_in_at,
            };
            let p = crate::multiplex::park::Parking {
                mux: &ctx.mux,
                config: &ctx.config,
                metrics: &ctx.metrics,
                close_now: ctx.close_now.clone(),
                client_info: client,
                backend,
                creds,
                reuse: summary.reuse.clone(),
                user,
                counters,
                router: &ctx.router,
                stop: Some(entry.stop_signal()),
            };
            Next::Park(Box::pin(p.park((cstream, cbuf), old, parked)))
        }
        (finish, backend, _) => {
            // The relay's end stops the session here (and only here).
            summary.end = match &finish {
                Finish::End(r) => *r,
                Finish::Release => EndReason::Logout,
                Finish::Park(_) => EndReason::BackendError,
            };
            match (finish, backend) {
                (Finish::Release, Some((stream, buf))) => {
                    let li = LoggedIn {
                        stream,
                        buf,
                        capabilities: caps(capabilities),
                        logged_in_at,
                    };
                    match (summary.reuse.take(), summary.backend.clone()) {
                        (Some(reuse), Some(backend)) => {
                            let t = ctx.config.timeouts.backend_response;
                            Next::Release(Box::pin(ctx.mux.release(
                                &ctx.metrics,
                                t,
                                backend,
                                reuse,
                                li,
                            )))
                        }
                        _ => Next::Stop,
                    }
                }
                (Finish::End(EndReason::Logout), _) if ctx.mux.pool.is_some() => {
                    ctx.metrics.pool.released(false);
                    Next::Stop
                }
                _ => Next::Stop,
            }
        }
    }
}
