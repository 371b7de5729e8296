//! rustls client configuration (ring provider only).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

fn provider() -> Arc<CryptoProvider> {
    imapmux::tls::provider()
}

/// Build the client config: `insecure` accepts any certificate (handshake
/// signatures are still checked); otherwise trust `ca_file` or the system
/// roots. `resume` enables TLS session resumption (rustls' default).
pub fn client_config(
    insecure: bool,
    ca_file: Option<&Path>,
    resume: bool,
) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut cc = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(imapmux::tls::NoVerify::new())
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
                for c in certs {
                    let c = c.map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("--ca-file {}: no certificate", path.display()));
                }
            }
            None => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err("no system CA roots found; use --ca-file or --insecure".into());
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    if !resume {
        cc.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(cc))
}

/// The name to verify and send as SNI: `sni` if given, else the host part
/// of the target.
pub fn server_name(sni: Option<&str>, target: &str) -> Result<ServerName<'static>, String> {
    let host = match sni {
        Some(s) => s.to_string(),
        None => {
            let h = match target.rsplit_once(':') {
                Some((h, _)) => h,
                None => target,
            };
            h.trim_start_matches('[').trim_end_matches(']').to_string()
        }
    };
    ServerName::try_from(host.clone()).map_err(|e| format!("invalid TLS server name {host:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(matches!(
            server_name(None, "127.0.0.1:993").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(None, "[::1]:993").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(None, "mail.example.org:993").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name(Some("localhost"), "127.0.0.1:993").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(client_config(true, None, false).is_ok());
    }
}
