//! The configuration file: one TOML document, every key documented in
//! `config/imapmux.toml`. Loading checks syntax and unknown keys (serde),
//! then meaning (`validate`), and every error names the key and the fix.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use thiserror::Error;

#[path = "config_admin.rs"]
mod admin;
pub use admin::AdminConfig;

/// A configuration problem, naming the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {problem}; fix: {fix}")]
    Invalid {
        key: String,
        problem: String,
        fix: String,
    },
}

pub(crate) fn invalid(
    key: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write e.g. \"30s\", \"5m\", \"1h\""
        ))
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default, rename = "pool")]
    pub pools: Vec<PoolConfig>,
    #[serde(default)]
    pub cache: crate::cache::CacheConfig,
    #[serde(default)]
    pub auth: crate::auth::config::AuthConfig,
    #[serde(default)]
    pub multiplex: crate::multiplex::pool::MultiplexConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Allow LOGIN/AUTHENTICATE on a connection that is not (yet) TLS: the
    /// default of listeners that do not set their own
    /// (`[[listener]] allow_plaintext_auth`, see
    /// [`Config::plaintext_auth_allowed`]).
    pub allow_plaintext_auth: bool,
    /// Offer AUTHENTICATE OAUTHBEARER (RFC 7628) and XOAUTH2 to clients.
    /// imapmux does not check the token: it logs in to the backend with the
    /// same mechanism, user and token, so the backend must offer it (else
    /// the client gets `NO [UNAVAILABLE]`) and validate tokens itself.
    pub sasl_oauth: bool,
    /// Most client connections at once; further ones are refused with BYE.
    pub max_connections: usize,
    /// Most not-yet-authenticated connections from one client address (IPv6:
    /// one /64) at once; further ones are refused with BYE. 0: no limit.
    pub max_preauth_per_ip: usize,
    /// Most logged-in sessions of one user from one client address (IPv6:
    /// one /64) at once, like Dovecot's `mail_max_userip_connections`;
    /// further logins get `NO [LIMIT]`. 0: no limit.
    pub max_sessions_per_user_ip: usize,
    /// Greeting text after `* OK [CAPABILITY …]`.
    pub greeting: String,
    /// Longest command line accepted before login, in bytes.
    pub max_line_length: usize,
    /// Failed logins on one connection before it is closed.
    pub max_auth_failures: u32,
    /// How often to check the config and certificate files for changes
    /// (reload without restart); "0s" turns the check off (SIGHUP only).
    #[serde(deserialize_with = "de_duration")]
    pub reload_check_interval: Duration,
    /// Offer COMPRESS=DEFLATE (RFC 4978) to clients after login,
    /// terminated in imapmux.
    pub compress: bool,
    /// Deflate level toward clients, 1 (fastest) to 9 (smallest).
    pub compress_level: u32,
    /// Clients (a webmail, a proxy in front) whose pre-login ID may name
    /// the real client (`x-originating-ip`/`-port`) and the proxy TTL.
    pub trusted_networks: Vec<ipnet::IpNet>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            allow_plaintext_auth: false,
            sasl_oauth: false,
            max_connections: 10_000,
            max_preauth_per_ip: 20,
            max_sessions_per_user_ip: 10,
            greeting: "imapmux ready.".into(),
            max_line_length: 65_536,
            max_auth_failures: 3,
            reload_check_interval: Duration::from_secs(5),
            compress: true,
            compress_level: 6,
            trusted_networks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    #[serde(deserialize_with = "de_duration")]
    pub preauth: Duration,
    /// `preauth` for connections accepted while more than 3/4 of
    /// `server.max_connections` are open (the shorter of the two applies).
    #[serde(deserialize_with = "de_duration")]
    pub preauth_under_pressure: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub idle: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub backend_connect: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub backend_response: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub tls_handshake: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            preauth: Duration::from_secs(60),
            preauth_under_pressure: Duration::from_secs(10),
            idle: Duration::from_secs(30 * 60),
            backend_connect: Duration::from_secs(5),
            backend_response: Duration::from_secs(15),
            tls_handshake: Duration::from_secs(15),
            drain: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub self_signed: bool,
    /// More certificates, chosen by the name the client asks for (SNI).
    #[serde(rename = "certificate")]
    pub certificates: Vec<SniCertificate>,
}

/// A certificate served to clients that ask for one of `names` (SNI).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    /// Host names, exact (`mail.example.org`) or one wildcard label
    /// (`*.example.org`).
    pub names: Vec<String>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    /// Plaintext with STARTTLS offered.
    Starttls,
    /// TLS from the first byte (RFC 8314).
    Implicit,
    /// Plaintext, no TLS at all (behind a TLS-terminating load balancer).
    Plaintext,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: String,
    pub mode: ListenerMode,
    /// The protocol spoken to clients: "imap" (default), "pop3", "sieve".
    #[serde(default)]
    pub protocol: crate::front::Protocol,
    /// Expect a PROXY protocol v1/v2 header (behind a load balancer).
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Sources allowed to send the PROXY header (CIDR); others are refused.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Allow LOGIN/AUTHENTICATE before TLS on this listener; unset: the
    /// value of `server.allow_plaintext_auth`.
    #[serde(default)]
    pub allow_plaintext_auth: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Consecutive failures that mark a backend down.
    pub fall: u32,
    /// Consecutive successes that mark a down backend up again.
    pub rise: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(3),
            fall: 2,
            rise: 2,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub default_pool: Option<String>,
    /// Static user → backend name map.
    pub users: BTreeMap<String, String>,
    /// Compare user names case-insensitively for routing and the static map.
    pub lowercase_users: bool,
    /// Where the operator's runtime routing changes (drains, weights,
    /// per-user overrides from `imapmux ctl`) are kept: read at start and
    /// on reload, written on every change.
    pub state_file: Option<std::path::PathBuf>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            default_pool: None,
            users: BTreeMap::new(),
            lowercase_users: true,
            state_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    #[serde(default)]
    pub failover: bool,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
    /// How imapmux logs in to this pool's backends.
    #[serde(default)]
    pub login: crate::auth::config::BackendLogin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendTls {
    None,
    Starttls,
    Implicit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    pub address: String,
    #[serde(default = "default_backend_tls")]
    pub tls: BackendTls,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub trusted: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub server_name: Option<String>,
    /// Dovecot's doveadm HTTP API (`http://HOST:PORT/doveadm/v1`): watchers
    /// of parked clients poll through it in batches, holding no connection.
    #[serde(default)]
    pub doveadm_url: Option<String>,
    /// File whose first line is Dovecot's `doveadm_api_key`.
    #[serde(default)]
    pub doveadm_api_key_file: Option<PathBuf>,
    /// HOST:PORT of the backend's POP3 service (for `protocol = "pop3"`
    /// listeners).
    #[serde(default)]
    pub pop3_address: Option<String>,
    /// How the POP3 service is reached; default: `tls`.
    #[serde(default)]
    pub pop3_tls: Option<BackendTls>,
    /// HOST:PORT of the backend's ManageSieve service (for
    /// `protocol = "sieve"` listeners).
    #[serde(default)]
    pub sieve_address: Option<String>,
    /// How the ManageSieve service is reached (`none` or `starttls`);
    /// default: `tls`.
    #[serde(default)]
    pub sieve_tls: Option<BackendTls>,
}

fn default_backend_tls() -> BackendTls {
    BackendTls::None
}
fn default_weight() -> u32 {
    1
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parse and validate config text (`path` is only used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check the meaning of the values; names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(invalid(
                "listener",
                "no listener configured",
                "add a [[listener]] table with address and mode",
            ));
        }
        let mut needs_tls = false;
        let mut seen_addrs = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let key = format!("listener[{i}].address");
            parse_addr(&l.address, &key)?;
            if !seen_addrs.insert(l.address.clone()) {
                return Err(invalid(
                    key,
                    format!("address {} is used twice", l.address),
                    "give each listener its own address",
                ));
            }
            needs_tls |= l.mode != ListenerMode::Plaintext;
            if l.mode == ListenerMode::Implicit && l.allow_plaintext_auth.is_some() {
                return Err(invalid(
                    format!("listener[{i}].allow_plaintext_auth"),
                    "an implicit-TLS listener has no plaintext phase, so the key has no effect",
                    "remove it (it matters on \"starttls\" and \"plaintext\" listeners)",
                ));
            }
            if l.proxy_protocol && l.trusted_proxies.is_empty() {
                return Err(invalid(
                    format!("listener[{i}].trusted_proxies"),
                    "proxy_protocol is on but no source is trusted to send the header",
                    "list the load balancers' networks, e.g. [\"10.0.0.0/8\"]",
                ));
            }
        }
        if needs_tls {
            match (&self.tls.cert_file, &self.tls.key_file, self.tls.self_signed) {
                (Some(_), Some(_), _) | (None, None, true) => {}
                (Some(_), None, _) => return Err(invalid("tls.key_file", "cert_file is set but key_file is not", "set tls.key_file to the PEM private key")),
                (None, Some(_), _) => return Err(invalid("tls.cert_file", "key_file is set but cert_file is not", "set tls.cert_file to the PEM certificate chain")),
                (None, None, false) => {
                    return Err(invalid(
                        "tls.cert_file",
                        "a listener uses TLS but no certificate is configured",
                        "set tls.cert_file and tls.key_file, or tls.self_signed = true for a local test",
                    ))
                }
            }
        }
        for (i, c) in self.tls.certificates.iter().enumerate() {
            let key = format!("tls.certificate[{i}].names");
            if c.names.is_empty() {
                return Err(invalid(
                    key,
                    "is empty",
                    "list the host names clients ask for, e.g. [\"mail.example.org\"]",
                ));
            }
            for n in &c.names {
                if crate::tls::sni_name(n).is_none() {
                    return Err(invalid(
                        key,
                        format!("{n:?} is not a host name"),
                        "use a DNS name, or one leading wildcard label as in \"*.example.org\"",
                    ));
                }
            }
        }
        self.admin.validate()?;
        if self.server.max_connections == 0 {
            return Err(invalid(
                "server.max_connections",
                "must be at least 1",
                "set a positive number, e.g. 10000",
            ));
        }
        if !(1..=9).contains(&self.server.compress_level) {
            return Err(invalid(
                "server.compress_level",
                "must be 1 (fastest) to 9 (smallest)",
                "use the default 6 (as Dovecot's imap_zlib), or 1 to save CPU",
            ));
        }
        if self.server.max_line_length < 1024 {
            return Err(invalid(
                "server.max_line_length",
                "must be at least 1024",
                "use the default 65536",
            ));
        }
        for (key, d) in [
            ("timeouts.preauth", self.timeouts.preauth),
            (
                "timeouts.preauth_under_pressure",
                self.timeouts.preauth_under_pressure,
            ),
            ("timeouts.idle", self.timeouts.idle),
            ("timeouts.backend_connect", self.timeouts.backend_connect),
            ("timeouts.backend_response", self.timeouts.backend_response),
            ("timeouts.tls_handshake", self.timeouts.tls_handshake),
            ("health.interval", self.health.interval),
            ("health.timeout", self.health.timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(
                    key,
                    "must not be zero",
                    "give a duration such as \"5s\"",
                ));
            }
        }
        if self.cache.enabled && self.cache.max_bytes.as_u64() < 1024 * 1024 {
            return Err(invalid(
                "cache.max_bytes",
                "smaller than 1 MiB",
                "give e.g. \"512MiB\", or set cache.enabled = false",
            ));
        }
        self.auth.validate(&self.pools)?;
        if self.cache.ttl.is_zero() || self.cache.idle_ttl.is_zero() {
            return Err(invalid(
                "cache.ttl",
                "cache.ttl and cache.idle_ttl must not be zero",
                "give durations such as \"24h\" and \"1h\"",
            ));
        }
        if self.health.fall == 0 || self.health.rise == 0 {
            return Err(invalid(
                "health.fall",
                "health.fall and health.rise must be at least 1",
                "set both to 1 or more",
            ));
        }
        self.validate_pools()
    }

    fn validate_pools(&self) -> Result<(), ConfigError> {
        if self.pools.is_empty() {
            return Err(invalid(
                "pool",
                "no backend pool configured",
                "add a [[pool]] with at least one [[pool.backend]]",
            ));
        }
        let mut pool_names = HashSet::new();
        let mut backend_names = HashSet::new();
        for (i, p) in self.pools.iter().enumerate() {
            if p.name.is_empty() || !pool_names.insert(p.name.clone()) {
                return Err(invalid(
                    format!("pool[{i}].name"),
                    format!("pool name {:?} is empty or used twice", p.name),
                    "give every pool a unique name",
                ));
            }
            if p.backends.is_empty() {
                return Err(invalid(
                    format!("pool[{i}].backend"),
                    "pool has no backend",
                    "add a [[pool.backend]] table",
                ));
            }
            for (j, b) in p.backends.iter().enumerate() {
                let key = format!("pool[{i}].backend[{j}]");
                if b.name.is_empty() || !backend_names.insert(b.name.clone()) {
                    return Err(invalid(
                        format!("{key}.name"),
                        format!("backend name {:?} is empty or used twice", b.name),
                        "give every backend a unique name",
                    ));
                }
                split_host_port(&b.address).ok_or_else(|| {
                    invalid(
                        format!("{key}.address"),
                        format!("{:?} is not HOST:PORT", b.address),
                        "write e.g. \"10.0.0.5:143\"",
                    )
                })?;
                if b.weight == 0 {
                    return Err(invalid(
                        format!("{key}.weight"),
                        "weight must be at least 1",
                        "set weight = 1 or more (remove the backend to take it out)",
                    ));
                }
                crate::multiplex::poll::validate_backend(b, &key)?;
                crate::front::config::validate_backend(self, b, &key)?;
                if let Some(ca) = &b.ca_file {
                    if [Some(b.tls), b.pop3_tls, b.sieve_tls]
                        .into_iter()
                        .flatten()
                        .all(|t| t == BackendTls::None)
                    {
                        return Err(invalid(
                            format!("{key}.ca_file"),
                            "ca_file is set but tls = \"none\"",
                            "set tls = \"starttls\" or \"implicit\", or remove ca_file",
                        ));
                    }
                    if !ca.exists() {
                        return Err(invalid(
                            format!("{key}.ca_file"),
                            format!("file {} does not exist", ca.display()),
                            "point it at a PEM CA bundle",
                        ));
                    }
                }
            }
        }
        if let Some(d) = &self.routing.default_pool {
            if !pool_names.contains(d) {
                return Err(invalid(
                    "routing.default_pool",
                    format!("no pool is named {d:?}"),
                    "use the name of a [[pool]]",
                ));
            }
        }
        for (user, backend) in &self.routing.users {
            if !backend_names.contains(backend) {
                return Err(invalid(
                    format!("routing.users.{user}"),
                    format!("no backend is named {backend:?}"),
                    "use the name of a [[pool.backend]]",
                ));
            }
        }
        if let Some(f) = &self.routing.state_file {
            let dir = f.parent().filter(|d| !d.as_os_str().is_empty());
            if f.as_os_str().is_empty() || dir.is_some_and(|d| !d.is_dir()) {
                return Err(invalid(
                    "routing.state_file",
                    format!("{}: its directory does not exist", f.display()),
                    "give a path in a directory imapmux can write (e.g. a volume)",
                ));
            }
        }
        Ok(())
    }

    /// Legal but questionable settings, for a warning at startup and in
    /// `check-config`.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.timeouts.idle < Duration::from_secs(30 * 60) {
            w.push(format!(
                "timeouts.idle = {:?} is shorter than the 30 minutes RFC 9051 requires before an idle autologout; clients in IDLE may be cut off",
                self.timeouts.idle
            ));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.mode == ListenerMode::Implicit || !self.plaintext_auth_allowed(l) {
                continue;
            }
            let text = match (l.allow_plaintext_auth, l.mode) {
                (Some(_), ListenerMode::Plaintext) => continue, // chosen for this listener
                (Some(_), _) => format!(
                    "listener[{i}] ({}): allow_plaintext_auth = true: passwords may be sent before STARTTLS",
                    l.address
                ),
                (None, _) => format!(
                    "listener[{i}] ({}, {}): server.allow_plaintext_auth = true lets it take passwords before TLS; \
                     the global key is deprecated: set allow_plaintext_auth = true on the [[listener]] that needs it \
                     (a plaintext listener behind a TLS-terminating load balancer) and remove server.allow_plaintext_auth",
                    l.address,
                    crate::metrics::mode_label(l.mode)
                ),
            };
            w.push(text);
        }
        for p in &self.pools {
            for b in &p.backends {
                if b.insecure {
                    w.push(format!(
                        "backend {:?}: insecure = true, its TLS certificate is not verified",
                        b.name
                    ));
                }
                w.extend(crate::multiplex::poll::warning(b, &self.multiplex));
            }
        }
        w
    }

    /// Are LOGIN/AUTHENTICATE allowed before TLS on listener `l`? Its own
    /// `allow_plaintext_auth`, else `server.allow_plaintext_auth`.
    pub fn plaintext_auth_allowed(&self, l: &ListenerConfig) -> bool {
        l.allow_plaintext_auth
            .unwrap_or(self.server.allow_plaintext_auth)
    }

    /// The pool everyone not in the static map is routed to.
    pub fn default_pool_name(&self) -> &str {
        self.routing
            .default_pool
            .as_deref()
            .unwrap_or_else(|| self.pools.first().map(|p| p.name.as_str()).unwrap_or(""))
    }
}

fn parse_addr(s: &str, key: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        invalid(
            key,
            format!("{s:?} is not an IP:PORT socket address"),
            "write e.g. \"0.0.0.0:993\" or \"[::]:993\"",
        )
    })
}

/// Split `host:port` (host may be `[v6]`).
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host.to_string(), port))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
