//! Backend to client: answers complete ledger entries, `+` continues
//! literals and starts IDLE, the view learns, hooks may hold and rewrite
//! responses; what imapmux says itself goes out between two messages.

use std::time::Instant;

use bytes::Bytes;

use super::compress::DeflateState;
use super::{Finish, Parked, RelaySession};
use crate::imap::command::tag_of;
use crate::imap::fetch::fetch_seq;
use crate::imap::framing::Piece;
use crate::imap::mailbox::uid_in_line;
use crate::relay::hooks::Disposition;

/// Tags of imapmux's own commands on a client's backend connection.
pub const OWN_TAG_PREFIX: &[u8] = b"imapmux.";

impl RelaySession {
    /// Process every complete backend frame.
    pub(super) fn process_backend(&mut self, now: Instant) {
        // While compression is being turned on, nothing more for the
        // client (it would go out uncompressed).
        while self.finish.is_none() && self.deflate != DeflateState::Switching {
            let Some((piece, len)) = self.down.step(&self.backend_in) else {
                break;
            };
            let frame = self.backend_in.split_to(len).freeze();
            let (first, end) = match piece {
                Piece::Line { first, literal, .. } => (first, literal.is_none()),
                Piece::LineChunk { first } => (first, false),
                Piece::Literal { .. } => (false, false),
            };
            let line = matches!(piece, Piece::Line { .. });
            let mut to_client = true;
            if first && line {
                to_client = self.response_line(&frame, now);
            }
            let changes = if first && line {
                if self.cfg.track_uids {
                    if let (Some(seq), Some(uid)) = (fetch_seq(&frame), uid_in_line(&frame)) {
                        self.view.on_fetch_uid(seq, uid);
                    }
                }
                if end {
                    self.view.on_response(&frame)
                } else {
                    self.view.literal_response();
                    Vec::new()
                }
            } else {
                Vec::new()
            };
            let mut held = false;
            for h in &mut self.hooks {
                held |= h.backend_frame(&frame, first, end, &mut self.view, &changes)
                    == Disposition::Hold;
            }
            if held {
                let outs: Vec<Bytes> = self
                    .hooks
                    .iter_mut()
                    .filter_map(|h| h.take_output())
                    .collect();
                for out in outs {
                    self.pass_to_client(out);
                }
            } else if to_client {
                let out = match (first && line && end, &frame) {
                    (true, f) if f.starts_with(b"* ") => self.client_capability_line(f),
                    _ => None,
                };
                self.pass_to_client(out.unwrap_or(frame));
            }
            if self.held.is_some() {
                self.resume_held(now);
            }
        }
        self.flush_injects();
    }

    /// The first line of a backend message. Returns false when the client
    /// must not see it (the answer to imapmux's own DONE).
    fn response_line(&mut self, line: &Bytes, now: Instant) -> bool {
        if line.starts_with(b"+") {
            if self.awaiting_plus.take().is_none() {
                if let Some(idle) = self.idle.as_mut().filter(|i| i.since.is_none() && !i.done) {
                    idle.since = Some(now);
                    self.set_idling(true);
                }
            }
            return true;
        }
        if line.starts_with(b"* ") {
            self.enabled.learn(line);
            return true;
        }
        if line.starts_with(OWN_TAG_PREFIX) {
            return true;
        }
        let Some(tag) = tag_of(line) else {
            return true;
        };
        if self.awaiting_plus.as_deref() == Some(tag) {
            // The backend refused the literal: the client will not send it.
            self.up.cancel_literal();
            self.awaiting_plus = None;
        }
        let Some(done) = self.ledger.answer(line, now) else {
            return true;
        };
        self.completed(&done);
        if !done.idle {
            return true;
        }
        let idle = self.idle.take();
        if idle.as_ref().is_some_and(|i| i.since.is_some()) {
            self.set_idling(false);
        }
        if !self.parking {
            return true;
        }
        self.parking = false;
        match (idle, self.view.selected.as_ref()) {
            (Some(idle), Some(sel)) => {
                self.finish = Some(Finish::Park(Parked {
                    mailbox: sel.name.clone(),
                    read_only: sel.read_only,
                    idle_tag: idle.tag.into(),
                    enabled: self.enabled,
                    select_reply: self.view.select_reply().cloned(),
                }));
                false
            }
            // Cannot happen (parking requires both); end cleanly anyway.
            _ => {
                self.finish = Some(Finish::End(crate::lifecycle::EndReason::BackendError));
                false
            }
        }
    }
}
