//! Helpers shared by the integration tests: real peers (srt-live-transmit,
//! ffmpeg) on 127.0.0.1, test media, free UDP ports.

#![allow(dead_code, unreachable_pub, missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use cthulhu_srt::SrtReceiver;
use cthulhu_testkit::{ChildGuard, Ffmpeg, PublishOptions, require_tool};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};

/// Logs to the test output (`RUST_LOG` overrides; default debug for us).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("cthulhu_srt=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Fails the test unless every tool it needs is installed (`scripts/test` installs
/// them; peers are never skipped).
pub fn require_tools(names: &[&str]) {
    for name in names {
        if let Err(e) = require_tool(name) {
            panic!("{e:#}");
        }
    }
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

/// Appends MPEG-TS null packets until the length is a multiple of 1316
/// (seven TS packets): srt-live-transmit reads stdin in whole 1316-byte
/// chunks and does not send a partial last chunk.
pub fn pad_to_chunks(ts: &mut Vec<u8>) {
    let mut null = vec![0xFF_u8; 188];
    null[..4].copy_from_slice(&[0x47, 0x1F, 0xFF, 0x10]);
    while !ts.len().is_multiple_of(1316) {
        ts.extend_from_slice(&null);
    }
}

/// A running srt-live-transmit with its stdin piped (we feed it) and stdout
/// going to a file; killed on drop. stderr goes to a log file.
pub struct Slt {
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Slt {
    /// Starts `srt-live-transmit -a:no -t:TIMEOUT -c:1316 INPUT OUTPUT`;
    /// stdout goes to `stdout` (or is discarded).
    pub fn spawn(
        input: &str,
        output: &str,
        stdout: Option<&Path>,
        timeout_secs: u32,
    ) -> Result<Slt> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("slt.log");
        let mut cmd = Command::new("srt-live-transmit");
        cmd.arg("-a:no")
            .arg(format!("-t:{timeout_secs}"))
            .arg("-c:1316")
            .arg("-ll:note")
            .arg(input)
            .arg(output)
            .stdin(Stdio::piped())
            .stdout(match stdout {
                Some(p) => Stdio::from(std::fs::File::create(p)?),
                None => Stdio::null(),
            })
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawning srt-live-transmit")?;
        let stdin = child.stdin.take();
        Ok(Slt {
            child,
            stdin,
            log,
            _dir: dir,
        })
    }

    /// A caller sending stdin to `addr` with extra URI options.
    pub fn caller(addr: SocketAddr, query: &str) -> Result<Slt> {
        Slt::spawn(
            "file://con",
            &format!("srt://{addr}?latency=300&{query}"),
            None,
            60,
        )
    }

    /// A listener on 127.0.0.1:`port` writing what it receives to `out`.
    pub fn listener(port: u16, query: &str, out: &Path) -> Result<Slt> {
        Slt::spawn(
            &format!("srt://127.0.0.1:{port}?mode=listener&latency=300&{query}"),
            "file://con",
            Some(out),
            60,
        )
    }

    /// Writes `data` to stdin in 1316-byte chunks evenly spread over
    /// `duration` (real-time pacing). Stdin stays open.
    pub async fn feed_paced(&mut self, data: &[u8], duration: Duration) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        let chunks: Vec<&[u8]> = data.chunks(1316).collect();
        let start = tokio::time::Instant::now();
        let n = u32::try_from(chunks.len()).unwrap_or(u32::MAX).max(1);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let at = start + duration * u32::try_from(i).unwrap_or(u32::MAX) / n;
            tokio::time::sleep_until(at).await;
            stdin
                .write_all(chunk)
                .await
                .context("writing to srt-live-transmit")?;
            stdin.flush().await?;
        }
        Ok(())
    }

    /// Closes stdin (srt-live-transmit sees EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()?
            .ok()
    }

    /// Asks it to stop with SIGTERM (it flushes its output and exits), then
    /// waits up to `timeout`.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        self.wait_exit(timeout).await
    }

    /// True while it runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Waits until the file at `path` has at least `len` bytes (or `timeout`);
/// returns its content.
pub async fn wait_file_len(path: &Path, len: usize, timeout: Duration) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = std::fs::read(path).unwrap_or_default();
        if got.len() >= len || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
