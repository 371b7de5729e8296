//! Byte-level scanner of one FETCH item value (atom, quoted string,
//! literal, or parenthesized list with any of these nested), used by the
//! response parser. It only tracks where the value ends; the parser keeps
//! the bytes.

use super::response::ValueKind;

/// Deepest list nesting accepted in a value.
const MAX_DEPTH: u32 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LitStage {
    /// Saw `~`, expect `{`.
    Tilde,
    Digits,
    /// Saw `+`, expect `}`.
    Plus,
    /// Saw `}`, expect CR or LF.
    Close,
    /// Saw CR, expect LF.
    Lf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Expecting a token (or, inside a list, a space or `)`).
    Start,
    Atom,
    Quoted {
        escape: bool,
    },
    LitHead {
        stage: LitStage,
        digits: u8,
    },
    LitData {
        remaining: u64,
    },
}

/// How a byte affected the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    More,
    /// The byte was the last of the value.
    Complete,
    /// The value ended before this byte (an atom's delimiter, not part of
    /// the value).
    CompleteBefore,
    /// The byte ended a literal announcement: this many bytes of literal
    /// data follow (fed with [`ValueScanner::literal_bytes`]).
    Literal(u64),
}

#[derive(Debug, Clone)]
pub(super) struct ValueScanner {
    depth: u32,
    mode: Mode,
    kind: ValueKind,
    /// Length of the literal being announced.
    pending_lit: u64,
}

impl ValueScanner {
    pub(super) fn new() -> Self {
        ValueScanner {
            depth: 0,
            mode: Mode::Start,
            kind: ValueKind::Atom,
            pending_lit: 0,
        }
    }

    /// The kind of value, from its first byte (an atom is refined by the
    /// caller into NIL or a number).
    pub(super) fn kind(&self) -> ValueKind {
        self.kind
    }

    /// Literal data bytes still expected, while inside a literal.
    pub(super) fn literal_remaining(&self) -> Option<u64> {
        match self.mode {
            Mode::LitData { remaining } => Some(remaining),
            _ => None,
        }
    }

    /// `n` bytes of literal data arrived. `None` if more than expected.
    pub(super) fn literal_bytes(&mut self, n: u64) -> Option<Step> {
        let left = self.literal_remaining()?.checked_sub(n)?;
        if left > 0 {
            self.mode = Mode::LitData { remaining: left };
            Some(Step::More)
        } else {
            Some(self.token_done())
        }
    }

    /// A complete token at the current depth: the value is complete if it
    /// is at the top level.
    fn token_done(&mut self) -> Step {
        self.mode = Mode::Start;
        if self.depth == 0 {
            Step::Complete
        } else {
            Step::More
        }
    }

    fn lit(&mut self, stage: LitStage) -> Step {
        self.mode = Mode::LitHead { stage, digits: 0 };
        Step::More
    }

    /// Advance by one byte of a line.
    pub(super) fn byte(&mut self, b: u8) -> Result<Step, &'static str> {
        let top = self.depth == 0;
        match self.mode {
            Mode::Start => {
                if top {
                    self.kind = match b {
                        b'(' => ValueKind::List,
                        b'"' => ValueKind::Quoted,
                        b'{' | b'~' => ValueKind::Literal {
                            len: 0,
                            binary: b == b'~',
                        },
                        _ => ValueKind::Atom,
                    };
                }
                match b {
                    b'\r' | b'\n' => Err("line ends inside a value"),
                    b' ' | b')' if top => Err("empty value"),
                    b' ' => Ok(Step::More),
                    b'(' if self.depth >= MAX_DEPTH => Err("lists nested too deeply"),
                    b'(' => {
                        self.depth = self.depth.saturating_add(1);
                        Ok(Step::More)
                    }
                    b')' => {
                        self.depth = self.depth.saturating_sub(1);
                        Ok(self.token_done())
                    }
                    b'"' => {
                        self.mode = Mode::Quoted { escape: false };
                        Ok(Step::More)
                    }
                    b'{' => {
                        self.pending_lit = 0;
                        Ok(self.lit(LitStage::Digits))
                    }
                    b'~' => {
                        self.pending_lit = 0;
                        Ok(self.lit(LitStage::Tilde))
                    }
                    _ => {
                        self.mode = Mode::Atom;
                        Ok(Step::More)
                    }
                }
            }
            Mode::Atom => match b {
                b' ' | b')' if top => {
                    self.mode = Mode::Start;
                    Ok(Step::CompleteBefore)
                }
                b' ' => {
                    self.mode = Mode::Start;
                    Ok(Step::More)
                }
                b')' => {
                    self.depth = self.depth.saturating_sub(1);
                    Ok(self.token_done())
                }
                b'\r' | b'\n' => Err("line ends inside a value"),
                b'(' | b'"' | b'{' => Err("invalid character in an atom"),
                _ => Ok(Step::More),
            },
            Mode::Quoted { escape } => match (escape, b) {
                (_, b'\r' | b'\n') => Err("line ends inside a quoted string"),
                (false, b'"') => Ok(self.token_done()),
                (e, _) => {
                    self.mode = Mode::Quoted {
                        escape: !e && b == b'\\',
                    };
                    Ok(Step::More)
                }
            },
            Mode::LitHead { stage, digits } => match (stage, b) {
                (LitStage::Tilde, b'{') => Ok(self.lit(LitStage::Digits)),
                (LitStage::Digits, b'0'..=b'9') if digits < 19 => {
                    let d = u64::from(b.saturating_sub(b'0'));
                    self.pending_lit = self.pending_lit.saturating_mul(10).saturating_add(d);
                    self.mode = Mode::LitHead {
                        stage: LitStage::Digits,
                        digits: digits.saturating_add(1),
                    };
                    Ok(Step::More)
                }
                (LitStage::Digits, b'+') if digits > 0 => Ok(self.lit(LitStage::Plus)),
                (LitStage::Digits, b'}') if digits > 0 => Ok(self.lit(LitStage::Close)),
                (LitStage::Plus, b'}') => Ok(self.lit(LitStage::Close)),
                (LitStage::Close, b'\r') => Ok(self.lit(LitStage::Lf)),
                (LitStage::Close | LitStage::Lf, b'\n') => {
                    let n = self.pending_lit;
                    if let (true, ValueKind::Literal { len, .. }) = (top, &mut self.kind) {
                        *len = n;
                    }
                    if n == 0 {
                        Ok(self.token_done())
                    } else {
                        self.mode = Mode::LitData { remaining: n };
                        Ok(Step::Literal(n))
                    }
                }
                _ => Err("invalid literal announcement"),
            },
            Mode::LitData { .. } => Err("line data where literal data was expected"),
        }
    }
}
