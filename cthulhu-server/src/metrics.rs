//! `GET /metrics`: Prometheus (OpenMetrics text) exposition, with names prefixed
//! `cthulhu_` and the labels `stream` and `destination`.
//!
//! Every scrape builds a fresh registry from the hub's and the control plane's
//! snapshots (prometheus-client encodes it): nothing on the frame path counts for
//! the metrics, and a stream or destination that is gone leaves no stale series.
//! Open by default on the API's listener (the loopback); `[http] metrics_token`
//! makes it ask for `Authorization: Bearer TOKEN`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cthulhu_core::hub::StreamSnapshot;
use cthulhu_core::{Hub, Secret};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::auth::token::ct_eq;
use crate::control::{Control, StreamView, state_name};

/// What the metrics handler reads.
pub(crate) struct MetricsState {
    /// Streams and their live figures.
    pub(crate) hub: Hub,
    /// Destinations and their states.
    pub(crate) control: Control,
    /// `[http] metrics_token`.
    pub(crate) token: Option<Secret>,
}

/// The `/metrics` route.
pub(crate) fn router(state: Arc<MetricsState>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestLabels {
    stream: String,
    destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    stream: String,
    destination: String,
    state: String,
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
    let views = state.control.snapshot().await;
    let streams = state.hub.snapshot();
    match render(&streams, &views) {
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

/// The exposition of `streams` (the hub) and `views` (desired streams with their
/// destinations).
fn render(streams: &[StreamSnapshot], views: &[StreamView]) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("cthulhu");

    let live_total = Gauge::<i64>::default();
    reg.register(
        "streams_live",
        "Streams with a live publisher",
        live_total.clone(),
    );
    let live: Family<StreamLabels, Gauge> = Family::default();
    reg.register(
        "stream_live",
        "1 while the stream has a publisher",
        live.clone(),
    );
    let bytes_in: Family<StreamLabels, Counter> = Family::default();
    reg.register(
        "stream_received_bytes",
        "Payload bytes received from publishers",
        bytes_in.clone(),
    );
    let frames_in: Family<StreamLabels, Counter> = Family::default();
    reg.register(
        "stream_received_frames",
        "Frames received from publishers",
        frames_in.clone(),
    );
    let players: Family<StreamLabels, Gauge> = Family::default();
    reg.register(
        "stream_subscribers",
        "Players, destinations and recordings reading the stream",
        players.clone(),
    );
    let dropped: Family<StreamLabels, Counter> = Family::default();
    reg.register(
        "stream_dropped_frames",
        "Frames dropped for subscribers that fell behind (skips to a keyframe)",
        dropped.clone(),
    );
    let dest_up: Family<DestLabels, Gauge> = Family::default();
    reg.register(
        "destination_up",
        "1 while the destination accepts the stream",
        dest_up.clone(),
    );
    let dest_state: Family<StateLabels, Gauge> = Family::default();
    reg.register(
        "destination_state",
        "1 for the destination's current state (waiting, connecting, live, retrying, stopped)",
        dest_state.clone(),
    );
    let connects: Family<DestLabels, Counter> = Family::default();
    reg.register(
        "destination_connects",
        "Pushes that went live",
        connects.clone(),
    );
    let failures: Family<DestLabels, Counter> = Family::default();
    reg.register(
        "destination_failures",
        "Pushes that failed (each is retried with backoff)",
        failures.clone(),
    );

    let mut n_live = 0;
    for s in streams {
        let l = StreamLabels {
            stream: s.path.to_string(),
        };
        if s.live {
            n_live += 1;
        }
        live.get_or_create(&l).set(i64::from(s.live));
        bytes_in.get_or_create(&l).inc_by(s.bytes_in);
        frames_in.get_or_create(&l).inc_by(s.frames_in);
        players
            .get_or_create(&l)
            .set(i64::try_from(s.subscribers.len()).unwrap_or(i64::MAX));
        dropped
            .get_or_create(&l)
            .inc_by(s.subscribers.iter().map(|sub| sub.dropped_frames).sum());
    }
    live_total.set(n_live);
    for v in views {
        for d in &v.destinations {
            let l = DestLabels {
                stream: v.path.to_string(),
                destination: d.name.clone(),
            };
            let (state, up, n_connects, n_failures) = match &d.status {
                Some(st) => (
                    state_name(&st.state),
                    st.state.as_str() == "live",
                    st.connects,
                    st.failures,
                ),
                None => ("stopped", false, 0, 0),
            };
            dest_up.get_or_create(&l).set(i64::from(up));
            connects.get_or_create(&l).inc_by(n_connects);
            failures.get_or_create(&l).inc_by(n_failures);
            for name in ["waiting", "connecting", "live", "retrying", "stopped"] {
                dest_state
                    .get_or_create(&StateLabels {
                        stream: l.stream.clone(),
                        destination: l.destination.clone(),
                        state: name.to_owned(),
                    })
                    .set(i64::from(name == state));
            }
        }
    }
    process_metrics(&mut reg);

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    Ok(out)
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

    #[test]
    fn an_empty_server_exposes_its_process_and_no_streams() {
        let text = render(&[], &[]).unwrap();
        assert!(text.contains("# TYPE cthulhu_streams_live gauge"), "{text}");
        assert!(text.contains("cthulhu_streams_live 0"), "{text}");
        assert!(
            text.contains("cthulhu_process_resident_memory_bytes "),
            "{text}"
        );
        assert!(text.contains("cthulhu_process_open_fds "), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
