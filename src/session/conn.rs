//! The I/O driver of one client connection: TLS at the edge, the pre-auth
//! state machine fed from the socket, then the login (`login.rs`:
//! auth → route → backend login), then the relay. One log line when the
//! session ends.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::end::EndReason;
use super::login::{login, LoginOk};
use super::preauth::{CloseReason, Event, PreAuth, PreAuthConfig};
use super::stream::ClientStream;
use super::{ClientInfo, Credentials};
use crate::auth::penalty::Penalty;
use crate::auth::Authenticator;
use crate::backend::pool::{BackendPool, CredKey};
use crate::backend::{self, client_capabilities, LoggedIn};
use crate::config::{Config, ListenerMode};
use crate::listener::limits::Admission;
use crate::metrics::{LoginResult, Metrics, RejectReason};
use crate::relay::{relay, Counters, Finish, Hook, MetricsHook, RelayConfig, RelayOutcome};
use crate::route::{Backend, Router};

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
    /// Logged-in backend connections kept for reuse after logout.
    pub pool: Option<Arc<BackendPool>>,
    /// Watchers of parked IDLE clients' mailboxes (IDLE offload on).
    pub watch: Option<Arc<crate::backend::watch::Registry>>,
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
    let summary = run(&ctx, tcp, &client, mode, &counters, &mut admission).await;
    drop(bytes);
    ctx.metrics.session_ended(summary.end, started.elapsed());
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

/// The TLS handshake, bounded by `timeouts.tls_handshake` and by the
/// pre-auth `deadline` (which counts from accept, so under connection
/// pressure a slow handshake gets the shorter time too).
async fn handshake(
    ctx: &Context,
    tcp: TcpStream,
    mode: ListenerMode,
    deadline: Instant,
) -> Result<ClientStream, EndReason> {
    let acceptor = ctx.tls.as_ref().ok_or(EndReason::NoTlsConfig)?;
    let limit = ctx
        .config
        .timeouts
        .tls_handshake
        .min(deadline.saturating_duration_since(Instant::now()));
    match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Ok(ClientStream::Tls(Box::new(s))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            ctx.metrics.tls_handshake_failed(mode, false);
            Err(EndReason::TlsHandshakeFailed)
        }
        Err(_) => {
            ctx.metrics.tls_handshake_failed(mode, true);
            Err(EndReason::TlsHandshakeTimeout)
        }
    }
}

async fn run(
    ctx: &Context,
    tcp: TcpStream,
    client: &ClientInfo,
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
    let Some((stream, pipelined, logged_in)) = Box::pin(preauth(
        ctx,
        tcp,
        client,
        mode,
        counters,
        &mut summary,
        admission,
    ))
    .await
    else {
        return summary;
    };
    let cfg = &ctx.config;
    let mut client_side = (stream, pipelined);
    let mut li = logged_in;
    loop {
        let has = |c: &str| crate::imap::response::has_capability(&li.capabilities, c);
        let reusable = ctx.pool.is_some() && summary.reuse.is_some() && has("UNSELECT");
        let parkable = ctx.watch.is_some()
            && summary.retained.is_some()
            && !cfg.multiplex.idle_offload_after.is_zero();
        let relay_cfg = RelayConfig {
            max_line: cfg.server.max_line_length,
            idle_timeout: cfg.timeouts.idle,
            bye_grace: std::time::Duration::from_secs(5),
            prefetch_timeout: cfg.timeouts.backend_response,
            release_on_logout: reusable,
            park_after: parkable.then_some(cfg.multiplex.idle_offload_after),
        };
        // Features hook into the relay core: the FETCH cache, metrics.
        let mut hooks: Vec<Box<dyn Hook>> = Vec::with_capacity(2);
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
        // Kept only when the connection may be reused or parked (one string).
        let capabilities = (reusable || parkable).then(|| capabilities.join(" "));
        // Boxed: while the session is parked, the relay's state is freed.
        let out = Box::pin(relay(
            client_side,
            (backend_stream, backend_buf),
            relay_cfg,
            counters,
            hooks,
            ctx.close_now.clone(),
        ))
        .await;
        drop(backend_conn);
        let Some((client_next, li_next)) = Box::pin(after_relay(
            ctx,
            client,
            counters,
            &mut summary,
            out,
            (capabilities, logged_in_at),
        ))
        .await
        else {
            break;
        };
        client_side = client_next;
        li = li_next;
    }
    summary
}

/// After a relay: a session that parked and resumed goes on (its client
/// side and new backend connection); any other end stops it, with
/// `summary.end` set.
async fn after_relay(
    ctx: &Context,
    client: &ClientInfo,
    counters: &Counters,
    summary: &mut Summary,
    out: RelayOutcome<ClientStream, backend::BoxStream>,
    (capabilities, logged_in_at): (Option<String>, Instant),
) -> Option<((ClientStream, BytesMut), LoggedIn)> {
    let caps = || {
        capabilities
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .map(String::from)
            .collect::<Vec<_>>()
    };
    match (out.finish, out.backend, out.client) {
        (Finish::Park(parked), Some((bstream, bbuf)), Some((cstream, cbuf)))
            if summary.retained.is_some() =>
        {
            let (backend, creds, user) = summary.retained.clone()?;
            let old = LoggedIn {
                stream: bstream,
                buf: bbuf,
                capabilities: caps(),
                logged_in_at,
            };
            let p = super::park::Parking {
                ctx,
                client_info: client,
                backend,
                creds,
                reuse: summary.reuse.clone(),
                user,
                counters,
            };
            match Box::pin(p.park((cstream, cbuf), old, parked)).await {
                super::park::Outcome::Resumed {
                    client,
                    pipelined,
                    backend,
                } => Some(((client, pipelined), backend)),
                super::park::Outcome::Ended(end) => {
                    summary.end = end;
                    None
                }
            }
        }
        (finish, backend, _) => {
            // The relay's end stops the session here (and only here).
            summary.end = match &finish {
                Finish::End(r) => *r,
                Finish::Release => EndReason::Logout,
                // Parking without what parking needs (never: the core
                // parks only when the session may be parked).
                Finish::Park(_) => EndReason::BackendError,
            };
            match (finish, backend) {
                (Finish::Release, Some((stream, buf))) => {
                    let li = LoggedIn {
                        stream,
                        buf,
                        capabilities: caps(),
                        logged_in_at,
                    };
                    release(ctx, summary, li).await;
                }
                (Finish::End(EndReason::Logout), _) if ctx.pool.is_some() => {
                    ctx.metrics.pool.released(false)
                }
                _ => {}
            }
            None
        }
    }
}

/// A pooled connection for this login (backend login name and credential
/// key), if one is kept and answers its NOOP probe.
pub(super) async fn take_pooled(
    ctx: &Context,
    backend: &str,
    reuse: Option<&(String, CredKey)>,
) -> Option<LoggedIn> {
    let (pool, (user, key)) = (ctx.pool.as_ref()?, reuse?);
    let m = &ctx.metrics.pool;
    let mut li = pool.take(backend, user, key, Instant::now())?;
    m.pooled.set(pool.len() as i64);
    if backend::pool::probe(&mut li, ctx.config.timeouts.backend_response).await {
        m.reuses.inc();
        return Some(li);
    }
    m.discarded("probe_failed", 1);
    None
}

/// A logged-out client's backend connection: clean it and pool it.
async fn release(ctx: &Context, summary: &mut Summary, mut li: LoggedIn) {
    let (Some(pool), Some((user, key)), Some(backend)) =
        (&ctx.pool, summary.reuse.take(), summary.backend.as_deref())
    else {
        return;
    };
    let m = &ctx.metrics.pool;
    let t = ctx.config.timeouts.backend_response;
    if backend::pool::clean(&mut li, t).await.is_ok() {
        m.released(true);
        let evicted = pool.put(backend, &user, key, li, Instant::now());
        m.discarded("evicted", evicted.len());
        m.pooled.set(pool.len() as i64);
        for old in evicted {
            tokio::spawn(backend::pool::logout(old, t));
        }
    } else {
        m.released(false);
    }
}

/// The not-authenticated phase: TLS, the pre-auth state machine, login.
/// Boxed by the caller, so its state does not stay in the session's
/// long-lived future (memory per idle client).
async fn preauth(
    ctx: &Context,
    tcp: TcpStream,
    client: &ClientInfo,
    mode: ListenerMode,
    counters: &Counters,
    summary: &mut Summary,
    admission: &mut Admission,
) -> Option<(ClientStream, BytesMut, LoggedIn)> {
    match preauth_loop(ctx, tcp, client, mode, counters, summary, admission).await {
        Ok(done) => Some(done),
        Err(end) => {
            summary.end = end;
            None
        }
    }
}

/// What the pre-auth state machine asks of the I/O next.
enum Step {
    /// Nothing: wait for input.
    Wait,
    StartTls,
    Login(String, Credentials),
    Close(CloseReason),
}

/// [`preauth`]'s steps: the state machine decides, this loop does the
/// I/O. An `Err` is how the session ended.
async fn preauth_loop(
    ctx: &Context,
    tcp: TcpStream,
    client: &ClientInfo,
    mode: ListenerMode,
    counters: &Counters,
    summary: &mut Summary,
    admission: &mut Admission,
) -> Result<(ClientStream, BytesMut, LoggedIn), EndReason> {
    // One pre-auth deadline from accept: TLS handshake, commands, login.
    let deadline = Instant::now() + admission.preauth_timeout;
    let mut stream = match mode {
        ListenerMode::Implicit => handshake(ctx, tcp, mode, deadline).await?,
        _ => ClientStream::Plain(tcp),
    };
    let cfg = &ctx.config;
    let mut pre = PreAuth::new(PreAuthConfig {
        tls_active: stream.is_tls(),
        starttls_available: mode == ListenerMode::Starttls && ctx.tls.is_some(),
        allow_plaintext_auth: admission.allow_plaintext_auth,
        sasl_oauth: cfg.server.sasl_oauth,
        greeting: cfg.server.greeting.clone(),
        max_line: cfg.server.max_line_length,
        max_literal: 8192,
        max_auth_failures: cfg.server.max_auth_failures,
        max_bad_commands: 10,
        deadline,
    });
    let mut close_now = ctx.close_now.clone();
    let mut rbuf = vec![0u8; 4096];
    let mut out = BytesMut::new();
    let mut attempts = 0u32;
    let logged_in: LoggedIn = loop {
        let step = next_step(&mut pre, &mut out);
        if !out.is_empty() {
            send(&mut stream, &mut out, counters).await?;
        }
        match step {
            Step::Close(reason) => {
                let _ = stream.shutdown().await;
                return Err(reason.into());
            }
            Step::StartTls => {
                let ClientStream::Plain(tcp) = stream else {
                    return Err(EndReason::ProtocolError);
                };
                stream = handshake(ctx, tcp, mode, deadline).await?;
                pre.tls_established();
                continue;
            }
            Step::Login(tag, creds) => {
                attempts += 1;
                let tls = stream.is_tls();
                let req = (tag, creds);
                match on_login(
                    ctx,
                    client,
                    summary,
                    admission,
                    &mut pre,
                    req,
                    (attempts, tls),
                )
                .await
                {
                    Some(li) => break li,
                    None => continue,
                }
            }
            Step::Wait => {}
        }
        wait(&mut stream, &mut pre, &mut rbuf, &mut close_now, counters).await?;
    };
    // Flush the tagged OK with the capabilities.
    while let Some(ev) = pre.poll() {
        if let Event::Send(b) = ev {
            out.extend_from_slice(&b);
        }
    }
    send(&mut stream, &mut out, counters).await?;
    let pipelined = pre.take_pipelined();
    // Free what the pre-auth phase held before the long-lived relay.
    drop((rbuf, out, pre));
    Ok((stream, pipelined, logged_in))
}

/// Collect what the state machine has to send into `out`, up to the first
/// event that needs I/O of its own.
fn next_step(pre: &mut PreAuth, out: &mut BytesMut) -> Step {
    while let Some(ev) = pre.poll() {
        match ev {
            Event::Send(b) => out.extend_from_slice(&b),
            Event::StartTls => return Step::StartTls,
            Event::Login { tag, credentials } => return Step::Login(tag, credentials),
            Event::Close(r) => return Step::Close(r),
        }
    }
    Step::Wait
}

/// Write and flush `out` to the client (counted), then clear it.
async fn send(
    stream: &mut ClientStream,
    out: &mut BytesMut,
    counters: &Counters,
) -> Result<(), EndReason> {
    if stream.write_all(out).await.is_err() || stream.flush().await.is_err() {
        return Err(EndReason::ClientError);
    }
    counters
        .backend_to_client
        .fetch_add(out.len() as u64, std::sync::atomic::Ordering::Relaxed);
    out.clear();
    Ok(())
}

/// Wait for input (fed to `pre`), the pre-auth deadline, or shutdown.
async fn wait(
    stream: &mut ClientStream,
    pre: &mut PreAuth,
    rbuf: &mut [u8],
    close_now: &mut watch::Receiver<bool>,
    counters: &Counters,
) -> Result<(), EndReason> {
    tokio::select! {
        r = stream.read(rbuf) => match r {
            Ok(0) => return Err(EndReason::ClientClosed),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(EndReason::ClientClosed),
            Ok(n) => {
                counters.client_to_backend.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                pre.input(&rbuf[..n]);
                if n > 1024 {
                    // Legitimate pre-auth input is a few short lines:
                    // a client streaming long ones gets one read per
                    // turn, so it cannot hold a worker from others.
                    tokio::task::yield_now().await;
                }
            }
            Err(_) => return Err(EndReason::ClientError),
        },
        _ = tokio::time::sleep_until(pre.deadline().into()) => pre.timeout(Instant::now()),
        _ = close_now.changed() => {
            let _ = stream.write_all(b"* BYE [UNAVAILABLE] Server shutting down.\r\n").await;
            let _ = stream.shutdown().await;
            return Err(EndReason::Shutdown);
        }
    }
    Ok(())
}

/// The client's login (`tag`, credentials), carried out: the logged-in
/// backend connection, or `None` when the client stays unauthenticated
/// (the state machine has its tagged answer).
async fn on_login(
    ctx: &Context,
    client: &ClientInfo,
    summary: &mut Summary,
    admission: &mut Admission,
    pre: &mut PreAuth,
    (tag, creds): (String, Credentials),
    (attempt, tls): (u32, bool),
) -> Option<LoggedIn> {
    summary.user = Some(creds.user.clone());
    let t0 = Instant::now();
    let result = login(ctx, &creds, client, attempt, tls).await;
    // Sessions are counted per mailbox owner, like everything per user.
    let over = match &result {
        Ok(ok) => !count_session(ctx, client, &ok.owner, admission),
        Err(_) => false,
    };
    if over {
        // Logged in, but over server.max_sessions_per_user_ip: log
        // the backend connection out; the client stays
        // unauthenticated. Not counted in imapmux_logins_total.
        if let Ok(ok) = result {
            summary.backend = Some(ok.backend.name.clone());
            tokio::spawn(backend::pool::logout(
                ok.conn,
                ctx.config.timeouts.backend_response,
            ));
        }
        pre.login_failed(
            &tag,
            "NO",
            Some("LIMIT"),
            "Too many simultaneous connections",
        );
        return None;
    }
    let outcome = result
        .as_ref()
        .map_or_else(|f| f.result, |_| LoginResult::Ok);
    ctx.metrics.login(outcome, t0.elapsed().as_secs_f64());
    match result {
        Ok(ok) => {
            let LoginOk {
                conn: li,
                backend,
                reuse,
                backend_creds,
                owner,
            } = ok;
            summary.backend = Some(backend.name.clone());
            summary.reuse = reuse;
            // From here on the session is the mailbox owner's.
            summary.user = Some(owner.clone());
            if ctx.watch.is_some() {
                summary.retained = Some((backend.clone(), backend_creds, owner.clone()));
            }
            pre.login_ok(&tag, &client_capabilities(&li.capabilities));
            tracing::info!(session = %client.session_id, user = owner.as_str(), auth_user = creds.user.as_str(), backend = %backend.name, method = creds.mechanism.as_str(), "login");
            Some(li)
        }
        Err(fail) => {
            summary.backend = fail.backend.clone();
            tracing::warn!(
                session = %client.session_id,
                rip = %client.peer.ip(),
                // Quoted and escaped (Debug), as in the session-end
                // line: a CR/LF in a user name cannot forge a line.
                user = creds.user.as_str(),
                method = creds.mechanism.as_str(),
                reason = fail.code.as_deref().unwrap_or(""),
                "login failed"
            );
            pre.login_failed(&tag, fail.status, fail.code.as_deref(), &fail.text);
            None
        }
    }
}

/// `server.max_sessions_per_user_ip`: count the session of `user` (a
/// successful login) from the client's address until the session ends.
/// `false` (counted as a `per_user_ip` rejection) when that many are open.
fn count_session(
    ctx: &Context,
    client: &ClientInfo,
    user: &str,
    admission: &mut Admission,
) -> bool {
    let max = ctx.config.server.max_sessions_per_user_ip;
    let ip = client.peer.ip();
    if admission.logged_in(user, ip, max).is_ok() {
        return true;
    }
    ctx.metrics.connection_rejected(RejectReason::PerUserIp);
    // Not "login failed": fail2ban must not ban a user's own devices.
    tracing::warn!(session = %client.session_id, rip = %ip, user = user, limit = max, "login refused: too many sessions of this user from this address");
    false
}
