//! `format::ts` against ffmpeg, both ways:
//! - an ffmpeg-made FLV (x264 + AAC) read with `format::flv` into core frames, muxed
//!   with `TsMuxer`: ffprobe sees the right codecs, size and duration, and ffmpeg
//!   decodes it without a single error;
//! - ffmpeg-made MPEG-TS (H.264 + AAC, HEVC + AAC, H.264 + Opus) demuxed with
//!   `TsDemuxer`: as many frames as ffprobe counts, and written back (as FLV with
//!   the `flv` writers, and as TS with `TsMuxer`) it decodes cleanly with the same
//!   frame counts.
//!
//! Each test prints a note and passes when ffmpeg (or an encoder it needs) is not
//! installed.

// test helpers outside #[test] functions: failures are test failures.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use bytes::{Bytes, BytesMut};
use cthulhu_core::format::flv;
use cthulhu_core::format::ts::{MuxConfig, TsDemuxer, TsEvent, TsMuxer};
use cthulhu_core::{CodecId, Frame, MediaKind, TrackId, TrackInfo};

/// Whether ffmpeg and ffprobe run, and ffmpeg has every encoder named.
fn have_ffmpeg(encoders: &[&str]) -> bool {
    let ok = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok("ffmpeg") || !ok("ffprobe") {
        eprintln!("note: ffmpeg/ffprobe not found, test skipped");
        return false;
    }
    let list = Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for enc in encoders {
        if !list
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(enc))
        {
            eprintln!("note: ffmpeg has no {enc} encoder, test skipped");
            return false;
        }
    }
    true
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

/// Encodes 4 s of test pattern and a 440 Hz tone to `out`.
fn encode(out: &Path, video: &[&str], audio: &[&str], format: &str) {
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
        "4",
    ];
    args.extend_from_slice(video);
    args.extend_from_slice(audio);
    args.extend_from_slice(&["-f", format, out.to_str().unwrap()]);
    ffmpeg(&args);
}

/// Decodes every stream of `file` with `-xerror`; fails on any error output.
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

/// What ffprobe says about one stream.
#[derive(Debug, Default, Clone, PartialEq)]
struct Probed {
    codec_type: String,
    codec_name: String,
    width: Option<u32>,
    height: Option<u32>,
    frames: u64,
}

/// Streams of `file` (with decoded frame counts) and the container duration.
fn probe(file: &Path) -> (Vec<Probed>, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .arg("stream=codec_type,codec_name,width,height,nb_read_frames:format=duration")
        .args(["-of", "default=nw=1"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe {}", file.display());
    let mut streams: Vec<Probed> = Vec::new();
    let mut duration = 0.0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "codec_name" => streams.push(Probed {
                codec_name: value.to_owned(),
                ..Probed::default()
            }),
            "codec_type" => streams.last_mut().unwrap().codec_type = value.to_owned(),
            "width" => streams.last_mut().unwrap().width = value.parse().ok(),
            "height" => streams.last_mut().unwrap().height = value.parse().ok(),
            "nb_read_frames" => streams.last_mut().unwrap().frames = value.parse().unwrap_or(0),
            "duration" => duration = value.parse().unwrap_or(0.0),
            _ => {}
        }
    }
    (streams, duration)
}

fn stream<'a>(streams: &'a [Probed], codec_type: &str) -> &'a Probed {
    streams
        .iter()
        .find(|s| s.codec_type == codec_type)
        .unwrap_or_else(|| panic!("no {codec_type} stream in {streams:?}"))
}

/// Reads an FLV file into core frames.
fn flv_frames(data: Bytes) -> Vec<Frame> {
    let mut frames = Vec::new();
    for tag in flv::FlvReader::new(data).unwrap() {
        frames.extend(tag.unwrap().to_frame().unwrap());
    }
    frames
}

/// The tracks of a frame list, configured from the first configuration frame of
/// each.
fn tracks_of(frames: &[Frame]) -> Vec<TrackInfo> {
    let mut tracks: Vec<TrackInfo> = Vec::new();
    for f in frames.iter().filter(|f| f.is_config()) {
        if !tracks.iter().any(|t| t.id == f.track) {
            let codec = cthulhu_core::Codec::from_config(f.codec, f.data.clone());
            tracks.push(TrackInfo::new(f.track, codec));
        }
    }
    tracks.sort_by_key(|t| t.id);
    tracks
}

fn mux(tracks: &[TrackInfo], frames: &[Frame]) -> Bytes {
    let mut mux = TsMuxer::new(tracks, MuxConfig::default()).unwrap();
    let mut out = BytesMut::new();
    for f in frames {
        mux.write_frame(f, &mut out).unwrap();
    }
    out.freeze()
}

/// Demuxes `data` pushed in uneven pieces; fails on any reported error.
fn demux(data: &[u8]) -> (Vec<TrackInfo>, Vec<Frame>) {
    let mut d = TsDemuxer::new();
    let mut frames = Vec::new();
    let mut drain = |d: &mut TsDemuxer| {
        while let Some(event) = d.poll_event() {
            match event {
                TsEvent::Frame(f) => frames.push(f),
                TsEvent::Error(e) => panic!("demux error: {e}"),
                _ => {}
            }
        }
    };
    let mut rest = data;
    for size in [1, 187, 188, 1000, 7, 4096].iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at((*size).min(rest.len()));
        d.push(now);
        drain(&mut d);
        rest = later;
    }
    d.flush();
    drain(&mut d);
    assert_eq!(d.stats().frames_dropped, 0);
    (d.tracks().to_vec(), frames)
}

/// Media frames of one kind (not configuration, not FLV's empty end of sequence).
fn count(frames: &[Frame], kind: MediaKind) -> u64 {
    frames
        .iter()
        .filter(|f| f.kind() == kind && !f.is_config() && !f.data.is_empty())
        .count() as u64
}

/// Writes frames as an FLV file, timestamps relative to the first DTS.
fn write_flv(frames: &[Frame]) -> Vec<u8> {
    let start = frames.iter().map(|f| f.dts).min().unwrap_or_default();
    let mut out = flv::write_file_header(true, true).to_vec();
    for f in frames {
        let body = flv::frame_to_tag_body(f).unwrap();
        let mut header = [0u8; 11];
        let ts = (f.dts - start).as_millis() as u32;
        flv::write_tag_header(flv::frame_tag_type(f), body.len() as u32, ts, &mut header).unwrap();
        out.extend_from_slice(&header);
        out.extend_from_slice(&body);
        out.extend_from_slice(&flv::previous_tag_size(body.len() as u32));
    }
    out
}

#[test]
fn flv_from_ffmpeg_muxed_to_ts_decodes_cleanly() {
    if !have_ffmpeg(&["libx264", "aac"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flv_path = dir.path().join("in.flv");
    encode(
        &flv_path,
        &["-c:v", "libx264", "-g", "30"],
        &["-c:a", "aac"],
        "flv",
    );
    let frames = flv_frames(Bytes::from(std::fs::read(&flv_path).unwrap()));
    let tracks = tracks_of(&frames);
    assert_eq!(tracks.len(), 2);
    let ts = mux(&tracks, &frames);
    let ts_path = dir.path().join("out.ts");
    std::fs::write(&ts_path, &ts).unwrap();

    decodes_cleanly(&ts_path);
    let (streams, duration) = probe(&ts_path);
    let video = stream(&streams, "video");
    assert_eq!(video.codec_name, "h264");
    assert_eq!((video.width, video.height), (Some(640), Some(360)));
    assert_eq!(video.frames, count(&frames, MediaKind::Video));
    assert_eq!(video.frames, 120);
    let audio = stream(&streams, "audio");
    assert_eq!(audio.codec_name, "aac");
    assert_eq!(audio.frames, count(&frames, MediaKind::Audio));
    assert!((3.8..4.3).contains(&duration), "duration {duration}");

    // and our own demuxer gives back what went in
    let (_, back) = demux(&ts);
    let media = |fs: &[Frame]| -> Vec<Frame> {
        fs.iter()
            .filter(|f| !f.is_config() && !f.data.is_empty())
            .cloned()
            .collect()
    };
    let mut want = media(&frames);
    let mut got = media(&back);
    want.sort_by_key(|f| (f.track, f.dts));
    got.sort_by_key(|f| (f.track, f.dts));
    assert_eq!(got.len(), want.len());
    assert!(got == want, "frames differ after mux → demux");
}

/// ffmpeg-made TS → demux → (FLV and TS) → ffmpeg: clean decodes, same counts.
fn ts_from_ffmpeg(
    video: &[&str],
    audio: &[&str],
    video_codec: &str,
    audio_codec: &str,
    via_flv: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.ts");
    encode(&src, video, audio, "mpegts");
    let (src_streams, _) = probe(&src);

    let (tracks, frames) = demux(&std::fs::read(&src).unwrap());
    let ids: Vec<_> = tracks.iter().map(|t| (t.id, t.codec.id().name())).collect();
    let want_video = if video_codec == "hevc" {
        CodecId::H265
    } else {
        CodecId::H264
    };
    let want_audio = if audio_codec == "opus" {
        CodecId::Opus
    } else {
        CodecId::Aac
    };
    assert_eq!(
        ids,
        vec![
            (TrackId::VIDEO, want_video.name()),
            (TrackId::AUDIO, want_audio.name())
        ]
    );
    assert_eq!(tracks[0].details.width, Some(640));
    assert_eq!(tracks[0].details.height, Some(360));
    assert!(frames.iter().any(|f| f.is_keyframe()));
    let video_frames = count(&frames, MediaKind::Video);
    let audio_frames = count(&frames, MediaKind::Audio);
    assert_eq!(video_frames, stream(&src_streams, "video").frames);
    assert_eq!(audio_frames, stream(&src_streams, "audio").frames);

    let mut outputs = vec![("ts", mux(&tracks, &frames).to_vec())];
    if via_flv {
        outputs.push(("flv", write_flv(&frames)));
    }
    for (ext, data) in outputs {
        let path = dir.path().join(format!("out.{ext}"));
        std::fs::write(&path, data).unwrap();
        decodes_cleanly(&path);
        let (streams, duration) = probe(&path);
        let v = stream(&streams, "video");
        let a = stream(&streams, "audio");
        assert_eq!(
            (v.codec_name.as_str(), a.codec_name.as_str()),
            (video_codec, audio_codec),
            "{ext}"
        );
        assert_eq!((v.width, v.height), (Some(640), Some(360)), "{ext}");
        assert_eq!(v.frames, video_frames, "{ext}");
        assert_eq!(a.frames, audio_frames, "{ext}");
        assert!((3.8..4.3).contains(&duration), "{ext} duration {duration}");
    }
}

#[test]
fn h264_aac_ts_from_ffmpeg_demuxes_and_remuxes() {
    if have_ffmpeg(&["libx264", "aac"]) {
        ts_from_ffmpeg(
            &["-c:v", "libx264", "-g", "30"],
            &["-c:a", "aac"],
            "h264",
            "aac",
            true,
        );
    }
}

#[test]
fn hevc_aac_ts_from_ffmpeg_demuxes_and_remuxes() {
    // ffmpeg 5 reads no HEVC from FLV, so TS only
    if have_ffmpeg(&["libx265", "aac"]) {
        let video = [
            "-c:v",
            "libx265",
            "-g",
            "30",
            "-x265-params",
            "log-level=error",
        ];
        ts_from_ffmpeg(&video, &["-c:a", "aac"], "hevc", "aac", false);
    }
}

#[test]
fn h264_opus_ts_from_ffmpeg_demuxes_and_remuxes() {
    if have_ffmpeg(&["libx264", "libopus"]) {
        ts_from_ffmpeg(
            &["-c:v", "libx264", "-g", "30"],
            &["-c:a", "libopus"],
            "h264",
            "opus",
            false,
        );
    }
}
