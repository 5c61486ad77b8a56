//! The containers a recording can be written in, behind one small muxer trait over
//! `cthulhu_core::format`. One muxer per segment: every segment starts with its own
//! header (FLV header and sequence headers, PAT/PMT, fMP4 init segment).

use bytes::{BufMut, BytesMut};
use cthulhu_core::format::{flv, ts};
use cthulhu_core::{CodecId, Frame, MediaKind, Timestamp, TrackInfo};

use crate::SinkError;

/// The container of a recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Container {
    /// Fragmented MP4 (CMAF-style `moof`+`mdat` fragments starting at video keyframes).
    /// A file cut anywhere plays up to its last complete fragment.
    Fmp4,
    /// MPEG-TS. A file cut anywhere plays up to its last complete packet.
    Ts,
    /// FLV, as RTMP carries it. A file cut anywhere plays up to its last complete tag.
    Flv,
}

impl Container {
    /// The usual file extension (`mp4`, `ts`, `flv`).
    pub fn extension(self) -> &'static str {
        match self {
            Container::Fmp4 => "mp4",
            Container::Ts => "ts",
            Container::Flv => "flv",
        }
    }

    /// Whether the container can carry a codec.
    pub fn supports(self, codec: CodecId) -> bool {
        match self {
            Container::Ts => matches!(
                codec,
                CodecId::H264 | CodecId::H265 | CodecId::Aac | CodecId::Opus
            ),
            Container::Flv => true,
            Container::Fmp4 => matches!(
                codec,
                CodecId::H264 | CodecId::H265 | CodecId::Av1 | CodecId::Aac | CodecId::Opus
            ),
        }
    }
}

impl std::str::FromStr for Container {
    type Err = SinkError;

    /// `fmp4` (or `mp4`), `ts` (or `mpegts`), `flv`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fmp4" | "mp4" => Ok(Container::Fmp4),
            "ts" | "mpegts" => Ok(Container::Ts),
            "flv" => Ok(Container::Flv),
            other => Err(SinkError::Config(format!(
                "unknown container {other:?}; use fmp4, ts or flv"
            ))),
        }
    }
}

impl std::fmt::Display for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Container::Fmp4 => "fmp4",
            Container::Ts => "ts",
            Container::Flv => "flv",
        })
    }
}

/// Why a frame was not muxed.
#[derive(Debug)]
pub(crate) enum MuxIssue {
    /// The codec configuration or track set changed in a way this segment cannot carry:
    /// a new segment must start.
    NewSegment,
    /// The frame was skipped; the segment goes on.
    Skipped(String),
}

/// A muxer for one segment. Output is appended to a caller's buffer; the caller
/// writes it out in the order produced.
pub(crate) trait SegmentMuxer: Send {
    /// Appends the segment header. Called once, first.
    fn header(&mut self, out: &mut BytesMut);
    /// Appends one frame (configuration frames included).
    fn frame(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), MuxIssue>;
    /// Closes the fragment in progress, if the container has fragments (before a gap).
    fn flush(&mut self, out: &mut BytesMut);
    /// Appends what is still pending at the end of the segment.
    fn finish(&mut self, out: &mut BytesMut);
}

/// Creates the muxer of a segment with these tracks. `base`: the decode time of the
/// segment's first frame.
pub(crate) fn new_muxer(
    container: Container,
    tracks: &[TrackInfo],
    base: Timestamp,
) -> Result<Box<dyn SegmentMuxer>, SinkError> {
    if tracks.is_empty() {
        return Err(SinkError::Mux("no track to record".into()));
    }
    match container {
        Container::Ts => Ok(Box::new(TsSegment {
            mux: ts::TsMuxer::new(tracks, ts::MuxConfig::default())
                .map_err(|e| SinkError::Mux(e.to_string()))?,
        })),
        Container::Flv => Ok(Box::new(FlvSegment::new(tracks, base))),
        Container::Fmp4 => fmp4_arm::new(tracks),
    }
}

/// MPEG-TS: PAT/PMT first; the muxer repeats them and the parameter sets at keyframes.
/// Timestamps are kept as they are, so consecutive segments form one timeline.
struct TsSegment {
    mux: ts::TsMuxer,
}

impl SegmentMuxer for TsSegment {
    fn header(&mut self, out: &mut BytesMut) {
        self.mux.write_psi(out);
    }

    fn frame(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), MuxIssue> {
        self.mux.write_frame(frame, out).map_err(|e| match e {
            ts::TsError::UnknownTrack(_) | ts::TsError::UnsupportedCodec(_) => MuxIssue::NewSegment,
            other => MuxIssue::Skipped(other.to_string()),
        })
    }

    fn flush(&mut self, _out: &mut BytesMut) {}

    fn finish(&mut self, _out: &mut BytesMut) {}
}

/// FLV: the file header, then one tag per frame (configuration frames become sequence
/// headers). Timestamps start at 0 in every segment.
struct FlvSegment {
    base: Timestamp,
    has_audio: bool,
    has_video: bool,
}

impl FlvSegment {
    fn new(tracks: &[TrackInfo], base: Timestamp) -> Self {
        Self {
            base,
            has_audio: tracks.iter().any(|t| t.kind() == MediaKind::Audio),
            has_video: tracks.iter().any(|t| t.kind() == MediaKind::Video),
        }
    }
}

impl SegmentMuxer for FlvSegment {
    fn header(&mut self, out: &mut BytesMut) {
        out.put_slice(&flv::write_file_header(self.has_audio, self.has_video));
    }

    fn frame(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), MuxIssue> {
        if frame.data.is_empty()
            && !frame
                .flags
                .contains(cthulhu_core::FrameFlags::END_OF_SEQUENCE)
        {
            return Ok(());
        }
        let header = flv::frame_tag_header(frame).map_err(|e| MuxIssue::Skipped(e.to_string()))?;
        let size = header.len() + frame.data.len();
        let size32 =
            u32::try_from(size).map_err(|_| MuxIssue::Skipped(format!("tag of {size} bytes")))?;
        // Frames a little before the segment's first keyframe (audio interleaving)
        // start at 0: FLV timestamps are unsigned.
        let ms = (frame.dts - self.base)
            .as_millis()
            .clamp(0, i64::from(u32::MAX));
        let ms = u32::try_from(ms).unwrap_or(u32::MAX);
        let mut tag = [0u8; 11];
        flv::write_tag_header(flv::frame_tag_type(frame), size32, ms, &mut tag)
            .map_err(|e| MuxIssue::Skipped(e.to_string()))?;
        out.reserve(11 + size + 4);
        out.put_slice(&tag);
        out.put_slice(header.as_slice());
        out.put_slice(&frame.data);
        out.put_slice(&flv::previous_tag_size(size32));
        Ok(())
    }

    fn flush(&mut self, _out: &mut BytesMut) {}

    fn finish(&mut self, _out: &mut BytesMut) {}
}

/// Fragmented MP4 through `cthulhu_core::format::fmp4`.
mod fmp4_arm {
    use super::*;
    use cthulhu_core::format::fmp4;

    pub(super) fn new(tracks: &[TrackInfo]) -> Result<Box<dyn SegmentMuxer>, SinkError> {
        let mux = fmp4::Fmp4Muxer::new(tracks, fmp4::Fmp4Config::default())
            .map_err(|e| SinkError::Mux(e.to_string()))?;
        Ok(Box::new(Fmp4Segment {
            mux,
            tracks: tracks.to_vec(),
        }))
    }

    struct Fmp4Segment {
        mux: fmp4::Fmp4Muxer,
        tracks: Vec<TrackInfo>,
    }

    impl SegmentMuxer for Fmp4Segment {
        fn header(&mut self, out: &mut BytesMut) {
            self.mux.write_init(out);
        }

        fn frame(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), MuxIssue> {
            // The init segment carries the configuration it was made with.
            if frame.is_config()
                && self
                    .tracks
                    .iter()
                    .any(|t| t.id == frame.track && t.codec.config() == &frame.data)
            {
                return Ok(());
            }
            self.mux.push_frame(frame, out).map_err(|e| match e {
                fmp4::Fmp4Error::ConfigChanged { .. } => MuxIssue::NewSegment,
                other => MuxIssue::Skipped(other.to_string()),
            })
        }

        fn flush(&mut self, out: &mut BytesMut) {
            self.mux.flush(out);
        }

        fn finish(&mut self, out: &mut BytesMut) {
            self.mux.flush(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use cthulhu_core::{Codec, FrameFlags, TrackId};

    /// A minimal AVCDecoderConfigurationRecord (one SPS, one PPS) for 16x16 baseline.
    fn avc_config() -> Bytes {
        Bytes::from_static(&[
            0x01, 0x42, 0xC0, 0x0A, 0xFF, 0xE1, 0x00, 0x0A, 0x67, 0x42, 0xC0, 0x0A, 0xD9, 0x1E,
            0x84, 0x00, 0x00, 0x03, 0x01, 0x00, 0x04, 0x68, 0xCE, 0x3C, 0x80,
        ])
    }

    fn tracks() -> Vec<TrackInfo> {
        vec![
            TrackInfo::new(
                TrackId::VIDEO,
                Codec::H264 {
                    config: avc_config(),
                },
            ),
            TrackInfo::new(
                TrackId::AUDIO,
                Codec::Aac {
                    config: Bytes::from_static(&[0x11, 0x90]),
                },
            ),
        ]
    }

    fn frame(
        track: TrackId,
        codec: CodecId,
        ms: i64,
        flags: FrameFlags,
        data: &'static [u8],
    ) -> Frame {
        Frame {
            track,
            codec,
            pts: Timestamp::from_millis(ms),
            dts: Timestamp::from_millis(ms),
            flags,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn flv_segments_read_back_with_rebased_timestamps() {
        let mut m = new_muxer(Container::Flv, &tracks(), Timestamp::from_millis(10_000)).unwrap();
        let mut out = BytesMut::new();
        m.header(&mut out);
        let config = frame(
            TrackId::VIDEO,
            CodecId::H264,
            10_000,
            FrameFlags::CONFIG,
            &[],
        );
        let config = Frame {
            data: avc_config(),
            ..config
        };
        m.frame(&config, &mut out).unwrap();
        let key = frame(
            TrackId::VIDEO,
            CodecId::H264,
            10_000,
            FrameFlags::KEYFRAME,
            &[0, 0, 0, 2, 0x65, 0x88],
        );
        m.frame(&key, &mut out).unwrap();
        let early_audio = frame(
            TrackId::AUDIO,
            CodecId::Aac,
            9_990,
            FrameFlags::NONE,
            &[1, 2, 3],
        );
        m.frame(&early_audio, &mut out).unwrap();
        let later = frame(
            TrackId::VIDEO,
            CodecId::H264,
            10_040,
            FrameFlags::NONE,
            &[0, 0, 0, 2, 0x41, 0x9A],
        );
        m.frame(&later, &mut out).unwrap();
        m.finish(&mut out);
        let reader = flv::FlvReader::new(out.freeze()).unwrap();
        assert!(reader.has_audio() && reader.has_video());
        let tags: Vec<flv::FlvTag> = reader.map(Result::unwrap).collect();
        let times: Vec<u32> = tags.iter().map(|t| t.timestamp_ms).collect();
        assert_eq!(times, [0, 0, 0, 40]);
        let back = flv::video_to_frame(&tags[1].body, Timestamp(0), TrackId::VIDEO)
            .unwrap()
            .unwrap();
        assert!(back.is_keyframe());
        assert_eq!(back.data, key.data);
    }

    #[test]
    fn ts_segments_start_with_psi_and_ask_for_a_new_segment_on_a_new_track() {
        let video_only = &tracks()[..1];
        let mut m = new_muxer(Container::Ts, video_only, Timestamp(0)).unwrap();
        let mut out = BytesMut::new();
        m.header(&mut out);
        assert_eq!(out.len() % ts::PACKET_SIZE, 0);
        assert_eq!(out[0], ts::SYNC_BYTE);
        let key = frame(
            TrackId::VIDEO,
            CodecId::H264,
            0,
            FrameFlags::KEYFRAME,
            &[0, 0, 0, 2, 0x65, 0x88],
        );
        m.frame(&key, &mut out).unwrap();
        let audio = frame(
            TrackId::AUDIO,
            CodecId::Aac,
            0,
            FrameFlags::NONE,
            &[1, 2, 3],
        );
        assert!(matches!(
            m.frame(&audio, &mut out),
            Err(MuxIssue::NewSegment)
        ));
        assert_eq!(out.len() % ts::PACKET_SIZE, 0);
    }

    #[test]
    fn container_names() {
        assert_eq!("FMP4".parse::<Container>().unwrap(), Container::Fmp4);
        assert_eq!("mpegts".parse::<Container>().unwrap(), Container::Ts);
        assert!("mkv".parse::<Container>().is_err());
        assert_eq!(Container::Ts.extension(), "ts");
        assert!(!Container::Ts.supports(CodecId::Av1));
        assert!(Container::Flv.supports(CodecId::Mp3));
    }
}
