//! The live client sessions of this process, for the operations API:
//! who is connected, from where, to which backend, in which state; and a
//! way to ask one session to end ([`SessionEntry::stop`]).
//!
//! An entry is small (a few dozen bytes plus the user, backend and
//! mailbox names): every parked client has one. The session's driver
//! owns an `Arc` of its entry and updates it when it logs in, parks,
//! re-attaches or selects a mailbox; the entry leaves the registry when
//! the session ends ([`Registered`]'s drop).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use crate::lifecycle::Stop;
use crate::lifecycle::{Phase, StopSignal};
use crate::relay::Counters;

/// Shards of the registry map (sessions come and go on every core).
const SHARDS: usize = 16;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the registry knows about names (changed rarely, behind a lock).
#[derive(Debug, Default)]
struct Names {
    user: Option<Box<str>>,
    backend: Option<Box<str>>,
    mailbox: Option<Box<str>>,
}

/// One client session.
#[derive(Debug)]
pub struct SessionEntry {
    id: u64,
    session: Box<str>,
    peer: SocketAddr,
    /// Seconds since the epoch, when the connection was accepted.
    since: u64,
    /// 0: none, 12: TLS 1.2, 13: TLS 1.3.
    tls: AtomicU8,
    phase: AtomicU8,
    names: Mutex<Names>,
    counters: Arc<Counters>,
    stop: StopSignal,
}

fn phase_code(p: Phase) -> u8 {
    match p {
        Phase::PreAuth => 0,
        Phase::Attached => 1,
        Phase::Parked => 2,
        Phase::Ended => 3,
    }
}

fn phase_of(code: u8) -> Phase {
    match code {
        0 => Phase::PreAuth,
        1 => Phase::Attached,
        2 => Phase::Parked,
        _ => Phase::Ended,
    }
}

impl SessionEntry {
    pub fn set_phase(&self, p: Phase) {
        self.phase.store(phase_code(p), Ordering::Relaxed);
    }

    pub fn phase(&self) -> Phase {
        phase_of(self.phase.load(Ordering::Relaxed))
    }

    /// The negotiated TLS version (`"TLSv1_3"` style names from rustls).
    pub fn set_tls(&self, version: Option<rustls::ProtocolVersion>) {
        let code = match version {
            Some(rustls::ProtocolVersion::TLSv1_3) => 13,
            Some(rustls::ProtocolVersion::TLSv1_2) => 12,
            Some(_) => 1,
            None => 0,
        };
        self.tls.store(code, Ordering::Relaxed);
    }

    /// Logged in (or re-attached) as `user` on `backend`.
    pub fn set_login(&self, user: &str, backend: &str) {
        let mut n = lock(&self.names);
        if n.user.as_deref() != Some(user) {
            n.user = Some(user.into());
        }
        if n.backend.as_deref() != Some(backend) {
            n.backend = Some(backend.into());
        }
    }

    /// The mailbox the client has selected (as last seen).
    pub fn set_mailbox(&self, mailbox: Option<&str>) {
        let mut n = lock(&self.names);
        if n.mailbox.as_deref() != mailbox {
            n.mailbox = mailbox.map(Into::into);
        }
    }

    pub fn user(&self) -> Option<String> {
        lock(&self.names).user.as_deref().map(String::from)
    }

    pub fn backend(&self) -> Option<String> {
        lock(&self.names).backend.as_deref().map(String::from)
    }

    /// Ask the session to end (the first request wins).
    pub fn stop(&self, s: Stop) {
        self.stop.stop(s);
    }

    /// The request to end, if one was made.
    pub fn stop_requested(&self) -> Option<Stop> {
        self.stop.requested()
    }

    /// What the session's relay and parking wait on.
    pub fn stop_signal(&self) -> &StopSignal {
        &self.stop
    }

    /// A row of `sessions`.
    pub fn row(&self) -> SessionRow {
        let n = lock(&self.names);
        SessionRow {
            id: self.session.to_string(),
            user: n.user.as_deref().map(String::from),
            client: self.peer.to_string(),
            tls: match self.tls.load(Ordering::Relaxed) {
                13 => Some("TLSv1.3"),
                12 => Some("TLSv1.2"),
                0 => None,
                _ => Some("other"),
            },
            backend: n.backend.as_deref().map(String::from),
            state: self.phase().as_str(),
            mailbox: n.mailbox.as_deref().map(String::from),
            since: self.since,
            bytes_in: self.counters.client_to_backend.load(Ordering::Relaxed),
            bytes_out: self.counters.backend_to_client.load(Ordering::Relaxed),
        }
    }
}

/// One session as the API shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub user: Option<String>,
    pub client: String,
    pub tls: Option<&'static str>,
    pub backend: Option<String>,
    /// preauth, attached, parked (and, for pooled connections, pooled).
    pub state: &'static str,
    pub mailbox: Option<String>,
    /// Seconds since the epoch.
    pub since: u64,
    /// Client to backend, backend to client.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Every live session of this process.
#[derive(Debug)]
pub struct Registry {
    shards: [Mutex<HashMap<u64, Arc<SessionEntry>>>; SHARDS],
    next: std::sync::atomic::AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// A session's place in the registry; leaves it on drop.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<Registry>,
    entry: Arc<SessionEntry>,
}

impl Registered {
    pub fn entry(&self) -> &Arc<SessionEntry> {
        &self.entry
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let id = self.entry.id;
        lock(self.registry.shard(id)).remove(&id);
    }
}

impl Registry {
    fn shard(&self, id: u64) -> &Mutex<HashMap<u64, Arc<SessionEntry>>> {
        let i = (id % SHARDS as u64) as usize;
        // `i < SHARDS` always.
        &self.shards[i]
    }

    /// A new session (pre-auth) accepted now.
    pub fn register(
        self: &Arc<Self>,
        session: &str,
        peer: SocketAddr,
        counters: Arc<Counters>,
        since: u64,
    ) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(SessionEntry {
            id,
            session: session.into(),
            peer,
            since,
            tls: AtomicU8::new(0),
            phase: AtomicU8::new(phase_code(Phase::PreAuth)),
            names: Mutex::new(Names::default()),
            counters,
            stop: StopSignal::default(),
        });
        lock(self.shard(id)).insert(id, entry.clone());
        Registered {
            registry: self.clone(),
            entry,
        }
    }

    /// Every entry (a snapshot).
    pub fn all(&self) -> Vec<Arc<SessionEntry>> {
        let mut out = Vec::new();
        for s in &self.shards {
            out.extend(lock(s).values().cloned());
        }
        out
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ask every session for which `pick` holds to end; returns how many
    /// were asked. A session still in its pre-auth phase is asked too when
    /// `pick` holds (it has just logged in: user and backend are set), so
    /// that it ends as soon as its relay starts.
    pub fn stop_where(&self, stop: Stop, pick: impl Fn(&SessionEntry) -> bool) -> usize {
        let mut n = 0;
        for e in self.all() {
            if e.phase() != Phase::Ended && pick(&e) {
                e.stop(stop);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::EndReason;
    use std::time::Duration;

    fn reg() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    #[test]
    fn entries_leave_on_drop_and_rows_show_names() {
        let r = reg();
        let a = r.register("s1", "127.0.0.1:1".parse().unwrap(), Default::default(), 5);
        let b = r.register("s2", "127.0.0.1:2".parse().unwrap(), Default::default(), 6);
        a.entry().set_login("alice", "b1");
        a.entry().set_phase(Phase::Parked);
        a.entry().set_mailbox(Some("INBOX"));
        assert_eq!(r.len(), 2);
        let row = a.entry().row();
        assert_eq!(row.user.as_deref(), Some("alice"));
        assert_eq!(row.state, "parked");
        assert_eq!(row.mailbox.as_deref(), Some("INBOX"));
        drop(b);
        assert_eq!(r.len(), 1);
        drop(a);
        assert!(r.is_empty());
    }

    #[tokio::test]
    async fn stop_reaches_the_matching_logged_in_sessions_only() {
        let r = reg();
        let a = r.register("s1", "127.0.0.1:1".parse().unwrap(), Default::default(), 5);
        let b = r.register("s2", "127.0.0.1:2".parse().unwrap(), Default::default(), 6);
        let pre = r.register("s3", "127.0.0.1:3".parse().unwrap(), Default::default(), 6);
        a.entry().set_login("alice", "b1");
        a.entry().set_phase(Phase::Attached);
        b.entry().set_login("bob", "b1");
        b.entry().set_phase(Phase::Attached);
        let stop = Stop {
            reason: EndReason::Kicked,
            within: Duration::from_secs(1),
        };
        let n = r.stop_where(stop, |e| e.user().as_deref() == Some("alice"));
        assert_eq!(n, 1);
        assert_eq!(a.entry().stop_signal().stopped().await, stop);
        assert_eq!(b.entry().stop_requested(), None);
        assert_eq!(pre.entry().stop_requested(), None);
        // A second request does not replace the first.
        a.entry().stop(Stop {
            reason: EndReason::Drained,
            within: Duration::ZERO,
        });
        assert_eq!(a.entry().stop_requested(), Some(stop));
    }
}

#[cfg(test)]
mod size {
    /// Every parked client has an entry: keep it small (its names, a
    /// 16-slot map entry and the `Arc` header come on top).
    #[test]
    fn an_entry_is_small() {
        let n = std::mem::size_of::<super::SessionEntry>();
        eprintln!("SessionEntry: {n} bytes");
        assert!(n <= 256, "SessionEntry is {n} bytes");
    }
}
