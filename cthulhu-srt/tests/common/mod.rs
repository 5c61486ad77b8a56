//! Helpers shared by the integration tests: real peers (srt-live-transmit,
//! ffmpeg) on 127.0.0.1, test media, free UDP ports.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use cthulhu_srt::SrtReceiver;
use cthulhu_testkit::{ChildGuard, Ffmpeg, PublishOptions, find_tool};
use tokio::process::Command;

/// Logs to the test output (`RUST_LOG` overrides; default debug for us).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("cthulhu_srt=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The tools a test needs, or `None` (after printing why) to skip it.
pub fn tools(names: &[&str]) -> Option<Vec<PathBuf>> {
    let mut found = Vec::new();
    for name in names {
        match find_tool(name) {
            Some(p) => found.push(p),
            None => {
                eprintln!(
                    "SKIPPED: `{name}` is not installed (Debian: apt-get install {}); \
                     scripts/test installs it",
                    if *name == "srt-live-transmit" {
                        "srt-tools"
                    } else {
                        "ffmpeg"
                    }
                );
                return None;
            }
        }
    }
    Some(found)
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// Writes an MPEG-TS test pattern (`secs` seconds at `kbps`) and returns its bytes.
pub async fn make_ts(dir: &Path, name: &str, secs: f64, kbps: u32) -> Result<Vec<u8>> {
    let path = dir.join(name);
    let opts = PublishOptions {
        video_bitrate_kbps: kbps,
        format: "mpegts".into(),
        ..PublishOptions::seconds(secs)
    };
    Ffmpeg::write_test_file(&path, &opts).await?;
    std::fs::read(&path).context("reading the test file")
}

/// Runs a shell command line under a [`ChildGuard`] (killed on drop).
pub fn sh(name: &str, script: &str) -> Result<ChildGuard> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    ChildGuard::spawn(name, cmd)
}

/// Single-quotes `s` for sh.
pub fn q(s: &Path) -> String {
    format!("'{}'", s.display().to_string().replace('\'', "'\\''"))
}

/// An srt-live-transmit caller that sends `file` paced in real time (ffmpeg
/// `-re` remux to stdout, copied to `sent` with tee), keeps the connection open
/// `linger_secs` after the end, then exits. `srt_query` is appended to the URI
/// (e.g. `streamid=x&passphrase=...`).
pub fn slt_send_paced(
    file: &Path,
    sent: &Path,
    addr: SocketAddr,
    srt_query: &str,
    linger_secs: u32,
) -> Result<ChildGuard> {
    let script = format!(
        "(ffmpeg -hide_banner -nostdin -loglevel error -re -i {file} -c copy -f mpegts - ; sleep {linger_secs}) \
         | tee {sent} | srt-live-transmit -a:no -t:60 -c:1316 file://con 'srt://{addr}?latency=300&{srt_query}'",
        file = q(file),
        sent = q(sent),
    );
    sh("slt-caller", &script)
}

/// An srt-live-transmit caller that sends `file` as fast as it reads it.
pub fn slt_send_file(file: &Path, addr: SocketAddr, srt_query: &str) -> Result<ChildGuard> {
    let script = format!(
        "(cat {file}; sleep 2) | srt-live-transmit -a:no -t:30 -c:1316 file://con 'srt://{addr}?latency=300&{srt_query}'",
        file = q(file),
    );
    sh("slt-caller", &script)
}

/// Reads everything from `rx` until it closes or nothing arrives for `idle`.
pub async fn read_all(rx: &mut SrtReceiver, idle: Duration, max_total: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + max_total;
    loop {
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(m)) => out.extend_from_slice(&m),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// Index of the first differing byte (for messages).
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}
