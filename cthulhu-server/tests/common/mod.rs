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
    /// The HTTP API's port (127.0.0.1).
    pub http_port: u16,
    /// How many times [`Self::restart`] ran.
    pub restarts: u32,
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
        Self::launch(log, body, srt, &[]).await
    }

    /// Like [`Self::start`], with `extra_args` on the command line after
    /// `--config FILE` (e.g. `["--log-format", "json"]`). [`Self::restart`] does not
    /// repeat them.
    pub async fn start_with_args(body: &str, extra_args: &[&str]) -> Result<Self> {
        Self::launch("info,cthulhu=debug", body, "", extra_args).await
    }

    /// Writes the config (RTMP, SRT and HTTP on free loopback ports) and starts the
    /// server on it.
    async fn launch(log: &str, body: &str, srt: &str, extra_args: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let srt_port = free_udp_port();
        let http_port = free_port();
        let config = format!(
            "[server]\ndata_dir = \"{}\"\nlog = \"{log}\"\n[rtmp]\nlisten = \"127.0.0.1:{port}\"\n{body}\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\n{srt}\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
            dir.path().join("data").display()
        );
        let path = dir.path().join("cthulhu.toml");
        std::fs::write(&path, config)?;
        let proc = spawn(&path, port, extra_args, &dir.path().join("server.log")).await?;
        Ok(Self {
            proc,
            port,
            srt_port,
            http_port,
            restarts: 0,
            dir,
        })
    }

    /// Stops the server with SIGTERM (it unpublishes and finishes recordings) and
    /// starts it again on the same config file and data directory; the new process
    /// logs to `server2.log` (then `server3.log`, ...).
    pub async fn restart(&mut self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.proc.pid().to_string()])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        self.proc.wait_timeout(Duration::from_secs(30)).await?;
        self.restarts += 1;
        let log = self
            .dir
            .path()
            .join(format!("server{}.log", self.restarts + 1));
        self.proc = spawn(&self.config_path(), self.port, &[], &log).await?;
        Ok(())
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("cthulhu.toml")
    }

    /// `http://127.0.0.1:HTTP_PORT/api/v1/PATH`.
    pub fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api/v1/{path}", self.http_port)
    }

    /// Creates an API token with the CLI (`token create`), as an operator would while
    /// the server runs.
    pub async fn create_token(&self, name: &str) -> Result<String> {
        let out = Command::new(bin())
            .args(["token", "create", "--name", name, "--config"])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
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

    /// `GET /metrics`: the exposition text.
    pub async fn metrics(&self) -> Result<String> {
        let resp = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port)).await?;
        anyhow::ensure!(resp.status().is_success(), "/metrics: {}", resp.status());
        Ok(resp.text().await?)
    }

    /// Everything the server logged so far (ANSI colours removed).
    pub fn log(&self) -> String {
        strip_ansi(&self.proc.log())
    }

    /// The log's size in bytes now: an offset for [`Self::log_from`] and
    /// [`Self::wait_for_log_after`], or a measure of how much a test made it grow.
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(self.proc.log_path()).map_or(0, |m| m.len())
    }

    /// The log from byte `offset` on (ANSI colours removed).
    pub fn log_from(&self, offset: u64) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.log_bytes_from(offset)))
    }

    /// The log's bytes from `offset` on, as written.
    fn log_bytes_from(&self, offset: u64) -> Vec<u8> {
        use std::io::{Read, Seek, SeekFrom};
        let mut out = Vec::new();
        if let Ok(mut f) = std::fs::File::open(self.proc.log_path()) {
            let _ = f.seek(SeekFrom::Start(offset));
            let _ = f.read_to_end(&mut out);
        }
        out
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        self.wait_for_log_after(0, needle, timeout).await
    }

    /// Waits until a line logged from byte `offset` on contains `needle`. Reads only
    /// what was added since the last look (a flooded server's log may be large); the
    /// error shows the log from `offset` on.
    pub async fn wait_for_log_after(
        &self,
        mut offset: u64,
        needle: &str,
        timeout: Duration,
    ) -> Result<()> {
        let start = offset;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let new = self.log_bytes_from(offset);
            if strip_ansi(&String::from_utf8_lossy(&new)).contains(needle) {
                return Ok(());
            }
            // Skip the complete lines only: an incomplete last line (or a character
            // cut in two) is read again next time.
            let complete = new.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            offset += u64::try_from(complete).unwrap_or(0);
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{needle:?} not logged within {timeout:?}; log:\n{}",
                    self.log_from(start)
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

/// Sends `method path` to the API (`/api/v1/PATH`) with `body` as the bearer of
/// `token`; returns the status and the JSON answer (Null when empty).
pub async fn call(
    http: &reqwest::Client,
    srv: &Cthulhu,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(reqwest::StatusCode, serde_json::Value)> {
    let mut req = http.request(method, srv.api(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    let value = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("{status}: {text}"))?
    };
    Ok((status, value))
}

/// The entry of `live/studio`'s `list` (`destinations`, `recordings`) whose `field`
/// is `value`, as `GET /api/v1/streams/live/studio` shows it (Null if none).
pub async fn studio_entry(
    http: &reqwest::Client,
    srv: &Cthulhu,
    token: &str,
    list: &str,
    field: &str,
    value: &str,
) -> Result<serde_json::Value> {
    let (status, stream) = call(
        http,
        srv,
        Some(token),
        reqwest::Method::GET,
        "streams/live/studio",
        None,
    )
    .await?;
    anyhow::ensure!(status == reqwest::StatusCode::OK, "{status} {stream}");
    Ok(stream[list]
        .as_array()
        .and_then(|a| a.iter().find(|e| e[field] == value).cloned())
        .unwrap_or(serde_json::Value::Null))
}

/// The value of `series` (a name and its labels, exactly as `/metrics` writes them:
/// `cthulhu_streams_live`, `cthulhu_stream_live{stream="live/studio"}`) in an
/// exposition text, if it is there.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}

/// Starts the server binary on `config` (logging to `log`) and waits until it
/// listens for RTMP on `port`.
async fn spawn(config: &Path, port: u16, extra_args: &[&str], log: &Path) -> Result<ChildGuard> {
    let mut cmd = Command::new(bin());
    // The config's `log` decides what the server logs: the server lets `RUST_LOG`
    // win, and one in the tests' environment would change what they wait for and
    // measure (floods are measured at `info`).
    cmd.arg("--config")
        .arg(config)
        .args(extra_args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    let proc = ChildGuard::spawn_with_log("cthulhu-server", cmd, log)?;
    wait_for_port(port, Duration::from_secs(10))
        .await
        .with_context(|| format!("server did not listen: {}", proc.log_tail()))?;
    Ok(proc)
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
