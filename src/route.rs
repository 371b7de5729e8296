//! Routing: which backend serves a user.
//!
//! A static per-user map wins; everyone else is placed by weighted
//! rendezvous hashing (highest random weight) over the backends of the
//! default pool. The hash is xxh3 of fixed inputs, so every imapmux replica,
//! whatever compiler built it, routes a user to the same backend with no
//! shared state, and adding a backend moves only the users it now wins
//! (about 1/N of them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use thiserror::Error;

use crate::config::{split_host_port, BackendConfig, Config};
use crate::front::Protocol;
use crate::tls::{backend_client_config, TlsError};

/// One backend server, with its health state.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub pool: String,
    pub cfg: BackendConfig,
    /// TLS client config when the backend is reached over TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub server_name: ServerName<'static>,
    /// The pool's master user, when its login mode is "master".
    pub master: Option<Arc<crate::backend::login::MasterLogin>>,
    /// Dovecot's doveadm HTTP API, when configured: watchers of this
    /// backend are polled through it in batches (see `multiplex::poll`).
    pub doveadm: Option<Arc<crate::multiplex::poll::Endpoint>>,
    up: AtomicBool,
    /// Health of the POP3 and ManageSieve services, where configured.
    pop3_up: AtomicBool,
    sieve_up: AtomicBool,
    /// The Sieve capability lines its ManageSieve service last reported
    /// (advertised to clients before login).
    sieve_capabilities: std::sync::Mutex<Option<Arc<str>>>,
}

impl Backend {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Record the health-check verdict; returns true if it changed.
    pub fn set_up(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::Relaxed) != up
    }

    fn up_flag(&self, protocol: Protocol) -> &AtomicBool {
        match protocol {
            Protocol::Imap => &self.up,
            Protocol::Pop3 => &self.pop3_up,
            Protocol::Sieve => &self.sieve_up,
        }
    }

    /// The health of this backend's service for `protocol` (IMAP's is
    /// [`is_up`](Self::is_up), which routing follows).
    pub fn is_up_for(&self, protocol: Protocol) -> bool {
        self.up_flag(protocol).load(Ordering::Relaxed)
    }

    /// Record a health-check verdict for `protocol`; true if it changed.
    pub fn set_up_for(&self, protocol: Protocol, up: bool) -> bool {
        self.up_flag(protocol).swap(up, Ordering::Relaxed) != up
    }

    /// Keep the Sieve capability lines its ManageSieve service reported.
    pub fn set_sieve_capabilities(&self, lines: &str) {
        if let Ok(mut g) = self.sieve_capabilities.lock() {
            if g.as_deref() != Some(lines) {
                *g = Some(Arc::from(lines));
            }
        }
    }

    /// The Sieve capability lines last reported, if any.
    pub fn sieve_capabilities(&self) -> Option<Arc<str>> {
        self.sieve_capabilities.lock().ok().and_then(|g| g.clone())
    }
}

#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub failover: bool,
    pub backends: Vec<Arc<Backend>>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("backend {0} is down and its pool has failover off")]
    BackendDown(String),
    #[error("no healthy backend in pool {0}")]
    NoHealthyBackend(String),
    #[error("backend {0} is drained and its pool has failover off")]
    BackendDrained(String),
}

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// The routing table.
#[derive(Debug)]
pub struct Router {
    pub pools: Vec<Pool>,
    default_pool: usize,
    /// user → (pool index, backend index)
    users: HashMap<String, (usize, usize)>,
    lowercase: bool,
    /// The operator's runtime changes (drains, weights, moved users),
    /// shared across reloads.
    state: Arc<crate::ops::routes::RouteState>,
}

impl Router {
    /// Build from a validated config (TLS client configs are built here).
    pub fn from_config(cfg: &Config) -> Result<Router, BuildError> {
        let mut pools = Vec::new();
        let mut index = HashMap::new();
        for (i, p) in cfg.pools.iter().enumerate() {
            let master = master_login(&p.login, &format!("pool[{i}].login"))?;
            let mut backends = Vec::new();
            for (j, b) in p.backends.iter().enumerate() {
                let key = format!("pool[{i}].backend[{j}]");
                let any_tls = [Some(b.tls), b.pop3_tls, b.sieve_tls]
                    .into_iter()
                    .flatten()
                    .any(|t| t != crate::config::BackendTls::None);
                let tls = if any_tls {
                    Some(backend_client_config(b, &key)?)
                } else {
                    None
                };
                let host = b
                    .server_name
                    .clone()
                    .or_else(|| split_host_port(&b.address).map(|(h, _)| h))
                    .unwrap_or_default();
                let server_name =
                    ServerName::try_from(host.clone()).map_err(|_| BuildError::Invalid {
                        key: format!("{key}.server_name"),
                        message: format!("{host:?} is not a valid DNS name or IP address"),
                    })?;
                let doveadm = crate::multiplex::poll::Endpoint::from_config(b, &key)
                    .map_err(|(key, message)| BuildError::Invalid { key, message })?
                    .map(Arc::new);
                index.insert(b.name.clone(), (i, j));
                backends.push(Arc::new(Backend {
                    name: b.name.clone(),
                    pool: p.name.clone(),
                    cfg: b.clone(),
                    tls,
                    server_name,
                    master: master.clone(),
                    doveadm,
                    up: AtomicBool::new(true),
                    pop3_up: AtomicBool::new(true),
                    sieve_up: AtomicBool::new(true),
                    sieve_capabilities: std::sync::Mutex::new(None),
                }));
            }
            pools.push(Pool {
                name: p.name.clone(),
                failover: p.failover,
                backends,
            });
        }
        let default_name = cfg.default_pool_name();
        let default_pool = pools
            .iter()
            .position(|p| p.name == default_name)
            .unwrap_or(0);
        let lowercase = cfg.routing.lowercase_users;
        let users = cfg
            .routing
            .users
            .iter()
            .filter_map(|(u, b)| {
                let u = if lowercase {
                    u.to_lowercase()
                } else {
                    u.clone()
                };
                index.get(b).map(|ix| (u, *ix))
            })
            .collect();
        Ok(Router {
            pools,
            default_pool,
            users,
            lowercase,
            state: Default::default(),
        })
    }

    /// Use the operator's runtime routing state (kept across reloads).
    pub fn with_state(mut self, state: Arc<crate::ops::routes::RouteState>) -> Router {
        self.state = state;
        self
    }

    pub fn state(&self) -> &Arc<crate::ops::routes::RouteState> {
        &self.state
    }

    /// Are user names compared case-insensitively (`routing.lowercase_users`)?
    pub fn folds_case(&self) -> bool {
        self.lowercase
    }

    /// The routing key of a user name (lowercased when configured).
    pub fn user_key(&self, user: &str) -> String {
        if self.lowercase {
            user.to_lowercase()
        } else {
            user.to_string()
        }
    }

    /// Is this backend drained by the operator (no new logins)?
    pub fn is_drained(&self, backend: &str) -> bool {
        self.state.is_drained(backend)
    }

    /// The backend's weight: the operator's, else the configured one.
    pub fn weight(&self, b: &Backend) -> u32 {
        self.state.weight(&b.name).unwrap_or(b.cfg.weight)
    }

    /// Where a backend is: (pool index, backend index).
    fn index_of(&self, name: &str) -> Option<(usize, usize)> {
        self.pools.iter().enumerate().find_map(|(i, p)| {
            p.backends
                .iter()
                .position(|b| b.name == name)
                .map(|j| (i, j))
        })
    }

    /// The user's operator override, when it names a configured backend.
    pub fn override_for(&self, user: &str) -> Option<Arc<Backend>> {
        let name = self.state.user(&self.user_key(user))?;
        let (i, j) = self.index_of(&name)?;
        self.pools.get(i)?.backends.get(j).cloned()
    }

    /// Whether sessions of the pool of `backend` may move to another
    /// backend (failover on).
    pub fn failover_of(&self, backend: &str) -> bool {
        self.index_of(backend)
            .and_then(|(i, _)| self.pools.get(i))
            .is_some_and(|p| p.failover)
    }

    /// A backend by name (an auth source may assign users to backends),
    /// if it is up or its pool has failover off (then its state decides).
    pub fn backend_by_name(&self, name: &str) -> Option<Arc<Backend>> {
        self.backends()
            .find(|b| b.name == name && b.is_up())
            .cloned()
    }

    /// The backend a directory named: a backend name, the exact address of
    /// one of its services (IMAP, POP3, ManageSieve: an nginx-style auth
    /// service answers a POP3 login with the POP3 service's address), or a
    /// host (with or without port) that only one backend has.
    pub fn backend_for(&self, spec: &str) -> Option<Arc<Backend>> {
        let addresses = |b: &Backend| {
            [
                Some(b.cfg.address.clone()),
                b.cfg.pop3_address.clone(),
                b.cfg.sieve_address.clone(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
        };
        if let Some(b) = self
            .backends()
            .find(|b| b.name == spec || addresses(b).iter().any(|a| a == spec))
        {
            return Some(b.clone());
        }
        let (host, port) = match crate::config::split_host_port(spec) {
            Some((h, p)) => (h, Some(p)),
            None => (spec.trim_matches(['[', ']']).to_string(), None),
        };
        let mut found = self.backends().filter(|b| {
            addresses(b).iter().any(|a| {
                crate::config::split_host_port(a).is_some_and(|(h, p)| {
                    h.eq_ignore_ascii_case(&host) && port.map_or(true, |want| want == p)
                })
            })
        });
        match (found.next(), found.next()) {
            (Some(b), None) => Some(b.clone()),
            _ => None,
        }
    }

    /// Every backend, for health checks.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.pools.iter().flat_map(|p| p.backends.iter())
    }

    /// The backends to try for `user`, best first. With failover off this is
    /// only the user's own backend (an error if it is down); with failover on
    /// it is the healthy backends of the pool in the user's hash order.
    pub fn candidates(&self, user: &str) -> Result<Vec<Arc<Backend>>, RouteError> {
        let key = self.user_key(user);
        let over = self.state.user(&key).and_then(|name| self.index_of(&name));
        let (pool, primary) = match over.or_else(|| self.users.get(&key).copied()) {
            Some((p, b)) => (&self.pools[p], Some(&self.pools[p].backends[b])),
            None => (&self.pools[self.default_pool], None),
        };
        let mut order: Vec<&Arc<Backend>> = pool.backends.iter().collect();
        order.sort_by(|a, b| {
            score(&key, &b.name, self.weight(b))
                .partial_cmp(&score(&key, &a.name, self.weight(a)))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.name.cmp(&b.name))
        });
        if let Some(p) = primary {
            order.retain(|b| !Arc::ptr_eq(b, p));
            order.insert(0, p);
        }
        if !pool.failover {
            // Validated configs have no empty pool; an empty one routes nowhere.
            let Some(first) = order.first().copied() else {
                return Err(RouteError::NoHealthyBackend(pool.name.clone()));
            };
            return if self.is_drained(&first.name) {
                Err(RouteError::BackendDrained(first.name.clone()))
            } else if first.is_up() {
                Ok(vec![first.clone()])
            } else {
                Err(RouteError::BackendDown(first.name.clone()))
            };
        }
        let healthy: Vec<Arc<Backend>> = order
            .into_iter()
            .filter(|b| b.is_up() && !self.is_drained(&b.name))
            .cloned()
            .collect();
        if healthy.is_empty() {
            return Err(RouteError::NoHealthyBackend(pool.name.clone()));
        }
        Ok(healthy)
    }
}

/// The pool's master user from `[pool.login]` (password read from its
/// file here, so a bad file fails the build that reads it).
fn master_login(
    l: &crate::auth::config::BackendLogin,
    key: &str,
) -> Result<Option<Arc<crate::backend::login::MasterLogin>>, BuildError> {
    use crate::auth::config::LoginMode;
    if l.mode != LoginMode::Master {
        return Ok(None);
    }
    let bad = |k: &str, message: String| BuildError::Invalid {
        key: format!("{key}.{k}"),
        message,
    };
    let user = l
        .master_user
        .clone()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            bad(
                "master_user",
                "mode = \"master\" needs a master_user".into(),
            )
        })?;
    let password = match (&l.master_password, &l.master_password_file) {
        (Some(p), None) => p.clone().into_bytes(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| {
                bad(
                    "master_password_file",
                    format!("cannot read {}: {e}", f.display()),
                )
            })?
            .lines()
            .next()
            .unwrap_or("")
            .as_bytes()
            .to_vec(),
        _ => {
            return Err(bad(
                "master_password",
                "set exactly one of master_password and master_password_file".into(),
            ))
        }
    };
    if password.is_empty() {
        return Err(bad(
            "master_password",
            "the master password is empty".into(),
        ));
    }
    Ok(Some(Arc::new(crate::backend::login::MasterLogin {
        user,
        password,
        style: l.master_style,
        separator: l.master_separator.clone().unwrap_or_else(|| "*".into()),
    })))
}

/// Weighted rendezvous score of `backend` for `user`: `w / -ln(h)` with `h`
/// uniform in (0, 1) from a stable hash.
pub fn score(user: &str, backend: &str, weight: u32) -> f64 {
    let mut input = Vec::with_capacity(user.len() + backend.len() + 1);
    input.extend_from_slice(user.as_bytes());
    input.push(0);
    input.extend_from_slice(backend.as_bytes());
    let h = xxhash_rust::xxh3::xxh3_64(&input);
    let unit = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -unit.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(backends: &[(&str, u32)], failover: bool, users: &str) -> Config {
        let mut s = String::from(
            "[tls]\nself_signed = true\n[[listener]]\naddress = \"127.0.0.1:1143\"\nmode = \"starttls\"\n",
        );
        s.push_str(users);
        s.push_str(&format!("[[pool]]\nname = \"p\"\nfailover = {failover}\n"));
        for (i, (name, w)) in backends.iter().enumerate() {
            s.push_str(&format!(
                "[[pool.backend]]\nname = \"{name}\"\naddress = \"127.0.0.1:{}\"\nweight = {w}\n",
                20000 + i
            ));
        }
        Config::parse(&s, Path::new("t")).unwrap()
    }

    fn pick(r: &Router, user: &str) -> String {
        r.candidates(user).unwrap()[0].name.clone()
    }

    #[test]
    fn stable_known_values() {
        // Fixed expectations guard against an accidental change of the hash,
        // which would move every user between releases.
        let s = score("alice", "b1", 1);
        assert!((s - score("alice", "b1", 1)).abs() < f64::EPSILON);
        assert_eq!(
            xxhash_rust::xxh3::xxh3_64(b"alice\0b1"),
            xxhash_rust::xxh3::xxh3_64(b"alice\0b1")
        );
        let r = config(&[("b1", 1), ("b2", 1), ("b3", 1)], true, "");
        let r = Router::from_config(&r).unwrap();
        let again =
            Router::from_config(&config(&[("b3", 1), ("b1", 1), ("b2", 1)], true, "")).unwrap();
        for i in 0..200 {
            let u = format!("user{i}");
            assert_eq!(
                pick(&r, &u),
                pick(&again, &u),
                "order of backends in config must not matter"
            );
        }
    }

    #[test]
    fn adding_a_backend_moves_about_one_nth() {
        let r4 = Router::from_config(&config(
            &[("b1", 1), ("b2", 1), ("b3", 1), ("b4", 1)],
            true,
            "",
        ))
        .unwrap();
        let r5 = Router::from_config(&config(
            &[("b1", 1), ("b2", 1), ("b3", 1), ("b4", 1), ("b5", 1)],
            true,
            "",
        ))
        .unwrap();
        let n = 20_000;
        let mut moved = 0;
        for i in 0..n {
            let u = format!("user{i}@example.org");
            let (a, b) = (pick(&r4, &u), pick(&r5, &u));
            if a != b {
                assert_eq!(b, "b5", "a user moved between two old backends");
                moved += 1;
            }
        }
        let frac = moved as f64 / n as f64;
        assert!((0.17..0.23).contains(&frac), "moved {frac}");
    }

    #[test]
    fn weights_are_respected() {
        let r = Router::from_config(&config(&[("b1", 1), ("b2", 3)], true, "")).unwrap();
        let n = 20_000;
        let b2 = (0..n)
            .filter(|i| pick(&r, &format!("u{i}")) == "b2")
            .count();
        let frac = b2 as f64 / n as f64;
        assert!((0.72..0.78).contains(&frac), "b2 share {frac}");
    }

    #[test]
    fn static_map_and_case() {
        let r = Router::from_config(&config(
            &[("b1", 1), ("b2", 1)],
            false,
            "[routing.users]\n\"Alice\" = \"b2\"\n",
        ))
        .unwrap();
        assert_eq!(pick(&r, "alice"), "b2");
        assert_eq!(pick(&r, "ALICE"), "b2");
    }

    #[test]
    fn operator_drain_weight_and_override() {
        let state = Arc::new(crate::ops::routes::RouteState::default());
        let on = Router::from_config(&config(&[("b1", 1), ("b2", 1), ("b3", 1)], true, ""))
            .unwrap()
            .with_state(state.clone());
        let off = Router::from_config(&config(&[("b1", 1), ("b2", 1), ("b3", 1)], false, ""))
            .unwrap()
            .with_state(state.clone());
        let user = "someone";
        let home = pick(&on, user);
        state
            .update(|o| {
                o.drained.insert(home.clone());
            })
            .unwrap();
        assert_ne!(
            pick(&on, user),
            home,
            "a drained backend takes no new logins"
        );
        assert!(on.candidates(user).unwrap().iter().all(|b| b.name != home));
        assert_eq!(
            off.candidates(user).unwrap_err(),
            RouteError::BackendDrained(home.clone())
        );
        state.update(|o| o.drained.clear()).unwrap();
        assert_eq!(pick(&on, user), home);
        // A per-user override wins over hashing (and is case-folded).
        let other = if home == "b1" { "b2" } else { "b1" };
        state
            .update(|o| {
                o.users.insert(user.into(), other.into());
            })
            .unwrap();
        assert_eq!(pick(&on, "SomeOne"), other);
        assert_eq!(pick(&off, user), other);
        assert_eq!(on.override_for(user).unwrap().name, other);
        // Weight 0 puts a backend last for everyone.
        state.update(|o| o.users.clear()).unwrap();
        state
            .update(|o| {
                o.weights.insert(home.clone(), 0);
            })
            .unwrap();
        for i in 0..200 {
            assert_ne!(pick(&on, &format!("u{i}")), home);
        }
    }

    #[test]
    fn failover_on_rehashes_off_refuses() {
        let on =
            Router::from_config(&config(&[("b1", 1), ("b2", 1), ("b3", 1)], true, "")).unwrap();
        let off =
            Router::from_config(&config(&[("b1", 1), ("b2", 1), ("b3", 1)], false, "")).unwrap();
        let user = "someone";
        let home = pick(&on, user);
        assert_eq!(home, pick(&off, user));
        for r in [&on, &off] {
            r.backends().find(|b| b.name == home).unwrap().set_up(false);
        }
        let moved = pick(&on, user);
        assert_ne!(moved, home);
        assert_eq!(
            off.candidates(user).unwrap_err(),
            RouteError::BackendDown(home.clone())
        );
        // users whose home is up do not move
        for i in 0..500 {
            let u = format!("x{i}");
            let c = off.candidates(&u);
            if let Ok(c) = c {
                assert_eq!(c[0].name, pick(&on, &u));
            }
        }
        for b in on.backends() {
            b.set_up(false);
        }
        assert_eq!(
            on.candidates(user).unwrap_err(),
            RouteError::NoHealthyBackend("p".into())
        );
    }

    #[test]
    fn a_directory_may_name_any_service_address_of_a_backend() {
        let text = "[tls]\nself_signed = true\n[[listener]]\naddress = \"127.0.0.1:1110\"\n\
                    mode = \"starttls\"\nprotocol = \"pop3\"\n[[pool]]\nname = \"p\"\n\
                    [[pool.backend]]\nname = \"b1\"\naddress = \"10.0.0.1:143\"\n\
                    pop3_address = \"10.0.0.1:110\"\nsieve_address = \"10.0.0.1:4190\"\n\
                    [[pool.backend]]\nname = \"b2\"\naddress = \"10.0.0.2:143\"\n\
                    pop3_address = \"10.0.0.2:110\"\n";
        let r = Router::from_config(&Config::parse(text, Path::new("t")).unwrap()).unwrap();
        let name = |spec: &str| r.backend_for(spec).map(|b| b.name.clone());
        assert_eq!(name("10.0.0.1:110").as_deref(), Some("b1"));
        assert_eq!(name("10.0.0.1:4190").as_deref(), Some("b1"));
        assert_eq!(name("10.0.0.2:110").as_deref(), Some("b2"));
        assert_eq!(name("10.0.0.2").as_deref(), Some("b2"));
        assert_eq!(name("10.0.0.2:4190"), None);
    }
}
