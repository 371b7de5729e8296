//! The FETCH response parsers: the streaming `imap::fetch::FetchResponseParser`
//! (with its value scanner), fed the framer's frames in arbitrary chunk
//! splits, and `cache::split::parse_fetch`, which the cache uses to cut a
//! buffered backend response into items. Mirrors
//! src/imap/fetch/tests/fuzz.rs.
//!
//! Input: byte 0 picks `max_item` and the framer's line bound, byte 1 the
//! chunking; the rest is backend output (one or more responses).
//!
//! Invariants: no panic; the streaming parser keeps at most about
//! `max_item` + `MAX_ITEM_NAME` bytes; a response it parses completely
//! rebuilds byte for byte with `build_fetch_response`, and so does one
//! that `parse_fetch` accepts (the cache serves rebuilt responses); a
//! response reported done starts like a FETCH response.
#![no_main]

use bytes::BytesMut;
use imapmux::cache::split::parse_fetch;
use imapmux::imap::fetch::{
    build_fetch_response, fetch_seq, is_fetch_start, FetchEvent, FetchResponseParser, MAX_ITEM_NAME,
};
use imapmux::imap::framing::Framer;
use imapmux_fuzz::chunks;
use libfuzzer_sys::fuzz_target;

/// The response rebuilt from the streaming parser's events.
fn rebuild(events: &[FetchEvent]) -> Vec<u8> {
    let mut seq = None;
    let mut items = Vec::new();
    for e in events {
        match e {
            FetchEvent::Start { seq: s } => seq = Some(*s),
            FetchEvent::Item { name, value } => items.push((name.clone(), value.raw.clone())),
            FetchEvent::End => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    let refs: Vec<(&[u8], &[u8])> = items.iter().map(|(n, v)| (&n[..], &v[..])).collect();
    build_fetch_response(seq.expect("End without Start"), &refs)
}

fn check_split(message: &[u8]) {
    let Some(parsed) = parse_fetch(message) else {
        return;
    };
    assert_eq!(Some(parsed.seq), fetch_seq(message));
    let items: Vec<(&[u8], &[u8])> = parsed
        .items
        .iter()
        .map(|i| (&message[i.name.clone()], &message[i.value.clone()]))
        .collect();
    assert_eq!(
        build_fetch_response(parsed.seq, &items),
        message,
        "parse_fetch accepted a response that does not rebuild"
    );
}

fuzz_target!(|data: &[u8]| {
    imapmux_fuzz::report_stack_overflows();
    let Some((&[mode, seed], input)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max_item = [8, 64, 4096, 1 << 20][usize::from(mode & 3)];
    let max_line = [256, 65_536][usize::from((mode >> 2) & 1)];
    let mut framer = Framer::new(max_line);
    let mut parser = FetchResponseParser::new(max_item);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut message = Vec::new();
    for piece in chunks(input, seed) {
        buf.extend_from_slice(piece);
        while let Some(frame) = framer.next_frame(&mut buf) {
            message.extend_from_slice(frame.bytes());
            parser.feed_into(&frame, &mut events);
            assert!(
                parser.retained_bytes() <= 2 * max_item + 2 * MAX_ITEM_NAME + 64,
                "parser keeps {} bytes (max_item {max_item})",
                parser.retained_bytes()
            );
            if !frame.ends_message() {
                continue;
            }
            let complete = events.last() == Some(&FetchEvent::End)
                && !events
                    .iter()
                    .any(|e| matches!(e, FetchEvent::Error(_) | FetchEvent::ItemTooLarge { .. }));
            if complete {
                assert_eq!(
                    rebuild(&events),
                    message,
                    "parsed response does not rebuild"
                );
                assert_eq!(parser.seq(), fetch_seq(&message));
            }
            if parser.is_done() {
                assert!(is_fetch_start(&message));
            }
            for e in &events {
                if let FetchEvent::Item { value, .. } = e {
                    let _ = (value.is_nil(), value.literal_data());
                }
            }
            let _ = (parser.uid(), parser.flags(), parser.is_failed());
            check_split(&message);
            events.clear();
            message.clear();
            parser.reset();
        }
    }
    // Whatever is left, as the cache would see a truncated buffer.
    check_split(input);
});
