//! `[auth]` in the config file: which directory verifies logins, the
//! result cache and the brute-force defence. Every key is documented in
//! `config/imapmux.toml`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{de_duration, invalid, ConfigError};

/// Where logins are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// The backend's verdict is final (imapmux verifies nothing itself).
    #[default]
    Passthrough,
    /// A Dovecot-style passwd-file (`[auth.passwd_file]`).
    PasswdFile,
    /// An nginx-compatible auth_http service (`[auth.http]`).
    Http,
    /// An LDAP directory (`[auth.ldap]`).
    Ldap,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub source: SourceKind,
    pub passwd_file: Option<PasswdFileConfig>,
    pub http: Option<HttpConfig>,
    pub ldap: Option<LdapConfig>,
    pub cache: AuthCacheConfig,
    pub penalty: PenaltyConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswdFileConfig {
    /// `user:{SCHEME}hash[:uid:gid:gecos:home:shell:extra fields]` per line.
    pub path: PathBuf,
    /// Accept `{PLAIN}` / `{CLEARTEXT}` entries (refused otherwise).
    #[serde(default)]
    pub allow_plain: bool,
    /// How often to check the file for changes ("0s": never).
    #[serde(default = "default_reload", deserialize_with = "de_duration")]
    pub reload_check_interval: Duration,
}

impl AuthConfig {
    /// Check the `[auth]` keys and the pools' `[pool.login]` against them.
    pub fn validate(&self, pools: &[crate::config::PoolConfig]) -> Result<(), ConfigError> {
        let table = match self.source {
            SourceKind::Passthrough => None,
            SourceKind::PasswdFile => self.passwd_file.is_none().then_some("passwd_file"),
            SourceKind::Http => self.http.is_none().then_some("http"),
            SourceKind::Ldap => self.ldap.is_none().then_some("ldap"),
        };
        if let Some(t) = table {
            return Err(invalid(
                format!("auth.{t}"),
                format!("auth.source needs the [auth.{t}] table"),
                format!("add [auth.{t}] (see config/imapmux.toml) or change auth.source"),
            ));
        }
        if let Some(h) = &self.http {
            if !h.url.starts_with("http://") {
                return Err(invalid(
                    "auth.http.url",
                    format!("{:?} is not an http:// URL", h.url),
                    "write e.g. \"http://127.0.0.1:9000/auth\"",
                ));
            }
        }
        if let Some(l) = &self.ldap {
            if !(l.url.starts_with("ldap://") || l.url.starts_with("ldaps://")) {
                return Err(invalid(
                    "auth.ldap.url",
                    format!("{:?} is not an ldap:// or ldaps:// URL", l.url),
                    "write e.g. \"ldap://127.0.0.1:389\"",
                ));
            }
            if l.bind_dn.is_some() == l.search_base.is_some() {
                return Err(invalid(
                    "auth.ldap.bind_dn",
                    "set exactly one of bind_dn (direct bind) and search_base (search then bind)",
                    "e.g. bind_dn = \"uid=%u,ou=people,dc=example,dc=org\"",
                ));
            }
        }
        let p = &self.penalty;
        if p.enabled && (p.max_failures_per_user == 0 || p.max_failures_per_ip == 0) {
            return Err(invalid(
                "auth.penalty.max_failures_per_user",
                "the failure limits must be at least 1",
                "give e.g. 10 and 50, or set auth.penalty.enabled = false",
            ));
        }
        for (i, pool) in pools.iter().enumerate() {
            if pool.login.mode == LoginMode::Master && self.source == SourceKind::Passthrough {
                return Err(invalid(
                    format!("pool[{i}].login.mode"),
                    "a master-user login needs imapmux to verify passwords itself, but auth.source is passthrough",
                    "set auth.source to passwd-file, http or ldap, or use mode = \"user\"",
                ));
            }
        }
        Ok(())
    }

    /// Longest wait a source may impose before a refusal is answered.
    pub fn max_wait(&self) -> Duration {
        self.http
            .as_ref()
            .map_or(default_max_wait(), |h| h.max_wait)
    }
}

fn default_reload() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `http://host:port/path` of the auth service (nginx `auth_http`).
    pub url: String,
    /// Extra request headers (nginx `auth_http_header`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Whole-request timeout (nginx `auth_http_timeout`).
    #[serde(default = "default_http_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Idle keep-alive connections kept to the service.
    #[serde(default = "default_http_idle")]
    pub max_idle_connections: usize,
    /// Longest `Auth-Wait` honoured before answering a failed login.
    #[serde(default = "default_max_wait", deserialize_with = "de_duration")]
    pub max_wait: Duration,
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_http_idle() -> usize {
    16
}
fn default_max_wait() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade `ldap://` with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// CA certificate (PEM) for ldaps/StartTLS; system roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Direct bind: DN template, `%u` = the login name (DN-escaped), e.g.
    /// `uid=%u,ou=people,dc=example,dc=org`. Set this, or `search_base`.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// Search then bind: where to search for the user entry.
    #[serde(default)]
    pub search_base: Option<String>,
    /// Filter template, `%u` = login name (filter-escaped).
    #[serde(default = "default_filter")]
    pub search_filter: String,
    /// Service account for the search (anonymous when absent).
    #[serde(default)]
    pub search_bind_dn: Option<String>,
    #[serde(default)]
    pub search_bind_password: Option<String>,
    /// File holding the service password (first line), instead of the key above.
    #[serde(default)]
    pub search_bind_password_file: Option<PathBuf>,
    /// Attribute naming the user's backend (a backend name or its address), e.g. `mailHost`.
    #[serde(default)]
    pub backend_attribute: Option<String>,
    /// Attribute holding the login name to use on the backend.
    #[serde(default)]
    pub backend_user_attribute: Option<String>,
    /// Bounds one whole check: waiting for a pooled connection, connecting
    /// (and TLS), the binds and the search. Past it the login gets
    /// `NO [UNAVAILABLE]`.
    #[serde(default = "default_http_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Connections kept open to the directory.
    #[serde(default = "default_ldap_pool")]
    pub pool_size: usize,
}

fn default_filter() -> String {
    "(uid=%u)".into()
}
fn default_ldap_pool() -> usize {
    4
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthCacheConfig {
    pub enabled: bool,
    /// How long a verified login is reused without asking the source.
    #[serde(deserialize_with = "de_duration")]
    pub positive_ttl: Duration,
    /// How long a refused login is answered from the cache.
    #[serde(deserialize_with = "de_duration")]
    pub negative_ttl: Duration,
    pub max_entries: u64,
}

impl Default for AuthCacheConfig {
    fn default() -> Self {
        AuthCacheConfig {
            enabled: true,
            positive_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(30),
            max_entries: 100_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PenaltyConfig {
    pub enabled: bool,
    /// Delay after the first failure; doubles with each further one.
    #[serde(deserialize_with = "de_duration")]
    pub base_delay: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max_delay: Duration,
    /// Failures of one user from one address before its logins are refused.
    pub max_failures_per_user: u32,
    /// Failures from one address (any users) before logins from it are
    /// refused, except for users who logged in from it recently.
    pub max_failures_per_ip: u32,
    /// How long failures are remembered.
    #[serde(deserialize_with = "de_duration")]
    pub window: Duration,
    /// How long a successful (user, address) stays exempt from the
    /// per-address refusal.
    #[serde(deserialize_with = "de_duration")]
    pub known_good_ttl: Duration,
}

impl Default for PenaltyConfig {
    fn default() -> Self {
        PenaltyConfig {
            enabled: true,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(15),
            max_failures_per_user: 10,
            max_failures_per_ip: 50,
            window: Duration::from_secs(900),
            known_good_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// `[pool.login]`: how imapmux logs in to a pool's backends.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BackendLogin {
    pub mode: LoginMode,
    /// Master user name (mode = "master").
    pub master_user: Option<String>,
    pub master_password: Option<String>,
    /// File holding the master password (first line).
    pub master_password_file: Option<PathBuf>,
    pub master_style: MasterStyle,
    /// Separator for master_style = "separator" (Dovecot `auth_master_user_separator`).
    pub master_separator: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LoginMode {
    /// As the user, with the password the client gave (or the directory's).
    #[default]
    User,
    /// As a master user on behalf of the user (only after imapmux verified
    /// the login itself: needs an auth source other than passthrough).
    Master,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MasterStyle {
    /// SASL PLAIN with the user as authorization identity.
    #[default]
    Sasl,
    /// LOGIN `user<separator>master` (Dovecot's `user*master`).
    Separator,
}
