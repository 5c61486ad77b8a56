//! Core frames → MPEG-TS messages for SRT: what players and destinations send.

use bytes::{Bytes, BytesMut};
use cthulhu_core::format::ts::{MuxConfig, TsError, TsMuxer};
use cthulhu_core::{Codec, Frame, MediaKind, StreamInfo, TrackInfo};

/// TS packets per SRT message: 7 × 188 = 1316 bytes, what every SRT sender uses.
pub const TS_PACKETS_PER_MESSAGE: usize = 7;
/// The payload of one SRT message.
pub const MESSAGE_LEN: usize = 188 * TS_PACKETS_PER_MESSAGE;

/// Muxes one subscription's frames into TS and cuts it into SRT messages.
///
/// The muxer is built on the first media frame, from the tracks known then (the
/// hub sends codec configuration first); a track appearing later, or a track
/// changing codec, rebuilds it (new PAT/PMT). After a (re)start the output begins
/// on a video keyframe when the stream has video.
#[derive(Default)]
pub struct TsPump {
    tracks: Vec<TrackInfo>,
    mux: Option<TsMuxer>,
    need_key: bool,
    buf: BytesMut,
}

impl std::fmt::Debug for TsPump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsPump")
            .field("tracks", &self.tracks.len())
            .field("muxing", &self.mux.is_some())
            .field("need_key", &self.need_key)
            .finish()
    }
}

impl TsPump {
    /// A pump waiting for its first session.
    pub fn new() -> Self {
        Self {
            need_key: true,
            ..Self::default()
        }
    }

    /// A publish session starts: forget the muxer, take the session's tracks.
    pub fn start(&mut self, info: &StreamInfo) {
        self.tracks = info.tracks.clone();
        self.mux = None;
        self.need_key = true;
        self.buf.clear();
    }

    /// Frames were dropped: resume on the next keyframe.
    pub fn gap(&mut self) {
        self.need_key = true;
    }

    fn has_video(&self) -> bool {
        self.tracks
            .iter()
            .any(|t| t.codec.id().kind() == MediaKind::Video)
    }

    /// Muxes one frame (configuration frames update the track list).
    pub fn frame(&mut self, f: &Frame) -> Result<(), TsError> {
        if f.is_config() {
            let codec = Codec::from_config(f.codec, f.data.clone());
            match self.tracks.iter_mut().find(|t| t.id == f.track) {
                Some(t) if t.codec.id() == f.codec => {
                    t.codec = codec;
                    if let Some(m) = &mut self.mux {
                        m.write_frame(f, &mut self.buf)?;
                    }
                }
                Some(t) => {
                    *t = TrackInfo::new(f.track, codec);
                    self.mux = None;
                }
                None => {
                    self.tracks.push(TrackInfo::new(f.track, codec));
                    self.tracks.sort_by_key(|t| t.id);
                    self.mux = None;
                }
            }
            return Ok(());
        }
        if !self.tracks.iter().any(|t| t.id == f.track) {
            // Media of a track whose configuration never came: nothing to mux it with.
            return Ok(());
        }
        if self.need_key {
            if self.has_video() && !(f.kind() == MediaKind::Video && f.is_keyframe()) {
                return Ok(());
            }
            self.need_key = false;
        }
        let mux = match &mut self.mux {
            Some(m) => m,
            None => self
                .mux
                .insert(TsMuxer::new(&self.tracks, MuxConfig::default())?),
        };
        mux.write_frame(f, &mut self.buf)
    }

    /// Bytes muxed and not yet taken.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Moves the muxed packets into `out` as messages of at most [`MESSAGE_LEN`]
    /// bytes (whole TS packets, no copy).
    pub fn take_messages(&mut self, out: &mut Vec<Bytes>) {
        let all = self.buf.split().freeze();
        let mut at = 0;
        while at < all.len() {
            let end = (at + MESSAGE_LEN).min(all.len());
            out.push(all.slice(at..end));
            at = end;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;
    use cthulhu_core::format::ts::{TsDemuxer, TsEvent};
    use cthulhu_core::{CodecId, FrameFlags, StreamPath, Timestamp, TrackId};

    /// A minimal AVC decoder configuration record (baseline 640x360 SPS/PPS).
    fn avc_config() -> Bytes {
        let sps: &[u8] = &[
            0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00,
            0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x58, 0xba, 0x80,
        ];
        let pps: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
        let mut v = vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1];
        v.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        v.extend_from_slice(sps);
        v.push(1);
        v.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        v.extend_from_slice(pps);
        Bytes::from(v)
    }

    fn frame(track: u32, codec: CodecId, ms: i64, flags: FrameFlags, data: Bytes) -> Frame {
        Frame {
            track: TrackId(track),
            codec,
            pts: Timestamp::from_millis(ms),
            dts: Timestamp::from_millis(ms),
            flags,
            data,
        }
    }

    fn idr(ms: i64, key: bool) -> Frame {
        // One length-prefixed NAL unit: IDR (5) or non-IDR (1) slice.
        let nal: &[u8] = if key {
            &[0x65, 0x88, 0x84, 0x00]
        } else {
            &[0x41, 0x9a, 0x00, 0x00]
        };
        let mut v = (nal.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(nal);
        let flags = if key {
            FrameFlags::KEYFRAME
        } else {
            FrameFlags::NONE
        };
        frame(0, CodecId::H264, ms, flags, Bytes::from(v))
    }

    fn info() -> StreamInfo {
        StreamInfo {
            path: StreamPath::new("live/x").unwrap(),
            tracks: Vec::new(),
            metadata: Vec::new(),
            generation: 1,
        }
    }

    #[test]
    fn starts_on_keyframe_and_cuts_whole_packets() {
        let mut p = TsPump::new();
        p.start(&info());
        p.frame(&frame(
            0,
            CodecId::H264,
            0,
            FrameFlags::CONFIG,
            avc_config(),
        ))
        .unwrap();
        p.frame(&idr(0, false)).unwrap();
        assert_eq!(p.pending(), 0, "nothing before the first keyframe");
        for i in 0..30 {
            p.frame(&idr(33 * i, i % 10 == 0)).unwrap();
        }
        let mut out = Vec::new();
        p.take_messages(&mut out);
        assert!(!out.is_empty());
        assert!(
            out.iter()
                .all(|m| m.len() % 188 == 0 && m.len() <= MESSAGE_LEN)
        );
        assert!(out.iter().all(|m| m.first() == Some(&0x47)));
        let mut d = TsDemuxer::new();
        for m in &out {
            d.push(m);
        }
        d.flush();
        let mut frames = 0;
        while let Some(ev) = d.poll_event() {
            match ev {
                TsEvent::Frame(f) if !f.is_config() => frames += 1,
                TsEvent::Error(e) => panic!("{e}"),
                _ => {}
            }
        }
        assert_eq!(frames, 30);
    }

    #[test]
    fn media_without_configuration_is_skipped() {
        let mut p = TsPump::new();
        p.start(&info());
        p.frame(&idr(0, true)).unwrap();
        assert_eq!(p.pending(), 0);
    }
}
