//! `[admin]`: the admin server's address, the `/push` secret, and the
//! replicas pushes are forwarded to (documented in `config/imapmux.toml`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{de_duration, invalid, parse_addr, split_host_port, ConfigError};
use crate::multiplex::fanout::outbox::MAX_PEERS;
use crate::multiplex::fanout::peers::Target;

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub address: Option<String>,
    /// Shared secret of `/push` (Dovecot push notifications).
    pub push_secret: Option<String>,
    /// File whose first line is the shared secret of `/push`.
    pub push_secret_file: Option<PathBuf>,
    /// The other replicas' admin addresses (`HOST:PORT`): pushes from
    /// Dovecot are forwarded to them.
    pub push_peers: Vec<String>,
    /// A DNS name (`HOST:PORT`) whose A/AAAA records are the replicas
    /// (e.g. a Kubernetes headless Service), looked up every
    /// `push_peers_refresh`.
    pub push_peers_dns: Option<String>,
    #[serde(deserialize_with = "de_duration")]
    pub push_peers_refresh: Duration,
    /// File whose first line is the operations API token with the write
    /// scope (`imapmux ctl`); without it (and `readonly_token_file`)
    /// the API does not exist.
    pub token_file: Option<PathBuf>,
    /// File whose first line is a read-only operations API token.
    pub readonly_token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: None,
            push_secret: None,
            push_secret_file: None,
            push_peers: Vec::new(),
            push_peers_dns: None,
            push_peers_refresh: Duration::from_secs(15),
            token_file: None,
            readonly_token_file: None,
        }
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("address", &self.address)
            .field("push_secret", &self.push_secret.as_ref().map(|_| ".."))
            .field("push_secret_file", &self.push_secret_file)
            .field("push_peers", &self.push_peers)
            .field("push_peers_dns", &self.push_peers_dns)
            .field("push_peers_refresh", &self.push_peers_refresh)
            .field("token_file", &self.token_file)
            .field("readonly_token_file", &self.readonly_token_file)
            .finish()
    }
}

impl AdminConfig {
    /// Is `/push` wanted (a secret configured)?
    pub fn push_enabled(&self) -> bool {
        self.push_secret.is_some() || self.push_secret_file.is_some()
    }

    /// Are pushes forwarded to peers?
    pub fn fanout_enabled(&self) -> bool {
        !self.push_peers.is_empty() || self.push_peers_dns.is_some()
    }

    /// Every configured peer entry (`push_peers`, then `push_peers_dns`).
    /// Call after validation; malformed entries are left out.
    pub fn peer_targets(&self) -> Vec<Target> {
        self.push_peers
            .iter()
            .chain(self.push_peers_dns.iter())
            .filter_map(|s| Target::parse(s))
            .collect()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(a) = &self.address {
            parse_addr(a, "admin.address")?;
        }
        match (&self.push_secret, &self.push_secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "admin.push_secret",
                    "both admin.push_secret and admin.push_secret_file are set",
                    "set exactly one of them",
                ))
            }
            (Some(s), None) if s.is_empty() => {
                return Err(invalid(
                    "admin.push_secret",
                    "the secret is empty",
                    "give a long random string, or remove the key to turn /push off",
                ))
            }
            (None, Some(f)) if f.as_os_str().is_empty() => {
                return Err(invalid(
                    "admin.push_secret_file",
                    "the path is empty",
                    "give the path of a file holding the secret on its first line",
                ))
            }
            _ => {}
        }
        if self.push_enabled() && self.address.is_none() {
            let key = if self.push_secret.is_some() {
                "admin.push_secret"
            } else {
                "admin.push_secret_file"
            };
            return Err(invalid(
                key,
                "/push is served by the admin server, but admin.address is not set",
                "set admin.address, or remove the push secret",
            ));
        }
        self.validate_tokens()?;
        self.validate_peers()
    }

    fn validate_tokens(&self) -> Result<(), ConfigError> {
        for (key, f) in [
            ("admin.token_file", &self.token_file),
            ("admin.readonly_token_file", &self.readonly_token_file),
        ] {
            let Some(f) = f else { continue };
            if f.as_os_str().is_empty() {
                return Err(invalid(
                    key,
                    "the path is empty",
                    "give the path of a file holding the token on its first line",
                ));
            }
            if self.address.is_none() {
                return Err(invalid(
                    key,
                    "the operations API is served by the admin server, but admin.address is not set",
                    "set admin.address, or remove the key",
                ));
            }
        }
        Ok(())
    }

    /// The operations API's tokens, read from their files (first line).
    pub fn load_tokens(&self) -> Result<crate::ops::tokens::Tokens, ConfigError> {
        let read =
            |key: &'static str, f: &Option<PathBuf>| -> Result<Option<String>, ConfigError> {
                let Some(f) = f else { return Ok(None) };
                let t = crate::ops::tokens::read_token_file(f).map_err(|e| {
                    invalid(
                        key,
                        format!("cannot read {}: {e}", f.display()),
                        "make the file readable by imapmux",
                    )
                })?;
                if t.len() < 16 {
                    return Err(invalid(
                    key,
                    format!("the token in {} is shorter than 16 characters", f.display()),
                    "put a long random string on its first line, e.g. from `openssl rand -hex 32`",
                ));
                }
                Ok(Some(t))
            };
        let w = read("admin.token_file", &self.token_file)?;
        let r = read("admin.readonly_token_file", &self.readonly_token_file)?;
        if w.is_some() && w == r {
            return Err(invalid(
                "admin.readonly_token_file",
                "the read-only token is the same as the write token",
                "give each scope its own token",
            ));
        }
        Ok(crate::ops::tokens::Tokens::new(
            w.as_deref().map(str::as_bytes),
            r.as_deref().map(str::as_bytes),
        ))
    }

    fn validate_peers(&self) -> Result<(), ConfigError> {
        if self.fanout_enabled() && !self.push_enabled() {
            let key = if self.push_peers.is_empty() {
                "admin.push_peers_dns"
            } else {
                "admin.push_peers"
            };
            return Err(invalid(
                key,
                "pushes are forwarded to peers with the push secret, but none is set",
                "set admin.push_secret or admin.push_secret_file (the same on every replica), or remove the key",
            ));
        }
        if self.push_peers.len() > MAX_PEERS {
            return Err(invalid(
                "admin.push_peers",
                format!("more than {MAX_PEERS} peers"),
                format!("list at most {MAX_PEERS} replicas"),
            ));
        }
        let own = self.address.as_deref().and_then(|a| a.parse().ok());
        for (i, p) in self.push_peers.iter().enumerate() {
            let key = format!("admin.push_peers[{i}]");
            let Some(t) = Target::parse(p) else {
                return Err(invalid(
                    key,
                    format!("{p:?} is not HOST:PORT"),
                    "write another replica's admin address, e.g. \"10.0.0.6:9143\"",
                ));
            };
            if t.literal.is_some() && t.literal == own {
                return Err(invalid(
                    key,
                    format!("{p:?} is this process's own admin.address"),
                    "list only the other replicas",
                ));
            }
        }
        if let Some(d) = &self.push_peers_dns {
            match split_host_port(d) {
                None => {
                    return Err(invalid(
                        "admin.push_peers_dns",
                        format!("{d:?} is not HOST:PORT"),
                        "write a DNS name and the admin port, e.g. \"imapmux-peers.mail.svc:9143\"",
                    ))
                }
                Some((host, _)) if host.parse::<std::net::IpAddr>().is_ok() => {
                    return Err(invalid(
                        "admin.push_peers_dns",
                        format!("{d:?} is an address, not a DNS name"),
                        "name a DNS name whose records are the replicas (e.g. a headless Service), or list addresses in admin.push_peers",
                    ))
                }
                Some(_) => {}
            }
        }
        if self.fanout_enabled() && self.push_peers_refresh < Duration::from_secs(1) {
            return Err(invalid(
                "admin.push_peers_refresh",
                "shorter than 1s",
                "give e.g. \"15s\"",
            ));
        }
        Ok(())
    }

    /// The raw secret of `/push` and the key it came from, reading
    /// `push_secret_file` (its first line) if that is the one set.
    fn read_secret(&self) -> Result<Option<(Vec<u8>, &'static str)>, ConfigError> {
        match (&self.push_secret, &self.push_secret_file) {
            (Some(s), None) => Ok(Some((s.as_bytes().to_vec(), "admin.push_secret"))),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f).map_err(|e| {
                    invalid(
                        "admin.push_secret_file",
                        format!("cannot read {}: {e}", f.display()),
                        "make the file readable by imapmux",
                    )
                })?;
                let line = text.lines().next().unwrap_or("").as_bytes().to_vec();
                Ok(Some((line, "admin.push_secret_file")))
            }
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(invalid(
                "admin.push_secret",
                "both admin.push_secret and admin.push_secret_file are set",
                "set exactly one of them",
            )),
        }
    }

    /// The secret of `/push`; `None` when push is off.
    pub fn load_push_secret(
        &self,
    ) -> Result<Option<crate::multiplex::push::PushSecret>, ConfigError> {
        Ok(self.load_secrets()?.map(|(s, _)| s))
    }

    /// The secret of `/push`, and the credentials forwarded pushes carry
    /// to peers; `None` when push is off.
    pub fn load_secrets(
        &self,
    ) -> Result<
        Option<(
            crate::multiplex::push::PushSecret,
            crate::multiplex::fanout::ForwardAuth,
        )>,
        ConfigError,
    > {
        let Some((secret, key)) = self.read_secret()? else {
            return Ok(None);
        };
        let digest = crate::multiplex::push::PushSecret::new(&secret).ok_or_else(|| {
            invalid(
                key,
                "the secret is empty",
                "put a long random string on the first line",
            )
        })?;
        Ok(Some((
            digest,
            crate::multiplex::fanout::ForwardAuth::new(&secret),
        )))
    }
}
