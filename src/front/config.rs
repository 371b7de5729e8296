//! The configuration keys of the POP3 and ManageSieve fronts, checked
//! with the rest of the config ([`crate::config`]).

use super::Protocol;
use crate::config::{invalid, split_host_port, BackendConfig, BackendTls, Config, ConfigError};

/// A backend's POP3 and ManageSieve addresses: well-formed, and
/// present when a listener speaks that protocol (a user lands on the
/// same backend as for IMAP, so every backend must serve it).
pub(crate) fn validate_backend(
    cfg: &Config,
    b: &BackendConfig,
    key: &str,
) -> Result<(), ConfigError> {
    for (protocol, address, tls, name) in [
        (Protocol::Pop3, &b.pop3_address, b.pop3_tls, "pop3"),
        (Protocol::Sieve, &b.sieve_address, b.sieve_tls, "sieve"),
    ] {
        let listened = cfg.listeners.iter().any(|l| l.protocol == protocol);
        match address {
            Some(a) => {
                split_host_port(a).ok_or_else(|| {
                    invalid(
                        format!("{key}.{name}_address"),
                        format!("{a:?} is not HOST:PORT"),
                        "write e.g. \"10.0.0.5:110\"",
                    )
                })?;
            }
            None if listened => {
                return Err(invalid(
                    format!("{key}.{name}_address"),
                    format!("a listener has protocol = \"{name}\" but this backend has no {name}_address (users are routed to the same backend as for IMAP)"),
                    format!("set {name}_address to the backend's {} service, e.g. \"10.0.0.5:{}\"", if name == "pop3" { "POP3" } else { "ManageSieve" }, if name == "pop3" { 110 } else { 4190 }),
                ));
            }
            None => {}
        }
        if protocol == Protocol::Sieve
            && address.is_some()
            && tls.unwrap_or(b.tls) == BackendTls::Implicit
        {
            return Err(invalid(
                format!("{key}.sieve_tls"),
                "ManageSieve has no implicit TLS (the backend's tls = \"implicit\" applies unless sieve_tls is set)",
                "set sieve_tls = \"starttls\" or \"none\"",
            ));
        }
    }
    Ok(())
}
