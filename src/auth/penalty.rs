//! Brute-force defence: failed logins per client address, per user and per
//! (address, user) raise an increasing delay before the next attempt is
//! verified (like Dovecot's auth penalty) and, past a limit, a temporary
//! refusal. A user who logged in successfully from an address recently is
//! exempt from that address's and the user's global counters, so an
//! attacker guessing someone else's (or even this user's) password from
//! elsewhere does not lock them out; only their own (address, user) count
//! applies to them.
//!
//! Attempts in flight count against the limits too: [`Penalty::check`]
//! hands out an [`Attempt`], a reservation that counts as one attempt in
//! the per-address, per-user and per-(address, user) counters at once
//! (atomically with respect to every other check), until it is turned into
//! a failure ([`Attempt::failed`]) or released (success, an unavailable
//! directory, or simply dropped). So N guesses sent at the same instant
//! cannot all pass the gate before the first of them has failed: at most
//! the limit of them are verified. The delay still follows the failures
//! only, so a client that opens several connections at once is not slowed
//! down by its own parallel logins.
//!
//! Addresses are counted per client network where one holder usually has
//! many addresses: an IPv6 source by its /64 (a single host can use any
//! address of its /64), an IPv4 source (and an IPv4-mapped IPv6 one, which
//! is the same host) by its address.
//!
//! Time is passed in (`now`); the failure maps are bounded moka caches
//! whose TTL is the failure window, so memory stays bounded under attack.
//! The in-flight counts live in plain maps (one entry per key with an
//! attempt in flight, removed at zero), bounded by the open connections.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use moka::sync::Cache;

use super::config::PenaltyConfig;

/// What to do with a login attempt.
#[derive(Debug)]
#[must_use = "an Attempt counts as in flight until it is dropped or resolved"]
pub enum Gate<'a> {
    /// Verify it after waiting `delay` (zero when there were no failures);
    /// report the outcome through `attempt`.
    Proceed {
        delay: Duration,
        attempt: Attempt<'a>,
    },
    /// Refuse it without verifying (`NO [UNAVAILABLE]`).
    Refuse,
}

impl Gate<'_> {
    pub fn is_refuse(&self) -> bool {
        matches!(self, Gate::Refuse)
    }
}

#[derive(Debug, Clone, Copy)]
struct Count {
    n: u32,
    last: Instant,
}

/// The key of a client address: its /64 for IPv6, the address for IPv4
/// (IPv4-mapped IPv6 addresses are IPv4).
pub fn net_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

type Pair = (IpAddr, u64);

/// Attempts in flight, per key.
#[derive(Default)]
struct InFlight {
    by_ip: HashMap<IpAddr, u32>,
    by_user: HashMap<u64, u32>,
    by_pair: HashMap<Pair, u32>,
}

fn get<K: std::hash::Hash + Eq>(m: &HashMap<K, u32>, k: &K) -> u32 {
    m.get(k).copied().unwrap_or(0)
}

fn incr<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K) {
    *m.entry(k).or_insert(0) += 1;
}

fn decr<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K) {
    if let std::collections::hash_map::Entry::Occupied(mut e) = m.entry(k) {
        if *e.get() <= 1 {
            e.remove();
        } else {
            *e.get_mut() -= 1;
        }
    }
}

/// The failure counters of one imapmux process.
pub struct Penalty {
    cfg: PenaltyConfig,
    by_ip: Cache<IpAddr, Count>,
    by_user: Cache<u64, Count>,
    by_pair: Cache<Pair, Count>,
    known_good: Cache<Pair, ()>,
    /// Held while a check reads the counters and reserves its attempt, and
    /// while an attempt is turned into a failure or released: no other
    /// check sees the counters half-updated.
    in_flight: Mutex<InFlight>,
}

/// Users are kept as a hash (a stable one: the maps are in-process only).
fn user_key(user: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(user.to_lowercase().as_bytes())
}

fn counter_map<K: std::hash::Hash + Eq + Send + Sync + 'static>(
    cap: u64,
    window: Duration,
) -> Cache<K, Count> {
    Cache::builder()
        .max_capacity(cap)
        .time_to_idle(window)
        .build()
}

/// A login attempt that passed the gate: counted as in flight until it is
/// resolved. Dropping it releases it (as if it had never been made), which
/// is what an attempt without a verdict (directory down, client gone) is.
#[derive(Debug)]
#[must_use = "dropping an Attempt releases it at once"]
pub struct Attempt<'a> {
    /// None when the penalty is disabled.
    held: Option<(&'a Penalty, IpAddr, u64)>,
}

impl std::fmt::Debug for Penalty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Penalty").finish_non_exhaustive()
    }
}

impl Attempt<'_> {
    /// The attempt failed (wrong password, unknown user): it becomes a
    /// failure in all three counters, in one step.
    pub fn failed(mut self, now: Instant) {
        if let Some((p, ip, u)) = self.held.take() {
            let mut inf = p.lock();
            p.record_failure(ip, u, now);
            p.release(&mut inf, ip, u);
        }
    }

    /// The attempt succeeded: this (address, user) is known good, and its
    /// own failures are forgotten.
    pub fn succeeded(mut self) {
        if let Some((p, ip, u)) = self.held.take() {
            let mut inf = p.lock();
            p.by_pair.invalidate(&(ip, u));
            p.known_good.insert((ip, u), ());
            p.release(&mut inf, ip, u);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some((p, ip, u)) = self.held.take() {
            let mut inf = p.lock();
            p.release(&mut inf, ip, u);
        }
    }
}

impl Penalty {
    pub fn new(cfg: &PenaltyConfig) -> Penalty {
        let window = cfg.window.max(Duration::from_secs(1));
        Penalty {
            cfg: cfg.clone(),
            by_ip: counter_map(100_000, window),
            by_user: counter_map(100_000, window),
            by_pair: counter_map(200_000, window),
            known_good: Cache::builder()
                .max_capacity(200_000)
                .time_to_live(cfg.known_good_ttl.max(Duration::from_secs(1)))
                .build(),
            in_flight: Mutex::new(InFlight::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, InFlight> {
        // Every update under this lock leaves the maps consistent.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live<K: std::hash::Hash + Eq + Send + Sync + Clone + 'static>(
        &self,
        map: &Cache<K, Count>,
        k: &K,
        now: Instant,
    ) -> u32 {
        match map.get(k) {
            Some(c) if now.saturating_duration_since(c.last) < self.cfg.window => c.n,
            _ => 0,
        }
    }

    /// Decide about an attempt by `user` from `ip` at `now`. A `Proceed`
    /// holds the attempt as in flight until its [`Attempt`] is resolved or
    /// dropped.
    pub fn check(&self, ip: IpAddr, user: &str, now: Instant) -> Gate<'_> {
        if !self.cfg.enabled {
            return Gate::Proceed {
                delay: Duration::ZERO,
                attempt: Attempt { held: None },
            };
        }
        let ip = net_key(ip);
        let u = user_key(user);
        let mut inf = self.lock();
        let pair_failed = self.live(&self.by_pair, &(ip, u), now);
        // Known good: exempt from the address's and the user's counters.
        let (ip_failed, user_failed, ip_busy, user_busy) = if self.known_good.contains_key(&(ip, u))
        {
            (0, 0, 0, 0)
        } else {
            (
                self.live(&self.by_ip, &ip, now),
                self.live(&self.by_user, &u, now),
                get(&inf.by_ip, &ip),
                get(&inf.by_user, &u),
            )
        };
        // Attempts in flight count as failures-to-be.
        let pair = pair_failed.saturating_add(get(&inf.by_pair, &(ip, u)));
        let by_ip = ip_failed.saturating_add(ip_busy);
        let by_user = user_failed.saturating_add(user_busy);
        if pair >= self.cfg.max_failures_per_user
            || by_user >= self.cfg.max_failures_per_user
            || by_ip >= self.cfg.max_failures_per_ip
        {
            return Gate::Refuse;
        }
        incr(&mut inf.by_ip, ip);
        incr(&mut inf.by_user, u);
        incr(&mut inf.by_pair, (ip, u));
        Gate::Proceed {
            delay: self.delay_for(pair_failed.max(ip_failed).max(user_failed)),
            attempt: Attempt {
                held: Some((self, ip, u)),
            },
        }
    }

    /// Attempts in flight from `ip`'s network (for tests and metrics).
    pub fn in_flight_from(&self, ip: IpAddr) -> u32 {
        get(&self.lock().by_ip, &net_key(ip))
    }

    fn release(&self, inf: &mut InFlight, ip: IpAddr, u: u64) {
        decr(&mut inf.by_ip, ip);
        decr(&mut inf.by_user, u);
        decr(&mut inf.by_pair, (ip, u));
    }

    /// Count a failure (the caller holds the lock).
    fn record_failure(&self, ip: IpAddr, u: u64, now: Instant) {
        let bump = |c: Option<Count>| {
            let n = match c {
                Some(c) if now.saturating_duration_since(c.last) < self.cfg.window => c.n,
                _ => 0,
            };
            Count {
                n: n.saturating_add(1),
                last: now,
            }
        };
        self.by_pair
            .insert((ip, u), bump(self.by_pair.get(&(ip, u))));
        self.by_ip.insert(ip, bump(self.by_ip.get(&ip)));
        self.by_user.insert(u, bump(self.by_user.get(&u)));
    }

    /// Delay after `n` failures: base × 2^(n−1), at most max_delay.
    pub fn delay_for(&self, n: u32) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (n - 1).min(16);
        self.cfg
            .base_delay
            .saturating_mul(factor)
            .min(self.cfg.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PenaltyConfig {
        PenaltyConfig {
            enabled: true,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(15),
            max_failures_per_user: 5,
            max_failures_per_ip: 20,
            window: Duration::from_secs(600),
            known_good_ttl: Duration::from_secs(3600),
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    /// The delay of a check that must pass (its attempt released at once).
    fn delay(g: Gate<'_>) -> Duration {
        match g {
            Gate::Proceed { delay, .. } => delay,
            Gate::Refuse => panic!("refused"),
        }
    }

    /// A failure recorded directly (past the gate, as a test setup).
    fn fail(p: &Penalty, ip: IpAddr, user: &str, now: Instant) {
        let _inf = p.lock();
        p.record_failure(net_key(ip), user_key(user), now);
    }

    fn succeed(p: &Penalty, ip: IpAddr, user: &str, now: Instant) {
        match p.check(ip, user, now) {
            Gate::Proceed { attempt, .. } => attempt.succeeded(),
            Gate::Refuse => panic!("refused"),
        }
    }

    #[test]
    fn delay_doubles_then_caps_then_refuses() {
        let p = Penalty::new(&cfg());
        let t = Instant::now();
        assert_eq!(delay(p.check(A, "bob", t)), Duration::ZERO);
        let mut seen = Vec::new();
        for _ in 0..4 {
            match p.check(A, "bob", t) {
                Gate::Proceed { attempt, .. } => attempt.failed(t),
                Gate::Refuse => panic!("refused"),
            }
            seen.push(delay(p.check(A, "bob", t)).as_secs());
        }
        assert_eq!(seen, vec![2, 4, 8, 15]);
        fail(&p, A, "bob", t);
        assert!(p.check(A, "bob", t).is_refuse());
        // The window passes: forgotten.
        assert_eq!(
            delay(p.check(A, "bob", t + Duration::from_secs(601))),
            Duration::ZERO
        );
        assert_eq!(p.in_flight_from(A), 0);
    }

    #[test]
    fn known_good_user_not_locked_out_by_attack_on_another() {
        let p = Penalty::new(&cfg());
        let t = Instant::now();
        succeed(&p, A, "alice", t);
        // An attacker at the same address sprays many users.
        for i in 0..25 {
            fail(&p, A, &format!("victim{i}"), t);
        }
        // A new user from A is refused (address over its limit)…
        assert!(p.check(A, "carol", t).is_refuse());
        // …alice, known good from A, is not even delayed.
        assert_eq!(delay(p.check(A, "alice", t)), Duration::ZERO);
        // Guessing alice's password from elsewhere does not lock her out at A.
        for _ in 0..10 {
            fail(&p, B, "alice", t);
        }
        assert!(p.check(B, "alice", t).is_refuse());
        assert_eq!(delay(p.check(A, "alice", t)), Duration::ZERO);
    }

    #[test]
    fn success_clears_own_failures_and_case_is_ignored() {
        let p = Penalty::new(&cfg());
        let t = Instant::now();
        fail(&p, A, "Bob", t);
        fail(&p, A, "bob", t);
        assert_eq!(delay(p.check(A, "BOB", t)).as_secs(), 4);
        succeed(&p, A, "bob", t);
        assert_eq!(delay(p.check(A, "bob", t)), Duration::ZERO);
    }

    #[test]
    fn disabled_does_nothing() {
        let mut c = cfg();
        c.enabled = false;
        let p = Penalty::new(&c);
        let t = Instant::now();
        let mut held = Vec::new();
        for _ in 0..100 {
            match p.check(A, "x", t) {
                Gate::Proceed { attempt, .. } => held.push(attempt),
                Gate::Refuse => panic!("refused while disabled"),
            }
        }
        for a in held {
            a.failed(t);
        }
        assert_eq!(delay(p.check(A, "x", t)), Duration::ZERO);
    }

    /// 200 attempts at the same instant, from 8 threads: at most the limit
    /// pass the gate while none of them has an answer yet.
    #[test]
    fn concurrent_reservations_are_bounded_by_the_limits() {
        let p = Penalty::new(&cfg());
        let t = Instant::now();
        let barrier = std::sync::Barrier::new(8);
        // One user from one address: the per-user limit (5).
        let passed: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let mut mine = Vec::new();
                        for _ in 0..25 {
                            if let Gate::Proceed { attempt, .. } = p.check(A, "bob", t) {
                                mine.push(attempt);
                            }
                        }
                        let n = mine.len();
                        // Held until every thread has checked.
                        barrier.wait();
                        for a in mine {
                            a.failed(t);
                        }
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(passed, 5);
        // They all failed: bob from A stays refused, with nothing in flight.
        assert_eq!(p.in_flight_from(A), 0);
        assert!(p.check(A, "bob", t).is_refuse());

        // 200 users from one address at once: the per-address limit (20).
        let q = Penalty::new(&cfg());
        let held: Vec<_> = (0..200)
            .filter_map(|i| match q.check(B, &format!("u{i}"), t) {
                Gate::Proceed { attempt, .. } => Some(attempt),
                Gate::Refuse => None,
            })
            .collect();
        assert_eq!(held.len(), 20);
        assert_eq!(q.in_flight_from(B), 20);
        assert!(q.check(B, "someone-else", t).is_refuse());
        drop(held);
    }

    #[test]
    fn drop_and_success_release_failure_converts() {
        let p = Penalty::new(&cfg());
        let t = Instant::now();
        let mut held = Vec::new();
        for _ in 0..5 {
            match p.check(A, "bob", t) {
                Gate::Proceed { attempt, .. } => held.push(attempt),
                Gate::Refuse => panic!("refused"),
            }
        }
        assert!(p.check(A, "bob", t).is_refuse());
        assert_eq!(p.in_flight_from(A), 5);
        // A dropped attempt (no verdict: directory down) frees its slot and
        // leaves no failure behind.
        drop(held.pop());
        assert_eq!(p.in_flight_from(A), 4);
        assert_eq!(delay(p.check(A, "bob", t)), Duration::ZERO);
        // A failure keeps the slot taken (as a failure now): still full.
        held.pop().unwrap().failed(t);
        assert_eq!(p.in_flight_from(A), 3);
        let g = p.check(A, "bob", t);
        assert_eq!(delay(g), Duration::from_secs(2));
        // Success frees the slot and forgets bob's own failures.
        held.pop().unwrap().succeeded();
        drop(held);
        assert_eq!(p.in_flight_from(A), 0);
        assert_eq!(delay(p.check(A, "bob", t)), Duration::ZERO);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let p = Penalty::new(&cfg());
        let t = Instant::now();
        let a1: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let a2: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:fffe".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(net_key(a1), net_key(a2));
        assert_ne!(net_key(a1), net_key(other));
        // Failures from many addresses of one /64 add up.
        for i in 0..20u16 {
            let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, 7, 7, i));
            fail(&p, ip, &format!("v{i}"), t);
        }
        assert!(p.check(a2, "carol", t).is_refuse());
        // Another /64 is another client.
        assert_eq!(delay(p.check(other, "carol", t)), Duration::ZERO);
        // IPv4-mapped IPv6 is the IPv4 address.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(net_key(mapped), A);
        for _ in 0..5 {
            fail(&p, A, "dave", t);
        }
        assert!(p.check(mapped, "dave", t).is_refuse());
        // In-flight attempts are grouped the same way.
        let g = p.check(a1, "erin", t);
        assert!(g.is_refuse(), "the /64 is over its limit");
        let x: IpAddr = "2001:db8:9::1".parse().unwrap();
        let y: IpAddr = "2001:db8:9::2".parse().unwrap();
        let held: Vec<_> = (0..5)
            .map(
                |i| match p.check(if i % 2 == 0 { x } else { y }, "frank", t) {
                    Gate::Proceed { attempt, .. } => attempt,
                    Gate::Refuse => panic!("refused"),
                },
            )
            .collect();
        assert_eq!(p.in_flight_from(x), 5);
        assert!(p.check(y, "frank", t).is_refuse());
        drop(held);
    }
}
