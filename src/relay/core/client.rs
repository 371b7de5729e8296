//! Client to backend: commands enter the ledger (parsed once), the view
//! and the hooks see them, then they pass, are rewritten, answered here,
//! or held for a hook's prefetch.

use std::time::Instant;

use bytes::{Buf, Bytes};

use super::{Finish, Held, Idle, RelaySession};
use crate::imap::command::trim_crlf;
use crate::imap::enabled::Effect;
use crate::imap::framing::{LiteralSpec, Piece};
use crate::metrics::command::CommandResult;
use crate::relay::hooks::Upstream;
use crate::relay::ledger::{Command, Completed};

impl RelaySession {
    /// Process every complete client piece that may be processed now.
    pub(super) fn process_client(&mut self, now: Instant) {
        loop {
            if self.finish.is_some()
                || self.closing.is_some()
                || self.parking
                || self.held.is_some()
                || self.deflate.pending()
            {
                return;
            }
            if self.soft.is_some() && self.stepped.is_none() && self.up.at_boundary() {
                // The operator asked the session to end: no new command
                // starts (the one under way, e.g. an APPEND's literal,
                // goes on to its end).
                return;
            }
            let Some((piece, len)) = self
                .stepped
                .take()
                .or_else(|| self.up.step(&self.client_in))
            else {
                return;
            };
            match piece {
                Piece::Line {
                    first: true,
                    literal,
                    ..
                } => {
                    let first = self.client_in.get(..len).unwrap_or_default();
                    let cmd = Command::parse(first, literal.is_some());
                    if cmd.is_some() && !self.room_for_command() {
                        // Enough commands wait for answers, or enough
                        // answers for the client: no further until there
                        // is room (backpressure on the client).
                        self.stepped = Some((piece, len));
                        return;
                    }
                    let line = self.client_in.split_to(len).freeze();
                    match cmd {
                        Some(cmd) => {
                            self.cur_tag = cmd.tag.clone();
                            self.command(cmd, line, literal, now);
                        }
                        None => self.non_command_line(line),
                    }
                }
                Piece::Line { literal, .. } => {
                    self.forward_client(len);
                    self.note_literal(literal);
                }
                Piece::LineChunk { .. } | Piece::Literal { .. } => self.forward_client(len),
            }
        }
    }

    fn forward_client(&mut self, len: usize) {
        if len < 4096 {
            self.to_backend
                .push_slice(self.client_in.get(..len).unwrap_or_default());
            self.client_in.advance(len);
        } else {
            let b = self.client_in.split_to(len).freeze();
            self.to_backend.push(b);
        }
    }

    /// A synchronizing literal waits for the backend's `+` (or refusal).
    fn note_literal(&mut self, literal: Option<LiteralSpec>) {
        if literal.is_some_and(|l| l.sync) {
            self.awaiting_plus = Some(self.cur_tag.clone());
        }
    }

    /// A first line that is not `tag SP verb`: IDLE's DONE, or anything
    /// else the backend will judge.
    fn non_command_line(&mut self, line: Bytes) {
        if trim_crlf(&line).eq_ignore_ascii_case(b"DONE") {
            if let Some(idle) = self.idle.as_mut() {
                idle.done = true;
                if idle.since.take().is_some() {
                    self.set_idling(false);
                }
            }
        }
        self.to_backend.push(line);
    }

    fn command(&mut self, cmd: Command, line: Bytes, literal: Option<LiteralSpec>, now: Instant) {
        // imapmux's own COMPRESS leaves no state on the backend connection:
        // the session still parks and is reused.
        if literal.is_none() && cmd.is("COMPRESS") && self.compress_command(&cmd, &line) {
            return;
        }
        if cmd.leaves_state {
            self.dirty = true;
            let args = line.get(cmd.args_at..).unwrap_or_default();
            match crate::imap::enabled::effect(&cmd.verb, args, true) {
                // Learned from the backend's `* ENABLED`.
                Effect::Enable | Effect::None => {}
                Effect::CondstoreByUse => self.enabled.condstore = true,
                Effect::Unknown => self.unparkable = true,
            }
        }
        let quiet = self.ledger.is_empty() && self.awaiting_plus.is_none() && !self.dirty;
        match &*cmd.verb {
            "LOGOUT" if self.cfg.release_on_logout && literal.is_none() && quiet => {
                // Answer it here; the backend connection stays logged in,
                // for the next login.
                let reply = format!("* BYE Logging out\r\n{} OK Logout completed.\r\n", cmd.tag);
                self.answered_here(&cmd, CommandResult::Ok);
                self.closing = Some(now + self.cfg.bye_grace);
                self.inject(reply.into(), Some(Finish::Release));
                return;
            }
            // COMPRESS (when not offered) would change the framing under
            // us and STARTTLS is only valid before login.
            "COMPRESS" | "STARTTLS" if literal.is_none() => {
                let reply = format!(
                    "{} NO [CANNOT] {} is not available through this proxy.\r\n",
                    cmd.tag, cmd.verb
                );
                self.answered_here(&cmd, CommandResult::No);
                self.inject(reply.into(), None);
                return;
            }
            "LOGOUT" => self.logout = true,
            _ => {}
        }
        let args = std::str::from_utf8(trim_crlf(line.get(cmd.args_at..).unwrap_or_default()))
            .unwrap_or("");
        let others_in_flight = !self.ledger.is_empty();
        self.view.command(&cmd.tag, &cmd.verb, args);
        if others_in_flight {
            self.view.spoil_select_reply();
        }
        let mut up = Upstream::Forward;
        let mut by = 0;
        for (i, h) in self.hooks.iter_mut().enumerate() {
            up = h.command(&cmd, &line, &self.view);
            if up != Upstream::Forward {
                by = i;
                break;
            }
        }
        if let Upstream::Prefetch(ours) = up {
            // The hook's own command goes first, alone; the client's waits.
            self.to_backend.push(ours.into());
            self.held = Some(Held {
                cmd,
                line,
                literal,
                hook: by,
                deadline: now + self.cfg.prefetch_timeout,
            });
            return;
        }
        self.send_command(cmd, line, literal, up, now);
    }

    /// What a hook decided for a command: send it (or its replacement), or
    /// answer it here.
    pub(super) fn send_command(
        &mut self,
        cmd: Command,
        line: Bytes,
        literal: Option<LiteralSpec>,
        up: Upstream,
        now: Instant,
    ) {
        match up {
            Upstream::Answer(resp) => {
                self.answered_here(&cmd, CommandResult::Ok);
                self.inject(resp.into(), None);
                return;
            }
            Upstream::Replace(rep) => self.to_backend.push(rep.into()),
            Upstream::Forward | Upstream::Prefetch(_) => self.to_backend.push(line),
        }
        self.ledger.push(&cmd, now);
        if cmd.is("IDLE") {
            self.idle = Some(Idle {
                tag: cmd.tag.clone(),
                done: false,
                since: None,
            });
        }
        self.note_literal(literal);
    }

    /// The held command's prefetch completed: decide and go on.
    pub(super) fn resume_held(&mut self, now: Instant) {
        let Some(h) = self.held.as_ref() else { return };
        let Some(up) = self
            .hooks
            .get_mut(h.hook)
            .and_then(|hook| hook.after_prefetch(&self.view))
        else {
            return;
        };
        if let Some(h) = self.held.take() {
            self.send_command(h.cmd, h.line, h.literal, up, now);
        }
    }

    /// A command imapmux answers itself completes at once.
    pub(super) fn answered_here(&mut self, cmd: &Command, result: CommandResult) {
        for h in &mut self.hooks {
            h.answered_by_proxy(&cmd.tag);
        }
        let done = Completed {
            tag: cmd.tag.clone(),
            label: cmd.label,
            result,
            took: std::time::Duration::ZERO,
            idle: false,
        };
        self.completed(&done);
    }
}
