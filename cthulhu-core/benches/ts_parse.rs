//! MPEG-TS demux and mux throughput on a realistic stream: 10 s of 30 fps H.264 at
//! 4 Mbit/s (what x264 makes of 1280x720: a ~100 KB keyframe every 2 s, ~15 KB
//! inter frames) and 128 kbit/s 48 kHz AAC, interleaved by DTS.
//!
//! - `demux`: the transport stream pushed in 1316-byte pieces (7 packets, the SRT
//!   payload size) through `TsDemuxer`, every event drained. Each video access
//!   unit is copied once into the length-prefixed layout; AAC frames are slices.
//! - `mux`: the core frames through `TsMuxer` into one buffer.
//!
//! Both report throughput in bytes of transport stream.

// bench setup: failures here are programming errors, not inputs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// criterion_group! generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cthulhu_core::codec::aac::AudioSpecificConfig;
use cthulhu_core::codec::h264::AvcConfig;
use cthulhu_core::format::ts::{MuxConfig, TsDemuxer, TsEvent, TsMuxer};
use cthulhu_core::{Codec, CodecId, Frame, FrameFlags, Timestamp, TrackId, TrackInfo};

/// Deterministic filler standing in for entropy-coded data; never zero, so it never
/// looks like a start code.
fn noise(out: &mut Vec<u8>, len: usize, seed: u32) {
    let mut x = seed | 1;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(x as u8 | 0x01);
    }
}

/// A length-prefixed NAL unit of `len` bytes (header included).
fn nal(out: &mut Vec<u8>, header: u8, len: usize, seed: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(header);
    noise(out, len - 1, seed);
}

/// The tracks and frames of the stream, in mux order.
fn stream() -> (Vec<TrackInfo>, Vec<Frame>) {
    // x264's SPS/PPS for 1280x720 High
    let sps = Bytes::from_static(&[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
    ]);
    let pps = Bytes::from_static(&[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0]);
    let avcc = AvcConfig::from_parameter_sets(vec![sps], vec![pps])
        .unwrap()
        .to_bytes()
        .unwrap();
    let asc = AudioSpecificConfig::new(2, 48_000, 2).to_bytes().unwrap();
    let tracks = vec![
        TrackInfo::new(
            TrackId::VIDEO,
            Codec::H264 {
                config: avcc.clone(),
            },
        ),
        TrackInfo::new(
            TrackId::AUDIO,
            Codec::Aac {
                config: asc.clone(),
            },
        ),
    ];
    let frame = |track, codec, pts: i64, dts: i64, flags, data| Frame {
        track,
        codec,
        pts: Timestamp(pts),
        dts: Timestamp(dts),
        flags,
        data,
    };
    let mut frames = vec![
        frame(
            TrackId::VIDEO,
            CodecId::H264,
            0,
            0,
            FrameFlags::CONFIG,
            avcc,
        ),
        frame(TrackId::AUDIO, CodecId::Aac, 0, 0, FrameFlags::CONFIG, asc),
    ];
    let mut timed = Vec::new();
    for i in 0..300i64 {
        let key = i % 60 == 0;
        let mut data = Vec::new();
        if key {
            nal(&mut data, 0x06, 600, 1); // x264's SEI
            nal(&mut data, 0x65, 100_000, i as u32);
        } else {
            nal(&mut data, 0x41, 15_250, i as u32);
        }
        let flags = if key {
            FrameFlags::KEYFRAME
        } else {
            FrameFlags::NONE
        };
        let dts = i * 3000;
        timed.push(frame(
            TrackId::VIDEO,
            CodecId::H264,
            dts + 6000,
            dts,
            flags,
            Bytes::from(data),
        ));
    }
    for i in 0..469i64 {
        let mut data = Vec::new();
        noise(&mut data, 341, i as u32 + 7);
        let ts = i * 1920;
        timed.push(frame(
            TrackId::AUDIO,
            CodecId::Aac,
            ts,
            ts,
            FrameFlags::NONE,
            Bytes::from(data),
        ));
    }
    timed.sort_by_key(|f| f.dts);
    frames.extend(timed);
    (tracks, frames)
}

fn mux(tracks: &[TrackInfo], frames: &[Frame], out: &mut BytesMut) {
    let mut mux = TsMuxer::new(tracks, MuxConfig::default()).unwrap();
    for f in frames {
        mux.write_frame(f, out).unwrap();
    }
}

fn demux(ts: &[u8]) -> usize {
    let mut d = TsDemuxer::new();
    let mut frames = 0;
    for chunk in ts.chunks(1316) {
        d.push(chunk);
        while let Some(event) = d.poll_event() {
            match event {
                TsEvent::Frame(_) => frames += 1,
                TsEvent::Error(e) => panic!("{e}"),
                _ => {}
            }
        }
    }
    d.flush();
    while let Some(event) = d.poll_event() {
        frames += usize::from(matches!(event, TsEvent::Frame(_)));
    }
    frames
}

fn bench(c: &mut Criterion) {
    let (tracks, frames) = stream();
    let mut ts = BytesMut::new();
    mux(&tracks, &frames, &mut ts);
    let ts = ts.freeze();
    assert_eq!(demux(&ts), frames.len());
    eprintln!(
        "ts_parse: 10 s stream, {} frames, {} bytes of TS ({:.2} Mbit/s)",
        frames.len(),
        ts.len(),
        ts.len() as f64 * 8.0 / 10.0 / 1e6
    );

    let mut group = c.benchmark_group("ts_parse");
    group.throughput(Throughput::Bytes(ts.len() as u64));
    group.sample_size(30);
    group.bench_function("demux/10s_4mbps_h264_aac", |b| {
        b.iter(|| demux(black_box(&ts)))
    });
    let mut out = BytesMut::with_capacity(ts.len());
    group.bench_function("mux/10s_4mbps_h264_aac", |b| {
        b.iter(|| {
            out.clear();
            mux(&tracks, black_box(&frames), &mut out);
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
