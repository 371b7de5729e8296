//! `imap::framing::Framer`: arbitrary bytes in arbitrary chunk splits,
//! through `next_frame` (what PreAuth, the backend reader and the pool use)
//! and through `step` with the caller's reassembly (what the relay uses).
//!
//! Input: byte 0 picks the line bound and which announced literals are
//! cancelled (as when the peer refuses a synchronizing literal), byte 1 the
//! chunking of the `next_frame` run (0: all at once), byte 2 the chunking
//! of the `step` run; the rest is the byte stream.
//!
//! Invariants: the frames' bytes concatenated are exactly the bytes
//! consumed; a `Line` holds one LF, at its end, a `LineChunk` none; the
//! bytes retained between calls never exceed the line bound; literal data
//! follows only an announcement, in exactly the announced amount; the
//! `first` flags mark message starts; and where lines end, which literal
//! each announces and where messages end does not depend on the chunking.
#![no_main]

use bytes::BytesMut;
use imapmux::imap::framing::{literal_at_end, Frame, Framer, LiteralSpec, Piece};
use imapmux_fuzz::chunks;
use libfuzzer_sys::fuzz_target;

const MAX_LINES: [usize; 8] = [0, 64, 65, 100, 256, 1024, 8192, 65536];

/// The chunking-independent outcome: for every complete line, its end
/// offset in the stream and the literal it announces (after cancellation).
type Outline = Vec<(usize, Option<LiteralSpec>)>;

/// Frame-level checks shared by both runs.
struct Checker {
    max_line: usize,
    cancel_mask: u8,
    /// Offset of the next byte in the stream.
    offset: usize,
    /// Next line part starts a message.
    at_message_start: bool,
    /// The current line was already partly emitted as LineChunks.
    in_oversized_line: bool,
    /// Literal bytes still expected (as the checker counts them).
    literal_left: u64,
    lines: usize,
    outline: Outline,
    /// Bytes of the line being assembled (to check the literal spec).
    line: Vec<u8>,
}

impl Checker {
    fn new(max_line: usize, cancel_mask: u8) -> Self {
        Checker {
            max_line,
            cancel_mask,
            offset: 0,
            at_message_start: true,
            in_oversized_line: false,
            literal_left: 0,
            lines: 0,
            outline: Vec::new(),
            line: Vec::new(),
        }
    }

    /// Check one frame (`piece`, `bytes`); returns true when the caller
    /// must cancel the literal this line announced.
    fn frame(&mut self, input: &[u8], piece: Piece, bytes: &[u8]) -> bool {
        assert!(!bytes.is_empty(), "empty frame");
        let end = self.offset + bytes.len();
        assert_eq!(
            bytes,
            &input[self.offset..end],
            "frame bytes are not the input"
        );
        self.offset = end;
        match piece {
            Piece::Literal { remaining } => {
                assert!(self.literal_left > 0, "literal data without announcement");
                self.literal_left -= bytes.len() as u64;
                assert_eq!(remaining, self.literal_left, "literal remaining");
                false
            }
            Piece::LineChunk { first } => {
                assert_eq!(self.literal_left, 0, "line data inside a literal");
                assert!(!bytes.contains(&b'\n'), "LF inside a LineChunk");
                assert_eq!(
                    first,
                    self.at_message_start && !self.in_oversized_line,
                    "LineChunk first flag"
                );
                self.in_oversized_line = true;
                self.line.extend_from_slice(bytes);
                false
            }
            Piece::Line {
                first,
                literal,
                oversized,
            } => {
                assert_eq!(self.literal_left, 0, "line data inside a literal");
                assert_eq!(bytes.last(), Some(&b'\n'), "Line without LF at the end");
                assert!(
                    !bytes[..bytes.len() - 1].contains(&b'\n'),
                    "two LFs in one Line"
                );
                assert_eq!(oversized, self.in_oversized_line, "oversized flag");
                assert_eq!(
                    first,
                    self.at_message_start && !oversized,
                    "Line first flag"
                );
                self.line.extend_from_slice(bytes);
                assert_eq!(
                    literal,
                    literal_at_end(&self.line),
                    "literal spec differs from the whole line's"
                );
                self.line.clear();
                self.in_oversized_line = false;
                // (`{0}` has nothing to cancel.)
                let cancel = literal.is_some_and(|s| s.len > 0)
                    && (self.cancel_mask >> (self.lines % 5)) & 1 == 1;
                self.lines += 1;
                let literal = literal.filter(|_| !cancel);
                self.outline.push((end, literal));
                match literal {
                    Some(spec) => {
                        self.literal_left = spec.len;
                        // A zero-length literal: the next line continues
                        // the same message.
                        self.at_message_start = false;
                    }
                    None => self.at_message_start = true,
                }
                cancel
            }
        }
    }
}

fn piece_of(frame: &Frame) -> Piece {
    match frame {
        Frame::Line {
            first,
            literal,
            oversized,
            ..
        } => Piece::Line {
            first: *first,
            literal: *literal,
            oversized: *oversized,
        },
        Frame::LineChunk { first, .. } => Piece::LineChunk { first: *first },
        Frame::Literal { remaining, .. } => Piece::Literal {
            remaining: *remaining,
        },
    }
}

/// The `next_frame` run over `BytesMut`.
fn run_next_frame(input: &[u8], max_line: usize, cancel_mask: u8, chunk_seed: u8) -> Outline {
    let mut framer = Framer::new(max_line);
    let bound = max_line.max(64);
    let mut c = Checker::new(max_line, cancel_mask);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for piece in chunks(input, chunk_seed) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        while let Some(frame) = framer.next_frame(&mut buf) {
            assert_eq!(
                frame.ends_message(),
                matches!(frame, Frame::Line { literal: None, .. })
            );
            if c.frame(input, piece_of(&frame), frame.bytes()) {
                framer.cancel_literal();
                c.literal_left = 0;
                c.at_message_start = true;
                assert!(!framer.in_literal());
            }
            assert_eq!(framer.in_literal(), c.literal_left > 0, "in_literal");
        }
        assert_eq!(c.offset + buf.len(), fed, "bytes lost or duplicated");
        assert!(
            buf.len() <= bound,
            "{} bytes retained with a line bound of {} (max_line {})",
            buf.len(),
            bound,
            c.max_line
        );
        if c.literal_left > 0 {
            assert!(buf.is_empty(), "literal bytes held back");
        }
    }
    assert_eq!(
        framer.at_boundary(),
        buf.is_empty() && c.literal_left == 0 && c.at_message_start && !c.in_oversized_line,
        "at_boundary"
    );
    c.outline
}

/// The `step` run over a plain Vec, reassembled the way the relay does:
/// unconsumed bytes stay at the front, new ones are appended.
fn run_step(input: &[u8], max_line: usize, cancel_mask: u8, chunk_seed: u8) -> Outline {
    let mut framer = Framer::new(max_line);
    let bound = max_line.max(64);
    let mut c = Checker::new(max_line, cancel_mask);
    let mut pending: Vec<u8> = Vec::new();
    for piece in chunks(input, chunk_seed) {
        pending.extend_from_slice(piece);
        let mut off = 0;
        while let Some((p, len)) = framer.step(&pending[off..]) {
            assert!(len <= pending.len() - off, "step length beyond the data");
            if c.frame(input, p, &pending[off..off + len]) {
                framer.cancel_literal();
                c.literal_left = 0;
                c.at_message_start = true;
            }
            off += len;
        }
        pending.drain(..off);
        assert!(pending.len() <= bound, "{} bytes retained", pending.len());
    }
    c.outline
}

fuzz_target!(|data: &[u8]| {
    imapmux_fuzz::report_stack_overflows();
    let Some((&[mode, seed_a, seed_b], input)) = data.split_first_chunk::<3>() else {
        return;
    };
    let max_line = MAX_LINES[usize::from(mode & 7)];
    let cancel_mask = mode >> 3;
    let a = run_next_frame(input, max_line, cancel_mask, seed_a);
    let b = run_step(input, max_line, cancel_mask, seed_b);
    let whole = run_next_frame(input, max_line, cancel_mask, 0);
    assert_eq!(a, whole, "outline depends on the chunking (next_frame)");
    assert_eq!(b, whole, "outline depends on the chunking (step)");
});
