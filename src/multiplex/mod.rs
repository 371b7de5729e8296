//! Multiplexing: backend connections follow active users, not open
//! clients. Everything that makes that so lives here:
//!
//! - [`pool`]: logged-in backend connections kept after a client's LOGOUT
//!   (per backend, mailbox owner and credentials; aged out), handed to the
//!   owner's next login after a NOOP probe.
//! - [`park`]: IDLE offload. A client idling long enough is parked: its
//!   backend connection is released, its selected mailbox's view
//!   ([`view`]: UIDs, flags or modseq) is kept, and it is caught up with
//!   exactly the responses it would have seen attached, until it needs the
//!   backend again.
//! - [`watch`]: one watcher per (backend, mailbox owner) shared by that
//!   owner's parked sessions: it learns of changes (push, else polling)
//!   and answers snapshots of a mailbox.
//! - [`push`] and [`wake`]: the push endpoint's body format and secret
//!   (Dovecot's push-notification plugin via Lua/OX), and the sink that
//!   wakes watchers.
//! - [`poll`] and [`doveadm`]: polling without a connection per user: one
//!   batch request per backend and interval to Dovecot's doveadm HTTP API
//!   for every watched mailbox; a change wakes its watcher as a push does.
//! - [`fanout`]: a push that reaches one replica is forwarded to the
//!   others (peers from config or DNS; bounded queues; never forwarded
//!   twice).
//!
//! [`Multiplex`] is the running server's share of it (the pool and the
//! watcher registry), handed to sessions; parking gets it with the few
//! other services it uses ([`park::Parking`]), never the session's context.
//! Identity (who a session is) comes from [`crate::identity`]; connections
//! and commands from [`crate::backend`]. Sessions use this module; it does
//! not reach back into the session or the relay.

pub mod doveadm;
pub mod fanout;
#[cfg(test)]
mod memory_tests;
pub mod park;
pub mod parked;
pub mod poll;
pub mod pool;
pub mod push;
pub mod view;
pub mod wake;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::LoggedIn;
use crate::metrics::Metrics;

/// The multiplexing state of a running server, shared by its sessions
/// (kept across configuration reloads).
#[derive(Clone, Default)]
pub struct Multiplex {
    /// Logged-in backend connections kept for reuse after logout.
    pub pool: Option<Arc<pool::BackendPool>>,
    /// Watchers of parked IDLE clients' mailboxes (IDLE offload on).
    pub watch: Option<Arc<watch::Registry>>,
}

impl Multiplex {
    /// A pooled connection for this login (backend login name and
    /// credential key), if one is kept and answers its NOOP probe within
    /// `probe_timeout`.
    pub async fn take_pooled(
        &self,
        metrics: &Metrics,
        probe_timeout: Duration,
        backend: &str,
        reuse: Option<&(String, pool::CredKey)>,
    ) -> Option<LoggedIn> {
        let (pool, (user, key)) = (self.pool.as_ref()?, reuse?);
        let m = &metrics.pool;
        let mut li = pool.take(backend, user, key, Instant::now())?;
        m.pooled.set(pool.len() as i64);
        if pool::probe(&mut li, probe_timeout).await {
            m.reuses.inc();
            return Some(li);
        }
        m.discarded("probe_failed", 1);
        None
    }

    /// A logged-out client's backend connection: clean it and pool it
    /// under its backend and (backend login name, credential key).
    pub async fn release(
        &self,
        metrics: &Metrics,
        timeout: Duration,
        backend: String,
        (user, key): (String, pool::CredKey),
        mut li: LoggedIn,
    ) {
        let Some(pool) = &self.pool else {
            return;
        };
        let m = &metrics.pool;
        if pool::clean(&mut li, timeout).await.is_ok() {
            m.released(true);
            let evicted = pool.put(&backend, &user, key, li, Instant::now());
            m.discarded("evicted", evicted.len());
            m.pooled.set(pool.len() as i64);
            for old in evicted {
                tokio::spawn(pool::logout(old, timeout));
            }
        } else {
            m.released(false);
        }
    }
}
