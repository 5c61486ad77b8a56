//! Errors of the RTMP crate.

use std::io;

use crate::url::UrlError;

/// RTMP errors. Messages never contain stream keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtmpError {
    /// A socket error.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The peer did not finish the handshake in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The handshake bytes were invalid.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The peer sent something the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A publisher sent nothing for too long.
    #[error("publisher idle for {0} s")]
    IdleTimeout(u64),
    /// A player did not read for too long.
    #[error("player stalled for {0} s")]
    StallTimeout(u64),
    /// The remote end refused a request (for example publishing).
    #[error("refused: {0}")]
    Refused(String),
    /// The remote end closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// A URL is not a usable RTMP URL.
    #[error("invalid url: {0}")]
    InvalidUrl(#[from] UrlError),
    /// TLS setup or handshake failed.
    #[error("tls: {0}")]
    Tls(String),
    /// A step timed out.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// Converting media failed.
    #[error("media: {0}")]
    Media(String),
    /// The peer broke a bound on its input (message size, AMF0 nesting, ...).
    #[error("refused input: {0}")]
    Inbound(#[from] crate::inbound::InboundError),
    /// A connection limit (total, per address, handshakes in progress) was reached.
    #[error("connection limit: {0}")]
    Limit(&'static str),
}

impl RtmpError {
    /// A short fixed name of the kind of error, for summaries of refused peers.
    pub fn kind(&self) -> &'static str {
        match self {
            RtmpError::Io(_) => "i/o error",
            RtmpError::HandshakeTimeout => "handshake timed out",
            RtmpError::Handshake(_) => "bad handshake",
            RtmpError::Protocol(_) => "protocol error",
            RtmpError::IdleTimeout(_) => "idle",
            RtmpError::StallTimeout(_) => "stalled",
            RtmpError::Refused(_) => "refused",
            RtmpError::Closed => "closed",
            RtmpError::InvalidUrl(_) => "invalid url",
            RtmpError::Tls(_) => "tls error",
            RtmpError::Timeout(_) => "timed out",
            RtmpError::Media(_) => "bad media",
            RtmpError::Inbound(_) => "refused input",
            RtmpError::Limit(_) => "connection limit",
        }
    }
}

/// Runs an rml_rtmp call on untrusted input, turning both its errors and its panics
/// into [`RtmpError::Protocol`]: rml_rtmp indexes some input unchecked, and such input
/// must close one connection, not take down a task that serves others.
pub(crate) fn guarded<T, E: std::fmt::Display>(
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, RtmpError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RtmpError::Protocol(format!("{what}: {e}"))),
        Err(_) => Err(RtmpError::Protocol(format!(
            "{what}: malformed input made the RTMP parser fail"
        ))),
    }
}
