//! [`Directory`]: a verifying [`Source`] behind the result cache, as an
//! [`Authenticator`].

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::cache::AuthCache;
use super::{AuthDecision, Authenticator, Request, Source, Verdict};
use crate::metrics::Metrics;
use crate::session::Credentials;

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
        let key = self.cache.as_ref().map(|cache| (cache, cache.key(c)));
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
                            cache.put(*k, &v);
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
