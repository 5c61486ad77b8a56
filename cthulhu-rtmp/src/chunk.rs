//! Zero-copy RTMP chunking of media messages.
//!
//! rml_rtmp's serializer copies every payload into a new `Vec` per connection. For
//! media we chunk ourselves: the output of one message is a list of [`Bytes`]
//! segments — small chunk headers plus slices of the frame payload that point into the
//! publisher's buffer — written with vectored I/O. Every message uses a full (type 0)
//! header on chunk streams that rml_rtmp never uses ([`CSID_VIDEO`], [`CSID_AUDIO`],
//! [`CSID_DATA`]), so our chunks and rml_rtmp's compressed headers never interfere.

use std::io::{self, IoSlice};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Chunk stream for video messages (rml_rtmp uses 2 to 6).
pub const CSID_VIDEO: u32 = 7;
/// Chunk stream for audio messages.
pub const CSID_AUDIO: u32 = 8;
/// Chunk stream for data (metadata) messages.
pub const CSID_DATA: u32 = 9;

/// RTMP message type: audio.
pub const TYPE_AUDIO: u8 = 8;
/// RTMP message type: video.
pub const TYPE_VIDEO: u8 = 9;
/// RTMP message type: AMF0 data.
pub const TYPE_DATA_AMF0: u8 = 18;
/// RTMP message type: aggregate.
pub const TYPE_AGGREGATE: u8 = 22;

/// Largest message payload RTMP can describe (24-bit length).
pub const MAX_MESSAGE_LEN: usize = 0xFF_FFFF;

/// Chunks messages for one connection's outbound chunk size.
#[derive(Debug)]
pub struct Chunker {
    chunk_size: usize,
    scratch: BytesMut,
}

/// A message to chunk: a small prefix (e.g. the FLV tag header) followed by a payload.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Chunk stream id (3..=65599).
    pub csid: u32,
    /// Message type id.
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// Timestamp in milliseconds (wraps at 32 bits).
    pub timestamp: u32,
    /// Bytes before the payload, copied into the first chunk (at most a few bytes).
    pub prefix: &'a [u8],
    /// The payload; sliced, never copied.
    pub payload: &'a Bytes,
}

impl Chunker {
    /// Creates a chunker for the given outbound chunk size (clamped to 128..=16 MiB).
    pub fn new(chunk_size: u32) -> Self {
        Self {
            chunk_size: (chunk_size as usize).clamp(128, MAX_MESSAGE_LEN),
            scratch: BytesMut::with_capacity(4096),
        }
    }

    /// The chunk size in use.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Appends the chunked message to `out`. Messages longer than RTMP allows are refused.
    pub fn push(&mut self, msg: Message<'_>, out: &mut Vec<Bytes>) -> io::Result<()> {
        let total = msg.prefix.len() + msg.payload.len();
        if total > MAX_MESSAGE_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("message of {total} bytes exceeds the RTMP maximum"),
            ));
        }
        if msg.prefix.len() > self.chunk_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "prefix longer than a chunk",
            ));
        }
        if self.scratch.capacity() < 64 {
            self.scratch.reserve(4096);
        }
        let extended = msg.timestamp >= 0xFF_FFFF;
        // Type 0 header.
        put_basic_header(&mut self.scratch, 0, msg.csid);
        put_u24(
            &mut self.scratch,
            if extended { 0xFF_FFFF } else { msg.timestamp },
        );
        put_u24(&mut self.scratch, total as u32);
        self.scratch.put_u8(msg.type_id);
        self.scratch.put_u32_le(msg.stream_id);
        if extended {
            self.scratch.put_u32(msg.timestamp);
        }
        self.scratch.put_slice(msg.prefix);
        out.push(self.scratch.split().freeze());

        let mut room = self.chunk_size - msg.prefix.len();
        let mut rest = msg.payload.clone();
        loop {
            let take = room.min(rest.len());
            if take > 0 {
                out.push(rest.split_to(take));
            }
            if rest.is_empty() {
                break;
            }
            // Type 3 continuation header (repeats the extended timestamp, as ffmpeg and
            // nginx-rtmp expect).
            put_basic_header(&mut self.scratch, 3, msg.csid);
            if extended {
                self.scratch.put_u32(msg.timestamp);
            }
            out.push(self.scratch.split().freeze());
            room = self.chunk_size;
        }
        Ok(())
    }
}

fn put_basic_header(buf: &mut BytesMut, fmt: u8, csid: u32) {
    let fmt = fmt << 6;
    match csid {
        2..=63 => buf.put_u8(fmt | csid as u8),
        64..=319 => {
            buf.put_u8(fmt);
            buf.put_u8((csid - 64) as u8);
        }
        _ => {
            let v = csid.clamp(320, 65599) - 64;
            buf.put_u8(fmt | 1);
            buf.put_u8((v & 0xFF) as u8);
            buf.put_u8((v >> 8) as u8);
        }
    }
}

fn put_u24(buf: &mut BytesMut, v: u32) {
    buf.put_u8((v >> 16) as u8);
    buf.put_u8((v >> 8) as u8);
    buf.put_u8(v as u8);
}

/// Writes all segments with vectored writes, consuming them.
///
/// Cancel-safe in the sense that matters for ordered streams: segments are removed
/// from `segments` as soon as they are written, so a cancelled call can be resumed by
/// calling it again with the same vector.
pub async fn write_segments<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    segments: &mut Vec<Bytes>,
) -> io::Result<()> {
    const MAX_IOV: usize = 64;
    while !segments.is_empty() {
        let n = if w.is_write_vectored() {
            let slices: Vec<IoSlice<'_>> = segments
                .iter()
                .take(MAX_IOV)
                .map(|b| IoSlice::new(b))
                .collect();
            w.write_vectored(&slices).await?
        } else {
            w.write(&segments[0]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        consume(segments, n);
    }
    Ok(())
}

/// Removes the first `n` bytes of `segments` (what a write took), keeping the rest
/// of a partly written segment.
pub(crate) fn consume(segments: &mut Vec<Bytes>, n: usize) {
    let mut left = n;
    let mut done = 0;
    for seg in segments.iter_mut() {
        if left == 0 {
            break;
        }
        if seg.len() <= left {
            left -= seg.len();
            done += 1;
        } else {
            seg.advance(left);
            left = 0;
        }
    }
    segments.drain(..done);
    let empties = segments.iter().take_while(|s| s.is_empty()).count();
    segments.drain(..empties);
}

/// Joins one message's chunk segments into one buffer: the one copy per stream that
/// lets every player's write take a single iovec per message.
pub(crate) fn flatten(segments: &mut Vec<Bytes>) -> Bytes {
    if segments.len() == 1 {
        return segments.pop().unwrap_or_default();
    }
    let len = segments.iter().map(Bytes::len).sum();
    let mut buf = BytesMut::with_capacity(len);
    for s in segments.drain(..) {
        buf.extend_from_slice(&s);
    }
    buf.freeze()
}

/// Reads what the socket has (waiting for it), without needing `&mut` to the socket
/// that the fan-out also writes to.
pub(crate) async fn read_some(sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        sock.readable().await?;
        match sock.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkDeserializer;

    fn chunk(chunk_size: u32, ts: u32, prefix: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut c = Chunker::new(chunk_size);
        let mut out = Vec::new();
        let payload = Bytes::copy_from_slice(payload);
        c.push(
            Message {
                csid: CSID_VIDEO,
                type_id: TYPE_VIDEO,
                stream_id: 1,
                timestamp: ts,
                prefix,
                payload: &payload,
            },
            &mut out,
        )
        .unwrap();
        out.iter().flat_map(|b| b.iter().copied()).collect()
    }

    /// rml_rtmp's deserializer (an independent implementation) reads back what we wrote.
    #[test]
    fn deserializer_reads_our_chunks() {
        for (size, ts, len) in [
            (128u32, 0u32, 1000usize),
            (4096, 0x00FF_FFFF, 10_000),
            (128, 0xFFFF_FFF0, 129),
            (65536, 42, 5),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let bytes = chunk(size, ts, &[0x17, 1, 0, 0, 0], &payload);
            let mut de = ChunkDeserializer::new();
            if size != 128 {
                de.set_max_chunk_size(size as usize).unwrap();
            }
            let msg = de.get_next_message(&bytes).unwrap().expect("one message");
            assert_eq!(msg.type_id, TYPE_VIDEO);
            assert_eq!(msg.message_stream_id, 1);
            assert_eq!(msg.timestamp.value, ts);
            assert_eq!(&msg.data[..5], &[0x17, 1, 0, 0, 0]);
            assert_eq!(&msg.data[5..], &payload[..]);
        }
    }

    #[test]
    fn payload_is_not_copied() {
        let payload = Bytes::from(vec![7u8; 10_000]);
        let mut c = Chunker::new(4096);
        let mut out = Vec::new();
        c.push(
            Message {
                csid: CSID_VIDEO,
                type_id: TYPE_VIDEO,
                stream_id: 1,
                timestamp: 0,
                prefix: &[1, 2],
                payload: &payload,
            },
            &mut out,
        )
        .unwrap();
        let base = payload.as_ptr() as usize;
        let shared = out
            .iter()
            .filter(|s| {
                (s.as_ptr() as usize) >= base && (s.as_ptr() as usize) < base + payload.len()
            })
            .map(|s| s.len())
            .sum::<usize>();
        assert_eq!(
            shared,
            payload.len(),
            "every payload byte is a slice of the original"
        );
    }

    #[test]
    fn too_long_message_is_refused() {
        let payload = Bytes::from(vec![0u8; MAX_MESSAGE_LEN]);
        let mut c = Chunker::new(4096);
        let mut out = Vec::new();
        let r = c.push(
            Message {
                csid: CSID_VIDEO,
                type_id: TYPE_VIDEO,
                stream_id: 1,
                timestamp: 0,
                prefix: &[1],
                payload: &payload,
            },
            &mut out,
        );
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn vectored_write_handles_partial_writes() {
        let (mut a, mut b) = tokio::io::duplex(7); // tiny buffer forces partial writes
        let segs: Vec<Bytes> = (0..20u8)
            .map(|i| Bytes::from(vec![i; (i as usize) + 1]))
            .collect();
        let expect: Vec<u8> = segs.iter().flat_map(|b| b.iter().copied()).collect();
        let mut to_write = segs.clone();
        let writer = tokio::spawn(async move {
            write_segments(&mut a, &mut to_write).await.unwrap();
        });
        let mut got = vec![0u8; expect.len()];
        tokio::io::AsyncReadExt::read_exact(&mut b, &mut got)
            .await
            .unwrap();
        writer.await.unwrap();
        assert_eq!(got, expect);
    }
}
