//! A flood of forged SRT packets against the real server at its default log level
//! (`info`): random datagrams, runts, inductions and conclusions with wrong versions,
//! bad cookies, bad stream ids and garbage extensions, from a few hundred UDP source
//! ports, some of which answer the server's induction responses with a conclusion
//! carrying the right cookie (so they reach the application and are refused there).
//! Meanwhile ffmpeg publishes over SRT and another ffmpeg records over RTMP.
//!
//! The server must stay up, serve the publisher, keep its log small (refusals are
//! summarised, not logged one by one) and say what it refused.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use common::Cthulhu;
use cthulhu_testkit::{Ffmpeg, PublishOptions, decode_check};
use tokio::net::UdpSocket;

const KEY: &str = "flood-studio-key-1";
/// Flood duration.
const FLOOD: Duration = Duration::from_secs(20);
/// UDP source ports of the flood.
const PORTS: usize = 300;
/// Each port sends one forged packet per tick (300 ports: 15,000 packets/s).
const TICK: Duration = Duration::from_millis(20);
/// How much the server's log may grow while it is flooded.
const MAX_LOG_GROWTH: u64 = 2 * 1024 * 1024;

/// xorshift32: enough randomness for garbage, no dependency.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }

    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A 64-byte SRT handshake (header and fixed part, IPv4 peer address).
fn handshake(version: u32, type_field: u32, shake_type: i32, sockid: u32, cookie: i32) -> Vec<u8> {
    let mut d = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    d.extend_from_slice(&version.to_be_bytes());
    d.extend_from_slice(&type_field.to_be_bytes());
    d.extend_from_slice(&0x1234_5678_u32.to_be_bytes()); // initial sequence number
    d.extend_from_slice(&1500u32.to_be_bytes());
    d.extend_from_slice(&8192u32.to_be_bytes());
    d.extend_from_slice(&shake_type.to_be_bytes());
    d.extend_from_slice(&sockid.to_be_bytes());
    d.extend_from_slice(&cookie.to_be_bytes());
    d.extend_from_slice(&[1, 0, 0, 127]);
    d.extend_from_slice(&[0; 12]);
    d
}

fn ext(ty: u16, content: &[u8]) -> Vec<u8> {
    let mut v = ty.to_be_bytes().to_vec();
    // Length in 32-bit words (the contents here are at most a few hundred bytes).
    v.extend_from_slice(&(content.len().div_ceil(4) as u16).to_be_bytes());
    v.extend_from_slice(content);
    v.resize(4 + content.len().div_ceil(4) * 4, 0);
    v
}

/// A string extension the way libsrt encodes it (32-bit words, each little-endian).
fn ext_str(ty: u16, s: &[u8]) -> Vec<u8> {
    let mut b = s.to_vec();
    b.resize(s.len().div_ceil(4) * 4, 0);
    let words: Vec<u8> = b
        .chunks(4)
        .flat_map(|w| w.iter().rev().copied().collect::<Vec<_>>())
        .collect();
    ext(ty, &words)
}

fn hsreq(flags: u32) -> Vec<u8> {
    let mut c = 0x0001_0501_u32.to_be_bytes().to_vec();
    c.extend_from_slice(&flags.to_be_bytes());
    c.extend_from_slice(&[0, 120, 0, 120]);
    ext(1, &c)
}

/// An HSv5 conclusion request (extension flags HSREQ and CONFIG) with `exts`.
fn conclusion(sockid: u32, cookie: i32, exts: &[Vec<u8>]) -> Vec<u8> {
    let mut d = handshake(5, 0x0005, -1, sockid, cookie);
    for e in exts {
        d.extend_from_slice(e);
    }
    d
}

/// Stream ids no one may use: unknown streams, the wrong key, garbage, too long.
fn bad_stream_id(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0 => format!("#!::r=live/nope{},m=publish,s=guess", rng.below(1000)).into_bytes(),
        1 => b"#!::r=live/studio,m=publish,s=wrong-key".to_vec(),
        2 => format!("#!::r=live/missing{},m=request", rng.below(1000)).into_bytes(),
        3 => rng.bytes(40),
        4 => vec![b'x'; 600],
        _ => b"#!::r=,m=dance".to_vec(),
    }
}

/// Extensions a hostile caller adds: file mode, FEC, groups, unknown types, responses
/// in a request, truncated lengths.
fn garbage_extensions(rng: &mut Rng) -> Vec<Vec<u8>> {
    match rng.below(9) {
        0 => vec![ext_str(6, b"file")],
        1 => vec![ext_str(7, b"cols:4,rows:2")],
        2 => vec![ext(8, &[1, 2, 3, 4, 5, 6, 7, 8])],
        3 => vec![ext(42, &rng.bytes(16))],
        4 => vec![ext(4, &rng.bytes(24))],
        5 => {
            let mut e = ext(5, &rng.bytes(8));
            e[2..4].copy_from_slice(&200u16.to_be_bytes()); // claims 800 bytes
            vec![e]
        }
        6 => vec![ext(3, &rng.bytes(20))],
        // An empty stream id before another extension (srt-protocol 0.4.4 panics).
        7 => vec![ext(5, &[]), hsreq(0xBF)],
        _ => vec![rng.bytes(7)],
    }
}

/// One forged packet, not an answer to anything.
fn forged(rng: &mut Rng, sockid: u32) -> Vec<u8> {
    let cookie = rng.next() as i32;
    match rng.below(20) {
        // Random datagrams of any length.
        0..=4 => {
            let len = rng.below(1500) as usize;
            rng.bytes(len)
        }
        5 => {
            let len = rng.below(16) as usize;
            rng.bytes(len)
        }
        // Inductions (the server answers with a cookie) and ones with a wrong version.
        6..=9 => handshake(4, 2, 1, sockid, 0),
        10 => handshake(3 + 4 * rng.below(2), 2, 1, sockid, 0),
        // Conclusions with a bad cookie, a wrong version, garbage extensions.
        11 | 12 => {
            let sid = bad_stream_id(rng);
            conclusion(sockid, cookie, &[hsreq(0xBF), ext_str(5, &sid)])
        }
        13 => {
            let mut d = conclusion(sockid, cookie, &[hsreq(0xBF)]);
            d[16..20].copy_from_slice(&4u32.to_be_bytes());
            d
        }
        14 | 15 => {
            let mut exts = vec![hsreq(rng.next())];
            exts.extend(garbage_extensions(rng));
            conclusion(sockid, cookie, &exts)
        }
        // Other handshake types, garbage after a handshake header.
        16 => {
            let ty = [0, -2, 1005, 2400, 7][rng.below(5) as usize];
            handshake(5, rng.next(), ty, sockid, cookie)
        }
        _ => {
            let mut d = handshake(5, rng.next(), -1, sockid, cookie);
            let len = rng.below(200) as usize;
            d.extend(rng.bytes(len));
            d
        }
    }
}

/// A conclusion answering an induction response, with its cookie, that the
/// application has to refuse.
fn answer(rng: &mut Rng, sockid: u32, cookie: i32) -> Vec<u8> {
    let sid = bad_stream_id(rng);
    let mut exts = vec![hsreq(0xBF), ext_str(5, &sid)];
    if rng.below(4) == 0 {
        exts.extend(garbage_extensions(rng));
    }
    if rng.below(8) == 0 {
        exts.remove(1); // no stream id
    }
    conclusion(sockid, cookie, &exts)
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    induction_responses: AtomicU64,
    answered: AtomicU64,
}

/// One flooding port until `stop`.
async fn flood_port(
    server: std::net::SocketAddr,
    seed: u32,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) -> Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let mut rng = Rng(seed | 1);
    let sockid = rng.next() | 1;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = tick.tick() => {
                let d = forged(&mut rng, sockid);
                if socket.send_to(&d, server).await.is_ok() {
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            r = socket.recv_from(&mut buf) => {
                let Ok((n, _)) = r else { continue };
                let d = &buf[..n];
                // An induction response: type 1 at byte 36, cookie at byte 44.
                if n >= 64 && d[0] == 0x80 && d[36..40] == 1i32.to_be_bytes() {
                    counts.induction_responses.fetch_add(1, Ordering::Relaxed);
                    // A third of them get a conclusion with the right cookie.
                    if rng.below(3) == 0 {
                        let cookie = i32::from_be_bytes([d[44], d[45], d[46], d[47]]);
                        let c = answer(&mut rng, sockid, cookie);
                        if socket.send_to(&c, server).await.is_ok() {
                            counts.sent.fetch_add(1, Ordering::Relaxed);
                            counts.answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_flood_is_summarised_and_the_publisher_gets_through() -> Result<()> {
    // The production default log level, as the log's growth is what is measured.
    let mut srv = Cthulhu::start_logging(
        "info",
        &format!("[[streams]]\npath = \"live/studio\"\nkey = \"{KEY}\"\n"),
        "latency_ms = 500",
    )
    .await?;
    let work = tempfile::tempdir()?;
    let target: std::net::SocketAddr = ([127, 0, 0, 1], srv.srt_port).into();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = srv.log_len();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let started = tokio::time::Instant::now();
    let mut flooders = Vec::new();
    for i in 0..PORTS {
        let seed = 0x9E37_79B9_u32.wrapping_mul(i as u32 + 1);
        flooders.push(tokio::spawn(flood_port(
            target,
            seed,
            stop.clone(),
            counts.clone(),
        )));
    }

    // The real publisher and player join while the flood is on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The stream id as is: ffmpeg 5 does not percent-decode it (so not srt_url).
    let url = format!(
        "srt://127.0.0.1:{}?streamid=#!::r=live/studio,m=publish,s={KEY}&latency=500000",
        srv.srt_port
    );
    let mut publisher = Ffmpeg::publish_test_pattern(
        &url,
        &PublishOptions {
            format: "mpegts".into(),
            ..PublishOptions::seconds(14.0)
        },
    )
    .await?;
    let connected = srv
        .wait_for_log_after(before, "SRT publisher connected", Duration::from_secs(10))
        .await;
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
        "-t",
        "10",
        "-f",
        "flv",
        recording.to_str().unwrap_or_default(),
    ])
    .await?;

    tokio::time::sleep_until(started + FLOOD).await;
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.await??;
    }
    let flooded = started.elapsed();
    // What the server still logs about the flood's last moments.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grown = srv.log_len().saturating_sub(before);
    let sent = counts.sent.load(Ordering::Relaxed);
    let log = srv.log();
    eprintln!(
        "flood: {sent} packets from {PORTS} ports in {flooded:.1?}; {} induction responses, \
         {} answered with their cookie; the log grew by {grown} bytes ({} lines)",
        counts.induction_responses.load(Ordering::Relaxed),
        counts.answered.load(Ordering::Relaxed),
        log.lines().count(),
    );
    // The whole log when it is small, else its start (shown with --nocapture).
    for l in log.lines().take(300) {
        eprintln!("  {l}");
    }

    ensure!(
        srv.proc.is_running(),
        "the server died: {}",
        srv.proc.log_tail()
    );

    // Everything else is checked and reported together.
    let mut failed: Vec<String> = Vec::new();
    if grown >= MAX_LOG_GROWTH {
        failed.push(format!(
            "the log grew by {grown} bytes during the flood (limit {MAX_LOG_GROWTH})"
        ));
    }
    let published = async {
        connected?;
        publisher.wait_success(Duration::from_secs(40)).await?;
        recorder.wait(Duration::from_secs(30)).await?;
        let report = decode_check(
            recording.to_str().unwrap_or_default(),
            Duration::from_secs(20),
        )
        .await?;
        report.ensure_clean()?;
        ensure!(
            report.video_seconds > 9.0,
            "the RTMP recording has {} s",
            report.video_seconds
        );
        anyhow::Ok(report.video_seconds)
    }
    .await;
    match &published {
        Ok(secs) => eprintln!("publisher got through; the recording decodes ({secs:.1} s)"),
        Err(e) => failed.push(format!("publisher or recording: {e:#}")),
    }
    let log = srv.log();
    let connects = log.matches("SRT publisher connected").count();
    if connects != 1 {
        failed.push(format!("the publisher connected {connects} times"));
    }
    if !log
        .lines()
        .any(|l| l.contains("Refused ") && l.contains("SRT handshakes from"))
    {
        failed.push("no refusal summary in the log".to_owned());
    }
    if log.contains(KEY) {
        failed.push("the key was logged".to_owned());
    }
    ensure!(
        failed.is_empty(),
        "{}; log tail:\n{}",
        failed.join("; "),
        srv.proc.log_tail()
    );
    Ok(())
}
