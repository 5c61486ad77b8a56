//! The media model: stream paths, timestamps, tracks and frames.
//!
//! A [`Frame`] is one access unit in a canonical layout shared by every protocol:
//! H.264/HEVC as length-prefixed NAL units (the length size comes from the decoder
//! configuration record, 4 bytes in practice), AAC as raw frames (no ADTS header).
//! Codec configuration travels as a frame with [`FrameFlags::CONFIG`] whose payload is
//! the configuration record ([`Codec`] documents each layout). Payloads are [`Bytes`]:
//! fanning a frame out clones a pointer, never the data.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::ModelError;

/// A validated stream path, `app/name` (for example `live/studio`).
///
/// Both segments are 1 to 128 characters of ASCII letters, digits, `_`, `-` and `.`,
/// and neither is `.` or `..`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamPath(Arc<str>);

impl StreamPath {
    /// Parses and validates `app/name`.
    pub fn new(path: &str) -> Result<Self, ModelError> {
        let (app, name) = path.split_once('/').ok_or_else(|| {
            ModelError::InvalidPath(format!("{path:?} is not of the form app/name"))
        })?;
        Self::from_parts(app, name)
    }

    /// Builds a path from its app and name segments, validating both.
    pub fn from_parts(app: &str, name: &str) -> Result<Self, ModelError> {
        validate_segment(app, "app")?;
        validate_segment(name, "name")?;
        Ok(Self(Arc::from(format!("{app}/{name}"))))
    }

    /// The application segment (`live` in `live/studio`).
    pub fn app(&self) -> &str {
        self.0.split_once('/').map(|(a, _)| a).unwrap_or(&self.0)
    }

    /// The stream name segment (`studio` in `live/studio`).
    pub fn name(&self) -> &str {
        self.0.split_once('/').map(|(_, n)| n).unwrap_or("")
    }

    /// The whole path as `app/name`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate_segment(seg: &str, what: &str) -> Result<(), ModelError> {
    if seg.is_empty() || seg.len() > 128 {
        return Err(ModelError::InvalidPath(format!(
            "{what} must be 1 to 128 characters"
        )));
    }
    if seg == "." || seg == ".." {
        return Err(ModelError::InvalidPath(format!(
            "{what} may not be {seg:?}"
        )));
    }
    if let Some(c) = seg
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(ModelError::InvalidPath(format!(
            "{what} contains {c:?}; allowed are letters, digits, '_', '-' and '.'"
        )));
    }
    Ok(())
}

impl FromStr for StreamPath {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for StreamPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamPath({})", self.0)
    }
}

/// A media timestamp in 90 kHz ticks.
///
/// RTMP milliseconds and MPEG-TS 90 kHz ticks both convert exactly. Values are
/// extended past 32-bit RTMP wraparound by [`RtmpTimeUnwrapper`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Ticks per second.
    pub const HZ: i64 = 90_000;

    /// Converts milliseconds to a timestamp.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms * 90)
    }

    /// The timestamp in milliseconds, rounded down.
    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(90)
    }

    /// The timestamp in 90 kHz ticks.
    pub const fn ticks(self) -> i64 {
        self.0
    }
}

impl std::ops::Add for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Self) -> Self {
        Timestamp(self.0.saturating_add(rhs.0))
    }
}

impl std::ops::Sub for Timestamp {
    type Output = Timestamp;
    fn sub(self, rhs: Self) -> Self {
        Timestamp(self.0.saturating_sub(rhs.0))
    }
}

/// Extends 32-bit RTMP millisecond timestamps into a monotonic 64-bit timeline.
///
/// A jump backwards by more than half the 32-bit range is taken as a wrap.
#[derive(Debug, Default, Clone)]
pub struct RtmpTimeUnwrapper {
    last: Option<u32>,
    epoch: i64,
}

impl RtmpTimeUnwrapper {
    /// Creates an unwrapper with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the extended millisecond value for a 32-bit RTMP timestamp.
    pub fn unwrap_ms(&mut self, ts: u32) -> i64 {
        if let Some(last) = self.last {
            if ts < last && last - ts > 0x8000_0000 {
                self.epoch += 1 << 32;
            } else if ts > last && ts - last > 0x8000_0000 && self.epoch > 0 {
                // A late frame from before the wrap.
                self.last = Some(last);
                return self.epoch - (1 << 32) + i64::from(ts);
            }
        }
        self.last = Some(ts);
        self.epoch + i64::from(ts)
    }

    /// Converts to a [`Timestamp`].
    pub fn unwrap(&mut self, ts: u32) -> Timestamp {
        Timestamp::from_millis(self.unwrap_ms(ts))
    }
}

/// Identifies a track within one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub u32);

impl TrackId {
    /// The conventional video track of single-video streams (RTMP, most TS).
    pub const VIDEO: TrackId = TrackId(0);
    /// The conventional audio track of single-audio streams.
    pub const AUDIO: TrackId = TrackId(1);
}

/// Whether a track carries video or audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Video.
    Video,
    /// Audio.
    Audio,
}

/// Codec identifier without configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CodecId {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    H265,
    /// AV1.
    Av1,
    /// AAC.
    Aac,
    /// Opus.
    Opus,
    /// MPEG-1 Layer III.
    Mp3,
}

impl CodecId {
    /// Whether this codec is video or audio.
    pub fn kind(self) -> MediaKind {
        match self {
            CodecId::H264 | CodecId::H265 | CodecId::Av1 => MediaKind::Video,
            CodecId::Aac | CodecId::Opus | CodecId::Mp3 => MediaKind::Audio,
        }
    }

    /// A short lowercase name (`h264`, `aac`, ...).
    pub fn name(self) -> &'static str {
        match self {
            CodecId::H264 => "h264",
            CodecId::H265 => "h265",
            CodecId::Av1 => "av1",
            CodecId::Aac => "aac",
            CodecId::Opus => "opus",
            CodecId::Mp3 => "mp3",
        }
    }
}

impl fmt::Display for CodecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A codec with its configuration record, in the canonical layout.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// H.264; `config` is an AVCDecoderConfigurationRecord (ISO 14496-15).
    H264 {
        /// AVCDecoderConfigurationRecord.
        config: Bytes,
    },
    /// H.265; `config` is an HEVCDecoderConfigurationRecord (ISO 14496-15).
    H265 {
        /// HEVCDecoderConfigurationRecord.
        config: Bytes,
    },
    /// AV1; `config` is an AV1CodecConfigurationRecord.
    Av1 {
        /// AV1CodecConfigurationRecord.
        config: Bytes,
    },
    /// AAC; `config` is an AudioSpecificConfig (ISO 14496-3).
    Aac {
        /// AudioSpecificConfig.
        config: Bytes,
    },
    /// Opus; `config` is an OpusHead (may be empty).
    Opus {
        /// OpusHead.
        config: Bytes,
    },
    /// MP3, no configuration.
    Mp3,
}

impl Codec {
    /// The codec identifier.
    pub fn id(&self) -> CodecId {
        match self {
            Codec::H264 { .. } => CodecId::H264,
            Codec::H265 { .. } => CodecId::H265,
            Codec::Av1 { .. } => CodecId::Av1,
            Codec::Aac { .. } => CodecId::Aac,
            Codec::Opus { .. } => CodecId::Opus,
            Codec::Mp3 => CodecId::Mp3,
        }
    }

    /// The configuration record (empty for codecs without one).
    pub fn config(&self) -> &Bytes {
        static EMPTY: Bytes = Bytes::from_static(&[]);
        match self {
            Codec::H264 { config }
            | Codec::H265 { config }
            | Codec::Av1 { config }
            | Codec::Aac { config }
            | Codec::Opus { config } => config,
            Codec::Mp3 => &EMPTY,
        }
    }

    /// Builds a codec from its identifier and configuration record.
    pub fn from_config(id: CodecId, config: Bytes) -> Self {
        match id {
            CodecId::H264 => Codec::H264 { config },
            CodecId::H265 => Codec::H265 { config },
            CodecId::Av1 => Codec::Av1 { config },
            CodecId::Aac => Codec::Aac { config },
            CodecId::Opus => Codec::Opus { config },
            CodecId::Mp3 => Codec::Mp3,
        }
    }
}

/// Facts parsed from a codec configuration, for reporting (console, logs, probes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodecDetails {
    /// Profile name or number, e.g. `High` or `AAC-LC`.
    pub profile: Option<String>,
    /// Level, e.g. `4.0` for H.264 level 40.
    pub level: Option<String>,
    /// Video width in pixels.
    pub width: Option<u32>,
    /// Video height in pixels.
    pub height: Option<u32>,
    /// Audio sample rate in Hz.
    pub sample_rate: Option<u32>,
    /// Audio channel count.
    pub channels: Option<u8>,
}

/// One track of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackInfo {
    /// The track identifier, unique within its stream.
    pub id: TrackId,
    /// The codec and its configuration.
    pub codec: Codec,
    /// What the configuration says, where it parsed.
    pub details: CodecDetails,
}

impl TrackInfo {
    /// Builds a track, parsing the codec configuration for [`CodecDetails`].
    ///
    /// A configuration that does not parse still yields a track (details empty): the
    /// proxy forwards what it cannot interpret.
    pub fn new(id: TrackId, codec: Codec) -> Self {
        let details = crate::codec::details(&codec).unwrap_or_default();
        Self { id, codec, details }
    }

    /// Video or audio.
    pub fn kind(&self) -> MediaKind {
        self.codec.id().kind()
    }
}

/// Frame flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FrameFlags(u8);

impl FrameFlags {
    /// No flags.
    pub const NONE: FrameFlags = FrameFlags(0);
    /// A random access point: a video IDR/IRAP frame (audio frames are never marked).
    pub const KEYFRAME: FrameFlags = FrameFlags(1);
    /// The payload is the codec configuration record, not media.
    pub const CONFIG: FrameFlags = FrameFlags(2);
    /// The end of a video sequence (FLV "end of sequence").
    pub const END_OF_SEQUENCE: FrameFlags = FrameFlags(4);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: FrameFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two flag sets.
    pub const fn union(self, other: FrameFlags) -> FrameFlags {
        FrameFlags(self.0 | other.0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }
}

impl std::ops::BitOr for FrameFlags {
    type Output = FrameFlags;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

/// One access unit (or configuration record) of one track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The track it belongs to.
    pub track: TrackId,
    /// The codec of the payload.
    pub codec: CodecId,
    /// Presentation time.
    pub pts: Timestamp,
    /// Decode time.
    pub dts: Timestamp,
    /// Keyframe/config flags.
    pub flags: FrameFlags,
    /// The payload, in the canonical layout for `codec`.
    pub data: Bytes,
}

impl Frame {
    /// Whether this frame is a video keyframe.
    pub fn is_keyframe(&self) -> bool {
        self.flags.contains(FrameFlags::KEYFRAME)
    }

    /// Whether this frame carries the codec configuration.
    pub fn is_config(&self) -> bool {
        self.flags.contains(FrameFlags::CONFIG)
    }

    /// Video or audio.
    pub fn kind(&self) -> MediaKind {
        self.codec.kind()
    }
}

/// What a stream carries, as known when a subscriber starts or the stream changes.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamInfo {
    /// The stream path.
    pub path: StreamPath,
    /// Known tracks (with their latest configuration).
    pub tracks: Vec<TrackInfo>,
    /// Publisher metadata (`onMetaData` properties as strings), for display and relay.
    pub metadata: Vec<(String, MetaValue)>,
    /// A number that grows with every publish on this path.
    pub generation: u64,
}

impl StreamInfo {
    /// The track with the given id.
    pub fn track(&self, id: TrackId) -> Option<&TrackInfo> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// The first video track.
    pub fn video(&self) -> Option<&TrackInfo> {
        self.tracks.iter().find(|t| t.kind() == MediaKind::Video)
    }

    /// The first audio track.
    pub fn audio(&self) -> Option<&TrackInfo> {
        self.tracks.iter().find(|t| t.kind() == MediaKind::Audio)
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// A number.
    Number(f64),
    /// A string.
    Text(String),
    /// A boolean.
    Bool(bool),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_validation() {
        let p = StreamPath::new("live/studio").unwrap();
        assert_eq!(p.app(), "live");
        assert_eq!(p.name(), "studio");
        for bad in [
            "live",
            "live/",
            "/x",
            "live/a/b",
            "live/..",
            "li ve/x",
            "live/x?key=1",
        ] {
            assert!(StreamPath::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rtmp_wraparound_is_monotonic() {
        let mut u = RtmpTimeUnwrapper::new();
        assert_eq!(u.unwrap_ms(0xFFFF_FF00), 0xFFFF_FF00);
        assert_eq!(u.unwrap_ms(0x10), (1i64 << 32) + 0x10);
        // a late frame from before the wrap
        assert_eq!(u.unwrap_ms(0xFFFF_FFF0), 0xFFFF_FFF0);
        assert_eq!(u.unwrap_ms(0x20), (1i64 << 32) + 0x20);
    }

    #[test]
    fn millis_convert_exactly() {
        assert_eq!(Timestamp::from_millis(1000).ticks(), 90_000);
        assert_eq!(Timestamp(90_000).as_millis(), 1000);
    }
}
