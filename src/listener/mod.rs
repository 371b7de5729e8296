//! Client-facing listeners: bind, accept, enforce the connection limit,
//! hand each connection to a session task.

pub mod proxy_protocol;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::ListenerMode;
use crate::metrics::RejectReason;
use crate::session::conn::{serve, Context};
use crate::session::{new_session_id, ClientInfo};

/// A bound listener.
pub struct Listener {
    pub tcp: TcpListener,
    pub mode: ListenerMode,
    pub address: SocketAddr,
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
            tcp,
            mode: l.mode,
            index: i,
            proxy_protocol: l
                .proxy_protocol
                .then(|| Arc::new(l.trusted_proxies.clone())),
        });
    }
    Ok(out)
}

/// Accept connections until `stop` flips.
pub async fn accept_loop(
    l: Listener,
    ctx: Arc<arc_swap::ArcSwap<Context>>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(address = %l.address, mode = ?l.mode, "listening");
    let metrics = ctx.load().metrics.clone();
    let accepted = metrics.accepted_counter(l.index, l.mode);
    loop {
        let (mut tcp, peer) = tokio::select! {
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, "connection limit reached; refusing");
            metrics.connection_rejected(RejectReason::MaxConnections);
            tokio::spawn(async move {
                let _ = tcp
                    .write_all(b"* BYE [UNAVAILABLE] Too many connections, try again later.\r\n")
                    .await;
                let _ = tcp.shutdown().await;
            });
            continue;
        };
        accepted.inc();
        let open = metrics.client_connection_opened();
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().unwrap_or(l.address);
        let client = ClientInfo {
            peer,
            local,
            session_id: new_session_id(),
        };
        // The configuration in force now (a reload swaps it; sessions keep
        // the one they started with).
        let ctx = ctx.load_full();
        let mode = l.mode;
        let proxy = l.proxy_protocol.clone();
        tokio::spawn(async move {
            let mut client = client;
            if let Some(trusted) = proxy {
                let timeout = ctx.config.timeouts.tls_handshake;
                match proxy_protocol::read_header(&tcp, client.peer, &trusted, timeout).await {
                    Ok(real) => client.peer = real,
                    Err(e) => {
                        tracing::warn!(client = %client.peer, error = %e, "PROXY protocol: connection refused");
                        ctx.metrics.connection_rejected(RejectReason::ProxyProtocol);
                        drop((open, permit));
                        return;
                    }
                }
            }
            serve(ctx, tcp, client, mode).await;
            drop((open, permit));
        });
    }
    tracing::info!(address = %l.address, "listener closed");
}
