//! The backend's answer to a SELECT or EXAMINE, kept so that a parked
//! session can answer the same command again without the backend while
//! the mailbox has not changed since (RFC 9051 §6.3.2, RFC 3501 §6.3.1).
//!
//! A re-SELECT of the selected mailbox gets what the first one got, with
//! two differences Dovecot shows and the RFCs allow: `* OK [CLOSED]` first
//! (the previous selection ends, RFC 7162 §3.2.11 / RFC 9051 §7.1), and
//! `* 0 RECENT`: the session already saw the recent messages (RFC 3501
//! §2.3.2). Anything that changes the mailbox or the session's view of it
//! makes the kept answer unusable; the caller drops it then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Most bytes of untagged data kept (Dovecot's answer is ~350 bytes;
/// anything much larger is not worth keeping per parked client).
const MAX_LINES: usize = 2048;

/// The untagged responses of a SELECT answer that are kept; anything else
/// (vendor data, another command's responses) makes the answer unusable.
/// `[CLOSED]` is left out: it describes the mailbox selected before.
fn kept(line: &[u8]) -> Keep {
    let Some(rest) = line.strip_prefix(b"* ") else {
        return Keep::Unusable;
    };
    let upper = |s: &[u8]| s.to_ascii_uppercase();
    if upper(rest.get(..6).unwrap_or_default()) == b"FLAGS " {
        return Keep::Line;
    }
    if let Some(code) = rest
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case(b"OK ["))
        .and_then(|_| rest.get(4..))
    {
        let name_end = code
            .iter()
            .position(|&b| b == b' ' || b == b']')
            .unwrap_or(code.len());
        let name = upper(code.get(..name_end).unwrap_or_default());
        return match name.as_slice() {
            b"CLOSED" => Keep::Skip,
            b"HIGHESTMODSEQ" => Keep::Modseq,
            b"NOMODSEQ" => Keep::NoModseq,
            b"PERMANENTFLAGS" | b"UNSEEN" | b"UIDVALIDITY" | b"UIDNEXT" | b"MAILBOXID" => {
                Keep::Line
            }
            _ => Keep::Unusable,
        };
    }
    let mut words = rest.splitn(3, |&b| b == b' ');
    let (n, what) = (words.next(), words.next());
    if n.is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit)) {
        match what.map(upper).as_deref() {
            Some(b"EXISTS") => return Keep::Line,
            Some(b"RECENT") => return Keep::Recent,
            _ => {}
        }
    }
    Keep::Unusable
}

enum Keep {
    Line,
    Recent,
    /// `* OK [HIGHESTMODSEQ n] …`: given again with the value of then.
    Modseq,
    NoModseq,
    Skip,
    Unusable,
}

/// A SELECT/EXAMINE answer, as the backend gave it (with `* 0 RECENT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectReply {
    /// The untagged lines, CRLF-terminated.
    lines: Box<[u8]>,
    /// The tagged completion after the tag (`OK [READ-WRITE] …\r\n`).
    tagged: Box<[u8]>,
    /// The backend said it keeps no modification sequences.
    nomodseq: bool,
}

impl SelectReply {
    /// The answer to the same command again, tagged `tag`, with the
    /// mailbox's HIGHESTMODSEQ now (0: the backend reports none). Dovecot
    /// reports it once any session enabled CONDSTORE on the mailbox (as
    /// imapmux does when it parks), so it is given whenever known, after
    /// the other data as Dovecot does.
    pub fn again(&self, tag: &str, modseq: u64) -> Vec<u8> {
        const CLOSED: &[u8] = b"* OK [CLOSED] Previous mailbox closed.\r\n";
        let mut out = Vec::with_capacity(
            CLOSED.len() + self.lines.len() + 48 + tag.len() + 1 + self.tagged.len(),
        );
        out.extend_from_slice(CLOSED);
        out.extend_from_slice(&self.lines);
        if modseq > 0 && !self.nomodseq {
            out.extend_from_slice(format!("* OK [HIGHESTMODSEQ {modseq}] Highest\r\n").as_bytes());
        }
        out.extend_from_slice(tag.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.tagged);
        out
    }

    /// Heap bytes held (memory accounting).
    pub fn heap_size(&self) -> usize {
        self.lines.len() + self.tagged.len()
    }
}

/// Collects a SELECT answer from the backend's lines.
#[derive(Debug, Default)]
pub struct Recorder {
    lines: Vec<u8>,
    nomodseq: bool,
    unusable: bool,
}

impl Recorder {
    /// An untagged line that arrived while the SELECT was in flight.
    pub fn line(&mut self, line: &[u8]) {
        if self.unusable {
            return;
        }
        let line = match line.strip_suffix(b"\r\n") {
            Some(l) => l,
            None => line.strip_suffix(b"\n").unwrap_or(line),
        };
        match kept(line) {
            Keep::Line => self.lines.extend_from_slice(line),
            Keep::Recent => self.lines.extend_from_slice(b"* 0 RECENT"),
            Keep::NoModseq => {
                self.nomodseq = true;
                self.lines.extend_from_slice(line);
            }
            Keep::Modseq | Keep::Skip => return,
            Keep::Unusable => return self.spoil(),
        }
        self.lines.extend_from_slice(b"\r\n");
        if self.lines.len() > MAX_LINES {
            self.spoil();
        }
    }

    /// Something else happened meanwhile (a pipelined command): not kept.
    pub fn spoil(&mut self) {
        self.unusable = true;
        self.lines = Vec::new();
    }

    /// The tagged OK arrived; `rest` is the line after the tag (with or
    /// without its CRLF).
    pub fn finish(self, rest: &[u8]) -> Option<SelectReply> {
        let ok = rest
            .get(..3)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"OK "));
        if self.unusable || !ok || rest.len() > 512 {
            return None;
        }
        let text = rest.strip_suffix(b"\r\n").unwrap_or(rest);
        // Dovecot's timing suffix ("(0.002 + 0.000 + 0.001 secs)") says how
        // long that SELECT took, not this one: left out, so sessions of one
        // mailbox share one answer.
        let mut tagged = match before_timing(text) {
            Some(head) => [head, b"."].concat(),
            None => text.to_vec(),
        };
        tagged.extend_from_slice(b"\r\n");
        Some(SelectReply {
            lines: self.lines.into_boxed_slice(),
            tagged: tagged.into_boxed_slice(),
            nomodseq: self.nomodseq,
        })
    }
}

/// `OK [READ-WRITE] Select completed (0.002 + 0.000 secs).` → the text
/// before ` (`, when what follows is only Dovecot's timing.
fn before_timing(text: &[u8]) -> Option<&[u8]> {
    let open = memchr::memrchr(b'(', text)?;
    let tail = text.get(open..)?;
    let timing = tail.ends_with(b" secs).")
        && tail
            .iter()
            .all(|b| b.is_ascii_digit() || b" .+()secs".contains(b));
    let head = text.get(..open.checked_sub(1)?)?;
    (timing && text.get(open - 1) == Some(&b' ')).then_some(head)
}

/// Sessions whose SELECT answers are the same share one copy (users'
/// devices, webmail sessions of one mailbox): a weak set, pruned as it
/// grows.
pub fn intern(r: SelectReply) -> Arc<SelectReply> {
    static POOL: OnceLock<Mutex<HashMap<u64, Weak<SelectReply>>>> = OnceLock::new();
    let key = xxhash_rust::xxh3::xxh3_64(&r.lines)
        ^ xxhash_rust::xxh3::xxh3_64(&r.tagged).rotate_left(1)
        ^ u64::from(r.nomodseq);
    let Ok(mut pool) = POOL.get_or_init(Default::default).lock() else {
        return Arc::new(r);
    };
    if let Some(have) = pool.get(&key).and_then(Weak::upgrade) {
        if *have == r {
            return have;
        }
    }
    let new = Arc::new(r);
    pool.insert(key, Arc::downgrade(&new));
    if pool.len() >= 1024 && pool.len().is_power_of_two() {
        pool.retain(|_, w| w.strong_count() > 0);
    }
    new
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const DOVECOT: &[&[u8]] = &[
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n",
        b"* 201 EXISTS\r\n",
        b"* 1 RECENT\r\n",
        b"* OK [UNSEEN 1] First unseen.\r\n",
        b"* OK [UIDVALIDITY 1796413307] UIDs valid\r\n",
        b"* OK [UIDNEXT 40243] Predicted next UID\r\n",
        b"* OK [HIGHESTMODSEQ 120326] Highest\r\n",
    ];

    fn record(lines: &[&[u8]]) -> Recorder {
        let mut r = Recorder::default();
        for l in lines {
            r.line(l);
        }
        r
    }

    #[test]
    fn a_reselect_gets_closed_first_and_no_recent() {
        let mut first = vec![&b"* OK [CLOSED] Previous mailbox closed.\r\n"[..]];
        first.extend_from_slice(DOVECOT);
        let reply = record(&first)
            .finish(b"OK [READ-WRITE] Select completed (0.002 + 0.000 + 0.001 secs).\r\n")
            .unwrap();
        let again = String::from_utf8(reply.again("c", 120326)).unwrap();
        let want = "* OK [CLOSED] Previous mailbox closed.\r\n\
* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n\
* 201 EXISTS\r\n\
* 0 RECENT\r\n\
* OK [UNSEEN 1] First unseen.\r\n\
* OK [UIDVALIDITY 1796413307] UIDs valid\r\n\
* OK [UIDNEXT 40243] Predicted next UID\r\n\
* OK [HIGHESTMODSEQ 120326] Highest\r\n\
c OK [READ-WRITE] Select completed.\r\n";
        assert_eq!(again, want);
        assert!(reply.heap_size() < 512);
        // Without modification sequences, or where the backend said so.
        assert!(!String::from_utf8(reply.again("c", 0))
            .unwrap()
            .contains("HIGHESTMODSEQ"));
        let nomodseq = record(&[
            b"* 2 EXISTS\r\n",
            b"* OK [NOMODSEQ] No permanent modsequences\r\n",
        ])
        .finish(b"OK done\r\n")
        .unwrap();
        assert_eq!(
            nomodseq.again("t", 7),
            b"* OK [CLOSED] Previous mailbox closed.\r\n* 2 EXISTS\r\n\
              * OK [NOMODSEQ] No permanent modsequences\r\nt OK done\r\n"
        );
    }

    #[test]
    fn answers_alike_are_shared_and_timing_is_left_out() {
        let a = record(DOVECOT)
            .finish(b"OK [READ-WRITE] Select completed (0.002 + 0.000 + 0.001 secs).\r\n")
            .unwrap();
        let b = record(DOVECOT)
            .finish(b"OK [READ-WRITE] Select completed (0.001 + 0.000 secs).")
            .unwrap();
        assert_eq!(a, b);
        let (a, b) = (intern(a), intern(b));
        assert!(Arc::ptr_eq(&a, &b));
        // Not Dovecot's timing: kept as said.
        let odd = record(DOVECOT).finish(b"OK done (fast)\r\n").unwrap();
        assert!(String::from_utf8(odd.again("t", 0))
            .unwrap()
            .ends_with("t OK done (fast)\r\n"));
        let other = intern(odd);
        assert!(!Arc::ptr_eq(&a, &other));
    }

    #[test]
    fn anything_unexpected_or_failed_keeps_nothing() {
        // Another command's data in between.
        let mut lines = DOVECOT.to_vec();
        lines.push(b"* 3 FETCH (FLAGS (\\Seen))\r\n");
        assert!(record(&lines).finish(b"OK done\r\n").is_none());
        // Vendor response codes.
        assert!(record(&[b"* OK [XFOO 1] what\r\n"])
            .finish(b"OK x\r\n")
            .is_none());
        // A failed SELECT.
        assert!(record(DOVECOT).finish(b"NO no such mailbox\r\n").is_none());
        // A pipelined command.
        let mut r = record(DOVECOT);
        r.spoil();
        r.line(b"* 1 EXISTS\r\n");
        assert!(r.finish(b"OK done\r\n").is_none());
        // Too large.
        let big = format!("* FLAGS ({})\r\n", "\\X ".repeat(1000));
        assert!(record(&[big.as_bytes()]).finish(b"OK x\r\n").is_none());
        // Odd shapes.
        for l in [
            &b"*"[..],
            b"* ",
            b"* 1",
            b"* x EXISTS\r\n",
            b"+ go\r\n",
            b"\xff\r\n",
        ] {
            assert!(record(&[l]).finish(b"OK x\r\n").is_none(), "{l:?}");
        }
    }
}
