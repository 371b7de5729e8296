//! Backend connections of the line protocols (POP3, ManageSieve): where a
//! backend serves a protocol, the TCP connect and TLS shared with IMAP's
//! ([`crate::backend`]), and a bounded line reader for their responses.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo
)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

use super::Protocol;
use crate::backend::BackendError;
use crate::config::BackendTls;
use crate::route::Backend;

/// Longest response line read from a backend before login.
const MAX_LINE: usize = 65_536;

/// The address and TLS mode of `backend`'s service for `protocol`, if it
/// has one configured.
pub fn endpoint(backend: &Backend, protocol: Protocol) -> Option<(&str, BackendTls)> {
    let cfg = &backend.cfg;
    match protocol {
        Protocol::Imap => Some((&cfg.address, cfg.tls)),
        Protocol::Pop3 => cfg
            .pop3_address
            .as_deref()
            .map(|a| (a, cfg.pop3_tls.unwrap_or(cfg.tls))),
        Protocol::Sieve => cfg
            .sieve_address
            .as_deref()
            .map(|a| (a, cfg.sieve_tls.unwrap_or(cfg.tls))),
    }
}

/// TCP to `address` within `timeout`, with Nagle off.
pub async fn tcp(address: &str, timeout: Duration) -> Result<TcpStream, BackendError> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| BackendError::Timeout("connect"))?
        .map_err(BackendError::Connect)?;
    tcp.set_nodelay(true).map_err(BackendError::Connect)?;
    Ok(tcp)
}

/// Reads response lines (CRLF included) from a backend, each within the
/// response timeout and at most 64 KiB long. With `literals`, a line that
/// ends in a `{N}` literal announcement (ManageSieve) continues after the
/// literal's N bytes, which are kept in the line.
pub struct LineReader {
    pub buf: BytesMut,
    timeout: Duration,
    literals: bool,
}

impl LineReader {
    pub fn new(timeout: Duration, literals: bool) -> Self {
        LineReader {
            buf: BytesMut::with_capacity(4096),
            timeout,
            literals,
        }
    }

    /// The length of the first complete line in `buf` (with any literals
    /// it announces), if there is one.
    fn complete(&self) -> Result<Option<usize>, BackendError> {
        let mut at = 0;
        loop {
            let Some(nl) = self.buf.get(at..).and_then(|b| memchr::memchr(b'\n', b)) else {
                return Ok(None);
            };
            let end = at + nl + 1;
            let literal = if self.literals {
                self.buf.get(at..end).and_then(literal_len)
            } else {
                None
            };
            match literal {
                Some(n) if n > MAX_LINE => {
                    return Err(BackendError::Protocol("literal too long".into()))
                }
                Some(n) if self.buf.len() >= end + n => at = end + n,
                Some(_) => return Ok(None),
                None => return Ok(Some(end)),
            }
        }
    }

    /// The next line.
    pub async fn line<S: AsyncRead + Unpin + ?Sized>(
        &mut self,
        s: &mut S,
        stage: &'static str,
    ) -> Result<Bytes, BackendError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(end) = self.complete()? {
                return Ok(self.buf.split_to(end).freeze());
            }
            if self.buf.len() > MAX_LINE {
                return Err(BackendError::Protocol(format!(
                    "{stage}: response line too long"
                )));
            }
            self.buf.reserve(4096);
            let n = tokio::time::timeout_at(deadline, s.read_buf(&mut self.buf))
                .await
                .map_err(|_| BackendError::Timeout(stage))??;
            if n == 0 {
                return Err(BackendError::Closed);
            }
        }
    }
}

/// `N` when `line` (CRLF included) ends with `{N}` or `{N+}`.
fn literal_len(line: &[u8]) -> Option<usize> {
    let l = line.strip_suffix(b"\n")?;
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let l = l.strip_suffix(b"}")?;
    let l = l.strip_suffix(b"+").unwrap_or(l);
    let open = memchr::memrchr(b'{', l)?;
    let digits = l.get(open + 1..)?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod tests {
    use super::*;

    #[test]
    fn literal_announcements() {
        assert_eq!(literal_len(b"NO {12}\r\n"), Some(12));
        assert_eq!(literal_len(b"\"a\" {3+}\r\n"), Some(3));
        assert_eq!(literal_len(b"OK \"{3}\"\r\n"), None);
        assert_eq!(literal_len(b"{}\r\n"), None);
        assert_eq!(literal_len(b"{99999999999}\r\n"), None);
    }

    #[tokio::test]
    async fn lines_with_and_without_literals() {
        let data: &[u8] = b"+OK hi\r\nNO {6}\r\na\r\nb\r\n rest\r\nnext\r\n";
        let mut s = data;
        let mut r = LineReader::new(Duration::from_secs(1), true);
        assert_eq!(&r.line(&mut s, "t").await.unwrap()[..], b"+OK hi\r\n");
        assert_eq!(
            &r.line(&mut s, "t").await.unwrap()[..],
            b"NO {6}\r\na\r\nb\r\n rest\r\n"
        );
        assert_eq!(&r.line(&mut s, "t").await.unwrap()[..], b"next\r\n");
        assert!(matches!(
            r.line(&mut s, "t").await,
            Err(BackendError::Closed)
        ));
        let mut s: &[u8] = b"NO {5}\r\nabc";
        let mut r = LineReader::new(Duration::from_secs(1), false);
        assert_eq!(&r.line(&mut s, "t").await.unwrap()[..], b"NO {5}\r\n");
    }
}
