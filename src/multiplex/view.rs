//! The state imapmux keeps for a parked IDLE client (its backend
//! connection released) and the pure computations of waking it: which
//! EXPUNGE / EXISTS / FETCH FLAGS responses the client must see so that its
//! view equals the mailbox's current state, exactly as if it had stayed
//! attached (RFC 3501/9051 semantics: EXPUNGE sequence numbers shift).
//!
//! Sans-I/O: response lines in, client bytes out.

use std::fmt::Write as _;

use crate::imap::enabled::Enabled;

/// Most messages a parked view follows (a backend claiming more is not
/// believed: the client stays attached).
pub const MAX_UIDS: u32 = 10_000_000;

/// A sorted set of UIDs, kept as ranges (mailboxes are mostly contiguous).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UidList {
    ranges: Vec<(u32, u32)>,
    len: u32,
}

impl UidList {
    /// From UIDs in any order (duplicates ignored).
    pub fn from_uids(mut uids: Vec<u32>) -> UidList {
        uids.sort_unstable();
        uids.dedup();
        let mut l = UidList::default();
        for u in uids {
            l.push(u);
        }
        l
    }

    /// Append a UID larger than all present ones.
    fn push(&mut self, u: u32) {
        match self.ranges.last_mut() {
            Some((_, hi)) if u == hi.wrapping_add(1) => *hi = u,
            Some((_, hi)) if u <= *hi => return,
            _ => self.ranges.push((u, u)),
        }
        self.len += 1;
    }

    /// From an IMAP sequence set of UIDs (`1:5,7,9:10`), as in ESEARCH ALL.
    pub fn from_set(set: &str) -> Option<UidList> {
        let mut ranges = Vec::new();
        for part in set.split(',').filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once(':') {
                Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
                None => {
                    let n = part.parse::<u32>().ok()?;
                    (n, n)
                }
            };
            ranges.push((a.min(b), a.max(b)));
        }
        ranges.sort_unstable();
        let mut l = UidList::default();
        for (a, b) in ranges {
            l.push_range(a, b);
            if l.len > MAX_UIDS {
                return None;
            }
        }
        Some(l)
    }

    /// Append the range `a..=b` (sorted input; overlaps merged): constant
    /// time per range, whatever its width.
    fn push_range(&mut self, a: u32, b: u32) {
        let a = match self.ranges.last() {
            Some(&(_, hi)) if b <= hi => return,
            Some(&(_, hi)) if a <= hi => hi + 1,
            _ => a,
        };
        match self.ranges.last_mut() {
            Some((_, hi)) if a == hi.wrapping_add(1) => *hi = b,
            _ => self.ranges.push((a, b)),
        }
        self.len = self.len.saturating_add(b - a + 1);
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Binary search over the ranges.
    pub fn contains(&self, uid: u32) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < uid);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= uid)
    }

    /// Sequence number (1-based) of `uid`.
    pub fn seq_of(&self, uid: u32) -> Option<u32> {
        let mut before = 0;
        for &(lo, hi) in &self.ranges {
            if uid < lo {
                return None;
            }
            if uid <= hi {
                return Some(before + (uid - lo) + 1);
            }
            before += hi - lo + 1;
        }
        None
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ranges.iter().flat_map(|&(lo, hi)| lo..=hi)
    }

    /// Ranges, for memory accounting and debugging.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// As an IMAP sequence set (`1:5,7`), empty when there are no UIDs.
    pub fn to_set(&self) -> String {
        let mut s = String::new();
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            if lo == hi {
                let _ = write!(s, "{lo}");
            } else {
                let _ = write!(s, "{lo}:{hi}");
            }
        }
        s
    }
}

/// The flags of every message, for backends without CONDSTORE (changes
/// are found by comparing). Flag lists are interned: mailboxes have few
/// distinct ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagSnapshot {
    table: Vec<String>,
    /// (UID, index into `table`), sorted by UID.
    by_uid: Vec<(u32, u32)>,
}

impl FlagSnapshot {
    /// From (UID, FLAGS text) pairs, e.g. the answers to `UID FETCH 1:* (FLAGS)`.
    /// Interning is a hash lookup per message (linear in the mailbox, however
    /// many distinct flag lists a backend sends).
    pub fn from_pairs(pairs: &[(u32, String)]) -> FlagSnapshot {
        let mut s = FlagSnapshot::default();
        let mut index: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
        for (uid, flags) in pairs {
            let next = s.table.len() as u32;
            let idx = *index.entry(flags.as_str()).or_insert(next);
            if idx == next {
                s.table.push(flags.clone());
            }
            s.by_uid.push((*uid, idx));
        }
        s.by_uid.sort_unstable();
        s.by_uid.dedup_by_key(|(u, _)| *u);
        s
    }

    pub fn get(&self, uid: u32) -> Option<&str> {
        let i = self.by_uid.binary_search_by_key(&uid, |(u, _)| *u).ok()?;
        self.table
            .get(self.by_uid[i].1 as usize)
            .map(String::as_str)
    }

    pub fn uids(&self) -> UidList {
        UidList::from_uids(self.by_uid.iter().map(|(u, _)| *u).collect())
    }
}

/// What a parked client's view of its selected mailbox is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedView {
    pub mailbox: String,
    /// EXAMINE (true) or SELECT.
    pub read_only: bool,
    pub uidvalidity: u32,
    /// HIGHESTMODSEQ no later than the view: changes above it are replayed
    /// (0 without CONDSTORE).
    pub modseq: u64,
    pub uids: UidList,
    /// Without CONDSTORE: every message's flags, to compare against.
    pub flags: Option<FlagSnapshot>,
    /// What the client enabled: the shape of the responses it gets.
    pub enabled: Enabled,
}

/// A message whose flags changed (or, without CONDSTORE, every message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagChange {
    pub uid: u32,
    /// The FLAGS list text with parentheses.
    pub flags: String,
    /// Its MODSEQ (0 when the backend has no CONDSTORE).
    pub modseq: u64,
}

/// The mailbox now, as the backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxNow {
    pub uidvalidity: u32,
    pub modseq: u64,
    pub uids: UidList,
    /// Messages changed since the view's modseq.
    pub changed: Vec<FlagChange>,
}

/// What catching a parked client up produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUp {
    /// The untagged responses, in the client's shape.
    pub bytes: Vec<u8>,
    /// The view after them.
    pub next: ParkedView,
    /// With QRESYNC: the HIGHESTMODSEQ to report after them (as Dovecot
    /// does when the responses sent do not already carry it), in the
    /// tagged OK of NOOP/CHECK or as `* OK [HIGHESTMODSEQ n]` in IDLE.
    pub highest: Option<u64>,
}

/// The responses that bring the client from `view` to `now`, and the new
/// view. `None` when the UIDVALIDITY changed (the client must reselect).
/// With QRESYNC, expunges are one `* VANISHED` and FETCH carries UID and
/// MODSEQ; with CONDSTORE, FETCH carries MODSEQ (Dovecot's order: UID,
/// MODSEQ, FLAGS).
pub fn catch_up(view: &ParkedView, now: &MailboxNow) -> Option<CatchUp> {
    if now.uidvalidity != view.uidvalidity {
        return None;
    }
    let e = view.enabled;
    let mut out = String::new();
    // Flag changes first, numbered as the client numbers its messages now
    // (Dovecot reports a flag change before the expunge that follows it),
    // in one walk of the client's view; new or gone messages are skipped.
    let mut changed: Vec<&FlagChange> = now.changed.iter().collect();
    changed.sort_unstable_by_key(|c| c.uid);
    let mut seqs = view.uids.iter().zip(1u32..).peekable();
    let mut fetch_modseq = 0;
    for c in changed {
        let seq = loop {
            match seqs.peek() {
                Some(&(u, s)) if u == c.uid => break Some(s),
                Some(&(u, _)) if u < c.uid => {
                    seqs.next();
                }
                _ => break None,
            }
        };
        // Without CONDSTORE `changed` holds every message: only differences
        // count (\Recent is per session: the watcher never has it).
        let same = view
            .flags
            .as_ref()
            .and_then(|f| f.get(c.uid))
            .is_some_and(|old| without_recent(old) == without_recent(&c.flags));
        let (Some(seq), false, true) = (seq, same, now.uids.contains(c.uid)) else {
            continue;
        };
        let (uid, flags, m) = (c.uid, &c.flags, c.modseq);
        if e.qresync {
            let _ = write!(
                out,
                "* {seq} FETCH (UID {uid} MODSEQ ({m}) FLAGS {flags})\r\n"
            );
        } else if e.condstore {
            let _ = write!(out, "* {seq} FETCH (MODSEQ ({m}) FLAGS {flags})\r\n");
        } else {
            let _ = write!(out, "* {seq} FETCH (FLAGS {flags})\r\n");
        }
        fetch_modseq = fetch_modseq.max(m);
    }
    // Expunged messages (with their sequence numbers in the view), found
    // in one walk; EXPUNGEs sent highest first: earlier ones then do not
    // renumber the later ones.
    let gone: Vec<(u32, u32)> = view
        .uids
        .iter()
        .zip(1u32..)
        .filter(|(u, _)| !now.uids.contains(*u))
        .collect();
    if e.qresync {
        if !gone.is_empty() {
            let set = UidList::from_uids(gone.iter().map(|(u, _)| *u).collect());
            let _ = write!(out, "* VANISHED {}\r\n", set.to_set());
        }
    } else {
        for (_, seq) in gone.iter().rev() {
            let _ = write!(out, "* {seq} EXPUNGE\r\n");
        }
    }
    let kept = view.uids.len() - gone.len() as u32;
    if now.uids.len() != kept {
        let _ = write!(out, "* {} EXISTS\r\n", now.uids.len());
    }
    let modseq = now.modseq.max(view.modseq);
    let highest =
        (e.qresync && now.modseq > view.modseq && now.modseq > fetch_modseq).then_some(now.modseq);
    let next = ParkedView {
        mailbox: view.mailbox.clone(),
        read_only: view.read_only,
        uidvalidity: now.uidvalidity,
        modseq,
        uids: now.uids.clone(),
        flags: view.flags.as_ref().map(|_| {
            let pairs: Vec<(u32, String)> = now
                .changed
                .iter()
                .map(|c| (c.uid, c.flags.clone()))
                .collect();
            FlagSnapshot::from_pairs(&pairs)
        }),
        enabled: e,
    };
    Some(CatchUp {
        bytes: out.into_bytes(),
        next,
        highest,
    })
}

/// MODSEQ of a FETCH response line (`… MODSEQ (12) …`).
pub fn fetch_modseq(line: &[u8]) -> Option<u64> {
    number_after(line, b"MODSEQ (")
}

/// A FLAGS list without `\Recent` (a session-specific flag).
fn without_recent(flags: &str) -> String {
    flags
        .trim_matches(['(', ')'])
        .split_whitespace()
        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The number after `key` (e.g. `HIGHESTMODSEQ `) in a response line.
pub fn number_after(line: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(line, key)? + key.len();
    let digits: &[u8] = &line[at..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// UIDs from `* ESEARCH (TAG "t") UID ALL 1:3,5` or `* SEARCH 1 2 3`.
pub fn search_uids(line: &[u8]) -> Option<UidList> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    if let Some(rest) = text.strip_prefix("* ESEARCH") {
        let mut words = rest.split_whitespace();
        while let Some(w) = words.next() {
            if w.eq_ignore_ascii_case("ALL") {
                return UidList::from_set(words.next()?);
            }
        }
        return Some(UidList::default());
    }
    let rest = text.strip_prefix("* SEARCH")?;
    let uids: Option<Vec<u32>> = rest.split_whitespace().map(|w| w.parse().ok()).collect();
    Some(UidList::from_uids(uids?))
}

/// (UID, FLAGS text) from `* 5 FETCH (UID 12 FLAGS (\Seen) MODSEQ (3))`.
pub fn fetch_uid_flags(line: &[u8]) -> Option<(u32, String)> {
    let text = std::str::from_utf8(line).ok()?;
    if !text.starts_with("* ") || !text.contains(" FETCH (") {
        return None;
    }
    let uid = number_after(line, b"UID ")? as u32;
    let start = text.find("FLAGS (")? + "FLAGS ".len();
    let end = start + text[start..].find(')')? + 1;
    Some((uid, text[start..end].to_string()))
}

/// Remove `MODSEQ (n)` from an unsolicited FETCH line (for a client that
/// never enabled CONDSTORE, while imapmux's own connection has it on).
pub fn strip_modseq(line: &[u8]) -> Vec<u8> {
    let Some(at) = memchr::memmem::find(line, b"MODSEQ (") else {
        return line.to_vec();
    };
    let Some(close) = line[at..].iter().position(|b| *b == b')') else {
        return line.to_vec();
    };
    let mut out = line[..at].to_vec();
    let mut rest = &line[at + close + 1..];
    if out.ends_with(b" ") && (rest.starts_with(b" ") || rest.starts_with(b")")) {
        out.pop();
    } else if rest.starts_with(b" ") {
        rest = &rest[1..];
    }
    out.extend_from_slice(rest);
    if out.ends_with(b"FETCH ()\r\n") {
        return Vec::new(); // nothing left to say
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(u: &[u32]) -> UidList {
        UidList::from_uids(u.to_vec())
    }

    fn view(u: &[u32]) -> ParkedView {
        ParkedView {
            mailbox: "INBOX".into(),
            read_only: false,
            uidvalidity: 7,
            modseq: 10,
            uids: list(u),
            flags: None,
            enabled: Enabled::default(),
        }
    }

    fn change(uid: u32, flags: &str) -> FlagChange {
        FlagChange {
            uid,
            flags: flags.to_string(),
            modseq: 0,
        }
    }

    /// The bytes and next view of a catch-up.
    fn cu(view: &ParkedView, now: &MailboxNow) -> (Vec<u8>, ParkedView) {
        let c = catch_up(view, now).unwrap();
        (c.bytes, c.next)
    }

    fn now(u: &[u32], changed: &[(u32, &str)]) -> MailboxNow {
        MailboxNow {
            uidvalidity: 7,
            modseq: 20,
            uids: list(u),
            changed: changed.iter().map(|(u, f)| change(*u, f)).collect(),
        }
    }

    #[test]
    fn uid_list_ranges_and_sequence_numbers() {
        let l = list(&[5, 1, 2, 3, 9, 10, 3]);
        assert_eq!(l.len(), 6);
        assert_eq!(l.to_set(), "1:3,5,9:10");
        assert_eq!(l.range_count(), 3);
        assert_eq!(l.seq_of(1), Some(1));
        assert_eq!(l.seq_of(5), Some(4));
        assert_eq!(l.seq_of(10), Some(6));
        assert_eq!(l.seq_of(4), None);
        assert_eq!(UidList::from_set("9:10,1:3,5").unwrap(), l);
        assert_eq!(UidList::from_set("x"), None);
        // 100,000 contiguous UIDs are one range.
        let big = UidList::from_set("1:100000").unwrap();
        assert_eq!((big.len(), big.range_count()), (100_000, 1));
    }

    #[test]
    fn new_mail_is_exists() {
        let (out, next) = cu(&view(&[1, 2, 3]), &now(&[1, 2, 3, 4, 5], &[]));
        assert_eq!(out, b"* 5 EXISTS\r\n");
        assert_eq!(next.uids.len(), 5);
        assert_eq!(next.modseq, 20);
    }

    #[test]
    fn expunges_highest_first_with_the_client_numbers() {
        // Client sees 1,2,3,4,5 (seq 1..5); 2 and 4 are gone, 6 arrived.
        let (out, _) = cu(&view(&[1, 2, 3, 4, 5]), &now(&[1, 3, 5, 6], &[]));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "* 4 EXPUNGE\r\n* 2 EXPUNGE\r\n* 4 EXISTS\r\n"
        );
    }

    #[test]
    fn flag_changes_use_the_new_numbers_and_skip_new_or_gone_messages() {
        let (out, _) = cu(
            &view(&[10, 20, 30]),
            &now(
                &[20, 30, 40],
                &[(30, "(\\Seen)"), (40, "()"), (10, "(\\Deleted)")],
            ),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "* 3 FETCH (FLAGS (\\Seen))\r\n* 1 EXPUNGE\r\n* 3 EXISTS\r\n"
        );
    }

    #[test]
    fn nothing_changed_says_nothing_and_uidvalidity_change_is_none() {
        let (out, _) = cu(&view(&[1, 2]), &now(&[1, 2], &[]));
        assert!(out.is_empty());
        let mut n = now(&[1, 2], &[]);
        n.uidvalidity = 8;
        assert!(catch_up(&view(&[1, 2]), &n).is_none());
    }

    #[test]
    fn without_condstore_only_changed_flags_are_sent() {
        let pairs = |p: &[(u32, &str)]| -> Vec<(u32, String)> {
            p.iter().map(|(u, f)| (*u, f.to_string())).collect()
        };
        let mut v = view(&[1, 2, 3]);
        v.modseq = 0;
        v.flags = Some(FlagSnapshot::from_pairs(&pairs(&[
            (1, "(\\Recent)"),
            (2, "(\\Seen)"),
            (3, "()"),
        ])));
        assert_eq!(v.flags.as_ref().unwrap().get(2), Some("(\\Seen)"));
        assert_eq!(v.flags.as_ref().unwrap().uids(), list(&[1, 2, 3]));
        // Now: 1 unchanged, 2 unseen again, 3 expunged, 4 new.
        let mut n = now(&[1, 2, 4], &[]);
        n.modseq = 0;
        n.changed = vec![change(1, "()"), change(2, "()"), change(4, "()")];
        let (out, next) = cu(&v, &n);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "* 2 FETCH (FLAGS ())\r\n* 3 EXPUNGE\r\n* 3 EXISTS\r\n"
        );
        assert_eq!(next.flags.unwrap().get(4), Some("()"));
    }

    #[test]
    fn condstore_and_qresync_clients_get_their_shape() {
        // Dovecot 2.3.19 in IDLE, measured: CONDSTORE
        // `* 2 FETCH (MODSEQ (212) FLAGS ())`, QRESYNC
        // `* 2 FETCH (UID 2 MODSEQ (216) FLAGS (\Flagged))`,
        // `* VANISHED 7`, then `* OK [HIGHESTMODSEQ 219] Highest`.
        let mut v = view(&[1, 2, 3, 7]);
        let mut n = now(&[1, 2, 3, 8], &[]);
        n.changed = vec![FlagChange {
            uid: 2,
            flags: "(\\Flagged)".into(),
            modseq: 16,
        }];
        v.enabled.condstore = true;
        let c = catch_up(&v, &n).unwrap();
        assert_eq!(
            String::from_utf8(c.bytes).unwrap(),
            "* 2 FETCH (MODSEQ (16) FLAGS (\\Flagged))\r\n* 4 EXPUNGE\r\n* 4 EXISTS\r\n"
        );
        assert_eq!(c.highest, None);
        v.enabled.qresync = true;
        let c = catch_up(&v, &n).unwrap();
        assert_eq!(
            String::from_utf8(c.bytes).unwrap(),
            "* 2 FETCH (UID 2 MODSEQ (16) FLAGS (\\Flagged))\r\n* VANISHED 7\r\n* 4 EXISTS\r\n"
        );
        // The FETCH said 16, the mailbox is at 20: reported.
        assert_eq!(c.highest, Some(20));
        assert_eq!(c.next.modseq, 20);
        assert!(c.next.enabled.qresync);
        // A FETCH that already carries the highest modseq: not repeated.
        n.changed[0].modseq = 20;
        assert_eq!(catch_up(&v, &n).unwrap().highest, None);
        // Several expunged: one VANISHED with a compact set.
        let v = ParkedView {
            uids: list(&[1, 2, 3, 4, 5, 9]),
            ..v
        };
        let c = catch_up(&v, &now(&[1, 5], &[])).unwrap();
        assert_eq!(String::from_utf8(c.bytes).unwrap(), "* VANISHED 2:4,9\r\n");
        assert_eq!(c.highest, Some(20));
        // Nothing changed at all: nothing said, no HIGHESTMODSEQ.
        let mut same = now(&[1, 2, 3, 4, 5, 9], &[]);
        same.modseq = 10;
        let c = catch_up(&v, &same).unwrap();
        assert!(c.bytes.is_empty() && c.highest.is_none());
    }

    #[test]
    fn parsers() {
        assert_eq!(
            search_uids(b"* ESEARCH (TAG \"x\") UID ALL 1:3,7\r\n").unwrap(),
            list(&[1, 2, 3, 7])
        );
        assert!(search_uids(b"* ESEARCH (TAG \"x\") UID\r\n")
            .unwrap()
            .is_empty());
        assert_eq!(search_uids(b"* SEARCH 4 2\r\n").unwrap(), list(&[2, 4]));
        assert_eq!(search_uids(b"* 3 EXISTS\r\n"), None);
        assert_eq!(
            fetch_uid_flags(b"* 5 FETCH (UID 12 FLAGS (\\Seen $Junk) MODSEQ (3))\r\n"),
            Some((12, "(\\Seen $Junk)".into()))
        );
        assert_eq!(fetch_uid_flags(b"* 5 FETCH (FLAGS ())\r\n"), None);
        assert_eq!(
            fetch_modseq(b"* 5 FETCH (UID 12 FLAGS (\\Seen) MODSEQ (3))\r\n"),
            Some(3)
        );
        assert_eq!(fetch_modseq(b"* 5 FETCH (UID 12 FLAGS ())\r\n"), None);
        assert_eq!(
            number_after(b"* OK [HIGHESTMODSEQ 42] x", b"HIGHESTMODSEQ "),
            Some(42)
        );
        assert_eq!(
            number_after(b"* STATUS INBOX (HIGHESTMODSEQ 9 UIDNEXT 4)", b"UIDNEXT "),
            Some(4)
        );
    }

    #[test]
    fn modseq_is_stripped() {
        assert_eq!(
            strip_modseq(b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (5))\r\n"),
            b"* 1 FETCH (FLAGS (\\Seen))\r\n".to_vec()
        );
        assert_eq!(
            strip_modseq(b"* 1 FETCH (MODSEQ (5) FLAGS ())\r\n"),
            b"* 1 FETCH (FLAGS ())\r\n".to_vec()
        );
        assert!(strip_modseq(b"* 1 FETCH (MODSEQ (5))\r\n").is_empty());
        assert_eq!(strip_modseq(b"* 3 EXISTS\r\n"), b"* 3 EXISTS\r\n".to_vec());
    }

    #[test]
    fn hostile_sizes_stay_linear() {
        // 100,000 distinct flag lists (a backend's keywords): interned by
        // hash, every index right (u16 indexes wrapped past 65,535).
        let pairs: Vec<(u32, String)> = (1..=100_000u32).map(|u| (u, format!("(k{u})"))).collect();
        let f = FlagSnapshot::from_pairs(&pairs);
        assert_eq!(f.get(70_000), Some("(k70000)"));
        assert_eq!(f.get(100_000), Some("(k100000)"));
        // Wide ranges cost one step each; a claim past MAX_UIDS is refused.
        let l = UidList::from_set("1:4000000,4000002:9000000").unwrap();
        assert_eq!(l.len(), 8_999_999);
        assert!(l.contains(4_000_002) && !l.contains(4_000_001));
        assert!(UidList::from_set("1:4000000000").is_none());
        // A fragmented mailbox (every other UID): catch-up walks it once.
        let view_uids = UidList::from_uids((1..=200_000u32).map(|u| u * 2).collect());
        let now_uids = UidList::from_uids(
            (1..=200_000u32)
                .map(|u| u * 2)
                .filter(|u| u % 1000 != 0)
                .collect(),
        );
        let view = ParkedView {
            mailbox: "INBOX".into(),
            read_only: false,
            uidvalidity: 1,
            modseq: 0,
            uids: view_uids,
            flags: None,
            enabled: Enabled::default(),
        };
        let now = MailboxNow {
            uidvalidity: 1,
            modseq: 0,
            uids: now_uids,
            changed: vec![change(4, "(\\Seen)"), change(2, "(\\Seen)")],
        };
        let (out, next) = cu(&view, &now);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.matches("EXPUNGE").count(), 400);
        assert!(out.contains("\r\n* 200000 EXPUNGE\r\n"), "{}", &out[..80]);
        assert!(out.starts_with("* 1 FETCH (FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS (\\Seen))\r\n"));
        assert_eq!(next.uids.len(), 199_600);
    }
}
