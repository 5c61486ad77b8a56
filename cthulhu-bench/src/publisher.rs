//! The real-time publisher: sends an FLV file's tag bodies unchanged as RTMP
//! messages, looping with continuous, increasing timestamps, and logs when each
//! video message went out (by body hash) for the latency probes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cthulhu_core::Timestamp;
use cthulhu_core::format::flv::{self, FlvReader, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use cthulhu_rtmp::chunk::{
    CSID_AUDIO, CSID_DATA, CSID_VIDEO, Chunker, Message, TYPE_AUDIO, TYPE_DATA_AMF0, TYPE_VIDEO,
};
use cthulhu_rtmp::client::ServerNotice;
use cthulhu_rtmp::{ClientConfig, PublishingClient, RtmpUrl};
use cthulhu_srt::CallerConfig;
use cthulhu_srt::pump::TsPump;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::BenchError;
use crate::key::{VideoKey, last_nal_key};
use crate::stats::SentLog;

/// `@setDataFrame` as an AMF0 string: what a publisher puts before `onMetaData`.
const SET_DATA_FRAME: &[u8] = b"\x02\x00\x0d@setDataFrame";

/// One tag of the input file.
#[derive(Debug, Clone)]
struct Tag {
    tag_type: u8,
    /// Milliseconds from the file's first tag.
    ts: u32,
    body: Bytes,
    /// A sequence header or metadata: sent in the first loop only.
    first_loop_only: bool,
}

/// An FLV file in memory, ready to be published in a loop.
#[derive(Debug, Clone)]
pub struct MediaFile {
    tags: Vec<Tag>,
    /// The timestamp offset between two loops, ms.
    loop_ms: u32,
    /// Body bytes of one loop without the first-loop-only tags.
    loop_bytes: u64,
}

impl MediaFile {
    /// Reads an FLV file.
    pub fn load(path: &Path) -> Result<Self, BenchError> {
        let data = std::fs::read(path).map_err(|source| BenchError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(Bytes::from(data))
    }

    /// Parses an FLV file held in memory. Only audio, video and script tags are kept.
    pub fn from_bytes(data: Bytes) -> Result<Self, BenchError> {
        let reader = FlvReader::new(data).map_err(|e| BenchError::Flv(e.to_string()))?;
        let mut tags = Vec::new();
        let mut first_ts = None;
        for tag in reader {
            let tag = tag.map_err(|e| BenchError::Flv(e.to_string()))?;
            if !matches!(tag.tag_type, TAG_AUDIO | TAG_VIDEO | TAG_SCRIPT) || tag.body.is_empty() {
                continue;
            }
            let base = *first_ts.get_or_insert(tag.timestamp_ms);
            let first_loop_only = match tag.tag_type {
                TAG_SCRIPT => true,
                // AVC sequence header (codec 7, packet type 0) or an enhanced-RTMP sequence start.
                TAG_VIDEO => {
                    let b0 = tag.body.first().copied().unwrap_or(0);
                    let b1 = tag.body.get(1).copied().unwrap_or(1);
                    (b0 & 0x0F == 7 && b1 == 0) || (b0 & 0x80 != 0 && b0 & 0x0F == 0)
                }
                // AAC sequence header (sound format 10, packet type 0).
                _ => {
                    let b0 = tag.body.first().copied().unwrap_or(0);
                    let b1 = tag.body.get(1).copied().unwrap_or(1);
                    b0 >> 4 == 10 && b1 == 0
                }
            };
            tags.push(Tag {
                tag_type: tag.tag_type,
                ts: tag.timestamp_ms.wrapping_sub(base),
                body: tag.body,
                first_loop_only,
            });
        }
        if !tags
            .iter()
            .any(|t| t.tag_type == TAG_VIDEO && !t.first_loop_only)
        {
            return Err(BenchError::Flv("the file has no video frames".into()));
        }
        // One loop lasts up to the last tag plus one typical video frame interval.
        let video: Vec<u32> = tags
            .iter()
            .filter(|t| t.tag_type == TAG_VIDEO && !t.first_loop_only)
            .map(|t| t.ts)
            .collect();
        let mut deltas: Vec<u32> = video
            .windows(2)
            .filter_map(|w| match w {
                [a, b] if b > a => Some(b - a),
                _ => None,
            })
            .collect();
        deltas.sort_unstable();
        let frame = deltas.get(deltas.len() / 2).copied().unwrap_or(33);
        let last = tags.iter().map(|t| t.ts).max().unwrap_or(0);
        let loop_bytes = tags
            .iter()
            .filter(|t| !t.first_loop_only)
            .map(|t| t.body.len() as u64)
            .sum();
        Ok(Self {
            tags,
            loop_ms: last.saturating_add(frame).max(1),
            loop_bytes,
        })
    }

    /// The duration of one loop.
    pub fn loop_duration(&self) -> Duration {
        Duration::from_millis(u64::from(self.loop_ms))
    }

    /// The average bitrate of the message bodies, in bit/s.
    pub fn bitrate_bps(&self) -> f64 {
        self.loop_bytes as f64 * 8.0 / (f64::from(self.loop_ms) / 1000.0)
    }
}

/// Walks a file's tags in real time, looping with continuous, increasing
/// timestamps; sequence headers and metadata go out in the first loop only.
struct Pacer<'a> {
    file: &'a MediaFile,
    start: Instant,
    lap: u64,
    i: usize,
}

impl<'a> Pacer<'a> {
    fn new(file: &'a MediaFile) -> Self {
        Self {
            file,
            start: Instant::now(),
            lap: 0,
            i: 0,
        }
    }

    /// The next tag due at `now`, with its timestamp in ms from the start, or when
    /// the next one is due. (The file has a media tag: `MediaFile` checks.)
    fn next_due(&mut self, now: Instant) -> Result<(&'a Tag, u64), Instant> {
        loop {
            let Some(tag) = self.file.tags.get(self.i) else {
                self.i = 0;
                self.lap += 1;
                continue;
            };
            let ts = u64::from(tag.ts) + self.lap * u64::from(self.file.loop_ms);
            let due = self.start + Duration::from_millis(ts);
            if due > now {
                return Err(due);
            }
            self.i += 1;
            if self.lap > 0 && tag.first_loop_only {
                continue;
            }
            return Ok((tag, ts));
        }
    }
}

/// What the publisher has sent so far.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// RTMP message body bytes written.
    pub body_bytes: AtomicU64,
    /// Video messages written.
    pub video_messages: AtomicU64,
}

/// Publisher settings.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// Where to publish.
    pub url: RtmpUrl,
    /// Outbound chunk size.
    pub chunk_size: u32,
    /// How video messages are logged for the probes.
    pub video_key: VideoKey,
}

/// Connects and publishes `file` in real time until `stop` turns true. `live` is
/// set once the server accepted the publish.
pub async fn publish(
    cfg: PublishConfig,
    file: Arc<MediaFile>,
    stats: Arc<PublisherStats>,
    sent: Arc<SentLog>,
    live: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BenchError> {
    let client_cfg = ClientConfig {
        chunk_size: cfg.chunk_size,
        ..ClientConfig::default()
    };
    let mut client = PublishingClient::connect(&cfg.url, &client_cfg)
        .await
        .map_err(|e| BenchError::Publish(format!("connecting: {e}")))?;
    info!(
        server = client.info.server_version.as_deref().unwrap_or("?"),
        "Publishing"
    );
    live.send_replace(true);
    let mut chunker = Chunker::new(cfg.chunk_size);
    let stream_id = client.stream_id;
    let mut pacer = Pacer::new(&file);
    let mut out: Vec<Bytes> = Vec::new();
    loop {
        if *stop.borrow() {
            break;
        }
        // Everything due now goes out in one write.
        let now = Instant::now();
        let due = loop {
            let (tag, ts) = match pacer.next_due(now) {
                Ok(t) => t,
                Err(due) => break due,
            };
            let (csid, type_id, prefix): (u32, u8, &[u8]) = match tag.tag_type {
                TAG_VIDEO => (CSID_VIDEO, TYPE_VIDEO, &[]),
                TAG_AUDIO => (CSID_AUDIO, TYPE_AUDIO, &[]),
                _ => (CSID_DATA, TYPE_DATA_AMF0, SET_DATA_FRAME),
            };
            chunker
                .push(
                    Message {
                        csid,
                        type_id,
                        stream_id,
                        // RTMP timestamps are 32-bit milliseconds that wrap.
                        timestamp: ts as u32,
                        prefix,
                        payload: &tag.body,
                    },
                    &mut out,
                )
                .map_err(|e| BenchError::Publish(e.to_string()))?;
            if tag.tag_type == TAG_VIDEO {
                if let Some(k) = cfg.video_key.of_flv_body(&tag.body) {
                    sent.record(k, now.into_std());
                }
                stats.video_messages.fetch_add(1, Ordering::Relaxed);
            }
            stats
                .body_bytes
                .fetch_add((prefix.len() + tag.body.len()) as u64, Ordering::Relaxed);
        };
        if !out.is_empty() {
            client
                .write_media(&mut out)
                .await
                .map_err(|e| BenchError::Publish(format!("writing: {e}")))?;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            r = client.poll_server() => match r {
                Ok(None) => {}
                Ok(Some(ServerNotice::Stopped(why))) => {
                    return Err(BenchError::Publish(format!("the server stopped the publish: {why}")));
                }
                Err(e) => return Err(BenchError::Publish(format!("reading: {e}"))),
            },
        }
    }
    if tokio::time::timeout(Duration::from_secs(2), client.close())
        .await
        .is_err()
    {
        warn!("Unpublishing timed out");
    }
    Ok(())
}

/// Publishes `file` in real time over SRT as MPEG-TS until `stop` turns true:
/// the tags become core frames, muxed by the same [`TsPump`] the server's SRT
/// players use, in 1316-byte messages. `live` is set once the server accepted the
/// connection. Video frames are logged by [`VideoKey::LastNal`].
pub async fn publish_srt(
    caller: CallerConfig,
    file: Arc<MediaFile>,
    stats: Arc<PublisherStats>,
    sent: Arc<SentLog>,
    live: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BenchError> {
    let conn = cthulhu_srt::connect(caller)
        .await
        .map_err(|e| BenchError::Publish(format!("connecting: {e}")))?;
    info!(
        latency_ms = conn.latency().as_millis() as u64,
        "Publishing over SRT"
    );
    let (mut tx, mut rx) = conn.split();
    live.send_replace(true);
    let mut pump = TsPump::new();
    let mut pacer = Pacer::new(&file);
    let mut out: Vec<Bytes> = Vec::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let now = Instant::now();
        let mut keys = Vec::new();
        let due = loop {
            let (tag, ts) = match pacer.next_due(now) {
                Ok(t) => t,
                Err(due) => break due,
            };
            let dts = Timestamp::from_millis(ts as i64);
            let frame = flv::tag_to_frame(tag.tag_type, &tag.body, dts)
                .map_err(|e| BenchError::Flv(e.to_string()))?;
            stats
                .body_bytes
                .fetch_add(tag.body.len() as u64, Ordering::Relaxed);
            let Some(frame) = frame else { continue };
            pump.frame(&frame)
                .map_err(|e| BenchError::Publish(format!("muxing: {e}")))?;
            if tag.tag_type == TAG_VIDEO && !frame.is_config() {
                keys.extend(last_nal_key(&frame.data));
                stats.video_messages.fetch_add(1, Ordering::Relaxed);
            }
        };
        pump.take_messages(&mut out);
        let sent_at = Instant::now().into_std();
        for k in keys {
            sent.record(k, sent_at);
        }
        for msg in out.drain(..) {
            tx.send(msg)
                .await
                .map_err(|e| BenchError::Publish(format!("sending: {e}")))?;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            m = rx.recv() => if m.is_none() {
                return Err(BenchError::Publish("the server closed the connection".into()));
            },
        }
    }
    tx.close().await;
    Ok(())
}
