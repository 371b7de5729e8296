//! Parsing of `FETCH` / `UID FETCH` command lines.

use super::att::FetchAtt;
use super::section::find_section_end;
use super::seqset::SequenceSet;
use crate::imap::command::{tag_of, trim_crlf};
use crate::imap::framing::literal_at_end;

/// A parsed FETCH command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchCommand {
    /// `UID FETCH`: the set holds UIDs.
    pub uid: bool,
    pub set: SequenceSet,
    /// The attributes in the order written, macros (ALL/FAST/FULL) expanded.
    pub items: Vec<FetchAtt>,
    /// A modifier list followed (`(CHANGEDSINCE 5)`, `(VANISHED)`…).
    pub has_modifiers: bool,
}

impl FetchCommand {
    /// True if any attribute sets `\Seen`.
    pub fn sets_seen(&self) -> bool {
        self.items.iter().any(FetchAtt::sets_seen)
    }
}

/// Parse a FETCH command from the text after the tag: `FETCH <set> <atts>
/// [modifiers]` or `UID FETCH …`, with or without its CRLF. `None` for
/// anything else, for invalid syntax, for `$` sets, and for a line that
/// announces a literal (commands with literals are not parsed).
///
/// Spaces: one or more wherever one is required, and extra spaces inside
/// lists, as Dovecot accepts them.
pub fn parse_fetch_command(input: &[u8]) -> Option<FetchCommand> {
    if literal_at_end(input).is_some() {
        return None;
    }
    let line = trim_crlf(input);
    if line.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return None;
    }
    let mut c = Cursor { s: line, pos: 0 };
    let first = c.word();
    let uid = if first.eq_ignore_ascii_case(b"UID") {
        c.spaces1()?;
        if !c.word().eq_ignore_ascii_case(b"FETCH") {
            return None;
        }
        true
    } else if first.eq_ignore_ascii_case(b"FETCH") {
        false
    } else {
        return None;
    };
    c.spaces1()?;
    let set = SequenceSet::parse(c.word())?;
    c.spaces1()?;
    let items = if c.peek() == Some(b'(') {
        c.bump();
        att_list(&mut c)?
    } else {
        let tok = c.att_token()?;
        match macro_items(tok) {
            Some(items) => items,
            None => vec![FetchAtt::parse(tok)?],
        }
    };
    c.spaces();
    let mut has_modifiers = false;
    if c.peek() == Some(b'(') {
        c.balanced()?;
        has_modifiers = true;
        c.spaces();
    }
    if c.peek().is_some() {
        return None;
    }
    Some(FetchCommand {
        uid,
        set,
        items,
        has_modifiers,
    })
}

/// Parse a whole command line with its tag: `a1 UID FETCH 1:* (FLAGS)`.
/// Returns the tag and the command.
pub fn parse_tagged_fetch(line: &[u8]) -> Option<(String, FetchCommand)> {
    let tag = tag_of(line)?;
    let rest = line.get(tag.len().checked_add(1)?..)?;
    Some((tag.to_string(), parse_fetch_command(rest)?))
}

/// The text of a FETCH command to send (without tag and CRLF):
/// `UID FETCH 1:3 (BODY.PEEK[] UID)`.
pub fn build_fetch_command(uid: bool, set: &str, items: &[FetchAtt]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    if uid {
        out.extend_from_slice(b"UID ");
    }
    out.extend_from_slice(b"FETCH ");
    out.extend_from_slice(set.as_bytes());
    out.extend_from_slice(b" (");
    for (i, att) in items.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(&att.to_command_bytes());
    }
    out.push(b')');
    out
}

fn macro_items(tok: &[u8]) -> Option<Vec<FetchAtt>> {
    let fast = [
        FetchAtt::Flags,
        FetchAtt::InternalDate,
        FetchAtt::Rfc822Size,
    ];
    if tok.eq_ignore_ascii_case(b"FAST") {
        return Some(fast.to_vec());
    }
    let mut all = fast.to_vec();
    all.push(FetchAtt::Envelope);
    if tok.eq_ignore_ascii_case(b"ALL") {
        return Some(all);
    }
    if tok.eq_ignore_ascii_case(b"FULL") {
        all.push(FetchAtt::Body);
        return Some(all);
    }
    None
}

/// After `(`: atts until `)`.
fn att_list(c: &mut Cursor<'_>) -> Option<Vec<FetchAtt>> {
    let mut items = Vec::new();
    loop {
        c.spaces();
        match c.peek()? {
            b')' => {
                c.bump();
                break;
            }
            _ => {
                let tok = c.att_token()?;
                if macro_items(tok).is_some() {
                    return None; // macros are not allowed inside a list
                }
                let mut att = FetchAtt::parse(tok)?;
                let save = c.pos;
                c.spaces();
                if c.peek() == Some(b'(')
                    && matches!(att, FetchAtt::Preview(_) | FetchAtt::Other(_))
                {
                    let args = std::str::from_utf8(c.balanced()?).ok()?;
                    att = att.with_args(args)?;
                } else {
                    c.pos = save;
                }
                items.push(att);
            }
        }
    }
    (!items.is_empty()).then_some(items)
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        self.s.get(self.pos..).unwrap_or_default()
    }

    fn peek(&self) -> Option<u8> {
        self.rest().first().copied()
    }

    fn bump(&mut self) {
        self.pos = self.pos.saturating_add(1).min(self.s.len());
    }

    fn advance(&mut self, n: usize) -> &'a [u8] {
        let rest = self.rest();
        let n = n.min(rest.len());
        self.pos = self.pos.saturating_add(n);
        rest.get(..n).unwrap_or_default()
    }

    fn spaces(&mut self) -> usize {
        let n = self.rest().iter().take_while(|b| **b == b' ').count();
        self.advance(n);
        n
    }

    fn spaces1(&mut self) -> Option<()> {
        (self.spaces() > 0).then_some(())
    }

    /// Bytes up to the next space or end.
    fn word(&mut self) -> &'a [u8] {
        let n = self.rest().iter().take_while(|b| **b != b' ').count();
        self.advance(n)
    }

    /// One att: name chars, an optional `[section]` (which may hold spaces,
    /// parentheses and quoted strings) and an optional `<partial>`. Ends at
    /// a space, `(`, `)` or the end of the line.
    fn att_token(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest();
        let mut i = 0usize;
        while let Some(&b) = rest.get(i) {
            match b {
                b' ' | b'(' | b')' => break,
                b'[' => {
                    let close = find_section_end(rest.get(i.checked_add(1)?..)?)?;
                    i = i.checked_add(close)?.checked_add(2)?;
                }
                b'<' => {
                    let close = rest.get(i..)?.iter().position(|b| *b == b'>')?;
                    i = i.checked_add(close)?.checked_add(1)?;
                }
                b'"' | b'{' | b'\\' => return None,
                b if !(0x20..0x7f).contains(&b) => return None,
                _ => i = i.checked_add(1)?,
            }
        }
        (i > 0).then(|| self.advance(i))
    }

    /// A parenthesized list (quoted strings inside skipped), returned whole.
    fn balanced(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest();
        let mut depth = 0usize;
        let mut in_quote = false;
        let mut escape = false;
        for (i, &b) in rest.iter().enumerate() {
            if in_quote {
                match (escape, b) {
                    (true, _) => escape = false,
                    (false, b'\\') => escape = true,
                    (false, b'"') => in_quote = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_quote = true,
                b'(' => depth = depth.checked_add(1)?,
                b')' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(self.advance(i.checked_add(1)?));
                    }
                }
                b'{' => return None,
                _ => {}
            }
        }
        None
    }
}
