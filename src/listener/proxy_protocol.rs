//! HAProxy PROXY protocol (v1 text, v2 binary) on listeners behind a load
//! balancer, so the real client address survives it. Only sources in the
//! listener's `trusted_proxies` may use it; anyone else is refused.
//!
//! The header is read with `peek` and then consumed exactly, so the bytes
//! after it (a TLS ClientHello, say) stay in the socket for the session.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ppp::{HeaderResult, PartialResult};
use tokio::net::TcpStream;

/// The longest header accepted (v1 is at most 107 bytes; v2 with TLVs can
/// be longer, but load balancers send far less than this).
pub const MAX_HEADER: usize = 1024;

/// What a buffer starting a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A header of `len` bytes; `source` is the client (None for
    /// `UNKNOWN`/`LOCAL`: keep the TCP peer).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Not a valid PROXY header.
    Invalid,
}

/// The longest v1 header, CRLF included (PROXY protocol spec, 2.1).
const V1_MAX: usize = 107;

/// Parse the start of a connection (sans-I/O).
pub fn parse(buf: &[u8]) -> Parsed {
    // A v1 header is whole only with its CRLF. ppp judges some prefixes of
    // valid headers invalid (cut after the source port's space, or inside a
    // UTF-8 character), so a header split by TCP would be refused: wait.
    if buf.starts_with(b"PROXY ")
        && buf.len() < V1_MAX
        && memchr::memmem::find(buf, b"\r\n").is_none()
    {
        return Parsed::Incomplete;
    }
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return if buf.len() >= MAX_HEADER {
            Parsed::Invalid
        } else {
            Parsed::Incomplete
        };
    }
    match result {
        HeaderResult::V1(Ok(h)) => {
            // ppp ends the line two bytes after its first CR, whatever they
            // are ("… \n\r3" passes): the header must end in CRLF, or its
            // tail would be left in the stream for the session.
            if !buf
                .get(..h.header.len())
                .is_some_and(|l| l.ends_with(b"\r\n"))
            {
                return Parsed::Invalid;
            }
            let source = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Unknown => None,
            };
            Parsed::Header {
                len: h.header.len(),
                source,
            }
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match h.addresses {
                ppp::v2::Addresses::IPv4(a) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                ppp::v2::Addresses::IPv6(a) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                _ => None,
            };
            Parsed::Header {
                len: h.len(),
                source,
            }
        }
        _ => Parsed::Invalid,
    }
}

/// Why a PROXY-protocol connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("source {0} is not in trusted_proxies")]
    Untrusted(IpAddr),
    #[error("invalid PROXY protocol header")]
    Invalid,
    #[error("no PROXY protocol header in time")]
    Timeout,
    #[error("connection closed before the PROXY header")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Read the header from a trusted source; returns the client address.
pub async fn read_header(
    tcp: &TcpStream,
    peer: SocketAddr,
    trusted: &[ipnet::IpNet],
    timeout: Duration,
) -> Result<SocketAddr, ProxyError> {
    if !trusted.iter().any(|n| n.contains(&peer.ip())) {
        return Err(ProxyError::Untrusted(peer.ip()));
    }
    let work = async {
        let mut buf = vec![0u8; MAX_HEADER];
        loop {
            tcp.readable().await?;
            let n = match tcp.peek(&mut buf).await {
                Ok(0) => return Err(ProxyError::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            };
            match parse(&buf[..n]) {
                Parsed::Incomplete => {
                    // Wait for more bytes without spinning on the same ones.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Parsed::Invalid => return Err(ProxyError::Invalid),
                Parsed::Header { len, source } => {
                    // Consume exactly the header.
                    let mut left = len;
                    while left > 0 {
                        tcp.readable().await?;
                        match tcp.try_read(&mut buf[..left.min(MAX_HEADER)]) {
                            Ok(0) => return Err(ProxyError::Closed),
                            Ok(k) => left -= k,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    return Ok(source.unwrap_or(peer));
                }
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ProxyError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4_and_unknown() {
        let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 993\r\n* OK rest";
        match parse(h) {
            Parsed::Header { len, source } => {
                assert_eq!(len, 42);
                assert_eq!(source, Some("203.0.113.7:5555".parse().unwrap()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                source: None
            }
        ));
        assert_eq!(parse(b"PROXY TCP4 203.0"), Parsed::Incomplete);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid);
        assert_eq!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00"),
            Parsed::Invalid
        );
    }

    #[test]
    fn v2_tcp6() {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x21); // v2, PROXY
        h.push(0x21); // TCP over IPv6
        h.extend_from_slice(&36u16.to_be_bytes());
        h.extend_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        h.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        h.extend_from_slice(&4444u16.to_be_bytes());
        h.extend_from_slice(&993u16.to_be_bytes());
        let total = h.len();
        h.extend_from_slice(b"\x16\x03\x01");
        match parse(&h) {
            Parsed::Header { len, source } => {
                assert_eq!(len, total);
                assert_eq!(source, Some("[2001:db8::7]:4444".parse().unwrap()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(&h[..20]), Parsed::Incomplete);
    }

    /// Fuzz finding (proxy_protocol): ppp called some prefixes of valid v1
    /// headers invalid, so a header that arrived in two TCP segments could
    /// be refused. Every prefix must be Incomplete.
    #[test]
    fn v1_header_in_pieces_is_incomplete_until_whole() {
        for h in [
            &b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 993\r\n"[..],
            b"PROXY TCP6 2001:db8::7 2001:db8::1 4444 993\r\n",
            b"PROXY UNKNOWN\r\n",
            b"PROXY UNKNOWN \xc8\xab:ffff\xc8\xa9\xc8\xab:f.\r\n",
        ] {
            assert!(matches!(parse(h), Parsed::Header { len, .. } if len == h.len()));
            for i in 0..h.len() {
                assert_eq!(
                    parse(&h[..i]),
                    Parsed::Incomplete,
                    "{:?}",
                    String::from_utf8_lossy(&h[..i])
                );
            }
        }
        // Still refused once the line is over, or too long to be a header.
        assert_eq!(
            parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 \r\n"),
            Parsed::Invalid
        );
        assert_eq!(parse(&[b'P'; 200]), Parsed::Invalid);
        // ppp takes the first 19 bytes as a header (\n\r ends it for ppp).
        let odd = b"PROXY UNKNOWN a \n\r35\r\n";
        assert!(
            matches!(HeaderResult::parse(odd), HeaderResult::V1(Ok(h)) if h.header.len() == 19)
        );
        assert_eq!(parse(odd), Parsed::Invalid);
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(V1_MAX, b'1');
        assert_eq!(parse(&long), Parsed::Invalid);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for n in 0..2000 {
            let len = n % 200;
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8);
            }
            if n % 3 == 0 {
                v.splice(0..0, b"PROXY ".iter().copied());
            }
            let _ = parse(&v);
        }
    }
}
