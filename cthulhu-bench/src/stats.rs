//! Measurements shared between the tasks that take them and the coordinator that
//! reads them: one writer per counter (relaxed atomics), a common clock, the
//! measurement window, the publisher's send log and the latency samples.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Microsecond timestamps since one instant, shared by every task of a run.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// Microseconds since the epoch.
    pub fn now_us(&self) -> u64 {
        self.at_us(Instant::now())
    }

    /// `t` in microseconds since the epoch (0 for earlier instants).
    pub fn at_us(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_micros() as u64
    }
}

const UNSET: u64 = u64::MAX;

/// The measurement window: open from [`Window::open`] to [`Window::close`].
#[derive(Debug)]
pub struct Window {
    start_us: AtomicU64,
    end_us: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Self::new()
    }
}

impl Window {
    /// A window that has not opened yet.
    pub fn new() -> Self {
        Self {
            start_us: AtomicU64::new(UNSET),
            end_us: AtomicU64::new(UNSET),
        }
    }

    /// Opens the window at `t_us`.
    pub fn open(&self, t_us: u64) {
        self.start_us.store(t_us, Ordering::Release);
    }

    /// Closes the window at `t_us`.
    pub fn close(&self, t_us: u64) {
        self.end_us.store(t_us, Ordering::Release);
    }

    /// Whether `t_us` lies in the window.
    pub fn contains(&self, t_us: u64) -> bool {
        let start = self.start_us.load(Ordering::Acquire);
        start != UNSET && t_us >= start && t_us <= self.end_us.load(Ordering::Acquire)
    }

    /// For a read at `t_us` inside the window, the time since the previous read
    /// at `prev_us` or since the window opened, whichever is later.
    pub fn gap(&self, prev_us: u64, t_us: u64) -> Option<u64> {
        let start = self.start_us.load(Ordering::Acquire);
        if start == UNSET || t_us < start || t_us > self.end_us.load(Ordering::Acquire) {
            return None;
        }
        Some(t_us - prev_us.max(start))
    }
}

/// Where a player (or relay destination) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PeerState {
    /// Connecting, handshaking or exchanging commands.
    Connecting = 0,
    /// Playing (or, for a relay destination, publishing to us).
    Active = 1,
    /// Failed or closed.
    Gone = 2,
}

/// The counters of one receiving connection, written only by its own task.
#[derive(Debug)]
pub struct PeerStats {
    state: AtomicU8,
    bytes: AtomicU64,
    media_bytes: AtomicU64,
    last_read_us: AtomicU64,
    max_gap_us: AtomicU64,
}

impl Default for PeerStats {
    fn default() -> Self {
        Self::new()
    }
}

/// A copy of a [`PeerStats`] at one instant.
#[derive(Debug, Clone, Copy)]
pub struct PeerSnapshot {
    /// State.
    pub state: PeerState,
    /// All bytes read.
    pub bytes: u64,
    /// Body bytes of audio, video and data messages.
    pub media_bytes: u64,
    /// Time of the last read (µs since the run's epoch; 0 before any).
    pub last_read_us: u64,
    /// Largest gap between reads inside the window so far, in µs.
    pub max_gap_us: u64,
}

impl PeerStats {
    /// Counters at zero, connecting.
    pub fn new() -> Self {
        Self {
            state: AtomicU8::new(PeerState::Connecting as u8),
            bytes: AtomicU64::new(0),
            media_bytes: AtomicU64::new(0),
            last_read_us: AtomicU64::new(0),
            max_gap_us: AtomicU64::new(0),
        }
    }

    /// Sets the state.
    pub fn set_state(&self, s: PeerState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// The state.
    pub fn state(&self) -> PeerState {
        match self.state.load(Ordering::Relaxed) {
            0 => PeerState::Connecting,
            1 => PeerState::Active,
            _ => PeerState::Gone,
        }
    }

    /// Records a read at `t_us` that brought the totals to `bytes` and `media_bytes`.
    pub fn record_read(&self, window: &Window, t_us: u64, bytes: u64, media_bytes: u64) {
        let prev = self.last_read_us.load(Ordering::Relaxed);
        if let Some(gap) = window.gap(prev, t_us)
            && gap > self.max_gap_us.load(Ordering::Relaxed)
        {
            self.max_gap_us.store(gap, Ordering::Relaxed);
        }
        self.last_read_us.store(t_us, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        self.media_bytes.store(media_bytes, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> PeerSnapshot {
        PeerSnapshot {
            state: self.state(),
            bytes: self.bytes.load(Ordering::Relaxed),
            media_bytes: self.media_bytes.load(Ordering::Relaxed),
            last_read_us: self.last_read_us.load(Ordering::Relaxed),
            max_gap_us: self.max_gap_us.load(Ordering::Relaxed),
        }
    }
}

/// When the publisher sent each recent video message, by body hash.
///
/// Bounded: entries older than the retention are dropped as new ones come in, so
/// a looping file's repeated bodies match their latest sending.
#[derive(Debug)]
pub struct SentLog {
    inner: Mutex<SentInner>,
}

#[derive(Debug)]
struct SentInner {
    keep: Duration,
    by_hash: HashMap<u64, Instant>,
    order: VecDeque<(Instant, u64)>,
}

impl SentLog {
    /// A log that keeps `keep` worth of entries.
    pub fn new(keep: Duration) -> Self {
        Self {
            inner: Mutex::new(SentInner {
                keep,
                by_hash: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// Records that a message with body hash `hash` was sent at `t`.
    pub fn record(&self, hash: u64, t: Instant) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let keep = g.keep;
        while let Some(&(old_t, old_h)) = g.order.front() {
            if t.saturating_duration_since(old_t) <= keep {
                break;
            }
            g.order.pop_front();
            if g.by_hash.get(&old_h) == Some(&old_t) {
                g.by_hash.remove(&old_h);
            }
        }
        g.by_hash.insert(hash, t);
        g.order.push_back((t, hash));
    }

    /// When a message with this body hash was last sent, if recently.
    pub fn lookup(&self, hash: u64) -> Option<Instant> {
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.by_hash.get(&hash).copied()
    }
}

/// Latency samples (µs) of video messages received inside the window.
#[derive(Debug, Default)]
pub struct LatencyLog {
    inner: Mutex<LatencyInner>,
}

#[derive(Debug, Default)]
struct LatencyInner {
    samples_us: Vec<u64>,
    unmatched: u64,
}

impl LatencyLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Matches a received video message (body hash `hash`, received at `recv`,
    /// `recv_us` on the run's clock) to its sending and records the latency if the
    /// window holds `recv_us`.
    pub fn observe(&self, sent: &SentLog, window: &Window, hash: u64, recv: Instant, recv_us: u64) {
        if !window.contains(recv_us) {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match sent.lookup(hash) {
            Some(t) => g
                .samples_us
                .push(recv.saturating_duration_since(t).as_micros() as u64),
            None => g.unmatched += 1,
        }
    }

    /// The samples so far and the number of video messages that matched nothing.
    pub fn take(&self) -> (Vec<u64>, u64) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (std::mem::take(&mut g.samples_us), g.unmatched)
    }
}

/// Why connections failed, counted by reason.
#[derive(Debug, Default, Clone)]
pub struct ErrorLog {
    inner: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl ErrorLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one failure. Reasons are capped in number so a storm of distinct
    /// messages cannot grow the log without bound.
    pub fn add(&self, reason: impl Into<String>) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let reason = reason.into();
        if g.len() >= 32 && !g.contains_key(&reason) {
            *g.entry("(other reasons)".to_owned()).or_default() += 1;
        } else {
            *g.entry(reason).or_default() += 1;
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// p50, p99 and max of samples in µs, as milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub samples: u64,
    /// Median, ms (NaN-free: `None` without samples).
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Largest, ms.
    pub max_ms: Option<f64>,
}

impl Percentiles {
    /// Computes the summary (sorts `samples_us`).
    pub fn of(samples_us: &mut [u64]) -> Self {
        samples_us.sort_unstable();
        let n = samples_us.len();
        let at = |q: f64| -> Option<f64> {
            if n == 0 {
                return None;
            }
            // Nearest rank.
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            samples_us.get(rank - 1).map(|&v| v as f64 / 1000.0)
        };
        Self {
            samples: n as u64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: samples_us.last().map(|&v| v as f64 / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_gaps_count_from_the_later_of_previous_read_and_opening() {
        let w = Window::new();
        assert_eq!(w.gap(0, 10), None);
        w.open(100);
        assert_eq!(w.gap(0, 50), None);
        assert_eq!(w.gap(0, 150), Some(50));
        assert_eq!(w.gap(120, 150), Some(30));
        w.close(200);
        assert_eq!(w.gap(120, 250), None);
        assert!(w.contains(200) && !w.contains(201) && !w.contains(99));
    }

    #[test]
    fn sent_log_forgets_old_entries_and_keeps_the_latest_sending() {
        let log = SentLog::new(Duration::from_secs(2));
        let t0 = Instant::now();
        log.record(1, t0);
        log.record(2, t0 + Duration::from_secs(1));
        log.record(1, t0 + Duration::from_millis(1500));
        assert_eq!(log.lookup(1), Some(t0 + Duration::from_millis(1500)));
        log.record(3, t0 + Duration::from_secs(4));
        assert_eq!(log.lookup(2), None);
        // The later sending of hash 1 is also past retention now.
        assert_eq!(log.lookup(1), None);
        assert_eq!(log.lookup(3), Some(t0 + Duration::from_secs(4)));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(p.samples, 100);
        assert_eq!(p.p50_ms, Some(50.0));
        assert_eq!(p.p99_ms, Some(99.0));
        assert_eq!(p.max_ms, Some(100.0));
        assert_eq!(Percentiles::of(&mut []).p50_ms, None);
    }
}
