//! Fuzzes what cthulhu-rtmp parses itself from publisher messages: aggregate
//! messages (type 22) and audio/video message bodies through `ToCore`, on one
//! timeline. The first byte picks the message type, the next four the timestamp.
//! Any panic is a bug.

#![no_main]

use bytes::Bytes;
use cthulhu_rtmp::to_core::ToCore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    let Some((ts, body)) = rest.split_first_chunk::<4>() else { return };
    let ts = u32::from_be_bytes(*ts);
    let body = Bytes::copy_from_slice(body);
    let mut conv = ToCore::new();
    let _ = match kind % 3 {
        0 => conv.aggregate(&body, ts).map(|_| ()),
        1 => conv.video(&body, ts).map(|_| ()),
        _ => conv.audio(&body, ts).map(|_| ()),
    };
});
