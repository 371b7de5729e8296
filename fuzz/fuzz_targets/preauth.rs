//! `session::preauth::PreAuth`, the sans-I/O not-authenticated state
//! machine, driven the way `session::conn` drives it.
//!
//! Input: client bytes, with driver events spliced in as `\xFF` + a letter:
//!
//! | op       | what the driver does                                        |
//! |----------|-------------------------------------------------------------|
//! | `\xFF|`  | nothing (splits the client bytes into two reads)            |
//! | `\xFFO`  | the backend accepted the pending login (`login_ok`)         |
//! | `\xFFF`  | the backend refused it (`login_failed`)                     |
//! | `\xFFf`  | refused, with a code and text full of CR/LF/NUL             |
//! | `\xFFT`  | `tls_established` out of turn                               |
//! | `\xFFD`  | the pre-auth deadline passed (`timeout`)                    |
//! | `\xFFd`  | `timeout` before the deadline                               |
//!
//! `\xFFO`/`\xFFF` with no login pending call the method anyway (it must be
//! ignored). Any other byte after `\xFF` is client data. A leading
//! `\xFFC` + one byte picks the configuration (see `config`); without it:
//! implicit TLS, OAuth on, 64 KiB lines, 8 KiB literals. STARTTLS is
//! answered by a successful handshake at once, as the driver does; a login
//! still pending at the end is accepted.
//!
//! Runs on a thread with tokio's 2 MiB worker stack, like a session; one
//! input in four is also run stretched to 64 KiB (`imapmux_fuzz::stretch`:
//! runs of a repeated byte multiplied), as depth and time give no coverage.
//!
//! Invariants: no panic; everything sent is whole CRLF lines; no event
//! after Close; nothing while a login is pending; bytes pipelined after
//! STARTTLS are never executed; a login is requested only under TLS or with
//! plaintext auth allowed, with a user name free of NUL/CR/LF; an OAuth
//! token is printable ASCII.
#![no_main]

use std::time::{Duration, Instant};

use imapmux::imap::command::tag_of;
use imapmux::session::preauth::{Event, PreAuth, PreAuthConfig};
use imapmux_fuzz::assert_crlf_lines;
use libfuzzer_sys::fuzz_target;

const DEFAULT_CONFIG: u8 = 0b11_10_1001;

fn config(b: u8, deadline: Instant) -> PreAuthConfig {
    PreAuthConfig {
        tls_active: b & 1 != 0,
        starttls_available: b & 2 != 0,
        allow_plaintext_auth: b & 4 != 0,
        sasl_oauth: b & 8 != 0,
        greeting: "imapmux ready.".into(),
        max_line: [1024, 4096, 65_536, 100][usize::from((b >> 4) & 3)],
        max_literal: [0, 16, 1024, 8192][usize::from(b >> 6)],
        max_auth_failures: 3,
        max_bad_commands: 10,
        deadline,
        // Trusted when plaintext auth is allowed (both paths fuzzed).
        trusted: b & 4 != 0,
    }
}

struct Driver {
    s: PreAuth,
    deadline: Instant,
    tls: bool,
    allow_plaintext: bool,
    pending_login: Option<String>,
    closed: bool,
    logged_in: bool,
}

impl Driver {
    /// Poll every event, acting on each as the real driver does. Returns
    /// how many events there were.
    fn drain(&mut self) -> usize {
        let mut n = 0;
        let mut after_starttls = false;
        while let Some(ev) = self.s.poll() {
            n += 1;
            assert!(!self.closed, "event after Close: {ev:?}");
            assert!(
                self.pending_login.is_none(),
                "event while a login is pending: {ev:?}"
            );
            assert!(
                !after_starttls,
                "plaintext pipelined after STARTTLS was processed: {ev:?}"
            );
            match ev {
                Event::Send(b) => assert_crlf_lines(&b),
                Event::StartTls => {
                    assert!(!self.tls, "STARTTLS under TLS");
                    // The handshake succeeds; whatever the client sent in
                    // the same read came before it, in plaintext.
                    self.s.tls_established();
                    self.tls = true;
                    after_starttls = true;
                }
                Event::Login { tag, credentials } => {
                    assert!(
                        self.tls || self.allow_plaintext,
                        "login requested without TLS"
                    );
                    assert!(tag_of(format!("{tag} X").as_bytes()) == Some(tag.as_str()));
                    let user = &credentials.user;
                    assert!(!user.is_empty() && !user.contains(['\0', '\r', '\n']));
                    if credentials.mechanism.is_oauth() {
                        let t = &credentials.password;
                        assert!(!t.is_empty() && t.iter().all(|b| (0x21..=0x7e).contains(b)));
                    }
                    if let Some(a) = &credentials.authzid {
                        assert!(!a.is_empty() && a != user);
                    }
                    self.pending_login = Some(tag);
                }
                Event::Close(_) => self.closed = true,
            }
        }
        n
    }

    fn input(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.s.input(data);
        self.drain();
    }

    fn login_ok(&mut self) {
        match self.pending_login.take() {
            Some(tag) => {
                self.s.login_ok(&tag, "IMAP4rev1 IDLE LITERAL+");
                assert!(self.s.is_logged_in());
                self.logged_in = true;
                self.drain();
                let _pipelined = self.s.take_pipelined();
                // Input after login belongs to the relay, not to PreAuth.
                self.s.input(b"z NOOP\r\n");
                assert!(self.s.poll().is_none(), "PreAuth active after login");
            }
            None => {
                self.s.login_ok("spurious", "IMAP4rev1");
                assert_eq!(self.drain(), 0, "login_ok out of turn had an effect");
            }
        }
    }

    fn login_failed(&mut self, hostile: bool) {
        let (code, text) = if hostile {
            ("X\r\nY", "no\r\n* OK [CAPABILITY X] injected\0")
        } else {
            ("AUTHENTICATIONFAILED", "Authentication failed.")
        };
        match self.pending_login.take() {
            Some(tag) => {
                self.s.login_failed(&tag, "NO", Some(code), text);
                self.drain();
            }
            None => {
                self.s.login_failed("spurious", "NO", Some(code), text);
                assert_eq!(self.drain(), 0, "login_failed out of turn had an effect");
            }
        }
    }

    fn timeout(&mut self, expired: bool) {
        let now = if expired {
            self.deadline + Duration::from_secs(1)
        } else {
            self.deadline - Duration::from_secs(1)
        };
        let active = !self.closed && self.pending_login.is_none();
        self.s.timeout(now);
        self.drain();
        if expired && active {
            assert!(self.closed, "deadline passed without closing");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // On a session's stack size, not libFuzzer's 8 MiB.
    let data = data.to_vec();
    imapmux_fuzz::on_tokio_stack(move || {
        run(&data);
        // One input in four also runs stretched to a 64 KiB line.
        if data.len() % 4 == 0 {
            if let Some(big) = imapmux_fuzz::stretch(&data, 65_536) {
                run(&big);
            }
        }
    });
});

fn run(data: &[u8]) {
    let (cfg, data) = match data {
        [0xFF, b'C', c, rest @ ..] => (*c, rest),
        _ => (DEFAULT_CONFIG, data),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let cfg = config(cfg, deadline);
    let mut d = Driver {
        tls: cfg.tls_active,
        allow_plaintext: cfg.allow_plaintext_auth,
        s: PreAuth::new(cfg),
        deadline,
        pending_login: None,
        closed: false,
        logged_in: false,
    };
    assert!(d.drain() >= 1, "no greeting");

    let mut text: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < data.len() && !d.logged_in {
        let op = match data[i..] {
            [0xFF, op @ (b'|' | b'O' | b'F' | b'f' | b'T' | b'D' | b'd'), ..] => op,
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
                d.s.tls_established();
                assert_eq!(d.drain(), 0, "tls_established out of turn had an effect");
            }
            b'D' => d.timeout(true),
            b'd' => d.timeout(false),
            _ => {}
        }
    }
    if !d.logged_in {
        d.input(&text);
        if d.pending_login.is_some() {
            d.login_ok();
        }
    }
}
