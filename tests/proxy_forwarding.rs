//! A trusted webmail's (or proxy's) own pre-login ID (issue 15, item 5):
//! imapmux forwards the address of the client behind it to Dovecot in
//! place of the webmail's, and counts proxy hops (`x-proxy-ttl`) so that
//! a routing loop between proxies ends with a clear refusal.

mod common;

use std::time::Duration;

use common::*;

fn setup(trusted: &str) -> (Dovecot, Imapmux, String) {
    let d = Dovecot::builder().rawlog().messages(1).start();
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "plaintext")
        .allow_plaintext_auth(true)
        .backend(BackendCfg::new("b1", &d.addr()).trusted(true))
        .server_key("trusted_networks", trusted)
        .to_toml();
    let p = Imapmux::start(&cfg, &addr);
    (d, p, addr)
}

#[tokio::test]
async fn a_trusted_webmails_id_forwards_the_client_behind_it() {
    let (d, _p, addr) = setup("[\"127.0.0.0/8\"]");
    // The webmail says who its user is, then logs in.
    let mut c = ImapClient::connect_plain(&addr).await.unwrap();
    c.cmd_ok("ID (\"name\" \"Roundcube\" \"x-originating-ip\" \"198.51.100.23\" \"x-originating-port\" \"50123\" \"x-proxy-ttl\" \"3\")")
        .await
        .unwrap();
    c.login("user2", "pass2").await.unwrap().ok().unwrap();
    c.logout().await.unwrap();
    let lines = d.wait_for_logins("user2", 1, Duration::from_secs(10));
    assert_eq!(
        log_field(&lines[0], "rip").as_deref(),
        Some("198.51.100.23"),
        "{lines:?}"
    );
    // At the end of a loop: refused before any backend login, named.
    let mut c = ImapClient::connect_plain(&addr).await.unwrap();
    c.cmd_ok("ID (\"x-proxy-ttl\" \"1\")").await.unwrap();
    let r = c.login("user3", "pass3").await.unwrap();
    assert!(!r.is_ok());
    assert!(
        r.tagged.text().contains("NO [UNAVAILABLE] Proxying loops"),
        "{r}"
    );
    assert!(d.login_rips("user3").is_empty());
}

#[tokio::test]
async fn an_untrusted_clients_id_changes_nothing() {
    let (d, _p, addr) = setup("[\"10.0.0.0/8\"]");
    let mut c = ImapClient::connect_plain(&addr).await.unwrap();
    c.cmd_ok("ID (\"x-originating-ip\" \"198.51.100.23\" \"x-proxy-ttl\" \"1\")")
        .await
        .unwrap();
    c.login("user2", "pass2").await.unwrap().ok().unwrap();
    c.logout().await.unwrap();
    let lines = d.wait_for_logins("user2", 1, Duration::from_secs(10));
    assert_eq!(
        log_field(&lines[0], "rip").as_deref(),
        Some("127.0.0.1"),
        "{lines:?}"
    );
}

/// A route that loops (imapmux's backend is imapmux itself): every hop
/// forwards one hop fewer, the fifth refuses, the client gets a NO, and
/// nothing spins.
#[tokio::test]
async fn a_routing_loop_between_proxies_ends_with_a_refusal() {
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "plaintext")
        .allow_plaintext_auth(true)
        .backend(BackendCfg::new("self", &addr).trusted(true))
        .server_key("trusted_networks", "[\"127.0.0.0/8\"]")
        .no_address_limits()
        .to_toml();
    let p = Imapmux::start(&cfg, &addr);
    let mut c = ImapClient::connect_plain(&addr).await.unwrap();
    c.set_timeout(Duration::from_secs(30));
    let r = c.login("user1", "pass1").await.unwrap();
    assert!(!r.is_ok(), "{r}");
    assert!(p.wait_for_log("proxying loops", Duration::from_secs(10)));
    assert_eq!(p.log().matches("proxying loops").count(), 1, "{}", p.log());
}
