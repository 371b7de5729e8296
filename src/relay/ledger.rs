//! The in-flight command ledger: every client command is parsed here once
//! (tag, verb, metric label, whether it leaves state on the backend
//! connection) and kept until the backend's tagged answer. Features read
//! the parsed [`Command`] instead of re-parsing the line.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::imap::command::tag_of;
use crate::metrics::command::{command_label, CommandResult};

/// Most client commands in flight (sent to the backend, not yet answered)
/// before the relay stops reading the client: what is tracked per command
/// is bounded, and a client that pipelines faster than the backend answers
/// is slowed down instead of buffered.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Longest tag the ledger tracks (a longer one is forwarded untracked).
const MAX_TAG: usize = 64;

/// A client command, parsed once from the first line of its message.
#[derive(Debug, Clone)]
pub struct Command {
    pub tag: Box<str>,
    /// Upper-cased verb; `UID FETCH`-style for UID commands.
    pub verb: Box<str>,
    /// The metric label (`fetch`, `uid_fetch`, `other`…): a fixed word.
    pub label: &'static str,
    /// The line announces a literal (more of the command follows).
    pub literal: bool,
    /// The command changes backend state that outlives the session (ENABLE,
    /// CONDSTORE by use…): the backend connection must not be reused.
    pub leaves_state: bool,
    /// Offset in the line of what follows the (first) verb word.
    pub args_at: usize,
}

impl Command {
    /// Parse the first line of a client message (with its CRLF). `None` for
    /// lines that are not `tag SP verb` (IDLE's `DONE`, SASL data).
    pub fn parse(line: &[u8], literal: bool) -> Option<Command> {
        let tag = tag_of(line).filter(|t| t.len() <= MAX_TAG)?;
        let rest = line.get(tag.len() + 1..)?;
        let (verb, after) = word(rest)?;
        let args_at = (line.len() - after.len()).min(line.len());
        let verb = if verb.eq_ignore_ascii_case(b"UID") {
            let (sub, _) = word(after).unwrap_or((b"", b""));
            let mut v = b"UID ".to_vec();
            v.extend_from_slice(sub);
            v
        } else {
            verb.to_vec()
        };
        let label = command_label(&verb);
        let verb = String::from_utf8_lossy(&verb).to_ascii_uppercase();
        let leaves_state = leaves_state(&verb, line);
        Some(Command {
            tag: tag.into(),
            verb: verb.into(),
            label,
            literal,
            leaves_state,
            args_at,
        })
    }

    pub fn is(&self, verb: &str) -> bool {
        &*self.verb == verb
    }
}

/// The next space-delimited word and what follows it.
fn word(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = s
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let after = s.get(end + 1..).unwrap_or_default();
    Some((s.get(..end)?, after))
}

/// Commands whose effect outlives the session on the backend connection
/// (or that may enable CONDSTORE/QRESYNC by use, RFC 7162 §3.1).
fn leaves_state(verb: &str, line: &[u8]) -> bool {
    if matches!(
        verb,
        "ENABLE" | "NOTIFY" | "LANGUAGE" | "COMPRESS" | "CONTEXT" | "X-DOVECOT-FINISH"
    ) {
        return true;
    }
    [&b"CONDSTORE"[..], b"MODSEQ", b"QRESYNC", b"CHANGEDSINCE"]
        .iter()
        .any(|w| line.windows(w.len()).any(|win| win.eq_ignore_ascii_case(w)))
}

/// A command the backend (or imapmux) answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub tag: Box<str>,
    pub label: &'static str,
    pub result: CommandResult,
    pub took: Duration,
    /// The command was the client's IDLE.
    pub idle: bool,
}

#[derive(Debug)]
struct Entry {
    tag: Box<str>,
    label: &'static str,
    started: Instant,
    idle: bool,
}

/// Client commands waiting for their tagged answer, oldest first.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: VecDeque<Entry>,
}

impl Ledger {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= MAX_IN_FLIGHT
    }

    /// A command went to the backend.
    pub fn push(&mut self, cmd: &Command, now: Instant) {
        self.entries.push_back(Entry {
            tag: cmd.tag.clone(),
            label: cmd.label,
            started: now,
            idle: cmd.is("IDLE"),
        });
    }

    /// The only command in flight is the IDLE tagged `tag`.
    pub fn only_idle(&self, tag: &str) -> bool {
        self.entries.len() == 1
            && self
                .entries
                .front()
                .is_some_and(|e| e.idle && &*e.tag == tag)
    }

    /// A backend line: when it is the tagged answer of a command in the
    /// ledger, that command completes.
    pub fn answer(&mut self, line: &[u8], now: Instant) -> Option<Completed> {
        let tag = tag_of(line)?;
        let pos = self.entries.iter().position(|e| &*e.tag == tag)?;
        let rest = line.get(tag.len() + 1..)?;
        let (w, _) = word(rest)?;
        let result = CommandResult::from_word(w)?;
        let e = self.entries.remove(pos)?;
        Some(Completed {
            tag: e.tag,
            label: e.label,
            result,
            took: now.saturating_duration_since(e.started),
            idle: e.idle,
        })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests make instants from the clock
mod tests {
    use super::*;

    #[test]
    fn parses_once_what_the_features_need() {
        let c = Command::parse(b"a1 uid fetch 1:* (FLAGS)\r\n", false).unwrap();
        assert_eq!(
            (&*c.tag, &*c.verb, c.label),
            ("a1", "UID FETCH", "uid_fetch")
        );
        assert!(!c.leaves_state);
        let c = Command::parse(b"a2 SELECT INBOX (CONDSTORE)\r\n", false).unwrap();
        assert!(c.leaves_state);
        assert_eq!(c.label, "select");
        let c = Command::parse(b"a3 IDLE\r\n", false).unwrap();
        assert!(c.is("IDLE"));
        assert!(Command::parse(b"DONE\r\n", false).is_none());
        assert!(Command::parse(b"a4 \r\n", false).is_none());
        let long = format!("{} NOOP\r\n", "t".repeat(65));
        assert!(Command::parse(long.as_bytes(), false).is_none());
        assert_eq!(Command::parse(b"x XFOO\r\n", false).unwrap().label, "other");
    }

    #[test]
    fn answers_complete_by_tag_in_any_order() {
        let t0 = Instant::now();
        let mut l = Ledger::default();
        for line in [&b"a NOOP\r\n"[..], b"b IDLE\r\n"] {
            l.push(&Command::parse(line, false).unwrap(), t0);
        }
        assert!(!l.only_idle("b"));
        assert!(l.answer(b"* 3 EXISTS\r\n", t0).is_none());
        assert!(l.answer(b"zz OK\r\n", t0).is_none());
        let done = l.answer(b"a OK done\r\n", t0 + Duration::from_millis(5));
        let done = done.unwrap();
        assert_eq!((done.label, done.result), ("noop", CommandResult::Ok));
        assert_eq!(done.took, Duration::from_millis(5));
        assert!(l.only_idle("b"));
        let done = l.answer(b"b NO why\r\n", t0).unwrap();
        assert!(done.idle && done.result == CommandResult::No);
        assert!(l.is_empty());
    }
}
