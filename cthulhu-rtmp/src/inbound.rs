//! Bounds on what a peer sends, checked before rml_rtmp parses it.
//!
//! rml_rtmp's chunk deserializer accepts any message its 24-bit length allows (16 MiB)
//! from anyone, holds it in memory until complete, and hands AMF0 bodies to rml_amf0,
//! which recurses without a bound ([`crate::amf0`]). [`InboundGuard`] sees every byte
//! first. It follows the chunk stream exactly as rml_rtmp 0.8's deserializer frames it
//! (the same header formats, inherited fields, extended timestamps and chunk size
//! changes), so the messages it judges are the messages rml_rtmp will decode, and it
//! refuses, before rml_rtmp sees them:
//!
//! * a message longer than the connection's current bound, as soon as its header is
//!   read: small ([`InboundLimits::max_command_bytes`]) until a publish is accepted,
//!   then [`InboundLimits::max_media_bytes`] for audio, video and aggregates;
//! * an AMF0 body that nests too deep or holds too many values, and a command of
//!   fewer than three values (rml_rtmp panics on one);
//! * more distinct chunk streams than [`InboundLimits::max_chunk_streams`];
//! * chunks of two messages interleaved, and a header in the middle of a message that
//!   changes its length or type: rml_rtmp keeps one message in progress and would
//!   splice them (a video message completed as a command, or one that grows without
//!   end);
//! * a chunk size of zero.
//!
//! The guard copies only the bodies rml_rtmp decodes as AMF0 or as a chunk size
//! (bounded by the command limit); media payloads are counted, not copied.

use std::collections::HashMap;

use crate::amf0::{self, Amf0Error, Amf0Limits};

/// Message types of RTMP that matter here.
mod ty {
    pub(super) const SET_CHUNK_SIZE: u8 = 1;
    pub(super) const AUDIO: u8 = 8;
    pub(super) const VIDEO: u8 = 9;
    pub(super) const COMMAND_AMF3: u8 = 17;
    pub(super) const COMMAND_AMF0: u8 = 20;
    pub(super) const AGGREGATE: u8 = 22;
}

/// A timestamp field of this value announces an extended timestamp.
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;
/// The chunk size every RTMP peer starts with.
const INITIAL_CHUNK_SIZE: usize = 128;
/// The largest chunk size rml_rtmp accepts.
const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;

/// Bounds on one connection's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundLimits {
    /// Largest message before a publish is accepted (every message), and largest
    /// non-media message after. Default 64 KiB: a `connect` is a few hundred bytes,
    /// `onMetaData` a few KiB.
    pub max_command_bytes: usize,
    /// Largest audio, video or aggregate message once publishing. Default 8 MiB: an
    /// intra frame of a 100 Mbit/s 4K stream fits; nginx-rtmp's 1 MiB does not.
    pub max_media_bytes: usize,
    /// Distinct chunk streams one connection may use. Default 64 (encoders use 3 to 8).
    pub max_chunk_streams: usize,
    /// Bounds of each AMF0 body.
    pub amf0: Amf0Limits,
    /// Fewest top-level values a command may hold. Default 3 (name, transaction id,
    /// command object): rml_rtmp's session panics on fewer. A client that decodes
    /// each message on its own (and ignores what fails) may set 0.
    pub min_command_values: usize,
}

impl Default for InboundLimits {
    fn default() -> Self {
        Self {
            max_command_bytes: 64 * 1024,
            max_media_bytes: 8 * 1024 * 1024,
            max_chunk_streams: 64,
            amf0: Amf0Limits::default(),
            min_command_values: 3,
        }
    }
}

/// Why input was refused. The connection must close: its chunk stream cannot be
/// resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// A message longer than the bound that applies to it.
    #[error("message of type {type_id} is {len} bytes, over the {limit}-byte limit {phase}")]
    MessageTooLarge {
        /// Its type id.
        type_id: u8,
        /// Its announced length.
        len: usize,
        /// The bound.
        limit: usize,
        /// "before publishing" or "while publishing".
        phase: &'static str,
    },
    /// An AMF0 body beyond its bounds.
    #[error("message of type {type_id}: {source}")]
    Amf0 {
        /// Its type id.
        type_id: u8,
        /// The bound it broke.
        source: Amf0Error,
    },
    /// A command without a name, transaction id and command object (rml_rtmp
    /// panics on one).
    #[error("command message of type {type_id} holds only {values} values")]
    ShortCommand {
        /// Its type id.
        type_id: u8,
        /// Its top-level values.
        values: usize,
    },
    /// Too many distinct chunk stream ids.
    #[error("more than {limit} chunk streams")]
    TooManyChunkStreams {
        /// The bound.
        limit: usize,
    },
    /// A chunk of another message, or a new header, while a message is incomplete.
    #[error("chunk on stream {csid} interrupts an incomplete message on stream {open}")]
    Interleaved {
        /// The chunk stream of the interrupting chunk.
        csid: u32,
        /// The chunk stream of the incomplete message.
        open: u32,
    },
    /// A compressed header on a chunk stream that has had no full one.
    #[error("chunk stream {csid} starts without a full header")]
    NoPreviousHeader {
        /// The chunk stream.
        csid: u32,
    },
    /// A Set Chunk Size message rml_rtmp would refuse or that makes no sense.
    #[error("invalid chunk size {size}")]
    BadChunkSize {
        /// The size asked for (0 when the message was too short to hold one).
        size: u32,
    },
}

/// The fields of a chunk stream's last header that later headers inherit.
#[derive(Clone, Copy, Debug, Default)]
struct Header {
    timestamp_field: u32,
    length: usize,
    type_id: u8,
}

/// Where the parser is within a chunk.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// The basic header: format and chunk stream id (1 to 3 bytes).
    Basic,
    /// The message header (0, 3, 7 or 11 bytes) and extended timestamp (0 or 4).
    Header { fmt: u8, csid: u32 },
    /// Payload bytes of the current chunk still to come.
    Payload { left: usize },
}

/// Follows one peer's chunk stream and refuses what breaks [`InboundLimits`].
#[derive(Debug)]
pub struct InboundGuard {
    limits: InboundLimits,
    publishing: bool,
    chunk_size: usize,
    stage: Stage,
    /// Bytes of a field that arrived split across reads.
    pending: Vec<u8>,
    headers: HashMap<u32, Header>,
    /// The message in progress: its chunk stream, header and bytes received so far.
    csid: u32,
    header: Header,
    received: usize,
    /// Its body, when rml_rtmp will decode it (AMF0, chunk size).
    body: Option<Vec<u8>>,
}

impl InboundGuard {
    /// A guard for a new connection (after the handshake), before any publish.
    pub fn new(limits: InboundLimits) -> Self {
        Self {
            limits,
            publishing: false,
            chunk_size: INITIAL_CHUNK_SIZE,
            stage: Stage::Basic,
            pending: Vec::new(),
            headers: HashMap::new(),
            csid: 0,
            header: Header::default(),
            received: 0,
            body: None,
        }
    }

    /// Publishing was accepted: media messages may now be up to
    /// [`InboundLimits::max_media_bytes`].
    pub fn start_publishing(&mut self) {
        self.publishing = true;
    }

    /// Checks the next bytes of the connection. Returns how many of them may be handed
    /// to the session now: all, or fewer when a command message ends before the end of
    /// `data` (its answer may change the bounds for what follows; call again with the
    /// rest). An error means the connection must close; no byte of `data` may then be
    /// handed on.
    pub fn check(&mut self, data: &[u8]) -> Result<usize, InboundError> {
        let mut pos = 0;
        while pos < data.len() {
            let rest = data.get(pos..).unwrap_or_default();
            match self.stage {
                Stage::Basic => {
                    let Some(((fmt, csid), used)) =
                        self.field(rest, basic_header_len, basic_header)
                    else {
                        return Ok(data.len());
                    };
                    pos += used;
                    if fmt != 0 && !self.headers.contains_key(&csid) {
                        return Err(InboundError::NoPreviousHeader { csid });
                    }
                    self.stage = Stage::Header { fmt, csid };
                }
                Stage::Header { fmt, csid } => {
                    let inherited = match fmt {
                        0 => Header::default(),
                        _ => *self
                            .headers
                            .get(&csid)
                            .ok_or(InboundError::NoPreviousHeader { csid })?,
                    };
                    let need = |b: &[u8]| message_header_len(fmt, inherited, b);
                    let Some((header, used)) =
                        self.field(rest, need, |b| parse_message_header(fmt, inherited, b))
                    else {
                        return Ok(data.len());
                    };
                    pos += used;
                    self.start_chunk(csid, header)?;
                }
                Stage::Payload { left } => {
                    let n = left.min(rest.len());
                    if let Some(body) = &mut self.body {
                        body.extend_from_slice(rest.get(..n).unwrap_or_default());
                    }
                    pos += n;
                    self.received += n;
                    if n < left {
                        self.stage = Stage::Payload { left: left - n };
                        continue;
                    }
                    self.stage = Stage::Basic;
                    if self.received == self.header.length {
                        let type_id = self.header.type_id;
                        self.end_message()?;
                        if matches!(type_id, ty::COMMAND_AMF0 | ty::COMMAND_AMF3) {
                            return Ok(pos);
                        }
                    }
                }
            }
        }
        Ok(pos)
    }

    /// Reads a field of `len(bytes so far)` bytes that may arrive split across calls.
    /// Returns the parsed value and the bytes of `rest` used, or None when `rest` ran
    /// out (the bytes are kept).
    fn field<T>(
        &mut self,
        rest: &[u8],
        len: impl Fn(&[u8]) -> usize,
        parse: impl Fn(&[u8]) -> T,
    ) -> Option<(T, usize)> {
        if self.pending.is_empty() {
            let need = len(rest);
            if rest.len() >= need {
                return Some((parse(rest.get(..need)?), need));
            }
        }
        // Slow path: accumulate byte by byte (fields are at most 18 bytes).
        let mut used = 0;
        for &b in rest {
            if self.pending.len() >= len(&self.pending) {
                break;
            }
            self.pending.push(b);
            used += 1;
        }
        if self.pending.len() < len(&self.pending) {
            return None;
        }
        let v = parse(&self.pending);
        self.pending.clear();
        Some((v, used))
    }

    fn start_chunk(&mut self, csid: u32, header: Header) -> Result<(), InboundError> {
        let in_progress = self.received > 0 && self.received < self.header.length;
        // rml_rtmp continues the message in progress whatever the chunk, taking the
        // length and type of the latest header: only chunks of the same stream that
        // keep both may follow (rml_rtmp itself sends full headers there for a chunk
        // size change split into several chunks).
        let same = csid == self.csid
            && header.length == self.header.length
            && header.type_id == self.header.type_id;
        if in_progress && !same {
            return Err(InboundError::Interleaved {
                csid,
                open: self.csid,
            });
        }
        if !self.headers.contains_key(&csid) && self.headers.len() >= self.limits.max_chunk_streams
        {
            return Err(InboundError::TooManyChunkStreams {
                limit: self.limits.max_chunk_streams,
            });
        }
        self.headers.insert(csid, header);
        if !in_progress {
            self.begin_message(csid, header)?;
        }
        // rml_rtmp reads min(left, chunk size) when the message is longer than a
        // chunk, else the whole message.
        let left = self.header.length - self.received;
        let chunk = if self.header.length > self.chunk_size {
            left.min(self.chunk_size)
        } else {
            left
        };
        self.stage = Stage::Payload { left: chunk };
        if self.header.length == 0 {
            self.stage = Stage::Basic;
            self.end_message()?;
        }
        Ok(())
    }

    fn begin_message(&mut self, csid: u32, header: Header) -> Result<(), InboundError> {
        let media = matches!(header.type_id, ty::AUDIO | ty::VIDEO | ty::AGGREGATE);
        let (limit, phase) = match (media, self.publishing) {
            (true, true) => (self.limits.max_media_bytes, "while publishing"),
            (false, true) => (self.limits.max_command_bytes, "while publishing"),
            (_, false) => (self.limits.max_command_bytes, "before publishing"),
        };
        if header.length > limit {
            return Err(InboundError::MessageTooLarge {
                type_id: header.type_id,
                len: header.length,
                limit,
                phase,
            });
        }
        self.csid = csid;
        self.header = header;
        self.received = 0;
        let keep = header.type_id == ty::SET_CHUNK_SIZE
            || amf0::decoded_body(header.type_id, &[]).is_some();
        self.body = keep.then(|| Vec::with_capacity(header.length));
        Ok(())
    }

    fn end_message(&mut self) -> Result<(), InboundError> {
        self.received = 0;
        let Some(body) = self.body.take() else {
            return Ok(());
        };
        let type_id = self.header.type_id;
        if type_id == ty::SET_CHUNK_SIZE {
            let size = body
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or(InboundError::BadChunkSize { size: 0 })?;
            if size == 0 || size > MAX_CHUNK_SIZE {
                return Err(InboundError::BadChunkSize { size });
            }
            self.chunk_size = size as usize;
        } else if let Some(amf) = amf0::decoded_body(type_id, &body) {
            let scanned = amf0::check(amf, &self.limits.amf0)
                .map_err(|source| InboundError::Amf0 { type_id, source })?;
            let command = matches!(type_id, ty::COMMAND_AMF0 | ty::COMMAND_AMF3);
            if command && scanned.complete && scanned.top_level < self.limits.min_command_values {
                return Err(InboundError::ShortCommand {
                    type_id,
                    values: scanned.top_level,
                });
            }
        }
        Ok(())
    }
}

/// Length of the basic header, from its first byte.
fn basic_header_len(b: &[u8]) -> usize {
    match b.first().map(|b| b & 0x3F) {
        Some(0) => 2,
        Some(1) => 3,
        _ => 1,
    }
}

/// Format and chunk stream id (as rml_rtmp numbers them) of a whole basic header.
fn basic_header(b: &[u8]) -> (u8, u32) {
    let byte = |i: usize| u32::from(b.get(i).copied().unwrap_or(0));
    let first = b.first().copied().unwrap_or(0);
    let csid = match first & 0x3F {
        0 => byte(1) + 64,
        1 => byte(2) * 256 + byte(1) + 64,
        x => u32::from(x),
    };
    (first >> 6, csid)
}

/// Length of the message header plus extended timestamp for format `fmt`, given
/// the bytes of it read so far (the timestamp field decides the extension).
fn message_header_len(fmt: u8, inherited: Header, so_far: &[u8]) -> usize {
    let base = match fmt {
        0 => 11,
        1 => 7,
        2 => 3,
        _ => 0,
    };
    let field = if fmt == 3 {
        Some(inherited.timestamp_field)
    } else {
        u24(so_far, 0)
    };
    match field {
        Some(f) if f >= EXTENDED_TIMESTAMP => base + 4,
        Some(_) => base,
        // Not known yet: at least the timestamp field.
        None => base.max(3),
    }
}

/// The header a chunk leaves for its chunk stream.
fn parse_message_header(fmt: u8, inherited: Header, b: &[u8]) -> Header {
    let mut h = inherited;
    if fmt < 3 {
        h.timestamp_field = u24(b, 0).unwrap_or(0);
    }
    if fmt < 2 {
        h.length = u24(b, 3).unwrap_or(0) as usize;
        h.type_id = b.get(6).copied().unwrap_or(0);
    }
    h
}

fn u24(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 3)?;
    Some((u32::from(*s.first()?) << 16) | (u32::from(*s.get(1)?) << 8) | u32::from(*s.get(2)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::time::RtmpTimestamp;

    fn payload(type_id: u8, csid_hint: u32, data: Vec<u8>) -> MessagePayload {
        MessagePayload {
            timestamp: RtmpTimestamp::new(csid_hint * 40),
            message_stream_id: if type_id == 20 { 0 } else { 1 },
            type_id,
            data: Bytes::from(data),
        }
    }

    /// A `connect` whose command object nests `depth` objects deep.
    fn deep_connect(depth: usize) -> Vec<u8> {
        let mut body = vec![2, 0, 7];
        body.extend_from_slice(b"connect");
        body.push(0);
        body.extend_from_slice(&1f64.to_be_bytes());
        // Never closed, 4 bytes a level, as the attack sent it.
        for _ in 0..depth {
            body.extend_from_slice(&[3, 0, 1, b'a']);
        }
        let mut ser = ChunkSerializer::new();
        ser.serialize(&payload(20, 0, body), false, false)
            .unwrap()
            .bytes
    }

    /// Feeds `data` in pieces of at most `step` bytes; returns the pieces' ends
    /// where the guard stopped early (after commands).
    fn feed(g: &mut InboundGuard, data: &[u8], step: usize) -> Result<Vec<usize>, InboundError> {
        let mut stops = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let end = (at + step).min(data.len());
            let n = g.check(&data[at..end])?;
            assert!(n > 0);
            at += n;
            if at < end {
                stops.push(at);
            }
        }
        Ok(stops)
    }

    #[test]
    fn a_deeply_nested_connect_is_refused_on_a_small_stack() {
        let r = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let mut g = InboundGuard::new(InboundLimits::default());
                // 10,000 levels: the attack as seen (about 40 KB); 10^6 does not fit a
                // message at all and is refused by its size.
                let small = feed(&mut g, &deep_connect(10_000), 4096);
                let mut g = InboundGuard::new(InboundLimits::default());
                let huge = feed(&mut g, &deep_connect(1_000_000), 4096);
                (small, huge)
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            matches!(
                r.0,
                Err(InboundError::Amf0 {
                    type_id: 20,
                    source: Amf0Error::TooDeep { limit: 32 }
                })
            ),
            "{:?}",
            r.0
        );
        assert!(
            matches!(r.1, Err(InboundError::MessageTooLarge { type_id: 20, .. })),
            "{:?}",
            r.1
        );
    }

    #[test]
    fn a_huge_command_is_refused_at_its_header() {
        let mut g = InboundGuard::new(InboundLimits::default());
        // A 12 MiB command: fmt 0 on chunk stream 3, type 20; only the header is sent.
        let len = 12u32 << 20;
        let mut h = vec![3, 0, 0, 0];
        h.extend_from_slice(&len.to_be_bytes()[1..]);
        h.push(20);
        h.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            g.check(&h),
            Err(InboundError::MessageTooLarge {
                type_id: 20,
                len: 12 << 20,
                limit: 64 * 1024,
                phase: "before publishing"
            })
        );
    }

    #[test]
    fn media_is_bounded_by_the_phase() {
        let mut ser = ChunkSerializer::new();
        let video = ser
            .serialize(&payload(9, 1, vec![0x17; 200_000]), false, false)
            .unwrap()
            .bytes;
        let mut g = InboundGuard::new(InboundLimits::default());
        assert!(matches!(
            g.check(&video),
            Err(InboundError::MessageTooLarge { type_id: 9, .. })
        ));
        let mut g = InboundGuard::new(InboundLimits::default());
        g.start_publishing();
        assert_eq!(feed(&mut g, &video, 1000), Ok(vec![]));
        let too_big = InboundLimits {
            max_media_bytes: 100_000,
            ..InboundLimits::default()
        };
        let mut g = InboundGuard::new(too_big);
        g.start_publishing();
        assert!(g.check(&video).is_err());
    }

    #[test]
    fn the_guard_stops_after_each_command() {
        let mut ser = ChunkSerializer::new();
        let mut bytes = Vec::new();
        let cmd = rml_amf0::serialize(&vec![
            rml_amf0::Amf0Value::Utf8String("publish".into()),
            rml_amf0::Amf0Value::Number(5.0),
            rml_amf0::Amf0Value::Null,
        ])
        .unwrap();
        bytes.extend(
            ser.serialize(&payload(20, 0, cmd.clone()), false, false)
                .unwrap()
                .bytes,
        );
        let first = bytes.len();
        bytes.extend(
            ser.serialize(&payload(9, 1, vec![0x17; 300]), false, false)
                .unwrap()
                .bytes,
        );
        bytes.extend(
            ser.serialize(&payload(20, 2, cmd), false, false)
                .unwrap()
                .bytes,
        );
        let second = bytes.len();
        bytes.extend(
            ser.serialize(&payload(8, 3, vec![0xAF; 10]), false, false)
                .unwrap()
                .bytes,
        );
        let mut g = InboundGuard::new(InboundLimits::default());
        assert_eq!(feed(&mut g, &bytes, bytes.len()), Ok(vec![first, second]));
    }

    #[test]
    fn interleaved_chunks_and_many_chunk_streams_are_refused() {
        // A 300-byte message on stream 3 (chunks of 128), then a chunk on stream 4.
        let mut bytes = vec![3, 0, 0, 0, 0, 1, 44, 9, 1, 0, 0, 0];
        bytes.extend_from_slice(&[0; 128]);
        bytes.extend_from_slice(&[4, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0, 0]);
        let mut g = InboundGuard::new(InboundLimits::default());
        assert_eq!(
            g.check(&bytes),
            Err(InboundError::Interleaved { csid: 4, open: 3 })
        );
        // A header on the same stream that turns a video message into a command.
        let mut bytes = vec![3, 0, 0, 0, 0, 1, 44, 9, 1, 0, 0, 0];
        bytes.extend_from_slice(&[0; 128]);
        bytes.extend_from_slice(&[0x43, 0, 0, 0, 0, 1, 44, 20]);
        let mut g = InboundGuard::new(InboundLimits::default());
        assert_eq!(
            g.check(&bytes),
            Err(InboundError::Interleaved { csid: 3, open: 3 })
        );
        let mut bytes = Vec::new();
        for csid in 0..70u8 {
            // Full headers on chunk streams 64..134 (2-byte basic header), 1-byte bodies.
            bytes.extend_from_slice(&[0, csid, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0, 0x17]);
        }
        let mut g = InboundGuard::new(InboundLimits::default());
        assert_eq!(
            g.check(&bytes),
            Err(InboundError::TooManyChunkStreams { limit: 64 })
        );
        // A compressed header first.
        let mut g = InboundGuard::new(InboundLimits::default());
        assert_eq!(
            g.check(&[0xC5]),
            Err(InboundError::NoPreviousHeader { csid: 5 })
        );
    }

    #[test]
    fn a_short_command_is_refused() {
        let body = rml_amf0::serialize(&vec![
            rml_amf0::Amf0Value::Utf8String("connect".into()),
            rml_amf0::Amf0Value::Number(1.0),
        ])
        .unwrap();
        // rml_rtmp itself panics on it.
        let p = payload(20, 0, body);
        assert!(std::panic::catch_unwind(|| p.to_rtmp_message()).is_err());
        let m = ChunkSerializer::new()
            .serialize(&p, false, false)
            .unwrap()
            .bytes;
        let mut g = InboundGuard::new(InboundLimits::default());
        assert_eq!(
            g.check(&m),
            Err(InboundError::ShortCommand {
                type_id: 20,
                values: 2
            })
        );
    }

    #[test]
    fn a_zero_chunk_size_is_refused() {
        let mut ser = ChunkSerializer::new();
        let m = ser
            .serialize(&payload(1, 0, vec![0, 0, 0, 0]), false, false)
            .unwrap()
            .bytes;
        let mut g = InboundGuard::new(InboundLimits::default());
        assert_eq!(g.check(&m), Err(InboundError::BadChunkSize { size: 0 }));
    }

    /// A message of the generated stream.
    #[derive(Debug, Clone)]
    enum Gen {
        Message { type_id: u8, len: usize },
        ChunkSize(u32),
    }

    fn gen_stream() -> impl Strategy<Value = Vec<Gen>> {
        let msg = prop_oneof![
            (
                prop::sample::select(vec![8u8, 9, 20, 18, 17, 15, 4, 3, 5, 22]),
                0usize..9000
            )
                .prop_map(|(type_id, len)| Gen::Message { type_id, len }),
            (1u32..5000).prop_map(Gen::ChunkSize),
        ];
        prop::collection::vec(msg, 1..40)
    }

    /// A small valid AMF0 body of about `len` bytes.
    fn amf_body(len: usize) -> Vec<u8> {
        let mut v = vec![2, 0, 4, b'n', b'a', b'm', b'e', 0];
        v.extend_from_slice(&2f64.to_be_bytes());
        v.push(3);
        while v.len() + 12 < len {
            v.extend_from_slice(&[0, 1, b'k', 0]);
            v.extend_from_slice(&1f64.to_be_bytes());
        }
        v.extend_from_slice(&[0, 0, 9]);
        v
    }

    proptest! {
        /// Everything rml_rtmp's own serializer writes (header compression, chunk
        /// size changes, extended timestamps) passes, in any split, with a stop
        /// after each command.
        #[test]
        fn rml_rtmp_output_passes(stream in gen_stream(), step in 1usize..5000, ts in 0u32..40_000_000) {
            let mut ser = ChunkSerializer::new();
            let mut bytes = Vec::new();
            let mut commands = 0;
            for (i, g) in stream.iter().enumerate() {
                match g {
                    Gen::ChunkSize(n) => bytes.extend(
                        ser.set_max_chunk_size(*n, RtmpTimestamp::new(ts)).unwrap().bytes),
                    Gen::Message { type_id, len } => {
                        let data = match type_id {
                            15 | 17 | 18 | 20 => amf_body(*len),
                            _ => vec![0x17; *len],
                        };
                        commands += usize::from(matches!(type_id, 17 | 20));
                        let mut p = payload(*type_id, i as u32, data);
                        p.timestamp = RtmpTimestamp::new(ts.wrapping_add(i as u32 * 33));
                        bytes.extend(ser.serialize(&p, false, false).unwrap().bytes);
                    }
                }
            }
            let mut g = InboundGuard::new(InboundLimits::default());
            g.start_publishing();
            let stops = feed(&mut g, &bytes, step);
            prop_assert!(stops.is_ok(), "{:?}", stops);
            prop_assert!(stops.unwrap().len() <= commands);
        }

        /// Whatever the bytes, when the guard passes them, rml_rtmp's deserializer
        /// only completes messages within the bounds (the guard frames as it does).
        #[test]
        fn what_passes_is_within_bounds_for_rml_rtmp(chunks in prop::collection::vec(
            (0u8..4, prop::sample::select(vec![2u32, 3, 4, 70]), any::<u32>(),
             prop::sample::select(vec![0u32, 5, 100, 200, 300, 0xFF_FFFF]),
             prop::sample::select(vec![1u8, 8, 9, 20, 18, 17]), prop::collection::vec(any::<u8>(), 0..400)),
            1..12)) {
            let limits = InboundLimits {
                max_command_bytes: 250,
                max_media_bytes: 250,
                max_chunk_streams: 3,
                amf0: Amf0Limits { max_depth: 2, max_values: 20 },
                min_command_values: 0,
            };
            let mut bytes = Vec::new();
            for (fmt, csid, ts, len, type_id, body) in &chunks {
                let first = (fmt << 6) | if *csid < 64 { *csid as u8 } else { 0 };
                bytes.push(first);
                if *csid >= 64 {
                    bytes.push((*csid - 64) as u8);
                }
                let ts = if *ts % 3 == 0 { 0xFF_FFFF } else { *ts & 0xFF_FFFF };
                if *fmt < 3 {
                    bytes.extend_from_slice(&ts.to_be_bytes()[1..]);
                }
                if *fmt < 2 {
                    bytes.extend_from_slice(&len.to_be_bytes()[1..]);
                    bytes.push(*type_id);
                }
                if *fmt == 0 {
                    bytes.extend_from_slice(&[1, 0, 0, 0]);
                }
                if ts == 0xFF_FFFF {
                    bytes.extend_from_slice(&[0, 0, 0, 1]);
                }
                bytes.extend_from_slice(body);
            }
            let mut g = InboundGuard::new(limits);
            if feed(&mut g, &bytes, bytes.len()).is_err() {
                return Ok(());
            }
            let messages = std::panic::catch_unwind(|| {
                let mut de = ChunkDeserializer::new();
                let mut out = Vec::new();
                let mut input: &[u8] = &bytes;
                while let Ok(Some(m)) = de.get_next_message(input) {
                    input = &[];
                    if m.type_id == 1 && m.data.len() >= 4 {
                        let size = u32::from_be_bytes(m.data[..4].try_into().unwrap());
                        if de.set_max_chunk_size(size as usize).is_err() {
                            break;
                        }
                    }
                    out.push(m);
                }
                out
            });
            let Ok(messages) = messages else { return Ok(()) };
            for m in messages {
                prop_assert!(m.data.len() <= 250, "{} bytes of type {}", m.data.len(), m.type_id);
                if let Some(body) = amf0::decoded_body(m.type_id, &m.data) {
                    prop_assert!(amf0::check(body, &limits.amf0).is_ok());
                }
            }
        }
    }
}
