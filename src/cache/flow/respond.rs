//! Backend responses in a session with the FETCH cache: FETCH responses
//! assembled from frames, items kept for the cache, served responses
//! rebuilt byte-identical from the learned template, and the tagged
//! completions that store or drop what a command held back.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::{is_marker_name, Cmd, Disposition, Fill, Flow, Kind, Prefetch, Resp, Serve};
use crate::cache::split::{parse_fetch, FetchResponse};
use crate::cache::templates::{Slot, Templates};
use crate::cache::{CachedItem, FetchCache, MessageItems, MessageKey};
use crate::imap::fetch::{build_fetch_response as build_fetch, fetch_seq};
use crate::imap::mailbox::{Change, Tracker};

impl Flow {
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
        let items = Items {
            resp: &resp,
            parsed: &parsed,
        };
        let uid = (0..items.len()).find_map(|i| {
            let (n, v) = items.get(i);
            n.eq_ignore_ascii_case(b"UID")
                .then(|| std::str::from_utf8(v).ok()?.parse::<u32>().ok())
                .flatten()
        });
        if let Some(uid) = uid {
            view.on_fetch_uid(parsed.seq, uid);
        }
        let uid = uid.or_else(|| view.selected.as_ref()?.uid_of(parsed.seq));
        let head = self.inflight.front().map(|c| &c.kind);
        let keep = match head {
            Some(Kind::Fill(f)) => {
                let Some(uid) = uid.filter(|_| !f.tainted) else {
                    return;
                };
                Some(f.filled(&items, uid, &self.templates, self.cache.max_item_size))
            }
            Some(Kind::Prefetch(p)) => p.prefetched(&items, uid, &mut self.output),
            Some(Kind::Serve(s)) => s.served(&items, uid, &mut self.output, &self.cache),
            _ => None,
        };
        if let (Some((key, items)), Some(cmd)) = (keep, self.inflight.front_mut()) {
            cmd.hold_for_cache(key, items);
        }
    }
}

/// A response item: its name and value.
type Item<'a> = (&'a [u8], &'a [u8]);

/// A parsed FETCH response over its bytes.
struct Items<'a> {
    resp: &'a [u8],
    parsed: &'a FetchResponse,
}

impl<'a> Items<'a> {
    fn len(&self) -> usize {
        self.parsed.items.len()
    }

    /// Item `i`'s name and value (empty when there is no such item).
    fn get(&self, i: usize) -> Item<'a> {
        let Some(r) = self.parsed.items.get(i) else {
            return (&[][..], &[][..]);
        };
        let resp: &'a [u8] = self.resp;
        let part = |range: std::ops::Range<usize>| resp.get(range).unwrap_or_default();
        (part(r.name.clone()), part(r.value.clone()))
    }
}

/// What a response holds back for the cache: the message and its items.
type Keep = (MessageKey, Vec<CachedItem>);

impl Fill {
    /// A response to a forwarded FETCH: its cacheable items, and (from a
    /// complete answer) the item order it teaches.
    fn filled(
        &self,
        items: &Items<'_>,
        uid: u32,
        templates: &Templates,
        max_item_size: usize,
    ) -> Keep {
        let mut new = Vec::new();
        let mut order = Vec::new();
        for i in 0..items.len() {
            let (n, v) = items.get(i);
            match self.atts.iter().position(|a| a.matches_response_item(n)) {
                Some(ai) => {
                    order.push(Slot::Att(ai));
                    let att = self.atts.get(ai).filter(|a| a.cacheable());
                    if let Some(att) = att.filter(|_| v.len() <= max_item_size) {
                        new.push(CachedItem {
                            key: att.cache_key().into(),
                            name: Bytes::copy_from_slice(n),
                            value: Bytes::copy_from_slice(v),
                        });
                    }
                }
                None if n.eq_ignore_ascii_case(b"UID") && self.uid_cmd => order.push(Slot::Uid),
                None if n.eq_ignore_ascii_case(b"FLAGS") => order.push(Slot::Flags),
                None => {
                    order.clear();
                    break;
                }
            }
        }
        // A complete answer (every att present) teaches the order.
        let complete = (0..self.atts.len()).all(|ai| order.contains(&Slot::Att(ai)));
        if complete {
            templates.learn(self.template_key.clone(), order);
        }
        let key = MessageKey {
            mailbox: self.mailbox.clone(),
            uid,
        };
        (key, new)
    }
}

impl Prefetch {
    /// A response to our prefetch: kept for the cache, never shown to the
    /// client; anything else (an unsolicited update) goes to `output`.
    fn prefetched(
        &self,
        items: &Items<'_>,
        uid: Option<u32>,
        output: &mut BytesMut,
    ) -> Option<Keep> {
        let only_ids = (0..items.len()).all(|i| {
            let n = items.get(i).0;
            n.eq_ignore_ascii_case(b"UID") || n.eq_ignore_ascii_case(b"MODSEQ")
        });
        let has_uid = (0..items.len()).any(|i| items.get(i).0.eq_ignore_ascii_case(b"UID"));
        if has_uid && only_ids {
            // The answer to our FETCH of UIDs (the view learned the UID
            // from its first line; CONDSTORE sessions get MODSEQ with it):
            // never shown to the client.
            return None;
        }
        let mut new = Vec::new();
        for i in 0..items.len() {
            let (n, v) = items.get(i);
            if let Some(att) = self.atts.iter().find(|a| a.matches_response_item(n)) {
                new.push(CachedItem {
                    key: att.cache_key().into(),
                    name: Bytes::copy_from_slice(n),
                    value: Bytes::copy_from_slice(v),
                });
            }
        }
        match uid {
            // Ours: kept for the cache, never shown to the client.
            Some(uid) if !new.is_empty() => Some((
                MessageKey {
                    mailbox: self.mailbox.clone(),
                    uid,
                },
                new,
            )),
            // Anything else (an unsolicited update) goes through.
            _ => {
                output.extend_from_slice(items.resp);
                None
            }
        }
    }
}

impl Serve {
    /// A response to a served FETCH (it has the marker): rebuilt into
    /// `output` from the cached and the backend's items, in the template's
    /// order; the cacheable items the backend sent are kept. Anything else
    /// goes to `output` as it came.
    fn served(
        &self,
        items: &Items<'_>,
        uid: Option<u32>,
        output: &mut BytesMut,
        cache: &FetchCache,
    ) -> Option<Keep> {
        let marker = (0..items.len()).find(|i| is_marker_name(items.get(*i).0));
        let (Some(marker), Some(uid)) = (marker, uid) else {
            // Not an answer to our command (unsolicited update).
            output.extend_from_slice(items.resp);
            return None;
        };
        let Some(cached) = self.pinned.get(&uid) else {
            // Cannot happen for UIDs we planned; never invent data.
            output.extend_from_slice(items.resp);
            return None;
        };
        let (out, served) = self.rebuilt(items, marker, cached);
        // Cacheable items the backend sent now are kept for next time.
        let mut new = Vec::new();
        for (ai, att) in self.atts.iter().enumerate() {
            if att.cacheable() && !self.injected.get(ai).copied().unwrap_or(true) {
                if let Some(i) =
                    (0..items.len()).find(|i| att.matches_response_item(items.get(*i).0))
                {
                    let (n, v) = items.get(i);
                    new.push(CachedItem {
                        key: att.cache_key().into(),
                        name: Bytes::copy_from_slice(n),
                        value: Bytes::copy_from_slice(v),
                    });
                }
            }
        }
        let key = MessageKey {
            mailbox: self.mailbox.clone(),
            uid,
        };
        cache
            .counters
            .bytes_served
            .fetch_add(served, Ordering::Relaxed);
        output.extend_from_slice(&build_fetch(items.parsed.seq, &out));
        (!new.is_empty()).then_some((key, new))
    }

    /// The items of the rebuilt response, in the template's order (the
    /// marker, item `marker`, left out), and the bytes served from the
    /// cache.
    fn rebuilt<'a>(
        &'a self,
        items: &Items<'a>,
        marker: usize,
        cached: &'a MessageItems,
    ) -> (Vec<Item<'a>>, u64) {
        let mut out: Vec<Item<'_>> = Vec::with_capacity(self.template.len());
        let mut used = vec![false; items.len()];
        if let Some(u) = used.get_mut(marker) {
            *u = true;
        }
        let mut served = 0u64;
        for slot in self.template.iter() {
            match *slot {
                Slot::Att(ai) => {
                    let Some(att) = self.atts.get(ai) else {
                        continue;
                    };
                    if self.injected.get(ai).copied().unwrap_or(false) {
                        if let Some(ci) = cached.get(&att.cache_key()) {
                            served += (ci.name.len() + ci.value.len()) as u64;
                            out.push((&ci.name[..], &ci.value[..]));
                        }
                    } else if let Some(i) = (0..items.len()).find(|i| {
                        used.get(*i) == Some(&false) && att.matches_response_item(items.get(*i).0)
                    }) {
                        if let Some(u) = used.get_mut(i) {
                            *u = true;
                        }
                        out.push(items.get(i));
                    }
                }
                Slot::Uid | Slot::Flags => {
                    let want: &[u8] = if *slot == Slot::Uid { b"UID" } else { b"FLAGS" };
                    if *slot == Slot::Uid && !self.uid_cmd {
                        continue;
                    }
                    if let Some(i) = (0..items.len()).find(|i| {
                        used.get(*i) == Some(&false) && items.get(*i).0.eq_ignore_ascii_case(want)
                    }) {
                        if let Some(u) = used.get_mut(i) {
                            *u = true;
                        }
                        out.push(items.get(i));
                    }
                }
            }
        }
        // Anything the template did not place (should not happen).
        for (i, u) in used.iter().enumerate() {
            if !u {
                out.push(items.get(i));
            }
        }
        (out, served)
    }
}
