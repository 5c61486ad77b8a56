//! SRT end to end against real peers on 127.0.0.1: ffmpeg (libsrt) publishes and plays,
//! `srt-live-transmit` publishes and listens, nginx-rtmp receives a push, ffprobe and
//! ffmpeg decode what arrived.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::{Cthulhu, free_udp_port};
use cthulhu_testkit::{
    ChildGuard, Ffmpeg, Nginx, PublishOptions, decode_check, free_port, probe_streams, require_tool,
};
use tokio::process::Command;

const KEY: &str = "studio-secret-1";
const PASS: &str = "correct-horse-battery";

fn stream(extra: &str, pushes: &[(&str, String)]) -> String {
    let mut s = format!("[[streams]]\npath = \"live/studio\"\nkey = \"{KEY}\"\n{extra}");
    for (name, url) in pushes {
        s.push_str(&format!(
            "[[streams.push]]\nname = \"{name}\"\nurl = \"{url}\"\n"
        ));
    }
    s
}

/// SRT latency for the tests: generous, so a loaded CI machine does not make live-mode
/// SRT drop late packets (which would show up as decode errors).
const SRT_EXTRA: &str = "latency_ms = 500";

/// ffmpeg's SRT URL: the stream id as is (ffmpeg 5.1 does not percent-decode it);
/// latency 500 ms (ffmpeg counts it in microseconds).
fn ffmpeg_srt(port: u16, stream_id: &str, extra: &str) -> String {
    format!("srt://127.0.0.1:{port}?streamid={stream_id}&latency=500000{extra}")
}

fn ts_options(secs: f64) -> PublishOptions {
    PublishOptions {
        format: "mpegts".into(),
        ..PublishOptions::seconds(secs)
    }
}

/// `srt-live-transmit SOURCE TARGET`, killed on drop. A target that is a file path
/// goes through stdout (`file://con`): the tool writes files only that way.
fn srt_live_transmit(dir: &Path, name: &str, source: &str, target: &str) -> Result<ChildGuard> {
    let log = dir.join(format!("{name}.log"));
    let script = match target.strip_prefix("file://") {
        Some(path) => format!(
            "exec srt-live-transmit -a:no -q '{source}' file://con > '{path}' 2> '{}'",
            log.display()
        ),
        None => format!(
            "exec srt-live-transmit -a:no -q '{source}' '{target}' 2> '{}'",
            log.display()
        ),
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).stdin(Stdio::null());
    ChildGuard::spawn(name, cmd)
}

async fn wait_for_file(path: &Path, min_bytes: u64, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len >= min_bytes {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{} has {len} bytes after {timeout:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// ffmpeg publishes H.264/AAC in MPEG-TS over SRT; ffmpeg plays it back over RTMP and
/// over SRT; the server pushes it to nginx-rtmp, whose recording decodes.
#[tokio::test]
async fn srt_publish_plays_over_rtmp_and_srt_and_pushes_to_nginx() -> Result<()> {
    let nginx = Nginx::start_rtmp(free_port()).await?;
    let srv =
        Cthulhu::start_with_srt(&stream("", &[("nginx", nginx.url("fromsrt"))]), SRT_EXTRA).await?;
    let url = ffmpeg_srt(
        srv.srt_port,
        &format!("#!::r=live/studio,m=publish,s={KEY}"),
        "",
    );
    let mut publisher = Ffmpeg::publish_test_pattern(&url, &ts_options(10.0)).await?;
    srv.wait_for_log("SRT publisher connected", Duration::from_secs(10))
        .await?;

    let rtmp = srv.url("studio");
    let kinds: Vec<(String, String)> = probe_streams(&rtmp, &[])
        .await?
        .into_iter()
        .map(|s| (s.codec_type, s.codec_name))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("video".to_owned(), "h264".to_owned()),
            ("audio".to_owned(), "aac".to_owned())
        ]
    );
    let play = decode_check(&rtmp, Duration::from_secs(3)).await?;
    play.ensure_clean()?;
    assert_eq!(play.dimensions, Some((640, 360)));
    assert!(
        play.video_frames >= 60,
        "RTMP player decoded {}",
        play.video_frames
    );

    let srt_play = ffmpeg_srt(srv.srt_port, "#!::r=live/studio,m=request", "");
    // While it plays, /metrics counts it as the stream's one SRT player.
    let counted = async {
        let series = r#"cthulhu_stream_players{stream="live/studio",protocol="srt"} 1"#;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            if srv.metrics().await.is_ok_and(|m| m.contains(series)) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (play, counted) = tokio::join!(decode_check(&srt_play, Duration::from_secs(3)), counted);
    let play = play?;
    assert!(counted, "the SRT player was never counted in /metrics");
    play.ensure_clean()?;
    assert_eq!(play.dimensions, Some((640, 360)));
    assert_eq!(play.sample_rate, Some(48_000));
    assert!(
        play.video_frames >= 60,
        "SRT player decoded {}",
        play.video_frames
    );

    publisher.wait_success(Duration::from_secs(30)).await?;
    let rec = nginx
        .wait_for_recording("fromsrt", Duration::from_secs(20))
        .await?;
    srv.wait_for_log("Stream over: unpublishing", Duration::from_secs(30))
        .await?;
    let report = decode_check(rec.to_str().unwrap_or_default(), Duration::from_secs(20)).await?;
    report.ensure_clean()?;
    assert_eq!(report.dimensions, Some((640, 360)));
    assert!(
        report.video_seconds > 8.0,
        "nginx got {} s",
        report.video_seconds
    );
    assert!(!srv.log().contains(KEY), "the key was logged");
    Ok(())
}

/// ffmpeg publishes RTMP; the server pushes SRT to a `srt-live-transmit` listener and
/// to an ffmpeg SRT listener; both outputs decode.
#[tokio::test]
async fn rtmp_publish_pushes_srt_to_srt_live_transmit_and_ffmpeg() -> Result<()> {
    require_tool("srt-live-transmit")?;
    let work = tempfile::tempdir()?;
    let (slt_port, ff_port) = (free_udp_port(), free_udp_port());
    let slt_out = work.path().join("slt.ts");
    let mut slt = srt_live_transmit(
        work.path(),
        "slt",
        &format!("srt://127.0.0.1:{slt_port}?mode=listener&latency=500"),
        &format!("file://{}", slt_out.display()),
    )?;
    let ff_out = work.path().join("ff.ts");
    let mut ff_listener = Ffmpeg::spawn([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-i",
        &format!("srt://127.0.0.1:{ff_port}?mode=listener&latency=500000"),
        "-c",
        "copy",
        "-t",
        "8",
        "-f",
        "mpegts",
        ff_out.to_str().unwrap_or_default(),
    ])
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let srv = Cthulhu::start_with_srt(
        &stream(
            "",
            &[
                ("slt", format!("srt://127.0.0.1:{slt_port}")),
                ("ff", format!("srt://127.0.0.1:{ff_port}?latency=500")),
            ],
        ),
        SRT_EXTRA,
    )
    .await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(10.0)).await?;
    srv.wait_for_log("SRT destination connected", Duration::from_secs(15))
        .await?;
    publisher.wait_success(Duration::from_secs(30)).await?;
    ff_listener.wait(Duration::from_secs(30)).await?;
    srv.wait_for_log("Stream over: unpublishing", Duration::from_secs(30))
        .await?;
    // The push closed its connection at the end of the stream: srt-live-transmit
    // (no auto-reconnect) exits and flushes its stdout; only then is the file whole.
    let _ = slt.wait_timeout(Duration::from_secs(15)).await;
    wait_for_file(&slt_out, 100_000, Duration::from_secs(10)).await?;
    for out in [&slt_out, &ff_out] {
        let report = decode_check(out.to_str().unwrap_or_default(), Duration::from_secs(20))
            .await
            .with_context(|| format!("decoding {}", out.display()))?;
        report.ensure_clean()?;
        assert_eq!(report.dimensions, Some((640, 360)), "{}", out.display());
        assert_eq!(report.sample_rate, Some(48_000), "{}", out.display());
        assert!(
            report.video_seconds > 6.0,
            "{}: {} s",
            out.display(),
            report.video_seconds
        );
    }
    Ok(())
}

/// An encrypted stream: ffmpeg publishes with AES-128, a player with AES-256 plays
/// it, the server pushes with AES-256 to an encrypted `srt-live-transmit` listener;
/// a wrong passphrase and a missing one are refused.
#[tokio::test]
async fn encrypted_publish_play_and_push() -> Result<()> {
    require_tool("srt-live-transmit")?;
    let work = tempfile::tempdir()?;
    let slt_port = free_udp_port();
    let slt_out = work.path().join("slt.ts");
    let dest_pass = "destination-pass-256";
    let mut slt = srt_live_transmit(
        work.path(),
        "slt",
        &format!(
            "srt://127.0.0.1:{slt_port}?mode=listener&latency=500&passphrase={dest_pass}&pbkeylen=32"
        ),
        &format!("file://{}", slt_out.display()),
    )?;
    let srv = Cthulhu::start_with_srt(
        &stream(
            &format!("passphrase = \"{PASS}\"\n"),
            &[(
                "slt",
                format!("srt://127.0.0.1:{slt_port}?passphrase={dest_pass}&pbkeylen=32"),
            )],
        ),
        SRT_EXTRA,
    )
    .await?;
    let id = format!("#!::r=live/studio,m=publish,s={KEY}");
    let url = ffmpeg_srt(
        srv.srt_port,
        &id,
        &format!("&passphrase={PASS}&pbkeylen=16"),
    );

    let mut publisher = Ffmpeg::publish_test_pattern(&url, &ts_options(10.0)).await?;
    srv.wait_for_log("SRT publisher connected", Duration::from_secs(10))
        .await?;

    let play = ffmpeg_srt(
        srv.srt_port,
        "#!::r=live/studio,m=request",
        &format!("&passphrase={PASS}&pbkeylen=32"),
    );
    let report = decode_check(&play, Duration::from_secs(3)).await?;
    report.ensure_clean()?;
    assert_eq!(report.dimensions, Some((640, 360)));

    for (what, extra) in [
        (
            "wrong passphrase",
            "&passphrase=not-the-right-one&pbkeylen=16".to_owned(),
        ),
        ("no passphrase", String::new()),
    ] {
        let url = ffmpeg_srt(srv.srt_port, "#!::r=live/studio,m=request", &extra);
        let mut bad = Ffmpeg::spawn([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            &url,
            "-t",
            "1",
            "-f",
            "null",
            "-",
        ])
        .await?;
        let status = bad.wait(Duration::from_secs(20)).await?;
        assert!(
            !status.success(),
            "{what}: ffmpeg played an encrypted stream"
        );
    }

    publisher.wait_success(Duration::from_secs(30)).await?;
    srv.wait_for_log("Stream over: unpublishing", Duration::from_secs(30))
        .await?;
    // The push closed its connection at the end of the stream: srt-live-transmit
    // (no auto-reconnect) exits and flushes its stdout; only then is the file whole.
    let _ = slt.wait_timeout(Duration::from_secs(15)).await;
    wait_for_file(&slt_out, 100_000, Duration::from_secs(10)).await?;
    let report = decode_check(
        slt_out.to_str().unwrap_or_default(),
        Duration::from_secs(20),
    )
    .await?;
    report.ensure_clean()?;
    assert!(report.video_seconds > 6.0, "{} s", report.video_seconds);
    let log = srv.log();
    assert!(log.contains("SRT connection refused"), "{log}");
    assert!(!log.contains(PASS) && !log.contains(dest_pass) && !log.contains(KEY));
    Ok(())
}

/// `srt-live-transmit` as a caller publishes a TS file (paced by ffmpeg `-re`) into
/// the listener; an RTMP player decodes it.
#[tokio::test]
async fn srt_live_transmit_publishes_a_ts_file() -> Result<()> {
    require_tool("srt-live-transmit")?;
    let work = tempfile::tempdir()?;
    let file = work.path().join("in.ts");
    Ffmpeg::write_test_file(
        &file,
        &PublishOptions {
            realtime: false,
            ..ts_options(10.0)
        },
    )
    .await?;
    let srv = Cthulhu::start_with_srt(&stream("", &[]), SRT_EXTRA).await?;
    let udp = free_udp_port();
    let _slt = srt_live_transmit(
        work.path(),
        "slt",
        &format!("udp://127.0.0.1:{udp}"),
        &format!(
            "srt://127.0.0.1:{}?streamid=#!::r=live/studio,m=publish,s={KEY}",
            srv.srt_port
        ),
    )?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut feeder = Ffmpeg::spawn([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-re",
        "-i",
        file.to_str().unwrap_or_default(),
        "-c",
        "copy",
        "-f",
        "mpegts",
        &format!("udp://127.0.0.1:{udp}?pkt_size=1316"),
    ])
    .await?;
    srv.wait_for_log("SRT publisher connected", Duration::from_secs(10))
        .await?;
    let report = decode_check(&srv.url("studio"), Duration::from_secs(3)).await?;
    report.ensure_clean()?;
    assert_eq!(report.dimensions, Some((640, 360)));
    assert!(report.video_frames >= 60, "{}", report.video_frames);
    feeder.wait_success(Duration::from_secs(30)).await?;
    Ok(())
}

/// The libsrt callers that panicked srt-tokio 0.4.4's listener (a passphrase to an
/// unencrypted stream, `transtype=file`, a key length other than the listener's) and
/// an FEC caller call the server while ffmpeg publishes over SRT and an RTMP player
/// records: the first three kinds are refused with a reason, the 32-byte-key caller is
/// served (the key length follows the caller), and the live stream never notices.
#[tokio::test]
async fn hostile_callers_leave_a_live_srt_stream_alone() -> Result<()> {
    require_tool("srt-live-transmit")?;
    let work = tempfile::tempdir()?;
    let streams = format!(
        "{}[[streams]]\npath = \"live/secure\"\nkey = \"secure-key-2\"\npassphrase = \"{PASS}\"\n",
        stream("", &[])
    );
    let srv = Cthulhu::start_with_srt(&streams, SRT_EXTRA).await?;
    let url = ffmpeg_srt(
        srv.srt_port,
        &format!("#!::r=live/studio,m=publish,s={KEY}"),
        "",
    );
    let mut publisher = Ffmpeg::publish_test_pattern(&url, &ts_options(14.0)).await?;
    srv.wait_for_log("SRT publisher connected", Duration::from_secs(10))
        .await?;
    let recording = work.path().join("rtmp.flv");
    let mut recorder = Ffmpeg::spawn([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-i",
        &srv.url("studio"),
        "-c",
        "copy",
        // Players stay on when the publisher leaves: stop after 12 of its 14 s.
        "-t",
        "12",
        "-f",
        "flv",
        recording.to_str().unwrap_or_default(),
    ])
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let srt = |id: &str, extra: &str| {
        format!(
            "srt://127.0.0.1:{}?streamid={id}&latency=500{extra}",
            srv.srt_port
        )
    };
    let refused = [
        (
            "passphrase to an unencrypted stream",
            srt(
                "#!::r=live/studio,m=request",
                &format!("&passphrase={PASS}"),
            ),
        ),
        (
            "transtype=file",
            srt("#!::r=live/studio,m=request", "&transtype=file"),
        ),
        (
            "packetfilter=fec",
            srt("#!::r=live/studio,m=request", "&packetfilter=fec"),
        ),
    ];
    for (i, (what, url)) in refused.iter().enumerate() {
        let name = format!("hostile{i}");
        let mut slt = srt_live_transmit(work.path(), &name, url, "file:///dev/null")?;
        let status = slt.wait_timeout(Duration::from_secs(20)).await;
        let log =
            std::fs::read_to_string(work.path().join(format!("{name}.log"))).unwrap_or_default();
        eprintln!("--- {what}: {status:?}\n{log}");
        assert!(
            !log.contains("SRT source connected"),
            "{what}: connected\n{log}"
        );
        assert!(
            log.to_ascii_lowercase().contains("reject"),
            "{what}: not rejected\n{log}"
        );
    }

    // AES-256 asked by the caller of a stream whose listener has no fixed key length.
    let before = srv.log().matches("SRT player connected").count();
    let out = work.path().join("aes256.ts");
    let _slt = srt_live_transmit(
        work.path(),
        "aes256",
        &srt(
            "#!::r=live/secure,m=request",
            &format!("&passphrase={PASS}&pbkeylen=32"),
        ),
        &format!("file://{}", out.display()),
    )?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while srv.log().matches("SRT player connected").count() == before {
        if tokio::time::Instant::now() > deadline {
            bail!("the AES-256 caller was not served:\n{}", srv.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    publisher.wait_success(Duration::from_secs(40)).await?;
    recorder.wait(Duration::from_secs(30)).await?;
    let log = srv.log();
    assert_eq!(
        log.matches("SRT publisher connected").count(),
        1,
        "the publisher reconnected:\n{log}"
    );
    assert!(!log.contains("SRT listener ended"), "{log}");
    let report = decode_check(
        recording.to_str().unwrap_or_default(),
        Duration::from_secs(20),
    )
    .await?;
    report.ensure_clean()?;
    assert!(
        report.video_seconds > 11.5,
        "the RTMP recording has {} s",
        report.video_seconds
    );
    assert!(!log.contains(PASS) && !log.contains(KEY));
    Ok(())
}
