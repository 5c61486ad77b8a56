//! Fuzzes codec configuration parsing (H.264, HEVC, AAC, AV1, Opus), parameter
//! sets, ADTS headers and keyframe scanning. Any panic is a bug.

#![no_main]

use bytes::Bytes;
use cthulhu_core::Codec;
use cthulhu_core::codec::{self, aac, av1, h264, h265, opus};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let record = Bytes::copy_from_slice(data);
    if let Ok(c) = h264::parse_avc_config(&record) {
        let _ = c.parse_sps();
        let _ = c.to_bytes();
    }
    if let Ok(c) = h265::parse_hevc_config(&record) {
        let _ = c.parse_sps();
        let _ = c.to_bytes();
    }
    let _ = h264::parse_sps(data);
    let _ = h265::parse_sps(data);
    if let Ok(asc) = aac::parse_asc(data) {
        let _ = asc.to_bytes();
        let _ = asc.adts_header(data.len());
    }
    let _ = aac::parse_adts(data);
    let _ = av1::parse_av1_config(data);
    let _ = opus::parse_opus_head(data);
    for len_size in 1..=4 {
        let _ = codec::h264_is_keyframe(data, len_size);
        let _ = codec::h265_is_keyframe(data, len_size);
    }
    for c in [
        Codec::H264 { config: record.clone() },
        Codec::H265 { config: record.clone() },
        Codec::Av1 { config: record.clone() },
        Codec::Aac { config: record.clone() },
        Codec::Opus { config: record },
    ] {
        let _ = codec::details(&c);
    }
});
