//! Self-test of the harness against real peers: nginx-rtmp, ffmpeg, ffprobe.
//! These tests fail (they do not skip) when a peer is missing.

use std::time::Duration;

use anyhow::{Result, ensure};
use cthulhu_testkit::{
    Ffmpeg, Nginx, ProbedStream, PublishOptions, StalledPlayer, TestCa, decode_check, free_port,
    pid_is_listening, probe_streams, rss_kib,
};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Checks for one h264 640x360 video and one aac 48 kHz audio stream.
fn ensure_pattern_streams(streams: &[ProbedStream]) -> Result<()> {
    let video: Vec<_> = streams.iter().filter(|s| s.codec_type == "video").collect();
    let audio: Vec<_> = streams.iter().filter(|s| s.codec_type == "audio").collect();
    ensure!(video.len() == 1 && audio.len() == 1, "streams: {streams:?}");
    ensure!(video[0].codec_name == "h264", "video: {:?}", video[0]);
    ensure!(
        (video[0].width, video[0].height) == (Some(640), Some(360)),
        "video: {:?}",
        video[0]
    );
    ensure!(audio[0].codec_name == "aac", "audio: {:?}", audio[0]);
    ensure!(
        audio[0].sample_rate == Some(48_000),
        "audio: {:?}",
        audio[0]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_records_a_published_test_pattern() -> Result<()> {
    let nginx = Nginx::start_rtmp(free_port()).await?;
    let mut ffmpeg =
        Ffmpeg::publish_test_pattern(&nginx.url("pattern"), &PublishOptions::seconds(4.0)).await?;
    ffmpeg.wait_success(SECS(30)).await?;

    let recording = nginx.wait_for_recording("pattern", SECS(10)).await?;
    let path = recording.to_string_lossy();
    ensure_pattern_streams(&probe_streams(&path, &[]).await?)?;

    let report = decode_check(&path, SECS(10)).await?;
    report.ensure_clean()?;
    ensure!(report.dimensions == Some((640, 360)), "{report:#?}");
    ensure!(report.sample_rate == Some(48_000), "{report:#?}");
    // 4 s at 30 fps; allow for a frame or two lost at the edges.
    ensure!(
        (115..=121).contains(&report.video_frames),
        "video frames: {report:#?}"
    );
    ensure!(report.video_seconds > 3.8, "{report:#?}");
    ensure!(report.audio_seconds > 3.8, "{report:#?}");
    nginx.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_plays_live_while_publishing() -> Result<()> {
    let nginx = Nginx::start_rtmp(free_port()).await?;
    let url = nginx.url("livecheck");
    let mut ffmpeg = Ffmpeg::publish_test_pattern(&url, &PublishOptions::seconds(30.0)).await?;
    nginx.wait_for_publish("livecheck", SECS(10)).await?;

    ensure_pattern_streams(&probe_streams(&url, &[]).await?)?;

    // wait_key on: the player starts at a keyframe, so everything decodes.
    let report = decode_check(&url, SECS(3)).await?;
    report.ensure_clean()?;
    ensure!(report.video_frames >= 60, "{report:#?}");

    let mut stalled = StalledPlayer::connect(&url).await?;
    ensure!(
        stalled
            .status_codes()
            .iter()
            .any(|c| c == "NetStream.Play.Start"),
        "status codes: {:?}",
        stalled.status_codes()
    );
    ensure!(stalled.stream_id() > 0);
    // Media keeps coming when the player reads again.
    let drained = stalled.drain(SECS(2)).await?;
    ensure!(!drained.closed && drained.bytes > 10_000, "{drained:?}");

    ensure!(ffmpeg.is_running(), "publisher died: {}", ffmpeg.log_tail());
    ffmpeg.kill().await?;
    nginx.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_killed_mid_stream_comes_back_on_the_same_port() -> Result<()> {
    let mut nginx = Nginx::start_rtmp(free_port()).await?;
    let port = nginx.port();
    let pid = nginx
        .pid()
        .ok_or_else(|| anyhow::anyhow!("nginx not running"))?;
    ensure!(rss_kib(pid).is_some_and(|kib| kib > 0), "no RSS for nginx");

    let opts = PublishOptions::default(); // runs until killed
    let mut ffmpeg = Ffmpeg::publish_test_pattern(&nginx.url("again"), &opts).await?;
    nginx.wait_for_publish("again", SECS(10)).await?;

    nginx.kill().await?;
    ensure!(!nginx.is_running() && rss_kib(pid).is_none());
    // The publisher notices the dead connection and gives up.
    let status = ffmpeg.wait(SECS(15)).await?;
    ensure!(!status.success(), "ffmpeg should fail when nginx dies");

    nginx.restart().await?;
    ensure!(nginx.port() == port);
    let mut ffmpeg =
        Ffmpeg::publish_test_pattern(&nginx.url("again"), &PublishOptions::seconds(2.0)).await?;
    nginx.wait_for_publish("again", SECS(10)).await?;
    ffmpeg.wait_success(SECS(30)).await?;
    let recording = nginx.wait_for_recording("again", SECS(10)).await?;
    ensure_pattern_streams(&probe_streams(&recording.to_string_lossy(), &[]).await?)?;
    nginx.stop().await
}

#[tokio::test]
async fn nginx_start_fails_clearly_when_the_port_is_taken() -> Result<()> {
    let busy = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let port = busy.local_addr()?.port();
    let err = match Nginx::start_rtmp(port).await {
        Ok(_) => anyhow::bail!("nginx started on a port that is in use"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(err.contains("Address already in use"), "{err}");
    ensure!(pid_is_listening(std::process::id(), port));
    Ok(())
}

/// The TLS terminator in front of nginx-rtmp: ffmpeg publishes over RTMPS and checks
/// the server certificate against the throwaway CA (a second TLS implementation,
/// not Cthulhu's, vouches for the certificates), and nginx records the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_terminates_tls_with_a_test_ca_certificate() -> Result<()> {
    let ca = TestCa::new("Cthulhu testkit CA")?;
    ensure!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    ensure!(std::fs::read_to_string(ca.cert_path())? == ca.cert_pem());
    let cert = ca.issue_localhost()?;
    ensure!(cert.key_pem.contains("PRIVATE KEY"));
    let nginx = Nginx::start_rtmps(free_port(), free_port(), &cert.cert_pem, &cert.key_pem).await?;
    let tls_port = nginx.tls_port().unwrap_or_default();
    ensure!(nginx.rtmps_url("tls") == format!("rtmps://localhost:{tls_port}/live/tls"));

    let verified = |secs| PublishOptions {
        extra_output_args: [
            "-tls_verify".into(),
            "1".into(),
            "-ca_file".into(),
            ca.cert_path().display().to_string(),
        ]
        .to_vec(),
        ..PublishOptions::seconds(secs)
    };
    let mut ffmpeg = Ffmpeg::publish_test_pattern(&nginx.rtmps_url("tls"), &verified(3.0)).await?;
    ffmpeg.wait_success(SECS(30)).await?;
    let recording = nginx.wait_for_recording("tls", SECS(10)).await?;
    let report = decode_check(&recording.to_string_lossy(), SECS(10)).await?;
    report.ensure_clean()?;
    ensure!(report.video_seconds > 2.8, "{report:#?}");

    // Verification is real: another CA's certificate is refused.
    let other = TestCa::new("Some other CA")?;
    let opts = PublishOptions {
        extra_output_args: [
            "-tls_verify".into(),
            "1".into(),
            "-ca_file".into(),
            other.cert_path().display().to_string(),
        ]
        .to_vec(),
        ..PublishOptions::seconds(2.0)
    };
    let mut refused = Ffmpeg::publish_test_pattern(&nginx.rtmps_url("nope"), &opts).await?;
    ensure!(
        !refused.wait(SECS(15)).await?.success(),
        "ffmpeg accepted a certificate of an untrusted CA"
    );
    ensure!(!nginx.recording_path("nope").exists());
    nginx.stop().await
}
