//! `compress::Deflated`: a client's COMPRESS=DEFLATE stream (raw deflate),
//! read the way the relay reads it, in small buffers.
//!
//! Input: the first byte picks the read size (1..=256 bytes); the rest is
//! what the client sent after `COMPRESS DEFLATE`, split in two: what was
//! already read with the command, and what arrives on the socket.
//!
//! Invariants: no panic and no hang; every read returns at most the
//! buffer's size; the bytes held for inflating stay bounded; corrupt input
//! is an `InvalidData` error.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use imapmux::compress::Deflated;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// A socket that has `data`, then EOF.
struct Feed(Vec<u8>, usize);

impl AsyncRead for Feed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = buf.remaining().min(self.0.len() - self.1).min(97);
        let start = self.1;
        buf.put_slice(&self.0[start..start + n]);
        self.1 += n;
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    imapmux_fuzz::report_stack_overflows();
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let size = size as usize + 1;
    let cut = rest.len() / 3;
    let mut s = Deflated::new(
        Feed(rest[cut..].to_vec(), 0),
        BytesMut::from(&rest[..cut]),
        1,
    );
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = vec![0u8; size];
    // Inflated output is bounded only by the input's ratio (deflate: at
    // most 1032:1); stop well before a bomb would take long.
    let mut total = 0usize;
    while total < 8 << 20 {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut s).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => break,
            Poll::Ready(Ok(())) => {
                assert!(rb.filled().len() <= size);
                total += rb.filled().len();
            }
            Poll::Ready(Err(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
                break;
            }
            Poll::Pending => unreachable!("the feed never waits"),
        }
    }
});
