//! Shared helpers of the recorder tests: test media from ffmpeg, a publisher that
//! replays it into a hub, an event log, probes of recorded objects.

#![allow(dead_code, unreachable_pub)]
// Test helpers: a broken test environment should fail loudly.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use cthulhu_core::format::flv;
use cthulhu_core::hub::{HubEvent, RecordingEvent};
use cthulhu_core::{Frame, Hub, HubConfig, StreamPath};
use cthulhu_sinks::{Container, NameTemplate, RecordConfig};
use cthulhu_testkit::{DecodeReport, Ffmpeg, PublishOptions, decode_check, ffprobe_json};
use tempfile::TempDir;
use tokio::time::Instant;

/// Frames of an ffmpeg test pattern (H.264 640x360 30 fps, keyframe every `gop`
/// frames, AAC 48 kHz), as an RTMP publisher would deliver them.
pub struct Media {
    pub frames: Vec<Frame>,
    pub duration: Duration,
    pub fps: u32,
    pub gop: u32,
    _dir: Option<TempDir>,
}

impl Media {
    /// Encodes `secs` of the test pattern (not in real time) and reads the FLV back.
    pub async fn generate(secs: f64, gop: u32, video_kbps: u32) -> Result<Media> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("pattern.flv");
        Self::write(&file, secs, gop, video_kbps).await?;
        let mut media = Self::read(&file, secs, gop)?;
        media._dir = Some(dir);
        Ok(media)
    }

    /// Encodes the test pattern into an FLV file.
    pub async fn write(file: &Path, secs: f64, gop: u32, video_kbps: u32) -> Result<()> {
        let opts = PublishOptions {
            gop,
            video_bitrate_kbps: video_kbps,
            ..PublishOptions::seconds(secs)
        };
        Ffmpeg::write_test_file(file, &opts).await
    }

    /// Reads a test pattern FLV written by [`Media::write`].
    pub fn read(file: &Path, secs: f64, gop: u32) -> Result<Media> {
        let data = Bytes::from(std::fs::read(file)?);
        let mut frames = Vec::new();
        for tag in flv::FlvReader::new(data)? {
            frames.extend(tag?.to_frame()?);
        }
        ensure!(
            frames.len() > 10,
            "only {} frames in the test pattern",
            frames.len()
        );
        Ok(Media {
            frames,
            duration: Duration::from_secs_f64(secs),
            fps: 30,
            gop,
            _dir: None,
        })
    }

    /// Payload bytes of all frames.
    pub fn bytes(&self) -> usize {
        self.frames.iter().map(|f| f.data.len()).sum()
    }
}

/// Publishes `media` on `path`, in real time when `paced` (else as fast as possible),
/// calling `at_second(n)` once each time media second `n` is reached (paced only);
/// an error from it ends the stream and is returned. The stream ends when it returns.
pub async fn publish(
    hub: &Hub,
    path: &StreamPath,
    media: &Media,
    paced: bool,
    mut at_second: impl FnMut(u64) -> Result<()>,
) -> Result<()> {
    let publisher = hub.publish(path)?;
    let start = Instant::now();
    let mut second = 0;
    for frame in &media.frames {
        if paced {
            let at = Duration::from_millis(u64::try_from(frame.dts.as_millis()).unwrap_or(0));
            tokio::time::sleep_until(start + at).await;
            while at.as_secs() >= second {
                at_second(second)?;
                second += 1;
            }
        } else {
            tokio::task::yield_now().await;
        }
        ensure!(publisher.send(frame.clone()), "publisher was ended");
    }
    drop(publisher);
    Ok(())
}

/// A hub with default settings; also sends logs (`RUST_LOG`, default info for the
/// recorder) to the test output.
pub fn hub() -> Hub {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "cthulhu_sinks=info,cthulhu_core=info".into()),
        )
        .try_init();
    Hub::new(HubConfig::default())
}

pub fn path() -> StreamPath {
    StreamPath::new("live/studio").unwrap_or_else(|e| panic!("{e}"))
}

/// Recording settings for tests.
pub fn record_config(container: Container, template: &str) -> RecordConfig {
    let name_template = NameTemplate::parse(template).unwrap_or_else(|e| panic!("{e}"));
    let mut c = RecordConfig::new(container, name_template);
    c.retry.initial = Duration::from_millis(200);
    c.retry.max = Duration::from_secs(1);
    c
}

/// Collects the recording events of a hub.
#[derive(Clone)]
pub struct EventLog {
    events: Arc<Mutex<Vec<RecordingEvent>>>,
}

impl EventLog {
    pub fn start(hub: &Hub) -> EventLog {
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut rx = hub.events();
        let sink = events.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(HubEvent::Recording(ev)) => {
                        sink.lock().unwrap_or_else(|e| e.into_inner()).push(ev);
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        panic!("event log lagged by {n} events")
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        EventLog { events }
    }

    pub fn all(&self) -> Vec<RecordingEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `(object, bytes, duration)` of every finished segment, in order.
    pub fn finished(&self) -> Vec<(String, u64, Duration)> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                RecordingEvent::SegmentFinished {
                    object,
                    bytes,
                    duration,
                    ..
                } => Some((object, bytes, duration)),
                _ => None,
            })
            .collect()
    }

    /// The dropped durations of every gap.
    pub fn gaps(&self) -> Vec<Duration> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                RecordingEvent::Gap { dropped, .. } => Some(dropped),
                _ => None,
            })
            .collect()
    }

    pub fn failures(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                RecordingEvent::Failed { reason, .. } => Some(reason),
                _ => None,
            })
            .collect()
    }

    /// Waits until `n` segments have finished.
    pub async fn wait_finished(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<(String, u64, Duration)>> {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self.finished();
            if done.len() >= n {
                return Ok(done);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} of {n} segments finished within {timeout:?}; events: {:#?}",
                    done.len(),
                    self.all()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Writes `data` into `dir/name` and returns the path.
pub fn save(dir: &Path, name: &str, data: &[u8]) -> Result<PathBuf> {
    let file = dir.join(name.replace('/', "_"));
    std::fs::write(&file, data).with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

/// Decodes a recorded file fully; fails on any decoding error.
pub async fn decode_clean(file: &Path) -> Result<DecodeReport> {
    let report = decode_check(&file.to_string_lossy(), Duration::from_secs(600)).await?;
    report.ensure_clean()?;
    ensure!(report.dimensions == Some((640, 360)), "{report:#?}");
    ensure!(report.sample_rate == Some(48_000), "{report:#?}");
    Ok(report)
}

/// ffprobe's view of a file: its streams' codec names and the container duration.
pub async fn probe(file: &Path) -> Result<(Vec<String>, f64)> {
    let json = ffprobe_json(&file.to_string_lossy(), &[]).await?;
    let codecs = json["streams"]
        .as_array()
        .context("no streams")?
        .iter()
        .filter_map(|s| s["codec_name"].as_str().map(str::to_owned))
        .collect();
    let duration = json["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .with_context(|| format!("no duration: {json}"))?;
    Ok((codecs, duration))
}

/// Whether the first video frame of a file is a keyframe (an I-frame).
pub async fn starts_on_keyframe(file: &Path) -> Result<bool> {
    let json = ffprobe_json(
        &file.to_string_lossy(),
        &[
            "-select_streams",
            "v:0",
            "-show_frames",
            "-read_intervals",
            "%+#1",
        ],
    )
    .await?;
    let first = json["frames"]
        .as_array()
        .and_then(|f| f.first())
        .with_context(|| format!("no video frame in {}: {json}", file.display()))?;
    Ok(first["key_frame"].as_u64() == Some(1) || first["pict_type"] == "I")
}
