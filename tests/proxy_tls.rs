//! Client-side TLS (implicit, STARTTLS, plaintext refused) and backend TLS
//! (implicit, STARTTLS, CA verification), with real clients (Python imaplib,
//! curl, the Rust test client) through imapmux to a real Dovecot.

mod common;

use std::time::Duration;

use common::*;

struct Setup {
    dovecot: Dovecot,
    _proxy: Imapmux,
    ca: TestCa,
    starttls: String,
    implicit: String,
}

/// Dovecot with 3 seeded messages, imapmux with a CA-issued certificate on a
/// STARTTLS and an implicit-TLS listener.
fn setup(backend: impl FnOnce(&Dovecot) -> BackendCfg, dovecot_tls: bool) -> Setup {
    let mut b = Dovecot::builder().messages(3);
    if dovecot_tls {
        b = b.tls();
    }
    let dovecot = b.start();
    let ca = TestCa::new("imapmux test proxy CA");
    let cert = ca.issue_localhost();
    let starttls = free_addr();
    let implicit = free_addr();
    let cfg = ProxyConfig::new()
        .tls_files(&cert.chain, &cert.key)
        .listener(&starttls, "starttls")
        .listener(&implicit, "implicit")
        .backend(backend(&dovecot))
        .to_toml();
    let proxy = Imapmux::start(&cfg, &implicit);
    Setup {
        dovecot,
        _proxy: proxy,
        ca,
        starttls,
        implicit,
    }
}

fn port(addr: &str) -> String {
    addr.rsplit(':').next().unwrap().to_string()
}

#[tokio::test]
async fn implicit_tls_and_starttls_with_rust_client() {
    let s = setup(|d| BackendCfg::new("b1", &d.addr()), false);
    let tls = TlsClient::with_ca(s.ca.ca_pem_path());

    let mut c = ImapClient::connect_tls(&s.implicit, &tls).await.unwrap();
    assert!(c.greeting().contains("AUTH=PLAIN"), "{}", c.greeting());
    assert!(!c.greeting().contains("LOGINDISABLED"));
    let r = c.login("user1", "pass1").await.unwrap();
    assert!(r.is_ok(), "{r}");
    // Post-login capabilities are the backend's (Dovecot has IDLE and MOVE),
    // minus COMPRESS which cannot pass a framing proxy.
    let caps = r.capabilities();
    assert!(
        caps.iter().any(|c| c == "IDLE") && caps.iter().any(|c| c == "MOVE"),
        "{caps:?}"
    );
    assert!(!caps.iter().any(|c| c.starts_with("COMPRESS")), "{caps:?}");
    c.select("INBOX").await.unwrap();
    let body = c.fetch_body(1).await.unwrap();
    assert_eq!(body, s.dovecot.message("user1", 1));
    c.logout().await.unwrap();

    let mut c = ImapClient::connect_plain(&s.starttls).await.unwrap();
    assert!(c.greeting().contains("STARTTLS") && c.greeting().contains("LOGINDISABLED"));
    c.starttls(&tls).await.unwrap().ok().unwrap();
    let caps = c.capability().await.unwrap();
    assert!(
        !caps.iter().any(|c| c == "STARTTLS" || c == "LOGINDISABLED"),
        "{caps:?}"
    );
    assert!(c.login("user1", "pass1").await.unwrap().is_ok());
    c.select("INBOX").await.unwrap();
    assert_eq!(
        c.fetch_body(3).await.unwrap(),
        s.dovecot.message("user1", 3)
    );
}

#[tokio::test]
async fn plaintext_login_refused_and_no_credentials_reach_backend() {
    let s = setup(|d| BackendCfg::new("b1", &d.addr()), false);
    let mut c = ImapClient::connect_plain(&s.starttls).await.unwrap();
    let r = c.login("user1", "pass1").await.unwrap();
    assert!(r.is_no(), "{r}");
    assert!(r.code("PRIVACYREQUIRED").is_some(), "{r}");
    let r = c.authenticate_plain("user1", "pass1", true).await.unwrap();
    assert!(r.is_no(), "{r}");
    // Dovecot never saw a login attempt.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.dovecot.login_lines("user1").is_empty(),
        "{}",
        s.dovecot.log()
    );
}

#[tokio::test]
async fn starttls_pipelined_commands_are_discarded() {
    let s = setup(|d| BackendCfg::new("b1", &d.addr()), false);
    let mut c = ImapClient::connect_plain(&s.starttls).await.unwrap();
    // A man in the middle appends a command after STARTTLS in plaintext.
    c.write_raw(b"s1 STARTTLS\r\ninj LOGIN user1 pass1\r\n")
        .await
        .unwrap();
    let line = c.read_line(Duration::from_secs(5)).await.unwrap();
    assert!(line.text().unwrap().starts_with("s1 OK"), "{line:?}");
    // Nothing else may follow in plaintext: the injected command is dropped.
    assert!(c.buffered().is_empty());
    let mut c2 = ImapClient::connect_plain(&s.starttls).await.unwrap();
    c2.starttls(&TlsClient::with_ca(s.ca.ca_pem_path()))
        .await
        .unwrap()
        .ok()
        .unwrap();
    let r = c2.cmd("NOOP").await.unwrap();
    assert!(r.is_ok());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.dovecot.login_lines("user1").is_empty(),
        "injected LOGIN reached the backend"
    );
}

#[test]
fn python_imaplib_through_both_listeners() {
    let s = setup(|d| BackendCfg::new("b1", &d.addr()), false);
    let ca = s.ca.ca_pem_path().display().to_string();
    for (mode, addr) in [("--tls", &s.implicit), ("--starttls", &s.starttls)] {
        let out = py_client_ok(&[
            "--port",
            &port(addr),
            mode,
            "--cafile",
            &ca,
            "--user",
            "user2",
            "--password",
            "pass2",
            "fetch-all",
        ]);
        assert_eq!(out.matches("MSG uid=").count(), 3, "{out}");
        for uid in 1..=3 {
            let expected = s.dovecot.message("user2", uid);
            let line = format!("MSG uid={uid} len={}", expected.len());
            assert!(out.contains(&line), "{mode}: missing {line} in {out}");
        }
    }
    // Plaintext login is refused by imaplib's own view too: LOGINDISABLED.
    let out = run_python(
        "imap_client.py",
        &[
            "--port",
            &port(&s.starttls),
            "--user",
            "user2",
            "--password",
            "pass2",
            "login",
        ],
    );
    assert!(!out.status.success());
}

#[test]
fn curl_through_both_listeners_matches_direct() {
    let s = setup(|d| BackendCfg::new("b1", &d.addr()), false);
    let ca = s.ca.ca_pem_path().display().to_string();
    let direct = run_curl(&[
        &format!("imap://{}/INBOX;UID=2", s.dovecot.addr()),
        "-u",
        "user1:pass1",
    ]);
    assert!(direct.status.success(), "{direct:?}");
    assert_eq!(direct.stdout, s.dovecot.message("user1", 2));
    let via_tls = run_curl(&[
        "--cacert",
        &ca,
        &format!("imaps://localhost:{}/INBOX;UID=2", port(&s.implicit)),
        "-u",
        "user1:pass1",
    ]);
    assert!(
        via_tls.status.success(),
        "{}",
        String::from_utf8_lossy(&via_tls.stderr)
    );
    assert_eq!(via_tls.stdout, direct.stdout);
    let via_starttls = run_curl(&[
        "--ssl-reqd",
        "--cacert",
        &ca,
        &format!("imap://localhost:{}/INBOX;UID=2", port(&s.starttls)),
        "-u",
        "user1:pass1",
    ]);
    assert!(
        via_starttls.status.success(),
        "{}",
        String::from_utf8_lossy(&via_starttls.stderr)
    );
    assert_eq!(via_starttls.stdout, direct.stdout);
    // Wrong password: curl fails with a login error.
    let bad = run_curl(&[
        "--cacert",
        &ca,
        &format!("imaps://localhost:{}/INBOX;UID=2", port(&s.implicit)),
        "-u",
        "user1:nope",
    ]);
    assert!(!bad.status.success());
}

#[tokio::test]
async fn backend_implicit_tls_with_ca_verification() {
    let s = setup(
        |d| {
            BackendCfg::new("b1", &d.imaps_addr())
                .tls("implicit")
                .ca_file(d.ca_pem_path())
                .server_name("localhost")
        },
        true,
    );
    let mut c = ImapClient::connect_tls(&s.implicit, &TlsClient::with_ca(s.ca.ca_pem_path()))
        .await
        .unwrap();
    assert!(c.login("user1", "pass1").await.unwrap().is_ok());
    c.select("INBOX").await.unwrap();
    assert_eq!(
        c.fetch_body(1).await.unwrap(),
        s.dovecot.message("user1", 1)
    );
    // Dovecot saw a TLS session from the proxy.
    let line = s
        .dovecot
        .wait_for_logins("user1", 1, Duration::from_secs(5))
        .remove(0);
    assert!(line.contains("TLS"), "{line}");
}

#[tokio::test]
async fn backend_starttls_with_ca_verification() {
    let s = setup(
        |d| {
            BackendCfg::new("b1", &d.addr())
                .tls("starttls")
                .ca_file(d.ca_pem_path())
                .server_name("localhost")
        },
        true,
    );
    let mut c = ImapClient::connect_tls(&s.implicit, &TlsClient::with_ca(s.ca.ca_pem_path()))
        .await
        .unwrap();
    assert!(c.login("user3", "pass3").await.unwrap().is_ok());
    c.select("INBOX").await.unwrap();
    assert_eq!(
        c.fetch_body(2).await.unwrap(),
        s.dovecot.message("user3", 2)
    );
    let line = s
        .dovecot
        .wait_for_logins("user3", 1, Duration::from_secs(5))
        .remove(0);
    assert!(line.contains("TLS"), "{line}");
}

#[tokio::test]
async fn backend_with_untrusted_certificate_is_unavailable() {
    // The proxy trusts a different CA than the one that issued Dovecot's cert.
    let other = TestCa::new("some other CA");
    let other_pem = other.ca_pem_path().to_path_buf();
    let s = setup(
        move |d| {
            BackendCfg::new("b1", &d.imaps_addr())
                .tls("implicit")
                .ca_file(&other_pem)
                .server_name("localhost")
        },
        true,
    );
    let mut c = ImapClient::connect_tls(&s.implicit, &TlsClient::with_ca(s.ca.ca_pem_path()))
        .await
        .unwrap();
    let r = c.login("user1", "pass1").await.unwrap();
    assert!(r.is_no(), "{r}");
    assert!(r.code("UNAVAILABLE").is_some(), "{r}");
    assert!(
        s.dovecot.login_lines("user1").is_empty(),
        "password was sent to an unverified backend"
    );
    drop(other);
}

#[tokio::test]
async fn backend_insecure_switch_skips_verification() {
    // No CA configured and a certificate from an unknown CA: only
    // `insecure = true` lets the proxy through (labs).
    let s = setup(
        |d| {
            BackendCfg::new("b1", &d.imaps_addr())
                .tls("implicit")
                .insecure()
        },
        true,
    );
    let mut c = ImapClient::connect_tls(&s.implicit, &TlsClient::with_ca(s.ca.ca_pem_path()))
        .await
        .unwrap();
    assert!(c.login("user2", "pass2").await.unwrap().is_ok());
    c.select("INBOX").await.unwrap();
    assert_eq!(
        c.fetch_body(1).await.unwrap(),
        s.dovecot.message("user2", 1)
    );
}

/// Several certificates chosen by SNI (issue 15, item 5): one front for
/// many mail domains. Each client verifies the certificate against the
/// name it asked for, with the test CA.
#[tokio::test]
async fn the_certificate_follows_the_name_the_client_asks_for() {
    let dovecot = Dovecot::builder().messages(1).start();
    let ca = TestCa::new("imapmux SNI CA");
    let default = ca.issue_localhost();
    let a = ca.issue(&["mail.a.test"]);
    let b = ca.issue(&["*.b.test"]);
    let implicit = free_addr();
    let toml = |a_names: &str| {
        ProxyConfig::new()
            .tls_files(&default.chain, &default.key)
            .listener(&implicit, "implicit")
            .backend(BackendCfg::new("b1", &dovecot.addr()))
            .extra(&format!(
                "[[tls.certificate]]\nnames = {a_names}\ncert_file = {}\nkey_file = {}\n\
                 [[tls.certificate]]\nnames = [\"*.b.test\"]\ncert_file = {}\nkey_file = {}\n",
                toml_str(&a.chain.display().to_string()),
                toml_str(&a.key.display().to_string()),
                toml_str(&b.chain.display().to_string()),
                toml_str(&b.key.display().to_string()),
            ))
            .to_toml()
    };
    let _proxy = Imapmux::start(&toml("[\"Mail.A.test\"]"), &implicit);
    let leaf = |c: &ImapClient| c.peer_certificates().unwrap()[0].as_ref().to_vec();
    let pem_der = |pem: &str| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    };
    for (name, want) in [
        ("mail.a.test", &a),
        ("imap.b.test", &b),
        ("localhost", &default),
    ] {
        let tls = TlsClient::with_ca(ca.ca_pem_path()).server_name(name);
        let mut c = ImapClient::connect_tls(&implicit, &tls).await.unwrap();
        assert_eq!(leaf(&c), pem_der(&want.cert_pem), "{name}");
        // And the session works behind it.
        c.login("user1", "pass1").await.unwrap().ok().unwrap();
    }
    // A name nobody configured gets the default certificate, which the
    // client rightly refuses for that name.
    let tls = TlsClient::with_ca(ca.ca_pem_path()).server_name("mail.c.test");
    assert!(ImapClient::connect_tls(&implicit, &tls).await.is_err());
    // check-config names the key of a bad name.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml("[\"mail a.test\"]")).unwrap();
    let out = imapmux_command()
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("tls.certificate[0].names"), "{err}");
}
