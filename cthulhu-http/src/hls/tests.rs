//! Unit tests: playlist conformance (parsed back line by line), the window's
//! blocking-reload rules and bounds, request parsing, and proptests over
//! segmenting.

use bytes::Bytes;
use cthulhu_core::{Codec, CodecId, Frame, TrackId, TrackInfo};
use proptest::prelude::*;

use super::playlist::{Names, codec_string, media_playlist, multivariant};
use super::segmenter::{SegEvent, Segmenter, SegmenterConfig};
use super::test_util::*;
use super::window::{Lookup, Reload, Window, WindowConfig};
use super::{HlsError, HlsResource, PlaylistRequest};

const PART: i64 = 18_000; // 200 ms
const SEGMENT: i64 = 90_000; // 1 s

fn seg_cfg() -> SegmenterConfig {
    SegmenterConfig {
        part_target: PART,
        segment_target: SEGMENT,
        max_segment: 900_000,
        max_part_bytes: 1 << 20,
    }
}

fn win_cfg() -> WindowConfig {
    WindowConfig {
        segments_kept: 7,
        max_bytes: 64 << 20,
        part_target: PART,
        max_segment: 900_000,
        expected_segment: 0,
    }
}

/// A segmenter and a window fed the same way the muxer task feeds them.
struct Rig {
    seg: Segmenter,
    win: Window,
    out: Vec<SegEvent>,
}

impl Rig {
    fn new(tracks: &[TrackInfo]) -> Self {
        Self::with(tracks, seg_cfg(), win_cfg())
    }

    fn with(tracks: &[TrackInfo], sc: SegmenterConfig, wc: WindowConfig) -> Self {
        let mut rig = Rig {
            seg: Segmenter::new(sc),
            win: Window::new(wc),
            out: Vec::new(),
        };
        rig.seg.start_session(tracks, &mut rig.out);
        for t in tracks {
            let f = config_frame(t.id, t.codec.id(), t.codec.config().clone());
            rig.seg.push(&f, &mut rig.out);
        }
        rig.apply();
        rig
    }

    fn apply(&mut self) {
        for ev in self.out.drain(..) {
            self.win.apply(ev);
        }
        if let Some(td) = self.win.target_duration {
            self.seg.set_target_duration(td);
        }
    }

    fn push(&mut self, frames: &[Frame]) {
        for f in frames {
            self.seg.push(f, &mut self.out);
            self.apply();
        }
    }

    fn playlist(&self, suffix: &str) -> String {
        media_playlist(
            &self.win,
            &Names {
                session: "abcd1234",
                suffix,
            },
        )
    }
}

/// Whether the first video sample of a part (track 1) is a sync sample; None for
/// parts without video.
fn first_video_sync(part: &[u8]) -> Option<bool> {
    let mut at = 0usize;
    while at + 8 <= part.len() {
        let size = u32::from_be_bytes(part[at..at + 4].try_into().unwrap()) as usize;
        if &part[at + 4..at + 8] == b"moof" {
            let mut c = at + 8;
            while c + 8 <= at + size {
                let csize = u32::from_be_bytes(part[c..c + 4].try_into().unwrap()) as usize;
                if &part[c + 4..c + 8] == b"traf" {
                    let tfhd = c + 8;
                    assert_eq!(&part[tfhd + 4..tfhd + 8], b"tfhd");
                    let track = u32::from_be_bytes(part[tfhd + 12..tfhd + 16].try_into().unwrap());
                    if track == 1 {
                        let tfhd_size =
                            u32::from_be_bytes(part[tfhd..tfhd + 4].try_into().unwrap()) as usize;
                        let tfdt = tfhd + tfhd_size;
                        let tfdt_size =
                            u32::from_be_bytes(part[tfdt..tfdt + 4].try_into().unwrap()) as usize;
                        let trun = tfdt + tfdt_size;
                        assert_eq!(&part[trun + 4..trun + 8], b"trun");
                        let flags_at = trun + 8 + 4 + 4 + 4 + 8;
                        let flags =
                            u32::from_be_bytes(part[flags_at..flags_at + 4].try_into().unwrap());
                        return Some(flags & 0x0001_0000 == 0);
                    }
                }
                c += csize;
            }
        }
        at += size;
    }
    None
}

/// A listed part: URI, duration, INDEPENDENT.
type ListedPart = (String, f64, bool);

/// What a conformant media playlist says.
#[derive(Debug, Default)]
struct Summary {
    target_duration: u64,
    part_target: f64,
    media_sequence: u64,
    discontinuity_sequence: u64,
    /// (uri, duration, parts: (uri, duration, independent))
    segments: Vec<(String, f64, Vec<ListedPart>)>,
    open_parts: Vec<ListedPart>,
    hint: Option<String>,
    discontinuities: usize,
    maps: Vec<String>,
    ended: bool,
}

/// Checks a media playlist against RFC 8216bis (the rules a server must keep),
/// line by line, and returns what it says.
fn check_media(text: &str, suffix: &str) -> Summary {
    let lines = lines(text);
    assert_eq!(lines[0], Line::Tag("EXTM3U".into(), None), "first line");
    let mut s = Summary::default();
    let mut seen_media = false;
    let mut counts = std::collections::HashMap::new();
    let mut pending_parts: Vec<ListedPart> = Vec::new();
    let mut pending_extinf: Option<f64> = None;
    let mut map_seen = false;
    let mut hold_back = 0.0;
    let mut last_was_disc = false;
    for (i, line) in lines.iter().enumerate().skip(1) {
        match line {
            Line::Tag(name, value) => {
                assert!(
                    pending_extinf.is_none(),
                    "EXTINF must be followed by its URI"
                );
                let v = value.as_deref().unwrap_or("");
                *counts.entry(name.clone()).or_insert(0) += 1;
                match name.as_str() {
                    "EXT-X-VERSION"
                    | "EXT-X-TARGETDURATION"
                    | "EXT-X-SERVER-CONTROL"
                    | "EXT-X-PART-INF"
                    | "EXT-X-MEDIA-SEQUENCE"
                    | "EXT-X-DISCONTINUITY-SEQUENCE" => {
                        assert!(!seen_media, "{name} must precede the media segments");
                        match name.as_str() {
                            "EXT-X-VERSION" => assert_eq!(v, "6"),
                            "EXT-X-TARGETDURATION" => s.target_duration = v.parse().unwrap(),
                            "EXT-X-SERVER-CONTROL" => {
                                let a = attrs(v);
                                assert_eq!(attr(&a, "CAN-BLOCK-RELOAD"), Some("YES"));
                                hold_back = secs(attr(&a, "PART-HOLD-BACK").unwrap());
                            }
                            "EXT-X-PART-INF" => {
                                s.part_target = secs(attr(&attrs(v), "PART-TARGET").unwrap())
                            }
                            "EXT-X-MEDIA-SEQUENCE" => s.media_sequence = v.parse().unwrap(),
                            _ => s.discontinuity_sequence = v.parse().unwrap(),
                        }
                    }
                    "EXT-X-MAP" => {
                        seen_media = true;
                        map_seen = true;
                        let uri = attr(&attrs(v), "URI").unwrap().to_string();
                        assert!(uri.ends_with(suffix), "{uri} carries {suffix}");
                        s.maps.push(uri);
                        last_was_disc = false;
                    }
                    "EXT-X-DISCONTINUITY" => {
                        seen_media = true;
                        assert!(pending_parts.is_empty(), "DISCONTINUITY before the parts");
                        s.discontinuities += 1;
                        last_was_disc = true;
                    }
                    "EXT-X-PART" => {
                        assert!(!last_was_disc, "a new init's MAP follows its DISCONTINUITY");
                        seen_media = true;
                        assert!(map_seen, "EXT-X-MAP before the first part");
                        let a = attrs(v);
                        let d = secs(attr(&a, "DURATION").unwrap());
                        let uri = attr(&a, "URI").unwrap().to_string();
                        assert!(uri.ends_with(suffix), "{uri} carries {suffix}");
                        let independent = match attr(&a, "INDEPENDENT") {
                            None => false,
                            Some("YES") => true,
                            Some(other) => panic!("INDEPENDENT={other}"),
                        };
                        assert!(
                            d > 0.0 && d <= s.part_target + 1e-9,
                            "part {uri} of {d} s within PART-TARGET {}",
                            s.part_target
                        );
                        pending_parts.push((uri, d, independent));
                    }
                    "EXTINF" => {
                        seen_media = true;
                        assert!(map_seen, "EXT-X-MAP before the first segment");
                        let (d, _) = v.split_once(',').expect("EXTINF:<duration>,");
                        pending_extinf = Some(secs(d));
                    }
                    "EXT-X-PRELOAD-HINT" => {
                        assert!(s.hint.is_none(), "one preload hint");
                        assert_eq!(i, lines.len() - 1, "the hint comes last");
                        let a = attrs(v);
                        assert_eq!(attr(&a, "TYPE"), Some("PART"));
                        let uri = attr(&a, "URI").unwrap().to_string();
                        assert!(uri.ends_with(suffix), "{uri} carries {suffix}");
                        s.hint = Some(uri);
                    }
                    "EXT-X-ENDLIST" => s.ended = true,
                    other => panic!("unexpected tag {other}"),
                }
            }
            Line::Uri(uri) => {
                let d = pending_extinf.take().expect("a URI follows an EXTINF");
                assert!(uri.ends_with(suffix), "{uri} carries {suffix}");
                assert!(
                    (d.round() as u64) <= s.target_duration,
                    "segment {uri} of {d} s within TARGETDURATION {}",
                    s.target_duration
                );
                let parts = std::mem::take(&mut pending_parts);
                if !parts.is_empty() {
                    let sum: f64 = parts.iter().map(|p| p.1).sum();
                    assert!(
                        (sum - d).abs() < 0.0001 * (parts.len() as f64 + 1.0),
                        "parts of {uri} add up to its duration: {sum} vs {d}"
                    );
                    check_part_floor(&parts, s.part_target);
                }
                s.segments.push((uri.clone(), d, parts));
                last_was_disc = false;
            }
        }
    }
    assert!(pending_extinf.is_none());
    check_part_floor(&pending_parts, s.part_target);
    s.open_parts = pending_parts;
    for tag in [
        "EXT-X-VERSION",
        "EXT-X-TARGETDURATION",
        "EXT-X-SERVER-CONTROL",
        "EXT-X-PART-INF",
        "EXT-X-MEDIA-SEQUENCE",
    ] {
        assert_eq!(counts.get(tag), Some(&1), "{tag} exactly once");
    }
    assert!(s.target_duration >= 1);
    assert!(
        hold_back >= 3.0 * s.part_target - 1e-9,
        "PART-HOLD-BACK {hold_back} at least 3 x PART-TARGET {}",
        s.part_target
    );
    if s.ended {
        assert!(s.hint.is_none(), "no preload hint after ENDLIST");
    }
    s
}

/// The 85% floor: every part but the last of its segment and the independent ones
/// is at least 85% of PART-TARGET (RFC 8216bis 4.4.4.9).
/// The last part of the open segment is exempt too: it may turn out to be its last.
fn check_part_floor(parts: &[ListedPart], target: f64) {
    let n = parts.len();
    for (i, (uri, d, independent)) in parts.iter().enumerate() {
        if i + 1 < n && !independent {
            assert!(*d >= 0.85 * target - 1e-9, "part {uri} of {d} s below 85%");
        }
    }
}

fn part_of(uri: &str) -> (u64, u64) {
    let name = uri.split('?').next().unwrap();
    match HlsResource::parse(name) {
        Some(HlsResource::Part { msn, index, .. }) => (msn, index),
        other => panic!("{uri}: {other:?}"),
    }
}

#[test]
fn media_playlist_conforms_for_audio_and_video() {
    let mut rig = Rig::new(&tracks());
    rig.push(&av_frames(0, 12.3, 30));
    let text = rig.playlist("?key=s3cr%20t");
    let s = check_media(&text, "?key=s3cr%20t");
    assert_eq!(s.target_duration, 1);
    assert!((s.part_target - 0.2).abs() < 1e-9);
    assert_eq!(s.segments.len(), 7, "7 complete segments listed");
    assert_eq!(s.media_sequence, 12 - 7);
    assert_eq!(s.discontinuities, 0);
    assert_eq!(s.maps.len(), 1);
    assert!(!s.ended);
    // parts only for the segments within three target durations of the end
    let with_parts = s.segments.iter().filter(|x| !x.2.is_empty()).count();
    assert!((2..=3).contains(&with_parts), "{with_parts}");
    assert!(s.segments[0].2.is_empty());
    for (uri, d, parts) in &s.segments {
        assert!((d - 1.0).abs() < 1e-3, "{uri}: {d}");
        if !parts.is_empty() {
            assert_eq!(parts.len(), 5, "{uri}");
            for (i, p) in parts.iter().enumerate() {
                assert!((p.1 - 0.2).abs() < 1e-3);
                assert_eq!(p.2, i == 0, "only the keyframe part is independent");
            }
        }
    }
    // the preload hint names the part after the last one listed
    let hint = part_of(s.hint.as_deref().unwrap());
    let last = s
        .open_parts
        .last()
        .map(|p| part_of(&p.0))
        .expect("the open segment has parts");
    assert_eq!(hint, (last.0, last.1 + 1));
    assert_eq!(last.0, 12);
}

#[test]
fn independent_is_exactly_on_parts_starting_with_a_keyframe() {
    // 1.5 s GOPs: segments of 1.5 s, keyframes also inside parts
    for gop in [45, 20, 7, 30] {
        let mut rig = Rig::new(&tracks());
        rig.push(&av_frames(0, 14.0, gop));
        let s = check_media(&rig.playlist(""), "");
        assert!(!s.segments.is_empty());
        let all = rig.win.segments.iter().chain(rig.win.open.iter());
        let mut n = 0;
        for seg in all {
            for p in &seg.parts {
                let sync = first_video_sync(&p.data).expect("video in every part");
                assert_eq!(p.independent, sync, "gop {gop} msn {}", seg.msn);
                n += 1;
            }
            assert!(seg.parts[0].independent, "segments start with a keyframe");
        }
        assert!(n > 20);
    }
}

#[test]
fn target_duration_follows_the_gop_and_never_changes() {
    let mut rig = Rig::new(&tracks());
    rig.push(&av_frames(0, 3.0, 60));
    assert_eq!(rig.win.target_duration, Some(2));
    // a GOP that grows: segments are cut before their rounded duration exceeds 2
    let mut frames = av_frames(270_000, 20.0, 150);
    frames.retain(|f| f.dts.ticks() >= 270_000);
    rig.push(&frames);
    let s = check_media(&rig.playlist(""), "");
    assert_eq!(s.target_duration, 2);
    assert!(s.segments.iter().all(|x| x.1 < 2.5));
}

#[test]
fn a_codec_change_is_a_discontinuity_with_a_new_init() {
    let mut rig = Rig::new(&tracks());
    rig.push(&av_frames(0, 4.1, 30));
    // new parameters: another level
    let mut cfg = avc_config().to_vec();
    cfg[3] = 0x1F;
    let cfg = Bytes::from(cfg);
    rig.push(&[config_frame(TrackId::VIDEO, CodecId::H264, cfg.clone())]);
    let mut later = av_frames(4 * 90_000, 4.1, 30);
    later.retain(|f| f.dts.ticks() >= 369_000);
    // the first frame after the change must be a keyframe: drop until one
    let first_key = later
        .iter()
        .position(|f| f.is_keyframe())
        .expect("a keyframe");
    rig.push(&later[first_key..]);
    let s = check_media(&rig.playlist("?k=1"), "?k=1");
    assert_eq!(s.discontinuities, 1);
    assert_eq!(s.maps.len(), 2, "a new EXT-X-MAP after the discontinuity");
    assert_ne!(s.maps[0], s.maps[1]);
    assert_eq!(rig.win.inits.len(), 2);
    // the multivariant lists the codecs of every init in the playlist
    let mv = multivariant(&rig.win, "?k=1");
    assert!(
        mv.contains("avc1.42c00a") && mv.contains("avc1.42c01f"),
        "{mv}"
    );
    // once the old segments are gone, the sequence number carries the count
    let mut more = av_frames(9 * 90_000, 9.0, 30);
    more.retain(|f| f.dts.ticks() >= 9 * 90_000 + 40_000);
    rig.push(&more);
    let s = check_media(&rig.playlist(""), "");
    assert_eq!(s.discontinuities, 0);
    assert_eq!(s.discontinuity_sequence, 1);
    assert_eq!(
        rig.win.inits.len(),
        1,
        "the old init is dropped with its segments"
    );
}

#[test]
fn a_new_publisher_continues_the_playlist_after_a_discontinuity() {
    let mut rig = Rig::new(&tracks());
    rig.push(&av_frames(0, 3.1, 30));
    rig.seg.finish(&mut rig.out);
    rig.win.set_live(false);
    rig.apply();
    let s = check_media(&rig.playlist(""), "");
    assert!(s.hint.is_none(), "no hint while the publisher is away");
    assert!(s.open_parts.is_empty());
    let before = rig.win.segments.len();
    // the new publisher starts its timeline at 0 again
    rig.seg.start_session(&tracks(), &mut rig.out);
    rig.win.set_live(true);
    rig.apply();
    rig.push(&av_frames(0, 2.1, 30));
    let s = check_media(&rig.playlist(""), "");
    assert_eq!(s.discontinuities, 1);
    assert!(rig.win.segments.len() > before);
    rig.win.end();
    let s = check_media(&rig.playlist(""), "");
    assert!(s.ended);
}

#[test]
fn audio_only_segments_stay_within_the_target() {
    let aac = vec![TrackInfo::new(TrackId::AUDIO, Codec::Aac { config: asc() })];
    let mut rig = Rig::new(&aac);
    let frames: Vec<Frame> = (0..600).map(|i| audio(i * 1920)).collect();
    rig.push(&frames);
    let s = check_media(&rig.playlist(""), "");
    assert_eq!(s.target_duration, 1);
    for (_, d, parts) in &s.segments {
        assert!(*d <= 1.0 && *d > 0.9, "{d}");
        assert!(parts.iter().all(|p| p.2), "audio parts are all independent");
    }
    let mv = multivariant(&rig.win, "");
    assert!(mv.contains("CODECS=\"mp4a.40.2\""), "{mv}");
    assert!(!mv.contains("RESOLUTION"));
}

#[test]
fn multivariant_names_the_media_playlist_with_its_figures() {
    let mut rig = Rig::new(&tracks());
    rig.push(&av_frames(0, 5.0, 30));
    let text = multivariant(&rig.win, "?key=abc");
    let lines = lines(&text);
    assert_eq!(lines[0], Line::Tag("EXTM3U".into(), None));
    let Line::Tag(name, Some(v)) = &lines[1] else {
        panic!("{lines:?}")
    };
    assert_eq!(name, "EXT-X-STREAM-INF");
    let a = attrs(v);
    let bw: u64 = attr(&a, "BANDWIDTH").unwrap().parse().unwrap();
    let avg: u64 = attr(&a, "AVERAGE-BANDWIDTH").unwrap().parse().unwrap();
    assert!(bw >= avg && avg > 50_000, "{bw} {avg}");
    assert_eq!(attr(&a, "CODECS"), Some("avc1.42c00a,mp4a.40.2"));
    assert_eq!(attr(&a, "RESOLUTION"), Some("16x16"));
    assert_eq!(attr(&a, "FRAME-RATE"), Some("30.000"));
    assert_eq!(lines[2], Line::Uri("media.m3u8?key=abc".into()));
    assert_eq!(lines.len(), 3);
}

#[test]
fn codec_strings() {
    let hevc = TrackInfo::new(
        TrackId::VIDEO,
        Codec::H265 {
            config: Bytes::from(hex(
                "01016000000090000000000078f000fcfdf8f800000f03200001001840010c01ffff016000000300900000030000030078959809210001002a420101016000000300900000030000030078a003c08010e596566924caf0168080000003008000000c8422000100074401c172b46240",
            )),
        },
    );
    assert_eq!(codec_string(&hevc).as_deref(), Some("hvc1.1.6.L120.90"));
    assert_eq!(codec_string(&tracks()[0]).as_deref(), Some("avc1.42c00a"));
    assert_eq!(codec_string(&tracks()[1]).as_deref(), Some("mp4a.40.2"));
    let opus = TrackInfo::new(
        TrackId::AUDIO,
        Codec::Opus {
            config: Bytes::new(),
        },
    );
    assert_eq!(codec_string(&opus).as_deref(), Some("opus"));
    let he = TrackInfo::new(
        TrackId::AUDIO,
        Codec::Aac {
            config: Bytes::from_static(&[0x2B, 0x92, 0x08, 0x00]),
        },
    );
    assert_eq!(codec_string(&he).as_deref(), Some("mp4a.40.5"));
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn blocking_reload_rules() {
    let mut rig = Rig::new(&tracks());
    // nothing complete yet: wait, but refuse what is far ahead
    rig.push(&av_frames(0, 0.5, 30));
    assert_eq!(rig.win.reload(0, None), Reload::Wait);
    assert_eq!(rig.win.reload(5, None), Reload::TooFar);
    rig.push(&av_frames(0, 3.5, 30)[45..]);
    // segments 0..=2 complete, segment 3 open with two parts
    assert_eq!(rig.win.segments.back().unwrap().msn, 2);
    assert_eq!(rig.win.current(), (3, 2));
    assert_eq!(rig.win.reload(2, None), Reload::Ready);
    assert_eq!(rig.win.reload(3, None), Reload::Wait);
    assert_eq!(rig.win.reload(4, None), Reload::Wait);
    assert_eq!(
        rig.win.reload(5, None),
        Reload::TooFar,
        "last + 2 is the limit"
    );
    assert_eq!(rig.win.reload(3, Some(1)), Reload::Ready);
    assert_eq!(rig.win.reload(3, Some(2)), Reload::Wait);
    // a part index past a complete segment's last means part 0 of the next
    assert_eq!(rig.win.reload(2, Some(5)), Reload::Ready);
    assert_eq!(rig.win.reload(2, Some(4)), Reload::Ready);
    // the Advance Part Limit: 3 / 0.2 s = 15 parts
    assert_eq!(rig.win.advance_part_limit(), 15);
    assert_eq!(rig.win.reload(3, Some(17)), Reload::Wait);
    assert_eq!(rig.win.reload(3, Some(18)), Reload::TooFar);
    // old segments (gone from the playlist) are answered at once
    assert_eq!(rig.win.reload(0, Some(0)), Reload::Ready);
    // lookups
    assert!(matches!(rig.win.part(3, 1), Lookup::Found(_)));
    assert_eq!(rig.win.part(3, 2), Lookup::Pending, "the hinted part");
    assert_eq!(rig.win.part(4, 0), Lookup::Pending);
    assert_eq!(rig.win.part(3, 40), Lookup::Gone);
    assert_eq!(rig.win.part(2, 5), Lookup::Gone, "segment 2 has 5 parts");
    assert_eq!(rig.win.part(9, 0), Lookup::Gone);
    assert_eq!(rig.win.segment_data(3), Lookup::Pending);
    assert!(matches!(rig.win.segment_data(1), Lookup::Found(_)));
    // after the end everything is answered, nothing is pending
    rig.win.end();
    assert_eq!(rig.win.reload(9, Some(3)), Reload::Ready);
    assert_eq!(rig.win.part(4, 0), Lookup::Gone);
}

#[test]
fn segments_and_parts_share_their_bytes() {
    let mut rig = Rig::new(&tracks());
    rig.push(&av_frames(0, 3.1, 30));
    let seg = &rig.win.segments[1];
    let mut joined = Vec::new();
    for p in &seg.parts {
        let parsed = boxes(&p.data).unwrap();
        assert!(parsed.iter().all(|(n, _)| n == "moof" || n == "mdat"));
        assert_eq!(parsed[0].0, "moof");
        joined.extend_from_slice(&p.data);
        // a slice of the segment's buffer, not a copy
        let range = p.data.as_ptr() as usize - seg.data.as_ptr() as usize;
        assert!(range < seg.data.len());
    }
    assert_eq!(joined, seg.data.to_vec());
    let init = &rig.win.inits[0].data;
    let parsed = boxes(init).unwrap();
    assert_eq!(
        parsed.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
        ["ftyp", "moov"]
    );
}

#[test]
fn the_window_is_bounded_by_count_and_bytes() {
    let mut rig = Rig::new(&tracks());
    rig.push(&av_frames(0, 30.0, 30));
    assert_eq!(rig.win.segments.len(), 7 + super::window::EXTRA_RETAINED);
    assert_eq!(rig.win.listed().count(), 7);
    // a byte bound of ~3 segments of this stream
    let small = WindowConfig {
        max_bytes: 3 * rig.win.segments[0].data.len() + 2000,
        ..win_cfg()
    };
    let mut rig = Rig::with(&tracks(), seg_cfg(), small);
    rig.push(&av_frames(0, 30.0, 30));
    assert!(rig.win.bytes() <= small.max_bytes);
    assert!(rig.win.segments.len() <= 3);
    // msn go on
    assert_eq!(rig.win.current().0, 29);
}

#[test]
fn playlist_requests_parse_and_carry_the_rest() {
    let r = PlaylistRequest::parse("key=abc&_HLS_msn=12&_HLS_part=3&_HLS_skip=YES").unwrap();
    assert_eq!((r.msn, r.part, r.skip), (Some(12), Some(3), true));
    assert_eq!(r.suffix(), "?key=abc");
    assert_eq!(PlaylistRequest::parse("").unwrap().suffix(), "");
    assert_eq!(
        PlaylistRequest::parse("_HLS_part=1"),
        Err(HlsError::BadRequest("_HLS_part without _HLS_msn"))
    );
    assert!(matches!(
        PlaylistRequest::parse("_HLS_msn=x"),
        Err(HlsError::BadRequest(_))
    ));
    assert!(matches!(
        PlaylistRequest::parse("_HLS_msn=-1"),
        Err(HlsError::BadRequest(_))
    ));
    // nothing can break out of a quoted attribute or a line
    let r = PlaylistRequest::parse("key=a\"b\n#EXT&x=<y>").unwrap();
    assert_eq!(r.suffix(), "?key=a%22b%0A%23EXT&x=%3Cy%3E");
    assert!(PlaylistRequest::parse(&"k=v&".repeat(400)).is_err());
}

#[test]
fn resource_names() {
    assert_eq!(
        HlsResource::parse("index.m3u8"),
        Some(HlsResource::Multivariant)
    );
    assert_eq!(HlsResource::parse("media.m3u8"), Some(HlsResource::Media));
    assert_eq!(
        HlsResource::parse("part-abcd1234-12-3.m4s"),
        Some(HlsResource::Part {
            session: "abcd1234".into(),
            msn: 12,
            index: 3
        })
    );
    assert_eq!(
        HlsResource::parse("seg-abcd1234-7.m4s"),
        Some(HlsResource::Segment {
            session: "abcd1234".into(),
            msn: 7
        })
    );
    assert_eq!(
        HlsResource::parse("init-abcd1234-0.mp4"),
        Some(HlsResource::Init {
            session: "abcd1234".into(),
            id: 0
        })
    );
    for bad in [
        "seg-abcd-x.m4s",
        "seg--1.m4s",
        "part-abcd-1.m4s",
        "seg-zz-1.m4s",
        "init-ab-1.mp5",
        "seg-ab-+1.m4s",
        "../index.m3u8",
        "seg-ab-99999999999999999999999.m4s",
    ] {
        assert_eq!(HlsResource::parse(bad), None, "{bad}");
    }
}

/// One random stream: video frame intervals, keyframe flags and sizes, with AAC
/// interleaved.
fn stream_strategy() -> impl Strategy<Value = Vec<Frame>> {
    (
        prop::collection::vec(
            (500i64..6000, prop::bool::weighted(0.08), 10usize..4000),
            1..600,
        ),
        prop::bool::ANY,
    )
        .prop_map(|(steps, with_audio)| {
            let mut frames = Vec::new();
            let mut dts = 0i64;
            let mut next_audio = 0i64;
            let mut since_key = 0i64;
            for (i, (step, key, size)) in steps.into_iter().enumerate() {
                // a keyframe at least every 4 s
                let key = i == 0 || key || since_key + step > 360_000;
                since_key = if key { 0 } else { since_key + step };
                while with_audio && next_audio < dts {
                    frames.push(audio(next_audio));
                    next_audio += 1920;
                }
                frames.push(video(dts, key, size));
                dts += step;
            }
            frames
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn segmenting_respects_keyframes_targets_and_bounds(frames in stream_strategy()) {
        let wc = WindowConfig { max_bytes: 4 << 20, ..win_cfg() };
        let mut seg = Segmenter::new(seg_cfg());
        let mut win = Window::new(wc);
        let mut out = Vec::new();
        seg.start_session(&tracks(), &mut out);
        for t in tracks() {
            seg.push(&config_frame(t.id, t.codec.id(), t.codec.config().clone()), &mut out);
        }
        let mut all: Vec<SegEvent> = Vec::new();
        let mut last_msn: Option<u64> = None;
        let max_step = 6000i64;
        for f in &frames {
            seg.push(f, &mut out);
            for ev in out.drain(..) {
                all.push(ev.clone());
                win.apply(ev);
            }
            // window bounds hold after every frame
            let open = win.open.as_ref().map_or(0, |o| o.parts.iter().map(|p| p.data.len()).sum());
            prop_assert!(win.bytes() <= wc.max_bytes + open + 4096);
            prop_assert!(win.segments.len() <= wc.segments_kept + super::window::EXTRA_RETAINED);
            if let Some(s) = win.segments.back() {
                if let Some(l) = last_msn { prop_assert!(s.msn >= l); }
                last_msn = Some(s.msn);
            }
        }
        seg.finish(&mut out);
        all.append(&mut out);
        // msn strictly increasing, one by one
        for pair in win.segments.iter().collect::<Vec<_>>().windows(2) {
            prop_assert_eq!(pair[1].msn, pair[0].msn + 1);
        }
        // every segment starts with an independent part whose first video sample
        // is a keyframe; parts are whole boxes; durations within bounds
        let mut segment: Vec<(i64, bool, Bytes)> = Vec::new();
        let mut segments: Vec<Vec<(i64, bool, Bytes)>> = Vec::new();
        for ev in all {
            match ev {
                SegEvent::Init { .. } => {}
                SegEvent::Part { data, duration, independent, .. } => {
                    segment.push((duration, independent, data));
                }
                SegEvent::EndSegment => segments.push(std::mem::take(&mut segment)),
            }
        }
        prop_assert!(segment.is_empty(), "finish ends the open segment");
        let count = segments.len();
        for (si, s) in segments.iter().enumerate() {
            prop_assert!(!s.is_empty());
            prop_assert!(s[0].1, "segment {} starts independent", si);
            let total: i64 = s.iter().map(|p| p.0).sum();
            prop_assert!(total <= 900_000 + max_step);
            if si + 1 < count {
                // cut at the first keyframe at or after the target
                prop_assert!(total + max_step / 4 >= SEGMENT, "segment {} of {}", si, total);
            }
            for (pi, (d, independent, data)) in s.iter().enumerate() {
                let b = boxes(data).map_err(TestCaseError::fail)?;
                prop_assert_eq!(b[0].0.as_str(), "moof");
                prop_assert!(b.iter().all(|(n, _)| n == "moof" || n == "mdat"));
                prop_assert_eq!(Some(*independent), first_video_sync(data));
                prop_assert!(*d > 0);
                prop_assert!(*d < PART + max_step, "part of {} ticks", d);
                let last = pi + 1 == s.len();
                if !last {
                    prop_assert!(*d + max_step / 4 >= PART, "short part {} of {}", pi, d);
                }
            }
        }
    }
}
