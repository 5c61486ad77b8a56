//! Recording into local files: containers decode, segments rotate, and a process
//! killed with SIGKILL leaves files that decode up to their last complete frame. Fail
//! (do not skip) without `ffmpeg` or `ffprobe`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{
    EventLog, Media, decode_clean, hub, path, probe, publish, record_config, starts_on_keyframe,
};
use cthulhu_core::supervisor::BackoffPolicy;
use cthulhu_sinks::{Container, Recorder, Storage};
use cthulhu_testkit::ChildGuard;

/// Set in the child process of [`sigkill_leaves_playable_files`]: the directory to
/// record into.
const CHILD_DIR: &str = "CTHULHU_SINKS_TEST_CHILD_DIR";
/// Set in the child process: the FLV test pattern to publish.
const CHILD_MEDIA: &str = "CTHULHU_SINKS_TEST_CHILD_MEDIA";

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// TS and FLV from one stream, rotated every 4 s: 9 s give 4 + 4 + 1 s per
/// container; every file starts on a keyframe and decodes; events name the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_ts_and_flv_segments_to_files() -> Result<()> {
    let media = Media::generate(9.0, 30, 500).await?;
    let dir = tempfile::tempdir()?;
    let storage = std::sync::Arc::new(Storage::local(dir.path()));
    let hub = hub();
    let events = EventLog::start(&hub);
    let mut handles = Vec::new();
    for ext in ["ts", "flv"] {
        let container: Container = ext.parse()?;
        let mut config = record_config(
            container,
            &format!("rec/{{path}}/{{date}}/{{time}}-{{seq}}.{ext}"),
        );
        config.segment_duration = Some(Duration::from_secs(4));
        let recorder = Recorder::new(
            format!("local-{ext}"),
            &hub,
            path(),
            storage.clone(),
            config,
        )?;
        handles.push(recorder.spawn(BackoffPolicy::default()));
    }
    publish(&hub, &path(), &media, false, |_| Ok(())).await?;
    let finished = events.wait_finished(6, Duration::from_secs(60)).await?;
    ensure!(
        events.gaps().is_empty() && events.failures().is_empty(),
        "{:#?}",
        events.all()
    );
    let files = files_under(dir.path());
    ensure!(files.len() == 6, "{files:#?}");
    for (object, bytes, duration) in &finished {
        let file = PathBuf::from(object);
        ensure!(files.contains(&file), "{object} is not among {files:#?}");
        ensure!(
            std::fs::metadata(&file)?.len() == *bytes,
            "{object}: size differs from the event"
        );
        let want = if object.contains("-0003.") { 1.0 } else { 4.0 };
        ensure!(
            (duration.as_secs_f64() - want).abs() < 0.1,
            "{object}: {duration:?}"
        );
        let (codecs, probed) = probe(&file).await?;
        ensure!(codecs == ["h264", "aac"], "{object}: {codecs:?}");
        ensure!(
            (probed - want).abs() < 0.5,
            "{object}: ffprobe says {probed} s"
        );
        ensure!(starts_on_keyframe(&file).await?, "{object}");
        let report = decode_clean(&file).await?;
        ensure!(
            (report.video_frames as f64 - want * 30.0).abs() <= 1.0,
            "{object}: {report:#?}"
        );
    }
    for h in handles {
        h.stop().await;
    }
    Ok(())
}

/// The process recording into local files is killed with SIGKILL mid-stream: the
/// files it leaves (TS and FLV) decode without errors up to the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leaves_playable_files() -> Result<()> {
    let work = tempfile::tempdir()?;
    let media_file = work.path().join("pattern.flv");
    Media::write(&media_file, 20.0, 30, 500).await?;
    let rec = work.path().join("rec");
    std::fs::create_dir_all(&rec)?;
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["child_records_until_killed", "--exact", "--nocapture"])
        .env(CHILD_DIR, &rec)
        .env(CHILD_MEDIA, &media_file);
    let mut child = ChildGuard::spawn("recording-child", cmd)?;
    // let it record for about 4 s of media
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let sizes: Vec<u64> = files_under(&rec)
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok().map(|m| m.len()))
            .collect();
        if sizes.len() == 2 && sizes.iter().all(|s| *s > 250_000) {
            break;
        }
        if !child.is_running() || tokio::time::Instant::now() > deadline {
            bail!("the child did not record: {}", child.describe());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await?;
    let files = files_under(&rec);
    ensure!(files.len() == 2, "{files:#?}");
    for file in &files {
        let report = decode_clean(file)
            .await
            .with_context(|| format!("{} after SIGKILL", file.display()))?;
        eprintln!(
            "{}: {} bytes, {report:?}",
            file.display(),
            std::fs::metadata(file)?.len()
        );
        ensure!(
            report.video_seconds > 3.0,
            "{}: {report:#?}",
            file.display()
        );
        ensure!(
            report.audio_seconds > 3.0,
            "{}: {report:#?}",
            file.display()
        );
    }
    Ok(())
}

/// The child process of [`sigkill_leaves_playable_files`]; does nothing in a normal
/// test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_records_until_killed() -> Result<()> {
    let (Some(dir), Some(media)) = (std::env::var_os(CHILD_DIR), std::env::var_os(CHILD_MEDIA))
    else {
        return Ok(());
    };
    let media = Media::read(Path::new(&media), 20.0, 30)?;
    let storage = std::sync::Arc::new(Storage::local(PathBuf::from(dir)));
    let hub = hub();
    let mut handles = Vec::new();
    for ext in ["ts", "flv"] {
        let config = record_config(ext.parse()?, &format!("{{name}}-{{seq}}.{ext}"));
        handles.push(
            Recorder::new(ext, &hub, path(), storage.clone(), config)?
                .spawn(BackoffPolicy::default()),
        );
    }
    publish(&hub, &path(), &media, true, |_| Ok(())).await?;
    // not reached: the parent kills this process before the media ends
    bail!("the child was not killed")
}
