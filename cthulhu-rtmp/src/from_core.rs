//! Core frames → RTMP messages, chunked without copying payloads.

use bytes::Bytes;
use cthulhu_core::format::flv;
use cthulhu_core::{CodecId, Frame, MediaKind, MetaValue, StreamInfo};
use rml_amf0::Amf0Value;

use crate::chunk::{
    CSID_AUDIO, CSID_DATA, CSID_VIDEO, Chunker, Message, TYPE_AUDIO, TYPE_DATA_AMF0, TYPE_VIDEO,
};
use crate::error::RtmpError;

/// Serializes frames and metadata for one outbound RTMP stream.
#[derive(Debug)]
pub struct FromCore {
    chunker: Chunker,
    stream_id: u32,
}

impl FromCore {
    /// A serializer for message stream `stream_id` at the given outbound chunk size.
    pub fn new(chunk_size: u32, stream_id: u32) -> Self {
        Self {
            chunker: Chunker::new(chunk_size),
            stream_id,
        }
    }

    /// Appends one frame as an RTMP audio or video message.
    pub fn frame(&mut self, frame: &Frame, out: &mut Vec<Bytes>) -> Result<(), RtmpError> {
        let header = flv::frame_tag_header(frame).map_err(|e| RtmpError::Media(e.to_string()))?;
        let (csid, type_id) = match frame.kind() {
            MediaKind::Video => (CSID_VIDEO, TYPE_VIDEO),
            MediaKind::Audio => (CSID_AUDIO, TYPE_AUDIO),
        };
        self.chunker.push(
            Message {
                csid,
                type_id,
                stream_id: self.stream_id,
                // RTMP timestamps are 32-bit milliseconds that wrap.
                timestamp: frame.dts.as_millis() as u32,
                prefix: header.as_slice(),
                payload: &frame.data,
            },
            out,
        )?;
        Ok(())
    }

    /// Appends an `onMetaData` data message describing `info`. Publishing clients wrap
    /// it in `@setDataFrame` (`for_publish`), servers send it bare to players.
    pub fn metadata(
        &mut self,
        info: &StreamInfo,
        for_publish: bool,
        out: &mut Vec<Bytes>,
    ) -> Result<(), RtmpError> {
        let mut values = Vec::with_capacity(3);
        if for_publish {
            values.push(Amf0Value::Utf8String("@setDataFrame".into()));
        }
        values.push(Amf0Value::Utf8String("onMetaData".into()));
        values.push(Amf0Value::Object(metadata_object(info)));
        let bytes = rml_amf0::serialize(&values)
            .map_err(|e| RtmpError::Media(format!("metadata: {e:?}")))?;
        let payload = Bytes::from(bytes);
        self.chunker.push(
            Message {
                csid: CSID_DATA,
                type_id: TYPE_DATA_AMF0,
                stream_id: self.stream_id,
                timestamp: 0,
                prefix: &[],
                payload: &payload,
            },
            out,
        )?;
        Ok(())
    }
}

/// The `onMetaData` properties for a stream: the publisher's own, corrected by what the
/// codec configurations say.
pub fn metadata_object(info: &StreamInfo) -> std::collections::HashMap<String, Amf0Value> {
    let mut props: std::collections::HashMap<String, Amf0Value> = info
        .metadata
        .iter()
        .map(|(k, v)| {
            let v = match v {
                MetaValue::Number(n) => Amf0Value::Number(*n),
                MetaValue::Text(s) => Amf0Value::Utf8String(s.clone()),
                MetaValue::Bool(b) => Amf0Value::Boolean(*b),
            };
            (k.clone(), v)
        })
        .collect();
    if let Some(v) = info.video() {
        let id = match v.codec.id() {
            CodecId::H264 => Some(7.0),
            // Enhanced RTMP: the FourCC as a number.
            CodecId::H265 => Some(f64::from(u32::from_be_bytes(*b"hvc1"))),
            CodecId::Av1 => Some(f64::from(u32::from_be_bytes(*b"av01"))),
            _ => None,
        };
        if let Some(id) = id {
            props.insert("videocodecid".into(), Amf0Value::Number(id));
        }
        if let Some(w) = v.details.width {
            props.insert("width".into(), Amf0Value::Number(f64::from(w)));
        }
        if let Some(h) = v.details.height {
            props.insert("height".into(), Amf0Value::Number(f64::from(h)));
        }
    }
    if let Some(a) = info.audio() {
        let id = match a.codec.id() {
            CodecId::Aac => Some(10.0),
            CodecId::Mp3 => Some(2.0),
            _ => None,
        };
        if let Some(id) = id {
            props.insert("audiocodecid".into(), Amf0Value::Number(id));
        }
        if let Some(sr) = a.details.sample_rate {
            props.insert("audiosamplerate".into(), Amf0Value::Number(f64::from(sr)));
        }
        if let Some(ch) = a.details.channels {
            props.insert("stereo".into(), Amf0Value::Boolean(ch >= 2));
            props.insert("audiochannels".into(), Amf0Value::Number(f64::from(ch)));
        }
    }
    props.insert("server".into(), Amf0Value::Utf8String("Cthulhu".into()));
    props
}
