//! The not-authenticated phase of a session, the I/O around the pre-auth
//! state machine ([`crate::session::preauth`]): the TLS handshake (implicit
//! or STARTTLS), commands read and answers written under one deadline,
//! logins carried out (`login.rs`) and counted per user and address.

use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{Context, Summary, LOG_TARGET};
use crate::backend::{client_capabilities, LoggedIn};
use crate::config::ListenerMode;
use crate::lifecycle::EndReason;
use crate::listener::limits::Admission;
use crate::metrics::{LoginResult, RejectReason};
use crate::relay::Counters;
use crate::session::login::{login, LoginOk};
use crate::session::preauth::{CloseReason, Event, Forwarded, PreAuth, PreAuthConfig};
use crate::session::{ClientInfo, Credentials};
use crate::stream::ClientStream;

/// The TLS handshake, bounded by `timeouts.tls_handshake` and by the
/// pre-auth `deadline` (which counts from accept, so under connection
/// pressure a slow handshake gets the shorter time too).
pub(crate) async fn handshake(
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
            tracing::debug!(target: LOG_TARGET, error = %e, "TLS handshake failed");
            ctx.metrics.tls_handshake_failed(mode, false);
            Err(EndReason::TlsHandshakeFailed)
        }
        Err(_) => {
            ctx.metrics.tls_handshake_failed(mode, true);
            Err(EndReason::TlsHandshakeTimeout)
        }
    }
}

/// The not-authenticated phase: TLS, the pre-auth state machine, login.
/// Boxed by the caller, so its state does not stay in the session's
/// long-lived future (memory per idle client).
pub(super) async fn phase(
    ctx: &Context,
    tcp: TcpStream,
    (client, entry): (&ClientInfo, &crate::ops::registry::SessionEntry),
    mode: ListenerMode,
    counters: &Counters,
    summary: &mut Summary,
    admission: &mut Admission,
) -> Option<(ClientStream, BytesMut, LoggedIn, Option<ClientInfo>)> {
    match preauth_loop(ctx, tcp, client, mode, counters, summary, admission).await {
        Ok(done) => {
            if let (Some(user), Some(backend)) = (&summary.user, &summary.backend) {
                entry.set_login(user, backend);
            }
            entry.set_tls(done.0.tls_version());
            Some(done)
        }
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

/// [`phase`]'s steps: the state machine decides, this loop does the
/// I/O. An `Err` is how the session ended.
async fn preauth_loop(
    ctx: &Context,
    tcp: TcpStream,
    client: &ClientInfo,
    mode: ListenerMode,
    counters: &Counters,
    summary: &mut Summary,
    admission: &mut Admission,
) -> Result<(ClientStream, BytesMut, LoggedIn, Option<ClientInfo>), EndReason> {
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
        trusted: cfg
            .server
            .trusted_networks
            .iter()
            .any(|n| n.contains(&client.peer.ip())),
    });
    let mut close_now = ctx.close_now.clone();
    let mut rbuf = vec![0u8; 4096];
    let mut out = BytesMut::new();
    let mut attempts = 0u32;
    // Who the session is from: the peer, or (when set) the client behind
    // a trusted webmail or proxy as its ID said (logs, limits, forwarding).
    let mut who: Option<ClientInfo> = None;
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
                if let Some(f) = pre.forwarded() {
                    who = Some(forwarded_client(client, f));
                }
                match on_login(
                    ctx,
                    who.as_ref().unwrap_or(client),
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
    Ok((stream, pipelined, logged_in, who))
}

/// The client behind a trusted webmail or proxy, as its ID said: its
/// address (the port, when not given, is the connection's), and one hop
/// fewer than the proxy in front had left.
fn forwarded_client(client: &ClientInfo, f: &Forwarded) -> ClientInfo {
    let mut who = client.clone();
    if let Some(ip) = f.ip {
        who.peer = std::net::SocketAddr::new(ip, f.port.unwrap_or(client.peer.port()));
    }
    if let Some(ttl) = f.ttl {
        who.proxy_ttl = ttl;
    }
    who
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
    let result = login(
        ctx,
        &creds,
        client,
        attempt,
        tls,
        crate::front::Protocol::Imap,
    )
    .await;
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
            tokio::spawn(crate::multiplex::pool::logout(
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
    ctx.metrics
        .protocol
        .login(crate::front::Protocol::Imap, outcome);
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
            if ctx.mux.watch.is_some() {
                summary.retained = Some((backend.clone(), backend_creds, owner.clone()));
            }
            let mut caps = client_capabilities(&li.capabilities);
            if ctx.config.server.compress {
                // imapmux's own (RFC 4978), whatever the backend offers.
                caps.push_str(" COMPRESS=DEFLATE");
            }
            pre.login_ok(&tag, &caps);
            tracing::info!(target: LOG_TARGET, session = %client.session_id, user = owner.as_str(), auth_user = creds.user.as_str(), backend = %backend.name, method = creds.mechanism.as_str(), "login");
            Some(li)
        }
        Err(fail) => {
            summary.backend = fail.backend.clone();
            tracing::warn!(
                target: LOG_TARGET,
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
pub(crate) fn count_session(
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
    tracing::warn!(target: LOG_TARGET, session = %client.session_id, rip = %ip, user = user, limit = max, "login refused: too many sessions of this user from this address");
    false
}
