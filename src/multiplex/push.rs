//! Push notifications from Dovecot, sans-I/O: who may send them
//! ([`PushSecret::authorizes`]) and what they say ([`parse`]). The HTTP
//! side is `POST`/`PUT /push` on the admin server ([`crate::admin`]); each
//! event wakes the parked IDLE clients of `(user, mailbox)` through a
//! [`WakeSink`](crate::multiplex::wake::WakeSink).
//!
//! Two body formats are understood, told apart by their keys:
//!
//! - **Dovecot's OX driver** (`push_notification_driver = ox:url=…`), for
//!   every message delivered (LDA/LMTP, not IMAP APPEND) to INBOX of a user
//!   whose `/private/vendor/vendor.dovecot/http-notify` METADATA is set. It
//!   sends `PUT` with HTTP Basic credentials from the URL and, in 2.3.19:
//!
//!   ```json
//!   {"user":"alice","event":"messageNew","folder":"INBOX",
//!    "imap-uidvalidity":1795682982,"imap-uid":4,"from":"…",
//!    "subject":"…","snippet":"…","unseen":4}
//!   ```
//!
//!   (`from`, `subject`, `snippet` and `unseen` may be absent.)
//!
//! - **imapmux's own format**, sent by `config/dovecot/imapmux-push.lua`
//!   through Dovecot's Lua driver (all events, all mailboxes), or by
//!   anything else: one object, or an array of them,
//!
//!   ```json
//!   {"user":"alice","mailbox":"INBOX","event":"MessageNew"}
//!   ```
//!
//! In both, `user` is the user name as Dovecot knows it and the mailbox is
//! Dovecot's UTF-8 mailbox name (the "vname", hierarchy separator
//! included), not modified UTF-7. Message content (`from`, `subject`,
//! `snippet`, and any other key) is never deserialized, logged or kept.

use std::fmt;

use ring::digest;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Largest request body accepted (larger: 413).
pub const MAX_BODY: usize = 64 * 1024;
/// Most events in one request body (an array).
pub const MAX_EVENTS: usize = 1024;
/// Longest user name, mailbox name or event name accepted, in bytes.
pub const MAX_NAME: usize = 1024;

/// "This mailbox of this user changed": one push notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    pub user: String,
    pub mailbox: String,
    /// Dovecot's event name as sent (`messageNew` from the OX driver,
    /// `MessageNew`, `MessageAppend`, `FlagsSet`, … from the Lua script).
    pub event: String,
}

/// Why a body was refused. The messages never quote the body.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PushError {
    #[error("not JSON or not the expected shape ({0})")]
    Json(String),
    #[error("event {index}: missing or empty \"{field}\"")]
    Missing { index: usize, field: &'static str },
    #[error("event {index}: \"{field}\" is longer than {MAX_NAME} bytes")]
    TooLong { index: usize, field: &'static str },
    #[error("more than {MAX_EVENTS} events in one request")]
    TooMany,
}

/// The keys imapmux reads; every other key (message content included) is
/// skipped by the parser without being stored.
#[derive(Deserialize)]
struct Raw {
    user: Option<String>,
    /// imapmux's format.
    mailbox: Option<String>,
    /// The OX driver's name for the mailbox.
    folder: Option<String>,
    event: Option<String>,
}

/// Parse a push body (either format, one event or an array of them).
pub fn parse(body: &[u8]) -> Result<Vec<PushEvent>, PushError> {
    let raws = match std::str::from_utf8(body) {
        Ok(text) => raws(text)?,
        // Dovecot escapes what it sends, but a snippet cut inside a
        // multi-byte character, or a Latin-1 subject passed through, must
        // not cost the wake-up: the keys imapmux reads are unaffected.
        Err(_) => raws(&String::from_utf8_lossy(body))?,
    };
    if raws.len() > MAX_EVENTS {
        return Err(PushError::TooMany);
    }
    raws.into_iter()
        .enumerate()
        .map(|(index, r)| event(index, r))
        .collect()
}

/// One object or an array of them (told by the first byte, so that no
/// value is ever buffered, as serde's untagged enums would).
fn raws(text: &str) -> Result<Vec<Raw>, PushError> {
    if text.trim_start().starts_with('[') {
        serde_json::from_str(text).map_err(json_error)
    } else {
        serde_json::from_str(text)
            .map(|r| vec![r])
            .map_err(json_error)
    }
}

fn event(index: usize, r: Raw) -> Result<PushEvent, PushError> {
    let field = |v: Option<String>, field: &'static str| match v {
        Some(s) if s.len() > MAX_NAME => Err(PushError::TooLong { index, field }),
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(PushError::Missing { index, field }),
    };
    Ok(PushEvent {
        user: field(r.user, "user")?,
        mailbox: field(r.mailbox.or(r.folder), "mailbox")?,
        event: field(r.event, "event")?,
    })
}

/// A serde_json error without the input it choked on: its category and
/// position only (a type error's text can quote a value).
fn json_error(e: serde_json::Error) -> PushError {
    let what = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "wrong type",
        serde_json::error::Category::Eof => "truncated",
    };
    PushError::Json(format!("{what} at line {} column {}", e.line(), e.column()))
}

/// The shared secret of `/push` (`admin.push_secret` or
/// `admin.push_secret_file`), kept only as its SHA-256 digest. Comparing
/// digests in constant time reveals neither the secret nor its length.
#[derive(Clone)]
pub struct PushSecret {
    digest: [u8; 32],
}

impl fmt::Debug for PushSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PushSecret(..)")
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, b).as_ref());
    out
}

impl PushSecret {
    /// `None` for an empty secret.
    pub fn new(secret: &[u8]) -> Option<PushSecret> {
        (!secret.is_empty()).then(|| PushSecret {
            digest: sha256(secret),
        })
    }

    fn matches(&self, candidate: &[u8]) -> bool {
        bool::from(sha256(candidate).ct_eq(&self.digest))
    }

    /// Does the `Authorization` header carry the secret? Accepted: HTTP
    /// Basic with the secret as password and any user name (Dovecot's OX
    /// driver sends the `user:password` of its URL), or `Bearer <secret>`.
    pub fn authorizes(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some((scheme, rest)) = split_scheme(value) else {
            return false;
        };
        if scheme.eq_ignore_ascii_case(b"bearer") {
            self.matches(rest)
        } else if scheme.eq_ignore_ascii_case(b"basic") {
            use base64::Engine;
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                return false;
            };
            match decoded.iter().position(|&b| b == b':') {
                Some(i) => self.matches(&decoded[i + 1..]),
                None => false,
            }
        } else {
            false
        }
    }
}

/// `scheme SP+ credentials` with surrounding blanks trimmed.
fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = value.trim_ascii();
    let i = value.iter().position(|&b| b == b' ')?;
    let rest = value[i..].trim_ascii();
    (!rest.is_empty()).then_some((&value[..i], rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(user: &str, mailbox: &str, event: &str) -> PushEvent {
        PushEvent {
            user: user.into(),
            mailbox: mailbox.into(),
            event: event.into(),
        }
    }

    /// Exactly what Dovecot 2.3.19's OX driver sent for a delivery.
    const OX: &str = r#"{"user":"u1","event":"messageNew","folder":"INBOX","imap-uidvalidity":1795682982,"imap-uid":4,"from":"a@b","subject":"SECRET-SUBJECT-xyz","snippet":"hello body","unseen":4}"#;

    #[test]
    fn ox_driver_body() {
        assert_eq!(
            parse(OX.as_bytes()),
            Ok(vec![ev("u1", "INBOX", "messageNew")])
        );
        // Without the optional keys, and with a folder below INBOX.
        let b = br#"{"user":"al ice@example.org","event":"messageNew","folder":"INBOX/K\u00e4se","imap-uidvalidity":1,"imap-uid":2}"#;
        assert_eq!(
            parse(b),
            Ok(vec![ev("al ice@example.org", "INBOX/Käse", "messageNew")])
        );
    }

    #[test]
    fn lua_body_one_or_many() {
        let b = br#"{"user":"u1","mailbox":"Sent","event":"MessageAppend"}"#;
        assert_eq!(parse(b), Ok(vec![ev("u1", "Sent", "MessageAppend")]));
        let b = br#"[{"user":"u1","mailbox":"INBOX","event":"MessageExpunge"},
                     {"user":"u1","mailbox":"Trash","event":"MessageAppend"}]"#;
        assert_eq!(
            parse(b),
            Ok(vec![
                ev("u1", "INBOX", "MessageExpunge"),
                ev("u1", "Trash", "MessageAppend")
            ])
        );
        assert_eq!(parse(b"[]"), Ok(vec![]));
    }

    #[test]
    fn content_is_skipped_even_when_not_utf8() {
        // A subject in Latin-1 (invalid UTF-8) must not lose the event.
        let mut b = br#"{"user":"u1","event":"messageNew","folder":"INBOX","subject":"K"#.to_vec();
        b.push(0xe4);
        b.extend_from_slice(br#"se","snippet":"x"}"#);
        assert_eq!(parse(&b), Ok(vec![ev("u1", "INBOX", "messageNew")]));
        // A subject of any JSON type is skipped, never stored.
        let b = br#"{"user":"u1","event":"e","mailbox":"m","subject":{"a":[1,2]}}"#;
        assert_eq!(parse(b), Ok(vec![ev("u1", "m", "e")]));
    }

    #[test]
    fn bad_bodies() {
        let missing = |b: &[u8]| parse(b).unwrap_err();
        assert_eq!(
            missing(br#"{"event":"messageNew","folder":"INBOX"}"#),
            PushError::Missing {
                index: 0,
                field: "user"
            }
        );
        assert_eq!(
            missing(br#"{"user":"u","event":"messageNew"}"#),
            PushError::Missing {
                index: 0,
                field: "mailbox"
            }
        );
        assert_eq!(
            missing(br#"[{"user":"u","mailbox":"m","event":"e"},{"user":"","mailbox":"m","event":"e"}]"#),
            PushError::Missing {
                index: 1,
                field: "user"
            }
        );
        assert_eq!(
            missing(br#"{"user":"u","mailbox":"m"}"#),
            PushError::Missing {
                index: 0,
                field: "event"
            }
        );
        let long = format!(
            r#"{{"user":"u","mailbox":"{}","event":"e"}}"#,
            "x".repeat(MAX_NAME + 1)
        );
        assert_eq!(
            parse(long.as_bytes()),
            Err(PushError::TooLong {
                index: 0,
                field: "mailbox"
            })
        );
        let many = format!(
            "[{}]",
            vec![r#"{"user":"u","mailbox":"m","event":"e"}"#; MAX_EVENTS + 1].join(",")
        );
        assert_eq!(parse(many.as_bytes()), Err(PushError::TooMany));
        for b in [
            &b""[..],
            b"{",
            b"nope",
            b"42",
            b"\"s\"",
            br#"{"user":5,"mailbox":"m","event":"e"}"#,
        ] {
            assert!(matches!(parse(b), Err(PushError::Json(_))), "{b:?}");
        }
    }

    #[test]
    fn errors_never_quote_the_body() {
        // A type error on a key imapmux reads names no value.
        let b = br#"{"user":"u","mailbox":"m","event":["TOPSECRET"]}"#;
        let e = parse(b).unwrap_err().to_string();
        assert!(!e.contains("TOPSECRET"), "{e}");
        let b = br#"{"user":"u","subject":"TOPSECRET"#;
        let e = parse(b).unwrap_err().to_string();
        assert!(!e.contains("TOPSECRET"), "{e}");
    }

    fn basic(user_pass: &str) -> Vec<u8> {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
        .into_bytes()
    }

    #[test]
    fn authorization() {
        let s = PushSecret::new(b"s3cr:et").unwrap();
        assert!(PushSecret::new(b"").is_none());
        // Basic: any user, the password after the first colon.
        assert!(s.authorizes(Some(&basic("dovecot:s3cr:et"))));
        assert!(s.authorizes(Some(&basic(":s3cr:et"))));
        assert!(!s.authorizes(Some(&basic("dovecot:s3cr"))));
        assert!(!s.authorizes(Some(&basic("s3cr:et"))));
        assert!(!s.authorizes(Some(&basic("s3cr:et:"))));
        assert!(!s.authorizes(Some(&basic("s3cr"))));
        assert!(!s.authorizes(Some(b"Basic !!notbase64")));
        // Bearer, scheme case-insensitive, blanks tolerated.
        assert!(s.authorizes(Some(b"Bearer s3cr:et")));
        assert!(s.authorizes(Some(b"  bearer   s3cr:et ")));
        assert!(!s.authorizes(Some(b"Bearer s3cr:e")));
        assert!(!s.authorizes(Some(b"Bearer s3cr:ett")));
        assert!(!s.authorizes(Some(b"Bearer")));
        assert!(!s.authorizes(Some(b"Bearer ")));
        assert!(!s.authorizes(Some(b"Token s3cr:et")));
        assert!(!s.authorizes(Some(b"s3cr:et")));
        assert!(!s.authorizes(None));
        assert_eq!(format!("{s:?}"), "PushSecret(..)");
    }
}
