//! Hub fan-out: one publisher, N subscribers, all in one thread.
//!
//! One iteration sends one 16 KiB video frame (a keyframe every 60th) and drains every
//! subscriber with `drain_into`, so the time is the hub's own cost per frame: the
//! stream lock, one queue lock and push per subscriber, the wake-up, the pop and the
//! drop of each subscriber's clone. No sockets, no tasks, no wakers actually waiting.

// bench setup: failures here are programming errors, not inputs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// criterion_group! generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cthulhu_core::hub::SubscribeOptions;
use cthulhu_core::{
    CodecId, Frame, FrameFlags, Hub, HubConfig, StreamEvent, StreamPath, Subscriber, Timestamp,
    TrackId,
};

const FRAME_BYTES: usize = 16 * 1024;
const GOP_FRAMES: u64 = 60;
/// 30 fps in milliseconds, as whole 90 kHz ticks (3000 ticks = 33.3 ms).
const FRAME_TICKS: i64 = 3000;

/// A 1280x720 High profile avcC (ffmpeg/x264), so the stream has a real video track.
const AVCC_720P: &[u8] = &[
    0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50,
    0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83,
    0x19, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8, 0x00,
];

fn video(flags: FrameFlags, data: &Bytes, n: i64) -> Frame {
    Frame {
        track: TrackId::VIDEO,
        codec: CodecId::H264,
        pts: Timestamp(n * FRAME_TICKS),
        dts: Timestamp(n * FRAME_TICKS),
        flags,
        data: data.clone(),
    }
}

fn drain_all(subs: &mut [Subscriber], out: &mut Vec<StreamEvent>) -> usize {
    let mut n = 0;
    for sub in subs.iter_mut() {
        n += sub.drain_into(out, usize::MAX);
        out.clear();
    }
    n
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_fanout_16KiB");
    for subscribers in [10usize, 100, 1000] {
        let hub = Hub::new(HubConfig::default());
        let path = StreamPath::new("live/bench").unwrap();
        let publisher = hub.publish(&path).unwrap();
        let key = Bytes::from(vec![0x65u8; FRAME_BYTES]);
        let inter = Bytes::from(vec![0x41u8; FRAME_BYTES]);
        assert!(publisher.send(video(FrameFlags::CONFIG, &Bytes::from_static(AVCC_720P), 0)));
        assert!(publisher.send(video(FrameFlags::KEYFRAME, &key, 0)));
        let mut subs: Vec<Subscriber> = (0..subscribers)
            .map(|i| hub.subscribe(&path, SubscribeOptions::labelled(format!("bench:{i}"))))
            .collect();
        let mut out = Vec::with_capacity(64);
        // Each subscriber starts with Started, the avcC and the cached keyframe.
        assert_eq!(drain_all(&mut subs, &mut out), 3 * subscribers);

        // Zero copy: every subscriber gets the publisher's buffer itself.
        assert!(publisher.send(video(FrameFlags::NONE, &inter, 1)));
        for sub in &mut subs {
            match sub.try_recv() {
                Some(StreamEvent::Frame(f)) => assert_eq!(f.data.as_ptr(), inter.as_ptr()),
                other => panic!("expected the frame, got {other:?}"),
            }
        }

        let mut n: u64 = 2;
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
            b.iter(|| {
                let frame = if n.is_multiple_of(GOP_FRAMES) {
                    video(FrameFlags::KEYFRAME, &key, n as i64)
                } else {
                    video(FrameFlags::NONE, &inter, n as i64)
                };
                n += 1;
                publisher.send(frame);
                black_box(drain_all(&mut subs, &mut out))
            });
        });

        // Nothing was dropped: every subscriber kept up with every frame.
        for sub in &subs {
            assert_eq!(sub.stats().dropped_frames, 0);
        }
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
