//! The I/O driver of [`RelaySession`]: one task, one loop. It reads a side
//! only when the core wants it (bounded queues: backpressure), writes what
//! the core queued, sleeps until the core's one deadline, and hands the
//! connections back when the core finishes. No protocol logic here.

use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::core::{Finish, RelayConfig, RelaySession};
use super::hooks::Hook;

/// Byte counters of a session (shared so they survive cancellation and
/// can be read while it runs).
#[derive(Debug, Default)]
pub struct Counters {
    pub client_to_backend: AtomicU64,
    pub backend_to_client: AtomicU64,
}

/// What [`relay`] hands back.
pub struct RelayOutcome<C, B> {
    pub finish: Finish,
    /// The backend connection and what it sent after the last answer
    /// ([`Finish::Release`], [`Finish::Park`]).
    pub backend: Option<(B, BytesMut)>,
    /// The client connection and its unprocessed input ([`Finish::Park`]).
    pub client: Option<(C, BytesMut)>,
}

/// Read buffers start small, so an idle session costs little memory, and
/// double up to the maximum while data streams (large literals).
const READ_MIN: usize = 512;
const READ_MAX: usize = 64 * 1024;

/// Adaptive read-buffer sizing for one direction.
#[derive(Debug)]
struct Sizer {
    next: usize,
    spare: usize,
}

impl Sizer {
    fn new() -> Self {
        Sizer {
            next: READ_MIN,
            spare: 0,
        }
    }

    /// Make room before a read; give memory back once a burst is over.
    fn prepare(&mut self, buf: &mut BytesMut) {
        if buf.is_empty() && buf.capacity() > 2 * self.next {
            *buf = BytesMut::new();
        }
        if buf.capacity() - buf.len() < self.next / 2 {
            buf.reserve(self.next);
        }
        self.spare = buf.capacity() - buf.len();
    }

    /// Adapt to how much the last read brought.
    fn after_read(&mut self, n: usize) {
        if n >= self.spare {
            self.next = (self.next * 2).min(READ_MAX);
        } else if n < self.next / 8 {
            self.next = (self.next / 2).max(READ_MIN);
        }
    }
}

/// A deadline that never comes (the timer is re-armed before it would).
const FAR: std::time::Duration = std::time::Duration::from_secs(86_400 * 365);

/// What one turn of the loop brought.
enum Turn {
    ClientRead(std::io::Result<usize>),
    BackendRead(std::io::Result<usize>),
    /// What a write or flush of that side did.
    Client(std::io::Result<Written>),
    Backend(std::io::Result<Written>),
    Deadline,
    Shutdown,
    /// The operator asked the session to end.
    Stop(crate::lifecycle::Stop),
}

/// Relay between `client` and `backend` until the core finishes. The
/// buffers hold what each side sent before the relay started.
pub async fn relay<C, B>(
    (client, client_buf): (C, BytesMut),
    (backend, backend_buf): (B, BytesMut),
    cfg: RelayConfig,
    counters: &Counters,
    hooks: Vec<Box<dyn Hook>>,
    mut shutdown: watch::Receiver<bool>,
    stop: Option<&crate::lifecycle::StopSignal>,
) -> RelayOutcome<C, B>
where
    C: AsyncRead + AsyncWrite + Unpin + crate::stream::Compressible,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let grace = cfg.bye_grace;
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut br, mut bw) = tokio::io::split(backend);
    let mut s = RelaySession::new(cfg, client_buf, backend_buf, hooks, Instant::now());
    let (mut csize, mut bsize) = (Sizer::new(), Sizer::new());
    let (mut c_dirty, mut b_dirty) = (false, false);
    let mut shutting = *shutdown.borrow();
    if shutting {
        s.shutdown(Instant::now());
    }
    let mut stopping = false;
    // Made once: the wait stays registered across turns.
    let stop = crate::lifecycle::StopSignal::of(stop);
    tokio::pin!(stop);
    // One timer for the session. It is moved only when the core's deadline
    // comes earlier than the armed one: the idle deadline moves later with
    // every client read, and each reset takes the runtime's timer-wheel
    // lock. A timer that fires early is harmless (the core checks `now`)
    // and is then armed for the real deadline.
    let sleep = tokio::time::sleep_until(tokio::time::Instant::now() + FAR);
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    while s.finished().is_none() {
        if let (Some(level), false) = (s.deflate_due(), c_dirty) {
            // COMPRESS's OK is written and flushed: compressed from here
            // on (what the client sent after the command is compressed).
            let pending = s.deflate_started(Instant::now());
            let c = cr.unsplit(cw).start_deflate(pending, level);
            (cr, cw) = tokio::io::split(c);
            continue;
        }
        let read_c = s.wants_client_read();
        let read_b = s.wants_backend_read();
        let deadline = s.poll_timeout();
        if rearm(deadline, armed) {
            armed = deadline;
            let at = deadline.map_or_else(|| tokio::time::Instant::now() + FAR, Into::into);
            sleep.as_mut().reset(at);
        }
        let io = s.io();
        // The client is read again once what was cut from its buffer (a
        // literal's chunks) went to the backend: the buffer is then reused
        // instead of a fresh one being allocated, and page-faulted in, per
        // read (APPEND streams). The core's own bounds still apply.
        let read_c = read_c && !io.to_backend.holds_chunks();
        if read_c {
            csize.prepare(io.client_in);
        }
        if read_b {
            bsize.prepare(io.backend_in);
        }
        let (to_c, to_b) = (io.to_client, io.to_backend);
        let mut c_slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut b_slices = [IoSlice::new(&[]); MAX_SLICES];
        let nc = to_c.slices(&mut c_slices);
        let nb = to_b.slices(&mut b_slices);
        let c_slices = c_slices.get(..nc).unwrap_or_default();
        let b_slices = b_slices.get(..nb).unwrap_or_default();
        let turn = tokio::select! {
            // Writes first: a written chunk frees its read buffer, which the
            // next read then reuses instead of allocating a fresh one.
            biased;
            r = write_or_flush(&mut bw, b_slices), if !to_b.is_empty() || b_dirty => Turn::Backend(r),
            r = write_or_flush(&mut cw, c_slices), if !to_c.is_empty() || c_dirty => Turn::Client(r),
            r = br.read_buf(io.backend_in), if read_b => Turn::BackendRead(r),
            r = cr.read_buf(io.client_in), if read_c => Turn::ClientRead(r),
            _ = &mut sleep, if deadline.is_some() => Turn::Deadline,
            c = shutdown.changed(), if !shutting => match c {
                Ok(()) if !*shutdown.borrow() => continue,
                _ => Turn::Shutdown,
            },
            st = &mut stop, if !stopping => Turn::Stop(st),
        };
        let now = Instant::now();
        match turn {
            Turn::ClientRead(Ok(0)) => s.client_closed(false),
            // A client that closes without TLS close_notify is still just closing.
            Turn::ClientRead(Err(e)) => {
                s.client_closed(e.kind() != std::io::ErrorKind::UnexpectedEof)
            }
            Turn::ClientRead(Ok(n)) => {
                csize.after_read(n);
                counters
                    .client_to_backend
                    .fetch_add(n as u64, Ordering::Relaxed);
                s.client_data(now);
            }
            Turn::BackendRead(Ok(0)) => s.backend_closed(false),
            Turn::BackendRead(Err(_)) => s.backend_closed(true),
            Turn::BackendRead(Ok(n)) => {
                bsize.after_read(n);
                s.backend_data(now);
            }
            Turn::Client(Ok(Written::Some(n, flushed))) if n > 0 => {
                counters
                    .backend_to_client
                    .fetch_add(n as u64, Ordering::Relaxed);
                s.client_sent(n, now);
                c_dirty = !flushed;
            }
            Turn::Backend(Ok(Written::Some(n, flushed))) if n > 0 => {
                s.backend_sent(n, now);
                b_dirty = !flushed;
            }
            Turn::Client(Ok(Written::Flushed)) => c_dirty = false,
            Turn::Backend(Ok(Written::Flushed)) => b_dirty = false,
            Turn::Client(_) => s.client_write_failed(),
            Turn::Backend(_) => s.backend_write_failed(),
            Turn::Deadline => {
                s.handle_timeout(now);
                // Fired (early or due): arm for whatever is next.
                armed = None;
            }
            Turn::Shutdown => {
                shutting = true;
                s.shutdown(now);
            }
            Turn::Stop(st) => {
                stopping = true;
                s.close_softly(st.bye(), st.reason, now + st.within, now);
            }
        }
    }
    let finish = s
        .finished()
        .cloned()
        .unwrap_or(Finish::End(crate::lifecycle::EndReason::ClientError));
    // What the client is owed goes out (bounded by the BYE grace time).
    let mut client_ok = true;
    if finish.flush_client() {
        let flushed = tokio::time::timeout(grace, async {
            while let Some(data) = s.client_transmit() {
                let n = cw.write(data).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                counters
                    .backend_to_client
                    .fetch_add(n as u64, Ordering::Relaxed);
                s.client_sent(n, Instant::now());
            }
            cw.flush().await
        })
        .await;
        client_ok = matches!(flushed, Ok(Ok(())));
    }
    let (cleft, bleft) = s.take_input();
    let mut out = RelayOutcome {
        finish,
        backend: None,
        client: None,
    };
    match &out.finish {
        Finish::Release => {
            let _ = tokio::time::timeout(grace, cw.shutdown()).await;
            out.backend = Some((br.unsplit(bw), bleft));
        }
        Finish::Park(_) if client_ok => {
            out.client = Some((cr.unsplit(cw), cleft));
            out.backend = Some((br.unsplit(bw), bleft));
        }
        Finish::Park(_) => {
            out.finish = Finish::End(crate::lifecycle::EndReason::ClientError);
        }
        Finish::End(_) => {
            let _ = tokio::time::timeout(grace, cw.shutdown()).await;
        }
    }
    out
}

/// Whether the timer armed for `armed` must move to `deadline`: when there
/// is none armed, or the new one is earlier. A later deadline keeps the
/// armed timer, which fires early once and is armed again then.
fn rearm(deadline: Option<Instant>, armed: Option<Instant>) -> bool {
    match (deadline, armed) {
        (Some(d), Some(a)) => d < a,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Most queued pieces handed to one vectored write (a response line, its
/// literal chunks and the next responses).
const MAX_SLICES: usize = 16;

/// What [`write_or_flush`] did.
enum Written {
    /// Wrote n bytes; whether the stream is flushed too.
    Some(usize, bool),
    /// Flushed (nothing was left to write).
    Flushed,
}

/// Write some of `data` (one vectored write), or flush when nothing is
/// left to write. Both are cancel-safe (a write either happened and is
/// reported, or not).
async fn write_or_flush<W: AsyncWrite + Unpin>(
    w: &mut W,
    data: &[IoSlice<'_>],
) -> std::io::Result<Written> {
    match data {
        [] => w.flush().await.map(|()| Written::Flushed),
        d => {
            let len: usize = d.iter().map(|s| s.len()).sum();
            let n = w.write_vectored(d).await?;
            let mut flushed = false;
            if n == len {
                // All written: try to flush now, without waiting (one poll;
                // what is left is flushed by a later turn). Nothing here
                // can lose the count `n` if the future is dropped.
                flushed = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(matches!(
                        std::pin::Pin::new(&mut *w).poll_flush(cx),
                        std::task::Poll::Ready(Ok(()))
                    ))
                })
                .await;
            }
            Ok(Written::Some(n, flushed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_timer_moves_only_for_an_earlier_deadline() {
        let t = Instant::now();
        let later = t + Duration::from_secs(5);
        assert!(rearm(Some(t), None));
        assert!(rearm(Some(t), Some(later)));
        assert!(!rearm(Some(later), Some(t)));
        assert!(!rearm(Some(t), Some(t)));
        assert!(!rearm(None, Some(t)));
        assert!(!rearm(None, None));
    }
}
