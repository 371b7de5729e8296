//! A byte queue toward one peer: large chunks are kept as they came (no
//! copy), small ones are coalesced so that a burst of short responses is
//! written with few system calls.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Bytes, BytesMut};

/// Chunks shorter than this are copied into the tail buffer.
const COALESCE: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl OutQueue {
    /// Bytes queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if bytes.len() < COALESCE {
            self.tail.extend_from_slice(&bytes);
        } else {
            self.seal();
            self.chunks.push_back(bytes);
        }
    }

    pub(crate) fn push_slice(&mut self, bytes: &[u8]) {
        if bytes.len() < COALESCE {
            self.len += bytes.len();
            self.tail.extend_from_slice(bytes);
        } else {
            self.push(Bytes::copy_from_slice(bytes));
        }
    }

    /// Move the tail into the chunk list (keeps order).
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }

    /// The next bytes to write.
    pub(crate) fn front(&self) -> Option<&[u8]> {
        match self.chunks.front() {
            Some(c) => Some(&c[..]),
            None => (!self.tail.is_empty()).then_some(&self.tail[..]),
        }
    }

    /// Whether whole chunks (taken without a copy, from an input buffer)
    /// are queued; small pieces are copies in the tail.
    pub(crate) fn holds_chunks(&self) -> bool {
        !self.chunks.is_empty()
    }

    /// Fill `out` with the queued bytes in order, as many pieces as fit;
    /// returns how many were filled. One vectored write then sends a
    /// response line, its literal and what follows with one system call
    /// (and, under TLS, in as few records as they fill).
    pub(crate) fn slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let tail = (!self.tail.is_empty()).then_some(&self.tail[..]);
        let pieces = self.chunks.iter().map(|c| &c[..]).chain(tail);
        let mut n = 0;
        for (slot, piece) in out.iter_mut().zip(pieces) {
            *slot = IoSlice::new(piece);
            n += 1;
        }
        n
    }

    /// `n` bytes from the front (of [`OutQueue::front`] or
    /// [`OutQueue::slices`]) were written.
    pub(crate) fn consume(&mut self, n: usize) {
        let mut n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            match self.chunks.front_mut() {
                Some(c) if n >= c.len() => {
                    n -= c.len();
                    self.chunks.pop_front();
                }
                Some(c) => {
                    let _ = c.split_to(n);
                    n = 0;
                }
                None => {
                    let _ = self.tail.split_to(n);
                    n = 0;
                }
            }
        }
        if self.tail.is_empty() && self.chunks.is_empty() {
            // Nothing kept while idle (memory per idle client).
            self.tail = BytesMut::new();
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests make instants from the clock
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_small_and_large_chunks() {
        let mut q = OutQueue::default();
        q.push_slice(b"a");
        q.push(Bytes::from(vec![b'b'; 5000]));
        q.push_slice(b"c");
        q.push_slice(b"d");
        assert_eq!(q.len(), 5003);
        let mut out = Vec::new();
        while let Some(f) = q.front() {
            let n = f.len().min(700);
            out.extend_from_slice(&f[..n]);
            q.consume(n);
        }
        let mut want = b"a".to_vec();
        want.extend(vec![b'b'; 5000]);
        want.extend_from_slice(b"cd");
        assert_eq!(out, want);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn slices_cover_everything_and_consume_spans_chunks() {
        let mut q = OutQueue::default();
        q.push_slice(b"* 1 FETCH (BODY[] {5000}\r\n");
        q.push(Bytes::from(vec![b'x'; 5000]));
        q.push_slice(b")\r\nA OK\r\n");
        let mut buf = [IoSlice::new(&[]); 8];
        let n = q.slices(&mut buf);
        assert_eq!(n, 3);
        let total: usize = buf[..n].iter().map(|s| s.len()).sum();
        assert_eq!(total, q.len());
        // A partial write across the first chunk and into the second.
        let first = buf[0].len();
        q.consume(first + 10);
        assert_eq!(q.front().map(<[u8]>::len), Some(4990));
        let mut one = [IoSlice::new(&[]); 1];
        assert_eq!(q.slices(&mut one), 1);
        q.consume(4990 + 9);
        assert_eq!(q.len(), 0);
        assert!(q.front().is_none());
    }
}
