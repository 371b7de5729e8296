//! PROXY protocol v1/v2 on a listener: the real client address reaches the
//! backend (Dovecot logs it), untrusted sources and bad headers are refused.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn setup(trusted: &str) -> (Dovecot, Imapmux, String) {
    let dovecot = Dovecot::start();
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .backend(BackendCfg::new("b1", &dovecot.addr()))
        .extra(&format!(
            "[[listener]]\naddress = \"{addr}\"\nmode = \"implicit\"\nproxy_protocol = true\ntrusted_proxies = [\"{trusted}\"]\n"
        ))
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    (dovecot, proxy, addr)
}

fn v2_header(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11]); // v2 PROXY, TCP over IPv4
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h
}

async fn login_with_header(addr: &str, header: &[u8]) -> anyhow::Result<Response> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(header).await?;
    let mut c = ImapClient::from_tcp_tls(tcp, &TlsClient::insecure()).await?;
    c.login("user1", "pass1").await
}

#[tokio::test]
async fn real_client_address_reaches_the_backend_v1_and_v2() {
    let (dovecot, proxy, addr) = setup("127.0.0.0/8");
    let r = login_with_header(&addr, b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 993\r\n")
        .await
        .unwrap();
    assert!(r.is_ok(), "{r}");
    let r = login_with_header(
        &addr,
        &v2_header([198, 51, 100, 9], 4444, [127, 0, 0, 1], 993),
    )
    .await
    .unwrap();
    assert!(r.is_ok(), "{r}");
    // Dovecot logs the logins a moment after the OK: wait for both.
    wait_until(Duration::from_secs(10), || {
        let rips = dovecot.login_rips("user1");
        (rips.iter().any(|r| r == "203.0.113.7") && rips.iter().any(|r| r == "198.51.100.9"))
            .then_some(())
    });
    let rips = dovecot.login_rips("user1");
    assert!(rips.iter().any(|r| r == "203.0.113.7"), "{rips:?}");
    assert!(rips.iter().any(|r| r == "198.51.100.9"), "{rips:?}");
    // imapmux's own session log shows the real client too
    assert!(
        proxy.wait_for_log("client=203.0.113.7:5555", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
}

#[tokio::test]
async fn untrusted_source_and_bad_header_are_refused() {
    // Only 127.0.0.2 may send PROXY headers; the test connects from 127.0.0.1.
    let (dovecot, proxy, addr) = setup("127.0.0.2/32");
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 993\r\n")
        .await
        .unwrap();
    let mut c = ImapClient::from_tcp_raw(tcp);
    let rest = c.expect_closed(Duration::from_secs(5)).await.unwrap();
    assert!(
        rest.is_empty(),
        "untrusted source got data: {}",
        show_bytes(&rest, 200)
    );
    assert!(
        proxy.wait_for_log("not in trusted_proxies", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );

    let (_d2, proxy2, addr2) = setup("127.0.0.0/8");
    let mut tcp = TcpStream::connect(&addr2).await.unwrap();
    tcp.write_all(b"HELLO not a proxy header\r\n")
        .await
        .unwrap();
    let mut c = ImapClient::from_tcp_raw(tcp);
    let rest = c.expect_closed(Duration::from_secs(5)).await.unwrap();
    assert!(rest.is_empty(), "{}", show_bytes(&rest, 200));
    assert!(
        proxy2.wait_for_log("invalid PROXY protocol header", Duration::from_secs(5)),
        "{}",
        proxy2.log()
    );
    assert!(dovecot.login_lines("user1").is_empty());
}

#[test]
fn check_config_requires_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[tls]\nself_signed = true\n[[listener]]\naddress = \"127.0.0.1:1993\"\nmode = \"implicit\"\nproxy_protocol = true\n[[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b\"\naddress = \"127.0.0.1:10143\"\n",
    )
    .unwrap();
    let out = imapmux_command()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listener[0].trusted_proxies"));
}
