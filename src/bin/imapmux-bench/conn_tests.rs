//! Connection tests against a scripted in-process server on 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::conn::{Conn, ConnCfg, LiteralMode, Security};
use crate::resp::{appenduid, parse_fetch};
use crate::stats::{ErrKind, Live, Rec, Recorder};
use crate::util::Account;

fn cfg(target: String, literal: LiteralMode) -> Arc<ConnCfg> {
    Arc::new(ConnCfg {
        target,
        security: Security::Plain,
        tls: None,
        server_name: None,
        timeout: Duration::from_millis(500),
        max_literal: 1 << 20,
        max_line: 4096,
        literal,
        compress: false,
        live: Arc::new(Live::default()),
    })
}

fn rec() -> Rec {
    let now = Instant::now();
    Rec::new(Recorder::new(
        Arc::new(Live::default()),
        now,
        now + Duration::from_secs(60),
    ))
}

/// Write `data` one byte at a time (exercises resumable framing).
async fn dribble(w: &mut (impl AsyncWriteExt + Unpin), data: &[u8]) {
    for b in data {
        w.write_all(&[*b]).await.unwrap();
        w.flush().await.unwrap();
    }
}

#[tokio::test]
async fn login_fetch_append_against_script() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let body = crate::msg::generate("t", 1, 3000);
    let body2 = body.clone();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"* OK ready\r\n").await.unwrap();
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line, "A1 LOGIN \"u\\\"1\" \"p\"\r\n");
        w.write_all(b"A1 OK [CAPABILITY IMAP4rev1 UIDPLUS] Logged in\r\n")
            .await
            .unwrap();
        line.clear();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line, "A2 UID FETCH 7 (BODY.PEEK[])\r\n");
        let mut resp = format!("* 1 FETCH (UID 7 BODY[] {{{}}}\r\n", body2.len()).into_bytes();
        resp.extend_from_slice(&body2);
        resp.extend_from_slice(b")\r\n* 1 FETCH (FLAGS (\\Seen))\r\nA2 OK done\r\n");
        dribble(&mut w, &resp).await;
        // APPEND with a synchronizing literal (no LITERAL+ announced).
        line.clear();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line, "A3 APPEND \"INBOX\" (\\Seen) {5}\r\n");
        w.write_all(b"+ go ahead\r\n").await.unwrap();
        let mut lit = [0u8; 7];
        r.read_exact(&mut lit).await.unwrap();
        assert_eq!(&lit, b"hello\r\n");
        w.write_all(b"A3 OK [APPENDUID 99 8] Append completed\r\n")
            .await
            .unwrap();
        // A refused literal.
        line.clear();
        r.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("A4 APPEND"));
        w.write_all(b"A4 NO [OVERQUOTA] too big\r\n").await.unwrap();
        line.clear();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line, "A5 LOGOUT\r\n");
        w.write_all(b"* BYE bye\r\nA5 OK done\r\n").await.unwrap();
    });
    let c = cfg(addr, LiteralMode::Auto);
    let rec = rec();
    let mut conn = Conn::open(&c, &rec).await.unwrap();
    let acct = Account {
        user: "u\"1".into(),
        password: "p".into(),
    };
    conn.login(&rec, &acct).await.unwrap();
    assert!(conn.has_cap("UIDPLUS"));
    let mut bodies = Vec::new();
    conn.ok(&rec, "FETCH", "UID FETCH 7 (BODY.PEEK[])", |r| {
        if let Some(Ok(f)) = parse_fetch(r) {
            if let Some(b) = f.body {
                bodies.push(b);
            }
        }
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(bodies.len(), 1);
    assert_eq!(&bodies[0][..], &body[..]);
    crate::msg::verify(&bodies[0]).unwrap();
    let st = conn.append("INBOX", "\\Seen", b"hello").await.unwrap();
    assert_eq!(appenduid(&st), Some(8));
    let st = conn.append("INBOX", "\\Seen", b"world").await.unwrap();
    assert_eq!(st.code_name().as_deref(), Some("OVERQUOTA"));
    conn.logout(&rec).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn timeout_and_close_are_classified() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        // First connection: greeting, then silence.
        let (mut s1, _) = l.accept().await.unwrap();
        s1.write_all(b"* OK ready\r\n").await.unwrap();
        // Second: greeting, then close after the command.
        let (mut s2, _) = l.accept().await.unwrap();
        s2.write_all(b"* OK ready\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let _ = s2.read(&mut buf).await;
        s2.write_all(b"* BYE shutting down\r\n").await.unwrap();
        drop(s2);
        // Third: a bad greeting.
        let (mut s3, _) = l.accept().await.unwrap();
        s3.write_all(b"* BYE too many\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(s1);
    });
    let c = cfg(addr, LiteralMode::Plus);
    let rec = rec();
    let mut a = Conn::open(&c, &rec).await.unwrap();
    let e = a.command("NOOP", |_| Ok(())).await.unwrap_err();
    assert_eq!(e.kind, ErrKind::Timeout);
    let mut b = Conn::open(&c, &rec).await.unwrap();
    let e = b.command("NOOP", |_| Ok(())).await.unwrap_err();
    assert_eq!(e.kind, ErrKind::Closed);
    assert!(e.msg.contains("BYE"), "{}", e.msg);
    let e = Conn::open(&c, &rec).await.err().unwrap();
    assert_eq!(e.kind, ErrKind::Greeting);
    server.await.unwrap();
}
