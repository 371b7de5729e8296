//! Client-facing listeners: bind, accept, enforce the connection limits
//! ([`limits`]), hand each connection to a session task.

pub mod limits;
pub mod proxy_protocol;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::{Config, ListenerMode};
use crate::front::Protocol;
use crate::identity::{new_session_id, ClientInfo};
use crate::metrics::RejectReason;
use crate::session::conn::{serve, Context};
use limits::{Admission, Limits};

/// A bound listener.
pub struct Listener {
    pub tcp: TcpListener,
    pub mode: ListenerMode,
    /// The protocol spoken to clients.
    pub protocol: Protocol,
    pub address: SocketAddr,
    /// The address as written in the config (finds this listener's
    /// settings in a reloaded config).
    pub configured: String,
    /// Position in the config (the `listener` metric label).
    pub index: usize,
    /// PROXY protocol: the sources allowed to send it (None: off).
    pub proxy_protocol: Option<Arc<Vec<ipnet::IpNet>>>,
}

/// Bind every configured listener; fails on the first that cannot bind.
pub async fn bind_all(cfg: &crate::config::Config) -> anyhow::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let addr: SocketAddr = l.address.parse()?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("listener[{i}].address {addr}: cannot bind: {e}"))?;
        out.push(Listener {
            address: tcp.local_addr()?,
            configured: l.address.clone(),
            tcp,
            mode: l.mode,
            protocol: l.protocol,
            index: i,
            proxy_protocol: l
                .proxy_protocol
                .then(|| Arc::new(l.trusted_proxies.clone())),
        });
    }
    Ok(out)
}

/// Does this listener allow logins before TLS under `cfg`? Found by its
/// configured address and mode, so a reload that reorders listeners cannot
/// hand one listener another's setting; a listener missing from a reloaded
/// config (it stays bound until a restart) allows none.
fn plaintext_auth_allowed(cfg: &Config, l: &Listener) -> bool {
    cfg.listeners
        .iter()
        .find(|c| c.address == l.configured && c.mode == l.mode)
        .is_some_and(|c| cfg.plaintext_auth_allowed(c))
}

/// Why a connection is refused at accept time.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    MaxConnections,
    PerIp,
}

/// The refusal in the listener's protocol.
fn bye(protocol: Protocol, why: Refusal) -> &'static [u8] {
    match (protocol, why) {
        (Protocol::Imap, Refusal::MaxConnections) => {
            b"* BYE [UNAVAILABLE] Too many connections, try again later.\r\n"
        }
        (Protocol::Imap, Refusal::PerIp) => {
            b"* BYE [UNAVAILABLE] Too many connections from your address\r\n"
        }
        (Protocol::Pop3, Refusal::MaxConnections) => {
            b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n"
        }
        (Protocol::Pop3, Refusal::PerIp) => {
            b"-ERR [SYS/TEMP] Too many connections from your address\r\n"
        }
        (Protocol::Sieve, Refusal::MaxConnections) => {
            b"BYE (TRYLATER) \"Too many connections, try again later.\"\r\n"
        }
        (Protocol::Sieve, Refusal::PerIp) => {
            b"BYE (TRYLATER) \"Too many connections from your address\"\r\n"
        }
    }
}

/// Send a refused client `bye` and close, in the background.
fn refuse(mut tcp: TcpStream, bye: &'static [u8]) {
    tokio::spawn(async move {
        let _ = tcp.write_all(bye).await;
        let _ = tcp.shutdown().await;
    });
}

/// A PROXY protocol listener's connection: read the header (only from
/// `trusted` sources), set the real client address, then take its
/// per-address pre-auth slot. `None`: refused (and counted).
async fn admit_proxied(
    ctx: &Context,
    tcp: &mut TcpStream,
    client: &mut ClientInfo,
    trusted: Option<Arc<Vec<ipnet::IpNet>>>,
    limits: &Limits,
    protocol: Protocol,
) -> Option<limits::PreauthSlot> {
    let trusted = trusted?;
    let timeout = ctx.config.timeouts.tls_handshake;
    match proxy_protocol::read_header(tcp, client.peer, &trusted, timeout).await {
        Ok(real) => client.peer = real,
        Err(e) => {
            tracing::warn!(client = %client.peer, error = %e, "PROXY protocol: connection refused");
            ctx.metrics.connection_rejected(RejectReason::ProxyProtocol);
            return None;
        }
    }
    let max = ctx.config.server.max_preauth_per_ip;
    let slot = limits.try_preauth(client.peer.ip(), max);
    if slot.is_none() {
        tracing::warn!(client = %client.peer, limit = max, "too many pre-auth connections from this address; refusing");
        ctx.metrics.connection_rejected(RejectReason::PerIpPreauth);
        let _ = tcp.write_all(bye(protocol, Refusal::PerIp)).await;
        let _ = tcp.shutdown().await;
    }
    slot
}

/// Accept connections until `stop` flips.
pub async fn accept_loop(
    l: Listener,
    ctx: Arc<arc_swap::ArcSwap<Context>>,
    limits: Arc<Limits>,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(address = %l.address, mode = ?l.mode, protocol = l.protocol.as_str(), "listening");
    let metrics = ctx.load().metrics.clone();
    let accepted = metrics.accepted_counter(l.index, l.mode);
    metrics.protocol.listening(l.protocol);
    loop {
        let (tcp, peer) = tokio::select! {
            r = l.tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    metrics.accept_error();
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Ok(permit) = limits.permits.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, "connection limit reached; refusing");
            metrics.connection_rejected(RejectReason::MaxConnections);
            refuse(tcp, bye(l.protocol, Refusal::MaxConnections));
            continue;
        };
        // The configuration in force now (a reload swaps it; sessions keep
        // the one they started with).
        let ctx = ctx.load_full();
        let cfg = &ctx.config;
        let max_per_ip = cfg.server.max_preauth_per_ip;
        // Behind the PROXY protocol the peer is the load balancer: the
        // per-address limit waits for the real address in the header.
        let slot = if l.proxy_protocol.is_none() {
            let Some(slot) = limits.try_preauth(peer.ip(), max_per_ip) else {
                tracing::warn!(client = %peer, limit = max_per_ip, "too many pre-auth connections from this address; refusing");
                metrics.connection_rejected(RejectReason::PerIpPreauth);
                refuse(tcp, bye(l.protocol, Refusal::PerIp));
                continue;
            };
            Some(slot)
        } else {
            None
        };
        accepted.inc();
        metrics.protocol.accepted(l.protocol);
        let open = metrics.client_connection_opened();
        let preauth_timeout = if limits::under_pressure(limits.open(), limits.max_connections) {
            metrics.preauth_shortened();
            cfg.timeouts
                .preauth_under_pressure
                .min(cfg.timeouts.preauth)
        } else {
            cfg.timeouts.preauth
        };
        let allow_plaintext_auth = plaintext_auth_allowed(cfg, &l);
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().unwrap_or(l.address);
        let client = ClientInfo::new(peer, local, new_session_id());
        let mode = l.mode;
        let protocol = l.protocol;
        let proxy = l.proxy_protocol.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let mut client = client;
            let mut tcp = tcp;
            let slot = match slot {
                Some(s) => Some(s),
                None => admit_proxied(&ctx, &mut tcp, &mut client, proxy, &limits, protocol).await,
            };
            if let Some(slot) = slot {
                let admission = Admission::new(preauth_timeout, allow_plaintext_auth, limits, slot);
                match protocol {
                    Protocol::Imap => serve(ctx, tcp, client, mode, admission).await,
                    Protocol::Pop3 => crate::pop3::serve(ctx, tcp, client, mode, admission).await,
                    Protocol::Sieve => crate::sieve::serve(ctx, tcp, client, mode, admission).await,
                }
            }
            drop((open, permit));
        });
    }
    tracing::info!(address = %l.address, "listener closed");
}
