//! `push::parse`: the JSON body of `POST`/`PUT /push` on the admin port
//! (Dovecot's OX driver or imapmux's Lua script), and
//! `PushSecret::authorizes`, which reads its `Authorization` header.
//!
//! Input: a request body (at most `push::MAX_BODY`, as the admin server
//! enforces); it is also tried as an `Authorization` header value.
//!
//! Invariants: no panic; accepted events have a user, mailbox and event
//! name, none empty or longer than `MAX_NAME`, at most `MAX_EVENTS` of
//! them; an error message never quotes the body.
#![no_main]

use imapmux::multiplex::push::{parse, PushError, PushSecret, MAX_BODY, MAX_EVENTS, MAX_NAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imapmux_fuzz::report_stack_overflows();
    if data.len() <= MAX_BODY {
        match parse(data) {
            Ok(events) => {
                assert!(events.len() <= MAX_EVENTS);
                for e in &events {
                    for f in [&e.user, &e.mailbox, &e.event] {
                        assert!(!f.is_empty() && f.len() <= MAX_NAME);
                    }
                }
            }
            Err(PushError::Json(msg)) => {
                // "<category> at line N column M" and nothing else.
                let (what, pos) = msg.split_once(" at line ").expect("error format");
                assert!(
                    ["read error", "syntax error", "wrong type", "truncated"].contains(&what),
                    "{msg}"
                );
                assert!(
                    pos.bytes()
                        .all(|b| b.is_ascii_digit() || b" column".contains(&b)),
                    "{msg}"
                );
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    let secret = PushSecret::new(b"s3cret").expect("secret");
    let _ = secret.authorizes(Some(data));
    assert!(!secret.authorizes(None));
});
