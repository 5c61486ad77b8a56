//! RTMPS: RTMP over TLS with rustls, trusting the system roots and the webpki roots.

use std::sync::{Arc, OnceLock};

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::error::RtmpError;

fn config() -> Result<Arc<ClientConfig>, RtmpError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A bad system certificate is skipped, not fatal.
                let _ = roots.add(cert);
            }
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(RtmpError::Tls)
}

/// Opens a TLS session to `host` over `tcp`.
pub async fn connect(host: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>, RtmpError> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| RtmpError::Tls(format!("{host}: {e}")))?;
    let connector = TlsConnector::from(config()?);
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| RtmpError::Tls(e.to_string()))
}
