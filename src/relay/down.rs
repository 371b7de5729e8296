//! Backend to client: answers pass (or are held and rewritten by the cache
//! flow); what the proxy says itself goes out between two messages.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::track::{note_continuation, note_tagged, set_idling};
use super::{
    injected_written, lock, write_out, Counters, Inject, RelayConfig, RelayEnd, Shared, Sizer,
};
use crate::cache::flow::Disposition;
use crate::imap::framing::{Framer, Piece};

pub(super) async fn backend_to_client<R, W>(
    backend: &mut R,
    buf: &mut BytesMut,
    mut client: &mut W,
    cfg: &RelayConfig,
    shared: &Shared,
    counters: &Counters,
) -> RelayEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut framer = Framer::new(cfg.max_line);
    let mut sizer = Sizer::new();
    let mut queued: VecDeque<Inject> = VecDeque::new();
    loop {
        let mut off = 0;
        let mut pass_from = 0;
        // Only built when the cache flow holds back or rewrites a response.
        let mut rewritten: Option<BytesMut> = None;
        while let Some((piece, len)) = framer.step(&buf[off..]) {
            if let Piece::Line { first: true, .. } = piece {
                let line = &buf[off..off + len];
                if let Some(m) = &shared.meter {
                    m.backend_line(line);
                }
                if line.starts_with(b"+") {
                    if lock(&shared.idle_tag).is_some()
                        && shared.idling_since_ms.load(Ordering::Acquire) == 0
                    {
                        let ms = shared.start.elapsed().as_millis() as u64;
                        set_idling(shared, ms.max(1));
                    }
                } else if !line.starts_with(b"* ")
                    && !line.starts_with(crate::cache::flow::PREFETCH_TAG_PREFIX)
                {
                    shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                    shared.answered.notify_one();
                    if note_tagged(shared, line) {
                        // The answer to imapmux's DONE: the client never
                        // sees it. What came before it goes out.
                        let before = match rewritten.as_mut() {
                            Some(out) => {
                                out.extend_from_slice(&buf[pass_from..off]);
                                write_out(&mut client, out).await
                            }
                            None => write_out(&mut client, &buf[..off]).await,
                        };
                        if before.is_err() {
                            return RelayEnd::ClientError;
                        }
                        buf.advance(off + len);
                        return RelayEnd::Parked;
                    }
                }
                if shared.awaiting.load(Ordering::Acquire) {
                    note_continuation(shared, &buf[off..off + len]);
                }
            }
            if let Some(f) = &shared.flow {
                let (first, end) = match piece {
                    Piece::Line { first, literal, .. } => (first, literal.is_none()),
                    Piece::LineChunk { first } => (first, false),
                    Piece::Literal { .. } => (false, false),
                };
                let mut f = lock(f);
                let disposition = f.on_backend_frame(&buf[off..off + len], first, end);
                if f.prefetch_done() {
                    shared.prefetch_ready.notify_one();
                }
                if disposition == Disposition::Hold {
                    let out = rewritten.get_or_insert_with(BytesMut::new);
                    out.extend_from_slice(&buf[pass_from..off]);
                    pass_from = off + len;
                    if let Some(o) = f.take_output() {
                        out.extend_from_slice(&o);
                    }
                }
            }
            off += len;
        }
        if off > 0 {
            let result = match rewritten.as_mut() {
                None => write_out(&mut client, &buf[..off]).await.map(|_| off),
                Some(out) => {
                    out.extend_from_slice(&buf[pass_from..off]);
                    write_out(&mut client, out).await.map(|_| out.len())
                }
            };
            match result {
                Ok(n) => counters
                    .backend_to_client
                    .fetch_add(n as u64, Ordering::Relaxed),
                Err(_) => return RelayEnd::ClientError,
            };
            buf.advance(off);
        }
        queued.extend(lock(&shared.injected).drain(..));
        // What the proxy says itself goes out between two messages only.
        if framer.at_boundary() && buf.is_empty() {
            while let Some(msg) = queued.pop_front() {
                if let Some(m) = &shared.meter {
                    m.proxy_answer(&msg.bytes);
                }
                if write_out(&mut client, &msg.bytes).await.is_err() {
                    return RelayEnd::ClientError;
                }
                injected_written(shared, msg.bytes.len());
                counters
                    .backend_to_client
                    .fetch_add(msg.bytes.len() as u64, Ordering::Relaxed);
                if msg.then_close {
                    let _ = client.shutdown().await;
                    return if msg.release {
                        RelayEnd::Released
                    } else {
                        RelayEnd::Shutdown
                    };
                }
            }
        }
        sizer.prepare(buf);
        tokio::select! {
            // Proxy answers first: they were queued before any later
            // command reached the backend.
            biased;
            _ = shared.inject_ready.notified() => {}
            r = backend.read_buf(buf) => match r {
                Ok(0) => {
                    let _ = client.shutdown().await;
                    return if shared.logout.load(Ordering::Relaxed) { RelayEnd::Logout } else { RelayEnd::BackendClosed };
                }
                Ok(n) => sizer.after_read(n),
                Err(_) => return RelayEnd::BackendError,
            },
        }
    }
}
