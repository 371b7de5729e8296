//! The authenticated phase of a line protocol (POP3, ManageSieve): bytes
//! relayed both ways exactly as they come (a RETR of any size, a script
//! upload as a literal), counted, with the idle timeout and the end of the
//! drain time. Nothing is parsed: after login neither protocol has a
//! command that changes the framing or the connection's security.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::lifecycle::EndReason;
use crate::relay::Counters;

/// Buffer per direction.
const BUF: usize = 64 * 1024;

/// A stream whose reads are counted into `counter`.
struct Counted<'a, S> {
    inner: &'a mut S,
    counter: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut *this.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        this.counter.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Relay until either side closes, the client is idle for `idle`, or
/// `close_now` flips. `pipelined`: what the client sent after its login
/// (to the backend first); `backend_buf`: what the backend sent after its
/// login answer (to the client first).
pub async fn relay<C, B>(
    client: &mut C,
    pipelined: &[u8],
    backend: &mut B,
    backend_buf: &[u8],
    idle: Duration,
    mut close_now: watch::Receiver<bool>,
    counters: &Counters,
) -> EndReason
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    if !backend_buf.is_empty() {
        if client.write_all(backend_buf).await.is_err() || client.flush().await.is_err() {
            return EndReason::ClientError;
        }
        counters
            .backend_to_client
            .fetch_add(backend_buf.len() as u64, Ordering::Relaxed);
    }
    if !pipelined.is_empty() {
        if backend.write_all(pipelined).await.is_err() || backend.flush().await.is_err() {
            return EndReason::BackendError;
        }
        counters
            .client_to_backend
            .fetch_add(pipelined.len() as u64, Ordering::Relaxed);
    }
    let mut c = Counted {
        inner: client,
        counter: &counters.client_to_backend,
    };
    let mut b = Counted {
        inner: backend,
        counter: &counters.backend_to_client,
    };
    let total = || {
        counters.client_to_backend.load(Ordering::Relaxed)
            + counters.backend_to_client.load(Ordering::Relaxed)
    };
    // Idle: no byte either way for `idle` (a long RETR keeps it alive).
    let tick = (idle / 8).max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = total();
    let mut quiet_since = tokio::time::Instant::now();
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut b, BUF, BUF);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            r = &mut copy => {
                return match r {
                    Ok(_) => EndReason::ClientClosed,
                    Err(_) => EndReason::ClientError,
                };
            }
            _ = ticker.tick() => {
                let now_total = total();
                if now_total != seen {
                    seen = now_total;
                    quiet_since = tokio::time::Instant::now();
                } else if quiet_since.elapsed() >= idle {
                    return EndReason::IdleTimeout;
                }
            }
            _ = close_now.changed() => return EndReason::Shutdown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn relays_exactly_and_counts() {
        let (mut client, mut client_far) = tokio::io::duplex(1024);
        let (mut backend, mut backend_far) = tokio::io::duplex(1024);
        let counters = Counters::default();
        let (_tx, rx) = watch::channel(false);
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let big2 = big.clone();
        let far = tokio::spawn(async move {
            let mut got = vec![0u8; 7];
            backend_far.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"STAT\r\n\x00");
            backend_far.write_all(&big2).await.unwrap();
            backend_far.shutdown().await.unwrap();
        });
        let reader = tokio::spawn(async move {
            client_far.write_all(b"\x00").await.unwrap();
            let mut all = Vec::new();
            client_far.read_to_end(&mut all).await.unwrap();
            all
        });
        let end = relay(
            &mut client,
            b"STAT\r\n",
            &mut backend,
            b"+OK hi\r\n",
            Duration::from_secs(30),
            rx,
            &counters,
        );
        // the client side closes once it has read everything
        let (end, all) = tokio::join!(
            async {
                let e = end.await;
                e
            },
            async {
                let all = reader.await.unwrap();
                all
            }
        );
        far.await.unwrap();
        let _ = end;
        assert_eq!(&all[..8], b"+OK hi\r\n");
        assert_eq!(&all[8..], &big[..]);
        assert_eq!(
            counters.backend_to_client.load(Ordering::Relaxed),
            8 + big.len() as u64
        );
        assert_eq!(counters.client_to_backend.load(Ordering::Relaxed), 7);
    }

    #[tokio::test]
    async fn idle_and_shutdown_end_it() {
        let (mut client, _cf) = tokio::io::duplex(1024);
        let (mut backend, _bf) = tokio::io::duplex(1024);
        let counters = Counters::default();
        let (_tx, rx) = watch::channel(false);
        let t0 = std::time::Instant::now();
        let idle = Duration::from_millis(300);
        let end = relay(&mut client, b"", &mut backend, b"", idle, rx, &counters).await;
        assert_eq!(end, EndReason::IdleTimeout);
        assert!(t0.elapsed() >= idle);
        let (tx, rx) = watch::channel(false);
        let t = tokio::spawn(async move {
            let (mut client, _cf) = tokio::io::duplex(1024);
            let (mut backend, _bf) = tokio::io::duplex(1024);
            let counters = Counters::default();
            relay(
                &mut client,
                b"",
                &mut backend,
                b"",
                Duration::from_secs(60),
                rx,
                &counters,
            )
            .await
        });
        tokio::task::yield_now().await;
        tx.send(true).unwrap();
        assert_eq!(t.await.unwrap(), EndReason::Shutdown);
    }
}
