//! Segment writers: one segment's bytes into a local file or an object store.
//!
//! Both kinds sit behind [`SegmentWriter`], so naming, segmenting, muxing and events
//! are one code path (the recorder's) whatever the storage:
//!
//! - [`FileWriter`] writes straight into the final file (created with `create_new`,
//!   never overwriting), one `write` call per batch of muxed output, so after a
//!   `SIGKILL` the file holds everything written up to the last complete fragment,
//!   packet or tag; a failed write (a full disk) is cut back to the last whole one.
//!   It is synced to disk when the segment ends. (`object_store`'s
//!   local store stages into a temporary file and renames it on completion: a killed
//!   process would leave nothing playable.)
//! - [`ObjectWriter`](crate::upload::ObjectWriter) cuts the bytes into fixed-size
//!   multipart parts and uploads them in the background.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::SinkError;
use crate::stats::Stats;

/// How a segment ended.
#[derive(Debug)]
pub(crate) struct SegmentDone {
    /// Bytes stored (0: nothing was stored).
    pub(crate) bytes: u64,
    /// Why the segment is incomplete (or missing, with `bytes` 0), if it is.
    pub(crate) failure: Option<SinkError>,
}

/// Writes one segment. Methods are called by the recorder task, one at a time.
#[async_trait]
pub(crate) trait SegmentWriter: Send {
    /// Appends bytes (whole fragments, packets or tags, in order). An object writer
    /// only buffers and returns at once; a file writer returns once the bytes are in
    /// the file.
    async fn write(&mut self, data: Bytes) -> Result<(), SinkError>;

    /// Resolves when the writer has failed for good (a part could not be uploaded).
    /// Cancel-safe; never resolves for writers that report errors from `write`.
    async fn failed(&mut self) -> SinkError;

    /// Stores what was written and completes the segment: the last part is uploaded
    /// and the upload completed (or, if nothing was written, nothing is stored).
    /// After a failure, keeps what was stored before it and says why in
    /// [`SegmentDone::failure`]. `Err` means the writer itself is gone.
    async fn finish(self: Box<Self>) -> Result<SegmentDone, SinkError>;
}

/// A segment written straight into its final file.
pub(crate) struct FileWriter {
    file: tokio::fs::File,
    path: PathBuf,
    bytes: u64,
    stats: Arc<Stats>,
}

impl FileWriter {
    /// Creates the file (and its directories). Fails if the file exists: recordings
    /// are never overwritten.
    pub(crate) async fn create(path: PathBuf, stats: Arc<Stats>) -> Result<Self, SinkError> {
        let io_error = |op, source| SinkError::Io {
            op,
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_error("create directory for", e))?;
        }
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| io_error("create", e))?;
        Ok(Self {
            file,
            path,
            bytes: 0,
            stats,
        })
    }

    fn io_error(&self, op: &'static str, source: std::io::Error) -> SinkError {
        SinkError::Io {
            op,
            path: self.path.display().to_string(),
            source,
        }
    }
}

#[async_trait]
impl SegmentWriter for FileWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), SinkError> {
        if data.is_empty() {
            return Ok(());
        }
        // tokio's File hands writes to a blocking thread: flushing waits until the
        // bytes are in the file, so a killed process keeps them.
        let written = match self.file.write_all(&data).await {
            Ok(()) => self.file.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            // A partly written batch (a full disk) would leave a torn fragment at the
            // end: cut the file back to the last whole one, so it plays cleanly.
            let _ = self.file.set_len(self.bytes).await;
            return Err(self.io_error("write", e));
        }
        self.bytes += data.len() as u64;
        Stats::add(&self.stats.bytes_written, data.len() as u64);
        Ok(())
    }

    async fn failed(&mut self) -> SinkError {
        std::future::pending().await
    }

    async fn finish(mut self: Box<Self>) -> Result<SegmentDone, SinkError> {
        self.file
            .flush()
            .await
            .map_err(|e| self.io_error("write", e))?;
        if self.bytes == 0 {
            drop(self.file);
            tokio::fs::remove_file(&self.path)
                .await
                .map_err(|e| SinkError::Io {
                    op: "remove empty",
                    path: self.path.display().to_string(),
                    source: e,
                })?;
            return Ok(SegmentDone {
                bytes: 0,
                failure: None,
            });
        }
        // Durable once the segment is reported finished.
        self.file
            .sync_all()
            .await
            .map_err(|e| self.io_error("sync", e))?;
        Ok(SegmentDone {
            bytes: self.bytes,
            failure: None,
        })
    }
}

/// How object writers upload: part size, concurrency and retries.
#[derive(Clone, Debug)]
pub(crate) struct UploadSettings {
    pub(crate) part_size: usize,
    pub(crate) max_inflight_parts: usize,
    pub(crate) retry: cthulhu_core::supervisor::BackoffPolicy,
    pub(crate) give_up_after: Duration,
    pub(crate) attempt_timeout: Duration,
}
