//! Planning a client FETCH: what can be answered from the cache, what
//! the command sent to the backend asks for, and when a prefetch of the
//! items some messages miss comes first.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{
    Cmd, Fill, Flow, Kind, Prefetch, Serve, Upstream, Waiting, MARKER_PEEK, MARKER_SEEN,
    PREFETCH_TAG_PREFIX,
};
use crate::cache::templates::Slot;
use crate::cache::{MailboxKey, MessageItems, MessageKey};
use crate::imap::command::trim_crlf;
use crate::imap::fetch::{
    build_fetch_response as build_fetch, parse_fetch_command, FetchAtt, FetchCommand, SeqNum,
};
use crate::imap::mailbox::{Selected, Tracker};
use crate::relay::Command;

/// Most messages one served FETCH may cover.
const MAX_SERVE_MESSAGES: usize = 1000;

/// Most messages a FETCH answered without the backend may cover.
const MAX_LOCAL_MESSAGES: usize = 64;

fn cmd_str(a: &FetchAtt) -> String {
    String::from_utf8_lossy(&a.to_command_bytes()).into_owned()
}

/// Body data (possibly large): never asked of the backend in a served
/// command, whose responses are held in memory.
fn is_body_data(att: &FetchAtt) -> bool {
    let k = att.cache_key();
    (k.starts_with("BODY[") || k.starts_with("BINARY[") || k.starts_with("RFC822"))
        && k != "RFC822.SIZE"
}

impl Flow {
    /// A client command (its first line; `has_literal` when more follows).
    /// Returns the replacement line to send instead, if any.
    pub fn on_client_command(&mut self, cmd: &Command, line: &[u8], view: &Tracker) -> Upstream {
        let sp = cmd.tag.len();
        let tag = cmd.tag.to_string();
        if cmd.literal {
            self.inflight.push_back(Cmd::new(tag, Kind::Other));
            return Upstream::Forward;
        }
        // Backends may run pipelined commands concurrently (Dovecot does),
        // so FETCH responses can be attributed to a command only while it
        // is alone in flight: plan only then, and stop filling from a
        // FETCH once another command joins it.
        let busy = !self.inflight.is_empty();
        for c in self.inflight.iter_mut() {
            if let Kind::Fill(f) = &mut c.kind {
                f.tainted = true;
            }
        }
        let planned = if busy {
            None
        } else {
            self.plan(line.get(sp + 1..).unwrap_or_default(), true, view)
        };
        let (kind, up) = planned.unwrap_or((Kind::Other, Upstream::Forward));
        let up = match up {
            Upstream::Replace(body) => {
                let mut l = Vec::with_capacity(sp + 1 + body.len() + 2);
                l.extend_from_slice(line.get(..=sp).unwrap_or_default());
                l.extend_from_slice(&body);
                l.extend_from_slice(b"\r\n");
                Upstream::Replace(l)
            }
            Upstream::Answer(mut resp) => {
                // Answered here: the backend never sees this command.
                resp.extend_from_slice(format!("{tag} OK Fetch completed (cache).\r\n").as_bytes());
                return Upstream::Answer(resp);
            }
            Upstream::Prefetch(body) => {
                self.next_proxy_tag += 1;
                let mut proxy_tag = format!("imapmux.{}", self.next_proxy_tag);
                debug_assert!(proxy_tag.as_bytes().starts_with(PREFETCH_TAG_PREFIX));
                if proxy_tag == tag {
                    proxy_tag.push('x');
                }
                let mut l = proxy_tag.clone().into_bytes();
                l.push(b' ');
                l.extend_from_slice(&body);
                l.extend_from_slice(b"\r\n");
                let map_seqs = match &kind {
                    Kind::Prefetch(p) => p.map_seqs.clone(),
                    _ => Vec::new(),
                };
                self.inflight.push_back(Cmd::new(proxy_tag.clone(), kind));
                self.waiting = Some(Waiting {
                    line: line.to_vec(),
                    tag,
                    proxy_tag,
                    outcome: None,
                    map_seqs,
                });
                return Upstream::Prefetch(l);
            }
            Upstream::Forward => Upstream::Forward,
        };
        self.inflight.push_back(Cmd::new(tag, kind));
        up
    }

    /// After the prefetch: what to send for the client's command. `None`
    /// while the prefetch is still running.
    pub fn after_prefetch(&mut self, view: &Tracker) -> Option<Upstream> {
        let outcome = self.waiting.as_ref()?.outcome?;
        let w = self.waiting.take()?;
        if let Some(sel) = view.selected.as_ref().filter(|_| outcome) {
            if w.map_seqs.iter().any(|q| sel.uid_of(*q).is_none()) {
                // Asked for UIDs, answered OK and still without them (a
                // backend that does not send them): do not ask again.
                self.map_prefetch = false;
            }
        }
        let sp = w.line.iter().position(|b| *b == b' ').unwrap_or(0);
        let planned = if outcome {
            w.line
                .get(sp + 1..)
                .and_then(|after| self.plan(after, false, view))
        } else {
            None
        };
        let (kind, up) = planned.unwrap_or((Kind::Other, Upstream::Forward));
        let up = match up {
            Upstream::Replace(body) => {
                let mut l = w.line.get(..=sp).unwrap_or_default().to_vec();
                l.extend_from_slice(&body);
                l.extend_from_slice(b"\r\n");
                Upstream::Replace(l)
            }
            Upstream::Answer(mut resp) => {
                resp.extend_from_slice(
                    format!("{} OK Fetch completed (cache).\r\n", w.tag).as_bytes(),
                );
                return Some(Upstream::Answer(resp));
            }
            // Forward, or (impossible here) another prefetch: the original.
            _ => Upstream::Replace(w.line.clone()),
        };
        self.inflight.push_back(Cmd::new(w.tag, kind));
        Some(up)
    }

    /// Answer a FETCH of cacheable items only, from pinned entries, when
    /// every UID's sequence number is known: no backend round trip.
    fn answer_locally(
        &self,
        cmd: &FetchCommand,
        uids: &[u32],
        pinned: &HashMap<u32, Arc<MessageItems>>,
        template: &[Slot],
        view: &Tracker,
    ) -> Option<Vec<u8>> {
        if uids.len() > MAX_LOCAL_MESSAGES
            || cmd.sets_seen()
            || !cmd
                .items
                .iter()
                .all(|a| a.cacheable() || matches!(a, FetchAtt::Uid))
            || template.contains(&Slot::Flags)
        {
            return None;
        }
        let sel = view.selected.as_ref()?;
        let mut msgs: Vec<(u32, u32)> = uids
            .iter()
            .map(|u| Some((sel.seq_of(*u)?, *u)))
            .collect::<Option<_>>()?;
        msgs.sort_unstable();
        let mut out = Vec::new();
        for (seq, uid) in msgs {
            let cached = pinned.get(&uid)?;
            let uid_text = uid.to_string();
            let mut items: Vec<(&[u8], &[u8])> = Vec::with_capacity(template.len());
            for slot in template {
                match *slot {
                    Slot::Uid => items.push((b"UID", uid_text.as_bytes())),
                    Slot::Att(i) => match cmd.items.get(i)? {
                        FetchAtt::Uid => items.push((b"UID", uid_text.as_bytes())),
                        att => {
                            let ci = cached.get(&att.cache_key())?;
                            items.push((&ci.name[..], &ci.value[..]));
                        }
                    },
                    Slot::Flags => return None,
                }
            }
            out.extend_from_slice(&build_fetch(seq, &items));
        }
        Some(out)
    }

    pub(super) fn mailbox_key(&self, view: &Tracker) -> Option<MailboxKey> {
        if view.changing() {
            return None;
        }
        let sel = view.selected.as_ref()?;
        Some(MailboxKey::new(
            &self.backend,
            &self.user,
            &sel.name,
            sel.uidvalidity?,
        ))
    }

    /// Decide Fill or Serve for a FETCH command (text after the tag).
    fn plan(
        &mut self,
        after_tag: &[u8],
        may_prefetch: bool,
        view: &Tracker,
    ) -> Option<(Kind, Upstream)> {
        let cmd: FetchCommand = parse_fetch_command(trim_crlf(after_tag))?;
        if cmd.has_modifiers || !cmd.items.iter().any(|a| a.cacheable()) {
            return None;
        }
        let mailbox = self.mailbox_key(view)?;
        if !cmd.uid {
            let sel = view.selected.as_ref()?;
            if names_beyond(&cmd, sel.exists()) {
                // The backend judges numbers of no message (Dovecot: BAD);
                // never answer for the part of the set that exists.
                return None;
            }
            // A client asking for UIDs teaches them with the answer.
            let asks_uid = cmd.items.iter().any(|a| matches!(a, FetchAtt::Uid));
            if may_prefetch && self.map_prefetch && !asks_uid {
                if let Some(seqs) = unmapped(&cmd, sel) {
                    // Learn the UIDs first (a one-line FETCH of ours), then
                    // plan with them: served like a UID FETCH.
                    let body = format!(
                        "FETCH {} (UID)",
                        crate::imap::fetch::SequenceSet::from_sorted(&seqs)
                    );
                    let kind = Kind::Prefetch(Prefetch {
                        mailbox,
                        atts: Vec::new(),
                        map_seqs: seqs,
                    });
                    return Some((kind, Upstream::Prefetch(body.into_bytes())));
                }
            }
        }
        let template_key = format!(
            "{}|{}|{}",
            self.backend,
            cmd.uid,
            cmd.items.iter().map(cmd_str).collect::<Vec<_>>().join(" ")
        );
        let atts = Arc::new(cmd.items.clone());
        let fill = |atts: Arc<Vec<FetchAtt>>| {
            Kind::Fill(Fill {
                tainted: false,
                mailbox: mailbox.clone(),
                uid_cmd: cmd.uid,
                atts,
                template_key: template_key.clone(),
            })
        };
        let Some(template) = self.templates.get(&template_key) else {
            self.count_miss();
            return Some((fill(atts), Upstream::Forward));
        };
        let sel = view.selected.as_ref()?;
        let uids = uids_of(&cmd, sel);
        if uids.is_empty() {
            self.count_miss();
            return Some((fill(atts), Upstream::Forward));
        }
        let pinned = self.pin(&mailbox, &uids);
        let injected = injected(&cmd, &uids, &pinned);
        let any_seen = cmd
            .items
            .iter()
            .zip(&injected)
            .any(|(a, inj)| *inj && a.sets_seen());
        let template_ok = !any_seen || template.contains(&Slot::Flags);
        let clash = cmd.items.iter().any(|a| {
            let c = cmd_str(a);
            c.eq_ignore_ascii_case(MARKER_PEEK) || c.eq_ignore_ascii_case(MARKER_SEEN)
        });
        let big_rest = cmd
            .items
            .iter()
            .zip(&injected)
            .any(|(a, inj)| !*inj && is_body_data(a));
        if may_prefetch && template_ok && !clash {
            if let Some(planned) = prefetch(&cmd, &uids, &pinned, &injected, &mailbox) {
                return Some(planned);
            }
        }
        if !injected.iter().any(|i| *i) || !template_ok || clash || big_rest {
            self.count_miss();
            return Some((fill(atts), Upstream::Forward));
        }
        if let Some(answer) = self.answer_locally(&cmd, &uids, &pinned, &template, view) {
            let bytes: usize = answer.len();
            self.cache.counters.hits.fetch_add(1, Ordering::Relaxed);
            self.cache
                .counters
                .bytes_served
                .fetch_add(bytes as u64, Ordering::Relaxed);
            return Some((Kind::Other, Upstream::Answer(answer)));
        }
        let body = rewritten(&cmd, &injected, any_seen);
        self.cache.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some((
            Kind::Serve(Serve {
                mailbox,
                uid_cmd: cmd.uid,
                atts,
                injected,
                pinned,
                template,
            }),
            Upstream::Replace(body.into_bytes()),
        ))
    }

    /// The cache entries of those of `uids` that have one, pinned for the
    /// command's life.
    fn pin(&self, mailbox: &MailboxKey, uids: &[u32]) -> Pinned {
        let mut pinned = HashMap::with_capacity(uids.len());
        for uid in uids {
            if let Some(items) = self.cache.get(&MessageKey {
                mailbox: mailbox.clone(),
                uid: *uid,
            }) {
                pinned.insert(*uid, items);
            }
        }
        pinned
    }

    fn count_miss(&self) {
        self.cache.counters.misses.fetch_add(1, Ordering::Relaxed);
    }
}

/// Cache entries pinned for a command, by UID.
type Pinned = HashMap<u32, Arc<MessageItems>>;

/// Is `att` cached for `uid`?
fn cached(pinned: &Pinned, uid: &u32, att: &FetchAtt) -> bool {
    pinned
        .get(uid)
        .is_some_and(|m| m.get(&att.cache_key()).is_some())
}

/// Which messages. With the whole sequence → UID map known (learned from
/// the backend's own responses and kept through EXPUNGE and EXISTS), UID
/// ranges and `*` resolve exactly; otherwise only an explicit UID list or
/// mapped sequence numbers can be served. Empty when none can.
fn uids_of(cmd: &FetchCommand, sel: &Selected) -> Vec<u32> {
    if cmd.uid {
        match sel.complete_uids() {
            Some(all) => {
                let star = all.iter().copied().max().unwrap_or(0);
                let v: Vec<u32> = all
                    .iter()
                    .copied()
                    .filter(|u| cmd.set.contains(*u, star))
                    .collect();
                if v.len() > MAX_SERVE_MESSAGES {
                    Vec::new()
                } else {
                    v
                }
            }
            None if !cmd.set.has_star() => cmd
                .set
                .iter_resolved(u32::MAX, MAX_SERVE_MESSAGES)
                .map(|i| i.collect())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    } else {
        let seqs: Option<Vec<u32>> = cmd
            .set
            .iter_resolved(sel.exists(), MAX_SERVE_MESSAGES)
            .map(|i| i.collect());
        seqs.and_then(|s| {
            s.iter()
                .map(|q| sel.uid_of(*q))
                .collect::<Option<Vec<u32>>>()
        })
        .unwrap_or_default()
    }
}

/// A sequence FETCH naming a number above the mailbox's last message.
fn names_beyond(cmd: &FetchCommand, exists: u32) -> bool {
    cmd.set.ranges().iter().any(|(a, b)| {
        [a, b]
            .iter()
            .any(|n| matches!(n, SeqNum::Num(n) if *n > exists))
    })
}

/// When a sequence FETCH (small enough to serve) names messages whose UIDs
/// the view does not know: the sequence numbers to ask the UIDs of. Every
/// unknown one in a mailbox of at most [`MAX_SERVE_MESSAGES`] (one round
/// trip per session rather than one per message read), else those of the
/// FETCH.
fn unmapped(cmd: &FetchCommand, sel: &Selected) -> Option<Vec<u32>> {
    let exists = sel.exists();
    let mut seqs = cmd.set.iter_resolved(exists, MAX_SERVE_MESSAGES)?;
    seqs.find(|q| sel.uid_of(*q).is_none())?;
    let all: Vec<u32> = if exists as usize <= MAX_SERVE_MESSAGES {
        (1..=exists).filter(|q| sel.uid_of(*q).is_none()).collect()
    } else {
        cmd.set
            .iter_resolved(exists, MAX_SERVE_MESSAGES)?
            .filter(|q| sel.uid_of(*q).is_none())
            .collect()
    };
    Some(all)
}

/// For each att: can it be injected from the cache (cacheable, and cached
/// for every message)?
fn injected(cmd: &FetchCommand, uids: &[u32], pinned: &Pinned) -> Vec<bool> {
    cmd.items
        .iter()
        .map(|a| a.cacheable() && uids.iter().all(|u| cached(pinned, u, a)))
        .collect()
}

/// Split by message: items cached for some of the messages only. Fetch
/// just what those messages miss (PEEK, alone in flight), then plan again
/// with everything cached. `None` when there is no such split or it is
/// not worth it.
fn prefetch(
    cmd: &FetchCommand,
    uids: &[u32],
    pinned: &Pinned,
    injected: &[bool],
    mailbox: &MailboxKey,
) -> Option<(Kind, Upstream)> {
    let partial: Vec<&FetchAtt> = cmd
        .items
        .iter()
        .zip(injected)
        .filter(|(a, inj)| !**inj && a.cacheable() && uids.iter().any(|u| cached(pinned, u, a)))
        .map(|(a, _)| a)
        .collect();
    let peeks: Option<Vec<FetchAtt>> = partial.iter().map(|a| a.as_peek()).collect();
    let (false, Some(peeks)) = (partial.is_empty(), peeks) else {
        return None;
    };
    let missing: Vec<u32> = uids
        .iter()
        .copied()
        .filter(|u| partial.iter().any(|a| !cached(pinned, u, a)))
        .collect();
    // Worth it only when most messages are cached already.
    if missing.is_empty() || missing.len() * 2 > uids.len() {
        return None;
    }
    let body = format!(
        "UID FETCH {} (UID {})",
        crate::imap::fetch::SequenceSet::from_sorted(&missing),
        peeks.iter().map(cmd_str).collect::<Vec<_>>().join(" ")
    );
    Some((
        Kind::Prefetch(Prefetch {
            mailbox: mailbox.clone(),
            atts: peeks,
            map_seqs: Vec::new(),
        }),
        Upstream::Prefetch(body.into_bytes()),
    ))
}

/// The command asked of the backend for a served FETCH: what is not
/// injected, plus the marker.
fn rewritten(cmd: &FetchCommand, injected: &[bool], any_seen: bool) -> String {
    let mut parts: Vec<String> = cmd
        .items
        .iter()
        .zip(injected)
        .filter(|(_, inj)| !**inj)
        .map(|(a, _)| cmd_str(a))
        .collect();
    parts.push(if any_seen { MARKER_SEEN } else { MARKER_PEEK }.to_string());
    format!(
        "{}FETCH {} ({})",
        if cmd.uid { "UID " } else { "" },
        cmd.set,
        parts.join(" ")
    )
}
