//! ffmpeg publishers and ffprobe/ffmpeg based checks.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::process::Command;

use crate::process::{ChildGuard, require_tool, temp_dir};

/// `-rw_timeout` for network inputs, in microseconds (ffmpeg's unit): a read
/// that gets no data for this long fails with an I/O error.
const RW_TIMEOUT_US: &str = "10000000";
/// Default limit for a whole ffprobe run.
const FFPROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time [`decode_check`] allows beyond the requested duration (stream
/// analysis, connection set-up, waiting for a keyframe).
const DECODE_SLACK: Duration = Duration::from_secs(30);

/// True for `proto://...` inputs other than `file:`.
fn is_network(input: &str) -> bool {
    input.contains("://") && !input.starts_with("file:")
}

/// What [`Ffmpeg::publish_test_pattern`] sends: a `testsrc2` picture and a
/// 1 kHz `sine` tone, encoded with libx264 (ultrafast, zerolatency, no
/// B-frames, a keyframe exactly every `gop` frames) and AAC.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// Stop after this much media time (`-t`); `None` runs until killed.
    pub duration: Option<Duration>,
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Keyframe interval in frames (`-g`, scene-cut keyframes disabled).
    pub gop: u32,
    /// Read the inputs at native speed (`-re`), like a live encoder. Without
    /// it ffmpeg encodes as fast as it can.
    pub realtime: bool,
    /// Video bitrate in kbit/s.
    pub video_bitrate_kbps: u32,
    /// Include the AAC audio track.
    pub audio: bool,
    /// Audio sample rate in Hz (mono).
    pub audio_sample_rate: u32,
    /// Output container (`-f`): `flv` for RTMP, `mpegts` for SRT/UDP, ...
    pub format: String,
    /// Extra output options inserted before `-f`.
    pub extra_output_args: Vec<String>,
}

impl Default for PublishOptions {
    /// 640x360 at 30 fps, GOP 30 (1 s), 500 kbit/s video, 48 kHz AAC at
    /// 128 kbit/s, realtime, FLV, no time limit.
    fn default() -> Self {
        Self {
            duration: None,
            width: 640,
            height: 360,
            fps: 30,
            gop: 30,
            realtime: true,
            video_bitrate_kbps: 500,
            audio: true,
            audio_sample_rate: 48_000,
            format: "flv".to_owned(),
            extra_output_args: Vec::new(),
        }
    }
}

impl PublishOptions {
    /// Default options limited to `secs` seconds.
    pub fn seconds(secs: f64) -> Self {
        Self {
            duration: Some(Duration::from_secs_f64(secs)),
            ..Self::default()
        }
    }

    /// The ffmpeg arguments (without the program name) publishing to `url`.
    pub fn ffmpeg_args(&self, url: &str) -> Vec<String> {
        let mut args: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "warning"]
            .map(String::from)
            .to_vec();
        let mut input = |spec: String| {
            if self.realtime {
                args.push("-re".to_owned());
            }
            args.extend(["-f".to_owned(), "lavfi".to_owned(), "-i".to_owned(), spec]);
        };
        input(format!(
            "testsrc2=size={}x{}:rate={}",
            self.width, self.height, self.fps
        ));
        if self.audio {
            input(format!(
                "sine=frequency=1000:sample_rate={}",
                self.audio_sample_rate
            ));
        }
        if let Some(d) = self.duration {
            args.extend(["-t".to_owned(), format!("{:.3}", d.as_secs_f64())]);
        }
        let gop = self.gop.to_string();
        let vbr = format!("{}k", self.video_bitrate_kbps);
        args.extend(
            [
                "-map",
                "0:v",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-pix_fmt",
                "yuv420p",
                "-g",
                &gop,
                "-keyint_min",
                &gop,
                "-sc_threshold",
                "0",
                "-b:v",
                &vbr,
            ]
            .map(String::from),
        );
        if self.audio {
            args.extend(["-map", "1:a", "-c:a", "aac", "-b:a", "128k"].map(String::from));
        }
        args.extend(self.extra_output_args.iter().cloned());
        if self.format == "flv" {
            // The output is not seekable: without this the muxer warns that it
            // cannot rewrite duration/filesize at the end.
            args.extend(["-flvflags", "no_duration_filesize"].map(String::from));
        }
        args.extend(["-f".to_owned(), self.format.clone(), url.to_owned()]);
        args
    }
}

/// A running ffmpeg process, killed on drop. Its output (stderr, with
/// `-loglevel warning` for publishers) is kept in a log file.
#[derive(Debug)]
pub struct Ffmpeg {
    proc: ChildGuard,
}

impl Ffmpeg {
    /// Starts publishing a test pattern to `url` (see [`PublishOptions`]).
    /// Returns as soon as the process is spawned; use [`Ffmpeg::wait`] to see
    /// how it ended.
    pub async fn publish_test_pattern(url: &str, opts: &PublishOptions) -> Result<Ffmpeg> {
        Self::spawn_raw(opts.ffmpeg_args(url))
    }

    /// Publishes a media file to `url` in real time without re-encoding
    /// (`-re -i FILE -c copy -f flv URL`): a publisher that costs no encoder CPU.
    pub async fn publish_file(file: &Path, url: &str) -> Result<Ffmpeg> {
        let file = file.to_str().context("file path is not UTF-8")?;
        Self::spawn_raw(
            [
                "-hide_banner",
                "-loglevel",
                "warning",
                "-nostdin",
                "-re",
                "-i",
                file,
                "-c",
                "copy",
                "-flvflags",
                "no_duration_filesize",
                "-f",
                "flv",
                url,
            ]
            .map(String::from)
            .to_vec(),
        )
    }

    /// Writes the test pattern of `opts` to `file` as fast as ffmpeg can (not in
    /// real time), in `opts.format`, and waits for it to finish (at most 2 min).
    pub async fn write_test_file(file: &Path, opts: &PublishOptions) -> Result<()> {
        let file = file.to_str().context("file path is not UTF-8")?;
        let opts = PublishOptions {
            realtime: false,
            ..opts.clone()
        };
        let mut ff = Self::spawn_raw(opts.ffmpeg_args(file))?;
        ff.wait_success(Duration::from_secs(120)).await
    }

    /// Starts ffmpeg with arbitrary arguments; `-hide_banner -nostdin` are
    /// prepended.
    pub async fn spawn<I, S>(args: I) -> Result<Ffmpeg>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["-hide_banner".into(), "-nostdin".into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        Self::spawn_raw(all)
    }

    fn spawn_raw<I, S>(args: I) -> Result<Ffmpeg>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(require_tool("ffmpeg")?);
        cmd.args(args);
        Ok(Ffmpeg {
            proc: ChildGuard::spawn("ffmpeg", cmd)?,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// True while ffmpeg has not exited.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Waits up to `timeout` for ffmpeg to exit and returns its exit status
    /// (an error, with the log tail, on timeout; ffmpeg keeps running then).
    pub async fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.proc.wait_timeout(timeout).await
    }

    /// Waits up to `timeout`; fails unless ffmpeg exited with status 0.
    pub async fn wait_success(&mut self, timeout: Duration) -> Result<()> {
        self.proc.wait_success(timeout).await
    }

    /// Kills ffmpeg (SIGKILL) and reaps it.
    pub async fn kill(&mut self) -> Result<()> {
        self.proc.kill().await.map(drop)
    }

    /// The last lines of ffmpeg's output.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    /// The underlying process guard.
    pub fn guard(&mut self) -> &mut ChildGuard {
        &mut self.proc
    }
}

/// Runs `ffprobe -show_streams -show_format -of json` on a file or URL and
/// returns the parsed JSON. `extra_args` go before the input (e.g.
/// `["-count_frames"]`). Network inputs get `-rw_timeout` 10 s; the whole run
/// is killed after 30 s (see [`ffprobe_json_timeout`]).
pub async fn ffprobe_json(input: &str, extra_args: &[&str]) -> Result<Value> {
    ffprobe_json_timeout(input, extra_args, FFPROBE_TIMEOUT).await
}

/// [`ffprobe_json`] with an explicit limit for the whole run.
pub async fn ffprobe_json_timeout(
    input: &str,
    extra_args: &[&str],
    timeout: Duration,
) -> Result<Value> {
    let mut cmd = Command::new(require_tool("ffprobe")?);
    cmd.args(["-hide_banner", "-v", "error"]);
    if is_network(input) {
        cmd.args(["-rw_timeout", RW_TIMEOUT_US]);
    }
    cmd.args(extra_args)
        .args(["-show_streams", "-show_format", "-of", "json"])
        .arg(input)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(out) => out.with_context(|| format!("running ffprobe on {input}"))?,
        // Dropping the `output()` future kills ffprobe (kill_on_drop).
        Err(_) => bail!("ffprobe on {input} did not finish within {timeout:?} (killed)"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "ffprobe on {input} failed ({}): {}",
            output.status,
            stderr.trim()
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "parsing ffprobe JSON for {input} (stderr: {})",
            stderr.trim()
        )
    })
}

/// One stream as reported by ffprobe.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbedStream {
    /// `video`, `audio`, `data`, ...
    pub codec_type: String,
    /// ffmpeg's codec name: `h264`, `aac`, `hevc`, `opus`, ...
    pub codec_name: String,
    /// Video width in pixels.
    pub width: Option<u32>,
    /// Video height in pixels.
    pub height: Option<u32>,
    /// Audio sample rate in Hz.
    pub sample_rate: Option<u32>,
    /// Audio channel count.
    pub channels: Option<u32>,
}

/// [`ffprobe_json`] reduced to the list of streams.
pub async fn probe_streams(input: &str, extra_args: &[&str]) -> Result<Vec<ProbedStream>> {
    let json = ffprobe_json(input, extra_args).await?;
    let streams = json
        .get("streams")
        .and_then(Value::as_array)
        .with_context(|| format!("ffprobe JSON for {input} has no streams array: {json}"))?;
    let text = |s: &Value, key: &str| s.get(key).and_then(Value::as_str).map(str::to_owned);
    // ffprobe prints some numbers as strings (sample_rate) and some as numbers.
    let number = |s: &Value, key: &str| {
        let v = s.get(key)?;
        v.as_u64()
            .or_else(|| v.as_str().and_then(|t| t.parse().ok()))
            .and_then(|n| u32::try_from(n).ok())
    };
    Ok(streams
        .iter()
        .map(|s| ProbedStream {
            codec_type: text(s, "codec_type").unwrap_or_default(),
            codec_name: text(s, "codec_name").unwrap_or_default(),
            width: number(s, "width"),
            height: number(s, "height"),
            sample_rate: number(s, "sample_rate"),
            channels: number(s, "channels"),
        })
        .collect())
}

/// Result of [`decode_check`].
#[derive(Clone, Debug, Default)]
pub struct DecodeReport {
    /// ffmpeg's exit code; `None` if it was killed (timeout) or died by a
    /// signal.
    pub exit_code: Option<i32>,
    /// ffmpeg did not finish within duration + 30 s and was killed.
    pub timed_out: bool,
    /// Everything ffmpeg printed at log level `error`; empty for a clean
    /// decode.
    pub stderr: String,
    /// Decoded video frames (all video streams).
    pub video_frames: u64,
    /// Decoded audio frames (all audio streams; an AAC frame is 1024 samples).
    pub audio_frames: u64,
    /// Time span covered by the decoded video frames, in seconds.
    pub video_seconds: f64,
    /// Time span covered by the decoded audio frames, in seconds.
    pub audio_seconds: f64,
    /// Decoded picture size of the first video stream.
    pub dimensions: Option<(u32, u32)>,
    /// Sample rate of the first audio stream.
    pub sample_rate: Option<u32>,
}

impl DecodeReport {
    /// ffmpeg exited with status 0 in time.
    pub fn success(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }

    /// Fails unless the decode succeeded, logged no errors and produced at
    /// least one frame. The error message contains the whole report.
    pub fn ensure_clean(&self) -> Result<()> {
        if !self.success()
            || !self.stderr.trim().is_empty()
            || self.video_frames + self.audio_frames == 0
        {
            bail!("decode check failed: {self:#?}");
        }
        Ok(())
    }
}

/// Decodes up to `duration` of `input` (file or URL) and reports what came
/// out.
///
/// Runs `ffmpeg -v error -xerror [-rw_timeout 10s] -i INPUT -t SECS
/// -map 0:v? -map 0:a? -f framecrc <file>`: every video and audio stream is
/// fully **decoded** (not just demuxed); `-xerror` makes ffmpeg stop with a
/// non-zero exit code at the first decoding error, and `-v error` leaves only
/// real errors in [`DecodeReport::stderr`]. The `framecrc` output (one line
/// per decoded frame) gives per-type frame counts, the decoded time span,
/// picture size and sample rate. `-t` counts output time, so for a file
/// shorter than `duration` the whole file is decoded.
///
/// For live inputs: if the stream ends before `duration` is reached, ffmpeg
/// waits for data until `-rw_timeout` and fails with an I/O error (nginx-rtmp
/// keeps players connected after the publisher left). A decoder joining a
/// live stream mid-GOP drops the frames before the first keyframe, so expect
/// up to one GOP fewer video frames than `duration` suggests. The whole run is
/// killed after `duration` + 30 s ([`DecodeReport::timed_out`]).
///
/// Returns `Err` only if ffmpeg cannot be started.
pub async fn decode_check(input: &str, duration: Duration) -> Result<DecodeReport> {
    let dir = temp_dir("decode")?;
    let frames_path = dir.path().join("frames.txt");
    let mut cmd = Command::new(require_tool("ffmpeg")?);
    cmd.args(["-hide_banner", "-nostdin", "-v", "error", "-xerror"]);
    if is_network(input) {
        cmd.args(["-rw_timeout", RW_TIMEOUT_US]);
    }
    cmd.arg("-i")
        .arg(input)
        .args(["-t", &format!("{:.3}", duration.as_secs_f64())])
        .args(["-map", "0:v?", "-map", "0:a?", "-f", "framecrc", "-y"])
        .arg(&frames_path);
    let log_path = dir.path().join("ffmpeg.log");
    let mut proc = ChildGuard::spawn_with_log("ffmpeg-decode", cmd, &log_path)?;
    let mut report = DecodeReport::default();
    match proc.wait_timeout(duration + DECODE_SLACK).await {
        Ok(status) => report.exit_code = status.code(),
        Err(_) => {
            report.timed_out = true;
            proc.kill().await?;
        }
    }
    report.stderr = proc.log();
    let frames = std::fs::read_to_string(&frames_path).unwrap_or_default();
    parse_framecrc(&frames, &mut report);
    Ok(report)
}

/// Per-stream facts collected from framecrc output.
#[derive(Default)]
struct CrcStream {
    media_type: String,
    /// Time base as (numerator, denominator).
    tb: Option<(f64, f64)>,
    frames: u64,
    first_pts: Option<i64>,
    end_pts: i64,
}

/// Fills the frame statistics of `report` from `framecrc` text.
///
/// Header lines look like `#media_type 0: video`, `#tb 0: 1/30`,
/// `#dimensions 0: 640x360`, `#sample_rate 1: 48000`; frame lines like
/// `0, dts, pts, duration, size, 0xhash`.
fn parse_framecrc(text: &str, report: &mut DecodeReport) {
    let mut streams: HashMap<u32, CrcStream> = HashMap::new();
    let mut order: Vec<u32> = Vec::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix('#') {
            let Some((key_idx, value)) = header.split_once(':') else {
                continue;
            };
            let mut parts = key_idx.split_whitespace();
            let (Some(key), Some(Ok(idx))) = (parts.next(), parts.next().map(str::parse::<u32>))
            else {
                continue;
            };
            if !streams.contains_key(&idx) {
                order.push(idx);
            }
            let stream = streams.entry(idx).or_default();
            let value = value.trim();
            match key {
                "media_type" => stream.media_type = value.to_owned(),
                "tb" => {
                    stream.tb = value
                        .split_once('/')
                        .and_then(|(n, d)| Some((n.parse().ok()?, d.parse().ok()?)));
                }
                "dimensions" if report.dimensions.is_none() => {
                    report.dimensions = value
                        .split_once('x')
                        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
                }
                "sample_rate" if report.sample_rate.is_none() => {
                    report.sample_rate = value.parse().ok();
                }
                _ => {}
            }
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() < 4 {
            continue;
        }
        let (Ok(idx), Ok(pts), Ok(dur)) = (
            fields[0].parse::<u32>(),
            fields[2].parse::<i64>(),
            fields[3].parse::<i64>(),
        ) else {
            continue;
        };
        let stream = streams.entry(idx).or_default();
        stream.frames += 1;
        stream.first_pts.get_or_insert(pts);
        stream.end_pts = stream.end_pts.max(pts + dur);
    }
    for idx in order {
        let Some(s) = streams.get(&idx) else { continue };
        // Frame timestamps are small integers in the stream time base.
        #[allow(clippy::cast_precision_loss)]
        let span = match (s.tb, s.first_pts) {
            (Some((num, den)), Some(first)) if den != 0.0 => (s.end_pts - first) as f64 * num / den,
            _ => 0.0,
        };
        match s.media_type.as_str() {
            "video" => {
                report.video_frames += s.frames;
                report.video_seconds = report.video_seconds.max(span);
            }
            "audio" => {
                report.audio_frames += s.frames;
                report.audio_seconds = report.audio_seconds.max(span);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_framecrc() {
        let text = "#software: Lavf59.27.100\n#tb 0: 1/30\n#media_type 0: video\n\
                    #codec_id 0: rawvideo\n#dimensions 0: 640x360\n#sar 0: 1/1\n\
                    #tb 1: 1/48000\n#media_type 1: audio\n#codec_id 1: pcm_s16le\n\
                    #sample_rate 1: 48000\n#channel_layout_name 1: mono\n\
                    1,          0,          0,     1024,     2048, 0x1a973ac3\n\
                    1,       1024,       1024,     1024,     2048, 0x6efaf61c\n\
                    0,          1,          1,        1,   345600, 0x8a671563\n\
                    0,          2,          2,        1,   345600, 0x3a4a65a1\n";
        let mut r = DecodeReport::default();
        parse_framecrc(text, &mut r);
        assert_eq!(r.video_frames, 2);
        assert_eq!(r.audio_frames, 2);
        assert_eq!(r.dimensions, Some((640, 360)));
        assert_eq!(r.sample_rate, Some(48_000));
        assert!((r.video_seconds - 2.0 / 30.0).abs() < 1e-9);
        assert!((r.audio_seconds - 2048.0 / 48_000.0).abs() < 1e-9);
    }

    #[test]
    fn publish_args_have_options() {
        let opts = PublishOptions {
            gop: 60,
            realtime: false,
            audio: false,
            ..PublishOptions::seconds(2.5)
        };
        let args = opts.ffmpeg_args("rtmp://127.0.0.1:1/live/x").join(" ");
        assert!(args.contains("-t 2.500"), "{args}");
        assert!(args.contains("-g 60"), "{args}");
        assert!(!args.contains("-re"), "{args}");
        assert!(!args.contains("sine"), "{args}");
        assert!(args.ends_with("-f flv rtmp://127.0.0.1:1/live/x"), "{args}");
    }
}
