//! `/metrics` scraped by a real Prometheus server (Debian's `prometheus`) during a
//! live stream.

mod common;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::Cthulhu;
use cthulhu_testkit::{
    ChildGuard, Ffmpeg, Nginx, PublishOptions, free_port, require_tool, wait_for_port,
};
use serde_json::Value;
use tokio::time::Instant;

const KEY: &str = "studio-secret-1";

/// The value of the instant query `q` on the Prometheus at `port`, if it has one.
async fn query(http: &reqwest::Client, port: u16, q: &str) -> Result<Option<String>> {
    let resp: Value = http
        .get(format!("http://127.0.0.1:{port}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await?
        .json()
        .await?;
    ensure!(resp["status"] == "success", "{resp}");
    Ok(resp["data"]["result"]
        .as_array()
        .and_then(|r| r.first())
        .and_then(|s| s["value"][1].as_str())
        .map(str::to_owned))
}

/// Prometheus scrapes the server every second while ffmpeg publishes; its query API
/// answers that the stream is live, its destination up, and the server's memory.
#[tokio::test]
async fn prometheus_scrapes_a_live_stream() -> Result<()> {
    let prometheus = require_tool("prometheus")?;
    let nginx = Nginx::start_rtmp(free_port()).await?;
    let srv = Cthulhu::start(&format!(
        "[[streams]]\npath = \"live/studio\"\nkey = \"{KEY}\"\n\
         [[streams.push]]\nname = \"steady\"\nurl = \"{}\"\n",
        nginx.url("s")
    ))
    .await?;
    let direct = reqwest::get(format!("http://127.0.0.1:{}/metrics", srv.http_port))
        .await?
        .text()
        .await?;
    ensure!(direct.contains("cthulhu_streams_live 0"), "{direct}");
    ensure!(!direct.contains(KEY), "a key in the metrics");

    let work = tempfile::tempdir()?;
    let prom_port = free_port();
    std::fs::write(
        work.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: cthulhu\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            srv.http_port
        ),
    )?;
    let mut cmd = tokio::process::Command::new(prometheus);
    cmd.arg(format!(
        "--config.file={}",
        work.path().join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        work.path().join("data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
    .stdin(Stdio::null());
    let prom = ChildGuard::spawn_with_log("prometheus", cmd, &work.path().join("prometheus.log"))?;
    wait_for_port(prom_port, Duration::from_secs(20))
        .await
        .with_context(|| prom.log_tail())?;

    let publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(30.0)).await?;
    srv.wait_for_log("Live dest=live/studio:steady", Duration::from_secs(15))
        .await?;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = [
        ("cthulhu_stream_live{stream=\"live/studio\"}", "1"),
        (
            "cthulhu_destination_up{stream=\"live/studio\",destination=\"steady\"}",
            "1",
        ),
        (
            "cthulhu_destination_state{destination=\"steady\",state=\"live\"}",
            "1",
        ),
        ("cthulhu_streams_live", "1"),
    ];
    loop {
        let mut missing = Vec::new();
        for (q, v) in want {
            if query(&http, prom_port, q).await?.as_deref() != Some(v) {
                missing.push(q);
            }
        }
        if missing.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "Prometheus never saw {missing:?}; its log:\n{}",
            prom.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Bytes in grow; the process figures are there.
    let rate = query(
        &http,
        prom_port,
        "rate(cthulhu_stream_received_bytes_total{stream=\"live/studio\"}[5s])",
    )
    .await?;
    let rss = query(&http, prom_port, "cthulhu_process_resident_memory_bytes").await?;
    eprintln!("Prometheus: bytes in {rate:?} B/s, RSS {rss:?}");
    ensure!(
        rss.as_deref()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 1e6),
        "RSS {rss:?}"
    );
    let up = query(&http, prom_port, "up{job=\"cthulhu\"}").await?;
    ensure!(up.as_deref() == Some("1"), "scrape target not up: {up:?}");
    drop(publisher);
    Ok(())
}
