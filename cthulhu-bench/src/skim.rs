//! A sans-IO reader of an RTMP chunk stream that follows chunk headers without
//! assembling media messages: what a load-generating player needs to stay a
//! well-behaved RTMP peer at the cost of a few comparisons per 4 KiB chunk.
//!
//! No I/O and no clock here. Call order: feed received bytes with
//! [`Skimmer::handle_bytes`], then drain its outputs: [`Skimmer::poll_command`]
//! (only while [`Skimmer::set_capture_commands`] is on, for the connect/play
//! exchange), [`Skimmer::poll_video_hash`] (only with hashing on, for probes) and
//! [`Skimmer::poll_transmit`] (acknowledgements and ping responses to send).
//!
//! Invariants: media payloads are never copied (they are counted and, for probes,
//! hashed as they stream past); after the connect phase no allocation happens per
//! message (control payloads reuse one buffer per chunk stream); every length
//! comes from the peer and is bounded before use.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hasher};

use crate::key::VideoKey;

/// The acknowledgement window assumed until the server announces one.
pub const DEFAULT_WINDOW: u32 = 2_500_000;
/// The largest control or command message captured; larger ones are refused.
const MAX_CAPTURE: u32 = 64 * 1024;
/// The largest video message a [`VideoKey::LastNal`] probe keeps to key it.
const MAX_PICTURE: u32 = 16 * 1024 * 1024;
/// The most chunk streams one connection may use.
const MAX_CHUNK_STREAMS: usize = 64;
/// The longest chunk header: 3-byte basic header, 11-byte message header, extended timestamp.
const MAX_HEADER: usize = 18;

/// RTMP message type: set chunk size.
const TYPE_SET_CHUNK_SIZE: u8 = 1;
/// RTMP message type: abort message.
const TYPE_ABORT: u8 = 2;
/// RTMP message type: user control.
const TYPE_USER_CONTROL: u8 = 4;
/// RTMP message type: window acknowledgement size.
const TYPE_WINDOW_ACK: u8 = 5;
/// RTMP message type: audio.
pub const TYPE_AUDIO: u8 = 8;
/// RTMP message type: video.
pub const TYPE_VIDEO: u8 = 9;
/// RTMP message type: AMF3 command.
const TYPE_COMMAND_AMF3: u8 = 17;
/// RTMP message type: AMF0 data.
const TYPE_DATA_AMF0: u8 = 18;
/// RTMP message type: AMF0 command.
const TYPE_COMMAND_AMF0: u8 = 20;
/// RTMP message type: aggregate.
const TYPE_AGGREGATE: u8 = 22;

/// The chunk stream is not well formed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkimError {
    /// A set chunk size message asked for a size RTMP does not allow.
    #[error("invalid chunk size {0}")]
    ChunkSize(u32),
    /// A compressed chunk header on a chunk stream that never had a full one.
    #[error("compressed chunk header on new chunk stream {0}")]
    NoPriorHeader(u32),
    /// More distinct chunk streams than any real server uses.
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams")]
    TooManyChunkStreams,
    /// A control or command message longer than 64 KiB.
    #[error("control message type {type_id} of {len} bytes is too long")]
    ControlTooLong {
        /// The message type.
        type_id: u8,
        /// Its announced length.
        len: u32,
    },
}

/// What one chunk stream id has said so far.
#[derive(Debug)]
struct ChunkStream {
    csid: u32,
    /// The last full or type-1/2 header had an extended timestamp, so type-3 chunks carry one too.
    ext: bool,
    len: u32,
    type_id: u8,
    stream_id: u32,
    /// Bytes of the current message still to come; 0 between messages.
    remaining: u32,
    /// The message is being captured into `capture`.
    capturing: bool,
    capture: Vec<u8>,
    /// Running hash of the current video message (probes, [`VideoKey::Body`]).
    hasher: Option<DefaultHasher>,
    /// The current video message's body (probes, [`VideoKey::LastNal`]).
    picture: Option<Vec<u8>>,
}

/// Follows an RTMP chunk stream; see the module documentation for the call order.
#[derive(Debug)]
pub struct Skimmer {
    chunk_size: u32,
    window: u32,
    bytes_in: u64,
    acked: u64,
    header: [u8; MAX_HEADER],
    header_len: usize,
    streams: Vec<ChunkStream>,
    /// Index of the chunk stream whose payload is being read, if inside a chunk.
    current: Option<usize>,
    chunk_left: u32,
    capture_commands: bool,
    hash_video: bool,
    video_key: VideoKey,
    commands: VecDeque<(u32, Vec<u8>)>,
    video_hashes: VecDeque<u64>,
    media_bytes: u64,
    media_started: bool,
    pong: Option<u32>,
}

impl Default for Skimmer {
    fn default() -> Self {
        Self::new()
    }
}

impl Skimmer {
    /// A reader at the start of a chunk stream (just after the handshake).
    pub fn new() -> Self {
        Self {
            chunk_size: 128,
            window: DEFAULT_WINDOW,
            bytes_in: 0,
            acked: 0,
            header: [0; MAX_HEADER],
            header_len: 0,
            streams: Vec::new(),
            current: None,
            chunk_left: 0,
            capture_commands: true,
            hash_video: false,
            video_key: VideoKey::Body,
            commands: VecDeque::new(),
            video_hashes: VecDeque::new(),
            media_bytes: 0,
            media_started: false,
            pong: None,
        }
    }

    /// Whether complete command messages are kept for [`Self::poll_command`] (on
    /// at first; turn it off once playing so commands are skipped like media).
    pub fn set_capture_commands(&mut self, on: bool) {
        self.capture_commands = on;
        if !on {
            self.commands.clear();
        }
    }

    /// Whether each complete video message body is hashed for [`Self::poll_video_hash`].
    pub fn set_hash_video(&mut self, on: bool) {
        self.hash_video = on;
    }

    /// All bytes fed so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Body bytes of audio, video, data and aggregate messages so far (counted as
    /// they arrive, partial messages included).
    pub fn media_bytes(&self) -> u64 {
        self.media_bytes
    }

    /// Whether an audio or video message has started.
    pub fn media_started(&self) -> bool {
        self.media_started
    }

    /// The peer's current outbound chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The acknowledgement window in force (announced, or [`DEFAULT_WINDOW`]).
    pub fn window(&self) -> u32 {
        self.window
    }

    /// A complete command message: its message stream id and AMF0 body.
    pub fn poll_command(&mut self) -> Option<(u32, Vec<u8>)> {
        self.commands.pop_front()
    }

    /// How probes key video messages (default [`VideoKey::Body`]).
    pub fn set_video_key(&mut self, key: VideoKey) {
        self.video_key = key;
    }

    /// The key ([`VideoKey`]) of a video message completed by the bytes fed last.
    pub fn poll_video_hash(&mut self) -> Option<u64> {
        self.video_hashes.pop_front()
    }

    /// Appends what should be sent to the peer now: a ping response to the last
    /// ping request, and an acknowledgement once a window of bytes has arrived.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        if let Some(ts) = self.pong.take() {
            // Type 0 header on chunk stream 2, user control (4), 6-byte body:
            // event 7 (ping response) and the request's timestamp.
            out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 6, TYPE_USER_CONTROL, 0, 0, 0, 0]);
            out.extend_from_slice(&[0, 7]);
            out.extend_from_slice(&ts.to_be_bytes());
        }
        if self.window > 0 && self.bytes_in - self.acked >= u64::from(self.window) {
            self.acked = self.bytes_in;
            // Acknowledgement (3): the total received so far, wrapping at 32 bits.
            out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 4, 3, 0, 0, 0, 0]);
            out.extend_from_slice(&(self.bytes_in as u32).to_be_bytes());
        }
    }

    /// Counts `n` bytes that were dropped unread (a discarding player): they count
    /// as received and as media, and acknowledgements follow them. After this call
    /// the chunk stream can no longer be followed, so [`Self::handle_bytes`] must not
    /// be called again.
    pub fn discarded(&mut self, n: usize) {
        self.bytes_in += n as u64;
        self.media_bytes += n as u64;
        self.current = None;
        self.header_len = 0;
    }

    /// Feeds received bytes.
    pub fn handle_bytes(&mut self, mut data: &[u8]) -> Result<(), SkimError> {
        self.bytes_in += data.len() as u64;
        while !data.is_empty() {
            match self.current {
                Some(idx) => {
                    let n = (self.chunk_left as usize).min(data.len());
                    let (payload, rest) = data.split_at(n);
                    data = rest;
                    self.payload(idx, payload)?;
                }
                None => {
                    let need = self.header_need()?;
                    let take = need.saturating_sub(self.header_len).min(data.len());
                    let (part, rest) = data.split_at(take);
                    data = rest;
                    if let Some(dst) = self.header.get_mut(self.header_len..self.header_len + take)
                    {
                        dst.copy_from_slice(part);
                    }
                    self.header_len += take;
                    // The needed length can grow as bytes arrive (basic header size,
                    // then extended timestamp): complete only when it stops growing.
                    if self.header_len == self.header_need()? {
                        self.apply_header()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The header byte at `i` (0 if not yet received).
    fn h(&self, i: usize) -> u8 {
        self.header.get(i).copied().unwrap_or(0)
    }

    fn basic_len(&self) -> usize {
        match self.h(0) & 0x3F {
            0 => 2,
            1 => 3,
            _ => 1,
        }
    }

    fn csid(&self) -> u32 {
        match self.h(0) & 0x3F {
            0 => 64 + u32::from(self.h(1)),
            1 => 64 + u32::from(self.h(1)) + 256 * u32::from(self.h(2)),
            c => u32::from(c),
        }
    }

    /// How many header bytes are needed as far as the bytes received so far tell.
    fn header_need(&self) -> Result<usize, SkimError> {
        if self.header_len == 0 {
            return Ok(1);
        }
        let basic = self.basic_len();
        if self.header_len < basic {
            return Ok(basic);
        }
        let fmt = self.h(0) >> 6;
        let message_header = [11, 7, 3, 0][usize::from(fmt & 3)];
        let fixed = basic + message_header;
        if self.header_len < fixed {
            return Ok(fixed);
        }
        let ext = if fmt < 3 {
            self.u24(basic) == 0xFF_FFFF
        } else {
            let csid = self.csid();
            match self.streams.iter().find(|s| s.csid == csid) {
                Some(s) => s.ext,
                None => return Err(SkimError::NoPriorHeader(csid)),
            }
        };
        Ok(fixed + if ext { 4 } else { 0 })
    }

    fn u24(&self, at: usize) -> u32 {
        u32::from_be_bytes([0, self.h(at), self.h(at + 1), self.h(at + 2)])
    }

    fn apply_header(&mut self) -> Result<(), SkimError> {
        let fmt = self.h(0) >> 6;
        let basic = self.basic_len();
        let csid = self.csid();
        let idx = match self.streams.iter().position(|s| s.csid == csid) {
            Some(i) => i,
            None if fmt <= 1 => {
                if self.streams.len() >= MAX_CHUNK_STREAMS {
                    return Err(SkimError::TooManyChunkStreams);
                }
                self.streams.push(ChunkStream {
                    csid,
                    ext: false,
                    len: 0,
                    type_id: 0,
                    stream_id: 0,
                    remaining: 0,
                    capturing: false,
                    capture: Vec::new(),
                    hasher: None,
                    picture: None,
                });
                self.streams.len() - 1
            }
            None => return Err(SkimError::NoPriorHeader(csid)),
        };
        let len = self.u24(basic + 3);
        let type_id = self.h(basic + 6);
        let stream_id = u32::from_le_bytes([
            self.h(basic + 7),
            self.h(basic + 8),
            self.h(basic + 9),
            self.h(basic + 10),
        ]);
        let ext = fmt < 3 && self.u24(basic) == 0xFF_FFFF;
        self.header_len = 0;
        let Some(st) = self.streams.get_mut(idx) else {
            return Ok(());
        };
        if fmt < 3 {
            st.ext = ext;
            // A new header starts a new message, abandoning any unfinished one.
            st.remaining = 0;
        }
        if fmt <= 1 {
            st.len = len;
            st.type_id = type_id;
        }
        if fmt == 0 {
            st.stream_id = stream_id;
        }
        if st.remaining == 0 {
            self.start_message(idx)?;
        }
        let remaining = self.streams.get(idx).map_or(0, |s| s.remaining);
        if remaining == 0 {
            // An empty message is complete with its header.
            return self.finish_message(idx);
        }
        self.current = Some(idx);
        self.chunk_left = remaining.min(self.chunk_size);
        Ok(())
    }

    fn start_message(&mut self, idx: usize) -> Result<(), SkimError> {
        let capture_commands = self.capture_commands;
        let hash_video = self.hash_video;
        let video_key = self.video_key;
        let Some(st) = self.streams.get_mut(idx) else {
            return Ok(());
        };
        st.remaining = st.len;
        st.capture.clear();
        st.hasher = None;
        st.picture = None;
        st.capturing = match st.type_id {
            1..=6 => true,
            TYPE_COMMAND_AMF0 | TYPE_COMMAND_AMF3 => capture_commands,
            _ => false,
        };
        if st.capturing && st.len > MAX_CAPTURE {
            return Err(SkimError::ControlTooLong {
                type_id: st.type_id,
                len: st.len,
            });
        }
        match st.type_id {
            TYPE_AUDIO => self.media_started = true,
            TYPE_VIDEO => {
                self.media_started = true;
                if hash_video {
                    match video_key {
                        VideoKey::Body => st.hasher = Some(DefaultHasher::new()),
                        VideoKey::LastNal => {
                            st.picture = Some(Vec::with_capacity(st.len.min(MAX_PICTURE) as usize));
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn payload(&mut self, idx: usize, payload: &[u8]) -> Result<(), SkimError> {
        let n = payload.len() as u32;
        let Some(st) = self.streams.get_mut(idx) else {
            self.current = None;
            return Ok(());
        };
        if st.capturing {
            st.capture.extend_from_slice(payload);
        }
        if let Some(h) = st.hasher.as_mut() {
            h.write(payload);
        }
        if let Some(p) = st.picture.as_mut() {
            if p.len() + payload.len() <= MAX_PICTURE as usize {
                p.extend_from_slice(payload);
            } else {
                // Larger than any picture we publish: it matches nothing.
                st.picture = None;
            }
        }
        if matches!(
            st.type_id,
            TYPE_AUDIO | TYPE_VIDEO | TYPE_DATA_AMF0 | TYPE_AGGREGATE
        ) {
            self.media_bytes += u64::from(n);
        }
        st.remaining = st.remaining.saturating_sub(n);
        self.chunk_left = self.chunk_left.saturating_sub(n);
        if st.remaining == 0 {
            self.current = None;
            self.finish_message(idx)?;
        } else if self.chunk_left == 0 {
            self.current = None;
        }
        Ok(())
    }

    fn finish_message(&mut self, idx: usize) -> Result<(), SkimError> {
        let Some(st) = self.streams.get_mut(idx) else {
            return Ok(());
        };
        if let Some(h) = st.hasher.take() {
            self.video_hashes.push_back(h.finish());
        }
        if let Some(p) = st.picture.take()
            && let Some(k) = VideoKey::LastNal.of_flv_body(&p)
        {
            self.video_hashes.push_back(k);
        }
        if !st.capturing {
            return Ok(());
        }
        st.capturing = false;
        let be32 = |body: &[u8], at: usize| {
            body.get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
        };
        let first = be32(&st.capture, 0);
        match st.type_id {
            TYPE_SET_CHUNK_SIZE => {
                if let Some(size) = first {
                    let size = size & 0x7FFF_FFFF;
                    if size == 0 || size > 0xFF_FFFF {
                        return Err(SkimError::ChunkSize(size));
                    }
                    self.chunk_size = size;
                }
            }
            TYPE_ABORT => {
                if let Some(csid) = first
                    && let Some(i) = self.streams.iter().position(|s| s.csid == csid)
                    && let Some(other) = self.streams.get_mut(i)
                {
                    other.remaining = 0;
                    other.capturing = false;
                    other.hasher = None;
                    other.picture = None;
                    if self.current == Some(i) {
                        self.current = None;
                    }
                }
            }
            // Event 6: ping request, with a 4-byte timestamp to echo.
            TYPE_USER_CONTROL if st.capture.get(..2) == Some(&[0, 6]) => {
                self.pong = be32(&st.capture, 2).or(self.pong);
            }
            TYPE_WINDOW_ACK => {
                if let Some(w) = first
                    && w > 0
                {
                    self.window = w;
                }
            }
            TYPE_COMMAND_AMF0 => {
                let body = std::mem::take(&mut st.capture);
                self.commands.push_back((st.stream_id, body));
            }
            TYPE_COMMAND_AMF3 => {
                // An AMF3 command is a format byte followed by AMF0.
                let body: Vec<u8> = st.capture.get(1..).unwrap_or_default().to_vec();
                self.commands.push_back((st.stream_id, body));
            }
            _ => {}
        }
        Ok(())
    }
}

/// The hash that matches a video message received by a player to the one the
/// publisher sent: over the whole message body, independent of timestamps.
pub fn body_hash(body: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(body);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::{MessagePayload, RtmpMessage, UserControlEventType};
    use rml_rtmp::time::RtmpTimestamp;

    fn media(type_id: u8, ts: u32, len: usize, seed: u8) -> MessagePayload {
        MessagePayload {
            timestamp: RtmpTimestamp::new(ts),
            type_id,
            message_stream_id: 1,
            data: Bytes::from(
                (0..len)
                    .map(|i| (i as u8).wrapping_mul(seed))
                    .collect::<Vec<_>>(),
            ),
        }
    }

    /// A stream as rml_rtmp's serializer (an independent implementation, with header
    /// compression) writes it: control messages, a chunk size change, media with
    /// extended timestamps, a ping and a command.
    fn sample_stream() -> (Vec<u8>, Vec<u64>, u64) {
        let mut ser = ChunkSerializer::new();
        let mut out = Vec::new();
        let mut hashes = Vec::new();
        let mut media_bytes = 0u64;
        let control = |m: RtmpMessage| m.into_message_payload(RtmpTimestamp::new(0), 0).unwrap();
        out.extend(
            ser.serialize(
                &control(RtmpMessage::WindowAcknowledgement { size: 5000 }),
                false,
                false,
            )
            .unwrap()
            .bytes,
        );
        out.extend(
            ser.set_max_chunk_size(300, RtmpTimestamp::new(0))
                .unwrap()
                .bytes,
        );
        for (i, (ty, len)) in [
            (9u8, 1000usize),
            (8, 20),
            (9, 301),
            (9, 0),
            (8, 300),
            (9, 5000),
        ]
        .into_iter()
        .enumerate()
        {
            let ts = 0xFF_FFF0 + 40 * i as u32;
            let msg = media(ty, ts, len, i as u8 + 3);
            // rml_rtmp writes nothing at all for an empty message.
            if ty == 9 && len > 0 {
                hashes.push(body_hash(&msg.data));
            }
            media_bytes += len as u64;
            out.extend(ser.serialize(&msg, false, false).unwrap().bytes);
        }
        out.extend(
            ser.serialize(
                &control(RtmpMessage::UserControl {
                    event_type: UserControlEventType::PingRequest,
                    stream_id: None,
                    buffer_length: None,
                    timestamp: Some(RtmpTimestamp::new(77)),
                }),
                false,
                false,
            )
            .unwrap()
            .bytes,
        );
        out.extend(
            ser.serialize(
                &control(RtmpMessage::Amf0Command {
                    command_name: "onStatus".into(),
                    transaction_id: 0.0,
                    command_object: rml_amf0::Amf0Value::Null,
                    additional_arguments: vec![],
                }),
                false,
                false,
            )
            .unwrap()
            .bytes,
        );
        (out, hashes, media_bytes)
    }

    fn check(splits: impl Iterator<Item = usize>) {
        let (bytes, hashes, media_bytes) = sample_stream();
        let mut sk = Skimmer::new();
        sk.set_hash_video(true);
        let mut rest = &bytes[..];
        let mut splits = splits;
        while !rest.is_empty() {
            let n = splits.next().unwrap_or(rest.len()).clamp(1, rest.len());
            let (a, b) = rest.split_at(n);
            sk.handle_bytes(a).unwrap();
            rest = b;
        }
        let got: Vec<u64> = std::iter::from_fn(|| sk.poll_video_hash()).collect();
        assert_eq!(got, hashes);
        assert_eq!(sk.media_bytes(), media_bytes);
        assert_eq!(sk.chunk_size(), 300);
        assert_eq!(sk.window(), 5000);
        assert!(sk.media_started());
        let (_, cmd) = sk.poll_command().expect("the command");
        let values = rml_amf0::deserialize(&mut std::io::Cursor::new(cmd)).unwrap();
        assert_eq!(
            values[0],
            rml_amf0::Amf0Value::Utf8String("onStatus".into())
        );
        let mut out = Vec::new();
        sk.poll_transmit(&mut out);
        // A ping response (18 bytes) with the request's timestamp, then an ack (16 bytes).
        assert_eq!(out.len(), 34);
        assert_eq!(&out[12..18], &[0, 7, 0, 0, 0, 77]);
        assert_eq!(&out[30..34], &(bytes.len() as u32).to_be_bytes());
    }

    #[test]
    fn discarded_bytes_count_and_are_acknowledged() {
        let mut sk = Skimmer::new();
        let mut out = Vec::new();
        sk.discarded(DEFAULT_WINDOW as usize - 1);
        sk.poll_transmit(&mut out);
        assert!(out.is_empty(), "no ack before a window");
        sk.discarded(10);
        assert_eq!(sk.bytes_in(), u64::from(DEFAULT_WINDOW) + 9);
        assert_eq!(sk.media_bytes(), sk.bytes_in());
        sk.poll_transmit(&mut out);
        assert_eq!(out.len(), 16);
        assert_eq!(&out[12..16], &(DEFAULT_WINDOW + 9).to_be_bytes());
    }

    #[test]
    fn follows_rml_rtmp_chunks_in_one_piece() {
        check(std::iter::empty());
    }

    #[test]
    fn follows_rml_rtmp_chunks_split_anywhere() {
        for step in [1usize, 2, 3, 7, 13, 128, 299, 300, 301, 1000] {
            check(std::iter::repeat(step));
        }
        // Irregular splits.
        check([5usize, 1, 17, 2, 300, 3, 1, 1, 4000].into_iter().cycle());
    }

    #[test]
    fn cthulhu_chunker_output_is_followed() {
        // cthulhu-rtmp's zero-copy chunker: type 0 then type 3 headers that repeat
        // the extended timestamp.
        let mut c = cthulhu_rtmp::chunk::Chunker::new(128);
        let payload = Bytes::from(vec![5u8; 1000]);
        let mut segs = Vec::new();
        for ts in [1u32, 0xFF_FFFF, 0x0100_0000] {
            c.push(
                cthulhu_rtmp::chunk::Message {
                    csid: 7,
                    type_id: 9,
                    stream_id: 1,
                    timestamp: ts,
                    prefix: &[0x17, 1],
                    payload: &payload,
                },
                &mut segs,
            )
            .unwrap();
        }
        let bytes: Vec<u8> = segs.iter().flat_map(|b| b.iter().copied()).collect();
        let mut sk = Skimmer::new();
        sk.set_hash_video(true);
        for piece in bytes.chunks(50) {
            sk.handle_bytes(piece).unwrap();
        }
        let mut body = vec![0x17u8, 1];
        body.extend_from_slice(&payload);
        for _ in 0..3 {
            assert_eq!(sk.poll_video_hash(), Some(body_hash(&body)));
        }
        assert_eq!(sk.poll_video_hash(), None);
        assert_eq!(sk.media_bytes(), 3 * 1002);
    }

    #[test]
    fn an_empty_message_is_complete_with_its_header() {
        let mut sk = Skimmer::new();
        sk.set_hash_video(true);
        // A full header announcing an empty video message, then a one-byte one.
        sk.handle_bytes(&[0x07, 0, 0, 0, 0, 0, 0, 9, 1, 0, 0, 0])
            .unwrap();
        assert_eq!(sk.poll_video_hash(), Some(body_hash(&[])));
        sk.handle_bytes(&[0x07, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0, 42])
            .unwrap();
        assert_eq!(sk.poll_video_hash(), Some(body_hash(&[42])));
        assert_eq!(sk.media_bytes(), 1);
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        // Compressed header on an unknown chunk stream.
        assert!(Skimmer::new().handle_bytes(&[0xC5, 0, 0]).is_err());
        // A control message longer than allowed.
        let mut sk = Skimmer::new();
        let r = sk.handle_bytes(&[0x02, 0, 0, 0, 0x10, 0, 0, 4, 0, 0, 0, 0]);
        assert!(matches!(r, Err(SkimError::ControlTooLong { .. })));
        // A chunk size of zero.
        let mut sk = Skimmer::new();
        let r = sk.handle_bytes(&[0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r, Err(SkimError::ChunkSize(0)));
        // Arbitrary garbage never panics.
        let mut x: u32 = 12345;
        for _ in 0..200 {
            let mut sk = Skimmer::new();
            let data: Vec<u8> = (0..2000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = sk.handle_bytes(&data);
        }
    }
}
