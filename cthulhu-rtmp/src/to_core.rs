//! RTMP messages → core frames.

use std::collections::HashMap;

use bytes::Bytes;
use cthulhu_core::format::flv;
use cthulhu_core::{Frame, MetaValue, RtmpTimeUnwrapper, TrackId};
use rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;

use crate::error::RtmpError;

/// Converts one publisher's audio/video messages into frames on one timeline.
#[derive(Debug, Default)]
pub struct ToCore {
    clock: RtmpTimeUnwrapper,
}

impl ToCore {
    /// Creates a converter.
    pub fn new() -> Self {
        Self::default()
    }

    /// A video message (FLV video tag body). None when it carries nothing to forward.
    pub fn video(&mut self, body: &Bytes, timestamp: u32) -> Result<Option<Frame>, RtmpError> {
        let dts = self.clock.unwrap(timestamp);
        flv::video_to_frame(body, dts, TrackId::VIDEO).map_err(|e| RtmpError::Media(e.to_string()))
    }

    /// An audio message (FLV audio tag body). None when it carries nothing to forward
    /// (for example the empty AAC sequence header ffmpeg sends first when remuxing).
    pub fn audio(&mut self, body: &Bytes, timestamp: u32) -> Result<Option<Frame>, RtmpError> {
        let dts = self.clock.unwrap(timestamp);
        flv::audio_to_frame(body, dts, TrackId::AUDIO).map_err(|e| RtmpError::Media(e.to_string()))
    }

    /// An aggregate message (type 22): FLV tags back to back, each followed by its
    /// previous-tag-size. Sub-tag timestamps are relative to the first sub-tag and
    /// re-based on the message timestamp.
    pub fn aggregate(&mut self, body: &Bytes, timestamp: u32) -> Result<Vec<Frame>, RtmpError> {
        let mut frames = Vec::new();
        let mut rest = body.clone();
        let mut first_ts: Option<u32> = None;
        while !rest.is_empty() {
            if rest.len() < 11 {
                return Err(RtmpError::Protocol(
                    "truncated aggregate sub-tag header".into(),
                ));
            }
            let tag_type = rest[0] & 0x1F;
            let size =
                (usize::from(rest[1]) << 16) | (usize::from(rest[2]) << 8) | usize::from(rest[3]);
            let ts = (u32::from(rest[7]) << 24)
                | (u32::from(rest[4]) << 16)
                | (u32::from(rest[5]) << 8)
                | u32::from(rest[6]);
            if rest.len() < 11 + size + 4 {
                return Err(RtmpError::Protocol("truncated aggregate sub-tag".into()));
            }
            let sub = rest.slice(11..11 + size);
            let base = *first_ts.get_or_insert(ts);
            let abs = timestamp.wrapping_add(ts.wrapping_sub(base));
            let frame = match tag_type {
                8 => self.audio(&sub, abs)?,
                9 => self.video(&sub, abs)?,
                _ => None,
            };
            frames.extend(frame);
            rest = rest.slice(11 + size + 4..);
        }
        Ok(frames)
    }
}

/// Publisher metadata as the hub keeps it.
pub fn metadata(meta: &StreamMetadata) -> Vec<(String, MetaValue)> {
    let mut out = Vec::new();
    let mut num = |k: &str, v: Option<f64>| {
        if let Some(v) = v {
            out.push((k.to_owned(), MetaValue::Number(v)));
        }
    };
    num("width", meta.video_width.map(f64::from));
    num("height", meta.video_height.map(f64::from));
    num("videocodecid", meta.video_codec_id.map(f64::from));
    num("framerate", meta.video_frame_rate.map(f64::from));
    num("videodatarate", meta.video_bitrate_kbps.map(f64::from));
    num("audiocodecid", meta.audio_codec_id.map(f64::from));
    num("audiodatarate", meta.audio_bitrate_kbps.map(f64::from));
    num("audiosamplerate", meta.audio_sample_rate.map(f64::from));
    num("audiochannels", meta.audio_channels.map(f64::from));
    if let Some(s) = meta.audio_is_stereo {
        out.push(("stereo".into(), MetaValue::Bool(s)));
    }
    if let Some(e) = &meta.encoder {
        out.push(("encoder".into(), MetaValue::Text(e.clone())));
    }
    out
}

/// Converts an AMF0 object's properties into metadata values (numbers, strings, booleans).
pub fn metadata_from_amf(props: &HashMap<String, Amf0Value>) -> Vec<(String, MetaValue)> {
    let mut out: Vec<(String, MetaValue)> = props
        .iter()
        .filter_map(|(k, v)| {
            let v = match v {
                Amf0Value::Number(n) => MetaValue::Number(*n),
                Amf0Value::Boolean(b) => MetaValue::Bool(*b),
                Amf0Value::Utf8String(s) => MetaValue::Text(s.clone()),
                _ => return None,
            };
            Some((k.clone(), v))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cthulhu_core::{CodecId, Timestamp};

    fn sub_tag(tag_type: u8, ts: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag_type];
        let n = body.len() as u32;
        v.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        v.extend_from_slice(&[
            (ts >> 16) as u8,
            (ts >> 8) as u8,
            ts as u8,
            (ts >> 24) as u8,
        ]);
        v.extend_from_slice(&[0, 0, 0]);
        v.extend_from_slice(body);
        v.extend_from_slice(&(11 + n).to_be_bytes());
        v
    }

    #[test]
    fn aggregate_messages_are_split_and_rebased() {
        let video = [0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88];
        let audio = [0xAF, 1, 0x21, 0x10];
        let mut body = sub_tag(9, 1000, &video);
        body.extend(sub_tag(8, 1021, &audio));
        let frames = ToCore::new().aggregate(&Bytes::from(body), 5000).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(
            (frames[0].codec, frames[0].dts),
            (CodecId::H264, Timestamp::from_millis(5000))
        );
        assert!(frames[0].is_keyframe());
        assert_eq!(&frames[0].data[..], &video[5..]);
        assert_eq!(
            (frames[1].codec, frames[1].dts),
            (CodecId::Aac, Timestamp::from_millis(5021))
        );
        assert_eq!(&frames[1].data[..], &audio[2..]);
    }

    #[test]
    fn truncated_aggregate_is_an_error() {
        let mut body = sub_tag(9, 0, &[0x17, 1, 0, 0, 0, 1]);
        body.truncate(body.len() - 3);
        assert!(ToCore::new().aggregate(&Bytes::from(body), 0).is_err());
        assert!(
            ToCore::new()
                .aggregate(&Bytes::from_static(&[9, 0, 0]), 0)
                .is_err()
        );
    }
}
