//! The client-side stream: plaintext TCP, or TLS over TCP (implicit or
//! after STARTTLS), either with COMPRESS=DEFLATE on it after login.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::compress::Deflated;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// COMPRESS=DEFLATE over a plain or TLS stream.
    Deflate(Box<Deflated<ClientStream>>),
}

impl ClientStream {
    pub fn is_tls(&self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            ClientStream::Tls(_) => true,
            ClientStream::Deflate(d) => d.get_ref().is_tls(),
        }
    }

    pub fn is_compressed(&self) -> bool {
        matches!(self, ClientStream::Deflate(_))
    }

    /// The negotiated TLS version, on a TLS stream.
    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        match self {
            ClientStream::Plain(_) => None,
            ClientStream::Tls(s) => s.get_ref().1.protocol_version(),
            ClientStream::Deflate(d) => d.get_ref().tls_version(),
        }
    }

    /// The same stream with COMPRESS=DEFLATE on it from now on; `pending`:
    /// compressed bytes already read from it. (Already compressed: as is.)
    pub fn start_deflate(self, pending: BytesMut, level: u32) -> ClientStream {
        match self {
            ClientStream::Deflate(_) => self,
            s => ClientStream::Deflate(Box::new(Deflated::new(s, pending, level))),
        }
    }

    /// Give back what an idle (parked) session need not hold.
    pub fn shrink(&mut self) {
        if let ClientStream::Deflate(d) = self {
            d.shrink();
        }
    }
}

/// Streams the relay can turn COMPRESS=DEFLATE on for.
pub trait Compressible: Sized {
    fn start_deflate(self, pending: BytesMut, level: u32) -> Self;
}

impl Compressible for ClientStream {
    fn start_deflate(self, pending: BytesMut, level: u32) -> Self {
        ClientStream::start_deflate(self, pending, level)
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ClientStream::Deflate(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ClientStream::Deflate(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ClientStream::Deflate(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientStream::Deflate(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            ClientStream::Deflate(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
            ClientStream::Deflate(s) => s.is_write_vectored(),
        }
    }
}
