//! Sequence-number FETCHes and the cache, from byte transcripts through
//! the relay core (no sockets): a FETCH whose UIDs the session does not
//! know learns them with a FETCH of UIDs of imapmux's own, then is served
//! like a UID FETCH; expunges shift the map; nothing of imapmux's own
//! reaches the client.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::{Flow, Templates};
use crate::cache::{CacheConfig, FetchCache};
use crate::relay::{Hook, RelayConfig, RelaySession};

fn cfg() -> RelayConfig {
    RelayConfig::for_tests()
}

/// What every session of one imapmux shares.
struct Shared {
    cache: Arc<FetchCache>,
    templates: Arc<Templates>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            cache: Arc::new(FetchCache::new(&CacheConfig::default())),
            templates: Arc::new(Templates::default()),
        }
    }

    /// A fresh session of `user`, with INBOX (`exists` messages) selected.
    fn session(&self, user: &str, exists: u32) -> S {
        let hooks: Vec<Box<dyn Hook>> = vec![Box::new(Flow::new(
            self.cache.clone(),
            self.templates.clone(),
            "b1",
            user,
        ))];
        let now = Instant::now();
        let s = RelaySession::new(cfg(), BytesMut::new(), BytesMut::new(), hooks, now);
        let mut s = S { s, now };
        s.client("s SELECT INBOX\r\n");
        assert_eq!(s.sent_to_backend(), "s SELECT INBOX\r\n");
        s.backend(&format!(
            "* {exists} EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n"
        ));
        s.sent_to_client();
        s
    }
}

struct S {
    s: RelaySession,
    now: Instant,
}

impl S {
    fn client(&mut self, data: &str) {
        self.s.client_input(data.as_bytes(), self.now);
    }

    fn backend(&mut self, data: &str) {
        self.s.backend_input(data.as_bytes(), self.now);
    }

    fn sent_to_backend(&mut self) -> String {
        self.s.drain_to_backend(self.now)
    }

    fn sent_to_client(&mut self) -> String {
        self.s.drain_to_client(self.now)
    }

    fn uid_of(&self, seq: u32) -> Option<u32> {
        self.s.view().selected.as_ref()?.uid_of(seq)
    }
}

fn body(seq: u32, text: &str) -> String {
    format!("* {seq} FETCH (BODY[] {{{}}}\r\n{text})\r\n", text.len())
}

#[test]
fn a_fresh_session_learns_uids_first_and_is_served_like_a_uid_fetch() {
    let sh = Shared::new();
    // Session 1: nothing known. The UIDs are asked first (imapmux's own
    // command, never shown), then the client's FETCH goes as it came.
    let mut a = sh.session("alice", 3);
    // (All of a small mailbox's UIDs at once: one round trip per session.)
    a.client("a FETCH 2 (BODY.PEEK[])\r\n");
    assert_eq!(a.sent_to_backend(), "imapmux.1 FETCH 1:3 (UID)\r\n");
    a.backend("* 1 FETCH (UID 4)\r\n* 2 FETCH (UID 5)\r\n* 3 FETCH (UID 6)\r\nimapmux.1 OK Fetch completed (0.001 + 0.000 secs).\r\n");
    assert_eq!(a.uid_of(2), Some(5));
    assert_eq!(a.sent_to_backend(), "a FETCH 2 (BODY.PEEK[])\r\n");
    a.backend(&format!("{}a OK Fetch completed.\r\n", body(2, "hello")));
    assert_eq!(
        a.sent_to_client(),
        format!("{}a OK Fetch completed.\r\n", body(2, "hello"))
    );
    // The same read again: answered here, the backend sees nothing.
    a.client("b FETCH 2 (BODY.PEEK[])\r\n");
    assert_eq!(a.sent_to_backend(), "");
    assert_eq!(
        a.sent_to_client(),
        format!("{}b OK Fetch completed (cache).\r\n", body(2, "hello"))
    );

    // Session 2 of the same user, fresh: one small FETCH of UIDs, then
    // the body comes from the cache.
    let mut b = sh.session("alice", 3);
    b.client("c FETCH 2 (BODY.PEEK[])\r\n");
    assert_eq!(b.sent_to_backend(), "imapmux.1 FETCH 1:3 (UID)\r\n");
    b.backend("* 1 FETCH (UID 4)\r\n* 2 FETCH (UID 5)\r\n* 3 FETCH (UID 6)\r\nimapmux.1 OK Fetch completed.\r\n");
    assert_eq!(b.sent_to_backend(), "");
    assert_eq!(
        b.sent_to_client(),
        format!("{}c OK Fetch completed (cache).\r\n", body(2, "hello"))
    );

    // Another user with the same mailbox name and UIDs: never alice's data.
    let mut c = sh.session("bob", 3);
    c.client("d FETCH 2 (BODY.PEEK[])\r\n");
    assert_eq!(c.sent_to_backend(), "imapmux.1 FETCH 1:3 (UID)\r\n");
    c.backend("* 1 FETCH (UID 4)\r\n* 2 FETCH (UID 5)\r\n* 3 FETCH (UID 6)\r\nimapmux.1 OK Fetch completed.\r\n");
    assert_eq!(c.sent_to_backend(), "d FETCH 2 (BODY.PEEK[])\r\n");
    c.backend(&format!("{}d OK Fetch completed.\r\n", body(2, "bob's")));
    assert_eq!(
        c.sent_to_client(),
        format!("{}d OK Fetch completed.\r\n", body(2, "bob's"))
    );
}

#[test]
fn expunges_shift_the_map_and_unknown_numbers_are_asked_again() {
    let sh = Shared::new();
    let mut a = sh.session("alice", 4);
    a.client("a FETCH 1:4 (UID BODY.PEEK[])\r\n");
    // The client asked for UIDs itself: nothing to learn first.
    assert_eq!(a.sent_to_backend(), "a FETCH 1:4 (UID BODY.PEEK[])\r\n");
    let resp: String = [(1, 10), (2, 11), (3, 12), (4, 13)]
        .iter()
        .map(|(q, u)| format!("* {q} FETCH (UID {u} BODY[] {{2}}\r\nm{q})\r\n"))
        .collect();
    a.backend(&format!("{resp}a OK Fetch completed.\r\n"));
    a.sent_to_client();
    a.client("b FETCH 3 (BODY.PEEK[])\r\n");
    // Every UID is known, but this item list has no learned order yet.
    assert_eq!(a.sent_to_backend(), "b FETCH 3 (BODY.PEEK[])\r\n");
    a.backend(&format!("{}b OK Fetch completed.\r\n", body(3, "m3")));
    assert_eq!(
        a.sent_to_client(),
        format!("{}b OK Fetch completed.\r\n", body(3, "m3"))
    );
    // Message 2 (UID 11) goes: 3 is now UID 13, 2 is UID 12.
    a.client("n NOOP\r\n");
    assert_eq!(a.sent_to_backend(), "n NOOP\r\n");
    a.backend("* 2 EXPUNGE\r\n* 3 EXISTS\r\nn OK NOOP completed.\r\n");
    assert_eq!(
        a.sent_to_client(),
        "* 2 EXPUNGE\r\n* 3 EXISTS\r\nn OK NOOP completed.\r\n"
    );
    a.client("c FETCH 3 (BODY.PEEK[])\r\nd FETCH 2 (BODY.PEEK[])\r\n");
    assert_eq!(a.sent_to_backend(), "");
    assert_eq!(
        a.sent_to_client(),
        format!(
            "{}c OK Fetch completed (cache).\r\n{}d OK Fetch completed (cache).\r\n",
            body(3, "m4"),
            body(2, "m3")
        )
    );
    // VANISHED (QRESYNC) likewise: UID 10 goes, UID 12 is now 1.
    a.backend("* VANISHED 10\r\n");
    a.client("e FETCH 1 (BODY.PEEK[])\r\n");
    assert_eq!(a.sent_to_backend(), "");
    assert_eq!(
        a.sent_to_client(),
        format!(
            "* VANISHED 10\r\n{}e OK Fetch completed (cache).\r\n",
            body(1, "m3")
        )
    );
    // New mail: its number is unknown, so its UID is asked first.
    a.backend("* 3 EXISTS\r\n");
    a.client("f FETCH 3 (BODY.PEEK[])\r\n");
    assert_eq!(a.sent_to_backend(), "imapmux.1 FETCH 3 (UID)\r\n");
    a.backend("* 3 FETCH (UID 20)\r\nimapmux.1 OK Fetch completed.\r\n");
    assert_eq!(a.sent_to_backend(), "f FETCH 3 (BODY.PEEK[])\r\n");
    a.backend(&format!("{}f OK Fetch completed.\r\n", body(3, "new")));
    assert_eq!(
        a.sent_to_client(),
        format!("* 3 EXISTS\r\n{}f OK Fetch completed.\r\n", body(3, "new"))
    );
}

#[test]
fn what_imapmux_cannot_resolve_goes_to_the_backend_as_it_came() {
    let sh = Shared::new();
    let mut a = sh.session("alice", 3);
    // A number above the last message: the backend judges it.
    a.client("a FETCH 2,9 (BODY.PEEK[])\r\n");
    assert_eq!(a.sent_to_backend(), "a FETCH 2,9 (BODY.PEEK[])\r\n");
    a.backend("a BAD Error in IMAP command FETCH: Invalid messageset\r\n");
    a.sent_to_client();
    // Unsolicited updates during imapmux's FETCH of UIDs reach the client;
    // a refused FETCH of UIDs lets the client's command go as it came.
    a.client("b FETCH 1 (BODY.PEEK[])\r\n");
    assert_eq!(a.sent_to_backend(), "imapmux.1 FETCH 1:3 (UID)\r\n");
    a.backend("* 3 FETCH (FLAGS (\\Seen))\r\n* 4 EXISTS\r\nimapmux.1 NO nope\r\n");
    assert_eq!(a.sent_to_backend(), "b FETCH 1 (BODY.PEEK[])\r\n");
    a.backend(&format!("{}b OK Fetch completed.\r\n", body(1, "x")));
    assert_eq!(
        a.sent_to_client(),
        format!(
            "* 3 FETCH (FLAGS (\\Seen))\r\n* 4 EXISTS\r\n{}b OK Fetch completed.\r\n",
            body(1, "x")
        )
    );
    // A backend that answers without UIDs is not asked again.
    a.client("c FETCH 2 (BODY.PEEK[])\r\n");
    assert_eq!(a.sent_to_backend(), "imapmux.2 FETCH 1:4 (UID)\r\n");
    a.backend("imapmux.2 OK Fetch completed.\r\n");
    assert_eq!(a.sent_to_backend(), "c FETCH 2 (BODY.PEEK[])\r\n");
    a.backend(&format!("{}c OK Fetch completed.\r\n", body(2, "y")));
    a.sent_to_client();
    a.client("d FETCH 3 (BODY.PEEK[])\r\n");
    assert_eq!(a.sent_to_backend(), "d FETCH 3 (BODY.PEEK[])\r\n");
    // With CONDSTORE enabled, the answer carries MODSEQ: still not shown.
    let mut m = sh.session("alice", 3);
    m.client("e FETCH 3 (BODY.PEEK[])\r\n");
    assert_eq!(m.sent_to_backend(), "imapmux.1 FETCH 1:3 (UID)\r\n");
    m.backend("* 1 FETCH (UID 7 MODSEQ (10))\r\n* 2 FETCH (UID 8 MODSEQ (11))\r\n");
    m.backend("* 3 FETCH (UID 9 MODSEQ (12))\r\nimapmux.1 OK Fetch completed.\r\n");
    assert_eq!(m.uid_of(3), Some(9));
    assert_eq!(m.sent_to_backend(), "e FETCH 3 (BODY.PEEK[])\r\n");
    m.backend(&format!("{}e OK Fetch completed.\r\n", body(3, "z")));
    assert_eq!(
        m.sent_to_client(),
        format!("{}e OK Fetch completed.\r\n", body(3, "z"))
    );
    // A large mailbox: only the FETCH's own numbers are asked.
    let mut l = sh.session("alice", 5000);
    l.client("g FETCH 7,4990:* (BODY.PEEK[])\r\n");
    assert_eq!(l.sent_to_backend(), "imapmux.1 FETCH 7,4990:5000 (UID)\r\n");
    // Pipelined behind another command: not planned at all.
    let mut b = sh.session("alice", 3);
    b.client("p NOOP\r\nq FETCH 1 (BODY.PEEK[])\r\n");
    assert_eq!(b.sent_to_backend(), "p NOOP\r\nq FETCH 1 (BODY.PEEK[])\r\n");
}
