//! `[auth]` in the config file: which directory verifies logins, the
//! result cache and the brute-force defence. Every key is documented in
//! `config/imapmux.toml`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use std::fmt;

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

/// `Debug` shows the header names, not their values (an
/// `Authorization` or API key header is a secret).
#[derive(Clone, PartialEq, Deserialize)]
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

/// `Debug` does not show `search_bind_password`.
#[derive(Clone, PartialEq, Deserialize)]
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

/// `[pool.login]`: how imapmux logs in to a pool's backends. `Debug` does
/// not show `master_password`.
#[derive(Clone, PartialEq, Deserialize, Default)]
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

/// Shown in `Debug` instead of a secret value.
const REDACTED: &str = "<redacted>";

/// A secret for `Debug`: whether it is set, not what it is.
fn redacted(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| REDACTED)
}

// The impls below destructure every field (no `..`), so a field added
// later does not compile until someone decides whether it is a secret.

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let HttpConfig {
            url,
            headers,
            timeout,
            max_idle_connections,
            max_wait,
        } = self;
        let headers: std::collections::BTreeMap<&str, &str> =
            headers.keys().map(|k| (k.as_str(), REDACTED)).collect();
        f.debug_struct("HttpConfig")
            .field("url", url)
            .field("headers", &headers)
            .field("timeout", timeout)
            .field("max_idle_connections", max_idle_connections)
            .field("max_wait", max_wait)
            .finish()
    }
}

impl fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let LdapConfig {
            url,
            starttls,
            ca_file,
            bind_dn,
            search_base,
            search_filter,
            search_bind_dn,
            search_bind_password,
            search_bind_password_file,
            backend_attribute,
            backend_user_attribute,
            timeout,
            pool_size,
        } = self;
        f.debug_struct("LdapConfig")
            .field("url", url)
            .field("starttls", starttls)
            .field("ca_file", ca_file)
            .field("bind_dn", bind_dn)
            .field("search_base", search_base)
            .field("search_filter", search_filter)
            .field("search_bind_dn", search_bind_dn)
            .field("search_bind_password", &redacted(search_bind_password))
            .field("search_bind_password_file", search_bind_password_file)
            .field("backend_attribute", backend_attribute)
            .field("backend_user_attribute", backend_user_attribute)
            .field("timeout", timeout)
            .field("pool_size", pool_size)
            .finish()
    }
}

impl fmt::Debug for BackendLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let BackendLogin {
            mode,
            master_user,
            master_password,
            master_password_file,
            master_style,
            master_separator,
        } = self;
        f.debug_struct("BackendLogin")
            .field("mode", mode)
            .field("master_user", master_user)
            .field("master_password", &redacted(master_password))
            .field("master_password_file", master_password_file)
            .field("master_style", master_style)
            .field("master_separator", master_separator)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every secret a config file can hold, each one findable.
    const SECRETS: [&str; 5] = [
        "push-S3CRET-1",
        "ldap-S3CRET-2",
        "master-S3CRET-3",
        "Bearer header-S3CRET-4",
        "apikey-S3CRET-5",
    ];

    #[test]
    fn debug_of_a_config_shows_no_secret() {
        let text = format!(
            r#"
[[listener]]
address = "127.0.0.1:1993"
mode = "implicit"
[tls]
self_signed = true
[admin]
address = "127.0.0.1:9143"
push_secret = "{}"
[auth]
source = "ldap"
[auth.ldap]
url = "ldap://127.0.0.1:389"
search_base = "ou=people,dc=example,dc=org"
search_bind_dn = "cn=imapmux,dc=example,dc=org"
search_bind_password = "{}"
[auth.http]
url = "http://127.0.0.1:9000/auth"
headers = {{ Authorization = "{}", X-Api-Key = "{}" }}
[routing]
default_pool = "p"
[[pool]]
name = "p"
[[pool.backend]]
name = "b1"
address = "127.0.0.1:10143"
[pool.login]
mode = "master"
master_user = "proxy"
master_password = "{}"
"#,
            SECRETS[0], SECRETS[1], SECRETS[3], SECRETS[4], SECRETS[2]
        );
        let cfg = crate::config::Config::parse(&text, std::path::Path::new("test.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        // The secrets are there…
        assert_eq!(
            cfg.pools[0].login.master_password.as_deref(),
            Some(SECRETS[2])
        );
        let ldap = cfg.auth.ldap.as_ref().unwrap();
        assert_eq!(ldap.search_bind_password.as_deref(), Some(SECRETS[1]));
        // …and Debug, plain or pretty, of the whole config and of each
        // part shows none of them, only that they are set.
        let shown = [
            format!("{cfg:?}"),
            format!("{cfg:#?}"),
            format!("{:?}", cfg.auth),
            format!("{:?}", cfg.pools),
            format!("{:?}", cfg.admin),
        ];
        for d in &shown {
            for s in SECRETS {
                assert!(!d.contains(s), "{s:?} in {d}");
                // Not even a part of one.
                assert!(!d.contains("S3CRET"), "{d}");
            }
        }
        let all = &shown[0];
        for visible in [
            "search_bind_password: Some(\"<redacted>\")",
            "master_password: Some(\"<redacted>\")",
            "\"Authorization\": \"<redacted>\"",
            "\"X-Api-Key\": \"<redacted>\"",
            "master_user: Some(\"proxy\")",
            "cn=imapmux,dc=example,dc=org",
        ] {
            assert!(all.contains(visible), "{visible} not in {all}");
        }
    }

    #[test]
    fn unset_secrets_show_as_none() {
        let l = BackendLogin::default();
        assert!(format!("{l:?}").contains("master_password: None"));
    }
}
