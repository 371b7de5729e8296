//! rustls configuration: the server side (client-facing listeners) and the
//! client side (connections to backends). One crypto provider (ring) is
//! injected explicitly everywhere.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use thiserror::Error;

use crate::config::{BackendConfig, TlsConfig};

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("tls.cert_file {path}: {message}")]
    Cert { path: String, message: String },
    #[error("tls.key_file {path}: {message}")]
    Key { path: String, message: String },
    #[error("{key}: {message}")]
    Ca { key: String, message: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("self-signed certificate: {0}")]
    SelfSigned(String),
    #[error("tls.certificate[{index}]: {message}")]
    Sni { index: usize, message: String },
}

/// The one crypto provider used by imapmux.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Build the client-facing server config (TLS 1.2+ only): the default
/// certificate, and those of `[[tls.certificate]]` chosen by SNI.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key) = match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => (load_certs(c)?, load_key(k)?),
        _ => {
            tracing::warn!("tls.self_signed: using an in-memory self-signed certificate for localhost; clients will not trust it (local testing only)");
            self_signed()?
        }
    };
    let provider = provider();
    let certified = |certs, key: PrivateKeyDer<'static>| {
        CertifiedKey::from_der(certs, key, &provider).map(Arc::new)
    };
    let mut resolver = SniResolver {
        default: certified(certs, key)?,
        exact: HashMap::new(),
        wildcard: HashMap::new(),
    };
    for (i, c) in cfg.certificates.iter().enumerate() {
        let sni_err = |message: String| TlsError::Sni { index: i, message };
        let chain = load_certs(&c.cert_file).map_err(|e| sni_err(e.to_string()))?;
        let key = load_key(&c.key_file).map_err(|e| sni_err(e.to_string()))?;
        let ck = certified(chain, key).map_err(|e| sni_err(e.to_string()))?;
        for n in &c.names {
            match sni_name(n) {
                Some(Sni::Exact(name)) => resolver.exact.insert(name, ck.clone()),
                Some(Sni::Wildcard(parent)) => resolver.wildcard.insert(parent, ck.clone()),
                None => {
                    return Err(TlsError::Sni {
                        index: i,
                        message: format!("{n:?} is not a host name"),
                    })
                }
            };
        }
    }
    let mut sc = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    sc.alpn_protocols = vec![b"imap".to_vec()];
    Ok(Arc::new(sc))
}

/// A configured SNI name, normalized (lower case, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sni {
    Exact(String),
    /// `*.example.org`: any one label under `example.org` (stored).
    Wildcard(String),
}

/// Check and normalize a configured name; `None` when it is no host name.
pub fn sni_name(name: &str) -> Option<Sni> {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    let (wild, host) = match n.strip_prefix("*.") {
        Some(rest) => (true, rest.to_string()),
        None => (false, n),
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    match (ok, wild) {
        (false, _) => None,
        (true, true) => Some(Sni::Wildcard(host)),
        (true, false) => Some(Sni::Exact(host)),
    }
}

/// Picks the certificate for the name the client asked for: an exact name,
/// else a wildcard for its parent, else the default (also for clients
/// that send no SNI, or an IP address).
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(c) = self.exact.get(&name) {
            return c.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Cert {
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    Ok((vec![ck.cert.der().clone()], key))
}

/// Build the client config used to reach one backend.
pub fn backend_client_config(
    b: &BackendConfig,
    key_prefix: &str,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS)?;
    let cc = if b.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(NoVerify::new())
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match &b.ca_file {
            Some(path) => {
                let key = format!("{key_prefix}.ca_file");
                let certs = CertificateDer::pem_file_iter(path).map_err(|e| TlsError::Ca {
                    key: key.clone(),
                    message: e.to_string(),
                })?;
                for c in certs {
                    let c = c.map_err(|e| TlsError::Ca {
                        key: key.clone(),
                        message: e.to_string(),
                    })?;
                    roots.add(c).map_err(|e| TlsError::Ca {
                        key: key.clone(),
                        message: e.to_string(),
                    })?;
                }
                if roots.is_empty() {
                    return Err(TlsError::Ca {
                        key,
                        message: "no CA certificate in file".into(),
                    });
                }
            }
            None => {
                let loaded = rustls_native_certs::load_native_certs();
                for c in loaded.certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err(TlsError::Ca {
                        key: format!("{key_prefix}.ca_file"),
                        message: "no system CA roots found; set ca_file".into(),
                    });
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(cc))
}

/// Accepts any backend certificate (`insecure = true`, labs only). The
/// handshake signatures are still checked.
#[derive(Debug)]
pub struct NoVerify(Arc<CryptoProvider>);

impl NoVerify {
    /// A verifier that accepts any certificate (labs, load tests).
    pub fn new() -> Arc<NoVerify> {
        Arc::new(NoVerify(provider()))
    }
}

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_names_are_checked_and_normalized() {
        assert_eq!(
            sni_name("Mail.Example.ORG."),
            Some(Sni::Exact("mail.example.org".into()))
        );
        assert_eq!(
            sni_name("*.example.org"),
            Some(Sni::Wildcard("example.org".into()))
        );
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "-a.b",
            "a b",
            "a.*.b",
            "1.2.3.4:993",
            "x_y.org",
        ] {
            assert_eq!(sni_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_certificate_follows_the_name_asked_for() {
        let key = |name: &str| {
            let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
            let k = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
            Arc::new(CertifiedKey::from_der(vec![ck.cert.der().clone()], k, &provider()).unwrap())
        };
        let (d, a, w) = (key("localhost"), key("a.test"), key("x.b.test"));
        let r = SniResolver {
            default: d.clone(),
            exact: HashMap::from([("a.test".to_string(), a.clone())]),
            wildcard: HashMap::from([("b.test".to_string(), w.clone())]),
        };
        let is = |got: Arc<CertifiedKey>, want: &Arc<CertifiedKey>| Arc::ptr_eq(&got, want);
        assert!(is(r.pick(Some("a.test")), &a));
        assert!(is(r.pick(Some("A.TEST.")), &a));
        assert!(is(r.pick(Some("x.b.test")), &w));
        // One label only, and not the parent itself.
        assert!(is(r.pick(Some("y.x.b.test")), &d));
        assert!(is(r.pick(Some("b.test")), &d));
        assert!(is(r.pick(Some("other.test")), &d));
        assert!(is(r.pick(None), &d));
    }
}
