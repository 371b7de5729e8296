//! [`Directory`]: a verifying [`Source`] behind the result cache, as an
//! [`Authenticator`].

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::cache::{AuthCache, ClientScope};
use super::{AuthDecision, Authenticator, Request, Source, Verdict};
use crate::identity::Credentials;
use crate::metrics::Metrics;

pub struct Directory {
    source: Arc<dyn Source>,
    cache: Option<Arc<AuthCache>>,
    metrics: Option<Arc<Metrics>>,
}

impl Directory {
    pub fn new(
        source: Arc<dyn Source>,
        cache: Option<Arc<AuthCache>>,
        metrics: Option<Arc<Metrics>>,
    ) -> Directory {
        Directory {
            source,
            cache,
            metrics,
        }
    }

    fn count(&self, result: &'static str, started: Option<Instant>) {
        if let Some(m) = &self.metrics {
            m.auth_request(self.source.name(), result, started.map(|t| t.elapsed()));
        }
    }
}

/// What a verified login becomes: the credentials for the backend.
pub fn granted(c: &Credentials, g: super::Grant) -> AuthDecision {
    AuthDecision::Login {
        credentials: Credentials {
            user: g.backend_user.unwrap_or_else(|| c.user.clone()),
            password: g.backend_password.unwrap_or_else(|| c.password.clone()),
            authzid: None,
            mechanism: c.mechanism,
        },
        backend: g.backend,
        verified: true,
    }
}

#[async_trait]
impl Authenticator for Directory {
    fn forget_user(&self, user: &str) {
        if let Some(c) = &self.cache {
            c.forget_user(user);
        }
    }

    async fn authenticate(&self, req: Request<'_>) -> AuthDecision {
        let c = req.credentials;
        if c.mechanism.is_oauth() {
            // A bearer token is not a password: the backend verifies it,
            // the routing table places the user.
            return AuthDecision::Login {
                credentials: c.clone(),
                backend: None,
                verified: false,
            };
        }
        if c.authzid.is_some() {
            // The directory verifies the authentication identity only; it
            // has no rules for acting as someone else.
            self.count("rejected", None);
            return AuthDecision::Reject {
                code: "AUTHORIZATIONFAILED".into(),
                text: "Logging in as another user is not allowed.".into(),
                wait: None,
            };
        }
        let scope = self
            .source
            .verdict_depends_on_client()
            .then(|| ClientScope {
                ip: req.client.peer.ip(),
                tls: req.tls,
                protocol: req.protocol,
            });
        let key = self
            .cache
            .as_ref()
            .map(|cache| (cache, cache.key(c, scope)));
        let cached = key.as_ref().and_then(|(cache, k)| cache.get(k));
        let verdict = match cached {
            Some(v) => {
                self.count(
                    if matches!(v, Verdict::Accept(_)) {
                        "cached_ok"
                    } else {
                        "cached_rejected"
                    },
                    None,
                );
                v
            }
            None => {
                let t0 = Instant::now();
                match self.source.check(req).await {
                    Ok(v) => {
                        if let Some((cache, k)) = &key {
                            cache.put(*k, &c.user, &v);
                        }
                        self.count(
                            if matches!(v, Verdict::Accept(_)) {
                                "ok"
                            } else {
                                "rejected"
                            },
                            Some(t0),
                        );
                        v
                    }
                    Err(e) => {
                        self.count("error", Some(t0));
                        tracing::error!(
                            session = %req.client.session_id,
                            source = self.source.name(),
                            error = %e,
                            "auth source failed; answering UNAVAILABLE"
                        );
                        return AuthDecision::Unavailable;
                    }
                }
            }
        };
        match verdict {
            Verdict::Accept(g) => granted(c, g),
            Verdict::Reject { text, wait, code } => AuthDecision::Reject {
                code: code.unwrap_or_else(|| "AUTHENTICATIONFAILED".into()),
                text: text.unwrap_or_else(|| "Authentication failed.".into()),
                wait,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::auth::config::AuthCacheConfig;
    use crate::auth::{Grant, SourceError};
    use crate::identity::{ClientInfo, Mechanism};

    /// Accepts bob/pw only from 192.0.2.1 over TLS (like an auth_http
    /// service with a network and TLS rule); counts its calls.
    struct ByClient {
        depends: bool,
        calls: AtomicU32,
    }

    #[async_trait]
    impl Source for ByClient {
        fn name(&self) -> &'static str {
            "test"
        }
        async fn check(&self, req: Request<'_>) -> Result<Verdict, SourceError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let ok = req.credentials.password == b"pw"
                && req.client.peer.ip().to_string() == "192.0.2.1"
                && req.tls;
            Ok(if ok {
                Verdict::Accept(Grant::default())
            } else {
                Verdict::Reject {
                    text: None,
                    wait: None,
                    code: None,
                }
            })
        }
        fn verdict_depends_on_client(&self) -> bool {
            self.depends
        }
    }

    async fn login(d: &Directory, ip: &str, tls: bool) -> bool {
        let credentials = Credentials {
            user: "bob".into(),
            password: b"pw".to_vec(),
            authzid: None,
            mechanism: Mechanism::Login,
        };
        let client = ClientInfo::new(
            format!("{ip}:40000").parse().unwrap(),
            "127.0.0.1:993".parse().unwrap(),
            "t".into(),
        );
        let req = Request {
            credentials: &credentials,
            client: &client,
            attempt: 1,
            tls,
            protocol: crate::front::Protocol::Imap,
        };
        matches!(d.authenticate(req).await, AuthDecision::Login { .. })
    }

    fn directory(depends: bool) -> (Arc<ByClient>, Directory) {
        let src = Arc::new(ByClient {
            depends,
            calls: AtomicU32::new(0),
        });
        let cache = Arc::new(AuthCache::new(&AuthCacheConfig::default()));
        (src.clone(), Directory::new(src, Some(cache), None))
    }

    #[tokio::test]
    async fn verdicts_that_depend_on_the_client_are_cached_per_client() {
        let (src, d) = directory(true);
        assert!(login(&d, "192.0.2.1", true).await);
        // Same password from elsewhere, or without TLS: asked again, and
        // refused (not the accept cached for 192.0.2.1 over TLS).
        assert!(!login(&d, "198.51.100.9", true).await);
        assert!(!login(&d, "192.0.2.1", false).await);
        assert_eq!(src.calls.load(Ordering::SeqCst), 3);
        // Each answer is cached for its own client.
        assert!(login(&d, "192.0.2.1", true).await);
        assert!(!login(&d, "198.51.100.9", true).await);
        assert!(!login(&d, "192.0.2.1", false).await);
        assert_eq!(src.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn verdicts_on_credentials_alone_are_shared_across_clients() {
        let (src, d) = directory(false);
        assert!(login(&d, "192.0.2.1", true).await);
        assert!(login(&d, "198.51.100.9", false).await);
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn only_the_http_source_depends_on_the_client() {
        let http = crate::auth::http::HttpSource::new(&crate::auth::config::HttpConfig {
            url: "http://127.0.0.1:9/auth".into(),
            headers: Default::default(),
            timeout: std::time::Duration::from_secs(1),
            max_idle_connections: 1,
            max_wait: std::time::Duration::from_secs(1),
        })
        .unwrap();
        assert!(http.verdict_depends_on_client());
    }
}
