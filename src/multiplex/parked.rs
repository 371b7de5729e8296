//! A parked client session as a sans-I/O state machine: no backend
//! connection, the selected mailbox's view kept, and everything the
//! session can be answered without the backend answered here (lazy
//! re-attach): DONE, a new IDLE, NOOP, CHECK, LOGOUT, and a re-SELECT
//! of the parked mailbox while nothing changed since its SELECT (the
//! backend's answer, kept: [`crate::imap::select`]). Any other command
//! finishes with [`ParkedFinish::Reattach`]: the driver logs in again,
//! re-selects, catches the client up and relays that command (and what
//! follows) in order.
//!
//! Changes come from the user's watcher: the driver calls
//! [`ParkedSession::on_change`] when it reports one and, when
//! [`ParkedSession::wants_snapshot`], takes a snapshot of the mailbox and
//! hands it over ([`ParkedSession::on_snapshot`]). Untagged updates go to
//! the client only where IMAP allows them unasked: while idling, and
//! before the tagged answer of NOOP, CHECK, DONE or IDLE.

// Sans-I/O and fed by peers: no panics on input, no clock.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use super::view::{catch_up, MailboxNow, ParkedView};
use crate::imap::command::trim_crlf;
use crate::imap::framing::literal_at_end;
use crate::imap::select::SelectReply;
use crate::lifecycle::EndReason;
use crate::relay::Command;

/// Longest command line a parked session reads; a longer one needs the
/// backend anyway (re-attach).
const MAX_LINE: usize = 8 * 1024;

/// How a parked session finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParkedFinish {
    /// Over (after what is queued for the client).
    End(EndReason),
    /// The client sent a command that needs the backend: re-attach, then
    /// relay [`ParkedSession::take_input`]. `idle_tag`: a DONE whose tagged
    /// answer is still owed (only when a snapshot failed).
    Reattach { idle_tag: Option<String> },
}

/// A command answered once the view is current.
#[derive(Debug)]
enum Waiting {
    /// DONE of the IDLE with this tag.
    Done(String),
    /// NOOP or CHECK: tag, the completion text, and (QRESYNC) the
    /// HIGHESTMODSEQ its tagged OK reports.
    Sync(String, &'static str, Option<u64>),
}

#[derive(Debug)]
pub struct ParkedSession {
    view: ParkedView,
    idle_tag: Option<String>,
    client_in: BytesMut,
    out: BytesMut,
    waiting: Option<Waiting>,
    /// The watcher reported a change not applied to the view yet.
    stale: bool,
    want_snapshot: bool,
    last_input: Instant,
    idle_timeout: Duration,
    finish: Option<ParkedFinish>,
    /// The mailbox's SELECT answer while nothing changed since: a re-SELECT
    /// (or re-EXAMINE) of it is answered here.
    select_reply: Option<Arc<SelectReply>>,
}

impl ParkedSession {
    /// A session parked in the IDLE tagged `idle_tag` (if idling), with
    /// unprocessed client input `client_in`.
    pub fn new(
        view: ParkedView,
        idle_tag: Option<String>,
        client_in: BytesMut,
        idle_timeout: Duration,
        now: Instant,
        select_reply: Option<Arc<SelectReply>>,
    ) -> Self {
        let mut s = ParkedSession {
            view,
            idle_tag,
            client_in,
            out: BytesMut::new(),
            waiting: None,
            stale: false,
            want_snapshot: false,
            last_input: now,
            idle_timeout,
            finish: None,
            select_reply,
        };
        s.process();
        s
    }

    pub fn view(&self) -> &ParkedView {
        &self.view
    }

    /// The SELECT answer still valid (carried to a re-attached relay).
    pub fn select_reply(&self) -> Option<&Arc<SelectReply>> {
        self.select_reply.as_ref()
    }

    pub fn idling(&self) -> bool {
        self.idle_tag.is_some()
    }

    pub fn finished(&self) -> Option<&ParkedFinish> {
        self.finish.as_ref()
    }

    /// Whether to read the client now (one command at a time).
    pub fn wants_client_read(&self) -> bool {
        self.finish.is_none() && self.waiting.is_none() && self.out.len() < 64 * 1024
    }

    /// Client bytes arrived (taken from `buf`).
    pub fn client_read(&mut self, buf: &mut BytesMut, now: Instant) {
        self.client_in.extend_from_slice(buf);
        buf.clear();
        self.last_input = now;
        self.process();
    }

    /// The unprocessed client input (after [`ParkedFinish::Reattach`]:
    /// the command that needs the backend, and what followed it).
    pub fn take_input(&mut self) -> BytesMut {
        std::mem::take(&mut self.client_in)
    }

    pub fn transmit(&self) -> Option<&[u8]> {
        (!self.out.is_empty()).then_some(&self.out[..])
    }

    pub fn sent(&mut self, n: usize) {
        self.out.advance(n.min(self.out.len()));
        if self.out.is_empty() {
            // Nothing kept between answers (memory per parked client).
            self.out = BytesMut::new();
        }
    }

    /// The watcher reported a change of the mailbox.
    pub fn on_change(&mut self) {
        self.stale = true;
        // UIDNEXT, UNSEEN or HIGHESTMODSEQ may differ now.
        self.select_reply = None;
        if self.idle_tag.is_some() {
            self.want_snapshot = true;
        }
    }

    /// Whether the driver should take a snapshot of the mailbox now.
    pub fn wants_snapshot(&self) -> bool {
        self.want_snapshot && self.finish.is_none()
    }

    /// The mailbox as it is now.
    pub fn on_snapshot(&mut self, now: &MailboxNow) {
        self.want_snapshot = false;
        self.stale = false;
        match catch_up(&self.view, now) {
            Some(c) => {
                self.out.extend_from_slice(&c.bytes);
                self.view = c.next;
                // QRESYNC: in the tagged OK of NOOP/CHECK, else untagged
                // (as Dovecot reports it).
                match (&mut self.waiting, c.highest) {
                    (Some(Waiting::Sync(_, _, h)), Some(m)) => *h = Some(m),
                    (_, Some(m)) => self.out.extend_from_slice(
                        format!("* OK [HIGHESTMODSEQ {m}] Highest\r\n").as_bytes(),
                    ),
                    _ => {}
                }
            }
            None => {
                self.out.extend_from_slice(
                    b"* BYE [UNAVAILABLE] Mailbox was recreated; please reconnect.\r\n",
                );
                self.finish = Some(ParkedFinish::End(EndReason::UidvalidityChanged));
                return;
            }
        }
        self.complete();
        self.process();
    }

    /// The snapshot failed (the backend is unreachable): a command waiting
    /// for it re-attaches (which re-synchronizes, or fails visibly);
    /// otherwise the next change tries again.
    pub fn on_snapshot_failed(&mut self) {
        self.want_snapshot = false;
        match self.waiting.take() {
            Some(Waiting::Done(tag)) => {
                self.idle_tag = None;
                self.finish = Some(ParkedFinish::Reattach {
                    idle_tag: Some(tag),
                });
            }
            Some(Waiting::Sync(tag, text, _)) => {
                // Put the command back: the re-attached relay runs it.
                let mut line = BytesMut::from(format!("{tag} {text}\r\n").as_bytes());
                line.extend_from_slice(&self.client_in);
                self.client_in = line;
                self.finish = Some(ParkedFinish::Reattach { idle_tag: None });
            }
            None => {}
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.finish
            .is_none()
            .then_some(self.last_input + self.idle_timeout)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.finish.is_none() && now >= self.last_input + self.idle_timeout {
            self.out
                .extend_from_slice(b"* BYE Autologout; idle for too long.\r\n");
            self.finish = Some(ParkedFinish::End(EndReason::IdleTimeout));
        }
    }

    /// The operator ended the session: `bye`, then the end (a parked
    /// client is always between commands).
    pub fn end_with(&mut self, bye: &'static [u8], reason: EndReason) {
        if self.finish.is_none() {
            self.out.extend_from_slice(bye);
            self.finish = Some(ParkedFinish::End(reason));
        }
    }

    pub fn shutdown(&mut self) {
        if self.finish.is_none() {
            self.out
                .extend_from_slice(b"* BYE [UNAVAILABLE] Server shutting down.\r\n");
            self.finish = Some(ParkedFinish::End(EndReason::Shutdown));
        }
    }

    /// The waiting command's answer, once the view is current.
    fn complete(&mut self) {
        match self.waiting.take() {
            Some(Waiting::Done(tag)) => {
                self.idle_tag = None;
                self.out
                    .extend_from_slice(format!("{tag} OK Idle completed.\r\n").as_bytes());
            }
            Some(Waiting::Sync(tag, text, highest)) => {
                let code = highest
                    .map(|m| format!("[HIGHESTMODSEQ {m}] "))
                    .unwrap_or_default();
                self.out
                    .extend_from_slice(format!("{tag} OK {code}{text} completed.\r\n").as_bytes());
            }
            None => {}
        }
    }

    /// Wait for the view to be current, or answer at once when it is.
    fn sync_then(&mut self, w: Waiting) {
        self.waiting = Some(w);
        if self.stale {
            self.want_snapshot = true;
        } else {
            self.complete();
        }
    }

    /// The answer to a SELECT/EXAMINE (`args`: its arguments) of the
    /// parked mailbox, the same way it was selected, without parameters,
    /// while nothing changed since; `None` when the backend must answer.
    fn reselect(&self, verb: &str, args: &[u8], tag: &str) -> Option<Vec<u8>> {
        let reply = self.select_reply.as_ref()?;
        if (verb == "EXAMINE") != self.view.read_only {
            return None;
        }
        let name = std::str::from_utf8(args).ok()?;
        let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(q) if !q.contains(['\\', '"']) => q,
            Some(_) => return None,
            None if !name.is_empty() && !name.contains([' ', '(', '{', '"', '\\']) => name,
            None => return None,
        };
        let same = name == self.view.mailbox
            || (name.eq_ignore_ascii_case("INBOX")
                && self.view.mailbox.eq_ignore_ascii_case("INBOX"));
        same.then(|| reply.again(tag, self.view.modseq))
    }

    fn reattach(&mut self) {
        self.finish = Some(ParkedFinish::Reattach { idle_tag: None });
    }

    /// Answer every complete command line that can be answered here.
    fn process(&mut self) {
        while self.finish.is_none() && self.waiting.is_none() {
            let Some(nl) = memchr::memchr(b'\n', &self.client_in) else {
                if self.client_in.len() > MAX_LINE {
                    if self.idle_tag.is_some() {
                        self.finish = Some(ParkedFinish::End(EndReason::ProtocolError));
                    } else {
                        self.reattach();
                    }
                }
                return;
            };
            let line = self.client_in.get(..=nl).unwrap_or_default();
            if let Some(tag) = self.idle_tag.clone() {
                // In IDLE only DONE is valid (RFC 2177).
                let done = trim_crlf(line).eq_ignore_ascii_case(b"DONE");
                self.client_in.advance(nl + 1);
                if done {
                    self.sync_then(Waiting::Done(tag));
                } else {
                    // As Dovecot does: the IDLE ends with BAD.
                    self.idle_tag = None;
                    self.out
                        .extend_from_slice(format!("{tag} BAD Expected DONE.\r\n").as_bytes());
                }
                continue;
            }
            if literal_at_end(line).is_some() {
                return self.reattach();
            }
            let Some(cmd) = Command::parse(line, false) else {
                return self.reattach();
            };
            let tag = cmd.tag.to_string();
            // Only the bare forms are answered here.
            let bare = trim_crlf(line.get(cmd.args_at..).unwrap_or_default()).is_empty();
            match &*cmd.verb {
                "IDLE" if bare => {
                    self.client_in.advance(nl + 1);
                    self.out.extend_from_slice(b"+ idling\r\n");
                    self.idle_tag = Some(tag);
                    if self.stale {
                        self.want_snapshot = true;
                    }
                }
                "NOOP" if bare => {
                    self.client_in.advance(nl + 1);
                    self.sync_then(Waiting::Sync(tag, "NOOP", None));
                }
                "CHECK" if bare => {
                    self.client_in.advance(nl + 1);
                    self.sync_then(Waiting::Sync(tag, "Check", None));
                }
                "SELECT" | "EXAMINE" if !self.stale => {
                    let args = trim_crlf(line.get(cmd.args_at..).unwrap_or_default());
                    let Some(again) = self.reselect(&cmd.verb, args, &tag) else {
                        return self.reattach();
                    };
                    self.client_in.advance(nl + 1);
                    self.out.extend_from_slice(&again);
                }
                "LOGOUT" if bare => {
                    self.client_in.advance(nl + 1);
                    self.out.extend_from_slice(
                        format!("* BYE Logging out\r\n{tag} OK Logout completed.\r\n").as_bytes(),
                    );
                    self.finish = Some(ParkedFinish::End(EndReason::Logout));
                }
                _ => return self.reattach(),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests make instants from the clock
mod tests {
    use super::*;
    use crate::multiplex::view::UidList;

    fn view() -> ParkedView {
        ParkedView {
            mailbox: "INBOX".into(),
            read_only: false,
            uidvalidity: 7,
            modseq: 10,
            uids: UidList::from_uids(vec![1, 2, 3]),
            flags: None,
            enabled: Default::default(),
        }
    }

    fn now_with(uids: Vec<u32>) -> MailboxNow {
        MailboxNow {
            uidvalidity: 7,
            modseq: 11,
            uids: UidList::from_uids(uids),
            changed: Vec::new(),
        }
    }

    fn out(s: &mut ParkedSession) -> String {
        let o = String::from_utf8(s.transmit().unwrap_or_default().to_vec()).unwrap();
        let n = o.len();
        s.sent(n);
        o
    }

    fn park(idle: Option<&str>) -> (ParkedSession, Instant) {
        let t = Instant::now();
        let s = ParkedSession::new(
            view(),
            idle.map(String::from),
            BytesMut::new(),
            Duration::from_secs(1800),
            t,
            None,
        );
        (s, t)
    }

    #[test]
    fn done_idle_noop_check_and_logout_never_need_the_backend() {
        let (mut s, t) = park(Some("i1"));
        s.client_read(&mut BytesMut::from(&b"DONE\r\n"[..]), t);
        assert_eq!(out(&mut s), "i1 OK Idle completed.\r\n");
        assert!(!s.wants_snapshot());
        s.client_read(
            &mut BytesMut::from(&b"n NOOP\r\nc CHECK\r\ni2 IDLE\r\n"[..]),
            t,
        );
        assert_eq!(
            out(&mut s),
            "n OK NOOP completed.\r\nc OK Check completed.\r\n+ idling\r\n"
        );
        assert!(s.idling());
        s.client_read(&mut BytesMut::from(&b"done\r\nz LOGOUT\r\n"[..]), t);
        assert_eq!(
            out(&mut s),
            "i2 OK Idle completed.\r\n* BYE Logging out\r\nz OK Logout completed.\r\n"
        );
        assert_eq!(s.finished(), Some(&ParkedFinish::End(EndReason::Logout)));
    }

    #[test]
    fn a_qresync_client_gets_vanished_and_highestmodseq_where_dovecot_puts_it() {
        let t = Instant::now();
        let mut v = view();
        v.enabled.qresync = true;
        v.enabled.condstore = true;
        let mut s = ParkedSession::new(
            v,
            Some("i1".into()),
            BytesMut::new(),
            Duration::from_secs(1800),
            t,
            None,
        );
        // In IDLE: untagged, after the changes.
        s.on_change();
        s.on_snapshot(&now_with(vec![1, 3, 4]));
        assert_eq!(
            out(&mut s),
            "* VANISHED 2\r\n* 3 EXISTS\r\n* OK [HIGHESTMODSEQ 11] Highest\r\n"
        );
        s.client_read(&mut BytesMut::from(&b"DONE\r\n"[..]), t);
        assert_eq!(out(&mut s), "i1 OK Idle completed.\r\n");
        // NOOP: in its tagged OK.
        s.on_change();
        s.client_read(&mut BytesMut::from(&b"n NOOP\r\n"[..]), t);
        let mut now = now_with(vec![1, 3, 4, 5]);
        now.modseq = 12;
        s.on_snapshot(&now);
        assert_eq!(
            out(&mut s),
            "* 4 EXISTS\r\nn OK [HIGHESTMODSEQ 12] NOOP completed.\r\n"
        );
        // Nothing new: a plain tagged OK.
        s.client_read(&mut BytesMut::from(&b"m NOOP\r\n"[..]), t);
        assert_eq!(out(&mut s), "m OK NOOP completed.\r\n");
    }

    #[test]
    fn changes_reach_an_idling_client_at_once_and_others_at_their_next_noop() {
        let (mut s, t) = park(Some("i1"));
        s.on_change();
        assert!(s.wants_snapshot());
        s.on_snapshot(&now_with(vec![1, 2, 3, 4]));
        assert_eq!(out(&mut s), "* 4 EXISTS\r\n");
        s.client_read(&mut BytesMut::from(&b"DONE\r\n"[..]), t);
        assert_eq!(out(&mut s), "i1 OK Idle completed.\r\n");
        // Not idling: nothing unasked; the NOOP waits for the snapshot.
        s.on_change();
        assert!(!s.wants_snapshot());
        s.client_read(&mut BytesMut::from(&b"n NOOP\r\nm NOOP\r\n"[..]), t);
        assert!(s.wants_snapshot());
        assert!(!s.wants_client_read());
        assert_eq!(out(&mut s), "");
        s.on_snapshot(&now_with(vec![1, 3, 4]));
        assert_eq!(
            out(&mut s),
            "* 2 EXPUNGE\r\nn OK NOOP completed.\r\nm OK NOOP completed.\r\n"
        );
        assert_eq!(s.view().uids.len(), 3);
    }

    #[test]
    fn commands_that_need_the_backend_reattach_with_their_bytes() {
        let (mut s, t) = park(None);
        s.client_read(
            &mut BytesMut::from(&b"n NOOP\r\nf UID FETCH 4 BODY[]\r\nx NOOP\r\n"[..]),
            t,
        );
        assert_eq!(out(&mut s), "n OK NOOP completed.\r\n");
        assert_eq!(
            s.finished(),
            Some(&ParkedFinish::Reattach { idle_tag: None })
        );
        assert_eq!(&s.take_input()[..], b"f UID FETCH 4 BODY[]\r\nx NOOP\r\n");
        for cmd in [
            &b"a APPEND INBOX {3}\r\n"[..],
            b"s SELECT INBOX\r\n",
            b"x IDLE now\r\n",
            b"garbage\r\n",
        ] {
            let (mut s, t) = park(None);
            s.client_read(&mut BytesMut::from(cmd), t);
            assert!(
                matches!(s.finished(), Some(ParkedFinish::Reattach { .. })),
                "{cmd:?}"
            );
            assert_eq!(&s.take_input()[..], cmd);
        }
    }

    #[test]
    fn a_failed_snapshot_reattaches_owing_the_idle_answer() {
        let (mut s, t) = park(Some("i1"));
        s.on_change();
        s.on_snapshot_failed();
        assert!(s.finished().is_none());
        s.on_change();
        s.client_read(&mut BytesMut::from(&b"DONE\r\n"[..]), t);
        s.on_snapshot_failed();
        assert_eq!(
            s.finished(),
            Some(&ParkedFinish::Reattach {
                idle_tag: Some("i1".into())
            })
        );
    }

    #[test]
    fn bad_input_while_idling_and_time_and_shutdown() {
        let (mut s, t) = park(Some("i1"));
        s.client_read(&mut BytesMut::from(&b"a NOOP\r\n"[..]), t);
        assert_eq!(out(&mut s), "i1 BAD Expected DONE.\r\n");
        assert!(!s.idling());
        let (mut s, t) = park(Some("i1"));
        s.client_read(&mut BytesMut::from(vec![b'x'; MAX_LINE + 1].as_slice()), t);
        assert_eq!(
            s.finished(),
            Some(&ParkedFinish::End(EndReason::ProtocolError))
        );
        let (mut s, t) = park(Some("i1"));
        assert_eq!(s.poll_timeout(), Some(t + Duration::from_secs(1800)));
        s.handle_timeout(t + Duration::from_secs(1800));
        assert_eq!(out(&mut s), "* BYE Autologout; idle for too long.\r\n");
        assert_eq!(
            s.finished(),
            Some(&ParkedFinish::End(EndReason::IdleTimeout))
        );
        let (mut s, _) = park(None);
        s.shutdown();
        assert_eq!(out(&mut s), "* BYE [UNAVAILABLE] Server shutting down.\r\n");
        // A recreated mailbox ends the session.
        let (mut s, _) = park(Some("i1"));
        s.on_change();
        s.on_snapshot(&MailboxNow {
            uidvalidity: 8,
            ..now_with(vec![1])
        });
        assert_eq!(
            s.finished(),
            Some(&ParkedFinish::End(EndReason::UidvalidityChanged))
        );
    }

    fn reply() -> Arc<SelectReply> {
        let mut r = crate::imap::select::Recorder::default();
        r.line(b"* 3 EXISTS\r\n");
        r.line(b"* 2 RECENT\r\n");
        r.line(b"* OK [UIDVALIDITY 5] UIDs valid\r\n");
        Arc::new(r.finish(b"OK [READ-WRITE] Select completed.").unwrap())
    }

    #[test]
    fn a_reselect_of_the_parked_mailbox_is_answered_while_nothing_changed() {
        let t = Instant::now();
        let new = |r| {
            ParkedSession::new(
                view(),
                None,
                BytesMut::new(),
                Duration::from_secs(1800),
                t,
                r,
            )
        };
        let again = "* OK [CLOSED] Previous mailbox closed.\r\n* 3 EXISTS\r\n* 0 RECENT\r\n\
                     * OK [UIDVALIDITY 5] UIDs valid\r\n* OK [HIGHESTMODSEQ 10] Highest\r\n";
        let mut s = new(Some(reply()));
        for (cmd, tag) in [
            ("a SELECT INBOX\r\n", "a"),
            ("b select \"INBOX\"\r\n", "b"),
            ("c SELECT inbox\r\n", "c"),
        ] {
            s.client_read(&mut BytesMut::from(cmd.as_bytes()), t);
            assert_eq!(
                out(&mut s),
                format!("{again}{tag} OK [READ-WRITE] Select completed.\r\n")
            );
            assert_eq!(s.finished(), None);
        }
        // Another mailbox, EXAMINE of a SELECTed one, parameters, odd
        // names: the backend answers.
        for cmd in [
            "a SELECT Archive\r\n",
            "a EXAMINE INBOX\r\n",
            "a SELECT INBOX (CONDSTORE)\r\n",
            "a SELECT \"INB\\\"OX\"\r\n",
            "a SELECT {5}\r\n",
        ] {
            let mut s = new(Some(reply()));
            s.client_read(&mut BytesMut::from(cmd.as_bytes()), t);
            assert_eq!(
                s.finished(),
                Some(&ParkedFinish::Reattach { idle_tag: None }),
                "{cmd}"
            );
            assert_eq!(&s.take_input()[..], cmd.as_bytes());
        }
        // Without a kept answer, or once the watcher reported a change
        // (even one the snapshot shows as nothing visible), the same.
        let mut s = new(None);
        s.client_read(&mut BytesMut::from(&b"a SELECT INBOX\r\n"[..]), t);
        assert!(s.finished().is_some());
        let mut s = new(Some(reply()));
        s.on_change();
        s.client_read(&mut BytesMut::from(&b"n NOOP\r\n"[..]), t);
        s.on_snapshot(&now_with(vec![1, 2, 3]));
        assert_eq!(out(&mut s), "n OK NOOP completed.\r\n");
        assert!(s.select_reply().is_none());
        s.client_read(&mut BytesMut::from(&b"a SELECT INBOX\r\n"[..]), t);
        assert_eq!(
            s.finished(),
            Some(&ParkedFinish::Reattach { idle_tag: None })
        );
    }
}
