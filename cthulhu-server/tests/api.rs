//! The HTTP API against the real binary and real nginx-rtmp destinations: changes
//! apply live without touching the other destinations, survive a restart, and
//! nothing answers without a token.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{Cthulhu, call, studio_entry, video_gaps};
use cthulhu_testkit::{Ffmpeg, Nginx, PublishOptions, decode_check, free_port};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

const KEY: &str = "studio-secret-1";
/// The key part of the added destination's URL: it must never come back.
const DEST_KEY: &str = "added-dest-key-93";

fn config(steady: &Nginx) -> String {
    format!(
        "[hub]\npublisher_grace_secs = 1\n[[streams]]\npath = \"live/studio\"\nkey = \"{KEY}\"\n\
         [[streams.push]]\nname = \"steady\"\nurl = \"{}\"\n",
        steady.url("s")
    )
}

/// The destination `name` of `live/studio` as the API shows it.
async fn dest(http: &Client, srv: &Cthulhu, token: &str, name: &str) -> Result<Value> {
    studio_entry(http, srv, token, "destinations", "name", name).await
}

/// Polls until the destination's state is `state`.
async fn wait_state(
    http: &Client,
    srv: &Cthulhu,
    token: &str,
    name: &str,
    state: &str,
    timeout: Duration,
) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let d = dest(http, srv, token, name).await?;
        if d["state"] == state {
            return Ok(d);
        }
        ensure!(Instant::now() < deadline, "{name} never got {state}: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With ffmpeg publishing: a destination added through the API goes live and nginx
/// decodes it; disabled it stops, re-enabled it is live again, deleted it stops. The
/// file's destination keeps its one connection throughout (a recording without a
/// gap of half a second). The file's entries refuse edits other than enabling
/// (409), bad input gets 422 naming the field, and no answer or log holds a key.
#[tokio::test]
async fn destinations_change_live_through_the_api() -> Result<()> {
    let steady = Nginx::start_rtmp(free_port()).await?;
    let added = Nginx::start_rtmp(free_port()).await?;
    let srv = Cthulhu::start(&config(&steady)).await?;
    let token = srv.create_token("ci").await?;
    ensure!(token.starts_with("cth_") && token.len() > 40, "{token}");
    let http = Client::new();

    let secs = 24.0;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(secs)).await?;
    wait_state(
        &http,
        &srv,
        &token,
        "steady",
        "live",
        Duration::from_secs(15),
    )
    .await?;

    let url = format!("rtmp://127.0.0.1:{}/live/{DEST_KEY}?x=1", added.port());
    let t0 = Instant::now();
    let (status, body) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "streams/live/studio/destinations",
        Some(json!({"name": "added", "url": url})),
    )
    .await?;
    let answered = t0.elapsed();
    ensure!(status == StatusCode::CREATED, "{status} {body}");
    ensure!(body["origin"] == "api" && body["enabled"] == true, "{body}");
    ensure!(
        ["connecting", "live", "waiting"].contains(&body["state"].as_str().unwrap_or("")),
        "{body}"
    );
    eprintln!("201 after {answered:?}: {body}");
    let live = wait_state(
        &http,
        &srv,
        &token,
        "added",
        "live",
        Duration::from_secs(10),
    )
    .await?;
    eprintln!("added live {:?} after the request", t0.elapsed());
    ensure!(
        live["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/live/***")),
        "{live}"
    );

    // The live figures: an ffmpeg player counts as an RTMP player with its bytes,
    // the GOP is the publisher's (30 frames at 30 fps), and both destinations show
    // what they were sent.
    let mut player = cthulhu_testkit::Ffmpeg::spawn([
        "-loglevel",
        "error",
        "-i",
        &srv.url("studio"),
        "-f",
        "null",
        "-",
    ])
    .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        let (_, s) = call(
            &http,
            &srv,
            Some(&token),
            Method::GET,
            "streams/live/studio",
            None,
        )
        .await?;
        let sent = |name: &str| {
            s["destinations"]
                .as_array()
                .and_then(|ds| ds.iter().find(|d| d["name"] == name))
                .map_or(0, |d| d["bitrate"].as_u64().unwrap_or(0))
        };
        if s["players_by_protocol"]["rtmp"] == 1
            && !s["gop"].is_null()
            && s["bytes_to_players"].as_u64().unwrap_or(0) > 0
            && sent("steady") > 0
            && sent("added") > 0
        {
            break s;
        }
        ensure!(Instant::now() < deadline, "figures never showed: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        stream["players"] == 1 && stream["players_by_protocol"]["srt"] == 0,
        "{stream}"
    );
    ensure!(stream["gop"]["frames"] == 30, "{stream}");
    let gop_secs = stream["gop"]["seconds"].as_f64().unwrap_or(0.0);
    ensure!((gop_secs - 1.0).abs() < 0.05, "{stream}");
    for d in stream["destinations"].as_array().into_iter().flatten() {
        let bitrate = d["bitrate"].as_u64().unwrap_or(0);
        ensure!(
            d["bytes_sent"].as_u64().unwrap_or(0) > 10_000
                && (100_000..5_000_000).contains(&bitrate)
                && d["drops"] == 0,
            "a destination's figures: {d}"
        );
    }
    let metrics = srv.metrics().await?;
    ensure!(
        metrics.contains(r#"cthulhu_stream_players{stream="live/studio",protocol="rtmp"} 1"#),
        "players by protocol in /metrics"
    );
    ensure!(
        common::sample(
            &metrics,
            r#"cthulhu_destination_sent_bytes_total{stream="live/studio",destination="added"}"#
        )
        .unwrap_or(0.0)
            > 0.0,
        "bytes sent in /metrics"
    );
    player.kill().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Disable: the push unpublishes and stops.
    let (status, body) = call(
        &http,
        &srv,
        Some(&token),
        Method::PATCH,
        "streams/live/studio/destinations/added",
        Some(json!({"enabled": false})),
    )
    .await?;
    ensure!(
        status == StatusCode::OK && body["enabled"] == false,
        "{status} {body}"
    );
    srv.wait_for_log("Stopped dest=live/studio:added", Duration::from_secs(10))
        .await?;
    wait_state(
        &http,
        &srv,
        &token,
        "added",
        "stopped",
        Duration::from_secs(5),
    )
    .await?;
    let first_part = decode_check(
        added.recording_path(DEST_KEY).to_str().unwrap_or_default(),
        Duration::from_secs(30),
    )
    .await?;
    first_part.ensure_clean()?;
    ensure!(first_part.video_seconds > 2.0, "{first_part:?}");

    // Re-enable, then delete.
    let (status, body) = call(
        &http,
        &srv,
        Some(&token),
        Method::PATCH,
        "streams/live/studio/destinations/added",
        Some(json!({"enabled": true})),
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status} {body}");
    wait_state(
        &http,
        &srv,
        &token,
        "added",
        "live",
        Duration::from_secs(10),
    )
    .await?;
    ensure!(
        srv.count("Live dest=live/studio:added") == 2,
        "{}",
        srv.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = call(
        &http,
        &srv,
        Some(&token),
        Method::DELETE,
        "streams/live/studio/destinations/added",
        None,
    )
    .await?;
    ensure!(status == StatusCode::NO_CONTENT, "{status} {body}");
    ensure!(dest(&http, &srv, &token, "added").await?.is_null());

    // What the API refuses.
    for (method, path, body, want, field) in [
        (
            Method::PATCH,
            "streams/live/studio/destinations/steady",
            Some(json!({"url": "rtmp://127.0.0.1:1/live/x"})),
            StatusCode::CONFLICT,
            None,
        ),
        (
            Method::DELETE,
            "streams/live/studio/destinations/steady",
            None,
            StatusCode::CONFLICT,
            None,
        ),
        (
            Method::POST,
            "streams/live/studio/destinations",
            Some(json!({"name": "bad", "url": format!("http://example.com/live/{DEST_KEY}")})),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("url"),
        ),
        (
            Method::POST,
            "streams/live/studio/destinations",
            Some(json!({"name": "no spaces", "url": "rtmp://127.0.0.1:1/live/x"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("name"),
        ),
        (
            Method::POST,
            "streams/live/studio/destinations",
            Some(json!({"name": "steady", "url": "rtmp://127.0.0.1:1/live/x"})),
            StatusCode::CONFLICT,
            None,
        ),
        (
            Method::POST,
            "streams/live/nope/destinations",
            Some(json!({"name": "x", "url": "rtmp://127.0.0.1:1/live/x"})),
            StatusCode::NOT_FOUND,
            None,
        ),
    ] {
        let (status, answer) = call(&http, &srv, Some(&token), method.clone(), path, body).await?;
        ensure!(status == want, "{method} {path}: {status} {answer}");
        ensure!(answer["error"]["code"].is_string(), "{answer}");
        if let Some(f) = field {
            ensure!(answer["error"]["field"] == f, "{answer}");
        }
        ensure!(!answer.to_string().contains(DEST_KEY), "{answer}");
    }
    // Enabling and disabling the file's destination works (kept as an override).
    let (status, _) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "streams/live/studio/destinations/steady/retry",
        None,
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status}");

    publisher.wait_success(Duration::from_secs(40)).await?;
    srv.wait_for_log(
        "Stream over: unpublishing dest=steady",
        Duration::from_secs(20),
    )
    .await?;
    let log = srv.log();
    ensure!(
        srv.count("Live dest=live/studio:steady") == 1
            && srv.count("failed, retrying dest=live/studio:steady") == 0,
        "the file's destination was disturbed:\n{log}"
    );
    ensure!(
        !log.contains(KEY) && !log.contains(DEST_KEY) && !log.contains(&token),
        "a secret was logged:\n{log}"
    );
    let rec = steady.recording_path("s");
    decode_check(rec.to_str().unwrap_or_default(), Duration::from_secs(60))
        .await?
        .ensure_clean()?;
    let (gap, span) = video_gaps(&rec).await?;
    eprintln!("steady: {span:.2} s of video, largest gap {gap:.3} s");
    ensure!(
        span > secs - 2.0 && gap < 0.5,
        "steady: {span:.2} s, gap {gap:.3} s"
    );
    Ok(())
}

/// Destinations created and file destinations disabled through the API come back
/// after a restart (from SQLite); a revoked token is refused.
#[tokio::test]
async fn api_changes_survive_a_restart_and_tokens_revoke() -> Result<()> {
    let steady = Nginx::start_rtmp(free_port()).await?;
    let mut srv = Cthulhu::start(&config(&steady)).await?;
    let token = srv.create_token("ops").await?;
    let http = Client::new();
    let (status, body) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "streams/live/studio/destinations",
        Some(json!({"name": "kept", "url": format!("rtmp://127.0.0.1:9/live/{DEST_KEY}"), "enabled": false})),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status} {body}");
    let (status, body) = call(
        &http,
        &srv,
        Some(&token),
        Method::PATCH,
        "streams/live/studio/destinations/steady",
        Some(json!({"enabled": false})),
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status} {body}");
    // A second token, revoked.
    let (status, made) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "tokens",
        Some(json!({"name": "temp"})),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status} {made}");
    let temp = made["token"].as_str().unwrap_or_default().to_owned();
    let (status, _) = call(&http, &srv, Some(&temp), Method::GET, "streams", None).await?;
    ensure!(status == StatusCode::OK, "{status}");
    let (status, _) = call(
        &http,
        &srv,
        Some(&token),
        Method::DELETE,
        &format!("tokens/{}", made["id"]),
        None,
    )
    .await?;
    ensure!(status == StatusCode::NO_CONTENT, "{status}");
    let (status, _) = call(&http, &srv, Some(&temp), Method::GET, "streams", None).await?;
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "revoked token: {status}"
    );
    let (status, listed) = call(&http, &srv, Some(&token), Method::GET, "tokens", None).await?;
    ensure!(status == StatusCode::OK, "{status}");
    ensure!(!listed.to_string().contains(&temp) && !listed.to_string().contains(&token));

    // A stream created at runtime: its key is shown once.
    let (status, made) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "streams",
        Some(json!({"path": "live/extra"})),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status} {made}");
    let extra_key = made["key"].as_str().unwrap_or_default().to_owned();
    ensure!(extra_key.len() >= 24, "{made}");
    let (status, _) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "streams",
        Some(json!({"path": "live/extra"})),
    )
    .await?;
    ensure!(status == StatusCode::CONFLICT, "{status}");
    let (status, _) = call(
        &http,
        &srv,
        Some(&token),
        Method::DELETE,
        "streams/live/studio",
        None,
    )
    .await?;
    ensure!(
        status == StatusCode::CONFLICT,
        "the file's stream: {status}"
    );

    srv.restart().await?;
    // The runtime stream came back with its key: it publishes, and its key is not shown.
    let mut publisher = cthulhu_testkit::Ffmpeg::publish_test_pattern(
        &format!("rtmp://127.0.0.1:{}/live/{extra_key}", srv.port),
        &PublishOptions::seconds(1.0),
    )
    .await?;
    publisher.wait_success(Duration::from_secs(20)).await?;
    srv.wait_for_log("Published stream=live/extra", Duration::from_secs(5))
        .await?;
    // Kick: a live publisher is disconnected, a stream without one is a conflict.
    let mut long = cthulhu_testkit::Ffmpeg::publish_test_pattern(
        &format!("rtmp://127.0.0.1:{}/live/{extra_key}", srv.port),
        &PublishOptions::seconds(60.0),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.count("Published stream=live/extra") < 2 {
        ensure!(
            Instant::now() < deadline,
            "not published again:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "streams/live/extra/kick",
        None,
    )
    .await?;
    ensure!(status == StatusCode::NO_CONTENT, "{status} {body}");
    let exited = long.wait(Duration::from_secs(15)).await?;
    ensure!(!exited.success(), "ffmpeg went on after the kick");
    let (status, body) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "streams/live/extra/kick",
        None,
    )
    .await?;
    ensure!(
        status == StatusCode::CONFLICT && body["error"]["code"] == "not_live",
        "{status} {body}"
    );
    let (status, extra) = call(
        &http,
        &srv,
        Some(&token),
        Method::GET,
        "streams/live/extra",
        None,
    )
    .await?;
    ensure!(
        status == StatusCode::OK && extra["origin"] == "api",
        "{status} {extra}"
    );
    let (_, all) = call(&http, &srv, Some(&token), Method::GET, "streams", None).await?;
    ensure!(
        !all.to_string().contains(&extra_key) && !all.to_string().contains(KEY),
        "a key in the API output"
    );
    let kept = dest(&http, &srv, &token, "kept").await?;
    ensure!(
        kept["origin"] == "api" && kept["enabled"] == false && kept["state"] == "stopped",
        "{kept}"
    );
    ensure!(!kept.to_string().contains(DEST_KEY), "{kept}");
    let steady_view = dest(&http, &srv, &token, "steady").await?;
    ensure!(
        steady_view["origin"] == "file" && steady_view["enabled"] == false,
        "{steady_view}"
    );
    let (status, _) = call(
        &http,
        &srv,
        Some(&token),
        Method::DELETE,
        "streams/live/extra",
        None,
    )
    .await?;
    ensure!(status == StatusCode::NO_CONTENT, "{status}");
    let (status, _) = call(
        &http,
        &srv,
        Some(&token),
        Method::GET,
        "streams/live/extra",
        None,
    )
    .await?;
    ensure!(status == StatusCode::NOT_FOUND, "{status}");
    ensure!(!srv.log().contains(&extra_key), "the key was logged");
    Ok(())
}

/// Every endpoint the OpenAPI document lists, but the login, refuses anonymous and
/// made-up callers with 401 and the error shape; the document lists every known
/// endpoint (so an empty or partial document cannot pass).
#[tokio::test]
async fn every_endpoint_needs_a_token() -> Result<()> {
    let steady = Nginx::start_rtmp(free_port()).await?;
    let srv = Cthulhu::start(&config(&steady)).await?;
    let http = Client::new();
    let token = srv.create_token("x").await?;
    let (status, doc) = call(&http, &srv, Some(&token), Method::GET, "openapi.json", None).await?;
    ensure!(status == StatusCode::OK, "{status} {doc}");
    let mut endpoints = Vec::new();
    for (path, item) in doc["paths"].as_object().context("no paths")? {
        for method in item.as_object().context("a path without methods")?.keys() {
            if ["get", "head", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                endpoints.push((
                    Method::from_bytes(method.to_uppercase().as_bytes())?,
                    path.clone(),
                ));
            }
        }
    }
    ensure!(
        endpoints.len() >= 24,
        "{} endpoints: {endpoints:?}",
        endpoints.len()
    );
    for (method, path) in [
        (Method::POST, "/api/v1/login"),
        (Method::GET, "/api/v1/me"),
        (Method::GET, "/api/v1/events"),
        (Method::GET, "/api/v1/openapi.json"),
        (Method::GET, "/api/v1/streams"),
        (Method::POST, "/api/v1/streams"),
        (Method::DELETE, "/api/v1/streams/{app}/{name}"),
        (Method::POST, "/api/v1/streams/{app}/{name}/kick"),
        (
            Method::PATCH,
            "/api/v1/streams/{app}/{name}/destinations/{dest}",
        ),
        (
            Method::POST,
            "/api/v1/streams/{app}/{name}/destinations/{dest}/retry",
        ),
        (Method::DELETE, "/api/v1/tokens/{id}"),
        (Method::POST, "/api/v1/users/{username}/password-reset"),
        (Method::POST, "/api/v1/probe"),
        (Method::POST, "/api/v1/reload"),
    ] {
        ensure!(
            endpoints.iter().any(|(m, p)| *m == method && p == path),
            "{method} {path} is not in the document"
        );
    }
    for (method, path) in &endpoints {
        if *method == Method::POST && path == "/api/v1/login" {
            continue;
        }
        // Path parameters: what exists in this test's config.
        let rel = path
            .strip_prefix("/api/v1/")
            .with_context(|| format!("{path} is outside /api/v1"))?
            .replace("{app}", "live")
            .replace("{name}", "studio")
            .replace("{dest}", "steady")
            .replace("{username}", "admin")
            .replace("{id}", "1");
        ensure!(
            !rel.contains('{'),
            "{path}: a path parameter this test does not know"
        );
        for token in [None, Some("cth_0000"), Some("")] {
            let body = (*method != Method::GET && *method != Method::DELETE)
                .then(|| json!({"name": "x", "url": "rtmp://127.0.0.1:1/live/x"}));
            let (status, answer) = call(&http, &srv, token, method.clone(), &rel, body).await?;
            ensure!(
                status == StatusCode::UNAUTHORIZED && answer["error"]["code"] == "unauthorized",
                "{method} {rel} with {token:?}: {status} {answer}"
            );
        }
    }
    ensure!(dest(&http, &srv, &token, "steady").await?["enabled"] == true);
    Ok(())
}

/// `GET /api/v1/openapi.json` needs a caller like every endpoint, and is an OpenAPI 3
/// document with the security schemes.
#[tokio::test]
async fn openapi_document_needs_a_caller() -> Result<()> {
    let steady = Nginx::start_rtmp(free_port()).await?;
    let srv = Cthulhu::start(&config(&steady)).await?;
    let http = Client::new();
    let (status, answer) = call(&http, &srv, None, Method::GET, "openapi.json", None).await?;
    ensure!(
        status == StatusCode::UNAUTHORIZED && answer["error"]["code"] == "unauthorized",
        "{status} {answer}"
    );
    let token = srv.create_token("doc").await?;
    let resp = http
        .get(srv.api("openapi.json"))
        .bearer_auth(&token)
        .send()
        .await?;
    ensure!(resp.status() == StatusCode::OK, "{}", resp.status());
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let doc: Value = resp.json().await?;
    ensure!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    ensure!(doc["info"]["title"].is_string(), "{}", doc["info"]);
    for scheme in ["bearer", "session", "csrf"] {
        ensure!(
            doc["components"]["securitySchemes"][scheme].is_object(),
            "no {scheme} scheme"
        );
    }
    ensure!(
        doc["components"]["schemas"]["ErrorBody"].is_object(),
        "no error shape"
    );
    Ok(())
}

/// `POST /api/v1/probe`: nginx-rtmp accepts a publish; a closed port is unreachable;
/// the key is never echoed.
#[tokio::test]
async fn probe_reports_acceptance_and_failure() -> Result<()> {
    let steady = Nginx::start_rtmp(free_port()).await?;
    let srv = Cthulhu::start(&config(&steady)).await?;
    let token = srv.create_token("probe").await?;
    let http = Client::new();
    let url = format!("rtmp://127.0.0.1:{}/live/{DEST_KEY}", steady.port());
    let (status, ok) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "probe",
        Some(json!({"url": url})),
    )
    .await?;
    ensure!(
        status == StatusCode::OK && ok["accepted"] == true,
        "{status} {ok}"
    );
    ensure!(!ok.to_string().contains(DEST_KEY), "{ok}");
    let closed = format!("rtmp://127.0.0.1:{}/live/{DEST_KEY}", free_port());
    let (status, down) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "probe",
        Some(json!({"url": closed, "timeout_secs": 2})),
    )
    .await?;
    ensure!(
        status == StatusCode::OK && down["reachable"] == false && down["error"].is_string(),
        "{status} {down}"
    );
    ensure!(!down.to_string().contains(DEST_KEY), "{down}");
    let (status, bad) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "probe",
        Some(json!({"url": "http://x/y"})),
    )
    .await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY && bad["error"]["field"] == "url",
        "{status} {bad}"
    );
    Ok(())
}
