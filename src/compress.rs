//! COMPRESS=DEFLATE (RFC 4978) toward clients: raw deflate (RFC 1951, no
//! zlib header) in both directions, terminated in imapmux so that the
//! relay, the cache and parking keep working on the plain stream inside.
//!
//! [`Deflate`] is the codec, sans-I/O (bytes in, bytes out); [`Deflated`]
//! wraps a stream with it for the drivers. Output is flushed (a deflate
//! sync flush) whenever the driver flushes, i.e. after every batch of
//! responses, so compression adds no latency. Buffers are bounded: a read
//! inflates into the caller's buffer only (no decompression bomb can grow
//! memory), and a write compresses while less than [`HIGH_WATER`] bytes
//! wait for the socket.
//!
//! While a session is parked its compressor is dropped ([`Deflated::shrink`]):
//! after a sync flush the compressed stream is at a block boundary, and a
//! fresh compressor's blocks never refer to data it has not seen, so the
//! client's decompressor reads on unaware. The decompressor is kept: the
//! client's compressor may refer back 32 KiB.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes through every compressed client stream of the process, inside
/// (plain) and on the socket (wire), for the metrics.
#[derive(Debug, Default)]
pub struct Totals {
    pub plain_sent: AtomicU64,
    pub wire_sent: AtomicU64,
    pub wire_received: AtomicU64,
    pub plain_received: AtomicU64,
}

pub static TOTALS: Totals = Totals {
    plain_sent: AtomicU64::new(0),
    wire_sent: AtomicU64::new(0),
    wire_received: AtomicU64::new(0),
    plain_received: AtomicU64::new(0),
};

fn count(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

/// Compressed bytes waiting for the socket before writes stop taking more.
pub const HIGH_WATER: usize = 64 * 1024;

/// Compressed input read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// What went wrong in the compressed stream.
#[derive(Debug, thiserror::Error)]
pub enum DeflateError {
    #[error("the client's compressed data is corrupt: {0}")]
    Corrupt(#[from] flate2::DecompressError),
    #[error("compressing failed: {0}")]
    Compress(#[from] flate2::CompressError),
}

impl From<DeflateError> for io::Error {
    fn from(e: DeflateError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The raw deflate codec of one session, both directions.
pub struct Deflate {
    level: Compression,
    /// Created on the first write after [`Deflate::drop_compressor`].
    comp: Option<Box<Compress>>,
    decomp: Decompress,
    /// Compressed data went out since the last sync flush.
    unflushed: bool,
    /// The client ended its compressed stream (a final block).
    ended: bool,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("level", &self.level.level())
            .field("compressor", &self.comp.is_some())
            .field("unflushed", &self.unflushed)
            .finish()
    }
}

impl Deflate {
    /// `level`: 1 (fastest) to 9 (smallest).
    pub fn new(level: u32) -> Self {
        Deflate {
            level: Compression::new(level.clamp(1, 9)),
            comp: None,
            decomp: Decompress::new(false),
            unflushed: false,
            ended: false,
        }
    }

    /// Compress all of `input` onto `out`; with `flush`, end with a sync
    /// flush (everything so far decodable by the peer, byte-aligned).
    pub fn compress(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        flush: bool,
    ) -> Result<(), DeflateError> {
        if input.is_empty() && !(flush && self.unflushed) {
            return Ok(());
        }
        let level = self.level;
        let c = self
            .comp
            .get_or_insert_with(|| Box::new(Compress::new(level, false)));
        let mode = if flush {
            FlushCompress::Sync
        } else {
            FlushCompress::None
        };
        let mut rest = input;
        loop {
            out.reserve(rest.len() / 2 + 256);
            let before = c.total_in();
            c.compress_vec(rest, out, mode)?;
            let used = usize::try_from(c.total_in() - before).unwrap_or(rest.len());
            rest = rest.get(used..).unwrap_or_default();
            // Done when the input is in and the output did not fill the
            // room it had (zlib's rule for a complete flush).
            if rest.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        self.unflushed = !flush;
        Ok(())
    }

    /// Inflate from `input` into `out`: (bytes of input used, bytes of
    /// output made). After the client's final block, nothing more.
    pub fn decompress(
        &mut self,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, usize), DeflateError> {
        if self.ended || out.is_empty() {
            return Ok((0, 0));
        }
        let (i0, o0) = (self.decomp.total_in(), self.decomp.total_out());
        let status = self.decomp.decompress(input, out, FlushDecompress::None)?;
        if status == Status::StreamEnd {
            self.ended = true;
        }
        let used = usize::try_from(self.decomp.total_in() - i0).unwrap_or(input.len());
        let made = usize::try_from(self.decomp.total_out() - o0).unwrap_or(out.len());
        Ok((used, made))
    }

    /// The client ended its compressed stream.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Drop the compressor if everything it made was flushed (memory of
    /// an idle session); the next write makes a fresh one.
    pub fn drop_compressor(&mut self) -> bool {
        if self.unflushed {
            return false;
        }
        self.comp = None;
        true
    }
}

/// A stream with COMPRESS=DEFLATE on it.
pub struct Deflated<S> {
    inner: S,
    codec: Deflate,
    /// Compressed input not inflated yet.
    rbuf: BytesMut,
    /// Compressed output not written yet.
    wbuf: Vec<u8>,
    wpos: usize,
    eof: bool,
}

impl<S> Deflated<S> {
    /// `inner` from now on carries compressed data; `pending`: compressed
    /// bytes already read from it.
    pub fn new(inner: S, pending: BytesMut, level: u32) -> Self {
        Deflated {
            inner,
            codec: Deflate::new(level),
            rbuf: pending,
            wbuf: Vec::new(),
            wpos: 0,
            eof: false,
        }
    }

    /// Whether a compressor is allocated (none after [`Deflated::shrink`]
    /// until the next write).
    pub fn has_compressor(&self) -> bool {
        self.codec.comp.is_some()
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Give back what an idle session need not hold: the compressor (when
    /// flushed) and empty buffers.
    pub fn shrink(&mut self) {
        if self.wpos >= self.wbuf.len() && self.codec.drop_compressor() {
            self.wbuf = Vec::new();
            self.wpos = 0;
        }
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
    }
}

impl<S: AsyncWrite + Unpin> Deflated<S> {
    /// Write out what is compressed; `Ready` once all of it is written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let rest = self.wbuf.get(self.wpos..).unwrap_or_default();
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            count(&TOTALS.wire_sent, n);
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }

    fn pending_out(&self) -> usize {
        self.wbuf.len() - self.wpos.min(self.wbuf.len())
    }

    /// Room for more: drain when the high-water mark is reached.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending_out() >= HIGH_WATER {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deflated<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !me.rbuf.is_empty() {
                let (used, made) = me.codec.decompress(&me.rbuf, buf.initialize_unfilled())?;
                me.rbuf.advance(used);
                buf.advance(made);
                count(&TOTALS.plain_received, made);
                if made > 0 {
                    return Poll::Ready(Ok(()));
                }
                if me.codec.ended() {
                    // The client ended compression: nothing more is read.
                    return Poll::Ready(Ok(()));
                }
                if used > 0 {
                    continue;
                }
            }
            if me.eof || me.codec.ended() {
                return Poll::Ready(Ok(()));
            }
            if me.rbuf.len() > 4 * READ_CHUNK {
                // Input the inflater will not take: corrupt.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "compressed input makes no progress",
                )));
            }
            let start = me.rbuf.len();
            me.rbuf.resize(start + READ_CHUNK, 0);
            let mut rb = ReadBuf::new(me.rbuf.get_mut(start..).unwrap_or_default());
            let polled = Pin::new(&mut me.inner).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            me.rbuf.truncate(start + n);
            count(&TOTALS.wire_received, n);
            ready!(polled)?;
            if n == 0 {
                me.eof = true;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deflated<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        ready!(me.poll_room(cx))?;
        let n = data.len().min(HIGH_WATER);
        me.codec
            .compress(data.get(..n).unwrap_or_default(), &mut me.wbuf, false)?;
        count(&TOTALS.plain_sent, n);
        // Start writing now; what the socket does not take waits.
        if let Poll::Ready(Err(e)) = me.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        ready!(me.poll_room(cx))?;
        let mut n = 0;
        for b in bufs {
            if n >= HIGH_WATER {
                break;
            }
            let take = b.len().min(HIGH_WATER - n);
            me.codec
                .compress(b.get(..take).unwrap_or_default(), &mut me.wbuf, false)?;
            n += take;
        }
        count(&TOTALS.plain_sent, n);
        if let Poll::Ready(Err(e)) = me.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        me.codec.compress(&[], &mut me.wbuf, true)?;
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        me.codec.compress(&[], &mut me.wbuf, true)?;
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "compress_tests.rs"]
mod tests;
