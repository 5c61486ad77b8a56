//! Hostile RTMP input against the real server binary: each attack closes only its
//! own connection, and real publishers and players (ffmpeg) are served before, during
//! and after.
//!
//! The first attack is the one that aborted the whole process before input was
//! bounded: a `connect` whose command object nests 10,000 objects deep (about 40 KB)
//! overflowed a Tokio worker's stack inside rml_amf0.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::Cthulhu;
use cthulhu_testkit::{Ffmpeg, PublishOptions, decode_check};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "hostile-key-7";

fn config(extra_rtmp: &str) -> String {
    format!("{extra_rtmp}\n[[streams]]\npath = \"live/h\"\nkey = \"{KEY}\"\n")
}

/// Connects and completes the RTMP handshake as a client.
async fn handshaken(port: u16) -> Result<TcpStream> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut hs = Handshake::new(PeerType::Client);
    let c0c1 = hs.generate_outbound_p0_and_p1()?;
    sock.write_all(&c0c1).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await??;
        if n == 0 {
            bail!("server closed during the handshake");
        }
        match hs.process_bytes(&buf[..n])? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                sock.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                sock.write_all(&response_bytes).await?;
                anyhow::ensure!(remaining_bytes.is_empty(), "unexpected bytes after S2");
                return Ok(sock);
            }
        }
    }
}

/// One RTMP message in 128-byte chunks (the initial chunk size) on chunk stream 3,
/// with a full header first.
fn chunked(type_id: u8, stream_id: u32, body: &[u8]) -> Vec<u8> {
    let len = body.len() as u32;
    let mut out = vec![3, 0, 0, 0];
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&stream_id.to_le_bytes());
    for (i, piece) in body.chunks(128).enumerate() {
        if i > 0 {
            out.push(0xC3);
        }
        out.extend_from_slice(piece);
    }
    out
}

/// A `connect` command whose command object nests `depth` objects, 4 bytes a level,
/// never closed (as the attack sent it: the decoder recursed to the bottom first).
fn deep_connect(depth: usize) -> Vec<u8> {
    let mut body = vec![2, 0, 7];
    body.extend_from_slice(b"connect");
    body.push(0);
    body.extend_from_slice(&1f64.to_be_bytes());
    for _ in 0..depth {
        body.extend_from_slice(&[3, 0, 1, b'a']);
    }
    body
}

/// Reads until the server closes (EOF or reset); fails after `limit`.
async fn closed_by_server(sock: &mut TcpStream, limit: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        match tokio::time::timeout_at((t0 + limit).into(), sock.read(&mut buf)).await {
            Err(_) => bail!("the server kept the connection open for {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(t0.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// ffmpeg publishes 4 s and a player decodes 2 s of it, cleanly.
async fn publish_and_play(srv: &Cthulhu) -> Result<()> {
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(4.0)).await?;
    let play = decode_check(&srv.url("h"), Duration::from_secs(2)).await?;
    play.ensure_clean()?;
    anyhow::ensure!(
        play.video_frames >= 30,
        "player got {} frames",
        play.video_frames
    );
    publisher.wait_success(Duration::from_secs(20)).await?;
    Ok(())
}

/// The connect that used to abort the process is refused; the server goes on.
#[tokio::test]
async fn deeply_nested_connect_closes_only_its_connection() -> Result<()> {
    let srv = Cthulhu::start(&config("")).await?;
    // A publisher that is live during the attack, and stays so.
    let mut live =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(8.0)).await?;
    srv.wait_for_log("Published stream=live/h", Duration::from_secs(10))
        .await?;
    for depth in [10_000, 100_000] {
        let mut sock = handshaken(srv.port).await?;
        let msg = chunked(20, 0, &deep_connect(depth));
        // The server may close before it has read all of a long message.
        let _ = sock.write_all(&msg).await;
        closed_by_server(&mut sock, Duration::from_secs(5)).await?;
    }
    srv.wait_for_log("AMF0 values nest deeper than 32", Duration::from_secs(5))
        .await?;
    live.wait_success(Duration::from_secs(30))
        .await
        .context("the live publisher was cut off")?;
    publish_and_play(&srv).await?;
    Ok(())
}

/// A 12 MiB `connect` is refused at its header, before the server buffers it.
#[tokio::test]
async fn oversized_command_is_refused_before_it_is_buffered() -> Result<()> {
    let srv = Cthulhu::start(&config("")).await?;
    let mut sock = handshaken(srv.port).await?;
    let mut body = deep_connect(1);
    body.resize(12 << 20, 5);
    let msg = chunked(20, 0, &body);
    let t0 = Instant::now();
    let mut sent = 0usize;
    // Write until the server closes; it must do so long before 12 MiB.
    for piece in msg.chunks(64 * 1024) {
        match tokio::time::timeout(Duration::from_secs(5), sock.write_all(piece)).await {
            Ok(Ok(())) => sent += piece.len(),
            // Reset by the server, or a full socket it no longer reads.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let closed_after = closed_by_server(&mut sock, Duration::from_secs(5)).await?;
    assert!(
        sent < msg.len(),
        "the server took all {sent} bytes of a 12 MiB command"
    );
    srv.wait_for_log(
        "over the 65536-byte limit before publishing",
        Duration::from_secs(5),
    )
    .await?;
    eprintln!(
        "sent {sent} bytes before the close ({:?} + {closed_after:?})",
        t0.elapsed()
    );
    assert!(srv.rss_kib().unwrap_or(0) < 200 * 1024);
    publish_and_play(&srv).await?;
    Ok(())
}

/// A publisher that, once accepted, sends a nested `@setDataFrame` or a message over
/// the media bound is closed; the next publisher is served.
#[tokio::test]
async fn hostile_publisher_after_acceptance_is_closed() -> Result<()> {
    let srv = Cthulhu::start(&config("max_media_message_kib = 1024")).await?;
    for attack in ["metadata", "media"] {
        let mut sock = handshaken(srv.port).await?;
        let amf = |values: Vec<rml_amf0::Amf0Value>| rml_amf0::serialize(&values).unwrap();
        use rml_amf0::Amf0Value::{Null, Number, Object, Utf8String};
        let mut app = std::collections::HashMap::new();
        app.insert("app".to_string(), Utf8String("live".into()));
        app.insert(
            "tcUrl".to_string(),
            Utf8String("rtmp://127.0.0.1/live".into()),
        );
        let mut out = chunked(
            20,
            0,
            &amf(vec![Utf8String("connect".into()), Number(1.0), Object(app)]),
        );
        out.extend(chunked(
            20,
            0,
            &amf(vec![Utf8String("createStream".into()), Number(2.0), Null]),
        ));
        out.extend(chunked(
            20,
            1,
            &amf(vec![
                Utf8String("publish".into()),
                Number(3.0),
                Null,
                Utf8String(format!("h?key={KEY}")),
                Utf8String("live".into()),
            ]),
        ));
        sock.write_all(&out).await?;
        srv.wait_for_log("Published stream=live/h", Duration::from_secs(5))
            .await?;
        let hostile = match attack {
            "metadata" => {
                let mut body = vec![2, 0, 13];
                body.extend_from_slice(b"@setDataFrame");
                body.extend_from_slice(&[2, 0, 10]);
                body.extend_from_slice(b"onMetaData");
                body.extend(&deep_connect(5_000)[19..]);
                chunked(18, 1, &body)
            }
            _ => chunked(9, 1, &vec![0x17; 2 << 20]),
        };
        let _ = sock.write_all(&hostile).await;
        closed_by_server(&mut sock, Duration::from_secs(5)).await?;
        srv.wait_for_log("Unpublished", Duration::from_secs(5))
            .await
            .ok();
    }
    srv.wait_for_log("AMF0 values nest deeper than 32", Duration::from_secs(5))
        .await?;
    srv.wait_for_log(
        "over the 1048576-byte limit while publishing",
        Duration::from_secs(5),
    )
    .await?;
    publish_and_play(&srv).await?;
    assert!(!srv.log().contains(KEY), "the stream key was logged");
    Ok(())
}

/// Connections past the per-address and pending limits are closed at once with a
/// logged reason; a real publisher and player get through once the slots free up.
#[tokio::test]
async fn connection_limits_refuse_the_excess() -> Result<()> {
    let srv = Cthulhu::start(&config(
        "max_pending_connections = 8\nhandshake_timeout_secs = 3",
    ))
    .await?;
    // Eight silent connections fill the pending slots; the ninth is refused.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(("127.0.0.1", srv.port)).await?);
    }
    let mut ninth = TcpStream::connect(("127.0.0.1", srv.port)).await?;
    let closed = closed_by_server(&mut ninth, Duration::from_secs(2)).await?;
    assert!(closed < Duration::from_secs(2));
    srv.wait_for_log(
        "too many connections not yet publishing or playing",
        Duration::from_secs(5),
    )
    .await?;
    // The silent ones time out; then a publisher and a player are served.
    for mut s in silent {
        closed_by_server(&mut s, Duration::from_secs(6)).await?;
    }
    publish_and_play(&srv).await?;
    Ok(())
}

/// One attacker's connection: a bad handshake, a deep or oversized `connect`, or
/// garbage after the handshake. Errors are the server doing its job.
async fn attack_once(port: u16, kind: usize) -> Result<()> {
    match kind % 4 {
        0 => {
            // RTMP version 9, then noise.
            let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
            let mut c0c1 = vec![9u8; 1537];
            c0c1[1..].fill(0xA5);
            s.write_all(&c0c1).await?;
            let mut buf = [0u8; 4096];
            while s.read(&mut buf).await? > 0 {}
        }
        1 => {
            let mut s = handshaken(port).await?;
            let _ = s.write_all(&chunked(20, 0, &deep_connect(10_000))).await;
            let mut buf = [0u8; 4096];
            while s.read(&mut buf).await? > 0 {}
        }
        2 => {
            let mut s = handshaken(port).await?;
            // A compressed header on a chunk stream that never had a full one.
            s.write_all(&[0xC5, 1, 2, 3]).await?;
            let mut buf = [0u8; 4096];
            while s.read(&mut buf).await? > 0 {}
        }
        _ => {
            let mut s = handshaken(port).await?;
            let mut h = vec![3, 0, 0, 0, 0xC0, 0, 0, 20, 0, 0, 0, 0];
            h.extend_from_slice(&[5; 1024]);
            let _ = s.write_all(&h).await;
            let mut buf = [0u8; 4096];
            while s.read(&mut buf).await? > 0 {}
        }
    }
    Ok(())
}

/// A 20 s flood of hostile connections from many source ports, at the production
/// log level: the log grows by a bounded amount (refusals summarised per reason),
/// and a real publisher and player are served throughout.
#[tokio::test]
async fn a_connection_flood_cannot_fill_the_log() -> Result<()> {
    let srv = Cthulhu::start_logging("info", &config(""), "").await?;
    let before = srv.log().len();
    let flood = Duration::from_secs(20);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..6usize {
        let port = srv.port;
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while t0.elapsed() < flood {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), attack_once(port, w + n as usize))
                        .await;
                n += 1;
            }
            n
        }));
    }
    // ffmpeg publishes and plays in the middle of the flood.
    tokio::time::sleep(Duration::from_secs(5)).await;
    publish_and_play(&srv).await?;
    let mut attacks = 0;
    for t in tasks {
        attacks += t.await?;
    }
    // The last window's summaries.
    srv.wait_for_log("Refused ", Duration::from_secs(12))
        .await?;
    let grown = srv.log().len() - before;
    eprintln!("{attacks} hostile connections in {flood:?}; the log grew by {grown} bytes");
    for l in srv.log().lines().filter(|l| l.contains("Refused ")) {
        eprintln!("  {l}");
    }
    assert!(
        attacks > 1000,
        "only {attacks} attacks: the flood proves little"
    );
    assert!(grown < 1 << 20, "the log grew by {grown} bytes");
    assert!(!srv.log().contains(KEY));
    Ok(())
}

/// A push destination that answers `connect` with a `_result` nesting 10,000 objects
/// deep: the push fails with a reason and is retried; the server and the stream live on.
#[tokio::test]
async fn hostile_destination_reply_fails_only_that_push() -> Result<()> {
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let evil_port = evil.local_addr()?.port();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = evil.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut hs = Handshake::new(PeerType::Server);
                let mut buf = vec![0u8; 8192];
                loop {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    match hs.process_bytes(&buf[..n]) {
                        Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                            let _ = sock.write_all(&response_bytes).await;
                        }
                        Ok(HandshakeProcessResult::Completed { response_bytes, .. }) => {
                            let _ = sock.write_all(&response_bytes).await;
                            break;
                        }
                        Err(_) => return,
                    }
                }
                // Whatever the client sent (connect), the answer is a bomb.
                let mut body = vec![2, 0, 7];
                body.extend_from_slice(b"_result");
                body.push(0);
                body.extend_from_slice(&1f64.to_be_bytes());
                for _ in 0..10_000 {
                    body.extend_from_slice(&[3, 0, 1, b'a']);
                }
                let _ = sock.write_all(&chunked(20, 0, &body)).await;
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let body = format!(
        "[[streams]]\npath = \"live/h\"\nkey = \"{KEY}\"\n[[streams.push]]\nname = \"evil\"\nurl = \"rtmp://127.0.0.1:{evil_port}/live/k\"\n"
    );
    let srv = Cthulhu::start(&body).await?;
    let mut publisher =
        Ffmpeg::publish_test_pattern(&srv.url(KEY), &PublishOptions::seconds(8.0)).await?;
    srv.wait_for_log("attempt=2", Duration::from_secs(15))
        .await?;
    srv.wait_for_log("AMF0 values nest deeper than 32", Duration::from_secs(5))
        .await?;
    let play = decode_check(&srv.url("h"), Duration::from_secs(2)).await?;
    play.ensure_clean()?;
    publisher.wait_success(Duration::from_secs(30)).await?;
    assert!(answered.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    Ok(())
}
