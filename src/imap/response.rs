//! Parsing of the server responses the proxy acts on (greeting, CAPABILITY,
//! tagged status), and formatting of the responses it sends itself.

use super::command::trim_crlf;

/// Status keyword of a status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    Bye,
    Preauth,
}

/// Who a response line is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `* …`
    Untagged,
    /// `+ …`
    Continuation,
    /// `tag …`
    Tagged(String),
}

/// A status response line: `[tag|*] OK|NO|BAD|BYE|PREAUTH [code] text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub kind: Kind,
    pub status: Status,
    /// Content of the response code without brackets, e.g. `CAPABILITY IMAP4rev1 …`.
    pub code: Option<String>,
    pub text: String,
}

impl StatusLine {
    /// The response code's atom, upper-cased (`AUTHENTICATIONFAILED`, `CAPABILITY`…).
    pub fn code_name(&self) -> Option<String> {
        self.code
            .as_deref()
            .map(|c| c.split(' ').next().unwrap_or("").to_ascii_uppercase())
    }

    /// Capabilities carried in a `[CAPABILITY …]` code.
    pub fn capabilities(&self) -> Option<Vec<String>> {
        let code = self.code.as_deref()?;
        let (name, rest) = code.split_once(' ').unwrap_or((code, ""));
        if !name.eq_ignore_ascii_case("CAPABILITY") {
            return None;
        }
        Some(rest.split_ascii_whitespace().map(str::to_string).collect())
    }
}

/// What kind of line this is, without further parsing.
pub fn kind_of(line: &[u8]) -> Option<Kind> {
    if line.starts_with(b"* ") {
        return Some(Kind::Untagged);
    }
    if line.starts_with(b"+") {
        return Some(Kind::Continuation);
    }
    let sp = line.iter().position(|b| *b == b' ')?;
    let tag = std::str::from_utf8(line.get(..sp)?).ok()?;
    if tag.is_empty() {
        return None;
    }
    Some(Kind::Tagged(tag.to_string()))
}

/// Parse a status response line; `None` for anything else (data responses,
/// continuations, garbage).
pub fn parse_status(line: &[u8]) -> Option<StatusLine> {
    let line = trim_crlf(line);
    let text = std::str::from_utf8(line).ok()?;
    let (first, rest) = text.split_once(' ')?;
    let kind = if first == "*" {
        Kind::Untagged
    } else if first == "+" || first.is_empty() {
        return None;
    } else {
        Kind::Tagged(first.to_string())
    };
    let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let status = match word.to_ascii_uppercase().as_str() {
        "OK" => Status::Ok,
        "NO" => Status::No,
        "BAD" => Status::Bad,
        "BYE" => Status::Bye,
        "PREAUTH" => Status::Preauth,
        _ => return None,
    };
    let (code, text) = match rest.strip_prefix('[') {
        Some(r) => match r.find(']') {
            Some(end) => (
                Some(r[..end].to_string()),
                r[end + 1..].trim_start().to_string(),
            ),
            None => (None, rest.to_string()),
        },
        None => (None, rest.to_string()),
    };
    Some(StatusLine {
        kind,
        status,
        code,
        text,
    })
}

/// Capabilities from an untagged `* CAPABILITY …` data response.
pub fn parse_capability_data(line: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(trim_crlf(line)).ok()?;
    let rest = text.strip_prefix("* ")?;
    let (word, caps) = rest.split_once(' ').unwrap_or((rest, ""));
    if !word.eq_ignore_ascii_case("CAPABILITY") {
        return None;
    }
    Some(caps.split_ascii_whitespace().map(str::to_string).collect())
}

/// True if `caps` contains `name` (case-insensitive).
pub fn has_capability(caps: &[String], name: &str) -> bool {
    caps.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// Make response text safe to send: no CR, LF or NUL, bounded length.
pub fn sanitize_text(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
        .take(512)
        .collect()
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let s = parse_status(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] Dovecot ready.\r\n")
            .unwrap();
        assert_eq!(s.kind, Kind::Untagged);
        assert_eq!(s.status, Status::Ok);
        assert_eq!(s.code_name().as_deref(), Some("CAPABILITY"));
        assert_eq!(
            s.capabilities().unwrap(),
            vec!["IMAP4rev1", "SASL-IR", "AUTH=PLAIN"]
        );
        assert_eq!(s.text, "Dovecot ready.");

        let s = parse_status(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n").unwrap();
        assert_eq!(s.kind, Kind::Tagged("a1".into()));
        assert_eq!(s.status, Status::No);
        assert_eq!(s.code_name().as_deref(), Some("AUTHENTICATIONFAILED"));
        assert_eq!(s.capabilities(), None);

        let s = parse_status(b"a2 ok done\r\n").unwrap();
        assert_eq!(s.status, Status::Ok);
        assert_eq!(s.code, None);

        assert_eq!(parse_status(b"* 3 EXISTS\r\n"), None);
        assert_eq!(parse_status(b"+ idling\r\n"), None);
        assert_eq!(parse_status(b"\xff\xfe\r\n"), None);
    }

    #[test]
    fn capability_data() {
        assert_eq!(
            parse_capability_data(b"* CAPABILITY IMAP4rev1 IDLE\r\n").unwrap(),
            vec!["IMAP4rev1", "IDLE"]
        );
        assert_eq!(parse_capability_data(b"* OK hi\r\n"), None);
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of(b"* 1 EXISTS\r\n"), Some(Kind::Untagged));
        assert_eq!(kind_of(b"+ \r\n"), Some(Kind::Continuation));
        assert_eq!(kind_of(b"A1 OK x\r\n"), Some(Kind::Tagged("A1".into())));
        assert_eq!(kind_of(b"garbage"), None);
    }
}
