//! The recorder: one stream path into segments in one storage, under the core
//! destination supervisor.
//!
//! Per publish session: wait for a resume point (a video keyframe; audio-only streams
//! start at an audio frame once no video configuration turned up for a second), open
//! a segment (render its name, open its writer, write the container header and the
//! codec configuration), mux frames into it, cut at the first resume point past the
//! duration or size limit, and finish the last segment when the stream ends or a stop
//! is requested. Finishing runs in a task of its own, so a segment is completed (and
//! reported) even if the supervisor drops the push after [`STOP_GRACE`].
//!
//! The recorder is an ordinary hub subscriber and never slows the publisher: when the
//! storage cannot keep up, bytes pile up in the writer until `max_buffered_bytes`,
//! then media is left out up to the next resume point once there is room again, and a
//! [`RecordingEvent::Gap`] reports the media time lost. If the recorder itself falls
//! behind, the hub skips its queue to the next keyframe, reported the same way.
//!
//! [`STOP_GRACE`]: cthulhu_core::supervisor::STOP_GRACE

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::BytesMut;
use cthulhu_core::hub::{OverflowPolicy, RecordingEvent, SubscribeOptions};
use cthulhu_core::supervisor::{
    BackoffPolicy, Destination, DestinationError, DestinationStatus, LiveSignal, Supervisor,
    SupervisorHandle,
};
use cthulhu_core::{
    Codec, CodecId, Frame, FrameFlags, Hub, MediaKind, StreamEvent, StreamInfo, StreamPath,
    Subscriber, Timestamp, TrackId, TrackInfo,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::SinkError;
use crate::mux::{Container, MuxIssue, SegmentMuxer, new_muxer};
use crate::segment::{Admit, Gate, SegmentLimits, Span, is_resume_point};
use crate::stats::{RecordingStats, Stats};
use crate::storage::{Backend, Storage};
use crate::template::NameTemplate;
use crate::upload::ObjectWriter;
use crate::writer::{FileWriter, SegmentDone, SegmentWriter, UploadSettings};

/// How long an audio-only start waits for a video configuration that may follow.
const AUDIO_ONLY_SETTLE: Timestamp = Timestamp(90_000);
/// Events handled before buffered output is handed to the writer.
const BATCH_EVENTS: usize = 64;
/// Names tried when a local file of the rendered name exists already.
const NAME_ATTEMPTS: u64 = 100;

/// Settings of one recording.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    /// The container.
    pub container: Container,
    /// Cut a segment at the first resume point after it covers this much media time.
    pub segment_duration: Option<Duration>,
    /// Cut a segment at the first resume point after it holds this many bytes.
    pub segment_bytes: Option<u64>,
    /// Object names.
    pub name_template: NameTemplate,
    /// Multipart part size in bytes (object storage; default 8 MiB). S3 and most
    /// S3-compatible stores require at least 5 MiB; all parts but a segment's last
    /// have exactly this size.
    pub part_size: usize,
    /// Parts uploaded at once (default 2).
    pub max_inflight_parts: usize,
    /// Bytes a recording may hold in memory for the storage (default 64 MiB; at least
    /// `part_size * (max_inflight_parts + 1)`). Past it, media is left out until the
    /// next keyframe after the storage caught up.
    pub max_buffered_bytes: usize,
    /// Delays between retries of a failed storage request (default 0.5 s doubling to
    /// 10 s, ±20 %).
    pub retry: BackoffPolicy,
    /// A storage request that keeps failing is given up after this long (default 5
    /// min): the segment ends, keeping what was uploaded, and a new one starts.
    pub give_up_after: Duration,
    /// Time allowed for one storage request (default 60 s).
    pub attempt_timeout: Duration,
    /// Bound of the recorder's hub queue in bytes (default 16 MiB): how far the
    /// recorder task itself may fall behind before the hub skips ahead.
    pub queue_bytes: usize,
}

impl RecordConfig {
    /// Default settings for a container and name template (no segmenting).
    pub fn new(container: Container, name_template: NameTemplate) -> Self {
        Self {
            container,
            segment_duration: None,
            segment_bytes: None,
            name_template,
            part_size: 8 << 20,
            max_inflight_parts: 2,
            max_buffered_bytes: 64 << 20,
            retry: BackoffPolicy {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(10),
                multiplier: 2.0,
                jitter: 0.2,
                reset_after: Duration::from_secs(60),
            },
            give_up_after: Duration::from_secs(300),
            attempt_timeout: Duration::from_secs(60),
            queue_bytes: 16 << 20,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), SinkError> {
        let bad = |what: String| Err(SinkError::Config(what));
        if self.segment_duration.is_some_and(|d| d.is_zero()) {
            return bad("segment_duration must be more than 0".into());
        }
        if self.segment_bytes == Some(0) {
            return bad("segment_bytes must be more than 0".into());
        }
        if self.part_size == 0 || self.max_inflight_parts == 0 {
            return bad("part_size and max_inflight_parts must be more than 0".into());
        }
        let min_buffer = self
            .part_size
            .saturating_mul(self.max_inflight_parts.saturating_add(1));
        if self.max_buffered_bytes < min_buffer {
            return bad(format!(
                "max_buffered_bytes ({}) must be at least part_size * (max_inflight_parts + 1) ({min_buffer})",
                self.max_buffered_bytes
            ));
        }
        if self.attempt_timeout.is_zero() {
            return bad("attempt_timeout must be more than 0".into());
        }
        Ok(())
    }

    fn upload(&self) -> UploadSettings {
        UploadSettings {
            part_size: self.part_size,
            max_inflight_parts: self.max_inflight_parts,
            retry: self.retry.clone(),
            give_up_after: self.give_up_after,
            attempt_timeout: self.attempt_timeout,
        }
    }

    fn limits(&self) -> SegmentLimits {
        SegmentLimits {
            duration: self.segment_duration,
            bytes: self.segment_bytes,
        }
    }
}

/// Reads a recording's counters.
#[derive(Clone, Debug)]
pub struct StatsProbe(Arc<Stats>);

impl StatsProbe {
    /// The counters now.
    pub fn snapshot(&self) -> RecordingStats {
        self.0.snapshot()
    }
}

/// One open segment.
struct Segment {
    object: String,
    seq: u64,
    writer: Box<dyn SegmentWriter>,
    muxer: Box<dyn SegmentMuxer>,
    tracks: Vec<TrackInfo>,
    span: Span,
    /// Muxed bytes handed to the writer.
    written: u64,
    /// Muxed output not yet handed to the writer.
    out: BytesMut,
    /// A frame was skipped by the muxer (logged once per segment).
    warned: bool,
}

impl Segment {
    /// Muxed bytes so far.
    fn size(&self) -> u64 {
        self.written + self.out.len() as u64
    }

    fn carries(&self, track: TrackId, codec: CodecId) -> bool {
        self.tracks
            .iter()
            .any(|t| t.id == track && t.codec.id() == codec)
    }
}

/// Records one stream path into segments. Run it under the destination supervisor
/// ([`Recorder::spawn`]) like a push: it waits for the path to go live, records each
/// publish session, and retries with backoff when the storage fails.
pub struct Recorder {
    name: String,
    path: StreamPath,
    storage: Arc<Storage>,
    config: RecordConfig,
    hub: Hub,
    sub: Subscriber,
    stats: Arc<Stats>,
    in_session: bool,
    configs: BTreeMap<TrackId, Frame>,
    /// Tracks without configuration records (MP3).
    bare_tracks: BTreeMap<TrackId, CodecId>,
    first_audio: Option<Timestamp>,
    seq: u64,
    gate: Gate,
    segment: Option<Segment>,
    /// Tasks finishing closed segments.
    finishing: Vec<tokio::task::JoinHandle<()>>,
    unsupported: HashSet<CodecId>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("storage", &self.storage)
            .field("container", &self.config.container)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder of `path` named `name` (the recording's config entry; shown in events
    /// and logs). Subscribes to the path at once, so nothing published from now on is
    /// missed.
    pub fn new(
        name: impl Into<String>,
        hub: &Hub,
        path: StreamPath,
        storage: Arc<Storage>,
        config: RecordConfig,
    ) -> Result<Self, SinkError> {
        config.validate()?;
        let name = name.into();
        let sub = hub.subscribe(
            &path,
            SubscribeOptions {
                label: format!("record:{name}"),
                queue_frames: Some(8192),
                queue_bytes: Some(config.queue_bytes),
                overflow: Some(OverflowPolicy::SkipToKeyframe),
            },
        );
        Ok(Self {
            name,
            path,
            storage,
            config,
            hub: hub.clone(),
            sub,
            stats: Arc::new(Stats::default()),
            in_session: false,
            configs: BTreeMap::new(),
            bare_tracks: BTreeMap::new(),
            first_audio: None,
            seq: 0,
            gate: Gate::default(),
            segment: None,
            finishing: Vec::new(),
            unsupported: HashSet::new(),
        })
    }

    /// The recording's counters.
    pub fn stats(&self) -> StatsProbe {
        StatsProbe(self.stats.clone())
    }

    /// What the supervisor shows as the destination: storage and name template.
    pub fn describe(&self) -> String {
        format!(
            "{} {} ({})",
            self.storage.describe(),
            self.config.name_template,
            self.config.container
        )
    }

    /// Runs the recorder under a [`Supervisor`]: recording starts when the path goes
    /// live and stops with [`RecordingHandle::stop`] (or when the handle is dropped).
    pub fn spawn(self, policy: BackoffPolicy) -> RecordingHandle {
        let stats = self.stats();
        let name = self.name.clone();
        let describe = self.describe();
        RecordingHandle {
            supervisor: Supervisor::spawn(name, describe, Box::new(self), policy),
            stats,
        }
    }

    fn emit(&self, event: RecordingEvent) {
        self.hub.emit_recording(event);
    }

    fn start_session(&mut self, info: &StreamInfo) {
        self.in_session = true;
        self.configs.clear();
        self.bare_tracks.clear();
        for t in &info.tracks {
            if t.codec.config().is_empty() {
                self.bare_tracks.insert(t.id, t.codec.id());
            } else {
                self.configs.insert(
                    t.id,
                    Frame {
                        track: t.id,
                        codec: t.codec.id(),
                        pts: Timestamp(0),
                        dts: Timestamp(0),
                        flags: FrameFlags::CONFIG,
                        data: t.codec.config().clone(),
                    },
                );
            }
        }
        self.first_audio = None;
        self.seq = 0;
        self.gate.reset();
        info!(recorder = %self.name, stream = %self.path, generation = info.generation, "Recording session started");
    }

    fn has_video(&self) -> bool {
        self.configs.values().any(|f| f.kind() == MediaKind::Video)
            || self
                .bare_tracks
                .values()
                .any(|c| c.kind() == MediaKind::Video)
    }

    fn tracks(&self) -> Vec<TrackInfo> {
        let mut tracks: Vec<TrackInfo> =
            self.configs
                .values()
                .map(|f| TrackInfo::new(f.track, Codec::from_config(f.codec, f.data.clone())))
                .chain(self.bare_tracks.iter().map(|(id, c)| {
                    TrackInfo::new(*id, Codec::from_config(*c, bytes::Bytes::new()))
                }))
                .collect();
        tracks.sort_by_key(|t| t.id);
        tracks
    }

    /// Whether a segment may start with this media frame.
    fn can_open(&mut self, frame: &Frame, has_video: bool) -> bool {
        if has_video {
            return is_resume_point(frame, true);
        }
        if frame.kind() != MediaKind::Audio {
            return false;
        }
        let first = *self.first_audio.get_or_insert(frame.dts);
        frame.dts - first >= AUDIO_ONLY_SETTLE
    }

    /// Handles one frame.
    async fn on_frame(&mut self, frame: Frame) -> Result<(), SinkError> {
        if !self.config.container.supports(frame.codec) {
            if self.unsupported.insert(frame.codec) {
                warn!(
                    recorder = %self.name, stream = %self.path, codec = %frame.codec,
                    container = %self.config.container, "Codec cannot be recorded in this container: track left out"
                );
            }
            return Ok(());
        }
        if frame.is_config() {
            return self.on_config(frame).await;
        }
        let known =
            self.configs.contains_key(&frame.track) || self.bare_tracks.contains_key(&frame.track);
        if !known {
            if frame.codec == CodecId::Mp3 {
                self.bare_tracks.insert(frame.track, frame.codec);
                if self
                    .segment
                    .as_ref()
                    .is_some_and(|s| !s.carries(frame.track, frame.codec))
                {
                    self.close_segment(None);
                }
            } else {
                debug!(recorder = %self.name, track = ?frame.track, "Media before its configuration: skipped");
                return Ok(());
            }
        }
        let has_video = self.has_video();
        let resume = is_resume_point(&frame, has_video);
        if resume
            && let Some(seg) = &self.segment
            && self
                .config
                .limits()
                .due(seg.span.elapsed_at(frame.dts), seg.size())
        {
            self.close_segment(Some(frame.dts));
        }
        let over_budget = self.stats.buffered_bytes.load(Ordering::Relaxed)
            > self.config.max_buffered_bytes as u64;
        let was_dropping = self.gate.is_dropping();
        match self.gate.admit(&frame, has_video, over_budget) {
            Admit::Drop => {
                if !was_dropping {
                    warn!(
                        recorder = %self.name, stream = %self.path,
                        buffered = self.stats.buffered_bytes.load(Ordering::Relaxed),
                        "Storage is not keeping up: leaving media out until the next keyframe"
                    );
                    if let Some(seg) = &mut self.segment {
                        seg.muxer.flush(&mut seg.out);
                    }
                }
                return Ok(());
            }
            Admit::ResumeAfterGap(dropped) => self.report_gap(dropped),
            Admit::Write => {}
        }
        if self.segment.is_none() {
            if !self.can_open(&frame, has_video) {
                return Ok(());
            }
            self.open_segment(frame.dts).await?;
        }
        let Some(seg) = &mut self.segment else {
            return Ok(());
        };
        match seg.muxer.frame(&frame, &mut seg.out) {
            Ok(()) => seg.span.add(&frame),
            Err(MuxIssue::NewSegment) => {
                self.close_segment(Some(frame.dts));
                if resume {
                    self.open_segment(frame.dts).await?;
                    if let Some(seg) = &mut self.segment {
                        match seg.muxer.frame(&frame, &mut seg.out) {
                            Ok(()) => seg.span.add(&frame),
                            Err(issue) => {
                                debug!(recorder = %self.name, ?issue, "Frame not recorded")
                            }
                        }
                    }
                }
            }
            Err(MuxIssue::Skipped(why)) => {
                if !seg.warned {
                    seg.warned = true;
                    warn!(recorder = %self.name, object = %seg.object, error = %why, "Frame not recorded");
                }
            }
        }
        Ok(())
    }

    async fn on_config(&mut self, frame: Frame) -> Result<(), SinkError> {
        let previous = self.configs.insert(frame.track, frame.clone());
        let Some(seg) = &mut self.segment else {
            return Ok(());
        };
        if !seg.carries(frame.track, frame.codec) {
            // A new track, or a codec change: the next segment gets the new set.
            info!(recorder = %self.name, object = %seg.object, track = ?frame.track, codec = %frame.codec, "Tracks changed: new segment");
            self.close_segment(None);
            return Ok(());
        }
        if previous.is_some_and(|p| p.data == frame.data) {
            return Ok(());
        }
        match seg.muxer.frame(&frame, &mut seg.out) {
            Ok(()) => {}
            Err(MuxIssue::NewSegment) => {
                info!(recorder = %self.name, object = %seg.object, "Codec configuration changed: new segment");
                self.close_segment(None);
            }
            Err(MuxIssue::Skipped(why)) => {
                warn!(recorder = %self.name, object = %seg.object, error = %why, "Configuration not recorded");
            }
        }
        Ok(())
    }

    fn report_gap(&self, dropped: Duration) {
        Stats::add(&self.stats.gaps, 1);
        Stats::add(
            &self.stats.dropped_ms,
            u64::try_from(dropped.as_millis()).unwrap_or(u64::MAX),
        );
        warn!(recorder = %self.name, stream = %self.path, dropped = ?dropped, "Recording resumed after a gap");
        self.emit(RecordingEvent::Gap {
            path: self.path.clone(),
            recorder: self.name.clone(),
            dropped,
        });
    }

    /// Opens the next segment, starting with a frame at `base`.
    async fn open_segment(&mut self, base: Timestamp) -> Result<(), SinkError> {
        let result = self.try_open_segment(base).await;
        if let Err(e) = &result {
            Stats::add(&self.stats.failures, 1);
            warn!(recorder = %self.name, stream = %self.path, error = %e, "Could not start a segment");
            self.emit(RecordingEvent::Failed {
                path: self.path.clone(),
                recorder: self.name.clone(),
                reason: e.to_string(),
            });
        }
        result
    }

    async fn try_open_segment(&mut self, base: Timestamp) -> Result<(), SinkError> {
        let tracks: Vec<TrackInfo> = self
            .tracks()
            .into_iter()
            .filter(|t| self.config.container.supports(t.codec.id()))
            .collect();
        let mut muxer = new_muxer(self.config.container, &tracks, base)?;
        let start = SystemTime::now();
        let mut seq = self.seq + 1;
        let (object, writer): (String, Box<dyn SegmentWriter>) = match &self.storage.backend {
            Backend::Local { .. } => {
                let mut attempt = 0;
                loop {
                    let name = self.config.name_template.render(&self.path, start, seq)?;
                    let object = self.storage.locate(&name);
                    match FileWriter::create(object.clone().into(), self.stats.clone()).await {
                        Ok(w) => break (object, Box::new(w)),
                        Err(SinkError::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::AlreadyExists
                                && attempt < NAME_ATTEMPTS =>
                        {
                            warn!(recorder = %self.name, object = %object, "File exists (never overwritten): trying the next sequence number");
                            attempt += 1;
                            seq += 1;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Backend::Object { store, .. } => {
                let name = self.config.name_template.render(&self.path, start, seq)?;
                let object = self.storage.locate(&name);
                let writer = ObjectWriter::start(
                    store.clone(),
                    object.clone(),
                    self.config.upload(),
                    self.stats.clone(),
                )?;
                (object, Box::new(writer))
            }
        };
        let mut out = BytesMut::with_capacity(64 << 10);
        muxer.header(&mut out);
        for config in self.configs.values() {
            if !tracks.iter().any(|t| t.id == config.track) {
                continue;
            }
            let at_start = Frame {
                pts: base,
                dts: base,
                ..config.clone()
            };
            if let Err(issue) = muxer.frame(&at_start, &mut out) {
                debug!(recorder = %self.name, ?issue, "Configuration not written at segment start");
            }
        }
        self.seq = seq;
        Stats::add(&self.stats.segments_started, 1);
        info!(recorder = %self.name, stream = %self.path, object = %object, seq, "Segment started");
        self.emit(RecordingEvent::Started {
            path: self.path.clone(),
            recorder: self.name.clone(),
            object: object.clone(),
            seq,
        });
        self.segment = Some(Segment {
            object,
            seq,
            writer,
            muxer,
            tracks,
            span: Span::default(),
            written: 0,
            out,
            warned: false,
        });
        Ok(())
    }

    /// Hands the pending output of the open segment to its writer. A write error ends
    /// the segment (keeping what was stored) and is returned.
    async fn write_out(&mut self) -> Result<(), SinkError> {
        let Some(seg) = &mut self.segment else {
            return Ok(());
        };
        if seg.out.is_empty() {
            return Ok(());
        }
        let data = seg.out.split().freeze();
        seg.written += data.len() as u64;
        if let Err(e) = seg.writer.write(data).await {
            self.close_segment(None);
            self.gate.skipped_upstream();
            return Err(e);
        }
        Ok(())
    }

    /// Ends the open segment: muxer trailer, last write, completion and its event run
    /// in a task of their own, so recording goes on meanwhile (their bytes still count
    /// against the memory budget) and a dropped push does not stop them.
    /// `next_start`: where the next segment starts, if it follows at once.
    fn close_segment(&mut self, next_start: Option<Timestamp>) {
        let Some(mut seg) = self.segment.take() else {
            return;
        };
        seg.muxer.finish(&mut seg.out);
        let tail = seg.out.split().freeze();
        let duration = seg.span.duration(next_start);
        let written = seg.size().max(1);
        let hub = self.hub.clone();
        let stats = self.stats.clone();
        let path = self.path.clone();
        let recorder = self.name.clone();
        let Segment {
            object,
            seq,
            mut writer,
            ..
        } = seg;
        let finishing = tokio::spawn(async move {
            let write_error = writer.write(tail).await.err();
            let done = writer.finish().await;
            report_segment(ReportContext {
                hub: &hub,
                stats: &stats,
                path,
                recorder,
                object,
                seq,
                duration,
                written,
                write_error,
                done,
            });
        });
        self.finishing.retain(|task| !task.is_finished());
        self.finishing.push(finishing);
    }

    /// Waits until every closed segment is completed and reported.
    async fn finish_all(&mut self) {
        for task in self.finishing.drain(..) {
            if task.await.is_err() {
                warn!(recorder = %self.name, "Segment finishing task failed");
            }
        }
    }

    /// Handles one hub event. `Some(result)`: the push is over.
    async fn handle(&mut self, event: Option<StreamEvent>) -> Option<Result<(), DestinationError>> {
        match event {
            None => {
                self.close_segment(None);
                self.finish_all().await;
                self.in_session = false;
                Some(Ok(()))
            }
            Some(StreamEvent::Started(info)) => {
                // A new session without the end of the last one (collapsed in the queue).
                self.close_segment(None);
                self.start_session(&info);
                None
            }
            Some(StreamEvent::Updated(_)) => None,
            Some(StreamEvent::Gap { dropped }) => {
                debug!(recorder = %self.name, dropped, "Recorder fell behind the stream: the hub skipped to a keyframe");
                self.gate.skipped_upstream();
                if let Some(seg) = &mut self.segment {
                    seg.muxer.flush(&mut seg.out);
                }
                None
            }
            Some(StreamEvent::Ended(reason)) => {
                info!(recorder = %self.name, stream = %self.path, reason = %reason, "Stream ended: finishing the recording");
                self.close_segment(None);
                self.finish_all().await;
                self.in_session = false;
                Some(Ok(()))
            }
            Some(StreamEvent::Frame(frame)) => match self.on_frame(frame).await {
                Ok(()) => None,
                Err(e) => Some(Err(DestinationError::Push(e.to_string()))),
            },
        }
    }
}

/// What [`report_segment`] needs.
struct ReportContext<'a> {
    hub: &'a Hub,
    stats: &'a Stats,
    path: StreamPath,
    recorder: String,
    object: String,
    seq: u64,
    duration: Duration,
    written: u64,
    write_error: Option<SinkError>,
    done: Result<SegmentDone, SinkError>,
}

/// Counts and announces how a segment ended.
fn report_segment(cx: ReportContext<'_>) {
    let (bytes, failure) = match cx.done {
        Ok(SegmentDone { bytes, failure }) => (bytes, failure.or(cx.write_error)),
        Err(e) => (0, Some(e)),
    };
    if bytes > 0 {
        // An incomplete segment covers about its stored share of the media time.
        let duration = if failure.is_some() && bytes < cx.written {
            cx.duration.mul_f64(bytes as f64 / cx.written as f64)
        } else {
            cx.duration
        };
        Stats::add(&cx.stats.segments_finished, 1);
        Stats::add(&cx.stats.bytes_stored, bytes);
        info!(recorder = %cx.recorder, object = %cx.object, seq = cx.seq, bytes, duration = ?duration, "Segment finished");
        cx.hub.emit_recording(RecordingEvent::SegmentFinished {
            path: cx.path.clone(),
            recorder: cx.recorder.clone(),
            object: cx.object.clone(),
            bytes,
            duration,
        });
    } else if failure.is_none() {
        debug!(recorder = %cx.recorder, object = %cx.object, "Empty segment: nothing stored");
    }
    if let Some(e) = failure {
        Stats::add(&cx.stats.failures, 1);
        warn!(recorder = %cx.recorder, object = %cx.object, error = %e, stored = bytes, "Segment failed");
        cx.hub.emit_recording(RecordingEvent::Failed {
            path: cx.path,
            recorder: cx.recorder,
            reason: e.to_string(),
        });
    }
}

/// Resolves when the open segment's writer has failed.
async fn writer_failed(segment: &mut Option<Segment>) -> SinkError {
    match segment {
        Some(seg) => seg.writer.failed().await,
        None => std::future::pending().await,
    }
}

#[async_trait]
impl Destination for Recorder {
    fn activity(&self) -> &'static str {
        "Recording"
    }

    async fn wait_for_stream(&mut self) -> bool {
        if self.in_session {
            return true;
        }
        loop {
            match self.sub.recv().await {
                Some(StreamEvent::Started(info)) => {
                    self.start_session(&info);
                    return true;
                }
                Some(_) => {}
                None => return false,
            }
        }
    }

    async fn push(&mut self, live: &LiveSignal) -> Result<(), DestinationError> {
        if !self.in_session {
            return Ok(());
        }
        live.set_live();
        loop {
            let first = tokio::select! {
                biased;
                () = live.stopping() => {
                    info!(recorder = %self.name, stream = %self.path, "Stop requested: finishing the recording");
                    self.close_segment(None);
                    self.finish_all().await;
                    return Ok(());
                }
                error = writer_failed(&mut self.segment) => {
                    self.close_segment(None);
                    // What follows, up to the next keyframe of a new segment, is a gap.
                    self.gate.skipped_upstream();
                    return Err(DestinationError::Push(error.to_string()));
                }
                event = self.sub.recv() => event,
            };
            let mut next = Some(first);
            let mut handled = 0;
            while let Some(event) = next.take() {
                if let Some(result) = self.handle(event).await {
                    return result;
                }
                handled += 1;
                if handled < BATCH_EVENTS {
                    next = self.sub.try_recv().map(Some);
                }
            }
            if let Err(e) = self.write_out().await {
                return Err(DestinationError::Push(e.to_string()));
            }
        }
    }
}

/// A running recording: its supervisor and counters. Dropping it stops the recording
/// (finishing the open segment in the background).
#[derive(Debug)]
#[must_use = "dropping the handle stops the recording"]
pub struct RecordingHandle {
    supervisor: SupervisorHandle,
    stats: StatsProbe,
}

impl RecordingHandle {
    /// Stops recording: the open segment is finished (last part uploaded, upload
    /// completed) and reported; waits up to the supervisor's stop grace for it.
    pub async fn stop(self) {
        self.supervisor.stop().await;
    }

    /// The supervisor's status (idle, live = recording, retrying, stopped).
    pub fn status(&self) -> DestinationStatus {
        self.supervisor.status()
    }

    /// What `f` reads of the current status, without copying it.
    pub fn inspect_status<R>(&self, f: impl FnOnce(&DestinationStatus) -> R) -> R {
        self.supervisor.inspect(f)
    }

    /// Status changes.
    pub fn watch(&self) -> watch::Receiver<DestinationStatus> {
        self.supervisor.watch()
    }

    /// The recording's counters.
    pub fn stats(&self) -> RecordingStats {
        self.stats.snapshot()
    }
}
