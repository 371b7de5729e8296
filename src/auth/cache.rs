//! The auth result cache: a source's verdict for (user, password,
//! authorization identity) is reused for a while, so a webmail that logs
//! in on every request does not cost an argon2 verification or an LDAP
//! bind each time.
//!
//! Keys are a salted SHA-256 of user, password and authzid: the password
//! itself is never stored, and a different (e.g. changed) password is a
//! different key, so it never logs in on an entry made for another
//! password. An old password keeps working for at most `positive_ttl`
//! after it was changed in a directory imapmux cannot watch (LDAP, HTTP);
//! the passwd-file source clears the cache when its file changes.
//!
//! A source whose verdict may depend on who is asking, not only on the
//! credentials, says so ([`super::Source::verdict_depends_on_client`]):
//! the HTTP source, whose service gets `Client-IP` and `Auth-SSL` and may
//! allow a user from some networks only, or over TLS only. For it the key
//! also holds the client's address and whether its connection is TLS
//! ([`ClientScope`]), so a verdict made for one address or TLS state is
//! never replayed for another. Keying rather than not caching keeps the
//! cache's point for the common case (a webmail logging in from one
//! address again and again). The passwd-file and LDAP sources decide on
//! the credentials alone and share entries across addresses.

use std::net::IpAddr;
use std::time::Duration;

use moka::sync::Cache;
use ring::digest;

use std::sync::Arc;

use super::config::AuthCacheConfig;
use super::Verdict;
use crate::identity::Credentials;

pub type Key = [u8; 32];

/// A fresh random salt (from the system RNG; a failure leaves zeros: keys
/// stay distinct, only predictable, and live in process memory only).
pub fn random_salt() -> [u8; 32] {
    let mut salt = [0u8; 32];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
    salt
}

/// SHA-256 of `salt` and each part, length-prefixed (so no two different
/// part lists hash the same input).
pub fn salted_digest<'a>(salt: &[u8; 32], parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(salt);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut k = [0u8; 32];
    k.copy_from_slice(ctx.finish().as_ref());
    k
}

/// What besides the credentials a verdict may depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientScope {
    /// The client's address (as sent to the HTTP service in `Client-IP`).
    pub ip: IpAddr,
    /// The client connection is TLS (`Auth-SSL: on`).
    pub tls: bool,
    /// The protocol (`Auth-Protocol`): a service may allow a user IMAP
    /// but not POP3.
    pub protocol: crate::front::Protocol,
}

pub struct AuthCache {
    salt: [u8; 32],
    /// Verdicts, with the (lowercased) user name they are for, so that
    /// one user's entries can be dropped ([`AuthCache::forget_user`]).
    positive: Cache<Key, (Arc<str>, Verdict)>,
    negative: Cache<Key, (Arc<str>, Verdict)>,
}

impl AuthCache {
    pub fn new(cfg: &AuthCacheConfig) -> AuthCache {
        let salt = random_salt();
        let build = |ttl: Duration| {
            Cache::builder()
                .max_capacity(cfg.max_entries)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .support_invalidation_closures()
                .build()
        };
        AuthCache {
            salt,
            positive: build(cfg.positive_ttl),
            negative: build(cfg.negative_ttl),
        }
    }

    /// The key of `c`, and of `client` when the source's verdict depends
    /// on it.
    pub fn key(&self, c: &Credentials, client: Option<ClientScope>) -> Key {
        let authzid = c.authzid.as_deref().unwrap_or("").as_bytes();
        match client {
            None => salted_digest(&self.salt, [c.user.as_bytes(), &c.password, authzid]),
            Some(ClientScope { ip, tls, protocol }) => {
                let ip = ip.to_string();
                let tls: &[u8] = if tls { b"tls" } else { b"plain" };
                salted_digest(
                    &self.salt,
                    [
                        c.user.as_bytes(),
                        &c.password,
                        authzid,
                        ip.as_bytes(),
                        tls,
                        protocol.as_str().as_bytes(),
                    ],
                )
            }
        }
    }

    pub fn get(&self, k: &Key) -> Option<Verdict> {
        self.positive
            .get(k)
            .or_else(|| self.negative.get(k))
            .map(|(_, v)| v)
    }

    /// Cache the verdict `v` on credentials of `user`.
    pub fn put(&self, k: Key, user: &str, v: &Verdict) {
        let user: Arc<str> = user.to_lowercase().into();
        match v {
            Verdict::Accept(_) => {
                self.negative.invalidate(&k);
                self.positive.insert(k, (user, v.clone()));
            }
            Verdict::Reject { .. } => self.negative.insert(k, (user, v.clone())),
        }
    }

    /// Forget every verdict on `user`'s credentials (compared
    /// case-insensitively): the operator kicked or moved the user.
    pub fn forget_user(&self, user: &str) {
        let u: Arc<str> = user.to_lowercase().into();
        for c in [&self.positive, &self.negative] {
            let u = u.clone();
            let _ = c.invalidate_entries_if(move |_, (who, _)| *who == u);
        }
    }

    /// Forget everything (the directory changed).
    pub fn clear(&self) {
        self.positive.invalidate_all();
        self.negative.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Grant;
    use crate::identity::Mechanism;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            user: u.into(),
            password: p.as_bytes().to_vec(),
            authzid: None,
            mechanism: Mechanism::Login,
        }
    }

    impl AuthCache {
        fn key_of(&self, c: &Credentials) -> Key {
            self.key(c, None)
        }
    }

    #[test]
    fn client_scope_is_part_of_the_key_when_given() {
        let c = AuthCache::new(&AuthCacheConfig::default());
        let bob = creds("bob", "pw");
        let at = |ip: &str, tls: bool| {
            Some(ClientScope {
                ip: ip.parse().unwrap(),
                tls,
                protocol: crate::front::Protocol::Imap,
            })
        };
        let k = c.key(&bob, at("192.0.2.1", true));
        assert_eq!(k, c.key(&bob, at("192.0.2.1", true)));
        assert_ne!(k, c.key(&bob, at("192.0.2.2", true)));
        assert_ne!(k, c.key(&bob, at("192.0.2.1", false)));
        assert_ne!(k, c.key(&bob, at("2001:db8::1", true)));
        let pop3 = at("192.0.2.1", true).map(|s| ClientScope {
            protocol: crate::front::Protocol::Pop3,
            ..s
        });
        assert_ne!(k, c.key(&bob, pop3));
        assert_ne!(k, c.key(&bob, None));
        // Without a scope the address plays no part.
        assert_eq!(c.key(&bob, None), c.key_of(&bob));
    }

    #[test]
    fn key_depends_on_every_part_and_is_unambiguous() {
        let c = AuthCache::new(&AuthCacheConfig::default());
        let k = c.key_of(&creds("bob", "pw"));
        assert_eq!(k, c.key_of(&creds("bob", "pw")));
        assert_ne!(k, c.key_of(&creds("bob", "pw2")));
        assert_ne!(k, c.key_of(&creds("bo", "bpw")));
        let mut z = creds("bob", "pw");
        z.authzid = Some("alice".into());
        assert_ne!(k, c.key_of(&z));
        // Another process (another salt) makes other keys.
        let c2 = AuthCache::new(&AuthCacheConfig::default());
        assert_ne!(k, c2.key_of(&creds("bob", "pw")));
    }

    #[test]
    fn positive_replaces_negative_and_clear_forgets() {
        let c = AuthCache::new(&AuthCacheConfig::default());
        let k = c.key_of(&creds("bob", "pw"));
        let no = Verdict::Reject {
            text: None,
            wait: None,
            code: None,
        };
        c.put(k, "u", &no);
        assert_eq!(c.get(&k), Some(no));
        let yes = Verdict::Accept(Grant::default());
        c.put(k, "u", &yes);
        assert_eq!(c.get(&k), Some(yes.clone()));
        // Forgetting another user keeps it; forgetting this one drops it.
        c.forget_user("someone-else");
        c.positive.run_pending_tasks();
        assert_eq!(c.get(&k), Some(yes.clone()));
        c.forget_user("U");
        c.positive.run_pending_tasks();
        assert_eq!(c.get(&k), None);
        c.put(k, "u", &yes);
        c.clear();
        assert_eq!(c.get(&k), None);
    }
}
