//! Recording into S3 (moto on 127.0.0.1): multipart parts, read back and decoded by
//! ffmpeg; outages of the store; segment rotation. Fail (do not skip) without
//! `moto_server`, `ffmpeg` or `ffprobe`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use common::{
    EventLog, Media, decode_clean, hub, path, probe, publish, record_config, save,
    starts_on_keyframe,
};
use cthulhu_core::supervisor::BackoffPolicy;
use cthulhu_sinks::{Container, Recorder, Storage, StorageConfig};
use cthulhu_testkit::{Moto, free_port};

const BUCKET: &str = "studio-archive";
/// moto's minimum part size in these tests (S3: 5 MiB).
const MIN_PART: usize = 16 << 10;

async fn moto() -> Result<Moto> {
    let moto = Moto::start(free_port(), MIN_PART).await?;
    moto.create_bucket(BUCKET).await?;
    Ok(moto)
}

/// S3 storage on moto; `timeout` is the HTTP client's request timeout.
fn storage(moto: &Moto, timeout: &str) -> Result<Arc<Storage>> {
    let config = StorageConfig {
        url: format!("s3://{BUCKET}/recordings"),
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some(cthulhu_core::Secret::new("testing")),
        secret_access_key: Some(cthulhu_core::Secret::new("testing")),
        options: BTreeMap::from([("timeout".to_owned(), timeout.to_owned())]),
        ..StorageConfig::default()
    };
    Ok(Storage::from_config(&config)?)
}

/// Several parts per object, both containers at once from one stream; each object
/// is read back, probed (codecs, duration) and fully decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_ts_and_flv_to_s3_in_many_parts() -> Result<()> {
    let moto = moto().await?;
    let media = Media::generate(8.0, 30, 800).await?;
    let hub = hub();
    let events = EventLog::start(&hub);
    let storage = storage(&moto, "30s")?;
    let mut handles = Vec::new();
    for (container, ext) in [(Container::Ts, "ts"), (Container::Flv, "flv")] {
        let mut config = record_config(
            container,
            &format!("{{path}}/{{date}}/{{time}}-{{seq}}.{ext}"),
        );
        config.part_size = 64 << 10;
        let recorder = Recorder::new(
            format!("archive-{ext}"),
            &hub,
            path(),
            storage.clone(),
            config,
        )?;
        handles.push((ext, recorder.spawn(BackoffPolicy::default())));
    }
    publish(&hub, &path(), &media, false, |_| Ok(())).await?;
    let finished = events.wait_finished(2, Duration::from_secs(60)).await?;
    let dir = tempfile::tempdir()?;
    for (object, bytes, duration) in &finished {
        let Some((_, handle)) = handles.iter().find(|(ext, _)| object.ends_with(ext)) else {
            anyhow::bail!("unexpected object {object}");
        };
        let stats = handle.stats();
        eprintln!("{object}: {bytes} bytes, {duration:?}, {stats:?}");
        ensure!(
            stats.parts_uploaded >= 5,
            "{object}: only {} parts",
            stats.parts_uploaded
        );
        ensure!(
            stats.bytes_stored == *bytes && stats.bytes_written == *bytes,
            "{stats:?}"
        );
        ensure!(
            stats.peak_buffered_bytes > 0 && stats.buffered_bytes == 0,
            "{stats:?}"
        );
        ensure!(object.starts_with("recordings/live/studio/"), "{object}");
        let data = storage.read(object).await?;
        ensure!(
            data.len() as u64 == *bytes,
            "{object}: {} bytes stored, {bytes} reported",
            data.len()
        );
        let file = save(dir.path(), object, &data)?;
        let (codecs, probed) = probe(&file).await?;
        ensure!(
            codecs.contains(&"h264".to_owned()) && codecs.contains(&"aac".to_owned()),
            "{codecs:?}"
        );
        ensure!(
            (probed - 8.0).abs() < 0.5,
            "{object}: ffprobe says {probed} s"
        );
        ensure!(
            (duration.as_secs_f64() - 8.0).abs() < 0.5,
            "{object}: event says {duration:?}"
        );
        let report = decode_clean(&file).await?;
        ensure!((report.video_frames as i64 - 240).abs() <= 2, "{report:#?}");
        ensure!(starts_on_keyframe(&file).await?);
    }
    ensure!(
        events.gaps().is_empty() && events.failures().is_empty(),
        "{:#?}",
        events.all()
    );
    for (_, h) in handles {
        h.stop().await;
    }
    Ok(())
}

/// Segments are cut at the first keyframe after `segment_duration`: 10 s with a
/// keyframe every second and 3 s segments gives 3 + 3 + 3 + 1 s, each object
/// starting on a keyframe and decoding on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_rotate_on_keyframes() -> Result<()> {
    let moto = moto().await?;
    let media = Media::generate(10.0, 30, 500).await?;
    let hub = hub();
    let events = EventLog::start(&hub);
    let storage = storage(&moto, "30s")?;
    let mut config = record_config(Container::Ts, "{path}/{date}/{time}-{seq}.ts");
    config.part_size = MIN_PART;
    config.segment_duration = Some(Duration::from_secs(3));
    let handle = Recorder::new("archive", &hub, path(), storage.clone(), config)?
        .spawn(BackoffPolicy::default());
    publish(&hub, &path(), &media, false, |_| Ok(())).await?;
    let mut finished = events.wait_finished(4, Duration::from_secs(60)).await?;
    // segments finish in the background: events may come in any order
    finished.sort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let finished_after = events.finished();
    ensure!(finished_after.len() == 4, "{finished_after:#?}");
    let listed = storage.list().await?;
    ensure!(listed.len() == 4, "{listed:#?}");
    let dir = tempfile::tempdir()?;
    let expected = [3.0, 3.0, 3.0, 1.0];
    for (i, ((object, bytes, duration), want)) in finished.iter().zip(expected).enumerate() {
        ensure!(object.ends_with(&format!("-{:04}.ts", i + 1)), "{object}");
        ensure!(
            listed.iter().any(|(o, b)| o == object && b == bytes),
            "{object} not listed: {listed:?}"
        );
        ensure!(
            (duration.as_secs_f64() - want).abs() < 0.1,
            "{object}: {duration:?}"
        );
        let file = save(dir.path(), object, &storage.read(object).await?)?;
        ensure!(
            starts_on_keyframe(&file).await?,
            "{object} does not start on a keyframe"
        );
        let report = decode_clean(&file).await?;
        let frames = want * 30.0;
        ensure!(
            (report.video_frames as f64 - frames).abs() <= 1.0,
            "{object}: {report:#?}"
        );
        eprintln!(
            "{object}: {bytes} bytes, {duration:?}, {} video frames",
            report.video_frames
        );
    }
    handle.stop().await;
    Ok(())
}

/// The store freezes (SIGSTOP) for 4 s in the middle of a live recording; requests
/// time out after 1 s and parts are retried under the same number. The recording has
/// no gap: the buffer holds what the store could not take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_freeze_is_ridden_out_with_part_retries() -> Result<()> {
    let moto = moto().await?;
    let media = Media::generate(10.0, 30, 500).await?;
    let hub = hub();
    let events = EventLog::start(&hub);
    let storage = storage(&moto, "1s")?;
    let mut config = record_config(Container::Ts, "{path}/{time}-{seq}.ts");
    config.part_size = MIN_PART;
    config.attempt_timeout = Duration::from_secs(1);
    let handle = Recorder::new("archive", &hub, path(), storage.clone(), config)?
        .spawn(BackoffPolicy::default());
    publish(&hub, &path(), &media, true, |second| match second {
        3 => moto.pause(),
        7 => moto.resume(),
        _ => Ok(()),
    })
    .await?;
    let finished = events.wait_finished(1, Duration::from_secs(60)).await?;
    let stats = handle.stats();
    eprintln!("{finished:?} {stats:?}");
    ensure!(stats.part_retries > 0, "no part was retried: {stats:?}");
    ensure!(
        events.gaps().is_empty() && events.failures().is_empty(),
        "{:#?}",
        events.all()
    );
    let (object, _, duration) = &finished[0];
    ensure!((duration.as_secs_f64() - 10.0).abs() < 0.5, "{duration:?}");
    let dir = tempfile::tempdir()?;
    let file = save(dir.path(), object, &storage.read(object).await?)?;
    let report = decode_clean(&file).await?;
    ensure!((report.video_frames as i64 - 300).abs() <= 2, "{report:#?}");
    handle.stop().await;
    Ok(())
}

/// The store freezes longer than the memory budget lasts: media is left out up to a
/// keyframe after the store came back, the gap is reported with its length, memory
/// stays within the budget, and what comes after is recorded in the same object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_store_outage_leaves_a_reported_gap_and_bounded_memory() -> Result<()> {
    let moto = moto().await?;
    let media = Media::generate(12.0, 30, 500).await?;
    let hub = hub();
    let events = EventLog::start(&hub);
    let storage = storage(&moto, "1s")?;
    let mut config = record_config(Container::Ts, "{path}/{time}-{seq}.ts");
    config.part_size = MIN_PART;
    config.max_inflight_parts = 2;
    // about 1.3 s of this stream
    config.max_buffered_bytes = 6 * MIN_PART;
    config.attempt_timeout = Duration::from_secs(1);
    let budget = config.max_buffered_bytes as u64;
    let handle = Recorder::new("archive", &hub, path(), storage.clone(), config)?
        .spawn(BackoffPolicy::default());
    publish(&hub, &path(), &media, true, |second| match second {
        3 => moto.pause(),
        8 => moto.resume(),
        _ => Ok(()),
    })
    .await?;
    let finished = events.wait_finished(1, Duration::from_secs(60)).await?;
    let stats = handle.stats();
    let gaps = events.gaps();
    eprintln!("{finished:?} gaps {gaps:?} {stats:?}");
    ensure!(events.failures().is_empty(), "{:#?}", events.all());
    ensure!(gaps.len() == 1, "{:#?}", events.all());
    let dropped = gaps[0].as_secs_f64();
    // frozen 5 s, of which about 1.3 s fit into the budget; resumption waits for a
    // keyframe (1 s GOP) after the store took the backlog
    ensure!((2.0..=6.5).contains(&dropped), "dropped {dropped} s");
    // the budget is checked before each frame: it can be passed by one frame's bytes
    ensure!(stats.peak_buffered_bytes <= budget + 64 * 1024, "{stats:?}");
    ensure!(
        finished.len() == 1,
        "the recording went on in one object: {finished:#?}"
    );
    let (object, _, _) = &finished[0];
    let dir = tempfile::tempdir()?;
    let file = save(dir.path(), object, &storage.read(object).await?)?;
    let report = decode_clean(&file).await?;
    let expected = (12.0 - dropped) * 30.0;
    ensure!(
        (report.video_frames as f64 - expected).abs() <= 31.0,
        "{} frames, expected about {expected}: {report:#?}",
        report.video_frames
    );
    // media after the outage was recorded: the decoded span reaches the end
    ensure!(report.video_seconds > 11.0, "{report:#?}");
    handle.stop().await;
    Ok(())
}

/// The store restarts empty (moto loses its uploads and the bucket): the segment
/// fails, the failure is reported, and once the bucket is back the recorder starts a
/// new segment and records on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_restart_fails_the_segment_and_recording_goes_on() -> Result<()> {
    let mut moto = moto().await?;
    let media = Media::generate(12.0, 30, 500).await?;
    let hub = hub();
    let events = EventLog::start(&hub);
    let storage = storage(&moto, "2s")?;
    let mut config = record_config(Container::Ts, "{path}/{time}-{seq}.ts");
    config.part_size = MIN_PART;
    // moto answers 500 (not 404) for the uploads it lost: retried as transient
    // until this deadline
    config.give_up_after = Duration::from_secs(2);
    let handle =
        Recorder::new("archive", &hub, path(), storage.clone(), config)?.spawn(BackoffPolicy {
            initial: Duration::from_millis(300),
            max: Duration::from_secs(1),
            ..BackoffPolicy::default()
        });
    let publishing = {
        let hub = hub.clone();
        tokio::spawn(async move { publish(&hub, &path(), &media, true, |_| Ok(())).await })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    moto.restart().await?;
    moto.create_bucket(BUCKET).await?;
    publishing.await??;
    let finished = events.wait_finished(1, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = events.all();
    eprintln!("{all:#?} {:?}", handle.stats());
    ensure!(
        !events.failures().is_empty(),
        "no failure reported: {all:#?}"
    );
    let (object, _, duration) = finished.last().cloned().unwrap_or_default();
    ensure!(
        object.ends_with("-0002.ts"),
        "the recording went on in a second segment: {object}"
    );
    // restart at 4 s, parts given up 2 s later: the second segment covers the rest
    ensure!(duration > Duration::from_secs(4), "{duration:?}");
    ensure!(events.gaps().len() == 1, "{all:#?}");
    let dir = tempfile::tempdir()?;
    let file = save(dir.path(), &object, &storage.read(&object).await?)?;
    decode_clean(&file).await?;
    ensure!(starts_on_keyframe(&file).await?);
    handle.stop().await;
    Ok(())
}
