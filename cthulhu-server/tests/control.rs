//! The control plane against the real binary and real nginx-rtmp destinations:
//! configuration reloads apply only the difference.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{Cthulhu, video_gaps};
use cthulhu_testkit::{Ffmpeg, Nginx, PublishOptions, decode_check, free_port};

const KEY: &str = "studio-secret-1";

/// The `[[streams]]` section of `live/studio` with `dests` as pushes.
fn streams(dests: &[(&str, String)]) -> String {
    let mut s = format!(
        "[hub]\npublisher_grace_secs = 1\n[[streams]]\npath = \"live/studio\"\nkey = \"{KEY}\"\n"
    );
    for (name, url) in dests {
        s.push_str(&format!(
            "[[streams.push]]\nname = \"{name}\"\nurl = \"{url}\"\n"
        ));
    }
    s
}

/// Rewrites the server's config file with `body` in place of the streams part.
fn rewrite(srv: &Cthulhu, body: &str) -> Result<()> {
    let path = srv.dir.path().join("cthulhu.toml");
    let text = std::fs::read_to_string(&path)?;
    let head = text.split("[hub]").next().unwrap_or_default().to_owned();
    // `[srt]` comes after the body: keep it.
    let srt = text
        .find("\n[srt]")
        .map(|i| text[i..].to_owned())
        .unwrap_or_default();
    std::fs::write(&path, format!("{head}{body}{srt}"))?;
    Ok(())
}

async fn hup(srv: &Cthulhu) -> Result<()> {
    let status = tokio::process::Command::new("kill")
        .args(["-HUP", &srv.proc.pid().to_string()])
        .status()
        .await?;
    ensure!(status.success(), "kill -HUP failed");
    Ok(())
}

/// SIGHUP re-reads the file: a destination added there starts, one removed stops,
/// the unchanged one keeps its connection (one "Live", a recording without a gap of
/// half a second); a broken file keeps the running configuration and says why.
#[tokio::test]
async fn sighup_reload_applies_only_the_difference() -> Result<()> {
    let steady = Nginx::start_rtmp(free_port()).await?;
    let removed = Nginx::start_rtmp(free_port()).await?;
    let added = Nginx::start_rtmp(free_port()).await?;
    let srv = Cthulhu::start(&streams(&[
        ("steady", steady.url("s")),
        ("removed", removed.url("r")),
    ]))
    .await?;
    let secs = 16.0;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(secs)).await?;
    srv.wait_for_log("Live dest=live/studio:steady", Duration::from_secs(15))
        .await?;
    srv.wait_for_log("Live dest=live/studio:removed", Duration::from_secs(15))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    rewrite(
        &srv,
        &streams(&[("steady", steady.url("s")), ("added", added.url("a"))]),
    )?;
    hup(&srv).await?;
    srv.wait_for_log(
        "1 started, 1 stopped, 0 restarted, 1 unchanged",
        Duration::from_secs(10),
    )
    .await?;
    srv.wait_for_log("Live dest=live/studio:added", Duration::from_secs(15))
        .await?;
    srv.wait_for_log("Stopped dest=live/studio:removed", Duration::from_secs(10))
        .await?;

    // A broken file: the running configuration stays.
    let path = srv.dir.path().join("cthulhu.toml");
    let good = std::fs::read_to_string(&path)?;
    std::fs::write(&path, format!("{good}\n[[streams]]\npath = \"no-slash\"\n"))?;
    hup(&srv).await?;
    srv.wait_for_log(
        "Config reload failed: keeping the running configuration",
        Duration::from_secs(10),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    publisher.wait_success(Duration::from_secs(40)).await?;
    srv.wait_for_log(
        "Stream over: unpublishing dest=steady",
        Duration::from_secs(20),
    )
    .await?;
    srv.wait_for_log(
        "Stream over: unpublishing dest=added",
        Duration::from_secs(20),
    )
    .await?;
    let log = srv.log();
    ensure!(
        srv.count("Live dest=live/studio:steady") == 1
            && srv.count("failed, retrying dest=live/studio:steady") == 0
            && !log.contains("Stopped dest=live/studio:steady")
            && !log.contains("Stopped dest=live/studio:added"),
        "the unchanged destination was disturbed:\n{log}"
    );
    let failed = log
        .lines()
        .find(|l| l.contains("Config reload failed"))
        .unwrap_or_default();
    ensure!(
        failed.contains("cthulhu.toml:") && failed.contains("error="),
        "the reload error does not say where and what: {failed}"
    );
    ensure!(!log.contains(KEY), "the key was logged");

    // The steady destination's recording covers the whole publish without a pause.
    let rec = steady.recording_path("s");
    let report = decode_check(rec.to_str().unwrap_or_default(), Duration::from_secs(60)).await?;
    report.ensure_clean()?;
    let (gap, span) = video_gaps(&rec).await?;
    eprintln!("steady: {span:.2} s of video, largest gap {gap:.3} s");
    ensure!(span > secs - 2.0, "steady got {span:.2} s of {secs}");
    ensure!(gap < 0.5, "steady paused {gap:.3} s");
    // The added one got what came after the reload and decodes.
    let rec = added.recording_path("a");
    let report = decode_check(rec.to_str().unwrap_or_default(), Duration::from_secs(60)).await?;
    report.ensure_clean()?;
    ensure!(
        report.video_seconds > 5.0,
        "added got {} s",
        report.video_seconds
    );
    Ok(())
}
