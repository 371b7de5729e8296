//! Syntax of the pieces of a fetch-att: `NAME[section]<partial>` splitting,
//! section specs, header field lists, partials, and their canonical text.

use std::fmt::Write as _;

use super::att::{HeaderField, Partial, Section, SectionText};

/// RFC 9051 ATOM-CHAR.
pub(super) fn is_atom_char(b: u8) -> bool {
    !(b <= 0x20 || b >= 0x7f || matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']'))
}

pub(super) fn is_name_char(b: u8) -> bool {
    is_atom_char(b) && !matches!(b, b'[' | b'<' | b'>')
}

/// `NAME`, the inside of `[section]` if any, and `<partial>` if any.
pub(super) type AttParts<'a> = (&'a [u8], Option<&'a [u8]>, Option<Partial>);

/// Split `NAME[section]<partial>` into its three parts. The section may hold
/// quoted strings containing `]`.
pub(super) fn split_att(token: &[u8]) -> Option<AttParts<'_>> {
    let name_end = token
        .iter()
        .position(|b| matches!(b, b'[' | b'<'))
        .unwrap_or(token.len());
    let (name, rest) = token.split_at(name_end);
    let (bracket, rest) = match rest.split_first() {
        Some((b'[', inner)) => {
            let close = find_section_end(inner)?;
            let (sec, after) = inner.split_at(close);
            (Some(sec), after.get(1..)?)
        }
        _ => (None, rest),
    };
    let partial = if rest.is_empty() {
        None
    } else {
        Some(parse_partial(rest)?)
    };
    Some((name, bracket, partial))
}

/// Index of the `]` closing a section (quoted strings skipped).
pub(super) fn find_section_end(s: &[u8]) -> Option<usize> {
    let mut in_quote = false;
    let mut escape = false;
    for (i, &b) in s.iter().enumerate() {
        if in_quote {
            match (escape, b) {
                (true, _) => escape = false,
                (false, b'\\') => escape = true,
                (false, b'"') => in_quote = false,
                _ => {}
            }
        } else if b == b'"' {
            in_quote = true;
        } else if b == b']' {
            return Some(i);
        }
    }
    None
}

/// `<origin>` or `<origin.length>`.
fn parse_partial(s: &[u8]) -> Option<Partial> {
    let inner = s.strip_prefix(b"<")?.strip_suffix(b">")?;
    let mut it = inner.splitn(2, |b| *b == b'.');
    let origin = parse_u64(it.next()?)?;
    let length = match it.next() {
        Some(l) => Some(parse_u64(l)?),
        None => None,
    };
    Some(Partial { origin, length })
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// A non-zero part number without leading zeros.
fn parse_nz(s: &[u8]) -> Option<u32> {
    if s.first() == Some(&b'0') {
        return None;
    }
    u32::try_from(parse_u64(s)?).ok().filter(|n| *n != 0)
}

/// `1.2.3` or empty (BINARY sections).
pub(super) fn parse_part_only(s: &[u8]) -> Option<Vec<u32>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(|b| *b == b'.').map(parse_nz).collect()
}

pub(super) fn parse_section(s: &[u8]) -> Option<Section> {
    let mut part = Vec::new();
    let mut rest = s;
    loop {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            break;
        }
        let (num, after) = rest.split_at(digits);
        part.push(parse_nz(num)?);
        match after.split_first() {
            None => {
                rest = after;
                break;
            }
            Some((b'.', tail)) if !tail.is_empty() => rest = tail,
            _ => return None,
        }
    }
    let text = if rest.is_empty() {
        None
    } else {
        Some(parse_section_text(rest, !part.is_empty())?)
    };
    Some(Section { part, text })
}

fn parse_section_text(s: &[u8], has_part: bool) -> Option<SectionText> {
    let eq = |a: &[u8], b: &str| a.eq_ignore_ascii_case(b.as_bytes());
    if eq(s, "HEADER") {
        return Some(SectionText::Header);
    }
    if eq(s, "TEXT") {
        return Some(SectionText::Text);
    }
    if eq(s, "MIME") {
        return has_part.then_some(SectionText::Mime);
    }
    let (not, rest) = if let Some(r) = strip_prefix_ci(s, b"HEADER.FIELDS.NOT") {
        (true, r)
    } else {
        (false, strip_prefix_ci(s, b"HEADER.FIELDS")?)
    };
    let spaces = rest.iter().take_while(|b| **b == b' ').count();
    if spaces == 0 {
        return None;
    }
    let list = rest.get(spaces..)?.strip_prefix(b"(")?.strip_suffix(b")")?;
    let fields = parse_header_list(list)?;
    Some(SectionText::HeaderFields { not, fields })
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// The inside of `(FROM "To")`: atoms and quoted strings separated by
/// spaces (extra spaces allowed, as Dovecot allows them). At least one.
fn parse_header_list(mut s: &[u8]) -> Option<Vec<HeaderField>> {
    let mut fields = Vec::new();
    loop {
        while let Some((b' ', rest)) = s.split_first() {
            s = rest;
        }
        match s.split_first() {
            None => break,
            Some((b'"', rest)) => {
                let mut name = String::new();
                let mut escape = false;
                let mut end = None;
                for (i, &b) in rest.iter().enumerate() {
                    if !(0x20..0x7f).contains(&b) {
                        return None;
                    }
                    match (escape, b) {
                        (true, b'"' | b'\\') => {
                            escape = false;
                            name.push(char::from(b));
                        }
                        (true, _) => return None,
                        (false, b'\\') => escape = true,
                        (false, b'"') => {
                            end = Some(i);
                            break;
                        }
                        (false, _) => name.push(char::from(b)),
                    }
                }
                let end = end?;
                s = rest.get(end.checked_add(1)?..)?;
                if !matches!(s.first(), None | Some(b' ')) {
                    return None;
                }
                fields.push(HeaderField {
                    name: name.to_ascii_uppercase(),
                    quoted: true,
                });
            }
            Some(_) => {
                let len = s.iter().take_while(|b| is_atom_char(**b)).count();
                let (atom, rest) = s.split_at(len);
                if atom.is_empty() || !matches!(rest.first(), None | Some(b' ')) {
                    return None;
                }
                fields.push(HeaderField {
                    name: std::str::from_utf8(atom).ok()?.to_ascii_uppercase(),
                    quoted: false,
                });
                s = rest;
            }
        }
    }
    (!fields.is_empty()).then_some(fields)
}

pub(super) fn write_part(out: &mut String, part: &[u32]) {
    for (i, p) in part.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let _ = write!(out, "{p}");
    }
}

pub(super) fn write_section(out: &mut String, s: &Section) {
    write_part(out, &s.part);
    let Some(text) = &s.text else { return };
    if !s.part.is_empty() {
        out.push('.');
    }
    match text {
        SectionText::Header => out.push_str("HEADER"),
        SectionText::Text => out.push_str("TEXT"),
        SectionText::Mime => out.push_str("MIME"),
        SectionText::HeaderFields { not, fields } => {
            out.push_str(if *not {
                "HEADER.FIELDS.NOT ("
            } else {
                "HEADER.FIELDS ("
            });
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                if f.quoted {
                    out.push('"');
                    for c in f.name.chars() {
                        if matches!(c, '"' | '\\') {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                } else {
                    out.push_str(&f.name);
                }
            }
            out.push(')');
        }
    }
}
