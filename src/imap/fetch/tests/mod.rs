//! Unit tests of the FETCH module, with Dovecot 2.3 transcripts.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod att;
mod command;
mod fuzz;
mod response;
mod transcripts;

use bytes::BytesMut;

use super::*;
use crate::imap::framing::{Frame, Framer};

/// Run `input` through a framer, `chunk` bytes at a time, then through the
/// FETCH parser (a new one per response). Returns the events of every
/// response, in order.
pub(super) fn parse_all(input: &[u8], chunk: usize, max_item: usize) -> Vec<Vec<FetchEvent>> {
    let mut framer = Framer::new(64 * 1024);
    let mut buf = BytesMut::new();
    let mut parser = FetchResponseParser::new(max_item);
    let mut all = Vec::new();
    let mut cur = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(frame) = framer.next_frame(&mut buf) {
            parser.feed_into(&frame, &mut cur);
            if frame.ends_message() {
                all.push(std::mem::take(&mut cur));
                parser.reset();
            }
        }
    }
    assert!(buf.is_empty() && framer.at_boundary(), "incomplete input");
    all
}

/// Rebuild one response from its events (Item events only).
pub(super) fn rebuild(events: &[FetchEvent]) -> Vec<u8> {
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
    build_fetch_response(seq.expect("Start"), &refs)
}

/// Frames of one complete message, as the framer cuts them.
pub(super) fn frames_of(input: &[u8]) -> Vec<Frame> {
    let mut framer = Framer::new(64 * 1024);
    let mut buf = BytesMut::from(input);
    std::iter::from_fn(|| framer.next_frame(&mut buf)).collect()
}
