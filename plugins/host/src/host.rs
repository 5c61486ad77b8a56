//! The engine, its epoch ticker, the precompile cache and the reload watcher.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings;
use crate::error::PluginError;
use crate::manifest::{HostConfig, Manifest, PluginKind};
use crate::plugin::Plugin;
use crate::stats::PluginStats;
use crate::store::StoreState;

/// Loads plugins and runs them: one Wasmtime engine for all plugins, with an epoch
/// ticker (the timeouts) and a watcher for hot reload.
///
/// Cloning is cheap; clones share everything.
#[derive(Clone)]
pub struct PluginHost {
    shared: Arc<Shared>,
}

/// What the host and every plugin share. Plugins hold it, so the engine and the
/// ticker live as long as any plugin does.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) config: HostConfig,
    linkers: Linkers,
    /// Calls (and instantiations) running now; the ticker sleeps when there are none.
    active: AtomicUsize,
    ticker: OnceLock<Thread>,
    /// Plugins to watch for hot reload.
    registry: Mutex<Vec<Weak<Plugin>>>,
    compat_hash: u64,
    tmp_counter: AtomicU64,
}

struct Linkers {
    auth: Linker<StoreState>,
    route: Linker<StoreState>,
    schedule: Linker<StoreState>,
    notify: Linker<StoreState>,
}

/// A compiled component, and how it was obtained.
pub(crate) struct Compiled {
    pub(crate) component: Component,
    pub(crate) from_cache: bool,
    pub(crate) compile_time: Duration,
}

/// Marks a call as running: the epoch ticker runs while any guard lives.
pub(crate) struct ActiveGuard<'a>(&'a Shared);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl PluginHost {
    /// Creates the engine (epoch interruption, pooling allocator, fuel if asked), its
    /// epoch ticker and, if [`HostConfig::reload_poll`] is set, the reload watcher.
    pub fn new(config: HostConfig) -> Result<Self, PluginError> {
        if config.epoch_tick.is_zero() {
            return Err(PluginError::Config("epoch_tick must be positive".into()));
        }
        if config.max_instances == 0 {
            return Err(PluginError::Config("max_instances must be positive".into()));
        }
        let max_memory = usize::try_from(config.max_memory_bytes)
            .map_err(|_| PluginError::Config("max_memory_bytes is too large".into()))?;
        if let Some(dir) = &config.cache_dir {
            fs::create_dir_all(dir).map_err(|e| PluginError::Io {
                path: dir.clone(),
                message: e.to_string(),
            })?;
        }

        let mut wasm = Config::new();
        wasm.epoch_interruption(true);
        wasm.consume_fuel(config.consume_fuel);
        let n = config.max_instances;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n)
            .total_tables(n.saturating_mul(4))
            .max_memory_size(max_memory);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| PluginError::Config(e.to_string()))?;

        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat_hash = hasher.finish();

        let linkers = Linkers {
            auth: linker(&engine, |l| {
                bindings::auth::Auth::add_to_linker::<_, HasSelf<StoreState>>(l, |s| s)
            })?,
            route: linker(&engine, |l| {
                bindings::route::Route::add_to_linker::<_, HasSelf<StoreState>>(l, |s| s)
            })?,
            schedule: linker(&engine, |l| {
                bindings::schedule::Schedule::add_to_linker::<_, HasSelf<StoreState>>(l, |s| s)
            })?,
            notify: linker(&engine, |l| {
                bindings::notify::Notify::add_to_linker::<_, HasSelf<StoreState>>(l, |s| s)
            })?,
        };

        let shared = Arc::new(Shared {
            engine,
            config,
            linkers,
            active: AtomicUsize::new(0),
            ticker: OnceLock::new(),
            registry: Mutex::new(Vec::new()),
            compat_hash,
            tmp_counter: AtomicU64::new(0),
        });

        let weak = Arc::downgrade(&shared);
        let engine = shared.engine.clone();
        let tick = shared.config.epoch_tick;
        let ticker = thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || epoch_ticker(weak, engine, tick))
            .map_err(|e| PluginError::Config(format!("cannot start the epoch ticker: {e}")))?;
        let _ = shared.ticker.set(ticker.thread().clone());

        if let Some(poll) = shared.config.reload_poll {
            let weak = Arc::downgrade(&shared);
            thread::Builder::new()
                .name("plugin-reload".into())
                .spawn(move || reload_watcher(weak, poll))
                .map_err(|e| {
                    PluginError::Config(format!("cannot start the reload watcher: {e}"))
                })?;
        }
        Ok(Self { shared })
    }

    /// Loads a plugin: reads the file, checks the pin, compiles it (or takes it from
    /// the cache), checks it against its kind's world and runs `configure` once.
    ///
    /// Blocking (compiling takes tens of milliseconds, more in debug builds): call it
    /// at startup or from `spawn_blocking`.
    pub fn load(&self, manifest: Manifest) -> Result<Arc<Plugin>, PluginError> {
        manifest.validate()?;
        if manifest.memory_bytes > self.shared.config.max_memory_bytes {
            return Err(PluginError::Config(format!(
                "plugin {}: memory limit {} exceeds the host's max_memory_bytes {}",
                manifest.name, manifest.memory_bytes, self.shared.config.max_memory_bytes
            )));
        }
        if manifest.fuel.is_some() && !self.shared.config.consume_fuel {
            return Err(PluginError::Config(format!(
                "plugin {}: fuel needs the host's consume_fuel",
                manifest.name
            )));
        }
        let plugin = Plugin::load(self.shared.clone(), manifest)?;
        let mut registry = lock(&self.shared.registry);
        registry.retain(|p| p.strong_count() > 0);
        registry.push(Arc::downgrade(&plugin));
        Ok(plugin)
    }

    /// The plugins loaded and still in use.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        lock(&self.shared.registry)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// The call figures of the plugins loaded and still in use (see
    /// [`Plugin::stats`]), in load order. A plugin that was dropped takes its
    /// figures with it.
    pub fn stats(&self) -> Vec<PluginStats> {
        self.plugins().iter().map(|p| p.stats()).collect()
    }

    /// The host's settings.
    pub fn config(&self) -> &HostConfig {
        &self.shared.config
    }

    /// Where the precompiled artifact of a file with this SHA-256 (hex) is cached.
    pub fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        self.shared.cache_path(sha256)
    }
}

impl Shared {
    /// Marks a call as running, waking the epoch ticker if it slept.
    pub(crate) fn enter(&self) -> ActiveGuard<'_> {
        if self.active.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(t) = self.ticker.get()
        {
            t.unpark();
        }
        ActiveGuard(self)
    }

    pub(crate) fn linker(&self, kind: PluginKind) -> &Linker<StoreState> {
        match kind {
            PluginKind::Auth => &self.linkers.auth,
            PluginKind::Route => &self.linkers.route,
            PluginKind::Schedule => &self.linkers.schedule,
            PluginKind::Notify => &self.linkers.notify,
        }
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.config.cache_dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{:016x}.cwasm", self.compat_hash)))
    }

    /// Compiles a component, through the on-disk cache when there is one.
    pub(crate) fn compile(
        &self,
        plugin: &str,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<Compiled, PluginError> {
        let start = Instant::now();
        let compile_err = |e: wasmtime::Error| PluginError::Compile {
            plugin: plugin.to_owned(),
            message: e.to_string(),
        };
        let Some(path) = self.cache_path(sha256) else {
            let component = Component::new(&self.engine, wasm).map_err(compile_err)?;
            return Ok(Compiled {
                component,
                from_cache: false,
                compile_time: start.elapsed(),
            });
        };
        if let Some(component) = self.read_cached(plugin, &path) {
            return Ok(Compiled {
                component,
                from_cache: true,
                compile_time: start.elapsed(),
            });
        }
        let artifact = self
            .engine
            .precompile_component(wasm)
            .map_err(compile_err)?;
        self.write_cached(plugin, &path, &artifact);
        let component = deserialize(&self.engine, &artifact).map_err(compile_err)?;
        Ok(Compiled {
            component,
            from_cache: false,
            compile_time: start.elapsed(),
        })
    }

    fn read_cached(&self, plugin: &str, path: &Path) -> Option<Component> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(plugin, path = %path.display(), error = %e, "Cannot read cached plugin artifact");
                return None;
            }
        };
        let artifact = match bytes.strip_prefix(CACHE_MAGIC) {
            Some(rest) if rest.len() >= 32 => {
                let (digest, artifact) = rest.split_at(32);
                if Sha256::digest(artifact).as_slice() != digest {
                    None
                } else {
                    Some(artifact)
                }
            }
            _ => None,
        };
        let Some(artifact) = artifact else {
            tracing::warn!(plugin, path = %path.display(), "Cached plugin artifact is corrupt, recompiling");
            return None;
        };
        match deserialize(&self.engine, artifact) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(plugin, path = %path.display(), error = %e, "Cached plugin artifact does not load, recompiling");
                None
            }
        }
    }

    fn write_cached(&self, plugin: &str, path: &Path, artifact: &[u8]) {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
        let mut bytes = Vec::with_capacity(CACHE_MAGIC.len() + 32 + artifact.len());
        bytes.extend_from_slice(CACHE_MAGIC);
        bytes.extend_from_slice(&Sha256::digest(artifact));
        bytes.extend_from_slice(artifact);
        let result = fs::write(&tmp, &bytes).and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            tracing::warn!(plugin, path = %path.display(), error = %e, "Cannot cache plugin artifact");
        }
    }
}

/// Cache files: this magic, the SHA-256 of the artifact, the artifact.
const CACHE_MAGIC: &[u8] = b"cthulhu-plugin-cwasm-1\n";

/// Loads a precompiled component.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: Wasmtime requires the bytes to come from `precompile_component` of a
    // compatible engine and to be unmodified. They are either what this engine just
    // produced, or a cache file this host wrote (to a temporary name, then renamed)
    // whose SHA-256 trailer matched, so a torn or corrupted file is never
    // deserialized. Wasmtime checks version and engine-setting compatibility itself
    // and returns an error on mismatch. The cache directory must be as trusted as the
    // server binary: whoever can write it can run native code in the server.
    unsafe { Component::deserialize(engine, artifact) }
}

fn linker(
    engine: &Engine,
    add: impl FnOnce(&mut Linker<StoreState>) -> wasmtime::Result<()>,
) -> Result<Linker<StoreState>, PluginError> {
    let mut linker = Linker::new(engine);
    add(&mut linker).map_err(|e| PluginError::Config(format!("cannot build the linker: {e}")))?;
    Ok(linker)
}

/// Advances the engine's epoch every `tick` while calls run, and parks otherwise.
/// Ends when the host and all its plugins are gone.
fn epoch_ticker(shared: Weak<Shared>, engine: Engine, tick: Duration) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let active = s.active.load(Ordering::Acquire) > 0;
        drop(s);
        if active {
            engine.increment_epoch();
            thread::sleep(tick);
        } else {
            thread::park_timeout(Duration::from_millis(200));
        }
    }
}

/// Polls the plugin files for changes. Ends when the host and its plugins are gone.
fn reload_watcher(shared: Weak<Shared>, poll: Duration) {
    loop {
        thread::sleep(poll);
        let Some(s) = shared.upgrade() else { return };
        let plugins: Vec<Arc<Plugin>> = {
            let mut registry = lock(&s.registry);
            registry.retain(|p| p.strong_count() > 0);
            registry.iter().filter_map(Weak::upgrade).collect()
        };
        drop(s);
        for p in plugins {
            // Errors are kept in the plugin's status and logged by reload itself.
            let _ = p.reload_if_changed();
        }
    }
}

/// Locks a mutex, ignoring poisoning: the data behind these locks stays consistent
/// even if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lowercase hex of a SHA-256 digest.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";
