//! `GET /metrics`: Prometheus (OpenMetrics text) exposition, with names prefixed
//! `cthulhu_` and the labels `stream` and `destination` (`plugin` and `function`
//! for the WASM plugins' calls).
//!
//! Every scrape builds a fresh registry from the hub's, the control plane's and the
//! plugin host's snapshots (prometheus-client encodes it): nothing on the frame path
//! counts for the metrics, and a stream or destination that is gone leaves no stale
//! series. (The plugin host counts its calls with atomics; a scrape reads them.)
//! Open by default on the API's listener (the loopback); `[http] metrics_token`
//! makes it ask for `Authorization: Bearer TOKEN`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cthulhu_core::hub::StreamSnapshot;
use cthulhu_core::{Hub, RefusalLog, Secret};
use cthulhu_plugins::{FunctionStats, PluginHost, PluginStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::auth::token::ct_eq;
use crate::control::{Control, DestinationFigures, RecordingFigures, StreamFigures};

/// What the metrics handler reads.
pub(crate) struct MetricsState {
    /// Streams and their live figures.
    pub(crate) hub: Hub,
    /// Destinations and their states.
    pub(crate) control: Control,
    /// `[http] metrics_token`.
    pub(crate) token: Option<Secret>,
    /// Each listener's refusals, by protocol (`rtmp`, `srt`).
    pub(crate) refusals: Vec<(&'static str, RefusalLog)>,
    /// The plugin host, when `[[plugins]]` loaded any: their calls.
    pub(crate) plugins: Option<PluginHost>,
}

/// The `/metrics` route.
pub(crate) fn router(state: Arc<MetricsState>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

async fn scrape(State(state): State<Arc<MetricsState>>, headers: HeaderMap) -> Response {
    if let Some(want) = &state.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !ct_eq(given.as_bytes(), want.expose().as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                "metrics need Authorization: Bearer TOKEN\n",
            )
                .into_response();
        }
    }
    let views = state.control.figures().await;
    let streams = state.hub.snapshot();
    let refusals = state
        .refusals
        .iter()
        .flat_map(|(protocol, log)| {
            log.totals()
                .into_iter()
                .map(move |(reason, n)| (*protocol, reason, n))
        })
        .collect();
    let plugins = plugin_rows(
        state
            .plugins
            .as_ref()
            .map(PluginHost::stats)
            .unwrap_or_default(),
    );
    match render(Figures {
        streams,
        views,
        refusals,
        plugins,
    }) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "Metrics not encoded");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The exposition of `streams` (the hub) and `views` (the figures of the desired
/// streams' destinations and recordings).
fn render(figures: Figures) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("cthulhu");
    reg.register_collector(Box::new(figures));
    process_metrics(&mut reg);
    // The exposition grows with the destinations (5 MB at 10,000): start at the size
    // of the last one rather than doubling up to it.
    static LAST_LEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut out = String::with_capacity(LAST_LEN.load(std::sync::atomic::Ordering::Relaxed) + 4096);
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    LAST_LEN.store(out.len(), std::sync::atomic::Ordering::Relaxed);
    Ok(out)
}

/// One scrape's snapshots, encoded straight from them: no registry of label maps
/// (with 10,000 destinations, building `Family` maps took most of a scrape).
#[derive(Debug)]
struct Figures {
    streams: Vec<StreamSnapshot>,
    views: Vec<StreamFigures>,
    /// (protocol, reason, connections refused since the start).
    refusals: Vec<(&'static str, &'static str, u64)>,
    /// (plugin name, the calls of one of its functions), one per name and function.
    plugins: Vec<(String, FunctionStats)>,
}

/// Every plugin's functions, labelled by plugin name. Plugins sharing a name (the
/// default name is the file's stem) are added up: a series must be unique.
fn plugin_rows(stats: Vec<PluginStats>) -> Vec<(String, FunctionStats)> {
    let mut rows: Vec<(String, FunctionStats)> = Vec::new();
    for p in stats {
        for f in p.functions {
            match rows
                .iter_mut()
                .find(|(name, g)| *name == p.name && g.function == f.function)
            {
                Some((_, g)) => add_calls(g, &f),
                None => rows.push((p.name.clone(), f)),
            }
        }
    }
    rows
}

/// Adds the calls of `f` to `into` (same function, same buckets and reasons).
fn add_calls(into: &mut FunctionStats, f: &FunctionStats) {
    into.calls += f.calls;
    for ((_, n), (_, m)) in into.failures.iter_mut().zip(&f.failures) {
        *n += m;
    }
    let h = &mut into.latency;
    for ((_, n), (_, m)) in h.buckets.iter_mut().zip(&f.latency.buckets) {
        *n += m;
    }
    h.sum_seconds += f.latency.sum_seconds;
    h.count += f.latency.count;
}

/// Labels of a stream's series.
fn stream_labels(s: &StreamSnapshot) -> [(&'static str, &str); 1] {
    [("stream", s.path.as_str())]
}

impl Figures {
    /// Every destination with its stream, and its state, connects and failures.
    fn destinations(
        &self,
    ) -> impl Iterator<Item = ([(&'static str, &str); 2], &DestinationFigures)> {
        self.views.iter().flat_map(|v| {
            v.destinations.iter().map(move |d| {
                (
                    [
                        ("stream", v.path.as_str()),
                        ("destination", d.name.as_str()),
                    ],
                    d,
                )
            })
        })
    }

    /// Every running recording with its stream, and its counters.
    fn recordings(&self) -> impl Iterator<Item = ([(&'static str, &str); 2], &RecordingFigures)> {
        self.views.iter().flat_map(|v| {
            v.recordings.iter().map(move |r| {
                (
                    [("stream", v.path.as_str()), ("recording", r.id.as_str())],
                    r,
                )
            })
        })
    }
}

impl Figures {
    /// Every plugin function with its plugin.
    fn plugin_functions(
        &self,
    ) -> impl Iterator<Item = ([(&'static str, &str); 2], &FunctionStats)> {
        self.plugins
            .iter()
            .map(|(name, f)| ([("plugin", name.as_str()), ("function", f.function)], f))
    }
}

/// Writes one gauge family.
fn gauges<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, i64)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

/// Writes one counter family.
fn counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    Ok(())
}

/// Writes one histogram family of seconds (`NAME_seconds`).
fn histograms<'a, L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, &'a cthulhu_plugins::LatencyHistogram)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (labels, h) in rows {
        m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            h.sum_seconds,
            h.count,
            &h.buckets,
            None,
        )?;
    }
    Ok(())
}

/// A count as a gauge value.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for Figures {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let live = self.streams.iter().filter(|s| s.live).count();
        gauges(
            &mut enc,
            "streams_live",
            "Streams with a live publisher",
            [(&[] as &[(&str, &str)], count(live))],
        )?;
        gauges(
            &mut enc,
            "stream_live",
            "1 while the stream has a publisher",
            self.streams
                .iter()
                .map(|s| (stream_labels(s), i64::from(s.live))),
        )?;
        counters(
            &mut enc,
            "stream_received_bytes",
            "Payload bytes received from publishers",
            self.streams.iter().map(|s| (stream_labels(s), s.bytes_in)),
        )?;
        counters(
            &mut enc,
            "stream_received_frames",
            "Frames received from publishers",
            self.streams.iter().map(|s| (stream_labels(s), s.frames_in)),
        )?;
        gauges(
            &mut enc,
            "stream_subscribers",
            "Players, destinations and recordings reading the stream",
            self.streams
                .iter()
                .map(|s| (stream_labels(s), count(s.subscribers.len()))),
        )?;
        gauges(
            &mut enc,
            "stream_players",
            "Players connected, by protocol",
            self.streams.iter().flat_map(|s| {
                s.players_by_protocol()
                    .into_iter()
                    .map(move |(protocol, n)| {
                        (
                            [("stream", s.path.as_str()), ("protocol", protocol)],
                            count(n),
                        )
                    })
            }),
        )?;
        counters(
            &mut enc,
            "stream_dropped_frames",
            "Frames dropped for subscribers that fell behind (skips to a keyframe)",
            self.streams.iter().map(|s| {
                (
                    stream_labels(s),
                    s.subscribers.iter().map(|sub| sub.dropped_frames).sum(),
                )
            }),
        )?;
        gauges(
            &mut enc,
            "destination_up",
            "1 while the destination accepts the stream",
            self.destinations()
                .map(|(l, d)| (l, i64::from(d.state == "live"))),
        )?;
        // One series per destination, labelled with its current state (waiting,
        // connecting, live, retrying, stopped): five per destination, four of them
        // 0, made a scrape of 10,000 destinations five times the size.
        gauges(
            &mut enc,
            "destination_state",
            "The destination's current state, as the label state (always 1)",
            self.destinations()
                .map(|([s, d], f)| ([s, d, ("state", f.state)], 1)),
        )?;
        counters(
            &mut enc,
            "destination_connects",
            "Pushes that went live",
            self.destinations().map(|(l, d)| (l, d.connects)),
        )?;
        counters(
            &mut enc,
            "destination_failures",
            "Pushes that failed (each is retried with backoff)",
            self.destinations().map(|(l, d)| (l, d.failures)),
        )?;
        counters(
            &mut enc,
            "destination_sent_bytes",
            "Bytes written to the destination since it was started",
            self.destinations().map(|(l, d)| (l, d.traffic.bytes_sent)),
        )?;
        counters(
            &mut enc,
            "destination_dropped_frames",
            "Frames dropped because the destination fell behind (skips to a keyframe)",
            self.destinations().map(|(l, d)| (l, d.traffic.dropped)),
        )?;
        gauges(
            &mut enc,
            "recording_up",
            "1 while the recording writes (its stream is live and the storage takes it)",
            self.recordings().map(|(l, r)| (l, i64::from(r.up))),
        )?;
        let stat = |r: &RecordingFigures, f: fn(&cthulhu_sinks::RecordingStats) -> u64| {
            r.stats.as_ref().map_or(0, f)
        };
        counters(
            &mut enc,
            "recording_written_bytes",
            "Muxed bytes handed to the storage",
            self.recordings()
                .map(|(l, r)| (l, stat(r, |s| s.bytes_written))),
        )?;
        counters(
            &mut enc,
            "recording_segments",
            "Segments finished and stored",
            self.recordings()
                .map(|(l, r)| (l, stat(r, |s| s.segments_finished))),
        )?;
        counters(
            &mut enc,
            "recording_gaps",
            "Times media was left out (storage too slow or down)",
            self.recordings().map(|(l, r)| (l, stat(r, |s| s.gaps))),
        )?;
        counters(
            &mut enc,
            "recording_failures",
            "Segments that failed",
            self.recordings().map(|(l, r)| (l, stat(r, |s| s.failures))),
        )?;
        counters(
            &mut enc,
            "connections_refused",
            "Connections and requests refused, by listener protocol and reason",
            self.refusals
                .iter()
                .map(|&(protocol, reason, n)| ([("protocol", protocol), ("reason", reason)], n)),
        )?;
        counters(
            &mut enc,
            "plugin_calls",
            "Calls of a WASM plugin's function, failed ones included",
            self.plugin_functions().map(|(l, f)| (l, f.calls)),
        )?;
        // Every reason of every function, zeros included: a failure's first
        // occurrence is then a rise, not a new series.
        counters(
            &mut enc,
            "plugin_failures",
            "Failed calls of a WASM plugin's function, by reason (trap, timeout, fuel, \
             memory, invalid_output, disabled, instantiate, host)",
            self.plugin_functions().flat_map(|([p, f], s)| {
                s.failures
                    .iter()
                    .map(move |(r, n)| ([p, f, ("reason", r.as_str())], *n))
            }),
        )?;
        histograms(
            &mut enc,
            "plugin_call",
            "Time a WASM plugin's function call took, as its caller saw it (waiting for \
             an instance included)",
            self.plugin_functions().map(|(l, f)| (l, &f.latency)),
        )?;
        Ok(())
    }
}

/// Resident memory, open file descriptors, threads and CPU time of this process,
/// read from `/proc` (Linux; elsewhere these series are absent).
fn process_metrics(reg: &mut Registry) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of stat(5), 11 and 12 after the name;
    // clock ticks are 100 per second on every Linux we run on.
    if let (Some(utime), Some(stime)) = (field(11), field(12)) {
        let cpu = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        cpu.inc_by((utime + stime) as f64 / 100.0);
        reg.register("process_cpu_seconds", "CPU time used", cpu);
    }
    if let Some(threads) = field(17) {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(threads).unwrap_or(i64::MAX));
        reg.register("process_threads", "OS threads", g);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kib) = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
    {
        let g = Gauge::<i64>::default();
        g.set(kib.saturating_mul(1024));
        reg.register("process_resident_memory_bytes", "Resident memory", g);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(dir.count()).unwrap_or(i64::MAX));
        reg.register("process_open_fds", "Open file descriptors", g);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cthulhu_core::StreamPath;

    #[test]
    fn destinations_and_recordings_are_labelled_with_their_stream() {
        let path = StreamPath::new("live/studio").unwrap();
        let dest = |name: &str, state: &'static str, sent: u64| DestinationFigures {
            name: name.to_owned(),
            state,
            connects: 2,
            failures: 1,
            traffic: cthulhu_core::MeterReading {
                bytes_sent: sent,
                dropped: 3,
                backlog_bytes: 0,
            },
        };
        let text = render(Figures {
            streams: Vec::new(),
            views: vec![StreamFigures {
                path,
                destinations: vec![dest("youtube", "live", 1000), dest("twitch", "stopped", 0)],
                recordings: vec![RecordingFigures {
                    id: "record0".to_owned(),
                    up: false,
                    stats: None,
                }],
            }],
            refusals: Vec::new(),
            plugins: Vec::new(),
        })
        .unwrap();
        for line in [
            r#"cthulhu_destination_up{stream="live/studio",destination="youtube"} 1"#,
            r#"cthulhu_destination_up{stream="live/studio",destination="twitch"} 0"#,
            r#"cthulhu_destination_state{stream="live/studio",destination="twitch",state="stopped"} 1"#,
            r#"cthulhu_destination_connects_total{stream="live/studio",destination="youtube"} 2"#,
            r#"cthulhu_destination_failures_total{stream="live/studio",destination="youtube"} 1"#,
            r#"cthulhu_destination_sent_bytes_total{stream="live/studio",destination="youtube"} 1000"#,
            r#"cthulhu_destination_dropped_frames_total{stream="live/studio",destination="youtube"} 3"#,
            r#"cthulhu_recording_up{stream="live/studio",recording="record0"} 0"#,
            r#"cthulhu_recording_written_bytes_total{stream="live/studio",recording="record0"} 0"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn an_empty_server_exposes_its_process_and_no_streams() {
        let text = render(Figures {
            streams: Vec::new(),
            views: Vec::new(),
            refusals: vec![("rtmp", "too many connections", 3)],
            plugins: Vec::new(),
        })
        .unwrap();
        assert!(
            text.contains(
                "cthulhu_connections_refused_total{protocol=\"rtmp\",reason=\"too many connections\"} 3"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE cthulhu_streams_live gauge"), "{text}");
        assert!(text.contains("cthulhu_streams_live 0"), "{text}");
        assert!(
            text.contains("cthulhu_process_resident_memory_bytes "),
            "{text}"
        );
        assert!(text.contains("cthulhu_process_open_fds "), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// The figures of one function: `ms` per call (all in one bucket), `failed` of
    /// them trapped.
    fn function(function: &'static str, ms: u64, calls: u64, failed: u64) -> FunctionStats {
        use cthulhu_plugins::{FailureReason, LATENCY_BUCKETS, LatencyHistogram};
        let secs = ms as f64 / 1e3;
        let bucket = LATENCY_BUCKETS.partition_point(|b| *b < secs);
        FunctionStats {
            function,
            calls,
            failures: FailureReason::ALL
                .iter()
                .map(|r| (*r, if *r == FailureReason::Trap { failed } else { 0 }))
                .collect(),
            latency: LatencyHistogram {
                buckets: LATENCY_BUCKETS
                    .iter()
                    .copied()
                    .chain([f64::INFINITY])
                    .enumerate()
                    .map(|(i, le)| (le, if i == bucket { calls } else { 0 }))
                    .collect(),
                sum_seconds: secs * calls as f64,
                count: calls,
            },
        }
    }

    #[test]
    fn plugin_calls_failures_and_latency_by_plugin_and_function() {
        let stats = vec![
            PluginStats {
                name: "keys".into(),
                kind: cthulhu_plugins::PluginKind::Auth,
                functions: vec![function("authorize", 2, 3, 1)],
            },
            // Two schedule plugins of one name: added up.
            PluginStats {
                name: "window".into(),
                kind: cthulhu_plugins::PluginKind::Schedule,
                functions: vec![
                    function("on-tick", 20, 4, 0),
                    function("may-start", 1, 0, 0),
                ],
            },
            PluginStats {
                name: "window".into(),
                kind: cthulhu_plugins::PluginKind::Schedule,
                functions: vec![
                    function("on-tick", 20, 1, 1),
                    function("may-start", 1, 2, 0),
                ],
            },
        ];
        let text = render(Figures {
            streams: Vec::new(),
            views: Vec::new(),
            refusals: Vec::new(),
            plugins: plugin_rows(stats),
        })
        .unwrap();
        for want in [
            "# TYPE cthulhu_plugin_calls counter",
            "cthulhu_plugin_calls_total{plugin=\"keys\",function=\"authorize\"} 3",
            "cthulhu_plugin_calls_total{plugin=\"window\",function=\"on-tick\"} 5",
            "cthulhu_plugin_calls_total{plugin=\"window\",function=\"may-start\"} 2",
            "cthulhu_plugin_failures_total{plugin=\"keys\",function=\"authorize\",reason=\"trap\"} 1",
            "cthulhu_plugin_failures_total{plugin=\"keys\",function=\"authorize\",reason=\"timeout\"} 0",
            "cthulhu_plugin_failures_total{plugin=\"window\",function=\"on-tick\",reason=\"trap\"} 1",
            "# TYPE cthulhu_plugin_call_seconds histogram",
            "# UNIT cthulhu_plugin_call_seconds seconds",
            "cthulhu_plugin_call_seconds_count{plugin=\"keys\",function=\"authorize\"} 3",
            "cthulhu_plugin_call_seconds_sum{plugin=\"keys\",function=\"authorize\"} 0.006",
            // Cumulative: the 2 ms calls are under 2.5 ms, none under 1 ms.
            "cthulhu_plugin_call_seconds_bucket{le=\"0.0001\",plugin=\"keys\",function=\"authorize\"} 0",
            "cthulhu_plugin_call_seconds_bucket{le=\"0.001\",plugin=\"keys\",function=\"authorize\"} 0",
            "cthulhu_plugin_call_seconds_bucket{le=\"0.0025\",plugin=\"keys\",function=\"authorize\"} 3",
            "cthulhu_plugin_call_seconds_bucket{le=\"+Inf\",plugin=\"keys\",function=\"authorize\"} 3",
            "cthulhu_plugin_call_seconds_count{plugin=\"window\",function=\"on-tick\"} 5",
            "cthulhu_plugin_call_seconds_bucket{le=\"0.025\",plugin=\"window\",function=\"on-tick\"} 5",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        // One series per name and function.
        assert_eq!(
            text.matches("cthulhu_plugin_calls_total{plugin=\"window\",function=\"on-tick\"}")
                .count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.matches("cthulhu_plugin_failures_total{").count(),
            3 * 8
        );
    }
}
