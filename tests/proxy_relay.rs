//! The authenticated relay: byte-exact data both ways (50 MB APPEND,
//! FETCH, COPY, MOVE), literal flow control, IDLE, pipelining.

mod common;

use std::time::Duration;

use common::*;

fn setup(messages: u32) -> (Dovecot, Imapmux, String) {
    let dovecot = Dovecot::builder().messages(messages).start();
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", &dovecot.addr()))
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    (dovecot, proxy, addr)
}

async fn logged_in(addr: &str, user: &str) -> ImapClient {
    let mut c = ImapClient::connect_tls(addr, &TlsClient::insecure())
        .await
        .unwrap();
    c.set_timeout(Duration::from_secs(120));
    let r = c.login(user, &user.replace("user", "pass")).await.unwrap();
    assert!(r.is_ok(), "{r}");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_50mb_byte_exact_both_literal_kinds() {
    let (dovecot, _p, addr) = setup(0);
    let mut c = logged_in(&addr, "user1").await;
    let big = sized_message("big", 50 * 1024 * 1024);
    let r = c.append("INBOX", None, &big).await.unwrap();
    assert!(r.is_ok(), "{r}");
    let uid = r.appended_uid().expect("APPENDUID");
    let r = c
        .append_literal_plus("INBOX", Some("(\\Seen)"), &big[..10 * 1024 * 1024])
        .await
        .unwrap();
    assert!(r.is_ok(), "{r}");
    let uid2 = r.appended_uid().unwrap();
    c.select("INBOX").await.unwrap();
    let back = c.fetch_body(uid).await.unwrap();
    assert!(
        back == big,
        "50 MB message differs after the round trip ({} vs {} bytes)",
        back.len(),
        big.len()
    );
    assert_eq!(c.fetch_body(uid2).await.unwrap(), &big[..10 * 1024 * 1024]);
    // And the backend stored exactly those bytes: compare with a direct fetch.
    let mut d = ImapClient::connect_plain(&dovecot.addr()).await.unwrap();
    d.set_timeout(Duration::from_secs(120));
    assert!(d.login("user1", "pass1").await.unwrap().is_ok());
    d.select("INBOX").await.unwrap();
    assert!(d.fetch_body(uid).await.unwrap() == big);
}

#[tokio::test]
async fn fetch_responses_identical_to_direct() {
    let (dovecot, _p, addr) = setup(5);
    let cmds = [
        "UID FETCH 1:* (UID RFC822.SIZE INTERNALDATE)",
        "UID FETCH 2 (BODYSTRUCTURE ENVELOPE)",
        "UID FETCH 1:5 BODY.PEEK[HEADER.FIELDS (From Subject)]",
        "UID FETCH 2 (BODY.PEEK[1] BODY.PEEK[2.MIME] BINARY.PEEK[1])",
        "UID FETCH 3 BODY.PEEK[]<10.100>",
        "UID SEARCH ALL",
    ];
    let mut via = logged_in(&addr, "user2").await;
    via.select("INBOX").await.unwrap();
    let mut direct = ImapClient::connect_plain(&dovecot.addr()).await.unwrap();
    assert!(direct.login("user2", "pass2").await.unwrap().is_ok());
    direct.select("INBOX").await.unwrap();
    for cmd in cmds {
        let a = via.cmd_ok(cmd).await.unwrap();
        let b = direct.cmd_ok(cmd).await.unwrap();
        // The tagged line's timing text differs run to run: compare the rest.
        let strip = |r: &Response| {
            r.lines
                .iter()
                .flat_map(|l| l.raw.clone())
                .collect::<Vec<u8>>()
        };
        assert_eq!(
            show_bytes(&strip(&a), 4000),
            show_bytes(&strip(&b), 4000),
            "{cmd}"
        );
    }
}

#[tokio::test]
async fn copy_and_move_byte_exact() {
    let (dovecot, _p, addr) = setup(3);
    let mut c = logged_in(&addr, "user1").await;
    c.cmd_ok("CREATE Archive").await.unwrap();
    c.select("INBOX").await.unwrap();
    let r = c.cmd_ok("UID COPY 1 Archive").await.unwrap();
    assert!(r.code("COPYUID").is_some(), "{r}");
    let r = c.cmd_ok("UID MOVE 2 Archive").await.unwrap();
    assert!(r.contains("EXPUNGE") || r.contains("VANISHED"), "{r}");
    c.select("Archive").await.unwrap();
    let r = c.cmd_ok("UID SEARCH ALL").await.unwrap();
    assert!(r.contains("SEARCH 1 2"), "{r}");
    assert_eq!(c.fetch_body(1).await.unwrap(), dovecot.message("user1", 1));
    assert_eq!(c.fetch_body(2).await.unwrap(), dovecot.message("user1", 2));
}

#[tokio::test]
async fn refused_sync_literal_keeps_the_session_in_step() {
    let (_d, _p, addr) = setup(1);
    let mut c = logged_in(&addr, "user1").await;
    // Dovecot refuses the literal at once: the mailbox does not exist.
    let msg = sized_message("x", 2000);
    let r = c.append("NoSuchFolder", None, &msg).await.unwrap();
    assert!(r.is_no(), "{r}");
    assert!(r.code("TRYCREATE").is_some(), "{r}");
    // The next command is a command, not literal data.
    let r = c.cmd("NOOP").await.unwrap();
    assert!(r.is_ok(), "{r}");
    let r = c.append("INBOX", None, &msg).await.unwrap();
    assert!(r.is_ok(), "{r}");
}

#[tokio::test]
async fn commands_pipelined_after_login_reach_the_backend() {
    let (_d, _p, addr) = setup(2);
    let mut c = ImapClient::connect_tls(&addr, &TlsClient::insecure())
        .await
        .unwrap();
    c.write_raw(b"a LOGIN user1 pass1\r\nb SELECT INBOX\r\nc UID FETCH 2 (UID)\r\nd NOOP\r\n")
        .await
        .unwrap();
    assert!(c.read_tagged("a").await.unwrap().is_ok());
    let b = c.read_tagged("b").await.unwrap();
    assert!(b.is_ok() && b.exists() == Some(2), "{b}");
    let r = c.read_tagged("c").await.unwrap();
    assert!(r.contains("UID 2"), "{r}");
    assert!(c.read_tagged("d").await.unwrap().is_ok());
}

#[tokio::test]
async fn idle_sees_a_message_appended_by_another_session() {
    let (dovecot, _p, addr) = setup(1);
    let mut idler = logged_in(&addr, "user3").await;
    idler.select("INBOX").await.unwrap();
    let tag = idler.idle_start().await.unwrap();
    // Another client, through the proxy too, appends a message.
    let mut other = logged_in(&addr, "user3").await;
    let r = other
        .append("INBOX", None, &sized_message("new", 500))
        .await
        .unwrap();
    assert!(r.is_ok());
    let line = idler
        .idle_wait_for("EXISTS", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(line.text().contains("* 2 EXISTS"), "{}", line.text());
    // And a delivery through dovecot's own LDA.
    dovecot.deliver("user3", &sized_message("lda", 300));
    let line = idler
        .idle_wait_for("EXISTS", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(line.text().contains("* 3 EXISTS"), "{}", line.text());
    let r = idler.idle_done(&tag).await.unwrap();
    assert!(r.is_ok(), "{r}");
}

#[tokio::test]
async fn compress_is_refused_by_the_proxy_when_turned_off() {
    let dovecot = Dovecot::builder().messages(1).start();
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", &dovecot.addr()))
        .server_key("compress", "false")
        .to_toml();
    let _p = Imapmux::start(&cfg, &addr);
    let mut c = ImapClient::connect_tls(&addr, &TlsClient::insecure())
        .await
        .unwrap();
    let r = c.login("user1", "pass1").await.unwrap();
    assert!(
        !r.capabilities().iter().any(|c| c.starts_with("COMPRESS")),
        "{r}"
    );
    let r = c.cmd("COMPRESS DEFLATE").await.unwrap();
    assert!(r.is_no() && r.code("CANNOT").is_some(), "{r}");
    // Still speaking plain IMAP.
    c.select("INBOX").await.unwrap();
}
