//! Test fixtures: synthetic H.264 + AAC frames, a small MP4 box walker, and a
//! line-by-line playlist reader.

use bytes::Bytes;
use cthulhu_core::{Codec, CodecId, Frame, FrameFlags, Timestamp, TrackId, TrackInfo};

/// A minimal AVCDecoderConfigurationRecord (one SPS, one PPS) for 16x16 baseline.
pub(crate) fn avc_config() -> Bytes {
    Bytes::from_static(&[
        0x01, 0x42, 0xC0, 0x0A, 0xFF, 0xE1, 0x00, 0x0A, 0x67, 0x42, 0xC0, 0x0A, 0xD9, 0x1E, 0x84,
        0x00, 0x00, 0x03, 0x01, 0x00, 0x04, 0x68, 0xCE, 0x3C, 0x80,
    ])
}

/// AAC-LC, 48 kHz, stereo.
pub(crate) fn asc() -> Bytes {
    Bytes::from_static(&[0x11, 0x90])
}

pub(crate) fn tracks() -> Vec<TrackInfo> {
    vec![
        TrackInfo::new(
            TrackId::VIDEO,
            Codec::H264 {
                config: avc_config(),
            },
        ),
        TrackInfo::new(TrackId::AUDIO, Codec::Aac { config: asc() }),
    ]
}

pub(crate) fn config_frame(track: TrackId, codec: CodecId, data: Bytes) -> Frame {
    Frame {
        track,
        codec,
        pts: Timestamp(0),
        dts: Timestamp(0),
        flags: FrameFlags::CONFIG,
        data,
    }
}

/// One length-prefixed NAL unit of `size` bytes (IDR type for keyframes).
pub(crate) fn video(dts: i64, key: bool, size: usize) -> Frame {
    let mut data = Vec::with_capacity(size + 4);
    data.extend_from_slice(&(size as u32).to_be_bytes());
    data.push(if key { 0x65 } else { 0x41 });
    data.extend(std::iter::repeat_n(0xAB, size.saturating_sub(1)));
    Frame {
        track: TrackId::VIDEO,
        codec: CodecId::H264,
        pts: Timestamp(dts),
        dts: Timestamp(dts),
        flags: if key {
            FrameFlags::KEYFRAME
        } else {
            FrameFlags::NONE
        },
        data: Bytes::from(data),
    }
}

pub(crate) fn audio(dts: i64) -> Frame {
    Frame {
        track: TrackId::AUDIO,
        codec: CodecId::Aac,
        pts: Timestamp(dts),
        dts: Timestamp(dts),
        flags: FrameFlags::NONE,
        data: Bytes::from_static(&[0x21, 0x10, 0x05, 0x00, 0xA0, 0x1B]),
    }
}

/// `secs` of 30 fps video (a keyframe every `gop` frames) and 48 kHz AAC, in
/// decode order, from `start` ticks.
pub(crate) fn av_frames(start: i64, secs: f64, gop: usize) -> Vec<Frame> {
    let mut out = Vec::new();
    let end = start + (secs * 90_000.0) as i64;
    let mut v = 0usize;
    let mut a = 0i64;
    loop {
        let vd = start + (v as i64) * 3000;
        let ad = start + a * 1920;
        if vd >= end && ad >= end {
            break;
        }
        if vd <= ad {
            out.push(video(vd, v.is_multiple_of(gop), 300 + v % 50));
            v += 1;
        } else {
            out.push(audio(ad));
            a += 1;
        }
    }
    out
}

/// The top-level boxes of `data`: (fourcc, size). Errors when a box does not fit.
pub(crate) fn boxes(data: &[u8]) -> Result<Vec<(String, usize)>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let header = data
            .get(at..at + 8)
            .ok_or(format!("box header at {at} runs past the end"))?;
        let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let name = String::from_utf8_lossy(&header[4..8]).into_owned();
        if size < 8 || at + size > data.len() {
            return Err(format!("box {name} at {at} of size {size} does not fit"));
        }
        out.push((name, size));
        at += size;
    }
    Ok(out)
}

/// One playlist tag or URI line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Line {
    Tag(String, Option<String>),
    Uri(String),
}

/// Reads a playlist line by line; every line is a tag or a URI, none empty.
pub(crate) fn lines(text: &str) -> Vec<Line> {
    assert!(text.ends_with('\n'), "playlist ends with a newline");
    text.lines()
        .map(|l| {
            assert!(!l.is_empty(), "no empty lines");
            assert!(!l.contains('\r'));
            if let Some(tag) = l.strip_prefix('#') {
                match tag.split_once(':') {
                    Some((n, v)) => Line::Tag(n.into(), Some(v.into())),
                    None => Line::Tag(tag.into(), None),
                }
            } else {
                Line::Uri(l.into())
            }
        })
        .collect()
}

/// The attributes of an attribute list (quoted values unquoted).
pub(crate) fn attrs(list: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = list;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').expect("attribute has a value");
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').expect("closing quote");
            (
                q[..end].to_string(),
                q[end + 1..].strip_prefix(',').unwrap_or(""),
            )
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v.to_string(), n),
                None => (after.to_string(), ""),
            }
        };
        out.push((name.to_string(), value));
        rest = next;
    }
    out
}

pub(crate) fn attr<'a>(list: &'a [(String, String)], name: &str) -> Option<&'a str> {
    list.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn secs(s: &str) -> f64 {
    s.parse().expect("a decimal number")
}
