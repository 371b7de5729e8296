//! What the relay tracks about the session as commands and answers pass:
//! commands in flight, the client's IDLE, the selected mailbox, state that
//! outlives the session, and synchronizing literals waiting for `+`.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{lock, Shared};

/// Record whether the client is idling (IDLE accepted by the backend).
pub(super) fn set_idling(shared: &Shared, since_ms: u64) {
    shared.idling_since_ms.store(since_ms, Ordering::Release);
    let on = since_ms != 0;
    if on {
        shared.idle_started.notify_one();
    }
    if shared.idle_counted.swap(on, Ordering::AcqRel) != on {
        if let Some(g) = &shared.idle_gauge {
            if on {
                g.inc();
            } else {
                g.dec();
            }
        }
    }
}

pub(super) fn trim_line(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let Some((last, rest)) = l.split_last() {
        if matches!(last, b'\r' | b'\n') {
            l = rest;
        } else {
            break;
        }
    }
    l
}

/// Track what parking needs: the client's IDLE, and the mailbox it selected.
pub(super) fn note_session_command(
    shared: &Shared,
    tag: &str,
    name: &str,
    line: &[u8],
    literal: bool,
) {
    match name {
        "IDLE" => *lock(&shared.idle_tag) = Some(tag.to_string()),
        "SELECT" | "EXAMINE" => {
            // The name is known only without literals (the usual case).
            let mailbox = if literal {
                None
            } else {
                crate::imap::command::parse_command(&[Bytes::copy_from_slice(line)], &[])
                    .ok()
                    .and_then(|c| {
                        c.args
                            .first()
                            .and_then(|a| a.as_astring())
                            .and_then(|m| String::from_utf8(m.to_vec()).ok())
                    })
            };
            *lock(&shared.pending_select) = Some((tag.to_string(), mailbox, name == "EXAMINE"));
        }
        "CLOSE" | "UNSELECT" => {
            *lock(&shared.pending_select) = Some((tag.to_string(), None, false));
        }
        _ => {}
    }
}

/// A tagged answer from the backend: settle IDLE and SELECT tracking.
/// Returns true when it answers the IDLE imapmux ended to park the client.
pub(super) fn note_tagged(shared: &Shared, line: &[u8]) -> bool {
    let tag_end = memchr::memchr(b' ', line).unwrap_or(line.len());
    let tag = &line[..tag_end];
    let ok = line[tag_end..]
        .get(1..3)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"OK"));
    {
        let mut pending = lock(&shared.pending_select);
        if pending
            .as_ref()
            .is_some_and(|(t, _, _)| t.as_bytes() == tag)
        {
            if let Some((_, mailbox, ro)) = pending.take() {
                // A failed SELECT leaves no mailbox selected (RFC 9051 §6.3.2).
                *lock(&shared.selected) = mailbox.filter(|_| ok).map(|m| (m, ro));
            }
        }
    }
    let mut idle = lock(&shared.idle_tag);
    if idle.as_deref().is_some_and(|t| t.as_bytes() == tag) {
        set_idling(shared, 0);
        if shared.parking.load(Ordering::Acquire) {
            return true;
        }
        *idle = None;
    }
    false
}

/// Commands whose effect outlives the session on the backend connection
/// (or that may enable CONDSTORE/QRESYNC by use, RFC 7162 §3.1).
pub(super) fn leaves_state(name: &str, line: &[u8]) -> bool {
    if matches!(
        name,
        "ENABLE" | "NOTIFY" | "LANGUAGE" | "COMPRESS" | "CONTEXT" | "X-DOVECOT-FINISH"
    ) {
        return true;
    }
    // Case-insensitive search, no copy of the line (runs for every command).
    [&b"CONDSTORE"[..], b"MODSEQ", b"QRESYNC", b"CHANGEDSINCE"]
        .iter()
        .any(|w| line.windows(w.len()).any(|win| win.eq_ignore_ascii_case(w)))
}

/// First word after the tag, upper-cased, and the tag.
pub(super) fn command_of(line: &[u8]) -> Option<(&[u8], String)> {
    let sp = memchr::memchr(b' ', line)?;
    let rest = &line[sp + 1..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    Some((
        &line[..sp],
        String::from_utf8_lossy(&rest[..end]).to_ascii_uppercase(),
    ))
}

/// The backend answered while a sync literal was pending: `+` lets the
/// client send it; a tagged answer refuses it.
pub(super) fn note_continuation(shared: &Shared, line: &[u8]) {
    let mut waiting = lock(&shared.awaiting_plus);
    if line.starts_with(b"+") {
        shared.awaiting.store(false, Ordering::Release);
        *waiting = None;
    } else if let Some(tag) = waiting.as_deref() {
        if line.starts_with(tag.as_bytes()) && line.get(tag.len()) == Some(&b' ') {
            shared.cancel_literal.store(true, Ordering::Release);
            shared.awaiting.store(false, Ordering::Release);
            *waiting = None;
        }
    }
}
