//! `auth::http::verdict`: the answer of an nginx-style `auth_http`
//! service. The HTTP head is parsed with httparse (hyper's parser) into a
//! `HeaderMap` the way hyper's client does, then read by `verdict`.
//!
//! Input: an HTTP/1.1 response head (`HTTP/1.1 200 OK\r\nAuth-Status: OK\r\n…`).
//!
//! Invariants: no panic; an accepted answer's backend is `host:port` with a
//! numeric port (or the server name alone); a refusal's error code is one
//! IMAP atom of letters, digits and `-` (it goes into a response line).
#![no_main]

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use imapmux::auth::http::verdict;
use imapmux::auth::Verdict;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imapmux_fuzz::report_stack_overflows();
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = resp.parse(data) else {
        return;
    };
    let status = resp.code.unwrap_or(200);
    let mut map = HeaderMap::new();
    for h in resp.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            // hyper refuses the whole response then.
            return;
        };
        map.append(name, value);
    }
    match verdict(status, &map) {
        Ok(Verdict::Accept(grant)) => {
            if let Some(b) = &grant.backend {
                assert!(!b.is_empty());
            }
            if let Some(u) = &grant.backend_user {
                assert!(!u.is_empty());
            }
        }
        Ok(Verdict::Reject { text, code, wait }) => {
            if let Some(c) = &code {
                assert!(!c.is_empty() && c.len() <= 40);
                assert!(c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            }
            if let Some(t) = &text {
                assert!(!t.is_empty());
            }
            let _ = wait;
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
