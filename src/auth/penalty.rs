//! Brute-force defence: failed logins per client address, per user and per
//! (address, user) raise an increasing delay before the next attempt is
//! verified (like Dovecot's auth penalty) and, past a limit, a temporary
//! refusal. A user who logged in successfully from an address recently is
//! exempt from that address's and the user's global counters, so an
//! attacker guessing someone else's (or even this user's) password from
//! elsewhere does not lock them out; only their own (address, user) count
//! applies to them.
//!
//! Time is passed in (`now`); the maps are bounded moka caches whose TTL is
//! the failure window, so memory stays bounded under attack.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use moka::sync::Cache;

use super::config::PenaltyConfig;

/// What to do with a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Verify it after waiting `delay` (zero when there were no failures).
    Proceed { delay: Duration },
    /// Refuse it without verifying (`NO [UNAVAILABLE]`).
    Refuse,
}

#[derive(Debug, Clone, Copy)]
struct Count {
    n: u32,
    last: Instant,
}

/// The failure counters of one imapmux process.
pub struct Penalty {
    cfg: PenaltyConfig,
    by_ip: Cache<IpAddr, Count>,
    by_user: Cache<u64, Count>,
    by_pair: Cache<(IpAddr, u64), Count>,
    known_good: Cache<(IpAddr, u64), ()>,
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
        }
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

    /// Decide about an attempt by `user` from `ip` at `now`.
    pub fn check(&self, ip: IpAddr, user: &str, now: Instant) -> Gate {
        if !self.cfg.enabled {
            return Gate::Proceed {
                delay: Duration::ZERO,
            };
        }
        let u = user_key(user);
        let pair = self.live(&self.by_pair, &(ip, u), now);
        let (by_ip, by_user) = if self.known_good.contains_key(&(ip, u)) {
            (0, 0)
        } else {
            (
                self.live(&self.by_ip, &ip, now),
                self.live(&self.by_user, &u, now),
            )
        };
        if pair >= self.cfg.max_failures_per_user
            || by_user >= self.cfg.max_failures_per_user
            || by_ip >= self.cfg.max_failures_per_ip
        {
            return Gate::Refuse;
        }
        Gate::Proceed {
            delay: self.delay_for(pair.max(by_ip).max(by_user)),
        }
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

    /// An attempt failed (wrong password, unknown user).
    pub fn failed(&self, ip: IpAddr, user: &str, now: Instant) {
        if !self.cfg.enabled {
            return;
        }
        let u = user_key(user);
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

    /// An attempt succeeded: this (address, user) is known good, and its
    /// own failures are forgotten.
    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        if !self.cfg.enabled {
            return;
        }
        let u = user_key(user);
        self.by_pair.invalidate(&(ip, u));
        self.known_good.insert((ip, u), ());
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

    fn delay(g: Gate) -> Duration {
        match g {
            Gate::Proceed { delay } => delay,
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
            p.failed(A, "bob", t);
            seen.push(delay(p.check(A, "bob", t)).as_secs());
        }
        assert_eq!(seen, vec![2, 4, 8, 15]);
        p.failed(A, "bob", t);
        assert_eq!(p.check(A, "bob", t), Gate::Refuse);
        // The window passes: forgotten.
        assert_eq!(
            delay(p.check(A, "bob", t + Duration::from_secs(601))),
            Duration::ZERO
        );
    }

    #[test]
    fn known_good_user_not_locked_out_by_attack_on_another() {
        let p = Penalty::new(&cfg());
        let t = Instant::now();
        p.succeeded(A, "alice");
        // An attacker at the same address sprays many users.
        for i in 0..25 {
            p.failed(A, &format!("victim{i}"), t);
        }
        // A new user from A is refused (address over its limit)…
        assert_eq!(p.check(A, "carol", t), Gate::Refuse);
        // …alice, known good from A, is not even delayed.
        assert_eq!(delay(p.check(A, "alice", t)), Duration::ZERO);
        // Guessing alice's password from elsewhere does not lock her out at A.
        for _ in 0..10 {
            p.failed(B, "alice", t);
        }
        assert_eq!(p.check(B, "alice", t), Gate::Refuse);
        assert_eq!(delay(p.check(A, "alice", t)), Duration::ZERO);
    }

    #[test]
    fn success_clears_own_failures_and_case_is_ignored() {
        let p = Penalty::new(&cfg());
        let t = Instant::now();
        p.failed(A, "Bob", t);
        p.failed(A, "bob", t);
        assert_eq!(delay(p.check(A, "BOB", t)).as_secs(), 4);
        p.succeeded(A, "bob");
        assert_eq!(delay(p.check(A, "bob", t)), Duration::ZERO);
    }

    #[test]
    fn disabled_does_nothing() {
        let mut c = cfg();
        c.enabled = false;
        let p = Penalty::new(&c);
        let t = Instant::now();
        for _ in 0..100 {
            p.failed(A, "x", t);
        }
        assert_eq!(delay(p.check(A, "x", t)), Duration::ZERO);
    }
}
