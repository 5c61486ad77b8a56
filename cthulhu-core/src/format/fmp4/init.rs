//! The init segment: `ftyp` and `moov`, and the per-track facts it is built from.

use bytes::Bytes;

use super::SkipReason;
use super::boxes::{BoxBuf, descriptor};
use crate::codec::aac::parse_asc;
use crate::codec::h264::parse_avc_config;
use crate::codec::h265::parse_hevc_config;
use crate::codec::{CodecError, opus};
use crate::model::{Codec, CodecId, Timestamp};

/// The timescale of video tracks: the core timestamps' own.
pub(super) const VIDEO_TIMESCALE: u32 = Timestamp::HZ as u32;
/// The duration of a held-back last video sample when nothing better is known:
/// 1/30 s.
const DEFAULT_VIDEO_FRAME: u32 = VIDEO_TIMESCALE / 30;
/// Configuration records above this size are refused (real ones are a few hundred
/// bytes; MPEG-4 descriptor sizes end at 2^28).
const MAX_CONFIG_SIZE: usize = 1 << 16;

/// `sample_flags` of a sync sample: sample_depends_on = 2 (depends on no other).
pub(super) const FLAGS_SYNC: u32 = 0x0200_0000;
/// `sample_flags` of a non-sync sample: sample_depends_on = 1,
/// sample_is_non_sync_sample = 1.
pub(super) const FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// What the init segment and the fragments need to know about one track.
#[derive(Debug, Clone)]
pub(super) struct TrackSetup {
    /// The mp4 track_ID (1-based).
    pub(super) track_id: u32,
    /// Video (else audio).
    pub(super) video: bool,
    /// Units per second of every time of the track.
    pub(super) timescale: u32,
    /// The NAL unit length size of the frames (video), converted to 4 in samples.
    pub(super) nalu_len: usize,
    /// The duration of one sample when nothing better is known, in the timescale.
    pub(super) frame_duration: u32,
    /// Picture size (0 when the SPS does not parse).
    pub(super) width: u32,
    /// Picture size (0 when the SPS does not parse).
    pub(super) height: u32,
    /// The `stsd` entry (`avc1`, `hvc1`, `mp4a` or `Opus` box).
    pub(super) sample_entry: Vec<u8>,
}

fn invalid(e: CodecError) -> SkipReason {
    SkipReason::InvalidConfig(e)
}

impl TrackSetup {
    /// Checks a track's codec and configuration and builds its sample entry.
    pub(super) fn new(codec: &Codec, track_id: u32) -> Result<Self, SkipReason> {
        let config = codec.config();
        let needs_config = matches!(codec.id(), CodecId::H264 | CodecId::H265 | CodecId::Aac);
        if needs_config && config.is_empty() {
            return Err(SkipReason::MissingConfig);
        }
        if config.len() > MAX_CONFIG_SIZE {
            return Err(invalid(CodecError::NotRepresentable(
                "an MP4 sample description (over 64 KiB)",
            )));
        }
        match codec.id() {
            CodecId::H264 => {
                let c = parse_avc_config(config).map_err(invalid)?;
                let (width, height) = c.parse_sps().map_or((0, 0), |s| (s.width, s.height));
                let record = with_4_byte_lengths(config, 4, c.nalu_length_size);
                Ok(
                    Self::video(track_id, b"avc1", b"avcC", &record, width, height)
                        .with_nalu_len(c.nalu_length_size, DEFAULT_VIDEO_FRAME),
                )
            }
            CodecId::H265 => {
                let c = parse_hevc_config(config).map_err(invalid)?;
                let (width, height) = c.parse_sps().map_or((0, 0), |s| (s.width, s.height));
                let record = with_4_byte_lengths(config, 21, c.nalu_length_size);
                // avgFrameRate is in frames per 256 s, 0 when unspecified
                let frame = match u64::from(c.avg_frame_rate) {
                    0 => DEFAULT_VIDEO_FRAME,
                    rate => u32::try_from(u64::from(VIDEO_TIMESCALE) * 256 / rate)
                        .unwrap_or(DEFAULT_VIDEO_FRAME)
                        .max(1),
                };
                Ok(
                    Self::video(track_id, b"hvc1", b"hvcC", &record, width, height)
                        .with_nalu_len(c.nalu_length_size, frame),
                )
            }
            CodecId::Aac => Self::aac(config, track_id),
            CodecId::Opus => Self::opus(config, track_id),
            other => Err(SkipReason::UnsupportedCodec(other)),
        }
    }

    fn video(
        track_id: u32,
        entry: &[u8; 4],
        record_box: &[u8; 4],
        record: &[u8],
        width: u32,
        height: u32,
    ) -> Self {
        let mut b = BoxBuf::new();
        b.open(entry)
            .zeros(6)
            .u16(1) // data_reference_index
            .zeros(16) // pre_defined, reserved, pre_defined[3]
            .u16(clamp_u16(width))
            .u16(clamp_u16(height))
            .u32(0x0048_0000) // 72 dpi
            .u32(0x0048_0000)
            .u32(0)
            .u16(1) // frame_count
            .zeros(32) // compressorname
            .u16(0x0018) // depth
            .u16(0xFFFF) // pre_defined = -1
            .leaf(record_box, record)
            .close();
        Self {
            track_id,
            video: true,
            timescale: VIDEO_TIMESCALE,
            nalu_len: 4,
            frame_duration: DEFAULT_VIDEO_FRAME,
            width,
            height,
            sample_entry: b.finish(),
        }
    }

    fn with_nalu_len(mut self, nalu_len: u8, frame_duration: u32) -> Self {
        self.nalu_len = usize::from(nalu_len);
        self.frame_duration = frame_duration;
        self
    }

    fn aac(config: &Bytes, track_id: u32) -> Result<Self, SkipReason> {
        let asc = parse_asc(config).map_err(invalid)?;
        let rate = asc.output_sample_rate();
        if rate == 0 || asc.sampling_frequency == 0 {
            return Err(invalid(CodecError::InvalidValue {
                field: "sampling frequency",
                value: 0,
            }));
        }
        // AAC-LD and AAC-ELD frames are 512 samples, the others 1024 (960-sample
        // frames last as long as the distance to the next one says); SBR doubles
        // them at the output rate.
        let core_frame: u64 = if matches!(asc.object_type, 23 | 39) {
            512
        } else {
            1024
        };
        let frame = core_frame * u64::from(rate) / u64::from(asc.sampling_frequency);
        let channels = asc.channels().unwrap_or(2);

        let mut dcd = vec![
            0x40, // objectTypeIndication: Audio ISO/IEC 14496-3
            0x15, // streamType audio (5) << 2 | reserved 1
            0, 0, 0, // bufferSizeDB
        ];
        dcd.extend_from_slice(&[0; 8]); // maxBitrate, avgBitrate: unknown
        descriptor(&mut dcd, 0x05, config); // DecoderSpecificInfo
        let mut es = Vec::new();
        es.extend_from_slice(&clamp_u16(track_id).to_be_bytes()); // ES_ID
        es.push(0); // no dependency, URL or OCR stream
        descriptor(&mut es, 0x04, &dcd); // DecoderConfigDescriptor
        descriptor(&mut es, 0x06, &[0x02]); // SLConfigDescriptor: predefined MP4
        let mut esds = Vec::new();
        descriptor(&mut esds, 0x03, &es); // ES_Descriptor

        let mut b = BoxBuf::new();
        audio_entry(&mut b, b"mp4a", channels, rate);
        b.open_full(b"esds", 0, 0).bytes(&esds).close().close();
        Ok(Self::audio(track_id, rate, frame, b.finish()))
    }

    fn opus(config: &Bytes, track_id: u32) -> Result<Self, SkipReason> {
        // Without an OpusHead: stereo, no pre-skip.
        let (head, gain, table) = if config.is_empty() {
            (
                opus::OpusHead {
                    channels: 2,
                    pre_skip: 0,
                    input_sample_rate: 0,
                    mapping_family: 0,
                },
                [0, 0],
                &[][..],
            )
        } else {
            let head = opus::parse_opus_head(config).map_err(invalid)?;
            let gain = [
                config.get(17).copied().unwrap_or(0),
                config.get(16).copied().unwrap_or(0),
            ];
            let table = if head.mapping_family == 0 {
                &[][..]
            } else {
                // stream count, coupled count, one mapping byte per channel
                let len = 2 + usize::from(head.channels);
                config
                    .get(19..19 + len)
                    .ok_or_else(|| invalid(CodecError::Truncated("OpusHead channel mapping")))?
            };
            (head, gain, table)
        };
        let mut b = BoxBuf::new();
        audio_entry(&mut b, b"Opus", head.channels, opus::OPUS_SAMPLE_RATE);
        b.open(b"dOps")
            .u8(0) // Version
            .u8(head.channels)
            .u16(head.pre_skip)
            .u32(head.input_sample_rate)
            .bytes(&gain) // OutputGain, big-endian here
            .u8(head.mapping_family)
            .bytes(table)
            .close()
            .close();
        // 20 ms, the common packet length; the packet says better (see the muxer)
        Ok(Self::audio(
            track_id,
            opus::OPUS_SAMPLE_RATE,
            960,
            b.finish(),
        ))
    }

    fn audio(track_id: u32, rate: u32, frame: u64, sample_entry: Vec<u8>) -> Self {
        Self {
            track_id,
            video: false,
            timescale: rate,
            nalu_len: 0,
            frame_duration: u32::try_from(frame).unwrap_or(1024).max(1),
            width: 0,
            height: 0,
            sample_entry,
        }
    }
}

/// Opens an AudioSampleEntry and writes its fields (the caller adds the codec box
/// and closes it).
fn audio_entry(b: &mut BoxBuf, fourcc: &[u8; 4], channels: u8, rate: u32) {
    b.open(fourcc)
        .zeros(6)
        .u16(1) // data_reference_index
        .zeros(8) // reserved
        .u16(u16::from(channels))
        .u16(16) // samplesize
        .u16(0) // pre_defined
        .u16(0) // reserved
        // 16.16 fixed point; rates above 65535 Hz do not fit and are given as 0
        .u32(u16::try_from(rate).map_or(0, |r| u32::from(r) << 16));
}

fn clamp_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// The configuration record, with lengthSizeMinusOne (the low 2 bits of the byte at
/// `offset`) set to 3 when it says otherwise: samples are written with 4-byte NAL
/// unit lengths.
fn with_4_byte_lengths(record: &Bytes, offset: usize, nalu_len: u8) -> Vec<u8> {
    let mut out = record.to_vec();
    if nalu_len != 4
        && let Some(b) = out.get_mut(offset)
    {
        *b |= 0x03;
    }
    out
}

/// Writes `ftyp` and `moov` for the tracks.
pub(super) fn init_segment(tracks: &[&TrackSetup]) -> Vec<u8> {
    let mut b = BoxBuf::new();
    b.open(b"ftyp")
        .bytes(b"iso6")
        .u32(0)
        .bytes(b"iso6isommp41dash")
        .close();
    b.open(b"moov");
    let next_track_id = tracks
        .iter()
        .map(|t| t.track_id)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    b.open_full(b"mvhd", 0, 0)
        .u32(0) // creation_time
        .u32(0) // modification_time
        .u32(1000) // timescale
        .u32(0) // duration: unknown, the fragments tell
        .u32(0x0001_0000) // rate 1.0
        .u16(0x0100) // volume 1.0
        .zeros(10)
        .unity_matrix()
        .zeros(24) // pre_defined
        .u32(next_track_id)
        .close();
    for t in tracks {
        trak(&mut b, t);
    }
    b.open(b"mvex");
    for t in tracks {
        b.open_full(b"trex", 0, 0)
            .u32(t.track_id)
            .u32(1) // default_sample_description_index
            .u32(0) // default_sample_duration
            .u32(0) // default_sample_size
            .u32(if t.video { FLAGS_NON_SYNC } else { FLAGS_SYNC })
            .close();
    }
    b.close(); // mvex
    b.close(); // moov
    b.finish()
}

fn trak(b: &mut BoxBuf, t: &TrackSetup) {
    b.open(b"trak");
    b.open_full(b"tkhd", 0, 0x000003) // enabled, in movie
        .u32(0) // creation_time
        .u32(0) // modification_time
        .u32(t.track_id)
        .u32(0) // reserved
        .u32(0) // duration
        .zeros(8)
        .u16(0) // layer
        .u16(0) // alternate_group
        .u16(if t.video { 0 } else { 0x0100 }) // volume
        .u16(0)
        .unity_matrix()
        .u16(clamp_u16(t.width)) // 16.16 fixed point
        .u16(0)
        .u16(clamp_u16(t.height))
        .u16(0)
        .close();
    b.open(b"mdia");
    b.open_full(b"mdhd", 0, 0)
        .u32(0) // creation_time
        .u32(0) // modification_time
        .u32(t.timescale)
        .u32(0) // duration
        .u16(0x55C4) // language "und"
        .u16(0)
        .close();
    let (handler, name): (&[u8; 4], &[u8]) = if t.video {
        (b"vide", b"VideoHandler\0")
    } else {
        (b"soun", b"SoundHandler\0")
    };
    b.open_full(b"hdlr", 0, 0)
        .u32(0)
        .bytes(handler)
        .zeros(12)
        .bytes(name)
        .close();
    b.open(b"minf");
    if t.video {
        b.open_full(b"vmhd", 0, 1).zeros(8).close();
    } else {
        b.open_full(b"smhd", 0, 0).zeros(4).close();
    }
    b.open(b"dinf")
        .open_full(b"dref", 0, 0)
        .u32(1)
        .open_full(b"url ", 0, 1) // media in this file
        .close()
        .close()
        .close();
    b.open(b"stbl");
    b.open_full(b"stsd", 0, 0)
        .u32(1)
        .bytes(&t.sample_entry)
        .close();
    b.open_full(b"stts", 0, 0).u32(0).close();
    b.open_full(b"stsc", 0, 0).u32(0).close();
    b.open_full(b"stsz", 0, 0).u32(0).u32(0).close();
    b.open_full(b"stco", 0, 0).u32(0).close();
    b.close(); // stbl
    b.close(); // minf
    b.close(); // mdia
    b.close(); // trak
}
