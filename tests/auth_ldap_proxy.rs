//! The LDAP auth source end to end: the real imapmux binary verifies
//! logins against a real OpenLDAP (slapd) and logs users in to the real
//! Dovecot their `mailHost` names, as their `mailRoutingAddress`.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn ldap_routes_users_into_dovecot() {
    let d1 = Dovecot::builder().start();
    let d2 = Dovecot::builder().start();
    let mut slapd = Slapd::builder()
        // alice: on backend "b2" (by name), as user3 there.
        .entry(
            LdapUser::new("alice", "pass3")
                .mail_host("b2")
                .backend_user("user3"),
        )
        // bob: on d1 by address, as user4.
        .entry(
            LdapUser::new("bob", "pass4")
                .mail_host(&d1.addr())
                .backend_user("user4"),
        )
        // carol: on a host imapmux does not know.
        .entry(LdapUser::new("carol", "pass5").mail_host("mail9.example.org"))
        .start();
    for (mode, keys) in [
        ("direct bind", slapd.ldap_config_direct()),
        ("search then bind", slapd.ldap_config_search()),
    ] {
        let addr = free_addr();
        let cfg = ProxyConfig::new()
            .listener(&addr, "implicit")
            .backend(BackendCfg::new("b1", &d1.addr()))
            .backend(BackendCfg::new("b2", &d2.addr()))
            .route("user1", "b1")
            .extra(&slapd.auth_section(&keys))
            .extra("[auth.penalty]\nenabled = false\n")
            .to_toml();
        let proxy = Imapmux::start(&cfg, &addr);
        let tls = TlsClient::insecure();
        let login = |u: &'static str, p: &'static str| {
            let (addr, tls) = (addr.clone(), tls.clone());
            async move {
                let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
                let r = c.login(u, p).await.unwrap();
                if r.is_ok() {
                    c.select("INBOX").await.unwrap().ok().unwrap();
                    c.logout().await.unwrap();
                }
                r
            }
        };
        let r = login("alice", "pass3").await;
        assert!(r.is_ok(), "{mode}: {r}\n{}", proxy.log());
        assert!(std::fs::read_to_string(d2.log_path())
            .unwrap()
            .contains("user=<user3>"));
        assert!(!std::fs::read_to_string(d1.log_path())
            .unwrap()
            .contains("user=<user3>"));
        let r = login("bob", "pass4").await;
        assert!(r.is_ok(), "{mode}: {r}");
        assert!(std::fs::read_to_string(d1.log_path())
            .unwrap()
            .contains("user=<user4>"));
        // No mailHost: the routing table places user1.
        assert!(login("user1", "pass1").await.is_ok(), "{mode}");
        // Wrong password, unknown user, injection: refused by imapmux.
        for (u, p) in [
            ("alice", "pass4"),
            ("nobody", "x"),
            ("*", "pass3"),
            ("a)(uid=*", "pass3"),
        ] {
            let r = login(u, p).await;
            assert!(
                r.is_no() && r.text.contains("[AUTHENTICATIONFAILED]"),
                "{mode} {u}: {r}"
            );
        }
        // mailHost names no configured backend: UNAVAILABLE and a clear log line.
        let r = login("carol", "pass5").await;
        assert!(r.is_no() && r.text.contains("[UNAVAILABLE]"), "{mode}: {r}");
        assert!(proxy.wait_for_log("not configured", Duration::from_secs(2)));
        assert!(!proxy.log().contains("pass3"));
    }

    // The directory goes down: NO [UNAVAILABLE] within the 2 s timeout.
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", &d1.addr()))
        .backend(BackendCfg::new("b2", &d2.addr()))
        .extra(&slapd.auth_section(&slapd.ldap_config_direct()))
        .extra("[auth.cache]\nenabled = false\n")
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    let tls = TlsClient::insecure();
    slapd.kill();
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let t0 = Instant::now();
    let r = c.login("alice", "pass3").await.unwrap();
    assert!(r.is_no() && r.text.contains("[UNAVAILABLE]"), "{r}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert!(proxy.wait_for_log("auth source failed", Duration::from_secs(2)));
}
