//! Response types of the test IMAP client.

use std::fmt;

use anyhow::{bail, Result};

/// One response line as received, including any literals it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// All bytes of the line: text, literal announcements, literal bodies,
    /// the final CRLF.
    pub raw: Vec<u8>,
    /// The literal bodies, in order, byte-exact.
    pub literals: Vec<Vec<u8>>,
}

impl Line {
    /// The whole line as (lossy) text, CRLF trimmed.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    }

    /// Text up to the first line break (the part before any literal).
    pub fn head(&self) -> String {
        let end = self
            .raw
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(self.raw.len());
        String::from_utf8_lossy(&self.raw[..end])
            .trim_end_matches('\r')
            .to_string()
    }

    pub fn is_untagged(&self) -> bool {
        self.raw.starts_with(b"* ")
    }

    pub fn is_continuation(&self) -> bool {
        self.raw.starts_with(b"+")
    }

    /// The tag of a tagged response line.
    pub fn tag(&self) -> Option<&str> {
        if self.is_untagged() || self.is_continuation() {
            return None;
        }
        let end = self.raw.iter().position(|&b| b == b' ')?;
        std::str::from_utf8(&self.raw[..end]).ok()
    }

    pub(crate) fn join(lines: &[Line]) -> String {
        lines
            .iter()
            .map(|l| l.text())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Result of a raw single-line read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineRead {
    /// A line including its terminating LF (or the unterminated rest at EOF).
    Line(Vec<u8>),
    Eof,
    Timeout,
}

impl LineRead {
    /// Lossy text of a line, CRLF trimmed; None for Eof/Timeout.
    pub fn text(&self) -> Option<String> {
        match self {
            LineRead::Line(l) => Some(
                String::from_utf8_lossy(l)
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            _ => None,
        }
    }
    pub fn is_timeout(&self) -> bool {
        matches!(self, LineRead::Timeout)
    }
    pub fn is_eof(&self) -> bool {
        matches!(self, LineRead::Eof)
    }
}

/// Everything a command produced: untagged (and other) lines, then the
/// tagged status line.
#[derive(Debug, Clone)]
pub struct Response {
    pub tag: String,
    /// `OK`, `NO` or `BAD` (upper-cased), or whatever the server sent.
    pub status: String,
    /// Tagged line text after the status (e.g. `[CAPABILITY …] Logged in`).
    pub text: String,
    /// Lines before the tagged one, in order.
    pub lines: Vec<Line>,
    pub tagged: Line,
}

impl Response {
    pub(crate) fn new(tag: &str, lines: Vec<Line>, tagged: Line) -> Response {
        let head = tagged.head();
        let rest = head[tag.len()..].trim_start();
        let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
        Response {
            tag: tag.to_string(),
            status: status.to_ascii_uppercase(),
            text: text.to_string(),
            lines,
            tagged,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.status == "OK"
    }
    pub fn is_no(&self) -> bool {
        self.status == "NO"
    }
    pub fn is_bad(&self) -> bool {
        self.status == "BAD"
    }

    /// Self if tagged OK, else an error showing the whole response.
    pub fn ok(self) -> Result<Response> {
        if self.is_ok() {
            Ok(self)
        } else {
            bail!("expected tagged OK, got:\n{self}")
        }
    }

    /// Untagged (`* …`) lines.
    pub fn untagged(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter().filter(|l| l.is_untagged())
    }

    /// Text of all lines, including the tagged one.
    pub fn texts(&self) -> Vec<String> {
        self.lines
            .iter()
            .chain(std::iter::once(&self.tagged))
            .map(Line::text)
            .collect()
    }

    /// True if any line (or the tagged line) contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.texts().iter().any(|t| t.contains(needle))
    }

    /// All literal bodies, in order.
    pub fn literals(&self) -> Vec<&[u8]> {
        self.lines
            .iter()
            .flat_map(|l| l.literals.iter().map(Vec::as_slice))
            .collect()
    }

    /// All bytes received for this command, exactly as sent by the server.
    pub fn raw(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for l in self.lines.iter().chain(std::iter::once(&self.tagged)) {
            v.extend_from_slice(&l.raw);
        }
        v
    }

    /// Capabilities from `* CAPABILITY …` or a `[CAPABILITY …]` code
    /// (upper-cased).
    pub fn capabilities(&self) -> Vec<String> {
        for t in self.texts() {
            let caps = if let Some(rest) = t.strip_prefix("* CAPABILITY ") {
                Some(rest.to_string())
            } else {
                t.find("[CAPABILITY ").map(|i| {
                    let r = &t[i + "[CAPABILITY ".len()..];
                    r[..r.find(']').unwrap_or(r.len())].to_string()
                })
            };
            if let Some(c) = caps {
                return c.split_whitespace().map(str::to_ascii_uppercase).collect();
            }
        }
        Vec::new()
    }

    /// Arguments of a response code `[NAME args]` anywhere in the response,
    /// e.g. `code("APPENDUID")` → `Some("1700000000 7")`.
    pub fn code(&self, name: &str) -> Option<String> {
        let pat = format!("[{name}");
        for t in self.texts() {
            if let Some(i) = t.find(&pat) {
                let r = &t[i + pat.len()..];
                let end = r.find(']')?;
                return Some(r[..end].trim().to_string());
            }
        }
        None
    }

    /// UID assigned by APPEND (from `[APPENDUID validity uid]`).
    pub fn appended_uid(&self) -> Option<u32> {
        self.code("APPENDUID")?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// The last `* N EXISTS` number, if any.
    pub fn exists(&self) -> Option<u32> {
        self.untagged_number("EXISTS")
    }

    /// The last `* N <KEYWORD>` number (EXISTS, RECENT, EXPUNGE…).
    pub fn untagged_number(&self, keyword: &str) -> Option<u32> {
        self.untagged()
            .filter_map(|l| {
                let t = l.head();
                let mut it = t.split_whitespace().skip(1);
                let n = it.next()?.parse().ok()?;
                (it.next()? == keyword).then_some(n)
            })
            .last()
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in self.texts() {
            writeln!(f, "{t}")?;
        }
        Ok(())
    }
}

/// Length of the literal announced at the end of `line` (`{n}`, `{n+}`,
/// `{n-}`, `~{n}` followed by CRLF or LF).
pub fn literal_len(line: &[u8]) -> Option<usize> {
    let l = line.strip_suffix(b"\n")?;
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    let mut digits = &l[open + 1..];
    if let Some(d) = digits
        .strip_suffix(b"+")
        .or_else(|| digits.strip_suffix(b"-"))
    {
        digits = d;
    }
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// IMAP quoted string for printable ASCII, else None.
pub fn quoted(s: &str) -> Option<String> {
    if !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    Some(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// Atom if safe, otherwise quoted.
pub fn astring(s: &str) -> String {
    let atom = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b));
    if atom {
        s.to_string()
    } else {
        quoted(s).expect("non-ASCII mailbox names are not supported here")
    }
}

pub(crate) fn append_head(
    tag: &str,
    mailbox: &str,
    flags: Option<&str>,
    len: usize,
    plus: bool,
) -> String {
    // Accept both "\Seen \Draft" and "(\Seen \Draft)".
    let flags = match flags {
        Some(f) if f.trim_start().starts_with('(') => format!(" {}", f.trim()),
        Some(f) => format!(" ({f})"),
        None => String::new(),
    };
    let plus = if plus { "+" } else { "" };
    format!(
        "{tag} APPEND {}{flags} {{{len}{plus}}}\r\n",
        astring(mailbox)
    )
}
