//! The configured peers and what they resolve to, sans-I/O. A peer is
//! written `HOST:PORT` (`admin.push_peers`, `admin.push_peers_dns`); an IP
//! literal is its own address, a name is resolved (every A and AAAA
//! record) at start and every `admin.push_peers_refresh`. When a lookup
//! fails, the addresses the name had before are kept: a DNS hiccup must not
//! cut the replicas off from each other. An empty answer is an answer (a
//! headless Service with no ready pod).

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// One configured peer entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// As configured (for lookups and log lines).
    pub name: String,
    pub port: u16,
    /// Set when the host part is an IP literal: no lookup needed.
    pub literal: Option<SocketAddr>,
}

impl Target {
    /// `HOST:PORT` (`[v6]:PORT` for an IPv6 literal); `None` if malformed.
    pub fn parse(s: &str) -> Option<Target> {
        let (host, port) = crate::config::split_host_port(s)?;
        let literal = host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        Some(Target {
            name: host,
            port,
            literal,
        })
    }

    /// What to hand to the resolver (`host:port`, brackets as needed).
    pub fn lookup(&self) -> String {
        if self.name.contains(':') {
            format!("[{}]:{}", self.name, self.port)
        } else {
            format!("{}:{}", self.name, self.port)
        }
    }
}

/// The peers' addresses, by configured entry.
#[derive(Debug, Default)]
pub struct Sources {
    targets: Vec<Target>,
    resolved: BTreeMap<Target, BTreeSet<SocketAddr>>,
}

impl Sources {
    pub fn new(targets: Vec<Target>) -> Sources {
        let resolved = targets
            .iter()
            .filter_map(|t| t.literal.map(|a| (t.clone(), BTreeSet::from([a]))))
            .collect();
        Sources { targets, resolved }
    }

    /// The entries that need a lookup.
    pub fn names(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| t.literal.is_none())
    }

    /// Does anything need a lookup (now and at every refresh)?
    pub fn needs_lookups(&self) -> bool {
        self.names().next().is_some()
    }

    /// A lookup of `t` answered (`Some`) or failed (`None`: keep what it
    /// had). Returns whether the union of all addresses may have changed.
    pub fn update(&mut self, t: &Target, answer: Option<BTreeSet<SocketAddr>>) -> bool {
        let Some(addrs) = answer else {
            return false;
        };
        let old = self.resolved.insert(t.clone(), addrs);
        old.as_ref() != self.resolved.get(t)
    }

    /// Every address of every entry.
    pub fn all(&self) -> BTreeSet<SocketAddr> {
        self.resolved.values().flatten().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn targets() {
        let t = Target::parse("10.0.0.5:9143").unwrap();
        assert_eq!(t.literal, Some(a("10.0.0.5:9143")));
        let t = Target::parse("[fd00::5]:9143").unwrap();
        assert_eq!(t.literal, Some(a("[fd00::5]:9143")));
        assert_eq!(t.lookup(), "[fd00::5]:9143");
        let t = Target::parse("imapmux-peers.mail.svc:9143").unwrap();
        assert_eq!(t.literal, None);
        assert_eq!(t.lookup(), "imapmux-peers.mail.svc:9143");
        for bad in [
            "",
            "host",
            "host:",
            ":9143",
            "host:0",
            "host:99999",
            "host:x",
        ] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn sources_keep_addresses_through_failed_lookups() {
        let lit = Target::parse("10.0.0.1:1").unwrap();
        let dns = Target::parse("peers.svc:9143").unwrap();
        let mut s = Sources::new(vec![lit.clone(), dns.clone()]);
        assert!(s.needs_lookups());
        assert_eq!(s.names().collect::<Vec<_>>(), vec![&dns]);
        assert_eq!(s.all(), BTreeSet::from([a("10.0.0.1:1")]));

        let two = BTreeSet::from([a("10.1.0.1:9143"), a("[fd00::2]:9143")]);
        assert!(s.update(&dns, Some(two.clone())));
        assert_eq!(s.all().len(), 3);
        // Same answer: no change. A failed lookup keeps the old addresses.
        assert!(!s.update(&dns, Some(two)));
        assert!(!s.update(&dns, None));
        assert_eq!(s.all().len(), 3);
        // An empty answer (no ready pod) is an answer.
        assert!(s.update(&dns, Some(BTreeSet::new())));
        assert_eq!(s.all(), BTreeSet::from([a("10.0.0.1:1")]));

        let only_literals = Sources::new(vec![lit]);
        assert!(!only_literals.needs_lookups());
    }
}
