//! # cthulhu-srt
//!
//! SRT transport for Cthulhu: a listener ([`SrtListener`]), a caller
//! ([`connect`]) and the connection driver ([`SrtConnection`]), written as
//! thin tokio tasks around the sans-IO `srt-protocol` crate (0.4.4). Live mode
//! only (TSBPD, messages of up to [`MAX_PAYLOAD`] bytes, usually MPEG-TS);
//! AES-128/192/256 encryption per connection.
//!
//! Robustness against srt-protocol 0.4.4, whose handshake code panics on some
//! inputs any libsrt caller can send:
//!
//! * Per-peer state only: each peer in handshake has its own `Listen` state
//!   machine and each connection its own `DuplexConnection`; key settings come
//!   per connection from [`Incoming::accept`].
//! * Conclusion requests are checked on the raw bytes first: file mode
//!   (`transtype=file`, congestion `file`, stream API), packet filters (FEC),
//!   socket groups and encryption mismatches are refused with an SRT rejection
//!   code and a logged reason before srt-protocol sees them.
//! * Every call into srt-protocol runs under `catch_unwind`: a panic ends
//!   only that peer's handshake or connection (logged as a bug in the
//!   dependency); the listener keeps serving. (Needs `panic = "unwind"`.)
//! * Every queue is bounded: datagrams for a connection whose driver falls
//!   behind and messages for a reader that falls behind are dropped and
//!   counted ([`ConnectionStats`]), never waited on; the handshake table is
//!   capped and entries time out.
//! * No state before a valid SYN cookie: inductions are answered statelessly
//!   and forged conclusions cost nothing but a counter.
//! * Bounded logs: every refusal a remote peer can cause (garbage, bad cookies,
//!   wrong versions, unsupported or refused requests, full tables, timeouts) goes
//!   through the listener's [`RefusalLog`](cthulhu_core::RefusalLog) (a few lines
//!   per reason, then a summary every 10 s); panics of srt-protocol and per-packet
//!   debug lines are rate-limited too. Stream ids are logged only redacted.
//!
//! Buffers: srt-protocol's default 46 KB send buffer overflows on the first
//! keyframe and the sender never recovers. Our defaults (12 MiB SRT buffers,
//! 8 MiB requested UDP buffers) suit 20 Mbit/s at 1 s of latency.

mod caller;
mod config;
mod connection;
mod error;
mod guard;
mod handshake;
mod listener;
mod reject;
mod socket;

pub mod pump;
pub mod push;
pub mod server;
pub mod streamid;
pub mod url;

pub use caller::connect;
pub use config::{
    CallerConfig, DEFAULT_SRT_BUFFER_BYTES, DEFAULT_UDP_BUFFER_BYTES, KeySize, ListenerConfig,
    MAX_PAYLOAD,
};
pub use connection::{ConnectionStats, SrtConnection, SrtReceiver, SrtSender};
pub use cthulhu_core::Secret;
pub use error::SrtError;
pub use listener::{Incoming, ListenerStats, SrtListener};
pub use reject::Reject;
pub use streamid::redact as redact_stream_id;

pub use push::{SrtPush, SrtPushConfig};
pub use server::{PassphraseSource, SrtServer, SrtServerConfig};
pub use streamid::StreamRequest;
pub use url::{SrtUrl, SrtUrlError};

/// Entry points for the fuzz targets (`fuzz/`): the raw-packet checks the
/// listener runs on untrusted datagrams before srt-protocol sees them. Not a
/// stable API.
#[doc(hidden)]
pub mod fuzz_api {
    use bytes::Bytes;

    /// Runs every raw handshake check on one datagram, as the listener would:
    /// socket id, handshake header, conclusion inspection and the rejection reply.
    pub fn inspect_datagram(d: &[u8]) {
        let _ = crate::handshake::dest_sockid(d);
        let header = crate::handshake::handshake_header(d);
        let bytes = Bytes::copy_from_slice(d);
        if header.is_some() {
            let _ = crate::handshake::inspect_conclusion(&bytes);
        }
        let _ = crate::handshake::rejection(d, crate::Reject::BadRequest, 1);
    }
}
