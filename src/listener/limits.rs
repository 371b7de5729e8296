//! Connection limits below `server.max_connections`, so that one client
//! address cannot take every slot:
//!
//! - not-yet-authenticated connections per client address
//!   (`server.max_preauth_per_ip`), counted from accept until a login
//!   succeeds or the connection closes;
//! - logged-in sessions per (user, client address)
//!   (`server.max_sessions_per_user_ip`, Dovecot's
//!   `mail_max_userip_connections`), counted from login success until the
//!   session ends;
//! - a shorter pre-auth timeout for connections accepted while most of
//!   `server.max_connections` is in use (`timeouts.preauth_under_pressure`).
//!
//! IPv6 clients are grouped by /64 (one subscriber usually gets a whole
//! /64, so per-address counting would be trivial to evade); IPv4-mapped
//! IPv6 addresses count as their IPv4 address. Counts are kept across
//! reloads; the limits are read from the configuration in force when
//! they are checked. Slots are RAII guards: dropping one gives it back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Semaphore;

/// A client address as counted: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrKey {
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl AddrKey {
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(v4) => AddrKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey::V4(u32::from(v4)),
                None => AddrKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// The name a login is counted under for `server.max_sessions_per_user_ip`.
///
/// The session driver passes the mailbox owner the backend logged in (the
/// authorization identity, else the login name after the auth source's
/// rewrite), lowercased here, so a master user acting for many users does
/// not use up one budget and aliases of one mailbox share one.
pub fn session_user_key(login_name: &str) -> String {
    login_name.to_lowercase()
}

/// Open connections above this fraction of `server.max_connections`
/// (3/4) put new connections on `timeouts.preauth_under_pressure`.
const PRESSURE_NUM: usize = 3;
const PRESSURE_DEN: usize = 4;

/// Is the server under connection pressure with `open` connections (the
/// new one included) out of `max`?
pub fn under_pressure(open: usize, max: usize) -> bool {
    open.saturating_mul(PRESSURE_DEN) > max.saturating_mul(PRESSURE_NUM)
}

/// The global connection budget and the per-address and per-(user,
/// address) counts; one per process, shared by every listener.
#[derive(Debug)]
pub struct Limits {
    /// One permit per open client connection (`server.max_connections`).
    pub permits: Arc<Semaphore>,
    /// The number of permits (the limit at startup; a reload does not
    /// change it).
    pub max_connections: usize,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    preauth: Mutex<HashMap<AddrKey, usize>>,
    sessions: Mutex<HashMap<(String, AddrKey), usize>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain counters: still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Take one from `map[key]` unless it is at `max` (0: no limit).
fn take<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K, max: usize) -> bool {
    let n = map.entry(key).or_insert(0);
    if max != 0 && *n >= max {
        return false;
    }
    *n += 1;
    true
}

fn give_back<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Limits {
    pub fn new(max_connections: usize) -> Limits {
        Limits {
            permits: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            counts: Arc::default(),
        }
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.max_connections - self.permits.available_permits()
    }

    /// A pre-auth slot for a connection from `ip`, unless `max` (0: no
    /// limit) are taken.
    pub fn try_preauth(&self, ip: IpAddr, max: usize) -> Option<PreauthSlot> {
        let key = AddrKey::of(ip);
        take(&mut lock(&self.counts.preauth), key, max).then(|| PreauthSlot {
            counts: self.counts.clone(),
            key,
        })
    }

    /// Pre-auth connections from `ip`'s address group now.
    pub fn preauth_count(&self, ip: IpAddr) -> usize {
        let key = AddrKey::of(ip);
        lock(&self.counts.preauth).get(&key).copied().unwrap_or(0)
    }

    /// Sessions counted for (`user`, `ip`) now (`user` as given to
    /// [`Admission::logged_in`]).
    pub fn session_count(&self, user: &str, ip: IpAddr) -> usize {
        let key = (session_user_key(user), AddrKey::of(ip));
        lock(&self.counts.sessions).get(&key).copied().unwrap_or(0)
    }

    fn try_session(&self, user: &str, ip: IpAddr, max: usize) -> Option<SessionSlot> {
        let key = (session_user_key(user), AddrKey::of(ip));
        let ok = take(&mut lock(&self.counts.sessions), key.clone(), max);
        ok.then(|| SessionSlot {
            counts: self.counts.clone(),
            key,
        })
    }
}

/// One pre-auth connection counted for its address; given back on drop.
#[derive(Debug)]
pub struct PreauthSlot {
    counts: Arc<Counts>,
    key: AddrKey,
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        give_back(&mut lock(&self.counts.preauth), &self.key);
    }
}

/// One session counted for its (user, address); given back on drop.
#[derive(Debug)]
pub struct SessionSlot {
    counts: Arc<Counts>,
    key: (String, AddrKey),
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        give_back(&mut lock(&self.counts.sessions), &self.key);
    }
}

/// `server.max_sessions_per_user_ip` is reached for this login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimitReached;

/// What the listener decided for one accepted connection, handed to its
/// session: its pre-auth timeout, whether it may log in before TLS, and
/// its slots in the per-address limits (held until the session ends).
#[derive(Debug)]
pub struct Admission {
    /// `timeouts.preauth`, or `timeouts.preauth_under_pressure` when the
    /// connection was accepted under pressure.
    pub preauth_timeout: Duration,
    /// The listener's `allow_plaintext_auth` (or the server default).
    pub allow_plaintext_auth: bool,
    limits: Arc<Limits>,
    /// Given back when the login succeeds.
    preauth: Option<PreauthSlot>,
    session: Option<SessionSlot>,
}

impl Admission {
    pub fn new(
        preauth_timeout: Duration,
        allow_plaintext_auth: bool,
        limits: Arc<Limits>,
        preauth: PreauthSlot,
    ) -> Admission {
        Admission {
            preauth_timeout,
            allow_plaintext_auth,
            limits,
            preauth: Some(preauth),
            session: None,
        }
    }

    /// A login of `user` from `ip` succeeded: take a session slot unless
    /// `max` (0: no limit) sessions of that user from that address are
    /// open; then the connection no longer counts as pre-auth. When the
    /// limit is reached, nothing changes (the connection stays pre-auth).
    pub fn logged_in(
        &mut self,
        user: &str,
        ip: IpAddr,
        max: usize,
    ) -> Result<(), SessionLimitReached> {
        let slot = self
            .limits
            .try_session(user, ip, max)
            .ok_or(SessionLimitReached)?;
        self.session = Some(slot);
        self.preauth = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn address_groups() {
        assert_eq!(AddrKey::of(ip("192.0.2.1")), AddrKey::of(ip("192.0.2.1")));
        assert_ne!(AddrKey::of(ip("192.0.2.1")), AddrKey::of(ip("192.0.2.2")));
        assert_eq!(
            AddrKey::of(ip("2001:db8:1:2::1")),
            AddrKey::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            AddrKey::of(ip("2001:db8:1:2::1")),
            AddrKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            AddrKey::of(ip("::ffff:192.0.2.1")),
            AddrKey::of(ip("192.0.2.1"))
        );
        assert_ne!(
            AddrKey::of(ip("::ffff:192.0.2.1")),
            AddrKey::of(ip("::ffff:192.0.2.2"))
        );
    }

    #[test]
    fn preauth_slots_per_address() {
        let l = Limits::new(100);
        let a = ip("192.0.2.1");
        let held: Vec<_> = (0..3).map(|_| l.try_preauth(a, 3).unwrap()).collect();
        assert!(l.try_preauth(a, 3).is_none());
        assert!(l.try_preauth(ip("192.0.2.2"), 3).is_some());
        // One /64 is one client.
        let v6: Vec<_> = (1..=2)
            .map(|i| l.try_preauth(ip(&format!("2001:db8::{i}")), 2).unwrap())
            .collect();
        assert!(l.try_preauth(ip("2001:db8::ffff"), 2).is_none());
        assert!(l.try_preauth(ip("2001:db8:0:1::1"), 2).is_some());
        drop(held);
        assert_eq!(l.preauth_count(a), 0);
        assert!(l.try_preauth(a, 3).is_some());
        drop(v6);
        // 0: no limit, still counted.
        let many: Vec<_> = (0..50).map(|_| l.try_preauth(a, 0).unwrap()).collect();
        assert_eq!(l.preauth_count(a), 50);
        drop(many);
        assert!(
            lock(&l.counts.preauth).is_empty(),
            "entries are removed at 0"
        );
    }

    #[test]
    fn login_moves_from_preauth_to_session() {
        let l = Arc::new(Limits::new(100));
        let a = ip("192.0.2.1");
        let mut adm: Vec<Admission> = (0..3)
            .map(|_| {
                Admission::new(
                    Duration::from_secs(60),
                    false,
                    l.clone(),
                    l.try_preauth(a, 10).unwrap(),
                )
            })
            .collect();
        assert_eq!(l.preauth_count(a), 3);
        assert_eq!(adm[0].logged_in("Alice", a, 2), Ok(()));
        assert_eq!(adm[1].logged_in("alice", a, 2), Ok(()));
        assert_eq!(l.preauth_count(a), 1);
        assert_eq!(l.session_count("ALICE", a), 2);
        // The third login of the same user from the same address is refused
        // and the connection stays pre-auth.
        assert_eq!(adm[2].logged_in("alice", a, 2), Err(SessionLimitReached));
        assert_eq!(l.preauth_count(a), 1);
        // Another user, or the same user from elsewhere, is fine.
        assert_eq!(adm[2].logged_in("bob", a, 2), Ok(()));
        let b = ip("192.0.2.9");
        let mut other = Admission::new(
            Duration::from_secs(60),
            false,
            l.clone(),
            l.try_preauth(b, 10).unwrap(),
        );
        assert_eq!(other.logged_in("alice", b, 2), Ok(()));
        // A session ending gives its slot back.
        drop(adm.remove(0));
        assert_eq!(l.session_count("alice", a), 1);
        drop((adm, other));
        assert!(lock(&l.counts.sessions).is_empty());
        assert!(lock(&l.counts.preauth).is_empty());
    }

    #[test]
    fn pressure_threshold() {
        assert!(!under_pressure(3, 4));
        assert!(under_pressure(4, 4));
        assert!(!under_pressure(7500, 10_000));
        assert!(under_pressure(7501, 10_000));
        assert!(under_pressure(1, 1));
        assert!(!under_pressure(0, 1));
    }

    #[test]
    fn session_key_is_lowercased_login_name() {
        assert_eq!(session_user_key("Alice@Example.COM"), "alice@example.com");
    }
}
