//! TLS settings of the test IMAP client (rustls, ring provider only).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::client::DEFAULT_TIMEOUT;

fn provider() -> Arc<CryptoProvider> {
    imapmux::tls::provider()
}

/// TLS settings for the client side (ring provider only).
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: String,
}

impl TlsClient {
    /// Verify the server against the CA certificate(s) in `ca_pem`
    /// (SNI / name checked: `localhost` unless changed by [`server_name`](Self::server_name)).
    pub fn with_ca(ca_pem: impl AsRef<Path>) -> TlsClient {
        let pem = std::fs::read(ca_pem.as_ref())
            .unwrap_or_else(|e| panic!("read CA {}: {e}", ca_pem.as_ref().display()));
        Self::with_ca_pem(&pem)
    }

    /// Like [`with_ca`](Self::with_ca) with the PEM text itself.
    pub fn with_ca_pem(pem: &[u8]) -> TlsClient {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots.add(cert.expect("parse CA PEM")).expect("add CA");
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsClient {
            config: Arc::new(config),
            server_name: "localhost".into(),
        }
    }

    /// Accept any certificate (for self-signed proxy demo certs).
    pub fn insecure() -> TlsClient {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(imapmux::tls::NoVerify::new())
            .with_no_client_auth();
        TlsClient {
            config: Arc::new(config),
            server_name: "localhost".into(),
        }
    }

    /// Name sent as SNI and verified (a DNS name or an IP address).
    pub fn server_name(mut self, name: &str) -> TlsClient {
        self.server_name = name.to_string();
        self
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    pub(crate) async fn handshake(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(self.server_name.clone())
            .map_err(|e| anyhow!("bad server name {:?}: {e}", self.server_name))?;
        let connector = TlsConnector::from(self.config.clone());
        let tls = tokio::time::timeout(DEFAULT_TIMEOUT, connector.connect(name, tcp))
            .await
            .context("TLS handshake timed out")?
            .context("TLS handshake failed")?;
        Ok(tls)
    }
}
