//! Storage faults injected deterministically (object_store's in-memory store behind a
//! wrapper that fails chosen part uploads): retries under the same part number, and
//! what is kept when a part fails for good. Every object is compared byte for byte
//! with a local-file recording of the same stream. No external peers.

mod common;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, ensure};
use async_trait::async_trait;
use bytes::Bytes;
use common::{EventLog, hub, path, record_config};
use cthulhu_core::supervisor::BackoffPolicy;
use cthulhu_core::{CodecId, Frame, FrameFlags, Hub, Timestamp, TrackId};
use cthulhu_sinks::object_store::memory::InMemory;
use cthulhu_sinks::object_store::multipart::{MultipartStore, PartId};
use cthulhu_sinks::object_store::path::Path;
use cthulhu_sinks::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use cthulhu_sinks::{Container, Recorder, Storage};
use futures_util::stream::BoxStream;

type Result2<T> = cthulhu_sinks::object_store::Result<T>;

/// Decides whether the `attempt`-th upload (from 1) of part `idx` of the `upload`-th
/// multipart upload (from 1) fails, and how.
type FailRule =
    dyn Fn(usize, usize, usize) -> Option<cthulhu_sinks::object_store::Error> + Send + Sync;

/// InMemory with multipart uploads as S3 does them (completion takes the parts it is
/// given, whatever else was uploaded; InMemory insists on all of them) and part
/// uploads that fail on command.
struct Flaky {
    inner: InMemory,
    rule: Box<FailRule>,
    /// (upload number, part index) of every put_part call, in order.
    calls: Mutex<Vec<(usize, usize)>>,
    /// The parts of each upload, by upload number - 1.
    uploads: Mutex<Vec<std::collections::BTreeMap<usize, Bytes>>>,
}

impl Flaky {
    fn new(rule: Box<FailRule>) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: InMemory::new(),
            rule,
            calls: Mutex::new(Vec::new()),
            uploads: Mutex::new(Vec::new()),
        })
    }

    fn upload_number(id: &MultipartId) -> usize {
        id.parse().unwrap_or(0)
    }

    fn calls(&self) -> Vec<(usize, usize)> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl fmt::Debug for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Flaky")
    }
}

impl fmt::Display for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Flaky")
    }
}

fn transient() -> cthulhu_sinks::object_store::Error {
    cthulhu_sinks::object_store::Error::Generic {
        store: "Flaky",
        source: "connection reset (injected)".into(),
    }
}

#[async_trait]
impl ObjectStore for Flaky {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result2<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result2<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result2<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result2<Path>>,
    ) -> BoxStream<'static, Result2<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result2<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result2<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result2<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[async_trait]
impl MultipartStore for Flaky {
    async fn create_multipart(&self, _path: &Path) -> Result2<MultipartId> {
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        uploads.push(Default::default());
        Ok(uploads.len().to_string())
    }
    async fn put_part(
        &self,
        _path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> Result2<PartId> {
        let upload = Self::upload_number(id);
        let attempt = {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            calls.push((upload, part_idx));
            calls.iter().filter(|c| **c == (upload, part_idx)).count()
        };
        if let Some(e) = (self.rule)(upload, part_idx, attempt) {
            return Err(e);
        }
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let parts = uploads.get_mut(upload - 1).ok_or_else(transient)?;
        parts.insert(part_idx, Bytes::from(data));
        Ok(PartId {
            content_id: part_idx.to_string(),
        })
    }
    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> Result2<PutResult> {
        let mut object = Vec::new();
        {
            let uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
            let stored = uploads
                .get(Self::upload_number(id) - 1)
                .ok_or_else(transient)?;
            for part in &parts {
                let idx: usize = part.content_id.parse().unwrap_or(usize::MAX);
                object.extend_from_slice(stored.get(&idx).ok_or_else(transient)?);
            }
        }
        self.inner
            .put_opts(path, PutPayload::from(object), PutOptions::default())
            .await
    }
    async fn abort_multipart(&self, _path: &Path, _id: &MultipartId) -> Result2<()> {
        Ok(())
    }
}

/// A minimal AVCDecoderConfigurationRecord and an AAC-LC 48 kHz stereo config.
const AVC_CONFIG: &[u8] = &[
    0x01, 0x42, 0xC0, 0x0A, 0xFF, 0xE1, 0x00, 0x0A, 0x67, 0x42, 0xC0, 0x0A, 0xD9, 0x1E, 0x84, 0x00,
    0x00, 0x03, 0x01, 0x00, 0x04, 0x68, 0xCE, 0x3C, 0x80,
];
const ASC: &[u8] = &[0x11, 0x90];

/// Publishes `secs` of synthetic video (30 fps, keyframe every second, 3000-byte
/// frames) and audio, at about 15 times real time.
async fn publish_synthetic(hub: &Hub, secs: i64) -> Result<()> {
    let publisher = hub.publish(&path())?;
    let config = |track, codec, data: &'static [u8]| Frame {
        track,
        codec,
        pts: Timestamp(0),
        dts: Timestamp(0),
        flags: FrameFlags::CONFIG,
        data: Bytes::from_static(data),
    };
    publisher.send(config(TrackId::VIDEO, CodecId::H264, AVC_CONFIG));
    publisher.send(config(TrackId::AUDIO, CodecId::Aac, ASC));
    for i in 0..secs * 30 {
        let ms = i * 1000 / 30;
        let key = i % 30 == 0;
        let mut data = vec![0u8; 3000];
        data[..5].copy_from_slice(&[0, 0, 0x0B, 0xB4, if key { 0x65 } else { 0x41 }]);
        data[5..9].copy_from_slice(&(i as u32).to_be_bytes());
        publisher.send(Frame {
            track: TrackId::VIDEO,
            codec: CodecId::H264,
            pts: Timestamp::from_millis(ms),
            dts: Timestamp::from_millis(ms),
            flags: if key {
                FrameFlags::KEYFRAME
            } else {
                FrameFlags::NONE
            },
            data: Bytes::from(data),
        });
        publisher.send(Frame {
            track: TrackId::AUDIO,
            codec: CodecId::Aac,
            pts: Timestamp::from_millis(ms + 5),
            dts: Timestamp::from_millis(ms + 5),
            flags: FrameFlags::NONE,
            data: Bytes::from(vec![0x21; 200]),
        });
        // 15 times real time: the recorder keeps up, so a failure is noticed while
        // the stream goes on
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

const PART: usize = 4096;

/// Records the synthetic stream into the flaky store and, alongside, into local
/// files; returns the events, the stats of the object recording, the store and the
/// local directory.
async fn record(
    rule: Box<FailRule>,
    secs: i64,
) -> Result<(
    EventLog,
    cthulhu_sinks::RecordingStats,
    Arc<Flaky>,
    Arc<Storage>,
    Arc<Storage>,
    tempfile::TempDir,
)> {
    let flaky = Flaky::new(rule);
    let objects = Arc::new(Storage::with_store(flaky.clone(), "rec", "flaky")?);
    let dir = tempfile::tempdir()?;
    let files = Arc::new(Storage::local(dir.path()));
    let hub = hub();
    let events = EventLog::start(&hub);
    let mut config = record_config(Container::Flv, "{name}-{seq}.flv");
    config.part_size = PART;
    config.give_up_after = Duration::from_secs(3);
    config.retry.initial = Duration::from_millis(10);
    config.retry.max = Duration::from_millis(50);
    let policy = BackoffPolicy {
        initial: Duration::from_millis(50),
        ..BackoffPolicy::default()
    };
    let to_objects = Recorder::new("objects", &hub, path(), objects.clone(), config.clone())?
        .spawn(policy.clone());
    let to_files = Recorder::new("files", &hub, path(), files.clone(), config)?.spawn(policy);
    publish_synthetic(&hub, secs).await?;
    // Idle after having been live: the stream ended and the recording is finished.
    for handle in [&to_objects, &to_files] {
        let mut rx = handle.watch();
        let ended = rx.wait_for(|s| {
            s.connects >= 1 && s.state == cthulhu_core::supervisor::DestinationState::Idle
        });
        ensure!(
            tokio::time::timeout(Duration::from_secs(20), ended)
                .await
                .is_ok(),
            "recording did not end: {:?}",
            handle.status()
        );
    }
    let stats = to_objects.stats();
    to_objects.stop().await;
    to_files.stop().await;
    Ok((events, stats, flaky, objects, files, dir))
}

/// Parts 2 and 4 fail (twice and once) with a transient error: each is uploaded
/// again under its own number, and the object equals the local recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_parts_are_retried_under_their_own_number() -> Result<()> {
    let rule = Box::new(|_upload, idx, attempt| match (idx, attempt) {
        (1, 1 | 2) | (3, 1) => Some(transient()),
        _ => None,
    });
    let (events, stats, flaky, objects, files, _dir) = record(rule, 4).await?;
    ensure!(
        events.failures().is_empty() && events.gaps().is_empty(),
        "{:#?}",
        events.all()
    );
    ensure!(stats.part_retries == 3, "{stats:?}");
    let calls = flaky.calls();
    ensure!(
        calls.iter().filter(|c| **c == (1, 1)).count() == 3,
        "{calls:?}"
    );
    ensure!(
        calls.iter().filter(|c| **c == (1, 3)).count() == 2,
        "{calls:?}"
    );
    let object = objects.read("rec/studio-0001.flv").await?;
    let file = files.read(&files.locate("studio-0001.flv")).await?;
    ensure!(
        object == file,
        "object {} bytes, file {} bytes",
        object.len(),
        file.len()
    );
    ensure!(
        stats.parts_uploaded as usize == object.len().div_ceil(PART),
        "{stats:?}"
    );
    eprintln!(
        "{} bytes in {} parts, {} retries",
        object.len(),
        stats.parts_uploaded,
        stats.part_retries
    );
    Ok(())
}

/// Part 6 of the first upload fails for good: the parts before it are kept (the
/// object is the exact prefix of the local recording), the failure is reported, and
/// recording goes on in a second object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_failing_for_good_keeps_the_uploaded_prefix() -> Result<()> {
    let rule = Box::new(|upload, idx, _attempt| {
        (upload == 1 && idx == 5).then(|| cthulhu_sinks::object_store::Error::NotFound {
            path: "injected".into(),
            source: "NoSuchUpload (injected)".into(),
        })
    });
    let (events, stats, _flaky, objects, files, _dir) = record(rule, 6).await?;
    let failures = events.failures();
    ensure!(
        failures.len() == 1 && failures[0].contains("upload part 6"),
        "{:#?}",
        events.all()
    );
    let first = objects.read("rec/studio-0001.flv").await?;
    ensure!(first.len() == 5 * PART, "kept {} bytes", first.len());
    let file = files.read(&files.locate("studio-0001.flv")).await?;
    ensure!(
        file.starts_with(&first),
        "the kept object is not a prefix of the recording"
    );
    let second = objects.read("rec/studio-0002.flv").await?;
    ensure!(
        second.starts_with(b"FLV"),
        "the second segment has its own header"
    );
    let listed = objects.list().await?;
    ensure!(listed.len() == 2, "{listed:?}");
    eprintln!(
        "kept {} bytes, then {} bytes in segment 2; {stats:?}",
        first.len(),
        second.len()
    );
    Ok(())
}
