//! A private nginx-rtmp instance per test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tokio::process::Command;

use crate::net::pid_is_listening;
use crate::process::{ChildGuard, file_tail, require_tool, signal, temp_dir};

/// The single RTMP application configured in the generated nginx.conf.
const APP: &str = "live";
/// How long nginx may take to start listening. nginx retries a failing
/// `bind()` 5 times, 500 ms apart, before giving up, hence more than 2.5 s.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Well-known directories of dynamic nginx modules (Debian/Ubuntu, Fedora, source
/// builds).
const MODULE_DIRS: &[&str] = &[
    "/usr/lib/nginx/modules",
    "/usr/share/nginx/modules",
    "/usr/lib64/nginx/modules",
    "/usr/local/nginx/modules",
];

/// A dynamic nginx module the tests `load_module`.
struct Module {
    /// File name of the shared object.
    file: &'static str,
    /// Environment variable that overrides the search.
    env: &'static str,
    /// Whether `nginx -V` shows the module compiled into the binary.
    built_in: fn(&str) -> bool,
    /// The Debian package that ships it.
    package: &'static str,
}

const RTMP_MODULE: Module = Module {
    file: "ngx_rtmp_module.so",
    env: "CTHULHU_NGINX_RTMP_MODULE",
    built_in: |configure| {
        configure
            .split_whitespace()
            .any(|a| a.starts_with("--add-module=") && a.contains("rtmp"))
    },
    package: "libnginx-mod-rtmp",
};

const STREAM_MODULE: Module = Module {
    file: "ngx_stream_module.so",
    env: "CTHULHU_NGINX_STREAM_MODULE",
    built_in: |configure| configure.split_whitespace().any(|a| a == "--with-stream"),
    package: "libnginx-mod-stream",
};

/// Finds the nginx rtmp module to `load_module`.
///
/// Order: the `CTHULHU_NGINX_RTMP_MODULE` environment variable; a `load_module`
/// line naming `ngx_rtmp_module.so` in `/etc/nginx/modules-enabled/*.conf` (a
/// relative path there is relative to nginx's `--prefix`, `/usr/share/nginx` on
/// Debian); well-known module directories. Returns `Ok(None)` if the module is
/// compiled into the nginx binary (`--add-module=...rtmp...` in `nginx -V`).
pub fn rtmp_module_path() -> Result<Option<PathBuf>> {
    module_path(&RTMP_MODULE)
}

/// Finds the nginx stream module (TCP proxying, with TLS termination) to
/// `load_module`, like [`rtmp_module_path`]: `CTHULHU_NGINX_STREAM_MODULE`, then
/// `/etc/nginx/modules-enabled`, then the well-known directories. Returns
/// `Ok(None)` if nginx was built `--with-stream` (not dynamic).
pub fn stream_module_path() -> Result<Option<PathBuf>> {
    module_path(&STREAM_MODULE)
}

fn module_path(module: &Module) -> Result<Option<PathBuf>> {
    if let Some(p) = std::env::var_os(module.env) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{}={} is not a file", module.env, p.display());
        }
        return Ok(Some(p));
    }
    let configure = nginx_configure_args();
    let prefix = configure
        .split_whitespace()
        .find_map(|a| a.strip_prefix("--prefix="))
        .map(PathBuf::from);
    if let Some(p) = module_from_modules_enabled(prefix.as_deref(), module.file) {
        return Ok(Some(p));
    }
    if let Some(p) = MODULE_DIRS
        .iter()
        .map(|d| Path::new(d).join(module.file))
        .find(|p| p.is_file())
    {
        return Ok(Some(p));
    }
    if (module.built_in)(&configure) {
        return Ok(None);
    }
    bail!(
        "the nginx module {} was not found (looked at /etc/nginx/modules-enabled/*.conf \
         and {MODULE_DIRS:?}); install it (`apt-get install {}`, which `scripts/test` \
         does) or set {} to the .so file",
        module.file,
        module.package,
        module.env
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

/// Parses `load_module <path>;` lines out of `/etc/nginx/modules-enabled/*.conf`
/// and returns the first existing file named `file`.
fn module_from_modules_enabled(prefix: Option<&Path>, file: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/etc/nginx/modules-enabled").ok()?;
    let mut confs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
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
            if path.file_name().is_none_or(|n| n != file) {
                continue;
            }
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
///
/// [`Nginx::start_rtmps`] adds a TLS terminator in the same process: nginx's
/// `stream` module accepts TLS on a second port and proxies the plain bytes to
/// the RTMP port, the way RTMPS ingest is commonly deployed.
#[derive(Debug)]
pub struct Nginx {
    port: u16,
    /// The TLS port of [`Nginx::start_rtmps`].
    tls_port: Option<u16>,
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
        Self::start(port, None, false).await
    }

    /// Like [`Nginx::start_rtmp`], with nginx's debug log also written to
    /// `<dir>/debug.log` (Debian's nginx is built `--with-debug`), for
    /// [`Nginx::amf_commands`]. The debug log grows with every chunk: use it
    /// for command-level tests, not for long media runs.
    pub async fn start_rtmp_debug(port: u16) -> Result<Nginx> {
        Self::start(port, None, true).await
    }

    /// The RTMP commands nginx received, in order, as its debug log names them
    /// (lowercase: `connect`, `releasestream`, `fcpublish`, ...). Needs
    /// [`Nginx::start_rtmp_debug`].
    pub fn amf_commands(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("debug.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                let rest = line
                    .split_once("AMF cmd '")
                    .or_else(|| line.split_once("AMF func '"))?
                    .1;
                rest.split_once('\'').map(|(name, _)| name.to_owned())
            })
            .collect()
    }

    /// Like [`Nginx::start_rtmp`], plus TLS termination on 127.0.0.1:`tls_port`
    /// (nginx `stream` module, `listen ... ssl`, `proxy_pass` to the RTMP port)
    /// with the certificate chain `cert_pem` and its private key `key_pem` (see
    /// [`crate::TestCa::issue_localhost`]). Publish with
    /// [`Nginx::rtmps_url`]; the RTMP port stays open for plain RTMP.
    ///
    /// Needs the stream module (Debian: `libnginx-mod-stream`).
    pub async fn start_rtmps(
        rtmp_port: u16,
        tls_port: u16,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Nginx> {
        let tls = TlsFront {
            port: tls_port,
            cert_pem,
            key_pem,
        };
        Self::start(rtmp_port, Some(tls), false).await
    }

    async fn start(port: u16, tls: Option<TlsFront<'_>>, debug_log: bool) -> Result<Nginx> {
        let nginx_bin = require_tool("nginx")?;
        let mut modules = vec![rtmp_module_path()?];
        if tls.is_some() {
            modules.push(stream_module_path()?);
        }
        let modules: Vec<PathBuf> = modules.into_iter().flatten().collect();
        let dir = temp_dir("nginx")?;
        std::fs::create_dir_all(dir.path().join("rec")).context("creating rec dir")?;
        if let Some(tls) = &tls {
            let tls_dir = dir.path().join("tls");
            std::fs::create_dir_all(&tls_dir).context("creating tls dir")?;
            std::fs::write(tls_dir.join("server.pem"), tls.cert_pem)
                .context("writing server.pem")?;
            std::fs::write(tls_dir.join("server.key"), tls.key_pem)
                .context("writing server.key")?;
        }
        let config = nginx_config(
            dir.path(),
            port,
            tls.as_ref().map(|t| t.port),
            &modules,
            debug_log,
        );
        std::fs::write(dir.path().join("nginx.conf"), config).context("writing nginx.conf")?;
        let mut nginx = Nginx {
            port,
            tls_port: tls.map(|t| t.port),
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
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        while !ports.iter().all(|&p| pid_is_listening(guard.pid(), p)) {
            let emerg = self
                .log_since_start()
                .lines()
                .find(|l| l.contains("[emerg]"))
                .map(str::to_owned);
            if !guard.is_running() || emerg.is_some() || Instant::now() >= deadline {
                let _ = guard.kill().await;
                bail!(
                    "nginx did not start listening on 127.0.0.1 ports {ports:?} ({}): {}\nerror.log:\n{}",
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

    /// The TLS port of [`Nginx::start_rtmps`], if any.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// `rtmps://localhost:TLS_PORT/live/<stream>` for an instance started with
    /// [`Nginx::start_rtmps`] (`localhost`, the name test certificates carry;
    /// nginx listens on 127.0.0.1). Panics for a plain RTMP instance.
    pub fn rtmps_url(&self, stream: &str) -> String {
        let port = self
            .tls_port
            .expect("rtmps_url needs an instance started with Nginx::start_rtmps");
        format!("rtmps://localhost:{port}/{APP}/{stream}")
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

    /// Freezes nginx (SIGSTOP): its sockets stay open and the kernel keeps
    /// buffering what peers send, but nothing is read until [`Nginx::resume`].
    pub fn pause(&mut self) -> Result<()> {
        let pid = self.pid().context("nginx is not running")?;
        signal(pid, "-STOP")
    }

    /// Lets a paused nginx go on (SIGCONT).
    pub fn resume(&mut self) -> Result<()> {
        let pid = self.pid().context("nginx is not running")?;
        signal(pid, "-CONT")
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

/// The TLS terminator of [`Nginx::start_rtmps`].
struct TlsFront<'a> {
    port: u16,
    cert_pem: &'a str,
    key_pem: &'a str,
}

/// The nginx.conf used by [`Nginx::start_rtmp`] and [`Nginx::start_rtmps`]
/// (with `tls_port`: a `stream` server terminating TLS in front of RTMP, with
/// the certificate and key in `<dir>/tls/`).
fn nginx_config(
    dir: &Path,
    port: u16,
    tls_port: Option<u16>,
    modules: &[PathBuf],
    debug_log: bool,
) -> String {
    let d = dir.display();
    let debug = if debug_log {
        format!("error_log \"{d}/debug.log\" debug;\n")
    } else {
        String::new()
    };
    let load_modules: String = modules
        .iter()
        .map(|m| format!("load_module \"{}\";\n", m.display()))
        .collect();
    let stream = tls_port
        .map(|tls| {
            format!(
                r#"
stream {{
    server {{
        listen 127.0.0.1:{tls} ssl;
        ssl_certificate "{d}/tls/server.pem";
        ssl_certificate_key "{d}/tls/server.key";
        ssl_protocols TLSv1.2 TLSv1.3;
        proxy_pass 127.0.0.1:{port};
    }}
}}
"#
            )
        })
        .unwrap_or_default();
    format!(
        r#"# Generated by cthulhu-testkit for one test.
{load_modules}daemon off;
master_process off;
pid "{d}/nginx.pid";
error_log "{d}/error.log" info;
{debug}
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
{stream}"#
    )
}
