//! Against real SRT peers we did not write: srt-live-transmit (libsrt 1.5) and
//! ffmpeg (libsrt), on 127.0.0.1. Each test skips, with a message, only if a
//! program is missing. Media is an ffmpeg test pattern in MPEG-TS, sent in
//! real time; latency 300 ms so nothing is too late on a loaded machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cthulhu_srt::{
    CallerConfig, ListenerConfig, MAX_PAYLOAD, Reject, Secret, SrtError, SrtListener, SrtReceiver,
    SrtSender, connect,
};
use cthulhu_testkit::{Ffmpeg, probe_streams};

use common::{Slt, first_difference, require_tools, wait_file_len};

const PASSPHRASE: &str = "correct horse battery";

async fn listener() -> SrtListener {
    let cfg = ListenerConfig {
        latency: Duration::from_millis(200),
        ..Default::default()
    };
    SrtListener::bind("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap()
}

/// Test media: `secs` of test pattern at `kbps`, padded to whole 1316-byte chunks.
async fn media(dir: &std::path::Path, secs: f64, kbps: u32) -> Vec<u8> {
    let mut ts = common::make_ts(dir, "media.ts", secs, kbps).await.unwrap();
    common::pad_to_chunks(&mut ts);
    ts
}

/// Reads until `len` bytes arrived, the connection closed or nothing came for 8 s.
async fn recv_len(rx: &mut SrtReceiver, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        match tokio::time::timeout(Duration::from_secs(8), rx.recv()).await {
            Ok(Some(m)) => out.extend_from_slice(&m),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// Sends `data` in 1316-byte messages: the first `burst` bytes at once, the
/// rest evenly over `duration`.
async fn send_paced(tx: &mut SrtSender, data: &[u8], burst: usize, duration: Duration) {
    let (head, tail) = data.split_at(burst.min(data.len()));
    for chunk in head.chunks(MAX_PAYLOAD) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let chunks: Vec<&[u8]> = tail.chunks(MAX_PAYLOAD).collect();
    let n = u32::try_from(chunks.len()).unwrap().max(1);
    let start = tokio::time::Instant::now();
    for (i, chunk) in chunks.into_iter().enumerate() {
        tokio::time::sleep_until(start + duration * u32::try_from(i).unwrap() / n).await;
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
}

fn assert_same(got: &[u8], sent: &[u8], what: &str) {
    assert!(
        first_difference(got, sent).is_none(),
        "{what}: received {} bytes, sent {}; first difference at byte {:?}",
        got.len(),
        sent.len(),
        first_difference(got, sent)
    );
}

/// Our listener receives from an srt-live-transmit caller; `query` adds URI
/// options, `passphrase` is what we accept with. Returns the bytes received
/// and what the request looked like.
async fn listen_for_slt(
    data: &[u8],
    secs: f64,
    query: &str,
    passphrase: Option<&str>,
) -> (Vec<u8>, u16, bool) {
    let mut l = listener().await;
    let mut slt = Slt::caller(l.local_addr(), query).unwrap();
    let inc = tokio::time::timeout(Duration::from_secs(20), l.next())
        .await
        .expect("no connection request from srt-live-transmit")
        .unwrap();
    let (key, encrypted) = (inc.key_size().bytes(), inc.encrypted());
    let conn = inc.accept(passphrase.map(Secret::new)).await.unwrap();
    let (_tx, mut rx) = conn.split();
    let len = data.len();
    // srt-live-transmit sends its last chunks only at the end of its input.
    let feed = async {
        slt.feed_paced(data, Duration::from_secs_f64(secs))
            .await
            .unwrap();
        slt.close_stdin();
    };
    let (got, ()) = tokio::join!(recv_len(&mut rx, len), feed);
    let stats = rx.stats();
    eprintln!(
        "listener side ({query}): received {} of {len} bytes; {stats:?}",
        got.len()
    );
    assert_eq!(stats.packets_recv_dropped, 0, "{stats:?}");
    assert_eq!(
        stats.messages_queue_dropped + stats.datagrams_queue_dropped,
        0,
        "{stats:?}"
    );
    (got, key, encrypted)
}

/// Our caller sends to an srt-live-transmit listener; returns what it wrote.
async fn call_slt(
    data: &[u8],
    secs: f64,
    query: &str,
    cfg: impl FnOnce(&mut CallerConfig),
) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ts");
    let port = common::free_udp_port();
    let mut slt = Slt::listener(port, query, &out).unwrap();
    let mut c = CallerConfig::new(SocketAddr::from(([127, 0, 0, 1], port)));
    c.latency = Duration::from_millis(300);
    c.connect_timeout = Duration::from_secs(10);
    cfg(&mut c);
    let conn = connect(c)
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e}; log:\n{}", slt.log()));
    let (mut tx, rx) = conn.split();
    // A keyframe-sized burst first: 400 KB at once.
    send_paced(&mut tx, data, 400_000, Duration::from_secs_f64(secs)).await;
    // Everything but srt-live-transmit's last (stdio-buffered) block arrives
    // while we are connected; then we close and it flushes when it exits.
    let _ = wait_file_len(&out, data.len() - 4096, Duration::from_secs(20)).await;
    tx.close().await;
    if slt.wait_exit(Duration::from_secs(5)).await.is_none() {
        slt.terminate(Duration::from_secs(10)).await;
    }
    let got = std::fs::read(&out).unwrap();
    let stats = rx.stats();
    eprintln!(
        "caller side ({query}): listener wrote {} of {} bytes; {stats:?}",
        got.len(),
        data.len()
    );
    assert_eq!(stats.packets_send_dropped, 0, "{stats:?}");
    got
}

/// 1. srt-live-transmit (caller, libsrt) → our listener: byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_receives_from_srt_live_transmit() {
    common::init_logging();
    require_tools(&["srt-live-transmit", "ffmpeg"]);
    let dir = tempfile::tempdir().unwrap();
    let data = media(dir.path(), 4.0, 2000).await;
    let (got, key, encrypted) =
        listen_for_slt(&data, 4.0, "streamid=publish:live/test", None).await;
    assert!(!encrypted);
    assert_eq!(key, 0);
    assert_same(&got, &data, "srt-live-transmit → listener");
}

/// 1b. ffmpeg (caller, libsrt, `-re`) → our listener: the received stream
/// decodes (ffmpeg remuxes, so bytes are not comparable to its input).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_receives_from_ffmpeg() {
    common::init_logging();
    require_tools(&["ffmpeg", "ffprobe"]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("media.ts");
    common::make_ts(dir.path(), "media.ts", 3.0, 1500)
        .await
        .unwrap();
    let mut l = listener().await;
    let url = format!(
        "srt://{}?streamid=#!::r=live/ff,m=publish&latency=300000",
        l.local_addr()
    );
    let mut ff = Ffmpeg::spawn([
        "-loglevel",
        "warning",
        "-re",
        "-i",
        src.to_str().unwrap(),
        "-c",
        "copy",
        "-f",
        "mpegts",
        &url,
    ])
    .await
    .unwrap();
    let inc = tokio::time::timeout(Duration::from_secs(20), l.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inc.stream_id(), Some("#!::r=live/ff,m=publish"));
    let (_tx, mut rx) = inc.accept(None).await.unwrap().split();
    let got = common::read_all(&mut rx, Duration::from_secs(8), Duration::from_secs(60)).await;
    ff.wait_success(Duration::from_secs(30)).await.unwrap();
    let out = dir.path().join("got.ts");
    std::fs::write(&out, &got).unwrap();
    eprintln!(
        "received {} bytes from ffmpeg ({} in the source file)",
        got.len(),
        std::fs::metadata(&src).unwrap().len()
    );
    let streams = probe_streams(out.to_str().unwrap(), &[]).await.unwrap();
    assert!(
        streams.iter().any(|s| s.codec_name == "h264"),
        "{streams:?}"
    );
    assert!(streams.iter().any(|s| s.codec_name == "aac"), "{streams:?}");
}

/// 2. Our caller → srt-live-transmit listener (libsrt): byte-identical,
/// including a 400 KB burst at once (buffer sizing), and the output decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_sends_to_srt_live_transmit() {
    common::init_logging();
    require_tools(&["srt-live-transmit", "ffmpeg", "ffprobe"]);
    let dir = tempfile::tempdir().unwrap();
    let data = media(dir.path(), 4.0, 3000).await;
    assert!(data.len() > 1_000_000);
    let got = call_slt(&data, 4.0, "", |_| {}).await;
    assert_same(&got, &data, "caller → srt-live-transmit");
    let out = dir.path().join("got.ts");
    std::fs::write(&out, &got).unwrap();
    let streams = probe_streams(out.to_str().unwrap(), &[]).await.unwrap();
    assert!(
        streams.iter().any(|s| s.codec_name == "h264"),
        "{streams:?}"
    );
}

/// 2b. Our caller → ffmpeg listener (`-i srt://...?mode=listener`): it decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_sends_to_ffmpeg_listener() {
    common::init_logging();
    require_tools(&["ffmpeg", "ffprobe"]);
    let dir = tempfile::tempdir().unwrap();
    let data = media(dir.path(), 3.0, 1500).await;
    let port = common::free_udp_port();
    let out = dir.path().join("out.ts");
    let url = format!("srt://127.0.0.1:{port}?mode=listener&latency=300000");
    let mut ff = Ffmpeg::spawn([
        "-loglevel",
        "warning",
        "-y",
        "-i",
        &url,
        "-c",
        "copy",
        "-f",
        "mpegts",
        out.to_str().unwrap(),
    ])
    .await
    .unwrap();
    let mut c = CallerConfig::new(SocketAddr::from(([127, 0, 0, 1], port)));
    c.connect_timeout = Duration::from_secs(10);
    let conn = connect(c).await.unwrap();
    let (mut tx, _rx) = conn.split();
    send_paced(&mut tx, &data, 400_000, Duration::from_secs(3)).await;
    tx.close().await;
    ff.wait_success(Duration::from_secs(30)).await.unwrap();
    let streams = probe_streams(out.to_str().unwrap(), &[]).await.unwrap();
    assert!(
        streams.iter().any(|s| s.codec_name == "h264"),
        "{streams:?}"
    );
    assert!(streams.iter().any(|s| s.codec_name == "aac"), "{streams:?}");
}

/// 3. AES-128 and AES-256, both directions, with srt-live-transmit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_aes128_and_aes256_both_directions() {
    common::init_logging();
    require_tools(&["srt-live-transmit", "ffmpeg"]);
    let dir = tempfile::tempdir().unwrap();
    let data = media(dir.path(), 2.0, 1500).await;
    for key in [16u16, 32] {
        let query = format!("passphrase={PASSPHRASE}&pbkeylen={key}");
        let listen_query = format!("streamid=enc{key}&{query}");
        let ((got_in, asked, encrypted), got_out) = tokio::join!(
            listen_for_slt(&data, 2.0, &listen_query, Some(PASSPHRASE)),
            call_slt(&data, 2.0, &query, |c| {
                c.passphrase = Some(Secret::new(PASSPHRASE));
                c.key_size = Some(key);
            }),
        );
        assert!(encrypted);
        assert_eq!(asked, key);
        assert_same(
            &got_in,
            &data,
            &format!("AES-{} srt-live-transmit → listener", key * 8),
        );
        assert_same(
            &got_out,
            &data,
            &format!("AES-{} caller → srt-live-transmit", key * 8),
        );
    }
}

/// 3b. Wrong passphrases are refused in both directions; the listener keeps
/// working for the next (correct) caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passphrase_is_refused() {
    common::init_logging();
    require_tools(&["srt-live-transmit", "ffmpeg"]);
    let dir = tempfile::tempdir().unwrap();
    let data = media(dir.path(), 2.0, 1000).await;

    // srt-live-transmit with a wrong passphrase → our listener.
    let mut l = listener().await;
    let mut bad = Slt::caller(l.local_addr(), "streamid=x&passphrase=not the right one").unwrap();
    let inc = tokio::time::timeout(Duration::from_secs(20), l.next())
        .await
        .unwrap()
        .unwrap();
    let r = inc.accept(Some(Secret::new(PASSPHRASE))).await;
    assert!(
        matches!(r, Err(SrtError::Refused(Reject::BadSecret))),
        "{r:?}"
    );
    let status = bad.wait_exit(Duration::from_secs(20)).await;
    let log = bad.log();
    eprintln!("srt-live-transmit with a wrong passphrase: {status:?}\n{log}");
    assert!(!log.contains("SRT target connected"), "{log}");
    assert!(log.contains("Incorrect passphrase"), "{log}");
    assert_eq!(l.stats().refused, 1);
    assert!(l.is_running());

    // The same listener then serves a correct caller.
    let mut good = Slt::caller(
        l.local_addr(),
        &format!("streamid=y&passphrase={PASSPHRASE}"),
    )
    .unwrap();
    let inc = tokio::time::timeout(Duration::from_secs(20), l.next())
        .await
        .unwrap()
        .unwrap();
    let (_tx, mut rx) = inc
        .accept(Some(Secret::new(PASSPHRASE)))
        .await
        .unwrap()
        .split();
    let feed = async {
        good.feed_paced(&data, Duration::from_secs(2))
            .await
            .unwrap();
        good.close_stdin();
    };
    let (got, ()) = tokio::join!(recv_len(&mut rx, data.len()), feed);
    assert_same(&got, &data, "correct caller after a wrong one");

    // Our caller with a wrong passphrase → srt-live-transmit listener.
    let port = common::free_udp_port();
    let out = dir.path().join("out.ts");
    let _slt = Slt::listener(port, &format!("passphrase={PASSPHRASE}"), &out).unwrap();
    let mut c = CallerConfig::new(SocketAddr::from(([127, 0, 0, 1], port)));
    c.passphrase = Some(Secret::new("not the right one"));
    c.connect_timeout = Duration::from_secs(10);
    let r = connect(c).await;
    assert!(
        matches!(r, Err(SrtError::Rejected(Reject::BadSecret))),
        "{r:?}"
    );
}

/// Measurement, not part of the suite (`cargo test -p cthulhu-srt --test
/// peers -- --ignored`): 10 s at 20 Mbit/s with 1 s latency from our caller to
/// an srt-live-transmit listener, in real time, with the default buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: 10 s at 20 Mbit/s"]
async fn caller_20_mbit_per_s_to_srt_live_transmit() {
    common::init_logging();
    require_tools(&["srt-live-transmit"]);
    let secs = 10.0;
    let len = (20_000_000.0 / 8.0 * secs) as usize;
    let mut seed = 0x9E37_79B9_u32;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as u8
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let port = common::free_udp_port();
    let mut slt = Slt::spawn(
        &format!("srt://127.0.0.1:{port}?mode=listener&latency=1000"),
        "file://con",
        Some(&out),
        60,
    )
    .unwrap();
    let mut c = CallerConfig::new(SocketAddr::from(([127, 0, 0, 1], port)));
    c.latency = Duration::from_secs(1);
    c.connect_timeout = Duration::from_secs(10);
    let (mut tx, rx) = connect(c).await.unwrap().split();
    let start = std::time::Instant::now();
    send_paced(&mut tx, &data, 400_000, Duration::from_secs_f64(secs)).await;
    let _ = wait_file_len(&out, len - 4096, Duration::from_secs(20)).await;
    tx.close().await;
    if slt.wait_exit(Duration::from_secs(5)).await.is_none() {
        slt.terminate(Duration::from_secs(10)).await;
    }
    let got = std::fs::read(&out).unwrap();
    let stats = rx.stats();
    eprintln!(
        "20 Mbit/s: wrote {} of {len} bytes in {:?}; {stats:?}",
        got.len(),
        start.elapsed()
    );
    assert_same(&got, &data, "20 Mbit/s caller → srt-live-transmit");
}
