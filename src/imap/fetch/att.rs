//! FETCH attributes (`fetch-att`): parsing, cacheability and the canonical
//! names used as cache keys, as backend command text and in responses.
//!
//! Rendering follows what Dovecot 2.3 echoes in its responses: the whole
//! section spec upper-cased, one space between header field names, a field
//! name that was quoted stays quoted (`HEADER.FIELDS ("FROM" SUBJECT)`), and
//! a partial `<origin.length>` comes back as `<origin>`.

use std::fmt::Write as _;

use super::section::{
    is_name_char, parse_part_only, parse_section, split_att, write_part, write_section,
};

/// `<origin.length>` of a partial fetch. `length` is `None` for `<origin>`
/// (the form of response item names; Dovecot also accepts it in commands,
/// meaning "to the end").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partial {
    pub origin: u64,
    pub length: Option<u64>,
}

/// A header field name of `HEADER.FIELDS (…)`, upper-cased and unescaped.
/// `quoted` remembers whether it was written as a quoted string, because
/// Dovecot echoes it that way (`("From")` → `("FROM")`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderField {
    pub name: String,
    pub quoted: bool,
}

/// The text part of a section spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SectionText {
    Header,
    HeaderFields {
        not: bool,
        fields: Vec<HeaderField>,
    },
    Text,
    /// Only after a part number (`1.MIME`).
    Mime,
}

/// A section spec: `[1.2.HEADER.FIELDS (FROM)]`; empty for `[]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Section {
    pub part: Vec<u32>,
    pub text: Option<SectionText>,
}

/// One FETCH attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FetchAtt {
    Uid,
    Flags,
    ModSeq,
    InternalDate,
    Rfc822Size,
    Envelope,
    BodyStructure,
    /// `BODY` without brackets (non-extensible BODYSTRUCTURE).
    Body,
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    /// `BODY[section]<partial>` or `BODY.PEEK[…]`.
    BodySection {
        peek: bool,
        section: Section,
        partial: Option<Partial>,
    },
    /// `BINARY[part]<partial>` or `BINARY.PEEK[…]` (RFC 3516).
    Binary {
        peek: bool,
        part: Vec<u32>,
        partial: Option<Partial>,
    },
    /// `BINARY.SIZE[part]`.
    BinarySize {
        part: Vec<u32>,
    },
    EmailId,
    ThreadId,
    SaveDate,
    /// `PREVIEW` / `SNIPPET`, with any modifier list, as written.
    Preview(String),
    /// Anything else (`X-GM-MSGID`, vendor items), as written, with any
    /// argument list that followed it in the att list.
    Other(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Cache key: no PEEK, partial with length.
    Key,
    /// Response item name: no PEEK, partial origin only.
    Response,
    /// Command text: PEEK kept.
    Command,
}

impl FetchAtt {
    /// Parse one attribute as written in a command (`body.peek[header]`) or
    /// as a response item name (`BODY[HEADER.FIELDS (FROM)]<0>`). Case and
    /// the spaces inside a header field list do not matter. `None` for
    /// invalid syntax of a known attribute (`BODY.PEEK` without brackets,
    /// `BODY[MIME]`, `BODY[0]`, `BINARY[1.MIME]`, an unterminated section…);
    /// unknown names give [`FetchAtt::Other`].
    pub fn parse(token: &[u8]) -> Option<FetchAtt> {
        let (name, bracket, partial) = split_att(token)?;
        if name.is_empty() || !name.iter().all(|b| is_name_char(*b)) {
            return None;
        }
        let text = std::str::from_utf8(token).ok()?;
        let upper = std::str::from_utf8(name).ok()?.to_ascii_uppercase();
        let att = match (upper.as_str(), bracket) {
            ("BODY" | "BODY.PEEK", Some(sec)) => FetchAtt::BodySection {
                peek: upper.len() > 4,
                section: parse_section(sec)?,
                partial,
            },
            ("BINARY" | "BINARY.PEEK", Some(sec)) => FetchAtt::Binary {
                peek: upper.len() > 6,
                part: parse_part_only(sec)?,
                partial,
            },
            ("BINARY.SIZE", Some(sec)) if partial.is_none() => FetchAtt::BinarySize {
                part: parse_part_only(sec)?,
            },
            (n, None) if partial.is_none() => match simple_att(n) {
                Some(att) => att,
                None if is_known(n) => return None,
                None => FetchAtt::Other(text.to_string()),
            },
            (n, _) if is_known(n) => return None,
            _ => FetchAtt::Other(text.to_string()),
        };
        Some(att)
    }

    /// True only for immutable message data that may be served from a
    /// cache: sections, BINARY, RFC822*, sizes, structures, ENVELOPE,
    /// INTERNALDATE, EMAILID, THREADID. Never FLAGS, MODSEQ, UID, SAVEDATE,
    /// PREVIEW or unknown items.
    pub fn cacheable(&self) -> bool {
        match self {
            FetchAtt::BodySection { .. }
            | FetchAtt::Binary { .. }
            | FetchAtt::BinarySize { .. }
            | FetchAtt::Rfc822
            | FetchAtt::Rfc822Header
            | FetchAtt::Rfc822Text
            | FetchAtt::Rfc822Size
            | FetchAtt::BodyStructure
            | FetchAtt::Body
            | FetchAtt::Envelope
            | FetchAtt::InternalDate
            | FetchAtt::EmailId
            | FetchAtt::ThreadId => true,
            FetchAtt::Uid
            | FetchAtt::Flags
            | FetchAtt::ModSeq
            | FetchAtt::SaveDate
            | FetchAtt::Preview(_)
            | FetchAtt::Other(_) => false,
        }
    }

    /// True if fetching this sets `\Seen`: non-PEEK `BODY[…]` and `BINARY[…]`,
    /// `RFC822`, `RFC822.TEXT` (not `RFC822.HEADER`). Unknown items
    /// ([`FetchAtt::Other`]) report false: their effect is unknown, so do not
    /// serve a command containing one from the cache anyway.
    pub fn sets_seen(&self) -> bool {
        match self {
            FetchAtt::BodySection { peek, .. } | FetchAtt::Binary { peek, .. } => !peek,
            FetchAtt::Rfc822 | FetchAtt::Rfc822Text => true,
            _ => false,
        }
    }

    /// Canonical key: the same data gives the same key whatever PEEK, case
    /// and spaces (`body.peek[header.fields (from  To)]` and
    /// `BODY[HEADER.FIELDS (FROM TO)]` → `BODY[HEADER.FIELDS (FROM TO)]`).
    /// A partial keeps origin and length (`BODY[]<0.100>`). Field order is
    /// kept, and so is the quoting of a field name, because Dovecot echoes
    /// `("From")` as `("FROM")`: the two forms answer with different item
    /// names, so they get different keys.
    pub fn cache_key(&self) -> String {
        self.render(Form::Key)
    }

    /// The item name a server uses in the FETCH response for this attribute,
    /// as Dovecot writes it: `BODY.PEEK[HEADER]` → `BODY[HEADER]`,
    /// `BODY[]<10.100>` → `BODY[]<10>`, `BINARY.PEEK[1]` → `BINARY[1]`.
    pub fn response_name(&self) -> String {
        self.render(Form::Response)
    }

    /// The attribute as it should be sent to the backend (upper-case, PEEK
    /// kept as the client asked).
    pub fn to_command_bytes(&self) -> Vec<u8> {
        self.render(Form::Command).into_bytes()
    }

    /// The variant with the same response data that does not set `\Seen`:
    /// `BODY[…]` → `BODY.PEEK[…]`, `BINARY[…]` → `BINARY.PEEK[…]`; attributes
    /// without side effects are returned unchanged. `None` for `RFC822` and
    /// `RFC822.TEXT` (their PEEK equivalents answer with another item name)
    /// and for unknown items.
    pub fn as_peek(&self) -> Option<FetchAtt> {
        match self {
            FetchAtt::BodySection {
                section, partial, ..
            } => Some(FetchAtt::BodySection {
                peek: true,
                section: section.clone(),
                partial: *partial,
            }),
            FetchAtt::Binary { part, partial, .. } => Some(FetchAtt::Binary {
                peek: true,
                part: part.clone(),
                partial: *partial,
            }),
            FetchAtt::Rfc822 | FetchAtt::Rfc822Text | FetchAtt::Other(_) => None,
            other => Some(other.clone()),
        }
    }

    /// Does a response item named `item_name` (raw bytes as the server sent
    /// them) answer this attribute? Compared on normalized forms: case,
    /// spaces, PEEK and the quoting of header field names do not matter; for
    /// a partial the response carries the origin only, which must match.
    pub fn matches_response_item(&self, item_name: &[u8]) -> bool {
        FetchAtt::parse(item_name).is_some_and(|r| r.match_form() == self.match_form())
    }

    /// Attach an argument list (`(LAZY)`) that followed this att in a
    /// command's att list. Only PREVIEW and unknown items take one.
    pub(super) fn with_args(self, args: &str) -> Option<FetchAtt> {
        match self {
            FetchAtt::Preview(s) => Some(FetchAtt::Preview(format!("{s} {args}"))),
            FetchAtt::Other(s) => Some(FetchAtt::Other(format!("{s} {args}"))),
            _ => None,
        }
    }

    fn match_form(&self) -> FetchAtt {
        let first_word = |s: &str| s.split(' ').next().unwrap_or_default().to_ascii_uppercase();
        let unpartial = |p: &Option<Partial>| {
            p.map(|p| Partial {
                origin: p.origin,
                length: None,
            })
        };
        match self {
            FetchAtt::BodySection {
                section, partial, ..
            } => {
                let mut section = section.clone();
                if let Some(SectionText::HeaderFields { fields, .. }) = &mut section.text {
                    fields.iter_mut().for_each(|f| f.quoted = false);
                }
                FetchAtt::BodySection {
                    peek: false,
                    section,
                    partial: unpartial(partial),
                }
            }
            FetchAtt::Binary { part, partial, .. } => FetchAtt::Binary {
                peek: false,
                part: part.clone(),
                partial: unpartial(partial),
            },
            FetchAtt::Preview(s) => FetchAtt::Preview(first_word(s)),
            FetchAtt::Other(s) => FetchAtt::Other(first_word(s)),
            other => other.clone(),
        }
    }

    fn render(&self, form: Form) -> String {
        let simple = |s: &str| s.to_string();
        match self {
            FetchAtt::Uid => simple("UID"),
            FetchAtt::Flags => simple("FLAGS"),
            FetchAtt::ModSeq => simple("MODSEQ"),
            FetchAtt::InternalDate => simple("INTERNALDATE"),
            FetchAtt::Rfc822Size => simple("RFC822.SIZE"),
            FetchAtt::Envelope => simple("ENVELOPE"),
            FetchAtt::BodyStructure => simple("BODYSTRUCTURE"),
            FetchAtt::Body => simple("BODY"),
            FetchAtt::Rfc822 => simple("RFC822"),
            FetchAtt::Rfc822Header => simple("RFC822.HEADER"),
            FetchAtt::Rfc822Text => simple("RFC822.TEXT"),
            FetchAtt::EmailId => simple("EMAILID"),
            FetchAtt::ThreadId => simple("THREADID"),
            FetchAtt::SaveDate => simple("SAVEDATE"),
            FetchAtt::BodySection {
                peek,
                section,
                partial,
            } => {
                let mut out = String::from(if *peek && form == Form::Command {
                    "BODY.PEEK["
                } else {
                    "BODY["
                });
                write_section(&mut out, section);
                out.push(']');
                write_partial(&mut out, partial, form);
                out
            }
            FetchAtt::Binary {
                peek,
                part,
                partial,
            } => {
                let mut out = String::from(if *peek && form == Form::Command {
                    "BINARY.PEEK["
                } else {
                    "BINARY["
                });
                write_part(&mut out, part);
                out.push(']');
                write_partial(&mut out, partial, form);
                out
            }
            FetchAtt::BinarySize { part } => {
                let mut out = String::from("BINARY.SIZE[");
                write_part(&mut out, part);
                out.push(']');
                out
            }
            FetchAtt::Preview(s) | FetchAtt::Other(s) => match form {
                Form::Command => s.clone(),
                Form::Key => s.to_ascii_uppercase(),
                Form::Response => s.split(' ').next().unwrap_or_default().to_ascii_uppercase(),
            },
        }
    }
}

/// The cache key ([`FetchAtt::cache_key`]) of the attribute a response item
/// name answers, from the raw name bytes: `BODY[HEADER.FIELDS (FROM)]` →
/// `BODY[HEADER.FIELDS (FROM)]`. For a partial, the response name carries
/// the origin only (`BODY[]<0>`), which is not the request's key
/// (`BODY[]<0.100>`): key partial items by the request att and find them
/// with [`FetchAtt::matches_response_item`]. `None` if the name is invalid.
pub fn normalize_response_item_name(name: &[u8]) -> Option<String> {
    FetchAtt::parse(name).map(|a| a.cache_key())
}

fn simple_att(upper: &str) -> Option<FetchAtt> {
    Some(match upper {
        "UID" => FetchAtt::Uid,
        "FLAGS" => FetchAtt::Flags,
        "MODSEQ" => FetchAtt::ModSeq,
        "INTERNALDATE" => FetchAtt::InternalDate,
        "RFC822.SIZE" => FetchAtt::Rfc822Size,
        "ENVELOPE" => FetchAtt::Envelope,
        "BODYSTRUCTURE" => FetchAtt::BodyStructure,
        "BODY" => FetchAtt::Body,
        "RFC822" => FetchAtt::Rfc822,
        "RFC822.HEADER" => FetchAtt::Rfc822Header,
        "RFC822.TEXT" => FetchAtt::Rfc822Text,
        "EMAILID" => FetchAtt::EmailId,
        "THREADID" => FetchAtt::ThreadId,
        "SAVEDATE" => FetchAtt::SaveDate,
        "PREVIEW" | "SNIPPET" => FetchAtt::Preview(upper.to_string()),
        _ => return None,
    })
}

/// Names with a fixed syntax: a malformed use of one is an error, not an
/// unknown item.
fn is_known(upper: &str) -> bool {
    simple_att(upper).is_some()
        || matches!(
            upper,
            "BODY.PEEK" | "BINARY" | "BINARY.PEEK" | "BINARY.SIZE" | "ALL" | "FAST" | "FULL"
        )
}

fn write_partial(out: &mut String, partial: &Option<Partial>, form: Form) {
    let Some(p) = partial else { return };
    let _ = match (form, p.length) {
        (Form::Response, _) | (_, None) => write!(out, "<{}>", p.origin),
        (_, Some(l)) => write!(out, "<{}.{}>", p.origin, l),
    };
}
