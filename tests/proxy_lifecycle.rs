//! Process life: CLI, config checking, timeouts, connection limit, and the
//! graceful shutdown on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn cli_help_version_and_check_config() {
    let out = imapmux_command().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = imapmux_command().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("run") && help.contains("check-config"),
        "{help}"
    );

    let sample = repo_root().join("config/imapmux.toml");
    let out = imapmux_command()
        .args(["check-config", "--config"])
        .arg(&sample)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&sample).unwrap();
    for (from, to, key) in [
        ("mode = \"implicit\"", "mode = \"tls\"", "mode"),
        (
            "address = \"127.0.0.1:10143\"",
            "address = \"nohost\"",
            "pool[0].backend[0].address",
        ),
        ("weight = 1", "weight = 0", "pool[0].backend[0].weight"),
        ("interval = \"5s\"", "interval = \"often\"", "interval"),
        (
            "max_connections = 10000",
            "max_conections = 10000",
            "max_conections",
        ),
    ] {
        let bad = dir.path().join("bad.toml");
        assert!(text.contains(from), "sample config lacks {from}");
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        let out = imapmux_command()
            .args(["check-config", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{from} -> {to} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(key),
            "error for {to} does not name {key}: {err}"
        );
    }
    let out = imapmux_command()
        .args(["check-config", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

fn start(dovecot: &Dovecot, extra: impl FnOnce(ProxyConfig) -> ProxyConfig) -> (Imapmux, String) {
    let addr = free_addr();
    let cfg = extra(
        ProxyConfig::new()
            .listener(&addr, "implicit")
            .backend(BackendCfg::new("b1", &dovecot.addr())),
    );
    let p = Imapmux::start(&cfg.to_toml(), &addr);
    (p, addr)
}

#[tokio::test]
async fn sigterm_drains_sessions_then_says_bye() {
    let dovecot = Dovecot::builder().messages(1).start();
    let (mut p, addr) = start(&dovecot, |c| c.timeout("drain", "3s"));
    let tls = TlsClient::insecure();
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    assert!(c.login("user1", "pass1").await.unwrap().is_ok());
    c.select("INBOX").await.unwrap();
    let t0 = Instant::now();
    p.sigterm();
    // New connections are refused at once...
    assert!(
        wait_for_port_closed(&addr, Duration::from_secs(2)),
        "still accepting after SIGTERM"
    );
    // ...while the open session keeps working during the drain time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.fetch_body(1).await.unwrap(), dovecot.message("user1", 1));
    // Then it gets a BYE and the process exits.
    let rest = c.expect_closed(Duration::from_secs(10)).await.unwrap();
    let waited = t0.elapsed();
    assert!(
        String::from_utf8_lossy(&rest).contains("* BYE"),
        "{}",
        show_bytes(&rest, 500)
    );
    assert!(
        waited >= Duration::from_secs(2),
        "BYE before the drain time: {waited:?}"
    );
    let st = p
        .wait_exit(Duration::from_secs(10))
        .expect("imapmux did not exit");
    assert!(st.success(), "{st}");
}

#[tokio::test]
async fn sigterm_exits_at_once_when_no_session_is_left() {
    let dovecot = Dovecot::start();
    let (mut p, addr) = start(&dovecot, |c| c.timeout("drain", "30s"));
    let mut c = ImapClient::connect_tls(&addr, &TlsClient::insecure())
        .await
        .unwrap();
    assert!(c.login("user1", "pass1").await.unwrap().is_ok());
    p.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(p.is_running(), "exited while a session was open");
    c.logout().await.unwrap();
    let t0 = Instant::now();
    assert!(
        p.wait_exit(Duration::from_secs(5)).is_some(),
        "did not exit after the last session ended"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn idle_autologout_and_preauth_timeout() {
    let dovecot = Dovecot::start();
    let (_p, addr) = start(&dovecot, |c| {
        c.timeout("idle", "2s").timeout("preauth", "1s")
    });
    let tls = TlsClient::insecure();
    // pre-auth: a client that never logs in is dropped
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let rest = c.expect_closed(Duration::from_secs(5)).await.unwrap();
    assert!(
        String::from_utf8_lossy(&rest).contains("* BYE"),
        "{}",
        show_bytes(&rest, 300)
    );
    // after login: activity keeps the session, silence ends it
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    assert!(c.login("user1", "pass1").await.unwrap().is_ok());
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(c.cmd("NOOP").await.unwrap().is_ok());
    }
    let t0 = Instant::now();
    let rest = c.expect_closed(Duration::from_secs(6)).await.unwrap();
    assert!(
        String::from_utf8_lossy(&rest).contains("* BYE Autologout"),
        "{}",
        show_bytes(&rest, 300)
    );
    assert!(t0.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test]
async fn connection_limit_refuses_with_bye() {
    let dovecot = Dovecot::start();
    let (_p, addr) = start(&dovecot, |c| c.max_connections(2));
    let tls = TlsClient::insecure();
    let _a = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let _b = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let mut c = ImapClient::connect_raw(&addr).await.unwrap();
    let rest = c.expect_closed(Duration::from_secs(5)).await.unwrap();
    assert!(
        String::from_utf8_lossy(&rest).contains("* BYE [UNAVAILABLE]"),
        "{}",
        show_bytes(&rest, 300)
    );
}

#[tokio::test]
async fn unreachable_backend_gives_unavailable_not_a_hang() {
    let dead = free_addr();
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .timeout("backend_connect", "1s")
        .pool(PoolCfg::new("default", vec![BackendCfg::new("dead", &dead)]).failover(false));
    let _p = Imapmux::start(&cfg.to_toml(), &addr);
    let mut c = ImapClient::connect_tls(&addr, &TlsClient::insecure())
        .await
        .unwrap();
    let t0 = Instant::now();
    let r = c.login("user1", "pass1").await.unwrap();
    assert!(r.is_no() && r.code("UNAVAILABLE").is_some(), "{r}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn silent_backend_times_out_with_unavailable() {
    // The backend accepts TCP but never greets (a hung server).
    let dovecot = Dovecot::start();
    let (p, addr) = start(&dovecot, |c| {
        c.timeout("backend_response", "1s").no_health()
    });
    dovecot.freeze();
    let mut c = ImapClient::connect_tls(&addr, &TlsClient::insecure())
        .await
        .unwrap();
    let t0 = Instant::now();
    let r = c.login("user1", "pass1").await.unwrap();
    let took = t0.elapsed();
    dovecot.thaw();
    assert!(r.is_no() && r.code("UNAVAILABLE").is_some(), "{r}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(p.log().contains("timed out during greeting"), "{}", p.log());
}
