//! Transcript tests of the POP3 AUTHORIZATION state: bytes in, events out.

use std::time::{Duration, Instant};

use super::*;

fn cfg(tls: bool, starttls: bool, plaintext: bool) -> Pop3Config {
    Pop3Config {
        tls_active: tls,
        starttls_available: starttls,
        allow_plaintext_auth: plaintext,
        greeting: "imapmux ready.".into(),
        max_line: 1024,
        max_auth_failures: 2,
        max_bad_commands: 4,
        deadline: Instant::now() + Duration::from_secs(60),
    }
}

/// Everything sent until the machine needs input or I/O; the I/O event
/// (if any) is returned too.
fn drain(p: &mut Pop3PreAuth) -> (String, Option<FrontEvent>) {
    let mut out = String::new();
    while let Some(ev) = p.poll() {
        match ev {
            FrontEvent::Send(b) => out.push_str(&String::from_utf8_lossy(&b)),
            other => return (out, Some(other)),
        }
    }
    (out, None)
}

fn feed(p: &mut Pop3PreAuth, input: &str) -> (String, Option<FrontEvent>) {
    p.input(input.as_bytes());
    drain(p)
}

fn tls_port() -> Pop3PreAuth {
    let mut p = Pop3PreAuth::new(cfg(true, false, false));
    assert_eq!(drain(&mut p).0, "+OK imapmux ready.\r\n");
    p
}

#[test]
fn capa_before_and_after_stls() {
    let mut p = Pop3PreAuth::new(cfg(false, true, false));
    drain(&mut p);
    let (out, ev) = feed(&mut p, "CAPA\r\n");
    assert!(out.starts_with("+OK"), "{out}");
    assert!(out.contains("\r\nSTLS\r\n"), "{out}");
    assert!(!out.contains("USER") && !out.contains("SASL"), "{out}");
    assert!(out.ends_with("\r\n.\r\n"), "{out}");
    assert_eq!(ev, None);
    let (out, ev) = feed(&mut p, "stls\r\n");
    assert_eq!(out, "+OK Begin TLS negotiation now.\r\n");
    assert_eq!(ev, Some(FrontEvent::StartTls));
    p.tls_established();
    let (out, _) = feed(&mut p, "CAPA\r\n");
    assert!(out.contains("\r\nUSER\r\nSASL PLAIN LOGIN\r\n"), "{out}");
    assert!(!out.contains("STLS"), "{out}");
    let (out, _) = feed(&mut p, "STLS\r\n");
    assert_eq!(out, "-ERR TLS is already active.\r\n");
}

#[test]
fn login_refused_before_tls() {
    let mut p = Pop3PreAuth::new(cfg(false, true, false));
    drain(&mut p);
    for cmd in [
        "USER alice\r\n",
        "PASS secret\r\n",
        "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
    ] {
        let (out, ev) = feed(&mut p, cmd);
        assert!(
            out.starts_with("-ERR [AUTH] Plaintext authentication disallowed"),
            "{cmd}: {out}"
        );
        assert_eq!(ev, None, "{cmd}");
    }
}

#[test]
fn pipelined_after_stls_is_dropped() {
    let mut p = Pop3PreAuth::new(cfg(false, true, false));
    drain(&mut p);
    // A man in the middle appends commands to the client's STLS: they must
    // not run once TLS is up (CVE-2011-0411 class).
    let (out, ev) = feed(&mut p, "STLS\r\nUSER mallory\r\nPASS x\r\n");
    assert_eq!(out, "+OK Begin TLS negotiation now.\r\n");
    assert_eq!(ev, Some(FrontEvent::StartTls));
    // Plaintext arriving before the handshake finished is ignored too: the
    // driver hands the socket to TLS; here nothing is left to run.
    p.tls_established();
    assert_eq!(drain(&mut p), (String::new(), None));
    let (out, ev) = feed(&mut p, "PASS x\r\n");
    assert_eq!(out, "-ERR USER first.\r\n");
    assert_eq!(ev, None);
}

#[test]
fn user_pass_login() {
    let mut p = tls_port();
    assert_eq!(feed(&mut p, "USER alice\r\n").0, "+OK\r\n");
    let (out, ev) = feed(&mut p, "PASS pass word\r\nSTAT\r\n");
    assert_eq!(out, "");
    let Some(FrontEvent::Login(c)) = ev else {
        panic!("no login: {ev:?}");
    };
    assert_eq!(c.user, "alice");
    assert_eq!(c.password, b"pass word");
    assert_eq!(c.mechanism, Mechanism::Login);
    // no more input is processed while the login runs
    assert_eq!(drain(&mut p), (String::new(), None));
    p.login_ok();
    assert_eq!(drain(&mut p).0, "+OK Logged in.\r\n");
    // STAT was pipelined: it goes to the backend
    assert_eq!(&p.take_pipelined()[..], b"STAT\r\n");
}

#[test]
fn auth_plain_with_and_without_initial_response() {
    let mut p = tls_port();
    let (_, ev) = feed(&mut p, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    let Some(FrontEvent::Login(c)) = ev else {
        panic!("{ev:?}");
    };
    assert_eq!(
        (c.user.as_str(), &c.password[..]),
        ("alice", &b"secret"[..])
    );
    p.login_failed(&Refusal {
        status: "NO",
        code: Some("AUTHENTICATIONFAILED"),
        text: "Authentication failed.",
    });
    assert_eq!(drain(&mut p).0, "-ERR [AUTH] Authentication failed.\r\n");
    let (out, ev) = feed(&mut p, "AUTH PLAIN\r\n");
    assert_eq!((out.as_str(), ev), ("+ \r\n", None));
    let (_, ev) = feed(&mut p, "YWRtaW4AYWxpY2UAc2VjcmV0\r\n");
    let Some(FrontEvent::Login(c)) = ev else {
        panic!("{ev:?}");
    };
    assert_eq!(c.authzid.as_deref(), Some("admin"));
    assert_eq!(c.mechanism, Mechanism::Plain);
}

#[test]
fn auth_login_and_cancel() {
    let mut p = tls_port();
    assert_eq!(feed(&mut p, "AUTH LOGIN\r\n").0, "+ VXNlcm5hbWU6\r\n");
    assert_eq!(feed(&mut p, "YWxpY2U=\r\n").0, "+ UGFzc3dvcmQ6\r\n");
    let (_, ev) = feed(&mut p, "c2VjcmV0\r\n");
    assert!(
        matches!(ev, Some(FrontEvent::Login(c)) if c.user == "alice" && c.password == b"secret")
    );
    let mut p = tls_port();
    assert_eq!(feed(&mut p, "AUTH PLAIN\r\n").0, "+ \r\n");
    assert_eq!(
        feed(&mut p, "*\r\n").0,
        "-ERR Authentication cancelled.\r\n"
    );
    assert_eq!(
        feed(&mut p, "AUTH CRAM-MD5\r\n").0,
        "-ERR Unsupported authentication mechanism.\r\n"
    );
    assert_eq!(feed(&mut p, "AUTH\r\n").0, "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
}

#[test]
fn refusals_in_pop3_codes() {
    for (code, want) in [
        (Some("UNAVAILABLE"), "-ERR [SYS/TEMP] t\r\n"),
        (Some("LIMIT"), "-ERR [IN-USE] t\r\n"),
        (Some("AUTHENTICATIONFAILED"), "-ERR [AUTH] t\r\n"),
        (None, "-ERR [AUTH] t\r\n"),
    ] {
        let r = Refusal {
            status: "NO",
            code,
            text: "t",
        };
        assert_eq!(refusal_line(&r), want);
    }
    // text from elsewhere cannot add lines
    let r = Refusal {
        status: "NO",
        code: None,
        text: "a\r\n+OK forged",
    };
    assert_eq!(refusal_line(&r).matches("\r\n").count(), 1);
}

#[test]
fn auth_failures_close() {
    let mut p = tls_port();
    let refuse = Refusal {
        status: "NO",
        code: None,
        text: "no",
    };
    for i in 0..2 {
        feed(&mut p, "USER a\r\n");
        let (_, ev) = feed(&mut p, "PASS b\r\n");
        assert!(matches!(ev, Some(FrontEvent::Login(_))), "{i}");
        p.login_failed(&refuse);
    }
    let (out, ev) = drain(&mut p);
    assert!(
        out.ends_with("-ERR Too many authentication failures.\r\n"),
        "{out}"
    );
    assert_eq!(ev, Some(FrontEvent::Close(CloseReason::AuthFailures)));
}

#[test]
fn bad_commands_and_long_lines_close() {
    let mut p = tls_port();
    assert_eq!(feed(&mut p, "RETR 1\r\n").0, "-ERR Not logged in.\r\n");
    assert_eq!(
        feed(&mut p, "APOP a b\r\n").0,
        "-ERR APOP is not supported.\r\n"
    );
    assert_eq!(feed(&mut p, "XYZZY\r\n").0, "-ERR Unknown command.\r\n");
    let (out, ev) = feed(&mut p, "PASS x\r\n");
    assert!(
        out.ends_with("-ERR Too many invalid commands.\r\n"),
        "{out}"
    );
    assert_eq!(ev, Some(FrontEvent::Close(CloseReason::TooManyErrors)));

    let mut p = tls_port();
    let (out, ev) = feed(&mut p, &"A".repeat(2000));
    assert_eq!(out, "-ERR Line too long.\r\n");
    assert_eq!(ev, Some(FrontEvent::Close(CloseReason::ProtocolError)));
    // fed after close: ignored
    assert_eq!(feed(&mut p, "CAPA\r\n"), (String::new(), None));
}

#[test]
fn bytes_one_at_a_time_and_bad_names() {
    let mut p = tls_port();
    let mut out = String::new();
    for b in "USER alice\r\n".bytes() {
        out.push_str(&feed(&mut p, &(b as char).to_string()).0);
    }
    assert_eq!(out, "+OK\r\n");
    // a NUL in a SASL user name: refused here, counted as a failure
    let (out, ev) = feed(&mut p, "AUTH PLAIN AGEKYgBj\r\n");
    assert_eq!(out, "-ERR [AUTH] Authentication failed.\r\n");
    assert_eq!(ev, None);
}

#[test]
fn quit_and_timeout() {
    let mut p = tls_port();
    assert_eq!(
        feed(&mut p, "QUIT\r\n"),
        (
            "+OK Logging out.\r\n".into(),
            Some(FrontEvent::Close(CloseReason::Logout))
        )
    );
    let mut p = tls_port();
    let late = p.deadline() + Duration::from_secs(1);
    p.timeout(late);
    assert_eq!(
        drain(&mut p),
        (
            "-ERR Disconnected for inactivity.\r\n".into(),
            Some(FrontEvent::Close(CloseReason::Timeout))
        )
    );
}

/// Hostile input: random bytes (biased towards the syntax) in random
/// chunks never panic, and every poll loop ends.
#[test]
fn random_input_never_panics() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"USERPASAUTHPLAINLOGINSTLSCAPAQUIT \r\n*=+-{}AHVzZXIx\x00\xff";
    for _ in 0..300 {
        let mut p = Pop3PreAuth::new(cfg(next() % 2 == 0, true, next() % 2 == 0));
        for _ in 0..20 {
            let n = (next() % 64) as usize;
            let chunk: Vec<u8> = (0..n)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            p.input(&chunk);
            let mut polls = 0;
            while let Some(ev) = p.poll() {
                polls += 1;
                assert!(polls < 10_000);
                match ev {
                    FrontEvent::StartTls => p.tls_established(),
                    FrontEvent::Login(_) if next() % 2 == 0 => p.login_ok(),
                    FrontEvent::Login(_) => p.login_failed(&Refusal {
                        status: "NO",
                        code: None,
                        text: "no",
                    }),
                    _ => {}
                }
            }
        }
    }
}
