//! Learned response item orders ("templates"), shared by every session's
//! cache flow ([`super::flow`]): the order in which a backend answers a
//! given FETCH item list, learned from a complete response, so a response
//! rebuilt from cached items is byte-identical to the backend's own.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One element of a response item order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// The request's att with this index.
    Att(usize),
    /// UID added by the server to a UID FETCH.
    Uid,
    /// FLAGS added by the server after it set \Seen.
    Flags,
}

/// Learned response item orders, per backend and request item list.
///
/// Bounded in bytes, not only in entries: the key is built from what a
/// client asked for, so item lists longer than [`Templates::MAX_KEY`] are
/// never learned and the whole map is forgotten when its keys pass
/// [`Templates::MAX_BYTES`] (it is relearned from the next responses).
#[derive(Debug, Default)]
pub struct Templates {
    map: RwLock<TemplateMap>,
}

#[derive(Debug, Default)]
struct TemplateMap {
    orders: HashMap<String, Arc<Vec<Slot>>>,
    /// Bytes of keys and slots held.
    bytes: usize,
}

impl Templates {
    /// Longest item list (as a key) that is learned.
    pub const MAX_KEY: usize = 2048;
    /// Most bytes of keys and orders held.
    pub const MAX_BYTES: usize = 4 * 1024 * 1024;

    pub(super) fn get(&self, key: &str) -> Option<Arc<Vec<Slot>>> {
        self.map.read().ok()?.orders.get(key).cloned()
    }

    pub(super) fn learn(&self, key: String, order: Vec<Slot>) {
        if key.len() > Self::MAX_KEY {
            return;
        }
        let Ok(mut m) = self.map.write() else { return };
        let cost = |slots: usize| key.len() + slots * std::mem::size_of::<Slot>() + 64;
        let old = m.orders.get(&key).map(|o| o.len());
        // Prefer the richer template (the one that saw FLAGS added).
        if old.is_some_and(|n| n >= order.len()) {
            return;
        }
        let (add, sub) = (cost(order.len()), old.map_or(0, cost));
        if m.bytes - sub + add > Self::MAX_BYTES {
            m.orders.clear();
            m.bytes = 0;
        } else {
            m.bytes -= sub;
        }
        m.bytes += add;
        m.orders.insert(key, Arc::new(order));
    }

    /// Bytes held (keys and orders), for tests and metrics.
    pub fn bytes(&self) -> usize {
        self.map.read().map(|m| m.bytes).unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests make instants from the clock
mod tests {
    use super::*;

    #[test]
    fn templates_are_bounded_in_bytes() {
        let t = Templates::default();
        // Item lists a client made huge are never learned.
        t.learn("x".repeat(Templates::MAX_KEY + 1), vec![Slot::Uid]);
        assert_eq!(t.bytes(), 0);
        // Many distinct long keys: the map never passes its byte bound.
        for i in 0..20_000 {
            let key = format!("{i:06}{}", "y".repeat(Templates::MAX_KEY - 6));
            t.learn(key, vec![Slot::Uid, Slot::Flags]);
            assert!(t.bytes() <= Templates::MAX_BYTES, "{}", t.bytes());
        }
        // A richer order replaces a poorer one without double counting.
        let t = Templates::default();
        t.learn("k".into(), vec![Slot::Uid]);
        let one = t.bytes();
        t.learn("k".into(), vec![Slot::Uid, Slot::Flags]);
        assert_eq!(t.bytes(), one + std::mem::size_of::<Slot>());
        assert_eq!(t.get("k").map(|o| o.len()), Some(2));
    }
}
