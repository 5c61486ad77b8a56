//! `loadgen`: measures an RTMP server under fan-out, idle or relay load.
//!
//! Prints a human summary on stderr and one JSON object on stdout.
//!
//! ```text
//! loadgen --file in.flv --publish-url rtmp://127.0.0.1:1935/live/bench \
//!         --play-url rtmp://127.0.0.1:1935/live/bench --players 1000 --server-pid PID
//! loadgen --idle --play-url rtmp://127.0.0.1:1935/live/idle --players 1000 --server-pid PID
//! loadgen --relay 50 --relay-listen 127.0.0.1:19350 --file in.flv \
//!         --publish-url rtmp://127.0.0.1:1935/live/bench --server-pid PID
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use cthulhu_bench::{
    FanoutConfig, IdleConfig, RelayConfig, SourceConfig, run_fanout, run_idle, run_relay,
};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// Measures an RTMP server (nginx-rtmp, Cthulhu, ...) under load.
///
/// Modes: fan-out (default: one publisher, N players), `--idle` (N players on a
/// stream nobody publishes: server memory per player), `--relay K` (the server
/// pushes to K destinations served by this tool).
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    /// FLV file to publish, looped in real time (fan-out and relay).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Where to publish, e.g. rtmp://127.0.0.1:1935/live/bench?key=KEY.
    #[arg(long)]
    publish_url: Option<String>,
    /// What the players play, e.g. rtmp://127.0.0.1:1935/live/bench.
    #[arg(long)]
    play_url: Option<String>,
    /// Players, probes included.
    #[arg(long, default_value_t = 100)]
    players: usize,
    /// Players opened per second.
    #[arg(long, default_value_t = 500.0)]
    ramp_per_sec: f64,
    /// Players that also measure latency (full probes).
    #[arg(long, default_value_t = 5)]
    probes: usize,
    /// Seconds between the last player connected and the measurement window. Make it
    /// longer than the input's GOP: some servers start a player on the next keyframe.
    #[arg(long, default_value_t = 3.0)]
    warmup_secs: f64,
    /// Length of the measurement window, seconds.
    #[arg(long, default_value_t = 20.0)]
    duration_secs: f64,
    /// The server's process id, to measure its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds a player has from TCP connect to `play`.
    #[arg(long, default_value_t = 20.0)]
    setup_timeout_secs: f64,
    /// Cheap players pause this long after each read (0: read as soon as data
    /// arrives). On loopback, how often receivers read changes the server's cost.
    #[arg(long, default_value_t = 0.0)]
    read_interval_ms: f64,
    /// How cheap players drain media: `discard` drops it in the kernel without
    /// copying (recv with MSG_TRUNC; wire bytes counted), `parse` reads and skims
    /// it (media bytes counted). Probes always parse.
    #[arg(long, value_enum, default_value_t = Drain::Discard)]
    drain: Drain,
    /// `SO_RCVLOWAT` of discarding players, bytes (0: not set): the kernel wakes
    /// such a player only once this much is queued, so a server on loopback is not
    /// charged for waking thousands of readers. Probes never set it.
    #[arg(long, default_value_t = 0)]
    recv_lowat: usize,
    /// The publisher's outbound RTMP chunk size.
    #[arg(long, default_value_t = 4096)]
    chunk_size: u32,
    /// A label copied into the JSON report.
    #[arg(long)]
    label: Option<String>,
    /// Idle mode: hold players on an unpublished stream and report server memory.
    #[arg(long, conflicts_with = "relay")]
    idle: bool,
    /// Idle mode: seconds to let connections settle before sampling memory.
    #[arg(long, default_value_t = 2.0)]
    idle_settle_secs: f64,
    /// Relay mode: the number of destinations the server pushes to.
    #[arg(long, value_name = "K")]
    relay: Option<usize>,
    /// Relay mode: where to accept the server's pushes (app `relay`, names d0..dK-1).
    #[arg(long, default_value = "127.0.0.1:19350")]
    relay_listen: SocketAddr,
    /// Relay mode: seconds to wait for all destinations to connect.
    #[arg(long, default_value_t = 30.0)]
    relay_wait_secs: f64,
}

/// How cheap players drain media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Drain {
    /// recv with MSG_TRUNC: nothing is copied out of the kernel.
    Discard,
    /// Read into a buffer and follow the chunk stream.
    Parse,
}

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{name} must be a non-negative number"))
}

/// Raises the open-file limit to the hard limit; warns if `need` does not fit.
fn raise_nofile(need: u64) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < need => warn!(
            limit,
            need, "The open-file limit is too low for this many connections: raise it (ulimit -n)"
        ),
        Ok(limit) => info!(limit, "Open-file limit"),
        Err(e) => warn!(error = %e, "Could not raise the open-file limit"),
    }
}

fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    raise_nofile(cli.players as u64 + cli.relay.unwrap_or(0) as u64 + 64);
    // Players share one thread: a single-threaded runtime, no work stealing.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let setup_timeout = secs("setup-timeout-secs", cli.setup_timeout_secs)?;
    let source = || -> anyhow::Result<SourceConfig> {
        Ok(SourceConfig {
            publish_url: cli
                .publish_url
                .clone()
                .context("--publish-url is required")?,
            file: cli.file.clone().context("--file is required")?,
            chunk_size: cli.chunk_size,
        })
    };
    let json = if cli.idle {
        let report = run_idle(&IdleConfig {
            play_url: cli.play_url.clone().context("--play-url is required")?,
            players: cli.players,
            ramp_per_sec: cli.ramp_per_sec,
            settle: secs("idle-settle-secs", cli.idle_settle_secs)?,
            setup_timeout,
            server_pid: cli.server_pid,
            label: cli.label.clone(),
        })
        .await?;
        eprint!("{}", report.summary());
        serde_json::to_string(&report)?
    } else if let Some(k) = cli.relay {
        if k == 0 {
            bail!("--relay needs at least one destination");
        }
        let report = run_relay(&RelayConfig {
            source: source()?,
            destinations: k,
            listen: cli.relay_listen,
            wait: secs("relay-wait-secs", cli.relay_wait_secs)?,
            warmup: secs("warmup-secs", cli.warmup_secs)?,
            duration: secs("duration-secs", cli.duration_secs)?,
            server_pid: cli.server_pid,
            label: cli.label.clone(),
        })
        .await?;
        eprint!("{}", report.summary());
        serde_json::to_string(&report)?
    } else {
        let report = run_fanout(&FanoutConfig {
            source: source()?,
            play_url: cli.play_url.clone().context("--play-url is required")?,
            players: cli.players,
            probes: cli.probes,
            ramp_per_sec: cli.ramp_per_sec,
            warmup: secs("warmup-secs", cli.warmup_secs)?,
            duration: secs("duration-secs", cli.duration_secs)?,
            setup_timeout,
            read_interval: secs("read-interval-ms", cli.read_interval_ms / 1000.0)?,
            discard: cli.drain == Drain::Discard,
            recv_lowat: cli.recv_lowat,
            server_pid: cli.server_pid,
            label: cli.label.clone(),
        })
        .await?;
        eprint!("{}", report.summary());
        serde_json::to_string(&report)?
    };
    println!("{json}");
    Ok(())
}
