//! Dovecot's doveadm HTTP API as a batch poll, sans-I/O: the request body
//! asking many users' mailbox status at once ([`request_body`]) and the
//! reading of the answer ([`parse_response`]). The HTTP exchange is in
//! [`super::poll`].
//!
//! One command per watched (user, mailbox), tagged by its index:
//!
//! ```json
//! [["mailboxStatus",{"user":"alice","field":["highestmodseq"],"mailboxMask":["INBOX"]},"0"], …]
//! ```
//!
//! Dovecot 2.3.19 answers, in order, one entry per command:
//!
//! ```json
//! [["doveadmResponse",[{"mailbox":"INBOX","highestmodseq":"7"}],"0"],
//!  ["error",{"type":"exitCode","exitCode":67},"1"]]
//! ```
//!
//! (67: no such user, 68: no such mailbox.) The answer is hostile input:
//! its size is bounded by the caller, nothing in it is trusted to match the
//! request (entries are matched by tag, unknown or repeated tags are
//! ignored, a missing one is a failed command), and one command's error
//! never fails the others.

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

/// Most commands in one request: a doveadm request runs its commands one
/// after the other in one doveadm process (about 3 ms each measured here),
/// so larger batches are split and a few run side by side.
pub const MAX_BATCH: usize = 100;

/// Largest answer accepted for `n` commands (a status entry is under 100
/// bytes; a long mailbox name or error text fits too).
pub fn max_response(n: usize) -> usize {
    n.saturating_mul(2048).saturating_add(4096)
}

/// One watched mailbox of one user, as doveadm names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The mailbox owner as the backend logged in.
    pub user: String,
    /// The mailbox's UTF-8 name (Dovecot's "vname"), see [`vname`].
    pub mailbox: String,
}

/// What doveadm said about one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The mailbox's HIGHESTMODSEQ now.
    Modseq(u64),
    /// Exit code 67: the user is not in the userdb under this name.
    NoUser,
    /// Exit code 68, or no such mailbox in the answer.
    NoMailbox,
    /// Any other error, or no usable answer for this command.
    Failed,
}

impl Status {
    /// Label of `imapmux_doveadm_poll_command_errors_total{error}`.
    pub fn error_label(self) -> Option<&'static str> {
        match self {
            Status::Modseq(_) => None,
            Status::NoUser => Some("no_user"),
            Status::NoMailbox => Some("no_mailbox"),
            Status::Failed => Some("other"),
        }
    }
}

/// Every value [`Status::error_label`] returns.
pub const ERROR_LABELS: &[&str] = &["no_user", "no_mailbox", "other"];

/// Why an answer could not be read at all. Never quotes the body.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("not JSON ({0})")]
    Json(&'static str),
    #[error("not an array of command results")]
    Shape,
}

#[derive(Serialize)]
struct Params<'a> {
    user: &'a str,
    field: [&'static str; 1],
    #[serde(rename = "mailboxMask")]
    mailbox_mask: [&'a str; 1],
}

/// The JSON body asking the HIGHESTMODSEQ of every query, tagged by index.
pub fn request_body(queries: &[Query]) -> Vec<u8> {
    let cmds: Vec<(&str, Params<'_>, String)> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            (
                "mailboxStatus",
                Params {
                    user: &q.user,
                    field: ["highestmodseq"],
                    mailbox_mask: [&q.mailbox],
                },
                i.to_string(),
            )
        })
        .collect();
    // Serializing strings and arrays cannot fail.
    serde_json::to_vec(&cmds).unwrap_or_default()
}

/// One status per query (same order), from doveadm's answer `body`.
pub fn parse_response(body: &[u8], queries: &[Query]) -> Result<Vec<Status>, ResponseError> {
    let entries: Vec<Value> = serde_json::from_slice(body).map_err(|e| {
        ResponseError::Json(match e.classify() {
            serde_json::error::Category::Data => "wrong type",
            serde_json::error::Category::Eof => "truncated",
            _ => "syntax error",
        })
    })?;
    let mut out: Vec<Option<Status>> = vec![None; queries.len()];
    for entry in &entries {
        let Some([kind, payload, tag]) = entry.as_array().map(Vec::as_slice) else {
            return Err(ResponseError::Shape);
        };
        let Some(i) = tag.as_str().and_then(|t| t.parse::<usize>().ok()) else {
            continue;
        };
        let (Some(slot), Some(q)) = (out.get_mut(i), queries.get(i)) else {
            continue;
        };
        if slot.is_some() {
            continue; // a repeated tag: the first answer counts
        }
        *slot = Some(match kind.as_str() {
            Some("doveadmResponse") => status_of(payload, &q.mailbox),
            Some("error") => match payload.get("exitCode").and_then(Value::as_u64) {
                Some(67) => Status::NoUser,
                Some(68) => Status::NoMailbox,
                _ => Status::Failed,
            },
            _ => Status::Failed,
        });
    }
    Ok(out
        .into_iter()
        .map(|s| s.unwrap_or(Status::Failed))
        .collect())
}

/// The modseq of `mailbox` in a `doveadmResponse` payload (an array of
/// objects; Dovecot writes numbers as strings).
fn status_of(payload: &Value, mailbox: &str) -> Status {
    let Some(rows) = payload.as_array() else {
        return Status::Failed;
    };
    let row = rows
        .iter()
        .find(|r| r.get("mailbox").and_then(Value::as_str) == Some(mailbox));
    let Some(row) = row else {
        return Status::NoMailbox;
    };
    let modseq = match row.get("highestmodseq") {
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        Some(v) => v.as_u64(),
        None => None,
    };
    modseq.map_or(Status::Failed, Status::Modseq)
}

/// The name doveadm knows a mailbox by, from the name a client selected
/// (RFC 3501 modified UTF-7; INBOX in any case is INBOX). `None` when the
/// name cannot be asked for exactly: invalid modified UTF-7, or a
/// wildcard (`*`, `%`) that doveadm would expand.
pub fn vname(imap_name: &str) -> Option<String> {
    if imap_name.eq_ignore_ascii_case("INBOX") {
        return Some("INBOX".into());
    }
    let name = decode_mutf7(imap_name)?;
    (!name.is_empty() && !name.contains(['*', '%'])).then_some(name)
}

/// RFC 3501 §5.1.3 modified UTF-7 to UTF-8; `None` if malformed.
fn decode_mutf7(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(rest.get(..i)?);
        let after = rest.get(i + 1..)?;
        let end = after.find('-')?;
        let b64 = after.get(..end)?;
        rest = after.get(end + 1..)?;
        if b64.is_empty() {
            out.push('&');
            continue;
        }
        let units = decode_b64_utf16(b64)?;
        out.push_str(&String::from_utf16(&units).ok()?);
    }
    out.push_str(rest);
    Some(out)
}

/// Modified base64 (`,` for `/`, no padding) of UTF-16BE code units.
fn decode_b64_utf16(b64: &str) -> Option<Vec<u16>> {
    use base64::Engine;
    let std: String = b64
        .chars()
        .map(|c| if c == ',' { '/' } else { c })
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(std)
        .ok()?;
    if bytes.len() % 2 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(user: &str, mailbox: &str) -> Query {
        Query {
            user: user.into(),
            mailbox: mailbox.into(),
        }
    }

    #[test]
    fn request_body_is_what_dovecot_takes() {
        let body = request_body(&[q("alice", "INBOX"), q("b\"ob", "Käse")]);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"[["mailboxStatus",{"user":"alice","field":["highestmodseq"],"mailboxMask":["INBOX"]},"0"],["mailboxStatus",{"user":"b\"ob","field":["highestmodseq"],"mailboxMask":["Käse"]},"1"]]"#
        );
        assert_eq!(request_body(&[]), b"[]");
    }

    /// Exactly what Dovecot 2.3.19 answered (users u1, nouser, u2; a
    /// mailbox that does not exist; more fields than asked for).
    const REAL: &str = r#"[["doveadmResponse",[{"mailbox":"INBOX","highestmodseq":"2"}],"0"],["error",{"type":"exitCode", "exitCode":67},"1"],["doveadmResponse",[{"mailbox":"INBOX","highestmodseq":"1"}],"2"],["error",{"type":"exitCode", "exitCode":68},"3"],["doveadmResponse",[{"mailbox":"INBOX","messages":"1","uidvalidity":"1796413160","highestmodseq":"2"}],"4"]]"#;

    #[test]
    fn a_real_answer_with_errors_per_command() {
        let qs = [
            q("u1", "INBOX"),
            q("nouser", "INBOX"),
            q("u2", "INBOX"),
            q("u1", "Nope"),
            q("u1", "INBOX"),
        ];
        assert_eq!(
            parse_response(REAL.as_bytes(), &qs),
            Ok(vec![
                Status::Modseq(2),
                Status::NoUser,
                Status::Modseq(1),
                Status::NoMailbox,
                Status::Modseq(2),
            ])
        );
    }

    #[test]
    fn entries_are_matched_by_tag_never_by_position() {
        let qs = [q("a", "INBOX"), q("b", "INBOX"), q("c", "INBOX")];
        // Out of order, a repeated tag (first wins), unknown and
        // non-numeric tags, a missing answer for "c".
        let body = br#"[
          ["doveadmResponse",[{"mailbox":"INBOX","highestmodseq":"20"}],"1"],
          ["doveadmResponse",[{"mailbox":"INBOX","highestmodseq":"99"}],"1"],
          ["doveadmResponse",[{"mailbox":"INBOX","highestmodseq":"5"}],"7"],
          ["doveadmResponse",[{"mailbox":"INBOX","highestmodseq":"5"}],"x"],
          ["doveadmResponse",[{"mailbox":"INBOX","highestmodseq":10}],"0"]]"#;
        assert_eq!(
            parse_response(body, &qs),
            Ok(vec![Status::Modseq(10), Status::Modseq(20), Status::Failed])
        );
    }

    #[test]
    fn odd_payloads_fail_only_their_command() {
        let qs: Vec<Query> = (0..8).map(|i| q(&format!("u{i}"), "Sent")).collect();
        let body = br#"[
          ["doveadmResponse",[],"0"],
          ["doveadmResponse",[{"mailbox":"Other","highestmodseq":"3"}],"1"],
          ["doveadmResponse",[{"mailbox":"Sent"}],"2"],
          ["doveadmResponse",[{"mailbox":"Sent","highestmodseq":"-1"}],"3"],
          ["doveadmResponse",{"mailbox":"Sent"},"4"],
          ["error",{"type":"exitCode","exitCode":75},"5"],
          ["error","nope","6"],
          ["somethingElse",[],"7"]]"#;
        let got = parse_response(body, &qs).unwrap();
        assert_eq!(
            got,
            vec![
                Status::NoMailbox,
                Status::NoMailbox,
                Status::Failed,
                Status::Failed,
                Status::Failed,
                Status::Failed,
                Status::Failed,
                Status::Failed,
            ]
        );
        assert_eq!(got[0].error_label(), Some("no_mailbox"));
        assert_eq!(Status::NoUser.error_label(), Some("no_user"));
        assert_eq!(Status::Modseq(1).error_label(), None);
    }

    #[test]
    fn unreadable_answers() {
        let qs = [q("a", "INBOX")];
        for b in [
            &b""[..],
            b"[",
            b"{}",
            b"\"x\"",
            b"<html>",
            b"[[\"a\"]]",
            b"[1]",
        ] {
            assert!(parse_response(b, &qs).is_err(), "{b:?}");
        }
        // Deep nesting is refused by serde_json's recursion limit, not a
        // stack overflow.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_response(deep.as_bytes(), &qs).is_err());
        // The error names no content.
        let e = parse_response(br#"[["TOPSECRET"]]"#, &qs).unwrap_err();
        assert!(!e.to_string().contains("TOPSECRET"));
        assert_eq!(parse_response(b"[]", &qs), Ok(vec![Status::Failed]));
    }

    #[test]
    fn mailbox_names_as_doveadm_knows_them() {
        assert_eq!(vname("inbox").as_deref(), Some("INBOX"));
        assert_eq!(vname("InBoX").as_deref(), Some("INBOX"));
        assert_eq!(vname("Sent").as_deref(), Some("Sent"));
        assert_eq!(vname("K&AOQ-se").as_deref(), Some("Käse"));
        assert_eq!(vname("A&-B").as_deref(), Some("A&B"));
        assert_eq!(vname("&ZeVnLIqe-").as_deref(), Some("日本語"));
        // A surrogate pair (U+1F600).
        assert_eq!(vname("&2D3eAA-").as_deref(), Some("😀"));
        assert_eq!(vname("a/b&AOQ-").as_deref(), Some("a/bä"));
        for bad in ["&AOQ", "&A-", "&2D0-", "x*", "%", "&ACo-", ""] {
            assert_eq!(vname(bad), None, "{bad}");
        }
    }

    #[test]
    fn size_bound_grows_with_the_batch() {
        assert!(max_response(MAX_BATCH) >= MAX_BATCH * 1024);
        assert_eq!(max_response(usize::MAX), usize::MAX);
    }
}
