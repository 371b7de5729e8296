//! Streaming IMAP framer: splits a byte stream into line parts and literal
//! chunks without ever holding a whole literal.
//!
//! An IMAP message (a command or a response) is a sequence of line parts. A
//! line part ends with CRLF; if it ends with a literal announcement (`{N}`,
//! `{N+}`, `~{N}`), exactly N bytes of literal data follow, then another line
//! part. The message ends with a line part that announces no literal.
//!
//! The framer never depends on a successful parse of the line: anything with
//! valid framing is passed on, whatever its syntax. The line part kept in
//! memory is bounded by `max_line`; longer lines are passed on in chunks
//! (`Frame::LineChunk`) and flagged so that nobody tries to parse them.

use bytes::{Bytes, BytesMut};

/// How a literal was announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiteralSpec {
    /// Announced length in bytes.
    pub len: u64,
    /// `{N}`: the sender waits for a `+` continuation before sending data.
    pub sync: bool,
    /// `~{N}` (RFC 3516 BINARY).
    pub binary: bool,
}

/// One unit produced by the framer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line part, CRLF included. `first` is true for the first
    /// line part of a message; `literal` is the literal it announces.
    /// `oversized` is true when earlier bytes of this line were already
    /// emitted as `LineChunk`s (the line exceeded the bound and must not be
    /// parsed).
    Line {
        bytes: Bytes,
        first: bool,
        literal: Option<LiteralSpec>,
        oversized: bool,
    },
    /// The beginning of a line longer than the bound, passed on unparsed.
    LineChunk { bytes: Bytes, first: bool },
    /// Literal data; `remaining` bytes of this literal are still to come.
    Literal { bytes: Bytes, remaining: u64 },
}

impl Frame {
    /// The raw bytes of this frame, exactly as received.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Frame::Line { bytes, .. }
            | Frame::LineChunk { bytes, .. }
            | Frame::Literal { bytes, .. } => bytes,
        }
    }

    /// True when this frame ends a complete message.
    pub fn ends_message(&self) -> bool {
        matches!(self, Frame::Line { literal: None, .. })
    }
}

/// Keep this many bytes of an oversized line back so a literal announcement
/// at its end can still be recognised when the CRLF arrives.
const OVERSIZE_TAIL: usize = 32;

/// Resumable framer state for one direction of a connection.
#[derive(Debug, Clone)]
pub struct Framer {
    max_line: usize,
    /// Literal bytes still expected.
    literal_left: u64,
    /// Next line part is the first of a message.
    at_message_start: bool,
    /// The current line already exceeded the bound.
    oversized: bool,
    /// Bytes of the current line already scanned for LF (avoids rescanning).
    scanned: usize,
}

impl Framer {
    /// A framer whose retained line part never exceeds `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Framer {
            max_line: max_line.max(OVERSIZE_TAIL * 2),
            literal_left: 0,
            at_message_start: true,
            oversized: false,
            scanned: 0,
        }
    }

    /// The bound on a retained line part. A line whose LF arrives in the
    /// same read may come out whole although longer: callers that refuse
    /// long lines compare with this.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// True between messages (nothing partial pending).
    pub fn at_boundary(&self) -> bool {
        self.literal_left == 0 && self.at_message_start && !self.oversized && self.scanned == 0
    }

    /// True while literal data is expected.
    pub fn in_literal(&self) -> bool {
        self.literal_left > 0
    }

    /// Forget an announced literal that will not be sent (the peer refused a
    /// synchronizing literal). The next line is then a new message.
    pub fn cancel_literal(&mut self) {
        if self.literal_left > 0 {
            self.literal_left = 0;
            self.at_message_start = true;
        }
    }

    /// Take the next frame out of `buf`, or `None` if more input is needed.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        let (piece, len) = self.step(buf)?;
        let bytes = buf.split_to(len).freeze();
        Some(match piece {
            Piece::Line {
                first,
                literal,
                oversized,
            } => Frame::Line {
                bytes,
                first,
                literal,
                oversized,
            },
            Piece::LineChunk { first } => Frame::LineChunk { bytes, first },
            Piece::Literal { remaining } => Frame::Literal { bytes, remaining },
        })
    }

    /// Find the next frame at the start of `data` without copying: its kind
    /// and length. `None` means more input is needed; the caller must then
    /// call again with the same unconsumed bytes followed by new ones.
    pub fn step(&mut self, data: &[u8]) -> Option<(Piece, usize)> {
        if self.literal_left > 0 {
            if data.is_empty() {
                return None;
            }
            let n = usize::try_from(self.literal_left)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.literal_left -= n as u64;
            return Some((
                Piece::Literal {
                    remaining: self.literal_left,
                },
                n,
            ));
        }
        if data.is_empty() {
            return None;
        }
        let start = self.scanned.min(data.len());
        match memchr::memchr(b'\n', data.get(start..).unwrap_or_default()) {
            Some(pos) => {
                let end = start + pos + 1;
                let first = self.at_message_start;
                let oversized = self.oversized;
                self.scanned = 0;
                self.oversized = false;
                let literal = data.get(..end).and_then(literal_at_end);
                if let Some(spec) = literal {
                    self.literal_left = spec.len;
                    self.at_message_start = false;
                } else {
                    self.at_message_start = true;
                }
                Some((
                    Piece::Line {
                        first: first && !oversized,
                        literal,
                        oversized,
                    },
                    end,
                ))
            }
            None => {
                if data.len() > self.max_line {
                    let n = data.len() - OVERSIZE_TAIL;
                    let first = self.at_message_start && !self.oversized;
                    self.oversized = true;
                    self.scanned = OVERSIZE_TAIL;
                    Some((Piece::LineChunk { first }, n))
                } else {
                    self.scanned = data.len();
                    None
                }
            }
        }
    }
}

/// The kind of a frame found by [`Framer::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    Line {
        first: bool,
        literal: Option<LiteralSpec>,
        oversized: bool,
    },
    LineChunk {
        first: bool,
    },
    Literal {
        remaining: u64,
    },
}

/// Recognise a literal announcement at the end of a line (before CRLF or LF).
pub fn literal_at_end(line: &[u8]) -> Option<LiteralSpec> {
    let mut l = line.strip_suffix(b"\n")?;
    l = l.strip_suffix(b"\r").unwrap_or(l);
    let l = l.strip_suffix(b"}")?;
    // LITERAL+ and LITERAL- (RFC 7888) both use `{N+}`.
    let (l, sync) = match l.strip_suffix(b"+") {
        Some(rest) => (rest, false),
        None => (l, true),
    };
    let digits_start = l
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |p| p + 1);
    let digits = l.get(digits_start..)?;
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let before = l.get(..digits_start)?.strip_suffix(b"{")?;
    let binary = before.ends_with(b"~");
    let len: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(LiteralSpec { len, sync, binary })
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

    fn frames(framer: &mut Framer, buf: &mut BytesMut) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = framer.next_frame(buf) {
            out.push(f);
        }
        out
    }

    #[test]
    fn literal_detection() {
        assert_eq!(
            literal_at_end(b"a APPEND x {12}\r\n"),
            Some(LiteralSpec {
                len: 12,
                sync: true,
                binary: false
            })
        );
        assert_eq!(
            literal_at_end(b"a APPEND x {12+}\r\n"),
            Some(LiteralSpec {
                len: 12,
                sync: false,
                binary: false
            })
        );
        assert_eq!(
            literal_at_end(b"a APPEND x ~{3}\r\n"),
            Some(LiteralSpec {
                len: 3,
                sync: true,
                binary: true
            })
        );
        assert_eq!(literal_at_end(b"a NOOP\r\n"), None);
        assert_eq!(literal_at_end(b"a X {}\r\n"), None);
        assert_eq!(literal_at_end(b"a X {1a}\r\n"), None);
        assert_eq!(literal_at_end(b"a X 12}\r\n"), None);
        assert_eq!(literal_at_end(b"a X {99999999999999999999}\r\n"), None);
        assert_eq!(literal_at_end(b"{5}\n").map(|s| s.len), Some(5));
    }

    #[test]
    fn lines_and_literals_split_anywhere() {
        let input: &[u8] = b"* 1 FETCH (BODY[] {5}\r\nhello)\r\na OK done\r\n";
        // Feed byte by byte: the result must be the same frames' bytes.
        let mut framer = Framer::new(1024);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in input {
            buf.extend_from_slice(&[*b]);
            out.extend(frames(&mut framer, &mut buf));
        }
        let joined: Vec<u8> = out.iter().flat_map(|f| f.bytes().to_vec()).collect();
        assert_eq!(joined, input);
        let ends = out.iter().filter(|f| f.ends_message()).count();
        assert_eq!(ends, 2);
        assert!(framer.at_boundary());
        // literal bytes come out as Literal frames, 5 in total
        let lit: usize = out
            .iter()
            .filter_map(|f| match f {
                Frame::Literal { bytes, .. } => Some(bytes.len()),
                _ => None,
            })
            .sum();
        assert_eq!(lit, 5);
    }

    #[test]
    fn literal_containing_crlf_and_braces() {
        let input: &[u8] = b"a APPEND INBOX {11+}\r\n{3}\r\nab\r\n\r\n\r\nb NOOP\r\n";
        let mut framer = Framer::new(1024);
        let mut buf = BytesMut::from(input);
        let out = frames(&mut framer, &mut buf);
        assert_eq!(out.len(), 4);
        assert!(
            matches!(&out[1], Frame::Literal { bytes, remaining: 0 } if &bytes[..] == b"{3}\r\nab\r\n\r\n")
        );
        assert!(matches!(
            &out[2],
            Frame::Line {
                first: false,
                literal: None,
                ..
            }
        ));
        assert!(matches!(&out[3], Frame::Line { first: true, .. }));
    }

    #[test]
    fn oversized_line_is_chunked_and_literal_still_found() {
        let mut line = b"* SEARCH".to_vec();
        for i in 0..5000 {
            line.extend_from_slice(format!(" {i}").as_bytes());
        }
        line.extend_from_slice(b" {4}\r\nabcd\r\n");
        let mut framer = Framer::new(256);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in line.chunks(100) {
            buf.extend_from_slice(chunk);
            out.extend(frames(&mut framer, &mut buf));
            assert!(buf.len() <= 256 + 100);
        }
        let joined: Vec<u8> = out.iter().flat_map(|f| f.bytes().to_vec()).collect();
        assert_eq!(joined, line);
        assert!(matches!(out[0], Frame::LineChunk { first: true, .. }));
        let last_line = out
            .iter()
            .find(|f| {
                matches!(
                    f,
                    Frame::Line {
                        literal: Some(_),
                        ..
                    }
                )
            })
            .expect("literal line");
        assert!(matches!(
            last_line,
            Frame::Line {
                oversized: true,
                first: false,
                ..
            }
        ));
        assert!(framer.at_boundary());
    }

    #[test]
    fn cancel_literal_resyncs() {
        let mut framer = Framer::new(1024);
        let mut buf = BytesMut::from(&b"a APPEND INBOX {100}\r\n"[..]);
        let out = frames(&mut framer, &mut buf);
        assert_eq!(out.len(), 1);
        assert!(framer.in_literal());
        framer.cancel_literal();
        buf.extend_from_slice(b"b NOOP\r\n");
        let out = frames(&mut framer, &mut buf);
        assert!(matches!(
            &out[0],
            Frame::Line {
                first: true,
                literal: None,
                ..
            }
        ));
    }

    #[test]
    fn huge_literal_is_streamed() {
        let mut framer = Framer::new(1024);
        let mut buf = BytesMut::from(&b"a APPEND INBOX {50000000}\r\n"[..]);
        let _ = frames(&mut framer, &mut buf);
        let mut total = 0u64;
        let chunk = vec![b'x'; 65536];
        while framer.in_literal() {
            buf.extend_from_slice(&chunk[..chunk.len().min((50_000_000 - total) as usize)]);
            for f in frames(&mut framer, &mut buf) {
                total += f.bytes().len() as u64;
            }
            assert!(buf.is_empty());
        }
        assert_eq!(total, 50_000_000);
    }
}
