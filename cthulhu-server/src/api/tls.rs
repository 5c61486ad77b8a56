//! HTTPS for the HTTP API (`[http] tls_cert` and `tls_key`): rustls with the ring
//! provider, the same rustls and provider as RTMPS in `cthulhu-rtmp`.
//!
//! [`TlsListener`] is an [`axum::serve::Listener`] whose connections are finished TLS
//! sessions, so the API is served by `axum::serve` with or without TLS, graceful
//! shutdown included. Behind it, a task accepts TCP connections and runs each
//! handshake in a task of its own, within [`HANDSHAKE_TIMEOUT`]: a slow or silent
//! client holds only its own task, and a failed handshake closes that connection only
//! (logged at debug), never the listener. A peer speaking plain HTTP to the port is
//! answered `400` with a hint instead of a TLS alert it cannot read.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::{Listener, ListenerExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, InconsistentKeys, ServerConfig};
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

/// A TLS handshake (from the TCP accept on) must finish within this time.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; beyond it, new connections wait in the kernel's
/// accept queue until one finishes (each ends within [`HANDSHAKE_TIMEOUT`]).
const MAX_PENDING_HANDSHAKES: usize = 256;
/// Finished sessions waiting for `axum::serve` to take them.
const READY_QUEUE: usize = 16;
/// The first byte of a TLS record carrying a handshake message (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// What a plain-HTTP request on the HTTPS port gets.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Connection: close\r\n\
Content-Length: 50\r\n\
\r\n\
This port speaks HTTPS only: use an https:// URL.\n";

/// Why the certificate or the key file is unusable, by the setting it concerns.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsFileError {
    /// The certificate chain (`tls_cert`).
    #[error("tls_cert: {0}")]
    Cert(String),
    /// The private key (`tls_key`), including a key that does not match the
    /// certificate.
    #[error("tls_key: {0}")]
    Key(String),
}

fn pem_error(path: &Path, e: pem::Error) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read {}: {e}", path.display()),
        other => format!("invalid PEM in {}: {other}", path.display()),
    }
}

/// The certificates of the PEM file at `path`, leaf first (other sections ignored).
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsFileError::Cert(pem_error(path, e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError::Cert(pem_error(path, e)))?;
    if chain.is_empty() {
        return Err(TlsFileError::Cert(format!(
            "no certificate in {} (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(chain)
}

/// The first private key of the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        TlsFileError::Key(match e {
            pem::Error::NoItemsFound => format!(
                "no private key in {} (expected PEM: -----BEGIN PRIVATE KEY-----, \
                 RSA PRIVATE KEY or EC PRIVATE KEY)",
                path.display()
            ),
            other => pem_error(path, other),
        })
    })
}

/// Reads the certificate chain at `cert` and the private key at `key` (PEM) and
/// builds the server configuration: TLS 1.2 and 1.3, ALPN `http/1.1`. Fails, naming
/// the file and the setting, if a file cannot be read or parsed, the key is of an
/// unsupported kind, or it does not belong to the certificate.
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsFileError> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Loaded once alone, so that what fails below is the certificate's fault.
    provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| TlsFileError::Key(format!("unusable key in {}: {e}", key.display())))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError::Cert(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
                TlsFileError::Key(format!(
                    "the key in {} does not belong to the certificate in {}",
                    key.display(),
                    cert.display()
                ))
            }
            other => TlsFileError::Cert(format!(
                "unusable certificate in {}: {other}",
                cert.display()
            )),
        })?;
    // axum serves HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, like the plain
/// `axum::serve` in [`super::serve`].
pub(crate) async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = TlsListener::new(listener, config)?
        // A no-op, for what it brings: axum provides `ConnectInfo<SocketAddr>` (the
        // peer, for the login limiter) for a tapped listener of any kind.
        .tap_io(|_| {});
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// A listener of TLS sessions: see the module documentation. Dropping it stops
/// accepting and ends the handshakes in progress.
pub(crate) struct TlsListener {
    sessions: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accept_task: AbortHandle,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config` (a tokio runtime must be running).
    pub(crate) fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, sessions) = mpsc::channel(READY_QUEUE);
        let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(Self {
            sessions,
            local_addr,
            accept_task: task.abort_handle(),
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Dropping the task's JoinSet aborts the handshakes too.
        self.accept_task.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.sessions.recv().await {
            Some(session) => session,
            // The accept loop never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Accepts TCP connections and starts a handshake task for each, keeping at most
/// [`MAX_PENDING_HANDSHAKES`] in progress.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept(), if handshakes.len() < MAX_PENDING_HANDSHAKES => {
                match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                }
            }
            // Finished handshakes leave the set.
            Some(_) = handshakes.join_next() => continue,
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&acceptor, tcp)).await {
                Ok(Ok(tls)) => {
                    // Fails only when the listener is gone (shutting down).
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => debug!(
                    %peer,
                    timeout_secs = HANDSHAKE_TIMEOUT.as_secs(),
                    "TLS handshake timed out"
                ),
            }
        });
    }
}

/// An error of `accept` itself. One about a single connection (reset before it was
/// taken) is skipped; others (out of file descriptors) are logged and retried after a
/// second, so at most one warning a second.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    warn!(error = %e, "HTTPS accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The TLS handshake on `tcp`. A peer whose first byte cannot start a TLS handshake
/// is not TLS: if it looks like a plain HTTP request, it is answered
/// [`PLAIN_HTTP_ANSWER`]; either way the connection is closed with an error.
async fn handshake(acceptor: &TlsAcceptor, mut tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before the handshake",
        ));
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        let plain_http = first[0].is_ascii_uppercase();
        if plain_http {
            // Take the request (what has arrived of it) first: closing with unread
            // data would reset the connection and lose the answer.
            let mut request = [0u8; 4096];
            let _ = tcp.read(&mut request).await;
            let _ = tcp.write_all(PLAIN_HTTP_ANSWER).await;
            let _ = tcp.shutdown().await;
        }
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            if plain_http {
                "not TLS: a plain HTTP request (answered 400)"
            } else {
                "not TLS"
            },
        ));
    }
    acceptor.accept(tcp).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_answer_is_well_formed() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains(&format!("\r\nContent-Length: {}", body.len())),
            "{head} / {}",
            body.len()
        );
    }
}
