//! What a run reports: one JSON object on stdout (these structs, serialized) and a
//! human summary on stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::Percentiles;

/// The share of the published bytes a receiver must get in the window to have kept up.
pub const KEPT_UP_RATIO: f64 = 0.95;
/// The longest gap between reads a receiver may have in the window to have kept up.
pub const KEPT_UP_MAX_GAP_MS: f64 = 2000.0;

/// The server's resource use over the window.
#[derive(Debug, Clone, Serialize)]
pub struct ServerUsage {
    /// The process measured.
    pub pid: u32,
    /// User + system CPU time over the window, as a percentage of one core.
    pub cpu_percent: f64,
    /// `cpu_percent` per delivered Gbit/s.
    pub cpu_percent_per_gbps: Option<f64>,
    /// `VmRSS` at the end of the window, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (peak RSS) at the end of the window, KiB.
    pub hwm_kib: u64,
}

/// Latencies from publisher write to receiver read of video messages in the window.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// p50, p99 and max.
    #[serde(flatten)]
    pub percentiles: Percentiles,
    /// Video messages received in the window that matched no recent sending.
    pub unmatched: u64,
}

/// The result of a fan-out run.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    /// Always `"fanout"`.
    pub mode: &'static str,
    /// The caller's label, if any.
    pub label: Option<String>,
    /// Players asked for (probes included).
    pub players_requested: usize,
    /// Of which probes.
    pub probes: usize,
    /// Cheap players' pause after each read, ms (0: they read as data arrives).
    pub read_interval_ms: f64,
    /// Discarding players' `SO_RCVLOWAT` in bytes (0: not set).
    pub recv_lowat: usize,
    /// How cheap players drain: `"discard"` (dropped in the kernel, wire bytes
    /// counted) or `"parse"` (read and skimmed, media bytes counted).
    pub drain: &'static str,
    /// Players playing at the end of the window.
    pub players_connected: usize,
    /// Players that kept up (see [`KEPT_UP_RATIO`] and [`KEPT_UP_MAX_GAP_MS`]).
    pub players_kept_up: usize,
    /// Players that failed or were closed, before or during the window.
    pub players_failed: usize,
    /// The window's actual length, s.
    pub window_secs: f64,
    /// Message body bytes the publisher sent in the window, as Mbit/s.
    pub published_mbps: f64,
    /// All bytes all players read in the window, as Mbit/s.
    pub delivered_mbps: f64,
    /// The smallest share of the published bytes a connected player got.
    pub worst_ratio: Option<f64>,
    /// The longest gap between reads of any connected player in the window, ms.
    pub worst_gap_ms: Option<f64>,
    /// Probe latencies.
    pub latency: Latency,
    /// The server's resource use, with `--server-pid`.
    pub server: Option<ServerUsage>,
    /// This tool's own CPU use over the window, % of one core (near 100: the tool,
    /// not the server, may be the limit).
    pub tool_cpu_percent: Option<f64>,
    /// Failure reasons and counts.
    pub failures: BTreeMap<String, u64>,
    /// Why the publisher stopped, if it did.
    pub publisher_error: Option<String>,
}

/// The result of an idle run.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Always `"idle"`.
    pub mode: &'static str,
    /// The caller's label, if any.
    pub label: Option<String>,
    /// Players asked for.
    pub players_requested: usize,
    /// Players holding a played connection when memory was sampled.
    pub players_connected: usize,
    /// Players that failed.
    pub players_failed: usize,
    /// Server `VmRSS` before the players connected, KiB.
    pub rss_before_kib: Option<u64>,
    /// Server `VmRSS` with the players connected and settled, KiB.
    pub rss_after_kib: Option<u64>,
    /// Server `VmHWM` at the end, KiB.
    pub hwm_kib: Option<u64>,
    /// RSS growth per connected player, KiB.
    pub kib_per_player: Option<f64>,
    /// Failure reasons and counts.
    pub failures: BTreeMap<String, u64>,
}

/// One relay destination's result.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationReport {
    /// The stream name it published.
    pub name: String,
    /// Whether it kept up.
    pub kept_up: bool,
    /// All bytes received in the window, as Mbit/s.
    pub mbps: f64,
    /// Its share of the published bytes.
    pub ratio: f64,
    /// Its longest gap between reads in the window, ms.
    pub max_gap_ms: f64,
    /// Its video latencies.
    pub latency: Latency,
}

/// The result of a relay run.
#[derive(Debug, Clone, Serialize)]
pub struct RelayReport {
    /// Always `"relay"`.
    pub mode: &'static str,
    /// The caller's label, if any.
    pub label: Option<String>,
    /// Destinations expected.
    pub destinations_requested: usize,
    /// Destinations publishing to us at the end of the window.
    pub destinations_connected: usize,
    /// Destinations that kept up.
    pub destinations_kept_up: usize,
    /// The window's actual length, s.
    pub window_secs: f64,
    /// Message body bytes the publisher sent in the window, as Mbit/s.
    pub published_mbps: f64,
    /// All bytes all destinations received in the window, as Mbit/s.
    pub delivered_mbps: f64,
    /// Latencies over all destinations.
    pub latency: Latency,
    /// The server's resource use, with `--server-pid`.
    pub server: Option<ServerUsage>,
    /// This tool's own CPU use over the window, % of one core (near 100: the tool,
    /// not the server, may be the limit).
    pub tool_cpu_percent: Option<f64>,
    /// Each destination, by name.
    pub destinations: Vec<DestinationReport>,
    /// Failure reasons and counts.
    pub failures: BTreeMap<String, u64>,
    /// Why the publisher stopped, if it did.
    pub publisher_error: Option<String>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn latency_line(l: &Latency) -> String {
    format!(
        "latency p50/p99/max {}/{}/{} ms ({} samples, {} unmatched)",
        ms(l.percentiles.p50_ms),
        ms(l.percentiles.p99_ms),
        ms(l.percentiles.max_ms),
        l.percentiles.samples,
        l.unmatched
    )
}

fn server_line(s: Option<&ServerUsage>) -> String {
    match s {
        Some(s) => format!(
            "server pid {}: CPU {:.1}% ({} %/Gbit/s), RSS {:.1} MiB (peak {:.1} MiB)",
            s.pid,
            s.cpu_percent,
            ms(s.cpu_percent_per_gbps),
            s.rss_kib as f64 / 1024.0,
            s.hwm_kib as f64 / 1024.0
        ),
        None => "server: not measured (no --server-pid)".to_owned(),
    }
}

fn failures_lines(out: &mut String, failures: &BTreeMap<String, u64>) {
    for (why, n) in failures {
        let _ = writeln!(out, "  failed x{n}: {why}");
    }
}

impl FanoutReport {
    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "fan-out{}: {} players requested ({} probes), {} connected, {} kept up, {} failed",
            self.label
                .as_deref()
                .map(|l| format!(" [{l}]"))
                .unwrap_or_default(),
            self.players_requested,
            self.probes,
            self.players_connected,
            self.players_kept_up,
            self.players_failed
        );
        let _ = writeln!(
            s,
            "  window {:.1} s: published {:.2} Mbit/s, delivered {:.1} Mbit/s, worst player {} of published, longest gap {} ms",
            self.window_secs,
            self.published_mbps,
            self.delivered_mbps,
            self.worst_ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            ms(self.worst_gap_ms)
        );
        let _ = writeln!(s, "  {}", latency_line(&self.latency));
        let _ = writeln!(s, "  {}", server_line(self.server.as_ref()));
        if let Some(t) = self.tool_cpu_percent {
            let _ = writeln!(s, "  loadgen itself: CPU {t:.1}%");
        }
        if let Some(e) = &self.publisher_error {
            let _ = writeln!(s, "  publisher stopped: {e}");
        }
        failures_lines(&mut s, &self.failures);
        s
    }
}

impl IdleReport {
    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let kib = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let _ = writeln!(
            s,
            "idle{}: {} players requested, {} connected, {} failed; server RSS {} -> {} KiB (peak {}), {} KiB per player",
            self.label
                .as_deref()
                .map(|l| format!(" [{l}]"))
                .unwrap_or_default(),
            self.players_requested,
            self.players_connected,
            self.players_failed,
            kib(self.rss_before_kib),
            kib(self.rss_after_kib),
            kib(self.hwm_kib),
            ms(self.kib_per_player)
        );
        failures_lines(&mut s, &self.failures);
        s
    }
}

impl RelayReport {
    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "relay{}: {} destinations expected, {} connected, {} kept up",
            self.label
                .as_deref()
                .map(|l| format!(" [{l}]"))
                .unwrap_or_default(),
            self.destinations_requested,
            self.destinations_connected,
            self.destinations_kept_up
        );
        let _ = writeln!(
            s,
            "  window {:.1} s: published {:.2} Mbit/s, delivered {:.1} Mbit/s",
            self.window_secs, self.published_mbps, self.delivered_mbps
        );
        let _ = writeln!(s, "  overall {}", latency_line(&self.latency));
        // Every destination when there are few; otherwise those that fell behind.
        let few = self.destinations.len() <= 10;
        for d in self.destinations.iter().filter(|d| few || !d.kept_up) {
            let _ = writeln!(
                s,
                "  {}: {} {:.2} Mbit/s ({:.1}%), gap {:.0} ms, {}",
                d.name,
                if d.kept_up { "kept up" } else { "BEHIND" },
                d.mbps,
                d.ratio * 100.0,
                d.max_gap_ms,
                latency_line(&d.latency)
            );
        }
        let _ = writeln!(s, "  {}", server_line(self.server.as_ref()));
        if let Some(t) = self.tool_cpu_percent {
            let _ = writeln!(s, "  loadgen itself: CPU {t:.1}%");
        }
        if let Some(e) = &self.publisher_error {
            let _ = writeln!(s, "  publisher stopped: {e}");
        }
        failures_lines(&mut s, &self.failures);
        s
    }
}
