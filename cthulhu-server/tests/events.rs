//! `GET /api/v1/events` (Server-Sent Events) against the real binary: a client sees
//! a destination go `connecting → live`, then `retrying` when its nginx is killed.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::Cthulhu;
use cthulhu_testkit::{Ffmpeg, Nginx, PublishOptions, free_port};
use serde_json::Value;

const KEY: &str = "studio-secret-1";

/// Reads SSE frames from `resp` until `done` says enough or `timeout` passes;
/// returns the (event, data) pairs read.
async fn read_events(
    resp: &mut reqwest::Response,
    buf: &mut String,
    seen: &mut Vec<(String, Value)>,
    timeout: Duration,
    done: impl Fn(&[(String, Value)]) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(seen) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk()).await;
        let Ok(chunk) = chunk else {
            anyhow::bail!("timed out; events so far: {seen:#?}");
        };
        let Some(bytes) = chunk? else {
            anyhow::bail!("the event stream ended; events so far: {seen:#?}");
        };
        buf.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut event = String::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if !data.is_empty() {
                seen.push((event, serde_json::from_str(&data)?));
            }
        }
    }
    Ok(())
}

fn states(seen: &[(String, Value)], name: &str) -> Vec<String> {
    seen.iter()
        .filter(|(e, d)| e == "destination" && d["name"] == name)
        .filter_map(|(_, d)| d["state"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn events_show_a_destination_connect_go_live_and_retry() -> Result<()> {
    let nginx = Nginx::start_rtmp(free_port()).await?;
    let srv = Cthulhu::start(&format!(
        "[[streams]]\npath = \"live/studio\"\nkey = \"{KEY}\"\n\
         [[streams.push]]\nname = \"flaky\"\nurl = \"{}\"\n",
        nginx.url("f")
    ))
    .await?;
    let token = srv.create_token("console").await?;
    let anonymous = reqwest::get(srv.api("events")).await?;
    ensure!(anonymous.status() == reqwest::StatusCode::UNAUTHORIZED);

    let mut resp = reqwest::Client::new()
        .get(srv.api("events"))
        .bearer_auth(&token)
        .send()
        .await?;
    ensure!(resp.status().is_success(), "{}", resp.status());
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut buf = String::new();
    let mut seen = Vec::new();
    read_events(
        &mut resp,
        &mut buf,
        &mut seen,
        Duration::from_secs(5),
        |s| !s.is_empty(),
    )
    .await?;
    ensure!(seen[0].0 == "snapshot", "{:?}", seen[0]);
    ensure!(
        seen[0].1["streams"][0]["destinations"][0]["state"] == "waiting",
        "{}",
        seen[0].1
    );

    let publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(30.0)).await?;
    read_events(
        &mut resp,
        &mut buf,
        &mut seen,
        Duration::from_secs(15),
        |s| states(s, "flaky").iter().any(|st| st == "live"),
    )
    .await?;
    let so_far = states(&seen, "flaky");
    let connecting = so_far.iter().position(|s| s == "connecting");
    let live = so_far.iter().position(|s| s == "live");
    ensure!(
        matches!((connecting, live), (Some(c), Some(l)) if c < l),
        "{so_far:?}"
    );

    drop(nginx);
    read_events(
        &mut resp,
        &mut buf,
        &mut seen,
        Duration::from_secs(40),
        |s| states(s, "flaky").iter().any(|st| st == "retrying"),
    )
    .await?;
    let retry = seen
        .iter()
        .rev()
        .find(|(e, d)| e == "destination" && d["state"] == "retrying")
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    eprintln!("flaky: {:?}; retrying: {retry}", states(&seen, "flaky"));
    ensure!(
        retry["attempt"].as_u64() >= Some(1)
            && retry["last_error"].is_string()
            && retry["next_retry_at"].is_u64(),
        "{retry}"
    );
    ensure!(!retry.to_string().contains("/live/f\""), "{retry}");
    drop(publisher);
    Ok(())
}
