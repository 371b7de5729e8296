//! Parking clients that enabled CONDSTORE or QRESYNC (issue 16, item 6),
//! against a real Dovecot: they park like any other client, and while
//! parked and after re-attaching they see what they would have seen
//! attached: MODSEQ in FETCH, VANISHED instead of EXPUNGE and
//! HIGHESTMODSEQ with QRESYNC. Compared line for line with a client of
//! another user doing the same directly on Dovecot (MODSEQ values are
//! per mailbox, so they are compared with the mailbox's own instead).

mod common;

use std::time::Duration;

use common::*;

/// How the client turns CONDSTORE/QRESYNC on.
#[derive(Clone, Copy)]
enum Mode {
    EnableCondstore,
    EnableQresync,
    SelectCondstore,
}

impl Mode {
    fn qresync(self) -> bool {
        matches!(self, Mode::EnableQresync)
    }
}

/// Dovecot's MODSEQ values with the numbers taken out (and collected),
/// and the \Recent flag out of FLAGS lists (as [`normalized`] drops
/// `* N RECENT`: a parked view cannot know whether this session would
/// have been the one to see \Recent; IMAP4rev2 dropped it).
fn without_modseqs(text: &str, seen: &mut Vec<u64>) -> String {
    let text = text
        .replace(" \\Recent)", ")")
        .replace("(\\Recent)", "()")
        .replace("\\Recent ", "");
    let text = text.as_str();
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("MODSEQ") {
        let (head, tail) = rest.split_at(i + "MODSEQ".len());
        out.push_str(head);
        let skip = tail
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit())
            .map(|(i, _)| i)
            .filter(|i| *i <= 2);
        match skip {
            Some(i) => {
                let digits: String = tail[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                seen.push(digits.parse().unwrap());
                out.push_str(&tail[..i]);
                out.push('N');
                rest = &tail[i + digits.len()..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// One client's run: log in, turn the mode on, select, idle (parked when
/// through imapmux), end the IDLE; then another session of the same user
/// flags UID 2, expunges UID 3 and appends; then IDLE again (the changes
/// come in one batch), DONE, NOOP, and a FETCH that needs the backend.
/// Returns the transcript (MODSEQ numbers out) and the MODSEQs seen.
async fn run(
    s: &Setup,
    c: &mut ImapClient,
    user: &str,
    mode: Mode,
    via: bool,
) -> (String, Vec<u64>) {
    let mut log = String::new();
    let mut seen = Vec::new();
    match mode {
        Mode::EnableCondstore => log += &normalized(&c.cmd("ENABLE CONDSTORE").await.unwrap()),
        Mode::EnableQresync => log += &normalized(&c.cmd("ENABLE QRESYNC").await.unwrap()),
        Mode::SelectCondstore => {}
    }
    let select = match mode {
        Mode::SelectCondstore => "SELECT INBOX (CONDSTORE)",
        _ => "SELECT INBOX",
    };
    log += &without_modseqs(&normalized(&c.cmd(select).await.unwrap()), &mut seen);
    let tag = c.idle_start().await.unwrap();
    if via {
        wait_admin_metric(
            &s.admin,
            "imapmux_client_sessions_parked",
            1.0,
            Duration::from_secs(10),
        );
    }
    log += &normalized(&c.idle_done(&tag).await.unwrap());
    if !matches!(mode, Mode::SelectCondstore) {
        // A re-SELECT of the unchanged mailbox: answered while parked
        // (HIGHESTMODSEQ included, as Dovecot gives it).
        log += &without_modseqs(&normalized(&c.cmd(select).await.unwrap()), &mut seen);
    }
    // Changes by another session while the client does not idle.
    let mut other = direct(&s.d, user).await;
    flag_expunge_append(&mut other, (2, "\\Flagged"), 3).await;
    // IDLE again: everything in one batch, EXISTS last (then, with
    // QRESYNC, the HIGHESTMODSEQ).
    let tag = c.idle_start().await.unwrap();
    let last = if mode.qresync() {
        "HIGHESTMODSEQ"
    } else {
        "EXISTS"
    };
    let mut lines = Vec::new();
    loop {
        let l = c.idle_wait_for("", Duration::from_secs(10)).await.unwrap();
        let t = l.text();
        lines.push(t.clone());
        if t.contains(last) {
            break;
        }
    }
    for t in lines.iter().filter(|t| !t.ends_with(" RECENT")) {
        log += &without_modseqs(t, &mut seen);
        log.push('\n');
    }
    log += &without_modseqs(&normalized(&c.idle_done(&tag).await.unwrap()), &mut seen);
    log += &without_modseqs(&normalized(&c.cmd("NOOP").await.unwrap()), &mut seen);
    // A command that needs the backend (re-attaches when parked): the
    // new connection answers in the mode the client enabled.
    let r = c.cmd("FETCH 1:* (FLAGS)").await.unwrap();
    log += &without_modseqs(&normalized(&r), &mut seen);
    // Enabled on that connection too: a flag change reaches it with MODSEQ.
    other.cmd_ok("UID STORE 4 +FLAGS (\\Seen)").await.unwrap();
    let r = c.cmd("NOOP").await.unwrap();
    log += &without_modseqs(&normalized(&r), &mut seen);
    // MODSEQs the client saw are this mailbox's own.
    let r = other.cmd_ok("STATUS INBOX (HIGHESTMODSEQ)").await.unwrap();
    let mut highest = Vec::new();
    without_modseqs(&r.untagged().next().unwrap().text(), &mut highest);
    seen.push(highest[0]);
    (log, seen)
}

async fn parked_like_direct(mode: Mode) {
    let s = setup(10);
    let mut c = ImapClient::connect_plain(&s.addr).await.unwrap();
    c.login("user1", "pass1").await.unwrap().ok().unwrap();
    let mut d = ImapClient::connect_plain(&s.d.addr()).await.unwrap();
    d.login("user2", "pass2").await.unwrap().ok().unwrap();
    let (want, want_modseqs) = run(&s, &mut d, "user2", mode, false).await;
    let (got, got_modseqs) = run(&s, &mut c, "user1", mode, true).await;
    assert_eq!(got, want);
    // Same shape of MODSEQ values as direct (what rose, what stayed), and
    // the last one the client heard is the mailbox's HIGHESTMODSEQ.
    let rel = |v: &[u64]| -> Vec<i64> { v.iter().map(|m| *m as i64 - v[0] as i64).collect() };
    assert_eq!(
        rel(&got_modseqs),
        rel(&want_modseqs),
        "{got_modseqs:?} {want_modseqs:?}"
    );
    // Parked once, re-attached once (for the FETCH), no other login.
    assert_eq!(admin_metric(&s.admin, "imapmux_parks_total"), 1.0);
    assert_eq!(admin_metric(&s.admin, "imapmux_reattaches_total"), 1.0);
    // And it parks again after the re-attach, as any client does.
    let tag = c.idle_start().await.unwrap();
    wait_admin_metric(
        &s.admin,
        "imapmux_parks_total",
        2.0,
        Duration::from_secs(10),
    );
    assert!(c.idle_done(&tag).await.unwrap().is_ok());
}

#[tokio::test]
async fn an_enable_condstore_client_parks_and_sees_modseqs() {
    parked_like_direct(Mode::EnableCondstore).await;
}

#[tokio::test]
async fn a_qresync_client_parks_and_sees_vanished_and_highestmodseq() {
    parked_like_direct(Mode::EnableQresync).await;
}

#[tokio::test]
async fn a_select_condstore_client_parks_and_sees_modseqs() {
    parked_like_direct(Mode::SelectCondstore).await;
}

#[test]
fn modseq_numbers_are_taken_out() {
    let mut seen = Vec::new();
    assert_eq!(
        without_modseqs(
            "* 2 FETCH (UID 2 MODSEQ (216) FLAGS ())\n* OK [HIGHESTMODSEQ 219] Highest",
            &mut seen
        ),
        "* 2 FETCH (UID 2 MODSEQ (N) FLAGS ())\n* OK [HIGHESTMODSEQ N] Highest"
    );
    assert_eq!(seen, vec![216, 219]);
}
