//! Recordings through the HTTP API, against the real binary with ffmpeg publishing:
//! a recording started with `POST .../recordings` records while the config file's
//! recording keeps its segments uncut, its status shows in the stream's view, its
//! segments are listed by `GET /api/v1/recordings` and decode with ffmpeg, `DELETE`
//! stops it (the open segment is finished and listed), and one made through the API
//! comes back after a restart. The stream's view names the publisher (protocol,
//! remote address) and its bitrate. `PATCH .../recordings/{id}` disables a recording
//! (its open segment is finished, listed and decodes; nothing is written while
//! disabled) and enables it again (a new segment), and the choice survives a restart
//! and, for the config file's, a reload.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, ensure};
use common::{Cthulhu, call, studio_entry};
use cthulhu_testkit::{Ffmpeg, PublishOptions, decode_check};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

const KEY: &str = "studio-secret-rec";

fn config() -> &'static str {
    "[hub]\npublisher_grace_secs = 1\n[[streams]]\npath = \"live/studio\"\n\
     key = \"studio-secret-rec\"\n[[streams.record]]\nformat = \"ts\"\n\
     name = \"file/{seq}.ts\"\n"
}

/// The recording `id` of `live/studio` as the stream's view shows it (Null if none).
async fn recording(http: &Client, srv: &Cthulhu, token: &str, id: &str) -> Result<Value> {
    studio_entry(http, srv, token, "recordings", "id", id).await
}

/// Polls the recording `id` until `done` holds for it.
async fn wait_recording(
    http: &Client,
    srv: &Cthulhu,
    token: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = recording(http, srv, token, id).await?;
        if done(&r) {
            return Ok(r);
        }
        ensure!(Instant::now() < deadline, "{id} never {what}: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The segments `GET /api/v1/recordings` lists for `query`.
async fn segments(http: &Client, srv: &Cthulhu, token: &str, query: &str) -> Result<Value> {
    let (status, page) = call(
        http,
        srv,
        Some(token),
        Method::GET,
        &format!("recordings{query}"),
        None,
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status} {page}");
    Ok(page)
}

fn of_recording<'a>(page: &'a Value, id: &str) -> Vec<&'a Value> {
    page["segments"]
        .as_array()
        .map(|a| a.iter().filter(|s| s["recording"] == id).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn recordings_start_list_and_stop_through_the_api() -> Result<()> {
    let mut srv = Cthulhu::start(config()).await?;
    let token = srv.create_token("ci").await?;
    let http = Client::new();
    let recordings_dir = srv.dir.path().join("data").join("recordings");

    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(16.0)).await?;
    wait_recording(&http, &srv, &token, "record0", "recorded", |r| {
        r["state"] == "live" && r["origin"] == "file"
    })
    .await?;

    // The stream's view names the publisher and its bitrate.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stream) = call(
            &http,
            &srv,
            Some(&token),
            Method::GET,
            "streams/live/studio",
            None,
        )
        .await?;
        let p = &stream["publisher"];
        let remote_ok = p["remote"]
            .as_str()
            .is_some_and(|r| r.starts_with("127.0.0.1:"));
        if p["protocol"] == "rtmp"
            && remote_ok
            && stream["bitrate_in"]["last_1s"].as_u64() > Some(0)
        {
            ensure!(
                stream["bitrate_in"]["last_10s"].as_u64() > Some(0)
                    && p["since"].as_u64() == stream["live_since"].as_u64(),
                "{stream}"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no publisher or bitrate: {stream}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Bad input: 422 naming the field, 404 for an unknown stream.
    for (body, field) in [
        (json!({"storage": "nowhere"}), "storage"),
        (json!({"format": "avi"}), "format"),
        (json!({"segment_seconds": 0}), "segment_seconds"),
    ] {
        let (status, answer) = call(
            &http,
            &srv,
            Some(&token),
            Method::POST,
            "streams/live/studio/recordings",
            Some(body.clone()),
        )
        .await?;
        ensure!(
            status == StatusCode::UNPROCESSABLE_ENTITY && answer["error"]["field"] == field,
            "{body}: {status} {answer}"
        );
    }
    let (status, answer) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "streams/live/nobody/recordings",
        Some(json!({})),
    )
    .await?;
    ensure!(status == StatusCode::NOT_FOUND, "{status} {answer}");

    // Start one: fMP4 cut every 2 s.
    let (status, created) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "streams/live/studio/recordings",
        Some(json!({"format": "fmp4", "segment_seconds": 2})),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status} {created}");
    ensure!(
        created["storage"] == "local" && created["format"] == "fmp4",
        "{created}"
    );
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    ensure!(!id.is_empty(), "{created}");
    let live = wait_recording(&http, &srv, &token, &id, "recorded", |r| {
        r["state"] == "live" && r["bytes"].as_u64() > Some(0) && r["current_object"].is_string()
    })
    .await?;
    ensure!(
        live["origin"] == "api" && live["segment_seconds"] == 2,
        "{live}"
    );

    // The file's recording is the file's to change; unknown ids are 404.
    for (path, want) in [
        (
            "streams/live/studio/recordings/record0",
            StatusCode::CONFLICT,
        ),
        ("streams/live/studio/recordings/nope", StatusCode::NOT_FOUND),
    ] {
        let (status, answer) = call(&http, &srv, Some(&token), Method::DELETE, path, None).await?;
        ensure!(status == want, "{path}: {status} {answer}");
    }

    // Segments are listed as they finish.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = segments(&http, &srv, &token, "?stream=live/studio").await?;
        if of_recording(&page, &id).len() >= 2 {
            break;
        }
        ensure!(Instant::now() < deadline, "no 2 segments listed: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Stop it: the open segment is finished and listed; the view no longer has it.
    let before_stop = of_recording(
        &segments(&http, &srv, &token, "?stream=live/studio").await?,
        &id,
    )
    .len();
    let (status, answer) = call(
        &http,
        &srv,
        Some(&token),
        Method::DELETE,
        &format!("streams/live/studio/recordings/{id}"),
        None,
    )
    .await?;
    ensure!(status == StatusCode::NO_CONTENT, "{status} {answer}");
    ensure!(recording(&http, &srv, &token, &id).await?.is_null());
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = segments(&http, &srv, &token, "?stream=live/studio").await?;
        if of_recording(&page, &id).len() > before_stop {
            break page;
        }
        ensure!(
            Instant::now() < deadline,
            "the last segment was not listed: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every segment decodes; those cut by time cover about 2 s (the last one,
    // finished by the stop, may be short).
    let listed = of_recording(&page, &id);
    let full = listed
        .iter()
        .filter(|s| s["duration_seconds"].as_f64().is_some_and(|d| d >= 1.5))
        .count();
    ensure!(full >= 2, "{listed:?}");
    for seg in listed {
        let object = seg["object"].as_str().unwrap_or_default();
        ensure!(
            seg["bytes"].as_u64() > Some(0) && seg["duration_seconds"].as_f64() > Some(0.0),
            "{seg}"
        );
        // Local objects are named by their path.
        let file = recordings_dir.join(object);
        let report = decode_check(&file.display().to_string(), Duration::from_secs(30)).await?;
        ensure!(
            report.exit_code == Some(0) && report.stderr.is_empty() && report.video_frames > 0,
            "{object}: {:?} {}",
            report.exit_code,
            report.stderr
        );
    }
    // Paging: one at a time, newest first, down to the oldest.
    let all = page["segments"].as_array().map_or(0, Vec::len);
    let mut seen = Vec::new();
    let mut query = "?stream=live/studio&limit=1".to_owned();
    loop {
        let p = segments(&http, &srv, &token, &query).await?;
        let Some(s) = p["segments"].as_array().and_then(|a| a.first()) else {
            break;
        };
        seen.push(s["id"].as_i64().unwrap_or_default());
        match p["next_before"].as_i64() {
            Some(b) => query = format!("?stream=live/studio&limit=1&before={b}"),
            None => break,
        }
        ensure!(seen.len() <= all + 1, "paging does not end");
    }
    ensure!(
        seen.len() >= all && seen.windows(2).all(|w| w[0] > w[1]),
        "{seen:?}"
    );
    let (status, answer) = call(
        &http,
        &srv,
        Some(&token),
        Method::GET,
        "recordings?limit=0",
        None,
    )
    .await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY && answer["error"]["field"] == "limit",
        "{status} {answer}"
    );

    // The file's recording was not cut by any of it: one segment so far.
    ensure!(
        files_under(&recordings_dir.join("file")).len() == 1,
        "{:?}",
        files_under(&recordings_dir.join("file"))
    );
    publisher.wait(Duration::from_secs(30)).await?;

    // A recording made through the API comes back after a restart.
    let (status, created) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "streams/live/studio/recordings",
        Some(json!({"format": "flv"})),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status} {created}");
    let kept = created["id"].as_str().unwrap_or_default().to_owned();
    srv.restart().await?;
    let back = wait_recording(&http, &srv, &token, &kept, "came back", |r| {
        r["state"] == "waiting"
    })
    .await?;
    ensure!(back["origin"] == "api" && back["format"] == "flv", "{back}");
    ensure!(recording(&http, &srv, &token, &id).await?.is_null());
    // The segments listed before the restart still are.
    ensure!(
        of_recording(
            &segments(&http, &srv, &token, "?stream=live/studio").await?,
            &id
        )
        .len()
            > before_stop
    );
    let log = srv.log();
    ensure!(!log.contains(KEY), "the stream key is in the log");
    Ok(())
}

/// `PATCH .../recordings/{id}` of `live/studio` with `body`.
async fn patch(
    http: &Client,
    srv: &Cthulhu,
    token: &str,
    id: &str,
    body: Value,
) -> Result<(StatusCode, Value)> {
    call(
        http,
        srv,
        Some(token),
        Method::PATCH,
        &format!("streams/live/studio/recordings/{id}"),
        Some(body),
    )
    .await
}

/// `live/studio`'s payload bytes received from its publishers, as its view shows.
async fn bytes_in(http: &Client, srv: &Cthulhu, token: &str) -> Result<u64> {
    let (status, stream) = call(
        http,
        srv,
        Some(token),
        Method::GET,
        "streams/live/studio",
        None,
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status} {stream}");
    Ok(stream["bytes_in"].as_u64().unwrap_or_default())
}

/// Waits until `live/studio` received `bytes` more from its publisher: media flowed
/// meanwhile (about 2 s of the test pattern for 150 KB).
async fn media_flowed(http: &Client, srv: &Cthulhu, token: &str, bytes: u64) -> Result<()> {
    let start = bytes_in(http, srv, token).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = bytes_in(http, srv, token).await?;
        if now >= start + bytes {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the stream received {} bytes, not {bytes}",
            now - start
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The size of every file under `dir`.
fn sizes_under(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out: Vec<_> = files_under(dir)
        .into_iter()
        .map(|f| {
            let len = std::fs::metadata(&f).map_or(0, |m| m.len());
            (f, len)
        })
        .collect();
    out.sort();
    out
}

/// Waits until `GET /api/v1/recordings` lists `n` segments of the recording `id`.
async fn wait_segments(
    http: &Client,
    srv: &Cthulhu,
    token: &str,
    id: &str,
    n: usize,
) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = segments(http, srv, token, "?stream=live/studio").await?;
        if of_recording(&page, id).len() >= n {
            return Ok(page);
        }
        ensure!(
            Instant::now() < deadline,
            "not {n} segments of {id} listed: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn recordings_are_disabled_and_enabled_through_the_api() -> Result<()> {
    let mut srv = Cthulhu::start(config()).await?;
    let token = srv.create_token("ci").await?;
    let http = Client::new();
    let recordings_dir = srv.dir.path().join("data").join("recordings");
    let file_dir = recordings_dir.join("file");

    // Bad input: 422 naming `enabled` without it, 422 for other fields (only
    // enabling changes at runtime), 404 for an unknown recording or stream, 401
    // without a caller. Nothing changed.
    for body in [json!({}), json!({"enabled": null})] {
        let (status, answer) = patch(&http, &srv, &token, "record0", body.clone()).await?;
        ensure!(
            status == StatusCode::UNPROCESSABLE_ENTITY
                && answer["error"]["code"] == "invalid"
                && answer["error"]["field"] == "enabled",
            "{body}: {status} {answer}"
        );
    }
    for body in [
        json!({"enabled": false, "format": "flv"}),
        json!({"enabled": "no"}),
    ] {
        let (status, answer) = patch(&http, &srv, &token, "record0", body.clone()).await?;
        ensure!(
            status == StatusCode::UNPROCESSABLE_ENTITY && answer["error"]["code"] == "invalid",
            "{body}: {status} {answer}"
        );
    }
    let (status, answer) = patch(&http, &srv, &token, "nope", json!({"enabled": false})).await?;
    ensure!(
        status == StatusCode::NOT_FOUND && answer["error"]["code"] == "not_found",
        "{status} {answer}"
    );
    let (status, answer) = call(
        &http,
        &srv,
        Some(&token),
        Method::PATCH,
        "streams/live/nobody/recordings/record0",
        Some(json!({"enabled": false})),
    )
    .await?;
    ensure!(status == StatusCode::NOT_FOUND, "{status} {answer}");
    let (status, answer) = call(
        &http,
        &srv,
        None,
        Method::PATCH,
        "streams/live/studio/recordings/record0",
        Some(json!({"enabled": false})),
    )
    .await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "{status} {answer}");
    let r = recording(&http, &srv, &token, "record0").await?;
    ensure!(r["enabled"] == true && r["state"] == "waiting", "{r}");

    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::default()).await?;
    let live = wait_recording(&http, &srv, &token, "record0", "recorded", |r| {
        r["state"] == "live" && r["bytes"].as_u64() > Some(0) && r["current_object"].is_string()
    })
    .await?;
    let first_object = live["current_object"].clone();

    // Disabled: the answer is its view; the open segment is finished, listed and
    // decodes.
    let (status, view) = patch(&http, &srv, &token, "record0", json!({"enabled": false})).await?;
    ensure!(status == StatusCode::OK, "{status} {view}");
    ensure!(
        view["id"] == "record0"
            && view["origin"] == "file"
            && view["enabled"] == false
            && view["state"] == "stopped",
        "{view}"
    );
    let page = wait_segments(&http, &srv, &token, "record0", 1).await?;
    let listed = of_recording(&page, "record0");
    ensure!(listed.len() == 1, "{listed:?}");
    let object = listed[0]["object"].as_str().unwrap_or_default();
    ensure!(
        listed[0]["bytes"].as_u64() > Some(0) && first_object.as_str() == Some(object),
        "{listed:?} (the open segment was {first_object})"
    );
    let report = decode_check(
        &recordings_dir.join(object).display().to_string(),
        Duration::from_secs(30),
    )
    .await?;
    report.ensure_clean()?;

    // Nothing is written while disabled, though media flows.
    let on_disk = sizes_under(&file_dir);
    ensure!(on_disk.len() == 1, "{on_disk:?}");
    media_flowed(&http, &srv, &token, 150_000).await?;
    ensure!(sizes_under(&file_dir) == on_disk, "written while disabled");
    let r = recording(&http, &srv, &token, "record0").await?;
    ensure!(
        r["enabled"] == false && r["state"] == "stopped" && r["current_object"].is_null(),
        "{r}"
    );

    // Enabled again: a new segment, growing.
    let (status, view) = patch(&http, &srv, &token, "record0", json!({"enabled": true})).await?;
    ensure!(
        status == StatusCode::OK && view["enabled"] == true,
        "{status} {view}"
    );
    let live = wait_recording(&http, &srv, &token, "record0", "recorded again", |r| {
        r["state"] == "live" && r["bytes"].as_u64() > Some(0) && r["current_object"].is_string()
    })
    .await?;
    ensure!(live["current_object"] != first_object, "{live}");
    let bytes = live["bytes"].as_u64().unwrap_or_default();
    wait_recording(&http, &srv, &token, "record0", "grew", |r| {
        r["bytes"].as_u64() > Some(bytes)
    })
    .await?;
    ensure!(
        files_under(&file_dir).len() == 2,
        "{:?}",
        files_under(&file_dir)
    );

    // Disabled again, it stays so across a restart.
    let (status, view) = patch(&http, &srv, &token, "record0", json!({"enabled": false})).await?;
    ensure!(status == StatusCode::OK, "{status} {view}");
    wait_segments(&http, &srv, &token, "record0", 2).await?;
    publisher.kill().await?;

    // So does a recording made through the API.
    let (status, created) = call(
        &http,
        &srv,
        Some(&token),
        Method::POST,
        "streams/live/studio/recordings",
        Some(json!({"format": "ts"})),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status} {created}");
    let api_id = created["id"].as_str().unwrap_or_default().to_owned();
    let (status, view) = patch(&http, &srv, &token, &api_id, json!({"enabled": false})).await?;
    ensure!(
        status == StatusCode::OK
            && view["origin"] == "api"
            && view["enabled"] == false
            && view["state"] == "stopped",
        "{status} {view}"
    );

    srv.restart().await?;
    for id in ["record0", api_id.as_str()] {
        let r = recording(&http, &srv, &token, id).await?;
        ensure!(
            r["enabled"] == false && r["state"] == "stopped",
            "{id}: {r}"
        );
    }
    let on_disk = sizes_under(&recordings_dir);
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::default()).await?;
    media_flowed(&http, &srv, &token, 150_000).await?;
    ensure!(
        sizes_under(&recordings_dir) == on_disk,
        "written while disabled"
    );

    // A reload keeps the file recording's override.
    let (status, answer) = call(&http, &srv, Some(&token), Method::POST, "reload", None).await?;
    ensure!(status == StatusCode::OK, "{status} {answer}");
    let r = recording(&http, &srv, &token, "record0").await?;
    ensure!(r["enabled"] == false && r["state"] == "stopped", "{r}");
    media_flowed(&http, &srv, &token, 80_000).await?;
    ensure!(
        sizes_under(&recordings_dir) == on_disk,
        "written while disabled"
    );

    // Enabled after the restart, both record.
    for id in ["record0", api_id.as_str()] {
        let (status, view) = patch(&http, &srv, &token, id, json!({"enabled": true})).await?;
        ensure!(
            status == StatusCode::OK && view["enabled"] == true,
            "{id}: {status} {view}"
        );
        wait_recording(&http, &srv, &token, id, "recorded", |r| {
            r["state"] == "live" && r["bytes"].as_u64() > Some(0)
        })
        .await?;
    }
    publisher.kill().await?;
    let log = srv.log();
    ensure!(log.contains("Recording enabled"), "no log of the enable");
    ensure!(!log.contains(KEY), "the stream key is in the log");
    Ok(())
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}
