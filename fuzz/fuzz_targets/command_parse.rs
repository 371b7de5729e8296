//! `imap::command::parse_command(&[Bytes], &[Bytes])`, the parser of the
//! commands imapmux answers itself before login (and of SELECT lines the
//! relay looks at after login). Kept to the public signature: the parser is
//! being rewritten.
//!
//! Input: a client byte stream. It is cut into messages (lines and literal
//! data) by the framer, as PreAuth does, and every message is parsed; an
//! unfinished last message is parsed too (literal data missing). The whole
//! input is also parsed as one line, as the relay does with a SELECT line.
//! Run with `-max_len=70000` so that 64 KiB lines (the default
//! `server.max_line_length`) are covered.
//!
//! Runs on a thread with tokio's 2 MiB worker stack, like a session; one
//! input in four is also run stretched to 64 KiB (`imapmux_fuzz::stretch`:
//! runs of a repeated byte multiplied), as depth and time give no coverage.
//!
//! Invariants: no panic, no stack overflow, no time-out (quadratic time on
//! a 64 KiB line shows up as one); a parsed command's tag is the line's tag;
//! a string encoded with `quote` parses back to itself.
#![no_main]

use bytes::{Bytes, BytesMut};
use imapmux::imap::command::{parse_command, quote, tag_of};
use imapmux::imap::framing::{Frame, Framer};
use libfuzzer_sys::fuzz_target;

fn parse(lines: &[Bytes], literals: &[Bytes]) {
    let Ok(cmd) = parse_command(lines, literals) else {
        return;
    };
    let first = lines.first().expect("parsed without a line");
    assert_eq!(Some(cmd.tag.as_str()), tag_of(first), "tag");
    assert!(!cmd.name.is_empty() && !cmd.name.contains(' '));
    // quote() is how imapmux writes user names and passwords to backends:
    // what it produces must read back as the same string.
    for arg in cmd.args.iter().take(4) {
        let Some(value) = arg.as_astring() else {
            continue;
        };
        let Some(q) = quote(value) else {
            continue;
        };
        let mut line = b"t LOGIN ".to_vec();
        line.extend_from_slice(&q);
        line.extend_from_slice(b"\r\n");
        let back = parse_command(&[Bytes::from(line)], &[]).expect("quoted string does not parse");
        assert_eq!(
            back.args.first().and_then(|a| a.as_astring()),
            Some(value),
            "quote() does not round-trip"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // On a session's stack size, not libFuzzer's 8 MiB.
    let data = data.to_vec();
    imapmux_fuzz::on_tokio_stack(move || {
        run(&data);
        // One input in four also runs stretched to a 64 KiB line.
        if data.len() % 4 == 0 {
            if let Some(big) = imapmux_fuzz::stretch(&data, 65_536) {
                run(&big);
            }
        }
    });
});

fn run(data: &[u8]) {
    // As one line, the way the relay parses a SELECT line.
    parse(&[Bytes::copy_from_slice(data)], &[]);

    // As messages cut by the framer, the way PreAuth collects them.
    let mut framer = Framer::new(65_536);
    let mut buf = BytesMut::from(data);
    let (mut lines, mut literals) = (Vec::new(), Vec::new());
    let mut literal = BytesMut::new();
    while let Some(frame) = framer.next_frame(&mut buf) {
        match frame {
            Frame::Line {
                bytes, literal: l, ..
            } => {
                lines.push(bytes);
                if l.is_none() {
                    parse(&lines, &literals);
                    lines.clear();
                    literals.clear();
                }
            }
            Frame::LineChunk { .. } => {
                lines.clear();
                literals.clear();
            }
            Frame::Literal { bytes, remaining } => {
                literal.extend_from_slice(&bytes);
                if remaining == 0 {
                    literals.push(literal.split().freeze());
                }
            }
        }
    }
    if !lines.is_empty() {
        parse(&lines, &literals);
    }
}
