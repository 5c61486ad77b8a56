//! The muxer's output read back with a small box walker: box sizes, the init
//! segment, fragment boundaries, sample tables against the frames pushed, and
//! proptests over random (and hostile) frame sequences.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::codec::aac::AudioSpecificConfig;
use crate::codec::h264::tests::{X264_720P_HIGH, hex};
use crate::codec::h265::tests::X265_1080P_MAIN;
use crate::codec::opus::OpusHead;
use crate::model::{Codec, Frame, FrameFlags, Timestamp, TrackInfo};

// ---------------------------------------------------------------------------
// A test-only MP4 box walker.

/// One box of a parsed file.
#[derive(Debug, Clone)]
pub(super) struct Mp4Box {
    pub(super) fourcc: [u8; 4],
    /// Offset of the box in the file.
    pub(super) start: usize,
    /// Offset of the body (after the size, type and any largesize).
    pub(super) body: usize,
    /// Offset just past the box.
    pub(super) end: usize,
    pub(super) children: Vec<Mp4Box>,
}

impl Mp4Box {
    pub(super) fn name(&self) -> String {
        String::from_utf8_lossy(&self.fourcc).into_owned()
    }

    pub(super) fn child(&self, fourcc: &[u8; 4]) -> &Mp4Box {
        self.children
            .iter()
            .find(|c| &c.fourcc == fourcc)
            .unwrap_or_else(|| panic!("no {} in {}", String::from_utf8_lossy(fourcc), self.name()))
    }

    pub(super) fn all(&self, fourcc: &[u8; 4]) -> Vec<&Mp4Box> {
        self.children
            .iter()
            .filter(|c| &c.fourcc == fourcc)
            .collect()
    }

    pub(super) fn data<'a>(&self, file: &'a [u8]) -> &'a [u8] {
        &file[self.body..self.end]
    }
}

/// Where the children of a container start within its body, or `None` for leaves.
fn children_at(fourcc: &[u8; 4]) -> Option<usize> {
    match fourcc {
        b"moov" | b"trak" | b"mdia" | b"minf" | b"dinf" | b"stbl" | b"mvex" | b"moof" | b"traf" => {
            Some(0)
        }
        b"stsd" | b"dref" => Some(8),
        b"avc1" | b"hvc1" => Some(78),
        b"mp4a" | b"Opus" => Some(28),
        _ => None,
    }
}

/// Parses the boxes in `file[from..to]`; every box must fit exactly.
pub(super) fn parse_boxes(file: &[u8], from: usize, to: usize) -> Result<Vec<Mp4Box>, String> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos < to {
        let header = file
            .get(pos..pos + 8)
            .filter(|_| pos + 8 <= to)
            .ok_or(format!("box header at {pos} runs past {to}"))?;
        let size = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
        let fourcc: [u8; 4] = header[4..8].try_into().unwrap();
        let (size, body) = match size {
            1 => {
                let large = file
                    .get(pos + 8..pos + 16)
                    .ok_or(format!("largesize at {pos} runs past the end"))?;
                (
                    u64::from_be_bytes(large.try_into().unwrap()) as usize,
                    pos + 16,
                )
            }
            0 => (to - pos, pos + 8),
            n => (n, pos + 8),
        };
        let end = pos + size;
        if size < body - pos || end > to {
            return Err(format!(
                "box {} at {pos}: size {size} does not fit in {to}",
                String::from_utf8_lossy(&fourcc)
            ));
        }
        let children = match children_at(&fourcc) {
            Some(skip) => parse_boxes(file, body + skip, end)?,
            None => Vec::new(),
        };
        out.push(Mp4Box {
            fourcc,
            start: pos,
            body,
            end,
            children,
        });
        pos = end;
    }
    Ok(out)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// One sample as the fragments describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParsedSample {
    pub(super) decode: u64,
    pub(super) duration: u32,
    pub(super) sync: bool,
    pub(super) cto: i32,
    pub(super) data: Vec<u8>,
}

/// One track of a parsed file.
#[derive(Debug, Clone, Default)]
pub(super) struct ParsedTrack {
    pub(super) timescale: u32,
    pub(super) handler: [u8; 4],
    pub(super) entry: [u8; 4],
    /// The body of the codec box inside the sample entry (avcC, hvcC, esds, dOps).
    pub(super) codec_box: Vec<u8>,
    pub(super) width: u16,
    pub(super) height: u16,
    pub(super) samples: Vec<ParsedSample>,
}

/// A parsed recording.
#[derive(Debug, Clone, Default)]
pub(super) struct Parsed {
    /// By mp4 track id.
    pub(super) tracks: BTreeMap<u32, ParsedTrack>,
    /// The end of the init segment.
    pub(super) init_end: usize,
    /// Each fragment: its byte range and the samples per track id it holds.
    pub(super) fragments: Vec<(std::ops::Range<usize>, BTreeMap<u32, usize>)>,
}

/// Reads a whole recording and checks its structure: `ftyp`, `moov`, then `moof` +
/// `mdat` pairs; sequence numbers counting from 1; `trun` data offsets covering
/// the `mdat` payload exactly, track after track; each track's `tfdt` continuing
/// where its previous fragment ended.
pub(super) fn parse_file(file: &[u8]) -> Result<Parsed, String> {
    let top = parse_boxes(file, 0, file.len())?;
    let names: Vec<String> = top.iter().map(Mp4Box::name).collect();
    if names.len() < 2 || names[0] != "ftyp" || names[1] != "moov" {
        return Err(format!("top level {names:?}"));
    }
    let ftyp = top[0].data(file);
    if &ftyp[..4] != b"iso6" || !ftyp[8..].chunks(4).any(|b| b == b"isom") {
        return Err("ftyp brands".into());
    }
    let mut parsed = Parsed {
        init_end: top[1].end,
        ..Parsed::default()
    };
    let moov = &top[1];
    let mvhd = moov.child(b"mvhd").data(file);
    if mvhd[0] != 0 || be32(mvhd, 12) != 1000 || be32(mvhd, 16) != 0 {
        return Err("mvhd".into());
    }
    let traks = moov.all(b"trak");
    let trexs = moov.child(b"mvex").all(b"trex");
    if traks.is_empty() || traks.len() != trexs.len() {
        return Err("trak/trex count".into());
    }
    for trak in &traks {
        let tkhd = trak.child(b"tkhd").data(file);
        let id = be32(tkhd, 12);
        let mdia = trak.child(b"mdia");
        let mdhd = mdia.child(b"mdhd").data(file);
        let hdlr = mdia.child(b"hdlr").data(file);
        let stbl = mdia.child(b"minf").child(b"stbl");
        for (b, len) in [(b"stts", 8), (b"stsc", 8), (b"stsz", 12), (b"stco", 8)] {
            let d = stbl.child(b).data(file);
            if d.len() != len || d.iter().any(|&x| x != 0) {
                return Err(format!("{} is not empty", String::from_utf8_lossy(b)));
            }
        }
        let stsd = stbl.child(b"stsd");
        if be32(stsd.data(file), 4) != 1 || stsd.children.len() != 1 {
            return Err("stsd entry count".into());
        }
        let entry = &stsd.children[0];
        let codec_box = entry
            .children
            .first()
            .ok_or("sample entry without codec box")?;
        let e = entry.data(file);
        let (width, height) = if matches!(&entry.fourcc, b"avc1" | b"hvc1") {
            (
                u16::from_be_bytes([e[24], e[25]]),
                u16::from_be_bytes([e[26], e[27]]),
            )
        } else {
            (0, 0)
        };
        let timescale = be32(mdhd, 12);
        if timescale == 0 {
            return Err("timescale 0".into());
        }
        if !trexs.iter().any(|t| be32(t.data(file), 4) == id) {
            return Err(format!("no trex for track {id}"));
        }
        let track = ParsedTrack {
            timescale,
            handler: hdlr[8..12].try_into().unwrap(),
            entry: entry.fourcc,
            codec_box: codec_box.data(file).to_vec(),
            width,
            height,
            samples: Vec::new(),
        };
        if parsed.tracks.insert(id, track).is_some() {
            return Err(format!("track id {id} twice"));
        }
    }

    let mut next_decode: BTreeMap<u32, u64> = BTreeMap::new();
    let rest = &top[2..];
    if rest.len() % 2 != 0 {
        return Err("a moof without mdat".into());
    }
    for (n, pair) in rest.chunks(2).enumerate() {
        let (moof, mdat) = (&pair[0], &pair[1]);
        if &moof.fourcc != b"moof" || &mdat.fourcc != b"mdat" {
            return Err(format!(
                "expected moof + mdat, got {} {}",
                moof.name(),
                mdat.name()
            ));
        }
        let mfhd = moof.child(b"mfhd").data(file);
        if be32(mfhd, 4) != n as u32 + 1 {
            return Err(format!("sequence number {} at fragment {n}", be32(mfhd, 4)));
        }
        let mut expect_offset = mdat.body;
        let mut counts = BTreeMap::new();
        let trafs = moof.all(b"traf");
        if trafs.is_empty() {
            return Err("moof without traf".into());
        }
        for traf in trafs {
            let tfhd = traf.child(b"tfhd").data(file);
            let flags = be32(tfhd, 0) & 0xFF_FFFF;
            if flags & 0x02_0000 == 0 {
                return Err("tfhd without default-base-is-moof".into());
            }
            let id = be32(tfhd, 4);
            let default_flags = if flags & 0x20 != 0 {
                be32(tfhd, 8)
            } else {
                let trex = trexs.iter().find(|t| be32(t.data(file), 4) == id).unwrap();
                be32(trex.data(file), 20)
            };
            let track = parsed
                .tracks
                .get_mut(&id)
                .ok_or(format!("traf of unknown track {id}"))?;
            let tfdt = traf.child(b"tfdt").data(file);
            if tfdt[0] != 1 {
                return Err("tfdt version".into());
            }
            let base = be64(tfdt, 4);
            if let Some(&want) = next_decode.get(&id)
                && base != want
            {
                return Err(format!("track {id}: tfdt {base} after an end of {want}"));
            }
            let trun = traf.child(b"trun").data(file);
            let tflags = be32(trun, 0);
            if tflags >> 24 != 1 || tflags & 0x301 != 0x301 {
                return Err(format!("trun flags {tflags:#x}"));
            }
            let count = be32(trun, 4) as usize;
            let offset = i32::from_be_bytes(trun[8..12].try_into().unwrap());
            let mut at = moof.start as i64 + i64::from(offset);
            if at as usize != expect_offset {
                return Err(format!("data offset {at}, expected {expect_offset}"));
            }
            let per =
                8 + 4 * usize::from(tflags & 0x400 != 0) + 4 * usize::from(tflags & 0x800 != 0);
            if trun.len() != 12 + per * count {
                return Err("trun size".into());
            }
            let mut decode = base;
            for i in 0..count {
                let e = &trun[12 + per * i..];
                let duration = be32(e, 0);
                let size = be32(e, 4) as usize;
                let mut k = 8;
                let sflags = if tflags & 0x400 != 0 {
                    k += 4;
                    be32(e, 8)
                } else {
                    default_flags
                };
                let cto = if tflags & 0x800 != 0 {
                    i32::from_be_bytes(e[k..k + 4].try_into().unwrap())
                } else {
                    0
                };
                let start = at as usize;
                if start + size > mdat.end {
                    return Err(format!(
                        "sample at {start}+{size} past the mdat end {}",
                        mdat.end
                    ));
                }
                let sync = sflags & 0x0001_0000 == 0;
                if sync != (sflags & 0x0300_0000 == 0x0200_0000) {
                    return Err(format!("inconsistent sample flags {sflags:#x}"));
                }
                track.samples.push(ParsedSample {
                    decode,
                    duration,
                    sync,
                    cto,
                    data: file[start..start + size].to_vec(),
                });
                decode += u64::from(duration);
                at += size as i64;
            }
            expect_offset = at as usize;
            next_decode.insert(id, decode);
            *counts.entry(id).or_insert(0) += count;
        }
        if expect_offset != mdat.end {
            return Err(format!(
                "samples end at {expect_offset}, mdat at {}",
                mdat.end
            ));
        }
        parsed.fragments.push((moof.start..mdat.end, counts));
    }
    Ok(parsed)
}

// ---------------------------------------------------------------------------
// Fixtures.

fn avc_config() -> Bytes {
    Bytes::from(hex(X264_720P_HIGH))
}

fn hevc_config() -> Bytes {
    Bytes::from(hex(X265_1080P_MAIN))
}

fn asc(rate: u32) -> Bytes {
    AudioSpecificConfig::new(2, rate, 2).to_bytes().unwrap()
}

fn opus_head() -> Bytes {
    OpusHead {
        channels: 2,
        pre_skip: 312,
        input_sample_rate: 48_000,
        mapping_family: 0,
    }
    .to_bytes()
    .unwrap()
}

fn h264_track() -> TrackInfo {
    TrackInfo::new(
        TrackId::VIDEO,
        Codec::H264 {
            config: avc_config(),
        },
    )
}

fn aac_track(rate: u32) -> TrackInfo {
    TrackInfo::new(TrackId::AUDIO, Codec::Aac { config: asc(rate) })
}

/// Length-prefixed NAL units of the given sizes (4-byte lengths), filled with a
/// byte pattern from `seed`.
fn nals(sizes: &[usize], seed: u8) -> Bytes {
    let mut out = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        out.extend_from_slice(&(n as u32).to_be_bytes());
        out.extend((0..n).map(|k| seed.wrapping_add((k + i) as u8)));
    }
    Bytes::from(out)
}

fn video(dts: i64, pts: i64, key: bool, data: Bytes) -> Frame {
    Frame {
        track: TrackId::VIDEO,
        codec: CodecId::H264,
        pts: Timestamp(pts),
        dts: Timestamp(dts),
        flags: if key {
            FrameFlags::KEYFRAME
        } else {
            FrameFlags::NONE
        },
        data,
    }
}

fn audio(dts: i64, data: Bytes) -> Frame {
    Frame {
        track: TrackId::AUDIO,
        codec: CodecId::Aac,
        pts: Timestamp(dts),
        dts: Timestamp(dts),
        flags: FrameFlags::NONE,
        data,
    }
}

fn config_frame(track: TrackId, codec: CodecId, data: Bytes) -> Frame {
    Frame {
        track,
        codec,
        pts: Timestamp(0),
        dts: Timestamp(0),
        flags: FrameFlags::CONFIG,
        data,
    }
}

/// 30 fps video (keyframe every `gop` frames, B-frame-like composition offsets)
/// interleaved with 48 kHz AAC, by decode time, for `secs` seconds starting at
/// `start` (90 kHz ticks).
fn av_stream(secs: i64, gop: usize, start: i64) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut v = 0i64;
    let mut a = 0i64;
    let end = secs * 90_000;
    loop {
        let vt = v * 3000;
        let at = a * 1024 * 90_000 / 48_000;
        if vt >= end && at >= end {
            break;
        }
        if vt <= at && vt < end {
            let key = (v as usize).is_multiple_of(gop);
            let cto = if key {
                6000
            } else {
                [9000, 0, 3000][v as usize % 3]
            };
            frames.push(video(
                start + vt,
                start + vt + cto,
                key,
                nals(&[20 + v as usize % 7, 3], v as u8),
            ));
            v += 1;
        } else {
            frames.push(audio(
                start + at,
                Bytes::from(vec![a as u8; 100 + a as usize % 50]),
            ));
            a += 1;
        }
    }
    frames
}

fn mux_all(tracks: &[TrackInfo], config: Fmp4Config, frames: &[Frame]) -> (Fmp4Muxer, Vec<u8>) {
    let mut mux = Fmp4Muxer::new(tracks, config).unwrap();
    let mut out = BytesMut::new();
    mux.write_init(&mut out);
    for f in frames {
        mux.push_frame(f, &mut out).unwrap();
    }
    mux.flush(&mut out);
    (mux, out.to_vec())
}

// ---------------------------------------------------------------------------
// Unit tests.

#[test]
fn init_segment_describes_the_tracks() {
    let tracks = [h264_track(), aac_track(44_100)];
    let mux = Fmp4Muxer::new(&tracks, Fmp4Config::default()).unwrap();
    let mut out = BytesMut::new();
    mux.write_init(&mut out);
    let p = parse_file(&out).unwrap();
    assert_eq!(p.init_end, out.len());
    assert!(p.fragments.is_empty());
    let v = &p.tracks[&1];
    assert_eq!(
        (&v.handler, &v.entry, v.timescale),
        (b"vide", b"avc1", 90_000)
    );
    assert_eq!(v.codec_box, avc_config());
    assert_eq!((v.width, v.height), (1280, 720));
    let a = &p.tracks[&2];
    assert_eq!(
        (&a.handler, &a.entry, a.timescale),
        (b"soun", b"mp4a", 44_100)
    );
    // esds: version/flags, ES_Descriptor(ES_ID 2, DecoderConfigDescriptor(0x40,
    // audio stream, DecoderSpecificInfo = the ASC), SLConfigDescriptor)
    let asc = asc(44_100);
    let mut want = vec![0, 0, 0, 0, 0x03, 25, 0, 2, 0, 0x04, 17, 0x40, 0x15];
    want.extend_from_slice(&[0; 11]);
    want.extend_from_slice(&[0x05, 2]);
    want.extend_from_slice(&asc);
    want.extend_from_slice(&[0x06, 1, 0x02]);
    assert_eq!(a.codec_box, want);
    assert_eq!(mux.skipped_tracks(), &[]);
    assert_eq!(
        mux.recorded_tracks().collect::<Vec<_>>(),
        [TrackId::VIDEO, TrackId::AUDIO]
    );
    // the ftyp
    assert_eq!(&out[..32], b"\0\0\0\x20ftypiso6\0\0\0\0iso6isommp41dash");
}

#[test]
fn hevc_and_opus_sample_entries() {
    let tracks = [
        TrackInfo::new(
            TrackId(7),
            Codec::H265 {
                config: hevc_config(),
            },
        ),
        TrackInfo::new(
            TrackId(9),
            Codec::Opus {
                config: opus_head(),
            },
        ),
    ];
    let mux = Fmp4Muxer::new(&tracks, Fmp4Config::default()).unwrap();
    let mut out = BytesMut::new();
    mux.write_init(&mut out);
    let p = parse_file(&out).unwrap();
    let v = &p.tracks[&1];
    assert_eq!((&v.entry, v.timescale), (b"hvc1", 90_000));
    assert_eq!(v.codec_box, hevc_config());
    assert_eq!((v.width, v.height), (1920, 1080));
    let a = &p.tracks[&2];
    assert_eq!((&a.entry, a.timescale), (b"Opus", 48_000));
    // dOps: version 0, 2 channels, pre-skip 312, 48000 Hz, gain 0, family 0
    assert_eq!(a.codec_box, [0, 2, 0x01, 0x38, 0, 0, 0xBB, 0x80, 0, 0, 0]);
}

#[test]
fn unrecordable_tracks_are_skipped_with_a_reason() {
    let tracks = [
        TrackInfo::new(
            TrackId(10),
            Codec::Av1 {
                config: Bytes::new(),
            },
        ),
        TrackInfo::new(TrackId(11), Codec::Mp3),
        TrackInfo::new(
            TrackId(12),
            Codec::H264 {
                config: Bytes::new(),
            },
        ),
        TrackInfo::new(
            TrackId(13),
            Codec::Aac {
                config: Bytes::from_static(&[0xFF]),
            },
        ),
        aac_track(48_000),
        TrackInfo::new(
            TrackId::AUDIO,
            Codec::Opus {
                config: Bytes::new(),
            },
        ),
    ];
    let mux = Fmp4Muxer::new(&tracks, Fmp4Config::default()).unwrap();
    let reasons: Vec<_> = mux
        .skipped_tracks()
        .iter()
        .map(|s| (s.track, s.reason.clone()))
        .collect();
    assert_eq!(reasons.len(), 5);
    assert_eq!(
        reasons[0],
        (TrackId(10), SkipReason::UnsupportedCodec(CodecId::Av1))
    );
    assert_eq!(
        reasons[1],
        (TrackId(11), SkipReason::UnsupportedCodec(CodecId::Mp3))
    );
    assert_eq!(reasons[2], (TrackId(12), SkipReason::MissingConfig));
    assert!(matches!(
        reasons[3],
        (TrackId(13), SkipReason::InvalidConfig(_))
    ));
    assert_eq!(reasons[4], (TrackId::AUDIO, SkipReason::DuplicateTrack));
    assert_eq!(mux.recorded_tracks().collect::<Vec<_>>(), [TrackId::AUDIO]);
    // the reason reads well
    assert_eq!(
        mux.skipped_tracks()[0].reason.to_string(),
        "codec av1 is not supported in fragmented MP4 by this muxer"
    );

    let err = Fmp4Muxer::new(&tracks[..4], Fmp4Config::default()).unwrap_err();
    let Fmp4Error::NoRecordableTracks(skipped) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(skipped.len(), 4);
    assert_eq!(err.to_string(), "no recordable track (4 skipped)");
    assert!(matches!(
        Fmp4Muxer::new(&[], Fmp4Config::default()),
        Err(Fmp4Error::NoRecordableTracks(s)) if s.is_empty()
    ));
}

#[test]
fn fragments_start_at_keyframes_and_hold_every_sample() {
    let tracks = [h264_track(), aac_track(48_000)];
    let frames = av_stream(6, 60, 0);
    let mut mux = Fmp4Muxer::new(&tracks, Fmp4Config::default()).unwrap();
    let mut out = BytesMut::new();
    mux.write_init(&mut out);
    let init_len = out.len();
    let mut written_at = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let before = out.len();
        mux.push_frame(f, &mut out).unwrap();
        if out.len() > before {
            written_at.push(i);
        }
    }
    // a fragment is written when the keyframe after it arrives
    let keys: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.is_keyframe())
        .map(|(i, _)| i)
        .skip(1)
        .collect();
    assert_eq!(written_at, keys);
    assert!(out.len() > init_len);
    assert!(mux.fragment_start_is_keyframe());
    assert!(mux.buffered_duration() >= Duration::from_millis(1900));
    assert_eq!(mux.written_duration(), Duration::from_secs(4));
    mux.flush(&mut out);
    assert_eq!(mux.buffered_duration(), Duration::ZERO);
    assert_eq!(mux.written_duration(), Duration::from_secs(6));

    let p = parse_file(&out).unwrap();
    assert_eq!(p.fragments.len(), 3);
    let v = &p.tracks[&1].samples;
    let a = &p.tracks[&2].samples;
    let want_v: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.track == TrackId::VIDEO)
        .collect();
    let want_a: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.track == TrackId::AUDIO)
        .collect();
    assert_eq!(v.len(), want_v.len());
    assert_eq!(a.len(), want_a.len());
    for (s, f) in v.iter().zip(&want_v) {
        assert_eq!(s.data, f.data);
        assert_eq!(s.decode, f.dts.ticks() as u64);
        assert_eq!(s.duration, 3000);
        assert_eq!(s.sync, f.is_keyframe());
        assert_eq!(i64::from(s.cto), (f.pts - f.dts).ticks());
    }
    for (i, (s, f)) in a.iter().zip(&want_a).enumerate() {
        assert_eq!(s.data, f.data);
        assert_eq!(s.decode, i as u64 * 1024);
        assert_eq!(s.duration, 1024);
        assert!(s.sync);
    }
    // every fragment starts with a video keyframe
    let mut first = 0;
    for (_, counts) in &p.fragments {
        assert!(v[first].sync);
        first += counts[&1];
    }
    let stats = mux.stats();
    assert_eq!(stats.fragments, 3);
    assert_eq!(stats.samples, (v.len() + a.len()) as u64);
    assert_eq!(stats.fragment_bytes, (out.len() - init_len) as u64);
}

#[test]
fn time_zero_is_the_first_decode_time_of_any_track() {
    // audio starts 100 ms before video, at a large timestamp
    let start = 1_000_000_000;
    let tracks = [h264_track(), aac_track(48_000)];
    let frames = [
        audio(start, Bytes::from_static(&[1; 10])),
        audio(start + 1920, Bytes::from_static(&[2; 10])),
        video(start + 9000, start + 12000, true, nals(&[5], 1)),
        audio(start + 3840, Bytes::from_static(&[3; 10])),
        video(start + 12000, start + 12000, false, nals(&[5], 2)),
    ];
    let (_, out) = mux_all(&tracks, Fmp4Config::default(), &frames);
    let p = parse_file(&out).unwrap();
    let v = &p.tracks[&1].samples;
    assert_eq!(v[0].decode, 9000);
    assert_eq!(v[0].cto, 3000);
    assert_eq!(v[0].duration, 3000);
    assert_eq!(
        v[1].duration, 3000,
        "the last one lasts as long as the one before"
    );
    let a = &p.tracks[&2].samples;
    assert_eq!(
        a.iter().map(|s| (s.decode, s.duration)).collect::<Vec<_>>(),
        [(0, 1024), (1024, 1024), (2048, 1024)]
    );
}

#[test]
fn backwards_and_hostile_timestamps_clamp() {
    let tracks = [h264_track(), aac_track(48_000)];
    let frames = [
        video(1000, 1000, true, nals(&[4], 0)),
        video(4000, 1000, false, nals(&[4], 1)),
        video(2000, 2000, false, nals(&[4], 2)), // backwards
        video(i64::MAX, i64::MIN, false, nals(&[4], 3)),
        video(i64::MIN, i64::MAX, true, nals(&[4], 4)),
        audio(i64::MIN, Bytes::from_static(&[1])),
        audio(0, Bytes::from_static(&[2])),
        audio(i64::MAX, Bytes::from_static(&[3])),
        video(5000, 5000, true, nals(&[4], 5)),
    ];
    let (_, out) = mux_all(&tracks, Fmp4Config::default(), &frames);
    let p = parse_file(&out).unwrap();
    let v = &p.tracks[&1].samples;
    assert_eq!(v.len(), 6);
    let d: Vec<_> = v.iter().map(|s| (s.decode, s.duration)).collect();
    assert_eq!(d[0], (0, 3000));
    assert_eq!(d[1], (3000, 0), "clamped: the next went backwards");
    assert_eq!(d[2].0, 3000);
    assert_eq!(d[2].1, u32::MAX, "a huge gap is shortened to 32 bits");
    assert_eq!(v[3].cto, i32::MIN);
    assert_eq!(v[4].cto, i32::MAX);
    for w in v.windows(2) {
        assert_eq!(w[0].decode + u64::from(w[0].duration), w[1].decode);
    }
    let a = &p.tracks[&2].samples;
    assert_eq!(a.len(), 3);
    assert_eq!(a[0].decode, 0);
}

#[test]
fn audio_only_fragments_at_max_fragment() {
    let tracks = [aac_track(48_000)];
    let config = Fmp4Config {
        max_fragment: Duration::from_millis(500),
        ..Fmp4Config::default()
    };
    // 3 s of 1024-sample frames
    let frames: Vec<Frame> = (0..141)
        .map(|i| audio(i * 1920, Bytes::from(vec![i as u8; 50])))
        .collect();
    let (mux, out) = mux_all(&tracks, config, &frames);
    let p = parse_file(&out).unwrap();
    // 500 ms is 23.4 frames: a fragment ends once 24 frames have durations
    let counts: Vec<usize> = p.fragments.iter().map(|(_, c)| c[&1]).collect();
    assert_eq!(counts, [24, 24, 24, 24, 24, 21]);
    assert_eq!(p.tracks[&1].samples.len(), 141);
    assert!(mux.fragment_start_is_keyframe());
}

#[test]
fn long_gops_and_stalled_video_are_cut_too() {
    let tracks = [h264_track(), aac_track(48_000)];
    let config = Fmp4Config {
        max_video_fragment: Duration::from_secs(1),
        ..Fmp4Config::default()
    };
    // one keyframe, then 3 s of P frames
    let frames = av_stream(3, 1000, 0);
    let mut mux = Fmp4Muxer::new(&tracks, config.clone()).unwrap();
    let mut out = BytesMut::new();
    mux.write_init(&mut out);
    let mut starts = Vec::new();
    for f in &frames {
        let before = out.len();
        mux.push_frame(f, &mut out).unwrap();
        if out.len() > before {
            starts.push(mux.fragment_start_is_keyframe());
        }
    }
    mux.flush(&mut out);
    let p = parse_file(&out).unwrap();
    assert_eq!(starts, [false, false, false]);
    // a fragment ends as soon as a track holds 1 s: video (30 frames) or audio
    // (47 frames, here just before the video's 30th)
    let counts: Vec<(usize, usize)> = p.fragments.iter().map(|(_, c)| (c[&1], c[&2])).collect();
    assert_eq!(counts, [(30, 46), (29, 47), (30, 46), (1, 2)]);

    // video stalls after 10 frames: audio alone is cut at 1 s too
    let frames: Vec<Frame> = av_stream(5, 1000, 0)
        .into_iter()
        .filter(|f| f.track == TrackId::AUDIO || f.dts.ticks() < 30_000)
        .collect();
    let (_, out) = mux_all(&tracks, config.clone(), &frames);
    let p = parse_file(&out).unwrap();
    let audio_counts: Vec<usize> = p.fragments.iter().map(|(_, c)| c[&2]).collect();
    assert_eq!(audio_counts, [47, 47, 47, 47, 47]);

    // max_fragment is for audio-only recordings: a GOP a little over it (or 2 s at
    // 29.97 fps) stays one fragment
    let config = Fmp4Config {
        max_fragment: Duration::from_millis(500),
        ..Fmp4Config::default()
    };
    let (_, out) = mux_all(&tracks, config, &av_stream(5, 61, 0));
    let p = parse_file(&out).unwrap();
    let counts: Vec<usize> = p.fragments.iter().map(|(_, c)| c[&1]).collect();
    assert_eq!(counts, [61, 61, 28]);
}

#[test]
fn fragment_bytes_are_capped() {
    let tracks = [h264_track()];
    let config = Fmp4Config {
        max_fragment_bytes: 1000,
        ..Fmp4Config::default()
    };
    let frames: Vec<Frame> = (0..20)
        .map(|i| video(i * 3000, i * 3000, i == 0, nals(&[296], i as u8)))
        .collect();
    let (_, out) = mux_all(&tracks, config, &frames);
    let p = parse_file(&out).unwrap();
    let counts: Vec<usize> = p.fragments.iter().map(|(_, c)| c[&1]).collect();
    assert_eq!(counts, [4, 4, 4, 4, 4]);

    // flushing held-back samples keeps to the cap as well, one sample at a time
    let tracks = [h264_track(), aac_track(48_000)];
    let config = Fmp4Config {
        max_fragment_bytes: 100,
        ..Fmp4Config::default()
    };
    let frames = [
        video(0, 0, true, nals(&[96], 0)),
        audio(0, Bytes::from(vec![1; 100])),
    ];
    let (_, out) = mux_all(&tracks, config, &frames);
    let p = parse_file(&out).unwrap();
    let counts: Vec<_> = p.fragments.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(counts, [BTreeMap::from([(1, 1)]), BTreeMap::from([(2, 1)])]);
}

#[test]
fn flush_until_ends_video_at_the_next_segment() {
    let tracks = [h264_track(), aac_track(48_000)];
    let frames = av_stream(2, 30, 0);
    let mut mux = Fmp4Muxer::new(&tracks, Fmp4Config::default()).unwrap();
    let mut out = BytesMut::new();
    mux.write_init(&mut out);
    for f in &frames {
        mux.push_frame(f, &mut out).unwrap();
    }
    // the next segment starts with a keyframe 50 ms after the last frame's dts
    let last = frames
        .iter()
        .rev()
        .find(|f| f.track == TrackId::VIDEO)
        .unwrap();
    mux.flush_until(last.dts + Timestamp(4500), &mut out);
    let p = parse_file(&out).unwrap();
    assert_eq!(p.tracks[&1].samples.last().unwrap().duration, 4500);
    assert_eq!(p.tracks[&2].samples.last().unwrap().duration, 1024);
    // 59 frames of 1/30 s and 50 ms
    assert_eq!(mux.written_duration(), Duration::from_nanos(2_016_666_666));
}

#[test]
fn frames_after_a_flush_continue_the_timeline() {
    let tracks = [h264_track()];
    let mut mux = Fmp4Muxer::new(&tracks, Fmp4Config::default()).unwrap();
    let mut out = BytesMut::new();
    mux.write_init(&mut out);
    mux.push_frame(&video(0, 0, true, nals(&[3], 0)), &mut out)
        .unwrap();
    mux.push_frame(&video(3000, 3000, false, nals(&[3], 1)), &mut out)
        .unwrap();
    mux.flush(&mut out);
    // earlier than the guessed end of the flushed sample: starts at that end
    mux.push_frame(&video(4000, 4000, true, nals(&[3], 2)), &mut out)
        .unwrap();
    mux.push_frame(&video(9000, 9000, false, nals(&[3], 3)), &mut out)
        .unwrap();
    mux.flush(&mut out);
    let p = parse_file(&out).unwrap();
    let d: Vec<_> = p.tracks[&1]
        .samples
        .iter()
        .map(|s| (s.decode, s.duration))
        .collect();
    assert_eq!(d, [(0, 3000), (3000, 3000), (6000, 3000), (9000, 3000)]);
    assert_eq!(p.fragments.len(), 2);
}

#[test]
fn video_before_the_first_keyframe_is_dropped() {
    let tracks = [h264_track(), aac_track(48_000)];
    let frames = [
        audio(0, Bytes::from_static(&[1])),
        video(0, 0, false, nals(&[3], 0)),
        video(3000, 3000, false, nals(&[3], 1)),
        video(6000, 6000, true, nals(&[3], 2)),
        video(9000, 9000, false, nals(&[3], 3)),
    ];
    let mut mux = Fmp4Muxer::new(&tracks, Fmp4Config::default()).unwrap();
    let mut out = BytesMut::new();
    mux.write_init(&mut out);
    for f in &frames {
        mux.push_frame(f, &mut out).unwrap();
    }
    assert!(mux.fragment_start_is_keyframe());
    mux.flush(&mut out);
    assert_eq!(mux.stats().dropped_before_keyframe, 2);
    let p = parse_file(&out).unwrap();
    let v = &p.tracks[&1].samples;
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].decode, 6000);
    assert!(v[0].sync && !v[1].sync);
}

#[test]
fn configuration_frames() {
    let tracks = [h264_track(), aac_track(48_000)];
    let mut mux = Fmp4Muxer::new(&tracks, Fmp4Config::default()).unwrap();
    let mut out = BytesMut::new();
    // the same configuration again: nothing
    mux.push_frame(
        &config_frame(TrackId::VIDEO, CodecId::H264, avc_config()),
        &mut out,
    )
    .unwrap();
    mux.push_frame(
        &config_frame(TrackId::AUDIO, CodecId::Aac, asc(48_000)),
        &mut out,
    )
    .unwrap();
    // a new one, a new codec: start a new recording
    assert_eq!(
        mux.push_frame(
            &config_frame(TrackId::AUDIO, CodecId::Aac, asc(44_100)),
            &mut out
        ),
        Err(Fmp4Error::ConfigChanged(TrackId::AUDIO))
    );
    let mut h265 = video(0, 0, true, nals(&[3], 0));
    h265.codec = CodecId::H265;
    assert_eq!(
        mux.push_frame(&h265, &mut out),
        Err(Fmp4Error::ConfigChanged(TrackId::VIDEO))
    );
    let mut other = audio(0, Bytes::from_static(&[1]));
    other.track = TrackId(5);
    assert_eq!(
        mux.push_frame(&other, &mut out),
        Err(Fmp4Error::UnknownTrack(TrackId(5)))
    );
    // empty frames (FLV end of sequence) write nothing
    let mut eos = video(0, 0, false, Bytes::new());
    eos.flags = FrameFlags::END_OF_SEQUENCE;
    mux.push_frame(&eos, &mut out).unwrap();
    assert!(out.is_empty());

    // a track skipped for lack of configuration asks for a new recording once
    // it gets one; an unsupported one never does
    let tracks = [
        TrackInfo::new(
            TrackId::VIDEO,
            Codec::H264 {
                config: Bytes::new(),
            },
        ),
        aac_track(48_000),
        TrackInfo::new(TrackId(2), Codec::Mp3),
    ];
    let mut mux = Fmp4Muxer::new(&tracks, Fmp4Config::default()).unwrap();
    mux.push_frame(&video(0, 0, true, nals(&[3], 0)), &mut out)
        .unwrap();
    assert_eq!(
        mux.push_frame(
            &config_frame(TrackId::VIDEO, CodecId::H264, avc_config()),
            &mut out
        ),
        Err(Fmp4Error::ConfigChanged(TrackId::VIDEO))
    );
    mux.push_frame(
        &config_frame(TrackId(2), CodecId::Mp3, Bytes::from_static(&[1])),
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty());
}

#[test]
fn nal_lengths_are_checked_and_converted() {
    // the same record with 2-byte lengths
    let mut record = avc_config().to_vec();
    record[4] = 0xFD;
    let tracks = [TrackInfo::new(
        TrackId::VIDEO,
        Codec::H264 {
            config: Bytes::from(record),
        },
    )];
    let mut mux = Fmp4Muxer::new(&tracks, Fmp4Config::default()).unwrap();
    let mut out = BytesMut::new();
    mux.write_init(&mut out);
    let two = |n: &[&[u8]]| {
        let mut v = Vec::new();
        for nal in n {
            v.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            v.extend_from_slice(nal);
        }
        Bytes::from(v)
    };
    mux.push_frame(&video(0, 0, true, two(&[&[0x65, 1, 2], &[0x06]])), &mut out)
        .unwrap();
    // a length past the end: refused, nothing changes
    let before = out.len();
    assert_eq!(
        mux.push_frame(
            &video(3000, 3000, false, Bytes::from_static(&[0, 9, 1])),
            &mut out
        ),
        Err(Fmp4Error::InvalidFrame {
            track: TrackId::VIDEO,
            reason: "NAL unit length past the end"
        })
    );
    assert_eq!(out.len(), before);
    mux.push_frame(&video(3000, 3000, false, two(&[&[0x41]])), &mut out)
        .unwrap();
    mux.flush(&mut out);
    let p = parse_file(&out).unwrap();
    let t = &p.tracks[&1];
    assert_eq!(t.codec_box[4], 0xFF, "lengthSizeMinusOne = 3");
    assert_eq!(&t.codec_box[5..], &avc_config()[5..]);
    assert_eq!(
        t.samples.iter().map(|s| s.data.clone()).collect::<Vec<_>>(),
        [
            vec![0, 0, 0, 3, 0x65, 1, 2, 0, 0, 0, 1, 0x06],
            vec![0, 0, 0, 1, 0x41]
        ]
    );

    // 4-byte lengths are checked too
    let mut mux = Fmp4Muxer::new(&[h264_track()], Fmp4Config::default()).unwrap();
    assert!(matches!(
        mux.push_frame(
            &video(0, 0, true, Bytes::from_static(&[0, 0, 0, 5, 1])),
            &mut out
        ),
        Err(Fmp4Error::InvalidFrame { .. })
    ));
}

#[test]
fn every_fragment_boundary_is_a_playable_file() {
    let tracks = [h264_track(), aac_track(48_000)];
    let (_, out) = mux_all(&tracks, Fmp4Config::default(), &av_stream(7, 30, 0));
    let p = parse_file(&out).unwrap();
    assert_eq!(p.fragments.len(), 7);
    for (range, _) in &p.fragments {
        let prefix = parse_file(&out[..range.end]).unwrap();
        assert_eq!(prefix.fragments.last().unwrap().0, *range);
    }
    // a cut inside a fragment leaves a damaged last box: the walker refuses it,
    // players stop there (the ffmpeg tests show that they do)
    let (middle, _) = &p.fragments[3];
    assert!(parse_file(&out[..middle.start + 50]).is_err());
    let complete = parse_boxes(&out, 0, middle.start).unwrap();
    assert_eq!(complete.len(), 2 + 2 * 3);
}

#[test]
fn opus_durations_come_from_the_packets() {
    let tracks = [TrackInfo::new(
        TrackId::AUDIO,
        Codec::Opus {
            config: Bytes::new(),
        },
    )];
    let mut mux = Fmp4Muxer::new(&tracks, Fmp4Config::default()).unwrap();
    let mut out = BytesMut::new();
    mux.write_init(&mut out);
    let mut f = audio(0, Bytes::from_static(&[0xFC, 0, 0])); // 20 ms CELT
    f.codec = CodecId::Opus;
    mux.push_frame(&f, &mut out).unwrap();
    f.dts = Timestamp(1800);
    f.data = Bytes::from_static(&[0xF0, 0]); // 10 ms CELT
    mux.push_frame(&f, &mut out).unwrap();
    mux.flush(&mut out);
    let p = parse_file(&out).unwrap();
    let t = &p.tracks[&1];
    assert_eq!(t.codec_box, [0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let d: Vec<_> = t.samples.iter().map(|s| s.duration).collect();
    assert_eq!(d, [960, 480]);
}

// ---------------------------------------------------------------------------
// Proptests.

/// A recordable track kind for generated streams.
#[derive(Debug, Clone, Copy)]
enum Kind {
    H264,
    H264TwoByte,
    H265,
    Aac,
    Opus,
}

impl Kind {
    fn track(self, id: u32) -> TrackInfo {
        let codec = match self {
            Kind::H264 => Codec::H264 {
                config: avc_config(),
            },
            Kind::H264TwoByte => {
                let mut r = avc_config().to_vec();
                r[4] = 0xFD;
                Codec::H264 {
                    config: Bytes::from(r),
                }
            }
            Kind::H265 => Codec::H265 {
                config: hevc_config(),
            },
            Kind::Aac => Codec::Aac {
                config: asc(44_100),
            },
            Kind::Opus => Codec::Opus {
                config: opus_head(),
            },
        };
        TrackInfo::new(TrackId(id), codec)
    }

    fn video(self) -> bool {
        matches!(self, Kind::H264 | Kind::H264TwoByte | Kind::H265)
    }

    fn len_size(self) -> usize {
        if matches!(self, Kind::H264TwoByte) {
            2
        } else {
            4
        }
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::H264),
        Just(Kind::H264TwoByte),
        Just(Kind::H265),
        Just(Kind::Aac),
        Just(Kind::Opus),
    ]
}

/// One generated frame: its track (an index), a decode-time step, pts - dts,
/// keyframe, NAL/payload sizes, and what kind of oddity it is.
#[derive(Debug, Clone)]
struct Gen {
    track: usize,
    step: i64,
    cto: i64,
    key: bool,
    sizes: Vec<usize>,
    odd: u8,
}

fn frame_gen() -> impl Strategy<Value = Gen> {
    (
        0usize..3,
        prop_oneof![
            8 => 0i64..6000,
            1 => -20_000i64..0,
            1 => prop_oneof![Just(i64::MAX / 2), Just(i64::MIN / 2), Just(1i64 << 40)],
        ],
        prop_oneof![4 => 0i64..20_000, 1 => -20_000i64..0],
        prop::bool::weighted(0.15),
        prop::collection::vec(0usize..300, 0..4),
        0u8..40,
    )
        .prop_map(|(track, step, cto, key, sizes, odd)| Gen {
            track,
            step,
            cto,
            key,
            sizes,
            odd,
        })
}

fn payload(kind: Kind, sizes: &[usize], seed: u8) -> Bytes {
    if !kind.video() {
        let n: usize = sizes.iter().sum();
        return Bytes::from(
            (0..n)
                .map(|i| seed.wrapping_add(i as u8))
                .collect::<Vec<_>>(),
        );
    }
    let mut out = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let n = if kind.len_size() == 2 {
            n.min(0xFFFF)
        } else {
            n
        };
        out.extend_from_slice(&(n as u32).to_be_bytes()[4 - kind.len_size()..]);
        out.extend((0..n).map(|k| seed.wrapping_add((k * 3 + i) as u8)));
    }
    Bytes::from(out)
}

fn with_4_byte_lengths(data: &[u8], len_size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in crate::codec::nal_units(data, len_size) {
        let nal = nal.unwrap();
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// A sample the muxer should write: payload, sync, dts, pts.
type Expected = (Vec<u8>, bool, i64, i64);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random frame sequences over 1 to 3 tracks (with backwards and huge
    /// timestamps, repeated and changed configurations, damaged NAL units, empty
    /// frames): the output always parses, holds exactly the accepted frames in
    /// order (payload bytes equal, 4-byte lengths), with sync flags as given,
    /// non-negative continuous decode times, and every fragment boundary is a
    /// valid file.
    #[test]
    fn output_is_well_formed_and_holds_the_frames(
        kinds in prop::collection::vec(kind(), 1..4),
        gens in prop::collection::vec(frame_gen(), 0..250),
        max_ms in 0u64..3000,
        max_video_ms in 0u64..5000,
        max_bytes in prop_oneof![Just(64usize << 20), 1usize..5000],
        until in prop::option::of(0i64..1_000_000),
    ) {
        let tracks: Vec<TrackInfo> = kinds.iter().enumerate().map(|(i, k)| k.track(i as u32)).collect();
        let config = Fmp4Config {
            max_fragment: Duration::from_millis(max_ms),
            max_video_fragment: Duration::from_millis(max_video_ms),
            max_fragment_bytes: max_bytes,
        };
        let mut mux = Fmp4Muxer::new(&tracks, config).unwrap();
        let mut out = BytesMut::new();
        mux.write_init(&mut out);
        let mut dts = vec![0i64; kinds.len()];
        // per track: payload, sync, dts, pts
        let mut expected: Vec<Vec<Expected>> = vec![Vec::new(); kinds.len()];
        let mut origin = None;
        let mut keyframe_seen = vec![false; kinds.len()];
        let mut dropped = 0;
        for (n, g) in gens.iter().enumerate() {
            let i = g.track % kinds.len();
            let kind = kinds[i];
            let t = &tracks[i];
            dts[i] = dts[i].saturating_add(g.step);
            let mut frame = Frame {
                track: t.id,
                codec: t.codec.id(),
                pts: Timestamp(dts[i].saturating_add(g.cto)),
                dts: Timestamp(dts[i]),
                flags: if g.key { FrameFlags::KEYFRAME } else { FrameFlags::NONE },
                data: payload(kind, &g.sizes, n as u8),
            };
            let before = out.len();
            let result = match g.odd {
                0 => {
                    // the same configuration: ignored
                    frame.flags = FrameFlags::CONFIG;
                    frame.data = t.codec.config().clone();
                    mux.push_frame(&frame, &mut out)
                }
                1 => {
                    frame.flags = FrameFlags::CONFIG;
                    frame.data = Bytes::from_static(&[1, 2, 3]);
                    let r = mux.push_frame(&frame, &mut out);
                    prop_assert_eq!(r.clone(), Err(Fmp4Error::ConfigChanged(t.id)));
                    r
                }
                2 if kind.video() => {
                    // a NAL unit length past the end
                    let mut d = frame.data.to_vec();
                    d.extend_from_slice(&[0, 0, 0, 9][4 - kind.len_size()..]);
                    frame.data = Bytes::from(d);
                    let r = mux.push_frame(&frame, &mut out);
                    prop_assert!(matches!(r, Err(Fmp4Error::InvalidFrame { .. })), "{:?}", r);
                    r
                }
                _ => {
                    let r = mux.push_frame(&frame, &mut out);
                    prop_assert!(r.is_ok(), "{:?}", r);
                    if !frame.data.is_empty() {
                        let sync = !kind.video() || g.key;
                        if sync || keyframe_seen[i] {
                            keyframe_seen[i] |= sync;
                            let data = if kind.video() {
                                with_4_byte_lengths(&frame.data, kind.len_size())
                            } else {
                                frame.data.to_vec()
                            };
                            origin.get_or_insert(frame.dts.ticks());
                            expected[i].push((data, sync, frame.dts.ticks(), frame.pts.ticks()));
                        } else {
                            dropped += 1;
                        }
                    }
                    r
                }
            };
            if result.is_err() {
                prop_assert_eq!(out.len(), before, "an error wrote something");
            }
            prop_assert!(parse_file(&out).is_ok(), "{:?}", parse_file(&out).err());
        }
        match until {
            Some(t) => mux.flush_until(Timestamp(t), &mut out),
            None => mux.flush(&mut out),
        }
        prop_assert_eq!(mux.buffered_duration(), Duration::ZERO);
        let p = parse_file(&out).map_err(TestCaseError::fail)?;
        prop_assert_eq!(mux.stats().dropped_before_keyframe, dropped);
        let mut total = 0usize;
        for (i, want) in expected.iter().enumerate() {
            let track_id = i as u32 + 1;
            let got = &p.tracks[&track_id].samples;
            prop_assert_eq!(got.len(), want.len(), "track {}", i);
            let timescale = i128::from(p.tracks[&track_id].timescale);
            let conv = |t: i64| (i128::from(t.max(0)) * timescale + 45_000) / 90_000;
            let origin = origin.unwrap_or_default();
            let mut prev: Option<&ParsedSample> = None;
            for (g, (data, sync, dts, pts)) in got.iter().zip(want) {
                prop_assert_eq!(&g.data, data);
                prop_assert_eq!(g.sync, *sync);
                // decode times are the DTS from time 0, unless that would go back
                // (or jump more than 32 bits) from the sample before
                let target = conv(dts.saturating_sub(origin));
                let exact = prev.is_none_or(|p| {
                    target >= i128::from(p.decode) && target - i128::from(p.decode) <= i128::from(u32::MAX)
                });
                if exact {
                    prop_assert_eq!(i128::from(g.decode), target);
                }
                let cto = if kinds[i].video() {
                    (i128::from(pts.saturating_sub(*dts))).clamp(i128::from(i32::MIN), i128::from(i32::MAX))
                } else {
                    0
                };
                prop_assert_eq!(i128::from(g.cto), cto);
                prev = Some(g);
            }
            total += want.iter().map(|(d, ..)| d.len()).sum::<usize>();
        }
        let mdat_bytes: usize = p
            .fragments
            .iter()
            .map(|(r, _)| {
                let boxes = parse_boxes(&out, r.start, r.end).unwrap();
                boxes[1].end - boxes[1].body
            })
            .sum();
        prop_assert_eq!(mdat_bytes, total);
        prop_assert_eq!(mux.stats().samples as usize, expected.iter().map(Vec::len).sum::<usize>());
        for (r, _) in &p.fragments {
            prop_assert!(parse_file(&out[..r.end]).is_ok());
        }
    }

    /// Frames with any codec, track, flags, timestamps and bytes, for any tracks:
    /// never a panic, and the output always parses.
    #[test]
    fn hostile_frames_never_panic(
        kinds in prop::collection::vec(kind(), 1..3),
        frames in prop::collection::vec(
            (0u32..4, 0usize..6, any::<i64>(), any::<i64>(), 0u8..8, prop::collection::vec(any::<u8>(), 0..64)),
            0..100,
        ),
        max_ms in 0u64..100,
    ) {
        let tracks: Vec<TrackInfo> = kinds.iter().enumerate().map(|(i, k)| k.track(i as u32)).collect();
        let config = Fmp4Config {
            max_fragment: Duration::from_millis(max_ms),
            max_video_fragment: Duration::from_millis(max_ms * 2),
            ..Fmp4Config::default()
        };
        let mut mux = Fmp4Muxer::new(&tracks, config).unwrap();
        let mut out = BytesMut::new();
        mux.write_init(&mut out);
        let codecs = [CodecId::H264, CodecId::H265, CodecId::Aac, CodecId::Opus, CodecId::Av1, CodecId::Mp3];
        for (track, codec, pts, dts, flags, data) in frames {
            let frame = Frame {
                track: TrackId(track),
                codec: codecs[codec],
                pts: Timestamp(pts),
                dts: Timestamp(dts),
                flags: FrameFlags::NONE
                    .union(if flags & 1 != 0 { FrameFlags::KEYFRAME } else { FrameFlags::NONE })
                    .union(if flags & 2 != 0 { FrameFlags::CONFIG } else { FrameFlags::NONE })
                    .union(if flags & 4 != 0 { FrameFlags::END_OF_SEQUENCE } else { FrameFlags::NONE }),
                data: Bytes::from(data),
            };
            let before = out.len();
            if mux.push_frame(&frame, &mut out).is_err() {
                prop_assert_eq!(out.len(), before);
            }
            let _ = mux.buffered_duration();
            let _ = mux.fragment_start_is_keyframe();
        }
        mux.flush_until(Timestamp(i64::MIN), &mut out);
        mux.flush(&mut out);
        prop_assert!(parse_file(&out).is_ok(), "{:?}", parse_file(&out).err());
    }
}
