//! Backend connection reuse after logout (the webmail pattern), against a
//! real Dovecot: a logged-out client's backend connection serves the next
//! login of the same user with the same password, cleaned of its state;
//! never another user, another password, or two live clients at once.

mod common;

use std::time::Duration;

use common::*;

fn count_logins(d: &Dovecot, user: &str) -> usize {
    std::fs::read_to_string(d.log_path())
        .unwrap()
        .matches(&format!("Login: user=<{user}>"))
        .count()
}

/// Dovecot's login lines for `user`, once at least `want` are in its log
/// (it writes them a moment after the client's OK; under load, later).
fn logins_eventually(d: &Dovecot, user: &str, want: usize) -> usize {
    wait_until(Duration::from_secs(10), || {
        (count_logins(d, user) >= want).then_some(())
    });
    count_logins(d, user)
}

fn metric(admin: &str, series: &str) -> f64 {
    admin_metric(admin, series)
}

fn setup(extra: &str) -> (Dovecot, Imapmux, String) {
    let (d, p, addr, _) = setup_admin(extra);
    (d, p, addr)
}

fn setup_admin(extra: &str) -> (Dovecot, Imapmux, String, String) {
    let d = Dovecot::builder().messages(3).start();
    let addr = free_addr();
    let admin = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", &d.addr()))
        .admin(&admin)
        .extra(&format!("[multiplex]\nreuse_after_logout = true\n{extra}"))
        .to_toml();
    let p = Imapmux::start(&cfg, &addr);
    (d, p, addr, admin)
}

async fn session(addr: &str, user: &str, pw: &str) -> ImapClient {
    let mut c = ImapClient::connect_tls(addr, &TlsClient::insecure())
        .await
        .unwrap();
    let r = c.login(user, pw).await.unwrap();
    assert!(r.is_ok(), "{r}");
    c
}

#[tokio::test]
async fn webmail_logins_reuse_one_backend_login() {
    let (d, proxy, addr, admin) = setup_admin("");
    for i in 0..5 {
        let mut c = session(&addr, "user1", "pass1").await;
        // Each session sees a clean, authenticated (not selected) state.
        let r = c.cmd("FETCH 1 FLAGS").await.unwrap();
        assert!(r.is_bad(), "session {i}: a mailbox stayed selected: {r}");
        let sel = c.select("INBOX").await.unwrap();
        assert!(
            sel.lines.iter().any(|l| l.text().contains("3 EXISTS")),
            "{sel}"
        );
        let body = c.fetch_body(1).await.unwrap();
        assert_eq!(body, d.message("user1", 1));
        let r = c.logout().await.unwrap();
        assert!(r.is_ok());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        logins_eventually(&d, "user1", 1),
        1,
        "one backend login for five client sessions"
    );
    assert_eq!(metric(&admin, "imapmux_backend_reuses_total"), 4.0);
    assert_eq!(metric(&admin, "imapmux_backend_connections_pooled"), 1.0);
    let _ = proxy;
}

#[tokio::test]
async fn reuse_never_crosses_users_passwords_or_live_clients() {
    let (d, _proxy, addr) = setup("");
    let mut c = session(&addr, "user1", "pass1").await;
    c.select("INBOX").await.unwrap();
    c.logout().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Another user: a login of its own, its own mailbox.
    let mut c2 = session(&addr, "user2", "pass2").await;
    c2.select("INBOX").await.unwrap();
    assert_eq!(c2.fetch_body(1).await.unwrap(), d.message("user2", 1));
    assert_eq!(logins_eventually(&d, "user2", 1), 1);
    // The same user with a wrong password: not handed the pooled
    // connection; Dovecot refuses it.
    let mut c3 = ImapClient::connect_tls(&addr, &TlsClient::insecure())
        .await
        .unwrap();
    assert!(c3.login("user1", "wrong").await.unwrap().is_no());
    // Two live clients of user1: one gets the pooled connection, the other a new login.
    let a = session(&addr, "user1", "pass1").await;
    let b = session(&addr, "user1", "pass1").await;
    assert_eq!(logins_eventually(&d, "user1", 2), 2);
    drop((a, b, c2));
}

#[tokio::test]
async fn sessions_that_leave_state_are_not_reused() {
    let (d, _proxy, addr) = setup("");
    let mut c = session(&addr, "user1", "pass1").await;
    c.cmd_ok("ENABLE CONDSTORE").await.unwrap();
    c.logout().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = session(&addr, "user1", "pass1").await;
    // Not enabled here: SELECT shows no HIGHESTMODSEQ.
    let sel = c.select("INBOX").await.unwrap();
    assert!(!sel.to_string().contains("HIGHESTMODSEQ"), "{sel}");
    assert_eq!(logins_eventually(&d, "user1", 2), 2);
    // A pipelined command in flight at LOGOUT: LOGOUT goes to Dovecot.
    c.write_raw(b"x1 NOOP\r\nx2 LOGOUT\r\n").await.unwrap();
    let r = c.read_tagged("x2").await.unwrap();
    assert!(r.is_ok());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _c = session(&addr, "user1", "pass1").await;
    assert_eq!(logins_eventually(&d, "user1", 3), 3);
}

#[tokio::test]
async fn pooled_connections_expire_and_survive_a_backend_restart() {
    let (mut d, _proxy, addr, admin) = setup_admin("reuse_idle = \"1s\"\n");
    let mut c = session(&addr, "user1", "pass1").await;
    c.logout().await.unwrap();
    // Expired (waited for, not slept on: the sweep runs late under load):
    // logged out at Dovecot, a new login next time.
    let expired = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(d.log_path())
            .ok()
            .filter(|log| log.contains("Logged out"))
    });
    assert!(expired.is_some(), "the pooled connection never expired");
    let mut c = session(&addr, "user1", "pass1").await;
    assert_eq!(logins_eventually(&d, "user1", 2), 2);
    c.logout().await.unwrap();
    // Dovecot restarts while a connection is pooled: the probe fails and
    // the next login gets a fresh connection.
    d.restart();
    // (Health checks may mark the backend down for a moment: retry briefly.)
    let mut ok = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let mut c = ImapClient::connect_tls(&addr, &TlsClient::insecure())
            .await
            .unwrap();
        if c.login("user1", "pass1").await.unwrap().is_ok() {
            ok = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = ok.expect("login after the backend restart");
    c.select("INBOX").await.unwrap().ok().unwrap();
    // The second pooled connection failed its probe, or expired first while
    // health checks had the backend down.
    let expired = metric(
        &admin,
        "imapmux_backend_pool_discards_total{reason=\"expired\"}",
    );
    let probe = metric(
        &admin,
        "imapmux_backend_pool_discards_total{reason=\"probe_failed\"}",
    );
    assert!(
        expired >= 1.0 && expired + probe == 2.0,
        "{expired} {probe}"
    );
    assert_eq!(
        metric(&admin, "imapmux_backend_releases_total{result=\"pooled\"}"),
        2.0
    );
    assert_eq!(metric(&admin, "imapmux_backend_reuses_total"), 0.0);
}
