//! The control plane at scale (by hand, not in CI; numbers in BENCHMARKS.md):
//!
//! ```sh
//! cargo test --release -p cthulhu-server --test api_scale -- --ignored --nocapture
//! ```
//!
//! Creates `SCALE_STREAMS` streams (default 1,000) with `SCALE_DESTS` destinations
//! each (default 10) through the API, then times `GET /api/v1/streams` and
//! `/metrics` (100 requests each, one at a time) and reports p50, p99 and the
//! largest. The destinations point at a closed port and their streams are not live,
//! so every supervisor waits for its stream: what is measured is the control plane's
//! snapshot and the encoding. Then, with all of that in place, destinations are added
//! to one live stream (ffmpeg publishing to nginx-rtmp), timing each from its 201 to
//! the first answer that shows it connecting or live.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::Cthulhu;
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

async fn time_gets(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    n: usize,
) -> Result<(Vec<Duration>, usize)> {
    let mut times = Vec::with_capacity(n);
    let mut size = 0;
    for _ in 0..n {
        let mut req = http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let t0 = Instant::now();
        let resp = req.send().await?;
        ensure!(resp.status().is_success(), "{url}: {}", resp.status());
        let body = resp.bytes().await?;
        times.push(t0.elapsed());
        size = body.len();
    }
    times.sort();
    Ok((times, size))
}

#[tokio::test]
#[ignore = "a benchmark: run by hand with --release (see the module documentation)"]
async fn streams_and_metrics_with_a_thousand_streams_of_ten_destinations() -> Result<()> {
    let streams = env_usize("SCALE_STREAMS", 1000);
    let dests = env_usize("SCALE_DESTS", 10);
    let srv = Cthulhu::start_logging("warn", "", "").await?;
    let token = srv.create_token("bench").await?;
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    let mut add_times = Vec::new();
    for s in 0..streams {
        let resp = http
            .post(srv.api("streams"))
            .bearer_auth(&token)
            .json(&json!({"path": format!("live/s{s:04}")}))
            .send()
            .await?;
        ensure!(resp.status().as_u16() == 201, "{}", resp.status());
        for d in 0..dests {
            let t = Instant::now();
            let resp = http
                .post(srv.api(&format!("streams/live/s{s:04}/destinations")))
                .bearer_auth(&token)
                .json(&json!({"name": format!("d{d}"), "url": format!("rtmp://127.0.0.1:9/live/key-{s}-{d}")}))
                .send()
                .await?;
            ensure!(resp.status().as_u16() == 201, "{}", resp.status());
            add_times.push(t.elapsed());
        }
    }
    add_times.sort();
    eprintln!(
        "created {streams} streams x {dests} destinations in {:.1?}; POST destination p50 {:?}, p99 {:?}",
        t0.elapsed(),
        percentile(&add_times, 0.5),
        percentile(&add_times, 0.99)
    );
    let reps = env_usize("SCALE_REQUESTS", 100);
    let (list, list_bytes) = time_gets(&http, &srv.api("streams"), Some(&token), reps).await?;
    let (metrics, metrics_bytes) = time_gets(
        &http,
        &format!("http://127.0.0.1:{}/metrics", srv.http_port),
        None,
        100,
    )
    .await?;
    for (what, times, bytes) in [
        ("GET /api/v1/streams", &list, list_bytes),
        ("GET /metrics", &metrics, metrics_bytes),
    ] {
        eprintln!(
            "{what}: {bytes} bytes; p50 {:?}, p99 {:?}, max {:?}",
            percentile(times, 0.5),
            percentile(times, 0.99),
            times.last().copied().unwrap_or_default()
        );
    }
    eprintln!("server RSS {} KiB", srv.rss_kib().unwrap_or(0));

    // With all of that running: destinations added to a live stream (ffmpeg
    // publishing, nginx-rtmp receiving), each timed from the request to its 201 and
    // from the 201 to the first answer showing it connecting or live.
    let nginx = cthulhu_testkit::Nginx::start_rtmp(cthulhu_testkit::free_port()).await?;
    let resp = http
        .post(srv.api("streams"))
        .bearer_auth(&token)
        .json(&json!({"path": "live/hot", "key": "hot-key-3141592653"}))
        .send()
        .await?;
    ensure!(resp.status().as_u16() == 201, "{}", resp.text().await?);
    let _publisher = cthulhu_testkit::Ffmpeg::publish_test_pattern(
        &srv.url("hot-key-3141592653"),
        &cthulhu_testkit::PublishOptions::default(),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s: serde_json::Value = http
            .get(srv.api("streams/live/hot"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        if s["live"] == true {
            break;
        }
        ensure!(Instant::now() < deadline, "live/hot never went live");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut answered, mut connecting) = (Vec::new(), Vec::new());
    for d in 0..env_usize("SCALE_LIVE_DESTS", 20) {
        let name = format!("hot{d}");
        let t0 = Instant::now();
        let resp = http
            .post(srv.api("streams/live/hot/destinations"))
            .bearer_auth(&token)
            .json(&json!({"name": name, "url": nginx.url(&format!("hot{d}"))}))
            .send()
            .await?;
        ensure!(resp.status().as_u16() == 201, "{}", resp.text().await?);
        let body: serde_json::Value = resp.json().await?;
        let t201 = Instant::now();
        answered.push(t201 - t0);
        let mut state = body["state"].as_str().unwrap_or("").to_owned();
        while state != "connecting" && state != "live" {
            ensure!(
                t201.elapsed() < Duration::from_secs(10),
                "{name} stayed {state}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
            let s: serde_json::Value = http
                .get(srv.api("streams/live/hot"))
                .bearer_auth(&token)
                .send()
                .await?
                .json()
                .await?;
            state = s["destinations"]
                .as_array()
                .and_then(|ds| ds.iter().find(|x| x["name"] == name.as_str()))
                .and_then(|x| x["state"].as_str())
                .unwrap_or("")
                .to_owned();
        }
        connecting.push(t201.elapsed());
    }
    answered.sort();
    connecting.sort();
    eprintln!(
        "live destinations added: 201 p50 {:?}, max {:?}; 201 -> connecting or live p50 {:?}, max {:?} ({} destinations)",
        percentile(&answered, 0.5),
        answered.last().copied().unwrap_or_default(),
        percentile(&connecting, 0.5),
        connecting.last().copied().unwrap_or_default(),
        connecting.len()
    );
    Ok(())
}
