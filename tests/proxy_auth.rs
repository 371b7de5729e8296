//! Passthrough authentication through imapmux to a real Dovecot: LOGIN in
//! every form, AUTHENTICATE PLAIN with and without SASL-IR, cancel, wrong
//! password, unknown user, forwarding of the client's address, and no
//! password in the proxy's log.

mod common;

use std::time::Duration;

use common::dovecot::log_field;
use common::*;
use tokio::net::TcpSocket;

struct Setup {
    dovecot: Dovecot,
    proxy: Imapmux,
    tls: TlsClient,
    addr: String,
}

const ODD_PASSWORD: &str = "p ä\"\\ss {3}";

fn setup(trusted: bool) -> Setup {
    let dovecot = Dovecot::builder()
        .messages(2)
        .user("odd user", ODD_PASSWORD)
        .start();
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", &dovecot.addr()).trusted(trusted))
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    Setup {
        dovecot,
        proxy,
        tls: TlsClient::insecure(),
        addr,
    }
}

#[tokio::test]
async fn login_forms_and_verdicts() {
    let s = setup(true);
    // atom form
    let mut c = ImapClient::connect_tls(&s.addr, &s.tls).await.unwrap();
    assert!(c.cmd("LOGIN user1 pass1").await.unwrap().is_ok());
    // quoted form
    let mut c = ImapClient::connect_tls(&s.addr, &s.tls).await.unwrap();
    assert!(c.cmd("LOGIN \"user2\" \"pass2\"").await.unwrap().is_ok());
    // literal form, with a password needing literals (non-ASCII, quotes, braces)
    let mut c = ImapClient::connect_tls(&s.addr, &s.tls).await.unwrap();
    let r = c.login("odd user", ODD_PASSWORD).await.unwrap();
    assert!(r.is_ok(), "{r}");
    c.select("INBOX").await.unwrap();
    // LITERAL+ form
    let mut c = ImapClient::connect_tls(&s.addr, &s.tls).await.unwrap();
    c.write_raw(b"a LOGIN {5+}\r\nuser3 {5+}\r\npass3\r\n")
        .await
        .unwrap();
    assert!(c.read_tagged("a").await.unwrap().is_ok());

    // wrong password: the backend's verdict and code reach the client
    let mut c = ImapClient::connect_tls(&s.addr, &s.tls).await.unwrap();
    let r = c.login("user1", "wrong").await.unwrap();
    assert!(r.is_no(), "{r}");
    assert!(r.code("AUTHENTICATIONFAILED").is_some(), "{r}");
    // the connection stays usable after a failure
    assert!(c.login("user1", "pass1").await.unwrap().is_ok());

    // unknown user: same answer, nothing reveals that the user does not exist
    let mut c = ImapClient::connect_tls(&s.addr, &s.tls).await.unwrap();
    let r = c.login("nosuchuser", "whatever").await.unwrap();
    assert!(r.is_no() && r.code("AUTHENTICATIONFAILED").is_some(), "{r}");

    // passwords never appear in the proxy's log
    let log = s.proxy.log();
    for secret in ["pass1", "pass2", "pass3", "wrong", "whatever", ODD_PASSWORD] {
        assert!(!log.contains(secret), "password {secret:?} in log:\n{log}");
    }
    assert!(log.contains("login failed"), "{log}");
}

#[tokio::test]
async fn authenticate_plain_sasl_ir_continuation_and_cancel() {
    let s = setup(true);
    let mut c = ImapClient::connect_tls(&s.addr, &s.tls).await.unwrap();
    let r = c.authenticate_plain("user1", "pass1", true).await.unwrap();
    assert!(r.is_ok(), "{r}");
    assert!(r.capabilities().iter().any(|c| c == "IDLE"), "{r}");

    let mut c = ImapClient::connect_tls(&s.addr, &s.tls).await.unwrap();
    let r = c.authenticate_plain("user2", "pass2", false).await.unwrap();
    assert!(r.is_ok(), "{r}");

    let mut c = ImapClient::connect_tls(&s.addr, &s.tls).await.unwrap();
    let r = c.authenticate_plain("user2", "bad", true).await.unwrap();
    assert!(r.is_no() && r.code("AUTHENTICATIONFAILED").is_some(), "{r}");

    // cancel with "*": tagged BAD, then the session goes on
    let mut c = ImapClient::connect_tls(&s.addr, &s.tls).await.unwrap();
    c.write_raw(b"x AUTHENTICATE PLAIN\r\n").await.unwrap();
    let l = c.read_line(Duration::from_secs(5)).await.unwrap();
    assert!(l.text().unwrap().starts_with('+'), "{l:?}");
    c.write_raw(b"*\r\n").await.unwrap();
    let r = c.read_tagged("x").await.unwrap();
    assert!(r.is_bad(), "{r}");
    assert!(c.cmd("LOGIN user1 pass1").await.unwrap().is_ok());

    // Python imaplib's authenticate() (continuation) and SASL-IR
    let port = s.addr.rsplit(':').next().unwrap();
    for auth in ["plain", "sasl-ir"] {
        let out = py_client_ok(&[
            "--port",
            port,
            "--tls",
            "--insecure",
            "--user",
            "user4",
            "--password",
            "pass4",
            "--auth",
            auth,
            "login",
        ]);
        assert!(out.contains("OK"), "{out}");
    }
}

/// Connect from a chosen loopback source address.
async fn connect_from(src: &str, addr: &str, tls: &TlsClient) -> ImapClient {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let tcp = sock.connect(addr.parse().unwrap()).await.unwrap();
    ImapClient::from_tcp_tls(tcp, tls).await.unwrap()
}

#[tokio::test]
async fn trusted_backend_sees_the_real_client_address() {
    let s = setup(true);
    let mut c = connect_from("127.0.0.5", &s.addr, &s.tls).await;
    assert!(c.login("user1", "pass1").await.unwrap().is_ok());
    let line = s
        .dovecot
        .wait_for_logins("user1", 1, Duration::from_secs(5))
        .remove(0);
    assert!(line.contains("rip=127.0.0.5"), "{line}");
    // and the session id is shared between proxy and backend logs
    let session = log_field(&line, "session").expect("session in Dovecot log");
    let session = session.trim_start_matches('<').trim_end_matches('>');
    assert!(session.len() >= 12, "{line}");
    assert!(
        s.proxy
            .wait_for_log(&format!("session={session}"), Duration::from_secs(5)),
        "{}",
        s.proxy.log()
    );
}

#[tokio::test]
async fn untrusted_backend_sees_the_proxy_address() {
    let s = setup(false);
    let mut c = connect_from("127.0.0.5", &s.addr, &s.tls).await;
    assert!(c.login("user1", "pass1").await.unwrap().is_ok());
    let line = s
        .dovecot
        .wait_for_logins("user1", 1, Duration::from_secs(5))
        .remove(0);
    assert!(line.contains("rip=127.0.0.1"), "{line}");
}
