//! The POP3 and ManageSieve pre-auth state machines
//! (`pop3::preauth::Pop3PreAuth`, `sieve::preauth::SievePreAuth`), driven
//! the way `front::driver` drives them.
//!
//! Input: a first byte choosing the machine and its configuration (bit 0:
//! ManageSieve, else POP3; bit 1: TLS already active; bit 2: STLS/STARTTLS
//! offered; bit 3: logins allowed before TLS; bits 4-5: the line bound),
//! then client bytes with driver events spliced in as `\xFF` + a letter:
//! `|` nothing (two reads), `O` the pending login succeeded, `F` it failed,
//! `f` failed with a hostile text (CR/LF/NUL, a forged status line), `T`
//! `tls_established` out of turn, `D` the deadline passed, `d` a timeout
//! before the deadline. A login still pending at the end is accepted.
//!
//! Invariants: no panic; everything sent is whole CRLF lines; no event
//! after Close; nothing while a login is pending; bytes pipelined after
//! STLS/STARTTLS are never executed; a login is requested only under TLS or
//! with plaintext logins allowed, with a user name free of NUL/CR/LF; no
//! input is taken once logged in.
#![no_main]

use std::time::{Duration, Instant};

use imapmux::front::{FrontEvent, PreAuthMachine, Refusal};
use imapmux::pop3::preauth::{Pop3Config, Pop3PreAuth};
use imapmux::sieve::preauth::{SieveConfig, SievePreAuth, DEFAULT_SIEVE_CAPABILITIES};
use imapmux_fuzz::assert_crlf_lines;
use libfuzzer_sys::fuzz_target;

fn machine(b: u8, deadline: Instant) -> Box<dyn PreAuthMachine> {
    let (tls, starttls, plain) = (b & 2 != 0, b & 4 != 0, b & 8 != 0);
    let max_line = [1024, 4096, 65_536, 100][usize::from((b >> 4) & 3)];
    if b & 1 != 0 {
        Box::new(SievePreAuth::new(SieveConfig {
            tls_active: tls,
            starttls_available: starttls,
            allow_plaintext_auth: plain,
            greeting: "imapmux ready.".into(),
            sieve_capabilities: DEFAULT_SIEVE_CAPABILITIES.into(),
            max_line,
            max_literal: 8192,
            max_auth_failures: 3,
            max_bad_commands: 10,
            deadline,
        }))
    } else {
        Box::new(Pop3PreAuth::new(Pop3Config {
            tls_active: tls,
            starttls_available: starttls,
            allow_plaintext_auth: plain,
            greeting: "imapmux ready.".into(),
            max_line,
            max_auth_failures: 3,
            max_bad_commands: 10,
            deadline,
        }))
    }
}

struct Driver {
    m: Box<dyn PreAuthMachine>,
    deadline: Instant,
    tls: bool,
    allow_plaintext: bool,
    pending: bool,
    closed: bool,
    logged_in: bool,
}

impl Driver {
    fn drain(&mut self) -> usize {
        let mut n = 0;
        let mut after_starttls = false;
        while let Some(ev) = self.m.poll() {
            n += 1;
            assert!(!self.closed, "event after Close: {ev:?}");
            assert!(!self.pending, "event while a login is pending: {ev:?}");
            assert!(
                !after_starttls,
                "plaintext pipelined after STLS was processed: {ev:?}"
            );
            match ev {
                FrontEvent::Send(b) => assert_crlf_lines(&b),
                FrontEvent::StartTls => {
                    assert!(!self.tls, "STARTTLS under TLS");
                    self.m.tls_established();
                    self.tls = true;
                    after_starttls = true;
                    // ManageSieve re-sends its capabilities: whole lines.
                    while let Some(FrontEvent::Send(b)) = self.m.poll() {
                        assert_crlf_lines(&b);
                    }
                }
                FrontEvent::Login(c) => {
                    assert!(
                        self.tls || self.allow_plaintext,
                        "login requested without TLS"
                    );
                    assert!(!c.user.is_empty() && !c.user.contains(['\0', '\r', '\n']));
                    if let Some(a) = &c.authzid {
                        assert!(!a.is_empty() && a != &c.user);
                    }
                    self.pending = true;
                }
                FrontEvent::Close(_) => self.closed = true,
            }
        }
        n
    }

    fn input(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.m.input(data);
            self.drain();
        }
    }

    fn login_ok(&mut self) {
        let was = std::mem::take(&mut self.pending);
        self.m.login_ok();
        if was {
            self.logged_in = true;
            self.drain();
            let _pipelined = self.m.take_pipelined();
            self.m.input(b"STAT\r\n");
            assert!(self.m.poll().is_none(), "pre-auth active after login");
        } else {
            assert_eq!(self.drain(), 0, "login_ok out of turn had an effect");
        }
    }

    fn login_failed(&mut self, hostile: bool) {
        let r = if hostile {
            Refusal {
                status: "NO",
                code: Some("X\r\nY"),
                text: "no\r\n+OK forged\0\"\\",
            }
        } else {
            Refusal {
                status: "NO",
                code: Some("AUTHENTICATIONFAILED"),
                text: "Authentication failed.",
            }
        };
        let was = std::mem::take(&mut self.pending);
        self.m.login_failed(&r);
        let n = self.drain();
        if !was {
            assert_eq!(n, 0, "login_failed out of turn had an effect");
        }
    }

    fn timeout(&mut self, expired: bool) {
        let now = if expired {
            self.deadline + Duration::from_secs(1)
        } else {
            self.deadline - Duration::from_secs(1)
        };
        let active = !self.closed && !self.pending;
        self.m.timeout(now);
        self.drain();
        if expired && active {
            assert!(self.closed, "deadline passed without closing");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    imapmux_fuzz::on_tokio_stack(move || {
        run(&data);
        if data.len() % 4 == 0 {
            if let Some(big) = imapmux_fuzz::stretch(&data, 65_536) {
                run(&big);
            }
        }
    });
});

fn run(data: &[u8]) {
    let Some((&cfg, data)) = data.split_first() else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut d = Driver {
        m: machine(cfg, deadline),
        deadline,
        tls: cfg & 2 != 0,
        allow_plaintext: cfg & 8 != 0,
        pending: false,
        closed: false,
        logged_in: false,
    };
    assert!(d.drain() >= 1, "no greeting");
    let mut text: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < data.len() && !d.logged_in {
        let op = match data.get(i..) {
            Some([0xFF, op @ (b'|' | b'O' | b'F' | b'f' | b'T' | b'D' | b'd'), ..]) => *op,
            _ => {
                text.push(data[i]);
                i += 1;
                continue;
            }
        };
        i += 2;
        d.input(&std::mem::take(&mut text));
        match op {
            b'O' => d.login_ok(),
            b'F' => d.login_failed(false),
            b'f' => d.login_failed(true),
            b'T' => {
                d.m.tls_established();
                assert_eq!(d.drain(), 0, "tls_established out of turn had an effect");
            }
            b'D' => d.timeout(true),
            b'd' => d.timeout(false),
            _ => {}
        }
    }
    if !d.logged_in {
        d.input(&text);
        if d.pending {
            d.login_ok();
        }
    }
}
