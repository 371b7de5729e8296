//! `cache::flow::Flow`, the FETCH cache in a session: client command lines
//! (`on_client_command`, then `prefetch_done`/`after_prefetch` as the relay
//! does) and every backend frame (`on_backend_frame`, `take_output`). It
//! reads backend FETCH responses with `cache::split`, tracks the mailbox
//! with `session::mailbox::Tracker`, parses FETCH commands and rebuilds
//! responses, all from network input.
//!
//! Input: byte 0 picks `cache.max_item_size`; then a transcript as in
//! `backend_response`: `C: ` lines are client command lines, the rest is
//! backend output, cut by the framer (64 KiB lines) as the relay does.
//!
//! `FUZZ_DEBUG=1` prints what the flow made of each client command.
//!
//! Invariants: no panic and no time-out; a rewritten command keeps the
//! client's tag and is one CRLF line; a prefetch command has imapmux's own
//! tag; an answer from the cache is whole IMAP messages ending with the
//! client's tagged OK; a finished prefetch always has an answer.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use imapmux::cache::flow::{Disposition, Flow, Templates, Upstream, PREFETCH_TAG_PREFIX};
use imapmux::cache::{CacheConfig, FetchCache};
use imapmux::imap::command::tag_of;
use imapmux::imap::framing::{literal_at_end, Frame, Framer};
use libfuzzer_sys::fuzz_target;

/// Check what the flow wants sent for the client command `line`; returns
/// true while our prefetch runs (the client side then waits).
fn check_upstream(line: &[u8], up: &Upstream) -> bool {
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let what = match up {
            Upstream::Forward => "Forward".to_string(),
            Upstream::Replace(l) => format!("Replace {:?}", show(l)),
            Upstream::Answer(b) => format!("Answer {:?}", show(b)),
            Upstream::Prefetch(l) => format!("Prefetch {:?}", show(l)),
        };
        eprintln!("{:?} -> {what}", show(line));
    }
    let tag = tag_of(line).map(str::as_bytes);
    match up {
        Upstream::Forward => false,
        Upstream::Replace(l) => {
            assert!(l.ends_with(b"\n"), "rewritten command without its line end");
            assert!(
                !l[..l.len() - 1].contains(&b'\n'),
                "rewritten command of several lines"
            );
            if let Some(tag) = tag {
                assert!(
                    l.starts_with(tag) && l.get(tag.len()) == Some(&b' '),
                    "tag changed"
                );
            }
            false
        }
        Upstream::Prefetch(l) => {
            assert!(l.starts_with(PREFETCH_TAG_PREFIX) && l.ends_with(b"\r\n"));
            true
        }
        Upstream::Answer(bytes) => {
            // Whole messages, the last one the client's tagged OK.
            let mut framer = Framer::new(1 << 20);
            let mut buf = BytesMut::from(&bytes[..]);
            let mut last = None;
            while let Some(f) = framer.next_frame(&mut buf) {
                if let Frame::Line {
                    bytes, first: true, ..
                } = &f
                {
                    last = Some(bytes.clone());
                }
            }
            assert!(
                buf.is_empty() && framer.at_boundary(),
                "answer ends inside a message"
            );
            let last = last.expect("empty answer");
            if let Some(tag) = tag {
                assert!(
                    last.starts_with(tag),
                    "answer not closed with the client's tag"
                );
            }
            false
        }
    }
}

fuzz_target!(|data: &[u8]| {
    imapmux_fuzz::report_stack_overflows();
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let cfg = CacheConfig {
        enabled: true,
        max_bytes: bytesize::ByteSize::kib(256),
        max_item_size: bytesize::ByteSize::b([64, 4096][usize::from(mode & 1)]),
        ttl: Duration::from_secs(3600),
        idle_ttl: Duration::from_secs(3600),
    };
    let cache = Arc::new(FetchCache::new(&cfg));
    let mut flow = Flow::new(cache, Arc::new(Templates::default()), "b1", "alice");
    let mut framer = Framer::new(65_536);
    let mut buf = BytesMut::new();
    let mut waiting: Option<Vec<u8>> = None;
    for piece in data.split_inclusive(|b| *b == b'\n') {
        // (The relay sees only whole client lines.)
        if let Some(line) = piece.strip_prefix(b"C: ").filter(|l| l.ends_with(b"\n")) {
            if let Some(client_line) = waiting.take() {
                match flow.after_prefetch() {
                    Some(up) => {
                        check_upstream(&client_line, &up);
                    }
                    // The relay gives up after prefetch_timeout: the
                    // session ends.
                    None => return,
                }
            }
            let up = flow.on_client_command(line, literal_at_end(line).is_some());
            if check_upstream(line, &up) {
                waiting = Some(line.to_vec());
            }
            let _ = flow.idle();
            continue;
        }
        buf.extend_from_slice(piece);
        while let Some(frame) = framer.next_frame(&mut buf) {
            let (first, end) = match &frame {
                Frame::Line { first, literal, .. } => (*first, literal.is_none()),
                Frame::LineChunk { first, .. } => (*first, false),
                Frame::Literal { .. } => (false, false),
            };
            let disposition = flow.on_backend_frame(frame.bytes(), first, end);
            if flow.prefetch_done() {
                if let Some(client_line) = waiting.take() {
                    let up = flow.after_prefetch().expect("prefetch done but no answer");
                    check_upstream(&client_line, &up);
                }
            }
            if disposition == Disposition::Hold {
                let _ = flow.take_output();
            }
        }
    }
});
