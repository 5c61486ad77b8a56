//! Per-plugin call figures: calls, failures by reason and latency, per exported
//! function. Counted with relaxed atomics when a call ends (no lock, no allocation)
//! and read as [`PluginStats`] snapshots, e.g. for Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::PluginError;
use crate::manifest::PluginKind;

/// Upper bounds of the latency histogram's buckets, in seconds; a last bucket
/// (`+Inf`) takes the slower calls. From 0.1 ms (a warm call of a small plugin) to
/// 1 s (far past the default 50 ms timeout).
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Buckets of a histogram: [`LATENCY_BUCKETS`] and `+Inf`.
const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// Why a call failed, as the host tells failures apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureReason {
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access, ...).
    Trap,
    /// The call ran past the plugin's timeout.
    Timeout,
    /// The call used up the plugin's fuel.
    Fuel,
    /// The guest tried to grow its memory past the manifest's cap.
    Memory,
    /// The guest answered something the host cannot use.
    InvalidOutput,
    /// The plugin was disabled after repeated failures: the call did not run.
    Disabled,
    /// A fresh instance (after a failed call) could not be created or configured.
    Instantiate,
    /// The host could not run the call.
    Host,
}

impl FailureReason {
    /// Every reason, in the order of [`FunctionStats::failures`].
    pub const ALL: [FailureReason; 8] = [
        FailureReason::Trap,
        FailureReason::Timeout,
        FailureReason::Fuel,
        FailureReason::Memory,
        FailureReason::InvalidOutput,
        FailureReason::Disabled,
        FailureReason::Instantiate,
        FailureReason::Host,
    ];

    /// A short lowercase name, for metric labels: `trap`, `timeout`, `fuel`,
    /// `memory`, `invalid_output`, `disabled`, `instantiate`, `host`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Trap => "trap",
            FailureReason::Timeout => "timeout",
            FailureReason::Fuel => "fuel",
            FailureReason::Memory => "memory",
            FailureReason::InvalidOutput => "invalid_output",
            FailureReason::Disabled => "disabled",
            FailureReason::Instantiate => "instantiate",
            FailureReason::Host => "host",
        }
    }

    /// The reason of a failed call.
    pub fn of(error: &PluginError) -> Self {
        match error {
            PluginError::Trap { .. } => FailureReason::Trap,
            PluginError::Timeout { .. } => FailureReason::Timeout,
            PluginError::OutOfFuel { .. } => FailureReason::Fuel,
            PluginError::MemoryLimit { .. } => FailureReason::Memory,
            PluginError::InvalidOutput { .. } => FailureReason::InvalidOutput,
            PluginError::Disabled { .. } => FailureReason::Disabled,
            PluginError::Link { .. } | PluginError::Configure { .. } => FailureReason::Instantiate,
            PluginError::Config(_)
            | PluginError::Io { .. }
            | PluginError::HashMismatch { .. }
            | PluginError::Compile { .. }
            | PluginError::WrongKind { .. }
            | PluginError::Host { .. } => FailureReason::Host,
        }
    }

    fn index(self) -> usize {
        match self {
            FailureReason::Trap => 0,
            FailureReason::Timeout => 1,
            FailureReason::Fuel => 2,
            FailureReason::Memory => 3,
            FailureReason::InvalidOutput => 4,
            FailureReason::Disabled => 5,
            FailureReason::Instantiate => 6,
            FailureReason::Host => 7,
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point-in-time view of a plugin's calls, per exported function.
///
/// Counters run from the plugin's load and survive reloads of its file. A call is
/// counted when it ends: with the latency its caller saw (waiting for a free
/// instance, instantiating one if needed, the guest's run and checking its answer)
/// and, if it failed, one [`FailureReason`]. Calls refused at once because the
/// plugin is disabled count too (reason `disabled`, near-zero latency); a call whose
/// caller gave up before it ended does not.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginStats {
    /// The plugin's name.
    pub name: String,
    /// Its kind.
    pub kind: PluginKind,
    /// One entry per function its world exports (besides `configure`): `authorize`,
    /// `route`, `on-tick` and `may-start`, or `on-event`.
    pub functions: Vec<FunctionStats>,
}

/// The calls of one exported function of a plugin.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionStats {
    /// The function's WIT name (`authorize`, `route`, `on-tick`, `may-start`,
    /// `on-event`).
    pub function: &'static str,
    /// Calls ended, failed ones included; equals `latency.count`.
    pub calls: u64,
    /// Failed calls by reason: every reason, in [`FailureReason::ALL`]'s order.
    pub failures: Vec<(FailureReason, u64)>,
    /// How long the calls took.
    pub latency: LatencyHistogram,
}

impl FunctionStats {
    /// Failed calls for one reason.
    pub fn failures_for(&self, reason: FailureReason) -> u64 {
        self.failures
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// Failed calls, all reasons.
    pub fn failures_total(&self) -> u64 {
        self.failures.iter().map(|(_, n)| n).sum()
    }
}

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyHistogram {
    /// `(upper bound in seconds, calls)` per bucket, not cumulative: the calls that
    /// took at most this long and longer than the previous bound. The last bound is
    /// `f64::INFINITY`. (The shape prometheus-client's `encode_histogram` takes.)
    pub buckets: Vec<(f64, u64)>,
    /// The calls' total time, in seconds.
    pub sum_seconds: f64,
    /// The calls: the sum of the buckets.
    pub count: u64,
}

/// The exported functions of a world that calls go to (`configure` aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Export {
    Authorize,
    Route,
    OnTick,
    MayStart,
    OnEvent,
}

impl Export {
    /// The WIT name.
    fn name(self) -> &'static str {
        match self {
            Export::Authorize => "authorize",
            Export::Route => "route",
            Export::OnTick => "on-tick",
            Export::MayStart => "may-start",
            Export::OnEvent => "on-event",
        }
    }

    /// The functions a world exports.
    fn of(kind: PluginKind) -> &'static [Export] {
        match kind {
            PluginKind::Auth => &[Export::Authorize],
            PluginKind::Route => &[Export::Route],
            PluginKind::Schedule => &[Export::OnTick, Export::MayStart],
            PluginKind::Notify => &[Export::OnEvent],
        }
    }
}

/// The counters of one plugin: one set per exported function of its world.
pub(crate) struct Counters {
    functions: Box<[(Export, FunctionCounters)]>,
}

#[derive(Default)]
struct FunctionCounters {
    failures: [AtomicU64; FailureReason::ALL.len()],
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl Counters {
    pub(crate) fn new(kind: PluginKind) -> Self {
        Self {
            functions: Export::of(kind)
                .iter()
                .map(|e| (*e, FunctionCounters::default()))
                .collect(),
        }
    }

    /// Counts an ended call of `export`: its latency and, if it failed, why.
    pub(crate) fn record(&self, export: Export, took: Duration, failure: Option<FailureReason>) {
        // The adapters check the kind when they are built: an export of another
        // world is never called, and would not be counted.
        let Some((_, c)) = self.functions.iter().find(|(e, _)| *e == export) else {
            return;
        };
        let bucket = LATENCY_BUCKETS.partition_point(|b| *b < took.as_secs_f64());
        if let Some(b) = c.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        c.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(reason) = failure
            && let Some(f) = c.failures.get(reason.index())
        {
            f.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The figures now, per function.
    pub(crate) fn snapshot(&self) -> Vec<FunctionStats> {
        self.functions
            .iter()
            .map(|(export, c)| {
                let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                    .iter()
                    .copied()
                    .chain([f64::INFINITY])
                    .zip(c.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
                    .collect();
                let count = buckets.iter().map(|(_, n)| n).sum();
                FunctionStats {
                    function: export.name(),
                    calls: count,
                    failures: FailureReason::ALL
                        .iter()
                        .zip(&c.failures)
                        .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
                        .collect(),
                    latency: LatencyHistogram {
                        buckets,
                        sum_seconds: Duration::from_nanos(c.sum_nanos.load(Ordering::Relaxed))
                            .as_secs_f64(),
                        count,
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_their_bucket_and_failures_under_their_reason() {
        let c = Counters::new(PluginKind::Schedule);
        c.record(Export::OnTick, Duration::from_micros(50), None);
        // A bound is inclusive (`le`).
        c.record(Export::OnTick, Duration::from_micros(100), None);
        c.record(
            Export::OnTick,
            Duration::from_millis(3),
            Some(FailureReason::Trap),
        );
        c.record(
            Export::MayStart,
            Duration::from_secs(2),
            Some(FailureReason::Timeout),
        );
        // Not a schedule export: ignored.
        c.record(Export::Authorize, Duration::from_millis(1), None);

        let stats = c.snapshot();
        assert_eq!(
            stats.iter().map(|f| f.function).collect::<Vec<_>>(),
            ["on-tick", "may-start"]
        );
        let tick = &stats[0];
        assert_eq!(tick.calls, 3);
        assert_eq!(tick.latency.count, 3);
        assert_eq!(tick.latency.buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(tick.latency.buckets[0], (0.0001, 2));
        assert_eq!(tick.latency.buckets[5], (0.005, 1));
        assert!((tick.latency.sum_seconds - 0.00315).abs() < 1e-9);
        assert_eq!(tick.failures_for(FailureReason::Trap), 1);
        assert_eq!(tick.failures_total(), 1);
        assert_eq!(tick.failures.len(), FailureReason::ALL.len());

        let start = &stats[1];
        assert_eq!(start.calls, 1);
        assert_eq!(start.latency.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(start.failures_for(FailureReason::Timeout), 1);
        assert_eq!(start.failures_for(FailureReason::Trap), 0);
    }

    #[test]
    fn errors_map_to_reasons_and_reasons_to_distinct_labels() {
        let p = || "p".to_owned();
        assert_eq!(
            FailureReason::of(&PluginError::OutOfFuel { plugin: p() }),
            FailureReason::Fuel
        );
        assert_eq!(
            FailureReason::of(&PluginError::MemoryLimit {
                plugin: p(),
                limit: 1
            }),
            FailureReason::Memory
        );
        assert_eq!(
            FailureReason::of(&PluginError::Configure {
                plugin: p(),
                message: String::new()
            }),
            FailureReason::Instantiate
        );
        let mut labels: Vec<_> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), FailureReason::ALL.len());
        for (i, r) in FailureReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
