//! The muxer: core frames in, 188-byte packets out.

use bytes::{BufMut, Bytes, BytesMut};

use super::annexb::{NalKind, START_CODE, aud, nal_kind};
use super::pes::{self, STREAM_ID_AUDIO, STREAM_ID_PRIVATE_1, STREAM_ID_VIDEO};
use super::psi::{DESC_EXTENSION, DESC_REGISTRATION, EXT_OPUS, PmtEntry, write_pat, write_pmt};
use super::{
    PACKET_SIZE, PID_NULL, PID_PAT, STREAM_TYPE_AAC_ADTS, STREAM_TYPE_H264, STREAM_TYPE_H265,
    STREAM_TYPE_PRIVATE_PES, SYNC_BYTE, TsError, wrap33,
};
use crate::codec::aac::{AudioSpecificConfig, parse_asc};
use crate::codec::h264::parse_avc_config;
use crate::codec::h265::parse_hevc_config;
use crate::codec::{nal_units, opus};
use crate::model::{CodecId, Frame, MediaKind, Timestamp, TrackId, TrackInfo};

/// Muxer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxConfig {
    /// PAT and PMT are written before the first frame, before every video keyframe
    /// and whenever this much time (by frame DTS) has passed. 100 ms by default.
    pub psi_interval: Timestamp,
    /// The longest PCR spacing (by frame DTS). Frames on the PCR PID carry a PCR once
    /// half of it has passed since the last one; a frame of another track forces a
    /// PCR-only packet when all of it has. 40 ms by default.
    pub pcr_interval: Timestamp,
    /// How far the PCR runs behind the DTS of the frame it is written with: the
    /// decoder's buffering margin. 200 ms by default. The PCR never goes below 0
    /// at the start, so streams starting at 0 keep their timestamps.
    pub pcr_delay: Timestamp,
    /// transport_stream_id of the PAT. 1 by default.
    pub transport_stream_id: u16,
    /// program_number of the one program. 1 by default.
    pub program_number: u16,
    /// The PMT's PID. 0x1000 by default.
    pub pmt_pid: u16,
    /// The PID of the first track; the others follow. 0x100 by default.
    pub first_pid: u16,
}

impl Default for MuxConfig {
    fn default() -> Self {
        Self {
            psi_interval: Timestamp::from_millis(100),
            pcr_interval: Timestamp::from_millis(40),
            pcr_delay: Timestamp::from_millis(200),
            transport_stream_id: 1,
            program_number: 1,
            pmt_pid: 0x1000,
            first_pid: 0x100,
        }
    }
}

/// A sans-IO MPEG-TS muxer: one program, one elementary stream per track.
///
/// H.264 and HEVC access units are written in Annex B form with an access unit
/// delimiter first and, on keyframes that do not carry their own, the parameter sets
/// of the last configuration; AAC frames get ADTS headers; Opus packets get the
/// control header of Opus in MPEG-TS. [`FrameFlags::CONFIG`] frames update a
/// track's configuration and write nothing.
///
/// [`FrameFlags::CONFIG`]: crate::model::FrameFlags::CONFIG
#[derive(Debug)]
pub struct TsMuxer {
    config: MuxConfig,
    tracks: Vec<MuxTrack>,
    pcr_track: usize,
    pat: Vec<u8>,
    pmt: Vec<u8>,
    pat_cc: u8,
    pmt_cc: u8,
    last_psi: Option<i64>,
    /// The DTS of the frame the last PCR was written with, and its value.
    last_pcr: Option<(i64, i64)>,
}

#[derive(Debug)]
struct MuxTrack {
    id: TrackId,
    codec: CodecId,
    pid: u16,
    stream_id: u8,
    cc: u8,
    /// The NAL unit length size of video frames.
    nalu_len: usize,
    /// Video parameter sets in Annex B order (VPS, SPS, PPS).
    param_sets: Vec<Bytes>,
    asc: Option<AudioSpecificConfig>,
}

impl MuxTrack {
    fn new(id: TrackId, codec: CodecId, pid: u16) -> Result<Self, TsError> {
        let stream_id = match codec {
            CodecId::H264 | CodecId::H265 => STREAM_ID_VIDEO,
            CodecId::Aac => STREAM_ID_AUDIO,
            CodecId::Opus => STREAM_ID_PRIVATE_1,
            other => return Err(TsError::UnsupportedCodec(other)),
        };
        Ok(Self {
            id,
            codec,
            pid,
            stream_id,
            cc: 0,
            nalu_len: 4,
            param_sets: Vec::new(),
            asc: None,
        })
    }

    /// Takes a configuration record; an empty one is ignored.
    fn set_config(&mut self, config: &Bytes) -> Result<(), TsError> {
        if config.is_empty() {
            return Ok(());
        }
        let invalid = |source| TsError::InvalidConfig {
            track: self.id,
            source,
        };
        match self.codec {
            CodecId::H264 => {
                let c = parse_avc_config(config).map_err(invalid)?;
                self.nalu_len = usize::from(c.nalu_length_size);
                self.param_sets = c.sps.into_iter().chain(c.pps).collect();
            }
            CodecId::H265 => {
                let c = parse_hevc_config(config).map_err(invalid)?;
                self.nalu_len = usize::from(c.nalu_length_size);
                self.param_sets = c.vps.into_iter().chain(c.sps).chain(c.pps).collect();
            }
            CodecId::Aac => {
                let asc = parse_asc(config).map_err(invalid)?;
                // check now that ADTS can express it
                asc.adts_header(0).map_err(invalid)?;
                self.asc = Some(asc);
            }
            _ => {}
        }
        Ok(())
    }

    fn pmt_entry(&self, config: &Bytes) -> PmtEntry {
        match self.codec {
            CodecId::H265 => (STREAM_TYPE_H265, self.pid, Vec::new()),
            CodecId::Aac => (STREAM_TYPE_AAC_ADTS, self.pid, Vec::new()),
            CodecId::Opus => {
                let channels = opus::parse_opus_head(config)
                    .map(|h| h.channels)
                    .unwrap_or(2);
                let mut d = vec![DESC_REGISTRATION, 4];
                d.extend_from_slice(b"Opus");
                d.extend_from_slice(&[DESC_EXTENSION, 2, EXT_OPUS, channels]);
                (STREAM_TYPE_PRIVATE_PES, self.pid, d)
            }
            _ => (STREAM_TYPE_H264, self.pid, Vec::new()),
        }
    }
}

/// Adaptation field contents of a PES's first packet.
#[derive(Debug, Clone, Copy, Default)]
struct AdaptationFields {
    /// PCR base and the discontinuity_indicator.
    pcr: Option<(u64, bool)>,
    random_access: bool,
}

impl AdaptationFields {
    /// Bytes the fields take, length byte included (0 when there are none).
    fn len(&self) -> usize {
        match (self.pcr, self.random_access) {
            (None, false) => 0,
            (None, true) => 2,
            (Some(_), _) => 8,
        }
    }
}

/// Copies from a list of slices in order.
struct Chunks<'a, 'b> {
    chunks: &'a [&'b [u8]],
    index: usize,
    offset: usize,
}

impl Chunks<'_, '_> {
    fn copy_to(&mut self, out: &mut BytesMut, mut n: usize) {
        while n > 0 {
            let Some(chunk) = self.chunks.get(self.index) else {
                return;
            };
            let avail = chunk.get(self.offset..).unwrap_or(&[]);
            let take = n.min(avail.len());
            out.put_slice(avail.get(..take).unwrap_or(&[]));
            n -= take;
            self.offset += take;
            if self.offset >= chunk.len() {
                self.index += 1;
                self.offset = 0;
            }
        }
    }
}

fn packet_header(out: &mut BytesMut, pid: u16, unit_start: bool, afc: u8, cc: u8) {
    out.put_u8(SYNC_BYTE);
    out.put_u16(u16::from(unit_start) << 14 | (pid & PID_NULL));
    out.put_u8(afc << 4 | (cc & 0x0F));
}

fn put_pcr(out: &mut BytesMut, base: u64) {
    let ext: u16 = 0;
    out.put_u32((base >> 1) as u32);
    out.put_u8(((base & 1) as u8) << 7 | 0x7E | (ext >> 8) as u8);
    out.put_u8(ext as u8);
}

/// Writes the adaptation field of `total` bytes (length byte included, at least 1):
/// the fields, then stuffing.
fn put_adaptation_field(out: &mut BytesMut, fields: AdaptationFields, total: usize) {
    out.put_u8((total - 1) as u8);
    if total < 2 {
        return;
    }
    let mut flags = 0;
    if let Some((_, true)) = fields.pcr {
        flags |= 0x80;
    }
    if fields.random_access {
        flags |= 0x40;
    }
    if fields.pcr.is_some() {
        flags |= 0x10;
    }
    out.put_u8(flags);
    let mut written = 2;
    if let Some((base, _)) = fields.pcr {
        put_pcr(out, base);
        written += 6;
    }
    out.put_bytes(0xFF, total.saturating_sub(written));
}

/// Packetizes one PES (`chunks` concatenated, header included): the first packet
/// has the unit start and `fields`, the last is padded with adaptation-field
/// stuffing.
fn write_pes_packets(
    out: &mut BytesMut,
    pid: u16,
    cc: &mut u8,
    fields: AdaptationFields,
    chunks: &[&[u8]],
) {
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let mut reader = Chunks {
        chunks,
        index: 0,
        offset: 0,
    };
    out.reserve((total + fields.len()).div_ceil(184) * PACKET_SIZE);
    let mut remaining = total;
    let mut first = true;
    while remaining > 0 || first {
        let fields = if first {
            fields
        } else {
            AdaptationFields::default()
        };
        let space = 184 - fields.len();
        let n = remaining.min(space);
        let af_total = 184 - n;
        packet_header(out, pid, first, if af_total > 0 { 0x3 } else { 0x1 }, *cc);
        if af_total > 0 {
            put_adaptation_field(out, fields, af_total);
        }
        reader.copy_to(out, n);
        *cc = (*cc + 1) & 0x0F;
        remaining -= n;
        first = false;
    }
}

/// Packetizes a PSI section: pointer field, section, 0xFF stuffing.
fn write_section_packets(out: &mut BytesMut, pid: u16, cc: &mut u8, section: &[u8]) {
    let mut rest = section;
    let mut first = true;
    while first || !rest.is_empty() {
        packet_header(out, pid, first, 0x1, *cc);
        let mut space = 184;
        if first {
            out.put_u8(0);
            space -= 1;
        }
        let (now, later) = rest.split_at(space.min(rest.len()));
        out.put_slice(now);
        out.put_bytes(0xFF, space - now.len());
        rest = later;
        *cc = (*cc + 1) & 0x0F;
        first = false;
    }
}

/// A packet with only an adaptation field carrying a PCR. The continuity counter
/// does not advance for packets without payload, so it repeats the last one.
fn write_pcr_packet(out: &mut BytesMut, pid: u16, cc: u8, pcr: (u64, bool)) {
    packet_header(out, pid, false, 0x2, cc.wrapping_sub(1));
    put_adaptation_field(
        out,
        AdaptationFields {
            pcr: Some(pcr),
            random_access: false,
        },
        184,
    );
}

/// The Opus control header: prefix 0x7FE0 (no trims, no extension) and au_size.
fn opus_control_header(size: usize) -> Vec<u8> {
    let mut h = vec![0x7F, 0xE0];
    h.resize(2 + size / 255, 0xFF);
    h.push((size % 255) as u8);
    h
}

impl TsMuxer {
    /// A muxer for `tracks` (H.264, HEVC, AAC or Opus; configurations may be empty
    /// and come later as configuration frames). The PCR is carried on the first
    /// video track, or the first track if there is no video.
    pub fn new(tracks: &[TrackInfo], config: MuxConfig) -> Result<Self, TsError> {
        let max = usize::from(PID_NULL - config.first_pid.min(PID_NULL)).min(32);
        if tracks.is_empty() || tracks.len() > max {
            return Err(TsError::TrackCount {
                got: tracks.len(),
                max,
            });
        }
        let mut mux_tracks = Vec::with_capacity(tracks.len());
        let mut entries = Vec::with_capacity(tracks.len());
        for (i, t) in tracks.iter().enumerate() {
            let pid = config.first_pid + i as u16;
            let mut m = MuxTrack::new(t.id, t.codec.id(), pid)?;
            m.set_config(t.codec.config())?;
            entries.push(m.pmt_entry(t.codec.config()));
            mux_tracks.push(m);
        }
        let pcr_track = mux_tracks
            .iter()
            .position(|t| t.codec.kind() == MediaKind::Video)
            .unwrap_or(0);
        let pcr_pid = config.first_pid + pcr_track as u16;
        Ok(Self {
            pat: write_pat(
                config.transport_stream_id,
                config.program_number,
                config.pmt_pid,
            ),
            pmt: write_pmt(config.program_number, pcr_pid, &entries),
            config,
            tracks: mux_tracks,
            pcr_track,
            pat_cc: 0,
            pmt_cc: 0,
            last_psi: None,
            last_pcr: None,
        })
    }

    /// The PID of a track.
    pub fn pid(&self, track: TrackId) -> Option<u16> {
        self.tracks.iter().find(|t| t.id == track).map(|t| t.pid)
    }

    /// Appends a PAT and a PMT (as at the start of a file segment).
    pub fn write_psi(&mut self, out: &mut BytesMut) {
        write_section_packets(out, PID_PAT, &mut self.pat_cc, &self.pat);
        write_section_packets(out, self.config.pmt_pid, &mut self.pmt_cc, &self.pmt);
    }

    /// Appends the packets of one frame to `out` (nothing for configuration frames
    /// and empty frames), preceded by PAT/PMT and a PCR when they are due.
    ///
    /// On error nothing is written.
    pub fn write_frame(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), TsError> {
        let index = self
            .tracks
            .iter()
            .position(|t| t.id == frame.track)
            .ok_or(TsError::UnknownTrack(frame.track))?;
        let Some(track) = self.tracks.get_mut(index) else {
            return Err(TsError::UnknownTrack(frame.track));
        };
        if frame.is_config() {
            return track.set_config(&frame.data);
        }
        if frame.data.is_empty() {
            return Ok(());
        }
        let codec = track.codec;
        let video = codec.kind() == MediaKind::Video;
        let keyframe = frame.is_keyframe() && video;
        // the payload as a list of slices, the PES header first
        let adts;
        let opus_header;
        let mut param_sets = Vec::new();
        let mut chunks: Vec<&[u8]> = vec![&[]];
        match codec {
            CodecId::H264 | CodecId::H265 => {
                let nalu_len = track.nalu_len;
                let mut has_sps = false;
                for nal in nal_units(&frame.data, nalu_len) {
                    let nal = nal.map_err(|_| TsError::InvalidFrame {
                        track: frame.track,
                        reason: "NAL unit length past the end",
                    })?;
                    has_sps |= nal_kind(codec, nal) == NalKind::Sps;
                }
                if keyframe && !has_sps {
                    param_sets.clone_from(&track.param_sets);
                }
                chunks.push(aud(codec));
                for ps in &param_sets {
                    chunks.push(START_CODE);
                    chunks.push(ps);
                }
                for nal in nal_units(&frame.data, nalu_len).map_while(Result::ok) {
                    if nal.is_empty() || nal_kind(codec, nal) == NalKind::Aud {
                        continue;
                    }
                    chunks.push(START_CODE);
                    chunks.push(nal);
                }
            }
            CodecId::Aac => {
                let asc = track
                    .asc
                    .as_ref()
                    .ok_or(TsError::MissingConfig(frame.track))?;
                adts = asc
                    .adts_header(frame.data.len())
                    .map_err(|_| TsError::FrameTooLarge {
                        size: frame.data.len(),
                    })?;
                chunks.push(&adts);
                chunks.push(&frame.data);
            }
            CodecId::Opus => {
                opus_header = opus_control_header(frame.data.len());
                chunks.push(&opus_header);
                chunks.push(&frame.data);
            }
            other => return Err(TsError::UnsupportedCodec(other)),
        }
        let payload_len: usize = chunks.iter().map(|c| c.len()).sum();
        let pts = frame.pts.ticks();
        let dts = frame.dts.ticks();
        let (header, header_len) = pes::write_header(
            track.stream_id,
            wrap33(pts),
            (video && dts != pts).then(|| wrap33(dts)),
            payload_len,
        );
        if !video && header_len - 6 + payload_len > usize::from(u16::MAX) {
            return Err(TsError::FrameTooLarge {
                size: frame.data.len(),
            });
        }
        if let Some(slot) = chunks.first_mut() {
            *slot = header.get(..header_len).unwrap_or(&[]);
        }

        // nothing can fail from here on
        let psi_due = keyframe
            || self
                .last_psi
                .is_none_or(|last| dts < last || dts - last >= self.config.psi_interval.ticks());
        let on_pcr_pid = index == self.pcr_track;
        let pcr = self.next_pcr(dts, on_pcr_pid);
        if psi_due {
            self.last_psi = Some(dts);
            write_section_packets(out, PID_PAT, &mut self.pat_cc, &self.pat);
            write_section_packets(out, self.config.pmt_pid, &mut self.pmt_cc, &self.pmt);
        }
        let mut fields = AdaptationFields {
            pcr: None,
            random_access: keyframe,
        };
        if let Some(pcr) = pcr {
            if on_pcr_pid {
                fields.pcr = Some(pcr);
            } else if let Some(t) = self.tracks.get(self.pcr_track) {
                write_pcr_packet(out, t.pid, t.cc, pcr);
            }
        }
        let Some(track) = self.tracks.get_mut(index) else {
            return Ok(());
        };
        write_pes_packets(out, track.pid, &mut track.cc, fields, &chunks);
        Ok(())
    }

    /// Whether a PCR is due with a frame of this DTS, and its value.
    fn next_pcr(&mut self, dts: i64, on_pcr_pid: bool) -> Option<(u64, bool)> {
        let interval = self.config.pcr_interval.ticks();
        let target = dts.saturating_sub(self.config.pcr_delay.ticks());
        let (value, discontinuity) = match self.last_pcr {
            None => (target.max(0), false),
            Some((at, last)) => {
                let since = dts.saturating_sub(at);
                let due = if on_pcr_pid {
                    since >= interval / 2
                } else {
                    since >= interval
                };
                if target < last.saturating_sub(Timestamp::HZ) {
                    // the timeline went back: a new time base
                    (target, true)
                } else if due {
                    (target.max(last), false)
                } else {
                    return None;
                }
            }
        };
        self.last_pcr = Some((dts, value));
        Some((wrap33(value), discontinuity))
    }
}
