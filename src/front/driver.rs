//! The I/O driver of a POP3 or ManageSieve client connection: TLS at the
//! edge (implicit, or when the state machine asks for it), the pre-auth
//! state machine fed from the socket under one deadline, the login through
//! the same penalty gate, auth source, routing and backend layers as IMAP
//! ([`crate::session`]), then the byte relay ([`super::relay`]). One log
//! line when the session ends.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{FrontEvent, PreAuthMachine, Protocol, Refusal};
use crate::backend::LoggedIn;
use crate::config::ListenerMode;
use crate::lifecycle::EndReason;
use crate::listener::limits::Admission;
use crate::relay::Counters;
use crate::session::conn::{count_session, handshake, Context, LOG_TARGET};
use crate::session::{ClientInfo, Credentials};
use crate::stream::ClientStream;

/// What the pre-auth state machine of a connection starts from.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub tls_active: bool,
    pub starttls_available: bool,
    pub allow_plaintext_auth: bool,
    pub deadline: Instant,
}

/// Serve one client connection of `protocol`; `machine` builds its
/// pre-auth state machine.
pub async fn serve<M: PreAuthMachine>(
    ctx: Arc<Context>,
    tcp: TcpStream,
    client: ClientInfo,
    mode: ListenerMode,
    mut admission: Admission,
    protocol: Protocol,
    machine: impl FnOnce(&Context, Start) -> M,
) {
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let bytes = ctx.metrics.session_bytes(counters.clone());
    let mut s = Session {
        ctx: &ctx,
        client: &client,
        protocol,
        counters: &counters,
        user: None,
        backend: None,
    };
    let end = s.run(tcp, mode, &mut admission, machine).await;
    let (user, backend) = (s.user.take(), s.backend.take());
    drop(bytes);
    ctx.metrics.session_ended(end, started.elapsed());
    ctx.metrics.protocol.session_bytes(protocol, &counters);
    tracing::info!(
        target: LOG_TARGET,
        session = %client.session_id,
        protocol = protocol.as_str(),
        client = %client.peer,
        user = user.as_deref().unwrap_or("-"),
        backend = backend.as_deref().unwrap_or("-"),
        bytes_in = counters.client_to_backend.load(std::sync::atomic::Ordering::Relaxed),
        bytes_out = counters.backend_to_client.load(std::sync::atomic::Ordering::Relaxed),
        duration_ms = started.elapsed().as_millis() as u64,
        end = end.as_str(),
        "session ended"
    );
}

struct Session<'a> {
    ctx: &'a Context,
    client: &'a ClientInfo,
    protocol: Protocol,
    counters: &'a Counters,
    user: Option<String>,
    backend: Option<String>,
}

impl Session<'_> {
    async fn run<M: PreAuthMachine>(
        &mut self,
        tcp: TcpStream,
        mode: ListenerMode,
        admission: &mut Admission,
        machine: impl FnOnce(&Context, Start) -> M,
    ) -> EndReason {
        let (mut stream, pipelined, li) =
            match Box::pin(self.preauth(tcp, mode, admission, machine)).await {
                Ok(done) => done,
                Err(end) => return end,
            };
        let _open = self.ctx.metrics.protocol.session_open(self.protocol);
        let _conn = self
            .backend
            .as_deref()
            .map(|b| self.ctx.metrics.backend_connection(b));
        let LoggedIn {
            stream: mut backend,
            buf,
            ..
        } = li;
        super::relay::relay(
            &mut stream,
            &pipelined,
            &mut backend,
            &buf,
            self.ctx.config.timeouts.idle,
            self.ctx.close_now.clone(),
            self.counters,
        )
        .await
    }

    /// TLS, the pre-auth state machine, the login.
    async fn preauth<M: PreAuthMachine>(
        &mut self,
        tcp: TcpStream,
        mode: ListenerMode,
        admission: &mut Admission,
        machine: impl FnOnce(&Context, Start) -> M,
    ) -> Result<(ClientStream, BytesMut, LoggedIn), EndReason> {
        let ctx = self.ctx;
        let deadline = Instant::now() + admission.preauth_timeout;
        let mut stream = match mode {
            ListenerMode::Implicit => handshake(ctx, tcp, mode, deadline).await?,
            _ => ClientStream::Plain(tcp),
        };
        let mut m = machine(
            ctx,
            Start {
                tls_active: stream.is_tls(),
                starttls_available: mode == ListenerMode::Starttls && ctx.tls.is_some(),
                allow_plaintext_auth: admission.allow_plaintext_auth,
                deadline,
            },
        );
        let mut close_now = ctx.close_now.clone();
        let mut rbuf = vec![0u8; 4096];
        let mut out = BytesMut::new();
        let mut attempts = 0u32;
        loop {
            let mut step = None;
            while let Some(ev) = m.poll() {
                match ev {
                    FrontEvent::Send(b) => out.extend_from_slice(&b),
                    other => {
                        step = Some(other);
                        break;
                    }
                }
            }
            if !out.is_empty() {
                self.send(&mut stream, &mut out).await?;
            }
            match step {
                Some(FrontEvent::Close(reason)) => {
                    let _ = stream.shutdown().await;
                    return Err(reason.into());
                }
                Some(FrontEvent::StartTls) => {
                    let ClientStream::Plain(tcp) = stream else {
                        return Err(EndReason::ProtocolError);
                    };
                    stream = handshake(ctx, tcp, mode, deadline).await?;
                    m.tls_established();
                    continue;
                }
                Some(FrontEvent::Login(creds)) => {
                    attempts += 1;
                    let tls = stream.is_tls();
                    if let Some(li) = self.login(admission, &mut m, creds, (attempts, tls)).await {
                        while let Some(ev) = m.poll() {
                            if let FrontEvent::Send(b) = ev {
                                out.extend_from_slice(&b);
                            }
                        }
                        self.send(&mut stream, &mut out).await?;
                        let pipelined = m.take_pipelined();
                        return Ok((stream, pipelined, li));
                    }
                    continue;
                }
                Some(FrontEvent::Send(_)) | None => {}
            }
            tokio::select! {
                r = stream.read(&mut rbuf) => match r {
                    Ok(0) => return Err(EndReason::ClientClosed),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(EndReason::ClientClosed),
                    Ok(n) => {
                        self.counters.client_to_backend.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                        m.input(rbuf.get(..n).unwrap_or_default());
                        if n > 1024 {
                            tokio::task::yield_now().await;
                        }
                    }
                    Err(_) => return Err(EndReason::ClientError),
                },
                _ = tokio::time::sleep_until(m.deadline().into()) => m.timeout(Instant::now()),
                _ = close_now.changed() => {
                    let _ = stream.write_all(m.shutdown_notice()).await;
                    let _ = stream.shutdown().await;
                    return Err(EndReason::Shutdown);
                }
            }
        }
    }

    async fn send(&self, stream: &mut ClientStream, out: &mut BytesMut) -> Result<(), EndReason> {
        if stream.write_all(out).await.is_err() || stream.flush().await.is_err() {
            return Err(EndReason::ClientError);
        }
        self.counters
            .backend_to_client
            .fetch_add(out.len() as u64, std::sync::atomic::Ordering::Relaxed);
        out.clear();
        Ok(())
    }

    /// Carry out a login: the backend connection, or `None` with the
    /// client answered by the state machine.
    async fn login<M: PreAuthMachine>(
        &mut self,
        admission: &mut Admission,
        m: &mut M,
        creds: Credentials,
        (attempt, tls): (u32, bool),
    ) -> Option<LoggedIn> {
        let ctx = self.ctx;
        let client = self.client;
        self.user = Some(creds.user.clone());
        let t0 = Instant::now();
        let result =
            crate::session::login::login(ctx, &creds, client, attempt, tls, self.protocol).await;
        match result {
            Ok(ok) => {
                self.backend = Some(ok.backend.name.clone());
                if !count_session(ctx, client, &ok.owner, admission) {
                    // Closed without a word: nothing was done on it.
                    drop(ok.conn);
                    m.login_failed(&Refusal {
                        status: "NO",
                        code: Some("LIMIT"),
                        text: "Too many simultaneous connections",
                    });
                    return None;
                }
                ctx.metrics
                    .login(crate::metrics::LoginResult::Ok, t0.elapsed().as_secs_f64());
                ctx.metrics
                    .protocol
                    .login(self.protocol, crate::metrics::LoginResult::Ok);
                self.user = Some(ok.owner.clone());
                m.login_ok();
                tracing::info!(target: LOG_TARGET, session = %client.session_id, protocol = self.protocol.as_str(), user = ok.owner.as_str(), auth_user = creds.user.as_str(), backend = %ok.backend.name, method = creds.mechanism.as_str(), "login");
                Some(ok.conn)
            }
            Err(fail) => {
                ctx.metrics.login(fail.result, t0.elapsed().as_secs_f64());
                ctx.metrics.protocol.login(self.protocol, fail.result);
                self.backend = fail.backend.clone();
                tracing::warn!(
                    target: LOG_TARGET,
                    session = %client.session_id,
                    rip = %client.peer.ip(),
                    user = creds.user.as_str(),
                    // after the user, so config/fail2ban's filter (which
                    // ends in reason=) matches every protocol's line
                    protocol = self.protocol.as_str(),
                    method = creds.mechanism.as_str(),
                    reason = fail.code.as_deref().unwrap_or(""),
                    "login failed"
                );
                m.login_failed(&Refusal {
                    status: fail.status,
                    code: fail.code.as_deref(),
                    text: &fail.text,
                });
                None
            }
        }
    }
}
