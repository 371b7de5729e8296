//! The operator's request to end a session (`close_softly`): `* BYE`
//! only between commands, never inside an APPEND, at the latest at the
//! deadline.

use super::*;

const BYE: &[u8] = b"* BYE [UNAVAILABLE] Session ended by the administrator.\r\n";

fn soft(t: &mut T, within: Duration) {
    let (now, deadline) = (t.now, t.now + within);
    t.s.close_softly(BYE, EndReason::Kicked, deadline, now);
}

#[test]
fn an_idle_session_between_commands_ends_at_once() {
    let mut t = T::new(cfg());
    t.client("a NOOP\r\n");
    t.sent_to_backend();
    t.backend("a OK done\r\n");
    t.sent_to_client();
    soft(&mut t, Duration::from_secs(30));
    assert_eq!(t.sent_to_client(), String::from_utf8_lossy(BYE));
    assert_eq!(t.s.finished(), Some(&Finish::End(EndReason::Kicked)));
}

#[test]
fn a_client_in_idle_is_at_a_safe_point() {
    let mut t = T::new(cfg());
    t.select();
    t.client("i IDLE\r\n");
    t.sent_to_backend();
    t.backend("+ idling\r\n");
    t.sent_to_client();
    soft(&mut t, Duration::from_secs(30));
    assert_eq!(t.sent_to_client(), String::from_utf8_lossy(BYE));
    assert_eq!(t.s.finished(), Some(&Finish::End(EndReason::Kicked)));
}

#[test]
fn an_append_under_way_finishes_first_and_nothing_new_starts() {
    let mut t = T::new(cfg());
    t.client("a APPEND INBOX {10}\r\n");
    assert_eq!(t.sent_to_backend(), "a APPEND INBOX {10}\r\n");
    t.backend("+ OK\r\n");
    assert_eq!(t.sent_to_client(), "+ OK\r\n");
    t.client("hello");
    soft(&mut t, Duration::from_secs(30));
    // Inside the literal: no BYE, the rest of the message goes on.
    assert_eq!(t.sent_to_client(), "");
    t.client(" worl");
    t.client("d\r\nb NOOP\r\n");
    assert_eq!(t.sent_to_backend(), "hello world\r\n");
    assert!(t.s.finished().is_none());
    t.now += Duration::from_secs(1);
    t.s.handle_timeout(t.now);
    assert_eq!(t.sent_to_client(), "");
    // The APPEND's answer arrives: now the BYE; NOOP never started.
    t.backend("a OK [APPENDUID 7 3] Append completed.\r\n");
    assert_eq!(
        t.sent_to_client(),
        format!(
            "a OK [APPENDUID 7 3] Append completed.\r\n{}",
            String::from_utf8_lossy(BYE)
        )
    );
    assert_eq!(t.sent_to_backend(), "");
    assert_eq!(t.s.finished(), Some(&Finish::End(EndReason::Kicked)));
}

#[test]
fn the_deadline_ends_a_session_that_never_reaches_a_safe_point() {
    let mut t = T::new(cfg());
    t.client("a APPEND INBOX {100}\r\n");
    t.sent_to_backend();
    t.backend("+ OK\r\n");
    t.sent_to_client();
    t.client("partial");
    soft(&mut t, Duration::from_secs(10));
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(10)));
    t.advance(Duration::from_secs(9));
    assert!(t.s.finished().is_none());
    t.advance(Duration::from_secs(1));
    assert_eq!(t.sent_to_client(), String::from_utf8_lossy(BYE));
    assert_eq!(t.s.finished(), Some(&Finish::End(EndReason::Kicked)));
}

#[test]
fn a_compress_switch_under_way_finishes_first() {
    let mut c = cfg();
    c.compress = Some(6);
    let mut t = T::new(c);
    t.client("d COMPRESS DEFLATE\r\n");
    soft(&mut t, Duration::from_secs(30));
    // Only the OK, uncompressed; the BYE waits for the switch.
    assert_eq!(t.sent_to_client(), "d OK Begin compression.\r\n");
    assert!(t.s.finished().is_none());
    assert_eq!(t.s.deflate_due(), Some(6));
    let now = t.now;
    t.s.deflate_started(now);
    assert_eq!(t.sent_to_client(), String::from_utf8_lossy(BYE));
    assert_eq!(t.s.finished(), Some(&Finish::End(EndReason::Kicked)));
}
