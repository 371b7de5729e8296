//! Connecting to a backend: TCP, then TLS (implicit or STARTTLS) as
//! configured, the greeting and the pre-login capabilities. Every error
//! here happens before any credentials are sent.

use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::net::TcpStream;

use super::{BackendError, BoxStream, Connected, Reader};
use crate::config::BackendTls;
use crate::imap::response::{parse_status, Status};
use crate::route::Backend;

/// Read the greeting: its capabilities, if it carried them.
async fn greeting<S: AsyncRead + Unpin + ?Sized>(
    r: &mut Reader,
    s: &mut S,
) -> Result<Vec<String>, BackendError> {
    let line = r.read_line(s, "greeting").await?;
    let status =
        parse_status(&line).ok_or_else(|| BackendError::Protocol("unparsable greeting".into()))?;
    match status.status {
        Status::Ok => Ok(status.capabilities().unwrap_or_default()),
        Status::Bye => Err(BackendError::Refused(status.text)),
        _ => Err(BackendError::Protocol("unexpected greeting".into())),
    }
}

/// Connect to `backend`, (START)TLS as configured, read the greeting and
/// the pre-login capabilities. Every error here happened before any
/// credentials were sent, so another backend may be tried.
pub async fn connect(
    backend: &Backend,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Connected, BackendError> {
    let mut tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(&backend.cfg.address))
        .await
        .map_err(|_| BackendError::Timeout("connect"))?
        .map_err(BackendError::Connect)?;
    tcp.set_nodelay(true).map_err(BackendError::Connect)?;
    let mut reader = Reader::new(response_timeout);
    let (mut stream, mut caps): (BoxStream, Vec<String>) = match backend.cfg.tls {
        BackendTls::None => {
            let caps = greeting(&mut reader, &mut tcp).await?;
            (Box::new(tcp), caps)
        }
        BackendTls::Implicit => {
            let mut tls = tls_wrap(backend, tcp, connect_timeout).await?;
            let caps = greeting(&mut reader, &mut tls).await?;
            (Box::new(tls), caps)
        }
        BackendTls::Starttls => {
            greeting(&mut reader, &mut tcp).await?;
            reader
                .command_ok(&mut tcp, "S1", "STARTTLS", "starttls")
                .await?;
            if !reader.buf.is_empty() {
                return Err(BackendError::Protocol(
                    "data pipelined after STARTTLS response".into(),
                ));
            }
            reader = Reader::new(response_timeout);
            // Capabilities learned before TLS are discarded (RFC 9051 §6.2.1).
            (
                Box::new(tls_wrap(backend, tcp, connect_timeout).await?),
                Vec::new(),
            )
        }
    };
    if caps.is_empty() {
        caps = reader.capability(&mut stream).await?;
    }
    Ok(Connected {
        stream,
        reader,
        capabilities: caps,
    })
}

pub(crate) async fn tls_wrap(
    backend: &Backend,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, BackendError> {
    let cfg = backend
        .tls
        .clone()
        .ok_or_else(|| BackendError::Protocol("TLS requested without a TLS config".into()))?;
    let connector = tokio_rustls::TlsConnector::from(cfg);
    tokio::time::timeout(timeout, connector.connect(backend.server_name.clone(), tcp))
        .await
        .map_err(|_| BackendError::Timeout("TLS handshake"))?
        .map_err(BackendError::Tls)
}
#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    fn backend_at(addr: std::net::SocketAddr) -> std::sync::Arc<Backend> {
        let cfg = crate::config::Config::parse(
            &format!(
                "[[listener]]\naddress = \"127.0.0.1:1143\"\nmode = \"plaintext\"\n\
                 [[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b1\"\naddress = \"{addr}\"\n"
            ),
            std::path::Path::new("t"),
        )
        .unwrap();
        let router = crate::route::Router::from_config(&cfg).unwrap();
        router.pools[0].backends[0].clone()
    }

    /// A backend on a local port that greets each connection with
    /// `greeting`, answers a CAPABILITY with BYE, then keeps it open.
    async fn greeting_backend(greeting: &'static [u8]) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            c.write_all(greeting).await.unwrap();
            if greeting.is_empty() {
                return;
            }
            let mut line = String::new();
            let (r, mut w) = c.split();
            let _ = BufReader::new(r).read_line(&mut line).await;
            let _ = w.write_all(b"* BYE no capabilities today\r\n").await;
            std::future::pending::<()>().await;
        });
        addr
    }

    #[tokio::test]
    async fn connect_errors_are_retried() {
        let t = Duration::from_millis(300);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = connect(&backend_at(closed), t, t)
            .await
            .err()
            .expect("refused");
        assert_eq!(e.kind(), "connect");
        assert!(e.retry(), "{e}");
        for (greeting, kind) in [
            (&b""[..], "closed"),
            (b"* BYE too busy\r\n", "refused"),
            (b"* PREAUTH hi\r\n", "protocol"),
            (b"* OK", "timeout"),
            (b"* OK hi\r\n", "refused"), // the CAPABILITY got BYE
        ] {
            let addr = greeting_backend(greeting).await;
            let e = connect(&backend_at(addr), t, t)
                .await
                .err()
                .expect("failed");
            assert_eq!(e.kind(), kind, "{e}");
            assert!(e.retry(), "{e}");
        }
    }
}
