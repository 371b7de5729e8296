use std::time::{Duration, Instant};

use base64::Engine;

use super::*;

fn cfg(tls: bool) -> PreAuthConfig {
    PreAuthConfig {
        tls_active: tls,
        starttls_available: true,
        allow_plaintext_auth: false,
        sasl_oauth: false,
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
    assert_eq!(sent, "* BYE Logging out\r\nz OK Logout completed.\r\n");
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

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn oauth_cfg() -> PreAuthConfig {
    let mut c = cfg(true);
    c.sasl_oauth = true;
    c
}

/// A fresh session past its greeting.
fn session(c: PreAuthConfig) -> PreAuth {
    let mut s = PreAuth::new(c);
    drain(&mut s);
    s
}

#[test]
fn mechanisms_advertised() {
    let mut s = PreAuth::new(cfg(true));
    let (greeting, _) = drain(&mut s);
    assert!(greeting.contains(" AUTH=PLAIN AUTH=LOGIN]"), "{greeting}");
    assert!(!greeting.contains("OAUTHBEARER") && !greeting.contains("XOAUTH2"));
    let mut s = PreAuth::new(oauth_cfg());
    let (greeting, _) = drain(&mut s);
    assert!(
        greeting.contains(" AUTH=PLAIN AUTH=LOGIN AUTH=OAUTHBEARER AUTH=XOAUTH2]"),
        "{greeting}"
    );
    let (sent, _) = run(&mut s, b"a CAPABILITY\r\n");
    assert!(sent.contains("AUTH=XOAUTH2"), "{sent}");
    // no mechanism at all while logins are disabled
    let mut c = oauth_cfg();
    c.tls_active = false;
    let mut s = PreAuth::new(c);
    let (greeting, _) = drain(&mut s);
    assert!(
        greeting.contains("LOGINDISABLED") && !greeting.contains("AUTH="),
        "{greeting}"
    );
}

#[test]
fn authenticate_login_with_challenges() {
    let mut s = session(cfg(true));
    let (sent, ev) = run(&mut s, b"a AUTHENTICATE LOGIN\r\n");
    assert_eq!(sent, "+ VXNlcm5hbWU6\r\n");
    assert!(ev.is_empty());
    let (sent, ev) = run(&mut s, format!("{}\r\n", b64(b"user1")).as_bytes());
    assert_eq!(sent, "+ UGFzc3dvcmQ6\r\n");
    assert!(ev.is_empty());
    let (sent, ev) = run(&mut s, format!("{}\r\n", b64(b"p\"a ss")).as_bytes());
    assert!(sent.is_empty(), "{sent}");
    let (tag, creds) = login_event(&ev).expect("login");
    assert_eq!(tag, "a");
    assert_eq!(creds.user, "user1");
    assert_eq!(creds.password, b"p\"a ss");
    assert_eq!(creds.authzid, None);
    assert_eq!(creds.mechanism, Mechanism::Login);
}

#[test]
fn authenticate_login_with_sasl_ir() {
    let mut s = session(cfg(true));
    // The initial response is the user name; only the password is asked.
    let (sent, ev) = run(
        &mut s,
        format!("b authenticate login {}\r\n", b64(b"user2")).as_bytes(),
    );
    assert_eq!(sent, "+ UGFzc3dvcmQ6\r\n");
    assert!(ev.is_empty());
    let (_, ev) = run(&mut s, format!("{}\r\n", b64(b"pass2")).as_bytes());
    let (tag, creds) = login_event(&ev).expect("login");
    assert_eq!(
        (tag, creds.user.as_str(), &creds.password[..]),
        ("b", "user2", &b"pass2"[..])
    );
    // the password goes nowhere but the event
    s.login_failed(
        "b",
        "NO",
        Some("AUTHENTICATIONFAILED"),
        "Authentication failed.",
    );
    let (sent, _) = drain(&mut s);
    assert_eq!(
        sent,
        "b NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    );
}

#[test]
fn authenticate_login_cancel_bad_base64_and_empty_user() {
    let mut s = session(cfg(true));
    // cancel at the user name
    run(&mut s, b"a AUTHENTICATE LOGIN\r\n");
    let (sent, ev) = run(&mut s, b"*\r\n");
    assert_eq!(sent, "a BAD Authentication cancelled.\r\n");
    assert!(ev.is_empty());
    // cancel at the password
    run(
        &mut s,
        format!("b AUTHENTICATE LOGIN {}\r\n", b64(b"u")).as_bytes(),
    );
    let (sent, _) = run(&mut s, b"*\r\n");
    assert_eq!(sent, "b BAD Authentication cancelled.\r\n");
    // bad base64 at either step
    let (sent, _) = run(&mut s, b"c AUTHENTICATE LOGIN !!!\r\n");
    assert_eq!(sent, "c BAD Invalid base64 in SASL response.\r\n");
    run(&mut s, b"d AUTHENTICATE LOGIN\r\n");
    run(&mut s, format!("{}\r\n", b64(b"u")).as_bytes());
    let (sent, _) = run(&mut s, b"%%%\r\n");
    assert_eq!(sent, "d BAD Invalid base64 in SASL response.\r\n");
    // still usable (4 BADs of 5 allowed)
    let (sent, _) = run(&mut s, b"e NOOP\r\n");
    assert_eq!(sent, "e OK NOOP completed.\r\n");
    // an empty user name ("=" as initial response) is an authentication failure
    run(&mut s, b"f AUTHENTICATE LOGIN =\r\n");
    let (sent, ev) = run(&mut s, format!("{}\r\n", b64(b"p")).as_bytes());
    assert_eq!(
        sent,
        "f NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    );
    assert!(login_event(&ev).is_none());
}

#[test]
fn authenticate_login_refused_without_tls() {
    let mut s = session(cfg(false));
    let (sent, ev) = run(
        &mut s,
        format!("a AUTHENTICATE LOGIN {}\r\n", b64(b"u")).as_bytes(),
    );
    assert_eq!(
        sent,
        "a NO [PRIVACYREQUIRED] Plaintext authentication is disabled; use STARTTLS or the TLS port.\r\n"
    );
    assert!(ev.is_empty());
}

#[test]
fn authenticate_login_limits() {
    // max_literal 1024 bounds each decoded value, like a LOGIN literal
    let mut s = session(cfg(true));
    let (sent, _) = run(
        &mut s,
        format!("a AUTHENTICATE LOGIN {}\r\n", b64(&[b'u'; 1025])).as_bytes(),
    );
    assert_eq!(sent, "a BAD [TOOBIG] SASL response too large.\r\n");
    run(&mut s, b"b AUTHENTICATE LOGIN\r\n");
    run(&mut s, format!("{}\r\n", b64(&[b'u'; 1024])).as_bytes());
    let (sent, ev) = run(&mut s, format!("{}\r\n", b64(&[b'p'; 1025])).as_bytes());
    assert_eq!(sent, "b BAD [TOOBIG] SASL response too large.\r\n");
    assert!(login_event(&ev).is_none());
    // exactly at the bound is fine
    run(&mut s, b"c AUTHENTICATE LOGIN\r\n");
    run(&mut s, format!("{}\r\n", b64(&[b'u'; 1024])).as_bytes());
    let (_, ev) = run(&mut s, format!("{}\r\n", b64(&[b'p'; 1024])).as_bytes());
    let (_, creds) = login_event(&ev).expect("login");
    assert_eq!(creds.password.len(), 1024);

    // a response line above max_line (4096) ends the connection
    let mut s = session(cfg(true));
    run(&mut s, b"d AUTHENTICATE LOGIN\r\n");
    let (sent, ev) = run(&mut s, format!("{}\r\n", b64(&[b'u'; 4000])).as_bytes());
    assert_eq!(sent, "* BYE Line too long.\r\n");
    assert_eq!(ev, vec![Event::Close(CloseReason::ProtocolError)]);
}

#[test]
fn authenticate_plain_fields_bounded() {
    let mut s = session(cfg(true));
    let mut msg = b"\0user\0".to_vec();
    msg.extend_from_slice(&[b'p'; 1025]);
    let (sent, ev) = run(
        &mut s,
        format!("a AUTHENTICATE PLAIN {}\r\n", b64(&msg)).as_bytes(),
    );
    assert_eq!(sent, "a BAD [TOOBIG] SASL response too large.\r\n");
    assert!(login_event(&ev).is_none());
}

#[test]
fn oauth_not_offered_by_default() {
    let mut s = session(cfg(true));
    let ir = b64(b"n,a=u,\x01auth=Bearer tok\x01\x01");
    let (sent, ev) = run(
        &mut s,
        format!("a AUTHENTICATE OAUTHBEARER {ir}\r\nb AUTHENTICATE XOAUTH2\r\n").as_bytes(),
    );
    assert_eq!(
        sent,
        "a NO [CANNOT] Unsupported authentication mechanism.\r\n\
         b NO [CANNOT] Unsupported authentication mechanism.\r\n"
    );
    assert!(ev.is_empty());
}

#[test]
fn oauthbearer_with_and_without_sasl_ir() {
    const TOKEN: &str = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg==";
    let msg =
        format!("n,a=user1,\x01host=imap.example.com\x01port=993\x01auth=Bearer {TOKEN}\x01\x01");
    let mut s = session(oauth_cfg());
    let (sent, ev) = run(
        &mut s,
        format!("a AUTHENTICATE OAUTHBEARER {}\r\n", b64(msg.as_bytes())).as_bytes(),
    );
    assert!(sent.is_empty(), "{sent}");
    let (tag, creds) = login_event(&ev).expect("login");
    assert_eq!(tag, "a");
    assert_eq!(creds.user, "user1");
    assert_eq!(creds.password, TOKEN.as_bytes());
    assert_eq!(creds.mechanism, Mechanism::OAuthBearer);
    assert_eq!(creds.authzid, None);
    assert!(!format!("{creds:?}").contains("ya29"), "token in Debug");

    // after "+ ", a user name needing GS2 escapes, "y" flag, "bearer" lower case
    let mut s = session(oauth_cfg());
    let (sent, ev) = run(&mut s, b"b authenticate oauthbearer\r\n");
    assert_eq!(sent, "+ \r\n");
    assert!(ev.is_empty());
    let msg = b"y,a=we=2Cird=3Duser,\x01auth=bearer  t0k\x01\x01";
    let (_, ev) = run(&mut s, format!("{}\r\n", b64(msg)).as_bytes());
    let (tag, creds) = login_event(&ev).expect("login");
    assert_eq!(tag, "b");
    assert_eq!(creds.user, "we,ird=user");
    assert_eq!(creds.password, b"t0k");
}

#[test]
fn xoauth2_with_and_without_sasl_ir() {
    let mut s = session(oauth_cfg());
    let msg = b"user=someone@example.com\x01auth=Bearer vF9dft4qmTc2\x01\x01";
    let (sent, ev) = run(
        &mut s,
        format!("a AUTHENTICATE XOAUTH2 {}\r\n", b64(msg)).as_bytes(),
    );
    assert!(sent.is_empty(), "{sent}");
    let (_, creds) = login_event(&ev).expect("login");
    assert_eq!(creds.user, "someone@example.com");
    assert_eq!(creds.password, b"vF9dft4qmTc2");
    assert_eq!(creds.mechanism, Mechanism::XOAuth2);

    let mut s = session(oauth_cfg());
    let (sent, _) = run(&mut s, b"b AUTHENTICATE XOAUTH2\r\n");
    assert_eq!(sent, "+ \r\n");
    // fields in any order; unknown ones ignored
    let msg = b"auth=Bearer tok\x01x=y\x01user=u\x01\x01";
    let (_, ev) = run(&mut s, format!("{}\r\n", b64(msg)).as_bytes());
    let (tag, creds) = login_event(&ev).expect("login");
    assert_eq!((tag, creds.user.as_str()), ("b", "u"));
    assert_eq!(creds.password, b"tok");
    // the backend's verdict is relayed like any other
    s.login_failed(
        "b",
        "NO",
        Some("AUTHENTICATIONFAILED"),
        "Authentication failed.",
    );
    let (sent, _) = drain(&mut s);
    assert_eq!(
        sent,
        "b NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    );
}

#[test]
fn oauth_malformed_is_bad() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("OAUTHBEARER", b"n,a=u,auth=Bearer t", "missing separator"),
        ("OAUTHBEARER", b"\x01", "invalid GS2 header"),
        (
            "OAUTHBEARER",
            b"p=tls-unique,a=u,\x01auth=Bearer t\x01\x01",
            "channel binding is not supported",
        ),
        (
            "OAUTHBEARER",
            b"n,b=u,\x01auth=Bearer t\x01\x01",
            "invalid GS2 header",
        ),
        (
            "OAUTHBEARER",
            b"n,a=u=2D,\x01auth=Bearer t\x01\x01",
            "invalid a=",
        ),
        ("OAUTHBEARER", b"n,a=u,\x01host=x\x01\x01", "missing auth="),
        (
            "OAUTHBEARER",
            b"n,a=u,\x01auth=Basic dTpw\x01\x01",
            "auth= is not a bearer token",
        ),
        (
            "OAUTHBEARER",
            b"n,a=u,\x01auth=Bearer \x01\x01",
            "auth= is not a bearer token",
        ),
        (
            "OAUTHBEARER",
            b"n,a=u,\x01auth=Bearer a\x02b\x01\x01",
            "auth= is not a bearer token",
        ),
        ("OAUTHBEARER", b"n,a=u,\x01junk\x01\x01", "field without ="),
        ("XOAUTH2", b"user=u\x01\x01", "missing auth="),
        (
            "XOAUTH2",
            b"user=u\x01auth=Bearer a\x01auth=Bearer b\x01\x01",
            "duplicate auth=",
        ),
        (
            "XOAUTH2",
            b"user=u\x01user=v\x01auth=Bearer a\x01\x01",
            "duplicate user=",
        ),
        ("XOAUTH2", b"", "missing auth="),
    ];
    for (mech, msg, why) in cases {
        let mut s = session(oauth_cfg());
        let ir = if msg.is_empty() { "=".into() } else { b64(msg) };
        let (sent, ev) = run(&mut s, format!("t AUTHENTICATE {mech} {ir}\r\n").as_bytes());
        assert_eq!(
            sent,
            format!("t BAD Invalid {mech} SASL response: {why}.\r\n"),
            "{msg:?}"
        );
        assert!(ev.is_empty());
    }
    // cancel and bad base64 after "+ "
    let mut s = session(oauth_cfg());
    run(&mut s, b"a AUTHENTICATE OAUTHBEARER\r\n");
    let (sent, _) = run(&mut s, b"*\r\n");
    assert_eq!(sent, "a BAD Authentication cancelled.\r\n");
    run(&mut s, b"b AUTHENTICATE XOAUTH2\r\n");
    let (sent, _) = run(&mut s, b"not base64!\r\n");
    assert_eq!(sent, "b BAD Invalid base64 in SASL response.\r\n");
}

#[test]
fn oauth_without_user_is_an_auth_failure() {
    let mut s = session(oauth_cfg());
    let cases: [(&str, &[u8]); 3] = [
        // RFC 7628 allows omitting a= (the token names the user), but
        // without a user imapmux cannot route the login
        ("OAUTHBEARER", b"n,,\x01auth=Bearer t\x01\x01"),
        ("OAUTHBEARER", b"n,a=,\x01auth=Bearer t\x01\x01"),
        ("XOAUTH2", b"auth=Bearer t\x01\x01"),
    ];
    for (i, (mech, msg)) in cases.iter().enumerate() {
        let (sent, ev) = run(
            &mut s,
            format!("t{i} AUTHENTICATE {mech} {}\r\n", b64(msg)).as_bytes(),
        );
        assert!(
            sent.starts_with(&format!(
                "t{i} NO [AUTHENTICATIONFAILED] Authentication failed: a user name is required.\r\n"
            )),
            "{sent}"
        );
        assert!(login_event(&ev).is_none());
        // they count towards max_auth_failures (3)
        if i == 2 {
            assert!(
                sent.ends_with("* BYE Too many authentication failures.\r\n"),
                "{sent}"
            );
            assert_eq!(ev, vec![Event::Close(CloseReason::AuthFailures)]);
        }
    }
}

#[test]
fn oauth_limits() {
    // a long token (a JWT) is bounded by the line length only
    let token = "e".repeat(2500);
    let msg = format!("user=u\x01auth=Bearer {token}\x01\x01");
    let mut s = session(oauth_cfg());
    let (_, ev) = run(
        &mut s,
        format!("a AUTHENTICATE XOAUTH2 {}\r\n", b64(msg.as_bytes())).as_bytes(),
    );
    assert_eq!(login_event(&ev).expect("login").1.password.len(), 2500);
    // the user name by the literal bound
    let msg = format!("n,a={},\x01auth=Bearer t\x01\x01", "u".repeat(1025));
    let mut s = session(oauth_cfg());
    let (sent, _) = run(
        &mut s,
        format!("b AUTHENTICATE OAUTHBEARER {}\r\n", b64(msg.as_bytes())).as_bytes(),
    );
    assert_eq!(sent, "b BAD [TOOBIG] SASL response too large.\r\n");
    // and the whole response by max_line
    let mut s = session(oauth_cfg());
    run(&mut s, b"c AUTHENTICATE OAUTHBEARER\r\n");
    let msg = format!("n,a=u,\x01auth=Bearer {}\x01\x01", "e".repeat(4000));
    let (sent, ev) = run(&mut s, format!("{}\r\n", b64(msg.as_bytes())).as_bytes());
    assert_eq!(sent, "* BYE Line too long.\r\n");
    assert_eq!(ev, vec![Event::Close(CloseReason::ProtocolError)]);
}

#[test]
fn saslname_decoding() {
    assert_eq!(
        decode_saslname(b"a=2Cb=3Dc").as_deref(),
        Some(&b"a,b=c"[..])
    );
    assert_eq!(decode_saslname(b"").as_deref(), Some(&b""[..]));
    assert_eq!(decode_saslname(b"a=2"), None);
    assert_eq!(decode_saslname(b"a=2c"), None);
    assert_eq!(decode_saslname(b"a,b"), None);
}

#[test]
fn close_reasons_keep_their_labels() {
    for (r, label) in [
        (CloseReason::Logout, "logout"),
        (CloseReason::Timeout, "preauth_timeout"),
        (CloseReason::TooManyErrors, "too_many_errors"),
        (CloseReason::AuthFailures, "auth_failures"),
        (CloseReason::ProtocolError, "protocol_error"),
    ] {
        assert_eq!(EndReason::from(r).as_str(), label);
    }
}
