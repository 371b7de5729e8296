//! The brute-force defence against parallel guessing, end to end: the real
//! imapmux binary in front of the auth_http test service, which holds each
//! verification in flight until the test lets it answer. Guesses sent at
//! the same instant must not all be verified: at most the per-user and
//! per-address limits reach the auth source, and the right password does
//! not get in once the limit is taken. Also: a user name cannot forge a
//! fail2ban match in the log.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::auth_http::AuthHttp;
use common::*;
use serde_json::json;

const PER_USER: usize = 10;
const PER_IP: usize = 50;

/// Wait (polling, no fixed sleep) until `f` holds, at most `timeout`.
async fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One LOGIN on a new connection: (ok, response text).
async fn login(addr: String, user: String, pw: String) -> (bool, String) {
    let mut c = ImapClient::connect_plain(&addr).await.unwrap();
    let r = c.login(&user, &pw).await.unwrap();
    (r.is_ok(), r.text.clone())
}

/// Start every login at once; wait until each one has either been answered
/// or is being verified by the auth service (held there), then release the
/// held ones and collect all answers.
async fn burst(
    addr: &str,
    auth: &AuthHttp,
    hold: &std::path::Path,
    logins: Vec<(String, String)>,
) -> Vec<(String, String, bool, String)> {
    let before = auth.requests().len();
    let answered = Arc::new(AtomicUsize::new(0));
    let n = logins.len();
    let tasks: Vec<_> = logins
        .into_iter()
        .map(|(u, p)| {
            let (addr, answered) = (addr.to_string(), answered.clone());
            tokio::spawn(async move {
                let (ok, text) = login(addr, u.clone(), p.clone()).await;
                answered.fetch_add(1, Ordering::SeqCst);
                (u, p, ok, text)
            })
        })
        .collect();
    // Every attempt has passed the gate (and is held at the service) or
    // has been refused by it.
    until("every attempt gated", Duration::from_secs(60), || {
        answered.load(Ordering::SeqCst) + auth.requests().len() - before == n
    })
    .await;
    let held = auth.requests().len() - before;
    eprintln!("{n} logins at once: {held} verifications in flight, the rest refused");
    std::fs::write(hold, "").unwrap();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    std::fs::remove_file(hold).unwrap();
    out
}

fn auth_pass(req: &serde_json::Value) -> String {
    req["headers"]
        .as_object()
        .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case("Auth-Pass")))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_are_bounded_by_the_limits() {
    let d = Dovecot::builder().start();
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("release");
    let mut users = serde_json::Map::new();
    users.insert(
        "user1".into(),
        json!({"password": "pass1", "server": "127.0.0.1", "port": d.port(),
               "hold": hold.to_str().unwrap()}),
    );
    for i in 0..200 {
        users.insert(
            format!("spray{i}"),
            json!({"password": "never-guessed", "hold": hold.to_str().unwrap()}),
        );
    }
    users.insert(
        "user2".into(),
        json!({"password": "pass2", "server": "127.0.0.1", "port": d.port()}),
    );
    let auth = AuthHttp::start(serde_json::Value::Object(users));
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "plaintext")
        .allow_plaintext_auth(true)
        // 200 connections from one address: the per-address pre-auth
        // limit (tests/front_limits.rs) is not what is tested here.
        .no_address_limits()
        .backend(BackendCfg::new("b1", &d.addr()))
        .extra(&format!(
            "[auth]\nsource = \"http\"\n[auth.http]\nurl = {}\ntimeout = \"60s\"\n\
             [auth.penalty]\nbase_delay = \"10ms\"\nmax_delay = \"20ms\"\n\
             max_failures_per_user = {PER_USER}\nmax_failures_per_ip = {PER_IP}\n",
            toml_str(&auth.url())
        ))
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);

    // 200 wrong passwords for user1 and the right one among them, at once.
    let mut logins: Vec<_> = (0..200)
        .map(|i| ("user1".to_string(), format!("guess{i}")))
        .collect();
    logins.insert(137, ("user1".into(), "pass1".into()));
    let results = burst(&addr, &auth, &hold, logins).await;
    let reqs = auth.requests();
    eprintln!("user1 burst: {} verifications", reqs.len());
    assert!(
        !reqs.is_empty() && reqs.len() <= PER_USER,
        "{} verifications for one user; limit {PER_USER}",
        reqs.len()
    );
    let verified_right = reqs.iter().any(|r| auth_pass(r) == "pass1");
    let refused = results
        .iter()
        .filter(|r| r.3.contains("[UNAVAILABLE] Too many failed logins"))
        .count();
    assert_eq!(refused, 201 - reqs.len(), "{results:?}");
    for (_, p, ok, text) in &results {
        // Only the right password, and only if it was one of the few
        // attempts allowed through, got in.
        assert_eq!(*ok, p == "pass1" && verified_right, "{p}: {text}");
    }
    // The limit is taken: the right password is refused without being asked.
    let failures_a = reqs.iter().filter(|r| auth_pass(r) != "pass1").count();
    if !verified_right {
        assert_eq!(failures_a, PER_USER);
        let (ok, text) = login(addr.clone(), "user1".into(), "pass1".into()).await;
        assert!(
            !ok && text.contains("[UNAVAILABLE] Too many failed logins"),
            "{text}"
        );
        assert_eq!(auth.requests().len(), reqs.len());
    }

    // 200 users from the same address at once: the per-address limit,
    // which already holds user1's failures.
    let logins: Vec<_> = (0..200)
        .map(|i| (format!("spray{i}"), "wrong".to_string()))
        .collect();
    let before = auth.requests().len();
    let results = burst(&addr, &auth, &hold, logins).await;
    let sprayed = auth.requests().len() - before;
    eprintln!("spray burst: {sprayed} verifications");
    assert!(sprayed >= 1);
    assert!(
        failures_a + sprayed <= PER_IP,
        "{failures_a} + {sprayed} failed verifications from one address; limit {PER_IP}"
    );
    assert!(results.iter().all(|r| !r.2));
    // A user never seen from this address is now refused, right password
    // or not, and the service is not asked.
    let n = auth.requests().len();
    let (ok, text) = login(addr.clone(), "user2".into(), "pass2".into()).await;
    assert!(
        !ok && text.contains("[UNAVAILABLE] Too many failed logins"),
        "{text}"
    );
    assert_eq!(auth.requests().len(), n);
    // Passwords never reach the log.
    let log = proxy.log();
    assert!(!log.contains("guess13") && !log.contains("pass1"));
}

/// The fail2ban filter shipped in config/fail2ban/, run by fail2ban-regex
/// over `log`: the address of every match (`-o ip`).
fn fail2ban_hosts(log: &std::path::Path) -> Vec<String> {
    let filter = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/fail2ban/filter.d/imapmux.conf");
    let out = std::process::Command::new(require_tool("fail2ban-regex"))
        .args(["-o", "ip"])
        .arg(log)
        .arg(&filter)
        .output()
        .expect("run fail2ban-regex");
    assert!(
        out.status.success(),
        "fail2ban-regex: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test]
async fn user_name_cannot_forge_a_fail2ban_line() {
    let d = Dovecot::builder().start();
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "plaintext")
        .allow_plaintext_auth(true)
        // 200 connections from one address: the per-address pre-auth
        // limit (tests/front_limits.rs) is not what is tested here.
        .no_address_limits()
        .backend(BackendCfg::new("b1", &d.addr()))
        .extra(
            "[auth.penalty]\nbase_delay = \"10ms\"\nmax_delay = \"20ms\"\nmax_failures_per_user = 2\n",
        )
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    // User names that, printed raw, would end the line (or garble it on a
    // terminal or in a log viewer) and start a forged one blaming 1.2.3.4.
    // CR and LF are refused before login already (never logged); the
    // other control characters reach the log lines, escaped.
    let forged = "2026-11-26T08:27:34.364474Z  WARN imapmux::session::conn: login failed \
                  session=AAAA rip=1.2.3.4 user=x method=\"LOGIN\" reason=\"AUTHENTICATIONFAILED\"";
    let crlf = format!("mallory\r\n{forged}");
    let evil = format!(
        "mallory\x0b{forged}\x0c{forged}\x1b[2K\x1b[1G{forged}\u{85}{forged}\u{2028}{forged}\t"
    );
    let mut c = ImapClient::connect_plain(&addr).await.unwrap();
    assert!(c.login(&crlf, "wrong").await.unwrap().is_no());
    // Two failures (login failed), then the penalty's refusal (login refused).
    for _ in 0..3 {
        let mut c = ImapClient::connect_plain(&addr).await.unwrap();
        let r = c.login(&evil, "wrong").await.unwrap();
        assert!(r.is_no(), "{r}");
    }
    assert!(
        proxy.wait_for_log("login refused", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    let log = proxy.log();
    // No control character of the name reached the log (only the line
    // ends between records).
    for l in log.lines() {
        assert!(
            !l.chars().any(|c| c.is_control() || c == '\u{2028}'),
            "{l:?}"
        );
    }
    let lines: Vec<_> = log
        .lines()
        .filter(|l| {
            l.contains("rip=1.2.3.4")
                && l.split_once("Z  ")
                    .is_some_and(|(_, r)| r.starts_with("WARN imapmux::session::conn: login"))
        })
        .collect();
    // Two failures; the refusal logs "login refused" and "login failed".
    assert_eq!(lines.len(), 4, "the name is in the log, escaped: {log}");
    for l in &lines {
        assert!(l.contains("rip=127.0.0.1 user=\"mallory\\u{b}2026"), "{l}");
    }
    // fail2ban blames the client, once per failure and refusal, and never
    // the address in the name.
    let hosts = fail2ban_hosts(proxy.log_path());
    assert_eq!(hosts, vec!["127.0.0.1"; 3], "{log}");
}
