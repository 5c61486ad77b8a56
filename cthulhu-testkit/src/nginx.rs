//! A private nginx-rtmp instance per test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tokio::process::Command;

use crate::net::pid_is_listening;
use crate::process::{ChildGuard, file_tail, require_tool, temp_dir};

/// The single RTMP application configured in the generated nginx.conf.
const APP: &str = "live";
/// How long nginx may take to start listening. nginx retries a failing
/// `bind()` 5 times, 500 ms apart, before giving up, hence more than 2.5 s.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Well-known locations of the dynamic rtmp module (Debian/Ubuntu, Fedora,
/// source builds).
const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/nginx/modules/ngx_rtmp_module.so",
    "/usr/share/nginx/modules/ngx_rtmp_module.so",
    "/usr/lib64/nginx/modules/ngx_rtmp_module.so",
    "/usr/local/nginx/modules/ngx_rtmp_module.so",
];

/// Finds the nginx rtmp module to `load_module`.
///
/// Order: the `CTHULHU_NGINX_RTMP_MODULE` environment variable; the
/// `load_module` line of `/etc/nginx/modules-enabled/*rtmp*.conf` (a relative
/// path there is relative to nginx's `--prefix`, `/usr/share/nginx` on
/// Debian); well-known module directories. Returns `Ok(None)` if the module is
/// compiled into the nginx binary (`--add-module=...rtmp...` in `nginx -V`).
pub fn rtmp_module_path() -> Result<Option<PathBuf>> {
    if let Some(p) = std::env::var_os("CTHULHU_NGINX_RTMP_MODULE") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("CTHULHU_NGINX_RTMP_MODULE={} is not a file", p.display());
        }
        return Ok(Some(p));
    }
    let configure = nginx_configure_args();
    let prefix = configure
        .split_whitespace()
        .find_map(|a| a.strip_prefix("--prefix="))
        .map(PathBuf::from);
    if let Some(p) = module_from_modules_enabled(prefix.as_deref()) {
        return Ok(Some(p));
    }
    if let Some(p) = MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    {
        return Ok(Some(p));
    }
    let static_module = configure
        .split_whitespace()
        .any(|a| a.starts_with("--add-module=") && a.contains("rtmp"));
    if static_module {
        return Ok(None);
    }
    bail!(
        "the nginx rtmp module was not found (looked at /etc/nginx/modules-enabled/*rtmp*.conf \
         and {MODULE_CANDIDATES:?}); install it (`apt-get install libnginx-mod-rtmp`, which \
         `scripts/test` does) or set CTHULHU_NGINX_RTMP_MODULE to the .so file"
    )
}

/// `nginx -V` output (it prints to stderr), empty if nginx cannot be run.
fn nginx_configure_args() -> String {
    let Some(nginx) = crate::process::find_tool("nginx") else {
        return String::new();
    };
    std::process::Command::new(nginx)
        .arg("-V")
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stderr).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stdout));
            s
        })
        .unwrap_or_default()
}

/// Parses `load_module <path>;` out of `/etc/nginx/modules-enabled/*rtmp*.conf`.
fn module_from_modules_enabled(prefix: Option<&Path>) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/etc/nginx/modules-enabled").ok()?;
    let mut confs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("rtmp"))
        })
        .collect();
    confs.sort();
    let roots: Vec<PathBuf> = prefix
        .map(Path::to_path_buf)
        .into_iter()
        .chain(["/usr/share/nginx", "/etc/nginx"].map(PathBuf::from))
        .collect();
    for conf in confs {
        // Symlinks into modules-available are followed by read_to_string.
        let Ok(text) = std::fs::read_to_string(&conf) else {
            continue;
        };
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("load_module") else {
                continue;
            };
            let raw = rest.trim().trim_end_matches(';').trim().trim_matches('"');
            let path = PathBuf::from(raw);
            if path.is_absolute() {
                if path.is_file() {
                    return Some(path);
                }
            } else if let Some(found) = roots.iter().map(|r| r.join(&path)).find(|p| p.is_file()) {
                return Some(found);
            }
        }
    }
    None
}

/// A private nginx with the rtmp module, listening on 127.0.0.1 only.
///
/// The generated config has one application, `live`, with `live on` (so
/// streams can be played while published), `wait_key on` (a player joining
/// mid-GOP gets video from the next keyframe on, so it decodes cleanly) and
/// `record all` into `<dir>/rec/<name>.flv` (`record_unique off`: publishing
/// the same name again overwrites the recording).
///
/// nginx runs in the foreground with `master_process off` (one process, no
/// privilege drop even as root, so it can always write to its temporary
/// directory), with `pid`, `error_log` (level `info`, which logs RTMP
/// `connect`/`publish`/`play` events) and the access log inside that
/// directory; `-e` keeps nginx from touching `/var/log/nginx` before the
/// config is read. The system nginx service is neither used nor touched.
#[derive(Debug)]
pub struct Nginx {
    port: u16,
    nginx_bin: PathBuf,
    proc: Option<ChildGuard>,
    /// Length of `error.log` when the current process was started, so log
    /// searches only see the current incarnation.
    log_offset: u64,
    // Declared last: the process is killed before its directory is removed.
    dir: TempDir,
}

impl Nginx {
    /// Writes a config and starts nginx-rtmp on 127.0.0.1:`port` (use
    /// [`crate::free_port`]); returns once this nginx process listens there.
    /// Fails fast (with the error log) if nginx logs an `[emerg]`, e.g. when
    /// the port is taken.
    pub async fn start_rtmp(port: u16) -> Result<Nginx> {
        let nginx_bin = require_tool("nginx")?;
        let module = rtmp_module_path()?;
        let dir = temp_dir("nginx")?;
        std::fs::create_dir_all(dir.path().join("rec")).context("creating rec dir")?;
        let config = rtmp_config(dir.path(), port, module.as_deref());
        std::fs::write(dir.path().join("nginx.conf"), config).context("writing nginx.conf")?;
        let mut nginx = Nginx {
            port,
            nginx_bin,
            proc: None,
            log_offset: 0,
            dir,
        };
        nginx.launch().await?;
        Ok(nginx)
    }

    async fn launch(&mut self) -> Result<()> {
        let dir = self.dir.path();
        self.log_offset = std::fs::metadata(self.error_log_path()).map_or(0, |m| m.len());
        let mut cmd = Command::new(&self.nginx_bin);
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(self.error_log_path());
        let mut guard = ChildGuard::spawn_with_log("nginx", cmd, &dir.join("stderr.log"))?;
        // Ready means *this* nginx listens: a plain connect would also succeed
        // if another process held the port while nginx retries its bind().
        let deadline = Instant::now() + START_TIMEOUT;
        while !pid_is_listening(guard.pid(), self.port) {
            let emerg = self
                .log_since_start()
                .lines()
                .find(|l| l.contains("[emerg]"))
                .map(str::to_owned);
            if !guard.is_running() || emerg.is_some() || Instant::now() >= deadline {
                let _ = guard.kill().await;
                bail!(
                    "nginx did not start listening on 127.0.0.1:{} ({}): {}\nerror.log:\n{}",
                    self.port,
                    emerg.unwrap_or_else(|| format!("timeout {START_TIMEOUT:?} or exit")),
                    guard.describe(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.proc = Some(guard);
        Ok(())
    }

    /// The RTMP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtmp://127.0.0.1:PORT/live/<stream>`: publish or play `stream`.
    pub fn url(&self, stream: &str) -> String {
        format!("{}/{stream}", self.app_url())
    }

    /// `rtmp://127.0.0.1:PORT/live`: the application URL (tcUrl).
    pub fn app_url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/{APP}", self.port)
    }

    /// Where the recording of `stream` is written: `<dir>/rec/<stream>.flv`.
    pub fn recording_path(&self, stream: &str) -> PathBuf {
        self.dir.path().join("rec").join(format!("{stream}.flv"))
    }

    /// The instance's temporary directory (config, logs, recordings).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of nginx's error log (level `info`).
    pub fn error_log_path(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    /// The last lines of the error log.
    pub fn log_tail(&self) -> String {
        file_tail(&self.error_log_path(), 40)
    }

    /// The error log written since the current process was (re)started.
    pub fn log_since_start(&self) -> String {
        let bytes = std::fs::read(self.error_log_path()).unwrap_or_default();
        let start = usize::try_from(self.log_offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// Waits until the error log of the current process contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.log_since_start().contains(needle) {
            if Instant::now() >= deadline {
                bail!(
                    "nginx on port {} did not log {needle:?} within {timeout:?}; error.log:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Waits until someone has started publishing `stream` to the current
    /// process (nginx logs `publish: name='<stream>'`).
    pub async fn wait_for_publish(&self, stream: &str, timeout: Duration) -> Result<()> {
        self.wait_for_log(&format!("publish: name='{stream}'"), timeout)
            .await
    }

    /// Waits until the recording of `stream` exists, is not empty and has not
    /// grown for 500 ms; returns its path. Call it after the publisher is done
    /// (its size never settles while a publisher is still sending).
    pub async fn wait_for_recording(&self, stream: &str, timeout: Duration) -> Result<PathBuf> {
        let path = self.recording_path(stream);
        let deadline = Instant::now() + timeout;
        let mut last: Option<(u64, Instant)> = None;
        loop {
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            let now = Instant::now();
            match last {
                Some((prev, since)) if prev == len && len > 0 => {
                    if now.duration_since(since) >= Duration::from_millis(500) {
                        return Ok(path);
                    }
                }
                _ => last = Some((len, now)),
            }
            if now >= deadline {
                bail!(
                    "recording {} not complete within {timeout:?} (size {len}); error.log:\n{}",
                    path.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The nginx process id, if it is running.
    pub fn pid(&mut self) -> Option<u32> {
        let proc = self.proc.as_mut()?;
        proc.is_running().then(|| proc.pid())
    }

    /// True while the nginx process is alive.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(ChildGuard::is_running)
    }

    /// Kills nginx with SIGKILL (connected peers see the TCP connection
    /// reset), keeping the directory so that [`Nginx::restart`] can bring it
    /// back on the same port. A no-op if it is not running.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut proc) = self.proc.take() {
            proc.kill().await?;
        }
        Ok(())
    }

    /// Kills nginx if it is running and starts it again on the same port with
    /// the same config and directory. nginx binds with `SO_REUSEADDR`, so
    /// connections left in TIME_WAIT do not block the port.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await?;
        self.launch().await
    }

    /// Kills nginx and removes its directory.
    pub async fn stop(mut self) -> Result<()> {
        self.kill().await
    }
}

/// The nginx.conf used by [`Nginx::start_rtmp`].
fn rtmp_config(dir: &Path, port: u16, module: Option<&Path>) -> String {
    let d = dir.display();
    let load_module = module
        .map(|m| format!("load_module \"{}\";\n", m.display()))
        .unwrap_or_default();
    format!(
        r#"# Generated by cthulhu-testkit for one test.
{load_module}daemon off;
master_process off;
pid "{d}/nginx.pid";
error_log "{d}/error.log" info;

events {{
    worker_connections 1024;
}}

rtmp {{
    access_log "{d}/access.log";
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application {APP} {{
            live on;
            wait_key on;
            record all;
            record_path "{d}/rec";
            record_unique off;
        }}
    }}
}}
"#
    )
}
