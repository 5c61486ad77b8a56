//! Fuzzes the MPEG-TS demuxer: bytes pushed in pieces of a size picked by the last
//! input byte (so that a real stream as a seed stays packet-aligned), every event drained, and every frame it yields written back through
//! `TsMuxer` for the tracks it announced. Any panic is a bug: SRT ingest feeds this
//! demuxer untrusted network input.
//!
//! PAT and PMT carry a CRC-32 that random mutation rarely gets right: start from a
//! seed corpus of real transport streams (see the README).

#![no_main]

use bytes::BytesMut;
use cthulhu_core::format::ts::{DemuxConfig, MuxConfig, TsDemuxer, TsEvent, TsMuxer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(&split) = data.last() else {
        return;
    };
    let mut demuxer = TsDemuxer::with_config(DemuxConfig {
        // small, so the limit is reached too
        max_pes_size: 64 * 1024,
    });
    let mut muxer = None;
    let mut out = BytesMut::new();
    for chunk in data.chunks(usize::from(split) * 3 + 1) {
        demuxer.push(chunk);
        drain(&mut demuxer, &mut muxer, &mut out);
    }
    demuxer.flush();
    drain(&mut demuxer, &mut muxer, &mut out);
    let _ = (demuxer.tracks(), demuxer.pcr(), demuxer.stats());
});

fn drain(demuxer: &mut TsDemuxer, muxer: &mut Option<TsMuxer>, out: &mut BytesMut) {
    while let Some(event) = demuxer.poll_event() {
        match event {
            TsEvent::Tracks(tracks) => {
                *muxer = TsMuxer::new(&tracks, MuxConfig::default()).ok();
            }
            TsEvent::Frame(frame) => {
                if let Some(m) = muxer.as_mut() {
                    let _ = m.write_frame(&frame, out);
                    assert_eq!(out.len() % 188, 0, "whole packets only");
                    out.clear();
                }
            }
            _ => {}
        }
    }
}
