//! The three runs — fan-out, idle and relay — from configuration to report.
//!
//! Players run as tasks on the caller's runtime; the publisher, the probes and the
//! relay destinations run on a [`TimingThread`]. The measurement window opens after
//! every player has connected (or failed) and the warm-up has passed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cthulhu_rtmp::RtmpUrl;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::info;

use crate::BenchError;
use crate::key::VideoKey;
use crate::player::{PlayerShared, ProbeCtx, Target, run_player};
use crate::procstat;
use crate::publisher::{MediaFile, PublishConfig, PublisherStats, publish, publish_srt};
use crate::relay::{self, Destinations, RelayShared};
use crate::report::{
    DestinationReport, FanoutReport, IdleReport, KEPT_UP_MAX_GAP_MS, KEPT_UP_RATIO, Latency,
    RelayReport, ServerUsage,
};
use crate::srt::SrtTarget;
use crate::stats::{
    Clock, ErrorLog, LatencyLog, PeerSnapshot, PeerState, PeerStats, Percentiles, SentLog, Window,
};
use crate::timing::TimingThread;

/// How long the publisher's send log remembers a video message.
const SENT_LOG_KEEP: Duration = Duration::from_secs(10);
/// How long to wait for the publisher to be accepted.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);

/// What to publish and where.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The publish URL (`rtmp://host/app/name?key=...` or `rtmp://host/app/KEY`).
    pub publish_url: String,
    /// The FLV file to loop.
    pub file: PathBuf,
    /// The publisher's outbound chunk size.
    pub chunk_size: u32,
}

impl SourceConfig {
    /// Whether the publisher speaks SRT (`srt://` publish URL).
    pub fn is_srt(&self) -> bool {
        self.publish_url.starts_with("srt://")
    }
}

/// A fan-out run.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The publisher.
    pub source: SourceConfig,
    /// What the players play.
    pub play_url: String,
    /// Players, probes included.
    pub players: usize,
    /// Of which full probes.
    pub probes: usize,
    /// Players opened per second.
    pub ramp_per_sec: f64,
    /// Time from the last player connected to the window.
    pub warmup: Duration,
    /// The window.
    pub duration: Duration,
    /// Time a player has from TCP connect to `play`.
    pub setup_timeout: Duration,
    /// Pause of cheap players after each read (see [`PlayerShared::read_interval`]).
    pub read_interval: Duration,
    /// Cheap players discard media unread (see [`PlayerShared::discard`]).
    pub discard: bool,
    /// Discarding players' `SO_RCVLOWAT` (see [`PlayerShared::recv_lowat`]).
    pub recv_lowat: usize,
    /// The server process to measure.
    pub server_pid: Option<u32>,
    /// A label copied into the report.
    pub label: Option<String>,
}

/// An idle run: players that play a stream nobody publishes.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// What the players play.
    pub play_url: String,
    /// Players.
    pub players: usize,
    /// Players opened per second.
    pub ramp_per_sec: f64,
    /// Time from the last player connected to the memory sample.
    pub settle: Duration,
    /// Time a player has from TCP connect to `play`.
    pub setup_timeout: Duration,
    /// The server process to measure.
    pub server_pid: Option<u32>,
    /// A label copied into the report.
    pub label: Option<String>,
}

/// A relay run: the server under test pushes to destinations this tool serves.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The publisher.
    pub source: SourceConfig,
    /// Destinations expected.
    pub destinations: usize,
    /// Where to listen for them.
    pub listen: SocketAddr,
    /// How long to wait for all of them.
    pub wait: Duration,
    /// Time from the last destination connected to the window.
    pub warmup: Duration,
    /// The window.
    pub duration: Duration,
    /// The server process to measure.
    pub server_pid: Option<u32>,
    /// A label copied into the report.
    pub label: Option<String>,
}

/// The publisher running on the timing thread.
struct PublisherRun {
    stats: Arc<PublisherStats>,
    sent: Arc<SentLog>,
    stop: watch::Sender<bool>,
    live: watch::Receiver<bool>,
    task: JoinHandle<Result<(), BenchError>>,
}

impl PublisherRun {
    fn start(
        timing: &TimingThread,
        source: &SourceConfig,
        video_key: VideoKey,
    ) -> Result<Self, BenchError> {
        let file = Arc::new(MediaFile::load(&source.file)?);
        info!(
            file = %source.file.display(),
            mbps = file.bitrate_bps() / 1e6,
            loop_secs = file.loop_duration().as_secs_f64(),
            "Input"
        );
        let stats = Arc::new(PublisherStats::default());
        let sent = Arc::new(SentLog::new(SENT_LOG_KEEP));
        let (stop, stop_rx) = watch::channel(false);
        let (live_tx, live) = watch::channel(false);
        let task = if source.is_srt() {
            let target = SrtTarget::parse(&source.publish_url, "publish URL")?;
            timing.handle().spawn(publish_srt(
                target.caller,
                file,
                stats.clone(),
                sent.clone(),
                live_tx,
                stop_rx,
            ))
        } else {
            let url = RtmpUrl::parse(&source.publish_url).map_err(|source| BenchError::Url {
                what: "publish URL",
                source,
            })?;
            timing.handle().spawn(publish(
                PublishConfig {
                    url,
                    chunk_size: source.chunk_size,
                    video_key,
                },
                file,
                stats.clone(),
                sent.clone(),
                live_tx,
                stop_rx,
            ))
        };
        Ok(Self {
            stats,
            sent,
            stop,
            live,
            task,
        })
    }

    async fn wait_live(&mut self) -> Result<(), BenchError> {
        let mut live = self.live.clone();
        tokio::select! {
            r = tokio::time::timeout(PUBLISH_TIMEOUT, live.wait_for(|v| *v)) => match r {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => self.failure().await,
                Err(_) => Err(BenchError::Publish("not accepted in time".into())),
            },
            r = &mut self.task => Err(match r {
                Ok(Err(e)) => e,
                Ok(Ok(())) => BenchError::Publish("stopped before publishing".into()),
                Err(e) => BenchError::Publish(e.to_string()),
            }),
        }
    }

    async fn failure(&mut self) -> Result<(), BenchError> {
        match (&mut self.task).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Err(BenchError::Publish("stopped before publishing".into())),
            Err(e) => Err(BenchError::Publish(e.to_string())),
        }
    }

    fn body_bytes(&self) -> u64 {
        self.stats.body_bytes.load(Ordering::Relaxed)
    }

    /// Whether the publisher has stopped, and why.
    fn error_now(&self) -> Option<String> {
        self.task
            .is_finished()
            .then(|| "the publisher stopped during the run".to_owned())
    }

    async fn stop(self) -> Option<String> {
        self.stop.send_replace(true);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(e.to_string()),
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("did not stop in time".into()),
        }
    }
}

/// CPU ticks at the window's start, for [`ServerProbe::finish`].
struct ServerProbe {
    pid: u32,
    ticks: u64,
    tck: u64,
}

/// This process's CPU ticks now, if readable.
fn own_ticks() -> Option<u64> {
    procstat::cpu_ticks(std::process::id()).ok()
}

/// CPU % of one core between two tick readings over `secs`.
fn own_cpu_percent(before: Option<u64>, secs: f64) -> Option<f64> {
    let (b, a) = (before?, own_ticks()?);
    Some(
        a.saturating_sub(b) as f64 / procstat::clock_ticks_per_sec() as f64 / secs.max(1e-9)
            * 100.0,
    )
}

impl ServerProbe {
    fn start(pid: Option<u32>) -> Result<Option<Self>, BenchError> {
        let Some(pid) = pid else { return Ok(None) };
        let ticks = procstat::cpu_ticks(pid).map_err(|e| {
            BenchError::Setup(format!(
                "cannot read /proc/{pid}/stat (is --server-pid right?): {e}"
            ))
        })?;
        Ok(Some(Self {
            pid,
            ticks,
            tck: procstat::clock_ticks_per_sec(),
        }))
    }

    fn finish(&self, window_secs: f64, delivered_mbps: f64) -> Result<ServerUsage, BenchError> {
        let ticks = procstat::cpu_ticks(self.pid)
            .map_err(|e| BenchError::Setup(format!("the server process went away: {e}")))?;
        let mem = procstat::memory(self.pid)
            .map_err(|e| BenchError::Setup(format!("the server process went away: {e}")))?;
        let cpu_secs = ticks.saturating_sub(self.ticks) as f64 / self.tck as f64;
        let cpu_percent = cpu_secs / window_secs.max(1e-9) * 100.0;
        Ok(ServerUsage {
            pid: self.pid,
            cpu_percent,
            cpu_percent_per_gbps: (delivered_mbps > 0.0)
                .then(|| cpu_percent / (delivered_mbps / 1000.0)),
            rss_kib: mem.rss_kib,
            hwm_kib: mem.hwm_kib,
        })
    }
}

/// Whether player `i` of `n` is one of the `probes` probes: those at the middles of
/// `probes` equal slices of the join order (with 5 probes: 10%, 30%, ... 90%).
fn is_probe(i: usize, n: usize, probes: usize) -> bool {
    let probes = probes.min(n);
    (0..probes).any(|k| (2 * k + 1) * n / (2 * probes) == i)
}

/// Opens `n` players at `rate` per second; `probes` of them, spread evenly through
/// the join order, are probes (on the timing thread), the rest cheap players (on the
/// current runtime).
///
/// Spread, not first: a server writes a message to its players one after another, so
/// a player's latency depends on its place in that order, and servers order players
/// differently (nginx-rtmp puts the newest first, Cthulhu's fan-out appends). Probes
/// that joined first would measure the best place on one server and the worst on the
/// other.
struct Crowd {
    stats: Vec<Arc<PeerStats>>,
    cheap: JoinSet<()>,
    probes: Vec<JoinHandle<()>>,
}

impl Crowd {
    async fn open(
        shared: &Arc<PlayerShared>,
        n: usize,
        rate: f64,
        probes: usize,
        probe_ctx: Option<&ProbeCtx>,
        timing: Option<&TimingThread>,
    ) -> Self {
        let mut crowd = Crowd {
            stats: Vec::with_capacity(n),
            cheap: JoinSet::new(),
            probes: Vec::new(),
        };
        let start = tokio::time::Instant::now();
        let rate = if rate > 0.0 { rate } else { f64::INFINITY };
        for i in 0..n {
            let stats = Arc::new(PeerStats::new());
            crowd.stats.push(stats.clone());
            match (probe_ctx, timing) {
                (Some(p), Some(t)) if is_probe(i, n, probes) => {
                    crowd.probes.push(t.handle().spawn(run_player(
                        shared.clone(),
                        stats,
                        Some(p.clone()),
                    )));
                }
                _ => {
                    crowd.cheap.spawn(run_player(shared.clone(), stats, None));
                }
            }
            let next = Duration::from_secs_f64((i + 1) as f64 / rate);
            if i + 1 < n && next > Duration::ZERO {
                tokio::time::sleep_until(start + next).await;
            }
            if i > 0 && i % 500 == 0 {
                info!(opened = i, "Opening players");
            }
        }
        crowd
    }

    /// Waits until no player is still connecting, at most `limit`.
    async fn settle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline
            && self
                .stats
                .iter()
                .any(|s| s.state() == PeerState::Connecting)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn count(&self, state: PeerState) -> usize {
        self.stats.iter().filter(|s| s.state() == state).count()
    }

    fn snapshot(&self) -> Vec<PeerSnapshot> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    fn close(mut self) {
        self.cheap.abort_all();
        for p in self.probes.drain(..) {
            p.abort();
        }
    }
}

/// One receiver's result over the window.
struct Verdict {
    connected: bool,
    kept_up: bool,
    bytes: u64,
    ratio: f64,
    max_gap_ms: f64,
}

fn judge(
    before: &PeerSnapshot,
    after: &PeerSnapshot,
    expected: u64,
    start_us: u64,
    end_us: u64,
) -> Verdict {
    let connected = after.state == PeerState::Active;
    let media = after.media_bytes.saturating_sub(before.media_bytes);
    let tail = end_us.saturating_sub(after.last_read_us.max(start_us));
    let max_gap_ms = after.max_gap_us.max(tail) as f64 / 1000.0;
    let ratio = if expected > 0 {
        media as f64 / expected as f64
    } else {
        0.0
    };
    Verdict {
        connected,
        kept_up: connected && ratio >= KEPT_UP_RATIO && max_gap_ms <= KEPT_UP_MAX_GAP_MS,
        bytes: after.bytes.saturating_sub(before.bytes),
        ratio,
        max_gap_ms,
    }
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs.max(1e-9) / 1e6
}

fn latency(log: &LatencyLog) -> (Vec<u64>, Latency) {
    let (mut samples, unmatched) = log.take();
    let percentiles = Percentiles::of(&mut samples);
    (
        samples,
        Latency {
            percentiles,
            unmatched,
        },
    )
}

/// Publishes, opens the players, measures the window and reports.
pub async fn run_fanout(cfg: &FanoutConfig) -> Result<FanoutReport, BenchError> {
    let target = Target::parse(&cfg.play_url)?;
    // Across RTMP ⇄ SRT the container bytes change; the slices do not.
    let video_key = if target.is_srt() || cfg.source.is_srt() {
        VideoKey::LastNal
    } else {
        VideoKey::Body
    };
    let timing = TimingThread::start()?;
    let clock = Clock::new();
    let window = Arc::new(Window::new());
    let mut publisher = PublisherRun::start(&timing, &cfg.source, video_key)?;
    publisher.wait_live().await?;
    info!(
        players = cfg.players,
        probes = cfg.probes,
        "Publisher live: opening players"
    );
    let errors = ErrorLog::new();
    let shared = Arc::new(PlayerShared {
        target,
        video_key,
        clock,
        window: window.clone(),
        errors: errors.clone(),
        setup_timeout: cfg.setup_timeout,
        read_interval: cfg.read_interval,
        discard: cfg.discard,
        recv_lowat: cfg.recv_lowat,
    });
    let latency_log = Arc::new(LatencyLog::new());
    let probe_ctx = ProbeCtx {
        sent: publisher.sent.clone(),
        latency: latency_log.clone(),
    };
    let probes = cfg.probes.min(cfg.players);
    let crowd = Crowd::open(
        &shared,
        cfg.players,
        cfg.ramp_per_sec,
        probes,
        Some(&probe_ctx),
        Some(&timing),
    )
    .await;
    crowd
        .settle(cfg.setup_timeout + Duration::from_secs(1))
        .await;
    info!(
        connected = crowd.count(PeerState::Active),
        failed = crowd.count(PeerState::Gone),
        "Players open: warming up"
    );
    tokio::time::sleep(cfg.warmup).await;

    let server = ServerProbe::start(cfg.server_pid)?;
    let tool_ticks = own_ticks();
    let start_us = clock.now_us();
    window.open(start_us);
    let sent_before = publisher.body_bytes();
    let before = crowd.snapshot();
    info!(secs = cfg.duration.as_secs_f64(), "Measuring");
    tokio::time::sleep(cfg.duration).await;
    let end_us = clock.now_us();
    window.close(end_us);
    let sent_after = publisher.body_bytes();
    let after = crowd.snapshot();
    let window_secs = end_us.saturating_sub(start_us) as f64 / 1e6;
    let tool_cpu_percent = own_cpu_percent(tool_ticks, window_secs);
    let expected = sent_after.saturating_sub(sent_before);

    let verdicts: Vec<Verdict> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| judge(b, a, expected, start_us, end_us))
        .collect();
    let delivered: u64 = verdicts.iter().map(|v| v.bytes).sum();
    let delivered_mbps = mbps(delivered, window_secs);
    let server = match &server {
        Some(s) => Some(s.finish(window_secs, delivered_mbps)?),
        None => None,
    };
    let publisher_error = publisher.error_now();
    crowd.close();
    let publisher_error = publisher_error.or(publisher.stop().await);
    drop(timing);
    let (_, latency) = latency(&latency_log);
    let connected: Vec<&Verdict> = verdicts.iter().filter(|v| v.connected).collect();
    Ok(FanoutReport {
        mode: "fanout",
        label: cfg.label.clone(),
        players_requested: cfg.players,
        probes,
        read_interval_ms: cfg.read_interval.as_secs_f64() * 1000.0,
        drain: if cfg.discard { "discard" } else { "parse" },
        recv_lowat: cfg.recv_lowat,
        players_connected: connected.len(),
        players_kept_up: verdicts.iter().filter(|v| v.kept_up).count(),
        players_failed: after.iter().filter(|s| s.state == PeerState::Gone).count(),
        window_secs,
        published_mbps: mbps(expected, window_secs),
        delivered_mbps,
        worst_ratio: connected.iter().map(|v| v.ratio).reduce(f64::min),
        worst_gap_ms: connected.iter().map(|v| v.max_gap_ms).reduce(f64::max),
        latency,
        server,
        tool_cpu_percent,
        failures: errors.counts(),
        publisher_error,
    })
}

/// Opens players on an unpublished stream and reports the server's memory per player.
pub async fn run_idle(cfg: &IdleConfig) -> Result<IdleReport, BenchError> {
    let target = Target::parse(&cfg.play_url)?;
    let rss = |pid: Option<u32>| -> Result<Option<procstat::Memory>, BenchError> {
        pid.map(|p| {
            procstat::memory(p).map_err(|e| {
                BenchError::Setup(format!(
                    "cannot read /proc/{p}/status (is --server-pid right?): {e}"
                ))
            })
        })
        .transpose()
    };
    let before = rss(cfg.server_pid)?;
    let errors = ErrorLog::new();
    let shared = Arc::new(PlayerShared {
        target,
        video_key: VideoKey::Body,
        clock: Clock::new(),
        window: Arc::new(Window::new()),
        errors: errors.clone(),
        setup_timeout: cfg.setup_timeout,
        read_interval: Duration::ZERO,
        discard: false,
        recv_lowat: 0,
    });
    let crowd = Crowd::open(&shared, cfg.players, cfg.ramp_per_sec, 0, None, None).await;
    crowd
        .settle(cfg.setup_timeout + Duration::from_secs(1))
        .await;
    info!(
        connected = crowd.count(PeerState::Active),
        "Idle players open: settling"
    );
    tokio::time::sleep(cfg.settle).await;
    let after = rss(cfg.server_pid)?;
    let connected = crowd.count(PeerState::Active);
    let failed = crowd.count(PeerState::Gone);
    crowd.close();
    let kib_per_player = match (before, after) {
        (Some(b), Some(a)) if connected > 0 => {
            Some((a.rss_kib as f64 - b.rss_kib as f64) / connected as f64)
        }
        _ => None,
    };
    Ok(IdleReport {
        mode: "idle",
        label: cfg.label.clone(),
        players_requested: cfg.players,
        players_connected: connected,
        players_failed: failed,
        rss_before_kib: before.map(|m| m.rss_kib),
        rss_after_kib: after.map(|m| m.rss_kib),
        hwm_kib: after.map(|m| m.hwm_kib),
        kib_per_player,
        failures: errors.counts(),
    })
}

/// Serves relay destinations, publishes, waits for the server under test to push
/// to all of them, measures the window and reports.
pub async fn run_relay(cfg: &RelayConfig) -> Result<RelayReport, BenchError> {
    let timing = TimingThread::start()?;
    let clock = Clock::new();
    let window = Arc::new(Window::new());
    let listener = std::net::TcpListener::bind(cfg.listen)
        .map_err(|e| BenchError::Setup(format!("listening on {}: {e}", cfg.listen)))?;
    listener.set_nonblocking(true)?;
    if cfg.source.is_srt() {
        return Err(BenchError::Setup(
            "relay mode publishes over RTMP (its destinations match message bodies)".into(),
        ));
    }
    let mut publisher = PublisherRun::start(&timing, &cfg.source, VideoKey::Body)?;
    let dests = Arc::new(Destinations::new());
    let errors = ErrorLog::new();
    let shared = RelayShared {
        clock,
        window: window.clone(),
        sent: publisher.sent.clone(),
        dests: dests.clone(),
        errors: errors.clone(),
    };
    let server_task = timing.handle().spawn(async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => relay::serve(l, shared).await,
            Err(e) => shared.errors.add(format!("relay listener: {e}")),
        }
    });
    publisher.wait_live().await?;
    info!(destinations = cfg.destinations, listen = %cfg.listen, "Publisher live: waiting for destinations");
    if tokio::time::timeout(cfg.wait, dests.wait_for(cfg.destinations))
        .await
        .is_err()
    {
        tracing::warn!(
            connected = dests.list().len(),
            expected = cfg.destinations,
            "Not every destination connected in time"
        );
    }
    tokio::time::sleep(cfg.warmup).await;

    let list = dests.list();
    let server = ServerProbe::start(cfg.server_pid)?;
    let tool_ticks = own_ticks();
    let start_us = clock.now_us();
    window.open(start_us);
    let sent_before = publisher.body_bytes();
    let before: Vec<PeerSnapshot> = list.iter().map(|d| d.stats.snapshot()).collect();
    info!(secs = cfg.duration.as_secs_f64(), "Measuring");
    tokio::time::sleep(cfg.duration).await;
    let end_us = clock.now_us();
    window.close(end_us);
    let sent_after = publisher.body_bytes();
    let after: Vec<PeerSnapshot> = list.iter().map(|d| d.stats.snapshot()).collect();
    let window_secs = end_us.saturating_sub(start_us) as f64 / 1e6;
    let tool_cpu_percent = own_cpu_percent(tool_ticks, window_secs);
    let expected = sent_after.saturating_sub(sent_before);

    let mut all_samples = Vec::new();
    let mut all_unmatched = 0;
    let mut reports = Vec::new();
    let mut delivered = 0;
    for ((d, b), a) in list.iter().zip(&before).zip(&after) {
        let v = judge(b, a, expected, start_us, end_us);
        let (samples, lat) = latency(&d.latency);
        all_samples.extend(samples);
        all_unmatched += lat.unmatched;
        delivered += v.bytes;
        reports.push((
            v.connected,
            DestinationReport {
                name: d.name.clone(),
                kept_up: v.kept_up,
                mbps: mbps(v.bytes, window_secs),
                ratio: v.ratio,
                max_gap_ms: v.max_gap_ms,
                latency: lat,
            },
        ));
    }
    let delivered_mbps = mbps(delivered, window_secs);
    let server = match &server {
        Some(s) => Some(s.finish(window_secs, delivered_mbps)?),
        None => None,
    };
    let publisher_error = publisher.error_now();
    let publisher_error = publisher_error.or(publisher.stop().await);
    server_task.abort();
    drop(timing);
    let mut destinations: Vec<DestinationReport> = Vec::with_capacity(reports.len());
    let mut connected = 0;
    for (c, r) in reports {
        connected += usize::from(c);
        destinations.push(r);
    }
    destinations.sort_by_key(|d| natural_key(&d.name));
    Ok(RelayReport {
        mode: "relay",
        label: cfg.label.clone(),
        destinations_requested: cfg.destinations,
        destinations_connected: connected,
        destinations_kept_up: destinations.iter().filter(|d| d.kept_up).count(),
        window_secs,
        published_mbps: mbps(expected, window_secs),
        delivered_mbps,
        latency: Latency {
            percentiles: Percentiles::of(&mut all_samples),
            unmatched: all_unmatched,
        },
        server,
        tool_cpu_percent,
        destinations,
        failures: errors.counts(),
        publisher_error,
    })
}

/// Sorts `d2` before `d10`.
fn natural_key(name: &str) -> (String, u64) {
    let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
    let prefix = name.get(..name.len() - digits.len()).unwrap_or(name);
    (prefix.to_owned(), digits.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::is_probe;

    fn positions(n: usize, probes: usize) -> Vec<usize> {
        (0..n).filter(|&i| is_probe(i, n, probes)).collect()
    }

    #[test]
    fn probes_are_spread_through_the_join_order() {
        assert_eq!(positions(2000, 5), [200, 600, 1000, 1400, 1800]);
        assert_eq!(positions(10, 5), [1, 3, 5, 7, 9]);
        assert_eq!(positions(5, 5), [0, 1, 2, 3, 4]);
        assert_eq!(positions(3, 5), [0, 1, 2], "never more probes than players");
        assert_eq!(positions(1, 1), [0]);
        assert!(positions(100, 0).is_empty());
        for n in 1..300 {
            for p in 0..12 {
                assert_eq!(positions(n, p).len(), p.min(n), "n={n} p={p}");
            }
        }
    }
}
