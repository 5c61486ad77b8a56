//! End-to-end restreaming against real peers on 127.0.0.1: ffmpeg publishes and plays,
//! nginx-rtmp instances are the push destinations (for RTMPS behind nginx's TLS-terminating
//! stream proxy), ffprobe/ffmpeg decode what arrived.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{Cthulhu, video_gaps};
use cthulhu_testkit::{
    DecodeReport, Ffmpeg, Nginx, PublishOptions, StalledPlayer, TestCa, decode_check, free_port,
    probe_streams,
};

const KEY: &str = "studio-secret-1";

fn stream_with_pushes(dests: &[(&str, String)]) -> String {
    let mut s = format!("[[streams]]\npath = \"live/studio\"\nkey = \"{KEY}\"\n");
    for (name, url) in dests {
        s.push_str(&format!(
            "[[streams.push]]\nname = \"{name}\"\nurl = \"{url}\"\n"
        ));
    }
    s
}

/// What `nginx` recorded of `stream`, which must decode without errors.
async fn clean_recording(nginx: &Nginx, stream: &str) -> Result<DecodeReport> {
    let rec = nginx.recording_path(stream);
    let report = decode_check(rec.to_str().unwrap_or_default(), Duration::from_secs(30)).await?;
    report.ensure_clean()?;
    Ok(report)
}

/// `nginx` recorded `secs` seconds of `stream` (within one second) that decode clean
/// and never pause for half a second.
async fn assert_unbroken(nginx: &Nginx, stream: &str, secs: f64) -> Result<()> {
    clean_recording(nginx, stream).await?;
    let (gap, span) = video_gaps(&nginx.recording_path(stream)).await?;
    anyhow::ensure!(span > secs - 1.0, "{stream}: got {span} s of {secs}");
    anyhow::ensure!(gap < 0.5, "{stream} stalled: {gap} s between frames");
    Ok(())
}

/// ffmpeg → Cthulhu → two nginx-rtmp destinations, plus an ffmpeg player of Cthulhu.
#[tokio::test]
async fn restreams_to_two_nginx_destinations_and_plays() -> Result<()> {
    let a = Nginx::start_rtmp(free_port()).await?;
    let b = Nginx::start_rtmp(free_port()).await?;
    let srv = Cthulhu::start(&stream_with_pushes(&[
        ("a", a.url("one")),
        ("b", b.url("two")),
    ]))
    .await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(8.0)).await?;
    srv.wait_for_log("Published stream=live/studio", Duration::from_secs(10))
        .await?;

    // A player of Cthulhu sees exactly one video and one audio stream (no phantom data
    // or subtitle tracks) and decodes without errors.
    let streams = probe_streams(&srv.url("studio"), &[]).await?;
    let kinds: Vec<(&str, &str)> = streams
        .iter()
        .map(|s| (s.codec_type.as_str(), s.codec_name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![("video", "h264"), ("audio", "aac")],
        "{streams:?}"
    );
    let play = decode_check(&srv.url("studio"), Duration::from_secs(3)).await?;
    play.ensure_clean()?;
    assert!(
        play.video_frames >= 60,
        "player decoded {} frames",
        play.video_frames
    );
    assert_eq!(play.dimensions, Some((640, 360)));

    publisher.wait_success(Duration::from_secs(30)).await?;
    for (nginx, name) in [(&a, "one"), (&b, "two")] {
        let rec = nginx
            .wait_for_recording(name, Duration::from_secs(20))
            .await?;
        // Wait for the grace period to end so the recording is complete.
        srv.wait_for_log("Stream over: unpublishing", Duration::from_secs(20))
            .await?;
        let report =
            decode_check(rec.to_str().unwrap_or_default(), Duration::from_secs(20)).await?;
        report.ensure_clean()?;
        assert_eq!(report.dimensions, Some((640, 360)));
        assert_eq!(report.sample_rate, Some(48_000));
        // All of the 8 s from the first keyframe on: a destination that took longer
        // than a GOP (1 s) to connect must not lose the start.
        assert!(
            report.video_seconds > 7.5,
            "{name}: only {} s of video",
            report.video_seconds
        );
    }
    // Keys never reach the log.
    let log = srv.log();
    assert!(!log.contains(KEY), "stream key leaked into the log");
    assert!(
        !log.contains("/live/one") && !log.contains("/live/two"),
        "destination key leaked"
    );
    Ok(())
}

/// A destination that is down at first is retried with growing delays and receives the
/// stream once it comes up.
#[tokio::test]
async fn destination_down_at_first_is_retried_until_it_comes_up() -> Result<()> {
    let port = free_port();
    let url = format!("rtmp://127.0.0.1:{port}/live/late");
    let srv = Cthulhu::start(&stream_with_pushes(&[("late", url)])).await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(14.0)).await?;
    srv.wait_for_log("Push failed, retrying", Duration::from_secs(10))
        .await?;
    srv.wait_for_log("attempt=2", Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = Nginx::start_rtmp(port).await?;
    srv.wait_for_log("Live dest=live/studio:late", Duration::from_secs(20))
        .await?;
    publisher.wait_success(Duration::from_secs(30)).await?;
    srv.wait_for_log("Stream over: unpublishing", Duration::from_secs(20))
        .await?;
    let rec = c
        .wait_for_recording("late", Duration::from_secs(10))
        .await?;
    let report = decode_check(rec.to_str().unwrap_or_default(), Duration::from_secs(20)).await?;
    report.ensure_clean()?;
    assert!(
        report.video_seconds > 2.0,
        "late destination got {} s",
        report.video_seconds
    );
    // Backoff: the delays were logged and grew (1 s then about 2 s, with jitter).
    assert!(srv.count("Push failed, retrying") >= 2);
    Ok(())
}

/// A destination killed mid-stream comes back; the other destination never stalls.
#[tokio::test]
async fn killed_destination_recovers_while_others_continue() -> Result<()> {
    let steady = Nginx::start_rtmp(free_port()).await?;
    let mut flaky = Nginx::start_rtmp(free_port()).await?;
    let srv = Cthulhu::start(&stream_with_pushes(&[
        ("steady", steady.url("s")),
        ("flaky", flaky.url("f")),
    ]))
    .await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(16.0)).await?;
    srv.wait_for_log("Live dest=live/studio:flaky", Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    flaky.kill().await?;
    srv.wait_for_log(
        "Push failed, retrying dest=live/studio:flaky",
        Duration::from_secs(40),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    flaky.restart().await?;
    // Connects again (second "Live" line for this destination).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while srv.count("Live dest=live/studio:flaky") < 2 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "flaky never came back:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    publisher.wait_success(Duration::from_secs(30)).await?;
    srv.wait_for_log("Stream over: unpublishing", Duration::from_secs(20))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_unbroken(&steady, "s", 16.0).await?;
    let report = clean_recording(&flaky, "f").await?;
    assert!(
        report.video_seconds > 2.0,
        "flaky got {} s after coming back",
        report.video_seconds
    );
    Ok(())
}

/// Destinations of one stream share one writer: a destination that stops reading
/// (nginx frozen with SIGSTOP for 10 s, its socket open: at 6 Mbit/s more than the
/// socket buffers hold, so the writer keeps a backlog for it) must not hold up the
/// other, and when it reads again it goes on (no reconnect) with a stream that decodes.
#[tokio::test]
async fn frozen_destination_does_not_stall_the_shared_writer() -> Result<()> {
    let steady = Nginx::start_rtmp(free_port()).await?;
    let mut frozen = Nginx::start_rtmp(free_port()).await?;
    let srv = Cthulhu::start(&stream_with_pushes(&[
        ("steady", steady.url("s")),
        ("frozen", frozen.url("f")),
    ]))
    .await?;
    let opts = PublishOptions {
        video_bitrate_kbps: 6000,
        ..PublishOptions::seconds(18.0)
    };
    let mut publisher = Ffmpeg::publish_test_pattern(&srv.url(KEY), &opts).await?;
    srv.wait_for_log("Live dest=live/studio:frozen", Duration::from_secs(10))
        .await?;
    srv.wait_for_log("Live dest=live/studio:steady", Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    frozen.pause()?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    frozen.resume()?;
    publisher.wait_success(Duration::from_secs(30)).await?;
    srv.wait_for_log("Stream over: unpublishing", Duration::from_secs(20))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        srv.count("Live dest=live/studio:frozen"),
        1,
        "the frozen destination was reconnected:\n{}",
        srv.log()
    );

    assert_unbroken(&steady, "s", 18.0).await?;
    let report = clean_recording(&frozen, "f").await?;
    assert!(
        report.video_seconds > 17.0,
        "frozen destination got {} s of 18",
        report.video_seconds
    );
    Ok(())
}

/// A wrong or missing key is refused, and the key is not logged.
#[tokio::test]
async fn wrong_key_is_refused() -> Result<()> {
    let srv = Cthulhu::start(&stream_with_pushes(&[])).await?;
    for url in [
        srv.url("not-the-key-42"),
        srv.url("studio"),
        srv.url("studio?key=bad-key-43"),
    ] {
        let mut publisher =
            Ffmpeg::publish_test_pattern(&url, &PublishOptions::seconds(5.0)).await?;
        let status = publisher.wait(Duration::from_secs(15)).await?;
        assert!(!status.success(), "publishing to {url} should fail");
    }
    assert_eq!(srv.count("Publish refused"), 3, "{}", srv.log());
    assert_eq!(srv.count("Published"), 0);
    let log = srv.log();
    assert!(
        !log.contains("not-the-key-42") && !log.contains("bad-key-43"),
        "refused key logged"
    );
    // The right key still works.
    let mut ok = Ffmpeg::publish_test_pattern(
        &srv.url(&format!("studio?key={KEY}")),
        &PublishOptions::seconds(2.0),
    )
    .await?;
    ok.wait_success(Duration::from_secs(20)).await?;
    assert_eq!(srv.count("Published stream=live/studio"), 1);
    Ok(())
}

/// A second publisher on a live path is refused.
#[tokio::test]
async fn second_publisher_is_refused() -> Result<()> {
    let srv = Cthulhu::start(&stream_with_pushes(&[])).await?;
    let mut first =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(8.0)).await?;
    srv.wait_for_log("Published stream=live/studio", Duration::from_secs(10))
        .await?;
    let mut second =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(3.0)).await?;
    assert!(!second.wait(Duration::from_secs(15)).await?.success());
    srv.wait_for_log(
        "Publish refused: already publishing",
        Duration::from_secs(5),
    )
    .await?;
    first.wait_success(Duration::from_secs(30)).await?;
    Ok(())
}

/// Stalls three players on a server with the given `[hub]` queue settings while an
/// 8 Mbit/s file is published, plays 8 s with a healthy player, and returns the
/// server's RSS growth in KiB, the healthy player's report and its wall time.
async fn stall_scenario(
    hub: &str,
    src: &std::path::Path,
) -> Result<(i64, cthulhu_testkit::DecodeReport, Duration)> {
    let srv = Cthulhu::start(&format!("[hub]\n{hub}\n{}", stream_with_pushes(&[]))).await?;
    let mut publisher = Ffmpeg::publish_file(src, &srv.url(KEY)).await?;
    srv.wait_for_log("Published stream=live/studio", Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = srv.rss_kib().unwrap_or(0) as i64;
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(StalledPlayer::connect(&srv.url("studio")).await?);
    }
    let t0 = tokio::time::Instant::now();
    let report = decode_check(&srv.url("studio"), Duration::from_secs(8)).await?;
    let wall = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let rss_after = srv.rss_kib().unwrap_or(0) as i64;
    drop(stalled);
    publisher.kill().await?;
    Ok((rss_after - rss_before, report, wall))
}

/// A player that stops reading does not slow the others, and memory stays bounded by
/// the queue bound. The same scenario without a practical bound shows the growth the
/// bound prevents (payloads are shared between queues, so it is one copy of what the
/// stalled players did not read).
#[tokio::test]
async fn stalled_player_does_not_slow_others() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("8mbit.flv");
    let opts = PublishOptions {
        width: 1280,
        height: 720,
        video_bitrate_kbps: 8000,
        extra_output_args: ["-minrate", "8M", "-maxrate", "8M", "-bufsize", "4M"]
            .map(String::from)
            .to_vec(),
        ..PublishOptions::seconds(24.0)
    };
    Ffmpeg::write_test_file(&src, &opts).await?;
    let bounded = "subscriber_queue_bytes = 1048576";
    let unbounded = "subscriber_queue_bytes = 1073741824\nsubscriber_queue_frames = 1000000";
    let (b, u) = tokio::join!(
        stall_scenario(bounded, &src),
        stall_scenario(unbounded, &src)
    );
    let (grow_bounded, report, wall) = b?;
    let (grow_unbounded, _, _) = u?;
    report.ensure_clean()?;
    assert!(
        report.video_seconds >= 7.5,
        "healthy player got {} s of 8",
        report.video_seconds
    );
    assert!(
        wall < Duration::from_secs(14),
        "healthy player took {wall:?} for 8 s of media"
    );
    // 1 MiB queues (shared payloads) plus allocator slack.
    assert!(
        grow_bounded < 6 * 1024,
        "bounded server grew by {grow_bounded} KiB"
    );
    // About 16 s of 8 Mbit/s held for the stalled players without the bound.
    assert!(
        grow_unbounded > grow_bounded + 4 * 1024,
        "the bound made no difference: {grow_bounded} KiB bounded vs {grow_unbounded} KiB unbounded"
    );
    eprintln!(
        "RSS growth with 3 stalled players: bounded {grow_bounded} KiB, unbounded {grow_unbounded} KiB"
    );
    Ok(())
}

/// The publisher drops and returns within the grace period: the destination stays
/// connected (nginx sees one publish) and the recording spans both sessions.
#[tokio::test]
async fn publisher_return_within_grace_keeps_destination() -> Result<()> {
    let dest = Nginx::start_rtmp(free_port()).await?;
    let srv = Cthulhu::start(&format!(
        "[hub]\npublisher_grace_secs = 10\n{}",
        stream_with_pushes(&[("dest", dest.url("g"))])
    ))
    .await?;
    let mut p1 = Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(5.0)).await?;
    p1.wait_success(Duration::from_secs(20)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut p2 = Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(5.0)).await?;
    srv.wait_for_log(
        "Publisher back within grace: resuming",
        Duration::from_secs(10),
    )
    .await?;
    p2.wait_success(Duration::from_secs(20)).await?;
    srv.wait_for_log("Stream over: unpublishing", Duration::from_secs(20))
        .await?;
    assert_eq!(
        srv.count("Live dest=live/studio:dest"),
        1,
        "destination reconnected:\n{}",
        srv.log()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rec = dest.recording_path("g");
    let report = decode_check(rec.to_str().unwrap_or_default(), Duration::from_secs(30)).await?;
    report.ensure_clean()?;
    let (_, span) = video_gaps(&rec).await?;
    assert!(
        span > 9.0,
        "one continuous recording across both sessions, got {span} s"
    );
    Ok(())
}

/// SIGTERM unpublishes destinations cleanly and exits 0.
#[tokio::test]
async fn sigterm_unpublishes_destinations() -> Result<()> {
    let dest = Nginx::start_rtmp(free_port()).await?;
    let mut srv = Cthulhu::start(&stream_with_pushes(&[("dest", dest.url("t"))])).await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(20.0)).await?;
    srv.wait_for_log("Live dest=live/studio:dest", Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = srv.proc.pid();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    assert!(status.success());
    let exit = srv.proc.wait_timeout(Duration::from_secs(10)).await?;
    assert!(exit.success(), "server exit: {exit:?}\n{}", srv.log());
    dest.wait_for_log("disconnect", Duration::from_secs(5))
        .await?;
    // nginx-rtmp logs deleteStream for our command before the disconnect; a connection
    // that is merely dropped logs disconnect first (and then an implicit deleteStream).
    let log = dest.log_since_start();
    let unpublish = log.find("deleteStream");
    let disconnect = log.find("disconnect");
    assert!(
        matches!((unpublish, disconnect), (Some(u), Some(d)) if u < d),
        "destination was not unpublished before the disconnect:\n{log}"
    );
    let _ = publisher.kill().await;
    Ok(())
}

/// An RTMPS destination behind a TLS terminator (nginx `stream` with `ssl`, in front of
/// nginx-rtmp) whose certificate a private CA signed, as `[[streams.push]]` in the
/// config with `tls_ca_file`.
fn rtmps_push(dest: &Nginx, stream: &str, tls_ca_file: Option<&std::path::Path>) -> String {
    let mut s = format!(
        "[hub]\npublisher_grace_secs = 1\n{}",
        stream_with_pushes(&[("secure", dest.rtmps_url(stream))])
    );
    if let Some(ca) = tls_ca_file {
        s.push_str(&format!("tls_ca_file = \"{}\"\n", ca.display()));
    }
    s
}

/// Cthulhu pushes over RTMPS to a real TLS peer, trusting its private CA through
/// `tls_ca_file`; what nginx-rtmp recorded behind the TLS terminator decodes cleanly.
#[tokio::test]
async fn pushes_over_rtmps_to_a_server_of_a_private_ca() -> Result<()> {
    let ca = TestCa::new("Cthulhu restream test CA")?;
    let cert = ca.issue_localhost()?;
    let dest = Nginx::start_rtmps(free_port(), free_port(), &cert.cert_pem, &cert.key_pem).await?;
    let srv = Cthulhu::start(&rtmps_push(&dest, "secure", Some(&ca.cert_path()))).await?;
    srv.wait_for_log(
        &format!("tls_ca_file={}", ca.cert_path().display()),
        Duration::from_secs(5),
    )
    .await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(6.0)).await?;
    srv.wait_for_log("Live dest=live/studio:secure", Duration::from_secs(15))
        .await?;
    dest.wait_for_publish("secure", Duration::from_secs(5))
        .await?;
    publisher.wait_success(Duration::from_secs(30)).await?;
    srv.wait_for_log("Stream over: unpublishing", Duration::from_secs(20))
        .await?;
    let rec = dest
        .wait_for_recording("secure", Duration::from_secs(10))
        .await?;
    let report = decode_check(rec.to_str().unwrap_or_default(), Duration::from_secs(20)).await?;
    report.ensure_clean()?;
    assert_eq!(report.dimensions, Some((640, 360)));
    assert!(
        report.video_seconds > 5.0,
        "only {} s of video arrived over RTMPS",
        report.video_seconds
    );
    let log = srv.log();
    assert_eq!(srv.count("Push failed"), 0, "{log}");
    assert!(
        log.contains(&format!(
            "url=rtmps://localhost:{}/live/***",
            dest.tls_port().unwrap_or_default()
        )),
        "{log}"
    );
    assert!(!log.contains("/live/secure"), "destination key leaked");
    Ok(())
}

/// Without `tls_ca_file` the same server is refused on its certificate: the push
/// retries with an error naming the unknown issuer and never goes live.
#[tokio::test]
async fn rtmps_push_without_the_private_ca_fails_on_the_certificate() -> Result<()> {
    let ca = TestCa::new("Cthulhu restream test CA")?;
    let cert = ca.issue_localhost()?;
    let dest = Nginx::start_rtmps(free_port(), free_port(), &cert.cert_pem, &cert.key_pem).await?;
    let srv = Cthulhu::start(&rtmps_push(&dest, "insecure", None)).await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(6.0)).await?;
    srv.wait_for_log(
        "Push failed, retrying dest=live/studio:secure",
        Duration::from_secs(15),
    )
    .await?;
    srv.wait_for_log("attempt=2", Duration::from_secs(10))
        .await?;
    publisher.wait_success(Duration::from_secs(30)).await?;
    let log = srv.log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Push failed, retrying"))
        .collect();
    assert!(failures.len() >= 2, "{log}");
    for line in &failures {
        assert!(
            line.contains("invalid peer certificate: UnknownIssuer")
                && line.contains("set tls_ca_file"),
            "{line}"
        );
    }
    assert_eq!(srv.count("Live dest=live/studio:secure"), 0, "{log}");
    assert!(
        !dest.log_since_start().contains("publish: name='insecure'"),
        "nginx got a publish:\n{}",
        dest.log_tail()
    );
    assert!(!dest.recording_path("insecure").exists());
    Ok(())
}

/// `on_second_publisher = "replace"`: a backup encoder takes over the live stream, the
/// first one is disconnected, and the destination stays connected throughout.
#[tokio::test]
async fn second_publisher_replaces_when_configured() -> Result<()> {
    let dest = Nginx::start_rtmp(free_port()).await?;
    let srv = Cthulhu::start(&format!(
        "[hub]\non_second_publisher = \"replace\"\n{}",
        stream_with_pushes(&[("dest", dest.url("r"))])
    ))
    .await?;
    let mut first =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(30.0)).await?;
    srv.wait_for_log("Live dest=live/studio:dest", Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut backup =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(5.0)).await?;
    let status = first.wait(Duration::from_secs(10)).await?;
    assert!(!status.success(), "the replaced publisher is disconnected");
    srv.wait_for_log("publisher replaced", Duration::from_secs(5))
        .await?;
    backup.wait_success(Duration::from_secs(20)).await?;
    srv.wait_for_log("Stream over: unpublishing", Duration::from_secs(20))
        .await?;
    assert_eq!(srv.count("Published stream=live/studio"), 2);
    assert_eq!(
        srv.count("Live dest=live/studio:dest"),
        1,
        "destination reconnected:\n{}",
        srv.log()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rec = dest.recording_path("r");
    let report = decode_check(rec.to_str().unwrap_or_default(), Duration::from_secs(30)).await?;
    report.ensure_clean()?;
    let (gap, span) = video_gaps(&rec).await?;
    assert!(
        span > 7.0,
        "one recording across both encoders, got {span} s"
    );
    assert!(gap < 1.5, "takeover left {gap} s without video");
    Ok(())
}
