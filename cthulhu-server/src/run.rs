//! Composition: config → hub, router, RTMP listener and supervised pushes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cthulhu_core::hub::{HubEvent, OverflowPolicy, PublishConflict, RecordingEvent};
use cthulhu_core::{Hub, HubConfig, Router, Secret, StreamPath};
use cthulhu_rtmp::{InboundLimits, RtmpServer, ServerConfig};
use cthulhu_srt::{SrtServer, SrtServerConfig};
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use cthulhu_plugins::{
    AuthPlugin, HostConfig, Manifest, PluginHost, PluginKind, PolicyChain, RoutePlugin,
};

use crate::auth;
use crate::config::PushUrl;
use crate::config::{Config, OnOverflow, OnSecondPublisher, PluginHook};
use crate::control::{
    Control, DestinationPatch, PushSettings, PushSpec, RecordSpec, SharedRules, Storages,
    StreamSpec, recording_id,
};
use crate::db::{Db, Role, Segment};
use crate::store::{DEFAULT_STREAM_PATH, Store};

/// The log filter when neither `RUST_LOG` nor the config sets one. srt-protocol warns
/// per packet about what established peers send (through the `log` crate), so only
/// its errors are shown.
const DEFAULT_LOG: &str = "info,srt_protocol=error";

/// Installs the log subscriber, text or (with `json`) one JSON object a line:
/// `RUST_LOG` wins, then the config's `log`, then [`DEFAULT_LOG`].
pub(crate) fn init_tracing(default: Option<&str>, json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default.unwrap_or(DEFAULT_LOG)))
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if json {
        // One JSON object a line: {"timestamp", "level", "fields": {"message", ...}}.
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init()
    };
    // rml_rtmp panics on some malformed input; those calls are isolated with
    // catch_unwind and the connection is closed with a logged reason. The default hook
    // would also print a raw panic message: send it through the log instead, at most
    // a few a window (a peer may repeat whatever made one).
    std::panic::set_hook(Box::new(|info| {
        let Some(suppressed) = PANIC_LOG.admit(std::time::Instant::now()) else {
            return;
        };
        if suppressed > 0 {
            tracing::warn!(
                suppressed,
                "Panics not logged in the last {} s",
                PANIC_WINDOW.as_secs()
            );
        }
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(location = %location, message = %message, "Panic: the task that hit it has ended");
    }));
}

/// Panics logged per [`PANIC_WINDOW`] at most.
const PANICS_PER_WINDOW: u32 = 5;
/// The window of [`PANICS_PER_WINDOW`].
const PANIC_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

static PANIC_LOG: PanicLog = PanicLog {
    state: std::sync::Mutex::new(None),
};

/// Counts panics per window, so the panic hook's log volume is bounded.
struct PanicLog {
    /// (window start, logged in it, not logged in it).
    state: std::sync::Mutex<Option<(std::time::Instant, u32, u64)>>,
}

impl PanicLog {
    /// Whether to log a panic at `now`: `Some(n)` with the panics not logged in the
    /// window before, or None to skip it.
    fn admit(&self, now: std::time::Instant) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *st {
            Some((start, logged, skipped)) if now.duration_since(*start) < PANIC_WINDOW => {
                if *logged < PANICS_PER_WINDOW {
                    *logged += 1;
                    Some(0)
                } else {
                    *skipped += 1;
                    None
                }
            }
            other => {
                let skipped = other.map_or(0, |(_, _, s)| s);
                *other = Some((now, 1, 0));
                Some(skipped)
            }
        }
    }
}

fn hub_config(cfg: &Config) -> HubConfig {
    HubConfig {
        gop_cache_bytes: cfg.hub.gop_cache_bytes,
        queue_frames: cfg.hub.subscriber_queue_frames,
        queue_bytes: cfg.hub.subscriber_queue_bytes,
        overflow: match cfg.hub.on_overflow {
            OnOverflow::SkipToKeyframe => OverflowPolicy::SkipToKeyframe,
            OnOverflow::Disconnect => OverflowPolicy::Disconnect,
        },
        conflict: match cfg.hub.on_second_publisher {
            OnSecondPublisher::Reject => PublishConflict::Reject,
            OnSecondPublisher::Replace => PublishConflict::Replace,
        },
    }
}

/// Runs a server until SIGINT/SIGTERM; SIGHUP reloads the config file.
pub(crate) async fn serve_until_signal(
    cfg: Config,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let server = Server::start(cfg, config_path).await?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut reloads = reload_signal();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = reloads.recv() => server.reload().await,
        }
    }
    server.shutdown().await;
    Ok(())
}

/// Where a started server listens.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Addrs {
    /// The RTMP listener.
    pub rtmp: SocketAddr,
    /// The SRT listener, if `[srt] enabled`.
    pub srt: Option<SocketAddr>,
    /// The HTTP API listener, if `[http] enabled`.
    pub http: Option<SocketAddr>,
}

/// A running server: its addresses, reload and shutdown.
#[derive(Debug)]
pub struct ServerHandle {
    addrs: Addrs,
    control: Control,
    config_path: Option<PathBuf>,
    quit: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// Where the server listens.
    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    /// Re-reads the config file and applies the difference (as SIGHUP does); a file
    /// that does not load keeps the running configuration and is logged.
    pub async fn reload(&self) {
        reload(&self.control, self.config_path.as_deref()).await;
    }

    /// Unpublishes every destination, finishes the recordings and closes the
    /// listeners; returns when all is stopped.
    pub async fn shutdown(self) {
        let _ = self.quit.send(true);
        let _ = self.task.await;
    }
}

/// The server: see [`Server::start`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Server;

impl Server {
    /// Opens the store, binds every listener (a busy port fails here, before anything
    /// is created), applies the config file's streams and what the store holds, shows
    /// what a first start creates (the default stream's key, the admin password) once
    /// on stdout, and starts accepting. `config_path` is the file reloads re-read.
    pub async fn start(cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<ServerHandle> {
        let db = open_db(&cfg.server.data_dir)?;
        import_legacy_streams(&db, &cfg.server.data_dir).await?;

        let hub = Hub::new(hub_config(&cfg));
        // The listeners authorise against the control plane's rules; the plugin chain,
        // if any, decorates them. The plugin host owns the epoch ticker and the
        // hot-reload watcher: it lives as long as the server. It logs loads, reloads,
        // failed calls and disabling.
        let rules = SharedRules::default();
        let (router, chain, plugin_host) = policy(&cfg, Arc::new(rules.clone())).await?;
        // The storages the file's recordings use open now: a storage that cannot be
        // used stops the start, naming it.
        let mut storages = Storages::new(cfg.storage.clone(), cfg.server.data_dir.clone());
        for stream in &cfg.streams {
            for (i, rec) in stream.record.iter().enumerate().filter(|(_, r)| r.enabled) {
                storages
                    .open(&rec.storage)
                    .map_err(|e| anyhow::anyhow!("streams {}: record[{i}]: {e}", stream.path))?;
            }
        }
        let (control, control_task) = Control::start(
            hub.clone(),
            PushSettings {
                chunk_size: cfg.rtmp.chunk_size,
                audio_hold: cfg.rtmp.audio_hold,
                stall_timeout: cfg.rtmp.push_stall_timeout,
                srt_latency: cfg.srt.latency,
                grace: cfg.hub.publisher_grace,
            },
            rules.clone(),
            chain.clone(),
            storages,
        );

        let server_cfg = ServerConfig {
            chunk_size: cfg.rtmp.chunk_size,
            handshake_timeout: cfg.rtmp.handshake_timeout,
            idle_timeout: cfg.rtmp.idle_timeout,
            play_stall_timeout: cfg.rtmp.play_stall_timeout,
            player_nodelay: cfg.rtmp.player_nodelay,
            audio_hold: cfg.rtmp.audio_hold,
            inbound: InboundLimits {
                max_command_bytes: cfg.rtmp.max_command_bytes,
                max_media_bytes: cfg.rtmp.max_media_bytes,
                ..InboundLimits::default()
            },
            max_connections: cfg.rtmp.max_connections,
            max_connections_per_ip: cfg.rtmp.max_connections_per_ip,
            max_pending: cfg.rtmp.max_pending_connections,
        };
        let server = RtmpServer::bind(
            cfg.rtmp.listen,
            server_cfg,
            hub.clone(),
            router.clone() as Arc<dyn Router>,
        )
        .await
        .with_context(|| format!("listening for RTMP on {}", cfg.rtmp.listen))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        // SRT binds before RTMP starts accepting, so a listening RTMP port means both are up.
        let srt = if cfg.srt.enabled {
            let srt_rules = rules.clone();
            let srt_cfg = SrtServerConfig {
                listener: cthulhu_srt::ListenerConfig {
                    latency: cfg.srt.latency,
                    max_connections: cfg.srt.max_connections,
                    max_connections_per_ip: cfg.srt.max_connections_per_ip,
                    max_pending_handshakes: cfg.srt.max_pending_handshakes,
                    ..Default::default()
                },
                passphrases: Arc::new(move |p: &StreamPath| srt_rules.passphrase(p)),
                idle_timeout: cfg.srt.idle_timeout,
                send_timeout: cfg.rtmp.play_stall_timeout,
                ..SrtServerConfig::default()
            };
            let srt = SrtServer::bind(
                cfg.srt.listen,
                srt_cfg,
                hub.clone(),
                router.clone() as Arc<dyn Router>,
            )
            .await
            .with_context(|| format!("listening for SRT on {}", cfg.srt.listen))?;
            info!(addr = %srt.local_addr(), "SRT listening");
            Some(srt)
        } else {
            None
        };
        let srt_addr = srt.as_ref().map(|s| s.local_addr());
        let http_listener = if cfg.http.enabled {
            // Read again (the load checked them): the files may have changed since.
            let tls = cfg
                .http
                .tls
                .as_ref()
                .map(|t| t.server_config())
                .transpose()
                .context("[http] HTTPS certificate")?;
            let listener = tokio::net::TcpListener::bind(cfg.http.listen)
            .await
            .with_context(|| {
                format!(
                    "listening for the HTTP API on {} (change [http] listen, or set [http] enabled = false)",
                    cfg.http.listen
                )
            })?;
            info!(addr = %listener.local_addr()?, tls = tls.is_some(), "HTTP API listening");
            Some((listener, tls))
        } else {
            None
        };

        let http_addr = http_listener
            .as_ref()
            .map(|(l, _)| l.local_addr())
            .transpose()?;

        // Every listener is bound: now the state, then accepting. Every configured
        // stream's destinations start now, so they are visible while idle; then what was
        // created at runtime, from the store. The rules are in place before the listeners
        // accept anyone. What is created on a first start is shown once, only now that
        // the server is sure to run (a busy port fails before anything is created).
        control.apply_file(cfg.streams.clone()).await;
        let default_stream = if config_path.is_none() {
            ensure_default_stream(&db, &cfg).await?
        } else {
            None
        };
        load_store(&control, &db).await?;
        let admin_password = ensure_admin(&db).await?;
        if let Some(key) = default_stream {
            print_default_stream(&cfg, &key);
        }
        if let Some(password) = admin_password {
            println!(
                "Cthulhu created the console user admin with the password: {}",
                password.expose()
            );
            println!(
                "It is shown only this once and must be changed at the first login \
                 (`cthulhu-server admin reset-password` makes a new one)."
            );
            println!();
        }

        // Refusals by reason, for /metrics.
        let mut refusals = vec![("rtmp", server.refusals())];
        if let Some(srt) = &srt {
            refusals.push(("srt", srt.refusals()));
        }
        let srt_task = srt.map(|srt| tokio::spawn(srt.run(stop_rx.clone())));
        let http_task = if let Some((listener, tls)) = http_listener {
            let state = Arc::new(crate::api::ApiState {
                control: control.clone(),
                db: db.clone(),
                hub: hub.clone(),
                config_path: config_path.clone(),
                limiter: crate::auth::limit::LoginLimiter::default(),
                // On HTTPS only, the session cookie is `Secure`.
                secure_cookies: tls.is_some(),
                rates: crate::rates::Rates::start(hub.clone(), control.changes().clone()),
                streams_cache: Default::default(),
            });
            let metrics = crate::metrics::router(Arc::new(crate::metrics::MetricsState {
                hub: hub.clone(),
                control: control.clone(),
                token: cfg.http.metrics_token.clone(),
                refusals,
                plugins: plugin_host.clone(),
            }));
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(crate::api::serve(
                listener,
                state,
                metrics,
                tls,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )))
        } else {
            None
        };
        let addrs = Addrs {
            rtmp: server.local_addr()?,
            srt: srt_addr,
            http: http_addr,
        };
        info!(addr = %addrs.rtmp, "RTMP listening");
        let server_task = tokio::spawn(server.run(stop_rx));
        let (quit, mut quit_rx) = watch::channel(false);
        let control_handle = control.clone();
        let task = tokio::spawn(async move {
            let mut events = hub.events();

            // Process figures for soak runs and debugging (`log = "info,cthulhu::stats=debug"`).
            let mut stats_tick = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = quit_rx.changed() => break,
                    _ = stats_tick.tick() => {
                        let snapshot = hub.snapshot();
                        tracing::debug!(
                            target: "cthulhu::stats",
                            tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks(),
                            streams = snapshot.len(),
                            live = snapshot.iter().filter(|s| s.live).count(),
                            "Process stats"
                        );
                    }
                    ev = events.recv() => match ev {
                        Ok(HubEvent::Recording(ev)) => on_recording(&db, &ev).await,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            warn!(missed, "Missed hub events (recording events are logged from the bus)");
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
            info!("Shutting down: unpublishing destinations");
            // All destinations unpublish at once, each within its supervisor's stop grace;
            // recordings finish their segments (last part uploaded, upload completed).
            control.shutdown().await;
            let _ = control_task.await;
            // The segments finished while stopping.
            while let Ok(ev) = events.try_recv() {
                if let HubEvent::Recording(ev) = ev {
                    on_recording(&db, &ev).await;
                }
            }
            let _ = stop_tx.send(true);
            hub.shutdown();
            let _ = server_task.await;
            if let Some(t) = srt_task {
                let _ = t.await;
            }
            if let Some(t) = http_task {
                let _ = t.await;
            }
            info!("Stopped");
        });
        Ok(ServerHandle {
            addrs,
            control: control_handle,
            config_path,
            quit,
            task,
        })
    }
}

/// Opens the store in the data directory (created private if missing).
pub(crate) fn open_db(data_dir: &Path) -> anyhow::Result<Db> {
    Store::open(data_dir)
        .with_context(|| format!("opening the data directory {}", data_dir.display()))?;
    Db::open(data_dir).with_context(|| format!("opening the store in {}", data_dir.display()))
}

/// Hands what was created at runtime (streams, destinations, recordings, enable/disable
/// of the file's destinations and recordings) to the control plane. An entry that no
/// longer makes sense (a destination of a stream that is gone) is skipped with a
/// warning.
async fn load_store(control: &Control, db: &Db) -> anyhow::Result<()> {
    let (streams, dests, recordings, overrides) = db
        .run(|db| {
            Ok((
                db.streams()?,
                db.destinations()?,
                db.recordings()?,
                db.overrides()?,
            ))
        })
        .await
        .context("reading the store")?;
    for s in streams {
        let Ok(path) = StreamPath::new(s.path.as_str()) else {
            warn!(stream = %s.path, "Stored stream skipped: invalid path");
            continue;
        };
        let spec = StreamSpec {
            path: path.clone(),
            key: s.key,
            play_key: s.play_key,
            passphrase: s.passphrase,
        };
        if let Err(e) = control.add_stream(spec).await {
            warn!(stream = %path, error = %e, "Stored stream skipped");
        }
    }
    for d in dests {
        let (Ok(path), Ok(url)) = (
            StreamPath::new(d.stream_path.as_str()),
            PushUrl::parse(d.url.expose()),
        ) else {
            warn!(stream = %d.stream_path, dest = %d.name, "Stored destination skipped: invalid path or URL");
            continue;
        };
        let spec = PushSpec {
            name: d.name.clone(),
            url,
            tls_ca_file: None,
            enabled: d.enabled,
        };
        if let Err(e) = control.add_destination(path, spec).await {
            warn!(stream = %d.stream_path, dest = %d.name, error = %e, "Stored destination skipped");
        }
    }
    for r in recordings {
        let Ok(path) = StreamPath::new(r.stream_path.as_str()) else {
            warn!(stream = %r.stream_path, recording = %r.id, "Stored recording skipped: invalid path");
            continue;
        };
        let added = match RecordSpec::from_stored(&r) {
            Ok(spec) => control
                .add_recording(path, spec)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = added {
            warn!(stream = %r.stream_path, recording = %r.id, error = %e, "Stored recording skipped");
        }
    }
    for o in overrides {
        let Ok(path) = StreamPath::new(o.stream_path.as_str()) else {
            continue;
        };
        match o.kind.as_str() {
            "destination" => {
                let patch = DestinationPatch {
                    enabled: Some(o.enabled),
                    url: None,
                };
                if let Err(e) = control.patch_destination(path, o.name.clone(), patch).await {
                    warn!(stream = %o.stream_path, dest = %o.name, error = %e, "Stored override skipped");
                }
            }
            "recording" => {
                if let Err(e) = control
                    .patch_recording(path, o.name.clone(), o.enabled)
                    .await
                {
                    warn!(stream = %o.stream_path, recording = %o.name, error = %e, "Stored override skipped");
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// On the first start (no user yet) creates `admin` with a random password, shown
/// once on stdout like the default stream key, and marked to be changed at the first
/// login (it was printed where others may read it).
async fn ensure_admin(db: &Db) -> anyhow::Result<Option<Secret>> {
    if db.run(|db| db.user_count()).await? > 0 {
        return Ok(None);
    }
    let password = auth::password::generate_password();
    let p = password.clone();
    let hash = tokio::task::spawn_blocking(move || auth::password::hash_password(&p))
        .await
        .context("hashing the admin password")??;
    let now = crate::db::unix_now();
    db.run(move |db| db.create_user("admin", &hash, Role::Admin, true, now))
        .await
        .context("creating the admin user")?;
    info!("Created the admin user (password shown on stdout once)");
    Ok(Some(Secret::new(password)))
}

/// Imports the `streams.toml` of earlier versions into the store (once).
async fn import_legacy_streams(db: &Db, data_dir: &Path) -> anyhow::Result<()> {
    let dir = data_dir.to_owned();
    let now = crate::db::unix_now();
    if let Some(n) = db
        .run(move |db| db.import_legacy_streams_toml(&dir, now))
        .await
        .context("importing streams.toml into the store")?
    {
        info!(
            imported = n,
            "Imported the streams of streams.toml into the store"
        );
    }
    Ok(())
}

/// On a start without a config file and an empty store, creates `live/main` with a
/// random key; returns the key to show once.
async fn ensure_default_stream(db: &Db, cfg: &Config) -> anyhow::Result<Option<Secret>> {
    let streams = db.run(|db| db.streams()).await?;
    if !streams.is_empty() {
        for s in &streams {
            info!(stream = %s.path, data_dir = %cfg.server.data_dir.display(), "Using the stream stored in the data directory (key not shown)");
        }
        return Ok(None);
    }
    let key = crate::store::random_key();
    let k = key.clone();
    let now = crate::db::unix_now();
    db.run(move |db| db.create_stream(DEFAULT_STREAM_PATH, k.expose(), now))
        .await
        .context("creating the default stream")?;
    Ok(Some(key))
}

fn print_default_stream(cfg: &Config, key: &Secret) {
    let port = cfg.rtmp.listen.port();
    let (app, path) = ("live", DEFAULT_STREAM_PATH);
    println!();
    println!("Cthulhu created stream {path} for you. In OBS (Settings > Stream > Custom...):");
    println!("    Server:     rtmp://<this machine's address>:{port}/{app}");
    println!("    Stream key: {}", key.expose());
    println!(
        "ffmpeg: ffmpeg -re -i INPUT -c copy -f flv rtmp://127.0.0.1:{port}/{app}/<stream key>"
    );
    println!("Play:   ffplay rtmp://127.0.0.1:{port}/{path}");
    println!(
        "The key is shown only this once; it is kept in {}.",
        cfg.server.data_dir.display()
    );
    println!();
}

/// Re-reads the config file and applies the difference (SIGHUP). A file that does
/// not load keeps the running configuration. Settings other than streams
/// (listeners, hub, storage, plugins) take effect at the next start.
async fn reload(control: &Control, path: Option<&Path>) {
    let Some(path) = path else {
        info!("Reload asked for, but the server runs without a config file: nothing to re-read");
        return;
    };
    match Config::load(path) {
        Ok(cfg) => {
            if let Some(applied) = control.apply_file(cfg.streams).await {
                info!(file = %path.display(), %applied, "Config reloaded");
            }
        }
        Err(e) => {
            warn!(file = %path.display(), error = %e, "Config reload failed: keeping the running configuration");
        }
    }
}

/// SIGHUP, as a stream of reload requests (none where there are no signals).
fn reload_signal() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        // One pending reload is enough.
                        let _ = tx.try_send(());
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "SIGHUP handler not installed: reload by signal unavailable")
            }
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// The server's policy: the config's rules, followed by the auth and route plugins
/// of `[[plugins]]` if any. Returns the router and the plugin host (schedule and
/// notify plugins are loaded and checked now; their callers land later).
async fn policy(
    cfg: &Config,
    config_router: Arc<dyn Router>,
) -> anyhow::Result<(
    Arc<dyn Router>,
    Option<Arc<PolicyChain>>,
    Option<PluginHost>,
)> {
    if cfg.plugins.is_empty() {
        return Ok((config_router, None, None));
    }
    let cache_dir = cfg.server.data_dir.join("plugin-cache");
    let defs = cfg.plugins.clone();
    // Loading compiles (or reads the cache): off the async workers.
    let (host, loaded) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let host = PluginHost::new(HostConfig {
            cache_dir: Some(cache_dir),
            ..HostConfig::default()
        })
        .context("starting the plugin host")?;
        let mut loaded = Vec::new();
        for (i, d) in defs.iter().enumerate() {
            let kind = match d.kind {
                PluginHook::Auth => PluginKind::Auth,
                PluginHook::Route => PluginKind::Route,
                PluginHook::Schedule => PluginKind::Schedule,
                PluginHook::Notify => PluginKind::Notify,
            };
            let mut m = Manifest::new(kind, &d.path)
                .with_config(d.config.clone())
                .with_timeout(d.timeout)
                .with_memory_bytes(d.memory_bytes);
            if let Some(h) = &d.sha256 {
                m = m.with_sha256(h.clone());
            }
            if let Some(n) = &d.name {
                m = m.with_name(n.clone());
            }
            let plugin = host
                .load(m)
                .with_context(|| format!("plugins[{i}] ({})", d.path.display()))?;
            loaded.push((d.kind, plugin));
        }
        Ok((host, loaded))
    })
    .await
    .context("loading plugins")??;
    let mut chain = PolicyChain::new(config_router);
    for (kind, plugin) in &loaded {
        match kind {
            PluginHook::Auth => chain = chain.with_auth(AuthPlugin::new(plugin.clone())?),
            PluginHook::Route => chain = chain.with_route(RoutePlugin::new(plugin.clone())?),
            PluginHook::Schedule | PluginHook::Notify => {}
        }
    }
    let chain = Arc::new(chain);
    Ok((chain.clone() as Arc<dyn Router>, Some(chain), Some(host)))
}

/// Logs a recorder's event (the console and notifications read the same bus).
fn log_recording(ev: &RecordingEvent) {
    match ev {
        RecordingEvent::Started {
            path,
            recorder,
            object,
            seq,
        } => {
            info!(stream = %path, recording = %recorder, object = %object, seq, "Recording segment started")
        }
        RecordingEvent::SegmentFinished {
            path,
            recorder,
            object,
            bytes,
            duration,
        } => info!(
            stream = %path,
            recording = %recorder,
            object = %object,
            bytes,
            secs = duration.as_secs_f64(),
            "Recording segment finished"
        ),
        RecordingEvent::Gap {
            path,
            recorder,
            dropped,
        } => {
            warn!(stream = %path, recording = %recorder, dropped_secs = dropped.as_secs_f64(), "Recording gap: media left out")
        }
        RecordingEvent::Failed {
            path,
            recorder,
            reason,
        } => warn!(stream = %path, recording = %recorder, reason = %reason, "Recording failed"),
        _ => {}
    }
}

/// A recorder's event: logged, and a finished segment kept in the store.
async fn on_recording(db: &Db, ev: &RecordingEvent) {
    log_recording(ev);
    keep_segment(db, ev).await;
}

/// Keeps a finished segment in the store, for `GET /api/v1/recordings`; a failure
/// is logged.
async fn keep_segment(db: &Db, ev: &RecordingEvent) {
    let RecordingEvent::SegmentFinished {
        path,
        recorder,
        object,
        bytes,
        duration,
    } = ev
    else {
        return;
    };
    let recording = recording_id(path, recorder).unwrap_or(recorder).to_owned();
    let segment = Segment {
        id: 0,
        stream_path: path.to_string(),
        recording,
        object: object.clone(),
        bytes: i64::try_from(*bytes).unwrap_or(i64::MAX),
        duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
        finished_at: crate::db::unix_now(),
    };
    if let Err(e) = db.run(move |db| db.add_segment(&segment)).await {
        warn!(stream = %path, object = %object, error = %e, "Finished segment not kept in the store");
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn panics_are_logged_a_few_per_window() {
        let log = PanicLog {
            state: std::sync::Mutex::new(None),
        };
        let t0 = Instant::now();
        let admitted: Vec<_> = (0..100).map(|_| log.admit(t0)).collect();
        assert_eq!(admitted.iter().filter(|a| a.is_some()).count(), 5);
        // The next window's first panic reports the 95 skipped.
        assert_eq!(log.admit(t0 + Duration::from_secs(11)), Some(95));
        assert_eq!(log.admit(t0 + Duration::from_secs(12)), Some(0));
    }
}
