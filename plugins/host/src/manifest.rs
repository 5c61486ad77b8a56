//! Per-plugin manifests and host-wide settings.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::PluginError;

/// Which hook a plugin implements: one WIT world each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// `world auth`: decides connect, publish and play requests.
    Auth,
    /// `world route`: the destinations and recordings of a published stream.
    Route,
    /// `world schedule`: scheduling policy.
    Schedule,
    /// `world notify`: which lifecycle events become notifications.
    Notify,
}

impl PluginKind {
    /// The WIT world's name.
    pub fn world(self) -> &'static str {
        match self {
            PluginKind::Auth => "auth",
            PluginKind::Route => "route",
            PluginKind::Schedule => "schedule",
            PluginKind::Notify => "notify",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.world())
    }
}

/// The default per-call timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// The default memory cap per instance.
pub const DEFAULT_MEMORY_BYTES: u64 = 16 << 20;

/// One plugin: which file, which hook, its configuration and its limits.
///
/// Deserializes from the server config's `[[plugins]]` table:
///
/// ```toml
/// [[plugins]]
/// kind = "auth"                          # auth | route | schedule | notify
/// path = "plugins/stream-key-auth.wasm"
/// sha256 = "…"                           # optional pin
/// config = { keys = ["…"] }              # given to the plugin's configure() as JSON
/// timeout_ms = 50                        # per call, default 50
/// memory_mb = 16                         # per instance, default 16
/// ```
///
/// Further optional keys: `name` (for logs and status, default: the file stem),
/// `fuel` (instructions per call, needs [`HostConfig::consume_fuel`]),
/// `disable_after` (consecutive failures, default [`HostConfig::disable_after`]) and
/// `instances` (warm instances kept, default 1: see [`Manifest::instances`]).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawManifest")]
pub struct Manifest {
    /// A name for logs and status.
    pub name: String,
    /// The hook it implements.
    pub kind: PluginKind,
    /// The component file (`.wasm`).
    pub path: PathBuf,
    /// The expected SHA-256 of the file, hex; a file that differs is refused, at load
    /// and at reload.
    pub sha256: Option<String>,
    /// Given to the plugin's `configure` as a JSON string. May hold secrets: the
    /// manifest's `Debug` does not print it.
    pub config: serde_json::Value,
    /// Wall-clock budget of one call, including waiting for a free instance.
    pub timeout: Duration,
    /// Memory cap of one instance, in bytes.
    pub memory_bytes: u64,
    /// Fuel (roughly, wasm instructions) per call; None: no fuel limit.
    pub fuel: Option<u64>,
    /// Consecutive failures after which the plugin is disabled; None: the host's.
    pub disable_after: Option<u32>,
    /// How many warm instances may serve calls at the same time. With 1 (the
    /// default) calls are served one at a time by one instance, so a plugin's state
    /// (a rate limiter's counters) is exact; it is still lost when the instance is
    /// discarded after a failure or a reload.
    pub instances: u32,
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config may hold keys and secrets: never printed.
        f.debug_struct("Manifest")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .field("config", &"***")
            .field("timeout", &self.timeout)
            .field("memory_bytes", &self.memory_bytes)
            .field("fuel", &self.fuel)
            .field("disable_after", &self.disable_after)
            .field("instances", &self.instances)
            .finish()
    }
}

impl Manifest {
    /// A manifest with the default limits and an empty (`null`) config, named after
    /// the file stem.
    pub fn new(kind: PluginKind, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            name: default_name(&path),
            kind,
            path,
            sha256: None,
            config: serde_json::Value::Null,
            timeout: DEFAULT_TIMEOUT,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            fuel: None,
            disable_after: None,
            instances: 1,
        }
    }

    /// Sets the configuration given to `configure`.
    pub fn with_config(mut self, config: serde_json::Value) -> Self {
        self.config = config;
        self
    }

    /// Sets the per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the memory cap.
    pub fn with_memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// Sets the name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Pins the file's SHA-256 (hex).
    pub fn with_sha256(mut self, sha256: impl Into<String>) -> Self {
        self.sha256 = Some(sha256.into());
        self
    }

    pub(crate) fn validate(&self) -> Result<(), PluginError> {
        if self.timeout.is_zero() {
            return Err(PluginError::Config(format!(
                "plugin {}: timeout must be positive",
                self.name
            )));
        }
        if self.memory_bytes < (1 << 16) {
            return Err(PluginError::Config(format!(
                "plugin {}: memory limit must be at least 64 KiB",
                self.name
            )));
        }
        if self.instances == 0 {
            return Err(PluginError::Config(format!(
                "plugin {}: instances must be at least 1",
                self.name
            )));
        }
        if let Some(pin) = &self.sha256
            && (pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(PluginError::Config(format!(
                "plugin {}: sha256 must be 64 hex digits",
                self.name
            )));
        }
        Ok(())
    }
}

fn default_name(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".to_owned())
}

/// The `[[plugins]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Option<String>,
    kind: PluginKind,
    path: PathBuf,
    sha256: Option<String>,
    #[serde(default)]
    config: Option<serde_json::Value>,
    timeout_ms: Option<u64>,
    memory_mb: Option<u64>,
    fuel: Option<u64>,
    disable_after: Option<u32>,
    instances: Option<u32>,
}

impl TryFrom<RawManifest> for Manifest {
    type Error = PluginError;

    fn try_from(raw: RawManifest) -> Result<Self, PluginError> {
        let mut m = Manifest::new(raw.kind, raw.path);
        if let Some(name) = raw.name {
            m.name = name;
        }
        m.sha256 = raw.sha256.map(|s| s.to_ascii_lowercase());
        m.config = raw.config.unwrap_or(serde_json::Value::Null);
        if let Some(ms) = raw.timeout_ms {
            m.timeout = Duration::from_millis(ms);
        }
        if let Some(mb) = raw.memory_mb {
            m.memory_bytes = mb.checked_mul(1 << 20).ok_or_else(|| {
                PluginError::Config(format!("plugin {}: memory_mb is too large", m.name))
            })?;
        }
        m.fuel = raw.fuel;
        m.disable_after = raw.disable_after;
        if let Some(n) = raw.instances {
            m.instances = n;
        }
        m.validate()?;
        Ok(m)
    }
}

/// Host-wide settings, shared by every plugin of a [`PluginHost`](crate::PluginHost).
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Where precompiled components are cached, keyed by the file's SHA-256 and the
    /// engine's compatibility hash (Wasmtime version and settings). None: compile
    /// in memory at every load.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch ticks while calls run; the granularity of timeouts.
    pub epoch_tick: Duration,
    /// How often plugin files are checked for changes (hot reload); None: never.
    pub reload_poll: Option<Duration>,
    /// Consecutive failures after which a plugin is disabled (a manifest may
    /// override it).
    pub disable_after: u32,
    /// The largest memory cap a manifest may ask for; sizes the instance pool.
    pub max_memory_bytes: u64,
    /// Instances the pooling allocator reserves room for, over all plugins. Each
    /// plugin keeps up to its manifest's `instances` warm, a reload briefly needs
    /// one more, and [`Plugin::check`](crate::Plugin::check) one more: leave
    /// headroom. Each slot reserves virtual address space (not memory) for a
    /// linear memory.
    pub max_instances: u32,
    /// Count fuel, so manifests may set `fuel`. Costs some speed in every call.
    pub consume_fuel: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            epoch_tick: Duration::from_millis(1),
            reload_poll: Some(Duration::from_secs(1)),
            disable_after: 5,
            max_memory_bytes: 256 << 20,
            max_instances: 64,
            consume_fuel: false,
        }
    }
}
