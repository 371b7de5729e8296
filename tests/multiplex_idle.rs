//! IDLE offload against a real Dovecot: a client idling long enough is
//! parked (its backend connection released); changes made meanwhile by
//! other sessions reach it with the sequence numbers it would have seen
//! attached; DONE re-attaches it; many parked clients share a handful of
//! backend connections.

mod common;

use std::time::Duration;

use common::*;

fn metric(admin: &str, series: &str) -> f64 {
    admin_metric(admin, series)
}

fn wait_metric(admin: &str, series: &str, want: f64, timeout: Duration) {
    wait_admin_metric(admin, series, want, timeout)
}

/// `n` clients of the five users, each logged in, INBOX selected, idling;
/// with the tag of its IDLE.
async fn idle_clients(s: &Setup, n: u32) -> Vec<(ImapClient, String)> {
    let mut clients = Vec::new();
    for i in 0..n {
        let u = i % 5 + 1;
        let c = ImapClient::connect_plain(&s.addr).await.unwrap();
        clients.push(idling(c, &format!("user{u}"), &format!("pass{u}")).await);
    }
    clients
}

/// `n` parked clients (see [`idle_clients`]), re-attaching four at a time.
async fn parked_clients(n: u32, within: Duration) -> (Setup, Vec<(ImapClient, String)>) {
    let s = setup_full(
        Dovecot::builder().messages(5).max_clients(n + 50),
        "max_concurrent_resumes = 4\n",
    );
    let clients = idle_clients(&s, n).await;
    wait_metric(&s.admin, "imapmux_client_sessions_parked", n as f64, within);
    (s, clients)
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
    // Delivered while still idling (the watcher's next poll).
    let l = c
        .idle_wait_for("EXPUNGE", Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(l.text(), "* 1 EXPUNGE");
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

#[tokio::test]
async fn backend_restart_while_parked() {
    let mut s = setup(10);
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

    // Dovecot restarts while user1 is parked; new mail still arrives and
    // DONE re-attaches with a fresh login.
    s.d.restart();
    let mut other = direct(&s.d, "user1").await;
    other
        .append("INBOX", None, b"Subject: after restart\r\n\r\nx\r\n")
        .await
        .unwrap();
    let l = c
        .idle_wait_for("EXISTS", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(l.text(), "* 6 EXISTS");
    let r = c.idle_done(&tag).await.unwrap();
    assert!(r.is_ok(), "{r}");
    let r = c.cmd_ok("UID FETCH 6 (UID)").await.unwrap();
    assert!(r.untagged().any(|l| l.text() == "* 6 FETCH (UID 6)"), "{r}");
}

#[tokio::test]
async fn a_thousand_parked_clients_on_a_handful_of_backend_connections() {
    let n: u32 = std::env::var("PARK_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let s = setup(n);
    let mut clients = Vec::new();
    for i in 0..n {
        let user = format!("user{}", i % 5 + 1);
        let pw = format!("pass{}", i % 5 + 1);
        let mut c = ImapClient::connect_plain(&s.addr).await.unwrap();
        c.login(&user, &pw).await.unwrap().ok().unwrap();
        c.select("INBOX").await.unwrap().ok().unwrap();
        let tag = c.idle_start().await.unwrap();
        clients.push((c, tag));
    }
    let parked = wait_until(Duration::from_secs(60), || {
        (metric(&s.admin, "imapmux_client_sessions_parked") == n as f64).then_some(())
    });
    if parked.is_none() {
        let log = s.proxy.log();
        std::fs::write("/tmp/park.log", &log).unwrap();
        std::fs::write(
            "/tmp/park-dovecot.log",
            std::fs::read(s.d.log_path()).unwrap(),
        )
        .unwrap();
        let warn: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("not parking"))
            .take(20)
            .collect();
        panic!(
            "parked: {} (log: {} parked, {} ended, {} logins)\n{}",
            metric(&s.admin, "imapmux_client_sessions_parked"),
            log.matches(" parked ").count(),
            log.matches("session ended").count(),
            log.matches(" login ").count(),
            warn.join("\n")
        );
    }
    // Backend connections now: the five users' watchers only (none in use
    // by a client).
    let watchers = metric(&s.admin, "imapmux_backend_watchers");
    let in_use = metric(&s.admin, "imapmux_backend_connections_open{backend=\"b1\"}");
    eprintln!(
        "{n} parked clients: {watchers} watcher connections, {in_use} client backend connections"
    );
    assert!(watchers <= 5.0, "{watchers}");
    assert_eq!(in_use, 0.0);
    // Dovecot agrees: its imap processes (sessions) are about the watchers.
    let out = std::process::Command::new(require_tool("doveadm"))
        .args(["-c", s.d.conf_path().to_str().unwrap(), "who", "-1"])
        .output()
        .unwrap();
    let who = String::from_utf8_lossy(&out.stdout).into_owned();
    let sessions = who.lines().filter(|l| l.contains("imap")).count();
    eprintln!("doveadm who: {sessions} sessions");
    assert!(sessions <= 10, "{who}");
    // New mail for user3 reaches all of user3's 200 parked clients.
    let mut other = direct(&s.d, "user3").await;
    other
        .append("INBOX", None, b"Subject: all\r\n\r\nx\r\n")
        .await
        .unwrap();
    for (i, (c, _)) in clients.iter_mut().enumerate() {
        if i % 5 == 2 {
            let l = c
                .idle_wait_for("EXISTS", Duration::from_secs(10))
                .await
                .unwrap();
            assert_eq!(l.text(), "* 6 EXISTS");
        }
    }
}

#[tokio::test]
async fn push_wakes_parked_clients_without_polling() {
    const SECRET: &str = "push-secret-for-tests";
    let admin = free_addr();
    let d = Dovecot::builder()
        .messages(2)
        .lua_push(&format!("http://{admin}/push"), SECRET)
        .start();
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "plaintext")
        .allow_plaintext_auth(true)
        .backend(BackendCfg::new("b1", &d.addr()))
        .extra(&format!(
            "[admin]\naddress = {}\npush_secret = {}\n[multiplex]\nidle_offload_after = \"1s\"\npoll_interval = \"0s\"\n",
            toml_str(&admin),
            toml_str(SECRET)
        ))
        .to_toml();
    let _proxy = Imapmux::start(&cfg, &addr);
    let mut c = ImapClient::connect_plain(&addr).await.unwrap();
    c.login("user1", "pass1").await.unwrap().ok().unwrap();
    c.select("INBOX").await.unwrap().ok().unwrap();
    let tag = c.idle_start().await.unwrap();
    wait_metric(
        &admin,
        "imapmux_client_sessions_parked",
        1.0,
        Duration::from_secs(5),
    );
    let mut other = direct(&d, "user1").await;
    let mut took = Vec::new();
    for i in 0..20u32 {
        let t0 = std::time::Instant::now();
        other
            .append("INBOX", None, b"Subject: pushed\r\n\r\nx\r\n")
            .await
            .unwrap();
        let l = c
            .idle_wait_for("EXISTS", Duration::from_secs(5))
            .await
            .unwrap();
        took.push(t0.elapsed());
        assert_eq!(l.text(), format!("* {} EXISTS", 3 + i));
    }
    took.sort();
    eprintln!(
        "push new-mail latency over 20 appends: p50 {:?}, max {:?}",
        took[10], took[19]
    );
    assert!(took[19] < Duration::from_secs(2), "{took:?}");
    assert!(metric(&admin, "imapmux_wakes_total{cause=\"push\"}") >= 20.0);
    assert_eq!(metric(&admin, "imapmux_wakes_total{cause=\"poll\"}"), 0.0);
    assert!(c.idle_done(&tag).await.unwrap().is_ok());
}

#[tokio::test]
async fn without_condstore_flags_are_compared() {
    // Dovecot announcing no CONDSTORE/QRESYNC after login: imapmux keeps
    // every message's flags for the parked client and compares them.
    let s = setup_with(Dovecot::builder().messages(5).extra_config(
        "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT LITERAL+ UNSELECT ESEARCH UIDPLUS MOVE NAMESPACE\n",
    ));
    let mut c = ImapClient::connect_plain(&s.addr).await.unwrap();
    let r = c.login("user1", "pass1").await.unwrap().ok().unwrap();
    assert!(!r.text.contains("CONDSTORE"), "{r}");
    c.select("INBOX").await.unwrap().ok().unwrap();
    let tag = c.idle_start().await.unwrap();
    wait_metric(
        &s.admin,
        "imapmux_client_sessions_parked",
        1.0,
        Duration::from_secs(5),
    );
    let mut other = direct(&s.d, "user1").await;
    flag_expunge_append(&mut other, (4, "\\Answered"), 2).await;
    let lines = c.read_responses_for(Duration::from_secs(2)).await.unwrap();
    let texts: Vec<String> = lines.iter().map(|l| l.text()).collect();
    assert!(texts.contains(&"* 2 EXPUNGE".to_string()), "{texts:?}");
    assert!(texts.contains(&"* 5 EXISTS".to_string()), "{texts:?}");
    // Only UID 4 changed flags: reported first (as Dovecot reports a flag
    // change before the expunge that followed it), so with its sequence
    // number before the expunge, 4.
    let fetches: Vec<&String> = texts.iter().filter(|t| t.contains("FETCH")).collect();
    assert_eq!(fetches.len(), 1, "{texts:?}");
    assert!(
        fetches[0].starts_with("* 4 FETCH (FLAGS (") && fetches[0].contains("\\Answered"),
        "{texts:?}"
    );
    let at = |needle: &str| texts.iter().position(|t| t.contains(needle));
    assert!(at("FETCH") < at("EXPUNGE"), "{texts:?}");
    assert!(c.idle_done(&tag).await.unwrap().is_ok());
    let r = c.cmd_ok("FETCH 1:* (UID)").await.unwrap();
    let uids: Vec<String> = r.untagged().map(|l| l.text()).collect();
    assert_eq!(uids.len(), 5, "{r}");
    assert_eq!(uids[1], "* 2 FETCH (UID 3)");
}

#[tokio::test]
async fn many_clients_ending_idle_at_once_resume_in_turns() {
    let n = 100;
    let (s, mut clients) = parked_clients(n, Duration::from_secs(30)).await;
    // All DONE at the same moment: every one answered, none refused, and
    // nobody needs the backend for it (they stay parked).
    for (c, _) in clients.iter_mut() {
        c.write_raw(b"DONE\r\n").await.unwrap();
    }
    for (c, tag) in clients.iter_mut() {
        let r = c.read_tagged(tag).await.unwrap();
        assert!(r.is_ok(), "{r}");
    }
    assert_eq!(metric(&s.admin, "imapmux_client_sessions_parked"), n as f64);
    assert_eq!(
        metric(&s.admin, "imapmux_wakes_total{cause=\"done\"}"),
        n as f64
    );
    // Then all at once a command that needs the backend: re-attached in
    // turns (four at a time), every one answered.
    for (c, _) in clients.iter_mut() {
        c.write_raw(b"f UID FETCH 1 (UID)\r\n").await.unwrap();
    }
    for (c, _) in clients.iter_mut() {
        let r = c.read_tagged("f").await.unwrap();
        assert!(
            r.is_ok() && r.lines.iter().any(|l| l.text() == "* 1 FETCH (UID 1)"),
            "{r}"
        );
    }
    assert_eq!(metric(&s.admin, "imapmux_client_sessions_parked"), 0.0);
    assert_eq!(metric(&s.admin, "imapmux_reattaches_total"), n as f64);
}

/// The refresh cycle of a real client, with a change in the middle:
/// IDLE, DONE, NOOP, CHECK, IDLE (new mail arrives), DONE, NOOP.
async fn refresh_cycle(
    c: &mut ImapClient,
    d: &Dovecot,
    user: &str,
    parked: Option<&str>,
) -> String {
    let mut log = String::new();
    let tag = c.idle_start().await.unwrap();
    if let Some(admin) = parked {
        wait_metric(
            admin,
            "imapmux_client_sessions_parked",
            1.0,
            Duration::from_secs(5),
        );
    }
    log.push_str(&normalized(&c.idle_done(&tag).await.unwrap()));
    log.push_str(&normalized(&c.cmd("NOOP").await.unwrap()));
    log.push_str(&normalized(&c.cmd("CHECK").await.unwrap()));
    let tag = c.idle_start().await.unwrap();
    let mut other = direct(d, user).await;
    other
        .append("INBOX", None, b"Subject: refresh\r\n\r\nnew\r\n")
        .await
        .unwrap();
    let l = c
        .idle_wait_for("EXISTS", Duration::from_secs(5))
        .await
        .unwrap();
    log.push_str(&format!("{}\n", l.text()));
    log.push_str(&normalized(&c.idle_done(&tag).await.unwrap()));
    log.push_str(&normalized(&c.cmd("NOOP").await.unwrap()));
    log
}

#[tokio::test]
async fn a_parked_session_refreshes_without_the_backend_and_parks_every_time() {
    let s = setup(10);
    let mut c = ImapClient::connect_plain(&s.addr).await.unwrap();
    c.login("user1", "pass1").await.unwrap().ok().unwrap();
    c.select("INBOX").await.unwrap().ok().unwrap();
    // Direct Dovecot, same cycle, for the byte comparison.
    let mut d = direct(&s.d, "user2").await;
    let want = refresh_cycle(&mut d, &s.d, "user2", None).await;
    let got = refresh_cycle(&mut c, &s.d, "user1", Some(&s.admin)).await;
    assert_eq!(got, want);
    // The whole cycle ran parked: no re-attach, one park.
    assert_eq!(metric(&s.admin, "imapmux_reattaches_total"), 0.0);
    assert_eq!(metric(&s.admin, "imapmux_parks_total"), 1.0);
    assert_eq!(metric(&s.admin, "imapmux_client_sessions_parked"), 1.0);
    // A command that needs the backend re-attaches, with the right numbers.
    let r = c.cmd_ok("FETCH 6 (UID)").await.unwrap();
    assert_eq!(
        normalized(&r).lines().next(),
        Some("* 6 FETCH (UID 6)"),
        "{r}"
    );
    assert_eq!(metric(&s.admin, "imapmux_reattaches_total"), 1.0);
    assert_eq!(metric(&s.admin, "imapmux_client_sessions_parked"), 0.0);
    // Idling again parks again, three times.
    for round in 2..=4 {
        let tag = c.idle_start().await.unwrap();
        wait_metric(
            &s.admin,
            "imapmux_parks_total",
            round as f64,
            Duration::from_secs(5),
        );
        assert!(c.idle_done(&tag).await.unwrap().is_ok());
        let r = c.cmd_ok("UID FETCH 1 (UID)").await.unwrap();
        assert!(
            r.lines.iter().any(|l| l.text() == "* 1 FETCH (UID 1)"),
            "{r}"
        );
    }
    // LOGOUT while parked, as Dovecot says it.
    let tag = c.idle_start().await.unwrap();
    wait_metric(&s.admin, "imapmux_parks_total", 5.0, Duration::from_secs(5));
    assert!(c.idle_done(&tag).await.unwrap().is_ok());
    let mine = c.cmd("LOGOUT").await.unwrap();
    let theirs = d.cmd("LOGOUT").await.unwrap();
    assert_eq!(normalized(&mine), normalized(&theirs));
    assert_eq!(metric(&s.admin, "imapmux_reattaches_total"), 4.0);
}

#[tokio::test]
async fn a_burst_of_parked_clients_ending_idle_and_logging_out_never_fails() {
    let n = 200;
    let (s, mut clients) = parked_clients(n, Duration::from_secs(60)).await;
    let logins = metric(
        &s.admin,
        "imapmux_backend_connect_duration_seconds_count{backend=\"b1\"}",
    );
    // Everyone at once: DONE and LOGOUT in one write.
    for (c, tag) in clients.iter_mut() {
        c.write_raw(format!("DONE\r\n{tag}z LOGOUT\r\n").as_bytes())
            .await
            .unwrap();
    }
    for (c, tag) in clients.iter_mut() {
        assert!(c.read_tagged(tag).await.unwrap().is_ok());
        let r = c.read_tagged(&format!("{tag}z")).await.unwrap();
        assert!(
            r.is_ok() && r.lines.iter().any(|l| l.text() == "* BYE Logging out"),
            "{r}"
        );
    }
    wait_metric(
        &s.admin,
        "imapmux_client_sessions_parked",
        0.0,
        Duration::from_secs(10),
    );
    assert_eq!(metric(&s.admin, "imapmux_reattaches_total"), 0.0);
    assert_eq!(
        metric(
            &s.admin,
            "imapmux_backend_connect_duration_seconds_count{backend=\"b1\"}"
        ),
        logins
    );
}

/// Idle, then end the IDLE (answered while parked); `parks`: the count
/// of parks to wait for.
async fn park_and_done(c: &mut ImapClient, admin: &str, parks: f64) {
    let tag = c.idle_start().await.unwrap();
    wait_metric(admin, "imapmux_parks_total", parks, Duration::from_secs(5));
    wait_metric(
        admin,
        "imapmux_client_sessions_parked",
        1.0,
        Duration::from_secs(5),
    );
    assert!(c.idle_done(&tag).await.unwrap().is_ok());
}

#[tokio::test]
async fn a_reselect_while_parked_is_answered_as_dovecot_would_while_nothing_changed() {
    let s = setup(10);
    let mut c = ImapClient::connect_plain(&s.addr).await.unwrap();
    c.login("user1", "pass1").await.unwrap().ok().unwrap();
    c.select("INBOX").await.unwrap().ok().unwrap();
    // The same user directly, same mailbox: what Dovecot says.
    let mut d = direct(&s.d, "user1").await;

    // Unchanged mailbox: the re-SELECT is answered while parked, exactly
    // as Dovecot answers its own re-SELECT (CLOSED first, no RECENT).
    park_and_done(&mut c, &s.admin, 1.0).await;
    let mine = c.cmd("SELECT INBOX").await.unwrap();
    let theirs = d.cmd("SELECT INBOX").await.unwrap();
    assert_eq!(normalized(&mine), normalized(&theirs));
    assert!(
        mine.is_ok() && normalized(&mine).starts_with("* OK [CLOSED]"),
        "{mine}"
    );
    let recent = |r: &Response| {
        r.lines
            .iter()
            .map(|l| l.text())
            .find(|t| t.ends_with(" RECENT"))
    };
    assert_eq!(recent(&mine), recent(&theirs));
    assert_eq!(recent(&mine).as_deref(), Some("* 0 RECENT"));
    assert_eq!(metric(&s.admin, "imapmux_reattaches_total"), 0.0);
    assert_eq!(metric(&s.admin, "imapmux_client_sessions_parked"), 1.0);
    // Quoted and lower-case forms too; NOOP after it, still parked.
    let mine = c.cmd("SELECT \"inbox\"").await.unwrap();
    let theirs = d.cmd("SELECT \"inbox\"").await.unwrap();
    assert_eq!(normalized(&mine), normalized(&theirs));
    assert!(c.cmd("NOOP").await.unwrap().is_ok());
    assert_eq!(metric(&s.admin, "imapmux_reattaches_total"), 0.0);

    // New mail while parked: UIDNEXT moved, so the backend answers the
    // re-SELECT (a re-attach), still as Dovecot does.
    let tag = c.idle_start().await.unwrap();
    let mut other = direct(&s.d, "user1").await;
    other
        .append("INBOX", None, b"Subject: reselect\r\n\r\nnew\r\n")
        .await
        .unwrap();
    c.idle_wait_for("EXISTS", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(c.idle_done(&tag).await.unwrap().is_ok());
    assert!(d.cmd("NOOP").await.unwrap().is_ok());
    let mine = c.cmd("SELECT INBOX").await.unwrap();
    let theirs = d.cmd("SELECT INBOX").await.unwrap();
    assert_eq!(normalized(&mine), normalized(&theirs));
    assert!(normalized(&mine).contains("* 6 EXISTS"), "{mine}");
    assert_eq!(metric(&s.admin, "imapmux_reattaches_total"), 1.0);

    // That answer is kept again: the next park (the second: the IDLE
    // above ran in the parked session) answers the re-SELECT.
    park_and_done(&mut c, &s.admin, 2.0).await;
    let mine = c.cmd("SELECT INBOX").await.unwrap();
    let theirs = d.cmd("SELECT INBOX").await.unwrap();
    assert_eq!(normalized(&mine), normalized(&theirs));
    assert_eq!(metric(&s.admin, "imapmux_reattaches_total"), 1.0);

    // EXAMINE of the SELECTed mailbox is another answer: the backend's.
    let mine = c.cmd("EXAMINE INBOX").await.unwrap();
    let theirs = d.cmd("EXAMINE INBOX").await.unwrap();
    assert_eq!(normalized(&mine), normalized(&theirs));
    assert!(normalized(&mine).contains("[READ-ONLY]"), "{mine}");
    assert_eq!(metric(&s.admin, "imapmux_reattaches_total"), 2.0);
}
