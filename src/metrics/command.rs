//! Per-command metrics for the relay, sans-I/O.
//!
//! [`CommandTracker`] is fed the first line of every client message (`tag
//! NAME …`) and the first line of every backend message; when a tagged
//! `OK`/`NO`/`BAD` answers a pending tag it returns the command's bounded
//! label, the result and how long it took. Time is passed in, so the
//! tracker is tested from transcripts. [`CommandMeter`] wraps it for the
//! relay (a lock and the clock) and records into [`Metrics`].
//!
//! Command labels come from a fixed list ([`command_label`]): anything
//! else is `other`, so clients cannot grow the label set.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Metrics;

/// How a tagged command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandResult {
    Ok,
    No,
    Bad,
}

impl CommandResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            CommandResult::Ok => "ok",
            CommandResult::No => "no",
            CommandResult::Bad => "bad",
        }
    }

    /// `OK`, `NO` or `BAD` in any case.
    pub fn from_word(word: &[u8]) -> Option<Self> {
        if word.eq_ignore_ascii_case(b"OK") {
            Some(CommandResult::Ok)
        } else if word.eq_ignore_ascii_case(b"NO") {
            Some(CommandResult::No)
        } else if word.eq_ignore_ascii_case(b"BAD") {
            Some(CommandResult::Bad)
        } else {
            None
        }
    }
}

/// Every command label that can appear in metrics (plus `other`).
pub const COMMAND_LABELS: &[&str] = &[
    "append",
    "authenticate",
    "capability",
    "check",
    "close",
    "compress",
    "copy",
    "create",
    "delete",
    "deleteacl",
    "enable",
    "examine",
    "expunge",
    "fetch",
    "getacl",
    "getmetadata",
    "getquota",
    "getquotaroot",
    "id",
    "idle",
    "list",
    "listrights",
    "login",
    "logout",
    "lsub",
    "move",
    "myrights",
    "namespace",
    "noop",
    "notify",
    "rename",
    "search",
    "select",
    "setacl",
    "setmetadata",
    "setquota",
    "sort",
    "starttls",
    "status",
    "store",
    "subscribe",
    "thread",
    "uid_copy",
    "uid_expunge",
    "uid_fetch",
    "uid_move",
    "uid_search",
    "uid_sort",
    "uid_store",
    "uid_thread",
    "unselect",
    "unsubscribe",
    "other",
];

/// The bounded metric label of an IMAP command name: `FETCH` → `fetch`,
/// `UID FETCH` (one space) → `uid_fetch`, any case; everything not in
/// [`COMMAND_LABELS`] → `other`.
pub fn command_label(name: &[u8]) -> &'static str {
    let (uid, name) = match name.iter().position(|b| *b == b' ') {
        Some(sp) if name[..sp].eq_ignore_ascii_case(b"UID") => (true, &name[sp + 1..]),
        Some(_) => return "other",
        None => (false, name),
    };
    // Longest known name is 12 bytes (GETQUOTAROOT).
    let mut buf = [0u8; 16];
    if name.is_empty() || name.len() > buf.len() {
        return "other";
    }
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    let lower = &buf[..name.len()];
    if uid {
        return match lower {
            b"copy" => "uid_copy",
            b"expunge" => "uid_expunge",
            b"fetch" => "uid_fetch",
            b"move" => "uid_move",
            b"search" => "uid_search",
            b"sort" => "uid_sort",
            b"store" => "uid_store",
            b"thread" => "uid_thread",
            _ => "other",
        };
    }
    COMMAND_LABELS
        .iter()
        .find(|l| !l.starts_with("uid_") && l.as_bytes() == lower)
        .copied()
        .unwrap_or("other")
}

/// A command answered by the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    pub command: &'static str,
    pub result: CommandResult,
    pub duration: Duration,
}

#[derive(Debug)]
struct Pending {
    tag: Box<[u8]>,
    command: &'static str,
    started: Instant,
}

/// Matches client commands with the backend's tagged answers (sans-I/O).
#[derive(Debug, Default)]
pub struct CommandTracker {
    pending: VecDeque<Pending>,
}

impl CommandTracker {
    /// Most commands in flight that are tracked; older ones are forgotten
    /// (e.g. a command the proxy answered itself never gets a backend answer).
    pub const MAX_PENDING: usize = 64;
    /// Longer tags are not tracked.
    pub const MAX_TAG: usize = 64;

    pub fn new() -> Self {
        Self::default()
    }

    /// Commands waiting for their tagged answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The first line of a client message. Lines that are not `tag SP name`
    /// (IDLE's `DONE`, SASL data) are ignored.
    pub fn client_line(&mut self, line: &[u8], now: Instant) {
        let Some((tag, rest)) = split_word(line) else {
            return;
        };
        if tag.len() > Self::MAX_TAG || !tag.iter().all(|b| is_tag_char(*b)) {
            return;
        }
        let Some((name, rest)) = split_word(rest).or_else(|| whole_word(rest)) else {
            return;
        };
        let command = if name.eq_ignore_ascii_case(b"UID") {
            match split_word(rest).or_else(|| whole_word(rest)) {
                Some((sub, _)) => uid_label(sub),
                None => "other",
            }
        } else {
            command_label(name)
        };
        if self.pending.len() >= Self::MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Pending {
            tag: tag.into(),
            command,
            started: now,
        });
    }

    /// The first line of a backend message: a tagged status line that
    /// answers a pending command completes it.
    pub fn backend_line(&mut self, line: &[u8], now: Instant) -> Option<Completed> {
        if !is_candidate(line) || self.pending.is_empty() {
            return None;
        }
        let (tag, rest) = split_word(line)?;
        let (word, _) = split_word(rest).or_else(|| whole_word(rest))?;
        let result = CommandResult::from_word(word)?;
        let pos = self.pending.iter().position(|p| &*p.tag == tag)?;
        let p = self.pending.remove(pos)?;
        Some(Completed {
            command: p.command,
            result,
            duration: now.saturating_duration_since(p.started),
        })
    }
}

/// The last CRLF-terminated line of a complete response.
fn last_line(bytes: &[u8]) -> &[u8] {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    match body.iter().rposition(|b| *b == b'\n') {
        Some(nl) => &bytes[nl + 1..],
        None => bytes,
    }
}

/// Cheap pre-check: untagged (`*`) and continuation (`+`) lines never
/// complete a command.
fn is_candidate(line: &[u8]) -> bool {
    !matches!(line.first(), None | Some(b'*') | Some(b'+'))
}

fn uid_label(sub: &[u8]) -> &'static str {
    let mut buf = [0u8; 16];
    let n = b"UID ".len() + sub.len();
    if n > buf.len() {
        return "other";
    }
    buf[..4].copy_from_slice(b"UID ");
    buf[4..n].copy_from_slice(sub);
    command_label(&buf[..n])
}

/// `word SP rest` (the word is non-empty).
fn split_word(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = line.iter().position(|b| *b == b' ')?;
    (sp > 0).then(|| (&line[..sp], &line[sp + 1..]))
}

/// The last word of a line, before CRLF.
fn whole_word(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = line
        .iter()
        .position(|b| matches!(b, b'\r' | b'\n'))
        .unwrap_or(line.len());
    (end > 0).then(|| (&line[..end], &line[end..]))
}

/// RFC 9051 tag: ASTRING-CHAR except `+`.
fn is_tag_char(b: u8) -> bool {
    b > b' ' && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
}

/// A [`CommandTracker`] for the relay: both directions share it, it reads
/// the clock and records completed commands in [`Metrics`].
#[derive(Debug)]
pub struct CommandMeter {
    metrics: Arc<Metrics>,
    tracker: Mutex<CommandTracker>,
}

impl CommandMeter {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        CommandMeter {
            metrics,
            tracker: Mutex::new(CommandTracker::new()),
        }
    }

    /// Call with the first line of every client message.
    pub fn client_line(&self, line: &[u8]) {
        let now = Instant::now();
        self.lock().client_line(line, now);
    }

    /// Call with the first line of every backend message.
    pub fn backend_line(&self, line: &[u8]) {
        if !is_candidate(line) {
            return;
        }
        let now = Instant::now();
        let done = self.lock().backend_line(line, now);
        if let Some(c) = done {
            self.metrics
                .command_done(c.command, c.result, c.duration.as_secs_f64());
        }
    }

    /// Call with a response imapmux sends itself (a cache answer, a
    /// refusal): its last line, when tagged, completes the command.
    pub fn proxy_answer(&self, bytes: &[u8]) {
        self.backend_line(last_line(bytes));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CommandTracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(command_label(b"FETCH"), "fetch");
        assert_eq!(command_label(b"fetch"), "fetch");
        assert_eq!(command_label(b"UID FETCH"), "uid_fetch");
        assert_eq!(command_label(b"uid store"), "uid_store");
        assert_eq!(command_label(b"UID"), "other");
        assert_eq!(command_label(b"UID XFOO"), "other");
        assert_eq!(command_label(b"UID uid_fetch"), "other");
        assert_eq!(command_label(b"uid_fetch"), "other");
        assert_eq!(command_label(b"XAPPLEPUSHSERVICE"), "other");
        assert_eq!(command_label(b"X-GM-EXT"), "other");
        assert_eq!(command_label(b""), "other");
        assert_eq!(command_label(b"GETQUOTAROOT"), "getquotaroot");
        assert_eq!(command_label("FETCHé".as_bytes()), "other");
        for l in COMMAND_LABELS {
            if *l == "other" {
                continue;
            }
            let name = l.replace('_', " ").to_ascii_uppercase();
            assert_eq!(command_label(name.as_bytes()), *l, "{name}");
        }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn transcript_with_pipelining_and_idle() {
        let t0 = Instant::now();
        let mut t = CommandTracker::new();
        t.client_line(b"a1 SELECT INBOX\r\n", t0);
        t.client_line(b"a2 UID FETCH 1:* (FLAGS)\r\n", ms(t0, 1));
        t.client_line(b"a3 XFOO\r\n", ms(t0, 2));
        assert_eq!(t.pending(), 3);
        assert_eq!(t.backend_line(b"* 3 EXISTS\r\n", ms(t0, 3)), None);
        assert_eq!(t.backend_line(b"+ go ahead\r\n", ms(t0, 3)), None);
        assert_eq!(
            t.backend_line(b"a1 OK [READ-WRITE] SELECT completed\r\n", ms(t0, 5)),
            Some(Completed {
                command: "select",
                result: CommandResult::Ok,
                duration: Duration::from_millis(5)
            })
        );
        // Out of order answers match by tag.
        let c = t.backend_line(b"a3 BAD unknown\r\n", ms(t0, 6)).unwrap();
        assert_eq!((c.command, c.result), ("other", CommandResult::Bad));
        let c = t.backend_line(b"a2 no failed\r\n", ms(t0, 11)).unwrap();
        assert_eq!(
            (c.command, c.result, c.duration),
            ("uid_fetch", CommandResult::No, Duration::from_millis(10))
        );
        assert_eq!(t.pending(), 0);
        // IDLE: DONE is not a command; the tagged OK completes IDLE.
        t.client_line(b"a4 IDLE\r\n", ms(t0, 20));
        assert_eq!(t.backend_line(b"+ idling\r\n", ms(t0, 21)), None);
        t.client_line(b"DONE\r\n", ms(t0, 30));
        assert_eq!(t.pending(), 1);
        let c = t
            .backend_line(b"a4 OK Idle completed.\r\n", ms(t0, 31))
            .unwrap();
        assert_eq!(c.command, "idle");
        // A tagged line for an unknown tag, or not a status, is ignored.
        t.client_line(b"a5 NOOP\r\n", ms(t0, 40));
        assert_eq!(t.backend_line(b"zz OK done\r\n", ms(t0, 41)), None);
        assert_eq!(t.backend_line(b"a5 FOO bar\r\n", ms(t0, 41)), None);
        assert_eq!(t.backend_line(b"a5\r\n", ms(t0, 41)), None);
        assert_eq!(t.backend_line(b"", ms(t0, 41)), None);
        let c = t.backend_line(b"a5 OK\r\n", ms(t0, 42)).unwrap();
        assert_eq!((c.command, c.result), ("noop", CommandResult::Ok));
    }

    #[test]
    fn odd_input_is_ignored_and_bounded() {
        let t0 = Instant::now();
        let mut t = CommandTracker::new();
        for line in [
            &b""[..],
            b"\r\n",
            b" FETCH\r\n",
            b"* OK\r\n",
            b"+ x\r\n",
            b"DONE\r\n",
            b"a1 \r\n",
            b"a(1 NOOP\r\n",
        ] {
            t.client_line(line, t0);
        }
        assert_eq!(t.pending(), 0);
        let long_tag = vec![b'a'; CommandTracker::MAX_TAG + 1];
        let mut line = long_tag.clone();
        line.extend_from_slice(b" NOOP\r\n");
        t.client_line(&line, t0);
        assert_eq!(t.pending(), 0);
        // Bare command names (no arguments, no CRLF) still count.
        t.client_line(b"b1 NOOP", t0);
        t.client_line(b"b2 UID", t0);
        t.client_line(b"b3 UID FETCH", t0);
        let c = t.backend_line(b"b2 BAD\r\n", t0).unwrap();
        assert_eq!(c.command, "other");
        let c = t.backend_line(b"b3 OK\r\n", t0).unwrap();
        assert_eq!(c.command, "uid_fetch");
        for i in 0..1000 {
            t.client_line(format!("t{i} NOOP\r\n").as_bytes(), t0);
        }
        assert_eq!(t.pending(), CommandTracker::MAX_PENDING);
        // The oldest were forgotten, the newest are still matched.
        assert_eq!(t.backend_line(b"t0 OK\r\n", t0), None);
        assert!(t.backend_line(b"t999 OK\r\n", t0).is_some());
        // A reused tag: answers go to the oldest first.
        let mut t = CommandTracker::new();
        t.client_line(b"x SELECT a\r\n", t0);
        t.client_line(b"x FETCH 1 FLAGS\r\n", t0);
        assert_eq!(t.backend_line(b"x OK\r\n", t0).unwrap().command, "select");
        assert_eq!(t.backend_line(b"x OK\r\n", t0).unwrap().command, "fetch");
    }

    #[test]
    fn meter_records_into_metrics() {
        let m = Arc::new(Metrics::new().unwrap());
        let meter = CommandMeter::new(m.clone());
        meter.client_line(b"a1 UID FETCH 1 (FLAGS)\r\n");
        meter.client_line(b"a2 LIST \"\" *\r\n");
        meter.backend_line(b"* 1 FETCH (FLAGS ())\r\n");
        meter.backend_line(b"a1 OK done\r\n");
        meter.backend_line(b"a2 NO nope\r\n");
        meter.client_line(b"a3 FETCH 1 BODY[]\r\n");
        meter.client_line(b"a4 COMPRESS DEFLATE\r\n");
        meter.proxy_answer(b"* 1 FETCH (BODY[] {5}\r\na\r\nb\n)\r\na3 OK Fetch completed.\r\n");
        meter.proxy_answer(b"a4 NO [CANNOT] not here\r\n");
        meter.proxy_answer(b"* BYE shutting down\r\n");
        let text = m.encode().unwrap();
        assert!(
            text.contains("imapmux_commands_total{command=\"uid_fetch\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("imapmux_commands_total{command=\"list\",result=\"no\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("imapmux_command_duration_seconds_count{command=\"uid_fetch\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("imapmux_commands_total{command=\"fetch\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("imapmux_commands_total{command=\"compress\",result=\"no\"} 1"),
            "{text}"
        );
        assert_eq!(last_line(b"x\r\ny OK\r\n"), b"y OK\r\n");
        assert_eq!(last_line(b"y OK"), b"y OK");
        assert_eq!(last_line(b""), b"");
    }
}
