//! Memory of COMPRESS=DEFLATE streams while parked (alone in its test
//! binary: it reads this process's resident memory). 300 streams inflate a
//! command each (their decompressors stay, as a parked session's does);
//! then each sends a compressed answer and shrinks as a parked session
//! does. The compressor (~310 KiB at level 6) is freed every time, so the
//! second phase adds about one of them, not 300.

use bytes::BytesMut;
use flate2::{Compress, Compression, FlushCompress};
use imapmux::compress::Deflated;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split(' ').nth(1).unwrap().parse().unwrap();
    pages * 4
}

#[test]
fn a_parked_compressed_stream_keeps_only_its_decompressor() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let n = 300u64;
    // The client's compressed `a IDLE`, as a mail client sends it.
    let mut c = Compress::new(Compression::new(6), false);
    let mut cmd = Vec::with_capacity(256);
    c.compress_vec(b"a IDLE\r\n", &mut cmd, FlushCompress::Sync)
        .unwrap();
    let before = rss_kib();
    let mut kept: Vec<_> = (0..n)
        .map(|_| {
            let (ours, theirs) = tokio::io::duplex(1 << 16);
            let mut s = Deflated::new(ours, BytesMut::from(&cmd[..]), 6);
            rt.block_on(async {
                let mut buf = [0u8; 64];
                let got = s.read(&mut buf).await.unwrap();
                assert_eq!(&buf[..got], b"a IDLE\r\n");
            });
            (s, theirs)
        })
        .collect();
    let inflating = rss_kib();
    for (s, _) in kept.iter_mut() {
        rt.block_on(async {
            s.write_all(&[b'x'; 8192]).await.unwrap();
            s.flush().await.unwrap();
        });
        s.shrink();
        assert!(!s.has_compressor());
    }
    let after = rss_kib();
    let per = (inflating - before) / n;
    eprintln!(
        "{per} KiB per parked compressed stream (with its test pipe); answering all of them added {} KiB",
        after - inflating
    );
    assert!(per <= 64, "{per} KiB");
    assert!(after - inflating <= 2048, "{} KiB", after - inflating);
    drop(kept);
}
