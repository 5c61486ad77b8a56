//! What each store holds: the memory limiter and the state of the host imports.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use crate::bindings::{host, types};

/// Log messages a plugin may write per call; the rest are dropped.
const LOG_BUDGET: u32 = 32;
/// Longest log message kept, in bytes.
const LOG_MAX_BYTES: usize = 1024;

/// The data of one plugin instance's store.
pub(crate) struct StoreState {
    pub(crate) plugin: Arc<str>,
    pub(crate) limits: Limiter,
    logs_left: u32,
}

impl StoreState {
    pub(crate) fn new(plugin: Arc<str>, memory_bytes: u64) -> Self {
        let memory = usize::try_from(memory_bytes).unwrap_or(usize::MAX);
        Self {
            plugin,
            limits: Limiter {
                inner: StoreLimitsBuilder::new()
                    .memory_size(memory)
                    .instances(16)
                    .memories(4)
                    .tables(16)
                    .trap_on_grow_failure(true)
                    .build(),
                memory_refused: false,
            },
            logs_left: LOG_BUDGET,
        }
    }

    /// Resets the per-call state before a call.
    pub(crate) fn begin_call(&mut self) {
        self.logs_left = LOG_BUDGET;
        self.limits.memory_refused = false;
    }
}

/// [`StoreLimits`] that remembers a refused memory growth, so the resulting trap is
/// reported as a memory limit rather than a generic trap.
pub(crate) struct Limiter {
    inner: StoreLimits,
    pub(crate) memory_refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let r = self.inner.memory_growing(current, desired, maximum);
        if !matches!(r, Ok(true)) {
            self.memory_refused = true;
        }
        r
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_refused = true;
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl host::Host for StoreState {
    fn log(&mut self, level: host::Level, message: String) {
        if self.logs_left == 0 {
            return;
        }
        self.logs_left -= 1;
        let mut message = message;
        if message.len() > LOG_MAX_BYTES {
            let mut end = LOG_MAX_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let plugin = &*self.plugin;
        match level {
            host::Level::Trace => {
                tracing::trace!(target: "cthulhu_plugins::guest", plugin, "{message}")
            }
            host::Level::Debug => {
                tracing::debug!(target: "cthulhu_plugins::guest", plugin, "{message}")
            }
            host::Level::Info => {
                tracing::info!(target: "cthulhu_plugins::guest", plugin, "{message}")
            }
            host::Level::Warn => {
                tracing::warn!(target: "cthulhu_plugins::guest", plugin, "{message}")
            }
            host::Level::Error => {
                tracing::error!(target: "cthulhu_plugins::guest", plugin, "{message}")
            }
        }
        if self.logs_left == 0 {
            tracing::warn!(target: "cthulhu_plugins::guest", plugin, "Log budget of this call used up, dropping further messages");
        }
    }

    fn now(&mut self) -> u64 {
        unix_ms(SystemTime::now())
    }
}

impl types::Host for StoreState {}

/// Milliseconds since the Unix epoch (0 before it, saturating far after it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
