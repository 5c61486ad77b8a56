//! FLV tag bodies → core frames: `video_to_frame` on an AVC NALU tag, `audio_to_frame`
//! on an AAC raw tag, and a whole in-memory file through `FlvReader`.
//!
//! Parsing reads the few header bytes and slices the payload (no copy), so its cost
//! does not grow with the payload; the byte throughput is that of a forwarder that
//! parses every tag it relays.

// bench setup: failures here are programming errors, not inputs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// criterion_group! generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cthulhu_core::format::flv::{self, TAG_AUDIO, TAG_VIDEO};
use cthulhu_core::{Timestamp, TrackId};

/// Deterministic filler standing in for entropy-coded slice data.
fn noise(out: &mut Vec<u8>, len: usize, seed: u32) {
    let mut x = seed | 1;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(x as u8);
    }
}

fn nal(out: &mut Vec<u8>, header: u8, len: usize, seed: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(header);
    noise(out, len - 1, seed);
}

/// A legacy AVC NALU tag body as x264 + ffmpeg send it: frame type and codec, packet
/// type 1, composition time 80 ms, then length-prefixed NAL units (an access unit
/// delimiter, an SEI and one slice filling the rest).
fn avc_tag(keyframe: bool, len: usize, seed: u32) -> Bytes {
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(&[if keyframe { 0x17 } else { 0x27 }, 0x01, 0x00, 0x00, 0x50]);
    body.extend_from_slice(&[0, 0, 0, 2, 0x09, 0xf0]);
    nal(&mut body, 0x06, 24, seed ^ 0xA5A5);
    let slice = len - body.len() - 4;
    nal(&mut body, if keyframe { 0x65 } else { 0x41 }, slice, seed);
    Bytes::from(body)
}

/// An AAC raw tag body: 0xAF (AAC, 44.1 kHz, stereo), packet type 1, one frame of
/// 370 bytes (AAC-LC at 128 kbit/s, 1024 samples at 44.1 kHz).
fn aac_tag(seed: u32) -> Bytes {
    let mut body = vec![0xAF, 0x01];
    noise(&mut body, 370, seed);
    Bytes::from(body)
}

/// Two seconds of 30 fps video (a 64 KiB keyframe, then 12 KiB frames) and 44.1 kHz
/// AAC, interleaved by timestamp, as an FLV file.
fn two_second_file() -> Bytes {
    let mut tags: Vec<(u32, u8, Bytes)> = Vec::new();
    for i in 0..60u32 {
        let len = if i == 0 { 64 * 1024 } else { 12 * 1024 };
        tags.push((i * 100 / 3, TAG_VIDEO, avc_tag(i == 0, len, i)));
    }
    for i in 0..87u32 {
        tags.push((i * 1024 * 1000 / 44_100, TAG_AUDIO, aac_tag(i + 1000)));
    }
    tags.sort_by_key(|(ts, ty, _)| (*ts, *ty));
    let mut file = flv::write_file_header(true, true).to_vec();
    for (ts, ty, body) in tags {
        let mut header = [0u8; 11];
        flv::write_tag_header(ty, body.len() as u32, ts, &mut header).unwrap();
        file.extend_from_slice(&header);
        file.extend_from_slice(&body);
        file.extend_from_slice(&flv::previous_tag_size(body.len() as u32));
    }
    Bytes::from(file)
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("flv_parse");

    let video = avc_tag(true, 16 * 1024, 7);
    let frame = flv::video_to_frame(&video, Timestamp(0), TrackId::VIDEO)
        .unwrap()
        .unwrap();
    assert!(frame.is_keyframe());
    assert_eq!(
        frame.data.as_ptr(),
        video[5..].as_ptr(),
        "payload is a slice"
    );
    group.throughput(Throughput::Bytes(video.len() as u64));
    group.bench_function("video_to_frame/avc_16KiB", |b| {
        b.iter(|| flv::video_to_frame(black_box(&video), Timestamp(90_000), TrackId::VIDEO))
    });

    let audio = aac_tag(3);
    let frame = flv::audio_to_frame(&audio, Timestamp(0), TrackId::AUDIO)
        .unwrap()
        .unwrap();
    assert_eq!(
        frame.data.as_ptr(),
        audio[2..].as_ptr(),
        "payload is a slice"
    );
    group.throughput(Throughput::Bytes(audio.len() as u64));
    group.bench_function("audio_to_frame/aac_372B", |b| {
        b.iter(|| flv::audio_to_frame(black_box(&audio), Timestamp(90_000), TrackId::AUDIO))
    });

    let file = two_second_file();
    group.throughput(Throughput::Bytes(file.len() as u64));
    group.bench_function("flv_reader/2s_file", |b| {
        b.iter(|| {
            let mut frames = 0usize;
            for tag in flv::FlvReader::new(black_box(file.clone())).unwrap() {
                let tag = tag.unwrap();
                let dts = Timestamp::from_millis(tag.timestamp_ms.into());
                let frame = match tag.tag_type {
                    TAG_VIDEO => flv::video_to_frame(&tag.body, dts, TrackId::VIDEO),
                    _ => flv::audio_to_frame(&tag.body, dts, TrackId::AUDIO),
                };
                frames += usize::from(frame.unwrap().is_some());
            }
            assert_eq!(frames, 147);
            frames
        })
    });

    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
