//! The extensions a session has enabled that change how the server
//! reports changes to it (RFC 5161 ENABLE, RFC 7162 CONDSTORE/QRESYNC,
//! RFC 6855 UTF8=ACCEPT), and how a client command affects them.
//!
//! What counts is what the backend confirmed (`* ENABLED …`), plus
//! CONDSTORE enabled by use (RFC 7162 §3.1: SELECT/EXAMINE with the
//! CONDSTORE parameter, FETCH MODSEQ or CHANGEDSINCE, SEARCH MODSEQ,
//! STORE UNCHANGEDSINCE).

/// Extensions that change the shape of unsolicited responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enabled {
    /// MODSEQ in every FETCH that reports a flag change.
    pub condstore: bool,
    /// VANISHED instead of EXPUNGE, UID in FETCH, HIGHESTMODSEQ after a
    /// sync (implies CONDSTORE).
    pub qresync: bool,
    /// Mailbox names in UTF-8 rather than modified UTF-7.
    pub utf8_accept: bool,
}

/// What a client command does to the session's state on the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing that outlives the command.
    None,
    /// ENABLE of extensions this module knows; which ones took effect is
    /// read from the backend's `* ENABLED` answer.
    Enable,
    /// Enables CONDSTORE by use.
    CondstoreByUse,
    /// State imapmux does not model (NOTIFY, LANGUAGE, ENABLE of other
    /// extensions, a parameter it cannot place for sure…).
    Unknown,
}

impl Enabled {
    /// Learn from one backend response line (`* ENABLED CONDSTORE …`).
    /// Returns whether the line was an ENABLED response.
    pub fn learn(&mut self, line: &[u8]) -> bool {
        let Some(rest) = strip_prefix_ci(line, b"* ENABLED") else {
            return false;
        };
        for word in rest.split(|b| matches!(b, b' ' | b'\r' | b'\n')) {
            match_ext(word, self);
        }
        true
    }

    /// Whether any of these was enabled.
    pub fn any(&self) -> bool {
        self.condstore || self.qresync || self.utf8_accept
    }

    /// MODSEQ goes into unsolicited FETCH responses.
    pub fn modseq(&self) -> bool {
        self.condstore || self.qresync
    }

    /// The ENABLE command that puts a fresh connection in the same state.
    pub fn enable_command(&self) -> Option<String> {
        let mut words = Vec::new();
        if self.qresync {
            words.push("QRESYNC");
        } else if self.condstore {
            words.push("CONDSTORE");
        }
        if self.utf8_accept {
            words.push("UTF8=ACCEPT");
        }
        (!words.is_empty()).then(|| format!("ENABLE {}", words.join(" ")))
    }
}

fn match_ext(word: &[u8], e: &mut Enabled) -> bool {
    if word.eq_ignore_ascii_case(b"CONDSTORE") {
        e.condstore = true;
    } else if word.eq_ignore_ascii_case(b"QRESYNC") {
        e.qresync = true;
        e.condstore = true;
    } else if word.eq_ignore_ascii_case(b"UTF8=ACCEPT") {
        e.utf8_accept = true;
    } else {
        return false;
    }
    true
}

fn strip_prefix_ci<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = line.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = line.get(prefix.len()..)?;
    // `* ENABLED` then a space or the end of the line.
    match rest.first() {
        None | Some(b' ' | b'\r' | b'\n') => Some(rest),
        _ => None,
    }
}

/// The effect of a client command with upper-cased `verb` (`UID FETCH`
/// style) and the rest of its line `args` (after the verb, CRLF included
/// or not). `leaves_state` is the ledger's conservative verdict.
pub fn effect(verb: &str, args: &[u8], leaves_state: bool) -> Effect {
    if !leaves_state {
        return Effect::None;
    }
    if verb == "ENABLE" {
        let mut probe = Enabled::default();
        let known = args
            .split(|b| matches!(b, b' ' | b'\r' | b'\n'))
            .filter(|w| !w.is_empty())
            .all(|w| match_ext(w, &mut probe));
        return if known && probe.any() {
            Effect::Enable
        } else {
            Effect::Unknown
        };
    }
    // A string or literal could hold the keyword without it being one.
    let plain = !args.iter().any(|b| matches!(b, b'"' | b'{'));
    let by_use = matches!(
        verb,
        "SELECT"
            | "EXAMINE"
            | "FETCH"
            | "UID FETCH"
            | "STORE"
            | "UID STORE"
            | "SEARCH"
            | "UID SEARCH"
    );
    if plain && by_use {
        Effect::CondstoreByUse
    } else {
        Effect::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_what_the_backend_enabled() {
        let mut e = Enabled::default();
        assert!(!e.learn(b"* ENABLEDX CONDSTORE\r\n"));
        assert!(!e.learn(b"* OK done\r\n"));
        assert!(e.learn(b"* ENABLED\r\n"));
        assert_eq!(e, Enabled::default());
        assert!(e.learn(b"* enabled QRESYNC XFOO\r\n"));
        assert!(e.qresync && e.condstore && !e.utf8_accept);
        assert_eq!(e.enable_command().as_deref(), Some("ENABLE QRESYNC"));
    }

    #[test]
    fn effects_of_commands() {
        assert_eq!(effect("NOOP", b"", false), Effect::None);
        assert_eq!(
            effect("ENABLE", b" CONDSTORE QRESYNC\r\n", true),
            Effect::Enable
        );
        assert_eq!(effect("ENABLE", b"UTF8=ACCEPT", true), Effect::Enable);
        assert_eq!(effect("ENABLE", b"CONDSTORE XFOO", true), Effect::Unknown);
        assert_eq!(effect("ENABLE", b"", true), Effect::Unknown);
        assert_eq!(
            effect("SELECT", b"INBOX (CONDSTORE)\r\n", true),
            Effect::CondstoreByUse
        );
        assert_eq!(
            effect("UID FETCH", b"1:* (FLAGS) (CHANGEDSINCE 4)", true),
            Effect::CondstoreByUse
        );
        // The word inside a string: not placed for sure.
        assert_eq!(
            effect("SEARCH", b"SUBJECT \"MODSEQ\"", true),
            Effect::Unknown
        );
        assert_eq!(effect("NOTIFY", b"SET NONE", true), Effect::Unknown);
        assert_eq!(effect("LIST", b"\"\" MODSEQ", true), Effect::Unknown);
    }
}
