//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

use crate::manifest::PluginKind;

/// Why loading, reloading or calling a plugin failed.
///
/// Messages never hold a stream key or a plugin's configuration: they are safe to log
/// and, for call failures, to put in a refusal reason.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The host or a manifest is configured wrongly.
    #[error("invalid plugin configuration: {0}")]
    Config(String),
    /// The plugin file could not be read.
    #[error("cannot read plugin {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The file's SHA-256 differs from the manifest's pin.
    #[error("plugin {path} has sha256 {actual}, the manifest pins {expected}")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// The pinned hash.
        expected: String,
        /// The file's hash.
        actual: String,
    },
    /// The file is not a valid WebAssembly component, or compiling it failed.
    #[error("plugin {plugin} does not compile: {message}")]
    Compile {
        /// The plugin's name.
        plugin: String,
        /// Wasmtime's error.
        message: String,
    },
    /// The component does not fit the world of its kind (missing exports, unknown
    /// imports such as WASI), or instantiating it failed.
    #[error("plugin {plugin} cannot be instantiated as a {kind} plugin: {message}")]
    Link {
        /// The plugin's name.
        plugin: String,
        /// The kind it was loaded as.
        kind: PluginKind,
        /// Wasmtime's error.
        message: String,
    },
    /// The plugin's `configure` refused its configuration.
    #[error("plugin {plugin} refused its configuration: {message}")]
    Configure {
        /// The plugin's name.
        plugin: String,
        /// The plugin's reason.
        message: String,
    },
    /// The call ran past the plugin's timeout (wall clock, epoch deadline).
    #[error("plugin {plugin} timed out after {timeout:?}")]
    Timeout {
        /// The plugin's name.
        plugin: String,
        /// The manifest's timeout.
        timeout: Duration,
    },
    /// The call used up the plugin's fuel.
    #[error("plugin {plugin} ran out of fuel")]
    OutOfFuel {
        /// The plugin's name.
        plugin: String,
    },
    /// The plugin tried to grow its memory past the manifest's cap.
    #[error("plugin {plugin} exceeded its memory limit of {limit} bytes")]
    MemoryLimit {
        /// The plugin's name.
        plugin: String,
        /// The cap in bytes.
        limit: u64,
    },
    /// The plugin trapped (a panic, `unreachable`, an out-of-bounds access, ...).
    #[error("plugin {plugin} trapped: {message}")]
    Trap {
        /// The plugin's name.
        plugin: String,
        /// The trap.
        message: String,
    },
    /// The plugin returned something the host cannot use (an invalid stream path, ...).
    #[error("plugin {plugin} returned an invalid answer: {message}")]
    InvalidOutput {
        /// The plugin's name.
        plugin: String,
        /// What was wrong.
        message: String,
    },
    /// The plugin is disabled after repeated failures; a reload re-enables it.
    #[error("plugin {plugin} is disabled: {reason}")]
    Disabled {
        /// The plugin's name.
        plugin: String,
        /// Why it was disabled.
        reason: String,
    },
    /// A plugin of one kind was used as another.
    #[error("plugin {plugin} is a {actual} plugin, not {expected}")]
    WrongKind {
        /// The plugin's name.
        plugin: String,
        /// The kind the adapter needs.
        expected: PluginKind,
        /// The plugin's kind.
        actual: PluginKind,
    },
    /// The host could not run the call (its blocking thread pool is gone).
    #[error("plugin {plugin} could not be run: {message}")]
    Host {
        /// The plugin's name.
        plugin: String,
        /// What failed.
        message: String,
    },
}

impl PluginError {
    /// A short description of a call failure, without the plugin's own messages, for
    /// refusal reasons: `timed out`, `trapped`, ...
    pub fn short(&self) -> &'static str {
        match self {
            PluginError::Config(_) => "misconfigured",
            PluginError::Io { .. } => "unreadable",
            PluginError::HashMismatch { .. } => "hash mismatch",
            PluginError::Compile { .. } => "does not compile",
            PluginError::Link { .. } => "cannot be instantiated",
            PluginError::Configure { .. } => "refused its configuration",
            PluginError::Timeout { .. } => "timed out",
            PluginError::OutOfFuel { .. } => "ran out of fuel",
            PluginError::MemoryLimit { .. } => "exceeded its memory limit",
            PluginError::Trap { .. } => "trapped",
            PluginError::InvalidOutput { .. } => "returned an invalid answer",
            PluginError::Disabled { .. } => "is disabled",
            PluginError::WrongKind { .. } => "is of the wrong kind",
            PluginError::Host { .. } => "could not be run",
        }
    }
}
