//! RTMP chunk serialization of video frames through `FromCore::frame`.
//!
//! One iteration turns one frame into its chunk segments at chunk size 4096: the FLV
//! tag header and chunk headers are written, the payload is only sliced. Throughput is
//! the frame's payload bytes.

// bench setup: failures here are programming errors, not inputs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// criterion_group! generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cthulhu_core::{CodecId, Frame, FrameFlags, Timestamp, TrackId};
use cthulhu_rtmp::from_core::FromCore;

const CHUNK_SIZE: u32 = 4096;

fn keyframe(len: usize) -> Frame {
    // Length-prefixed NAL units as the hub carries them: one IDR slice filling the frame.
    let mut data = Vec::with_capacity(len);
    data.extend_from_slice(&((len - 4) as u32).to_be_bytes());
    data.push(0x65);
    let mut x: u32 = 0x1234_5678;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push(x as u8);
    }
    Frame {
        track: TrackId::VIDEO,
        codec: CodecId::H264,
        pts: Timestamp::from_millis(1_040),
        dts: Timestamp::from_millis(1_000),
        flags: FrameFlags::KEYFRAME,
        data: Bytes::from(data),
    }
}

fn chunking(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtmp_chunk_4096");
    for (name, len) in [("16KiB", 16 * 1024), ("200KiB", 200 * 1024)] {
        let frame = keyframe(len);
        let mut ser = FromCore::new(CHUNK_SIZE, 1);
        let mut out: Vec<Bytes> = Vec::with_capacity(256);

        // Zero copy: the payload bytes in the output all point into the frame's buffer.
        ser.frame(&frame, &mut out).unwrap();
        let range = frame.data.as_ptr_range();
        let sliced: usize = out
            .iter()
            .filter(|s| range.contains(&s.as_ptr()))
            .map(Bytes::len)
            .sum();
        assert_eq!(sliced, len);
        out.clear();

        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                out.clear();
                ser.frame(black_box(&frame), &mut out).unwrap();
                black_box(out.len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, chunking);
criterion_main!(benches);
