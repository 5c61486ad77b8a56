//! Throwaway certificates for TLS tests, made with `rcgen` (no openssl CLI needed).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::process::temp_dir;

/// A certificate authority made up for one test: a self-signed CA certificate
/// (ECDSA P-256) that signs server certificates with [`TestCa::issue`].
///
/// Its certificate is written to [`TestCa::cert_path`] (PEM), the file a client is
/// told to trust. Nothing of it is trusted by the system: a client that is not given
/// that file rejects the servers it signed (`UnknownIssuer`).
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    // The directory holds ca.pem; removed on drop unless CTHULHU_TESTKIT_KEEP=1.
    dir: TempDir,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("cert_path", &self.cert_path())
            .finish_non_exhaustive()
    }
}

/// A server certificate and its private key, both PEM.
#[derive(Clone)]
pub struct ServerCert {
    /// The certificate (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// The private key, PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert").finish_non_exhaustive()
    }
}

impl TestCa {
    /// Makes a new CA whose subject common name is `name`, and writes its certificate
    /// to `<temp dir>/ca.pem`.
    pub fn new(name: &str) -> Result<TestCa> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Cthulhu tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("generating the CA key")?;
        let issuer =
            CertifiedIssuer::self_signed(params, key).context("self-signing the CA certificate")?;
        let dir = temp_dir("ca")?;
        let ca = TestCa { issuer, dir };
        std::fs::write(ca.cert_path(), ca.cert_pem()).context("writing ca.pem")?;
        Ok(ca)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The file holding [`Self::cert_pem`].
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The CA's temporary directory (holds `ca.pem`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues a server certificate (ECDSA P-256, `serverAuth`) for `names`: each one
    /// that parses as an IP address becomes an IP subject alternative name, the others
    /// DNS names. The first name is also the subject common name.
    pub fn issue(&self, names: &[&str]) -> Result<ServerCert> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .context("server certificate names")?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generating the server key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("signing the server certificate")?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// [`Self::issue`] for this machine's loopback names: `localhost`, `127.0.0.1`
    /// and `::1`.
    pub fn issue_localhost(&self) -> Result<ServerCert> {
        self.issue(&["localhost", "127.0.0.1", "::1"])
    }
}
