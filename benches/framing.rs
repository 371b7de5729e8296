//! Micro-benchmarks of the relay's hot path: the streaming framer
//! (`imapmux::imap::framing`) and the few parsers the proxy runs per
//! command/response (`parse_command`, `parse_status`).
//!
//! ```sh
//! cargo bench --bench framing                 # full run (~1 min)
//! cargo bench --bench framing -- --quick      # a few seconds
//! cargo bench --bench framing -- literal      # only benchmarks matching "literal"
//! ```
//!
//! Input arrives the way the relay sees it (`src/relay.rs`): chunks are
//! appended to a `BytesMut`, then `Framer::step` is called on the unconsumed
//! bytes until it asks for more, and the consumed prefix is dropped. The
//! `next_frame` variants additionally split every frame off as `Bytes` (what
//! the pre-auth state machine does). The append copy (`extend_from_slice`)
//! is included in every variant: it stands for the copy out of the TLS layer
//! that the relay pays too.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use imapmux::imap::command::parse_command;
use imapmux::imap::framing::{Frame, Framer, Piece};
use imapmux::imap::response::parse_status;

/// The relay's line bound (`server.max_line_length` default).
const MAX_LINE: usize = 64 * 1024;
/// A typical TLS read: one 16 KiB TLS record.
const CHUNK: usize = 16 * 1024;

/// Feed `chunks` through a fresh framer the relay's way; returns the number
/// of complete messages seen.
fn drive_step(chunks: &[&[u8]]) -> usize {
    let mut framer = Framer::new(MAX_LINE);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut messages = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let mut off = 0;
        while let Some((piece, len)) = framer.step(&buf[off..]) {
            if let Piece::Line { literal: None, .. } = piece {
                messages += 1;
            }
            off += len;
        }
        buf.advance(off);
    }
    assert!(framer.at_boundary() && buf.is_empty());
    messages
}

/// Same input, but every frame is split off as `Bytes` (`next_frame`).
fn drive_next_frame(chunks: &[&[u8]]) -> usize {
    let mut framer = Framer::new(MAX_LINE);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut messages = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = framer.next_frame(&mut buf) {
            if frame.ends_message() {
                messages += 1;
            }
            black_box(&frame);
        }
    }
    assert!(framer.at_boundary() && buf.is_empty());
    messages
}

/// Deterministic filler that looks like base64 mail content (no CR/LF
/// except at the end of 76-character lines).
fn body(len: usize) -> Vec<u8> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(len);
    let mut x: u32 = 0x9e37_79b9;
    while out.len() < len {
        if out.len() % 78 == 76 {
            out.extend_from_slice(b"\r\n");
        } else {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.push(B64[(x % 64) as usize]);
        }
    }
    out.truncate(len);
    out
}

/// A realistic mix of client command lines (what a desktop client or a
/// webmail sends once logged in).
fn command_stream(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let line = match i % 8 {
            0 => format!("a{i} UID FETCH 1:50 (FLAGS BODY.PEEK[HEADER])\r\n"),
            1 => format!("a{i} UID FETCH {} (UID RFC822.SIZE BODY.PEEK[])\r\n", 1000 + i),
            2 => format!("a{i} UID STORE {} +FLAGS.SILENT (\\Seen)\r\n", 1000 + i),
            3 => format!("a{i} NOOP\r\n"),
            4 => format!(
                "a{i} UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)])\r\n"
            ),
            5 => format!("a{i} SELECT \"INBOX\" (CONDSTORE)\r\n"),
            6 => format!("a{i} UID SEARCH UNSEEN SINCE 1-Jan-2025\r\n"),
            _ => "DONE\r\n".to_string(),
        };
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// `n` FETCH responses each carrying a `lit`-byte literal, then the tagged OK.
fn fetch_responses(n: usize, lit: usize) -> Vec<u8> {
    let data = body(lit);
    let mut out = Vec::new();
    for i in 1..=n {
        out.extend_from_slice(format!("* {i} FETCH (UID {i} BODY[] {{{lit}}}\r\n").as_bytes());
        out.extend_from_slice(&data);
        out.extend_from_slice(b")\r\n");
    }
    out.extend_from_slice(b"a42 OK Fetch completed (0.001 + 0.000 secs).\r\n");
    out
}

fn chunks(data: &[u8], size: usize) -> Vec<&[u8]> {
    data.chunks(size).collect()
}

fn bench_literal(c: &mut Criterion) {
    const LEN: usize = 10 * 1024 * 1024;
    let mut data = format!("* 1 FETCH (UID 1 BODY[] {{{LEN}}}\r\n").into_bytes();
    data.extend_from_slice(&body(LEN));
    data.extend_from_slice(b")\r\na1 OK Fetch completed.\r\n");
    let input = chunks(&data, CHUNK);
    assert_eq!(drive_step(&input), 2);
    assert_eq!(drive_next_frame(&input), 2);

    let mut g = c.benchmark_group("literal_10MiB_16KiB_chunks");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("step", |b| b.iter(|| drive_step(black_box(&input))));
    g.bench_function("next_frame", |b| {
        b.iter(|| drive_next_frame(black_box(&input)))
    });
    g.finish();
}

fn bench_command_lines(c: &mut Criterion) {
    const N: usize = 4096;
    let data = command_stream(N);
    let mut g = c.benchmark_group("command_lines");
    g.throughput(Throughput::Elements(N as u64));
    for size in [CHUNK, 64] {
        // 16 KiB: pipelined/bulk input; 64 bytes: lines split across reads.
        let input = chunks(&data, size);
        assert_eq!(drive_step(&input), N);
        g.bench_with_input(BenchmarkId::new("step", size), &input, |b, input| {
            b.iter(|| drive_step(black_box(input)))
        });
        g.bench_with_input(BenchmarkId::new("next_frame", size), &input, |b, input| {
            b.iter(|| drive_next_frame(black_box(input)))
        });
    }
    g.finish();
}

fn bench_fetch_responses(c: &mut Criterion) {
    const N: usize = 1000;
    let data = fetch_responses(N, 2048);
    let input = chunks(&data, CHUNK);
    assert_eq!(drive_step(&input), N + 1);
    let mut g = c.benchmark_group("fetch_responses_2KiB_literals");
    // Elements = FETCH responses (the tagged OK is not counted).
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("step", |b| b.iter(|| drive_step(black_box(&input))));
    g.bench_function("next_frame", |b| {
        b.iter(|| drive_next_frame(black_box(&input)))
    });
    g.finish();
}

/// Frame a command into the `lines`/`literals` shape `parse_command` takes.
fn frame_command(raw: &[u8]) -> (Vec<Bytes>, Vec<Bytes>) {
    let mut framer = Framer::new(MAX_LINE);
    let mut buf = BytesMut::from(raw);
    let (mut lines, mut literals) = (Vec::new(), Vec::new());
    let mut literal = BytesMut::new();
    while let Some(frame) = framer.next_frame(&mut buf) {
        match frame {
            Frame::Line { bytes, .. } => lines.push(bytes),
            Frame::Literal { bytes, remaining } => {
                literal.extend_from_slice(&bytes);
                if remaining == 0 {
                    literals.push(literal.split().freeze());
                }
            }
            Frame::LineChunk { .. } => unreachable!("short input"),
        }
    }
    (lines, literals)
}

fn bench_parse(c: &mut Criterion) {
    let logins: [(&str, &[u8]); 3] = [
        ("atoms", b"a001 LOGIN user17 pass17\r\n"),
        (
            "quoted",
            b"a001 LOGIN \"john.doe@example.org\" \"correct \\\"horse\\\" battery\"\r\n",
        ),
        (
            "literals",
            b"a001 LOGIN {20+}\r\njohn.doe@example.org {12+}\r\nsecret{pass}\r\n",
        ),
    ];
    let mut g = c.benchmark_group("parse_command_login");
    g.throughput(Throughput::Elements(1));
    for (name, raw) in logins {
        let (lines, literals) = frame_command(raw);
        let cmd = parse_command(&lines, &literals).expect("valid LOGIN");
        assert_eq!(cmd.name, "LOGIN");
        assert_eq!(cmd.args.len(), 2);
        g.bench_function(name, |b| {
            b.iter(|| parse_command(black_box(&lines), black_box(&literals)))
        });
    }
    g.finish();

    let statuses: [(&str, &[u8]); 4] = [
        ("fetch_ok", b"a124 OK Fetch completed (0.001 + 0.000 + 0.001 secs).\r\n"),
        ("select_ok", b"a123 OK [READ-WRITE] Select completed (0.002 + 0.000 + 0.001 secs).\r\n"),
        (
            "login_ok_capability",
            b"a001 OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE] Logged in\r\n",
        ),
        ("login_no", b"a002 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
    ];
    let mut g = c.benchmark_group("parse_status_tagged");
    g.throughput(Throughput::Elements(1));
    for (name, line) in statuses {
        assert!(parse_status(line).is_some());
        g.bench_function(name, |b| b.iter(|| parse_status(black_box(line))));
    }
    g.finish();
}

fn config() -> Criterion {
    // Short defaults so a full run stays around a minute; `--quick`,
    // `--measurement-time` and `--warm-up-time` on the command line still win.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_literal, bench_command_lines, bench_fetch_responses, bench_parse
}
criterion_main!(benches);
