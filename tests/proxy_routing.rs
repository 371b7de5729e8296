//! Routing with two real Dovecots: static map, consistent hashing that two
//! independent imapmux instances agree on, health checks, and failover on
//! and off when a backend goes down.

mod common;

use std::time::Duration;

use common::*;

const USERS: u32 = 12;

fn two_dovecots() -> (Dovecot, Dovecot) {
    let users = |b: DovecotBuilder| {
        let mut b = b.clear_users();
        for i in 1..=USERS {
            b = b.user(&format!("user{i}"), &format!("pass{i}"));
        }
        b
    };
    (
        users(Dovecot::builder()).start(),
        users(Dovecot::builder()).start(),
    )
}

fn proxy(d1: &Dovecot, d2: &Dovecot, failover: bool, routes: &[(&str, &str)]) -> (Imapmux, String) {
    let addr = free_addr();
    let mut cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .health("300ms", "1s", 1, 1)
        .pool(
            PoolCfg::new(
                "default",
                vec![
                    BackendCfg::new("b1", &d1.addr()),
                    BackendCfg::new("b2", &d2.addr()),
                ],
            )
            .failover(failover),
        );
    for (u, b) in routes {
        cfg = cfg.route(u, b);
    }
    let p = Imapmux::start(&cfg.to_toml(), &addr);
    (p, addr)
}

/// Log in as `user` through `addr`; the backend is identified by which
/// Dovecot logged the login.
async fn login(addr: &str, user: &str) -> Response {
    let mut c = ImapClient::connect_tls(addr, &TlsClient::insecure())
        .await
        .unwrap();
    let pass = user.replace("user", "pass");
    let r = c.login(user, &pass).await.unwrap();
    let _ = c.logout().await;
    r
}

fn backend_of(d1: &Dovecot, d2: &Dovecot, user: &str) -> Option<&'static str> {
    let in1 = !d1.login_lines(user).is_empty();
    let in2 = !d2.login_lines(user).is_empty();
    match (in1, in2) {
        (true, false) => Some("b1"),
        (false, true) => Some("b2"),
        _ => None,
    }
}

#[tokio::test]
async fn hashing_is_stable_across_two_proxy_instances_and_spreads_users() {
    let (d1, d2) = two_dovecots();
    let (_p1, a1) = proxy(&d1, &d2, false, &[]);
    let (_p2, a2) = proxy(&d1, &d2, false, &[]);
    let mut placed = Vec::new();
    for i in 1..=USERS {
        let user = format!("user{i}");
        // Alternate the proxy instance used for the first login.
        let (first, second) = if i % 2 == 0 { (&a1, &a2) } else { (&a2, &a1) };
        assert!(login(first, &user).await.is_ok());
        let b = wait_until(Duration::from_secs(5), || backend_of(&d1, &d2, &user))
            .unwrap_or_else(|| panic!("{user} not placed"));
        assert!(login(second, &user).await.is_ok());
        // Still only on the same backend after the other instance's login.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            backend_of(&d1, &d2, &user),
            Some(b),
            "{user} moved between instances"
        );
        assert_eq!(d1.login_lines(&user).len() + d2.login_lines(&user).len(), 2);
        placed.push(b);
    }
    let on_b1 = placed.iter().filter(|b| **b == "b1").count();
    assert!(
        on_b1 > 0 && on_b1 < USERS as usize,
        "all users on one backend: {placed:?}"
    );
}

#[tokio::test]
async fn static_map_overrides_hashing() {
    let (d1, d2) = two_dovecots();
    // Find where user5 hashes, then map it to the other backend.
    let (p, a) = proxy(&d1, &d2, false, &[]);
    assert!(login(&a, "user5").await.is_ok());
    let hashed = wait_until(Duration::from_secs(5), || backend_of(&d1, &d2, "user5")).unwrap();
    drop(p);
    let other = if hashed == "b1" { "b2" } else { "b1" };
    let (_p, a) = proxy(&d1, &d2, false, &[("USER5", other)]);
    assert!(login(&a, "user5").await.is_ok());
    let target = if other == "b1" { &d1 } else { &d2 };
    assert!(wait_until(Duration::from_secs(5), || (target
        .login_lines("user5")
        .len()
        == 1)
        .then_some(()))
    .is_some());
}

/// Find a user whose hashed backend is `b1` (by logging in once).
async fn user_on_b1(d1: &Dovecot, d2: &Dovecot, addr: &str) -> String {
    for i in 1..=USERS {
        let user = format!("user{i}");
        assert!(login(addr, &user).await.is_ok());
        if wait_until(Duration::from_secs(5), || backend_of(d1, d2, &user)).unwrap() == "b1" {
            return user;
        }
    }
    panic!("no user hashes to b1");
}

#[tokio::test]
async fn backend_down_failover_off_answers_unavailable() {
    let (mut d1, d2) = two_dovecots();
    let (p, a) = proxy(&d1, &d2, false, &[]);
    let user = user_on_b1(&d1, &d2, &a).await;
    d1.stop();
    assert!(
        p.wait_for_log("backend is down", Duration::from_secs(10)),
        "{}",
        p.log()
    );
    let r = login(&a, &user).await;
    assert!(r.is_no(), "{r}");
    assert!(r.code("UNAVAILABLE").is_some(), "{r}");
    assert!(
        d2.login_lines(&user).is_empty(),
        "user was sent to a backend without its mail"
    );
    // Back up: the user returns to its own backend.
    d1.restart();
    assert!(
        p.wait_for_log("backend is up", Duration::from_secs(10)),
        "{}",
        p.log()
    );
    assert!(login(&a, &user).await.is_ok());
}

#[tokio::test]
async fn backend_down_failover_on_rehashes() {
    let (mut d1, d2) = two_dovecots();
    let (p, a) = proxy(&d1, &d2, true, &[]);
    let user = user_on_b1(&d1, &d2, &a).await;
    d1.stop();
    // Even before the health check notices, a failed connect moves on.
    let r = login(&a, &user).await;
    assert!(r.is_ok(), "{r}");
    assert_eq!(d2.login_lines(&user).len(), 1);
    assert!(
        p.wait_for_log("backend is down", Duration::from_secs(10)),
        "{}",
        p.log()
    );
    let r = login(&a, &user).await;
    assert!(r.is_ok(), "{r}");
    // Every backend down: UNAVAILABLE.
    drop(d2);
    std::thread::sleep(Duration::from_millis(1500));
    let r = login(&a, &user).await;
    assert!(r.is_no() && r.code("UNAVAILABLE").is_some(), "{r}");
}
