//! Authentication: decides whether a client may log in, where its mail
//! lives and with which credentials imapmux logs in to the backend.
//!
//! A [`Source`] (passwd-file, auth_http, LDAP) verifies a login and says
//! where the user's mail is; [`Directory`] wraps one with the result cache.
//! [`Passthrough`] verifies nothing: the backend's answer is the verdict.

pub mod cache;
pub mod config;
pub mod directory;
pub mod http;
pub mod ldap;
pub mod passwd_file;
pub mod passwd_source;
pub mod password;
pub mod penalty;

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use crate::identity::{ClientInfo, Credentials};

/// What an authenticator decided.
#[derive(Debug, Clone)]
pub enum AuthDecision {
    /// Log in to the backend with these credentials. `verified` is true when
    /// the authenticator checked the password itself; otherwise the
    /// backend's answer is the verdict. `backend` may name the backend the
    /// directory assigned to the user (a backend name or its address).
    Login {
        credentials: Credentials,
        backend: Option<String>,
        verified: bool,
    },
    /// Refuse, with an IMAP response code (e.g. `AUTHENTICATIONFAILED`),
    /// after waiting `wait` (the source asked for it, e.g. `Auth-Wait`).
    Reject {
        code: String,
        text: String,
        wait: Option<Duration>,
    },
    /// No verdict (the directory is down): `NO [UNAVAILABLE]`, not counted
    /// as a failed login.
    Unavailable,
}

#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    async fn authenticate(&self, req: Request<'_>) -> AuthDecision;

    /// Forget what is cached about `user`'s credentials (the operator
    /// kicked or moved the user). Sources without a cache do nothing.
    fn forget_user(&self, _user: &str) {}
}

/// Log in to the backend with the client's own credentials.
#[derive(Debug, Default)]
pub struct Passthrough;

#[async_trait]
impl Authenticator for Passthrough {
    async fn authenticate(&self, req: Request<'_>) -> AuthDecision {
        AuthDecision::Login {
            credentials: req.credentials.clone(),
            backend: None,
            verified: false,
        }
    }
}

/// One login attempt, as a source sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub credentials: &'a Credentials,
    pub client: &'a ClientInfo,
    /// 1 for the first attempt on this connection, 2 for the next…
    pub attempt: u32,
    /// The client connection is TLS.
    pub tls: bool,
    /// The protocol the client logs in with (auth_http's Auth-Protocol).
    pub protocol: crate::front::Protocol,
}

/// A verified login: where to send the user, and as whom. `Debug` does
/// not show the backend password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// Backend name or address (`host` or `host:port`) from the directory.
    pub backend: Option<String>,
    /// Login name on the backend, when it differs from the client's.
    pub backend_user: Option<String>,
    /// Password for the backend, when the directory rewrites it
    /// (auth_http `Auth-Pass`). Never logged.
    pub backend_password: Option<Vec<u8>>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Grant {
            backend,
            backend_user,
            backend_password,
        } = self;
        f.debug_struct("Grant")
            .field("backend", backend)
            .field("backend_user", backend_user)
            .field(
                "backend_password",
                &backend_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A source's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept(Grant),
    /// Wrong password or unknown user. `text` is shown to the client when
    /// the source gives one (auth_http `Auth-Status`); `wait` delays the
    /// answer (`Auth-Wait`).
    /// `code` replaces AUTHENTICATIONFAILED when the source names one.
    Reject {
        text: Option<String>,
        wait: Option<Duration>,
        code: Option<String>,
    },
}

/// The source could not give an answer (down, timed out, misconfigured):
/// the client gets `NO [UNAVAILABLE]`, the log gets this.
#[derive(Debug, Error)]
pub enum SourceError {
    #[error("auth source unreachable: {0}")]
    Unreachable(String),
    #[error("auth source timed out after {0:?}")]
    Timeout(Duration),
    #[error("auth source answered badly: {0}")]
    Protocol(String),
    #[error("auth source misconfigured: {0}")]
    Config(String),
}

/// A directory that verifies logins itself.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// Short name for logs and metrics ("passwd-file", "http", "ldap").
    fn name(&self) -> &'static str;
    async fn check(&self, req: Request<'_>) -> Result<Verdict, SourceError>;
    /// True when the verdict may depend on the client's address or TLS
    /// state, not only on the credentials: the result cache then keys on
    /// them too (see [`cache`]).
    fn verdict_depends_on_client(&self) -> bool {
        false
    }
}

/// The authenticator `cfg` asks for. `metrics` counts source answers.
/// A passwd-file is watched for changes when a tokio runtime is running.
pub fn build(
    cfg: &config::AuthConfig,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
) -> Result<std::sync::Arc<dyn Authenticator>, SourceError> {
    use std::sync::Arc;
    let missing = |key: &str| {
        SourceError::Config(format!(
            "auth.source = {:?} needs an [auth.{key}] table",
            format!("{:?}", cfg.source).to_lowercase()
        ))
    };
    let cache = cfg
        .cache
        .enabled
        .then(|| Arc::new(cache::AuthCache::new(&cfg.cache)));
    let source: Arc<dyn Source> = match cfg.source {
        config::SourceKind::Passthrough => return Ok(Arc::new(Passthrough)),
        config::SourceKind::Http => Arc::new(http::HttpSource::new(
            cfg.http.as_ref().ok_or_else(|| missing("http"))?,
        )?),
        config::SourceKind::PasswdFile => {
            let c = cfg
                .passwd_file
                .as_ref()
                .ok_or_else(|| missing("passwd_file"))?;
            let src = Arc::new(passwd_source::PasswdSource::new(c)?);
            if tokio::runtime::Handle::try_current().is_ok() {
                src.watch(c.reload_check_interval, cache.clone());
                src.prepare_dummy();
            }
            src
        }
        config::SourceKind::Ldap => Arc::new(ldap::LdapSource::new(
            cfg.ldap.as_ref().ok_or_else(|| missing("ldap"))?,
        )?),
    };
    if let Some(m) = &metrics {
        m.auth.init_source(source.name());
    }
    Ok(Arc::new(directory::Directory::new(source, cache, metrics)))
}
