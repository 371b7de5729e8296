//! Server responses as complete messages (line parts and literals), a
//! tokenizer over them, and the few parsers the scenarios need (FETCH,
//! EXISTS, APPENDUID).

use bytes::Bytes;
use imapmux::imap::framing::literal_at_end;
use imapmux::imap::response::{parse_status, Kind, StatusLine};

/// One part of a server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A line part, CRLF included.
    Line(Bytes),
    /// Literal data announced by the preceding line.
    Lit(Bytes),
}

/// One complete server message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub segs: Vec<Seg>,
}

impl Response {
    pub fn first_line(&self) -> &[u8] {
        match self.segs.first() {
            Some(Seg::Line(b)) => b,
            _ => b"",
        }
    }

    pub fn kind(&self) -> Option<Kind> {
        imapmux::imap::response::kind_of(self.first_line())
    }

    /// The status line, if this is a status response.
    pub fn status(&self) -> Option<StatusLine> {
        parse_status(self.first_line())
    }

    /// The first line, lossily decoded and bounded, for error messages.
    pub fn summary(&self) -> String {
        let l = self.first_line();
        let l = &l[..l.len().min(200)];
        String::from_utf8_lossy(l).trim_end().to_string()
    }

    /// `* N EXISTS` → N.
    pub fn exists(&self) -> Option<u32> {
        let line = std::str::from_utf8(self.first_line()).ok()?;
        let rest = line.strip_prefix("* ")?.trim_end();
        let (n, word) = rest.split_once(' ')?;
        if word.eq_ignore_ascii_case("EXISTS") {
            n.parse().ok()
        } else {
            None
        }
    }
}

/// `APPENDUID <uidvalidity> <uid>` from a tagged OK → uid.
pub fn appenduid(st: &StatusLine) -> Option<u32> {
    let code = st.code.as_deref()?;
    let mut it = code.split_ascii_whitespace();
    if !it.next()?.eq_ignore_ascii_case("APPENDUID") {
        return None;
    }
    let _validity: u32 = it.next()?.parse().ok()?;
    it.next()?.parse().ok()
}

/// A token of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Atom(Bytes),
    Str(Vec<u8>),
    Lit(Bytes),
    Open,
    Close,
}

/// Walks the tokens of a response across its line parts and literals.
pub struct Cursor<'a> {
    segs: &'a [Seg],
    seg: usize,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(resp: &'a Response) -> Self {
        Cursor {
            segs: &resp.segs,
            seg: 0,
            pos: 0,
        }
    }

    fn line(&self) -> Option<&'a Bytes> {
        match self.segs.get(self.seg) {
            Some(Seg::Line(b)) => Some(b),
            _ => None,
        }
    }

    /// The next token; `Ok(None)` at the end of the message.
    pub fn next_tok(&mut self) -> Result<Option<Tok>, String> {
        let line = match self.line() {
            Some(l) => l,
            None => return Ok(None),
        };
        let b = &line[..];
        while self.pos < b.len() && b[self.pos] == b' ' {
            self.pos += 1;
        }
        if self.pos >= b.len() || b[self.pos] == b'\r' || b[self.pos] == b'\n' {
            return Ok(None);
        }
        let c = b[self.pos];
        match c {
            b'(' => {
                self.pos += 1;
                Ok(Some(Tok::Open))
            }
            b')' => {
                self.pos += 1;
                Ok(Some(Tok::Close))
            }
            b'"' => {
                let mut out = Vec::new();
                let mut i = self.pos + 1;
                loop {
                    match b.get(i) {
                        None | Some(b'\r') | Some(b'\n') => {
                            return Err("unterminated quoted string".into())
                        }
                        Some(b'\\') => {
                            if let Some(&e) = b.get(i + 1) {
                                out.push(e);
                            }
                            i += 2;
                        }
                        Some(b'"') => {
                            self.pos = i + 1;
                            return Ok(Some(Tok::Str(out)));
                        }
                        Some(&x) => {
                            out.push(x);
                            i += 1;
                        }
                    }
                }
            }
            b'{' | b'~' => {
                // A literal announcement must end the line part.
                let rest = &b[self.pos..];
                let spec =
                    literal_at_end(rest).ok_or_else(|| "literal not at end of line".to_string())?;
                let close = rest.iter().position(|x| *x == b'}').unwrap_or(rest.len());
                let after = &rest[close.saturating_add(1).min(rest.len())..];
                if after != b"\r\n" && after != b"\n" {
                    return Err("literal not at end of line".into());
                }
                let data = match self.segs.get(self.seg + 1) {
                    Some(Seg::Lit(d)) => d.clone(),
                    _ => return Err("missing literal data".into()),
                };
                if data.len() as u64 != spec.len {
                    return Err("literal length mismatch".into());
                }
                self.seg += 2;
                self.pos = 0;
                Ok(Some(Tok::Lit(data)))
            }
            _ => {
                let start = self.pos;
                let mut i = start;
                while i < b.len() {
                    match b[i] {
                        b' ' | b'(' | b')' | b'\r' | b'\n' => break,
                        b'[' => {
                            // Section spec: keep spaces and parentheses inside.
                            match b[i..].iter().position(|x| *x == b']') {
                                Some(p) => i += p + 1,
                                None => return Err("unterminated [".into()),
                            }
                        }
                        _ => i += 1,
                    }
                }
                self.pos = i;
                Ok(Some(Tok::Atom(line.slice(start..i))))
            }
        }
    }

    /// Skip one value (an atom, string, literal or a whole list) whose
    /// first token is `first`.
    pub fn skip_value(&mut self, first: Tok) -> Result<(), String> {
        if first != Tok::Open {
            return if first == Tok::Close {
                Err("unexpected )".into())
            } else {
                Ok(())
            };
        }
        let mut depth = 1usize;
        while depth > 0 {
            match self.next_tok()? {
                Some(Tok::Open) => depth += 1,
                Some(Tok::Close) => depth -= 1,
                Some(_) => {}
                None => return Err("unterminated list".into()),
            }
        }
        Ok(())
    }
}

/// The items of one FETCH response the scenarios look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetch {
    pub seq: u32,
    pub uid: Option<u32>,
    pub size: Option<u64>,
    pub flags: Option<Vec<String>>,
    /// `BODY[]` (or `RFC822`, `BINARY[]`) data.
    pub body: Option<Bytes>,
    /// Any other `BODY[section]` data (e.g. `HEADER.FIELDS (...)`).
    pub section: Option<Bytes>,
    pub internaldate: Option<String>,
    pub envelope: bool,
    pub bodystructure: bool,
}

fn tok_bytes(t: Tok) -> Option<Bytes> {
    match t {
        Tok::Atom(a) if a.eq_ignore_ascii_case(b"NIL") => None,
        Tok::Atom(a) => Some(a),
        Tok::Str(s) => Some(Bytes::from(s)),
        Tok::Lit(l) => Some(l),
        _ => None,
    }
}

fn tok_num<T: std::str::FromStr>(t: &Tok) -> Option<T> {
    match t {
        Tok::Atom(a) => std::str::from_utf8(a).ok()?.parse().ok(),
        _ => None,
    }
}

/// Parse `* N FETCH (...)`. `None` if the response is not a FETCH;
/// `Some(Err)` if it is one but malformed.
pub fn parse_fetch(resp: &Response) -> Option<Result<Fetch, String>> {
    let mut c = Cursor::new(resp);
    match c.next_tok() {
        Ok(Some(Tok::Atom(a))) if &a[..] == b"*" => {}
        _ => return None,
    }
    let seq = match c.next_tok() {
        Ok(Some(t)) => tok_num::<u32>(&t)?,
        _ => return None,
    };
    match c.next_tok() {
        Ok(Some(Tok::Atom(a))) if a.eq_ignore_ascii_case(b"FETCH") => {}
        _ => return None,
    }
    Some(parse_fetch_items(&mut c, seq))
}

fn parse_fetch_items(c: &mut Cursor<'_>, seq: u32) -> Result<Fetch, String> {
    let mut f = Fetch {
        seq,
        ..Fetch::default()
    };
    if c.next_tok()? != Some(Tok::Open) {
        return Err("FETCH without (".into());
    }
    loop {
        let name = match c.next_tok()? {
            Some(Tok::Close) => break,
            Some(Tok::Atom(a)) => a,
            Some(t) => return Err(format!("unexpected FETCH item token {t:?}")),
            None => return Err("unterminated FETCH".into()),
        };
        let value = c.next_tok()?.ok_or("FETCH item without value")?;
        let upper = name.to_ascii_uppercase();
        match &upper[..] {
            b"UID" => f.uid = Some(tok_num(&value).ok_or("bad UID")?),
            b"RFC822.SIZE" => f.size = Some(tok_num(&value).ok_or("bad RFC822.SIZE")?),
            b"INTERNALDATE" => {
                f.internaldate = tok_bytes(value).map(|b| String::from_utf8_lossy(&b).into());
            }
            b"FLAGS" => {
                if value != Tok::Open {
                    return Err("FLAGS without list".into());
                }
                let mut flags = Vec::new();
                loop {
                    match c.next_tok()? {
                        Some(Tok::Close) => break,
                        Some(Tok::Atom(a)) => flags.push(String::from_utf8_lossy(&a).into()),
                        _ => return Err("bad FLAGS list".into()),
                    }
                }
                f.flags = Some(flags);
            }
            b"ENVELOPE" => {
                f.envelope = value == Tok::Open;
                c.skip_value(value)?;
            }
            b"BODYSTRUCTURE" | b"BODY" => {
                f.bodystructure = value == Tok::Open;
                c.skip_value(value)?;
            }
            b"BODY[]" | b"RFC822" | b"BINARY[]" | b"BODY[]<0>" => {
                f.body = Some(tok_bytes(value).unwrap_or_default());
            }
            n if n.starts_with(b"BODY[") || n.starts_with(b"BINARY[") => {
                if value == Tok::Open {
                    c.skip_value(value)?;
                } else {
                    f.section = Some(tok_bytes(value).unwrap_or_default());
                }
            }
            _ => c.skip_value(value)?,
        }
    }
    Ok(f)
}

/// Whether `st` is a tagged response to `tag`.
pub fn is_tagged(st: &StatusLine, tag: &str) -> bool {
    matches!(&st.kind, Kind::Tagged(t) if t == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(parts: &[&[u8]]) -> Response {
        let mut segs = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let b = Bytes::copy_from_slice(p);
            segs.push(if i % 2 == 0 {
                Seg::Line(b)
            } else {
                Seg::Lit(b)
            });
        }
        Response { segs }
    }

    #[test]
    fn fetch_body_literal() {
        let r = resp(&[
            b"* 3 FETCH (UID 17 RFC822.SIZE 5 FLAGS (\\Seen $X) BODY[] {5}\r\n",
            b"he)lo",
            b")\r\n",
        ]);
        let f = parse_fetch(&r).unwrap().unwrap();
        assert_eq!(f.seq, 3);
        assert_eq!(f.uid, Some(17));
        assert_eq!(f.size, Some(5));
        assert_eq!(
            f.flags.as_deref(),
            Some(&["\\Seen".to_string(), "$X".into()][..])
        );
        assert_eq!(f.body.as_deref(), Some(&b"he)lo"[..]));
    }

    #[test]
    fn fetch_page_items() {
        let r = resp(&[
            b"* 1 FETCH (UID 4 FLAGS () RFC822.SIZE 2048 INTERNALDATE \"01-Jan-2024 00:00:00 +0000\" ENVELOPE (\"Mon, 1 Jan 2024\" {7}\r\n",
            b"subj\"(x",
            b" ((\"a\" NIL \"b\" \"c\")) NIL NIL NIL NIL NIL NIL NIL) BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 1 NIL NIL NIL NIL) \"alternative\") BODY[HEADER.FIELDS (FROM TO SUBJECT DATE)] {12}\r\n",
            b"Subject: x\r\n",
            b")\r\n",
        ]);
        let f = parse_fetch(&r).unwrap().unwrap();
        assert_eq!(f.uid, Some(4));
        assert_eq!(f.size, Some(2048));
        assert_eq!(f.flags, Some(vec![]));
        assert!(f.envelope);
        assert!(f.bodystructure);
        assert_eq!(
            f.internaldate.as_deref(),
            Some("01-Jan-2024 00:00:00 +0000")
        );
        assert_eq!(f.section.as_deref(), Some(&b"Subject: x\r\n"[..]));
        assert_eq!(f.body, None);
    }

    #[test]
    fn fetch_quoted_and_nil_body() {
        let r = resp(&[b"* 2 FETCH (BODY[] \"a\\\"b\" UID 9)\r\n"]);
        let f = parse_fetch(&r).unwrap().unwrap();
        assert_eq!(f.body.as_deref(), Some(&b"a\"b"[..]));
        assert_eq!(f.uid, Some(9));
        let r = resp(&[b"* 2 FETCH (BODY[] NIL)\r\n"]);
        assert_eq!(
            parse_fetch(&r).unwrap().unwrap().body.as_deref(),
            Some(&b""[..])
        );
    }

    #[test]
    fn not_fetch_and_malformed() {
        assert!(parse_fetch(&resp(&[b"* 5 EXISTS\r\n"])).is_none());
        assert!(parse_fetch(&resp(&[b"a1 OK done\r\n"])).is_none());
        assert!(parse_fetch(&resp(&[b"* 1 FETCH (UID x)\r\n"]))
            .unwrap()
            .is_err());
        assert!(parse_fetch(&resp(&[b"* 1 FETCH (UID 1\r\n"]))
            .unwrap()
            .is_err());
        // Literal announced but data length differs.
        let r = resp(&[b"* 1 FETCH (BODY[] {5}\r\n", b"abc", b")\r\n"]);
        assert!(parse_fetch(&r).unwrap().is_err());
        assert_eq!(resp(&[b"* 12 EXISTS\r\n"]).exists(), Some(12));
        assert_eq!(resp(&[b"* 12 RECENT\r\n"]).exists(), None);
    }

    #[test]
    fn appenduid_code() {
        let st = parse_status(b"A3 OK [APPENDUID 1700000000 42] Append completed.\r\n").unwrap();
        assert_eq!(appenduid(&st), Some(42));
        assert!(is_tagged(&st, "A3"));
        assert!(!is_tagged(&st, "A4"));
        let st = parse_status(b"A3 OK Append completed.\r\n").unwrap();
        assert_eq!(appenduid(&st), None);
    }
}
