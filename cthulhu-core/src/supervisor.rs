//! Destination supervisor: runs one push destination for as long as it is configured.
//!
//! A [`Supervisor`] task owns one [`Destination`] (implemented by a protocol crate, for
//! example an RTMP push to YouTube). It waits for a stream, pushes it, and when the push
//! fails it reconnects with exponential backoff and jitter ([`BackoffPolicy`]). Its state
//! is published as a [`DestinationStatus`] through a [`tokio::sync::watch`] channel for the
//! web console and metrics.
//!
//! State machine (attempts count the failures in a row of the current stream):
//!
//! ```text
//! Idle ──wait_for_stream()=true──► Connecting{n} ──set_live()──► Live{since}
//!  ▲  │                              │      ▲                      │
//!  │  └─false──► Stopped             │ Err  └──── backoff sleep ───┤ Err
//!  │                                 ▼                             ▼
//!  │                              Retrying{n, last_error, next_attempt_at}
//!  └────────────── push() = Ok (the stream ended) ─────────────────┘
//! ```
//!
//! Stopping ([`SupervisorHandle::stop`], or dropping the handle) is possible from every
//! state and always ends in [`DestinationState::Stopped`].
//!
//! Invariants:
//! - No I/O and no protocol knowledge here: the [`Destination`] does the networking.
//! - A failing destination only affects its own task, never the publisher or other
//!   destinations.
//! - URLs are logged and published only in redacted form ([`redact_url`]); the caller
//!   passes the redacted URL, and [`DestinationError`] messages must carry no secrets.
//! - A stop completes within [`STOP_GRACE`] plus a small margin, whatever the
//!   destination does.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a push gets to close cleanly (unpublish, flush) after a stop was requested,
/// before its future is dropped.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// Extra time [`SupervisorHandle::stop`] waits for the task beyond [`STOP_GRACE`] before
/// aborting it.
const STOP_MARGIN: Duration = Duration::from_secs(1);

/// What the supervisor runs. Implemented by protocol crates (for example an RTMP push).
///
/// Both methods are called from the supervisor task only, one at a time.
#[async_trait::async_trait]
pub trait Destination: Send {
    /// Waits until there is a stream to push (the publisher is live). Returns `false`
    /// when the source is gone for good; the supervisor then stops.
    ///
    /// Must be cancel-safe: on a stop request the future is dropped.
    async fn wait_for_stream(&mut self) -> bool;

    /// Connects and pushes until the stream ends normally (`Ok(())`) or the push fails
    /// (`Err`).
    ///
    /// Calls [`LiveSignal::set_live`] once the remote end accepted publishing, so the
    /// supervisor moves to [`DestinationState::Live`]. When a stop is requested
    /// ([`LiveSignal::stopping`]) the push should unpublish and return; it gets
    /// [`STOP_GRACE`] to do so before its future is dropped.
    ///
    /// After `Ok(())` the supervisor calls [`Destination::wait_for_stream`] again, which
    /// should only return `true` for a new stream.
    async fn push(&mut self, live: &LiveSignal) -> Result<(), DestinationError>;

    /// What this destination does, as the supervisor's log lines name it ("Push
    /// failed, retrying"); a recorder says "Recording".
    fn activity(&self) -> &'static str {
        "Push"
    }
}

/// Why a push failed. Messages are shown in the console and logs: they must not contain
/// stream keys, passwords or unredacted URLs.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestinationError {
    /// The connection could not be set up (DNS, TCP, TLS or protocol handshake).
    #[error("connect failed: {0}")]
    Connect(String),
    /// The remote end refused to accept the stream (bad key, stream not allowed).
    #[error("publish rejected: {0}")]
    Rejected(String),
    /// The connection broke or the remote end closed it while pushing.
    #[error("push failed: {0}")]
    Push(String),
}

/// Replaces the secret parts of a URL with `***`: the last non-empty path segment (where
/// stream keys live), every query value, the user info and the fragment.
///
/// `rtmp://a.rtmp.youtube.com/live2/abcd-efgh` becomes `rtmp://a.rtmp.youtube.com/live2/***`
/// and `srt://host:9000?streamid=x&passphrase=y` becomes
/// `srt://host:9000?streamid=***&passphrase=***`. A string without `scheme://` is treated
/// as a path. Redacting twice gives the same result as redacting once.
pub fn redact_url(url: &str) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((rest, _)) => (rest, Some("***")),
        None => (url, None),
    };
    let (before_query, query) = match before_fragment.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(url.len());
    let path = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            match authority.rsplit_once('@') {
                Some((_, host)) => {
                    out.push_str("***@");
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            path
        }
        None => before_query,
    };
    out.push_str(&redact_last_segment(path));
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) => format!("{key}=***"),
                None if param.is_empty() => String::new(),
                None => "***".to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Replaces the last non-empty `/`-separated segment of `path` with `***`.
fn redact_last_segment(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return path.to_owned();
    }
    let start = trimmed.rfind('/').map_or(0, |i| i + 1);
    format!("{}***{}", &trimmed[..start], &path[trimmed.len()..])
}

/// The state of one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationState {
    /// Waiting for a stream to push.
    Idle,
    /// Connecting; `attempt` is 1 for the first try of a stream and counts up while the
    /// destination keeps failing.
    Connecting {
        /// The number of this connection attempt (1-based).
        attempt: u32,
    },
    /// The remote end accepted the stream and it is being pushed.
    Live {
        /// When the remote end accepted publishing.
        since: SystemTime,
    },
    /// The last attempt failed; the next one starts at `next_attempt_at`.
    Retrying {
        /// The number of the attempt that failed (failures in a row).
        attempt: u32,
        /// Why it failed.
        last_error: String,
        /// When the next attempt starts.
        next_attempt_at: SystemTime,
    },
    /// The supervisor has ended (stopped, or the source is gone for good).
    Stopped,
}

impl DestinationState {
    /// A short lowercase name for metrics labels and the API: `idle`, `connecting`,
    /// `live`, `retrying` or `stopped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connecting { .. } => "connecting",
            Self::Live { .. } => "live",
            Self::Retrying { .. } => "retrying",
            Self::Stopped => "stopped",
        }
    }
}

/// A snapshot of one destination, as published by its supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationStatus {
    /// The configured destination name.
    pub name: String,
    /// The destination URL with its secrets redacted.
    pub url_redacted: String,
    /// The current state.
    pub state: DestinationState,
    /// How many pushes went live since the supervisor started.
    pub connects: u64,
    /// How many pushes failed since the supervisor started.
    pub failures: u64,
    /// The most recent push error, kept after the destination recovers.
    pub last_error: Option<String>,
}

/// Reconnection delays: exponential backoff with jitter, capped.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffPolicy {
    /// The delay before the first retry (default 1 s).
    pub initial: Duration,
    /// The longest delay; no delay exceeds it, jitter included (default 60 s).
    pub max: Duration,
    /// The factor between two consecutive delays (default 2.0; values below 1 count as 1).
    pub multiplier: f64,
    /// The relative random spread of each delay: 0.2 means ±20 % (default 0.2; clamped to
    /// 0..=1).
    pub jitter: f64,
    /// A push that was live at least this long resets the attempt counter when it fails
    /// (default 60 s).
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
        }
    }
}

impl BackoffPolicy {
    /// The delay after `attempt` failures in a row (1-based; 0 counts as 1):
    /// `initial * multiplier^(attempt - 1)`, capped at `max`, times a random factor in
    /// `1 ± jitter`, and never more than `max`.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let max = self.max.as_secs_f64();
        let initial = self.initial.as_secs_f64().min(max);
        let multiplier = if self.multiplier.is_finite() && self.multiplier > 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let growth = multiplier.powi(exponent);
        let base = if initial <= 0.0 {
            0.0
        } else if growth.is_finite() {
            (initial * growth).min(max)
        } else {
            max
        };
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let factor = if jitter > 0.0 {
            1.0 + rng.random_range(-jitter..=jitter)
        } else {
            1.0
        };
        let secs = (base * factor).clamp(0.0, max);
        Duration::try_from_secs_f64(secs).unwrap_or(self.max)
    }
}

/// Tells a destination that a stop was requested. Cheap to clone; a dropped
/// [`SupervisorHandle`] counts as a stop request.
#[derive(Debug, Clone)]
pub struct StopSignal {
    rx: watch::Receiver<bool>,
}

impl StopSignal {
    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Completes once a stop is requested. Cancel-safe.
    pub async fn requested(&self) {
        let mut rx = self.rx.clone();
        // `Err` means the handle was dropped, which is a stop request as well.
        if rx.wait_for(|stop| *stop).await.is_err() {
            tracing::trace!("Supervisor handle dropped");
        }
    }
}

/// Handed to [`Destination::push`]: reports that the push went live and tells it when to
/// stop. Valid for one push.
#[derive(Debug)]
pub struct LiveSignal {
    reporter: Reporter,
    since: OnceLock<Instant>,
    stop: StopSignal,
}

impl LiveSignal {
    /// Reports that the remote end accepted publishing: the state becomes
    /// [`DestinationState::Live`]. Calls after the first are ignored.
    pub fn set_live(&self) {
        if self.since.set(Instant::now()).is_err() {
            return;
        }
        self.reporter.live();
    }

    /// Whether [`LiveSignal::set_live`] was called during this push.
    pub fn is_live(&self) -> bool {
        self.since.get().is_some()
    }

    /// Completes once a stop is requested; the push should then unpublish cleanly and
    /// return within [`STOP_GRACE`]. Cancel-safe, so it can sit in a `select!`.
    pub async fn stopping(&self) {
        self.stop.requested().await;
    }

    /// Whether a stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_requested()
    }

    /// A clonable stop signal, for tasks the push spawns.
    pub fn stop_signal(&self) -> StopSignal {
        self.stop.clone()
    }

    /// How long this push has been live, if it went live.
    fn live_for(&self) -> Option<Duration> {
        self.since.get().map(Instant::elapsed)
    }
}

/// Publishes state changes and logs one line for each.
#[derive(Debug, Clone)]
struct Reporter {
    status: watch::Sender<DestinationStatus>,
    name: Arc<str>,
    url: Arc<str>,
    /// [`Destination::activity`].
    activity: &'static str,
}

impl Reporter {
    fn idle(&self) {
        self.set(DestinationState::Idle, |_| {});
        tracing::info!(dest = %self.name, url = %self.url, "Waiting for stream");
    }

    fn connecting(&self, attempt: u32) {
        self.set(DestinationState::Connecting { attempt }, |_| {});
        tracing::info!(dest = %self.name, url = %self.url, attempt, "Connecting");
    }

    fn live(&self) {
        let since = SystemTime::now();
        self.set(DestinationState::Live { since }, |s| s.connects += 1);
        tracing::info!(dest = %self.name, url = %self.url, "Live");
    }

    fn retrying(&self, attempt: u32, error: &DestinationError, delay: Duration) {
        let message = error.to_string();
        let now = SystemTime::now();
        let next_attempt_at = now.checked_add(delay).unwrap_or(now);
        let state = DestinationState::Retrying {
            attempt,
            last_error: message.clone(),
            next_attempt_at,
        };
        self.set(state, |s| {
            s.failures += 1;
            s.last_error = Some(message);
        });
        tracing::warn!(
            dest = %self.name, url = %self.url, attempt, error = %error, retry_in = ?delay,
            "{} failed, retrying", self.activity
        );
    }

    fn stopped(&self) {
        if self.set(DestinationState::Stopped, |_| {}) {
            tracing::info!(dest = %self.name, url = %self.url, "Stopped");
        }
    }

    /// Sets the state and applies `update`; returns whether the state changed. Receivers
    /// are notified only when something changed.
    fn set(&self, state: DestinationState, update: impl FnOnce(&mut DestinationStatus)) -> bool {
        let mut state_changed = false;
        self.status.send_if_modified(|s| {
            let before = s.clone();
            state_changed = s.state != state;
            s.state = state;
            update(s);
            *s != before
        });
        state_changed
    }
}

/// Runs destinations; see the [module documentation](self).
#[derive(Debug)]
pub struct Supervisor {
    _private: (),
}

impl Supervisor {
    /// Spawns a task on the current Tokio runtime that runs `dest` until it is stopped or
    /// its source is gone. `url_redacted` must already be redacted ([`redact_url`]); it is
    /// only shown and logged.
    pub fn spawn(
        name: String,
        url_redacted: String,
        dest: Box<dyn Destination>,
        policy: BackoffPolicy,
    ) -> SupervisorHandle {
        let (status_tx, _) = watch::channel(DestinationStatus {
            name: name.clone(),
            url_redacted: url_redacted.clone(),
            state: DestinationState::Idle,
            connects: 0,
            failures: 0,
            last_error: None,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let (retry_tx, retry_rx) = watch::channel(0u64);
        let reporter = Reporter {
            status: status_tx.clone(),
            name: name.into(),
            url: url_redacted.into(),
            activity: dest.activity(),
        };
        let stop = StopSignal { rx: stop_rx };
        let task = tokio::spawn(run(dest, policy, reporter, stop, retry_rx));
        SupervisorHandle {
            status: status_tx,
            stop: stop_tx,
            retry: retry_tx,
            task,
        }
    }
}

/// Controls a running supervisor. Dropping the handle requests a stop too, without
/// waiting for it; use [`SupervisorHandle::stop`] to wait.
#[derive(Debug)]
#[must_use = "dropping the handle stops the destination"]
pub struct SupervisorHandle {
    status: watch::Sender<DestinationStatus>,
    stop: watch::Sender<bool>,
    /// Bumped to cut a running backoff short.
    retry: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl SupervisorHandle {
    /// The current status.
    pub fn status(&self) -> DestinationStatus {
        self.status.borrow().clone()
    }

    /// What `f` reads of the current status, without copying it (a scrape of
    /// thousands of destinations needs their states and counts, not their strings).
    pub fn inspect<R>(&self, f: impl FnOnce(&DestinationStatus) -> R) -> R {
        f(&self.status.borrow())
    }

    /// A receiver of status changes; the current status counts as seen.
    pub fn watch(&self) -> watch::Receiver<DestinationStatus> {
        self.status.subscribe()
    }

    /// Ends the backoff wait now if the destination is retrying, so the next attempt
    /// starts at once; returns whether it was retrying. The failure count is kept.
    pub fn retry_now(&self) -> bool {
        if !matches!(
            self.status.borrow().state,
            DestinationState::Retrying { .. }
        ) {
            return false;
        }
        self.retry.send_modify(|n| *n = n.wrapping_add(1));
        true
    }

    /// Stops the destination and waits until it has stopped: a running push gets
    /// [`STOP_GRACE`] to close cleanly, then it is dropped. The state ends as
    /// [`DestinationState::Stopped`].
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let mut task = self.task;
        let finished = tokio::time::timeout(STOP_GRACE + STOP_MARGIN, &mut task).await;
        let name = self.status.borrow().name.clone();
        match finished {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(dest = %name, error = %error, "Supervisor task failed");
            }
            Err(_) => {
                task.abort();
                tracing::warn!(dest = %name, "Supervisor did not stop in time, aborted");
            }
        }
        self.status.send_if_modified(|s| {
            let changed = s.state != DestinationState::Stopped;
            s.state = DestinationState::Stopped;
            changed
        });
    }
}

/// How a push ended.
enum PushOutcome {
    /// The push returned by itself.
    Finished(Result<(), DestinationError>),
    /// A stop was requested while pushing.
    Stopped,
}

/// The supervisor task.
async fn run(
    mut dest: Box<dyn Destination>,
    policy: BackoffPolicy,
    reporter: Reporter,
    stop: StopSignal,
    mut retry: watch::Receiver<u64>,
) {
    'stream: loop {
        reporter.idle();
        let has_stream = tokio::select! {
            biased;
            () = stop.requested() => break 'stream,
            has_stream = dest.wait_for_stream() => has_stream,
        };
        if !has_stream {
            tracing::info!(dest = %reporter.name, url = %reporter.url, "Source gone");
            break 'stream;
        }
        let mut failures_in_row: u32 = 0;
        loop {
            reporter.connecting(failures_in_row.saturating_add(1));
            let live = LiveSignal {
                reporter: reporter.clone(),
                since: OnceLock::new(),
                stop: stop.clone(),
            };
            let outcome = push_until_stopped(dest.as_mut(), &live, &stop, &reporter).await;
            match outcome {
                PushOutcome::Stopped => break 'stream,
                PushOutcome::Finished(Ok(())) => {
                    tracing::info!(dest = %reporter.name, url = %reporter.url, "Stream ended");
                    continue 'stream;
                }
                PushOutcome::Finished(Err(error)) => {
                    if live.live_for().is_some_and(|t| t >= policy.reset_after) {
                        failures_in_row = 0;
                    }
                    failures_in_row = failures_in_row.saturating_add(1);
                    let delay = policy.delay(failures_in_row, &mut rand::rng());
                    // A retry asked for before this failure does not cut this wait.
                    retry.borrow_and_update();
                    reporter.retrying(failures_in_row, &error, delay);
                    tokio::select! {
                        biased;
                        () = stop.requested() => break 'stream,
                        () = tokio::time::sleep(delay) => {}
                        Ok(()) = retry.changed() => {
                            tracing::info!(dest = %reporter.name, url = %reporter.url, "Retrying now, as asked");
                        }
                    }
                }
            }
        }
    }
    reporter.stopped();
}

/// Drives one push; on a stop request gives it [`STOP_GRACE`] to finish, then drops it.
async fn push_until_stopped(
    dest: &mut dyn Destination,
    live: &LiveSignal,
    stop: &StopSignal,
    reporter: &Reporter,
) -> PushOutcome {
    let push = dest.push(live);
    tokio::pin!(push);
    tokio::select! {
        biased;
        result = &mut push => return PushOutcome::Finished(result),
        () = stop.requested() => {}
    }
    match tokio::time::timeout(STOP_GRACE, &mut push).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::debug!(
                dest = %reporter.name, url = %reporter.url, error = %error,
                "{} failed while stopping", reporter.activity
            );
        }
        Err(_) => {
            tracing::warn!(
                dest = %reporter.name, url = %reporter.url,
                "{} did not close in time, dropped", reporter.activity
            );
        }
    }
    PushOutcome::Stopped
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    // ---- BackoffPolicy::delay ----

    /// An RNG that returns the same word every time: all zeros gives the lowest value of a
    /// range, all ones (almost) the highest.
    struct ConstRng(u64);

    impl rand::RngCore for ConstRng {
        fn next_u32(&mut self) -> u32 {
            self.0 as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            dst.fill(self.0 as u8);
        }
    }

    fn no_jitter() -> BackoffPolicy {
        BackoffPolicy {
            jitter: 0.0,
            ..BackoffPolicy::default()
        }
    }

    #[test]
    fn delay_doubles_from_initial() {
        let policy = no_jitter();
        let mut rng = StdRng::seed_from_u64(1);
        let secs: Vec<u64> = (1..=6)
            .map(|a| policy.delay(a, &mut rng).as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32]);
        assert_eq!(policy.delay(3, &mut rng), Duration::from_secs(4));
        // Attempt 0 counts as the first.
        assert_eq!(policy.delay(0, &mut rng), Duration::from_secs(1));
    }

    #[test]
    fn delay_is_capped_at_max() {
        let policy = no_jitter();
        let mut rng = StdRng::seed_from_u64(2);
        for attempt in [7, 8, 20, 1000, u32::MAX] {
            assert_eq!(policy.delay(attempt, &mut rng), Duration::from_secs(60));
        }
        let small_max = BackoffPolicy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(3),
            ..no_jitter()
        };
        assert_eq!(small_max.delay(1, &mut rng), Duration::from_secs(3));
    }

    #[test]
    fn delay_jitter_reaches_both_bounds() {
        let policy = BackoffPolicy::default();
        let low = policy.delay(1, &mut ConstRng(0));
        assert_eq!(low, Duration::from_millis(800));
        let high = policy.delay(1, &mut ConstRng(u64::MAX));
        assert!(high > Duration::from_millis(1199) && high <= Duration::from_millis(1200));
        let low4 = policy.delay(3, &mut ConstRng(0));
        assert_eq!(low4, Duration::from_millis(3200));
    }

    #[test]
    fn delay_jitter_stays_within_bounds_and_spreads() {
        let policy = BackoffPolicy::default();
        let mut rng = StdRng::seed_from_u64(3);
        for attempt in 1..=6u32 {
            let base = f64::from(1u32 << (attempt - 1));
            let samples: Vec<f64> = (0..500)
                .map(|_| policy.delay(attempt, &mut rng).as_secs_f64())
                .collect();
            let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
            let max = samples.iter().copied().fold(0.0, f64::max);
            assert!(min >= 0.8 * base - 1e-9, "attempt {attempt}: {min}");
            assert!(max <= 1.2 * base + 1e-9, "attempt {attempt}: {max}");
            // Jitter is really applied: the samples cover most of the ±20 % band.
            assert!(min < 0.85 * base && max > 1.15 * base, "attempt {attempt}");
        }
    }

    #[test]
    fn delay_with_jitter_never_exceeds_max() {
        let policy = BackoffPolicy::default();
        let mut rng = StdRng::seed_from_u64(4);
        let mut below_max = 0;
        for _ in 0..500 {
            let d = policy.delay(30, &mut rng);
            assert!(d <= Duration::from_secs(60));
            assert!(d >= Duration::from_secs(48));
            if d < Duration::from_secs(60) {
                below_max += 1;
            }
        }
        assert!(below_max > 100, "jitter spreads capped delays too");
    }

    #[test]
    fn delay_tolerates_odd_policies() {
        let mut rng = StdRng::seed_from_u64(5);
        let odd = BackoffPolicy {
            multiplier: f64::NAN,
            jitter: 7.0,
            ..BackoffPolicy::default()
        };
        for attempt in [1, 5, u32::MAX] {
            let d = odd.delay(attempt, &mut rng);
            assert!(d <= Duration::from_secs(2), "{d:?}");
        }
        let zero = BackoffPolicy {
            initial: Duration::ZERO,
            ..BackoffPolicy::default()
        };
        assert_eq!(zero.delay(u32::MAX, &mut rng), Duration::ZERO);
    }

    // ---- redact_url ----

    #[test]
    fn redact_hides_stream_key() {
        assert_eq!(
            redact_url("rtmp://a.rtmp.youtube.com/live2/abcd-efgh"),
            "rtmp://a.rtmp.youtube.com/live2/***"
        );
        assert_eq!(
            redact_url("rtmps://live-api-s.facebook.com:443/rtmp/FB-123-0-Abc"),
            "rtmps://live-api-s.facebook.com:443/rtmp/***"
        );
        assert_eq!(redact_url("rtmp://host/app/key/"), "rtmp://host/app/***/");
    }

    #[test]
    fn redact_hides_query_values_userinfo_and_fragment() {
        assert_eq!(
            redact_url("srt://host:9000?streamid=publish:live/k&passphrase=secret123"),
            "srt://host:9000?streamid=***&passphrase=***"
        );
        assert_eq!(
            redact_url("rtmp://user:pw@host/live/key?token=t&flag#frag"),
            "rtmp://***@host/live/***?token=***&***#***"
        );
    }

    #[test]
    fn redact_handles_degenerate_input() {
        assert_eq!(redact_url(""), "");
        assert_eq!(redact_url("rtmp://host"), "rtmp://host");
        assert_eq!(redact_url("rtmp://host/"), "rtmp://host/");
        assert_eq!(redact_url("live/key"), "live/***");
        assert_eq!(redact_url("key"), "***");
    }

    #[test]
    fn redact_is_idempotent() {
        for url in [
            "rtmp://a.rtmp.youtube.com/live2/abcd-efgh",
            "srt://host:9000?streamid=a&passphrase=b",
            "rtmp://u:p@h/a/k?x=1#f",
        ] {
            let once = redact_url(url);
            assert_eq!(redact_url(&once), once);
        }
    }

    // ---- supervisor ----

    /// What one call of the fake's `push` does. Every push first "connects" for 10 ms.
    enum Step {
        /// Fails with a connect error.
        Fail,
        /// Goes live, holds for the duration, then fails (`true`) or ends normally.
        Live(Duration, bool),
        /// Goes live, waits for the stop request, unpublishes for the duration, returns Ok.
        LiveUntilStop(Duration),
        /// Goes live and then hangs, ignoring the stop request.
        Hang,
    }

    #[derive(Default)]
    struct Probe {
        pushes: AtomicU32,
        clean_shutdown: AtomicBool,
        push_dropped: AtomicBool,
    }

    struct SetOnDrop(Arc<Probe>);

    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.push_dropped.store(true, Ordering::SeqCst);
        }
    }

    /// A scripted destination. `wait_for_stream` answers from `waits` (after 5 ms) and
    /// hangs once they run out; `push` follows `steps` and fails once they run out.
    struct Fake {
        waits: VecDeque<bool>,
        steps: VecDeque<Step>,
        probe: Arc<Probe>,
    }

    impl Fake {
        fn new(waits: impl Into<VecDeque<bool>>, steps: Vec<Step>) -> (Box<Self>, Arc<Probe>) {
            let probe = Arc::new(Probe::default());
            let fake = Fake {
                waits: waits.into(),
                steps: steps.into(),
                probe: probe.clone(),
            };
            (Box::new(fake), probe)
        }
    }

    #[async_trait::async_trait]
    impl Destination for Fake {
        async fn wait_for_stream(&mut self) -> bool {
            tokio::time::sleep(Duration::from_millis(5)).await;
            match self.waits.pop_front() {
                Some(answer) => answer,
                None => std::future::pending().await,
            }
        }

        async fn push(&mut self, live: &LiveSignal) -> Result<(), DestinationError> {
            self.probe.pushes.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            match self.steps.pop_front().unwrap_or(Step::Fail) {
                Step::Fail => Err(DestinationError::Connect("connection refused".into())),
                Step::Live(hold, fail) => {
                    live.set_live();
                    tokio::time::sleep(hold).await;
                    if fail {
                        Err(DestinationError::Push("broken pipe".into()))
                    } else {
                        Ok(())
                    }
                }
                Step::LiveUntilStop(unpublish) => {
                    live.set_live();
                    live.stopping().await;
                    assert!(live.is_stopping());
                    tokio::time::sleep(unpublish).await;
                    self.probe.clean_shutdown.store(true, Ordering::SeqCst);
                    Ok(())
                }
                Step::Hang => {
                    let _guard = SetOnDrop(self.probe.clone());
                    live.set_live();
                    std::future::pending().await
                }
            }
        }
    }

    type Timeline = Vec<(Instant, SystemTime, DestinationState)>;

    /// Records every state the supervisor publishes, until `Stopped`.
    fn record(handle: &SupervisorHandle) -> JoinHandle<Timeline> {
        let mut rx = handle.watch();
        tokio::spawn(async move {
            let first = rx.borrow_and_update().state.clone();
            let mut seen = vec![(Instant::now(), SystemTime::now(), first)];
            while rx.changed().await.is_ok() {
                let state = rx.borrow_and_update().state.clone();
                let done = state == DestinationState::Stopped;
                seen.push((Instant::now(), SystemTime::now(), state));
                if done {
                    break;
                }
            }
            seen
        })
    }

    fn spawn(dest: Box<dyn Destination>, policy: BackoffPolicy) -> SupervisorHandle {
        Supervisor::spawn(
            "youtube".into(),
            "rtmp://a.rtmp.youtube.com/live2/***".into(),
            dest,
            policy,
        )
    }

    async fn wait_until(handle: &SupervisorHandle, pred: impl Fn(&DestinationState) -> bool) {
        let mut rx = handle.watch();
        let waited =
            tokio::time::timeout(Duration::from_secs(3600), rx.wait_for(|s| pred(&s.state)));
        assert!(matches!(waited.await, Ok(Ok(_))), "state never reached");
    }

    fn names(timeline: &Timeline) -> Vec<String> {
        timeline
            .iter()
            .map(|(_, _, s)| match s {
                DestinationState::Connecting { attempt } => format!("connecting{attempt}"),
                DestinationState::Retrying { attempt, .. } => format!("retrying{attempt}"),
                other => other.as_str().to_owned(),
            })
            .collect()
    }

    /// The delays between each `Retrying` and the following `Connecting`.
    fn retry_gaps(timeline: &Timeline) -> Vec<Duration> {
        timeline
            .windows(2)
            .filter(|w| matches!(w[0].2, DestinationState::Retrying { .. }))
            .map(|w| w[1].0 - w[0].0)
            .collect()
    }

    fn assert_near(actual: Duration, expected: Duration) {
        assert!(
            actual >= expected && actual <= expected + Duration::from_millis(2),
            "{actual:?} is not {expected:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_now_cuts_the_backoff_short() {
        let (fake, probe) = Fake::new(
            [true],
            vec![
                Step::Fail,
                Step::Fail,
                Step::Fail,
                Step::Fail,
                Step::Fail,
                Step::Fail,
                Step::Live(Duration::from_secs(3600), true),
            ],
        );
        let policy = BackoffPolicy {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(60),
            ..BackoffPolicy::default()
        };
        let handle = spawn(fake, policy);
        assert!(!handle.retry_now(), "not retrying yet");
        let recorder = record(&handle);
        for attempt in 1..=6 {
            wait_until(
                &handle,
                |s| matches!(s, DestinationState::Retrying { attempt: a, .. } if *a == attempt),
            )
            .await;
            let asked = Instant::now();
            assert!(handle.retry_now());
            wait_until(&handle, |s| !matches!(s, DestinationState::Retrying { .. })).await;
            assert!(
                asked.elapsed() < Duration::from_millis(5),
                "{:?}",
                asked.elapsed()
            );
        }
        wait_until(&handle, |s| matches!(s, DestinationState::Live { .. })).await;
        handle.stop().await;
        let timeline = recorder.await.unwrap();
        // the count of failures in a row goes on: a retry now is one more attempt
        assert!(names(&timeline).contains(&"connecting7".to_owned()));
        assert_eq!(probe.pushes.load(Ordering::SeqCst), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn fails_then_goes_live_with_growing_delays() {
        let (fake, probe) = Fake::new(
            [true],
            vec![
                Step::Fail,
                Step::Fail,
                Step::Fail,
                Step::Live(Duration::from_secs(3600), true),
            ],
        );
        let handle = spawn(fake, BackoffPolicy::default());
        let recorder = record(&handle);
        wait_until(&handle, |s| matches!(s, DestinationState::Live { .. })).await;
        handle.stop().await;
        let timeline = recorder.await.unwrap();

        assert_eq!(
            names(&timeline),
            [
                "idle",
                "connecting1",
                "retrying1",
                "connecting2",
                "retrying2",
                "connecting3",
                "retrying3",
                "connecting4",
                "live",
                "stopped"
            ]
        );
        for (i, (at, wall, state)) in timeline.iter().enumerate() {
            if let DestinationState::Retrying {
                attempt,
                last_error,
                next_attempt_at,
            } = state
            {
                assert_eq!(last_error, "connect failed: connection refused");
                let base = Duration::from_secs(1 << (attempt - 1));
                let gap = timeline[i + 1].0 - *at;
                assert!(
                    gap >= base.mul_f64(0.8) && gap <= base.mul_f64(1.2) + Duration::from_millis(2),
                    "attempt {attempt}: waited {gap:?}"
                );
                // next_attempt_at announces the delay actually slept (wall clock, so loose).
                let announced = next_attempt_at.duration_since(*wall).unwrap_or_default();
                let diff = announced.abs_diff(gap);
                assert!(
                    diff < Duration::from_millis(500),
                    "announced {announced:?}, slept {gap:?}"
                );
            }
        }
        let gaps = retry_gaps(&timeline);
        assert_eq!(gaps.len(), 3);
        assert!(gaps[0] < gaps[1] && gaps[1] < gaps[2], "{gaps:?}");
        assert_eq!(probe.pushes.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn status_counts_connects_and_failures() {
        let (fake, _) = Fake::new(
            [true],
            vec![
                Step::Fail,
                Step::Fail,
                Step::Live(Duration::from_secs(3600), true),
            ],
        );
        let handle = spawn(fake, BackoffPolicy::default());
        wait_until(&handle, |s| matches!(s, DestinationState::Live { .. })).await;
        let status = handle.status();
        assert_eq!(status.name, "youtube");
        assert_eq!(status.url_redacted, "rtmp://a.rtmp.youtube.com/live2/***");
        assert_eq!(status.connects, 1);
        assert_eq!(status.failures, 2);
        assert_eq!(
            status.last_error.as_deref(),
            Some("connect failed: connection refused")
        );
        handle.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn delays_are_capped() {
        let mut steps: Vec<Step> = (0..8).map(|_| Step::Fail).collect();
        steps.push(Step::Live(Duration::from_secs(3600), true));
        let (fake, _) = Fake::new([true], steps);
        let handle = spawn(fake, no_jitter());
        let recorder = record(&handle);
        wait_until(&handle, |s| matches!(s, DestinationState::Live { .. })).await;
        handle.stop().await;
        let timeline = recorder.await.unwrap();
        let gaps = retry_gaps(&timeline);
        let expected = [1, 2, 4, 8, 16, 32, 60, 60];
        assert_eq!(gaps.len(), expected.len(), "{:?}", names(&timeline));
        for (gap, secs) in gaps.iter().zip(expected) {
            assert_near(*gap, Duration::from_secs(secs));
        }
    }

    /// Two failures, then live for `live_for`, then a failure: returns the attempt number
    /// and the delay of the retry after the live period.
    async fn retry_after_live_period(live_for: Duration) -> (u32, Duration) {
        let steps = vec![
            Step::Fail,
            Step::Fail,
            Step::Live(live_for, true),
            Step::Live(Duration::from_secs(3600), true),
        ];
        let (fake, _) = Fake::new([true], steps);
        let handle = spawn(fake, no_jitter());
        let recorder = record(&handle);
        let mut rx = handle.watch();
        assert!(rx.wait_for(|s| s.connects == 2).await.is_ok());
        handle.stop().await;
        let timeline = recorder.await.unwrap();
        let (i, attempt) = timeline
            .iter()
            .enumerate()
            .find_map(|(i, (_, _, s))| match s {
                DestinationState::Retrying {
                    attempt,
                    last_error,
                    ..
                } if last_error == "push failed: broken pipe" => Some((i, *attempt)),
                _ => None,
            })
            .unwrap();
        (attempt, timeline[i + 1].0 - timeline[i].0)
    }

    #[tokio::test(start_paused = true)]
    async fn long_live_period_resets_backoff() {
        let (attempt, delay) = retry_after_live_period(Duration::from_secs(61)).await;
        assert_eq!(attempt, 1);
        assert_near(delay, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn short_live_period_keeps_backoff() {
        let (attempt, delay) = retry_after_live_period(Duration::from_secs(10)).await;
        assert_eq!(attempt, 3);
        assert_near(delay, Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn stream_end_resets_and_waits_for_next_stream() {
        let steps = vec![
            Step::Fail,
            Step::Fail,
            Step::Live(Duration::from_secs(5), false),
        ];
        let (fake, probe) = Fake::new([true, true], steps);
        let handle = spawn(fake, no_jitter());
        let recorder = record(&handle);
        // Second stream: the first failure is attempt 1 again.
        let mut rx = handle.watch();
        assert!(
            rx.wait_for(|s| s.connects == 1 && s.failures == 3)
                .await
                .is_ok()
        );
        handle.stop().await;
        let timeline = recorder.await.unwrap();
        assert_eq!(
            names(&timeline),
            [
                "idle",
                "connecting1",
                "retrying1",
                "connecting2",
                "retrying2",
                "connecting3",
                "live",
                "idle",
                "connecting1",
                "retrying1",
                "stopped"
            ]
        );
        assert_eq!(probe.pushes.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_while_retrying_is_prompt() {
        let policy = BackoffPolicy {
            initial: Duration::from_secs(30),
            ..BackoffPolicy::default()
        };
        let (fake, probe) = Fake::new([true], vec![]);
        let handle = spawn(fake, policy);
        let rx = handle.watch();
        wait_until(&handle, |s| matches!(s, DestinationState::Retrying { .. })).await;
        let started = Instant::now();
        handle.stop().await;
        assert!(
            started.elapsed() < Duration::from_millis(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(rx.borrow().state, DestinationState::Stopped);
        assert_eq!(probe.pushes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_while_live_lets_push_unpublish() {
        let unpublish = Duration::from_millis(500);
        let (fake, probe) = Fake::new([true], vec![Step::LiveUntilStop(unpublish)]);
        let handle = spawn(fake, BackoffPolicy::default());
        let rx = handle.watch();
        wait_until(&handle, |s| matches!(s, DestinationState::Live { .. })).await;
        let started = Instant::now();
        handle.stop().await;
        assert_near(started.elapsed(), unpublish);
        assert!(probe.clean_shutdown.load(Ordering::SeqCst));
        let status = rx.borrow().clone();
        assert_eq!(status.state, DestinationState::Stopped);
        assert_eq!((status.connects, status.failures), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_drops_a_push_that_ignores_it() {
        let (fake, probe) = Fake::new([true], vec![Step::Hang]);
        let handle = spawn(fake, BackoffPolicy::default());
        let rx = handle.watch();
        wait_until(&handle, |s| matches!(s, DestinationState::Live { .. })).await;
        let started = Instant::now();
        handle.stop().await;
        assert_near(started.elapsed(), STOP_GRACE);
        assert!(probe.push_dropped.load(Ordering::SeqCst));
        assert_eq!(rx.borrow().state, DestinationState::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_while_waiting_for_stream() {
        let (fake, probe) = Fake::new([], vec![]);
        let handle = spawn(fake, BackoffPolicy::default());
        let rx = handle.watch();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(handle.status().state, DestinationState::Idle);
        let started = Instant::now();
        handle.stop().await;
        assert!(started.elapsed() < Duration::from_millis(10));
        assert_eq!(rx.borrow().state, DestinationState::Stopped);
        assert_eq!(probe.pushes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn source_gone_stops() {
        let (fake, probe) = Fake::new([false], vec![]);
        let handle = spawn(fake, BackoffPolicy::default());
        let recorder = record(&handle);
        let timeline = recorder.await.unwrap();
        assert_eq!(names(&timeline), ["idle", "stopped"]);
        assert_eq!(probe.pushes.load(Ordering::SeqCst), 0);
        assert!(handle.task.is_finished());
        handle.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_handle_stops() {
        let (fake, probe) = Fake::new(
            [true],
            vec![Step::LiveUntilStop(Duration::from_millis(100))],
        );
        let handle = spawn(fake, BackoffPolicy::default());
        let mut rx = handle.watch();
        wait_until(&handle, |s| matches!(s, DestinationState::Live { .. })).await;
        drop(handle);
        let stopped = tokio::time::timeout(
            Duration::from_secs(1),
            rx.wait_for(|s| s.state == DestinationState::Stopped),
        );
        assert!(matches!(stopped.await, Ok(Ok(_))));
        assert!(probe.clean_shutdown.load(Ordering::SeqCst));
    }
}
