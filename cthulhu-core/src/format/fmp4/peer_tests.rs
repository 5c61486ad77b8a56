//! The muxer against a real peer: ffmpeg encodes (H.264 + AAC to FLV; HEVC + AAC
//! and H.264 + Opus to MPEG-TS), `format::flv` / `format::ts` read that into core
//! frames, the muxer writes a fragmented MP4, and ffprobe and ffmpeg must read and
//! decode it without a single error: the right codecs, size, frame counts and
//! duration.
//!
//! Then the SIGKILL model: the file is cut at the end of a middle fragment, and at
//! bytes inside the next fragment (in its `moof`, in its `mdat`, one byte short of
//! the end of the file). ffmpeg must decode every frame of the complete fragments
//! before the cut, bit for bit the frames it decodes from the whole file
//! (`framecrc` lines compared).
//!
//! Without ffmpeg (or one of its encoders) a test prints why and passes, unless
//! `CTHULHU_REQUIRE_PEERS=1` is set: then it fails.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bytes::{Bytes, BytesMut};

use super::tests::{Parsed, parse_file};
use super::{Fmp4Config, Fmp4Muxer};
use crate::format::flv;
use crate::format::ts::{TsDemuxer, TsEvent};
use crate::model::{Codec, Frame, TrackId, TrackInfo};

const REQUIRE_ENV: &str = "CTHULHU_REQUIRE_PEERS";

/// Whether ffmpeg and ffprobe run and ffmpeg has every encoder named. When not,
/// prints why and returns false, or fails if `CTHULHU_REQUIRE_PEERS=1`.
fn peers(encoders: &[&str]) -> bool {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing = if !runs("ffmpeg") || !runs("ffprobe") {
        Some("ffmpeg/ffprobe not found (Debian: apt-get install ffmpeg)".to_owned())
    } else {
        let list = Command::new("ffmpeg")
            .args(["-hide_banner", "-encoders"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        encoders
            .iter()
            .find(|enc| {
                !list
                    .lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(**enc))
            })
            .map(|enc| format!("this ffmpeg has no {enc} encoder"))
    };
    let Some(why) = missing else {
        return true;
    };
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("{why}, and {REQUIRE_ENV}=1 requires every peer");
    }
    eprintln!("SKIPPED: {why}");
    false
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-y", "-v", "error"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Encodes 6 s of test pattern and a 440 Hz tone.
fn encode(out: &Path, codecs: &[&str], format: &str) {
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "6",
        "-g",
        "60",
        "-bf",
        "2",
    ];
    args.extend_from_slice(codecs);
    args.extend_from_slice(&["-f", format, out.to_str().unwrap()]);
    ffmpeg(&args);
}

fn flv_frames(data: Bytes) -> Vec<Frame> {
    let mut frames = Vec::new();
    for tag in flv::FlvReader::new(data).unwrap() {
        frames.extend(tag.unwrap().to_frame().unwrap());
    }
    frames
}

fn ts_frames(data: &[u8]) -> Vec<Frame> {
    let mut d = TsDemuxer::new();
    d.push(data);
    d.flush();
    let mut frames = Vec::new();
    while let Some(event) = d.poll_event() {
        match event {
            TsEvent::Frame(f) => frames.push(f),
            TsEvent::Error(e) => panic!("demux error: {e}"),
            _ => {}
        }
    }
    frames
}

/// The tracks, configured from each track's first configuration frame.
fn tracks_of(frames: &[Frame]) -> Vec<TrackInfo> {
    let mut tracks: Vec<TrackInfo> = Vec::new();
    for f in frames.iter().filter(|f| f.is_config()) {
        if !tracks.iter().any(|t| t.id == f.track) {
            tracks.push(TrackInfo::new(
                f.track,
                Codec::from_config(f.codec, f.data.clone()),
            ));
        }
    }
    tracks.sort_by_key(|t| t.id);
    tracks
}

/// Media frames (not configuration, not empty) of a track.
fn media(frames: &[Frame], track: TrackId) -> usize {
    frames
        .iter()
        .filter(|f| f.track == track && !f.is_config() && !f.data.is_empty())
        .count()
}

/// What ffprobe prints about the streams and the duration; fails on any error.
fn probe(file: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .arg("stream=index,codec_name,codec_type,width,height,sample_rate,nb_read_frames:format=duration")
        .args(["-of", "compact=p=0"])
        .arg(file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffprobe {}: {stderr}",
        file.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `key=value` field of a compact ffprobe line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split('|')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// Decodes every stream with `-xerror`; fails on any error output.
fn decodes_cleanly(file: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(file)
        .args(["-map", "0", "-f", "null", "-"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "decoding {} failed: {stderr}",
        file.display()
    );
}

/// The decoded frames' `framecrc` lines (timestamps, size, checksum) by stream
/// index, and ffmpeg's error output.
fn framecrc(file: &Path) -> (BTreeMap<usize, Vec<String>>, String) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(file)
        .args([
            "-map",
            "0",
            "-fps_mode",
            "passthrough",
            "-f",
            "framecrc",
            "-",
        ])
        .output()
        .unwrap();
    let mut by_stream: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((index, _)) = line.split_once(',') else {
            continue;
        };
        by_stream
            .entry(index.trim().parse().unwrap())
            .or_default()
            .push(line.to_owned());
    }
    (by_stream, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Samples per mp4 track id in the fragments before `fragment` (exclusive).
fn samples_before(parsed: &Parsed, fragment: usize) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for (_, c) in &parsed.fragments[..fragment] {
        for (id, n) in c {
            *counts.entry(*id).or_insert(0) += n;
        }
    }
    counts
}

/// Muxes the frames, checks the file with ffprobe and ffmpeg, then cuts it.
fn record_and_check(frames: &[Frame], video_codec: &str, audio_codec: &str) {
    let tracks = tracks_of(frames);
    assert_eq!(tracks.len(), 2, "{tracks:?}");
    let mut mux = Fmp4Muxer::new(&tracks, Fmp4Config::default()).unwrap();
    let mut out = BytesMut::new();
    mux.write_init(&mut out);
    for f in frames {
        mux.push_frame(f, &mut out).unwrap();
    }
    mux.flush(&mut out);
    assert_eq!(mux.stats().dropped_before_keyframe, 0);
    let file = out.freeze();
    let parsed = parse_file(&file).unwrap();
    let n = parsed.fragments.len();
    assert!(n >= 3, "{n} fragments");
    // fragments start at keyframes, one per 2 s group of pictures
    let video = &parsed.tracks[&1].samples;
    let mut first = 0;
    for (_, counts) in &parsed.fragments {
        assert!(video[first].sync);
        first += counts.get(&1).copied().unwrap_or(0);
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.mp4");
    std::fs::write(&path, &file).unwrap();
    let probed = probe(&path);
    eprintln!("ffprobe {video_codec}/{audio_codec}:\n{probed}");
    decodes_cleanly(&path);
    let lines: Vec<&str> = probed.lines().collect();
    let v = lines
        .iter()
        .find(|l| l.contains("codec_type=video"))
        .unwrap();
    let a = lines
        .iter()
        .find(|l| l.contains("codec_type=audio"))
        .unwrap();
    assert_eq!(field(v, "codec_name"), video_codec);
    assert_eq!((field(v, "width"), field(v, "height")), ("640", "360"));
    assert_eq!(
        field(v, "nb_read_frames"),
        media(frames, tracks[0].id).to_string()
    );
    assert_eq!(field(a, "codec_name"), audio_codec);
    assert_eq!(field(a, "sample_rate"), "48000");
    assert_eq!(
        field(a, "nb_read_frames"),
        media(frames, tracks[1].id).to_string()
    );
    let duration: f64 = field(lines.last().unwrap(), "duration").parse().unwrap();
    assert!((duration - 6.0).abs() <= 0.2, "duration {duration}");

    // what ffmpeg decodes from the whole file, by stream (0 video, 1 audio)
    let (full, errors) = framecrc(&path);
    assert!(errors.trim().is_empty(), "{errors}");
    assert_eq!(full[&0].len(), media(frames, tracks[0].id));

    // the end of the middle fragment: a clean file with fewer fragments
    let k = n / 2;
    let cut = parsed.fragments[k].0.end;
    let complete = samples_before(&parsed, k + 1);
    let cut_path = dir.path().join("cut.mp4");
    std::fs::write(&cut_path, &file[..cut]).unwrap();
    decodes_cleanly(&cut_path);
    let (got, _) = framecrc(&cut_path);
    for (stream, id) in [(0, 1), (1, 2)] {
        assert_eq!(
            got[&stream][..],
            full[&stream][..complete[&id]],
            "stream {stream}"
        );
    }

    // SIGKILL in the middle of writing the middle fragment: in its moof, in its
    // mdat; and one byte short of the end of the file
    let (next, _) = &parsed.fragments[k];
    let moof_len = u32::from_be_bytes(file[next.start..next.start + 4].try_into().unwrap());
    let mdat_body = next.start + moof_len as usize + 8;
    let cuts = [
        ("in the moof", next.start + 30, k),
        ("in the mdat", (mdat_body + next.end) / 2, k),
        ("one byte short", file.len() - 1, n - 1),
    ];
    for (what, at, complete_fragments) in cuts {
        let cut_path = dir.path().join("killed.mp4");
        std::fs::write(&cut_path, &file[..at]).unwrap();
        let complete = samples_before(&parsed, complete_fragments);
        let (got, errors) = framecrc(&cut_path);
        eprintln!(
            "cut {what} at byte {at} of {}: decoded {} video / {} audio frames of {} / {} in complete fragments{}",
            file.len(),
            got.get(&0).map_or(0, Vec::len),
            got.get(&1).map_or(0, Vec::len),
            complete[&1],
            complete[&2],
            if errors.trim().is_empty() {
                String::new()
            } else {
                format!("; ffmpeg said: {}", errors.trim())
            }
        );
        for (stream, id) in [(0, 1), (1, 2)] {
            let got = got.get(&stream).map_or(&[][..], Vec::as_slice);
            assert!(
                got.len() >= complete[&id],
                "cut {what}: stream {stream} decoded {} of {} complete frames",
                got.len(),
                complete[&id]
            );
            assert_eq!(
                got[..complete[&id]],
                full[&stream][..complete[&id]],
                "cut {what}: stream {stream}"
            );
        }
    }
}

#[test]
fn h264_aac_from_flv_plays_and_survives_a_kill() {
    if !peers(&["libx264", "aac"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.flv");
    encode(&path, &["-c:v", "libx264", "-c:a", "aac"], "flv");
    let frames = flv_frames(Bytes::from(std::fs::read(&path).unwrap()));
    record_and_check(&frames, "h264", "aac");
}

#[test]
fn hevc_aac_from_ts_plays_and_survives_a_kill() {
    // ffmpeg 5 writes no HEVC into FLV: MPEG-TS in
    if !peers(&["libx265", "aac"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ts");
    let codecs = [
        "-c:v",
        "libx265",
        "-x265-params",
        "log-level=error",
        "-c:a",
        "aac",
    ];
    encode(&path, &codecs, "mpegts");
    let frames = ts_frames(&std::fs::read(&path).unwrap());
    record_and_check(&frames, "hevc", "aac");
}

#[test]
fn h264_opus_from_ts_plays_and_survives_a_kill() {
    if !peers(&["libx264", "libopus"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ts");
    encode(&path, &["-c:v", "libx264", "-c:a", "libopus"], "mpegts");
    let frames = ts_frames(&std::fs::read(&path).unwrap());
    record_and_check(&frames, "h264", "opus");
}
