//! The relay core from byte transcripts: no sockets, no sleeps, time
//! passed in.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::*;
use crate::cache::flow::{Flow, Templates};
use crate::cache::{CacheConfig, FetchCache};
use crate::relay::ledger::MAX_IN_FLIGHT;

fn cfg() -> RelayConfig {
    RelayConfig::for_tests()
}

/// Records what hooks are told.
#[derive(Default, Clone)]
struct Record(Arc<Mutex<Vec<String>>>);

impl Hook for Record {
    fn completed(&mut self, done: &Completed) {
        let mut v = self.0.lock().unwrap();
        v.push(format!(
            "{} {} {}",
            done.tag,
            done.label,
            done.result.as_str()
        ));
    }
    fn idling(&mut self, on: bool) {
        self.0.lock().unwrap().push(format!("idling {on}"));
    }
}

struct T {
    s: RelaySession,
    now: Instant,
    rec: Record,
}

impl T {
    fn new(cfg: RelayConfig) -> T {
        Self::with_hooks(cfg, Vec::new())
    }

    fn with_hooks(cfg: RelayConfig, mut hooks: Vec<Box<dyn Hook>>) -> T {
        let now = Instant::now();
        let rec = Record::default();
        hooks.push(Box::new(rec.clone()));
        let s = RelaySession::new(cfg, BytesMut::new(), BytesMut::new(), hooks, now);
        T { s, now, rec }
    }

    fn client(&mut self, data: &str) {
        self.s.client_input(data.as_bytes(), self.now);
    }

    fn backend(&mut self, data: &str) {
        self.s.backend_input(data.as_bytes(), self.now);
    }

    /// Everything queued for the backend (as written).
    fn sent_to_backend(&mut self) -> String {
        self.s.drain_to_backend(self.now)
    }

    fn sent_to_client(&mut self) -> String {
        self.s.drain_to_client(self.now)
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
    }

    fn events(&self) -> Vec<String> {
        std::mem::take(&mut *self.rec.0.lock().unwrap())
    }

    /// SELECT INBOX, answered.
    fn select(&mut self) {
        self.client("s SELECT INBOX\r\n");
        assert_eq!(self.sent_to_backend(), "s SELECT INBOX\r\n");
        self.backend("* 2 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n");
        self.sent_to_client();
        self.events();
    }
}

#[test]
fn commands_and_answers_pass_byte_for_byte_and_complete_in_the_ledger() {
    let mut t = T::new(cfg());
    t.client("a NOOP\r\nb CAPABILITY\r\n");
    assert_eq!(t.sent_to_backend(), "a NOOP\r\nb CAPABILITY\r\n");
    assert_eq!(t.s.in_flight(), 2);
    t.now += Duration::from_millis(7);
    t.backend("* CAPABILITY IMAP4rev1\r\nb OK done\r\na OK done\r\n");
    assert_eq!(
        t.sent_to_client(),
        "* CAPABILITY IMAP4rev1\r\nb OK done\r\na OK done\r\n"
    );
    assert_eq!(t.s.in_flight(), 0);
    assert_eq!(t.events(), ["b capability ok", "a noop ok"]);
}

#[test]
fn split_at_every_byte_the_relay_forwards_the_same_bytes() {
    let client = "a IDLE\r\nDONE\r\nb APPEND INBOX {5+}\r\nhello\r\nc NOOP\r\n";
    let backend = "+ idling\r\n* 3 EXISTS\r\na OK Idle completed.\r\n";
    for cut in 0..=client.len() {
        let mut t = T::new(cfg());
        t.client(&client[..cut]);
        t.backend(&backend[..10]);
        t.client(&client[cut..]);
        t.backend(&backend[10..]);
        assert_eq!(t.sent_to_backend(), client, "cut {cut}");
        assert_eq!(t.sent_to_client(), backend, "cut {cut}");
        let ev = t.events();
        // IDLE started and ended once whatever the split; a, b, c in flight
        // minus a.
        let idled = usize::from((8..14).contains(&cut));
        assert_eq!(
            ev.iter().filter(|e| *e == "idling true").count(),
            idled,
            "cut {cut}: {ev:?}"
        );
        assert_eq!(t.s.in_flight(), 2, "cut {cut}");
    }
}

#[test]
fn a_synchronizing_literal_waits_for_the_backends_plus() {
    let mut t = T::new(cfg());
    t.client("a APPEND INBOX {5}\r\n");
    assert_eq!(t.sent_to_backend(), "a APPEND INBOX {5}\r\n");
    t.backend("+ OK\r\n");
    assert_eq!(t.sent_to_client(), "+ OK\r\n");
    t.client("hel");
    t.client("lo\r\n");
    assert_eq!(t.sent_to_backend(), "hello\r\n");
    t.backend("a OK [APPENDUID 7 3] Append completed.\r\n");
    assert_eq!(t.s.in_flight(), 0);
    // The literal's bytes never count as commands (`b NOOP` inside it).
    t.client("x APPEND INBOX {8+}\r\nb NOOP\r\n\r\n");
    assert_eq!(t.sent_to_backend(), "x APPEND INBOX {8+}\r\nb NOOP\r\n\r\n");
    assert_eq!(t.s.in_flight(), 1);
}

#[test]
fn a_refused_literal_is_not_expected_from_the_client() {
    let mut t = T::new(cfg());
    t.client("a APPEND INBOX {500}\r\n");
    t.backend("a NO [OVERQUOTA] Quota exceeded.\r\n");
    assert_eq!(t.sent_to_client(), "a NO [OVERQUOTA] Quota exceeded.\r\n");
    // The next line is a new command, not literal data.
    t.client("b NOOP\r\n");
    assert_eq!(t.sent_to_backend(), "a APPEND INBOX {500}\r\nb NOOP\r\n");
    assert_eq!(t.s.in_flight(), 1);
    t.backend("b OK\r\n");
    assert_eq!(t.events(), ["a append no", "b noop ok"]);
}

#[test]
fn compress_and_starttls_are_refused_here_and_never_reach_the_backend() {
    let mut t = T::new(cfg());
    t.client("a COMPRESS DEFLATE\r\nb STARTTLS\r\nc NOOP\r\n");
    assert_eq!(t.sent_to_backend(), "c NOOP\r\n");
    let out = t.sent_to_client();
    assert!(out.starts_with("a NO [CANNOT] COMPRESS"), "{out}");
    assert!(out.contains("\r\nb NO [CANNOT] STARTTLS"), "{out}");
    assert_eq!(t.s.in_flight(), 1);
    // Refusals never get ahead of a backend message in progress.
    t.backend("* 1 FETCH (BODY[] {10}\r\n01234");
    t.client("d COMPRESS DEFLATE\r\n");
    assert_eq!(t.sent_to_client(), "* 1 FETCH (BODY[] {10}\r\n01234");
    t.backend("56789)\r\n");
    let out = t.sent_to_client();
    assert_eq!(
        out,
        "56789)\r\nd NO [CANNOT] COMPRESS is not available through this proxy.\r\n"
    );
}

#[test]
fn logout_releases_the_backend_only_when_quiet() {
    let mut c = cfg();
    c.release_on_logout = true;
    let mut t = T::new(c.clone());
    t.select();
    t.client("z LOGOUT\r\n");
    assert_eq!(t.sent_to_backend(), "");
    assert_eq!(
        t.sent_to_client(),
        "* BYE Logging out\r\nz OK Logout completed.\r\n"
    );
    assert_eq!(t.s.finished(), Some(&Finish::Release));
    assert_eq!(t.events(), ["z logout ok"]);

    // A command still in flight: LOGOUT goes to the backend.
    let mut t = T::new(c.clone());
    t.client("a NOOP\r\nz LOGOUT\r\n");
    assert_eq!(t.sent_to_backend(), "a NOOP\r\nz LOGOUT\r\n");
    t.backend("a OK\r\n* BYE bye\r\nz OK Logout completed.\r\n");
    t.s.backend_closed(false);
    assert_eq!(t.s.finished(), Some(&Finish::End(EndReason::Logout)));

    // State that outlives the session (ENABLE): never released.
    let mut t = T::new(c);
    t.client("e ENABLE QRESYNC\r\n");
    t.backend("* ENABLED QRESYNC\r\ne OK\r\n");
    t.client("z LOGOUT\r\n");
    assert_eq!(t.sent_to_backend(), "e ENABLE QRESYNC\r\nz LOGOUT\r\n");
    assert!(t.s.dirty());
}

fn parking_cfg() -> RelayConfig {
    let mut c = cfg();
    c.park_after = Some(Duration::from_secs(60));
    c
}

#[test]
fn an_idling_client_parks_after_the_delay_and_every_time() {
    let mut t = T::new(parking_cfg());
    t.select();
    t.client("i1 IDLE\r\n");
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(1800)));
    t.backend("+ idling\r\n");
    let due = t.now + Duration::from_secs(60);
    assert_eq!(t.s.poll_timeout(), Some(due));
    // The client ends this IDLE first: no parking, and no timer left.
    t.advance(Duration::from_secs(30));
    t.client("DONE\r\n");
    assert_eq!(t.sent_to_backend(), "i1 IDLE\r\nDONE\r\n");
    assert!(t.s.poll_timeout() > Some(due));
    t.backend("i1 OK Idle completed.\r\n");
    assert_eq!(t.sent_to_client(), "+ idling\r\ni1 OK Idle completed.\r\n");
    // The next IDLE parks (a session parks every time it idles long enough).
    t.client("i2 IDLE\r\n");
    t.backend("+ idling\r\n");
    t.advance(Duration::from_secs(60));
    assert_eq!(t.sent_to_backend(), "i2 IDLE\r\nDONE\r\n");
    assert!(!t.s.wants_client_read());
    // The client's DONE, racing the park, stays unread for the parked
    // session (which wakes on it at once).
    t.s.client_buf_for_test().extend_from_slice(b"DONE\r\n");
    t.backend("* 4 EXISTS\r\ni2 OK Idle completed.\r\n");
    assert_eq!(t.sent_to_client(), "+ idling\r\n* 4 EXISTS\r\n");
    assert_eq!(
        t.s.finished(),
        Some(&Finish::Park(Parked {
            mailbox: "INBOX".into(),
            read_only: false,
            idle_tag: "i2".into(),
            enabled: Default::default(),
            // The mailbox changed since its SELECT (`* 4 EXISTS`).
            select_reply: None,
        }))
    );
    let (client_left, backend_left) = t.s.take_input();
    assert_eq!(&client_left[..], b"DONE\r\n");
    assert!(backend_left.is_empty());
    assert_eq!(
        t.events(),
        [
            "idling true",
            "idling false",
            "i1 idle ok",
            "idling true",
            "i2 idle ok",
            "idling false"
        ]
    );
}

#[test]
fn condstore_and_qresync_clients_park_with_what_they_enabled() {
    use crate::imap::enabled::Enabled;
    let park = |t: &mut T, tag: &str| {
        t.client(&format!("{tag} IDLE\r\n"));
        t.backend("+ idling\r\n");
        t.advance(Duration::from_secs(60));
        t.backend(&format!("{tag} OK Idle completed.\r\n"));
        match t.s.finished() {
            Some(Finish::Park(p)) => Some(p.enabled),
            _ => None,
        }
    };
    // ENABLE QRESYNC: what the backend confirmed is what counts.
    let mut t = T::new(parking_cfg());
    t.client("e ENABLE QRESYNC\r\n");
    t.backend("* ENABLED QRESYNC\r\ne OK Enabled.\r\n");
    t.sent_to_backend();
    t.select();
    let e = park(&mut t, "i1").expect("a QRESYNC client parks");
    assert!(e.qresync && e.condstore && !e.utf8_accept);
    // CONDSTORE by use (SELECT with the parameter).
    let mut t = T::new(parking_cfg());
    t.client("s SELECT INBOX (CONDSTORE)\r\n");
    t.backend("* 3 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\ns OK [READ-WRITE] done\r\n");
    let e = park(&mut t, "i1").expect("a CONDSTORE client parks");
    assert_eq!(
        e,
        Enabled {
            condstore: true,
            ..Enabled::default()
        }
    );
    // The backend enabled nothing it was asked: a plain client.
    let mut t = T::new(parking_cfg());
    t.client("e ENABLE UTF8=ACCEPT\r\n");
    t.backend("e OK Enabled.\r\n");
    t.sent_to_backend();
    t.select();
    assert_eq!(park(&mut t, "i1"), Some(Enabled::default()));
    // State imapmux cannot reproduce while parked: stays attached.
    for cmd in ["n NOTIFY SET STATUS\r\n", "e ENABLE XFOO\r\n"] {
        let mut t = T::new(parking_cfg());
        t.client(cmd);
        t.backend(&format!("{} OK done\r\n", &cmd[..1]));
        t.sent_to_backend();
        t.select();
        assert_eq!(park(&mut t, "i1"), None, "{cmd}");
    }
    // UTF8=ACCEPT enabled: a UTF-8 mailbox name the watcher could not
    // name stays attached; an ASCII one parks.
    for (name, parks) in [("Entw\u{fc}rfe", false), ("Drafts", true)] {
        let mut t = T::new(parking_cfg());
        t.client("e ENABLE UTF8=ACCEPT\r\n");
        t.backend("* ENABLED UTF8=ACCEPT\r\ne OK Enabled.\r\n");
        t.client(&format!("s SELECT \"{name}\"\r\n"));
        t.backend("* 1 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\ns OK [READ-WRITE] done\r\n");
        let e = park(&mut t, "i1");
        assert_eq!(e.is_some(), parks, "{name}");
        assert!(e.is_none_or(|e| e.utf8_accept));
    }
    // A re-attached session keeps what it enabled for the next park.
    let mut c = parking_cfg();
    c.enabled.qresync = true;
    c.enabled.condstore = true;
    let mut t = T::new(c);
    t.select();
    assert!(park(&mut t, "i9").is_some_and(|e| e.qresync));
}

#[test]
fn no_parking_while_anything_else_is_in_flight_or_unselected() {
    let mut t = T::new(parking_cfg());
    // Nothing selected: never parked.
    t.client("i IDLE\r\n");
    t.backend("+ idling\r\n");
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(1800)));
    let mut t = T::new(parking_cfg());
    t.select();
    t.client("e EXAMINE Archive\r\n");
    t.client("i IDLE\r\n");
    t.backend("+ idling\r\n");
    // EXAMINE is still in flight.
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(1800)));
    t.backend("e OK [READ-ONLY] Examine completed.\r\n");
    let due = t.now + Duration::from_secs(60);
    assert_eq!(t.s.poll_timeout(), Some(due));
    t.advance(Duration::from_secs(60));
    t.backend("i OK Idle completed.\r\n");
    match t.s.finished() {
        Some(Finish::Park(p)) => assert!(p.read_only && p.mailbox == "Archive"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn idle_timeout_says_bye_at_a_message_boundary() {
    let mut t = T::new(cfg());
    t.client("a FETCH 1 BODY[]\r\n");
    t.backend("* 1 FETCH (BODY[] {10}\r\n01234");
    t.advance(Duration::from_secs(1800));
    // Mid-message: the BYE waits.
    assert_eq!(t.sent_to_client(), "* 1 FETCH (BODY[] {10}\r\n01234");
    assert!(t.s.finished().is_none());
    assert!(!t.s.wants_client_read());
    t.backend("56789)\r\n");
    assert_eq!(
        t.sent_to_client(),
        "56789)\r\n* BYE Autologout; idle for too long.\r\n"
    );
    assert_eq!(t.s.finished(), Some(&Finish::End(EndReason::IdleTimeout)));
    // No boundary within the grace time: end without the BYE.
    let mut t = T::new(cfg());
    t.backend("* 1 FETCH (BODY[] {10}\r\n01234");
    t.advance(Duration::from_secs(1800));
    assert!(t.s.finished().is_none());
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(5)));
    t.advance(Duration::from_secs(5));
    assert_eq!(t.s.finished(), Some(&Finish::End(EndReason::IdleTimeout)));
}

#[test]
fn shutdown_says_bye_and_ends() {
    let mut t = T::new(cfg());
    t.s.shutdown(t.now);
    assert_eq!(
        t.sent_to_client(),
        "* BYE [UNAVAILABLE] Server shutting down.\r\n"
    );
    assert_eq!(t.s.finished(), Some(&Finish::End(EndReason::Shutdown)));
}

#[test]
fn a_client_that_pipelines_without_end_is_slowed_not_buffered() {
    let mut t = T::new(cfg());
    let many: String = (0..MAX_IN_FLIGHT + 100)
        .map(|i| format!("n{i} NOOP\r\n"))
        .collect();
    t.client(&many);
    assert_eq!(t.s.in_flight(), MAX_IN_FLIGHT);
    assert!(!t.s.wants_client_read());
    let sent = t.sent_to_backend();
    assert_eq!(sent.lines().count(), MAX_IN_FLIGHT);
    t.backend("n0 OK\r\n");
    // One answer lets one more through.
    assert_eq!(t.sent_to_backend(), format!("n{MAX_IN_FLIGHT} NOOP\r\n"));
    // And a backend that talks to a client that never reads is not read.
    let mut t = T::new(cfg());
    let big = format!("* OK {}\r\n", "x".repeat(OUT_MAX));
    t.backend(&big);
    assert!(!t.s.wants_backend_read());
    t.sent_to_client();
    assert!(t.s.wants_backend_read());
}

#[test]
fn end_reasons_follow_who_closed() {
    let mut t = T::new(cfg());
    t.s.client_closed(false);
    assert_eq!(t.s.finished(), Some(&Finish::End(EndReason::ClientClosed)));
    let mut t = T::new(cfg());
    t.client("z LOGOUT\r\n");
    t.s.client_closed(false);
    assert_eq!(t.s.finished(), Some(&Finish::End(EndReason::Logout)));
    let mut t = T::new(cfg());
    t.s.backend_closed(false);
    assert_eq!(t.s.finished(), Some(&Finish::End(EndReason::BackendClosed)));
    assert!(t.s.finished().unwrap().flush_client());
    let mut t = T::new(cfg());
    t.s.client_closed(true);
    assert!(!t.s.finished().unwrap().flush_client());
}

fn cache_hooks() -> Vec<Box<dyn Hook>> {
    let cache = Arc::new(FetchCache::new(&CacheConfig::default()));
    vec![Box::new(Flow::new(
        cache,
        Arc::new(Templates::default()),
        "b1",
        "alice",
    ))]
}

#[test]
fn the_cache_answers_a_repeated_fetch_and_keeps_pipelined_order() {
    let mut t = T::with_hooks(cfg(), cache_hooks());
    t.select();
    let body = "* 1 FETCH (UID 1 BODY[] {5}\r\nhello)\r\n";
    t.client("a UID FETCH 1 (BODY.PEEK[])\r\n");
    assert_eq!(t.sent_to_backend(), "a UID FETCH 1 (BODY.PEEK[])\r\n");
    t.backend(&format!("{body}a OK Fetch completed.\r\n"));
    assert_eq!(
        t.sent_to_client(),
        format!("{body}a OK Fetch completed.\r\n")
    );
    // The same read again, pipelined with a NOOP: answered here, byte for
    // byte, and only the NOOP reaches the backend.
    t.client("b UID FETCH 1 (BODY.PEEK[])\r\nc NOOP\r\n");
    assert_eq!(t.sent_to_backend(), "c NOOP\r\n");
    assert_eq!(
        t.sent_to_client(),
        format!("{body}b OK Fetch completed (cache).\r\n")
    );
    // Behind a command in flight it is not planned (the backend may run
    // pipelined commands concurrently): forwarded.
    t.client("d UID FETCH 1 (BODY.PEEK[])\r\n");
    assert_eq!(t.sent_to_backend(), "d UID FETCH 1 (BODY.PEEK[])\r\n");
    t.backend("c OK\r\n");
    t.backend(&format!("{body}d OK Fetch completed.\r\n"));
    assert_eq!(
        t.sent_to_client(),
        format!("c OK\r\n{body}d OK Fetch completed.\r\n")
    );
    let ev = t.events();
    assert_eq!(
        ev,
        [
            "a uid_fetch ok",
            "b uid_fetch ok",
            "c noop ok",
            "d uid_fetch ok"
        ]
    );
}

#[test]
fn cache_answers_to_a_client_that_never_reads_are_bounded() {
    let mut t = T::with_hooks(cfg(), cache_hooks());
    t.select();
    let body = "x".repeat(100_000);
    let resp = format!("* 1 FETCH (UID 1 BODY[] {{{}}}\r\n{body})\r\n", body.len());
    t.client("a UID FETCH 1 (BODY.PEEK[])\r\n");
    t.backend(&format!("{resp}a OK Fetch completed.\r\n"));
    t.sent_to_backend();
    t.sent_to_client();
    let many: String = (0..50)
        .map(|i| format!("p{i} UID FETCH 1 (BODY.PEEK[])\r\n"))
        .collect();
    t.client(&many);
    // Answers stop at the bound (one may pass it), commands wait unread.
    let queued =
        t.s.client_transmit()
            .map(|_| t.s.to_client.len())
            .unwrap_or(0);
    assert!(queued < INJECT_MAX + resp.len() + 100, "{queued}");
    assert!(!t.s.wants_client_read());
    assert_eq!(t.sent_to_backend(), "");
    // Once the client reads, the rest is answered, in order.
    let mut all = String::new();
    for _ in 0..50 {
        all.push_str(&t.sent_to_client());
    }
    for i in 0..50 {
        assert!(
            all.contains(&format!("\r\np{i} OK Fetch completed (cache).\r\n")),
            "p{i}"
        );
    }
    assert!(t.s.wants_client_read());
}

#[test]
fn the_metrics_hook_records_commands_answered_anywhere() {
    let m = Arc::new(crate::metrics::Metrics::new().unwrap());
    let hooks: Vec<Box<dyn Hook>> = vec![Box::new(crate::relay::MetricsHook::new(m.clone()))];
    let mut t = T::with_hooks(cfg(), hooks);
    t.client("a1 UID FETCH 1 (FLAGS)\r\na2 LIST \"\" *\r\na4 COMPRESS DEFLATE\r\n");
    t.backend("* 1 FETCH (FLAGS ())\r\na1 OK done\r\na2 NO nope\r\n");
    t.client("i IDLE\r\n");
    t.backend("+ idling\r\n");
    assert_eq!(m.park.idling.get(), 1);
    let text = m.encode().unwrap();
    for want in [
        "imapmux_commands_total{command=\"uid_fetch\",result=\"ok\"} 1",
        "imapmux_commands_total{command=\"list\",result=\"no\"} 1",
        "imapmux_command_duration_seconds_count{command=\"uid_fetch\"} 1",
        "imapmux_commands_total{command=\"compress\",result=\"no\"} 1",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
    // A session that ends while idling leaves the gauge.
    drop(t);
    assert_eq!(m.park.idling.get(), 0);
}

/// The SELECT answer a parked session may give again: kept while only
/// IDLE, NOOP and CHECK ran and nothing changed, dropped otherwise.
#[test]
fn the_select_answer_is_kept_only_while_nothing_changed() {
    let park = |t: &mut T, tag: &str| {
        t.client(&format!("{tag} IDLE\r\n"));
        t.backend("+ idling\r\n");
        t.advance(Duration::from_secs(60));
        t.backend(&format!("* OK Still here\r\n{tag} OK Idle completed.\r\n"));
        match t.s.finished() {
            Some(Finish::Park(p)) => p
                .select_reply
                .as_ref()
                .map(|r| String::from_utf8(r.again("x", 0)).unwrap()),
            f => panic!("{f:?}"),
        }
    };
    let mut t = T::new(parking_cfg());
    t.select();
    t.client("n NOOP\r\n");
    t.backend("* OK Still here\r\nn OK NOOP completed.\r\n");
    assert_eq!(
        park(&mut t, "i1").as_deref(),
        Some(
            "* OK [CLOSED] Previous mailbox closed.\r\n* 2 EXISTS\r\n\
             * OK [UIDVALIDITY 7] UIDs valid\r\nx OK [READ-WRITE] Select completed.\r\n"
        )
    );
    // A change reported to the session, a command that may change the
    // mailbox, a FETCH whose answer carries a literal, a SELECT pipelined
    // behind another command: nothing kept.
    for (after_select, answer) in [
        ("n NOOP\r\n", "* 1 FETCH (FLAGS (\\Seen))\r\nn OK done\r\n"),
        ("f STORE 1 +FLAGS.SILENT (\\Seen)\r\n", "f OK done\r\n"),
        (
            "f FETCH 1 BODY.PEEK[]\r\n",
            "* 1 FETCH (BODY[] {1}\r\nx)\r\nf OK done\r\n",
        ),
    ] {
        let mut t = T::new(parking_cfg());
        t.select();
        t.client(after_select);
        t.backend(answer);
        assert_eq!(park(&mut t, "i1"), None, "{after_select}");
    }
    let mut t = T::new(parking_cfg());
    t.client("a NOOP\r\ns SELECT INBOX\r\n");
    t.backend("a OK done\r\n* 2 EXISTS\r\ns OK [READ-WRITE] Select completed.\r\n");
    assert_eq!(park(&mut t, "i1"), None);
    // A failed SELECT or one with unexpected data keeps nothing either.
    let mut t = T::new(parking_cfg());
    t.client("s SELECT INBOX\r\n");
    t.backend("* 2 EXISTS\r\n* OK [XVENDOR] hm\r\ns OK [READ-WRITE] Select completed.\r\n");
    assert_eq!(park(&mut t, "i1"), None);
}

/// COMPRESS=DEFLATE: answered here, the switch right after the OK, what
/// the client sent after the command handed to the stream as compressed
/// data; refused while anything is in flight, or twice, or for another
/// mechanism. The backend never sees it; its CAPABILITY gets ours.
#[test]
fn compress_is_answered_here_and_switches_after_its_ok() {
    let mut c = cfg();
    c.compress = Some(6);
    let mut t = T::new(c);
    // Not while a command is in flight, not for another mechanism.
    t.client("a NOOP\r\nb COMPRESS DEFLATE\r\nc COMPRESS LZMA\r\n");
    assert_eq!(t.sent_to_backend(), "a NOOP\r\n");
    t.backend("* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\na OK done\r\n");
    let out = t.sent_to_client();
    assert_eq!(
        out,
        "b NO [CANNOT] Can't use COMPRESS while other commands are running.\r\n\
         c BAD Unknown compression mechanism.\r\n\
         * CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE\r\na OK done\r\n"
    );
    assert_eq!(t.s.deflate_due(), None);
    // Quiet: OK, then nothing is read or sent until the driver switches.
    t.client("d COMPRESS deflate\r\n\x01\x02compressed");
    assert_eq!(t.sent_to_backend(), "");
    assert!(!t.s.wants_client_read() && !t.s.wants_backend_read());
    assert_eq!(t.s.deflate_due(), None, "the OK is not written yet");
    assert_eq!(t.sent_to_client(), "d OK Begin compression.\r\n");
    assert_eq!(t.s.deflate_due(), Some(6));
    let pending = t.s.deflate_started(t.now);
    assert_eq!(&pending[..], b"\x01\x02compressed");
    assert!(t.s.compressed() && t.s.wants_client_read());
    // Plain inside: commands go on; a second COMPRESS is refused.
    t.client("e NOOP\r\nf COMPRESS DEFLATE\r\n");
    assert_eq!(t.sent_to_backend(), "e NOOP\r\n");
    t.backend("e OK done\r\n");
    assert_eq!(
        t.sent_to_client(),
        // (Answered here at once, as other refusals are.)
        "f NO [COMPRESSIONACTIVE] DEFLATE active via COMPRESS.\r\ne OK done\r\n"
    );
    assert_eq!(
        t.events(),
        [
            "b compress no",
            "c compress no",
            "a noop ok",
            "d compress ok",
            "f compress no",
            "e noop ok"
        ]
    );
    // Without compression offered: refused as before, and the backend's
    // COMPRESS is not advertised.
    let mut t = T::new(cfg());
    t.client("a CAPABILITY\r\n");
    t.backend("* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE\r\na OK done\r\n");
    assert_eq!(
        t.sent_to_client(),
        "* CAPABILITY IMAP4rev1\r\na OK done\r\n"
    );
}

/// A BYE (shutdown, idle timeout) while COMPRESS is being switched on goes
/// out only once the stream is compressed, never plain after the OK.
#[test]
fn a_bye_during_the_compress_switch_waits_for_it() {
    let mut c = cfg();
    c.compress = Some(1);
    let mut t = T::new(c);
    t.client("a COMPRESS DEFLATE\r\n");
    assert_eq!(t.sent_to_client(), "a OK Begin compression.\r\n");
    t.s.shutdown(t.now);
    assert_eq!(t.sent_to_client(), "");
    assert_eq!(t.s.deflate_due(), Some(1));
    let _ = t.s.deflate_started(t.now);
    assert!(t.sent_to_client().starts_with("* BYE"));
}
#[path = "soft_close_tests.rs"]
mod soft_close;
