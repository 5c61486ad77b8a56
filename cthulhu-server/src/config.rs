//! The server's TOML configuration file.
//!
//! Reading takes two steps. Serde reads the text into private raw structs
//! (`deny_unknown_fields` everywhere) that keep the byte span of every value needing a
//! semantic check; validation then builds the public types. Every error, from a TOML
//! syntax error to a duplicate stream key, names the file, the 1-based line and
//! column, and the key path: `cthulhu.toml:12:7: streams[0].push[1].url: …`.
//!
//! Invariant: stream keys never appear in an error message or in `Debug` output. They
//! are held in [`Secret`], push URLs print redacted ([`PushUrl`]), and errors about keys
//! name the streams involved, not the key.

pub(crate) mod locate;
pub(crate) mod push_url;
pub(crate) mod secret;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cthulhu_core::{Secret, StreamPath};
use serde::Deserialize;
use toml::Spanned;

use locate::{key_path_at, line_col};
pub(crate) use push_url::{PushTarget, PushUrl};
use secret::TomlSecret;

/// Data directory used when the file names none.
pub(crate) const DEFAULT_DATA_DIR: &str = "./cthulhu-data";
/// RTMP listen address used when the file names none.
pub(crate) const DEFAULT_RTMP_LISTEN: &str = "0.0.0.0:1935";
/// SRT listen address used when the file names none.
pub(crate) const DEFAULT_SRT_LISTEN: &str = "0.0.0.0:9000";
/// Allowed outbound RTMP chunk sizes.
pub(crate) const CHUNK_SIZE_RANGE: RangeInclusive<u32> = 128..=65536;
/// Allowed values of every `*_timeout_secs` setting, up to one day.
const TIMEOUT_SECS_RANGE: RangeInclusive<i64> = 1..=86_400;

/// An error reading or checking the config file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The text is invalid: TOML syntax, an unknown key, a wrong type or a failed check.
    #[error("{origin}:{line}:{column}: {}{message}", key_prefix(.key.as_deref()))]
    Invalid {
        /// The file name, as given to [`Config::load`] or `Config::parse`.
        origin: String,
        /// 1-based line of the offending key or value (1 if the parser gave no position).
        line: usize,
        /// 1-based column (in characters) within the line.
        column: usize,
        /// Key path such as `streams[0].push[1].url`; `None` for TOML syntax errors.
        key: Option<String>,
        /// What is wrong. Never contains a stream key.
        message: String,
    },
}

fn key_prefix(key: Option<&str>) -> String {
    key.map(|k| format!("{k}: ")).unwrap_or_default()
}

/// The whole server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[server]`: data directory and logging.
    pub(crate) server: ServerConfig,
    /// `[rtmp]`: the RTMP listener.
    pub(crate) rtmp: RtmpConfig,
    /// `[srt]`: the SRT listener and SRT destinations.
    pub(crate) srt: SrtConfig,
    /// `[http]`: the HTTP API.
    pub(crate) http: HttpConfig,
    /// `[hub]`: per-stream buffering and fan-out.
    pub(crate) hub: HubConfig,
    /// `[[streams]]`: the streams that may be published, with their destinations.
    pub(crate) streams: Vec<StreamConfig>,
    /// `[storage.NAME]`: where recordings go, by name (sorted). The name `local` is
    /// predefined (`<data_dir>/recordings`) unless the file defines it.
    pub(crate) storage: Vec<StorageDef>,
    /// `[[plugins]]`: WASM policy plugins.
    pub(crate) plugins: Vec<PluginDef>,
}

/// The hook a plugin implements (`kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PluginHook {
    /// Who may publish and play.
    Auth,
    /// Where published streams go.
    Route,
    /// Scheduling policy.
    Schedule,
    /// Which events become notifications.
    Notify,
}

/// `[[plugins]]`: a WASM policy plugin.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PluginDef {
    /// The hook.
    pub(crate) kind: PluginHook,
    /// The component file, resolved against the config file's directory.
    pub(crate) path: PathBuf,
    /// Expected SHA-256 of the file (lowercase hex), if pinned.
    pub(crate) sha256: Option<String>,
    /// Name for logs and status (default: the file stem).
    pub(crate) name: Option<String>,
    /// Given to the plugin's `configure` (as JSON).
    pub(crate) config: serde_json::Value,
    /// Wall-clock budget of one call (`timeout_ms`, 1 to 10000). Default 50 ms.
    pub(crate) timeout: Duration,
    /// Memory cap (`memory_mb`, 1 to 256). Default 16 MiB.
    pub(crate) memory_bytes: u64,
}

/// Name of the predefined local storage.
pub(crate) const LOCAL_STORAGE: &str = "local";

/// `[storage.NAME]`: a place recordings are written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StorageDef {
    /// The name streams refer to.
    pub(crate) name: String,
    /// `s3://bucket/prefix`, `gs://`, `az://`, `file:///dir`; a plain path is a
    /// local directory (relative to the config file's directory).
    pub(crate) url: String,
    /// S3-compatible endpoint (`http(s)://host:port`), if not AWS.
    pub(crate) endpoint: Option<String>,
    /// Region (S3).
    pub(crate) region: Option<String>,
    /// Access key id (`access_key_id` or `access_key_id_env`); default: the standard
    /// environment variables of the provider.
    pub(crate) access_key_id: Option<Secret>,
    /// Secret access key (`secret_access_key` or `secret_access_key_env`).
    pub(crate) secret_access_key: Option<Secret>,
    /// Session token (`session_token` or `session_token_env`).
    pub(crate) session_token: Option<Secret>,
    /// Allow plain-HTTP endpoints (default: when the endpoint is http://).
    pub(crate) allow_http: Option<bool>,
    /// Multipart part size in bytes (`part_size_kib`). Default 8 MiB.
    pub(crate) part_size: Option<usize>,
    /// Parts uploading at once per recording (`max_inflight_parts`). Default 2.
    pub(crate) max_inflight_parts: Option<usize>,
    /// Bytes a recording may buffer while the store is slow or down
    /// (`max_buffered_mib`). Default 64 MiB.
    pub(crate) max_buffered: Option<usize>,
}

/// Container of a recording (`format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RecordFormat {
    /// Fragmented MP4 (`fmp4`, the default).
    #[default]
    Fmp4,
    /// MPEG-TS (`ts`).
    Ts,
    /// FLV (`flv`).
    Flv,
}

impl RecordFormat {
    /// The usual file extension.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            RecordFormat::Fmp4 => "mp4",
            RecordFormat::Ts => "ts",
            RecordFormat::Flv => "flv",
        }
    }
}

/// `[[streams.record]]`: a recording of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordDef {
    /// The storage (`storage`, a `[storage.NAME]` or `local`). Default `local`.
    pub(crate) storage: String,
    /// Container. Default fmp4.
    pub(crate) format: RecordFormat,
    /// Cut a segment at the first keyframe after this long (`segment_seconds`).
    pub(crate) segment_duration: Option<Duration>,
    /// Cut a segment at the first keyframe after this many bytes (`segment_mib`).
    pub(crate) segment_bytes: Option<u64>,
    /// Object name template (`name`): `{path}`, `{name}`, `{date}`, `{time}`, `{seq}`.
    /// Default `{path}/{date}/{time}-{seq}.<ext>`.
    pub(crate) name: String,
    /// Whether to record at all. Default true.
    pub(crate) enabled: bool,
}

/// The object name template of a recording that names none, for files with the
/// extension `ext`: `{path}/{date}/{time}-{seq}.<ext>`.
pub(crate) fn default_record_name(ext: &str) -> String {
    format!("{{path}}/{{date}}/{{time}}-{{seq}}.{ext}")
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerConfig {
    /// Where the server keeps its state; relative paths are relative to the working
    /// directory. Default `./cthulhu-data`.
    pub(crate) data_dir: PathBuf,
    /// Default log filter (`tracing_subscriber::EnvFilter` syntax), if set.
    pub(crate) log: Option<String>,
}

/// `[rtmp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RtmpConfig {
    /// Listen address. Default `0.0.0.0:1935`.
    pub(crate) listen: SocketAddr,
    /// Outbound chunk size, within [`CHUNK_SIZE_RANGE`]. Default 4096.
    pub(crate) chunk_size: u32,
    /// Time allowed for the RTMP handshake (`handshake_timeout_secs`). Default 10 s.
    pub(crate) handshake_timeout: Duration,
    /// A publisher that sends nothing for this long is closed (`idle_timeout_secs`).
    /// Default 30 s.
    pub(crate) idle_timeout: Duration,
    /// A player that reads nothing for this long is closed (`play_stall_timeout_secs`).
    /// Default 30 s.
    pub(crate) play_stall_timeout: Duration,
    /// TCP_NODELAY on players' sockets (`player_nodelay`). Default false: Nagle's
    /// algorithm roughly halves the CPU per delivered Gbit/s for a few ms of latency.
    pub(crate) player_nodelay: bool,
    /// Audio to players and push destinations waits up to this long for the next
    /// video message, so both leave in one write (`audio_hold_ms`, 0 to 1000).
    /// Default 40 ms.
    pub(crate) audio_hold: Duration,
    /// Open RTMP connections at most (`max_connections`, 0 for no limit). Default
    /// 10,000; further connections are closed at once.
    pub(crate) max_connections: usize,
    /// Open connections from one IP address at most (`max_connections_per_ip`, 0 for
    /// no limit). Default 1,000.
    pub(crate) max_connections_per_ip: usize,
    /// Connections not yet publishing or playing (in the handshake or the command
    /// phase), at most (`max_pending_connections`, 0 for no limit). Default 1,024;
    /// each is closed after `handshake_timeout_secs`.
    pub(crate) max_pending_connections: usize,
    /// A push destination whose socket accepts nothing for this long is dropped and
    /// retried with backoff (`push_stall_timeout_secs`). Default 30 s.
    pub(crate) push_stall_timeout: Duration,
    /// Largest message a connection may send before it publishes or plays, and
    /// largest command or data message after (`max_command_kib`, 1 to 16384).
    /// Default 64 KiB.
    pub(crate) max_command_bytes: usize,
    /// Largest audio or video message of a publisher (`max_media_message_kib`, 64 to
    /// 16384). Default 8 MiB.
    pub(crate) max_media_bytes: usize,
}

/// `[srt]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrtConfig {
    /// Whether to listen for SRT at all (`enabled`). Default true.
    pub(crate) enabled: bool,
    /// Listen address (UDP). Default `0.0.0.0:9000`.
    pub(crate) listen: SocketAddr,
    /// Latency (`latency_ms`, 20 to 8000): what the listener asks of callers and
    /// destinations use unless their URL says otherwise. Default 120 ms.
    pub(crate) latency: Duration,
    /// A publisher that sends nothing for this long is closed (`idle_timeout_secs`).
    /// Default 10 s.
    pub(crate) idle_timeout: Duration,
    /// Open SRT connections at most (`max_connections`, 1 to 100000). Default 1,024.
    pub(crate) max_connections: usize,
    /// Open SRT connections from one IP address at most (`max_connections_per_ip`,
    /// 0 for no limit). Default 256.
    pub(crate) max_connections_per_ip: usize,
    /// Connection requests with a valid cookie waiting for a decision at most
    /// (`max_pending_handshakes`); inductions keep no state. Default 256.
    pub(crate) max_pending_handshakes: usize,
}

/// `[http]`: the HTTP API (and later the console).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpConfig {
    /// Whether to serve the API at all (`enabled`). Default true.
    pub(crate) enabled: bool,
    /// Listen address (TCP). Default `127.0.0.1:8080`: the loopback only.
    pub(crate) listen: SocketAddr,
    /// Bearer token `/metrics` asks for (`metrics_token`); None: open.
    pub(crate) metrics_token: Option<Secret>,
    /// HTTPS (`tls_cert` and `tls_key`); None: plain HTTP.
    pub(crate) tls: Option<HttpTls>,
}

/// `[http] tls_cert` and `tls_key`: the listener speaks HTTPS only. Both files were
/// read and checked at load; the server reads them again when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpTls {
    /// PEM certificate chain, leaf first, resolved against the config file's directory.
    pub(crate) cert: PathBuf,
    /// PEM private key of the leaf certificate, resolved likewise.
    pub(crate) key: PathBuf,
}

impl HttpTls {
    /// Reads both files into a rustls server configuration.
    pub(crate) fn server_config(
        &self,
    ) -> Result<std::sync::Arc<tokio_rustls::rustls::ServerConfig>, crate::api::tls::TlsFileError>
    {
        crate::api::tls::server_config(&self.cert, &self.key)
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_token: None,
            tls: None,
        }
    }
}

/// `[hub]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HubConfig {
    /// Cap of the GOP cache of each stream, in bytes; 0 keeps no frames. Default 16 MiB.
    pub(crate) gop_cache_bytes: usize,
    /// Frames a subscriber queue holds before [`Self::on_overflow`] applies. Default 1024.
    pub(crate) subscriber_queue_frames: usize,
    /// Bytes a subscriber queue holds before [`Self::on_overflow`] applies. Default 32 MiB.
    pub(crate) subscriber_queue_bytes: usize,
    /// What happens to a subscriber whose queue is full.
    pub(crate) on_overflow: OnOverflow,
    /// What happens when a second publisher arrives on a live stream.
    pub(crate) on_second_publisher: OnSecondPublisher,
    /// Destinations stay connected this long after the publisher drops
    /// (`publisher_grace_secs`, 0 to 86400). Default 10 s.
    pub(crate) publisher_grace: Duration,
}

/// What happens to a subscriber whose queue is full (`on_overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum OnOverflow {
    /// `"skip-to-keyframe"`: drop queued frames up to the next keyframe (codec config is
    /// kept) and count the gap. The viewer sees a jump, the connection survives.
    #[default]
    SkipToKeyframe,
    /// `"disconnect"`: close the subscriber. Suits recorders that must not have holes.
    Disconnect,
}

/// What happens when a second publisher arrives on a live stream (`on_second_publisher`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum OnSecondPublisher {
    /// `"reject"`: the newcomer is refused; the live publisher keeps the stream.
    #[default]
    Reject,
    /// `"replace"`: the live publisher is disconnected and the newcomer takes over
    /// (a backup encoder taking over from a hung one); destinations stay connected.
    Replace,
}

/// `[[streams]]`: a stream that may be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamConfig {
    /// `app/name`.
    pub(crate) path: StreamPath,
    /// Publish key (from `key` or the variable named by `key_env`); unique across streams.
    pub(crate) key: Secret,
    /// Key required to play, if any (from `play_key` or `play_key_env`).
    pub(crate) play_key: Option<Secret>,
    /// SRT passphrase (from `passphrase` or `passphrase_env`, 10 to 79 characters): SRT
    /// publishers and players of this stream must encrypt with it (AES, key length as
    /// the caller asks). None: SRT connections of this stream are not encrypted.
    pub(crate) passphrase: Option<Secret>,
    /// `[[streams.push]]`: destinations the stream is pushed to.
    pub(crate) push: Vec<PushConfig>,
    /// `[[streams.record]]`: recordings of the stream.
    pub(crate) record: Vec<RecordDef>,
}

/// `[[streams.push]]`: a push destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushConfig {
    /// Name, unique within the stream; used in logs and the console.
    pub(crate) name: String,
    /// Where to push.
    pub(crate) url: PushUrl,
    /// Whether to push at all. Default true.
    pub(crate) enabled: bool,
    /// `tls_ca_file` (rtmps:// only): a PEM file of CA certificates trusted for this
    /// destination in addition to the system roots. A relative path in the file is
    /// resolved against the config file's directory.
    pub(crate) tls_ca_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            log: None,
        }
    }
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            chunk_size: 4096,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            play_stall_timeout: Duration::from_secs(30),
            player_nodelay: false,
            audio_hold: Duration::from_millis(40),
            push_stall_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_pending_connections: 1_024,
            max_command_bytes: 64 * 1024,
            max_media_bytes: 8 * 1024 * 1024,
        }
    }
}

impl Default for SrtConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            latency: Duration::from_millis(120),
            idle_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_ip: 256,
            max_pending_handshakes: 256,
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            gop_cache_bytes: 16 << 20,
            subscriber_queue_frames: 1024,
            subscriber_queue_bytes: 32 << 20,
            on_overflow: OnOverflow::SkipToKeyframe,
            on_second_publisher: OnSecondPublisher::Reject,
            publisher_grace: Duration::from_secs(10),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::default_embedded(DEFAULT_DATA_DIR)
    }
}

impl Config {
    /// The configuration of a start without a config file: defaults everywhere, data in
    /// `data_dir`, and no streams (the store supplies the default stream).
    pub fn default_embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            server: ServerConfig {
                data_dir: data_dir.into(),
                log: None,
            },
            rtmp: RtmpConfig::default(),
            srt: SrtConfig::default(),
            http: HttpConfig::default(),
            hub: HubConfig::default(),
            streams: Vec::new(),
            storage: Vec::new(),
            plugins: Vec::new(),
        }
    }

    /// Reads and checks the config file at `path`; `key_env` reads the process
    /// environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        Self::parse_in(
            &text,
            &path.display().to_string(),
            Some(base_dir),
            &|name| std::env::var(name).ok(),
        )
    }

    /// Parses and checks config `text`; `origin` names it in errors (the file name).
    /// `key_env` reads the process environment. Relative paths (`tls_ca_file`) are kept
    /// as written, relative to the working directory; [`Self::load`] resolves them
    /// against the config file's directory.
    #[cfg(test)]
    pub(crate) fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        Self::parse_with_env(text, origin, &|name| std::env::var(name).ok())
    }

    /// Like [`Self::parse`], resolving `key_env` and `play_key_env` through `env`
    /// instead of the process environment.
    #[cfg(test)]
    pub(crate) fn parse_with_env(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::parse_in(text, origin, None, env)
    }

    /// Like `Self::parse_with_env`, resolving relative paths against `base_dir` if
    /// given.
    pub(crate) fn parse_in(
        text: &str,
        origin: &str,
        base_dir: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let checker = Checker {
            text,
            origin,
            base_dir,
            env,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| checker.toml_error(&e))?;
        checker.config(raw)
    }
}

// ---------------------------------------------------------------------------------------
// Raw file shape: what serde reads, before any semantic check.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    rtmp: RawRtmp,
    srt: RawSrt,
    http: RawHttp,
    hub: RawHub,
    streams: Vec<Spanned<RawStream>>,
    storage: std::collections::BTreeMap<String, Spanned<RawStorage>>,
    plugins: Vec<Spanned<RawPlugin>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    kind: PluginHook,
    path: Spanned<String>,
    sha256: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    config: Option<toml::Value>,
    timeout_ms: Option<Spanned<i64>>,
    memory_mb: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    url: Spanned<String>,
    endpoint: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    access_key_id: Option<Spanned<TomlSecret>>,
    access_key_id_env: Option<Spanned<String>>,
    secret_access_key: Option<Spanned<TomlSecret>>,
    secret_access_key_env: Option<Spanned<String>>,
    session_token: Option<Spanned<TomlSecret>>,
    session_token_env: Option<Spanned<String>>,
    allow_http: Option<bool>,
    part_size_kib: Option<Spanned<i64>>,
    max_inflight_parts: Option<Spanned<i64>>,
    max_buffered_mib: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    storage: Option<Spanned<String>>,
    format: Option<RecordFormat>,
    segment_seconds: Option<Spanned<i64>>,
    segment_mib: Option<Spanned<i64>>,
    name: Option<Spanned<String>>,
    enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    data_dir: Option<Spanned<String>>,
    log: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRtmp {
    listen: Option<Spanned<String>>,
    chunk_size: Option<Spanned<i64>>,
    handshake_timeout_secs: Option<Spanned<i64>>,
    idle_timeout_secs: Option<Spanned<i64>>,
    play_stall_timeout_secs: Option<Spanned<i64>>,
    player_nodelay: Option<bool>,
    audio_hold_ms: Option<Spanned<i64>>,
    push_stall_timeout_secs: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_ip: Option<Spanned<i64>>,
    max_pending_connections: Option<Spanned<i64>>,
    max_command_kib: Option<Spanned<i64>>,
    max_media_message_kib: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSrt {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
    latency_ms: Option<Spanned<i64>>,
    idle_timeout_secs: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_ip: Option<Spanned<i64>>,
    max_pending_handshakes: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
    metrics_token: Option<Spanned<TomlSecret>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHub {
    gop_cache_bytes: Option<Spanned<i64>>,
    subscriber_queue_frames: Option<Spanned<i64>>,
    subscriber_queue_bytes: Option<Spanned<i64>>,
    on_overflow: Option<OnOverflow>,
    on_second_publisher: Option<OnSecondPublisher>,
    publisher_grace_secs: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    path: Spanned<String>,
    key: Option<Spanned<TomlSecret>>,
    key_env: Option<Spanned<String>>,
    play_key: Option<Spanned<TomlSecret>>,
    play_key_env: Option<Spanned<String>>,
    passphrase: Option<Spanned<TomlSecret>>,
    passphrase_env: Option<Spanned<String>>,
    #[serde(default)]
    push: Vec<Spanned<RawPush>>,
    #[serde(default)]
    record: Vec<Spanned<RawRecord>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    name: Spanned<String>,
    url: Spanned<String>,
    enabled: Option<bool>,
    tls_ca_file: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------
// Validation: raw shape to public types, every error located.

struct Checker<'a> {
    text: &'a str,
    origin: &'a str,
    /// Where relative paths start (the config file's directory), if known.
    base_dir: Option<&'a Path>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

/// A resolved key with where it was written, for duplicate checks.
struct PlacedKey {
    secret: Secret,
    span: Range<usize>,
    key_path: String,
}

impl Checker<'_> {
    fn error(&self, span: &Range<usize>, key: &str, message: impl fmt::Display) -> ConfigError {
        let (line, column) = line_col(self.text, span.start);
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            line,
            column,
            key: Some(key.to_owned()),
            message: message.to_string(),
        }
    }

    fn line(&self, span: &Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span();
        let (line, column) = span
            .as_ref()
            .map_or((1, 1), |s| line_col(self.text, s.start));
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            line,
            column,
            key: span.and_then(|s| key_path_at(self.text, &s)),
            message,
        }
    }

    /// An integer setting within `range`, converted to `T`; `None` if absent.
    fn int<T: TryFrom<i64>>(
        &self,
        value: Option<&Spanned<i64>>,
        key: &str,
        range: RangeInclusive<i64>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(value) = value else { return Ok(None) };
        let n = *value.get_ref();
        let out_of_range = || {
            self.error(
                &value.span(),
                key,
                format_args!("{n} is out of range ({}..={})", range.start(), range.end()),
            )
        };
        if !range.contains(&n) {
            return Err(out_of_range());
        }
        T::try_from(n).map(Some).map_err(|_| out_of_range())
    }

    fn secs(
        &self,
        value: Option<&Spanned<i64>>,
        key: &str,
        range: RangeInclusive<i64>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        Ok(self
            .int::<u64>(value, key, range)?
            .map_or(default, Duration::from_secs))
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let server = self.server(raw.server)?;
        let rtmp = self.rtmp(raw.rtmp)?;
        let srt = self.srt(raw.srt)?;
        let http = self.http(raw.http)?;
        let hub = self.hub(raw.hub)?;
        let storage = self.storage(raw.storage)?;
        let streams = self.streams(raw.streams, &storage)?;
        let plugins = self.plugins(raw.plugins)?;
        Ok(Config {
            server,
            rtmp,
            srt,
            http,
            hub,
            streams,
            storage,
            plugins,
        })
    }

    fn http(&self, raw: RawHttp) -> Result<HttpConfig, ConfigError> {
        let d = HttpConfig::default();
        let listen = match raw.listen {
            None => d.listen,
            Some(listen) => listen.get_ref().trim().parse().map_err(|_| {
                self.error(
                    &listen.span(),
                    "http.listen",
                    format_args!(
                        "invalid listen address {:?} (expected ip:port, such as 127.0.0.1:8080)",
                        listen.get_ref()
                    ),
                )
            })?,
        };
        let metrics_token = match raw.metrics_token {
            None => None,
            Some(t) => {
                let span = t.span();
                let token = t.into_inner().into_secret();
                if token.expose().len() < 16 {
                    return Err(self.error(&span, "http.metrics_token", "at least 16 characters"));
                }
                Some(token)
            }
        };
        let tls = self.http_tls(raw.tls_cert, raw.tls_key)?;
        Ok(HttpConfig {
            enabled: raw.enabled.unwrap_or(d.enabled),
            listen,
            metrics_token,
            tls,
        })
    }

    /// `http.tls_cert` and `http.tls_key`: both or neither, not empty, resolved against
    /// the config file's directory if relative, and readable as a certificate chain
    /// and its private key (checked now, so that a bad file fails the load or the
    /// `check`, not the start).
    fn http_tls(
        &self,
        cert: Option<Spanned<String>>,
        key: Option<Spanned<String>>,
    ) -> Result<Option<HttpTls>, ConfigError> {
        let (cert, key) = match (cert, key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(cert), None) => {
                return Err(self.error(
                    &cert.span(),
                    "http.tls_cert",
                    "needs http.tls_key too (both or neither)",
                ));
            }
            (None, Some(key)) => {
                return Err(self.error(
                    &key.span(),
                    "http.tls_key",
                    "needs http.tls_cert too (both or neither)",
                ));
            }
        };
        let (cert_span, key_span) = (cert.span(), key.span());
        let path = |file: Spanned<String>, name: &str| {
            if file.get_ref().trim().is_empty() {
                return Err(self.error(&file.span(), name, "must not be empty"));
            }
            let path = PathBuf::from(file.into_inner());
            Ok(match self.base_dir {
                Some(base) if path.is_relative() => base.join(path),
                _ => path,
            })
        };
        let tls = HttpTls {
            cert: path(cert, "http.tls_cert")?,
            key: path(key, "http.tls_key")?,
        };
        tls.server_config().map_err(|e| match e {
            crate::api::tls::TlsFileError::Cert(m) => self.error(&cert_span, "http.tls_cert", m),
            crate::api::tls::TlsFileError::Key(m) => self.error(&key_span, "http.tls_key", m),
        })?;
        Ok(Some(tls))
    }

    fn plugins(&self, raw: Vec<Spanned<RawPlugin>>) -> Result<Vec<PluginDef>, ConfigError> {
        let mut out: Vec<PluginDef> = Vec::with_capacity(raw.len());
        for (i, p) in raw.into_iter().enumerate() {
            let at = format!("plugins[{i}]");
            let span = p.span();
            let p = p.into_inner();
            if matches!(p.kind, PluginHook::Auth | PluginHook::Route)
                && out.iter().any(|o| o.kind == p.kind)
            {
                return Err(self.error(
                    &span,
                    &format!("{at}.kind"),
                    "only one auth and one route plugin (a plugin can combine rules itself)",
                ));
            }
            if p.path.get_ref().trim().is_empty() {
                return Err(self.error(&p.path.span(), &format!("{at}.path"), "must not be empty"));
            }
            let path = PathBuf::from(p.path.get_ref());
            let path = match self.base_dir {
                Some(base) if path.is_relative() => base.join(path),
                _ => path,
            };
            let sha256 = match p.sha256 {
                Some(h) => {
                    let v = h.get_ref().trim().to_ascii_lowercase();
                    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(self.error(
                            &h.span(),
                            &format!("{at}.sha256"),
                            "must be 64 hex digits (sha256sum FILE)",
                        ));
                    }
                    Some(v)
                }
                None => None,
            };
            let config = match p.config {
                Some(v) => serde_json::to_value(v).map_err(|e| {
                    self.error(
                        &span,
                        &format!("{at}.config"),
                        format_args!("not representable as JSON: {e}"),
                    )
                })?,
                None => serde_json::Value::Null,
            };
            let timeout = self
                .int::<u64>(
                    p.timeout_ms.as_ref(),
                    &format!("{at}.timeout_ms"),
                    1..=10_000,
                )?
                .map_or(Duration::from_millis(50), Duration::from_millis);
            let memory_bytes = self
                .int::<u64>(p.memory_mb.as_ref(), &format!("{at}.memory_mb"), 1..=256)?
                .map_or(16 << 20, |m| m << 20);
            out.push(PluginDef {
                kind: p.kind,
                path,
                sha256,
                name: p.name.map(|n| n.into_inner()),
                config,
                timeout,
                memory_bytes,
            });
        }
        Ok(out)
    }

    fn storage(
        &self,
        raw: std::collections::BTreeMap<String, Spanned<RawStorage>>,
    ) -> Result<Vec<StorageDef>, ConfigError> {
        let mut out = Vec::with_capacity(raw.len());
        for (name, def) in raw {
            let at = format!("storage.{name}");
            let span = def.span();
            let def = def.into_inner();
            if name.trim().is_empty() {
                return Err(self.error(&span, &at, "a storage needs a name"));
            }
            let url_key = format!("{at}.url");
            let url = def.url.get_ref().trim();
            let url = if url.is_empty() {
                return Err(self.error(&def.url.span(), &url_key, "must not be empty"));
            } else if let Some((scheme, _)) = url.split_once("://") {
                if !matches!(scheme, "s3" | "gs" | "az" | "abfs" | "file") {
                    return Err(self.error(
                        &def.url.span(),
                        &url_key,
                        format_args!(
                            "unsupported scheme {scheme}:// (use s3://, gs://, az://, file:// or a directory)"
                        ),
                    ));
                }
                url.to_owned()
            } else {
                // A directory: relative to the config file.
                let path = PathBuf::from(url);
                let path = match self.base_dir {
                    Some(base) if path.is_relative() => base.join(path),
                    _ => path,
                };
                let path = std::path::absolute(&path).unwrap_or(path);
                format!("file://{}", path.display())
            };
            let endpoint = match def.endpoint {
                Some(e) => {
                    let v = e.get_ref().trim();
                    if !(v.starts_with("http://") || v.starts_with("https://")) {
                        return Err(self.error(
                            &e.span(),
                            &format!("{at}.endpoint"),
                            "must be an http:// or https:// URL",
                        ));
                    }
                    Some(v.to_owned())
                }
                None => None,
            };
            let opt_secret = |field: &str, lit, env| -> Result<Option<Secret>, ConfigError> {
                Ok(self.secret(&at, field, lit, env)?.map(|p| p.secret))
            };
            let scaled = |v: Option<Spanned<i64>>,
                          field: &str,
                          range: RangeInclusive<i64>,
                          unit: usize|
             -> Result<Option<usize>, ConfigError> {
                Ok(self
                    .int::<usize>(v.as_ref(), &format!("{at}.{field}"), range)?
                    .map(|n| n.saturating_mul(unit)))
            };
            out.push(StorageDef {
                name,
                url,
                endpoint,
                region: def.region.map(|r| r.into_inner()),
                access_key_id: opt_secret(
                    "access_key_id",
                    def.access_key_id,
                    def.access_key_id_env,
                )?,
                secret_access_key: opt_secret(
                    "secret_access_key",
                    def.secret_access_key,
                    def.secret_access_key_env,
                )?,
                session_token: opt_secret(
                    "session_token",
                    def.session_token,
                    def.session_token_env,
                )?,
                allow_http: def.allow_http,
                // 64 KiB (tests, S3-compatible stores that allow it) to 5 GiB (S3's limit).
                part_size: scaled(
                    def.part_size_kib,
                    "part_size_kib",
                    64..=5 * 1024 * 1024,
                    1024,
                )?,
                max_inflight_parts: scaled(
                    def.max_inflight_parts,
                    "max_inflight_parts",
                    1..=64,
                    1,
                )?,
                max_buffered: scaled(
                    def.max_buffered_mib,
                    "max_buffered_mib",
                    1..=16_384,
                    1 << 20,
                )?,
            });
        }
        Ok(out)
    }

    fn records(
        &self,
        at: &str,
        raw: Vec<Spanned<RawRecord>>,
        storage: &[StorageDef],
    ) -> Result<Vec<RecordDef>, ConfigError> {
        let mut out = Vec::with_capacity(raw.len());
        for (j, rec) in raw.into_iter().enumerate() {
            let at = format!("{at}.record[{j}]");
            let rec = rec.into_inner();
            let storage_name = match rec.storage {
                Some(s) => {
                    let name = s.get_ref().clone();
                    if name != LOCAL_STORAGE && !storage.iter().any(|d| d.name == name) {
                        return Err(self.error(
                            &s.span(),
                            &format!("{at}.storage"),
                            format_args!(
                                "no [storage.{name}] is defined (define it, or use \"{LOCAL_STORAGE}\": <data_dir>/recordings)"
                            ),
                        ));
                    }
                    name
                }
                None => LOCAL_STORAGE.to_owned(),
            };
            let format = rec.format.unwrap_or_default();
            let segment_duration = self
                .int::<u64>(
                    rec.segment_seconds.as_ref(),
                    &format!("{at}.segment_seconds"),
                    1..=86_400,
                )?
                .map(Duration::from_secs);
            let segment_bytes = self
                .int::<u64>(
                    rec.segment_mib.as_ref(),
                    &format!("{at}.segment_mib"),
                    1..=1_048_576,
                )?
                .map(|m| m << 20);
            let name = match rec.name {
                Some(n) => {
                    let t = n.get_ref().clone();
                    cthulhu_sinks::NameTemplate::parse(&t)
                        .map_err(|e| self.error(&n.span(), &format!("{at}.name"), e))?;
                    t
                }
                None => default_record_name(format.extension()),
            };
            out.push(RecordDef {
                storage: storage_name,
                format,
                segment_duration,
                segment_bytes,
                name,
                enabled: rec.enabled.unwrap_or(true),
            });
        }
        Ok(out)
    }

    fn server(&self, raw: RawServer) -> Result<ServerConfig, ConfigError> {
        let mut out = ServerConfig::default();
        if let Some(dir) = raw.data_dir {
            if dir.get_ref().trim().is_empty() {
                return Err(self.error(&dir.span(), "server.data_dir", "must not be empty"));
            }
            out.data_dir = PathBuf::from(dir.into_inner());
        }
        if let Some(log) = raw.log {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(log.get_ref()) {
                return Err(self.error(
                    &log.span(),
                    "server.log",
                    format_args!("invalid log filter: {e}"),
                ));
            }
            out.log = Some(log.into_inner());
        }
        Ok(out)
    }

    fn rtmp(&self, raw: RawRtmp) -> Result<RtmpConfig, ConfigError> {
        let d = RtmpConfig::default();
        let listen = match raw.listen {
            None => d.listen,
            Some(listen) => listen.get_ref().trim().parse().map_err(|_| {
                self.error(
                    &listen.span(),
                    "rtmp.listen",
                    format_args!(
                        "invalid listen address {:?} (expected ip:port, such as {DEFAULT_RTMP_LISTEN} or [::]:1935)",
                        listen.get_ref()
                    ),
                )
            })?,
        };
        let chunk = i64::from(*CHUNK_SIZE_RANGE.start())..=i64::from(*CHUNK_SIZE_RANGE.end());
        Ok(RtmpConfig {
            listen,
            chunk_size: self
                .int(raw.chunk_size.as_ref(), "rtmp.chunk_size", chunk)?
                .unwrap_or(d.chunk_size),
            handshake_timeout: self.secs(
                raw.handshake_timeout_secs.as_ref(),
                "rtmp.handshake_timeout_secs",
                TIMEOUT_SECS_RANGE,
                d.handshake_timeout,
            )?,
            idle_timeout: self.secs(
                raw.idle_timeout_secs.as_ref(),
                "rtmp.idle_timeout_secs",
                TIMEOUT_SECS_RANGE,
                d.idle_timeout,
            )?,
            play_stall_timeout: self.secs(
                raw.play_stall_timeout_secs.as_ref(),
                "rtmp.play_stall_timeout_secs",
                TIMEOUT_SECS_RANGE,
                d.play_stall_timeout,
            )?,
            player_nodelay: raw.player_nodelay.unwrap_or(d.player_nodelay),
            audio_hold: self
                .int(raw.audio_hold_ms.as_ref(), "rtmp.audio_hold_ms", 0..=1000)?
                .map(Duration::from_millis)
                .unwrap_or(d.audio_hold),
            push_stall_timeout: self.secs(
                raw.push_stall_timeout_secs.as_ref(),
                "rtmp.push_stall_timeout_secs",
                TIMEOUT_SECS_RANGE,
                d.push_stall_timeout,
            )?,
            max_connections: self
                .int(
                    raw.max_connections.as_ref(),
                    "rtmp.max_connections",
                    0..=1_000_000,
                )?
                .unwrap_or(d.max_connections),
            max_connections_per_ip: self
                .int(
                    raw.max_connections_per_ip.as_ref(),
                    "rtmp.max_connections_per_ip",
                    0..=1_000_000,
                )?
                .unwrap_or(d.max_connections_per_ip),
            max_pending_connections: self
                .int(
                    raw.max_pending_connections.as_ref(),
                    "rtmp.max_pending_connections",
                    0..=1_000_000,
                )?
                .unwrap_or(d.max_pending_connections),
            max_command_bytes: self
                .int::<usize>(
                    raw.max_command_kib.as_ref(),
                    "rtmp.max_command_kib",
                    1..=16_384,
                )?
                .map_or(d.max_command_bytes, |k| k * 1024),
            max_media_bytes: self
                .int::<usize>(
                    raw.max_media_message_kib.as_ref(),
                    "rtmp.max_media_message_kib",
                    64..=16_384,
                )?
                .map_or(d.max_media_bytes, |k| k * 1024),
        })
    }

    fn srt(&self, raw: RawSrt) -> Result<SrtConfig, ConfigError> {
        let d = SrtConfig::default();
        let listen = match raw.listen {
            None => d.listen,
            Some(listen) => listen.get_ref().trim().parse().map_err(|_| {
                self.error(
                    &listen.span(),
                    "srt.listen",
                    format_args!(
                        "invalid listen address {:?} (expected ip:port, such as {DEFAULT_SRT_LISTEN} or [::]:9000)",
                        listen.get_ref()
                    ),
                )
            })?,
        };
        Ok(SrtConfig {
            enabled: raw.enabled.unwrap_or(d.enabled),
            listen,
            latency: self
                .int(raw.latency_ms.as_ref(), "srt.latency_ms", 20..=8000)?
                .map(Duration::from_millis)
                .unwrap_or(d.latency),
            idle_timeout: self.secs(
                raw.idle_timeout_secs.as_ref(),
                "srt.idle_timeout_secs",
                TIMEOUT_SECS_RANGE,
                d.idle_timeout,
            )?,
            max_connections: self
                .int(
                    raw.max_connections.as_ref(),
                    "srt.max_connections",
                    1..=100_000,
                )?
                .unwrap_or(d.max_connections),
            max_connections_per_ip: self
                .int(
                    raw.max_connections_per_ip.as_ref(),
                    "srt.max_connections_per_ip",
                    0..=100_000,
                )?
                .unwrap_or(d.max_connections_per_ip),
            max_pending_handshakes: self
                .int(
                    raw.max_pending_handshakes.as_ref(),
                    "srt.max_pending_handshakes",
                    1..=100_000,
                )?
                .unwrap_or(d.max_pending_handshakes),
        })
    }

    fn hub(&self, raw: RawHub) -> Result<HubConfig, ConfigError> {
        let d = HubConfig::default();
        Ok(HubConfig {
            gop_cache_bytes: self
                .int(
                    raw.gop_cache_bytes.as_ref(),
                    "hub.gop_cache_bytes",
                    0..=i64::MAX,
                )?
                .unwrap_or(d.gop_cache_bytes),
            subscriber_queue_frames: self
                .int(
                    raw.subscriber_queue_frames.as_ref(),
                    "hub.subscriber_queue_frames",
                    1..=i64::MAX,
                )?
                .unwrap_or(d.subscriber_queue_frames),
            subscriber_queue_bytes: self
                .int(
                    raw.subscriber_queue_bytes.as_ref(),
                    "hub.subscriber_queue_bytes",
                    1..=i64::MAX,
                )?
                .unwrap_or(d.subscriber_queue_bytes),
            on_overflow: raw.on_overflow.unwrap_or(d.on_overflow),
            on_second_publisher: raw.on_second_publisher.unwrap_or(d.on_second_publisher),
            publisher_grace: self.secs(
                raw.publisher_grace_secs.as_ref(),
                "hub.publisher_grace_secs",
                0..=86_400,
                d.publisher_grace,
            )?,
        })
    }

    fn streams(
        &self,
        raw: Vec<Spanned<RawStream>>,
        storage: &[StorageDef],
    ) -> Result<Vec<StreamConfig>, ConfigError> {
        let mut out: Vec<StreamConfig> = Vec::with_capacity(raw.len());
        let mut paths: HashMap<StreamPath, usize> = HashMap::new();
        // Publish and play keys of the streams checked so far, with their stream.
        let mut keys: Vec<(usize, StreamPath, PlacedKey)> = Vec::new();
        let mut play_keys: Vec<(usize, StreamPath, PlacedKey)> = Vec::new();

        for (i, stream) in raw.into_iter().enumerate() {
            let at = format!("streams[{i}]");
            let table_span = stream.span();
            let stream = stream.into_inner();

            let path_key = format!("{at}.path");
            let path = StreamPath::new(stream.path.get_ref())
                .map_err(|e| self.error(&stream.path.span(), &path_key, e))?;
            if let Some(first) = paths.insert(path.clone(), self.line(&stream.path.span())) {
                return Err(self.error(
                    &stream.path.span(),
                    &path_key,
                    format_args!(
                        "duplicate stream path \"{path}\" (first defined at line {first})"
                    ),
                ));
            }

            let key = self
                .secret(&at, "key", stream.key, stream.key_env)?
                .ok_or_else(|| self.error(&table_span, &at, "set one of key or key_env"))?;
            if let Some((j, other, _)) = keys.iter().find(|(_, _, k)| k.secret == key.secret) {
                return Err(self.error(
                    &key.span,
                    &key.key_path,
                    format_args!(
                        "stream \"{path}\" has the same key as stream \"{other}\" (streams[{j}]); each stream needs its own key"
                    ),
                ));
            }
            if let Some((j, other, _)) = play_keys.iter().find(|(_, _, p)| p.secret == key.secret) {
                return Err(self.error(
                    &key.span,
                    &key.key_path,
                    format_args!(
                        "the key of stream \"{path}\" equals the play key of stream \"{other}\" (streams[{j}]); a player could publish"
                    ),
                ));
            }

            let play_key = self.secret(&at, "play_key", stream.play_key, stream.play_key_env)?;
            if let Some(play) = &play_key {
                if play.secret == key.secret {
                    return Err(self.error(
                        &play.span,
                        &play.key_path,
                        "must differ from the stream's key",
                    ));
                }
                if let Some((j, other, _)) = keys.iter().find(|(_, _, k)| k.secret == play.secret) {
                    return Err(self.error(
                        &play.span,
                        &play.key_path,
                        format_args!(
                            "equals the key of stream \"{other}\" (streams[{j}]); a player could publish there"
                        ),
                    ));
                }
            }

            let passphrase =
                self.secret(&at, "passphrase", stream.passphrase, stream.passphrase_env)?;
            if let Some(p) = &passphrase {
                let n = p.secret.expose().chars().count();
                if !(10..=79).contains(&n) {
                    return Err(self.error(
                        &p.span,
                        &p.key_path,
                        format_args!(
                            "an SRT passphrase has 10 to 79 characters (this one has {n})"
                        ),
                    ));
                }
            }

            let push = self.pushes(&at, &path, stream.push)?;
            let record = self.records(&at, stream.record, storage)?;
            out.push(StreamConfig {
                path: path.clone(),
                key: key.secret.clone(),
                play_key: play_key.as_ref().map(|p| p.secret.clone()),
                passphrase: passphrase.map(|p| p.secret),
                push,
                record,
            });
            keys.push((i, path.clone(), key));
            play_keys.extend(play_key.map(|p| (i, path, p)));
        }
        Ok(out)
    }

    /// Resolves `field` / `{field}_env` of the stream at `at`: exactly one may be set.
    fn secret(
        &self,
        at: &str,
        field: &str,
        literal: Option<Spanned<TomlSecret>>,
        env_name: Option<Spanned<String>>,
    ) -> Result<Option<PlacedKey>, ConfigError> {
        match (literal, env_name) {
            (None, None) => Ok(None),
            (Some(_), Some(name)) => Err(self.error(
                &name.span(),
                &format!("{at}.{field}_env"),
                format_args!("set either {field} or {field}_env, not both"),
            )),
            (Some(literal), None) => {
                let key_path = format!("{at}.{field}");
                let span = literal.span();
                let secret = literal.into_inner().into_secret();
                check_key_chars(secret.expose())
                    .map_err(|why| self.error(&span, &key_path, why))?;
                Ok(Some(PlacedKey {
                    secret,
                    span,
                    key_path,
                }))
            }
            (None, Some(name)) => {
                let key_path = format!("{at}.{field}_env");
                let span = name.span();
                let name = name.get_ref();
                if name.is_empty() {
                    return Err(self.error(&span, &key_path, "must name an environment variable"));
                }
                let value = (self.env)(name).ok_or_else(|| {
                    self.error(
                        &span,
                        &key_path,
                        format_args!(
                            "environment variable {name:?} is not set (or not valid UTF-8)"
                        ),
                    )
                })?;
                check_key_chars(&value).map_err(|why| {
                    self.error(
                        &span,
                        &key_path,
                        format_args!("the value of environment variable {name:?} {why}"),
                    )
                })?;
                Ok(Some(PlacedKey {
                    secret: Secret::new(value),
                    span,
                    key_path,
                }))
            }
        }
    }

    fn pushes(
        &self,
        at: &str,
        path: &StreamPath,
        raw: Vec<Spanned<RawPush>>,
    ) -> Result<Vec<PushConfig>, ConfigError> {
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for (j, push) in raw.into_iter().enumerate() {
            let push = push.into_inner();
            let at = format!("{at}.push[{j}]");

            let name_span = push.name.span();
            let name = push.name.into_inner();
            if name.trim().is_empty() {
                return Err(self.error(&name_span, &format!("{at}.name"), "must not be empty"));
            }
            if let Some(first) = names.insert(name.clone(), self.line(&name_span)) {
                return Err(self.error(
                    &name_span,
                    &format!("{at}.name"),
                    format_args!(
                        "duplicate destination name {name:?} in stream \"{path}\" (first defined at line {first})"
                    ),
                ));
            }

            let url = PushUrl::parse(push.url.get_ref())
                .map_err(|e| self.error(&push.url.span(), &format!("{at}.url"), e))?;
            let tls_ca_file = push
                .tls_ca_file
                .map(|file| self.tls_ca_file(&at, &url, file))
                .transpose()?;
            out.push(PushConfig {
                name,
                url,
                enabled: push.enabled.unwrap_or(true),
                tls_ca_file,
            });
        }
        Ok(out)
    }

    /// `tls_ca_file` of the destination at `at`: only for rtmps://, not empty, and
    /// resolved against the config file's directory if relative. The file itself is
    /// read when the destination connects (it may appear or change later).
    fn tls_ca_file(
        &self,
        at: &str,
        url: &PushUrl,
        file: Spanned<String>,
    ) -> Result<PathBuf, ConfigError> {
        let key = format!("{at}.tls_ca_file");
        let scheme = match url.target() {
            PushTarget::Rtmp(r) if r.tls => None,
            PushTarget::Rtmp(_) => Some("rtmp"),
            PushTarget::Srt(_) => Some("srt"),
        };
        if let Some(scheme) = scheme {
            return Err(self.error(
                &file.span(),
                &key,
                format_args!("only applies to rtmps:// destinations (the url is {scheme}://)"),
            ));
        }
        if file.get_ref().trim().is_empty() {
            return Err(self.error(&file.span(), &key, "must not be empty"));
        }
        let path = PathBuf::from(file.into_inner());
        Ok(match self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        })
    }
}

/// Why a key value is unusable, phrased to follow "must" or a variable name; never
/// quotes the value.
fn check_key_chars(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        Err("must not be empty")
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("must not contain whitespace or control characters")
    } else {
        Ok(())
    }
}
