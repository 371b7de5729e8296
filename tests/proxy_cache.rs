//! The FETCH cache against a real Dovecot: hits are byte-identical to what
//! Dovecot sends, never reach the backend for the cached items, never mix
//! users, and follow EXPUNGE, UIDVALIDITY and \Seen.

mod common;

use std::time::Duration;

use common::*;

const CACHE: &str = "[cache]\nenabled = true\nmax_bytes = \"64MiB\"\nmax_item_size = \"1MiB\"\n";

fn setup(messages: u32) -> (Dovecot, Imapmux, String) {
    let dovecot = Dovecot::builder().messages(messages).rawlog().start();
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", &dovecot.addr()))
        .extra(CACHE)
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    (dovecot, proxy, addr)
}

async fn via(addr: &str, user: &str) -> ImapClient {
    let mut c = ImapClient::connect_tls(addr, &TlsClient::insecure())
        .await
        .unwrap();
    c.set_timeout(Duration::from_secs(60));
    let r = c.login(user, &user.replace("user", "pass")).await.unwrap();
    assert!(r.is_ok(), "{r}");
    c
}

async fn direct(d: &Dovecot, user: &str) -> ImapClient {
    let mut c = ImapClient::connect_plain(&d.addr()).await.unwrap();
    c.set_timeout(Duration::from_secs(60));
    assert!(c
        .login(user, &user.replace("user", "pass"))
        .await
        .unwrap()
        .is_ok());
    c
}

/// Untagged lines of a response, exactly as received.
fn untagged(r: &Response) -> Vec<u8> {
    r.lines.iter().flat_map(|l| l.raw.clone()).collect()
}

const ITEM_KINDS: &[&str] = &[
    "BODY.PEEK[]",
    "BODY.PEEK[HEADER]",
    "BODY.PEEK[TEXT]",
    "BODY.PEEK[1]",
    "BODY.PEEK[1.MIME]",
    "BODY.PEEK[2]",
    "BODY.PEEK[HEADER.FIELDS (From Subject)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (Subject)]",
    "BODY.PEEK[]<10.50>",
    "BINARY.PEEK[1]",
    "BINARY.SIZE[1]",
    "RFC822.HEADER",
    "RFC822.SIZE",
    "BODYSTRUCTURE",
    "BODY",
    "ENVELOPE",
    "INTERNALDATE",
    "RFC822",
    "RFC822.TEXT",
    "BODY[TEXT]",
    "BINARY[1]",
    "BINARY.PEEK[2]<0.20>",
    "(UID FLAGS RFC822.SIZE BODYSTRUCTURE BODY.PEEK[HEADER])",
    "(ENVELOPE BODY.PEEK[HEADER.FIELDS (From To Subject Date)] FLAGS)",
];

#[tokio::test]
async fn hits_are_byte_identical_and_do_not_reach_the_backend() {
    let (dovecot, proxy, addr) = setup(4);
    let mut d = direct(&dovecot, "user1").await;
    d.cmd_ok("EXAMINE INBOX").await.unwrap();
    let mut c = via(&addr, "user1").await;
    c.cmd_ok("EXAMINE INBOX").await.unwrap();
    for item in ITEM_KINDS {
        let cmd = format!("UID FETCH 1:4 {item}");
        let expected = untagged(&d.cmd_ok(&cmd).await.unwrap());
        // first time: a miss, filled from the backend's answer
        let first = untagged(&c.cmd_ok(&cmd).await.unwrap());
        assert_eq!(
            show_bytes(&first, 3000),
            show_bytes(&expected, 3000),
            "miss {cmd}"
        );
        // explicit UIDs: a hit
        let cmd2 = format!("UID FETCH 1,2,3,4 {item}");
        let second = untagged(&c.cmd_ok(&cmd2).await.unwrap());
        let second_again = untagged(&c.cmd_ok(&cmd2).await.unwrap());
        assert_eq!(
            show_bytes(&second, 3000),
            show_bytes(&expected, 3000),
            "hit {cmd2}"
        );
        assert_eq!(second, second_again);
    }
    let log = dovecot.rawlog_in("user1");
    // Only cacheable items, sequence numbers known: answered by the proxy,
    // the backend never sees the command at all.
    assert!(!log.contains("UID FETCH 1,2,3,4 BODY.PEEK[]"), "{log}");
    assert!(!log.contains("UID FETCH 1,2,3,4 ENVELOPE"), "{log}");
    // With FLAGS (mutable) in the list: the backend is asked only for FLAGS
    // (and a 0-byte marker), the rest comes from the cache.
    assert!(
        log.contains("UID FETCH 1,2,3,4 (UID FLAGS BODY.PEEK[]<2147483646.1>)"),
        "{log}"
    );
    assert!(!proxy.log().contains("panicked"));
}

#[tokio::test]
async fn users_never_see_each_others_cached_data() {
    let (dovecot, _p, addr) = setup(3);
    // Same mailbox name, same UIDs, different content (seed differs by user).
    let mut a = via(&addr, "user1").await;
    a.select("INBOX").await.unwrap();
    let mut b = via(&addr, "user2").await;
    b.select("INBOX").await.unwrap();
    for uid in 1..=3 {
        let cmd = format!("UID FETCH {uid} (BODY.PEEK[] ENVELOPE)");
        let ra = a.cmd_ok(&cmd).await.unwrap();
        let ra2 = a.cmd_ok(&cmd).await.unwrap();
        let rb = b.cmd_ok(&cmd).await.unwrap();
        let rb2 = b.cmd_ok(&cmd).await.unwrap();
        assert_eq!(ra.literals()[0], dovecot.message("user1", uid));
        assert_eq!(ra2.literals()[0], dovecot.message("user1", uid));
        assert_eq!(rb.literals()[0], dovecot.message("user2", uid));
        assert_eq!(rb2.literals()[0], dovecot.message("user2", uid));
        assert_ne!(ra2.literals()[0], rb2.literals()[0]);
    }
}

#[tokio::test]
async fn expunge_and_renumbering_and_uidvalidity() {
    let (dovecot, _p, addr) = setup(4);
    let mut c = via(&addr, "user1").await;
    c.select("INBOX").await.unwrap();
    // learn seq -> uid, fill the cache
    c.cmd_ok("FETCH 1:4 (UID BODY.PEEK[HEADER])").await.unwrap();
    c.cmd_ok("UID FETCH 1:4 BODY.PEEK[]").await.unwrap();
    // another session expunges UID 2
    let mut other = direct(&dovecot, "user1").await;
    other.select("INBOX").await.unwrap();
    other
        .cmd_ok("UID STORE 2 +FLAGS (\\Deleted)")
        .await
        .unwrap();
    other.cmd_ok("UID EXPUNGE 2").await.unwrap();
    // this session learns of it and renumbers
    let r = c.cmd_ok("NOOP").await.unwrap();
    assert!(r.contains("* 2 EXPUNGE"), "{r}");
    // sequence 2 is now UID 3: the cache must answer with UID 3's data
    let r = c.cmd_ok("FETCH 2 (UID BODY.PEEK[])").await.unwrap();
    assert!(r.contains("UID 3"), "{r}");
    assert_eq!(r.literals()[0], dovecot.message("user1", 3));
    let r = c.cmd_ok("FETCH 2 BODY.PEEK[]").await.unwrap();
    assert_eq!(r.literals()[0], dovecot.message("user1", 3));
    // the expunged UID answers nothing, as Dovecot does
    let r = c.cmd_ok("UID FETCH 2 BODY.PEEK[]").await.unwrap();
    assert!(r.literals().is_empty(), "{r}");

    // UIDVALIDITY change: delete and recreate a mailbox with other content
    c.cmd_ok("CREATE Box").await.unwrap();
    c.append("Box", None, &sized_message("first", 300))
        .await
        .unwrap();
    c.select("Box").await.unwrap();
    let r1 = c.cmd_ok("UID FETCH 1 BODY.PEEK[]").await.unwrap();
    c.cmd_ok("UID FETCH 1 BODY.PEEK[]").await.unwrap();
    c.cmd_ok("UNSELECT").await.unwrap();
    other.cmd_ok("DELETE Box").await.unwrap();
    other.cmd_ok("CREATE Box").await.unwrap();
    other
        .append("Box", None, &sized_message("second", 400))
        .await
        .unwrap();
    c.select("Box").await.unwrap();
    let r2 = c.cmd_ok("UID FETCH 1 BODY.PEEK[]").await.unwrap();
    assert_eq!(r2.literals()[0], sized_message("second", 400));
    assert_ne!(r1.literals()[0], r2.literals()[0]);
}

#[tokio::test]
async fn seen_side_effect_is_kept() {
    let (dovecot, _p, addr) = setup(2);
    let mut c = via(&addr, "user1").await;
    c.select("INBOX").await.unwrap();
    // teach and fill with a message that is unseen (template with FLAGS)
    let r = c.cmd_ok("UID FETCH 1 BODY[]").await.unwrap();
    assert!(r.contains("FLAGS (\\Seen"), "{r}");
    c.cmd_ok("UID FETCH 2 BODY.PEEK[]").await.unwrap();
    // UID 2 is unseen; a non-PEEK fetch from the cache must set \Seen
    let r = c.cmd_ok("UID FETCH 2 BODY[]").await.unwrap();
    assert_eq!(r.literals()[0], dovecot.message("user1", 2));
    assert!(
        r.contains("FLAGS (\\Seen"),
        "client did not get the FLAGS update: {r}"
    );
    let mut d = direct(&dovecot, "user1").await;
    d.cmd_ok("EXAMINE INBOX").await.unwrap();
    let f = d.cmd_ok("UID FETCH 2 FLAGS").await.unwrap();
    assert!(f.contains("\\Seen"), "backend did not get \\Seen: {f}");
}

#[tokio::test]
async fn large_body_above_item_limit_streams_and_is_not_cached() {
    let (dovecot, _p, addr) = setup(0);
    let mut c = via(&addr, "user1").await;
    let big = sized_message("big", 20 * 1024 * 1024);
    let r = c.append("INBOX", None, &big).await.unwrap();
    let uid = r.appended_uid().unwrap();
    c.select("INBOX").await.unwrap();
    for _ in 0..2 {
        let r = c
            .cmd_ok(&format!("UID FETCH {uid} (BODY.PEEK[] RFC822.SIZE)"))
            .await
            .unwrap();
        assert!(r.literals()[0] == big);
    }
    // both fetches went to the backend in full
    let log = dovecot.rawlog_in("user1");
    assert_eq!(
        log.matches(&format!("UID FETCH {uid} (BODY.PEEK[] RFC822.SIZE)"))
            .count(),
        2,
        "{log}"
    );
}

#[tokio::test]
async fn pipelined_fetches_keep_order() {
    let (dovecot, _p, addr) = setup(3);
    let mut c = via(&addr, "user1").await;
    c.select("INBOX").await.unwrap();
    c.cmd_ok("UID FETCH 1:3 (BODY.PEEK[] FLAGS)").await.unwrap();
    c.write_raw(b"p1 UID FETCH 1 (BODY.PEEK[] FLAGS)\r\np2 NOOP\r\np3 UID FETCH 3,2 (BODY.PEEK[] FLAGS)\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    for tag in ["p1", "p2", "p3"] {
        let r = c.read_tagged(tag).await.unwrap();
        assert!(r.is_ok(), "{r}");
        all.extend(r.lines);
    }
    // Dovecot runs pipelined FETCHes concurrently, so responses of p3 may
    // come before p1's OK, directly as through the proxy. What matters:
    // each message exactly once, with its own body, no marker leaked.
    let mut seen = Vec::new();
    for l in &all {
        let head = l.head();
        assert!(!head.contains("2147483646"), "marker leaked: {head}");
        if let Some(uid) = head
            .split("UID ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|u| u.parse::<u32>().ok())
        {
            assert_eq!(l.literals, vec![dovecot.message("user1", uid)], "{head}");
            seen.push(uid);
        }
    }
    seen.sort();
    assert_eq!(seen, vec![1, 2, 3]);
}

#[tokio::test]
async fn uid_ranges_with_gaps_and_star_resolve_from_the_known_map() {
    let (dovecot, _p, addr) = setup(5);
    // Make a gap: UID 2 is gone.
    let mut d = direct(&dovecot, "user1").await;
    d.select("INBOX").await.unwrap();
    d.cmd_ok("UID STORE 2 +FLAGS.SILENT (\\Deleted)")
        .await
        .unwrap();
    d.cmd_ok("UID EXPUNGE 2").await.unwrap();
    let expected = untagged(
        &d.cmd_ok("UID FETCH 1:* (BODY.PEEK[] RFC822.SIZE)")
            .await
            .unwrap(),
    );

    let mut c = via(&addr, "user1").await;
    c.cmd_ok("EXAMINE INBOX").await.unwrap();
    // The first full fetch teaches sequence -> UID for every message.
    let first = untagged(
        &c.cmd_ok("UID FETCH 1:* (BODY.PEEK[] RFC822.SIZE)")
            .await
            .unwrap(),
    );
    assert_eq!(show_bytes(&first, 4000), show_bytes(&expected, 4000));
    for cmd in [
        "UID FETCH 1:* (BODY.PEEK[] RFC822.SIZE)",
        "UID FETCH 1:5 (BODY.PEEK[] RFC822.SIZE)",
        "UID FETCH 2:4 (BODY.PEEK[] RFC822.SIZE)",
    ] {
        let got = untagged(&c.cmd_ok(cmd).await.unwrap());
        let want = untagged(&d.cmd_ok(cmd).await.unwrap());
        assert_eq!(show_bytes(&got, 4000), show_bytes(&want, 4000), "{cmd}");
    }
    // The rawlog holds both sessions: the direct one sent 1:* twice, 1:5 and
    // 2:4 once; through the proxy only the first 1:* reached Dovecot.
    let log = dovecot.rawlog_in("user1");
    assert_eq!(
        log.matches("UID FETCH 1:* (BODY.PEEK[] RFC822.SIZE)")
            .count(),
        3,
        "{log}"
    );
    assert_eq!(log.matches("UID FETCH 1:5 ").count(), 1, "{log}");
    assert_eq!(log.matches("UID FETCH 2:4 ").count(), 1, "{log}");
    // New mail makes the map incomplete: the next range goes to the backend.
    dovecot.deliver("user1", &sized_message("new", 300));
    let r = c.cmd_ok("NOOP").await.unwrap();
    assert!(r.contains("EXISTS"), "{r}");
    let got = c
        .cmd_ok("UID FETCH 1:* (BODY.PEEK[] RFC822.SIZE)")
        .await
        .unwrap();
    assert_eq!(got.literals().len(), 5, "{got}");
    assert_eq!(
        dovecot
            .rawlog_in("user1")
            .matches("UID FETCH 1:* (BODY.PEEK[] RFC822.SIZE)")
            .count(),
        4
    );
}

#[tokio::test]
async fn split_by_message_fetches_only_what_is_missing() {
    let (dovecot, p, addr) = setup(6);
    let mut d = direct(&dovecot, "user1").await;
    d.cmd_ok("EXAMINE INBOX").await.unwrap();
    let mut c = via(&addr, "user1").await;
    c.cmd_ok("EXAMINE INBOX").await.unwrap();
    // Messages 1-4 cached (this also teaches the item order)
    c.cmd_ok("UID FETCH 1:4 (BODY.PEEK[] ENVELOPE)")
        .await
        .unwrap();
    // 1-5 asked: only UID 5 misses
    let cmd = "UID FETCH 1:5 (BODY.PEEK[] ENVELOPE)";
    let r = c
        .cmd_ok(cmd)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", p.log(), dovecot.rawlog_in("user1")));
    let want = d.cmd_ok(cmd).await.unwrap();
    assert_eq!(
        show_bytes(&untagged(&r), 5000),
        show_bytes(&untagged(&want), 5000)
    );
    let raw = String::from_utf8_lossy(&r.raw()).into_owned();
    assert!(!raw.contains("imapmux.1 "), "proxy tag leaked: {raw}");
    assert_eq!(r.lines.len(), 5, "{raw}");
    let log = dovecot.rawlog_in("user1");
    assert!(
        log.contains("UID FETCH 5 (UID BODY.PEEK[] ENVELOPE)"),
        "{log}"
    );
    // the client's command itself went out once: from the direct session
    assert_eq!(log.matches(cmd).count(), 1, "{log}");
}

/// `cmd` with the tag `tag` (so the rawlog tells sessions apart), OK.
async fn tagged(c: &mut ImapClient, tag: &str, cmd: &str) -> Response {
    c.write_raw(format!("{tag} {cmd}\r\n").as_bytes())
        .await
        .unwrap();
    let r = c.read_tagged(tag).await.unwrap();
    assert!(r.is_ok(), "{tag} {cmd}: {r}");
    r
}

#[tokio::test]
async fn sequence_fetches_on_a_fresh_session_are_served_and_follow_expunges() {
    let (dovecot, proxy, addr) = setup(5);
    let items = [
        "BODY.PEEK[]",
        "(BODY.PEEK[HEADER] RFC822.SIZE)",
        "(FLAGS BODY.PEEK[TEXT])",
    ];
    // Every session EXAMINEs: nobody takes \Recent, FLAGS compare equal.
    let mut d = direct(&dovecot, "user1").await;
    d.cmd_ok("EXAMINE INBOX").await.unwrap();
    // Session A reads messages 2-4 by sequence number (fills the cache).
    let mut a = via(&addr, "user1").await;
    a.cmd_ok("EXAMINE INBOX").await.unwrap();
    let mut n = 0;
    for seq in 2..=4 {
        for item in items {
            n += 1;
            let cmd = format!("FETCH {seq} {item}");
            let want = untagged(&tagged(&mut d, &format!("dq{n}"), &cmd).await);
            let got = untagged(&tagged(&mut a, &format!("aq{n}"), &cmd).await);
            assert_eq!(show_bytes(&got, 3000), show_bytes(&want, 3000), "{cmd}");
        }
    }
    a.logout().await.unwrap();

    // Session B, fresh: the same reads, byte for byte as Dovecot's, and
    // none of them reaches Dovecot (only imapmux's FETCH of UIDs does).
    let mut b = via(&addr, "user1").await;
    b.cmd_ok("EXAMINE INBOX").await.unwrap();
    let mut b_tags = Vec::new();
    let read = |seq: u32, item: &str, n: &mut u32| {
        *n += 1;
        (
            format!("FETCH {seq} {item}"),
            format!("dq{n}"),
            format!("bq{n}"),
        )
    };
    for seq in [2, 4] {
        for item in items {
            let (cmd, dt, bt) = read(seq, item, &mut n);
            let want = untagged(&tagged(&mut d, &dt, &cmd).await);
            let got = untagged(&tagged(&mut b, &bt, &cmd).await);
            assert_eq!(show_bytes(&got, 3000), show_bytes(&want, 3000), "{cmd}");
            b_tags.push(bt);
        }
    }

    // Another session expunges message 2 (UID 2): 3 and 4 become 2 and 3.
    let mut x = direct(&dovecot, "user1").await;
    x.select("INBOX").await.unwrap();
    x.cmd_ok("UID STORE 2 +FLAGS.SILENT (\\Deleted)")
        .await
        .unwrap();
    x.cmd_ok("EXPUNGE").await.unwrap();
    for c in [&mut d, &mut b] {
        let r = c.cmd_ok("NOOP").await.unwrap();
        assert!(r.contains("* 2 EXPUNGE"), "{r}");
    }
    for seq in [3, 2] {
        for item in items {
            let (cmd, dt, bt) = read(seq, item, &mut n);
            let want = untagged(&tagged(&mut d, &dt, &cmd).await);
            let got = untagged(&tagged(&mut b, &bt, &cmd).await);
            assert_eq!(show_bytes(&got, 3000), show_bytes(&want, 3000), "{cmd}");
            b_tags.push(bt);
        }
    }
    // The bodies are the right messages: UID 4 is now 3, UID 3 is now 2.
    let r = b.cmd_ok("FETCH 3 BODY.PEEK[]").await.unwrap();
    assert_eq!(r.literals()[0], dovecot.message("user1", 4));
    let r = b.cmd_ok("FETCH 2 BODY.PEEK[]").await.unwrap();
    assert_eq!(r.literals()[0], dovecot.message("user1", 3));

    let log = dovecot.rawlog_in("user1");
    for (i, t) in b_tags.iter().enumerate() {
        let sent: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!(" {t} ")))
            .collect();
        if items[i % items.len()].contains("FLAGS") {
            // FLAGS are not cached: only they (and the 1-byte marker) are
            // asked, the body comes from the cache.
            assert!(
                sent.len() == 1 && sent[0].ends_with("(FLAGS BODY.PEEK[]<2147483646.1>)"),
                "{t}: {sent:?}"
            );
        } else {
            assert!(sent.is_empty(), "{t} reached Dovecot: {sent:?}");
        }
    }
    // What A and B sent besides: one FETCH of every UID each, at their
    // first read (the expunge left B's map complete: no second one).
    assert_eq!(log.matches("imapmux.1 FETCH 1:5 (UID)").count(), 2, "{log}");
    assert_eq!(log.matches(" (UID)").count(), 2, "{log}");
    // The client's own commands of session A went out once each.
    assert_eq!(log.matches("aq1 FETCH 2 BODY.PEEK[]").count(), 1, "{log}");
    let plog = proxy.log();
    assert!(!plog.contains("panicked"), "{plog}");
}

#[tokio::test]
async fn sequence_fetches_with_condstore_enabled_stay_byte_identical() {
    let (dovecot, _p, addr) = setup(3);
    let mut d = direct(&dovecot, "user1").await;
    let mut a = via(&addr, "user1").await;
    let mut b = via(&addr, "user1").await;
    for c in [&mut d, &mut a, &mut b] {
        c.cmd_ok("ENABLE CONDSTORE").await.unwrap();
        c.cmd_ok("EXAMINE INBOX").await.unwrap();
    }
    // A fills; B (fresh) is served after its FETCH of UIDs.
    for who in ["a", "b", "a", "b"] {
        let c = if who == "a" { &mut a } else { &mut b };
        for cmd in ["FETCH 2 BODY.PEEK[]", "FETCH 3 (FLAGS BODY.PEEK[HEADER])"] {
            let want = untagged(&d.cmd_ok(cmd).await.unwrap());
            let got = untagged(&c.cmd_ok(cmd).await.unwrap());
            assert_eq!(
                show_bytes(&got, 3000),
                show_bytes(&want, 3000),
                "{who}: {cmd}"
            );
        }
    }
    let log = dovecot.rawlog_in("user1");
    assert_eq!(log.matches("FETCH 1:3 (UID)").count(), 2, "{log}");
}
