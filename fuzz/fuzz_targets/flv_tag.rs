//! Fuzzes FLV tag body parsing and conversion to core frames, and the FLV file
//! reader. Any panic is a bug: these parsers take untrusted network input.

#![no_main]

use bytes::Bytes;
use cthulhu_core::format::flv;
use cthulhu_core::{Timestamp, TrackId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let _ = flv::parse_video(&body);
    let _ = flv::parse_audio(&body);
    let dts = Timestamp::from_millis(1000);
    // Whatever converts must convert back to a tag body without panicking.
    if let Ok(Some(frame)) = flv::video_to_frame(&body, dts, TrackId::VIDEO) {
        let _ = flv::frame_to_tag_body(&frame);
    }
    if let Ok(Some(frame)) = flv::audio_to_frame(&body, dts, TrackId::AUDIO) {
        let _ = flv::frame_to_tag_body(&frame);
    }
    if let Ok(reader) = flv::FlvReader::new(body) {
        for tag in reader.flatten() {
            let _ = flv::parse_video(&tag.body);
            let _ = flv::parse_audio(&tag.body);
        }
    }
});
