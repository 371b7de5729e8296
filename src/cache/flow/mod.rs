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
//!
//! Here the per-session state; `plan.rs` plans client FETCHes,
//! `respond.rs` handles the backend's responses; the templates are in
//! `cache/templates.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Tags of imapmux's own commands on a client's backend connection.
pub use crate::relay::OWN_TAG_PREFIX as PREFETCH_TAG_PREFIX;
pub use crate::relay::{Disposition, Upstream};

/// Learned response item orders, shared by the sessions.
pub use super::templates::Templates;

use bytes::{Bytes, BytesMut};

use super::templates::Slot;
use super::{CachedItem, FetchCache, MailboxKey, MessageItems, MessageKey};
use crate::imap::fetch::FetchAtt;
use crate::imap::mailbox::{Change, Tracker};
use crate::relay::{Command, Hook};

mod plan;
mod respond;
#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests make instants from the clock
mod seq_tests;

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
    /// A FETCH of UIDs only (`atts` empty): the sequence numbers whose
    /// UIDs it asks for.
    map_seqs: Vec<u32>,
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
    /// The prefetch asked for these messages' UIDs.
    map_seqs: Vec<u32>,
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

/// A FETCH response being assembled from frames.
#[derive(Debug)]
struct Resp {
    buf: BytesMut,
    hold: bool,
    /// Too large to assemble: passes through without filling.
    overflow: bool,
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
    /// Sequence FETCHes whose UIDs are not known learn them first (off
    /// once such a FETCH taught nothing: the backend does not answer it).
    map_prefetch: bool,
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
            map_prefetch: true,
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
#[allow(clippy::disallowed_methods)] // tests make instants from the clock
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
