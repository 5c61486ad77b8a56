//! Recording end to end against real peers on 127.0.0.1: ffmpeg publishes over RTMP,
//! the server records to an S3-compatible server (moto) or the local disk, and
//! ffprobe/ffmpeg decode what was stored.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::Cthulhu;
use cthulhu_sinks::{Storage, StorageConfig};
use cthulhu_testkit::{
    Ffmpeg, Moto, PublishOptions, decode_check, ffprobe_json, free_port, probe_streams,
};

const KEY: &str = "record-key-1";
const BUCKET: &str = "archive";
/// Multipart part size for the S3 tests: small, so a 30 s recording takes many parts.
const PART_KIB: usize = 128;

fn stream(records: &str) -> String {
    format!("[[streams]]\npath = \"live/studio\"\nkey = \"{KEY}\"\n{records}")
}

fn s3_storage(moto: &Moto, extra: &str) -> String {
    format!(
        "[storage.archive]\nurl = \"s3://{BUCKET}/rec\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
         access_key_id = \"test-id\"\nsecret_access_key = \"test-secret\"\npart_size_kib = {PART_KIB}\n{extra}\n",
        moto.endpoint()
    )
}

/// The bucket as the tests read it back, through the S3 API.
fn bucket(moto: &Moto) -> Result<Arc<Storage>> {
    Ok(Storage::from_config(&StorageConfig {
        url: format!("s3://{BUCKET}"),
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some(cthulhu_core::Secret::new("test-id")),
        secret_access_key: Some(cthulhu_core::Secret::new("test-secret")),
        ..StorageConfig::default()
    })?)
}

/// Downloads every object under `prefix` into `dir`; returns (name, size, local path).
async fn download(
    storage: &Storage,
    prefix: &str,
    dir: &Path,
) -> Result<Vec<(String, u64, PathBuf)>> {
    let mut out = Vec::new();
    for (name, size) in storage.list().await? {
        if !name.starts_with(prefix) {
            continue;
        }
        let data = storage.read(&name).await?;
        let local = dir.join(name.replace('/', "_"));
        std::fs::write(&local, &data)?;
        out.push((name, size, local));
    }
    out.sort();
    Ok(out)
}

/// Whether the first video frame of `file` is a keyframe.
async fn starts_on_keyframe(file: &Path) -> Result<bool> {
    let v = ffprobe_json(
        file.to_str().unwrap_or_default(),
        &[
            "-select_streams",
            "v:0",
            "-show_frames",
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=key_frame,pict_type",
        ],
    )
    .await?;
    let frame = v["frames"]
        .get(0)
        .with_context(|| format!("no video frame in {}", file.display()))?;
    Ok(frame["key_frame"].as_i64() == Some(1))
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// ffmpeg publishes 30 s over RTMP; the server records fMP4 straight to S3 with
/// 128 KiB multipart parts. The S3 server is frozen (SIGSTOP) for 5 s mid-recording:
/// the parts wait and go through after SIGCONT. The one object decodes cleanly and
/// covers the whole 30 s.
#[tokio::test]
async fn records_fmp4_to_s3_through_a_stalled_server() -> Result<()> {
    let moto = Moto::start(free_port(), PART_KIB * 1024).await?;
    moto.create_bucket(BUCKET).await?;
    let body = format!(
        "{}{}",
        s3_storage(&moto, ""),
        stream(
            "[[streams.record]]\nstorage = \"archive\"\nformat = \"fmp4\"\nname = \"{path}/{date}-{time}-{seq}.mp4\"\n"
        )
    );
    let srv = Cthulhu::start(&body).await?;
    srv.wait_for_log("Recording configured", Duration::from_secs(5))
        .await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(30.0)).await?;
    srv.wait_for_log("Recording segment started", Duration::from_secs(15))
        .await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    moto.pause()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    moto.resume()?;
    publisher.wait_success(Duration::from_secs(60)).await?;
    srv.wait_for_log("Recording segment finished", Duration::from_secs(60))
        .await?;

    let work = tempfile::tempdir()?;
    let objects = download(&*bucket(&moto)?, "rec/live/studio/", work.path()).await?;
    let [(name, size, file)] = objects.as_slice() else {
        bail!("expected one object, got {objects:?}\n{}", srv.log());
    };
    eprintln!("{name}: {size} bytes");
    // All parts but the last have exactly the part size.
    assert!(
        *size > 4 * (PART_KIB as u64) * 1024,
        "{size} bytes: fewer than 5 parts"
    );
    let kinds: Vec<(String, String)> = probe_streams(file.to_str().unwrap_or_default(), &[])
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
    let report = decode_check(file.to_str().unwrap_or_default(), Duration::from_secs(30)).await?;
    report.ensure_clean()?;
    assert_eq!(report.dimensions, Some((640, 360)));
    assert_eq!(report.sample_rate, Some(48_000));
    assert!(
        (report.video_seconds - 30.0).abs() <= 0.5,
        "the recording has {} s of video",
        report.video_seconds
    );
    // No frame was lost to the stall: 30 s at 30 fps.
    assert!(
        report.video_frames >= 895,
        "{} video frames of 900",
        report.video_frames
    );
    assert!(starts_on_keyframe(file).await?);
    let log = srv.log();
    assert!(!log.contains("Recording gap"), "{log}");
    assert!(!log.contains("test-secret") && !log.contains(KEY), "{log}");
    Ok(())
}

/// An S3 outage longer than the recorder's buffer (1 MiB at about 2.6 Mbit/s) is
/// reported as a gap event; recording goes on after it and the object decodes.
#[tokio::test]
async fn an_outage_past_the_buffer_is_reported_as_a_gap() -> Result<()> {
    let moto = Moto::start(free_port(), PART_KIB * 1024).await?;
    moto.create_bucket(BUCKET).await?;
    let body = format!(
        "{}{}",
        s3_storage(&moto, "max_buffered_mib = 1\nmax_inflight_parts = 1"),
        stream(
            "[[streams.record]]\nstorage = \"archive\"\nformat = \"ts\"\nname = \"{path}/{seq}.ts\"\n"
        )
    );
    let srv = Cthulhu::start(&body).await?;
    let opts = PublishOptions {
        video_bitrate_kbps: 2500,
        ..PublishOptions::seconds(24.0)
    };
    let mut publisher = Ffmpeg::publish_test_pattern(&srv.url(KEY), &opts).await?;
    srv.wait_for_log("Recording segment started", Duration::from_secs(15))
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    moto.pause()?;
    // 8 s at about 330 kB/s is well past the 1 MiB buffer. The gap event carries
    // the time left out, so it comes when recording resumes.
    tokio::time::sleep(Duration::from_secs(8)).await;
    moto.resume()?;
    srv.wait_for_log("Recording gap", Duration::from_secs(20))
        .await?;
    publisher.wait_success(Duration::from_secs(60)).await?;
    srv.wait_for_log("Recording segment finished", Duration::from_secs(60))
        .await?;
    let work = tempfile::tempdir()?;
    let objects = download(&*bucket(&moto)?, "rec/live/studio/", work.path()).await?;
    assert!(!objects.is_empty(), "{}", srv.log());
    let mut frames = 0;
    for (name, size, file) in &objects {
        let report =
            decode_check(file.to_str().unwrap_or_default(), Duration::from_secs(30)).await?;
        eprintln!(
            "{name}: {size} bytes, {} video frames over {} s",
            report.video_frames, report.video_seconds
        );
        report.ensure_clean()?;
        frames += report.video_frames;
    }
    // 24 s at 30 fps is 720 frames. Media before and after the outage is there;
    // at least 3 s of the 8 s outage is not (the buffer held the rest).
    assert!(
        (240..=720 - 90).contains(&frames),
        "{frames} video frames recorded of 720"
    );
    Ok(())
}

/// The server is SIGKILLed mid-recording to the local disk: the fMP4 file decodes
/// up to its last complete fragment.
#[tokio::test]
async fn a_killed_server_leaves_a_playable_local_recording() -> Result<()> {
    let mut srv = Cthulhu::start(&stream(
        "[[streams.record]]\nformat = \"fmp4\"\nname = \"{path}/{seq}.mp4\"\n",
    ))
    .await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(30.0)).await?;
    srv.wait_for_log("Recording segment started", Duration::from_secs(15))
        .await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    srv.proc.kill().await?;
    let _ = publisher.wait(Duration::from_secs(10)).await;
    let files = files_under(&srv.dir.path().join("data").join("recordings"));
    let [file] = files.as_slice() else {
        bail!("expected one recording, found {files:?}");
    };
    let report = decode_check(file.to_str().unwrap_or_default(), Duration::from_secs(30)).await?;
    eprintln!(
        "{}: {} bytes, {} s",
        file.display(),
        std::fs::metadata(file)?.len(),
        report.video_seconds
    );
    report.ensure_clean()?;
    assert_eq!(report.dimensions, Some((640, 360)));
    // Fragments end at keyframes (1 s apart): at most about a second is lost.
    assert!(
        report.video_seconds >= 6.0,
        "{} s survived 8 s of recording",
        report.video_seconds
    );
    Ok(())
}

/// `segment_seconds = 5` over a 14 s stream with a keyframe every second: three TS
/// segments, each starting on a keyframe, together covering the stream.
#[tokio::test]
async fn segments_rotate_on_keyframes() -> Result<()> {
    let srv = Cthulhu::start(&stream(
        "[[streams.record]]\nformat = \"ts\"\nsegment_seconds = 5\nname = \"{name}/{seq}.ts\"\n",
    ))
    .await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(14.0)).await?;
    publisher.wait_success(Duration::from_secs(40)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while srv.count("Recording segment finished") < 3 {
        if tokio::time::Instant::now() > deadline {
            bail!("three segments were not finished:\n{}", srv.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let files = files_under(&srv.dir.path().join("data").join("recordings"));
    assert_eq!(files.len(), 3, "{files:?}");
    let mut total = 0.0;
    for file in &files {
        let report =
            decode_check(file.to_str().unwrap_or_default(), Duration::from_secs(30)).await?;
        eprintln!("{}: {} s", file.display(), report.video_seconds);
        report.ensure_clean()?;
        assert!(starts_on_keyframe(file).await?, "{}", file.display());
        total += report.video_seconds;
    }
    assert!((total - 14.0).abs() <= 0.5, "segments cover {total} s");
    Ok(())
}

/// SIGTERM while recording to S3: the server finishes the segment (last part
/// uploaded, multipart upload completed) before it exits, and the object plays.
#[tokio::test]
async fn sigterm_completes_an_s3_recording() -> Result<()> {
    let moto = Moto::start(free_port(), PART_KIB * 1024).await?;
    moto.create_bucket(BUCKET).await?;
    let body = format!(
        "{}{}",
        s3_storage(&moto, ""),
        stream(
            "[[streams.record]]\nstorage = \"archive\"\nformat = \"fmp4\"\nname = \"{path}/{seq}.mp4\"\n"
        )
    );
    let mut srv = Cthulhu::start(&body).await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(30.0)).await?;
    srv.wait_for_log("Recording segment started", Duration::from_secs(15))
        .await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pid = srv.proc.pid().to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await?;
    let status = srv.proc.wait_timeout(Duration::from_secs(30)).await?;
    assert!(status.success(), "exit {status:?}\n{}", srv.log());
    let _ = publisher.wait(Duration::from_secs(10)).await;
    let log = srv.log();
    assert!(log.contains("Segment finished"), "{log}");
    let work = tempfile::tempdir()?;
    let objects = download(&*bucket(&moto)?, "rec/live/studio/", work.path()).await?;
    let [(name, size, file)] = objects.as_slice() else {
        bail!("expected one object, got {objects:?}\n{log}");
    };
    let report = decode_check(file.to_str().unwrap_or_default(), Duration::from_secs(30)).await?;
    eprintln!("{name}: {size} bytes, {} s", report.video_seconds);
    report.ensure_clean()?;
    assert!(
        report.video_seconds >= 5.0,
        "{} s of about 6 recorded",
        report.video_seconds
    );
    assert!(starts_on_keyframe(file).await?);
    Ok(())
}

/// A tmpfs mounted for one test and unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `kib` KiB, or says why it cannot (not root, no mount).
    fn mount(kib: u64) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A local recording on a filesystem that fills up: a clear error event, the
/// segment is closed cleanly (what was written plays), the publisher and a push
/// destination are unaffected, and the recording resumes (with backoff) once there
/// is space again.
#[tokio::test]
async fn a_full_disk_stops_the_recording_and_nothing_else() -> Result<()> {
    let disk = match SmallDisk::mount(3 * 1024) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a small tmpfs here: {why}");
            return Ok(());
        }
    };
    let dest = cthulhu_testkit::Nginx::start_rtmp(free_port()).await?;
    let body = format!(
        "[storage.small]\nurl = \"{}\"\n{}[[streams.push]]\nname = \"dest\"\nurl = \"{}\"\n",
        disk.dir.path().display(),
        stream(
            "[[streams.record]]\nstorage = \"small\"\nformat = \"fmp4\"\nname = \"{seq}.mp4\"\n"
        ),
        dest.url("full")
    );
    let srv = Cthulhu::start(&body).await?;
    let opts = PublishOptions {
        video_bitrate_kbps: 2500,
        ..PublishOptions::seconds(24.0)
    };
    let mut publisher = Ffmpeg::publish_test_pattern(&srv.url(KEY), &opts).await?;
    // 3 MiB at about 330 kB/s fills in about 9 s.
    // The recorder's event (the supervisor's "Recording failed, retrying" line comes
    // before the torn segment is cut back and closed).
    srv.wait_for_log("Recording failed stream=", Duration::from_secs(20))
        .await?;
    srv.wait_for_log("Recording segment finished", Duration::from_secs(10))
        .await?;
    let failed = srv.log();
    assert!(failed.contains("No space left on device"), "{failed}");
    // What was written before the disk filled plays: it is moved off the disk,
    // which frees the space, and the retried recording goes on.
    // (Cutting the torn fragment off frees a little space: a retry may have written
    // a short segment since; it goes too.)
    let files = files_under(disk.dir.path());
    let Some(file) = files.first() else {
        bail!("nothing recorded:\n{failed}");
    };
    let kept = tempfile::tempdir()?;
    let first_path = kept.path().join("first.mp4");
    std::fs::copy(file, &first_path)?;
    for f in &files {
        std::fs::remove_file(f)?;
    }
    publisher.wait_success(Duration::from_secs(60)).await?;
    srv.wait_for_log("Stream over: unpublishing", Duration::from_secs(20))
        .await?;
    let log = srv.log();
    for l in log
        .lines()
        .filter(|l| l.contains("Recording") || l.contains("Segment"))
    {
        eprintln!("  {l}");
    }
    let first = decode_check(
        first_path.to_str().unwrap_or_default(),
        Duration::from_secs(30),
    )
    .await?;
    first.ensure_clean()?;
    assert!(
        first.video_seconds >= 6.0,
        "{} s before the disk filled",
        first.video_seconds
    );
    // The push destination got the whole stream without a pause.
    let rec = dest.recording_path("full");
    let report = decode_check(rec.to_str().unwrap_or_default(), Duration::from_secs(30)).await?;
    report.ensure_clean()?;
    let (gap, span) = common::video_gaps(&rec).await?;
    assert!(
        span > 23.0 && gap < 0.5,
        "destination: {span} s, gap {gap} s"
    );
    // Once there was space again, recording resumed in a new segment.
    let later = files_under(disk.dir.path());
    let mut resumed = 0.0;
    for f in &later {
        let r = decode_check(f.to_str().unwrap_or_default(), Duration::from_secs(30)).await?;
        r.ensure_clean()?;
        resumed += r.video_seconds;
    }
    eprintln!(
        "before the disk filled: {} s; after space was freed: {resumed} s in {} files",
        first.video_seconds,
        later.len()
    );
    assert!(resumed >= 3.0, "{resumed} s recorded after space was freed");
    Ok(())
}
