//! The FETCH cache: immutable message data (bodies, headers,
//! BODYSTRUCTURE, ENVELOPE…) kept in memory, weighed in bytes (moka).
//!
//! One entry per message: backend + authenticated user + mailbox +
//! UIDVALIDITY + UID. Nothing is shared between users, even for identical
//! mailboxes: the user is part of every key. Inside an entry, items are
//! keyed by their normalized FETCH item (see `imap::fetch`), and keep the
//! item name bytes exactly as the backend sent them, so a hit can be
//! answered byte-identically.

// Fed by peers (backend responses, client commands): no panics on input,
// no clock (time is passed in). See Cargo.toml [lints] and clippy.toml.
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

pub mod flow;
pub mod split;
mod templates;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use serde::Deserialize;

/// `[cache]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Total bytes of cached data, e.g. "512MiB".
    pub max_bytes: bytesize::ByteSize,
    /// Items larger than this are never cached (nor buffered).
    pub max_item_size: bytesize::ByteSize,
    /// Drop an entry this long after it was stored.
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub ttl: Duration,
    /// Drop an entry not read for this long.
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub idle_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            max_bytes: bytesize::ByteSize::mib(512),
            max_item_size: bytesize::ByteSize::mib(4),
            ttl: Duration::from_secs(24 * 3600),
            idle_ttl: Duration::from_secs(3600),
        }
    }
}

/// Which mailbox a message lives in, for one user on one backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MailboxKey {
    pub backend: Arc<str>,
    pub user: Arc<str>,
    /// INBOX is case-insensitive (stored as "INBOX"); other names are exact.
    pub mailbox: Arc<str>,
    pub uidvalidity: u32,
}

impl MailboxKey {
    pub fn new(backend: &str, user: &str, mailbox: &str, uidvalidity: u32) -> Self {
        MailboxKey {
            backend: backend.into(),
            user: user.into(),
            mailbox: normalize_mailbox(mailbox).into(),
            uidvalidity,
        }
    }

    /// Same mailbox, any UIDVALIDITY.
    pub fn same_mailbox(&self, backend: &str, user: &str, mailbox: &str) -> bool {
        &*self.backend == backend
            && &*self.user == user
            && *self.mailbox == *normalize_mailbox(mailbox)
    }
}

/// `INBOX` in any case means the inbox (RFC 9051 §5.1).
pub fn normalize_mailbox(name: &str) -> std::borrow::Cow<'_, str> {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".into()
    } else {
        name.into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageKey {
    pub mailbox: MailboxKey,
    pub uid: u32,
}

/// One cached item: the name as the backend sent it and the raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedItem {
    pub key: Arc<str>,
    pub name: Bytes,
    pub value: Bytes,
}

/// The cached items of one message.
#[derive(Debug, Clone, Default)]
pub struct MessageItems {
    pub items: Vec<CachedItem>,
}

impl MessageItems {
    pub fn get(&self, key: &str) -> Option<&CachedItem> {
        self.items.iter().find(|i| &*i.key == key)
    }

    fn weight(&self) -> u32 {
        let bytes: usize = self
            .items
            .iter()
            .map(|i| i.key.len() + i.name.len() + i.value.len() + 48)
            .sum();
        u32::try_from(bytes + 96).unwrap_or(u32::MAX)
    }
}

/// Counters for the metrics issue; all monotonic except the gauges read
/// from the cache itself.
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// FETCH commands answered (fully or partly) from the cache.
    pub hits: AtomicU64,
    /// Cacheable FETCH commands sent to the backend as they were.
    pub misses: AtomicU64,
    pub bytes_served: AtomicU64,
    pub evictions: AtomicU64,
    pub fills: AtomicU64,
    pub invalidations: AtomicU64,
}

/// The cache, shared by all sessions.
pub struct FetchCache {
    inner: Cache<MessageKey, Arc<MessageItems>>,
    pub counters: Arc<CacheCounters>,
    pub max_item_size: usize,
}

impl std::fmt::Debug for FetchCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchCache")
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl FetchCache {
    pub fn new(cfg: &CacheConfig) -> Self {
        let counters = Arc::new(CacheCounters::default());
        let c2 = counters.clone();
        let inner = Cache::builder()
            .max_capacity(cfg.max_bytes.as_u64())
            .weigher(|_k: &MessageKey, v: &Arc<MessageItems>| v.weight())
            .time_to_live(cfg.ttl)
            .time_to_idle(cfg.idle_ttl)
            .support_invalidation_closures()
            .eviction_listener(move |_k, _v, cause| {
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    c2.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        FetchCache {
            inner,
            counters,
            max_item_size: usize::try_from(cfg.max_item_size.as_u64()).unwrap_or(usize::MAX),
        }
    }

    /// The cached items of a message, if any.
    pub fn get(&self, key: &MessageKey) -> Option<Arc<MessageItems>> {
        self.inner.get(key)
    }

    /// Add items to a message's entry (copy-on-write, re-weighed).
    pub fn insert_items(&self, key: MessageKey, new: Vec<CachedItem>) {
        let new: Vec<CachedItem> = new
            .into_iter()
            .filter(|i| i.value.len() <= self.max_item_size)
            .collect();
        if new.is_empty() {
            return;
        }
        self.counters
            .fills
            .fetch_add(new.len() as u64, Ordering::Relaxed);
        self.inner.entry(key).and_upsert_with(|old| {
            let mut items = old
                .map(|e| e.into_value().items.clone())
                .unwrap_or_default();
            for n in new {
                match items.iter_mut().find(|i| i.key == n.key) {
                    Some(slot) => *slot = n,
                    None => items.push(n),
                }
            }
            Arc::new(MessageItems { items })
        });
    }

    /// A message was expunged.
    pub fn invalidate_message(&self, key: &MessageKey) {
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        self.inner.invalidate(key);
    }

    /// A mailbox was deleted, renamed, or its UIDVALIDITY changed: drop
    /// every entry of that mailbox for that user (all UIDVALIDITYs).
    pub fn invalidate_mailbox(&self, backend: &str, user: &str, mailbox: &str) {
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        let (b, u, m) = (backend.to_string(), user.to_string(), mailbox.to_string());
        let _ = self
            .inner
            .invalidate_entries_if(move |k, _| k.mailbox.same_mailbox(&b, &u, &m));
    }

    /// Drop every entry of `user` (all backends and mailboxes); `same`
    /// compares user names the way routing does.
    pub fn invalidate_user(&self, user: &str, same: fn(&str, &str) -> bool) {
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        let u = user.to_string();
        let _ = self
            .inner
            .invalidate_entries_if(move |k, _| same(&k.mailbox.user, &u));
    }

    /// Entries held (approximate, as moka reports it).
    pub fn entries(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Bytes held (the weighted size).
    pub fn bytes(&self) -> u64 {
        self.inner.weighted_size()
    }

    /// Let moka apply pending evictions (call periodically).
    pub fn run_pending_tasks(&self) {
        self.inner.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: u64) -> CacheConfig {
        CacheConfig {
            enabled: true,
            max_bytes: bytesize::ByteSize::b(max),
            max_item_size: bytesize::ByteSize::kib(64),
            ttl: Duration::from_secs(60),
            idle_ttl: Duration::from_secs(60),
        }
    }

    fn item(key: &str, value: &[u8]) -> CachedItem {
        CachedItem {
            key: key.into(),
            name: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value),
        }
    }

    fn mk(user: &str, mailbox: &str, uid: u32) -> MessageKey {
        MessageKey {
            mailbox: MailboxKey::new("b1", user, mailbox, 7),
            uid,
        }
    }

    #[test]
    fn users_never_share_entries() {
        let c = FetchCache::new(&cfg(1 << 20));
        c.insert_items(
            mk("alice", "INBOX", 1),
            vec![item("BODY[]", b"alice's mail")],
        );
        assert!(c.get(&mk("bob", "INBOX", 1)).is_none());
        assert_eq!(
            c.get(&mk("alice", "inbox", 1))
                .unwrap()
                .get("BODY[]")
                .unwrap()
                .value,
            &b"alice's mail"[..]
        );
        // other names are case-sensitive
        c.insert_items(mk("alice", "Work", 1), vec![item("BODY[]", b"w")]);
        assert!(c.get(&mk("alice", "work", 1)).is_none());
    }

    #[test]
    fn items_merge_and_invalidate() {
        let c = FetchCache::new(&cfg(1 << 20));
        c.insert_items(mk("a", "INBOX", 1), vec![item("ENVELOPE", b"(e)")]);
        c.insert_items(mk("a", "INBOX", 1), vec![item("BODY[]", b"x")]);
        let e = c.get(&mk("a", "INBOX", 1)).unwrap();
        assert!(e.get("ENVELOPE").is_some() && e.get("BODY[]").is_some());
        c.invalidate_message(&mk("a", "INBOX", 1));
        assert!(c.get(&mk("a", "INBOX", 1)).is_none());
        c.insert_items(mk("a", "INBOX", 2), vec![item("BODY[]", b"x")]);
        c.insert_items(mk("b", "INBOX", 2), vec![item("BODY[]", b"x")]);
        c.invalidate_mailbox("b1", "a", "inbox");
        c.run_pending_tasks();
        assert!(c.get(&mk("a", "INBOX", 2)).is_none());
        assert!(c.get(&mk("b", "INBOX", 2)).is_some());
    }

    #[test]
    fn oversized_items_are_not_cached_and_size_is_bounded() {
        let c = FetchCache::new(&cfg(64 * 1024));
        c.insert_items(
            mk("a", "INBOX", 1),
            vec![item("BODY[]", &vec![b'x'; 100 * 1024])],
        );
        assert!(c.get(&mk("a", "INBOX", 1)).is_none());
        for uid in 0..200 {
            c.insert_items(mk("a", "INBOX", uid), vec![item("BODY[]", &[b'y'; 1000])]);
        }
        c.run_pending_tasks();
        assert!(c.bytes() <= 64 * 1024, "{}", c.bytes());
        assert!(c.counters.evictions.load(Ordering::Relaxed) > 0);
    }
}
