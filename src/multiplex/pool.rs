//! Reuse after logout (the webmail pattern): when a client logs out, its
//! authenticated backend connection is cleaned (UNSELECT) and kept for a
//! while; the next login of the same user with the same credentials on the
//! same backend gets it instead of a new connection and login.
//!
//! Only a salted SHA-256 of the credentials is kept, never the password. A
//! connection is handed to one client at a time (taken out of the pool
//! while in use), checked with NOOP before reuse, and capped per user and
//! in total; connections past their idle time are logged out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::backend::command::{self, Answer};
use crate::backend::{BackendError, LoggedIn};
use crate::identity::Credentials;

pub type CredKey = [u8; 32];

/// Where a pooled connection belongs: backend + backend login name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Slot {
    backend: String,
    user: String,
}

struct Pooled {
    key: CredKey,
    conn: LoggedIn,
    since: Instant,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub idle: Duration,
    /// Oldest login handed out again (see `multiplex.reuse_max_age`).
    pub max_age: Duration,
    pub max_per_user: usize,
    pub max_total: usize,
}

/// `[multiplex]` in the config file (documented in config/imapmux.toml).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultiplexConfig {
    /// Keep a logged-out client's backend connection for the next login of
    /// the same user with the same credentials.
    pub reuse_after_logout: bool,
    /// How long a released connection waits for a login.
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub reuse_idle: Duration,
    /// A backend login older than this is not reused (logged out instead),
    /// so credentials are verified again at least this often.
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub reuse_max_age: Duration,
    pub max_pooled_per_user: usize,
    pub max_pooled: usize,
    /// Park a client that has been in IDLE this long ("0s": never).
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub idle_offload_after: Duration,
    /// How often watchers poll parked clients' mailboxes ("0s": push only).
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub poll_interval: Duration,
    /// Parked sessions logging in again at once (the others queue).
    pub max_concurrent_resumes: usize,
}

impl Default for MultiplexConfig {
    fn default() -> Self {
        MultiplexConfig {
            reuse_after_logout: true,
            reuse_idle: Duration::from_secs(60),
            reuse_max_age: Duration::from_secs(300),
            max_pooled_per_user: 2,
            max_pooled: 1000,
            idle_offload_after: Duration::from_secs(30),
            poll_interval: Duration::from_secs(10),
            max_concurrent_resumes: 32,
        }
    }
}

impl MultiplexConfig {
    pub fn pool_config(&self) -> Option<PoolConfig> {
        (self.reuse_after_logout && self.max_pooled > 0 && self.max_pooled_per_user > 0).then_some(
            PoolConfig {
                idle: self.reuse_idle,
                max_age: self.reuse_max_age,
                max_per_user: self.max_pooled_per_user,
                max_total: self.max_pooled,
            },
        )
    }
}

pub struct BackendPool {
    cfg: PoolConfig,
    salt: [u8; 32],
    slots: Mutex<HashMap<Slot, Vec<Pooled>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BackendPool {
    pub fn new(cfg: PoolConfig) -> BackendPool {
        BackendPool {
            cfg,
            salt: crate::auth::cache::random_salt(),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The key of a login: what the client presented and what imapmux sent
    /// to the backend (both, so neither a different client password nor a
    /// different backend login can match).
    pub fn key(&self, client: &Credentials, backend: &Credentials) -> CredKey {
        let parts = [client, backend].into_iter().flat_map(|c| {
            [
                c.user.as_bytes(),
                &c.password[..],
                c.authzid.as_deref().unwrap_or("").as_bytes(),
                c.mechanism.as_str().as_bytes(),
            ]
        });
        crate::auth::cache::salted_digest(&self.salt, parts)
    }

    pub fn len(&self) -> usize {
        lock(&self.slots).values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep `conn` (already cleaned) for `backend`/`user`. Returns the
    /// connections that had to leave to respect the caps (to be logged out).
    pub fn put(
        &self,
        backend: &str,
        user: &str,
        key: CredKey,
        conn: LoggedIn,
        now: Instant,
    ) -> Vec<LoggedIn> {
        let mut out = Vec::new();
        if self.cfg.max_total == 0 || self.cfg.max_per_user == 0 || self.too_old(&conn, now) {
            out.push(conn);
            return out;
        }
        let mut slots = lock(&self.slots);
        let slot = Slot {
            backend: backend.to_string(),
            user: user.to_string(),
        };
        let list = slots.entry(slot).or_default();
        list.push(Pooled {
            key,
            conn,
            since: now,
        });
        while list.len() > self.cfg.max_per_user {
            out.push(list.remove(0).conn);
        }
        let mut total: usize = slots.values().map(Vec::len).sum();
        while total > self.cfg.max_total {
            // The oldest connection of all goes.
            let oldest = slots
                .iter()
                .filter_map(|(s, l)| l.first().map(|p| (s.clone(), p.since)))
                .min_by_key(|(_, t)| *t)
                .map(|(s, _)| s);
            let Some(s) = oldest else { break };
            if let Some(l) = slots.get_mut(&s) {
                out.push(l.remove(0).conn);
                if l.is_empty() {
                    slots.remove(&s);
                }
            }
            total -= 1;
        }
        out
    }

    /// Logged in longer ago than `max_age`: never handed out again.
    fn too_old(&self, conn: &LoggedIn, now: Instant) -> bool {
        now.saturating_duration_since(conn.logged_in_at) >= self.cfg.max_age
    }

    /// A connection for this login, if one is pooled (newest first).
    pub fn take(&self, backend: &str, user: &str, key: &CredKey, now: Instant) -> Option<LoggedIn> {
        let mut slots = lock(&self.slots);
        let slot = Slot {
            backend: backend.to_string(),
            user: user.to_string(),
        };
        let list = slots.get_mut(&slot)?;
        let pos = list.iter().rposition(|p| {
            &p.key == key
                && now.saturating_duration_since(p.since) < self.cfg.idle
                && !self.too_old(&p.conn, now)
        })?;
        let p = list.remove(pos);
        if list.is_empty() {
            slots.remove(&slot);
        }
        Some(p.conn)
    }

    /// Every pooled connection: backend, user, and how long it has been idle.
    pub fn list(&self, now: Instant) -> Vec<(String, String, Duration)> {
        let slots = lock(&self.slots);
        let mut out = Vec::new();
        for (slot, list) in slots.iter() {
            for p in list {
                out.push((
                    slot.backend.clone(),
                    slot.user.clone(),
                    now.saturating_duration_since(p.since),
                ));
            }
        }
        out
    }

    /// Remove the connections of the (backend, user) slots `pick` names
    /// (to be logged out).
    pub fn remove_where(&self, pick: impl Fn(&str, &str) -> bool) -> Vec<LoggedIn> {
        let mut out = Vec::new();
        lock(&self.slots).retain(|slot, list| {
            if pick(&slot.backend, &slot.user) {
                out.extend(std::mem::take(list).into_iter().map(|p| p.conn));
                false
            } else {
                true
            }
        });
        out
    }

    /// Remove the connections idle for too long (to be logged out).
    pub fn expire(&self, now: Instant) -> Vec<LoggedIn> {
        let mut out = Vec::new();
        let mut slots = lock(&self.slots);
        slots.retain(|_, list| {
            let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(list).into_iter().partition(|p| {
                now.saturating_duration_since(p.since) >= self.cfg.idle
                    || self.too_old(&p.conn, now)
            });
            out.extend(old.into_iter().map(|p| p.conn));
            *list = keep;
            !list.is_empty()
        });
        out
    }
}

/// Send `tag cmd` and read until its tagged answer; untagged data is
/// dropped.
async fn command(
    conn: &mut LoggedIn,
    tag: &str,
    cmd: &str,
    timeout: Duration,
) -> Result<Answer, BackendError> {
    command::run(&mut conn.stream, &mut conn.buf, tag, cmd, timeout, |_| {}).await
}

/// Make a released connection fit for another client: leave the selected
/// mailbox without expunging (UNSELECT; BAD "no mailbox selected" is fine).
pub async fn clean(conn: &mut LoggedIn, timeout: Duration) -> Result<(), BackendError> {
    command(conn, "imapmux.u", "UNSELECT", timeout).await?;
    if conn.buf.is_empty() {
        Ok(())
    } else {
        Err(BackendError::Protocol(
            "data after the UNSELECT answer".into(),
        ))
    }
}

/// Check a pooled connection before reuse (NOOP answered OK, nothing left over).
pub async fn probe(conn: &mut LoggedIn, timeout: Duration) -> bool {
    matches!(
        command(conn, "imapmux.p", "NOOP", timeout).await,
        Ok(Answer::Ok)
    ) && conn.buf.is_empty()
}

/// Log a connection out (best effort) and drop it.
pub async fn logout(mut conn: LoggedIn, timeout: Duration) {
    let _ = command(&mut conn, "imapmux.l", "LOGOUT", timeout).await;
    let _ = conn.stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Mechanism;
    use bytes::BytesMut;
    use tokio::io::AsyncReadExt;

    fn conn() -> LoggedIn {
        let (a, _b) = tokio::io::duplex(64);
        LoggedIn {
            stream: Box::new(a),
            buf: BytesMut::new(),
            capabilities: vec![],
            logged_in_at: Instant::now(),
        }
    }

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            user: u.into(),
            password: p.as_bytes().to_vec(),
            authzid: None,
            mechanism: Mechanism::Login,
        }
    }

    fn pool(idle: u64, per_user: usize, total: usize) -> BackendPool {
        BackendPool::new(PoolConfig {
            idle: Duration::from_secs(idle),
            max_age: Duration::from_secs(600),
            max_per_user: per_user,
            max_total: total,
        })
    }

    #[test]
    fn logins_older_than_max_age_are_never_reused() {
        let p = pool(60, 2, 10);
        let k = p.key(&creds("u", "pw"), &creds("u", "pw"));
        let born = Instant::now();
        let mut c = conn();
        c.logged_in_at = born;
        // Reused again and again within the idle time…
        let mut t = born;
        for _ in 0..9 {
            t += Duration::from_secs(59);
            assert!(p.put("b", "u", k, c, t).is_empty());
            c = p.take("b", "u", &k, t).expect("reused within max_age");
        }
        // …until the login is max_age old: then it is not handed out, and
        // neither pooled nor kept by expiry.
        t = born + Duration::from_secs(600);
        assert_eq!(p.put("b", "u", k, c, t).len(), 1);
        let mut c = conn();
        c.logged_in_at = born;
        assert!(p
            .put("b", "u", k, c, born + Duration::from_secs(599))
            .is_empty());
        assert!(p.take("b", "u", &k, t).is_none());
        assert_eq!(p.expire(t).len(), 1);
        assert!(p.is_empty());
    }

    #[test]
    fn reuse_only_with_the_same_credentials_backend_and_user() {
        let p = pool(60, 2, 10);
        let t = Instant::now();
        let k = p.key(&creds("u", "pw"), &creds("u", "pw"));
        assert!(p.put("b1", "u", k, conn(), t).is_empty());
        let wrong = p.key(&creds("u", "pw2"), &creds("u", "pw2"));
        assert!(p.take("b1", "u", &wrong, t).is_none());
        assert!(p.take("b2", "u", &k, t).is_none());
        assert!(p.take("b1", "v", &k, t).is_none());
        assert!(p.take("b1", "u", &k, t).is_some());
        // Taken: a second client does not get the same connection.
        assert!(p.take("b1", "u", &k, t).is_none());
        assert!(p.is_empty());
    }

    #[test]
    fn keys_differ_by_backend_login_too() {
        let p = pool(60, 2, 10);
        assert_ne!(
            p.key(&creds("u", "pw"), &creds("u", "pw")),
            p.key(&creds("u", "pw"), &creds("master", "m"))
        );
    }

    #[test]
    fn caps_and_expiry() {
        let p = pool(60, 2, 3);
        let t = Instant::now();
        let k = p.key(&creds("u", "pw"), &creds("u", "pw"));
        assert!(p.put("b", "u", k, conn(), t).is_empty());
        assert!(p.put("b", "u", k, conn(), t).is_empty());
        assert_eq!(p.put("b", "u", k, conn(), t).len(), 1); // per user
        assert_eq!(p.len(), 2);
        let k2 = p.key(&creds("v", "pw"), &creds("v", "pw"));
        assert!(p
            .put("b", "v", k2, conn(), t + Duration::from_secs(1))
            .is_empty());
        assert_eq!(
            p.put("b", "w", k2, conn(), t + Duration::from_secs(2))
                .len(),
            1
        ); // total
        assert_eq!(p.len(), 3);
        // Past the idle time: not handed out, and expired.
        assert!(p.take("b", "v", &k2, t + Duration::from_secs(61)).is_none());
        assert_eq!(p.expire(t + Duration::from_secs(70)).len(), 3);
        assert!(p.is_empty());
    }

    #[tokio::test]
    async fn probe_and_clean_against_a_scripted_backend() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut c = LoggedIn {
            stream: Box::new(a),
            buf: BytesMut::new(),
            capabilities: vec![],
            logged_in_at: Instant::now(),
        };
        let server = tokio::spawn(async move {
            let mut got = vec![0u8; 256];
            let n = b.read(&mut got).await.unwrap();
            assert_eq!(&got[..n], b"imapmux.u UNSELECT\r\n");
            b.write_all(b"imapmux.u BAD No mailbox selected.\r\n")
                .await
                .unwrap();
            let n = b.read(&mut got).await.unwrap();
            assert_eq!(&got[..n], b"imapmux.p NOOP\r\n");
            b.write_all(b"* 3 EXISTS\r\nimapmux.p OK NOOP completed.\r\n")
                .await
                .unwrap();
            let n = b.read(&mut got).await.unwrap();
            assert_eq!(&got[..n], b"imapmux.p NOOP\r\n");
            b.write_all(b"* BYE Server shutting down.\r\n")
                .await
                .unwrap();
        });
        clean(&mut c, Duration::from_secs(1)).await.unwrap();
        assert!(probe(&mut c, Duration::from_secs(1)).await);
        assert!(!probe(&mut c, Duration::from_secs(1)).await);
        server.await.unwrap();
    }
}
