//! # cthulhu-plugins
//!
//! WebAssembly policy plugins: components written against the WIT package
//! `cthulhu:plugin` (`plugins/wit/`), run by Wasmtime in a sandbox so that a buggy or
//! hostile plugin cannot take the proxy down.
//!
//! - [`PluginHost`] owns one engine (epoch interruption, pooling allocator) and loads
//!   plugins from [`Manifest`]s, precompiling each component once (cached on disk by
//!   content hash and engine compatibility) and watching the files for hot reload.
//! - Each call runs on a blocking thread on a warm, configured instance, with an epoch
//!   deadline (the manifest's timeout), a memory cap and optionally fuel. An instance
//!   that traps or runs out of time is dropped; a plugin failing
//!   [`HostConfig::disable_after`] times in a row is disabled until its file changes.
//! - Every call is counted per plugin and exported function, with atomics: calls,
//!   failures by [`FailureReason`] and a latency histogram ([`LATENCY_BUCKETS`]),
//!   read as [`PluginStats`] ([`Plugin::stats`], [`PluginHost::stats`]) for metrics.
//! - Typed adapters per hook: [`AuthPlugin`] (fails closed), [`RoutePlugin`] (falls
//!   back to the config's routes), [`NotifyPlugin`] (fails open: the default
//!   notifications go out), [`SchedulePlugin`]. [`PolicyChain`] chains the config's
//!   [`Router`](cthulhu_core::Router) with auth and route plugins behind the same trait.
//!
//! The adapters' calls are async and need a Tokio runtime with the time driver: guest
//! code runs on `spawn_blocking` threads, never on the runtime's workers.
//! [`PluginHost::load`] and [`Plugin::reload_if_changed`] block (they compile).
//!
//! Plugins get no ambient authority: their only imports are `log` and `now`
//! (`cthulhu:plugin/host`); no WASI, no network, no files.
//!
//! ```no_run
//! # async fn example(config_router: std::sync::Arc<dyn cthulhu_core::Router>) -> Result<(), cthulhu_plugins::PluginError> {
//! use cthulhu_plugins::{AuthPlugin, HostConfig, Manifest, PluginHost, PluginKind, PolicyChain};
//!
//! let host = PluginHost::new(HostConfig::default())?;
//! let plugin = host.load(
//!     Manifest::new(PluginKind::Auth, "plugins/stream-key-auth.wasm")
//!         .with_config(serde_json::json!({ "keys": ["k1"] })),
//! )?;
//! let router = PolicyChain::new(config_router).with_auth(AuthPlugin::new(plugin)?);
//! # let _ = router; Ok(()) }
//! ```

mod auth;
mod bindings;
mod chain;
mod error;
mod host;
mod manifest;
mod notify;
mod plugin;
mod route;
mod schedule;
mod stats;
mod store;

pub use auth::AuthPlugin;
pub use chain::PolicyChain;
pub use error::PluginError;
pub use host::PluginHost;
pub use manifest::{DEFAULT_MEMORY_BYTES, DEFAULT_TIMEOUT, HostConfig, Manifest, PluginKind};
pub use notify::{EventKind, LifecycleEvent, Notification, NotifyPlugin, NotifyTarget};
pub use plugin::{Plugin, PluginState, PluginStatus};
pub use route::{Recording, RouteMode, RoutePlan, RoutePlugin};
pub use schedule::{ItemStatus, ScheduleCommand, ScheduleItem, SchedulePlugin, StartDecision};
pub use stats::{FailureReason, FunctionStats, LATENCY_BUCKETS, LatencyHistogram, PluginStats};
