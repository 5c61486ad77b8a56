//! MPEG-TS (ISO/IEC 13818-1 transport streams): a demuxer from 188-byte packets to
//! core [`Frame`](crate::model::Frame)s and a muxer from core frames to packets.
//!
//! Invariants:
//! - No I/O and no clock. [`TsDemuxer`] takes bytes in arbitrary pieces
//!   ([`TsDemuxer::push`]) and hands out [`TsEvent`]s ([`TsDemuxer::poll_event`]);
//!   [`TsMuxer`] appends whole packets to a caller's buffer.
//! - Input never panics the demuxer and never makes it grow without bound: a PES is
//!   capped ([`DemuxConfig::max_pes_size`]), PSI sections are at most 1024 bytes,
//!   a partial packet at most 187 bytes. Damage (lost sync, continuity errors, bad
//!   CRCs, malformed PES) drops the affected data, is counted in [`DemuxStats`] and
//!   reported as [`TsEvent::Error`]; demuxing goes on.
//! - Frames come out in the canonical layout: H.264/HEVC access units as 4-byte
//!   length-prefixed NAL units without access unit delimiters, filler data or
//!   parameter sets (those go into a [`FrameFlags::CONFIG`](crate::model::FrameFlags)
//!   frame carrying the decoder configuration record, emitted whenever they change);
//!   AAC as raw frames with an AudioSpecificConfig CONFIG frame; Opus as packets
//!   with an OpusHead CONFIG frame.
//!
//! Elementary streams: H.264 (stream type 0x1B), HEVC (0x24), AAC in ADTS (0x0F)
//! and Opus (0x06 with the `Opus` registration descriptor). Limits of the demuxer:
//! one PES carries one video access unit (as every common muxer writes it); an
//! audio PES may carry several frames, but an ADTS frame split across two PES is
//! dropped; Opus trim and control extensions are skipped, and only mono and stereo
//! Opus get an OpusHead; only the first program of the PAT is demuxed. A video PES
//! of unknown length (PES_packet_length 0, as ffmpeg writes) is complete only when
//! the next one starts, one frame later, or at the end of the input
//! ([`TsDemuxer::flush`]) if its last packet was padded, as muxers pad the last
//! packet of a PES; one whose tail never came is dropped, not passed on truncated.
//!
//! Timestamps: PTS, DTS and PCR bases are 33-bit 90 kHz values; the demuxer extends
//! them into one 64-bit timeline per program (each value is taken as the one nearest
//! the previous value, so the wrap every 26.5 hours continues the timeline), starting
//! at the first value seen. The muxer writes timestamps modulo 2^33. So frames come
//! back with their timestamps when the first is in `0..2^33` and each is within
//! 2^32 ticks (13 hours) of the one before.

mod annexb;
mod demux;
mod mux;
mod pes;
mod psi;
#[cfg(test)]
mod tests;

pub use demux::{DemuxConfig, DemuxStats, Pcr, TsDemuxer, TsEvent};
pub use mux::{MuxConfig, TsMuxer};

use crate::codec::CodecError;
use crate::model::{CodecId, TrackId};

/// The size of a transport stream packet.
pub const PACKET_SIZE: usize = 188;
/// The sync byte that starts every packet.
pub const SYNC_BYTE: u8 = 0x47;
/// The PID of the program association table.
pub const PID_PAT: u16 = 0x0000;
/// The PID of null (stuffing) packets.
pub const PID_NULL: u16 = 0x1FFF;

/// Stream type of AAC audio in ADTS framing (ISO/IEC 13818-7).
pub const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;
/// Stream type of H.264 video.
pub const STREAM_TYPE_H264: u8 = 0x1B;
/// Stream type of HEVC video.
pub const STREAM_TYPE_H265: u8 = 0x24;
/// Stream type of PES private data (Opus, with an `Opus` registration descriptor).
pub const STREAM_TYPE_PRIVATE_PES: u8 = 0x06;

/// The 33-bit range of PTS, DTS and PCR bases.
const TS_MODULUS: i64 = 1 << 33;

/// Errors of the demuxer (reported as [`TsEvent::Error`], after which demuxing goes
/// on) and of the muxer (returned, the frame is not written).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TsError {
    /// Bytes that did not start a packet were skipped to find the next sync byte.
    #[error("lost packet sync, skipped {skipped} bytes")]
    SyncLost {
        /// The number of bytes skipped.
        skipped: usize,
    },
    /// A packet with the transport_error_indicator set was dropped.
    #[error("transport error indicator set on PID {pid:#x}")]
    TransportError {
        /// The packet's PID.
        pid: u16,
    },
    /// A continuity counter skipped; the partial PES or section of the PID was
    /// dropped.
    #[error("continuity error on PID {pid:#x}: expected {expected}, found {found}")]
    Continuity {
        /// The PID.
        pid: u16,
        /// The counter value expected.
        expected: u8,
        /// The counter value found.
        found: u8,
    },
    /// A malformed packet header or adaptation field.
    #[error("invalid packet on PID {pid:#x}: {reason}")]
    InvalidPacket {
        /// The PID.
        pid: u16,
        /// What was wrong.
        reason: &'static str,
    },
    /// A malformed PSI section (PAT or PMT).
    #[error("invalid PSI section on PID {pid:#x}: {reason}")]
    InvalidSection {
        /// The PID.
        pid: u16,
        /// What was wrong.
        reason: &'static str,
    },
    /// A malformed PES packet; it was dropped.
    #[error("invalid PES on PID {pid:#x}: {reason}")]
    InvalidPes {
        /// The PID.
        pid: u16,
        /// What was wrong.
        reason: &'static str,
    },
    /// A PES grew past the size limit and was dropped.
    #[error("PES on PID {pid:#x} exceeds {limit} bytes")]
    PesTooLarge {
        /// The PID.
        pid: u16,
        /// The limit in bytes.
        limit: usize,
    },
    /// Elementary stream data that does not parse (ADTS header, parameter sets,
    /// Opus control header).
    #[error("invalid elementary stream data on PID {pid:#x}: {source}")]
    Codec {
        /// The PID.
        pid: u16,
        /// The codec-level error.
        source: CodecError,
    },
    /// The muxer was given a codec it cannot carry.
    #[error("codec {0} cannot be carried in MPEG-TS by this muxer")]
    UnsupportedCodec(CodecId),
    /// The muxer was given no tracks, or more than it has PIDs for.
    #[error("a transport stream needs 1 to {max} tracks, got {got}")]
    TrackCount {
        /// The number of tracks given.
        got: usize,
        /// The maximum.
        max: usize,
    },
    /// A frame of a track the muxer was not created with.
    #[error("unknown track {0:?}")]
    UnknownTrack(TrackId),
    /// A frame arrived before its track's configuration (AAC needs an
    /// AudioSpecificConfig to write ADTS headers).
    #[error("track {0:?} has no usable configuration")]
    MissingConfig(TrackId),
    /// A configuration record that does not parse.
    #[error("invalid configuration for track {track:?}: {source}")]
    InvalidConfig {
        /// The track.
        track: TrackId,
        /// The parse error.
        source: CodecError,
    },
    /// A frame whose payload is not in the canonical layout (for example a NAL unit
    /// length running past the end).
    #[error("invalid frame payload on track {track:?}: {reason}")]
    InvalidFrame {
        /// The track.
        track: TrackId,
        /// What was wrong.
        reason: &'static str,
    },
    /// An audio frame too large for one PES packet (65 535 bytes).
    #[error("frame of {size} bytes does not fit in one audio PES packet")]
    FrameTooLarge {
        /// The frame's size in bytes.
        size: usize,
    },
}

/// Extends 33-bit timestamps into a 64-bit timeline: each value is taken as the one
/// nearest the previous value.
#[derive(Debug, Clone, Default)]
struct Unwrap33 {
    last: Option<i64>,
}

impl Unwrap33 {
    fn unwrap(&mut self, value: u64) -> i64 {
        let v = (value & (TS_MODULUS as u64 - 1)) as i64;
        let out = match self.last {
            None => v,
            Some(last) => {
                let mut diff = (v - last).rem_euclid(TS_MODULUS);
                if diff >= TS_MODULUS / 2 {
                    diff -= TS_MODULUS;
                }
                last.saturating_add(diff)
            }
        };
        self.last = Some(out);
        out
    }
}

/// A timestamp reduced to the 33 bits the wire carries.
fn wrap33(ticks: i64) -> u64 {
    ticks.rem_euclid(TS_MODULUS) as u64
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn unwrap_extends_across_the_wrap_both_ways() {
        let mut u = Unwrap33::default();
        assert_eq!(u.unwrap(TS_MODULUS as u64 - 100), TS_MODULUS - 100);
        assert_eq!(u.unwrap(50), TS_MODULUS + 50);
        // a value slightly in the past (B-frame pts before dts) stays in the past
        assert_eq!(u.unwrap(TS_MODULUS as u64 - 10), TS_MODULUS - 10);
        assert_eq!(u.unwrap(3000), TS_MODULUS + 3000);
        let mut u = Unwrap33::default();
        assert_eq!(u.unwrap(100), 100);
        assert_eq!(u.unwrap(TS_MODULUS as u64 - 50), -50);
        assert_eq!(wrap33(-50), TS_MODULUS as u64 - 50);
        assert_eq!(wrap33(TS_MODULUS + 7), 7);
    }
}
