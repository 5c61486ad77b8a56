//! loadgen against real servers, at smoke-test scale: an in-process Cthulhu (fan-out
//! and relay through its own pushes) and nginx-rtmp. Performance is measured, not
//! asserted: these tests check that the tool connects, counts and matches.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cthulhu_bench::report::Latency;
use cthulhu_bench::{FanoutConfig, RelayConfig, SourceConfig, run_fanout, run_relay};
use cthulhu_core::hub::SubscribeOptions;
use cthulhu_core::policy::StreamRule;
use cthulhu_core::supervisor::{BackoffPolicy, Supervisor, SupervisorHandle};
use cthulhu_core::{Hub, HubConfig, Router, Secret, StaticRouter, StreamPath};
use cthulhu_rtmp::{PushConfig, RtmpPush, RtmpServer, RtmpUrl, ServerConfig};
use cthulhu_srt::{ListenerConfig, SrtServer, SrtServerConfig};
use cthulhu_testkit::{Nginx, PublishOptions, free_port};
use tokio::sync::watch;

const KEY: &str = "smoke-key";
/// The SRT latency of the conversion test; every SRT hop adds it by design.
const SRT_LATENCY_MS: u64 = 80;

/// A 10 s, 500 kbit/s 640x360 file with AAC (GOP 1 s), made once for all tests.
fn input() -> PathBuf {
    static FILE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = FILE.get_or_init(|| {
        let ffmpeg = cthulhu_testkit::require_tool("ffmpeg").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input.flv");
        let opts = PublishOptions {
            realtime: false,
            ..PublishOptions::seconds(10.0)
        };
        let out = std::process::Command::new(ffmpeg)
            .args(opts.ffmpeg_args(path.to_str().unwrap()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ffmpeg: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (dir, path)
    });
    path.clone()
}

/// An in-process Cthulhu (hub, static router, RTMP listener) with `live/bench`,
/// optionally pushing it to `pushes`. Returns the port and what keeps it running.
async fn cthulhu(pushes: &[(String, String)]) -> (u16, watch::Sender<bool>, Vec<SupervisorHandle>) {
    let (port, _, tx, handles) = cthulhu_with_srt(pushes, false).await;
    (port, tx, handles)
}

/// [`cthulhu`] with an SRT listener too (`srt` true): returns the RTMP port and
/// the SRT port (0 without SRT).
async fn cthulhu_with_srt(
    pushes: &[(String, String)],
    srt: bool,
) -> (u16, u16, watch::Sender<bool>, Vec<SupervisorHandle>) {
    let hub = Hub::new(HubConfig::default());
    let path = StreamPath::new("live/bench").unwrap();
    let router = StaticRouter::new(vec![StreamRule {
        path: path.clone(),
        key: Secret::new(KEY),
        play_key: None,
        routes: vec![],
    }]);
    let srv = RtmpServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig::default(),
        hub.clone(),
        Arc::new(router.clone()) as Arc<dyn Router>,
    )
    .await
    .unwrap();
    let port = srv.local_addr().unwrap().port();
    let (tx, rx) = watch::channel(false);
    let srt_port = if srt {
        let srt = SrtServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            SrtServerConfig {
                listener: ListenerConfig {
                    latency: Duration::from_millis(SRT_LATENCY_MS),
                    ..Default::default()
                },
                ..Default::default()
            },
            hub.clone(),
            Arc::new(router.clone()) as Arc<dyn Router>,
        )
        .await
        .unwrap();
        let p = srt.local_addr().port();
        tokio::spawn(srt.run(rx.clone()));
        p
    } else {
        0
    };
    tokio::spawn(srv.run(rx));
    let handles = pushes
        .iter()
        .map(|(name, url)| {
            let url = RtmpUrl::parse(url).unwrap();
            let sub = hub.subscribe(&path, SubscribeOptions::labelled(format!("push:{name}")));
            let push = RtmpPush::new(name.clone(), url.clone(), sub, PushConfig::default());
            Supervisor::spawn(
                name.clone(),
                url.redacted(),
                Box::new(push),
                BackoffPolicy::default(),
            )
        })
        .collect();
    (port, srt_port, tx, handles)
}

fn fanout(
    publish_url: String,
    play_url: String,
    players: usize,
    probes: usize,
    secs: u64,
) -> FanoutConfig {
    FanoutConfig {
        source: SourceConfig {
            publish_url,
            file: input(),
            chunk_size: 4096,
        },
        play_url,
        players,
        probes,
        ramp_per_sec: 200.0,
        // Longer than the GOP: every player has reached a keyframe.
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(secs),
        setup_timeout: Duration::from_secs(10),
        read_interval: Duration::ZERO,
        discard: true,
        // As scripts/bench-fanout runs it: players still keep up.
        recv_lowat: 16 * 1024,
        server_pid: Some(std::process::id()),
        label: Some("smoke".into()),
    }
}

fn assert_latency(l: &Latency) {
    assert!(l.percentiles.samples > 0, "no latency samples: {l:?}");
    let p50 = l.percentiles.p50_ms.expect("a median");
    assert!(p50.is_finite() && p50 >= 0.0, "{l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_against_cthulhu_in_process() {
    let (port, _stop, _) = cthulhu(&[]).await;
    let cfg = fanout(
        format!("rtmp://127.0.0.1:{port}/live/bench?key={KEY}"),
        format!("rtmp://127.0.0.1:{port}/live/bench"),
        50,
        2,
        10,
    );
    let r = run_fanout(&cfg).await.unwrap();
    eprint!("{}", r.summary());
    assert_eq!(r.players_connected, 50, "{r:#?}");
    assert_eq!(r.players_kept_up, 50, "{r:#?}");
    assert_eq!(r.probes, 2);
    assert!(r.publisher_error.is_none(), "{r:#?}");
    // The file is about 0.63 Mbit/s of message bodies.
    assert!(
        (0.3..1.2).contains(&r.published_mbps),
        "published {} Mbit/s",
        r.published_mbps
    );
    // Every player got what was published, plus a little chunk framing.
    let per_player = r.delivered_mbps / 50.0;
    assert!(
        (0.95..1.15).contains(&(per_player / r.published_mbps)),
        "delivered {} Mbit/s per player for {} published",
        per_player,
        r.published_mbps
    );
    assert_latency(&r.latency);
    // The JSON report has the fields scripts read.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["mode"], "fanout");
    assert_eq!(json["players_kept_up"], 50);
    assert!(json["delivered_mbps"].is_number());
    assert!(json["latency"]["p50_ms"].is_number());
    let server = r.server.expect("our own process was measured");
    assert!(server.rss_kib > 0);
}

/// SRT → RTMP and RTMP → SRT through one in-process server: players connect,
/// keep up, and every picture is matched across the conversion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversion_between_rtmp_and_srt() {
    let (port, srt_port, _stop, _) = cthulhu_with_srt(&[], true).await;
    let l = SRT_LATENCY_MS;
    let runs = [
        (
            "SRT -> RTMP",
            format!(
                "srt://127.0.0.1:{srt_port}?streamid=#!::r=live/bench,m=publish,s={KEY}&latency={l}"
            ),
            format!("rtmp://127.0.0.1:{port}/live/bench"),
        ),
        (
            "RTMP -> SRT",
            format!("rtmp://127.0.0.1:{port}/live/bench?key={KEY}"),
            format!("srt://127.0.0.1:{srt_port}?streamid=#!::r=live/bench,m=request&latency={l}"),
        ),
    ];
    for (what, publish, play) in runs {
        // A 4 s window at 0.6 Mbit/s: a 16 KiB low-water mark alone would hold back
        // 5% of it, right at the kept-up threshold.
        let cfg = FanoutConfig {
            recv_lowat: 0,
            ..fanout(publish, play, 3, 2, 4)
        };
        let r = run_fanout(&cfg).await.unwrap();
        eprintln!("{what}:");
        eprint!("{}", r.summary());
        assert_eq!(r.players_kept_up, 3, "{what}: {r:#?}");
        assert!(r.publisher_error.is_none(), "{what}: {r:#?}");
        assert_latency(&r.latency);
        assert_eq!(r.latency.unmatched, 0, "{what}: {r:#?}");
        // SRT delivers at send time + latency: a sample below it was matched wrongly.
        let p50 = r.latency.percentiles.p50_ms.unwrap_or_default();
        assert!(
            p50 >= (l - 5) as f64,
            "{what}: p50 {p50} ms under the SRT latency"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_from_cthulhu_pushes() {
    let relay_port = free_port();
    let pushes: Vec<(String, String)> = (0..5)
        .map(|i| {
            (
                format!("d{i}"),
                format!("rtmp://127.0.0.1:{relay_port}/relay/d{i}"),
            )
        })
        .collect();
    let (port, _stop, handles) = cthulhu(&pushes).await;
    let cfg = RelayConfig {
        source: SourceConfig {
            publish_url: format!("rtmp://127.0.0.1:{port}/live/bench?key={KEY}"),
            file: input(),
            chunk_size: 4096,
        },
        destinations: 5,
        listen: format!("127.0.0.1:{relay_port}").parse().unwrap(),
        wait: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(6),
        server_pid: None,
        label: None,
    };
    let r = run_relay(&cfg).await.unwrap();
    eprint!("{}", r.summary());
    for h in handles {
        h.stop().await;
    }
    assert_eq!(r.destinations_connected, 5, "{r:#?}");
    assert_eq!(r.destinations_kept_up, 5, "{r:#?}");
    let names: Vec<&str> = r.destinations.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["d0", "d1", "d2", "d3", "d4"]);
    for d in &r.destinations {
        assert_latency(&d.latency);
    }
    assert_latency(&r.latency);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["mode"], "relay");
    assert_eq!(json["destinations"].as_array().map(Vec::len), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_against_nginx_rtmp() {
    let mut nginx = Nginx::start_rtmp(free_port()).await.unwrap();
    let pid = nginx.pid();
    let mut cfg = fanout(nginx.url("bench"), nginx.url("bench"), 20, 2, 6);
    cfg.server_pid = pid;
    let r = run_fanout(&cfg).await.unwrap();
    eprint!("{}", r.summary());
    assert_eq!(r.players_connected, 20, "{r:#?}\n{}", nginx.log_tail());
    assert_eq!(r.players_kept_up, 20, "{r:#?}\n{}", nginx.log_tail());
    assert_latency(&r.latency);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["mode"], "fanout");
    assert!(json["latency"]["p99_ms"].is_number());
    assert!(json["server"]["cpu_percent"].is_number());
}
