//! Counters of one recording, shared by its recorder and its segment writers.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one recording (all recordings of one [`crate::Recorder`]).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) segments_started: AtomicU64,
    pub(crate) segments_finished: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) bytes_stored: AtomicU64,
    pub(crate) parts_uploaded: AtomicU64,
    pub(crate) part_retries: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) dropped_ms: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) buffered_bytes: AtomicU64,
    pub(crate) peak_buffered_bytes: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds to the bytes held in memory, tracking the peak.
    pub(crate) fn buffer(&self, n: u64) {
        let now = self.buffered_bytes.fetch_add(n, Ordering::Relaxed) + n;
        self.peak_buffered_bytes.fetch_max(now, Ordering::Relaxed);
    }

    /// Takes bytes off the bytes held in memory.
    pub(crate) fn unbuffer(&self, n: u64) {
        let _ = self
            .buffered_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    pub(crate) fn snapshot(&self) -> RecordingStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RecordingStats {
            segments_started: get(&self.segments_started),
            segments_finished: get(&self.segments_finished),
            bytes_written: get(&self.bytes_written),
            bytes_stored: get(&self.bytes_stored),
            parts_uploaded: get(&self.parts_uploaded),
            part_retries: get(&self.part_retries),
            gaps: get(&self.gaps),
            dropped_ms: get(&self.dropped_ms),
            failures: get(&self.failures),
            buffered_bytes: get(&self.buffered_bytes),
            peak_buffered_bytes: get(&self.peak_buffered_bytes),
        }
    }
}

/// A snapshot of a recording's counters, for the console, metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordingStats {
    /// Segments opened.
    pub segments_started: u64,
    /// Segments completed and stored.
    pub segments_finished: u64,
    /// Muxed bytes handed to the storage.
    pub bytes_written: u64,
    /// Bytes in completed segments.
    pub bytes_stored: u64,
    /// Multipart parts uploaded (object storage).
    pub parts_uploaded: u64,
    /// Failed part uploads that were tried again (object storage).
    pub part_retries: u64,
    /// Gaps: times media was left out.
    pub gaps: u64,
    /// Media time left out, in milliseconds.
    pub dropped_ms: u64,
    /// Segments that failed.
    pub failures: u64,
    /// Bytes held in memory now, waiting for the storage.
    pub buffered_bytes: u64,
    /// The most bytes ever held in memory at once.
    pub peak_buffered_bytes: u64,
}
