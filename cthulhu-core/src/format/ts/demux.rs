//! The demuxer: 188-byte packets in, [`TsEvent`]s out.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::annexb::{ParameterSets, to_length_prefixed};
use super::pes::{packet_length, parse_header};
use super::psi::{
    Pmt, PmtStream, SectionAssembler, TABLE_PAT, TABLE_PMT, parse_pat, parse_pmt, parse_section,
};
use super::{
    PACKET_SIZE, PID_NULL, PID_PAT, STREAM_TYPE_AAC_ADTS, STREAM_TYPE_H264, STREAM_TYPE_H265,
    STREAM_TYPE_PRIVATE_PES, SYNC_BYTE, TsError, Unwrap33,
};
use crate::codec::CodecError;
use crate::codec::aac::{self, AudioSpecificConfig};
use crate::codec::h264::AvcConfig;
use crate::codec::h265::HevcConfig;
use crate::codec::opus::{self, OpusHead};
use crate::model::{Codec, CodecId, Frame, FrameFlags, MediaKind, Timestamp, TrackId, TrackInfo};

/// Demuxer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemuxConfig {
    /// The largest PES packet reassembled, in bytes; a larger one is dropped
    /// ([`TsError::PesTooLarge`]). 16 MiB by default, far above any sane access unit.
    pub max_pes_size: usize,
}

impl Default for DemuxConfig {
    fn default() -> Self {
        Self {
            max_pes_size: 16 << 20,
        }
    }
}

/// Counters of what the demuxer saw and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemuxStats {
    /// Packets handled.
    pub packets: u64,
    /// Bytes skipped to regain packet sync.
    pub bytes_skipped: u64,
    /// Continuity counter errors.
    pub continuity_errors: u64,
    /// Packets dropped for their transport_error_indicator.
    pub transport_errors: u64,
    /// PES packets dropped (damaged, truncated, too large, cut by a discontinuity).
    pub pes_dropped: u64,
    /// Media frames emitted (configuration frames not counted).
    pub frames: u64,
    /// Frames dropped: video before its first parameter sets, audio frames that do
    /// not parse.
    pub frames_dropped: u64,
}

/// A program clock reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pcr {
    /// The PID that carried it (the program's PCR_PID).
    pub pid: u16,
    /// program_clock_reference_base on the demuxer's timeline (the one of frame
    /// timestamps, so `frame.dts - pcr.base` is the multiplexer's buffering delay).
    pub base: Timestamp,
    /// program_clock_reference_extension (0..300, in 27 MHz ticks).
    pub extension: u16,
    /// The packet's discontinuity_indicator: the clock may have jumped.
    pub discontinuity: bool,
}

impl Pcr {
    /// The clock in 27 MHz ticks.
    pub fn ticks_27mhz(&self) -> i64 {
        self.base
            .ticks()
            .saturating_mul(300)
            .saturating_add(i64::from(self.extension))
    }
}

/// What the demuxer hands out.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TsEvent {
    /// The program's tracks, on the first PMT and whenever its streams change.
    /// Configurations are empty until they arrive as [`FrameFlags::CONFIG`] frames
    /// ([`TsDemuxer::tracks`] has the latest).
    Tracks(Vec<TrackInfo>),
    /// A frame, or a configuration frame.
    Frame(Frame),
    /// A program clock reference of the program.
    Pcr(Pcr),
    /// Something was damaged and dropped; demuxing goes on.
    Error(TsError),
}

/// A sans-IO MPEG-TS demuxer.
///
/// Call order: [`push`](Self::push) bytes as they arrive (any split), then
/// [`poll_event`](Self::poll_event) until it returns `None`; at the end of the input,
/// [`flush`](Self::flush) and poll again (a video PES of unknown length ends only
/// when the next one starts). Events queue up until polled.
#[derive(Debug)]
pub struct TsDemuxer {
    config: DemuxConfig,
    /// Bytes pushed but not yet taken as packets: less than one packet between
    /// pushes.
    input: BytesMut,
    pat: PsiPid,
    pmt: PsiPid,
    pmt_pid: Option<u16>,
    program: Option<u16>,
    current_pmt: Option<(u8, Pmt)>,
    pcr_pid: Option<u16>,
    streams: Vec<EsStream>,
    clock: Unwrap33,
    out: Output,
    tracks: Vec<TrackInfo>,
    last_pcr: Option<Pcr>,
}

#[derive(Debug, Default)]
struct PsiPid {
    assembler: SectionAssembler,
    cc: Option<u8>,
}

#[derive(Debug, Default)]
struct Output {
    events: VecDeque<TsEvent>,
    stats: DemuxStats,
}

impl Output {
    fn error(&mut self, e: TsError) {
        self.events.push_back(TsEvent::Error(e));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EsKind {
    Video(CodecId),
    Aac,
    Opus { channel_config: Option<u8> },
}

impl EsKind {
    fn from_pmt(s: &PmtStream) -> Option<Self> {
        Some(match s.stream_type {
            STREAM_TYPE_H264 => Self::Video(CodecId::H264),
            STREAM_TYPE_H265 => Self::Video(CodecId::H265),
            STREAM_TYPE_AAC_ADTS => Self::Aac,
            STREAM_TYPE_PRIVATE_PES if s.registration == Some(*b"Opus") => Self::Opus {
                channel_config: s.opus_channel_config,
            },
            _ => return None,
        })
    }

    fn codec(self) -> CodecId {
        match self {
            Self::Video(c) => c,
            Self::Aac => CodecId::Aac,
            Self::Opus { .. } => CodecId::Opus,
        }
    }
}

#[derive(Debug)]
struct EsStream {
    pid: u16,
    track: TrackId,
    kind: EsKind,
    cc: Option<u8>,
    pes: BytesMut,
    /// A PES is being collected.
    active: bool,
    /// The whole PES size, when its PES_packet_length is not 0.
    expected: Option<usize>,
    /// The last packet added to the PES was padded with adaptation-field stuffing:
    /// muxers pad the last packet of a PES, so a PES of unknown length that ends so
    /// is whole (see [`TsDemuxer::flush`]).
    ends_stuffed: bool,
    /// The configuration record last emitted.
    config: Option<Bytes>,
    vps: Vec<Bytes>,
    sps: Vec<Bytes>,
    pps: Vec<Bytes>,
    asc: Option<AudioSpecificConfig>,
    /// Where the next audio frame starts when a PES has no PTS.
    next_audio_ts: Option<i64>,
    last_video_ts: Option<(i64, i64)>,
}

impl EsStream {
    fn new(pid: u16, kind: EsKind) -> Self {
        Self {
            pid,
            track: TrackId(0),
            kind,
            cc: None,
            pes: BytesMut::new(),
            active: false,
            ends_stuffed: false,
            expected: None,
            config: None,
            vps: Vec::new(),
            sps: Vec::new(),
            pps: Vec::new(),
            asc: None,
            next_audio_ts: None,
            last_video_ts: None,
        }
    }

    fn drop_pes(&mut self, out: &mut Output) {
        if self.active {
            out.stats.pes_dropped += 1;
        }
        self.active = false;
        self.pes.clear();
    }
}

/// What a continuity counter says about a packet.
enum Continuity {
    Ok,
    Duplicate,
    Gap { expected: u8 },
}

fn check_continuity(last: &mut Option<u8>, cc: u8, has_payload: bool, reset: bool) -> Continuity {
    if !has_payload {
        return Continuity::Ok;
    }
    let Some(prev) = last.replace(cc) else {
        return Continuity::Ok;
    };
    if reset {
        return Continuity::Ok;
    }
    let expected = (prev + 1) & 0x0F;
    if cc == expected {
        Continuity::Ok
    } else if cc == prev {
        Continuity::Duplicate
    } else {
        Continuity::Gap { expected }
    }
}

/// The parts of a packet header and adaptation field the demuxer uses.
struct Packet<'a> {
    pid: u16,
    unit_start: bool,
    cc: u8,
    has_payload: bool,
    discontinuity: bool,
    pcr: Option<(u64, u16)>,
    /// The adaptation field holds stuffing bytes (the packet's payload was padded).
    stuffed: bool,
    payload: &'a [u8],
}

fn parse_packet(pkt: &[u8; PACKET_SIZE]) -> Result<Packet<'_>, TsError> {
    let [_, b1, b2, b3, rest @ ..] = pkt;
    let pid = u16::from_be_bytes([b1 & 0x1F, *b2]);
    if b1 & 0x80 != 0 {
        return Err(TsError::TransportError { pid });
    }
    let invalid = |reason| TsError::InvalidPacket { pid, reason };
    if b3 >> 6 != 0 {
        return Err(invalid("scrambled"));
    }
    let afc = (b3 >> 4) & 0x03;
    if afc == 0 {
        return Err(invalid("adaptation_field_control 00"));
    }
    let mut payload: &[u8] = rest;
    let mut discontinuity = false;
    let mut pcr = None;
    let mut stuffed = false;
    if afc & 0x02 != 0 {
        let Some((&len, after)) = payload.split_first() else {
            return Err(invalid("missing adaptation field"));
        };
        let (af, after) = after
            .split_at_checked(usize::from(len))
            .ok_or(invalid("adaptation_field_length past the end"))?;
        if let Some((&flags, fields)) = af.split_first() {
            discontinuity = flags & 0x80 != 0;
            if flags & 0x10 != 0 {
                let Some(&[p0, p1, p2, p3, p4, p5]) = fields.get(..6) else {
                    return Err(invalid("truncated PCR"));
                };
                let base = u64::from(p0) << 25
                    | u64::from(p1) << 17
                    | u64::from(p2) << 9
                    | u64::from(p3) << 1
                    | u64::from(p4 >> 7);
                let ext = u16::from(p4 & 0x01) << 8 | u16::from(p5);
                pcr = Some((base, ext));
            }
            let announced = announced_fields(flags, fields);
            // padding: stuffing bytes after the announced fields, or a field that
            // announces nothing (2 bytes of stuffing; on a PES start it may be there
            // for its random_access_indicator alone, so it does not count)
            stuffed = fields.len() > announced || (announced == 0 && b1 & 0x40 == 0);
        } else {
            // adaptation_field_length 0: a single stuffing byte
            stuffed = true;
        }
        payload = after;
    }
    let has_payload = afc & 0x01 != 0;
    Ok(Packet {
        pid,
        unit_start: b1 & 0x40 != 0,
        cc: b3 & 0x0F,
        has_payload,
        discontinuity,
        pcr,
        stuffed,
        payload: if has_payload { payload } else { &[] },
    })
}

/// The bytes after the flags byte that the adaptation field's flags announce
/// (PCR, OPCR, splice countdown, private data, extension); anything after them is
/// stuffing. Saturates at `fields.len()` where a length byte points past the end.
pub(super) fn announced_fields(flags: u8, fields: &[u8]) -> usize {
    let mut n = 0usize;
    if flags & 0x10 != 0 {
        n += 6;
    }
    if flags & 0x08 != 0 {
        n += 6;
    }
    if flags & 0x04 != 0 {
        n += 1;
    }
    for flag in [0x02u8, 0x01] {
        if flags & flag != 0 {
            // private data and the extension: a length byte, then that many bytes
            let len = fields.get(n).map_or(0, |&l| usize::from(l));
            n += 1 + len;
        }
    }
    n.min(fields.len())
}

impl Default for TsDemuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl TsDemuxer {
    /// A demuxer with the default [`DemuxConfig`].
    pub fn new() -> Self {
        Self::with_config(DemuxConfig::default())
    }

    /// A demuxer with the given settings.
    pub fn with_config(config: DemuxConfig) -> Self {
        Self {
            config,
            input: BytesMut::new(),
            pat: PsiPid::default(),
            pmt: PsiPid::default(),
            pmt_pid: None,
            program: None,
            current_pmt: None,
            pcr_pid: None,
            streams: Vec::new(),
            clock: Unwrap33::default(),
            out: Output::default(),
            tracks: Vec::new(),
            last_pcr: None,
        }
    }

    /// Feeds transport stream bytes; packets may be split anywhere. A packet is
    /// taken when it starts with a sync byte and the byte after it (when already
    /// there) is one too; other bytes are skipped ([`TsError::SyncLost`]).
    pub fn push(&mut self, data: &[u8]) {
        if self.input.is_empty() {
            // the common case (pushes of whole packets): no staging copy
            let consumed = self.take_packets(data);
            self.input
                .extend_from_slice(data.get(consumed..).unwrap_or(&[]));
        } else {
            self.input.extend_from_slice(data);
            let input = std::mem::take(&mut self.input);
            let consumed = self.take_packets(&input);
            self.input = input;
            self.input.advance(consumed);
        }
    }

    /// Handles the packets at the start of `data` and skips garbage; returns the
    /// bytes consumed (all but less than a packet).
    fn take_packets(&mut self, data: &[u8]) -> usize {
        let mut rest = data;
        while let Some((pkt, after)) = rest.split_first_chunk::<PACKET_SIZE>() {
            if pkt[0] == SYNC_BYTE && after.first().is_none_or(|&b| b == SYNC_BYTE) {
                self.handle_packet(pkt);
                rest = after;
            } else {
                let skip = resync_offset(rest);
                self.note_skipped(skip);
                rest = rest.get(skip..).unwrap_or(&[]);
            }
        }
        data.len() - rest.len()
    }

    /// Ends the input: completes the PES packets still open (a video PES of unknown
    /// length) and drops a partial packet.
    ///
    /// A PES of unknown length is completed only if its last packet was padded with
    /// adaptation-field stuffing, as muxers pad the last packet of every PES: a
    /// sender that closed without delivering its tail (ffmpeg's SRT output does not
    /// linger) leaves a PES ending in a full packet, and that truncated frame would
    /// reach every player and recording as a decode error. It is dropped instead
    /// (counted in [`DemuxStats::pes_dropped`]); so is a whole PES that happened to
    /// fill its last packet exactly, the safe side of the guess.
    pub fn flush(&mut self) {
        if !self.input.is_empty() {
            self.note_skipped(self.input.len());
            self.input.clear();
        }
        for i in 0..self.streams.len() {
            if let Some(s) = self.streams.get_mut(i)
                && s.active
                && s.expected.is_none()
                && !s.ends_stuffed
            {
                s.drop_pes(&mut self.out);
                continue;
            }
            self.finish_pes(i);
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<TsEvent> {
        self.out.events.pop_front()
    }

    /// The program's tracks with their latest configurations (empty before the
    /// first PMT).
    pub fn tracks(&self) -> &[TrackInfo] {
        &self.tracks
    }

    /// The last program clock reference.
    pub fn pcr(&self) -> Option<Pcr> {
        self.last_pcr
    }

    /// Counters of what was seen and dropped.
    pub fn stats(&self) -> &DemuxStats {
        &self.out.stats
    }

    fn note_skipped(&mut self, skipped: usize) {
        self.out.stats.bytes_skipped += skipped as u64;
        // one event per run of garbage, however it was split
        if let Some(TsEvent::Error(TsError::SyncLost { skipped: s })) = self.out.events.back_mut() {
            *s += skipped;
        } else {
            self.out.error(TsError::SyncLost { skipped });
        }
    }

    fn handle_packet(&mut self, pkt: &[u8; PACKET_SIZE]) {
        self.out.stats.packets += 1;
        let p = match parse_packet(pkt) {
            Ok(p) => p,
            Err(e) => {
                if matches!(e, TsError::TransportError { .. }) {
                    self.out.stats.transport_errors += 1;
                }
                self.out.error(e);
                return;
            }
        };
        if p.pid == PID_NULL {
            return;
        }
        if let Some((base, extension)) = p.pcr
            && Some(p.pid) == self.pcr_pid
        {
            let pcr = Pcr {
                pid: p.pid,
                base: Timestamp(self.clock.unwrap(base)),
                extension,
                discontinuity: p.discontinuity,
            };
            self.last_pcr = Some(pcr);
            self.out.events.push_back(TsEvent::Pcr(pcr));
        }
        if p.pid == PID_PAT {
            self.handle_psi(true, &p);
        } else if Some(p.pid) == self.pmt_pid {
            self.handle_psi(false, &p);
        } else if let Some(i) = self.streams.iter().position(|s| s.pid == p.pid) {
            self.handle_es(i, &p);
        }
    }

    fn handle_psi(&mut self, is_pat: bool, p: &Packet<'_>) {
        let psi = if is_pat { &mut self.pat } else { &mut self.pmt };
        match check_continuity(&mut psi.cc, p.cc, p.has_payload, p.discontinuity) {
            Continuity::Ok => {}
            Continuity::Duplicate => return,
            Continuity::Gap { expected } => {
                psi.assembler.reset();
                self.out.stats.continuity_errors += 1;
                self.out.error(TsError::Continuity {
                    pid: p.pid,
                    expected,
                    found: p.cc,
                });
            }
        }
        if !p.has_payload {
            return;
        }
        let mut sections: Vec<Vec<u8>> = Vec::new();
        if let Err(reason) = psi
            .assembler
            .push(p.unit_start, p.payload, |s| sections.push(s.to_vec()))
        {
            self.out
                .error(TsError::InvalidSection { pid: p.pid, reason });
        }
        for section in sections {
            let s = match parse_section(&section) {
                Ok(s) => s,
                Err(reason) => {
                    self.out
                        .error(TsError::InvalidSection { pid: p.pid, reason });
                    continue;
                }
            };
            if !s.current {
                continue;
            }
            match (is_pat, s.table_id) {
                (true, TABLE_PAT) => {
                    if let Some(&(program, pmt_pid)) = parse_pat(s.body).first()
                        && (self.pmt_pid, self.program) != (Some(pmt_pid), Some(program))
                    {
                        self.pmt_pid = Some(pmt_pid);
                        self.program = Some(program);
                        self.pmt = PsiPid::default();
                        self.current_pmt = None;
                    }
                }
                (false, TABLE_PMT) if Some(s.id) == self.program => match parse_pmt(s.body) {
                    Ok(pmt) => {
                        let repeated = self
                            .current_pmt
                            .as_ref()
                            .is_some_and(|(v, current)| *v == s.version && *current == pmt);
                        if !repeated {
                            self.apply_pmt(&pmt);
                            self.current_pmt = Some((s.version, pmt));
                        }
                    }
                    Err(reason) => self
                        .out
                        .error(TsError::InvalidSection { pid: p.pid, reason }),
                },
                _ => {}
            }
        }
    }

    fn apply_pmt(&mut self, pmt: &Pmt) {
        self.pcr_pid = (pmt.pcr_pid != PID_NULL).then_some(pmt.pcr_pid);
        let mut old = std::mem::take(&mut self.streams);
        let mut video_seen = false;
        let mut audio_seen = false;
        let mut next_id = 2;
        for entry in &pmt.streams {
            let Some(kind) = EsKind::from_pmt(entry) else {
                continue;
            };
            if self.streams.iter().any(|s| s.pid == entry.pid) {
                continue;
            }
            let mut stream = match old
                .iter()
                .position(|s| s.pid == entry.pid && s.kind == kind)
            {
                Some(i) => old.swap_remove(i),
                None => EsStream::new(entry.pid, kind),
            };
            let first_of_kind = match kind.codec().kind() {
                MediaKind::Video => !std::mem::replace(&mut video_seen, true),
                MediaKind::Audio => !std::mem::replace(&mut audio_seen, true),
            };
            stream.track = match (first_of_kind, kind.codec().kind()) {
                (true, MediaKind::Video) => TrackId::VIDEO,
                (true, MediaKind::Audio) => TrackId::AUDIO,
                (false, _) => {
                    next_id += 1;
                    TrackId(next_id - 1)
                }
            };
            self.streams.push(stream);
        }
        for mut gone in old {
            gone.drop_pes(&mut self.out);
        }
        let tracks: Vec<TrackInfo> = self
            .streams
            .iter()
            .map(|s| {
                let config = s.config.clone().unwrap_or_default();
                TrackInfo::new(s.track, Codec::from_config(s.kind.codec(), config))
            })
            .collect();
        // on the first PMT of a program, and when the tracks change
        if tracks != self.tracks || self.current_pmt.is_none() {
            self.tracks = tracks.clone();
            self.out.events.push_back(TsEvent::Tracks(tracks));
        }
    }

    fn handle_es(&mut self, i: usize, p: &Packet<'_>) {
        let max = self.config.max_pes_size;
        let Some(s) = self.streams.get_mut(i) else {
            return;
        };
        match check_continuity(&mut s.cc, p.cc, p.has_payload, p.discontinuity) {
            Continuity::Ok => {}
            Continuity::Duplicate => return,
            Continuity::Gap { expected } => {
                s.drop_pes(&mut self.out);
                self.out.stats.continuity_errors += 1;
                self.out.error(TsError::Continuity {
                    pid: p.pid,
                    expected,
                    found: p.cc,
                });
            }
        }
        if !p.has_payload {
            return;
        }
        if p.unit_start {
            self.finish_pes(i);
            let Some(s) = self.streams.get_mut(i) else {
                return;
            };
            s.pes.clear();
            s.active = true;
            s.expected = None;
        }
        let Some(s) = self.streams.get_mut(i) else {
            return;
        };
        if !s.active {
            return;
        }
        let had_length = s.pes.len() >= 6;
        s.pes.extend_from_slice(p.payload);
        s.ends_stuffed = p.stuffed;
        if !had_length {
            s.expected = packet_length(&s.pes).filter(|&l| l > 0).map(|l| l + 6);
        }
        if s.pes.len() > max {
            s.drop_pes(&mut self.out);
            self.out.error(TsError::PesTooLarge {
                pid: p.pid,
                limit: max,
            });
            return;
        }
        if let Some(expected) = s.expected
            && s.pes.len() >= expected
        {
            s.pes.truncate(expected);
            self.finish_pes(i);
        }
    }

    /// Completes the PES being collected on stream `i`, if any, and converts it.
    fn finish_pes(&mut self, i: usize) {
        let Some(s) = self.streams.get_mut(i) else {
            return;
        };
        if !s.active {
            return;
        }
        if s.expected.is_some_and(|e| s.pes.len() < e) {
            s.drop_pes(&mut self.out);
            self.out.error(TsError::InvalidPes {
                pid: s.pid,
                reason: "truncated",
            });
            return;
        }
        s.active = false;
        let pes = s.pes.split().freeze();
        let header = match parse_header(&pes) {
            Ok(h) => h,
            Err(reason) => {
                self.out.stats.pes_dropped += 1;
                self.out.error(TsError::InvalidPes { pid: s.pid, reason });
                return;
            }
        };
        let Some(payload) = pes
            .get(header.payload_offset..)
            .map(|_| pes.slice(header.payload_offset..))
        else {
            self.out.stats.pes_dropped += 1;
            self.out.error(TsError::InvalidPes {
                pid: s.pid,
                reason: "header longer than the packet",
            });
            return;
        };
        let pts = header.pts.map(|v| self.clock.unwrap(v));
        let dts = header.dts.map(|v| self.clock.unwrap(v));
        let stream_tracks = &mut self.tracks;
        match s.kind {
            EsKind::Video(codec) => {
                video_pes(s, codec, &payload, pts, dts, &mut self.out, stream_tracks)
            }
            EsKind::Aac => aac_pes(s, &payload, pts, &mut self.out, stream_tracks),
            EsKind::Opus { channel_config } => opus_pes(
                s,
                channel_config,
                &payload,
                pts,
                &mut self.out,
                stream_tracks,
            ),
        }
    }
}

/// Where packet sync resumes: the next sync byte followed by another one a packet
/// later (or by the end of `data`, to be checked when more arrives).
fn resync_offset(data: &[u8]) -> usize {
    (1..data.len())
        .find(|&i| {
            data.get(i) == Some(&SYNC_BYTE)
                && data.get(i + PACKET_SIZE).is_none_or(|&b| b == SYNC_BYTE)
        })
        .unwrap_or(data.len())
}

/// Emits a configuration frame and records it in the track list.
fn emit_config(
    s: &mut EsStream,
    config: Bytes,
    ts: i64,
    out: &mut Output,
    tracks: &mut [TrackInfo],
) {
    let codec = s.kind.codec();
    if let Some(t) = tracks.iter_mut().find(|t| t.id == s.track) {
        *t = TrackInfo::new(s.track, Codec::from_config(codec, config.clone()));
    }
    s.config = Some(config.clone());
    out.events.push_back(TsEvent::Frame(Frame {
        track: s.track,
        codec,
        pts: Timestamp(ts),
        dts: Timestamp(ts),
        flags: FrameFlags::CONFIG,
        data: config,
    }));
}

fn same(current: &[Bytes], found: &[&[u8]]) -> bool {
    current.len() == found.len() && current.iter().zip(found).all(|(a, b)| a.as_ref() == *b)
}

fn replace(current: &mut Vec<Bytes>, found: &[&[u8]]) {
    *current = found.iter().map(|n| Bytes::copy_from_slice(n)).collect();
}

/// Takes the parameter sets of an access unit; returns the new configuration
/// record when they changed it.
fn update_parameter_sets(
    s: &mut EsStream,
    codec: CodecId,
    ps: &ParameterSets<'_>,
) -> Result<Option<Bytes>, CodecError> {
    let mut changed = false;
    for (current, found) in [
        (&mut s.vps, &ps.vps),
        (&mut s.sps, &ps.sps),
        (&mut s.pps, &ps.pps),
    ] {
        if !found.is_empty() && !same(current, found) {
            replace(current, found);
            changed = true;
        }
    }
    if !changed || s.sps.is_empty() || s.pps.is_empty() {
        return Ok(None);
    }
    let config = if codec == CodecId::H265 {
        if s.vps.is_empty() {
            return Ok(None);
        }
        HevcConfig::from_parameter_sets(s.vps.clone(), s.sps.clone(), s.pps.clone())?.to_bytes()?
    } else {
        AvcConfig::from_parameter_sets(s.sps.clone(), s.pps.clone())?.to_bytes()?
    };
    Ok((s.config.as_ref() != Some(&config)).then_some(config))
}

fn video_pes(
    s: &mut EsStream,
    codec: CodecId,
    payload: &[u8],
    pts: Option<i64>,
    dts: Option<i64>,
    out: &mut Output,
    tracks: &mut [TrackInfo],
) {
    let (pts, dts) = match (pts, dts, s.last_video_ts) {
        (Some(p), d, _) => (p, d.unwrap_or(p)),
        // no timestamps: take the previous ones (an access unit split over PES)
        (None, _, Some(last)) => last,
        (None, _, None) => (0, 0),
    };
    s.last_video_ts = Some((pts, dts));
    let (au, ps) = to_length_prefixed(codec, payload);
    if !ps.is_empty() {
        match update_parameter_sets(s, codec, &ps) {
            Ok(Some(config)) => emit_config(s, config, dts, out, tracks),
            Ok(None) => {}
            Err(source) => out.error(TsError::Codec { pid: s.pid, source }),
        }
    }
    if au.data.is_empty() {
        return;
    }
    if s.config.is_none() {
        out.stats.frames_dropped += 1;
        return;
    }
    out.stats.frames += 1;
    out.events.push_back(TsEvent::Frame(Frame {
        track: s.track,
        codec,
        pts: Timestamp(pts),
        dts: Timestamp(dts),
        flags: if au.keyframe {
            FrameFlags::KEYFRAME
        } else {
            FrameFlags::NONE
        },
        data: au.data,
    }));
}

/// Samples at `rate` Hz to 90 kHz ticks, rounded down.
fn samples_to_ticks(samples: u64, rate: u32) -> i64 {
    if rate == 0 {
        return 0;
    }
    (u128::from(samples) * 90_000 / u128::from(rate)) as i64
}

fn aac_pes(
    s: &mut EsStream,
    payload: &Bytes,
    pts: Option<i64>,
    out: &mut Output,
    tracks: &mut [TrackInfo],
) {
    let base = pts.or(s.next_audio_ts).unwrap_or(0);
    let mut pos = 0;
    let mut samples: u64 = 0;
    let mut rate = s.asc.as_ref().map_or(0, |a| a.sampling_frequency);
    while let Some(rest) = payload.get(pos..).filter(|r| !r.is_empty()) {
        let h = match aac::parse_adts(rest) {
            Ok(h) if h.frame_len <= rest.len() => h,
            Ok(_) => {
                out.stats.frames_dropped += 1;
                out.error(TsError::Codec {
                    pid: s.pid,
                    source: CodecError::Truncated("ADTS frame"),
                });
                break;
            }
            Err(source) => {
                out.stats.frames_dropped += 1;
                out.error(TsError::Codec { pid: s.pid, source });
                break;
            }
        };
        let frame = pos + h.header_len..pos + h.frame_len;
        pos += h.frame_len;
        if h.raw_data_blocks != 1 {
            out.stats.frames_dropped += 1;
            out.error(TsError::Codec {
                pid: s.pid,
                source: CodecError::InvalidValue {
                    field: "ADTS raw data blocks",
                    value: u64::from(h.raw_data_blocks),
                },
            });
            continue;
        }
        rate = h.config.sampling_frequency;
        let ts = base + samples_to_ticks(samples, rate);
        samples += 1024;
        if s.asc.as_ref() != Some(&h.config) {
            match h.config.to_bytes() {
                Ok(config) => emit_config(s, config, ts, out, tracks),
                Err(source) => {
                    out.stats.frames_dropped += 1;
                    out.error(TsError::Codec { pid: s.pid, source });
                    continue;
                }
            }
            s.asc = Some(h.config);
        }
        out.stats.frames += 1;
        out.events.push_back(TsEvent::Frame(Frame {
            track: s.track,
            codec: CodecId::Aac,
            pts: Timestamp(ts),
            dts: Timestamp(ts),
            flags: FrameFlags::NONE,
            data: payload.slice(frame),
        }));
    }
    s.next_audio_ts = Some(base + samples_to_ticks(samples, rate));
}

/// Reads one Opus access unit's control header (ETSI TS 102 366 style, as carried
/// in MPEG-TS: 0x7FE0 prefix, trim and extension flags, au_size in 0xFF-extended
/// bytes); returns the range of the packet that follows.
fn opus_control_header(data: &[u8]) -> Result<std::ops::Range<usize>, CodecError> {
    let &[b0, b1, ..] = data else {
        return Err(CodecError::Truncated("Opus control header"));
    };
    if b0 != 0x7F || b1 & 0xE0 != 0xE0 {
        return Err(CodecError::InvalidValue {
            field: "Opus control header prefix",
            value: u64::from(u16::from_be_bytes([b0, b1])),
        });
    }
    let mut pos = 2;
    let mut size = 0usize;
    loop {
        let b = *data.get(pos).ok_or(CodecError::Truncated("Opus au_size"))?;
        pos += 1;
        size += usize::from(b);
        if b != 0xFF {
            break;
        }
    }
    if b1 & 0x10 != 0 {
        pos += 2; // start_trim
    }
    if b1 & 0x08 != 0 {
        pos += 2; // end_trim
    }
    if b1 & 0x04 != 0 {
        let len = *data
            .get(pos)
            .ok_or(CodecError::Truncated("Opus control extension"))?;
        pos += 1 + usize::from(len);
    }
    if data.len() < pos + size {
        return Err(CodecError::Truncated("Opus packet"));
    }
    Ok(pos..pos + size)
}

fn opus_pes(
    s: &mut EsStream,
    channel_config: Option<u8>,
    payload: &Bytes,
    pts: Option<i64>,
    out: &mut Output,
    tracks: &mut [TrackInfo],
) {
    let base = pts.or(s.next_audio_ts).unwrap_or(0);
    let mut pos = 0;
    let mut samples: u64 = 0;
    while let Some(rest) = payload.get(pos..).filter(|r| !r.is_empty()) {
        let packet = match opus_control_header(rest) {
            Ok(range) => pos + range.start..pos + range.end,
            Err(source) => {
                out.stats.frames_dropped += 1;
                out.error(TsError::Codec { pid: s.pid, source });
                break;
            }
        };
        pos = packet.end;
        let data = payload.slice(packet);
        let duration = match opus::packet_samples(&data) {
            Ok(d) => d,
            Err(source) => {
                out.stats.frames_dropped += 1;
                out.error(TsError::Codec { pid: s.pid, source });
                continue;
            }
        };
        let ts = base + samples_to_ticks(samples, opus::OPUS_SAMPLE_RATE);
        samples += u64::from(duration);
        if s.config.is_none()
            && let Some(channels @ 1..=2) = channel_config
        {
            let head = OpusHead {
                channels,
                pre_skip: 0,
                input_sample_rate: opus::OPUS_SAMPLE_RATE,
                mapping_family: 0,
            };
            if let Ok(config) = head.to_bytes() {
                emit_config(s, config, ts, out, tracks);
            }
        }
        out.stats.frames += 1;
        out.events.push_back(TsEvent::Frame(Frame {
            track: s.track,
            codec: CodecId::Opus,
            pts: Timestamp(ts),
            dts: Timestamp(ts),
            flags: FrameFlags::NONE,
            data,
        }));
    }
    s.next_audio_ts = Some(base + samples_to_ticks(samples, opus::OPUS_SAMPLE_RATE));
}
