//! Exercises the test harness (tests/common, tests/py) directly against a
//! real private Dovecot — no proxy involved. If these fail, fix the harness
//! (or the machine: run scripts/test) before looking at proxy tests.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::*;

const WEIRD_USER: &str = "weird";
const WEIRD_PASS: &str = "p ä\"\\ss";

#[tokio::test]
async fn plaintext_login_and_fetch_seeded_messages_byte_exact() {
    let dc = Dovecot::builder().messages(3).start();
    let mut c = ImapClient::connect_plain(&dc.addr()).await.unwrap();
    assert!(c.greeting().starts_with("* OK"), "{}", c.greeting());
    c.login("user1", "pass1").await.unwrap().ok().unwrap();
    let sel = c.select("INBOX").await.unwrap();
    assert_eq!(sel.exists(), Some(3));
    for uid in 1..=3 {
        let body = c.fetch_body(uid).await.unwrap();
        assert_eq!(
            body,
            dc.message("user1", uid),
            "UID {uid}:\n{}",
            show_bytes(&body, 400)
        );
    }
    // UID 2 is the multipart one; user2's messages differ from user1's.
    let bs = c.cmd_ok("UID FETCH 2 BODYSTRUCTURE").await.unwrap();
    assert!(bs.contains("\"mixed\""), "{bs}");
    assert_ne!(seed_message("user1", 1), seed_message("user2", 1));
    assert!(c.logout().await.unwrap().contains("BYE"));
}

#[tokio::test]
async fn implicit_tls_verifies_test_ca() {
    let dc = Dovecot::builder().tls().messages(1).start();
    let tls = TlsClient::with_ca(dc.ca_pem_path());
    let mut c = ImapClient::connect_tls(&dc.imaps_addr(), &tls)
        .await
        .unwrap();
    assert!(c.is_tls());
    assert!(c.peer_certificates().is_some_and(|v| !v.is_empty()));
    c.login("user2", "pass2").await.unwrap().ok().unwrap();
    c.select("INBOX").await.unwrap();
    assert_eq!(c.fetch_body(1).await.unwrap(), dc.message("user2", 1));

    // The IP SAN verifies too.
    let by_ip = TlsClient::with_ca(dc.ca_pem_path()).server_name("127.0.0.1");
    ImapClient::connect_tls(&dc.imaps_addr(), &by_ip)
        .await
        .unwrap();
    // A different CA must be rejected; insecure mode accepts anything.
    let other = TestCa::new("some other CA");
    let err = ImapClient::connect_tls(&dc.imaps_addr(), &TlsClient::with_ca(other.ca_pem_path()))
        .await
        .err()
        .expect("handshake with the wrong CA must fail");
    assert!(
        format!("{err:#}").contains("TLS handshake failed"),
        "{err:#}"
    );
    ImapClient::connect_tls(&dc.imaps_addr(), &TlsClient::insecure())
        .await
        .unwrap();
}

#[tokio::test]
async fn starttls_upgrade_then_login() {
    let dc = Dovecot::builder().tls().start();
    let mut c = ImapClient::connect_plain(&dc.addr()).await.unwrap();
    let caps = c.capability().await.unwrap();
    assert!(caps.contains(&"STARTTLS".to_string()), "{caps:?}");
    c.starttls(&TlsClient::with_ca(dc.ca_pem_path()))
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert!(c.is_tls());
    let caps = c.capability().await.unwrap();
    assert!(!caps.contains(&"STARTTLS".to_string()), "{caps:?}");
    c.authenticate_plain("user3", "pass3", true)
        .await
        .unwrap()
        .ok()
        .unwrap();
}

#[tokio::test]
async fn append_round_trip_sync_and_literal_plus() {
    let dc = Dovecot::start();
    let mut c = ImapClient::connect_plain(&dc.addr()).await.unwrap();
    c.login("user4", "pass4").await.unwrap().ok().unwrap();
    let small = sized_message("sync", 1000);
    let big = sized_message("plus", 300_000);
    let r1 = c.append("INBOX", Some("\\Seen"), &small).await.unwrap();
    let uid1 = r1.ok().unwrap().appended_uid().expect("APPENDUID");
    let r2 = c.append_literal_plus("INBOX", None, &big).await.unwrap();
    let uid2 = r2.ok().unwrap().appended_uid().expect("APPENDUID");
    assert_eq!((uid1, uid2), (1, 2));
    c.select("INBOX").await.unwrap();
    assert_eq!(c.fetch_body(uid1).await.unwrap(), small);
    assert_eq!(c.fetch_body(uid2).await.unwrap(), big);
    let flags = c.cmd_ok("UID FETCH 1 FLAGS").await.unwrap();
    assert!(flags.contains("\\Seen"), "{flags}");
    // An APPEND to a missing mailbox is refused before the literal is sent.
    let r = c.append("Nope", None, &small).await.unwrap();
    assert!(r.is_no(), "{r}");
    assert_eq!(dc.message_count("user4", "INBOX"), 2);
}

#[tokio::test]
async fn idle_sees_delivery() {
    let dc = Dovecot::builder().messages(1).start();
    let mut c = ImapClient::connect_plain(&dc.addr()).await.unwrap();
    c.login("user5", "pass5").await.unwrap().ok().unwrap();
    assert_eq!(c.select("INBOX").await.unwrap().exists(), Some(1));
    let tag = c.idle_start().await.unwrap();
    // Nothing happens while idle…
    let quiet = c
        .read_responses_for(Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        quiet.iter().all(|l| !l.text().contains("EXISTS")),
        "{quiet:?}"
    );
    dc.deliver("user5", &sized_message("delivered", 500));
    let line = c
        .idle_wait_for("EXISTS", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(line.text(), "* 2 EXISTS");
    c.idle_done(&tag).await.unwrap().ok().unwrap();
    assert_eq!(
        c.fetch_body(2).await.unwrap(),
        sized_message("delivered", 500)
    );
}

#[tokio::test]
async fn password_with_spaces_quotes_and_non_ascii() {
    let dc = Dovecot::builder().user(WEIRD_USER, WEIRD_PASS).start();
    assert_eq!(dc.password(WEIRD_USER), WEIRD_PASS);
    // LOGIN with a literal (non-ASCII), AUTHENTICATE both ways.
    let mut c = ImapClient::connect_plain(&dc.addr()).await.unwrap();
    c.login(WEIRD_USER, WEIRD_PASS).await.unwrap().ok().unwrap();
    for ir in [true, false] {
        let mut c = ImapClient::connect_plain(&dc.addr()).await.unwrap();
        c.authenticate_plain(WEIRD_USER, WEIRD_PASS, ir)
            .await
            .unwrap()
            .ok()
            .unwrap();
    }
    // Quoting with escapes (ASCII-only password with a quote and backslash).
    let dc2 = Dovecot::builder().user("q", "a \"b\" \\c").start();
    let mut c = ImapClient::connect_plain(&dc2.addr()).await.unwrap();
    c.login("q", "a \"b\" \\c").await.unwrap().ok().unwrap();
    let mut c = ImapClient::connect_plain(&dc2.addr()).await.unwrap();
    assert!(c.login("q", "wrong").await.unwrap().is_no());
}

fn py_base(dc: &Dovecot, port: u16, user: &str) -> Vec<String> {
    vec![
        "--port".into(),
        port.to_string(),
        "--user".into(),
        user.into(),
        "--password".into(),
        dc.password(user).into(),
    ]
}

fn py(args: &[String], extra: &[&str]) -> String {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    py_client_ok(&all)
}

#[test]
fn python_imaplib_login_fetch_append_sasl() {
    let dc = Dovecot::builder()
        .tls()
        .messages(3)
        .user(WEIRD_USER, WEIRD_PASS)
        .start();
    let ca = dc.ca_pem_path().display().to_string();

    // Plaintext LOGIN + fetch of the multipart message, compared byte-exact.
    let out = py(
        &py_base(&dc, dc.port(), "user1"),
        &["login-fetch", "--uid", "2"],
    );
    let b64 = out
        .lines()
        .find_map(|l| l.strip_prefix("BODY64 "))
        .unwrap_or_else(|| panic!("{out}"));
    let body = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(body, dc.message("user1", 2));

    // Implicit TLS with CA verification, APPEND round trip.
    let out = py(
        &py_base(&dc, dc.imaps_port(), "user2"),
        &["--tls", "--cafile", &ca, "append-verify", "--size", "70000"],
    );
    assert!(out.contains("OK append-verify uid=4 size=70000"), "{out}");

    // STARTTLS + SASL-IR, continuation PLAIN with the odd password,
    // LOGIN literal with it, fetch-all, capabilities.
    let out = py(
        &py_base(&dc, dc.port(), "user3"),
        &["--starttls", "--cafile", &ca, "sasl-ir"],
    );
    assert!(out.contains("OK sasl-ir"), "{out}");
    let out = py(&py_base(&dc, dc.port(), WEIRD_USER), &["auth-plain"]);
    assert!(out.contains("OK plain"), "{out}");
    let out = py(&py_base(&dc, dc.port(), WEIRD_USER), &["login"]);
    assert!(out.contains("OK login"), "{out}");
    let out = py(&py_base(&dc, dc.port(), "user4"), &["fetch-all"]);
    assert!(out.contains("OK fetch-all count=3"), "{out}");
    let out = py(
        &py_base(&dc, dc.imaps_port(), "user5"),
        &["--tls", "--insecure", "capability"],
    );
    assert!(out.contains("CAPS-PRE ") && out.contains("IDLE"), "{out}");

    // A wrong password fails cleanly.
    let out = py_client_ok(&[
        "--port",
        &dc.port().to_string(),
        "--user",
        "user1",
        "--password",
        "nope",
        "login-fail",
    ]);
    assert!(out.contains("OK login-fail"), "{out}");
    let bad = run_python(
        "imap_client.py",
        &[
            "--port",
            &dc.port().to_string(),
            "--user",
            "user1",
            "--password",
            "nope",
            "login",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn python_imaplib_idle_wait_sees_delivery() {
    let dc = Dovecot::builder().messages(2).start();
    let mut child = Command::new(require_tool("python3"))
        .arg(py_script("imap_client.py"))
        .args(py_base(&dc, dc.port(), "user1"))
        .args(["idle-wait", "--timeout", "15"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "EOF: {seen}");
        seen.push_str(&line);
        if line.starts_with("IDLING") {
            assert_eq!(line.trim(), "IDLING exists=2");
            break;
        }
    }
    dc.deliver("user1", &sized_message("py-idle", 300));
    std::io::Read::read_to_string(&mut stdout, &mut seen).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{seen}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        seen.contains("EXISTS 3") && seen.contains("OK idle-wait"),
        "{seen}"
    );
}

#[test]
fn curl_fetches_seeded_message() {
    let dc = Dovecot::builder().tls().messages(2).start();
    let url = format!("imap://127.0.0.1:{}/INBOX;UID=1", dc.port());
    let out = run_curl(&[&url, "-u", "user1:pass1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, dc.message("user1", 1));

    let url = format!("imaps://localhost:{}/INBOX;UID=2", dc.imaps_port());
    let ca = dc.ca_pem_path().display().to_string();
    let out = run_curl(&[&url, "-u", "user2:pass2", "--cacert", &ca]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, dc.message("user2", 2));
}

#[tokio::test]
async fn stop_restart_same_port_keeps_mail() {
    let mut dc = Dovecot::builder().messages(2).start();
    let addr = dc.addr();
    let mut c = ImapClient::connect_plain(&addr).await.unwrap();
    c.login("user1", "pass1").await.unwrap().ok().unwrap();
    c.select("INBOX").await.unwrap();
    dc.stop();
    assert!(!dc.is_running());
    // The existing session is gone and new connections are refused.
    c.expect_closed(Duration::from_secs(5)).await.unwrap();
    assert!(ImapClient::connect_plain(&addr).await.is_err());
    dc.restart();
    assert_eq!(dc.addr(), addr);
    let mut c = ImapClient::connect_plain(&addr).await.unwrap();
    c.login("user1", "pass1").await.unwrap().ok().unwrap();
    c.select("INBOX").await.unwrap();
    assert_eq!(c.fetch_body(2).await.unwrap(), dc.message("user1", 2));
}

#[tokio::test]
async fn frozen_dovecot_accepts_but_never_greets() {
    let dc = Dovecot::start();
    dc.freeze();
    let mut c = ImapClient::connect_raw(&dc.addr()).await.unwrap();
    let r = c.read_line(Duration::from_millis(500)).await.unwrap();
    assert!(r.is_timeout(), "{r:?}");
    dc.thaw();
    let r = c.read_line(Duration::from_secs(10)).await.unwrap();
    assert!(r.text().unwrap().starts_with("* OK"), "{r:?}");
}

#[tokio::test]
async fn log_shows_forwarded_rip_and_rawlog_records_commands() {
    let dc = Dovecot::builder().rawlog().messages(1).start();
    let mut c = ImapClient::connect_plain(&dc.addr()).await.unwrap();
    // 127.0.0.1 is in login_trusted_networks, so Dovecot believes the ID.
    c.cmd_ok("ID (\"x-originating-ip\" \"192.0.2.7\" \"x-originating-port\" \"4321\")")
        .await
        .unwrap();
    c.login("user2", "pass2").await.unwrap().ok().unwrap();
    c.select("INBOX").await.unwrap();
    c.cmd_ok("UID FETCH 1 (FLAGS) (CHANGEDSINCE 1)").await.ok();
    c.logout().await.unwrap();
    let mut direct = ImapClient::connect_plain(&dc.addr()).await.unwrap();
    direct.login("user2", "pass2").await.unwrap().ok().unwrap();
    direct.logout().await.unwrap();
    let lines = dc.wait_for_logins("user2", 2, Duration::from_secs(5));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(log_field(&lines[0], "rip").as_deref(), Some("192.0.2.7"));
    assert!(log_field(&lines[1], "session").is_some(), "{}", lines[1]);
    assert_eq!(dc.login_rips("user2"), vec!["192.0.2.7", "127.0.0.1"]);
    let rawlog = common::wait_until(Duration::from_secs(5), || {
        let r = dc.rawlog_in("user2");
        r.contains("LOGOUT").then_some(r)
    })
    .unwrap_or_else(|| panic!("rawlog: {:?}", dc.rawlog_in("user2")));
    assert!(rawlog.contains("SELECT INBOX"), "{rawlog}");
    assert_eq!(dc.rawlog_sessions("user2"), 2);
    assert!(dc.rawlog_out("user2").contains("FETCH"));
}

#[tokio::test]
async fn raw_pipelining_and_line_reads() {
    let dc = Dovecot::start();
    let mut c = ImapClient::connect_plain(&dc.addr()).await.unwrap();
    c.write_raw(b"p1 NOOP\r\np2 CAPABILITY\r\np3 LOGIN user1 pass1\r\n")
        .await
        .unwrap();
    let r1 = c.read_tagged("p1").await.unwrap();
    assert!(r1.is_ok());
    let r2 = c.read_tagged("p2").await.unwrap();
    assert!(r2.capabilities().contains(&"IMAP4REV1".to_string()));
    assert!(c.read_tagged("p3").await.unwrap().is_ok());
    // Nothing more to read; then a LOGOUT closes the connection.
    assert!(c
        .read_line(Duration::from_millis(200))
        .await
        .unwrap()
        .is_timeout());
    c.write_raw(b"z LOGOUT\r\n").await.unwrap();
    let rest = c.expect_closed(Duration::from_secs(5)).await.unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("z OK"));
}

#[test]
fn helpers_sized_message_and_proxy_config() {
    for size in [120, 155, 156, 157, 200, 234, 1000, 4096, 65537] {
        let m = sized_message("t", size);
        assert_eq!(m.len(), size);
        assert!(m.ends_with(b"\r\n"));
    }
    let ca = TestCa::new("cfg CA");
    let cert = ca.issue_localhost();
    let cfg = ProxyConfig::new()
        .listener("127.0.0.1:1143", "starttls")
        .listener("127.0.0.1:1993", "implicit")
        .tls_files(&cert.chain, &cert.key)
        .admin("127.0.0.1:9143")
        .timeout("preauth", "2s")
        .route("user3", "b2")
        .backend(BackendCfg::new("b1", "127.0.0.1:10143"))
        .backend(
            BackendCfg::new("b2", "127.0.0.1:10993")
                .tls("implicit")
                .ca_file(ca.ca_pem_path())
                .server_name("localhost")
                .weight(2),
        )
        .to_toml();
    let v: toml::Value = toml::from_str(&cfg).unwrap_or_else(|e| panic!("{e}\n{cfg}"));
    assert_eq!(v["timeouts"]["preauth"].as_str(), Some("2s"));
    assert_eq!(v["listener"].as_array().unwrap().len(), 2);
    assert_eq!(v["routing"]["users"]["user3"].as_str(), Some("b2"));
    let backends = v["pool"][0]["backend"].as_array().unwrap();
    assert_eq!(backends[1]["tls"].as_str(), Some("implicit"));
    assert_eq!(v["tls"]["self_signed"].as_bool(), Some(false));
    let quick = proxy_config(
        &[("127.0.0.1:1143", "plaintext")],
        &[BackendCfg::new("b1", "127.0.0.1:10143")],
    );
    let q: toml::Value = toml::from_str(&quick).unwrap();
    assert_eq!(q["server"]["allow_plaintext_auth"].as_bool(), Some(true));
}

#[test]
fn imapmux_fixture_reports_a_bad_config() {
    // Only the fixture's mechanics: spawn, exit status, captured log.
    let mut p = Imapmux::spawn("this is not = = toml");
    let st = p
        .wait_exit(Duration::from_secs(10))
        .expect("imapmux should exit on a broken config");
    assert!(!st.success());
    assert!(!p.log().trim().is_empty(), "no error output captured");
    assert!(p.config_path().exists());
}
