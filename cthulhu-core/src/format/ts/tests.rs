//! Mux → demux round trips, damage handling, and what the muxer's output looks like
//! on the wire.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::codec::aac::{AudioSpecificConfig, SAMPLING_FREQUENCIES};
use crate::codec::h264::AvcConfig;
use crate::codec::h264::tests::hex;
use crate::model::{Codec, Frame, FrameFlags, Timestamp, TrackInfo};

/// Escapes a NAL unit body the way an encoder does (no `00 00 0x`, x ≤ 3) and ends
/// it with a non-zero byte, so that an Annex B parser finds it whole.
fn nal(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut zeros = 0;
    for &b in body {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    if out.last() == Some(&0) {
        out.push(0x80);
    }
    out
}

fn length_prefixed(nals: &[Vec<u8>]) -> Bytes {
    let mut out = Vec::new();
    for n in nals {
        out.extend_from_slice(&(n.len() as u32).to_be_bytes());
        out.extend_from_slice(n);
    }
    Bytes::from(out)
}

fn avc_config(sps: &[u8], pps: &[u8]) -> Bytes {
    AvcConfig::from_parameter_sets(
        vec![Bytes::copy_from_slice(sps)],
        vec![Bytes::copy_from_slice(pps)],
    )
    .unwrap()
    .to_bytes()
    .unwrap()
}

fn frame(
    track: TrackId,
    codec: CodecId,
    pts: i64,
    dts: i64,
    flags: FrameFlags,
    data: Bytes,
) -> Frame {
    Frame {
        track,
        codec,
        pts: Timestamp(pts),
        dts: Timestamp(dts),
        flags,
        data,
    }
}

fn mux_all(tracks: &[TrackInfo], frames: &[Frame]) -> Bytes {
    let mut mux = TsMuxer::new(tracks, MuxConfig::default()).unwrap();
    let mut out = BytesMut::new();
    for f in frames {
        mux.write_frame(f, &mut out).unwrap();
    }
    out.freeze()
}

struct Demuxed {
    events: Vec<TsEvent>,
    stats: DemuxStats,
    tracks: Vec<TrackInfo>,
}

impl Demuxed {
    fn frames(&self) -> impl Iterator<Item = &Frame> {
        self.events.iter().filter_map(|e| match e {
            TsEvent::Frame(f) => Some(f),
            _ => None,
        })
    }

    fn by_track(&self) -> BTreeMap<TrackId, Vec<Frame>> {
        let mut map: BTreeMap<TrackId, Vec<Frame>> = BTreeMap::new();
        for f in self.frames() {
            map.entry(f.track).or_default().push(f.clone());
        }
        map
    }

    fn errors(&self) -> Vec<&TsError> {
        self.events
            .iter()
            .filter_map(|e| match e {
                TsEvent::Error(e) => Some(e),
                _ => None,
            })
            .collect()
    }
}

fn demux_with(data: &[u8], cuts: &[usize], config: DemuxConfig) -> Demuxed {
    let mut d = TsDemuxer::with_config(config);
    let mut events = Vec::new();
    let mut rest = data;
    for &cut in cuts {
        let (now, later) = rest.split_at(cut.min(rest.len()));
        d.push(now);
        events.extend(std::iter::from_fn(|| d.poll_event()));
        rest = later;
    }
    d.push(rest);
    d.flush();
    events.extend(std::iter::from_fn(|| d.poll_event()));
    Demuxed {
        events,
        stats: d.stats().clone(),
        tracks: d.tracks().to_vec(),
    }
}

fn demux(data: &[u8], cuts: &[usize]) -> Demuxed {
    demux_with(data, cuts, DemuxConfig::default())
}

/// The frames a demuxer gives back for `frames`, by track: the same, except that a
/// configuration frame equal to the previous one of its track is not repeated.
fn expected_by_track(frames: &[Frame]) -> BTreeMap<TrackId, Vec<Frame>> {
    let mut map: BTreeMap<TrackId, Vec<Frame>> = BTreeMap::new();
    let mut configs: BTreeMap<TrackId, Bytes> = BTreeMap::new();
    for f in frames {
        if f.is_config() {
            if configs.get(&f.track) == Some(&f.data) {
                continue;
            }
            configs.insert(f.track, f.data.clone());
        }
        map.entry(f.track).or_default().push(f.clone());
    }
    map
}

// --- generators ---

fn nal_body(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..max)
}

/// A video access unit: a keyframe has an IDR slice (maybe after an SEI), other
/// frames non-IDR slices; sizes are mostly small with the occasional frame too
/// large for a bounded PES.
fn access_unit(keyframe: bool) -> impl Strategy<Value = Bytes> {
    let size = prop_oneof![8 => 1usize..400, 3 => 400usize..5000, 1 => 66_000usize..70_000];
    (
        prop::collection::vec((size, any::<u8>(), any::<bool>()), 1..4),
        any::<bool>(),
    )
        .prop_map(move |(slices, sei)| {
            let mut nals = Vec::new();
            if sei {
                nals.push(nal(0x06, &[5, 16, 1, 2, 3]));
            }
            for (i, (len, seed, ref_idc)) in slices.into_iter().enumerate() {
                let body: Vec<u8> = (0..len)
                    .map(|j| (j as u8).wrapping_mul(31).wrapping_add(seed) ^ (j >> 8) as u8)
                    .collect();
                let header = match (keyframe, i) {
                    (true, _) => 0x65,
                    (false, _) if ref_idc => 0x41,
                    _ => 0x01,
                };
                nals.push(nal(header, &body));
            }
            length_prefixed(&nals)
        })
}

/// A GOP to generate: maybe (SPS, PPS), then access units with their composition
/// offsets in frames.
type Gop = (Option<(Vec<u8>, Vec<u8>)>, Vec<(Bytes, i64)>);

/// A GOP: maybe a (possibly unchanged) configuration, a keyframe, then inter
/// frames with composition offsets.
fn gop() -> impl Strategy<Value = Gop> {
    let config = (
        prop::sample::select(vec![66u8, 77, 100]),
        nal_body(12),
        nal_body(6),
    )
        .prop_map(|(profile, sps, pps)| {
            let mut body = vec![profile, 0xC0, 31];
            body.extend_from_slice(&sps);
            (nal(0x67, &body), nal(0x68, &pps))
        });
    (
        prop::option::weighted(0.5, config),
        access_unit(true),
        prop::collection::vec((access_unit(false), 0i64..3), 0..5),
    )
        .prop_map(|(config, key, rest)| {
            let mut frames = vec![(key, 0)];
            frames.extend(rest);
            (config, frames)
        })
}

/// Audio configurations ADTS can express (AAC Main/LC/SSR/LTP).
fn asc() -> impl Strategy<Value = AudioSpecificConfig> {
    (1u8..=4, 0usize..12, 1u8..=7)
        .prop_map(|(aot, idx, ch)| AudioSpecificConfig::new(aot, SAMPLING_FREQUENCIES[idx], ch))
}

/// H.264 and/or AAC tracks and their frames in mux order (interleaved by DTS).
fn stream() -> impl Strategy<Value = (Vec<TrackInfo>, Vec<Frame>)> {
    let start = prop_oneof![0i64..10_000, (TS_MODULUS - 400_000)..TS_MODULUS];
    (
        start,
        prop::option::of(prop::collection::vec(gop(), 1..4)),
        prop::option::of((
            asc(),
            prop::option::of((4usize..40, asc())),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 1..1500), 1..60),
        )),
    )
        .prop_filter("at least one track", |(_, v, a)| v.is_some() || a.is_some())
        .prop_map(|(start, video, audio)| {
            let mut tracks = Vec::new();
            let mut frames: Vec<(i64, Frame)> = Vec::new();
            if let Some(gops) = video {
                tracks.push(TrackInfo::new(
                    TrackId::VIDEO,
                    Codec::H264 {
                        config: Bytes::new(),
                    },
                ));
                let mut dts = start;
                let mut current = None;
                for (i, (config, aus)) in gops.into_iter().enumerate() {
                    // the first GOP always has a configuration
                    let config = config.or_else(|| {
                        (i == 0).then(|| (nal(0x67, &[66, 0, 30, 1]), nal(0x68, &[0xCE])))
                    });
                    if let Some((sps, pps)) = config {
                        current = Some(avc_config(&sps, &pps));
                    }
                    for (j, (data, offset)) in aus.into_iter().enumerate() {
                        if j == 0
                            && let Some(c) = &current
                        {
                            let f = frame(
                                TrackId::VIDEO,
                                CodecId::H264,
                                dts,
                                dts,
                                FrameFlags::CONFIG,
                                c.clone(),
                            );
                            frames.push((dts, f));
                        }
                        let flags = if j == 0 {
                            FrameFlags::KEYFRAME
                        } else {
                            FrameFlags::NONE
                        };
                        let f = frame(
                            TrackId::VIDEO,
                            CodecId::H264,
                            dts + offset * 3000,
                            dts,
                            flags,
                            data,
                        );
                        frames.push((dts, f));
                        dts += 3000;
                    }
                }
            }
            if let Some((first, change, payloads)) = audio {
                tracks.push(TrackInfo::new(
                    TrackId::AUDIO,
                    Codec::Aac {
                        config: Bytes::new(),
                    },
                ));
                let mut config = first;
                let mut ts = start + 1000;
                for (i, p) in payloads.into_iter().enumerate() {
                    if let Some((at, next)) = &change
                        && *at == i
                    {
                        config = next.clone();
                    }
                    if i == 0 || change.as_ref().is_some_and(|(at, _)| *at == i) {
                        let c = config.to_bytes().unwrap();
                        frames.push((
                            ts,
                            frame(TrackId::AUDIO, CodecId::Aac, ts, ts, FrameFlags::CONFIG, c),
                        ));
                    }
                    frames.push((
                        ts,
                        frame(
                            TrackId::AUDIO,
                            CodecId::Aac,
                            ts,
                            ts,
                            FrameFlags::NONE,
                            Bytes::from(p),
                        ),
                    ));
                    ts += 1024 * 90_000 / i64::from(config.sampling_frequency);
                }
            }
            // interleave by DTS, each track's order kept
            frames.sort_by_key(|(dts, _)| *dts);
            (tracks, frames.into_iter().map(|(_, f)| f).collect())
        })
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![0usize..10, 0usize..400, 0usize..5000], 0..40)
}

proptest! {
    #[test]
    fn mux_then_demux_gives_the_frames_back((tracks, frames) in stream(), cuts in cuts()) {
        let ts = mux_all(&tracks, &frames);
        prop_assert_eq!(ts.len() % PACKET_SIZE, 0);
        let out = demux(&ts, &cuts);
        prop_assert!(out.errors().is_empty(), "{:?}", out.errors());
        prop_assert_eq!(out.stats.frames_dropped, 0);
        let mut expected = expected_by_track(&frames);
        // at the end of the input, a video PES of unknown length (a frame too large
        // for PES_packet_length) that fills its last packet exactly, without
        // stuffing, is taken as truncated and dropped (see `TsDemuxer::flush`)
        if out.stats.pes_dropped == 1 {
            let video_pid = packets(&ts)
                .iter()
                .find(|(_, start, _, payload)| *start && payload.get(3) == Some(&0xE0))
                .map(|(pid, ..)| *pid);
            let last = packets(&ts).into_iter().rev().find(|(pid, _, _, payload)| Some(*pid) == video_pid && !payload.is_empty());
            prop_assert!(last.as_ref().is_some_and(|(_, _, af, _)| af.is_empty()), "{:02x?}", last.as_ref().map(|l| &l.2));
            let video = expected.values_mut().find(|v| v.iter().any(|f| f.codec == CodecId::H264));
            let dropped = video.and_then(|v| v.pop());
            prop_assert!(dropped.is_some_and(|f| f.data.len() > 65_000));
        } else {
            prop_assert_eq!(out.stats.pes_dropped, 0);
        }
        let got = out.by_track();
        prop_assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
        for (track, want) in &expected {
            let have = &got[track];
            prop_assert_eq!(have.len(), want.len(), "track {:?}", track);
            for (h, w) in have.iter().zip(want) {
                prop_assert_eq!(h, w);
            }
        }
        // the track list: the ids the muxer was given, the last configurations
        let ids: Vec<_> = out.tracks.iter().map(|t| (t.id, t.codec.id())).collect();
        let want: Vec<_> = tracks.iter().map(|t| (t.id, t.codec.id())).collect();
        prop_assert_eq!(ids, want);
        for t in &out.tracks {
            let last = expected[&t.id].iter().rev().find(|f| f.is_config()).map(|f| f.data.clone());
            prop_assert_eq!(Some(t.codec.config().clone()), last);
        }
        let track_events = out.events.iter().filter(|e| matches!(e, TsEvent::Tracks(_))).count();
        prop_assert_eq!(track_events, 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..3000), cuts in cuts()) {
        let _ = demux(&data, &cuts);
        // and the same behind a valid start, so that streams exist
        let mut valid = sample_stream().to_vec();
        valid.truncate(PACKET_SIZE * 6);
        valid.extend_from_slice(&data);
        let _ = demux(&valid, &cuts);
    }

    #[test]
    fn damaged_valid_streams_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..20),
        cut in any::<prop::sample::Index>(),
        garbage in prop::collection::vec((any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..300)), 0..3),
        cuts in cuts(),
    ) {
        let mut data = sample_stream().to_vec();
        for (at, bit) in &flips {
            let i = at.index(data.len());
            data[i] ^= 1 << bit;
        }
        for (at, bytes) in &garbage {
            let i = at.index(data.len());
            data.splice(i..i, bytes.iter().copied());
        }
        data.truncate(cut.index(data.len() + 1));
        let out = demux(&data, &cuts);
        for f in out.frames() {
            // whatever comes out is in the canonical layout
            if f.codec == CodecId::H264 && !f.is_config() {
                prop_assert!(crate::codec::nal_units(&f.data, 4).all(|n| n.is_ok()));
            }
        }
    }
}

/// A small valid stream: H.264 and AAC, three GOPs.
fn sample_stream() -> Bytes {
    let (tracks, frames) = sample_frames(90, 2_000);
    mux_all(&tracks, &frames)
}

/// `video_frames` frames of 30 fps H.264 (a GOP of 30) with slices of `slice_len`
/// bytes, and 48 kHz AAC for as long, interleaved.
fn sample_frames(video_frames: i64, slice_len: usize) -> (Vec<TrackInfo>, Vec<Frame>) {
    let sps = hex("6764001facd9405005bb011000000300100000030320f1831960");
    let pps = hex("68ebe3cb22c0");
    let config = avc_config(&sps, &pps);
    let asc = AudioSpecificConfig::new(2, 48_000, 2).to_bytes().unwrap();
    let tracks = vec![
        TrackInfo::new(
            TrackId::VIDEO,
            Codec::H264 {
                config: config.clone(),
            },
        ),
        TrackInfo::new(
            TrackId::AUDIO,
            Codec::Aac {
                config: asc.clone(),
            },
        ),
    ];
    let mut frames = vec![
        frame(
            TrackId::VIDEO,
            CodecId::H264,
            0,
            0,
            FrameFlags::CONFIG,
            config,
        ),
        frame(TrackId::AUDIO, CodecId::Aac, 0, 0, FrameFlags::CONFIG, asc),
    ];
    let mut timed = Vec::new();
    for i in 0..video_frames {
        let key = i % 30 == 0;
        let body: Vec<u8> = (0..slice_len)
            .map(|j| (j * 7 + i as usize) as u8 | 0x10)
            .collect();
        let data = length_prefixed(&[nal(if key { 0x65 } else { 0x41 }, &body)]);
        let flags = if key {
            FrameFlags::KEYFRAME
        } else {
            FrameFlags::NONE
        };
        timed.push(frame(
            TrackId::VIDEO,
            CodecId::H264,
            i * 3000 + 6000,
            i * 3000,
            flags,
            data,
        ));
    }
    for i in 0..video_frames * 3000 / 1920 {
        let body: Vec<u8> = (0..300).map(|j| (j + i) as u8).collect();
        timed.push(frame(
            TrackId::AUDIO,
            CodecId::Aac,
            i * 1920,
            i * 1920,
            FrameFlags::NONE,
            Bytes::from(body),
        ));
    }
    timed.sort_by_key(|f| f.dts);
    frames.extend(timed);
    (tracks, frames)
}

/// The packets of a stream: (pid, payload_unit_start, adaptation field, payload).
fn packets(ts: &[u8]) -> Vec<(u16, bool, Vec<u8>, Vec<u8>)> {
    ts.chunks(PACKET_SIZE)
        .map(|p| {
            assert_eq!(p.len(), PACKET_SIZE);
            assert_eq!(p[0], SYNC_BYTE);
            let pid = u16::from_be_bytes([p[1] & 0x1F, p[2]]);
            let afc = (p[3] >> 4) & 3;
            let (af, payload) = if afc & 2 != 0 {
                let len = usize::from(p[4]);
                (p[5..5 + len].to_vec(), p[5 + len..].to_vec())
            } else {
                (Vec::new(), p[4..].to_vec())
            };
            let payload = if afc & 1 != 0 { payload } else { Vec::new() };
            (pid, p[1] & 0x40 != 0, af, payload)
        })
        .collect()
}

#[test]
fn psi_first_and_before_every_keyframe_pcr_often() {
    let (tracks, frames) = sample_frames(90, 500);
    let ts = mux_all(&tracks, &frames);
    let pkts = packets(&ts);
    assert_eq!(pkts[0].0, PID_PAT);
    assert_eq!(pkts[1].0, 0x1000);
    // before each video keyframe PES, the PAT and PMT come right before it
    let mut keyframes = 0;
    for (i, (pid, start, af, _)) in pkts.iter().enumerate() {
        if *pid == 0x100 && *start && af.first().is_some_and(|f| f & 0x40 != 0) {
            keyframes += 1;
            let before: Vec<u16> = pkts[..i].iter().rev().take(2).map(|p| p.0).collect();
            assert_eq!(before, vec![0x1000, PID_PAT], "packet {i}");
        }
    }
    assert_eq!(keyframes, 3);
    // PCRs on the video PID at least every 40 ms of stream time
    let out = demux(&ts, &[]);
    let pcrs: Vec<Pcr> = out
        .events
        .iter()
        .filter_map(|e| match e {
            TsEvent::Pcr(p) => Some(*p),
            _ => None,
        })
        .collect();
    assert!(pcrs.len() >= 70, "{} PCRs", pcrs.len());
    assert!(pcrs.iter().all(|p| p.pid == 0x100));
    assert_eq!(pcrs[0].base, Timestamp(0));
    for w in pcrs.windows(2) {
        let gap = w[1].base.ticks() - w[0].base.ticks();
        assert!((0..=40 * 90).contains(&gap), "PCR gap {gap}");
    }
    // PSI at least every 100 ms: 3 s of stream, so 30 or more
    let pats = pkts.iter().filter(|p| p.0 == PID_PAT).count();
    assert!((30..=40).contains(&pats), "{pats} PATs");
    assert_eq!(out.stats.continuity_errors, 0);
}

#[test]
fn annex_b_on_the_wire() {
    let (tracks, frames) = sample_frames(2, 50);
    let ts = mux_all(&tracks, &frames);
    let video: Vec<u8> = packets(&ts)
        .into_iter()
        .filter(|p| p.0 == 0x100)
        .flat_map(|p| p.3)
        .collect();
    // PES header (PTS and DTS), then AUD, SPS, PPS, IDR
    assert_eq!(&video[..4], &[0, 0, 1, 0xE0]);
    assert_eq!(video[7], 0xC0);
    let es = &video[19..];
    assert_eq!(&es[..6], &[0, 0, 0, 1, 0x09, 0xF0]);
    assert_eq!(&es[6..11], &[0, 0, 0, 1, 0x67]);
    let second = video
        .windows(4)
        .rposition(|w| w == [0, 0, 1, 0xE0])
        .unwrap();
    // the inter frame: AUD, slice; no parameter sets
    assert_eq!(&video[second + 19..second + 25], &[0, 0, 0, 1, 0x09, 0xF0]);
    assert_eq!(&video[second + 25..second + 30], &[0, 0, 0, 1, 0x41]);
    // audio: ADTS header after a PTS-only PES header
    let audio: Vec<u8> = packets(&ts)
        .into_iter()
        .filter(|p| p.0 == 0x101)
        .flat_map(|p| p.3)
        .collect();
    assert_eq!(&audio[..4], &[0, 0, 1, 0xC0]);
    assert_eq!(audio[7], 0x80);
    assert_eq!(&audio[14..16], &[0xFF, 0xF1]);
}

#[test]
fn continuity_error_drops_the_pes_and_goes_on() {
    let (tracks, frames) = sample_frames(60, 3000);
    let ts = mux_all(&tracks, &frames);
    let clean = demux(&ts, &[]);
    let video_frames = clean
        .frames()
        .filter(|f| f.track == TrackId::VIDEO && !f.is_config())
        .count();
    assert_eq!(video_frames, 60);
    // remove the second packet of the tenth video PES
    let pkts: Vec<&[u8]> = ts.chunks(PACKET_SIZE).collect();
    let starts: Vec<usize> = pkts
        .iter()
        .enumerate()
        .filter(|(_, p)| p[1] & 0x40 != 0 && u16::from_be_bytes([p[1] & 0x1F, p[2]]) == 0x100)
        .map(|(i, _)| i)
        .collect();
    let victim = starts[10] + 1;
    let damaged: Vec<u8> = pkts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    let out = demux(&damaged, &[1000, 77]);
    assert_eq!(out.stats.continuity_errors, 1);
    assert_eq!(out.stats.pes_dropped, 1);
    assert!(matches!(
        out.errors()[..],
        [TsError::Continuity { pid: 0x100, .. }]
    ));
    let video_frames = out
        .frames()
        .filter(|f| f.track == TrackId::VIDEO && !f.is_config())
        .count();
    assert_eq!(video_frames, 59);
}

#[test]
fn garbage_between_packets_is_skipped() {
    let ts = sample_stream();
    let mut data = ts[..PACKET_SIZE * 40].to_vec();
    data.extend_from_slice(&[0x47, 1, 2, 3, 0x47, 0x47, 9]);
    data.extend_from_slice(&ts[PACKET_SIZE * 40..]);
    let out = demux(&data, &[PACKET_SIZE * 40 + 3]);
    assert_eq!(out.stats.bytes_skipped, 7);
    assert_eq!(out.errors(), vec![&TsError::SyncLost { skipped: 7 }]);
    assert_eq!(out.stats.frames, demux(&ts, &[]).stats.frames);
}

#[test]
fn pes_over_the_limit_is_dropped() {
    let (tracks, frames) = sample_frames(3, 20_000);
    let ts = mux_all(&tracks, &frames);
    let out = demux_with(
        &ts,
        &[],
        DemuxConfig {
            max_pes_size: 10_000,
        },
    );
    assert_eq!(out.stats.pes_dropped, 3);
    assert!(out.errors().iter().all(|e| matches!(
        e,
        TsError::PesTooLarge {
            pid: 0x100,
            limit: 10_000
        }
    )));
    assert_eq!(
        out.frames().filter(|f| f.track == TrackId::VIDEO).count(),
        0
    );
    assert!(out.frames().any(|f| f.track == TrackId::AUDIO));
}

#[test]
fn several_adts_frames_in_one_pes_get_their_own_timestamps() {
    // what ffmpeg does: one PES with three ADTS frames
    let asc = AudioSpecificConfig::new(2, 44_100, 2);
    let mut es = Vec::new();
    for i in 0..3u8 {
        es.extend_from_slice(&asc.adts_header(10).unwrap());
        es.extend_from_slice(&[i; 10]);
    }
    let (header, len) = pes::write_header(0xC0, 90_000, None, es.len());
    let mut pes_bytes = header[..len].to_vec();
    pes_bytes.extend_from_slice(&es);
    let mut out = BytesMut::new();
    let pmt = psi::write_pmt(1, 0x101, &[(STREAM_TYPE_AAC_ADTS, 0x101, Vec::new())]);
    let mut cc = 0;
    write_test_section(&mut out, PID_PAT, &psi::write_pat(1, 1, 0x1000));
    write_test_section(&mut out, 0x1000, &pmt);
    write_test_pes(&mut out, 0x101, &mut cc, &pes_bytes);
    let d = demux(&out, &[]);
    let frames: Vec<_> = d.frames().collect();
    assert_eq!(frames.len(), 4);
    assert!(frames[0].is_config());
    assert_eq!(&frames[0].data[..], &[0x12, 0x10]);
    let ts: Vec<i64> = frames[1..].iter().map(|f| f.pts.ticks()).collect();
    assert_eq!(ts, vec![90_000, 90_000 + 2089, 90_000 + 4179]);
    assert_eq!(&frames[3].data[..], &[2; 10]);
    assert_eq!(d.tracks[0].details.sample_rate, Some(44_100));
}

fn write_test_section(out: &mut BytesMut, pid: u16, section: &[u8]) {
    let mut p = vec![SYNC_BYTE, 0x40 | (pid >> 8) as u8, pid as u8, 0x10, 0];
    p.extend_from_slice(section);
    p.resize(PACKET_SIZE, 0xFF);
    out.extend_from_slice(&p);
}

/// Packetizes a PES by hand, the last packet padded with adaptation-field stuffing.
fn write_test_pes(out: &mut BytesMut, pid: u16, cc: &mut u8, pes: &[u8]) {
    for (i, chunk) in pes.chunks(184).enumerate() {
        let stuffing = 184 - chunk.len();
        let afc = if stuffing > 0 { 0x30 } else { 0x10 };
        let mut p = vec![
            SYNC_BYTE,
            (if i == 0 { 0x40 } else { 0 }) | (pid >> 8) as u8,
            pid as u8,
            afc | *cc,
        ];
        if stuffing > 0 {
            p.push((stuffing - 1) as u8);
            if stuffing > 1 {
                p.push(0);
                p.resize(p.len() + stuffing - 2, 0xFF);
            }
        }
        p.extend_from_slice(chunk);
        out.extend_from_slice(&p);
        *cc = (*cc + 1) & 0x0F;
    }
}

#[test]
fn hevc_round_trip() {
    let record = Bytes::from(hex(crate::codec::h265::tests::X265_1080P_MAIN));
    let hevc = crate::codec::h265::parse_hevc_config(&record).unwrap();
    // the demuxer rebuilds the record from the parameter sets
    let config = crate::codec::h265::HevcConfig::from_parameter_sets(hevc.vps, hevc.sps, hevc.pps)
        .unwrap()
        .to_bytes()
        .unwrap();
    let tracks = vec![TrackInfo::new(
        TrackId::VIDEO,
        Codec::H265 {
            config: config.clone(),
        },
    )];
    let idr = length_prefixed(&[
        nal(0x4E, &[0x01, 5, 1, 0xAA]),
        [&[0x26, 0x01][..], &[0xAF; 300]].concat(),
    ]);
    let trail = length_prefixed(&[[&[0x02, 0x01][..], &[0xD0; 100]].concat()]);
    let frames = vec![
        frame(
            TrackId::VIDEO,
            CodecId::H265,
            0,
            0,
            FrameFlags::CONFIG,
            config.clone(),
        ),
        frame(
            TrackId::VIDEO,
            CodecId::H265,
            3000,
            0,
            FrameFlags::KEYFRAME,
            idr,
        ),
        frame(
            TrackId::VIDEO,
            CodecId::H265,
            9000,
            3000,
            FrameFlags::NONE,
            trail,
        ),
    ];
    let out = demux(&mux_all(&tracks, &frames), &[]);
    assert!(out.errors().is_empty(), "{:?}", out.errors());
    assert_eq!(out.frames().cloned().collect::<Vec<_>>(), frames);
    assert_eq!(out.tracks[0].details.width, Some(1920));
}

#[test]
fn opus_round_trip() {
    let head = crate::codec::opus::OpusHead {
        channels: 2,
        pre_skip: 0,
        input_sample_rate: 48_000,
        mapping_family: 0,
    }
    .to_bytes()
    .unwrap();
    let tracks = vec![TrackInfo::new(
        TrackId::AUDIO,
        Codec::Opus {
            config: head.clone(),
        },
    )];
    let mut frames = vec![frame(
        TrackId::AUDIO,
        CodecId::Opus,
        0,
        0,
        FrameFlags::CONFIG,
        head,
    )];
    for i in 0..5 {
        // CELT 20 ms packets of growing size (one over 255 bytes for the au_size)
        let data = Bytes::from([&[0xFC][..], &vec![i as u8; 100 + 100 * i]].concat());
        frames.push(frame(
            TrackId::AUDIO,
            CodecId::Opus,
            i as i64 * 1800,
            i as i64 * 1800,
            FrameFlags::NONE,
            data,
        ));
    }
    let out = demux(&mux_all(&tracks, &frames), &[]);
    assert!(out.errors().is_empty(), "{:?}", out.errors());
    assert_eq!(out.frames().cloned().collect::<Vec<_>>(), frames);
}

#[test]
fn muxer_rejects_what_it_cannot_write() {
    assert!(matches!(
        TsMuxer::new(
            &[TrackInfo::new(TrackId::VIDEO, Codec::Mp3)],
            MuxConfig::default()
        ),
        Err(TsError::UnsupportedCodec(CodecId::Mp3))
    ));
    assert!(matches!(
        TsMuxer::new(&[], MuxConfig::default()),
        Err(TsError::TrackCount { got: 0, .. })
    ));
    let aac = [TrackInfo::new(
        TrackId::AUDIO,
        Codec::Aac {
            config: Bytes::new(),
        },
    )];
    let mut mux = TsMuxer::new(&aac, MuxConfig::default()).unwrap();
    let mut out = BytesMut::new();
    let raw = frame(
        TrackId::AUDIO,
        CodecId::Aac,
        0,
        0,
        FrameFlags::NONE,
        Bytes::from_static(&[1, 2]),
    );
    assert_eq!(
        mux.write_frame(&raw, &mut out),
        Err(TsError::MissingConfig(TrackId::AUDIO))
    );
    let bad = frame(
        TrackId::AUDIO,
        CodecId::Aac,
        0,
        0,
        FrameFlags::CONFIG,
        Bytes::from_static(&[0xFF]),
    );
    assert!(matches!(
        mux.write_frame(&bad, &mut out),
        Err(TsError::InvalidConfig { .. })
    ));
    let other = frame(
        TrackId(7),
        CodecId::Aac,
        0,
        0,
        FrameFlags::NONE,
        Bytes::from_static(&[1]),
    );
    assert_eq!(
        mux.write_frame(&other, &mut out),
        Err(TsError::UnknownTrack(TrackId(7)))
    );
    let h264 = [TrackInfo::new(
        TrackId::VIDEO,
        Codec::H264 {
            config: Bytes::new(),
        },
    )];
    let mut mux = TsMuxer::new(&h264, MuxConfig::default()).unwrap();
    let broken = frame(
        TrackId::VIDEO,
        CodecId::H264,
        0,
        0,
        FrameFlags::NONE,
        Bytes::from_static(&[0, 0, 0, 9, 0x41]),
    );
    assert!(matches!(
        mux.write_frame(&broken, &mut out),
        Err(TsError::InvalidFrame { .. })
    ));
    assert!(out.is_empty(), "nothing written on errors");
    assert_eq!(mux.pid(TrackId::VIDEO), Some(0x100));
}

#[test]
fn video_before_parameter_sets_is_dropped() {
    // a muxer that never got a configuration writes no parameter sets
    let h264 = [TrackInfo::new(
        TrackId::VIDEO,
        Codec::H264 {
            config: Bytes::new(),
        },
    )];
    let mut mux = TsMuxer::new(&h264, MuxConfig::default()).unwrap();
    let mut out = BytesMut::new();
    let key = frame(
        TrackId::VIDEO,
        CodecId::H264,
        0,
        0,
        FrameFlags::KEYFRAME,
        length_prefixed(&[nal(0x65, &[1, 2, 3])]),
    );
    mux.write_frame(&key, &mut out).unwrap();
    let d = demux(&out, &[]);
    assert_eq!(d.stats.frames_dropped, 1);
    assert_eq!(d.frames().count(), 0);
    assert_eq!(d.tracks.len(), 1);
}

#[test]
fn pcr_follows_a_timeline_that_goes_back() {
    let (tracks, mut frames) = sample_frames(90, 100);
    // the publisher restarts: the same 3 s again, from 0 (a jump back of less
    // than a second is taken for jitter: the PCR holds until the DTS catch up)
    let again: Vec<Frame> = frames.iter().filter(|f| !f.is_config()).cloned().collect();
    frames.extend(again);
    let ts = mux_all(&tracks, &frames);
    let discontinuities = packets(&ts)
        .iter()
        .filter(|p| p.2.first().is_some_and(|f| f & 0x90 == 0x90))
        .count();
    assert_eq!(discontinuities, 1, "one PCR marks the new time base");
    let out = demux(&ts, &[]);
    let bases: Vec<i64> = out
        .events
        .iter()
        .filter_map(|e| match e {
            TsEvent::Pcr(p) => Some(p.base.ticks()),
            _ => None,
        })
        .collect();
    let back = bases.windows(2).filter(|w| w[1] < w[0]).count();
    assert_eq!(back, 1, "{bases:?}");
    assert!(out.errors().is_empty());
}

/// `ts` with PES_packet_length 0 in every video PES, as ffmpeg writes them.
fn unbounded_video(ts: &[u8]) -> Vec<u8> {
    let mut out = ts.to_vec();
    for p in out.chunks_mut(PACKET_SIZE) {
        let pid = u16::from_be_bytes([p[1] & 0x1F, p[2]]);
        if pid != 0x100 || p[1] & 0x40 == 0 {
            continue;
        }
        let start = if p[3] & 0x20 != 0 {
            5 + usize::from(p[4])
        } else {
            4
        };
        assert_eq!(&p[start..start + 3], &[0, 0, 1]);
        p[start + 4] = 0;
        p[start + 5] = 0;
    }
    out
}

fn video_count(out: &Demuxed) -> usize {
    out.frames()
        .filter(|f| f.track == TrackId::VIDEO && !f.is_config())
        .count()
}

#[test]
fn flush_completes_an_unbounded_pes_that_ends_in_stuffing() {
    let (tracks, frames) = sample_frames(10, 3000);
    let ts = unbounded_video(&mux_all(&tracks, &frames));
    let out = demux(&ts, &[]);
    assert!(out.errors().is_empty(), "{:?}", out.errors());
    assert_eq!(video_count(&out), 10);
    assert_eq!(out.stats.pes_dropped, 0);
    let last = out
        .frames()
        .filter(|f| f.track == TrackId::VIDEO)
        .last()
        .unwrap();
    let sent = frames.iter().filter(|f| f.track == TrackId::VIDEO).last();
    assert_eq!(Some(last), sent);
}

#[test]
fn flush_drops_an_unbounded_pes_whose_tail_never_came() {
    let (tracks, frames) = sample_frames(10, 3000);
    let ts = unbounded_video(&mux_all(&tracks, &frames));
    // the sender closed before its last video packet (the stuffed one) went out
    let pkts: Vec<&[u8]> = ts.chunks(PACKET_SIZE).collect();
    let last_video = pkts
        .iter()
        .rposition(|p| u16::from_be_bytes([p[1] & 0x1F, p[2]]) == 0x100)
        .unwrap();
    assert_ne!(
        pkts[last_video][3] & 0x20,
        0,
        "the muxer pads the last packet"
    );
    let cut: Vec<u8> = pkts[..last_video].concat();
    let out = demux(&cut, &[]);
    assert!(out.errors().is_empty(), "{:?}", out.errors());
    assert_eq!(video_count(&out), 9);
    assert_eq!(out.stats.pes_dropped, 1);
    // an adaptation field carrying only a PCR (or private data) is not stuffing
    assert_eq!(demux::announced_fields(0x10, &[0; 6]), 6);
    assert_eq!(
        demux::announced_fields(0x12, &[0, 0, 0, 0, 0, 0, 2, 9, 9, 0xFF]),
        9
    );
    assert_eq!(demux::announced_fields(0x02, &[200]), 1);
}
