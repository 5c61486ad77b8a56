//! A loaded plugin: its compiled component, warm instances, health and hot reload.
//!
//! Invariants:
//! - An instance that failed a call (trap, timeout, memory, fuel) is dropped, never
//!   reused; the next call instantiates afresh and runs `configure` again.
//! - A reload swaps the whole [`Loaded`] generation at once; calls in flight finish on
//!   the generation they started on, and its instances die with it.
//! - Guest code runs only on blocking threads, never on the async runtime.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;
use wasmtime::Store;

use crate::bindings::{auth, notify, route, schedule};
use crate::error::PluginError;
use crate::host::{Compiled, Shared, lock, sha256_hex};
use crate::manifest::{Manifest, PluginKind};
use crate::stats::{Counters, Export, FailureReason, PluginStats};
use crate::store::StoreState;

/// Extra wall-clock time on top of the manifest's timeout before the async side gives
/// up on a call whose blocking thread has not answered (the epoch deadline normally
/// ends it first).
const WALL_CLOCK_GRACE: Duration = Duration::from_millis(20);

/// A loaded plugin. Shared by the adapters ([`AuthPlugin`](crate::AuthPlugin), ...) and
/// the host's reload watcher.
pub struct Plugin {
    shared: Arc<Shared>,
    manifest: Manifest,
    name: Arc<str>,
    config_json: Arc<str>,
    disable_after: u32,
    current: RwLock<Arc<Loaded>>,
    health: Mutex<Health>,
    /// Serializes reloads; holds what the file looked like when last read.
    stamp: Mutex<Option<FileStamp>>,
    /// Calls, failures and latency per exported function (atomics).
    counters: Counters,
}

/// One generation of a plugin: a compiled component and its warm instances.
pub(crate) struct Loaded {
    pre: Pre,
    sha256: String,
    from_cache: bool,
    compile_time: Duration,
    idle: Mutex<Vec<Warm>>,
    permits: Arc<Semaphore>,
}

enum Pre {
    Auth(auth::AuthPre<StoreState>),
    Route(route::RoutePre<StoreState>),
    Schedule(schedule::SchedulePre<StoreState>),
    Notify(notify::NotifyPre<StoreState>),
}

/// The typed exports of an instance.
pub(crate) enum World {
    Auth(auth::Auth),
    Route(route::Route),
    Schedule(schedule::Schedule),
    Notify(notify::Notify),
}

/// An instantiated and configured plugin, ready for calls.
struct Warm {
    store: Store<StoreState>,
    world: World,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(meta),
        }
    }
}

#[derive(Default)]
struct Health {
    consecutive: u32,
    last_error: Option<String>,
    disabled: Option<(String, SystemTime)>,
    calls: u64,
    failures: u64,
    loaded_at: Option<SystemTime>,
    last_reload: Option<SystemTime>,
    reload_error: Option<String>,
}

/// Whether a plugin is serving calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginState {
    /// Its last call succeeded (or it has not been called yet).
    Ready,
    /// Its last calls failed; it is disabled when `consecutive` reaches the limit.
    Failing {
        /// Failures in a row.
        consecutive: u32,
        /// The last failure.
        last_error: String,
    },
    /// Disabled after repeated failures: calls fail at once (auth denies, route uses
    /// the config's routes, notify sends the defaults) until the file changes and
    /// reloads, or [`Plugin::enable`] is called.
    Disabled {
        /// Why.
        reason: String,
        /// Since when.
        since: SystemTime,
    },
}

/// A point-in-time view of a plugin, for the console and metrics.
#[derive(Clone, Debug)]
pub struct PluginStatus {
    /// The plugin's name.
    pub name: String,
    /// Its kind.
    pub kind: PluginKind,
    /// Its file.
    pub path: PathBuf,
    /// The SHA-256 of the component running now.
    pub sha256: String,
    /// Serving, failing or disabled.
    pub state: PluginState,
    /// Calls made (including ones refused because the plugin was disabled).
    pub calls: u64,
    /// Calls that failed.
    pub failures: u64,
    /// The last failure, even if later calls succeeded.
    pub last_error: Option<String>,
    /// When the first version was loaded.
    pub loaded_at: Option<SystemTime>,
    /// When the file was last reloaded.
    pub last_reload: Option<SystemTime>,
    /// Why the last reload attempt failed (the previous version keeps serving).
    pub reload_error: Option<String>,
    /// Whether the running component came from the precompile cache.
    pub from_cache: bool,
    /// How long compiling (or reading it from the cache) took.
    pub compile_time: Duration,
}

/// What a call runs against: everything it needs, owned, for the blocking thread.
struct CallCtx {
    shared: Arc<Shared>,
    loaded: Arc<Loaded>,
    name: Arc<str>,
    config_json: Arc<str>,
    memory_bytes: u64,
    fuel: Option<u64>,
    timeout: Duration,
    tick: Duration,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the config: it may hold keys.
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("kind", &self.manifest.kind)
            .field("path", &self.manifest.path)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub(crate) fn load(shared: Arc<Shared>, manifest: Manifest) -> Result<Arc<Self>, PluginError> {
        let name: Arc<str> = Arc::from(manifest.name.as_str());
        let config_json: Arc<str> = serde_json::to_string(&manifest.config)
            .map_err(|e| {
                PluginError::Config(format!("plugin {name}: config is not serializable: {e}"))
            })?
            .into();
        let disable_after = manifest
            .disable_after
            .unwrap_or(shared.config.disable_after)
            .max(1);
        let (bytes, stamp) = read_file(&manifest.path)?;
        check_pin(&manifest, &bytes)?;
        let loaded = build(&shared, &manifest, &name, &config_json, &bytes)?;
        tracing::info!(
            plugin = %name,
            kind = %manifest.kind,
            sha256 = %loaded.sha256,
            from_cache = loaded.from_cache,
            compile_ms = loaded.compile_time.as_secs_f64() * 1e3,
            "Plugin loaded"
        );
        Ok(Arc::new(Self {
            shared,
            name,
            config_json,
            disable_after,
            current: RwLock::new(Arc::new(loaded)),
            health: Mutex::new(Health {
                loaded_at: Some(SystemTime::now()),
                ..Health::default()
            }),
            stamp: Mutex::new(Some(stamp)),
            counters: Counters::new(manifest.kind),
            manifest,
        }))
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kind.
    pub fn kind(&self) -> PluginKind {
        self.manifest.kind
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Its state and counters.
    pub fn status(&self) -> PluginStatus {
        let loaded = self.current();
        let h = lock(&self.health);
        let state = if let Some((reason, since)) = &h.disabled {
            PluginState::Disabled {
                reason: reason.clone(),
                since: *since,
            }
        } else if h.consecutive > 0 {
            PluginState::Failing {
                consecutive: h.consecutive,
                last_error: h.last_error.clone().unwrap_or_default(),
            }
        } else {
            PluginState::Ready
        };
        PluginStatus {
            name: self.name.to_string(),
            kind: self.manifest.kind,
            path: self.manifest.path.clone(),
            sha256: loaded.sha256.clone(),
            state,
            calls: h.calls,
            failures: h.failures,
            last_error: h.last_error.clone(),
            loaded_at: h.loaded_at,
            last_reload: h.last_reload,
            reload_error: h.reload_error.clone(),
            from_cache: loaded.from_cache,
            compile_time: loaded.compile_time,
        }
    }

    /// Its calls, failures by reason and latency, per exported function, since it
    /// was loaded (reloads keep them). Reads atomics: cheap, no lock.
    pub fn stats(&self) -> PluginStats {
        PluginStats {
            name: self.name.to_string(),
            kind: self.manifest.kind,
            functions: self.counters.snapshot(),
        }
    }

    /// Re-enables a disabled plugin (an operator's decision; a reload does it too).
    pub fn enable(&self) {
        let mut h = lock(&self.health);
        if h.disabled.take().is_some() {
            tracing::info!(plugin = %self.name, "Plugin re-enabled");
        }
        h.consecutive = 0;
    }

    /// Reloads the plugin if its file changed since it was last read (size, mtime or
    /// inode, then content hash). Returns whether a new version now serves calls.
    ///
    /// A file that fails (unreadable, pin mismatch, does not compile, refuses its
    /// config) leaves the running version in place; the error is returned and kept
    /// in [`PluginStatus::reload_error`]. A successful reload re-enables a disabled
    /// plugin. Blocking (it compiles): the host's watcher calls it on its own thread.
    pub fn reload_if_changed(&self) -> Result<bool, PluginError> {
        let mut stamp = lock(&self.stamp);
        let meta = std::fs::metadata(&self.manifest.path);
        if let Ok(meta) = &meta
            && *stamp == Some(FileStamp::of(meta))
        {
            return Ok(false);
        }
        let result = self.reload_locked(&mut stamp);
        match &result {
            Ok(true) => {
                let mut h = lock(&self.health);
                h.last_reload = Some(SystemTime::now());
                h.reload_error = None;
                h.consecutive = 0;
                if h.disabled.take().is_some() {
                    tracing::info!(plugin = %self.name, "Plugin re-enabled by reload");
                }
            }
            // The file was read and is the running version again.
            Ok(false) => lock(&self.health).reload_error = None,
            Err(e) => {
                let message = e.to_string();
                let mut h = lock(&self.health);
                // A missing file fails at every poll: log each distinct error once.
                if h.reload_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(plugin = %self.name, error = %e, "Plugin reload failed, the previous version keeps serving");
                }
                h.reload_error = Some(message);
            }
        }
        result
    }

    fn reload_locked(&self, stamp: &mut Option<FileStamp>) -> Result<bool, PluginError> {
        let (bytes, new_stamp) = read_file(&self.manifest.path).inspect_err(|_| *stamp = None)?;
        // From here on failures are verdicts on this content: the stamp is kept so
        // the same file is not tried again at every poll.
        *stamp = Some(new_stamp);
        check_pin(&self.manifest, &bytes)?;
        if sha256_hex(&bytes) == self.current().sha256 {
            return Ok(false);
        }
        let loaded = build(
            &self.shared,
            &self.manifest,
            &self.name,
            &self.config_json,
            &bytes,
        )?;
        tracing::info!(
            plugin = %self.name,
            sha256 = %loaded.sha256,
            from_cache = loaded.from_cache,
            compile_ms = loaded.compile_time.as_secs_f64() * 1e3,
            "Plugin reloaded"
        );
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(true)
    }

    /// Instantiates and configures a fresh instance of the running version within
    /// the manifest's limits, then drops it: a probe that leaves the warm instances
    /// and the health counters alone. Blocking.
    pub fn check(&self) -> Result<(), PluginError> {
        let ctx = self.ctx();
        instantiate(&ctx, Instant::now() + self.manifest.timeout).map(drop)
    }

    fn ctx(&self) -> CallCtx {
        CallCtx {
            shared: self.shared.clone(),
            loaded: self.current(),
            name: self.name.clone(),
            config_json: self.config_json.clone(),
            memory_bytes: self.manifest.memory_bytes,
            fuel: self.manifest.fuel,
            timeout: self.manifest.timeout,
            tick: self.shared.config.epoch_tick,
        }
    }

    fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs one call on a warm instance, on a blocking thread, within the limits.
    ///
    /// `f` gets the store and the instance's exports; it returns the guest's answer
    /// already converted (`Ok(Err(..))` for an answer the host cannot use: counted as
    /// a failure, the instance is kept) or a Wasmtime error (the instance is dropped).
    /// The call is counted under `export` (see [`Plugin::stats`]) when it ends.
    pub(crate) async fn call<R, F>(&self, export: Export, f: F) -> Result<R, PluginError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Store<StoreState>, &World) -> wasmtime::Result<Result<R, PluginError>>
            + Send
            + 'static,
    {
        let started = Instant::now();
        let (result, ran) = self.run_call(f).await;
        // The counters first: when the failure is logged, /metrics shows it.
        self.counters.record(
            export,
            started.elapsed(),
            result.as_ref().err().map(FailureReason::of),
        );
        if ran {
            self.record(&result);
        }
        result
    }

    /// Runs the call unless the plugin is disabled; says whether it ran (a refusal
    /// of a disabled plugin is not a failure of its own for the health counters).
    async fn run_call<R, F>(&self, f: F) -> (Result<R, PluginError>, bool)
    where
        R: Send + 'static,
        F: FnOnce(&mut Store<StoreState>, &World) -> wasmtime::Result<Result<R, PluginError>>
            + Send
            + 'static,
    {
        {
            let mut h = lock(&self.health);
            h.calls += 1;
            if let Some((reason, _)) = &h.disabled {
                let refused = Err(PluginError::Disabled {
                    plugin: self.name.to_string(),
                    reason: reason.clone(),
                });
                return (refused, false);
            }
        }
        let timeout = self.manifest.timeout;
        let deadline = Instant::now() + timeout;
        let ctx = self.ctx();
        let name = self.name.clone();
        let run = async move {
            let permit = ctx
                .loaded
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| PluginError::Host {
                    plugin: ctx.name.to_string(),
                    message: e.to_string(),
                })?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                run_blocking(&ctx, deadline, f)
            })
            .await
            .map_err(|e| PluginError::Host {
                plugin: name.to_string(),
                message: e.to_string(),
            })?
        };
        let result = match tokio::time::timeout(timeout + WALL_CLOCK_GRACE, run).await {
            Ok(r) => r,
            Err(_) => Err(PluginError::Timeout {
                plugin: self.name.to_string(),
                timeout,
            }),
        };
        (result, true)
    }

    fn record<R>(&self, result: &Result<R, PluginError>) {
        let mut h = lock(&self.health);
        match result {
            Ok(_) => {
                if h.consecutive > 0 {
                    tracing::info!(plugin = %self.name, after = h.consecutive, "Plugin recovered");
                }
                h.consecutive = 0;
            }
            Err(e) => {
                h.failures += 1;
                h.consecutive = h.consecutive.saturating_add(1);
                h.last_error = Some(e.to_string());
                if h.consecutive >= self.disable_after && h.disabled.is_none() {
                    let reason = format!("{} consecutive failures, the last: {e}", h.consecutive);
                    tracing::error!(plugin = %self.name, %reason, "Plugin disabled");
                    h.disabled = Some((reason, SystemTime::now()));
                } else {
                    tracing::warn!(plugin = %self.name, error = %e, consecutive = h.consecutive, "Plugin call failed");
                }
            }
        }
    }
}

fn read_file(path: &std::path::Path) -> Result<(Vec<u8>, FileStamp), PluginError> {
    let io = |e: std::io::Error| PluginError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    };
    // Stat before reading: if the file changes in between, the stamp is older than
    // the content and the next poll reads it again.
    let meta = std::fs::metadata(path).map_err(io)?;
    let bytes = std::fs::read(path).map_err(io)?;
    Ok((bytes, FileStamp::of(&meta)))
}

fn check_pin(manifest: &Manifest, bytes: &[u8]) -> Result<(), PluginError> {
    if let Some(pin) = &manifest.sha256 {
        let actual = sha256_hex(bytes);
        if !actual.eq_ignore_ascii_case(pin) {
            return Err(PluginError::HashMismatch {
                path: manifest.path.clone(),
                expected: pin.to_ascii_lowercase(),
                actual,
            });
        }
    }
    Ok(())
}

/// Compiles, links and test-runs a component: one warm instance, configured, seeds
/// the new generation's pool.
fn build(
    shared: &Arc<Shared>,
    manifest: &Manifest,
    name: &Arc<str>,
    config_json: &str,
    bytes: &[u8],
) -> Result<Loaded, PluginError> {
    let sha256 = sha256_hex(bytes);
    let Compiled {
        component,
        from_cache,
        compile_time,
    } = shared.compile(name, bytes, &sha256)?;
    let link = |e: wasmtime::Error| PluginError::Link {
        plugin: name.to_string(),
        kind: manifest.kind,
        message: format!("{e:#}"),
    };
    let instance_pre = shared
        .linker(manifest.kind)
        .instantiate_pre(&component)
        .map_err(link)?;
    let pre = match manifest.kind {
        PluginKind::Auth => Pre::Auth(auth::AuthPre::new(instance_pre).map_err(link)?),
        PluginKind::Route => Pre::Route(route::RoutePre::new(instance_pre).map_err(link)?),
        PluginKind::Schedule => {
            Pre::Schedule(schedule::SchedulePre::new(instance_pre).map_err(link)?)
        }
        PluginKind::Notify => Pre::Notify(notify::NotifyPre::new(instance_pre).map_err(link)?),
    };
    let loaded = Arc::new(Loaded {
        pre,
        sha256,
        from_cache,
        compile_time,
        idle: Mutex::new(Vec::new()),
        permits: Arc::new(Semaphore::new(
            usize::try_from(manifest.instances).unwrap_or(1),
        )),
    });
    let ctx = CallCtx {
        shared: shared.clone(),
        loaded: loaded.clone(),
        name: name.clone(),
        config_json: Arc::from(config_json),
        memory_bytes: manifest.memory_bytes,
        fuel: manifest.fuel,
        timeout: manifest.timeout,
        tick: shared.config.epoch_tick,
    };
    let warm = instantiate(&ctx, Instant::now() + manifest.timeout).map_err(|e| match e {
        // A plugin that cannot even start is refused with the reason.
        PluginError::Trap { plugin, message } => PluginError::Configure {
            plugin,
            message: format!("configure trapped: {message}"),
        },
        other => other,
    })?;
    drop(ctx);
    lock(&loaded.idle).push(warm);
    Arc::try_unwrap(loaded).map_err(|_| PluginError::Host {
        plugin: name.to_string(),
        message: "plugin generation still shared while loading".into(),
    })
}

/// Runs `f` on an idle instance (or a new one), on the current (blocking) thread.
fn run_blocking<R, F>(ctx: &CallCtx, deadline: Instant, f: F) -> Result<R, PluginError>
where
    F: FnOnce(&mut Store<StoreState>, &World) -> wasmtime::Result<Result<R, PluginError>>,
{
    let _active = ctx.shared.enter();
    let idle = lock(&ctx.loaded.idle).pop();
    let mut warm = match idle {
        Some(w) => w,
        None => instantiate(ctx, deadline)?,
    };
    arm(ctx, &mut warm.store, deadline)?;
    match f(&mut warm.store, &warm.world) {
        Ok(answer) => {
            lock(&ctx.loaded.idle).push(warm);
            answer
        }
        Err(e) => Err(classify(ctx, &warm.store, e)),
    }
}

/// Creates a store and an instance and runs `configure`.
fn instantiate(ctx: &CallCtx, deadline: Instant) -> Result<Warm, PluginError> {
    let _active = ctx.shared.enter();
    let mut store = Store::new(
        &ctx.shared.engine,
        StoreState::new(ctx.name.clone(), ctx.memory_bytes),
    );
    store.limiter(|s| &mut s.limits);
    arm(ctx, &mut store, deadline)?;
    let link = |store: &Store<StoreState>, e: wasmtime::Error| match classify(ctx, store, e) {
        PluginError::Trap { message, .. } => PluginError::Link {
            plugin: ctx.name.to_string(),
            kind: ctx.loaded.pre.kind(),
            message,
        },
        other => other,
    };
    let world = match &ctx.loaded.pre {
        Pre::Auth(p) => p.instantiate(&mut store).map(World::Auth),
        Pre::Route(p) => p.instantiate(&mut store).map(World::Route),
        Pre::Schedule(p) => p.instantiate(&mut store).map(World::Schedule),
        Pre::Notify(p) => p.instantiate(&mut store).map(World::Notify),
    };
    let world = world.map_err(|e| link(&store, e))?;
    let config = &*ctx.config_json;
    let configured = match &world {
        World::Auth(w) => w.call_configure(&mut store, config),
        World::Route(w) => w.call_configure(&mut store, config),
        World::Schedule(w) => w.call_configure(&mut store, config),
        World::Notify(w) => w.call_configure(&mut store, config),
    };
    match configured {
        Ok(Ok(())) => Ok(Warm { store, world }),
        Ok(Err(message)) => Err(PluginError::Configure {
            plugin: ctx.name.to_string(),
            message: truncate(message, 512),
        }),
        Err(e) => Err(classify(ctx, &store, e)),
    }
}

/// Sets the epoch deadline and the fuel of a store for the time left.
fn arm(ctx: &CallCtx, store: &mut Store<StoreState>, deadline: Instant) -> Result<(), PluginError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(PluginError::Timeout {
            plugin: ctx.name.to_string(),
            timeout: ctx.timeout,
        });
    }
    // One tick more than the time left: the next tick may come at once.
    let ticks = left.as_nanos().div_ceil(ctx.tick.as_nanos().max(1)) + 1;
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
    // An engine that counts fuel traps at zero: a plugin without a fuel limit gets
    // all there is.
    if ctx.shared.config.consume_fuel {
        let fuel = ctx.fuel.unwrap_or(u64::MAX);
        store.set_fuel(fuel).map_err(|e| PluginError::Host {
            plugin: ctx.name.to_string(),
            message: e.to_string(),
        })?;
    }
    store.data_mut().begin_call();
    Ok(())
}

/// Turns a Wasmtime error from guest code into the matching [`PluginError`].
fn classify(ctx: &CallCtx, store: &Store<StoreState>, e: wasmtime::Error) -> PluginError {
    let plugin = ctx.name.to_string();
    if store.data().limits.memory_refused {
        return PluginError::MemoryLimit {
            plugin,
            limit: ctx.memory_bytes,
        };
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => PluginError::Timeout {
            plugin,
            timeout: ctx.timeout,
        },
        Some(wasmtime::Trap::OutOfFuel) => PluginError::OutOfFuel { plugin },
        Some(trap) => PluginError::Trap {
            plugin,
            message: trap.to_string(),
        },
        None => PluginError::Trap {
            plugin,
            message: truncate(e.to_string(), 512),
        },
    }
}

impl Pre {
    fn kind(&self) -> PluginKind {
        match self {
            Pre::Auth(_) => PluginKind::Auth,
            Pre::Route(_) => PluginKind::Route,
            Pre::Schedule(_) => PluginKind::Schedule,
            Pre::Notify(_) => PluginKind::Notify,
        }
    }
}

/// Truncates to at most `max` bytes on a character boundary, dropping control
/// characters: for messages that come from a plugin.
pub(crate) fn truncate(s: String, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        if out.len() + c.len_utf8() > max {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// Truncates to at most `max` bytes on a character boundary, keeping line breaks.
pub(crate) fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}
