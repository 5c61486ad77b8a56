//! # cthulhu-rtmp
//!
//! RTMP for Cthulhu on `rml_rtmp`'s sans-IO sessions: an ingest/play listener
//! ([`server`]), a publishing client for pushes and probes ([`client`], [`push`]),
//! RTMPS through rustls, and the conversion between RTMP messages and core frames
//! ([`to_core`], [`from_core`]) with zero-copy chunking ([`chunk`]).
//!
//! Players of a stream, and the pushes of a stream in one [`PushGroup`], are written
//! by one task per stream that chunks each message once and writes it to every
//! socket without blocking (`fanout.rs`); a slow reader gets a bounded backlog and
//! skips to the next keyframe.
//!
//! Untrusted input is bounded before rml_rtmp parses it. rml_rtmp takes messages up
//! to 16 MiB from anyone, and its AMF0 decoder (rml_amf0) recurses without a depth
//! limit, so one nested `connect` could overflow a stack and abort the process.
//! Every byte from publishers, players and push destinations therefore passes an
//! [`InboundGuard`] first: it frames the chunk stream as rml_rtmp does, bounds
//! message sizes (small until a publish is accepted), and scans every AMF0 body
//! without recursion ([`amf0`]) for depth and value count.

pub mod amf0;
pub mod chunk;
pub mod client;
pub mod error;
pub(crate) mod fanout;
pub mod from_core;
mod handshake;
pub mod inbound;
mod limits;
pub mod push;
pub mod server;
pub mod tls;
pub mod to_core;
pub mod url;

pub use client::{ClientConfig, ConnectInfo, PublishingClient, probe};
pub use error::RtmpError;
pub use inbound::{InboundError, InboundGuard, InboundLimits};
pub use push::{PushConfig, PushGroup, RtmpPush};
pub use server::{RtmpServer, ServerConfig};
pub use url::{RtmpUrl, UrlError};
