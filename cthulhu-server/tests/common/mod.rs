//! Shared helpers for the server's integration tests: start the real binary with a
//! config file on free loopback ports.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use cthulhu_testkit::{ChildGuard, free_port, wait_for_port};

/// A UDP port that is free on 127.0.0.1 now.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}
use tokio::process::Command;

/// A running `cthulhu-server` process.
pub struct Cthulhu {
    pub proc: ChildGuard,
    pub port: u16,
    /// The SRT listener's UDP port (127.0.0.1).
    pub srt_port: u16,
    pub dir: tempfile::TempDir,
}

impl Cthulhu {
    /// Starts the server with `body` appended after an `[rtmp]` section on a free port,
    /// and SRT on another free port.
    pub async fn start(body: &str) -> Result<Self> {
        Self::start_with_srt(body, "").await
    }

    /// Like [`Self::start`], with `srt` as extra lines of the `[srt]` section.
    pub async fn start_with_srt(body: &str, srt: &str) -> Result<Self> {
        Self::start_logging("info,cthulhu=debug", body, srt).await
    }

    /// Like [`Self::start_with_srt`], with the log filter `log` (the tests' default
    /// adds debug lines; floods are measured at the production default, `info`).
    pub async fn start_logging(log: &str, body: &str, srt: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let srt_port = free_udp_port();
        let config = format!(
            "[server]\ndata_dir = \"{}\"\nlog = \"{log}\"\n[rtmp]\nlisten = \"127.0.0.1:{port}\"\n{body}\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\n{srt}\n",
            dir.path().join("data").display()
        );
        let path = dir.path().join("cthulhu.toml");
        std::fs::write(&path, config)?;
        let mut me = Self::start_with(&path, port, dir).await?;
        me.srt_port = srt_port;
        Ok(me)
    }

    async fn start_with(config: &Path, port: u16, dir: tempfile::TempDir) -> Result<Self> {
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(config).stdin(Stdio::null());
        let proc =
            ChildGuard::spawn_with_log("cthulhu-server", cmd, &dir.path().join("server.log"))?;
        wait_for_port(port, Duration::from_secs(10))
            .await
            .with_context(|| format!("server did not listen: {}", proc.log_tail()))?;
        Ok(Self {
            proc,
            port,
            srt_port: 0,
            dir,
        })
    }

    /// `srt://127.0.0.1:SRT_PORT?streamid=STREAMID` (the stream id percent-encoded).
    pub fn srt_url(&self, stream_id: &str, extra: &str) -> String {
        let mut id = String::new();
        for b in stream_id.bytes() {
            if b.is_ascii_alphanumeric() || b"-_./".contains(&b) {
                id.push(b as char);
            } else {
                id.push_str(&format!("%{b:02X}"));
            }
        }
        format!("srt://127.0.0.1:{}?streamid={id}{extra}", self.srt_port)
    }

    /// `rtmp://127.0.0.1:PORT/live/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.port)
    }

    /// Everything the server logged so far (ANSI colours removed).
    pub fn log(&self) -> String {
        strip_ansi(&self.proc.log())
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{needle:?} not logged within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Number of log lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// The server's resident memory in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        cthulhu_testkit::rss_kib(self.proc.pid())
    }
}

/// The server binary built by cargo for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cthulhu-server"))
}

/// Removes ANSI colour sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for n in chars.by_ref() {
                if n.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The largest gap between consecutive video packet timestamps of a file, in seconds,
/// and the video duration covered.
pub async fn video_gaps(path: &Path) -> Result<(f64, f64)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .await?;
    let mut times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    anyhow::ensure!(times.len() > 1, "no video packets in {}", path.display());
    let max_gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    let span = times[times.len() - 1] - times[0];
    Ok((max_gap, span))
}
