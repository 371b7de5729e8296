//! The FETCH cache in a session (sans-I/O): decides per client FETCH
//! whether cached items can be injected, rewrites the command sent to the
//! backend, fills the cache from responses, and rebuilds responses
//! byte-identical to what the backend would have sent.
//!
//! The rewritten command always goes to the backend, in order, so response
//! order is never changed and the backend still validates that the
//! messages exist and applies side effects (\Seen). It asks only for the
//! items that are not cached, plus a 1-byte body marker that tells our
//! responses apart from unsolicited FETCH responses (for \Seen-setting
//! items the marker is non-PEEK, so the backend sets \Seen itself and
//! reports the FLAGS change the client would have seen).
//!
//! Item order in a rebuilt response follows a template learned from a
//! complete backend response to the same item list; without one the
//! command is forwarded unchanged (and teaches the template).

// Sans-I/O and fed by peers: no panics on input, no clock (time is
// passed in). See Cargo.toml [lints] and clippy.toml.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::disallowed_methods
)]
#![warn(unreachable_pub)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Tags of imapmux's own commands on a client's backend connection.
pub use crate::relay::OWN_TAG_PREFIX as PREFETCH_TAG_PREFIX;
pub use crate::relay::{Disposition, Upstream};

/// Learned response item orders, shared by the sessions.
pub use super::templates::Templates;

use bytes::{Bytes, BytesMut};

use super::split::parse_fetch;
use super::templates::Slot;
use super::{CachedItem, FetchCache, MailboxKey, MessageItems, MessageKey};
use crate::imap::command::trim_crlf;
use crate::imap::fetch::{
    build_fetch_response as build_fetch, fetch_seq, parse_fetch_command, FetchAtt, FetchCommand,
};
use crate::relay::{Command, Hook};
use crate::session::mailbox::{Change, Tracker};

/// Most messages one served FETCH may cover.
const MAX_SERVE_MESSAGES: usize = 1000;

#[derive(Debug)]
struct Fill {
    /// Another command ran alongside: responses may not be ours.
    tainted: bool,
    mailbox: MailboxKey,
    uid_cmd: bool,
    atts: Arc<Vec<FetchAtt>>,
    template_key: String,
}

#[derive(Debug)]
struct Serve {
    mailbox: MailboxKey,
    uid_cmd: bool,
    atts: Arc<Vec<FetchAtt>>,
    /// For each att: injected from the cache (true) or asked of the backend.
    injected: Vec<bool>,
    pinned: HashMap<u32, Arc<MessageItems>>,
    template: Arc<Vec<Slot>>,
}

#[derive(Debug)]
enum Kind {
    Other,
    Fill(Fill),
    Serve(Serve),
    /// Our own FETCH of the items some messages miss (split by message).
    Prefetch(Prefetch),
}

#[derive(Debug)]
struct Prefetch {
    mailbox: MailboxKey,
    atts: Vec<FetchAtt>,
}

/// A client FETCH waiting for our prefetch to complete.
#[derive(Debug)]
struct Waiting {
    /// The client's command line, as it came (with tag and CRLF).
    line: Vec<u8>,
    tag: String,
    proxy_tag: String,
    /// Set when the prefetch completed: true for a plain OK.
    outcome: Option<bool>,
}

#[derive(Debug)]
struct Cmd {
    tag: String,
    kind: Kind,
    /// Items learned from this command's responses, stored only when it
    /// completes with a plain OK: Dovecot answers for messages another
    /// session expunged with placeholders (`BODY[] NIL`) and
    /// `OK [EXPUNGEISSUED]`, which must never be cached.
    pending: Vec<(MessageKey, Vec<CachedItem>)>,
    pending_bytes: usize,
}

/// Most bytes of items one command may hold back for the cache.
const PENDING_BUDGET: usize = 16 * 1024 * 1024;

impl Cmd {
    fn new(tag: String, kind: Kind) -> Self {
        Cmd {
            tag,
            kind,
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }

    fn hold_for_cache(&mut self, key: MessageKey, items: Vec<CachedItem>) {
        let bytes: usize = items.iter().map(|i| i.name.len() + i.value.len()).sum();
        if self.pending_bytes + bytes > PENDING_BUDGET {
            return; // too much for one command: those are simply not cached
        }
        self.pending_bytes += bytes;
        self.pending.push((key, items));
    }
}

/// Most messages a FETCH answered without the backend may cover.
const MAX_LOCAL_MESSAGES: usize = 64;

/// A FETCH response being assembled from frames.
#[derive(Debug)]
struct Resp {
    buf: BytesMut,
    hold: bool,
    /// Too large to assemble: passes through without filling.
    overflow: bool,
}

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

/// Per-session cache flow.
pub struct Flow {
    cache: Arc<FetchCache>,
    templates: Arc<Templates>,
    backend: Arc<str>,
    user: Arc<str>,
    inflight: VecDeque<Cmd>,
    resp: Option<Resp>,
    output: BytesMut,
    /// Last UIDVALIDITY seen per mailbox name (bounded).
    uidvalidities: HashMap<String, u32>,
    waiting: Option<Waiting>,
    next_proxy_tag: u64,
}

/// The marker: a body partial far beyond any message, so the answer is an
/// empty string, and an origin no client uses, so it cannot be confused
/// with a client's own item.
const MARKER_PEEK: &str = "BODY.PEEK[]<2147483646.1>";
const MARKER_SEEN: &str = "BODY[]<2147483646.1>";

fn is_marker_name(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"BODY[]<2147483646>")
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("inflight", &self.inflight.len())
            .finish()
    }
}

impl Flow {
    pub fn new(
        cache: Arc<FetchCache>,
        templates: Arc<Templates>,
        backend: &str,
        user: &str,
    ) -> Self {
        Flow {
            cache,
            templates,
            backend: backend.into(),
            user: user.into(),
            inflight: VecDeque::new(),
            resp: None,
            output: BytesMut::new(),
            uidvalidities: HashMap::new(),
            waiting: None,
            next_proxy_tag: 0,
        }
    }

    /// The relay answered the command tagged `tag` itself (e.g. `NO` to
    /// COMPRESS): no backend answer will come, so stop waiting for one.
    /// Without this, a client repeating such commands would grow the
    /// in-flight list without bound.
    pub fn answered_by_proxy(&mut self, tag: &str) {
        if let Some(pos) = self.inflight.iter().rposition(|c| c.tag == tag) {
            self.inflight.remove(pos);
        }
    }

    /// True when backend frames can pass without looking at them beyond
    /// line starts (no FETCH of ours in flight and nothing assembling).
    pub fn idle(&self) -> bool {
        self.resp.is_none() && self.inflight.iter().all(|c| matches!(c.kind, Kind::Other))
    }

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
                self.inflight.push_back(Cmd::new(proxy_tag.clone(), kind));
                self.waiting = Some(Waiting {
                    line: line.to_vec(),
                    tag,
                    proxy_tag,
                    outcome: None,
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

    fn mailbox_key(&self, view: &Tracker) -> Option<MailboxKey> {
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
        // Which messages: explicit UIDs, or sequence numbers we can map.
        // Which messages. With the whole sequence → UID map known (learned
        // from the backend's own responses and kept through EXPUNGE and
        // EXISTS), UID ranges and `*` resolve exactly; otherwise only an
        // explicit UID list or mapped sequence numbers can be served.
        let sel = view.selected.as_ref()?;
        let uids: Vec<u32> = if cmd.uid {
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
        };
        if uids.is_empty() {
            self.count_miss();
            return Some((fill(atts), Upstream::Forward));
        }
        let mut pinned = HashMap::with_capacity(uids.len());
        for uid in &uids {
            if let Some(items) = self.cache.get(&MessageKey {
                mailbox: mailbox.clone(),
                uid: *uid,
            }) {
                pinned.insert(*uid, items);
            }
        }
        let injected: Vec<bool> = cmd
            .items
            .iter()
            .map(|a| {
                a.cacheable()
                    && uids.iter().all(|u| {
                        pinned
                            .get(u)
                            .is_some_and(|m| m.get(&a.cache_key()).is_some())
                    })
            })
            .collect();
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
        // Split by message: items cached for some of the messages only.
        // Fetch just what those messages miss (PEEK, alone in flight), then
        // plan again with everything cached.
        if may_prefetch && template_ok && !clash {
            let partial: Vec<&FetchAtt> = cmd
                .items
                .iter()
                .zip(&injected)
                .filter(|(a, inj)| {
                    !**inj
                        && a.cacheable()
                        && uids.iter().any(|u| {
                            pinned
                                .get(u)
                                .is_some_and(|m| m.get(&a.cache_key()).is_some())
                        })
                })
                .map(|(a, _)| a)
                .collect();
            let peeks: Option<Vec<FetchAtt>> = partial.iter().map(|a| a.as_peek()).collect();
            if let (false, Some(peeks)) = (partial.is_empty(), peeks) {
                let missing: Vec<u32> = uids
                    .iter()
                    .copied()
                    .filter(|u| {
                        partial.iter().any(|a| {
                            !pinned
                                .get(u)
                                .is_some_and(|m| m.get(&a.cache_key()).is_some())
                        })
                    })
                    .collect();
                // Worth it only when most messages are cached already.
                if !missing.is_empty() && missing.len() * 2 <= uids.len() {
                    let body = format!(
                        "UID FETCH {} (UID {})",
                        crate::imap::fetch::SequenceSet::from_sorted(&missing),
                        peeks.iter().map(cmd_str).collect::<Vec<_>>().join(" ")
                    );
                    return Some((
                        Kind::Prefetch(Prefetch {
                            mailbox: mailbox.clone(),
                            atts: peeks,
                        }),
                        Upstream::Prefetch(body.into_bytes()),
                    ));
                }
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
        // The rewritten command: what is not injected, plus the marker.
        let mut parts: Vec<String> = cmd
            .items
            .iter()
            .zip(&injected)
            .filter(|(_, inj)| !**inj)
            .map(|(a, _)| cmd_str(a))
            .collect();
        parts.push(if any_seen { MARKER_SEEN } else { MARKER_PEEK }.to_string());
        let body = format!(
            "{}FETCH {} ({})",
            if cmd.uid { "UID " } else { "" },
            cmd.set,
            parts.join(" ")
        );
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

    fn count_miss(&self) {
        self.cache.counters.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Is a FETCH of ours (Fill/Serve) at the head of the queue?
    fn head_fetch(&self) -> Option<&Cmd> {
        self.inflight
            .front()
            .filter(|c| !matches!(c.kind, Kind::Other))
    }

    /// A backend frame: the first line part of a response (`first`), a
    /// later line part, or literal data. `end` is true on the last frame
    /// of the response.
    pub fn on_backend_frame(
        &mut self,
        bytes: &[u8],
        first: bool,
        end: bool,
        view: &mut Tracker,
        changes: &[Change],
    ) -> Disposition {
        if first {
            self.start_response(bytes);
        }
        let Some(resp) = self.resp.as_mut() else {
            if first && end && self.complete_line(bytes, view, changes) {
                return Disposition::Hold;
            }
            return Disposition::Pass;
        };
        let cap = self.cache.max_item_size.saturating_add(64 * 1024);
        if !resp.overflow {
            if resp.buf.len() + bytes.len() > cap {
                resp.overflow = true;
                if resp.hold {
                    // Cannot rebuild what we cannot hold: send what we have
                    // as it came, and the rest unchanged.
                    let held = std::mem::take(&mut resp.buf);
                    self.output.extend_from_slice(&held);
                    self.output.extend_from_slice(bytes);
                    resp.hold = false;
                    resp.buf = BytesMut::new();
                    if end {
                        self.resp = None;
                    }
                    return Disposition::Hold;
                }
                resp.buf = BytesMut::new();
            } else {
                resp.buf.extend_from_slice(bytes);
            }
        }
        let hold = resp.hold;
        if end {
            let resp = self.resp.take();
            if let Some(r) = resp {
                if !r.overflow {
                    self.finish_response(r.buf.freeze(), hold, view);
                }
            }
        }
        if hold {
            Disposition::Hold
        } else {
            Disposition::Pass
        }
    }

    /// Output produced by held responses, in order.
    pub fn take_output(&mut self) -> Option<Bytes> {
        (!self.output.is_empty()).then(|| self.output.split().freeze())
    }

    fn start_response(&mut self, line: &[u8]) {
        self.resp = None;
        if fetch_seq(line).is_none() {
            return;
        }
        let hold = match self.head_fetch().map(|c| &c.kind) {
            Some(Kind::Serve(_)) | Some(Kind::Prefetch(_)) => true,
            Some(Kind::Fill(_)) => false,
            // FETCH outside our commands: the relay's view learns the UID
            // from the first line; nothing is assembled.
            _ => return,
        };
        self.resp = Some(Resp {
            buf: BytesMut::new(),
            hold,
            overflow: false,
        });
    }

    /// A one-line response that is not part of a FETCH we handle. True
    /// when it answers a command of ours (the client must not see it).
    fn complete_line(&mut self, line: &[u8], view: &Tracker, changes: &[Change]) -> bool {
        self.apply(changes, view);
        let tagged = crate::imap::command::tag_of(line).is_some();
        if let Some(sel) = view.selected.as_ref().filter(|_| tagged) {
            if let Some(v) = sel.uidvalidity {
                if self.uidvalidities.len() > 1000 {
                    self.uidvalidities.clear();
                }
                let old = self.uidvalidities.insert(sel.name.clone(), v);
                if old.is_some_and(|o| o != v) {
                    // Same name, new mailbox: purge what the old one left.
                    self.cache
                        .invalidate_mailbox(&self.backend, &self.user, &sel.name);
                }
            }
        }
        if let Some(tag) = crate::imap::command::tag_of(line) {
            if let Some(pos) = self.inflight.iter().position(|c| c.tag == tag) {
                if let Some(cmd) = self.inflight.remove(pos) {
                    let rest = line.get(tag.len()..).unwrap_or_default();
                    let plain_ok = rest.len() >= 3
                        && rest
                            .get(..3)
                            .is_some_and(|r| r.eq_ignore_ascii_case(b" OK"))
                        && !rest
                            .windows(15)
                            .any(|w| w.eq_ignore_ascii_case(b"[EXPUNGEISSUED]"));
                    if plain_ok {
                        for (key, items) in cmd.pending {
                            self.cache.insert_items(key, items);
                        }
                    }
                    if let Some(w) = self.waiting.as_mut().filter(|w| w.proxy_tag == tag) {
                        w.outcome = Some(plain_ok);
                        return true;
                    }
                }
            }
        }
        false
    }

    fn apply(&mut self, changes: &[Change], view: &Tracker) {
        for c in changes {
            match c {
                Change::Expunged(uid) => {
                    if let Some(mk) = self.mailbox_key(view) {
                        self.cache.invalidate_message(&MessageKey {
                            mailbox: mk,
                            uid: *uid,
                        });
                    }
                }
                Change::MailboxInvalid(name) => {
                    self.cache
                        .invalidate_mailbox(&self.backend, &self.user, name)
                }
            }
        }
    }

    fn finish_response(&mut self, resp: Bytes, hold: bool, view: &mut Tracker) {
        let Some(parsed) = parse_fetch(&resp) else {
            if hold {
                self.output.extend_from_slice(&resp);
            }
            return;
        };
        let item = |i: usize| -> (&[u8], &[u8]) {
            let Some(r) = parsed.items.get(i) else {
                return (&[][..], &[][..]);
            };
            let part = |range: std::ops::Range<usize>| resp.get(range).unwrap_or_default();
            (part(r.name.clone()), part(r.value.clone()))
        };
        let uid = (0..parsed.items.len()).find_map(|i| {
            let (n, v) = item(i);
            n.eq_ignore_ascii_case(b"UID")
                .then(|| std::str::from_utf8(v).ok()?.parse::<u32>().ok())
                .flatten()
        });
        if let Some(uid) = uid {
            view.on_fetch_uid(parsed.seq, uid);
        }
        let uid = uid.or_else(|| view.selected.as_ref()?.uid_of(parsed.seq));
        let mut hold: Option<(MessageKey, Vec<CachedItem>)> = None;
        let head = self.inflight.front().map(|c| &c.kind);
        match head {
            Some(Kind::Fill(f)) => {
                let Some(uid) = uid.filter(|_| !f.tainted) else {
                    return;
                };
                let mut new = Vec::new();
                let mut order = Vec::new();
                for i in 0..parsed.items.len() {
                    let (n, v) = item(i);
                    match f.atts.iter().position(|a| a.matches_response_item(n)) {
                        Some(ai) => {
                            order.push(Slot::Att(ai));
                            let att = f.atts.get(ai).filter(|a| a.cacheable());
                            if let Some(att) = att.filter(|_| v.len() <= self.cache.max_item_size) {
                                new.push(CachedItem {
                                    key: att.cache_key().into(),
                                    name: Bytes::copy_from_slice(n),
                                    value: Bytes::copy_from_slice(v),
                                });
                            }
                        }
                        None if n.eq_ignore_ascii_case(b"UID") && f.uid_cmd => {
                            order.push(Slot::Uid)
                        }
                        None if n.eq_ignore_ascii_case(b"FLAGS") => order.push(Slot::Flags),
                        None => {
                            order.clear();
                            break;
                        }
                    }
                }
                // A complete answer (every att present) teaches the order.
                let complete = (0..f.atts.len()).all(|ai| order.contains(&Slot::Att(ai)));
                if complete {
                    self.templates.learn(f.template_key.clone(), order);
                }
                let key = MessageKey {
                    mailbox: f.mailbox.clone(),
                    uid,
                };
                hold = Some((key, new));
            }
            Some(Kind::Prefetch(p)) => {
                let mut new = Vec::new();
                for i in 0..parsed.items.len() {
                    let (n, v) = item(i);
                    if let Some(att) = p.atts.iter().find(|a| a.matches_response_item(n)) {
                        new.push(CachedItem {
                            key: att.cache_key().into(),
                            name: Bytes::copy_from_slice(n),
                            value: Bytes::copy_from_slice(v),
                        });
                    }
                }
                match uid {
                    // Ours: kept for the cache, never shown to the client.
                    Some(uid) if !new.is_empty() => {
                        hold = Some((
                            MessageKey {
                                mailbox: p.mailbox.clone(),
                                uid,
                            },
                            new,
                        ));
                    }
                    // Anything else (an unsolicited update) goes through.
                    _ => self.output.extend_from_slice(&resp),
                }
            }
            Some(Kind::Serve(s)) => {
                let marker = (0..parsed.items.len()).find(|i| is_marker_name(item(*i).0));
                let (Some(marker), Some(uid)) = (marker, uid) else {
                    // Not an answer to our command (unsolicited update).
                    self.output.extend_from_slice(&resp);
                    return;
                };
                let Some(cached) = s.pinned.get(&uid) else {
                    // Cannot happen for UIDs we planned; never invent data.
                    self.output.extend_from_slice(&resp);
                    return;
                };
                let mut out: Vec<(&[u8], &[u8])> = Vec::with_capacity(s.template.len());
                let mut used = vec![false; parsed.items.len()];
                if let Some(u) = used.get_mut(marker) {
                    *u = true;
                }
                let mut served = 0u64;
                for slot in s.template.iter() {
                    match *slot {
                        Slot::Att(ai) => {
                            let Some(att) = s.atts.get(ai) else { continue };
                            if s.injected.get(ai).copied().unwrap_or(false) {
                                if let Some(ci) = cached.get(&att.cache_key()) {
                                    served += (ci.name.len() + ci.value.len()) as u64;
                                    out.push((&ci.name[..], &ci.value[..]));
                                }
                            } else if let Some(i) = (0..parsed.items.len()).find(|i| {
                                used.get(*i) == Some(&false)
                                    && att.matches_response_item(item(*i).0)
                            }) {
                                if let Some(u) = used.get_mut(i) {
                                    *u = true;
                                }
                                out.push(item(i));
                            }
                        }
                        Slot::Uid | Slot::Flags => {
                            let want: &[u8] = if *slot == Slot::Uid { b"UID" } else { b"FLAGS" };
                            if *slot == Slot::Uid && !s.uid_cmd {
                                continue;
                            }
                            if let Some(i) = (0..parsed.items.len()).find(|i| {
                                used.get(*i) == Some(&false)
                                    && item(*i).0.eq_ignore_ascii_case(want)
                            }) {
                                if let Some(u) = used.get_mut(i) {
                                    *u = true;
                                }
                                out.push(item(i));
                            }
                        }
                    }
                }
                // Anything the template did not place (should not happen).
                for (i, u) in used.iter().enumerate() {
                    if !u {
                        out.push(item(i));
                    }
                }
                // Cacheable items the backend sent now are kept for next time.
                let mut new = Vec::new();
                for (ai, att) in s.atts.iter().enumerate() {
                    if att.cacheable() && !s.injected.get(ai).copied().unwrap_or(true) {
                        if let Some(i) =
                            (0..parsed.items.len()).find(|i| att.matches_response_item(item(*i).0))
                        {
                            let (n, v) = item(i);
                            new.push(CachedItem {
                                key: att.cache_key().into(),
                                name: Bytes::copy_from_slice(n),
                                value: Bytes::copy_from_slice(v),
                            });
                        }
                    }
                }
                let key = MessageKey {
                    mailbox: s.mailbox.clone(),
                    uid,
                };
                if !new.is_empty() {
                    hold = Some((key, new));
                }
                self.cache
                    .counters
                    .bytes_served
                    .fetch_add(served, Ordering::Relaxed);
                self.output
                    .extend_from_slice(&build_fetch(parsed.seq, &out));
            }
            _ => {}
        }
        if let (Some((key, items)), Some(cmd)) = (hold, self.inflight.front_mut()) {
            cmd.hold_for_cache(key, items);
        }
    }
}

/// The FETCH cache as a relay hook.
impl Hook for Flow {
    fn command(&mut self, cmd: &Command, line: &[u8], view: &Tracker) -> Upstream {
        self.on_client_command(cmd, line, view)
    }

    fn answered_by_proxy(&mut self, tag: &str) {
        Flow::answered_by_proxy(self, tag);
    }

    fn after_prefetch(&mut self, view: &Tracker) -> Option<Upstream> {
        Flow::after_prefetch(self, view)
    }

    fn backend_frame(
        &mut self,
        bytes: &[u8],
        first: bool,
        end: bool,
        view: &mut Tracker,
        changes: &[Change],
    ) -> Disposition {
        self.on_backend_frame(bytes, first, end, view, changes)
    }

    fn take_output(&mut self) -> Option<Bytes> {
        Flow::take_output(self)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)]
mod tests {
    use super::*;

    #[test]
    fn commands_the_relay_answers_leave_nothing_in_flight() {
        let cache = Arc::new(FetchCache::new(&crate::cache::CacheConfig::default()));
        let mut f = Flow::new(cache, Arc::new(Templates::default()), "b", "u");
        let view = Tracker::default();
        for i in 0..10_000 {
            let line = format!("c{i} COMPRESS DEFLATE\r\n");
            let cmd = Command::parse(line.as_bytes(), false).unwrap();
            f.on_client_command(&cmd, line.as_bytes(), &view);
            f.answered_by_proxy(&format!("c{i}"));
        }
        assert!(f.inflight.is_empty(), "{}", f.inflight.len());
    }
}
