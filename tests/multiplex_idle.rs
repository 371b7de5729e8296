//! IDLE offload against a real Dovecot: a client idling long enough is
//! parked (its backend connection released); changes made meanwhile by
//! other sessions reach it with the sequence numbers it would have seen
//! attached; DONE re-attaches it; many parked clients share a handful of
//! backend connections.

mod common;

use std::time::Duration;

use common::*;

fn metric(admin: &str, series: &str) -> f64 {
    let out = run_curl(&[&format!("http://{admin}/metrics")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
}

fn wait_metric(admin: &str, series: &str, want: f64, timeout: Duration) {
    let ok = wait_until(timeout, || (metric(admin, series) == want).then_some(()));
    assert!(
        ok.is_some(),
        "{series} never became {want} (is {})",
        metric(admin, series)
    );
}

struct Setup {
    d: Dovecot,
    proxy: Imapmux,
    addr: String,
    admin: String,
}

fn setup(clients: u32) -> Setup {
    let d = Dovecot::builder()
        .messages(5)
        .max_clients(clients + 50)
        .start();
    let addr = free_addr();
    let admin = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "plaintext")
        .allow_plaintext_auth(true)
        .backend(BackendCfg::new("b1", &d.addr()))
        .admin(&admin)
        .extra("[multiplex]\nidle_offload_after = \"1s\"\npoll_interval = \"300ms\"\n")
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    Setup {
        d,
        proxy,
        addr,
        admin,
    }
}

async fn direct(d: &Dovecot, user: &str) -> ImapClient {
    let mut c = ImapClient::connect_plain(&d.addr()).await.unwrap();
    c.login(user, &format!("pass{}", &user[4..]))
        .await
        .unwrap()
        .ok()
        .unwrap();
    c.select("INBOX").await.unwrap().ok().unwrap();
    c
}

#[tokio::test]
async fn parked_client_sees_changes_with_the_right_numbers() {
    let s = setup(10);
    let mut c = ImapClient::connect_plain(&s.addr).await.unwrap();
    c.login("user1", "pass1").await.unwrap().ok().unwrap();
    c.select("INBOX").await.unwrap().ok().unwrap();
    let tag = c.idle_start().await.unwrap();
    wait_metric(
        &s.admin,
        "imapmux_client_sessions_parked",
        1.0,
        Duration::from_secs(5),
    );

    // New mail from another session: EXISTS within the poll bound.
    let mut other = direct(&s.d, "user1").await;
    let t0 = std::time::Instant::now();
    other
        .append("INBOX", None, b"Subject: new\r\n\r\nhello\r\n")
        .await
        .unwrap();
    let l = c
        .idle_wait_for("EXISTS", Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(l.text(), "* 6 EXISTS");
    eprintln!(
        "new mail reached the parked client after {:?}",
        t0.elapsed()
    );

    // Flag change on UID 2 and expunge of UID 3 (sequence 3 for the client).
    other
        .cmd_ok("UID STORE 2 +FLAGS (\\Flagged)")
        .await
        .unwrap();
    other
        .cmd_ok("UID STORE 3 +FLAGS (\\Deleted)")
        .await
        .unwrap();
    other.cmd_ok("EXPUNGE").await.unwrap();
    let lines = c.read_responses_for(Duration::from_secs(2)).await.unwrap();
    let texts: Vec<String> = lines.iter().map(|l| l.text()).collect();
    assert!(texts.contains(&"* 3 EXPUNGE".to_string()), "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("* 2 FETCH (FLAGS (") && t.contains("\\Flagged")),
        "{texts:?}"
    );
    assert!(texts.iter().all(|t| !t.contains("MODSEQ")), "{texts:?}");

    // More changes, then DONE: caught up before the tagged OK.
    other
        .cmd_ok("UID STORE 1 +FLAGS (\\Deleted)")
        .await
        .unwrap();
    other.cmd_ok("EXPUNGE").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = c.idle_done(&tag).await.unwrap();
    assert!(r.is_ok(), "{r}");
    // Sequence numbers agree with Dovecot's: UIDs 2,4,5,6 at 1..4.
    let r = c.cmd_ok("FETCH 1:* (UID)").await.unwrap();
    let uids: Vec<String> = r.untagged().map(|l| l.text()).collect();
    assert_eq!(
        uids,
        vec![
            "* 1 FETCH (UID 2)",
            "* 2 FETCH (UID 4)",
            "* 3 FETCH (UID 5)",
            "* 4 FETCH (UID 6)"
        ],
        "{r}"
    );
    assert_eq!(metric(&s.admin, "imapmux_client_sessions_parked"), 0.0);
    assert!(metric(&s.admin, "imapmux_wakes_total{cause=\"done\"}") >= 1.0);
    let _ = &s.proxy;
}
