//! Fragmented MP4 (ISO/IEC 14496-12 with 14496-14/-15): a muxer from core
//! [`Frame`](crate::model::Frame)s to an append-only `.mp4` for recordings.
//!
//! # Layout
//! ```text
//! ftyp  iso6, compatible iso6 isom mp41 dash            ┐ init segment,
//! moov  mvhd, trak per track (empty sample tables), mvex │ written once by
//!       with one trex per track                          ┘ Fmp4Muxer::write_init
//! moof  mfhd (sequence number), per track with samples:  ┐ one fragment,
//!       traf: tfhd (default-base-is-moof), tfdt (64-bit  │ written by
//!       baseMediaDecodeTime), trun (version 1: data       │ Fmp4Muxer::push_frame
//!       offset, per-sample duration, size, flags and      │ when complete, or by
//!       signed composition offset)                        │ flush / flush_until
//! mdat  the samples of the first traf, then the second's  ┘
//! moof mdat moof mdat ...
//! ```
//! Video tracks (H.264 as `avc1` + `avcC`, HEVC as `hvc1` + `hvcC`) run at 90 kHz,
//! AAC (`mp4a` + `esds` with the AudioSpecificConfig) at its output sample rate,
//! Opus (`Opus` + `dOps`) at 48 kHz. Samples are the frame payloads as they are in
//! the canonical layout: length-prefixed NAL units (converted to 4-byte lengths when
//! the configuration record says otherwise), raw AAC frames, Opus packets.
//!
//! # Kill safety
//! Output is append-only: no byte is ever patched or sought back to, and the movie
//! header carries no duration or sample index that would need the end of the
//! recording. Every fragment is a self-contained `moof` + `mdat` pair, handed out
//! whole in one call. A file cut anywhere (a SIGKILLed recorder, a multipart upload
//! that lost its last part) therefore plays up to the last complete fragment:
//! readers find the init segment, then fragment after fragment, and stop at the
//! truncated one. What is lost is what was buffered: one group of pictures of
//! video (at most [`Fmp4Config::max_video_fragment`]), at most
//! [`Fmp4Config::max_fragment`] of audio-only recordings, plus the held-back last
//! sample of each track.
//!
//! # Fragments and timing
//! - With video, a fragment ends before each keyframe of the first video track
//!   (the *lead* track), so fragments start with a keyframe. A fragment that
//!   reaches [`Fmp4Config::max_video_fragment`] of media on any track without one
//!   ends anyway (long groups of pictures, a publisher that sends none, video that
//!   stalls while audio goes on).
//! - Without video, a fragment ends once a track holds [`Fmp4Config::max_fragment`]
//!   of media.
//! - Either way a fragment ends once its samples reach
//!   [`Fmp4Config::max_fragment_bytes`]. Together these bound the muxer's memory.
//! - A sample's duration is the distance to the next sample's decode time, so the
//!   last sample of each track is held back until the next one arrives: a fragment
//!   is written when the frame after it arrives. [`Fmp4Muxer::flush`] writes what is
//!   buffered, the held-back samples lasting as long as the sample before them (or
//!   1/30 s of video, one AAC frame, the Opus packet's own length).
//!   [`Fmp4Muxer::flush_until`] ends video at a known time instead, for cutting a
//!   recording into segments at a keyframe.
//! - The first decode time of a recording (of any track) is time 0 of every track,
//!   so tracks stay in sync. Decode times that go backwards, or lie before time 0,
//!   are clamped to the previous sample's (durations are never negative; pts - dts
//!   is kept, as a signed composition offset); a gap longer than a 32-bit duration
//!   is shortened to one. There is no edit list: with B-frames, video is presented
//!   from its first pts, as in the source.
//! - Video before the first keyframe of its track is dropped: it cannot be decoded.
//!
//! Invariants: no I/O, no clock. Input frames never panic the muxer, and a frame the
//! muxer refuses (an error) leaves it unchanged. Configuration frames are not
//! samples: a repeated configuration is ignored, a different one is
//! [`Fmp4Error::ConfigChanged`], which asks the caller to start a new recording (the
//! sample description of a fragmented MP4 is fixed by its init segment).

mod boxes;
mod init;
mod mux;
#[cfg(test)]
mod peer_tests;
#[cfg(test)]
mod tests;

pub use mux::{Fmp4Muxer, Fmp4Stats};

use std::time::Duration;

use crate::codec::CodecError;
use crate::model::{CodecId, TrackId};

/// Muxer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmp4Config {
    /// The fragment length of audio-only recordings: it bounds what a killed
    /// recorder loses. 2 s by default.
    pub max_fragment: Duration,
    /// With video, fragments end at keyframes; one that reaches this much media on
    /// any track without a keyframe ends anyway, at a frame that is not one. Keep
    /// it above the publishers' keyframe interval. 10 s by default.
    pub max_video_fragment: Duration,
    /// A fragment ends once its samples reach this many bytes. 64 MiB by default;
    /// values above 1 GiB are taken as 1 GiB.
    pub max_fragment_bytes: usize,
}

impl Default for Fmp4Config {
    fn default() -> Self {
        Self {
            max_fragment: Duration::from_secs(2),
            max_video_fragment: Duration::from_secs(10),
            max_fragment_bytes: 64 << 20,
        }
    }
}

/// Why a track is left out of a recording.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The codec has no mapping in this muxer (AV1, MP3).
    #[error("codec {0} is not supported in fragmented MP4 by this muxer")]
    UnsupportedCodec(CodecId),
    /// The track has no configuration record yet (H.264, HEVC and AAC need one).
    #[error("no codec configuration")]
    MissingConfig,
    /// The configuration record does not parse, or describes something that cannot
    /// be recorded (for example a sample rate of 0).
    #[error("invalid codec configuration: {0}")]
    InvalidConfig(CodecError),
    /// Another track with the same id came first.
    #[error("duplicate track id")]
    DuplicateTrack,
}

/// A track left out of a recording, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedTrack {
    /// The track.
    pub track: TrackId,
    /// Its codec.
    pub codec: CodecId,
    /// Why it is not recorded.
    pub reason: SkipReason,
}

/// Errors of the fragmented MP4 muxer. On error nothing is written and the muxer is
/// unchanged.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fmp4Error {
    /// None of the tracks can be recorded.
    #[error("no recordable track ({} skipped)", .0.len())]
    NoRecordableTracks(Vec<SkippedTrack>),
    /// A frame of a track the muxer was not created with.
    #[error("unknown track {0:?}")]
    UnknownTrack(TrackId),
    /// A track's configuration (or codec) differs from the one in the init segment,
    /// or a track skipped for lack of a usable configuration got a new one. Flush
    /// this muxer and start a new recording with a new one.
    #[error("configuration of track {0:?} changed: start a new recording")]
    ConfigChanged(TrackId),
    /// A frame whose payload is not in the canonical layout (a NAL unit length
    /// running past the end).
    #[error("invalid frame payload on track {track:?}: {reason}")]
    InvalidFrame {
        /// The track.
        track: TrackId,
        /// What was wrong.
        reason: &'static str,
    },
    /// A frame larger than one sample may be (256 MiB).
    #[error("frame of {size} bytes on track {track:?} is too large for one sample")]
    FrameTooLarge {
        /// The track.
        track: TrackId,
        /// The frame's size in bytes.
        size: usize,
    },
}
