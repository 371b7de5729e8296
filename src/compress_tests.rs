use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The client's side: a raw deflate pair, as a mail client keeps one.
struct Peer {
    c: Compress,
    d: Decompress,
}

impl Peer {
    fn new() -> Self {
        Peer {
            c: Compress::new(Compression::new(6), false),
            d: Decompress::new(false),
        }
    }

    fn pack(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        let start = self.c.total_in();
        loop {
            let used = (self.c.total_in() - start) as usize;
            self.c
                .compress_vec(&data[used..], &mut out, FlushCompress::Sync)
                .unwrap();
            if (self.c.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(1024));
        }
        out
    }

    fn unpack(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() * 8 + 1024);
        let mut used = 0;
        loop {
            let i0 = self.d.total_in();
            self.d
                .decompress_vec(&data[used..], &mut out, FlushDecompress::None)
                .unwrap();
            used += (self.d.total_in() - i0) as usize;
            if used == data.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(1024));
        }
        out
    }
}

#[test]
fn the_codec_round_trips_and_flushes_only_when_needed() {
    let mut z = Deflate::new(6);
    let mut peer = Peer::new();
    let mut wire = Vec::new();
    z.compress(b"* 1 EXISTS\r\n", &mut wire, false).unwrap();
    z.compress(b"a OK done\r\n", &mut wire, true).unwrap();
    assert_eq!(peer.unpack(&wire), b"* 1 EXISTS\r\na OK done\r\n");
    // Nothing new: a flush adds no bytes.
    let mut more = Vec::new();
    z.compress(&[], &mut more, true).unwrap();
    assert!(more.is_empty());
    // A fresh compressor after a flush: the peer's inflater reads on.
    assert!(z.drop_compressor());
    z.compress(b"b OK again\r\n", &mut more, true).unwrap();
    assert_eq!(peer.unpack(&more), b"b OK again\r\n");
    // Unflushed output keeps its compressor.
    z.compress(b"x", &mut more, false).unwrap();
    assert!(!z.drop_compressor());
    // Client to server.
    let packed = peer.pack(b"c NOOP\r\n");
    let mut out = [0u8; 64];
    let (used, made) = z.decompress(&packed, &mut out).unwrap();
    assert_eq!(used, packed.len());
    assert_eq!(&out[..made], b"c NOOP\r\n");
}

#[test]
fn corrupt_or_hostile_input_is_an_error_or_bounded_never_a_panic() {
    let mut z = Deflate::new(1);
    let mut out = [0u8; 16];
    // Reserved block type 3.
    assert!(z.decompress(&[0xff, 0xff, 0xff, 0xff], &mut out).is_err());
    // A bomb: 8 MiB of zeros in a few KiB come out 16 bytes at a time.
    let mut peer = Peer::new();
    let bomb = peer.pack(&vec![0u8; 8 << 20]);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let mut z = Deflate::new(1);
    let (_, made) = z.decompress(&bomb, &mut out).unwrap();
    assert_eq!(made, 16);
}

#[tokio::test]
async fn a_stream_reads_and_writes_compressed_and_bounds_what_it_holds() {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let mut peer = Peer::new();
    // Compressed bytes the client sent right after COMPRESS, already read.
    let early = peer.pack(b"a NOOP\r\n");
    let mut s = Deflated::new(ours, BytesMut::from(&early[..]), 6);
    let (mut tr, mut tw) = tokio::io::split(theirs);
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"a NOOP\r\n");
    tw.write_all(&peer.pack(b"b CHECK\r\n")).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"b CHECK\r\n");
    // Responses, vectored, then one flush.
    let parts = [
        io::IoSlice::new(b"* 2 EXISTS\r\n"),
        io::IoSlice::new(b"a OK NOOP completed.\r\n"),
    ];
    let n = s.write_vectored(&parts).await.unwrap();
    assert_eq!(n, 34);
    s.flush().await.unwrap();
    let mut wire = vec![0u8; 4096];
    let n = tr.read(&mut wire).await.unwrap();
    assert_eq!(
        peer.unpack(&wire[..n]),
        b"* 2 EXISTS\r\na OK NOOP completed.\r\n"
    );
    // Parked: the compressor goes, the stream goes on.
    s.shrink();
    assert!(s.codec.comp.is_none() && s.wbuf.capacity() == 0);
    s.write_all(b"* 3 EXISTS\r\n").await.unwrap();
    s.flush().await.unwrap();
    let n = tr.read(&mut wire).await.unwrap();
    assert_eq!(peer.unpack(&wire[..n]), b"* 3 EXISTS\r\n");
    // A bomb from the client is read in the caller's buffer sizes.
    tw.write_all(&peer.pack(&vec![b'x'; 4 << 20]))
        .await
        .unwrap();
    let mut total = 0;
    let mut big = vec![0u8; 8192];
    while total < 4 << 20 {
        let n = s.read(&mut big).await.unwrap();
        assert!(n > 0 && n <= 8192);
        assert!(s.rbuf.len() <= 5 * READ_CHUNK);
        total += n;
    }
    assert_eq!(total, 4 << 20);
    // Corrupt data: an error, not a panic; EOF: 0.
    tw.write_all(&[0xff; 8]).await.unwrap();
    assert_eq!(
        s.read(&mut buf).await.unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
    drop(tw);
    drop(tr);
}

#[tokio::test]
async fn a_large_write_waits_for_the_socket_at_the_high_water_mark() {
    let (ours, mut theirs) = tokio::io::duplex(4096);
    let mut s = Deflated::new(ours, BytesMut::new(), 1);
    // Incompressible data: the socket takes 4 KiB, the stream holds at
    // most about HIGH_WATER more, then the write waits.
    let mut x: u32 = 1;
    let noise: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let w = tokio::time::timeout(std::time::Duration::from_millis(200), s.write_all(&noise)).await;
    assert!(w.is_err(), "the whole MiB went into memory");
    assert!(
        s.pending_out() <= 2 * HIGH_WATER + 1024,
        "{}",
        s.pending_out()
    );
    let mut sink = vec![0u8; 1 << 16];
    let _ = theirs.read(&mut sink).await.unwrap();
}
