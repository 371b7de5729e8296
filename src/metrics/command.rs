//! Per-command metric vocabulary: results and bounded labels. The relay
//! core's ledger matches commands with their answers and times them; its
//! metrics hook (`relay::MetricsHook`) records them.
//!
//! Command labels come from a fixed list ([`command_label`]): anything
//! else is `other`, so clients cannot grow the label set.

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
}
