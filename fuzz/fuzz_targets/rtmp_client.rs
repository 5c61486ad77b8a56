//! Fuzzes what the push client and `probe` parse from a destination server, the way
//! `cthulhu_rtmp::client`'s `ClientProto::input` does: every read goes through an
//! `InboundGuard` with the client's limits (the defaults, never publishing: a
//! server sends commands only; short commands allowed), all of it checked before any is parsed, then into rml_rtmp's
//! `ChunkDeserializer`, honouring Set Chunk Size; each message is decoded with
//! `to_rtmp_message` and the command replies are read as the client reads them
//! (`_result` / `_error` / `onStatus`, `fmsVer`, the stream id of `createStream`).
//!
//! Input: one byte that picks the read sizes, then what a server sends after the
//! handshake (S0+S1+S2).
//!
//! A panic inside rml_rtmp is contained (`catch_unwind`, as the client does: it
//! closes that connection) and is not a finding. A finding is: a panic anywhere
//! else, a stack overflow, running out of memory, or a message that rml_rtmp
//! completes although it breaks the guard's bounds.
//!
//! Runs on a thread with a 2 MiB stack, a Tokio worker's default.

#![no_main]

use cthulhu_fuzz::{Reads, contained, on_task_stack};
use cthulhu_rtmp::amf0;
use cthulhu_rtmp::inbound::{InboundGuard, InboundLimits};
use libfuzzer_sys::fuzz_target;
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::messages::{MessagePayload, RtmpMessage, UserControlEventType};

/// The client's read buffer (`BytesMut::with_capacity(8192)`).
const READ_BUF: usize = 8192;

fuzz_target!(|data: &[u8]| on_task_stack(data, run));

fn run(data: &[u8]) {
    let [split, input @ ..] = data else {
        return;
    };
    // As client.rs: each reply is decoded on its own and one that fails is ignored,
    // so short commands are not refused.
    let limits = InboundLimits {
        min_command_values: 0,
        ..InboundLimits::default()
    };
    let mut proto = Proto {
        de: ChunkDeserializer::new(),
        guard: InboundGuard::new(limits),
        limits,
        window: None,
    };
    let mut reads = Reads::new(*split);
    let mut rest = input;
    while !rest.is_empty() {
        let (read, after) = rest.split_at(reads.next(READ_BUF).min(rest.len()));
        rest = after;
        let Ok(msgs) = proto.input(read) else {
            return;
        };
        for m in &msgs {
            if handle_reply(m).is_err() {
                return;
            }
        }
    }
}

/// The connection closed (an error the client would report).
struct Closed;

struct Proto {
    de: ChunkDeserializer,
    guard: InboundGuard,
    limits: InboundLimits,
    window: Option<u32>,
}

impl Proto {
    /// `ClientProto::input` (acknowledgements and ping responses are not sent).
    fn input(&mut self, data: &[u8]) -> Result<Vec<MessagePayload>, Closed> {
        let mut rest = data;
        while !rest.is_empty() {
            let n = self.guard.check(rest).map_err(|_| Closed)?;
            assert!(
                n > 0 && n <= rest.len(),
                "guard returned {n} for {} bytes",
                rest.len()
            );
            rest = &rest[n..];
        }
        let mut out = Vec::new();
        let mut input = data;
        loop {
            let next = match contained(|| self.de.get_next_message(input)) {
                Some(Ok(next)) => next,
                _ => return Err(Closed),
            };
            input = &[];
            let Some(payload) = next else { break };
            // What passed the guard is within its bounds.
            assert!(
                payload.data.len() <= self.limits.max_command_bytes,
                "rml_rtmp completed a message of type {} with {} bytes",
                payload.type_id,
                payload.data.len()
            );
            if let Some(body) = amf0::decoded_body(payload.type_id, &payload.data) {
                let r = amf0::check(body, &self.limits.amf0);
                assert!(
                    r.is_ok(),
                    "rml_rtmp completed a type {} message the guard should have refused: {r:?}",
                    payload.type_id
                );
            }
            match decode(&payload) {
                Ok(RtmpMessage::SetChunkSize { size }) => {
                    self.de
                        .set_max_chunk_size(size as usize)
                        .map_err(|_| Closed)?;
                }
                Ok(RtmpMessage::WindowAcknowledgement { size }) => self.window = Some(size),
                Ok(RtmpMessage::UserControl {
                    event_type: UserControlEventType::PingRequest,
                    ..
                }) => {}
                _ => out.push(payload),
            }
        }
        Ok(out)
    }
}

/// `decode` in client.rs: rml_rtmp can panic on some messages.
fn decode(m: &MessagePayload) -> Result<RtmpMessage, Closed> {
    match contained(|| m.to_rtmp_message()) {
        Some(Ok(msg)) => Ok(msg),
        _ => Err(Closed),
    }
}

/// What `await_result`, `await_publish_start` and `notice_of` read from a reply.
fn handle_reply(m: &MessagePayload) -> Result<(), Closed> {
    let Ok(RtmpMessage::Amf0Command {
        command_name,
        command_object,
        additional_arguments,
        ..
    }) = decode(m)
    else {
        return Ok(());
    };
    let (level, code, desc) = status_of(&additional_arguments);
    let refused = format!("{code} {desc}").trim().to_owned();
    match command_name.as_str() {
        "_result" => {
            if let Amf0Value::Object(props) = &command_object
                && let Some(Amf0Value::Utf8String(v)) = props.get("fmsVer")
            {
                let _ = v.clone();
            }
            let _stream_id = match additional_arguments.first() {
                Some(Amf0Value::Number(n)) if *n >= 0.0 && *n < f64::from(u32::MAX) => {
                    Some(*n as u32)
                }
                _ => None,
            };
            Ok(())
        }
        "onStatus" if level == "error" || code.ends_with("BadName") => {
            let _ = refused;
            Err(Closed)
        }
        "_error" => Err(Closed),
        _ => Ok(()),
    }
}

/// `status_of` in client.rs.
fn status_of(args: &[Amf0Value]) -> (String, String, String) {
    for a in args {
        if let Amf0Value::Object(props) = a {
            let get = |k: &str| match props.get(k) {
                Some(Amf0Value::Utf8String(s)) => s.clone(),
                _ => String::new(),
            };
            return (get("level"), get("code"), get("description"));
        }
    }
    (String::new(), String::new(), String::new())
}
