//! Logging in to a backend's ManageSieve service: the capability greeting,
//! STARTTLS (and the capabilities again), the client's address (XCLIENT,
//! which Dovecot's Pigeonhole offers to trusted networks), then
//! AUTHENTICATE "PLAIN" (master users through the authorization
//! identity). Pure parsing and command text here, with the I/O in
//! [`login`] and [`check`].
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo
)]

use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::backend::{BackendError, BoxStream, LoggedIn, LoginOutcome};
use crate::config::BackendTls;
use crate::front::backend::{tcp, LineReader};
use crate::identity::{ClientInfo, Credentials};
use crate::route::Backend;
use crate::sieve::preauth::take_quoted;

/// A ManageSieve response: `OK`, `NO` or `BYE`, its response code's first
/// atom, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub kind: Kind,
    pub code: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ok,
    No,
    Bye,
}

/// One line of a response: a capability `"NAME" ["VALUE"]`, or the final
/// `OK`/`NO`/`BYE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Capability(String, Option<String>),
    Done(Response),
    Other,
}

/// Quoted strings of `s` in order (escapes undone; an unterminated one
/// runs to the end); literals (`{N}` and the N bytes after the line) also
/// count as one string each.
fn strings(s: &[u8]) -> Vec<String> {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((&c, tail)) = rest.split_first() {
        match c {
            b'"' => match take_quoted(tail) {
                Some((v, after)) => {
                    out.push(lossy(&v));
                    rest = after;
                }
                None => {
                    out.push(lossy(tail));
                    rest = &[];
                }
            },
            b'{' => {
                let close = tail.iter().position(|c| *c == b'}');
                let n: Option<usize> = close
                    .and_then(|c| tail.get(..c))
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .and_then(|d| d.trim_end_matches('+').parse().ok());
                match (close, n) {
                    (Some(c), Some(n)) => {
                        // `}` CRLF, then n bytes
                        let after = tail.get(c + 1..).unwrap_or_default();
                        let after = after.strip_prefix(b"\r\n").unwrap_or(after);
                        let lit = after.get(..n).unwrap_or(after);
                        out.push(lossy(lit));
                        rest = after.get(lit.len()..).unwrap_or_default();
                    }
                    _ => rest = tail,
                }
            }
            _ => rest = tail,
        }
    }
    out
}

/// Parse one response line (CRLF and any literal included).
pub fn parse_line(line: &[u8]) -> Line {
    let l = crate::imap::command::trim_crlf(line);
    if l.starts_with(b"\"") {
        let mut s = strings(l).into_iter();
        return match s.next() {
            Some(name) => Line::Capability(name, s.next()),
            None => Line::Other,
        };
    }
    let word_end = l.iter().position(|c| *c == b' ').unwrap_or(l.len());
    let (word, rest) = l.split_at_checked(word_end).unwrap_or((l, &[]));
    let kind = match word.to_ascii_uppercase().as_slice() {
        b"OK" => Kind::Ok,
        b"NO" => Kind::No,
        b"BYE" => Kind::Bye,
        _ => return Line::Other,
    };
    let mut rest = rest.trim_ascii_start();
    let mut code = None;
    if let Some(r) = rest.strip_prefix(b"(") {
        let close = r.iter().position(|c| *c == b')').unwrap_or(r.len());
        let inner = r.get(..close).unwrap_or(r);
        let first = inner.split(|c| *c == b' ').next().unwrap_or_default();
        code = Some(String::from_utf8_lossy(first).to_ascii_uppercase());
        rest = r.get(close + 1..).unwrap_or_default();
    }
    let text = strings(rest).into_iter().next().unwrap_or_default();
    Line::Done(Response { kind, code, text })
}

/// The IMAP response code for a ManageSieve login refusal's code (the
/// login flow judges it, [`crate::session`]): `TRYLATER` is the server's
/// trouble; anything else (Dovecot: `NO "Authentication failed."`) is a
/// refused password.
pub fn imap_code(code: Option<&str>) -> Option<String> {
    match code {
        Some(c) if c.eq_ignore_ascii_case("TRYLATER") => Some("UNAVAILABLE".into()),
        _ => Some("AUTHENTICATIONFAILED".into()),
    }
}

/// A ManageSieve string for `b`: quoted when it can be, else a literal.
fn string(b: &[u8]) -> Vec<u8> {
    if b.iter()
        .all(|c| (0x20..0x7f).contains(c) && *c != b'"' && *c != b'\\')
    {
        let mut o = Vec::with_capacity(b.len() + 2);
        o.push(b'"');
        o.extend_from_slice(b);
        o.push(b'"');
        o
    } else {
        let mut o = format!("{{{}+}}\r\n", b.len()).into_bytes();
        o.extend_from_slice(b);
        o
    }
}

/// `AUTHENTICATE "PLAIN" "<base64>"` for these credentials.
pub fn authenticate_command(creds: &Credentials) -> Result<Vec<u8>, String> {
    if creds.mechanism.is_oauth() {
        return Err("OAuth logins are not supported over ManageSieve".into());
    }
    let mut msg = Vec::new();
    msg.extend_from_slice(creds.authzid.as_deref().unwrap_or("").as_bytes());
    msg.push(0);
    msg.extend_from_slice(creds.user.as_bytes());
    msg.push(0);
    msg.extend_from_slice(&creds.password);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&msg);
    let mut cmd = b"AUTHENTICATE \"PLAIN\" ".to_vec();
    cmd.extend_from_slice(&string(b64.as_bytes()));
    cmd.extend_from_slice(b"\r\n");
    Ok(cmd)
}

/// `XCLIENT` with the client's address, port and session id.
pub fn xclient_command(client: &ClientInfo) -> Vec<u8> {
    format!(
        "XCLIENT ADDR={} PORT={} SESSION={}\r\n",
        client.peer.ip(),
        client.peer.port(),
        client.session_id
    )
    .into_bytes()
}

/// What a backend's capability greeting said.
#[derive(Debug, Default)]
pub struct Capabilities {
    /// Lines of the Sieve language capabilities (`"SIEVE" "…"`,
    /// `"NOTIFY" "…"`, `"MAXREDIRECTS" "…"`), CRLF-terminated, to be
    /// advertised to clients before login.
    pub sieve_lines: String,
    pub sasl: Vec<String>,
    pub xclient: bool,
}

async fn send<S: AsyncWrite + Unpin + ?Sized>(s: &mut S, b: &[u8]) -> Result<(), BackendError> {
    s.write_all(b).await?;
    s.flush().await?;
    Ok(())
}

/// Read capability lines up to the final response.
async fn capabilities<S: AsyncRead + Unpin + ?Sized>(
    r: &mut LineReader,
    s: &mut S,
    stage: &'static str,
) -> Result<(Capabilities, Response), BackendError> {
    let mut caps = Capabilities::default();
    for _ in 0..1000 {
        let line = r.line(s, stage).await?;
        match parse_line(&line) {
            Line::Capability(name, value) => match name.to_ascii_uppercase().as_str() {
                "SIEVE" | "NOTIFY" | "MAXREDIRECTS" => {
                    caps.sieve_lines.push_str(&format!(
                        "{} {}\r\n",
                        crate::sieve::preauth::quoted(&name.to_ascii_uppercase()),
                        crate::sieve::preauth::quoted(value.as_deref().unwrap_or(""))
                    ));
                }
                "SASL" => {
                    caps.sasl = value
                        .unwrap_or_default()
                        .split_ascii_whitespace()
                        .map(String::from)
                        .collect()
                }
                "XCLIENT" => caps.xclient = true,
                _ => {}
            },
            Line::Done(resp) => return Ok((caps, resp)),
            Line::Other => {}
        }
    }
    Err(BackendError::Protocol(format!("{stage}: too many lines")))
}

async fn expect_ok<S: AsyncRead + Unpin + ?Sized>(
    r: &mut LineReader,
    s: &mut S,
    stage: &'static str,
) -> Result<Response, BackendError> {
    for _ in 0..1000 {
        if let Line::Done(resp) = parse_line(&r.line(s, stage).await?) {
            return Ok(resp);
        }
    }
    Err(BackendError::Protocol(format!("{stage}: too many lines")))
}

struct Conn {
    stream: BoxStream,
    reader: LineReader,
    caps: Capabilities,
}

async fn connect(
    backend: &Backend,
    (address, tls): (&str, BackendTls),
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Conn, BackendError> {
    let mut tcp = tcp(address, connect_timeout).await?;
    let mut reader = LineReader::new(response_timeout, true);
    let refused = |r: &Response| r.kind != Kind::Ok;
    let (stream, caps): (BoxStream, Capabilities) = match tls {
        BackendTls::Implicit => {
            let mut s = crate::backend::tls_wrap(backend, tcp, connect_timeout).await?;
            let (caps, resp) = capabilities(&mut reader, &mut s, "greeting").await?;
            if refused(&resp) {
                return Err(BackendError::Refused(resp.text));
            }
            (Box::new(s), caps)
        }
        BackendTls::None => {
            let (caps, resp) = capabilities(&mut reader, &mut tcp, "greeting").await?;
            if refused(&resp) {
                return Err(BackendError::Refused(resp.text));
            }
            (Box::new(tcp), caps)
        }
        BackendTls::Starttls => {
            let (_, resp) = capabilities(&mut reader, &mut tcp, "greeting").await?;
            if refused(&resp) {
                return Err(BackendError::Refused(resp.text));
            }
            send(&mut tcp, b"STARTTLS\r\n").await?;
            let resp = expect_ok(&mut reader, &mut tcp, "starttls").await?;
            if refused(&resp) {
                return Err(BackendError::Refused(format!("STARTTLS: {}", resp.text)));
            }
            if !reader.buf.is_empty() {
                return Err(BackendError::Protocol(
                    "data pipelined after STARTTLS response".into(),
                ));
            }
            let mut s = crate::backend::tls_wrap(backend, tcp, connect_timeout).await?;
            reader = LineReader::new(response_timeout, true);
            // RFC 5804 §2.2: the server sends its capabilities again.
            let (caps, resp) = capabilities(&mut reader, &mut s, "starttls").await?;
            if refused(&resp) {
                return Err(BackendError::Refused(resp.text));
            }
            (Box::new(s), caps)
        }
    };
    if !caps.sieve_lines.is_empty() {
        backend.set_sieve_capabilities(&caps.sieve_lines);
    }
    Ok(Conn {
        stream,
        reader,
        caps,
    })
}

/// Connect to `backend`'s ManageSieve service and log in as `creds`;
/// `client` is forwarded with XCLIENT (trusted backends only). Errors once
/// a credential byte was written are [`BackendError::Login`].
pub async fn login(
    backend: &Backend,
    endpoint: (&str, BackendTls),
    creds: &Credentials,
    client: Option<&ClientInfo>,
    (connect_timeout, response_timeout): (Duration, Duration),
) -> Result<LoginOutcome, BackendError> {
    let mut c = connect(backend, endpoint, connect_timeout, response_timeout).await?;
    if let Some(client) = client {
        if c.caps.xclient {
            send(&mut c.stream, &xclient_command(client)).await?;
            let resp = expect_ok(&mut c.reader, &mut c.stream, "xclient").await?;
            if resp.kind != Kind::Ok {
                tracing::warn!(backend = %backend.name, text = %resp.text, "backend refused XCLIENT (is imapmux in its login_trusted_networks?)");
            }
        } else {
            tracing::debug!(backend = %backend.name, "backend does not offer XCLIENT: the client's address is not forwarded");
        }
    }
    if !c.caps.sasl.iter().any(|m| m.eq_ignore_ascii_case("PLAIN")) {
        return Err(BackendError::Refused(
            "the backend's ManageSieve does not offer SASL PLAIN".into(),
        ));
    }
    let cmd = authenticate_command(creds).map_err(BackendError::Refused)?;
    let wrap = |e| BackendError::Login(Box::new(e));
    send(&mut c.stream, &cmd).await.map_err(wrap)?;
    let resp = expect_ok(&mut c.reader, &mut c.stream, "login")
        .await
        .map_err(wrap)?;
    match resp.kind {
        Kind::Ok => Ok(LoginOutcome::Ok(LoggedIn {
            stream: c.stream,
            buf: c.reader.buf,
            capabilities: Vec::new(),
            logged_in_at: Instant::now(),
        })),
        Kind::No => Ok(LoginOutcome::Rejected {
            status: "NO",
            code: imap_code(resp.code.as_deref()),
            text: resp.text,
        }),
        Kind::Bye => Err(wrap(BackendError::Refused(resp.text))),
    }
}

/// Health check: connect (TLS as configured), capabilities, LOGOUT. The
/// Sieve capabilities seen are kept on the backend for the pre-login
/// greeting.
pub async fn check(
    backend: &Backend,
    endpoint: (&str, BackendTls),
    timeout: Duration,
) -> Result<(), BackendError> {
    let mut c = connect(backend, endpoint, timeout, timeout).await?;
    let _ = send(&mut c.stream, b"LOGOUT\r\n").await;
    let _ = c.stream.shutdown().await;
    Ok(())
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
    use crate::identity::Mechanism;

    #[test]
    fn lines() {
        assert_eq!(
            parse_line(b"\"SIEVE\" \"fileinto reject\"\r\n"),
            Line::Capability("SIEVE".into(), Some("fileinto reject".into()))
        );
        assert_eq!(
            parse_line(b"\"XCLIENT\"\r\n"),
            Line::Capability("XCLIENT".into(), None)
        );
        assert_eq!(
            parse_line(b"OK \"Dovecot ready.\"\r\n"),
            Line::Done(Response {
                kind: Kind::Ok,
                code: None,
                text: "Dovecot ready.".into()
            })
        );
        assert_eq!(
            parse_line(b"NO (TRYLATER) \"busy \\\"now\\\"\"\r\n"),
            Line::Done(Response {
                kind: Kind::No,
                code: Some("TRYLATER".into()),
                text: "busy \"now\"".into()
            })
        );
        assert_eq!(
            parse_line(b"NO {4}\r\nfail\r\n"),
            Line::Done(Response {
                kind: Kind::No,
                code: None,
                text: "fail".into()
            })
        );
        assert_eq!(
            parse_line(b"BYE\r\n"),
            Line::Done(Response {
                kind: Kind::Bye,
                code: None,
                text: String::new()
            })
        );
        assert_eq!(parse_line(b"garbage\r\n"), Line::Other);
        assert_eq!(
            parse_line(b"NO (unterminated \"x"),
            Line::Done(Response {
                kind: Kind::No,
                code: Some("UNTERMINATED".into()),
                text: String::new()
            })
        );
        assert_eq!(imap_code(Some("trylater")).as_deref(), Some("UNAVAILABLE"));
        assert_eq!(imap_code(None).as_deref(), Some("AUTHENTICATIONFAILED"));
    }

    #[test]
    fn authenticate() {
        let c = Credentials {
            user: "proxy".into(),
            password: b"mpw".to_vec(),
            authzid: Some("alice".into()),
            mechanism: Mechanism::Plain,
        };
        assert_eq!(
            authenticate_command(&c).unwrap(),
            b"AUTHENTICATE \"PLAIN\" \"YWxpY2UAcHJveHkAbXB3\"\r\n".to_vec()
        );
        assert_eq!(string(b"a\"b"), b"{3+}\r\na\"b".to_vec());
    }
}
