//! What to forward to which peer, and when, sans-I/O: one bounded queue
//! per peer, batches for request bodies, backoff after failures, and the
//! peer set. The driver feeds it events ([`Outbox::enqueue`]), the peer
//! set ([`Outbox::set_peers`]), answers ([`Outbox::done`]) and `now`; it
//! returns batches to send and counts ([`Tally`]) for the metrics.
//!
//! Each peer's queue holds at most [`Limits::queue`] events. An event of a
//! (user, mailbox) already waiting in that queue is merged into it: a
//! wake-up is about a mailbox, not about one change. When a queue is full
//! the OLDEST event is dropped (`queue_full`): a queue fills only when the
//! peer has been unreachable or slow for a while, and then the newest
//! events are the ones whose clients are still waiting, while the oldest
//! have most likely been caught up by then (the client's own refresh,
//! DONE, a later poll). Either way a lost event only delays one mailbox's
//! wake-up on one peer to its next change, poll or client command.
//!
//! A new peer is first sent an empty batch (`[]`, a hello): its answer
//! says at once whether it is this process (its own instance id comes
//! back), refuses our secret, or cannot be reached, instead of at the first
//! push. The hello is retried like any batch until it gets an answer.
//!
//! At most one request per peer is in flight; events arriving meanwhile go
//! into the next batch. A failed request (no answer, timeout, 5xx) puts its
//! events back at the head of the queue and holds the peer back for a
//! backoff (doubling from [`Limits::backoff_min`] to
//! [`Limits::backoff_max`]); a refused one (4xx: wrong secret, bad body)
//! is dropped, since it would be refused again.

// Sans-I/O and fed by peers' data: no panics on input, no clock.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::Outcome;
use crate::multiplex::push::{PushEvent, MAX_BODY, MAX_EVENTS};

/// Bounds of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Events waiting per peer.
    pub queue: usize,
    /// Events per request body.
    pub batch_events: usize,
    /// Bytes per request body.
    pub batch_bytes: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Peers forwarded to (more addresses than this: the first ones, in
    /// address order).
    pub max_peers: usize,
}

/// Most peers: replicas of one release.
pub const MAX_PEERS: usize = 64;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            queue: 4096,
            batch_events: MAX_EVENTS,
            batch_bytes: MAX_BODY,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_peers: MAX_PEERS,
        }
    }
}

/// An event as queued, shared by every peer's queue; equal (for merging)
/// when user and mailbox are.
#[derive(Debug, Clone)]
struct Queued(Arc<PushEvent>);

impl PartialEq for Queued {
    fn eq(&self, o: &Queued) -> bool {
        self.0.user == o.0.user && self.0.mailbox == o.0.mailbox
    }
}

impl Eq for Queued {}

impl Hash for Queued {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.user.hash(h);
        self.0.mailbox.hash(h);
    }
}

/// imapmux's own push body format (see [`crate::multiplex::push`]).
#[derive(Serialize)]
struct Wire<'a> {
    user: &'a str,
    mailbox: &'a str,
    event: &'a str,
}

#[derive(Debug)]
struct Peer {
    queue: VecDeque<Queued>,
    keys: HashSet<Queued>,
    /// Events of the request in flight (at most one).
    in_flight: Option<usize>,
    retry_at: Option<Instant>,
    backoff: Duration,
    failing: bool,
    /// Not answered yet: send even an empty batch.
    hello: bool,
}

impl Peer {
    fn new(limits: &Limits) -> Peer {
        Peer {
            queue: VecDeque::new(),
            keys: HashSet::new(),
            in_flight: None,
            retry_at: None,
            backoff: limits.backoff_min,
            failing: false,
            hello: true,
        }
    }

    /// Queue `q` at the back (`front`: at the head); false if merged.
    /// Drops the oldest event when full (counted in `t`).
    fn push(&mut self, q: Queued, front: bool, cap: usize, t: &mut Tally) -> bool {
        if self.keys.contains(&q) {
            t.merged += 1;
            return false;
        }
        if self.queue.len() >= cap {
            if front {
                // Older than everything queued: it is the one to drop.
                t.queue_full += 1;
                return false;
            }
            if let Some(old) = self.queue.pop_front() {
                self.keys.remove(&old);
                t.queue_full += 1;
            }
        }
        self.keys.insert(q.clone());
        if front {
            self.queue.push_front(q);
        } else {
            self.queue.push_back(q);
        }
        true
    }
}

/// One request to send: `body` (a JSON array) to `peer`'s `/push`.
#[derive(Debug)]
pub struct Batch {
    pub peer: SocketAddr,
    pub body: Bytes,
    events: Vec<Queued>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Events (one per event and peer) by what happened to them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Queued for a peer.
    pub queued: usize,
    /// Merged into an event of the same mailbox already queued.
    pub merged: usize,
    /// Dropped: the peer's queue was full (the oldest goes).
    pub queue_full: usize,
    /// Accepted by the peer.
    pub delivered: usize,
    /// Refused by the peer (4xx), or unencodable: dropped.
    pub refused: usize,
    /// Dropped: the peer left the peer set.
    pub peer_gone: usize,
    /// Not sent: the peer is this process.
    pub myself: usize,
}

/// What [`Outbox::done`] learned about the peer, for a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No change.
    Same,
    /// It answered after failing.
    Recovered,
    /// It failed (or refused) after answering.
    Failing,
    /// It is this process; removed from the peers for good.
    Myself,
}

/// A change of the peer set.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PeerChange {
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
    /// Addresses beyond [`Limits::max_peers`], not forwarded to.
    pub ignored: usize,
    /// Events of removed peers (`peer_gone`).
    pub tally: Tally,
}

/// Every peer's queue.
#[derive(Debug)]
pub struct Outbox {
    limits: Limits,
    peers: BTreeMap<SocketAddr, Peer>,
    /// Addresses of this process: never peers.
    selves: BTreeSet<SocketAddr>,
}

impl Outbox {
    /// `selves`: addresses known to be this process (its admin address).
    pub fn new(limits: Limits, selves: impl IntoIterator<Item = SocketAddr>) -> Outbox {
        Outbox {
            limits,
            peers: BTreeMap::new(),
            selves: selves.into_iter().collect(),
        }
    }

    /// Forward to exactly these addresses from now on (minus this
    /// process's own). New peers start with an empty queue; removed ones
    /// lose theirs.
    pub fn set_peers(&mut self, addrs: &BTreeSet<SocketAddr>) -> PeerChange {
        let mut wanted: Vec<SocketAddr> = addrs
            .iter()
            .filter(|a| !self.selves.contains(a))
            .copied()
            .collect();
        let mut change = PeerChange {
            ignored: wanted.len().saturating_sub(self.limits.max_peers),
            ..PeerChange::default()
        };
        wanted.truncate(self.limits.max_peers);
        let wanted: BTreeSet<SocketAddr> = wanted.into_iter().collect();
        self.peers.retain(|a, p| {
            let keep = wanted.contains(a);
            if !keep {
                change.removed.push(*a);
                change.tally.peer_gone += p.queue.len();
            }
            keep
        });
        for a in wanted {
            if let std::collections::btree_map::Entry::Vacant(v) = self.peers.entry(a) {
                v.insert(Peer::new(&self.limits));
                change.added.push(a);
            }
        }
        change
    }

    /// Queue `events` for every peer.
    pub fn enqueue(&mut self, events: &[PushEvent]) -> Tally {
        let mut t = Tally::default();
        if self.peers.is_empty() {
            return t;
        }
        let shared: Vec<Queued> = events.iter().map(|e| Queued(Arc::new(e.clone()))).collect();
        let cap = self.limits.queue;
        for p in self.peers.values_mut() {
            for q in &shared {
                if p.push(q.clone(), false, cap, &mut t) {
                    t.queued += 1;
                }
            }
        }
        t
    }

    /// The requests to send now: one per peer with events waiting, nothing
    /// in flight and no backoff pending.
    pub fn take_batches(&mut self, now: Instant) -> (Vec<Batch>, Tally) {
        let mut out = Vec::new();
        let mut t = Tally::default();
        let limits = self.limits;
        for (addr, p) in &mut self.peers {
            let ready = p.in_flight.is_none()
                && (p.hello || !p.queue.is_empty())
                && !matches!(p.retry_at, Some(at) if now < at);
            if !ready {
                continue;
            }
            let (body, events) = batch(p, &limits, &mut t);
            if events.is_empty() && !p.hello {
                continue;
            }
            p.in_flight = Some(events.len());
            out.push(Batch {
                peer: *addr,
                body,
                events,
            });
        }
        (out, t)
    }

    /// The answer to `batch` (or its failure).
    pub fn done(&mut self, batch: Batch, outcome: Outcome, now: Instant) -> (Tally, Health) {
        let mut t = Tally::default();
        let n = batch.events.len();
        let Some(p) = self.peers.get_mut(&batch.peer) else {
            t.peer_gone = n;
            return (t, Health::Same);
        };
        p.in_flight = None;
        let was_failing = p.failing;
        if matches!(outcome, Outcome::Delivered | Outcome::Refused) {
            p.hello = false;
        }
        match outcome {
            Outcome::Delivered => {
                t.delivered = n;
                p.failing = false;
                p.retry_at = None;
                p.backoff = self.limits.backoff_min;
                let h = if was_failing {
                    Health::Recovered
                } else {
                    Health::Same
                };
                return (t, h);
            }
            Outcome::Refused => {
                t.refused = n;
                p.failing = true;
            }
            Outcome::Failed => {
                let cap = self.limits.queue;
                for q in batch.events.into_iter().rev() {
                    p.push(q, true, cap, &mut t);
                }
                // Merged with a newer event of the same mailbox: not lost.
                t.merged = 0;
                p.retry_at = Some(now + p.backoff);
                p.backoff = (p.backoff * 2).min(self.limits.backoff_max);
                p.failing = true;
            }
            Outcome::Myself => {
                t.myself = n + p.queue.len();
                self.peers.remove(&batch.peer);
                self.selves.insert(batch.peer);
                return (t, Health::Myself);
            }
        }
        let h = if was_failing {
            Health::Same
        } else {
            Health::Failing
        };
        (t, h)
    }

    /// The request to `peer` was lost without an answer or its batch
    /// (its task failed): its events are gone (counted as refused).
    pub fn abandon(&mut self, peer: SocketAddr) -> Tally {
        let n = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.in_flight.take())
            .unwrap_or(0);
        Tally {
            refused: n,
            ..Tally::default()
        }
    }

    /// When a peer holding events back ends its backoff.
    pub fn next_retry(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter(|p| p.in_flight.is_none() && (p.hello || !p.queue.is_empty()))
            .filter_map(|p| p.retry_at)
            .min()
    }

    /// Events waiting or in flight, over all peers.
    pub fn pending(&self) -> usize {
        self.peers
            .values()
            .map(|p| p.queue.len() + p.in_flight.unwrap_or(0))
            .sum()
    }

    /// Peers forwarded to.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn peers(&self) -> impl Iterator<Item = &SocketAddr> {
        self.peers.keys()
    }
}

/// Take events from the head of `p`'s queue into one body within the
/// limits. An event that cannot be encoded, or is larger than a body on
/// its own (neither can happen with names of at most
/// [`MAX_NAME`](crate::multiplex::push::MAX_NAME) bytes), is dropped as
/// refused.
fn batch(p: &mut Peer, limits: &Limits, t: &mut Tally) -> (Bytes, Vec<Queued>) {
    let mut body = Vec::with_capacity(256);
    body.push(b'[');
    let mut events = Vec::new();
    while events.len() < limits.batch_events {
        let Some(q) = p.queue.front() else { break };
        let e = &q.0;
        let wire = Wire {
            user: &e.user,
            mailbox: &e.mailbox,
            event: &e.event,
        };
        let enc = serde_json::to_vec(&wire).ok();
        let sep = usize::from(!events.is_empty());
        let fits = enc
            .as_ref()
            .is_some_and(|b| body.len() + sep + b.len() < limits.batch_bytes);
        if !fits && !events.is_empty() {
            break;
        }
        let Some(q) = p.queue.pop_front() else { break };
        p.keys.remove(&q);
        match enc {
            Some(b) if fits => {
                if sep == 1 {
                    body.push(b',');
                }
                body.extend_from_slice(&b);
                events.push(q);
            }
            _ => t.refused += 1,
        }
    }
    body.push(b']');
    (Bytes::from(body), events)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests make instants from the clock
#[path = "outbox_tests.rs"]
mod tests;
