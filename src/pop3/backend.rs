//! Logging in to a backend's POP3 service: greeting, STLS, CAPA, the
//! client's address (XCLIENT, as Dovecot's own proxy forwards it to
//! trusted backends), then AUTH PLAIN (RFC 5034, master users through the
//! authorization identity) or USER/PASS. The command text and the
//! response parsing are pure functions; [`login`] is the I/O around them.
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

/// A POP3 status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub ok: bool,
    /// The RFC 2449 response code (`AUTH`, `SYS/TEMP`, `IN-USE`…).
    pub code: Option<String>,
    pub text: String,
}

/// Parse `+OK …` / `-ERR [CODE] …` (CRLF optional).
pub fn parse_status(line: &[u8]) -> Option<Status> {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let (ok, rest) = if let Some(r) = l.strip_prefix(b"+OK") {
        (true, r)
    } else if let Some(r) = l.strip_prefix(b"-ERR") {
        (false, r)
    } else {
        return None;
    };
    let rest = String::from_utf8_lossy(rest);
    let rest = rest.strip_prefix(' ').unwrap_or(&rest);
    let (code, text) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((code, text)) => (Some(code.to_string()), text.trim_start().to_string()),
        None => (None, rest.to_string()),
    };
    Some(Status { ok, code, text })
}

/// The IMAP response code for a POP3 login refusal's code, which the
/// login flow judges ([`crate::session`]): `SYS/TEMP` and `SYS/PERM` are
/// the server's trouble (`UNAVAILABLE`), `IN-USE` the mailbox lock,
/// `AUTH` and no code a refused password, any other code (`LOGIN-DELAY`)
/// is relayed as a refusal without a code.
pub fn imap_code(code: Option<&str>) -> Option<String> {
    let code = code.map(str::to_ascii_uppercase);
    Some(
        match code.as_deref() {
            Some("SYS/TEMP" | "SYS/PERM") => "UNAVAILABLE",
            Some("IN-USE") => "INUSE",
            Some("AUTH") | None => "AUTHENTICATIONFAILED",
            Some(_) => return None,
        }
        .to_string(),
    )
}

/// `XCLIENT` with the client's address, port and session id (Dovecot
/// honours it from its `login_trusted_networks`).
pub fn xclient_command(client: &ClientInfo) -> Vec<u8> {
    format!(
        "XCLIENT ADDR={} PORT={} SESSION={}\r\n",
        client.peer.ip(),
        client.peer.port(),
        client.session_id
    )
    .into_bytes()
}

/// One step of the login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send, then expect `+OK` to go on (the last one's answer is the verdict).
    Command(Vec<u8>),
    /// Send after the backend's `+` continuation.
    AfterContinuation(Vec<u8>),
}

/// The login for these credentials: AUTH PLAIN when the backend offers
/// SASL PLAIN (with the initial response when the line fits in 255
/// octets, RFC 5034 §4), else USER and PASS.
pub fn login_steps(creds: &Credentials, sasl: &[String]) -> Result<Vec<Step>, String> {
    if creds.mechanism.is_oauth() {
        return Err("OAuth logins are not supported over POP3".into());
    }
    if sasl.iter().any(|m| m.eq_ignore_ascii_case("PLAIN")) {
        let mut msg = Vec::new();
        msg.extend_from_slice(creds.authzid.as_deref().unwrap_or("").as_bytes());
        msg.push(0);
        msg.extend_from_slice(creds.user.as_bytes());
        msg.push(0);
        msg.extend_from_slice(&creds.password);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&msg);
        let line = format!("AUTH PLAIN {b64}\r\n");
        if line.len() <= 255 {
            return Ok(vec![Step::Command(line.into_bytes())]);
        }
        return Ok(vec![
            Step::Command(b"AUTH PLAIN\r\n".to_vec()),
            Step::AfterContinuation(format!("{b64}\r\n").into_bytes()),
        ]);
    }
    if creds.authzid.is_some() {
        return Err(
            "the backend does not offer SASL PLAIN, needed for an authorization identity".into(),
        );
    }
    let bad = |b: &[u8]| b.iter().any(|c| matches!(c, b'\r' | b'\n' | 0));
    if bad(creds.user.as_bytes()) || bad(&creds.password) || creds.user.contains(' ') {
        return Err("the credentials cannot be sent with USER/PASS".into());
    }
    let mut pass = b"PASS ".to_vec();
    pass.extend_from_slice(&creds.password);
    pass.extend_from_slice(b"\r\n");
    Ok(vec![
        Step::Command(format!("USER {}\r\n", creds.user).into_bytes()),
        Step::Command(pass),
    ])
}

/// A connected, not yet logged-in POP3 backend.
struct Conn {
    stream: BoxStream,
    reader: LineReader,
    /// The greeting carried `[XCLIENT]` or CAPA listed XCLIENT.
    xclient: bool,
    /// The SASL mechanisms CAPA listed.
    sasl: Vec<String>,
}

async fn send<S: AsyncWrite + Unpin + ?Sized>(s: &mut S, b: &[u8]) -> Result<(), BackendError> {
    s.write_all(b).await?;
    s.flush().await?;
    Ok(())
}

async fn status<S: AsyncRead + Unpin + ?Sized>(
    r: &mut LineReader,
    s: &mut S,
    stage: &'static str,
) -> Result<Status, BackendError> {
    let line = r.line(s, stage).await?;
    parse_status(&line).ok_or_else(|| BackendError::Protocol(format!("{stage}: not a POP3 status")))
}

/// Connect: greeting, STLS when configured, CAPA. No credentials sent.
async fn connect(
    backend: &Backend,
    (address, tls): (&str, BackendTls),
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Conn, BackendError> {
    let mut tcp = tcp(address, connect_timeout).await?;
    let mut reader = LineReader::new(response_timeout, false);
    let (mut stream, greeting): (BoxStream, Status) = match tls {
        BackendTls::Implicit => {
            let mut s = crate::backend::tls_wrap(backend, tcp, connect_timeout).await?;
            let g = status(&mut reader, &mut s, "greeting").await?;
            (Box::new(s), g)
        }
        BackendTls::None => {
            let g = status(&mut reader, &mut tcp, "greeting").await?;
            (Box::new(tcp), g)
        }
        BackendTls::Starttls => {
            let g = status(&mut reader, &mut tcp, "greeting").await?;
            if !g.ok {
                return Err(BackendError::Refused(g.text));
            }
            send(&mut tcp, b"STLS\r\n").await?;
            let st = status(&mut reader, &mut tcp, "starttls").await?;
            if !st.ok {
                return Err(BackendError::Refused(format!("STLS: {}", st.text)));
            }
            if !reader.buf.is_empty() {
                return Err(BackendError::Protocol(
                    "data pipelined after STLS response".into(),
                ));
            }
            let s = crate::backend::tls_wrap(backend, tcp, connect_timeout).await?;
            reader = LineReader::new(response_timeout, false);
            (Box::new(s), g)
        }
    };
    if !greeting.ok {
        return Err(BackendError::Refused(greeting.text));
    }
    let mut xclient = greeting.code.as_deref() == Some("XCLIENT");
    send(&mut stream, b"CAPA\r\n").await?;
    let mut sasl = Vec::new();
    if status(&mut reader, &mut stream, "capability").await?.ok {
        for _ in 0..1000 {
            let line = reader.line(&mut stream, "capability").await?;
            let l = crate::imap::command::trim_crlf(&line);
            if l == b"." {
                break;
            }
            let l = String::from_utf8_lossy(l);
            let mut words = l.split_ascii_whitespace();
            match words.next().map(str::to_ascii_uppercase).as_deref() {
                Some("SASL") => sasl = words.map(String::from).collect(),
                Some("XCLIENT") => xclient = true,
                _ => {}
            }
        }
    }
    Ok(Conn {
        stream,
        reader,
        xclient,
        sasl,
    })
}

/// Connect to `backend`'s POP3 service and log in as `creds`; `client` is
/// forwarded with XCLIENT (trusted backends only). Errors once a
/// credential byte was written are [`BackendError::Login`].
pub async fn login(
    backend: &Backend,
    endpoint: (&str, BackendTls),
    creds: &Credentials,
    client: Option<&ClientInfo>,
    (connect_timeout, response_timeout): (Duration, Duration),
) -> Result<LoginOutcome, BackendError> {
    let mut c = connect(backend, endpoint, connect_timeout, response_timeout).await?;
    if let Some(client) = client {
        if c.xclient {
            send(&mut c.stream, &xclient_command(client)).await?;
            let st = status(&mut c.reader, &mut c.stream, "xclient").await?;
            if !st.ok {
                tracing::warn!(backend = %backend.name, text = %st.text, "backend refused XCLIENT (is imapmux in its login_trusted_networks?)");
            }
        } else {
            tracing::debug!(backend = %backend.name, "backend does not offer XCLIENT: the client's address is not forwarded");
        }
    }
    let steps = login_steps(creds, &c.sasl).map_err(BackendError::Refused)?;
    let wrap = |e| BackendError::Login(Box::new(e));
    let mut last = None;
    for step in steps {
        let bytes = match step {
            Step::Command(b) => b,
            Step::AfterContinuation(b) => {
                let line = c.reader.line(&mut c.stream, "login").await.map_err(wrap)?;
                if !line.starts_with(b"+ ") && line.as_ref() != b"+\r\n" {
                    last = parse_status(&line);
                    break;
                }
                b
            }
        };
        send(&mut c.stream, &bytes).await.map_err(wrap)?;
        let line = c.reader.line(&mut c.stream, "login").await.map_err(wrap)?;
        if line.starts_with(b"+ ") || line.as_ref() == b"+\r\n" {
            // the continuation of AUTH PLAIN without initial response
            continue;
        }
        let st = parse_status(&line)
            .ok_or_else(|| wrap(BackendError::Protocol("login: not a POP3 status".into())))?;
        let ok = st.ok;
        last = Some(st);
        if !ok {
            break;
        }
    }
    match last {
        Some(st) if st.ok => Ok(LoginOutcome::Ok(LoggedIn {
            stream: c.stream,
            buf: c.reader.buf,
            capabilities: Vec::new(),
            logged_in_at: Instant::now(),
        })),
        Some(st) => Ok(LoginOutcome::Rejected {
            status: "NO",
            code: imap_code(st.code.as_deref()),
            text: st.text,
        }),
        None => Err(wrap(BackendError::Protocol("login: no answer".into()))),
    }
}

/// Health check: connect (TLS as configured), greeting, QUIT.
pub async fn check(
    backend: &Backend,
    endpoint: (&str, BackendTls),
    timeout: Duration,
) -> Result<(), BackendError> {
    let mut c = connect(backend, endpoint, timeout, timeout).await?;
    let _ = send(&mut c.stream, b"QUIT\r\n").await;
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

    fn creds(user: &str, pass: &[u8], authzid: Option<&str>) -> Credentials {
        Credentials {
            user: user.into(),
            password: pass.to_vec(),
            authzid: authzid.map(String::from),
            mechanism: Mechanism::Login,
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(
            parse_status(b"-ERR [SYS/TEMP] try later\r\n"),
            Some(Status {
                ok: false,
                code: Some("SYS/TEMP".into()),
                text: "try later".into()
            })
        );
        assert_eq!(parse_status(b"+OK\r\n").map(|s| s.ok), Some(true));
        assert_eq!(
            parse_status(b"+OK [XCLIENT] Dovecot ready.\r\n").and_then(|s| s.code),
            Some("XCLIENT".into())
        );
        assert_eq!(parse_status(b"* OK imap\r\n"), None);
        assert_eq!(imap_code(Some("sys/temp")).as_deref(), Some("UNAVAILABLE"));
        assert_eq!(
            imap_code(Some("AUTH")).as_deref(),
            Some("AUTHENTICATIONFAILED")
        );
        assert_eq!(imap_code(Some("LOGIN-DELAY")), None);
        assert_eq!(imap_code(None).as_deref(), Some("AUTHENTICATIONFAILED"));
    }

    #[test]
    fn login_forms() {
        let plain = vec!["PLAIN".to_string(), "LOGIN".to_string()];
        assert_eq!(
            login_steps(&creds("u", b"p", None), &plain).unwrap(),
            vec![Step::Command(b"AUTH PLAIN AHUAcA==\r\n".to_vec())]
        );
        // a master user: the user as authorization identity
        assert_eq!(
            login_steps(&creds("proxy", b"mpw", Some("alice")), &plain).unwrap(),
            vec![Step::Command(
                b"AUTH PLAIN YWxpY2UAcHJveHkAbXB3\r\n".to_vec()
            )]
        );
        let long = vec![b'x'; 300];
        let steps = login_steps(&creds("u", &long, None), &plain).unwrap();
        assert_eq!(steps[0], Step::Command(b"AUTH PLAIN\r\n".to_vec()));
        assert!(matches!(&steps[1], Step::AfterContinuation(b) if b.len() > 255));
        assert_eq!(
            login_steps(&creds("u", b"p w", None), &[]).unwrap(),
            vec![
                Step::Command(b"USER u\r\n".to_vec()),
                Step::Command(b"PASS p w\r\n".to_vec())
            ]
        );
        assert!(login_steps(&creds("u", b"a\r\nDELE 1", None), &[]).is_err());
        assert!(login_steps(&creds("u", b"p", Some("a")), &[]).is_err());
    }

    #[test]
    fn xclient_names_the_client() {
        let c = ClientInfo::new(
            "192.0.2.7:5555".parse().unwrap(),
            "127.0.0.1:995".parse().unwrap(),
            "abc".into(),
        );
        assert_eq!(
            xclient_command(&c),
            b"XCLIENT ADDR=192.0.2.7 PORT=5555 SESSION=abc\r\n".to_vec()
        );
    }
}
