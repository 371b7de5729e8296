//! Client to backend: commands pass (or are answered, rewritten or held
//! by the cache flow), LOGOUT may release the connection, parking ends the
//! IDLE on the backend.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;

use super::track::{command_of, leaves_state, note_session_command, set_idling, trim_line};
use super::{
    closed, inject, lock, write_out, Counters, Inject, RelayConfig, RelayEnd, Shared, Sizer,
};
use crate::cache::flow::Upstream;
use crate::imap::framing::{Framer, Piece};

#[allow(clippy::too_many_arguments)]
pub(super) async fn client_to_backend<R, W>(
    client: &mut R,
    buf: &mut BytesMut,
    mut backend: &mut W,
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
    let mut cur_tag = String::new();
    loop {
        if shared.cancel_literal.swap(false, Ordering::AcqRel) {
            framer.cancel_literal();
        }
        // Pass on every complete frame in `buf`.
        let mut off = 0;
        let mut written = 0;
        while let Some((piece, len)) = framer.step(&buf[off..]) {
            if let Piece::Line { first, literal, .. } = piece {
                if first
                    && shared.in_flight.load(Ordering::Acquire) >= MAX_IN_FLIGHT
                    && command_of(&buf[off..off + len]).is_some()
                {
                    // Enough commands wait for answers: pass on what came
                    // before, then read no further until the backend answers.
                    if write_out(&mut backend, &buf[written..off]).await.is_err() {
                        return RelayEnd::BackendError;
                    }
                    counters
                        .client_to_backend
                        .fetch_add((off - written) as u64, Ordering::Relaxed);
                    written = off;
                    wait_answers(shared).await;
                }
                let line = &buf[off..off + len];
                if first {
                    let up = shared
                        .flow
                        .as_ref()
                        .map(|f| lock(f).on_client_command(line, literal.is_some()))
                        .unwrap_or(Upstream::Forward);
                    let up = match up {
                        Upstream::Prefetch(cmd) => {
                            // Our own FETCH of what some messages miss goes
                            // first, alone; the client's command waits for it.
                            if write_out(&mut backend, &buf[written..off]).await.is_err()
                                || write_out(&mut backend, &cmd).await.is_err()
                            {
                                return RelayEnd::BackendError;
                            }
                            counters
                                .client_to_backend
                                .fetch_add((off - written) as u64, Ordering::Relaxed);
                            written = off;
                            match wait_prefetch(shared, cfg.prefetch_timeout).await {
                                Some(next) => next,
                                None => return RelayEnd::BackendError,
                            }
                        }
                        other => other,
                    };
                    let answered_here = matches!(up, Upstream::Answer(_));
                    match up {
                        // The line goes on unchanged with the bytes around it.
                        Upstream::Forward | Upstream::Prefetch(_) => {}
                        Upstream::Replace(rep) => {
                            // The cache flow rewrote the command (a FETCH it
                            // can partly answer): send the new line instead.
                            if write_out(&mut backend, &buf[written..off]).await.is_err()
                                || write_out(&mut backend, &rep).await.is_err()
                            {
                                return RelayEnd::BackendError;
                            }
                            counters
                                .client_to_backend
                                .fetch_add((off - written + len) as u64, Ordering::Relaxed);
                            written = off + len;
                        }
                        Upstream::Answer(resp) => {
                            // Answered from the cache: nothing goes to the
                            // backend; the answer goes out between messages.
                            if write_out(&mut backend, &buf[written..off]).await.is_err() {
                                return RelayEnd::BackendError;
                            }
                            counters
                                .client_to_backend
                                .fetch_add((off - written + len) as u64, Ordering::Relaxed);
                            written = off + len;
                            inject(
                                shared,
                                Inject {
                                    bytes: resp.into(),
                                    then_close: false,
                                    release: false,
                                },
                            )
                            .await;
                        }
                    }
                    let line = &buf[off..off + len];
                    if let Some(m) = &shared.meter {
                        m.client_line(line);
                    }
                    if let Some((tag, name)) = command_of(line) {
                        cur_tag = String::from_utf8_lossy(tag).into_owned();
                        if leaves_state(&name, line) {
                            shared.dirty.store(true, Ordering::Relaxed);
                        }
                        let quiet = shared.in_flight.load(Ordering::Acquire) == 0
                            && !shared.awaiting.load(Ordering::Acquire)
                            && !shared.dirty.load(Ordering::Relaxed);
                        match name.as_str() {
                            "LOGOUT" if cfg.release_on_logout && literal.is_none() && quiet => {
                                // Answer it here; the backend connection
                                // stays logged in, for the next login.
                                if write_out(&mut backend, &buf[written..off]).await.is_err() {
                                    return RelayEnd::BackendError;
                                }
                                counters
                                    .client_to_backend
                                    .fetch_add((off - written + len) as u64, Ordering::Relaxed);
                                let reply = format!(
                                    "* BYE Logging out.\r\n{cur_tag} OK Logout completed.\r\n"
                                );
                                inject(
                                    shared,
                                    Inject {
                                        bytes: reply.into(),
                                        then_close: true,
                                        release: true,
                                    },
                                )
                                .await;
                                return RelayEnd::Released;
                            }
                            "LOGOUT" => {
                                shared.logout.store(true, Ordering::Relaxed);
                                shared.in_flight.fetch_add(1, Ordering::AcqRel);
                            }
                            // COMPRESS would change the framing under us and
                            // STARTTLS is only valid before login.
                            "COMPRESS" | "STARTTLS" if literal.is_none() => {
                                if let Some(f) = &shared.flow {
                                    lock(f).answered_by_proxy(cur_tag.as_bytes());
                                }
                                let reply = format!("{cur_tag} NO [CANNOT] {name} is not available through this proxy.\r\n");
                                if write_out(&mut backend, &buf[written..off]).await.is_err() {
                                    return RelayEnd::BackendError;
                                }
                                counters
                                    .client_to_backend
                                    .fetch_add((off - written) as u64, Ordering::Relaxed);
                                written = off + len;
                                inject(
                                    shared,
                                    Inject {
                                        bytes: reply.into(),
                                        then_close: false,
                                        release: false,
                                    },
                                )
                                .await;
                            }
                            _ if !answered_here => {
                                shared.in_flight.fetch_add(1, Ordering::AcqRel);
                                note_session_command(
                                    shared,
                                    &cur_tag,
                                    &name,
                                    line,
                                    literal.is_some(),
                                );
                            }
                            _ => {}
                        }
                    } else if trim_line(line).eq_ignore_ascii_case(b"DONE") {
                        set_idling(shared, 0);
                    }
                }
                if let Some(spec) = literal {
                    if spec.sync {
                        *lock(&shared.awaiting_plus) = Some(cur_tag.clone());
                        shared.awaiting.store(true, Ordering::Release);
                    }
                }
            }
            off += len;
        }
        if off > written {
            if write_out(&mut backend, &buf[written..off]).await.is_err() {
                return RelayEnd::BackendError;
            }
            counters
                .client_to_backend
                .fetch_add((off - written) as u64, Ordering::Relaxed);
        }
        buf.advance(off);
        sizer.prepare(buf);
        let read = tokio::select! {
            // Parking wins a tie: a DONE the client sent meanwhile stays
            // unread and wakes the parked session at once.
            biased;
            _ = shared.park_now.notified() => {
                if shared.idling_since_ms.load(Ordering::Acquire) == 0 {
                    // The client ended its IDLE first: no parking this time.
                    shared.parking.store(false, Ordering::Release);
                    continue;
                }
                // End the IDLE on the backend; the other direction keeps its
                // tagged answer from the client.
                if write_out(&mut backend, b"DONE\r\n").await.is_err() {
                    return RelayEnd::BackendError;
                }
                return RelayEnd::Parked;
            }
            r = client.read_buf(buf) => r,
        };
        match read {
            // A client that closes without TLS close_notify is still just closing.
            Ok(0) => return closed(shared),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return closed(shared),
            Ok(n) => {
                sizer.after_read(n);
                let ms = shared.start.elapsed().as_millis() as u64;
                shared.last_client_ms.store(ms, Ordering::Relaxed);
            }
            Err(_) => return RelayEnd::ClientError,
        }
    }
}

/// Most client commands in flight (sent to the backend, not yet answered)
/// before imapmux stops reading the client: what it tracks per command is
/// bounded, and a client that pipelines faster than the backend answers is
/// slowed down instead of buffered.
pub(crate) const MAX_IN_FLIGHT: i64 = 1024;

async fn wait_answers(shared: &Shared) {
    loop {
        let answered = shared.answered.notified();
        if shared.in_flight.load(Ordering::Acquire) < MAX_IN_FLIGHT {
            return;
        }
        answered.await;
    }
}

/// Wait until the backend answered our prefetch; then what to send for the
/// client's command. `None`: the backend did not answer in time.
pub(super) async fn wait_prefetch(shared: &Shared, timeout: Duration) -> Option<Upstream> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(up) = shared.flow.as_ref().and_then(|f| lock(f).after_prefetch()) {
            return Some(up);
        }
        if tokio::time::timeout_at(deadline, shared.prefetch_ready.notified())
            .await
            .is_err()
        {
            return None;
        }
    }
}
