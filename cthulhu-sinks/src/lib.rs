//! # cthulhu-sinks
//!
//! Recorders for Cthulhu: a live stream into MPEG-TS, fragmented MP4 or FLV segments,
//! written to a local directory or streamed into object storage (S3 and S3-compatible
//! stores such as MinIO, Garage, R2 or Wasabi, Google Cloud Storage, Azure Blob
//! Storage) while the stream is live.
//!
//! ```no_run
//! # async fn demo(hub: cthulhu_core::Hub) -> Result<(), cthulhu_sinks::SinkError> {
//! use cthulhu_sinks::{Container, NameTemplate, RecordConfig, Recorder, Storage, StorageConfig};
//! use std::time::Duration;
//!
//! let storage = Storage::from_config(&StorageConfig {
//!     url: "s3://studio-archive/recordings".into(),
//!     endpoint: Some("http://127.0.0.1:9900".into()),
//!     ..StorageConfig::default()
//! })?;
//! let mut config = RecordConfig::new(
//!     Container::Ts,
//!     NameTemplate::parse("{path}/{date}/{time}-{seq}.ts")?,
//! );
//! config.segment_duration = Some(Duration::from_secs(600));
//! let path = "live/studio".parse().map_err(|e| cthulhu_sinks::SinkError::Config(format!("{e}")))?;
//! let recording = Recorder::new("archive", &hub, path, storage, config)?
//!     .spawn(Default::default());
//! // ... later, at runtime:
//! recording.stop().await;
//! # Ok(()) }
//! ```
//!
//! ## How it fits together
//!
//! - [`Recorder`] is a hub subscriber run by the core destination supervisor, like a
//!   push: it waits for the path to go live, records each publish session, and retries
//!   with backoff after storage failures. Starting and stopping a recording at
//!   runtime is spawning ([`Recorder::spawn`]) and stopping ([`RecordingHandle::stop`])
//!   it. It reports on the hub's event bus
//!   ([`RecordingEvent`](cthulhu_core::hub::RecordingEvent): segment started, segment
//!   finished with object, bytes and duration, gap, failure).
//! - Segments start on a keyframe with the codec configuration (container header,
//!   PAT/PMT, init segment), are cut at the first keyframe after `segment_duration` or
//!   `segment_bytes`, and are named by a [`NameTemplate`].
//! - One muxer trait over `cthulhu_core::format` writes the [`Container`]; one segment
//!   writer trait hides where the bytes go, so naming, segmenting, muxing and events
//!   are a single code path for every storage:
//!   - **local files** are written in place, appending one batch of muxed output at a
//!     time and never through a temporary file, so a killed process leaves a file
//!     that plays up to its last complete fragment (fMP4), packet (TS) or tag (FLV);
//!   - **object stores** get a multipart upload per segment with fixed-size parts
//!     (`part_size`), at most `max_inflight_parts` in flight, each retried under its
//!     own part number with backoff. Memory is bounded by `max_buffered_bytes`: when
//!     the store falls behind, media is left out up to the next keyframe and a gap is
//!     reported, never blocking the publisher. A segment whose part keeps failing is
//!     completed with the parts uploaded so far and recording goes on in a new one.
//!
//! Credentials come from [`StorageConfig`] or the standard environment variables and
//! are never logged; [`Storage::describe`] is the redacted form.
//!
//! Limits: an object-store segment becomes visible only when its upload completes, so
//! a killed process leaves the open segment as an incomplete multipart upload (bucket
//! lifecycle rules clean those up); local files keep everything up to the kill.
//! Object names must be unique across publish sessions and restarts (use `{date}` and
//! `{time}`): local files are never overwritten (the next sequence number is taken),
//! objects in a bucket are.

mod error;
mod mux;
mod recorder;
mod segment;
mod stats;
mod storage;
mod template;
mod upload;
mod writer;

pub use error::SinkError;
pub use mux::Container;
pub use recorder::{RecordConfig, Recorder, RecordingHandle, StatsProbe};
pub use stats::RecordingStats;
pub use storage::{MultipartObjectStore, Storage, StorageConfig};
pub use template::NameTemplate;

/// Re-exported: the object store crate whose types appear in [`Storage::with_store`].
pub use object_store;
