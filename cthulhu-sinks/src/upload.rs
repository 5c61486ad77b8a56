//! Streaming one segment into an object store with multipart upload.
//!
//! The recorder side ([`ObjectWriter`]) only appends bytes and cuts them into parts
//! of exactly `part_size` bytes (all parts but the last have the same size, as R2
//! requires and S3's 5 MiB minimum allows). An uploader task per segment creates the
//! upload when the first part is ready (a segment smaller than one part is stored with
//! a single PUT instead), uploads at most `max_inflight_parts` parts at once, and
//! retries a failed part **under the same part number** with exponential backoff
//! (`MultipartStore::put_part`; the high-level `MultipartUpload` cannot retry a part).
//!
//! Memory: the bytes not yet uploaded are counted in the recording's
//! `buffered_bytes`; the recorder stops admitting media while they exceed its budget,
//! which bounds the uploader's queue (the channel to it is unbounded for that reason:
//! the byte budget is its bound).
//!
//! Failure: a part that fails with a permanent error (missing upload or bucket,
//! denied) or keeps failing past `give_up_after` fails the segment. The recorder is
//! told at once (and goes on in a new segment); the uploader lets the parts in flight
//! finish, then completes the upload with the parts before the first missing one, so
//! that nothing already uploaded is lost (or aborts it when there are none). Bytes
//! handed to the writer after the failed part are lost with it. Ending the writer without [`SegmentWriter::finish`] (the recorder was
//! dropped) completes the upload too.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use object_store::multipart::PartId;
use object_store::path::Path as ObjectPath;
use object_store::{MultipartId, PutOptions, PutPayload};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::SinkError;
use crate::stats::Stats;
use crate::storage::{MultipartObjectStore, object_path};
use crate::writer::{SegmentDone, SegmentWriter, UploadSettings};

enum Msg {
    Part(Bytes),
    Finish(Bytes),
}

/// The recorder's side of one segment upload.
pub(crate) struct ObjectWriter {
    key: String,
    part: BytesMut,
    part_size: usize,
    tx: Option<mpsc::UnboundedSender<Msg>>,
    task: Option<JoinHandle<SegmentDone>>,
    failed: watch::Receiver<Option<String>>,
    stats: Arc<Stats>,
}

impl ObjectWriter {
    /// Starts the uploader of object `key`. Nothing is sent before the first part is
    /// full (or the segment finishes).
    pub(crate) fn start(
        store: Arc<dyn MultipartObjectStore>,
        key: String,
        settings: UploadSettings,
        stats: Arc<Stats>,
    ) -> Result<Self, SinkError> {
        let path = object_path(&key)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (failed_tx, failed) = watch::channel(None);
        let uploader = Uploader {
            store,
            path,
            key: key.clone(),
            settings: settings.clone(),
            stats: stats.clone(),
            failed: failed_tx,
        };
        let task = tokio::spawn(uploader.run(rx));
        Ok(Self {
            key,
            part: BytesMut::with_capacity(settings.part_size.min(1 << 20)),
            part_size: settings.part_size.max(1),
            tx: Some(tx),
            task: Some(task),
            failed,
            stats,
        })
    }

    fn send(&mut self, msg: Msg) -> Result<(), SinkError> {
        let len = match &msg {
            Msg::Part(b) | Msg::Finish(b) => b.len() as u64,
        };
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok());
        if sent {
            Ok(())
        } else {
            self.stats.unbuffer(len);
            Err(SinkError::WriterGone(self.key.clone()))
        }
    }
}

#[async_trait]
impl SegmentWriter for ObjectWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), SinkError> {
        self.stats.buffer(data.len() as u64);
        Stats::add(&self.stats.bytes_written, data.len() as u64);
        self.part.extend_from_slice(&data);
        while self.part.len() >= self.part_size {
            let part = self.part.split_to(self.part_size).freeze();
            self.send(Msg::Part(part))?;
        }
        Ok(())
    }

    async fn failed(&mut self) -> SinkError {
        let key = self.key.clone();
        let reason = match self.failed.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            // The uploader ended without a failure: it only ends after `finish`.
            Err(_) => None,
        };
        match reason {
            Some(reason) => SinkError::Upload {
                object: key,
                reason,
            },
            None => std::future::pending().await,
        }
    }

    async fn finish(mut self: Box<Self>) -> Result<SegmentDone, SinkError> {
        let last = self.part.split().freeze();
        self.send(Msg::Finish(last))?;
        self.tx = None;
        let Some(task) = self.task.take() else {
            return Err(SinkError::WriterGone(self.key.clone()));
        };
        task.await
            .map_err(|_| SinkError::WriterGone(self.key.clone()))
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // Not finished (the recorder was dropped): the uploader completes what it has.
        if self.tx.is_some() {
            let last = self.part.split().freeze();
            let _ = self.send(Msg::Finish(last));
        }
    }
}

/// The uploader task of one segment.
struct Uploader {
    store: Arc<dyn MultipartObjectStore>,
    path: ObjectPath,
    key: String,
    settings: UploadSettings,
    stats: Arc<Stats>,
    failed: watch::Sender<Option<String>>,
}

enum Done {
    Created(Result<MultipartId, object_store::Error>),
    Part {
        idx: usize,
        len: u64,
        result: Result<PartId, object_store::Error>,
    },
}

impl Uploader {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Msg>) -> SegmentDone {
        let mut tasks: JoinSet<Done> = JoinSet::new();
        let mut queue: VecDeque<(usize, Bytes)> = VecDeque::new();
        let mut parts: Vec<Option<(PartId, u64)>> = Vec::new();
        let mut upload: Option<MultipartId> = None;
        let mut creating = false;
        let mut receiving = true;
        let mut next_idx = 0usize;
        let mut single: Option<Bytes> = None;
        let mut failure: Option<SinkError> = None;
        // Bytes received and not yet uploaded (or given up).
        let mut held: u64 = 0;
        let mut inflight = 0usize;
        loop {
            if failure.is_none() {
                match &upload {
                    Some(id) => {
                        while inflight < self.settings.max_inflight_parts.max(1) {
                            let Some((idx, data)) = queue.pop_front() else {
                                break;
                            };
                            inflight += 1;
                            tasks.spawn(self.put_part(id.clone(), idx, data));
                        }
                    }
                    None if !queue.is_empty() && !creating => {
                        creating = true;
                        tasks.spawn(self.create());
                    }
                    None => {}
                }
            }
            if !receiving && tasks.is_empty() && (queue.is_empty() || failure.is_some()) {
                break;
            }
            tokio::select! {
                msg = rx.recv(), if receiving => match msg {
                    Some(Msg::Part(b)) => {
                        held += b.len() as u64;
                        queue.push_back((next_idx, b));
                        next_idx += 1;
                    }
                    Some(Msg::Finish(b)) => {
                        receiving = false;
                        held += b.len() as u64;
                        if next_idx == 0 {
                            single = (!b.is_empty()).then_some(b);
                        } else if !b.is_empty() {
                            queue.push_back((next_idx, b));
                            next_idx += 1;
                        }
                    }
                    None => receiving = false,
                },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => match done {
                    Ok(Done::Created(Ok(id))) => {
                        creating = false;
                        debug!(object = %self.key, "Multipart upload created");
                        upload = Some(id);
                    }
                    Ok(Done::Created(Err(e))) => {
                        creating = false;
                        self.fail(&mut failure, storage_error("create upload", &self.key, e));
                    }
                    Ok(Done::Part { idx, len, result: Ok(id) }) => {
                        inflight -= 1;
                        held = held.saturating_sub(len);
                        self.stats.unbuffer(len);
                        Stats::add(&self.stats.parts_uploaded, 1);
                        if parts.len() <= idx {
                            parts.resize(idx + 1, None);
                        }
                        if let Some(slot) = parts.get_mut(idx) {
                            *slot = Some((id, len));
                        }
                    }
                    Ok(Done::Part { idx, result: Err(e), .. }) => {
                        inflight -= 1;
                        let op = format!("upload part {}", idx + 1);
                        self.fail(&mut failure, storage_error(&op, &self.key, e));
                    }
                    // A request task panicked.
                    Err(_) => {
                        self.fail(&mut failure, SinkError::WriterGone(self.key.clone()));
                        inflight = inflight.saturating_sub(1);
                    }
                },
            }
        }
        self.stats.unbuffer(held);
        let uploaded: Vec<(PartId, u64)> = parts.iter().map_while(Clone::clone).collect();
        match (upload, failure) {
            (None, None) => match single {
                None => SegmentDone {
                    bytes: 0,
                    failure: None,
                },
                Some(data) => {
                    let len = data.len() as u64;
                    let payload = PutPayload::from(data);
                    let result = self
                        .retry("store", None, || {
                            self.store
                                .put_opts(&self.path, payload.clone(), PutOptions::default())
                        })
                        .await;
                    match result {
                        Ok(_) => SegmentDone {
                            bytes: len,
                            failure: None,
                        },
                        Err(e) => SegmentDone {
                            bytes: 0,
                            failure: Some(storage_error("store", &self.key, e)),
                        },
                    }
                }
            },
            (None, Some(failure)) => SegmentDone {
                bytes: 0,
                failure: Some(failure),
            },
            (Some(id), failure) => {
                if failure.is_none() && uploaded.len() != parts.len() {
                    // Cannot happen: every queued part was uploaded or failed.
                    warn!(object = %self.key, "Parts missing at completion");
                }
                self.complete(&id, uploaded, failure).await
            }
        }
    }

    /// Records the first failure and tells the recorder. No new part is started; the
    /// parts in flight run to their end, since those before the failed one extend
    /// what can be kept.
    fn fail(&self, failure: &mut Option<SinkError>, error: SinkError) {
        if failure.is_some() {
            return;
        }
        warn!(object = %self.key, error = %error, "Segment upload failed");
        self.failed.send_replace(Some(error.to_string()));
        *failure = Some(error);
    }

    /// Completes the upload with `uploaded` (the parts before the first missing one),
    /// or aborts it when there are none.
    async fn complete(
        &self,
        id: &MultipartId,
        uploaded: Vec<(PartId, u64)>,
        failure: Option<SinkError>,
    ) -> SegmentDone {
        if uploaded.is_empty() {
            let aborted = self
                .retry("abort", None, || self.store.abort_multipart(&self.path, id))
                .await;
            if let Err(e) = aborted {
                warn!(object = %self.key, error = %e, "Could not abort the upload");
            }
            return SegmentDone { bytes: 0, failure };
        }
        let bytes: u64 = uploaded.iter().map(|(_, len)| len).sum();
        let count = uploaded.len();
        let ids: Vec<PartId> = uploaded.into_iter().map(|(id, _)| id).collect();
        let result = self
            .retry("complete", None, || {
                self.store.complete_multipart(&self.path, id, ids.clone())
            })
            .await;
        match result {
            Ok(_) => {
                if failure.is_some() {
                    info!(object = %self.key, bytes, parts = count, "Kept the parts uploaded before the failure");
                }
                SegmentDone { bytes, failure }
            }
            Err(e) => {
                let error = storage_error("complete", &self.key, e);
                warn!(object = %self.key, error = %error, "Could not complete the upload");
                SegmentDone {
                    bytes: 0,
                    failure: Some(failure.unwrap_or(error)),
                }
            }
        }
    }

    fn create(&self) -> impl Future<Output = Done> + Send + 'static {
        let this = self.detached();
        async move {
            let store = this.store.clone();
            let path = this.path.clone();
            Done::Created(
                this.retry("create upload", None, || store.create_multipart(&path))
                    .await,
            )
        }
    }

    fn put_part(
        &self,
        id: MultipartId,
        idx: usize,
        data: Bytes,
    ) -> impl Future<Output = Done> + Send + 'static {
        let this = self.detached();
        async move {
            let len = data.len() as u64;
            let payload = PutPayload::from(data);
            let store = this.store.clone();
            let path = this.path.clone();
            let result = this
                .retry("upload part", Some(idx), || {
                    store.put_part(&path, &id, idx, payload.clone())
                })
                .await;
            Done::Part { idx, len, result }
        }
    }

    /// What a spawned request needs (no channel ends).
    fn detached(&self) -> Retrier {
        Retrier {
            store: self.store.clone(),
            path: self.path.clone(),
            key: self.key.clone(),
            settings: self.settings.clone(),
            stats: self.stats.clone(),
        }
    }

    async fn retry<T, F, Fut>(
        &self,
        op: &str,
        part: Option<usize>,
        f: F,
    ) -> Result<T, object_store::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, object_store::Error>>,
    {
        self.detached().retry(op, part, f).await
    }
}

/// Runs one storage request with retries.
struct Retrier {
    store: Arc<dyn MultipartObjectStore>,
    path: ObjectPath,
    key: String,
    settings: UploadSettings,
    stats: Arc<Stats>,
}

impl Retrier {
    /// Tries `f` until it succeeds, fails permanently, or has failed for
    /// `give_up_after`; each attempt gets `attempt_timeout`.
    async fn retry<T, F, Fut>(
        &self,
        op: &str,
        part: Option<usize>,
        mut f: F,
    ) -> Result<T, object_store::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, object_store::Error>>,
    {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let error = match tokio::time::timeout(self.settings.attempt_timeout, f()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => e,
                Err(_) => object_store::Error::Generic {
                    store: "recorder",
                    source: format!("no answer within {:?}", self.settings.attempt_timeout).into(),
                },
            };
            attempt = attempt.saturating_add(1);
            let elapsed = started.elapsed();
            if is_permanent(&error) || elapsed >= self.settings.give_up_after {
                return Err(error);
            }
            let delay = self
                .settings
                .retry
                .delay(attempt, &mut rand::rng())
                .min(self.settings.give_up_after.saturating_sub(elapsed))
                .max(Duration::from_millis(1));
            if part.is_some() {
                Stats::add(&self.stats.part_retries, 1);
            }
            let part_number = part.map(|p| p + 1);
            warn!(
                object = %self.key, op, part = ?part_number, attempt, error = %error, retry_in = ?delay,
                "Storage request failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// Errors that retrying does not fix.
fn is_permanent(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    matches!(
        e,
        E::NotFound { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::Precondition { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::InvalidPath { .. }
            | E::AlreadyExists { .. }
            | E::UnknownConfigurationKey { .. }
    )
}

fn storage_error(op: &str, key: &str, source: object_store::Error) -> SinkError {
    SinkError::Storage {
        op: op.to_owned(),
        object: key.to_owned(),
        source,
    }
}
