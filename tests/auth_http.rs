//! The nginx-compatible auth_http source, end to end: the real imapmux
//! binary asks a real HTTP auth service (tests/py/auth_http.py) and logs in
//! to real Dovecots; master-user login into Dovecot; the brute-force delay
//! measured.

mod common;

use std::time::{Duration, Instant};

use common::auth_http::AuthHttp;
use common::*;
use serde_json::json;

fn auth_toml(url: &str, extra: &str) -> String {
    format!(
        "[auth]\nsource = \"http\"\n[auth.http]\nurl = {}\ntimeout = \"2s\"\n{extra}\n[auth.penalty]\nenabled = false\n",
        toml_str(url)
    )
}

/// A request header, by name (case-insensitive, as HTTP says).
fn header<'a>(req: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    req["headers"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

#[tokio::test]
async fn routes_rewrites_escapes_and_keeps_alive() {
    let d1 = Dovecot::builder().start();
    let d2 = Dovecot::builder().start();
    let auth = AuthHttp::start(json!({
        "alice": {"password": "a pw%é", "server": "127.0.0.1", "port": d2.port(),
                  "user": "user3", "pass": "pass3"},
        "user1": {"password": "pass1", "server": "127.0.0.1", "port": d1.port()},
    }));
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", &d1.addr()))
        .backend(BackendCfg::new("b2", &d2.addr()))
        .extra(&auth_toml(&auth.url(), ""))
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    let tls = TlsClient::insecure();

    // The service verifies alice, sends her to b2 as user3 with another password.
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let r = c.login("alice", "a pw%é").await.unwrap();
    assert!(r.is_ok(), "{r}");
    c.select("INBOX").await.unwrap();
    c.logout().await.unwrap();
    // Dovecot's log is written a moment later (under load, later still).
    let d2_log = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(d2.log_path())
            .ok()
            .filter(|l| l.contains("user=<user3>"))
    })
    .unwrap_or_else(|| std::fs::read_to_string(d2.log_path()).unwrap());
    assert!(d2_log.contains("user=<user3>"), "{d2_log}");
    let d1_log = std::fs::read_to_string(d1.log_path()).unwrap();
    assert!(!d1_log.contains("user=<user3>"));

    let reqs = auth.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r0 = &reqs[0];
    assert_eq!(header(r0, "Auth-Method"), Some("plain"));
    assert_eq!(header(r0, "Auth-User"), Some("alice"));
    // nginx's escaping: space and % as %XX, UTF-8 as is.
    assert_eq!(header(r0, "Auth-Pass"), Some("a%20pw%25é"));
    assert_eq!(header(r0, "Auth-Protocol"), Some("imap"));
    assert_eq!(header(r0, "Auth-Login-Attempt"), Some("1"));
    assert_eq!(header(r0, "Client-IP"), Some("127.0.0.1"));
    assert!(header(r0, "Client-Host").is_some());
    assert_eq!(header(r0, "Auth-SSL"), Some("on"));

    // Two wrong passwords on one connection: attempts 1 and 2, the
    // service's Auth-Status shown, then the right one.
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    for _ in 0..2 {
        let r = c.login("user1", "wrong").await.unwrap();
        assert!(r.is_no(), "{r}");
        assert!(
            r.text
                .contains("[AUTHENTICATIONFAILED] Invalid login or password"),
            "{r}"
        );
    }
    assert!(c.login("user1", "pass1").await.unwrap().is_ok());
    let reqs = auth.requests();
    let attempts: Vec<_> = reqs[1..]
        .iter()
        .map(|r| header(r, "Auth-Login-Attempt").unwrap_or("").to_string())
        .collect();
    // The second "wrong" is answered from the negative cache.
    assert_eq!(attempts, vec!["1", "3"], "{reqs:?}");

    // The result cache: the same login again does not ask the service.
    let before = auth.requests().len();
    for _ in 0..3 {
        let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
        assert!(c.login("alice", "a pw%é").await.unwrap().is_ok());
    }
    assert_eq!(auth.requests().len(), before);

    // Keep-alive: many different logins, few connections to the service.
    for i in 0..8 {
        let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
        assert!(c.login("user1", &format!("bad{i}")).await.unwrap().is_no());
    }
    let reqs = auth.requests();
    let mut conns: Vec<_> = reqs.iter().map(|r| r["conn"].as_u64().unwrap()).collect();
    conns.sort();
    conns.dedup();
    assert!(reqs.len() >= 11, "{}", reqs.len());
    assert!(
        conns.len() <= 2,
        "{} connections for {} requests",
        conns.len(),
        reqs.len()
    );

    // Passwords never reach imapmux's log.
    let log = proxy.log();
    for p in ["a pw%é", "pass3", "bad3"] {
        assert!(!log.contains(p), "{p:?} in the log");
    }
}

#[tokio::test]
async fn auth_wait_error_code_and_service_down() {
    let d = Dovecot::builder().start();
    let mut auth = AuthHttp::start(json!({
        "user1": {"password": "pass1", "wait": 1, "status": "Temporary failure", "error_code": "LIMIT"},
    }));
    // A service that accepts connections and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_url = format!("http://{}/auth", hang.local_addr().unwrap());
    let addr = free_addr();
    let addr2 = free_addr();
    let base = |a: &str, url: &str| {
        ProxyConfig::new()
            .listener(a, "implicit")
            .backend(BackendCfg::new("b1", &d.addr()))
            .extra(&auth_toml(url, ""))
            .to_toml()
    };
    let proxy = Imapmux::start(&base(&addr, &auth.url()), &addr);
    let _proxy2 = Imapmux::start(&base(&addr2, &hang_url), &addr2);
    let tls = TlsClient::insecure();

    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let t0 = Instant::now();
    let r = c.login("user1", "nope").await.unwrap();
    let took = t0.elapsed();
    assert!(r.is_no(), "{r}");
    assert!(r.text.contains("[LIMIT] Temporary failure"), "{r}");
    assert!(
        took >= Duration::from_secs(1),
        "Auth-Wait not honoured: {took:?}"
    );

    // Down: refused connections → NO [UNAVAILABLE] at once, and a log line.
    auth.stop();
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let t0 = Instant::now();
    let r = c.login("user2", "pass2").await.unwrap();
    assert!(r.is_no() && r.text.contains("[UNAVAILABLE]"), "{r}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(
        proxy.wait_for_log("auth source failed", Duration::from_secs(2)),
        "{}",
        proxy.log()
    );
    // The session is still usable: LOGOUT works.
    c.logout().await.unwrap();

    // Hanging: NO [UNAVAILABLE] after the 2 s timeout, not a hang.
    let mut c = ImapClient::connect_tls(&addr2, &tls).await.unwrap();
    let t0 = Instant::now();
    let r = c.login("user2", "pass2").await.unwrap();
    let took = t0.elapsed();
    assert!(r.is_no() && r.text.contains("[UNAVAILABLE]"), "{r}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    drop(hang);
}

/// Dovecot's master-user separator for `user*master` logins.
const MASTER: &str = "auth_master_user_separator = *\n";

#[tokio::test]
async fn master_user_login_into_dovecot() {
    let dir = tempfile::tempdir().unwrap();
    let master_file = dir.path().join("master-users");
    std::fs::write(&master_file, "proxy:{PLAIN}m4ster-pw\n").unwrap();
    common::make_world_readable_dir(dir.path());
    let d = Dovecot::builder()
        .extra_config(&format!(
            "{MASTER}passdb {{\n  driver = passwd-file\n  master = yes\n  args = {}\n}}\n",
            master_file.display()
        ))
        .start();
    // The web password the directory knows is not the Dovecot password.
    let auth = AuthHttp::start(json!({
        "user1": {"password": "web-pw"},
        "user2": {"password": "web-pw2"},
    }));
    let tls = TlsClient::insecure();
    for (style, user, pw) in [
        ("sasl", "user1", "web-pw"),
        ("separator", "user2", "web-pw2"),
    ] {
        let addr = free_addr();
        let cfg = ProxyConfig::new()
            .listener(&addr, "implicit")
            .backend(BackendCfg::new("b1", &d.addr()))
            .extra(&auth_toml(&auth.url(), ""))
            .extra(&format!(
                "[pool.login]\nmode = \"master\"\nmaster_user = \"proxy\"\nmaster_password = \"m4ster-pw\"\nmaster_style = \"{style}\"\n"
            ))
            .to_toml();
        // [pool.login] must belong to the pool: ProxyConfig writes the pool last.
        let proxy = Imapmux::start(&cfg, &addr);
        let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
        let r = c.login(user, pw).await.unwrap();
        assert!(r.is_ok(), "{style}: {r}\n{}", proxy.log());
        let sel = c.select("INBOX").await.unwrap();
        assert!(sel.is_ok());
        c.logout().await.unwrap();
        // Dovecot logged the user in through the master user.
        let seen = |log: &str| log.contains(&format!("user=<{user}>")) && log.contains("master");
        let log = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(d.log_path())
                .ok()
                .filter(|l| seen(l))
        })
        .unwrap_or_else(|| std::fs::read_to_string(d.log_path()).unwrap());
        assert!(seen(&log), "{style}: {log}");
        assert!(!proxy.log().contains("m4ster-pw"));
        // A wrong web password never reaches Dovecot.
        let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
        assert!(c.login(user, "pass1").await.unwrap().is_no());
    }
    // A wrong master password: Dovecot refuses a login the user cannot
    // fix: the client gets UNAVAILABLE (not counted against the user) and
    // the log says why.
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", &d.addr()))
        .extra(&auth_toml(&auth.url(), ""))
        .extra("[pool.login]\nmode = \"master\"\nmaster_user = \"proxy\"\nmaster_password = \"not-it\"\n")
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let r = c.login("user1", "web-pw").await.unwrap();
    assert!(r.is_no() && r.text.contains("[UNAVAILABLE]"), "{r}");
    assert!(proxy.wait_for_log(
        "backend refused a login the auth source verified",
        Duration::from_secs(2)
    ));
    assert!(!proxy.log().contains("not-it"));
    // Without the master user, Dovecot judges the password the client
    // typed (the web password is not Dovecot's): its verdict is relayed,
    // as nginx does.
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", &d.addr()))
        .extra(&auth_toml(&auth.url(), ""))
        .to_toml();
    let _proxy = Imapmux::start(&cfg, &addr);
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let r = c.login("user1", "web-pw").await.unwrap();
    assert!(r.is_no() && r.code("AUTHENTICATIONFAILED").is_some(), "{r}");
}

/// nginx setups where the auth service only routes: it answers OK to any
/// password and the backend checks it. The backend's verdict is the
/// login's: AUTHENTICATIONFAILED for a wrong password (mail clients ask
/// for it again), counted by the brute-force limits; the backend is not
/// blamed.
#[tokio::test]
async fn a_service_that_only_routes_relays_the_backends_verdict() {
    let d = Dovecot::builder().start();
    let auth = AuthHttp::start(json!({
        "user1": {"password": null, "server": "127.0.0.1", "port": d.port()},
        "user2": {"password": null, "server": "127.0.0.1", "port": d.port()},
    }));
    let addr = free_addr();
    let admin = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", &d.addr()))
        .extra(&format!(
            "[admin]\naddress = {}\n[auth]\nsource = \"http\"\n[auth.http]\nurl = {}\ntimeout = \"2s\"\n\
             [auth.penalty]\nbase_delay = \"10ms\"\nmax_delay = \"20ms\"\nmax_failures_per_user = 3\nmax_failures_per_ip = 20\n",
            toml_str(&admin),
            toml_str(&auth.url())
        ))
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    let tls = TlsClient::insecure();

    // The right password works.
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    assert!(c.login("user1", "pass1").await.unwrap().is_ok());
    assert!(c.select("INBOX").await.unwrap().is_ok());
    c.logout().await.unwrap();

    // Wrong passwords: the service said OK, Dovecot said no.
    for i in 0..3 {
        let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
        let r = c.login("user2", &format!("wrong-{i}")).await.unwrap();
        assert!(r.is_no(), "{r}");
        assert!(
            r.text
                .contains("[AUTHENTICATIONFAILED] Authentication failed."),
            "{r}"
        );
    }
    // Past max_failures_per_user: refused before asking anyone, even with
    // the right password.
    let before = auth.requests().len();
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let r = c.login("user2", "pass2").await.unwrap();
    assert!(
        r.is_no() && r.text.contains("[UNAVAILABLE] Too many failed logins"),
        "{r}"
    );
    assert_eq!(auth.requests().len(), before);

    // Counted as failed logins (3, and the refusal), the backend not blamed.
    assert_eq!(
        admin_metric(&admin, "imapmux_logins_total{result=\"failed\"}"),
        4.0
    );
    assert_eq!(
        admin_metric(&admin, "imapmux_logins_total{result=\"unavailable\"}"),
        0.0
    );
    assert_eq!(
        admin_metric(&admin, "imapmux_auth_penalty_total{action=\"refused\"}"),
        1.0
    );
    assert_eq!(
        admin_metric(&admin, "imapmux_backend_up{backend=\"b1\"}"),
        1.0
    );
    // The same log line as any failed login: user quoted, no password.
    let log = proxy.log();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("login failed")).collect();
    assert_eq!(failed.len(), 4, "{log}");
    for l in &failed {
        assert!(
            l.contains("rip=127.0.0.1") && l.contains("user=\"user2\""),
            "{l}"
        );
    }
    let reason = |r: &str| {
        let r = format!("reason=\"{r}\"");
        failed.iter().filter(|l| l.contains(&r)).count()
    };
    // Three by Dovecot's verdict, then the limit's refusal.
    assert_eq!(
        (reason("AUTHENTICATIONFAILED"), reason("UNAVAILABLE")),
        (3, 1)
    );
    assert!(!log.contains("ERROR"), "{log}");
    assert!(!log.contains("wrong-") && !log.contains("pass1"), "{log}");
    // Other users still get in.
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    assert!(c.login("user1", "pass1").await.unwrap().is_ok());
}

#[tokio::test]
async fn brute_force_delay_measured() {
    let d = Dovecot::builder().start();
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", &d.addr()))
        .extra(
            "[auth.penalty]\nbase_delay = \"400ms\"\nmax_delay = \"2s\"\nmax_failures_per_user = 4\nmax_failures_per_ip = 6\n",
        )
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    let tls = TlsClient::insecure();
    // user2 logs in once: known good from this address.
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    assert!(c.login("user2", "pass2").await.unwrap().is_ok());

    let mut took = Vec::new();
    for _ in 0..4 {
        let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
        let t0 = Instant::now();
        let r = c.login("user1", "guess").await.unwrap();
        took.push(t0.elapsed());
        assert!(
            r.is_no() && r.text.contains("[AUTHENTICATIONFAILED]"),
            "{r}"
        );
    }
    eprintln!("failed-login answer times: {took:?}");
    // imapmux waits 0.4, 0.8, 1.6 s before verifying the 2nd, 3rd, 4th
    // attempt (Dovecot itself takes up to ~0.5 s to refuse one).
    assert!(took[0] < Duration::from_millis(1000), "{took:?}");
    for (i, min) in [(1, 400), (2, 800), (3, 1600)] {
        assert!(
            took[i] >= Duration::from_millis(min),
            "attempt {}: {took:?}",
            i + 1
        );
        assert!(
            took[i] < Duration::from_millis(min + 1000),
            "attempt {}: {took:?}",
            i + 1
        );
    }
    // Past the limit: refused, even with the right password, without delay.
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let t0 = Instant::now();
    let r = c.login("user1", "pass1").await.unwrap();
    assert!(r.is_no() && r.text.contains("[UNAVAILABLE]"), "{r}");
    assert!(t0.elapsed() < Duration::from_millis(400));
    // The known-good user from the same address is neither delayed nor refused.
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let t0 = Instant::now();
    assert!(c.login("user2", "pass2").await.unwrap().is_ok());
    assert!(
        t0.elapsed() < Duration::from_millis(350),
        "{:?}",
        t0.elapsed()
    );
    // Two more failures for other users push the address over its limit:
    // a user never seen from here is refused, user2 still gets in.
    for u in ["user3", "user4"] {
        let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
        assert!(c.login(u, "guess").await.unwrap().is_no());
    }
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let r = c.login("user5", "pass5").await.unwrap();
    assert!(r.is_no() && r.text.contains("[UNAVAILABLE]"), "{r}");
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    assert!(c.login("user2", "pass2").await.unwrap().is_ok());
    // One fail2ban-matchable line per failure, with the client address.
    let log = proxy.log();
    let count = |reason: &str| {
        log.lines()
            .filter(|l| {
                l.contains("login failed")
                    && l.contains("rip=127.0.0.1")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .count()
    };
    assert_eq!(count("AUTHENTICATIONFAILED"), 6, "{log}");
    assert_eq!(count("UNAVAILABLE"), 2, "{log}");
    assert_eq!(
        log.matches("login refused: too many failed logins").count(),
        2
    );
}
