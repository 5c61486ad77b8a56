//! What bounding a publisher's input costs: rml_rtmp's `ServerSession` parsing a
//! publisher's chunk stream alone, and behind an `InboundGuard` as the server runs it.
//!
//! The input is what a publisher sends after `publish` is accepted: 30 video messages
//! of 16 KiB and 43 audio messages of 400 bytes (one second of a 4 Mbit/s stream) at
//! chunk size 4096, fed in 16 KiB reads (the server's publisher read buffer).
//! Throughput is the input bytes.

// bench setup: failures here are programming errors, not inputs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// criterion_group! generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cthulhu_rtmp::{InboundGuard, InboundLimits};
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;

fn message(type_id: u8, stream_id: u32, ts: u32, data: Vec<u8>) -> MessagePayload {
    MessagePayload {
        timestamp: RtmpTimestamp::new(ts),
        message_stream_id: stream_id,
        type_id,
        data: Bytes::from(data),
    }
}

fn command(ser: &mut ChunkSerializer, stream_id: u32, values: Vec<Amf0Value>) -> Vec<u8> {
    let body = rml_amf0::serialize(&values).unwrap();
    ser.serialize(&message(20, stream_id, 0, body), false, false)
        .unwrap()
        .bytes
}

/// (commands up to an accepted publish, one second of media).
fn publisher_input() -> (Vec<u8>, Vec<u8>) {
    let mut ser = ChunkSerializer::new();
    let mut setup = Vec::new();
    let mut app = std::collections::HashMap::new();
    app.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
    setup.extend(command(
        &mut ser,
        0,
        vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(app),
        ],
    ));
    setup.extend(command(
        &mut ser,
        0,
        vec![
            Amf0Value::Utf8String("createStream".into()),
            Amf0Value::Number(2.0),
            Amf0Value::Null,
        ],
    ));
    setup.extend(command(
        &mut ser,
        1,
        vec![
            Amf0Value::Utf8String("publish".into()),
            Amf0Value::Number(3.0),
            Amf0Value::Null,
            Amf0Value::Utf8String("s".into()),
            Amf0Value::Utf8String("live".into()),
        ],
    ));
    setup.extend(
        ser.set_max_chunk_size(4096, RtmpTimestamp::new(0))
            .unwrap()
            .bytes,
    );
    let mut media = Vec::new();
    for i in 0..30u32 {
        let mut v = vec![0x27, 1, 0, 0, 0];
        v.resize(16 * 1024, 0x5A);
        media.extend(
            ser.serialize(&message(9, 1, i * 33, v), false, false)
                .unwrap()
                .bytes,
        );
        for j in 0..2u32 {
            let mut a = vec![0xAF, 1];
            a.resize(400, 0x21);
            let ts = i * 33 + j * 21;
            media.extend(
                ser.serialize(&message(8, 1, ts, a), false, false)
                    .unwrap()
                    .bytes,
            );
        }
    }
    (setup, media)
}

/// A session (and guard) that has accepted the publish.
fn publishing(setup: &[u8], guarded: bool) -> (ServerSession, Option<InboundGuard>) {
    let (mut session, _) = ServerSession::new(ServerSessionConfig::new()).unwrap();
    let mut guard = guarded.then(|| InboundGuard::new(InboundLimits::default()));
    let mut pending = vec![setup.to_vec()];
    while let Some(data) = pending.pop() {
        let mut rest: &[u8] = &data;
        while !rest.is_empty() {
            let n = guard
                .as_mut()
                .map_or(rest.len(), |g| g.check(rest).unwrap());
            let results = session.handle_input(&rest[..n]).unwrap();
            for r in results {
                if let ServerSessionResult::RaisedEvent(ev) = r {
                    let id = match ev {
                        ServerSessionEvent::ConnectionRequested { request_id, .. } => request_id,
                        ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                            if let Some(g) = guard.as_mut() {
                                g.start_publishing();
                            }
                            request_id
                        }
                        _ => continue,
                    };
                    session.accept_request(id).unwrap();
                }
            }
            rest = &rest[n..];
        }
    }
    (session, guard)
}

fn inbound(c: &mut Criterion) {
    let (setup, media) = publisher_input();
    let mut group = c.benchmark_group("publisher_input_4mbps_1s");
    group.throughput(Throughput::Bytes(media.len() as u64));
    group.bench_function("rml_rtmp_only", |b| {
        let (mut session, _) = publishing(&setup, false);
        b.iter(|| {
            for read in media.chunks(16 * 1024) {
                black_box(session.handle_input(read).unwrap());
            }
        })
    });
    group.bench_function("guard_then_rml_rtmp", |b| {
        let (mut session, guard) = publishing(&setup, true);
        let mut guard = guard.unwrap();
        b.iter(|| {
            for read in media.chunks(16 * 1024) {
                let mut rest = read;
                while !rest.is_empty() {
                    let n = guard.check(rest).unwrap();
                    black_box(session.handle_input(&rest[..n]).unwrap());
                    rest = &rest[n..];
                }
            }
        })
    });
    group.bench_function("guard_only", |b| {
        let (_, guard) = publishing(&setup, true);
        let mut guard = guard.unwrap();
        b.iter(|| {
            for read in media.chunks(16 * 1024) {
                black_box(guard.check(read).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, inbound);
criterion_main!(benches);
