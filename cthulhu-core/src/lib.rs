//! # cthulhu-core
//!
//! The protocol-independent heart of Cthulhu: the media model ([`model`]), codec
//! configuration parsing ([`codec`]), container formats ([`format`](mod@format)), the stream
//! [`hub`] with its GOP cache and bounded per-subscriber queues, the counters of the
//! peers a shared writer serves ([`meter`]), the destination
//! [`supervisor`] and the [`policy`] seams (authorization and routing).
//!
//! This crate opens no sockets and no files.

pub mod codec;
pub mod error;
pub mod format;
pub mod hub;
pub mod meter;
pub mod model;
pub mod policy;
pub mod refusal;
pub mod supervisor;

pub use error::ModelError;
pub use hub::{Hub, HubConfig, HubError, Publisher, PublisherOrigin, StreamEvent, Subscriber};
pub use meter::{Member, MemberStats, Meter, MeterReading};
pub use model::{
    Codec, CodecDetails, CodecId, Frame, FrameFlags, MediaKind, MetaValue, RtmpTimeUnwrapper,
    StreamInfo, StreamPath, Timestamp, TrackId, TrackInfo,
};
pub use policy::{AccessRequest, Action, Decision, Protocol, Route, Router, Secret, StaticRouter};
pub use refusal::RefusalLog;
