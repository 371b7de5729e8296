//! Streaming parser for one untagged FETCH response, fed the framer's frames,
//! and the builder for the bytes of a FETCH response.

use bytes::Bytes;
use thiserror::Error;

use super::scan::{Step, ValueScanner};
use crate::imap::framing::Frame;

/// Longest item name kept (`BODY[HEADER.FIELDS (…)]` with many fields).
pub const MAX_ITEM_NAME: usize = 8192;

/// True if `line` starts an untagged FETCH response: `* <n> FETCH (`
/// (exactly as servers send it: upper-case FETCH, no leading zero).
pub fn is_fetch_start(line: &[u8]) -> bool {
    fetch_seq(line).is_some()
}

/// The sequence number of a line starting `* <n> FETCH (`.
pub fn fetch_seq(line: &[u8]) -> Option<u32> {
    let rest = line.strip_prefix(b"* ")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if !(1..=10).contains(&digits)
        || rest.first() == Some(&b'0')
        || !rest.get(digits..)?.starts_with(b" FETCH (")
    {
        return None;
    }
    std::str::from_utf8(rest.get(..digits)?).ok()?.parse().ok()
}

/// Build `* <seq> FETCH (<name> <value> …)\r\n` from item names and values
/// exactly as stored (values include their literal syntax): single spaces,
/// the format Dovecot uses.
pub fn build_fetch_response(seq: u32, items: &[(&[u8], &[u8])]) -> Vec<u8> {
    let size: usize = items
        .iter()
        .map(|(n, v)| n.len().saturating_add(v.len()).saturating_add(2))
        .fold(32usize, usize::saturating_add);
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
    for (i, (name, value)) in items.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(name);
        out.push(b' ');
        out.extend_from_slice(value);
    }
    out.extend_from_slice(b")\r\n");
    out
}

/// What a value looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `NIL` (Dovecot answers NIL for a body of a message expunged by
    /// another session).
    Nil,
    Number(u64),
    /// Any other atom.
    Atom,
    Quoted,
    /// `{n}` or `~{n}` (binary) literal.
    Literal {
        len: u64,
        binary: bool,
    },
    /// A parenthesized list (may contain literals).
    List,
}

/// A complete item value: its raw bytes exactly as received, including any
/// `{n}\r\n` literal announcements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemValue {
    pub raw: Bytes,
    pub kind: ValueKind,
}

impl ItemValue {
    pub fn is_nil(&self) -> bool {
        self.kind == ValueKind::Nil
    }

    /// The data of a literal value, without its `{n}\r\n` announcement.
    pub fn literal_data(&self) -> Option<&[u8]> {
        match self.kind {
            ValueKind::Literal { len, .. } => {
                let len = usize::try_from(len).ok()?;
                self.raw.get(self.raw.len().checked_sub(len)?..)
            }
            _ => None,
        }
    }
}

/// Why a response could not be parsed. The caller relays it unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("malformed FETCH response: {0}")]
pub struct FetchError(pub &'static str);

/// What the parser found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// `* <seq> FETCH (` was read.
    Start { seq: u32 },
    /// A complete item of at most `max_item` value bytes. `name` is the raw
    /// item name as sent (`BODY[HEADER.FIELDS (FROM)]<0>`).
    Item { name: Bytes, value: ItemValue },
    /// The value of this item exceeds `max_item`; its bytes are not kept.
    /// Reported as soon as known (at the literal announcement).
    ItemTooLarge { name: Bytes },
    /// The closing `)` and CRLF were read: the response is complete.
    End,
    /// Malformed input; no further events follow.
    Error(FetchError),
}

/// Where in `NAME[section]<origin>` the name scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NamePhase {
    Plain,
    Bracket { quote: bool, escape: bool },
    AfterBracket,
    Angle,
    AfterAngle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Matched this many bytes of `* `.
    Prefix(u8),
    Seq {
        n: u32,
        digits: u8,
    },
    /// Matched this many bytes of ` FETCH (`.
    Fetch(u8),
    ItemStart,
    Name(NamePhase),
    /// Inside a value (see `scan`).
    Value,
    AfterValue,
    Close {
        cr: bool,
    },
    Done,
    Failed,
}

/// Streaming parser for ONE untagged FETCH response. Feed it every frame of
/// the response in order ([`FetchResponseParser::feed`]); it keeps at most
/// one item name ([`MAX_ITEM_NAME`]) and one value (`max_item`) in memory,
/// whatever the size of the literals streaming past. Malformed input gives
/// one [`FetchEvent::Error`], then nothing: the caller relays as usual.
///
/// The syntax accepted is strict (single spaces, upper-case `FETCH`, CRLF
/// at the end), so that whenever `End` is reached and every item came as an
/// `Item`, [`build_fetch_response`] of the seq and the items' names and raw
/// values reproduces the response byte for byte.
#[derive(Debug, Clone)]
pub struct FetchResponseParser {
    max_item: usize,
    state: State,
    seq: Option<u32>,
    uid: Option<u32>,
    flags: Option<Bytes>,
    name: Vec<u8>,
    value: Vec<u8>,
    /// The value is still within `max_item` and being kept.
    collecting: bool,
    scan: ValueScanner,
}

impl FetchResponseParser {
    /// A parser keeping values up to `max_item` bytes (use at least 64 so
    /// that UID and FLAGS are always seen).
    pub fn new(max_item: usize) -> Self {
        FetchResponseParser {
            max_item,
            state: State::Prefix(0),
            seq: None,
            uid: None,
            flags: None,
            name: Vec::new(),
            value: Vec::new(),
            collecting: false,
            scan: ValueScanner::new(),
        }
    }

    /// Forget everything, ready for the next response.
    pub fn reset(&mut self) {
        *self = FetchResponseParser::new(self.max_item);
    }

    /// The message sequence number, once `Start` was reported.
    pub fn seq(&self) -> Option<u32> {
        self.seq
    }

    /// The value of the UID item, once seen.
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// The raw FLAGS value (`(\Seen $Junk)`), once seen.
    pub fn flags(&self) -> Option<&Bytes> {
        self.flags.as_ref()
    }

    /// The response was read completely (`End` was reported).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// An `Error` was reported.
    pub fn is_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Heap bytes held (item name and value buffers): at most about
    /// [`MAX_ITEM_NAME`] + `max_item`.
    pub fn retained_bytes(&self) -> usize {
        self.name.capacity().saturating_add(self.value.capacity())
    }

    /// Feed the next frame; returns the events it completed.
    pub fn feed(&mut self, frame: &Frame) -> Vec<FetchEvent> {
        let mut out = Vec::new();
        self.feed_into(frame, &mut out);
        out
    }

    /// Like [`FetchResponseParser::feed`], appending events to `out`.
    pub fn feed_into(&mut self, frame: &Frame, out: &mut Vec<FetchEvent>) {
        match frame {
            Frame::Line {
                bytes,
                first,
                literal,
                ..
            } => {
                if !self.line_start(*first, out) {
                    return;
                }
                self.line_bytes(bytes, out);
                // The framer and this parser must agree on literals.
                let expected = match self.state {
                    State::Value => self.scan.literal_remaining(),
                    State::Failed => return,
                    _ => None,
                };
                let announced = literal.map(|l| l.len).filter(|l| *l > 0);
                if expected != announced {
                    self.fail("literal announcement mismatch", out);
                }
            }
            Frame::LineChunk { bytes, first } => {
                if self.line_start(*first, out) {
                    self.line_bytes(bytes, out);
                }
            }
            Frame::Literal { bytes, remaining } => self.literal(bytes, *remaining, out),
        }
    }

    fn fail(&mut self, reason: &'static str, out: &mut Vec<FetchEvent>) {
        if self.state != State::Failed {
            self.state = State::Failed;
            self.name = Vec::new();
            self.value = Vec::new();
            out.push(FetchEvent::Error(FetchError(reason)));
        }
    }

    /// Check a line frame's `first` flag against the state.
    fn line_start(&mut self, first: bool, out: &mut Vec<FetchEvent>) -> bool {
        match self.state {
            State::Failed => false,
            State::Done => {
                self.fail("data after the end of the response", out);
                false
            }
            State::Value if self.scan.literal_remaining().is_some() => {
                self.fail("line data where literal data was expected", out);
                false
            }
            s => {
                if first != (s == State::Prefix(0)) {
                    self.fail("frame does not belong to this response", out);
                    return false;
                }
                true
            }
        }
    }

    fn literal(&mut self, bytes: &[u8], frame_remaining: u64, out: &mut Vec<FetchEvent>) {
        let remaining = match self.state {
            State::Value => self.scan.literal_remaining(),
            State::Failed => return,
            _ => None,
        };
        let Some(remaining) = remaining else {
            return self.fail("unexpected literal data", out);
        };
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if remaining.checked_sub(len) != Some(frame_remaining) {
            return self.fail("literal length mismatch", out);
        }
        self.keep(bytes, out);
        match self.scan.literal_bytes(len) {
            Some(Step::Complete) => self.complete_value(out),
            Some(_) => {}
            None => self.fail("literal length mismatch", out),
        }
    }

    fn line_bytes(&mut self, bytes: &[u8], out: &mut Vec<FetchEvent>) {
        for &b in bytes {
            self.byte(b, out);
            if self.state == State::Failed {
                return;
            }
        }
    }

    /// Keep value bytes while within `max_item`; report the item as too
    /// large the moment it is not.
    fn keep(&mut self, bytes: &[u8], out: &mut Vec<FetchEvent>) {
        if !self.collecting {
            return;
        }
        if self.value.len().saturating_add(bytes.len()) > self.max_item {
            self.too_large(out);
        } else {
            self.value.extend_from_slice(bytes);
        }
    }

    fn too_large(&mut self, out: &mut Vec<FetchEvent>) {
        if self.collecting {
            self.collecting = false;
            self.value = Vec::new();
            out.push(FetchEvent::ItemTooLarge {
                name: Bytes::copy_from_slice(&self.name),
            });
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<FetchEvent>) {
        match self.state {
            State::Prefix(i) => {
                if Some(&b) != b"* ".get(usize::from(i)) {
                    return self.fail("not an untagged response", out);
                }
                self.state = if i == 0 {
                    State::Prefix(1)
                } else {
                    State::Seq { n: 0, digits: 0 }
                };
            }
            State::Seq { n, digits } => {
                if b == b'0' && digits == 0 {
                    self.fail("sequence number with a leading zero", out);
                } else if b.is_ascii_digit() {
                    let n = n
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(u32::from(b - b'0')));
                    match n {
                        Some(n) if digits < 10 => {
                            self.state = State::Seq {
                                n,
                                digits: digits.saturating_add(1),
                            }
                        }
                        _ => self.fail("sequence number too large", out),
                    }
                } else if b == b' ' && n > 0 {
                    self.seq = Some(n);
                    self.state = State::Fetch(1);
                } else {
                    self.fail("invalid sequence number", out);
                }
            }
            State::Fetch(i) => {
                let want = b" FETCH (".get(usize::from(i)).copied();
                if want != Some(b) {
                    return self.fail("not a FETCH response", out);
                }
                if want == Some(b'(') {
                    self.state = State::ItemStart;
                    if let Some(seq) = self.seq {
                        out.push(FetchEvent::Start { seq });
                    }
                } else {
                    self.state = State::Fetch(i.saturating_add(1));
                }
            }
            State::ItemStart => {
                self.name.clear();
                self.name_byte(NamePhase::Plain, b, out);
            }
            State::Name(phase) => self.name_byte(phase, b, out),
            State::Value => self.value_byte(b, out),
            State::AfterValue => match b {
                b' ' => self.state = State::ItemStart,
                b')' => self.state = State::Close { cr: false },
                _ => self.fail("expected a space or ) after a value", out),
            },
            State::Close { cr } => match b {
                b'\r' if !cr => self.state = State::Close { cr: true },
                b'\n' if cr => {
                    self.state = State::Done;
                    out.push(FetchEvent::End);
                }
                _ => self.fail("data after the closing parenthesis", out),
            },
            State::Done => self.fail("data after the end of the response", out),
            State::Failed => {}
        }
    }

    fn name_byte(&mut self, phase: NamePhase, b: u8, out: &mut Vec<FetchEvent>) {
        if matches!(b, b'\r' | b'\n' | 0) {
            return self.fail("line ends inside an item name", out);
        }
        let plain = !matches!(
            b,
            b'(' | b')' | b'{' | b'"' | b'\\' | b'[' | b'<' | b']' | b'>'
        ) && (0x21..0x7f).contains(&b);
        let next = match (phase, b) {
            (
                NamePhase::Bracket {
                    quote: true,
                    escape,
                },
                _,
            ) => NamePhase::Bracket {
                quote: escape || b != b'"',
                escape: !escape && b == b'\\',
            },
            (NamePhase::Bracket { .. }, b'"') => NamePhase::Bracket {
                quote: true,
                escape: false,
            },
            (NamePhase::Bracket { .. }, b']') => NamePhase::AfterBracket,
            (NamePhase::Bracket { .. }, _) => phase,
            (NamePhase::Angle, b'0'..=b'9' | b'.') => NamePhase::Angle,
            (NamePhase::Angle, b'>') => NamePhase::AfterAngle,
            (NamePhase::Angle, _) => return self.fail("invalid partial in an item name", out),
            (_, b' ') => {
                if self.name.is_empty() {
                    return self.fail("empty item name", out);
                }
                self.value.clear();
                self.collecting = true;
                self.scan = ValueScanner::new();
                self.state = State::Value;
                return;
            }
            (NamePhase::Plain, b'[') if !self.name.is_empty() => NamePhase::Bracket {
                quote: false,
                escape: false,
            },
            (NamePhase::Plain | NamePhase::AfterBracket, b'<') if !self.name.is_empty() => {
                NamePhase::Angle
            }
            (NamePhase::Plain, _) if plain => NamePhase::Plain,
            _ => return self.fail("invalid character in an item name", out),
        };
        if self.name.len() >= MAX_ITEM_NAME {
            return self.fail("item name too long", out);
        }
        self.name.push(b);
        self.state = State::Name(next);
    }

    fn value_byte(&mut self, b: u8, out: &mut Vec<FetchEvent>) {
        let step = match self.scan.byte(b) {
            Ok(step) => step,
            Err(reason) => return self.fail(reason, out),
        };
        if let Step::CompleteBefore = step {
            self.complete_value(out);
            return self.byte(b, out); // the delimiter, now in AfterValue
        }
        self.keep(&[b], out);
        match step {
            Step::Complete => self.complete_value(out),
            Step::Literal(n) => {
                let total = u64::try_from(self.value.len())
                    .unwrap_or(u64::MAX)
                    .saturating_add(n);
                if total > u64::try_from(self.max_item).unwrap_or(u64::MAX) {
                    self.too_large(out);
                }
            }
            Step::More | Step::CompleteBefore => {}
        }
    }

    fn complete_value(&mut self, out: &mut Vec<FetchEvent>) {
        self.state = State::AfterValue;
        if !self.collecting {
            return;
        }
        self.collecting = false;
        let raw = Bytes::from(std::mem::take(&mut self.value));
        let kind = match self.scan.kind() {
            ValueKind::Atom if raw.eq_ignore_ascii_case(b"NIL") => ValueKind::Nil,
            ValueKind::Atom if raw.len() <= 19 && raw.iter().all(u8::is_ascii_digit) => {
                std::str::from_utf8(&raw)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .map_or(ValueKind::Atom, ValueKind::Number)
            }
            k => k,
        };
        let name = Bytes::from(std::mem::take(&mut self.name));
        if name.eq_ignore_ascii_case(b"UID") {
            if let ValueKind::Number(n) = kind {
                self.uid = u32::try_from(n).ok();
            }
        } else if name.eq_ignore_ascii_case(b"FLAGS") && kind == ValueKind::List {
            self.flags = Some(raw.clone());
        }
        out.push(FetchEvent::Item {
            name,
            value: ItemValue { raw, kind },
        });
    }
}
