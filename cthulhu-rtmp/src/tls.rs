//! RTMPS: RTMP over TLS with rustls (ring), trusting the webpki roots, the system roots
//! and, per destination, the CA certificates of an optional PEM file
//! ([`crate::ClientConfig::tls_ca_file`]) for servers signed by a private CA.
//!
//! Building a rustls configuration reads the system roots, so configurations are
//! cached: one without an extra CA file, and one per CA file path. A cached
//! configuration is rebuilt when its CA file changes (modification time or size), so a
//! rotated CA is picked up by the next connection attempt without a restart.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, CertificateError, ClientConfig, RootCertStore};

use crate::error::RtmpError;

/// The webpki roots plus the system roots, read once.
fn base_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A bad system certificate is skipped, not fatal.
            let _ = roots.add(cert);
        }
        roots
    })
}

fn build(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| e.to_string())
}

fn default_config() -> Result<Arc<ClientConfig>, RtmpError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| build(base_roots().clone()))
        .clone()
        .map_err(RtmpError::Tls)
}

fn ca_error(path: &Path, what: impl std::fmt::Display) -> RtmpError {
    RtmpError::Tls(format!("CA file {}: {what}", path.display()))
}

/// Reads the CA certificates of the PEM file at `path` (other PEM sections, such as
/// keys, are ignored). Fails if the file cannot be read, is not PEM or holds no
/// certificate; the error names the file.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, RtmpError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| match e {
        pem::Error::Io(e) => ca_error(path, format_args!("cannot read it: {e}")),
        other => ca_error(path, other),
    })?;
    let mut certs = Vec::new();
    for cert in iter {
        certs.push(cert.map_err(|e| match e {
            pem::Error::Io(e) => ca_error(path, format_args!("cannot read it: {e}")),
            other => ca_error(path, format_args!("invalid PEM: {other}")),
        })?);
    }
    if certs.is_empty() {
        return Err(ca_error(
            path,
            "no certificate found (expected PEM: -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// Adds every certificate of the CA file to `roots`; returns how many.
fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<usize, RtmpError> {
    let certs = read_ca_file(path)?;
    let n = certs.len();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            ca_error(
                path,
                format_args!("certificate {} is not usable as a trust anchor: {e}", i + 1),
            )
        })?;
    }
    Ok(n)
}

/// Checks that `path` is a PEM file of usable CA certificates, as a connection would
/// load it; returns how many it holds. For configuration checks.
pub fn check_ca_file(path: &Path) -> Result<usize, RtmpError> {
    add_ca_file(&mut RootCertStore::empty(), path)
}

/// What identifies a version of a CA file: its modification time and size.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Result<FileStamp, RtmpError> {
    let meta =
        std::fs::metadata(path).map_err(|e| ca_error(path, format_args!("cannot read it: {e}")))?;
    Ok(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

fn config_with_ca_file(path: &Path) -> Result<Arc<ClientConfig>, RtmpError> {
    type Cache = Mutex<HashMap<PathBuf, (FileStamp, Arc<ClientConfig>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    let now = stamp(path)?;
    if let Some((seen, config)) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(path)
        && *seen == now
    {
        return Ok(config.clone());
    }
    // Errors are not cached: the file may be fixed before the next attempt.
    let mut roots = base_roots().clone();
    add_ca_file(&mut roots, path)?;
    let config = build(roots).map_err(RtmpError::Tls)?;
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(path.to_owned(), (now, config.clone()));
    Ok(config)
}

/// The rustls client configuration for RTMPS: webpki and system roots, plus the
/// certificates of `ca_file` if given. Cached (see the module documentation).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, RtmpError> {
    match ca_file {
        None => default_config(),
        Some(path) => config_with_ca_file(path),
    }
}

/// Opens TLS sessions with one trust configuration.
#[derive(Clone)]
pub struct Connector {
    inner: tokio_rustls::TlsConnector,
    ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// A [`Connector`] trusting the webpki and system roots, plus `ca_file` if given.
/// Fails if the CA file cannot be loaded.
pub fn connector(ca_file: Option<&Path>) -> Result<Connector, RtmpError> {
    Ok(Connector {
        inner: tokio_rustls::TlsConnector::from(client_config(ca_file)?),
        ca_file: ca_file.map(Path::to_owned),
    })
}

impl Connector {
    /// Opens a TLS session to `host` (a DNS name or a bare IP address, which the
    /// server's certificate must name) over `tcp`.
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, RtmpError> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| RtmpError::Tls(format!("{host}: {e}")))?;
        self.inner
            .connect(name, tcp)
            .await
            .map_err(|e| RtmpError::Tls(handshake_error(host, self.ca_file.as_deref(), &e)))
    }
}

/// Opens a TLS session to `host` over `tcp`, trusting `ca_file` in addition to the
/// webpki and system roots.
pub async fn connect(
    host: &str,
    tcp: TcpStream,
    ca_file: Option<&Path>,
) -> Result<TlsStream<TcpStream>, RtmpError> {
    connector(ca_file)?.connect(host, tcp).await
}

/// The message of a failed handshake, with a hint when the server's certificate is
/// signed by a CA nobody trusts (the usual sign of a private CA).
fn handshake_error(host: &str, ca_file: Option<&Path>, e: &io::Error) -> String {
    let unknown_issuer = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            )
        });
    match (unknown_issuer, ca_file) {
        (true, None) => format!(
            "{host}: {e} (the server's certificate is not signed by a trusted CA; \
             for a private CA, set tls_ca_file to its PEM certificate)"
        ),
        (true, Some(path)) => format!(
            "{host}: {e} (the server's certificate is signed neither by a system CA nor by \
             a CA in {})",
            path.display()
        ),
        (false, _) => format!("{host}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cthulhu_testkit::{ServerCert, TestCa};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::rustls::pki_types::PrivateKeyDer;

    fn tls_message(r: Result<impl Sized, RtmpError>) -> String {
        match r {
            Err(RtmpError::Tls(m)) => m,
            Err(other) => panic!("expected a TLS error, got {other:?}"),
            Ok(_) => panic!("expected a TLS error, got success"),
        }
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let m = tls_message(client_config(Some(&missing)));
        assert!(
            m.starts_with(&format!("CA file {}: cannot read it: ", missing.display())),
            "{m}"
        );
        assert_eq!(
            tls_message(check_ca_file(&missing)),
            m,
            "check and connect agree"
        );

        let cases = [
            (
                "text.pem",
                "just some text\n".to_owned(),
                "no certificate found",
            ),
            (
                "key-only.pem",
                TestCa::new("k").unwrap().issue(&["x"]).unwrap().key_pem,
                "no certificate found",
            ),
            (
                "bad-base64.pem",
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_owned(),
                "invalid PEM",
            ),
            (
                "unterminated.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n".to_owned(),
                "invalid PEM",
            ),
            (
                "not-a-cert.pem",
                "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n".to_owned(),
                "certificate 1 is not usable as a trust anchor",
            ),
        ];
        for (name, text, want) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let m = tls_message(client_config(Some(&path)));
            assert!(
                m.starts_with(&format!("CA file {}: ", path.display())) && m.contains(want),
                "{name}: {m}"
            );
            assert_eq!(tls_message(check_ca_file(&path)), m, "{name}");
        }
        // A directory is not a file.
        let m = tls_message(client_config(Some(dir.path())));
        assert!(
            m.starts_with(&format!("CA file {}: ", dir.path().display())),
            "{m}"
        );
    }

    #[test]
    fn a_ca_file_may_hold_several_certificates_and_other_sections() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (TestCa::new("A").unwrap(), TestCa::new("B").unwrap());
        let path = dir.path().join("bundle.pem");
        let key = a.issue(&["x"]).unwrap().key_pem;
        std::fs::write(
            &path,
            format!("# bundle\n{}{key}\n{}", a.cert_pem(), b.cert_pem()),
        )
        .unwrap();
        assert_eq!(check_ca_file(&path).unwrap(), 2);
        assert_eq!(check_ca_file(&a.cert_path()).unwrap(), 1);
        client_config(Some(&path)).unwrap();
    }

    #[test]
    fn configs_are_cached_per_ca_file_until_it_changes() {
        assert!(Arc::ptr_eq(
            &client_config(None).unwrap(),
            &client_config(None).unwrap()
        ));
        let (a, b) = (TestCa::new("A").unwrap(), TestCa::new("B").unwrap());
        let first = client_config(Some(&a.cert_path())).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &client_config(Some(&a.cert_path())).unwrap()
        ));
        assert!(!Arc::ptr_eq(&first, &client_config(None).unwrap()));
        assert!(!Arc::ptr_eq(
            &first,
            &client_config(Some(&b.cert_path())).unwrap()
        ));
        // Rewritten (a bundle now, so the size differs): rebuilt.
        std::fs::write(a.cert_path(), a.cert_pem() + &b.cert_pem()).unwrap();
        let second = client_config(Some(&a.cert_path())).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(Arc::ptr_eq(
            &second,
            &client_config(Some(&a.cert_path())).unwrap()
        ));
        // Removed: an error, and the next good file is loaded again.
        std::fs::remove_file(a.cert_path()).unwrap();
        assert!(tls_message(client_config(Some(&a.cert_path()))).contains("cannot read it"));
        std::fs::write(a.cert_path(), a.cert_pem()).unwrap();
        client_config(Some(&a.cert_path())).unwrap();
    }

    /// A TLS server on 127.0.0.1 presenting `cert` that answers "hello" to each
    /// client; returns its port.
    async fn tls_server(cert: &ServerCert) -> u16 {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tls.write_all(b"hello").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        port
    }

    async fn greet(host: &str, port: u16, ca_file: Option<&Path>) -> Result<String, RtmpError> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut tls = connect(host, tcp, ca_file).await?;
        let mut got = String::new();
        tls.read_to_string(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn a_private_ca_is_trusted_only_through_its_file() {
        let ca = TestCa::new("Private CA").unwrap();
        let port = tls_server(&ca.issue_localhost().unwrap()).await;
        // By name and by IP address (the certificate carries both).
        for host in ["localhost", "127.0.0.1"] {
            assert_eq!(
                greet(host, port, Some(&ca.cert_path())).await.unwrap(),
                "hello",
                "{host}"
            );
        }
        // The server's certificate must name the host.
        let m = tls_message(greet("127.0.0.2", port, Some(&ca.cert_path())).await);
        assert!(m.contains("not valid for name"), "{m}");

        // Without the file: the system roots do not know the CA, and the error says
        // what to do.
        let m = tls_message(greet("localhost", port, None).await);
        assert!(
            m.starts_with("localhost: invalid peer certificate: UnknownIssuer"),
            "{m}"
        );
        assert!(m.contains("set tls_ca_file"), "{m}");

        // Another CA's file does not help either.
        let other = TestCa::new("Other CA").unwrap();
        let m = tls_message(greet("localhost", port, Some(&other.cert_path())).await);
        assert!(m.contains("UnknownIssuer"), "{m}");
        assert!(m.contains(&other.cert_path().display().to_string()), "{m}");
    }
}
