//! Test PKI: a throwaway CA (rcgen, ring) that issues server certificates.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate + key written as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// Leaf certificate only.
    pub cert: PathBuf,
    /// Leaf certificate followed by the CA certificate.
    pub chain: PathBuf,
    /// PKCS#8 private key.
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A test certificate authority. Files live in a private temp dir owned by
/// this value (world-readable, so Dovecot's unprivileged processes can read
/// them when the tests run as root).
pub struct TestCa {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_path: PathBuf,
    counter: std::sync::atomic::AtomicUsize,
}

impl TestCa {
    /// Generate a new CA named `name` (used as its CN).
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("imapmux-ca-")
            .tempdir()
            .expect("create CA temp dir");
        super::make_world_readable_dir(dir.path());
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "imapmux tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        let ca_pem = cert.pem();
        let ca_path = dir.path().join("ca.pem");
        fs::write(&ca_path, &ca_pem).expect("write ca.pem");
        TestCa {
            dir,
            issuer: Issuer::new(params, key),
            ca_pem,
            ca_path,
            counter: Default::default(),
        }
    }

    /// Path of the CA certificate (PEM).
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_path
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Directory where this CA writes its files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issue a server certificate for `localhost` and `127.0.0.1`.
    pub fn issue_localhost(&self) -> CertFiles {
        self.issue(&["localhost", "127.0.0.1"])
    }

    /// Issue a server certificate for the given DNS names / IP addresses.
    /// The first name is also the CN.
    pub fn issue(&self, names: &[&str]) -> CertFiles {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        let base = self.dir.path();
        let files = CertFiles {
            cert: base.join(format!("leaf{n}.pem")),
            chain: base.join(format!("leaf{n}-chain.pem")),
            key: base.join(format!("leaf{n}-key.pem")),
            cert_pem,
            key_pem,
        };
        fs::write(&files.cert, &files.cert_pem).expect("write cert");
        fs::write(&files.chain, format!("{}{}", files.cert_pem, self.ca_pem)).expect("write chain");
        fs::write(&files.key, &files.key_pem).expect("write key");
        files
    }
}
