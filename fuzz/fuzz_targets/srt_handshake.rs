//! Fuzzes what the SRT listener parses from untrusted datagrams before
//! srt-protocol sees them (handshake header, conclusion extensions, the
//! rejection reply built from a request), and the stream id a caller sends
//! (access-control `#!::` syntax, percent-decoding, redaction for logs).
//! Any panic is a bug: one datagram must never end the listener.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cthulhu_srt::fuzz_api::inspect_datagram(data);
    let text = String::from_utf8_lossy(data);
    if let Ok(req) = cthulhu_srt::streamid::parse(Some(&text)) {
        let _ = req.access_request(&text, None);
    }
    let _ = cthulhu_srt::streamid::redact(&text);
});
