//! `listener::proxy_protocol::parse`: HAProxy PROXY protocol v1 and v2
//! headers (through the `ppp` crate), as `read_header` peeks them from a
//! trusted load balancer's connection.
//!
//! Input: the first bytes of a connection.
//!
//! Invariants: no panic; a header is never longer than the bytes given;
//! `Incomplete` only below `MAX_HEADER` bytes; the verdict on a header does
//! not change with the bytes after it or with the peek window
//! (`read_header` sees at most `MAX_HEADER` bytes); a header that arrives
//! in pieces is `Incomplete` (never `Invalid`) until whole.
#![no_main]

use imapmux::listener::proxy_protocol::{parse, Parsed, MAX_HEADER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imapmux_fuzz::report_stack_overflows();
    let verdict = parse(data);
    match verdict {
        Parsed::Incomplete => assert!(
            data.len() < MAX_HEADER,
            "Incomplete at {} bytes",
            data.len()
        ),
        Parsed::Invalid => {}
        Parsed::Header { len, source } => {
            assert!(
                len > 0 && len <= data.len(),
                "header length {len} of {}",
                data.len()
            );
            if let Some(s) = source {
                let _ = s.ip();
            }
            // The same header followed by nothing, or by other bytes.
            assert_eq!(parse(&data[..len]), verdict, "header alone");
            let mut more = data[..len].to_vec();
            more.extend_from_slice(b"\x16\x03\x01\x02\x00\x01");
            assert_eq!(parse(&more), verdict, "header before a ClientHello");
            // Shorter reads of it: more bytes needed, never invalid. Every
            // cut of a short header, some of a long one.
            let cuts: Vec<usize> = if len <= 256 {
                (1..len).collect()
            } else {
                vec![1, 5, 12, 13, 15, 16, 17, len / 2, len - 2, len - 1]
            };
            // (read_header never peeks more than MAX_HEADER bytes; past
            // that a header is too long, and Invalid is right.)
            for cut in cuts.into_iter().filter(|c| *c < MAX_HEADER) {
                assert_eq!(
                    parse(&data[..cut]),
                    Parsed::Incomplete,
                    "first {cut} bytes of a {len}-byte header"
                );
            }
        }
    }
    // What read_header sees: at most MAX_HEADER bytes of the connection.
    if data.len() > MAX_HEADER {
        let window = parse(&data[..MAX_HEADER]);
        if let Parsed::Header { .. } = window {
            assert_eq!(window, verdict, "verdict depends on the peek window");
        }
    }
});
