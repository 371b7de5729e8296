//! What imapmux reads from backend responses outside the FETCH cache:
//! `imap::response` (`kind_of`, `parse_status`, `parse_capability_data`,
//! `StatusLine::{code_name, capabilities}`), the login exchange of
//! `backend::login` / `backend::client_capabilities` (capabilities and
//! challenges come from the backend), the selected-mailbox tracker of
//! `imap::mailbox` (EXISTS, EXPUNGE, VANISHED, UIDVALIDITY, tagged
//! completions, the SELECT answer it keeps) and the relay's command ledger (`relay::Ledger`).
//!
//! Input: a session transcript. Lines starting `C: ` are client command
//! lines (the rest of the line, CRLF included); everything else is backend
//! output, cut by the framer (64 KiB lines) as the backend reader does.
//!
//! Invariants: no panic and no time-out (every call here is made once per
//! backend line); capabilities that reach the client carry no CR or LF, status
//! text none of CR, LF or NUL; the login commands built from backend capabilities are
//! whole CRLF lines.
#![no_main]

use std::time::Instant;

use bytes::BytesMut;
use imapmux::backend::client_capabilities;
use imapmux::backend::login::{describe_challenge, login_steps, LoginStep};
use imapmux::imap::framing::{Frame, Framer};
use imapmux::imap::mailbox::{expand_uid_set, Tracker};
use imapmux::imap::response::{kind_of, parse_capability_data, parse_status, sanitize_text};
use imapmux::relay::{Command, Ledger, MAX_IN_FLIGHT};
use imapmux::session::{Credentials, Mechanism};
use imapmux_fuzz::assert_line_safe;
use libfuzzer_sys::fuzz_target;

fn creds(mechanism: Mechanism, authzid: Option<&str>) -> Credentials {
    Credentials {
        user: "user@example.org".into(),
        password: match mechanism {
            Mechanism::OAuthBearer | Mechanism::XOAuth2 => b"tok.en-1".to_vec(),
            _ => b"p\"w d\\".to_vec(),
        },
        authzid: authzid.map(str::to_string),
        mechanism,
    }
}

/// The login exchange for capabilities the backend announced.
fn check_login(caps: &[String]) {
    // Passed to the client inside its tagged OK: no line break may get
    // through. (Other bytes are the backend's business: after login its
    // output reaches the client verbatim anyway.)
    let client = client_capabilities(caps);
    assert!(
        !client.contains(['\r', '\n']),
        "line break in capabilities: {client:?}"
    );
    for (mech, authzid) in [
        (Mechanism::Login, None),
        (Mechanism::Plain, Some("master")),
        (Mechanism::OAuthBearer, None),
        (Mechanism::XOAuth2, None),
    ] {
        let Ok(steps) = login_steps("L1", &creds(mech, authzid), caps) else {
            continue;
        };
        assert!(!steps.is_empty());
        for step in steps {
            let (LoginStep::Send(b)
            | LoginStep::AfterContinuation(b)
            | LoginStep::OnErrorChallenge(b)) = step;
            assert!(b.ends_with(b"\r\n"), "login step without CRLF");
        }
    }
}

fn backend_line(line: &[u8], tracker: &mut Tracker, ledger: &mut Ledger, now: Instant) {
    let _ = kind_of(line);
    if line.starts_with(b"+") {
        let d = describe_challenge(line);
        assert!(d.chars().count() <= 200 && !d.chars().any(char::is_control));
    }
    if let Some(st) = parse_status(line) {
        let _ = st.code_name();
        if let Some(caps) = st.capabilities() {
            check_login(&caps);
        }
        // Code and text of a refused login are shown to the client.
        assert_line_safe(&sanitize_text(&st.text));
        if let Some(code) = &st.code {
            assert_line_safe(&sanitize_text(code));
        }
    }
    if let Some(caps) = parse_capability_data(line) {
        check_login(&caps);
    }
    for change in tracker.on_response(line) {
        let _ = change;
    }
    let _ = tracker.changing();
    // A kept SELECT answer, given again: whole CRLF lines, the tag's last.
    if let Some(r) = tracker.select_reply() {
        let again = r.again("t1", 42);
        assert!(again.ends_with(b"\r\n") && r.heap_size() < 4096);
        let last = again
            .split(|&b| b == b'\n')
            .rev()
            .nth(1)
            .unwrap_or_default();
        // The backend's own completion text, after the new tag (its
        // status word as the backend spelt it: `ok` is OK too).
        let status = last.get(3..6).unwrap_or_default();
        assert!(
            last.starts_with(b"t1 ") && status.eq_ignore_ascii_case(b"OK "),
            "{last:?}"
        );
    }
    if let Some(s) = &tracker.selected {
        let n = s.exists();
        let _ = (
            s.uid_of(n),
            s.uid_of(1),
            s.complete_uids().map(<[u32]>::len),
        );
    }
    let _ = ledger.answer(line, now);
}

fuzz_target!(|data: &[u8]| {
    imapmux_fuzz::report_stack_overflows();
    let now = Instant::now();
    let mut tracker = Tracker::default();
    let mut ledger = Ledger::default();
    let mut framer = Framer::new(65_536);
    let mut buf = BytesMut::new();
    for piece in data.split_inclusive(|b| *b == b'\n') {
        if let Some(cmd) = piece.strip_prefix(b"C: ") {
            tracker.on_command(cmd);
            if let Some(c) = Command::parse(cmd, false) {
                if !ledger.is_full() {
                    ledger.push(&c, now);
                }
            }
            assert!(ledger.len() <= MAX_IN_FLIGHT);
            continue;
        }
        buf.extend_from_slice(piece);
        while let Some(frame) = framer.next_frame(&mut buf) {
            if let Frame::Line {
                bytes, first: true, ..
            } = &frame
            {
                backend_line(bytes, &mut tracker, &mut ledger, now);
            }
        }
    }
    // The UID set syntax of VANISHED on its own.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(uids) = expand_uid_set(text) {
            assert!(uids.len() <= 100_000 + 1);
        }
    }
});
