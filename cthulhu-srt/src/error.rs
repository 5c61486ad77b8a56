//! The crate's error type.

use std::io;

use crate::reject::Reject;

/// SRT transport errors. Messages never contain passphrases or stream keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SrtError {
    /// A socket error.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A passphrase is not 10 to 79 bytes long (SRT's limits).
    #[error("passphrase must be 10 to 79 bytes long (got {0})")]
    InvalidPassphrase(usize),
    /// The peer refused the connection with this SRT rejection reason.
    #[error("rejected by peer: {0}")]
    Rejected(Reject),
    /// We refused the connection while accepting it (policy or handshake
    /// checks, for example a wrong passphrase); the peer was told `0`.
    #[error("refused: {0}")]
    Refused(Reject),
    /// The peer did not answer the handshake within the connect timeout.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The connection request waited longer than the handshake timeout for a
    /// decision, or the peer started over; it is gone.
    #[error("connection request expired")]
    RequestExpired,
    /// A message is larger than one SRT live-mode payload.
    #[error("message of {0} bytes exceeds the SRT live payload limit of {max} bytes", max = crate::MAX_PAYLOAD)]
    PayloadTooLarge(usize),
    /// The send queue is full (only from [`try_send`](crate::SrtSender::try_send)).
    #[error("send queue full")]
    Full,
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// The peer took nothing for this long (a stalled player or destination).
    #[error("the peer took nothing for {} s", .0.as_secs())]
    SendTimeout(std::time::Duration),
    /// srt-protocol panicked while handling this connection (a bug in the
    /// dependency); only this connection ended.
    #[error("internal error in srt-protocol (connection ended)")]
    Internal,
}
