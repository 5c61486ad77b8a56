//! Connection timeouts and player start, against real peers on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::Cthulhu;
use cthulhu_testkit::{Ffmpeg, PublishOptions, StalledPlayer, decode_check};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

const KEY: &str = "timeout-key-1";

fn config(extra_rtmp: &str) -> String {
    format!("{extra_rtmp}\n[[streams]]\npath = \"live/t\"\nkey = \"{KEY}\"\n")
}

/// A client that connects and never completes the handshake is closed after the
/// handshake timeout; a publisher on another connection is unaffected.
#[tokio::test]
async fn silent_connection_is_closed_after_handshake_timeout() -> Result<()> {
    let srv = Cthulhu::start(&config("handshake_timeout_secs = 2")).await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(6.0)).await?;
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", srv.port)).await?;
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await??;
    let waited = t0.elapsed();
    assert_eq!(n, 0, "server closed the silent connection");
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    srv.wait_for_log("handshake timed out", Duration::from_secs(2))
        .await?;
    publisher.wait_success(Duration::from_secs(30)).await?;
    Ok(())
}

/// A publisher that stops sending is closed after the idle timeout and its stream ends.
#[tokio::test]
async fn idle_publisher_is_closed() -> Result<()> {
    let srv = Cthulhu::start(&config("idle_timeout_secs = 2")).await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(30.0)).await?;
    srv.wait_for_log("Published stream=live/t", Duration::from_secs(10))
        .await?;
    let pid = publisher.pid().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().await?;
    let stopped = Instant::now();
    srv.wait_for_log("publisher idle for 2 s", Duration::from_secs(8))
        .await?;
    assert!(stopped.elapsed() >= Duration::from_millis(1500));
    Command::new("kill").args(["-CONT", &pid]).status().await?;
    let _ = publisher.kill().await;
    // The path is free again: a new publisher is accepted.
    let mut again =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(2.0)).await?;
    again.wait_success(Duration::from_secs(20)).await?;
    assert_eq!(srv.count("Published stream=live/t"), 2);
    Ok(())
}

/// A player that stops reading is closed after the stall timeout.
#[tokio::test]
async fn stalled_player_is_closed_after_stall_timeout() -> Result<()> {
    let srv = Cthulhu::start(&config("play_stall_timeout_secs = 2")).await?;
    let opts = PublishOptions {
        video_bitrate_kbps: 4000,
        width: 1280,
        height: 720,
        ..PublishOptions::seconds(20.0)
    };
    let mut publisher = Ffmpeg::publish_test_pattern(&srv.url(KEY), &opts).await?;
    srv.wait_for_log("Published stream=live/t", Duration::from_secs(10))
        .await?;
    let mut stalled = StalledPlayer::connect(&srv.url("t")).await?;
    srv.wait_for_log("player stalled for 2 s", Duration::from_secs(15))
        .await?;
    let drained = stalled.drain(Duration::from_secs(10)).await?;
    assert!(drained.closed, "server closed the stalled player");
    // The publisher is unaffected.
    assert!(publisher.is_running());
    publisher.kill().await?;
    Ok(())
}

/// A player joining mid-GOP starts on a keyframe with the sequence headers (nginx-rtmp
/// would start mid-GOP and lose the rest of it).
#[tokio::test]
async fn late_player_starts_on_a_keyframe() -> Result<()> {
    let srv = Cthulhu::start(&config("")).await?;
    let opts = PublishOptions {
        gop: 90,
        ..PublishOptions::seconds(12.0)
    }; // 3 s GOP
    let mut publisher = Ffmpeg::publish_test_pattern(&srv.url(KEY), &opts).await?;
    srv.wait_for_log("Published stream=live/t", Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_millis(4500)).await; // mid-GOP
    let out = srv.dir.path().join("late.flv");
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-rw_timeout",
            "10000000",
            "-i",
        ])
        .arg(srv.url("t"))
        .args(["-t", "2", "-c", "copy", "-y"])
        .arg(&out)
        .status()
        .await?;
    assert!(status.success());
    let first = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=flags",
            "-of",
            "csv=p=0",
            "-read_intervals",
            "%+#1",
        ])
        .arg(&out)
        .output()
        .await?;
    let flags = String::from_utf8_lossy(&first.stdout);
    assert!(
        flags.trim_start().starts_with('K'),
        "first video packet is not a keyframe: {flags:?}"
    );
    let report = decode_check(out.to_str().unwrap_or_default(), Duration::from_secs(10)).await?;
    report.ensure_clean()?;
    // The cached GOP arrives at once: 2 s of media from a 3 s GOP started 1.5 s ago.
    assert!(report.video_seconds >= 1.9, "{} s", report.video_seconds);
    publisher.wait_success(Duration::from_secs(30)).await?;
    Ok(())
}

/// A publisher remuxing MPEG-TS to FLV (ffmpeg sends an empty AAC sequence header
/// before the real one) plays back with its audio, also to a player that was waiting
/// before it started. (Skipping the empty header is unit-tested in `format::flv`; end
/// to end it is harmless because the real header follows at once.)
#[tokio::test]
async fn ts_remuxing_publisher_plays_with_audio() -> Result<()> {
    let srv = Cthulhu::start(&config("")).await?;
    let ts = srv.dir.path().join("src.ts");
    let opts = PublishOptions {
        format: "mpegts".into(),
        ..PublishOptions::seconds(8.0)
    };
    Ffmpeg::write_test_file(&ts, &opts).await?;
    // The player is there first, so it receives every header the publisher sends.
    let url = srv.url("t");
    let player = tokio::spawn(async move { decode_check(&url, Duration::from_secs(4)).await });
    srv.wait_for_log("Player started stream=live/t", Duration::from_secs(10))
        .await?;
    let mut publisher = Ffmpeg::publish_file(&ts, &srv.url(KEY)).await?;
    let report = player.await??;
    report.ensure_clean()?;
    assert_eq!(
        report.sample_rate,
        Some(48_000),
        "player got the real AAC config"
    );
    assert!(
        report.audio_seconds > 3.0,
        "{} s of audio",
        report.audio_seconds
    );
    publisher.wait_success(Duration::from_secs(30)).await?;
    Ok(())
}
