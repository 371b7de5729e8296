//! Transcript tests of the ManageSieve non-authenticated state.

use std::time::{Duration, Instant};

use super::*;

const SIEVE: &str = "\"SIEVE\" \"fileinto\"\r\n";

fn cfg(tls: bool, starttls: bool, plaintext: bool) -> SieveConfig {
    SieveConfig {
        tls_active: tls,
        starttls_available: starttls,
        allow_plaintext_auth: plaintext,
        greeting: "imapmux ready.".into(),
        sieve_capabilities: SIEVE.into(),
        max_line: 1024,
        max_literal: 256,
        max_auth_failures: 2,
        max_bad_commands: 4,
        deadline: Instant::now() + Duration::from_secs(60),
    }
}

fn drain(p: &mut SievePreAuth) -> (String, Option<FrontEvent>) {
    let mut out = String::new();
    while let Some(ev) = p.poll() {
        match ev {
            FrontEvent::Send(b) => out.push_str(&String::from_utf8_lossy(&b)),
            other => return (out, Some(other)),
        }
    }
    (out, None)
}

fn feed(p: &mut SievePreAuth, input: &str) -> (String, Option<FrontEvent>) {
    p.input(input.as_bytes());
    drain(p)
}

fn login_of(ev: Option<FrontEvent>) -> crate::identity::Credentials {
    match ev {
        Some(FrontEvent::Login(c)) => c,
        other => panic!("no login: {other:?}"),
    }
}

#[test]
fn greeting_starttls_and_capabilities_again() {
    let mut p = SievePreAuth::new(cfg(false, true, false));
    let (out, _) = drain(&mut p);
    assert_eq!(
        out,
        "\"IMPLEMENTATION\" \"imapmux\"\r\n\"SASL\" \"\"\r\n\"SIEVE\" \"fileinto\"\r\n\"STARTTLS\"\r\n\"VERSION\" \"1.0\"\r\nOK \"imapmux ready.\"\r\n"
    );
    let (out, ev) = feed(&mut p, "AUTHENTICATE \"PLAIN\" \"AGEAYg==\"\r\n");
    assert!(out.starts_with("NO (ENCRYPT-NEEDED)"), "{out}");
    assert_eq!(ev, None);
    // pipelined plaintext after STARTTLS is dropped
    let (out, ev) = feed(
        &mut p,
        "STARTTLS\r\nAUTHENTICATE \"PLAIN\" \"AGEAYg==\"\r\n",
    );
    assert_eq!(out, "OK \"Begin TLS negotiation now.\"\r\n");
    assert_eq!(ev, Some(FrontEvent::StartTls));
    p.tls_established();
    let (out, ev) = drain(&mut p);
    assert!(out.contains("\"SASL\" \"PLAIN LOGIN\"\r\n"), "{out}");
    assert!(!out.contains("STARTTLS"), "{out}");
    assert!(
        out.ends_with("OK \"TLS negotiation successful.\"\r\n"),
        "{out}"
    );
    assert_eq!(ev, None);
}

#[test]
fn authenticate_plain_initial_response_quoted_and_literal() {
    let mut p = SievePreAuth::new(cfg(true, false, false));
    drain(&mut p);
    // base64("\0alice\0secret")
    let c = login_of(
        feed(
            &mut p,
            "AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHNlY3JldA==\"\r\n",
        )
        .1,
    );
    assert_eq!(
        (c.user.as_str(), &c.password[..]),
        ("alice", &b"secret"[..])
    );
    p.login_failed(&Refusal {
        status: "NO",
        code: Some("AUTHENTICATIONFAILED"),
        text: "Authentication failed.",
    });
    assert_eq!(drain(&mut p).0, "NO \"Authentication failed.\"\r\n");
    let c = login_of(
        feed(
            &mut p,
            "Authenticate \"PLAIN\" {20+}\r\nAGFsaWNlAHNlY3JldA==\r\nLISTSCRIPTS\r\n",
        )
        .1,
    );
    assert_eq!(c.user, "alice");
    p.login_ok();
    assert_eq!(drain(&mut p).0, "OK \"Logged in.\"\r\n");
    assert_eq!(&p.take_pipelined()[..], b"LISTSCRIPTS\r\n");
}

#[test]
fn authenticate_plain_without_initial_response() {
    let mut p = SievePreAuth::new(cfg(true, false, false));
    drain(&mut p);
    assert_eq!(feed(&mut p, "AUTHENTICATE \"PLAIN\"\r\n").0, "\"\"\r\n");
    let c = login_of(feed(&mut p, "{20+}\r\nAGFsaWNlAHNlY3JldA==\r\n").1);
    assert_eq!(c.user, "alice");
    p.login_failed(&Refusal {
        status: "NO",
        code: Some("UNAVAILABLE"),
        text: "try \"later\"",
    });
    assert_eq!(drain(&mut p).0, "NO (TRYLATER) \"try \\\"later\\\"\"\r\n");
    assert_eq!(feed(&mut p, "AUTHENTICATE \"PLAIN\"\r\n").0, "\"\"\r\n");
    assert_eq!(
        feed(&mut p, "\"*\"\r\n").0,
        "NO \"Authentication cancelled.\"\r\n"
    );
    assert_eq!(
        feed(&mut p, "AUTHENTICATE \"LOGIN\"\r\n").0,
        "\"VXNlcm5hbWU6\"\r\n"
    );
    assert_eq!(feed(&mut p, "\"YWxpY2U=\"\r\n").0, "\"UGFzc3dvcmQ6\"\r\n");
    let c = login_of(feed(&mut p, "\"c2VjcmV0\"\r\n").1);
    assert_eq!(
        (c.user.as_str(), &c.password[..]),
        ("alice", &b"secret"[..])
    );
}

#[test]
fn commands_before_login() {
    let mut p = SievePreAuth::new(cfg(true, false, false));
    drain(&mut p);
    let (out, _) = feed(&mut p, "capability\r\n");
    assert!(
        out.ends_with("\"VERSION\" \"1.0\"\r\nOK \"Capability completed.\"\r\n"),
        "{out}"
    );
    assert_eq!(feed(&mut p, "NOOP\r\n").0, "OK \"NOOP completed.\"\r\n");
    assert_eq!(
        feed(&mut p, "NOOP \"STARTTLS-RESYNC-CAPA\"\r\n").0,
        "OK (TAG \"STARTTLS-RESYNC-CAPA\") \"NOOP completed.\"\r\n"
    );
    assert_eq!(
        feed(&mut p, "LISTSCRIPTS\r\n").0,
        "NO \"Authenticate first.\"\r\n"
    );
    assert_eq!(
        feed(&mut p, "AUTHENTICATE \"GSSAPI\"\r\n").0,
        "NO \"Unsupported authentication mechanism.\"\r\n"
    );
    assert_eq!(
        feed(&mut p, "\"unterminated\r\n").0,
        "NO \"Syntax error.\"\r\n"
    );
    let (out, ev) = feed(&mut p, "FOO\r\n");
    assert!(
        out.ends_with("BYE \"Too many invalid commands.\"\r\n"),
        "{out}"
    );
    assert_eq!(ev, Some(FrontEvent::Close(CloseReason::TooManyErrors)));
    let mut p = SievePreAuth::new(cfg(true, false, false));
    drain(&mut p);
    assert_eq!(
        feed(&mut p, "LOGOUT\r\n"),
        (
            "OK \"Logout completed.\"\r\n".into(),
            Some(FrontEvent::Close(CloseReason::Logout))
        )
    );
}

#[test]
fn bounds() {
    let mut p = SievePreAuth::new(cfg(true, false, false));
    drain(&mut p);
    let (out, ev) = feed(&mut p, "AUTHENTICATE \"PLAIN\" {100000+}\r\n");
    assert_eq!(out, "BYE \"Literal too large.\"\r\n");
    assert_eq!(ev, Some(FrontEvent::Close(CloseReason::ProtocolError)));
    let mut p = SievePreAuth::new(cfg(true, false, false));
    drain(&mut p);
    let (out, ev) = feed(&mut p, &"A".repeat(5000));
    assert_eq!(out, "BYE \"Line too long.\"\r\n");
    assert_eq!(ev, Some(FrontEvent::Close(CloseReason::ProtocolError)));
    let mut p = SievePreAuth::new(cfg(true, false, false));
    let late = p.deadline() + Duration::from_secs(1);
    drain(&mut p);
    p.timeout(late);
    assert_eq!(
        drain(&mut p),
        (
            "BYE \"Disconnected for inactivity.\"\r\n".into(),
            Some(FrontEvent::Close(CloseReason::Timeout))
        )
    );
}

#[test]
fn auth_failures_close_and_bad_names() {
    let mut p = SievePreAuth::new(cfg(true, false, false));
    drain(&mut p);
    // base64("\0a\nb\0c"): a line break in the user name
    assert_eq!(
        feed(&mut p, "AUTHENTICATE \"PLAIN\" \"AGEKYgBj\"\r\n").0,
        "NO \"Authentication failed.\"\r\n"
    );
    login_of(feed(&mut p, "AUTHENTICATE \"PLAIN\" \"AGEAYg==\"\r\n").1);
    p.login_failed(&Refusal {
        status: "NO",
        code: None,
        text: "no",
    });
    let (out, ev) = drain(&mut p);
    assert!(
        out.ends_with("BYE \"Too many authentication failures.\"\r\n"),
        "{out}"
    );
    assert_eq!(ev, Some(FrontEvent::Close(CloseReason::AuthFailures)));
}

#[test]
fn tokenizer() {
    let parts = vec![
        (
            Bytes::from_static(b"PUTSCRIPT \"a\\\"b\" {3+}\r\n"),
            Some(Bytes::from_static(b"x\r\n")),
        ),
        (Bytes::from_static(b" atom\r\n"), None),
    ];
    assert_eq!(
        tokenize(&parts),
        Some(vec![
            Token::Atom(b"PUTSCRIPT".to_vec()),
            Token::Str(b"a\"b".to_vec()),
            Token::Str(b"x\r\n".to_vec()),
            Token::Atom(b"atom".to_vec()),
        ])
    );
    assert_eq!(tokenize(&[(Bytes::from_static(b"\"a\\"), None)]), None);
}

/// Hostile input: random bytes (biased towards the syntax: quotes,
/// escapes, literal announcements) in random chunks never panic, and
/// every poll loop ends.
#[test]
fn random_input_never_panics() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"AUTHENTICATE\"PLAIN\"STARTTLS NOOP LOGOUT {5+}{0}\\\"\r\n AGFsaWNl\x00\xff";
    for _ in 0..300 {
        let mut p = SievePreAuth::new(cfg(next() % 2 == 0, true, next() % 2 == 0));
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
    // and the response parser of the backend side
    for _ in 0..2000 {
        let n = (next() % 80) as usize;
        let line: Vec<u8> = (0..n)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let _ = crate::sieve::backend::parse_line(&line);
        let _ = tokenize(&[(Bytes::from(line), None)]);
    }
}
