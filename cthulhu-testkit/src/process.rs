//! Child-process ownership, log capture and tool lookup.

use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// How many lines of a peer's log are quoted in error messages.
const LOG_TAIL_LINES: usize = 40;
/// Upper bound on how much of a log file is read to build a tail.
const LOG_TAIL_BYTES: u64 = 16 * 1024;
/// Directories searched after `PATH`: nginx lives in `/usr/sbin`, which is not
/// in a normal user's `PATH` on Debian.
const EXTRA_TOOL_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Creates a temporary directory named `cthulhu-<what>-XXXX`. With
/// `CTHULHU_TESTKIT_KEEP=1` in the environment it is not deleted on drop.
pub(crate) fn temp_dir(what: &str) -> Result<TempDir> {
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("cthulhu-{what}-"))
        .tempdir()
        .context("creating a temporary directory")?;
    if std::env::var_os("CTHULHU_TESTKIT_KEEP").is_some_and(|v| v != "0") {
        dir.disable_cleanup(true);
        eprintln!("cthulhu-testkit: keeping {}", dir.path().display());
    }
    Ok(dir)
}

/// Returns the last `max_lines` lines of the file at `path` (at most the last
/// 16 KiB), or a note saying why it could not be read.
pub(crate) fn file_tail(path: &Path, max_lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        let start = len.saturating_sub(LOG_TAIL_BYTES);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(max_lines);
            lines[skip..].join("\n")
        }
        Err(e) => format!("<could not read {}: {e}>", path.display()),
    }
}

/// Owns a spawned child process: the process is killed (SIGKILL) when the
/// guard is dropped, and its stdout and stderr are appended to a log file whose
/// tail is quoted in error messages.
///
/// Use it for any process a test starts, e.g. the server binary under test:
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// let mut cmd = tokio::process::Command::new("sleep");
/// cmd.arg("60");
/// let mut guard = cthulhu_testkit::ChildGuard::spawn("sleep", cmd)?;
/// assert!(guard.is_running());
/// guard.kill().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    pid: u32,
    log_path: PathBuf,
    status: Option<ExitStatus>,
    // Declared last so the log directory outlives the process handle.
    _log_dir: Option<TempDir>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and stdout+stderr going to a log file in
    /// a fresh temporary directory. `name` is used in messages.
    pub fn spawn(name: &str, cmd: Command) -> Result<Self> {
        let dir = temp_dir(name)?;
        let log_path = dir.path().join(format!("{name}.log"));
        let mut guard = Self::spawn_with_log(name, cmd, &log_path)?;
        guard._log_dir = Some(dir);
        Ok(guard)
    }

    /// Like [`ChildGuard::spawn`] but appends the output to `log_path`
    /// (created if missing); the caller owns that file's directory.
    pub fn spawn_with_log(name: &str, mut cmd: Command, log_path: &Path) -> Result<Self> {
        let open_log = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path)
                .with_context(|| format!("opening log file {}", log_path.display()))
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(open_log()?))
            .stderr(Stdio::from(open_log()?))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("{name} exited before its pid could be read"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            log_path: log_path.to_owned(),
            status: None,
            _log_dir: None,
        })
    }

    /// The name given at spawn time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (valid until the process is reaped).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Path of the file receiving the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log captured so far (lossy UTF-8).
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last lines of the captured log.
    pub fn log_tail(&self) -> String {
        file_tail(&self.log_path, LOG_TAIL_LINES)
    }

    /// A description for error messages: name, pid, exit status and log tail.
    pub fn describe(&self) -> String {
        let status = match self.status {
            Some(s) => format!("exited: {s}"),
            None => "running or not yet reaped".to_owned(),
        };
        format!(
            "{} (pid {}, {status}); last lines of {}:\n{}",
            self.name,
            self.pid,
            self.log_path.display(),
            self.log_tail()
        )
    }

    /// Returns the exit status if the process has exited, without blocking.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("polling {}", self.name))?;
        }
        Ok(self.status)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit. On timeout the process
    /// keeps running (it is still killed on drop) and an error with the log
    /// tail is returned.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.status = Some(status);
                Ok(status)
            }
            Ok(Err(e)) => Err(e).with_context(|| format!("waiting for {}", self.describe())),
            Err(_) => bail!(
                "{} did not exit within {timeout:?}: {}",
                self.name,
                self.describe()
            ),
        }
    }

    /// Waits up to `timeout` and fails unless the process exited with status 0.
    pub async fn wait_success(&mut self, timeout: Duration) -> Result<()> {
        let status = self.wait_timeout(timeout).await?;
        if !status.success() {
            bail!("{} failed: {}", self.name, self.describe());
        }
        Ok(())
    }

    /// Kills the process with SIGKILL and reaps it. Returns the exit status
    /// (the earlier one if it had already exited).
    pub async fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_status()? {
            return Ok(status);
        }
        // An error here means it exited in the meantime; `wait` sorts it out.
        let _ = self.child.start_kill();
        self.wait_timeout(Duration::from_secs(10)).await
    }
}

/// Looks for an executable called `name` in `PATH`, then in `/usr/local/sbin`,
/// `/usr/sbin` and `/sbin`. A `name` containing `/` is checked as a path.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let is_exe = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exe(&p).then_some(p);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(EXTRA_TOOL_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_exe(p))
}

/// Like [`find_tool`], but a missing tool is an error with instructions.
/// Integration tests should call this (directly or through the peer helpers)
/// and fail rather than skip: CI installs every peer via `scripts/test`.
pub fn require_tool(name: &str) -> Result<PathBuf> {
    find_tool(name).ok_or_else(|| {
        let package = match name {
            "ffmpeg" | "ffprobe" => "ffmpeg",
            "nginx" => "nginx libnginx-mod-rtmp",
            "srt-live-transmit" => "srt-tools",
            "moto_server" => "'moto[server]' (pip; scripts/test installs it into its venv)",
            other => other,
        };
        anyhow!(
            "required tool `{name}` was not found in PATH or {EXTRA_TOOL_DIRS:?}. \
             Integration tests run real peers and do not skip when one is missing: \
             run `scripts/test` (installs what is missing) or install it yourself, \
             e.g. `apt-get install {package}`"
        )
    })
}

/// Resident set size of process `pid` in KiB (`VmRSS` from
/// `/proc/<pid>/status`), or `None` if the process does not exist.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix("VmRSS:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Sends `sig` (`-STOP`, `-CONT`, ...) to process `pid` with kill(1).
pub(crate) fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill {sig} {pid} failed: {status}");
    }
    Ok(())
}
