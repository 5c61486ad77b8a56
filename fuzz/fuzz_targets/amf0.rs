//! Fuzzes the bounded AMF0 scan (`cthulhu_rtmp::amf0::check`) against the decoder
//! it protects (rml_amf0), on every part of a message body rml_rtmp decodes as AMF0
//! (`decoded_body` for types 15, 17, 18 and 20).
//!
//! Invariants:
//! * the scan never panics, whatever the bytes;
//! * a body it passes as complete decodes with rml_amf0, to no deeper nesting than
//!   the scan measured; one it calls malformed fails to decode;
//! * what rml_rtmp then makes of the message (`to_rtmp_message`, under
//!   `catch_unwind` as the server does) and our metadata conversion of any object
//!   in it do not panic outside rml_rtmp.
//!
//! The decoder recurses without a bound: it is only called once the scan passed.

#![no_main]

use std::io::Cursor;

use bytes::Bytes;
use cthulhu_fuzz::{contained, depth};
use cthulhu_rtmp::amf0::{self, Amf0Limits};
use libfuzzer_sys::fuzz_target;
use rml_amf0::Amf0Value;
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::time::RtmpTimestamp;

fuzz_target!(|data: &[u8]| {
    let limits = Amf0Limits::default();
    scan_and_decode(data, &limits);
    // Type 17 skips a leading zero: the only body that differs from the others.
    if data.first() == Some(&0) {
        scan_and_decode(&data[1..], &limits);
    }
    for type_id in [20u8, 18, 17, 15] {
        let Some(body) = amf0::decoded_body(type_id, data) else {
            panic!("type {type_id} has an AMF0 body");
        };
        let Ok(scanned) = amf0::check(body, &limits) else {
            continue;
        };
        if !scanned.complete {
            continue;
        }
        // The message layer on top: what rml_rtmp makes of a body that passed.
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            message_stream_id: 1,
            type_id,
            data: Bytes::copy_from_slice(data),
        };
        if let Some(Ok(msg)) = contained(|| payload.to_rtmp_message()) {
            use rml_rtmp::messages::RtmpMessage;
            let values: Vec<Amf0Value> = match msg {
                RtmpMessage::Amf0Command {
                    command_object,
                    additional_arguments,
                    ..
                } => std::iter::once(command_object)
                    .chain(additional_arguments)
                    .collect(),
                RtmpMessage::Amf0Data { values } => values,
                _ => Vec::new(),
            };
            for v in &values {
                metadata_of(v);
            }
        }
    }
});

fn scan_and_decode(body: &[u8], limits: &Amf0Limits) {
    let Ok(scanned) = amf0::check(body, limits) else {
        // A bound broke: the server refuses the message; nothing decodes it.
        return;
    };
    assert!(scanned.depth <= limits.max_depth, "{scanned:?}");
    assert!(scanned.values <= limits.max_values, "{scanned:?}");
    // The scan stops where the decoder stops, so the decoder's recursion is bounded
    // by the scan's depth even on malformed input.
    let decoded = rml_amf0::deserialize(&mut Cursor::new(body));
    if scanned.complete {
        let values = match decoded {
            Ok(v) => v,
            Err(e) => panic!("scan passed {scanned:?} but rml_amf0 failed: {e:?}"),
        };
        let deepest = values.iter().map(depth).max().unwrap_or(0);
        // Repeated property names collapse in the decoder's map, so its nesting can
        // only be shallower than what was scanned.
        assert!(
            deepest <= scanned.depth,
            "decoded depth {deepest} > scanned {scanned:?}"
        );
        // What rml_amf0 writes back passes the scan at the depth it has.
        if let Ok(bytes) = rml_amf0::serialize(&values) {
            let again = amf0::check(
                &bytes,
                &Amf0Limits {
                    max_depth: limits.max_depth,
                    max_values: usize::MAX,
                },
            );
            match again {
                Ok(s) => {
                    assert!(s.complete, "re-encoded body is malformed: {s:?}");
                    assert_eq!(s.depth, deepest, "re-encoded depth");
                }
                Err(e) => panic!("re-encoded body refused: {e:?}"),
            }
        }
        for v in &values {
            metadata_of(v);
        }
    } else {
        assert!(
            decoded.is_err(),
            "scan says malformed ({scanned:?}) but rml_amf0 decoded {decoded:?}"
        );
    }
}

/// Our metadata conversion of every object in a value.
fn metadata_of(v: &Amf0Value) {
    match v {
        Amf0Value::Object(props) => {
            let _ = cthulhu_rtmp::to_core::metadata_from_amf(props);
            props.values().for_each(metadata_of);
        }
        Amf0Value::StrictArray(items) => items.iter().for_each(metadata_of),
        _ => {}
    }
}
