//! WASM policy plugins in the running server, against real peers: ffmpeg publishes,
//! nginx-rtmp receives what a route plugin chose, hostile plugins are stopped while
//! other streams keep flowing, and replacing a plugin file changes the next decision.
//! `/metrics` counts the plugins' calls, failures by reason and latency.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use common::{Cthulhu, sample};
use cthulhu_testkit::{Ffmpeg, Nginx, PublishOptions, decode_check, free_port, guest_plugin};

const KEY: &str = "config-key-1";
const PLUGIN_KEY: &str = "plugin-key-1";

fn stream() -> String {
    format!("[[streams]]\npath = \"live/studio\"\nkey = \"{KEY}\"\n")
}

fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "/")
}

/// The labels of a plugin function's series.
fn labels(plugin: &str, function: &str) -> String {
    format!("plugin=\"{plugin}\",function=\"{function}\"")
}

/// A plugin function's calls on `/metrics`, checked against its latency histogram
/// (count and `+Inf` bucket): each call is in it once.
fn plugin_calls(metrics: &str, plugin: &str, function: &str) -> Result<f64> {
    let l = labels(plugin, function);
    let calls = sample(metrics, &format!("cthulhu_plugin_calls_total{{{l}}}"));
    let count = sample(
        metrics,
        &format!("cthulhu_plugin_call_seconds_count{{{l}}}"),
    );
    let inf = sample(
        metrics,
        &format!("cthulhu_plugin_call_seconds_bucket{{le=\"+Inf\",{l}}}"),
    );
    let sum = sample(metrics, &format!("cthulhu_plugin_call_seconds_sum{{{l}}}"));
    let Some(calls) = calls else {
        bail!("no calls of {plugin} {function} on /metrics:\n{metrics}");
    };
    ensure!(
        count == Some(calls) && inf == Some(calls),
        "{plugin} {function}: {calls} calls, histogram count {count:?}, +Inf {inf:?}"
    );
    ensure!(
        sum.is_some_and(|s| s > 0.0) || calls == 0.0,
        "{plugin} {function}: latency sum {sum:?}"
    );
    Ok(calls)
}

/// A plugin function's failures on `/metrics` for one reason.
fn plugin_failures(metrics: &str, plugin: &str, function: &str, reason: &str) -> Option<f64> {
    let l = labels(plugin, function);
    sample(
        metrics,
        &format!("cthulhu_plugin_failures_total{{{l},reason=\"{reason}\"}}"),
    )
}

/// Publishes a 3 s test pattern to `url`; true if the server accepted it (ffmpeg
/// ran to the end), false if it was refused.
async fn publish_accepted(url: &str) -> Result<bool> {
    let mut ff = Ffmpeg::publish_test_pattern(url, &PublishOptions::seconds(3.0)).await?;
    Ok(ff.wait(Duration::from_secs(30)).await?.success())
}

/// The auth plugin decides (the config's decision is one of its inputs) and the
/// route plugin chooses two nginx-rtmp destinations, whose recordings decode, and a
/// local recording.
#[tokio::test]
async fn auth_and_route_plugins_decide() -> Result<()> {
    let n1 = Nginx::start_rtmp(free_port()).await?;
    let n2 = Nginx::start_rtmp(free_port()).await?;
    let body = format!(
        "{}\n[[plugins]]\nkind = \"auth\"\npath = \"{}\"\ntimeout_ms = 500\n\
         config = {{ keys = [{{ key = \"{PLUGIN_KEY}\", name = \"show\" }}] }}\n\
         [[plugins]]\nkind = \"route\"\npath = \"{}\"\ntimeout_ms = 500\n\
         config = {{ rules = [{{ match = \"live/*\", destinations = [{{ name = \"n1\", url = \"{}\" }}, {{ name = \"n2\", url = \"{}\" }}], \
         recordings = [{{ name = \"archive\", format = \"ts\", path = \"{{app}}/{{name}}-{{time}}.ts\" }}] }}] }}\n",
        stream(),
        toml_path(&guest_plugin("stream-key-auth")?),
        toml_path(&guest_plugin("route-by-app")?),
        n1.url("{name}"),
        n2.url("{name}"),
    );
    let srv = Cthulhu::start(&body).await?;
    srv.wait_for_log("Plugin loaded", Duration::from_secs(10))
        .await?;

    // A key only the plugin knows, OBS style (the key as the stream name): allowed
    // on the name the plugin binds it to, and pushed where the route plugin says.
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(PLUGIN_KEY), &PublishOptions::seconds(8.0)).await?;
    publisher.wait_success(Duration::from_secs(40)).await?;
    for nginx in [&n1, &n2] {
        let rec = nginx
            .wait_for_recording("show", Duration::from_secs(20))
            .await?;
        let report =
            decode_check(rec.to_str().unwrap_or_default(), Duration::from_secs(20)).await?;
        report.ensure_clean()?;
        assert_eq!(report.dimensions, Some((640, 360)));
        assert!(report.video_seconds > 5.0, "{} s", report.video_seconds);
    }

    // The recording the route plugin asked for, in <data_dir>/recordings.
    srv.wait_for_log("Recording segment finished", Duration::from_secs(20))
        .await?;
    let dir = srv.dir.path().join("data").join("recordings").join("live");
    let files: Vec<_> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("show-") && n.ends_with(".ts"))
        })
        .collect();
    let [file] = files.as_slice() else {
        bail!(
            "expected one plugin recording in {}, found {files:?}",
            dir.display()
        );
    };
    let report = decode_check(file.to_str().unwrap_or_default(), Duration::from_secs(20)).await?;
    report.ensure_clean()?;
    assert!(report.video_seconds > 5.0, "{} s", report.video_seconds);

    // A key nobody knows: refused with the plugin's reason.
    assert!(!publish_accepted(&srv.url("not-a-key")).await?);
    srv.wait_for_log("unknown stream key", Duration::from_secs(5))
        .await?;

    // The config's own key still works: the config decision is one of the plugin's
    // inputs.
    assert!(publish_accepted(&format!("{}?key={KEY}", srv.url("studio"))).await?);
    let log = srv.log();
    assert!(!log.contains(PLUGIN_KEY) && !log.contains(KEY), "{log}");

    // /metrics: the three publishes asked the auth plugin, the accepted ones the
    // route plugin; no call failed (a refusal is an answer).
    let metrics = srv.metrics().await?;
    let auth_calls = plugin_calls(&metrics, "stream_key_auth", "authorize")?;
    let route_calls = plugin_calls(&metrics, "route_by_app", "route")?;
    eprintln!("plugin calls: authorize {auth_calls}, route {route_calls}");
    ensure!(auth_calls >= 3.0, "authorize called {auth_calls} times");
    ensure!(route_calls >= 1.0, "route called {route_calls} times");
    for (plugin, function) in [("stream_key_auth", "authorize"), ("route_by_app", "route")] {
        for reason in ["trap", "timeout", "memory", "invalid_output", "disabled"] {
            let n = plugin_failures(&metrics, plugin, function, reason);
            ensure!(n == Some(0.0), "{plugin} {function} {reason}: {n:?}");
        }
    }
    ensure!(
        !metrics.contains(PLUGIN_KEY) && !metrics.contains(KEY),
        "a key in the metrics"
    );
    Ok(())
}

/// Each hostile auth plugin (misbehaving only for the stream `bad`) is stopped
/// within its limit, the publish is refused (auth fails closed), the failure is
/// logged as the plugin's state, and the stream `good` keeps flowing meanwhile.
#[tokio::test]
async fn hostile_auth_plugins_fail_closed_and_the_server_keeps_serving() -> Result<()> {
    let hostile = guest_plugin("hostile-auth")?;
    for (mode, expect, reason) in [
        ("loop", "timed out", "timeout"),
        ("sleep", "timed out", "timeout"),
        ("memory", "memory", "memory"),
        ("trap", "trap", "trap"),
    ] {
        let body = format!(
            "{}\n[[plugins]]\nkind = \"auth\"\npath = \"{}\"\ntimeout_ms = 50\nmemory_mb = 16\n\
             config = {{ mode = \"{mode}\", only_name = \"bad\", sleep_ms = 10000 }}\n",
            stream(),
            toml_path(&hostile),
        );
        let srv = Cthulhu::start(&body).await?;
        let mut good =
            Ffmpeg::publish_test_pattern(&srv.url("good"), &PublishOptions::seconds(12.0)).await?;
        srv.wait_for_log("Published", Duration::from_secs(10))
            .await?;
        let started = tokio::time::Instant::now();
        assert!(
            !publish_accepted(&srv.url("bad")).await?,
            "{mode}: the bad publish was accepted"
        );
        eprintln!("{mode}: refused after {:?}", started.elapsed());
        srv.wait_for_log("Plugin call failed", Duration::from_secs(5))
            .await?;
        let log = srv.log();
        let refusal = log
            .lines()
            .find(|l| l.contains("refused") && l.contains("auth plugin"))
            .unwrap_or_default();
        assert!(
            refusal.to_ascii_lowercase().contains(expect),
            "{mode}: refusal {refusal:?}\n{log}"
        );
        // /metrics counts the failure under its reason (it is counted before it is
        // logged), and the good publish's call that succeeded.
        let metrics = srv.metrics().await?;
        let failed = plugin_failures(&metrics, "hostile_auth", "authorize", reason);
        ensure!(
            failed.is_some_and(|n| n >= 1.0),
            "{mode}: {reason} failures {failed:?}:\n{metrics}"
        );
        let calls = plugin_calls(&metrics, "hostile_auth", "authorize")?;
        ensure!(calls >= 2.0, "{mode}: {calls} calls");
        // The good stream never noticed.
        let play = decode_check(&srv.url("good"), Duration::from_secs(2)).await?;
        play.ensure_clean()?;
        assert!(play.video_frames >= 30, "{mode}: {}", play.video_frames);
        good.wait_success(Duration::from_secs(30)).await?;
        if good.log_tail().contains("Error") {
            bail!(
                "{mode}: the good publisher saw an error: {}",
                good.log_tail()
            );
        }
    }
    Ok(())
}

/// Replacing the auth plugin's file changes the decision for the next publish, with
/// no restart.
#[tokio::test]
async fn replacing_the_auth_plugin_file_changes_the_next_decision() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("auth.wasm");
    std::fs::copy(guest_plugin("stream-key-auth")?, &path)?;
    let body = format!(
        "{}\n[[plugins]]\nkind = \"auth\"\npath = \"{}\"\ntimeout_ms = 500\n\
         config = {{ keys = [{{ key = \"{PLUGIN_KEY}\", name = \"show\" }}] }}\n",
        stream(),
        toml_path(&path),
    );
    let srv = Cthulhu::start(&body).await?;
    assert!(publish_accepted(&srv.url(PLUGIN_KEY)).await?);

    // Deploy another plugin the way deployments should: write aside, rename.
    let tmp = dir.path().join("auth.wasm.new");
    std::fs::copy(guest_plugin("hostile-auth")?, &tmp)?;
    std::fs::rename(&tmp, &path)?;
    srv.wait_for_log("Plugin reloaded", Duration::from_secs(20))
        .await?;
    assert!(!publish_accepted(&srv.url(PLUGIN_KEY)).await?);
    srv.wait_for_log("hostile-auth denies everything", Duration::from_secs(5))
        .await?;
    assert_eq!(srv.count("RTMP listening"), 1, "the server restarted");
    Ok(())
}
