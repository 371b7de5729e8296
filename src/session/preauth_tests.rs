use std::time::{Duration, Instant};

use super::*;

fn cfg(tls: bool) -> PreAuthConfig {
    PreAuthConfig {
        tls_active: tls,
        starttls_available: true,
        allow_plaintext_auth: false,
        greeting: "hello".into(),
        max_line: 4096,
        max_literal: 1024,
        max_auth_failures: 3,
        max_bad_commands: 5,
        deadline: Instant::now() + Duration::from_secs(60),
    }
}

/// Feed input, collect everything sent and the other events.
fn run(s: &mut PreAuth, input: &[u8]) -> (String, Vec<Event>) {
    s.input(input);
    drain(s)
}

fn drain(s: &mut PreAuth) -> (String, Vec<Event>) {
    let mut sent = String::new();
    let mut other = Vec::new();
    while let Some(e) = s.poll() {
        match e {
            Event::Send(b) => sent.push_str(&String::from_utf8_lossy(&b)),
            e => other.push(e),
        }
    }
    (sent, other)
}

fn login_event(events: &[Event]) -> Option<(&str, &Credentials)> {
    events.iter().find_map(|e| match e {
        Event::Login { tag, credentials } => Some((tag.as_str(), credentials)),
        _ => None,
    })
}

#[test]
fn greeting_advertises_logindisabled_before_tls() {
    let mut s = PreAuth::new(cfg(false));
    let (sent, _) = drain(&mut s);
    assert_eq!(
        sent,
        "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID STARTTLS LOGINDISABLED] hello\r\n"
    );
    let mut s = PreAuth::new(cfg(true));
    let (sent, _) = drain(&mut s);
    assert!(
        sent.contains("AUTH=PLAIN")
            && !sent.contains("STARTTLS")
            && !sent.contains("LOGINDISABLED")
    );
}

#[test]
fn plaintext_login_refused_without_tls() {
    let mut s = PreAuth::new(cfg(false));
    drain(&mut s);
    let (sent, ev) = run(
        &mut s,
        b"a LOGIN user pass\r\nb AUTHENTICATE PLAIN AHUAcA==\r\n",
    );
    assert!(sent.contains("a NO [PRIVACYREQUIRED]"), "{sent}");
    assert!(sent.contains("b NO [PRIVACYREQUIRED]"), "{sent}");
    assert!(login_event(&ev).is_none());
}

#[test]
fn plaintext_login_allowed_by_config() {
    let mut c = cfg(false);
    c.allow_plaintext_auth = true;
    let mut s = PreAuth::new(c);
    let (greeting, _) = drain(&mut s);
    assert!(greeting.contains("AUTH=PLAIN"));
    let (_, ev) = run(&mut s, b"a LOGIN user pass\r\n");
    assert!(login_event(&ev).is_some());
}

#[test]
fn starttls_discards_pipelined_input() {
    let mut s = PreAuth::new(cfg(false));
    drain(&mut s);
    let (sent, ev) = run(&mut s, b"a STARTTLS\r\nb LOGIN injected pass\r\n");
    assert_eq!(sent, "a OK Begin TLS negotiation now.\r\n");
    assert_eq!(ev, vec![Event::StartTls]);
    // Nothing happens until the handshake completes.
    let (sent, ev) = drain(&mut s);
    assert!(sent.is_empty() && ev.is_empty());
    s.tls_established();
    let (sent, ev) = drain(&mut s);
    assert!(
        sent.is_empty() && ev.is_empty(),
        "pipelined command was executed: {sent} {ev:?}"
    );
    let (sent, _) = run(&mut s, b"c CAPABILITY\r\n");
    assert!(
        sent.contains("AUTH=PLAIN") && !sent.contains("STARTTLS"),
        "{sent}"
    );
    let (sent, _) = run(&mut s, b"d STARTTLS\r\n");
    assert!(sent.starts_with("d BAD"), "{sent}");
}

#[test]
fn login_forms_and_result() {
    let mut s = PreAuth::new(cfg(true));
    drain(&mut s);
    let (sent, ev) = run(&mut s, b"a1 LOGIN {5}\r\n");
    assert_eq!(sent, "+ OK\r\n");
    assert!(ev.is_empty());
    let (sent, ev) = run(&mut s, b"us er {4+}\r\np\"ss\r\n");
    assert!(sent.is_empty(), "{sent}");
    let (tag, creds) = login_event(&ev).expect("login");
    assert_eq!(tag, "a1");
    assert_eq!(creds.user, "us er");
    assert_eq!(creds.password, b"p\"ss");
    assert!(
        !format!("{creds:?}").contains("p\\\"ss"),
        "password leaked in Debug"
    );
    // pipelined after LOGIN: kept for the backend
    s.input(b"a2 SELECT INBOX\r\n");
    assert!(drain(&mut s).0.is_empty());
    s.login_ok("a1", "IMAP4rev1 IDLE");
    let (sent, _) = drain(&mut s);
    assert_eq!(sent, "a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n");
    assert!(s.is_logged_in());
    assert_eq!(&s.take_pipelined()[..], b"a2 SELECT INBOX\r\n");
}

#[test]
fn login_failure_code_and_limit() {
    let mut s = PreAuth::new(cfg(true));
    drain(&mut s);
    for i in 0..3 {
        let (_, ev) = run(&mut s, format!("t{i} LOGIN u \"bad\"\r\n").as_bytes());
        assert!(login_event(&ev).is_some());
        s.login_failed(
            &format!("t{i}"),
            "NO",
            Some("AUTHENTICATIONFAILED"),
            "Authentication failed.",
        );
        let (sent, ev) = drain(&mut s);
        assert!(
            sent.starts_with(&format!(
                "t{i} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
            )),
            "{sent}"
        );
        if i == 2 {
            assert!(sent.contains("* BYE"));
            assert_eq!(ev, vec![Event::Close(CloseReason::AuthFailures)]);
        }
    }
}

#[test]
fn authenticate_plain_with_and_without_sasl_ir() {
    let mut s = PreAuth::new(cfg(true));
    drain(&mut s);
    // "\0user1\0pass1"
    let (_, ev) = run(&mut s, b"a AUTHENTICATE PLAIN AHVzZXIxAHBhc3Mx\r\n");
    let (_, creds) = login_event(&ev).unwrap();
    assert_eq!(
        (creds.user.as_str(), &creds.password[..]),
        ("user1", &b"pass1"[..])
    );
    assert_eq!(creds.mechanism, Mechanism::Plain);

    let mut s = PreAuth::new(cfg(true));
    drain(&mut s);
    let (sent, ev) = run(&mut s, b"b authenticate plain\r\n");
    assert_eq!(sent, "+ \r\n");
    assert!(ev.is_empty());
    // authzid "admin", authcid "user1"
    let (_, ev) = run(&mut s, b"YWRtaW4AdXNlcjEAcGFzczE=\r\n");
    let (tag, creds) = login_event(&ev).unwrap();
    assert_eq!(tag, "b");
    assert_eq!(creds.authzid.as_deref(), Some("admin"));
}

#[test]
fn authenticate_cancel_and_garbage() {
    let mut s = PreAuth::new(cfg(true));
    drain(&mut s);
    run(&mut s, b"a AUTHENTICATE PLAIN\r\n");
    let (sent, ev) = run(&mut s, b"*\r\n");
    assert_eq!(sent, "a BAD Authentication cancelled.\r\n");
    assert!(ev.is_empty());
    run(&mut s, b"b AUTHENTICATE PLAIN\r\n");
    let (sent, _) = run(&mut s, b"!!!notbase64\r\n");
    assert!(sent.starts_with("b BAD"), "{sent}");
    let (sent, _) = run(&mut s, b"c AUTHENTICATE CRAM-MD5\r\n");
    assert!(sent.starts_with("c NO [CANNOT]"), "{sent}");
    // still usable
    let (sent, _) = run(&mut s, b"d NOOP\r\n");
    assert_eq!(sent, "d OK NOOP completed.\r\n");
}

#[test]
fn other_commands() {
    let mut s = PreAuth::new(cfg(true));
    drain(&mut s);
    let (sent, _) = run(&mut s, b"a ID (\"name\" \"test\" \"version\" \"1\")\r\n");
    assert!(sent.starts_with("* ID (\"name\" \"imapmux\""), "{sent}");
    assert!(sent.ends_with("a OK ID completed.\r\n"));
    assert_eq!(s.client_name.as_deref(), Some("test"));
    let (sent, _) = run(&mut s, b"b SELECT INBOX\r\n");
    assert_eq!(sent, "b BAD Command not permitted before login.\r\n");
    let (sent, _) = run(&mut s, b"c XYZZY\r\n");
    assert_eq!(sent, "c BAD Unknown command.\r\n");
    let (sent, _) = run(&mut s, b"\r\n");
    assert_eq!(sent, "");
    let (sent, _) = run(&mut s, b"(bad\r\n");
    assert_eq!(sent, "* BAD Invalid tag.\r\n");
    let (sent, ev) = run(&mut s, b"z LOGOUT\r\n");
    assert_eq!(sent, "* BYE Logging out.\r\nz OK Logout completed.\r\n");
    assert_eq!(ev, vec![Event::Close(CloseReason::Logout)]);
}

#[test]
fn too_many_bad_commands_closes() {
    let mut s = PreAuth::new(cfg(true));
    drain(&mut s);
    let (sent, ev) = run(&mut s, b"a X\r\nb X\r\nc X\r\nd X\r\ne X\r\nf NOOP\r\n");
    assert!(
        sent.ends_with("* BYE Too many invalid commands.\r\n"),
        "{sent}"
    );
    assert!(!sent.contains("f OK"));
    assert_eq!(ev, vec![Event::Close(CloseReason::TooManyErrors)]);
}

#[test]
fn oversized_literal_refused() {
    let mut s = PreAuth::new(cfg(true));
    drain(&mut s);
    let (sent, _) = run(&mut s, b"a LOGIN {999999}\r\n");
    assert_eq!(sent, "a BAD [TOOBIG] Literal too large.\r\n");
    let (sent, _) = run(&mut s, b"b NOOP\r\n");
    assert_eq!(sent, "b OK NOOP completed.\r\n");
    let (sent, ev) = run(&mut s, b"c LOGIN {999999+}\r\n");
    assert!(sent.starts_with("* BYE"));
    assert_eq!(ev, vec![Event::Close(CloseReason::ProtocolError)]);
}

#[test]
fn long_line_closes() {
    let mut s = PreAuth::new(cfg(true));
    drain(&mut s);
    let (sent, ev) = run(&mut s, &vec![b'a'; 10_000]);
    assert_eq!(sent, "* BYE Line too long.\r\n");
    assert_eq!(ev, vec![Event::Close(CloseReason::ProtocolError)]);
}

#[test]
fn timeout_sends_bye() {
    let c = cfg(true);
    let deadline = c.deadline;
    let mut s = PreAuth::new(c);
    drain(&mut s);
    s.timeout(deadline - Duration::from_secs(1));
    assert!(drain(&mut s).0.is_empty());
    s.timeout(deadline);
    let (sent, ev) = drain(&mut s);
    assert!(sent.starts_with("* BYE"));
    assert_eq!(ev, vec![Event::Close(CloseReason::Timeout)]);
}
