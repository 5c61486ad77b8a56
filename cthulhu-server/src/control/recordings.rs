//! Recordings in the control plane: what a desired recording is, the storages
//! recordings write to, and a running recorder with what the console shows of it.
//!
//! Recordings are reconciled like pushes: the task diffs each stream's wanted
//! recordings (the config file's, the API's and a route plugin's) against the
//! running recorders and starts or stops only what changed, so an edit or a reload
//! that leaves a recording's settings alone never cuts its segment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cthulhu_core::supervisor::{BackoffPolicy, DestinationStatus};
use cthulhu_core::{Hub, StreamPath};
use cthulhu_sinks::{
    Container, NameTemplate, RecordConfig, Recorder, RecordingHandle, RecordingStats, Storage,
    StorageConfig,
};
use tracing::info;

use crate::config::{LOCAL_STORAGE, RecordDef, RecordFormat, StorageDef, default_record_name};
use crate::db::StoredRecording;

use super::Origin;

/// A desired recording of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordSpec {
    /// Unique within its stream: `record0`, `record1`... for the config file's (in
    /// file order), the store's id for the API's, `plugin:NAME` for a route plugin's.
    pub(crate) id: String,
    /// The storage: a `[storage.NAME]` or `local`.
    pub(crate) storage: String,
    /// The container.
    pub(crate) container: Container,
    /// Object name template (see [`NameTemplate`]).
    pub(crate) name_template: String,
    /// Cut a segment at the first keyframe after this long.
    pub(crate) segment_duration: Option<Duration>,
    /// Cut a segment at the first keyframe after this many bytes.
    pub(crate) segment_bytes: Option<u64>,
    /// Whether it should run.
    pub(crate) enabled: bool,
}

impl RecordSpec {
    /// The `i`th `[[streams.record]]` of a stream.
    pub(crate) fn from_def(i: usize, def: &RecordDef) -> Self {
        Self {
            id: format!("record{i}"),
            storage: def.storage.clone(),
            container: container_of(def.format),
            name_template: def.name.clone(),
            segment_duration: def.segment_duration,
            segment_bytes: def.segment_bytes,
            enabled: def.enabled,
        }
    }

    /// The spec of a recording kept in the store; the error says what is wrong.
    pub(crate) fn from_stored(r: &StoredRecording) -> Result<Self, String> {
        let container: Container = r
            .format
            .as_deref()
            .unwrap_or("fmp4")
            .parse()
            .map_err(|e: cthulhu_sinks::SinkError| e.to_string())?;
        let segment_duration = match r.segment_seconds {
            None => None,
            Some(s) => Some(Duration::from_secs(
                u64::try_from(s).map_err(|_| "segment_seconds is negative".to_owned())?,
            )),
        };
        Ok(Self {
            id: r.id.clone(),
            storage: r
                .storage
                .clone()
                .unwrap_or_else(|| LOCAL_STORAGE.to_owned()),
            container,
            name_template: default_record_name(container.extension()),
            segment_duration,
            segment_bytes: None,
            enabled: r.enabled,
        })
    }

    /// What identifies a running recorder: a change of any of it restarts it.
    fn fingerprint(&self) -> RecordSpec {
        RecordSpec {
            enabled: true,
            ..self.clone()
        }
    }
}

/// The container of a config `format`.
fn container_of(format: RecordFormat) -> Container {
    match format {
        RecordFormat::Fmp4 => Container::Fmp4,
        RecordFormat::Ts => Container::Ts,
        RecordFormat::Flv => Container::Flv,
    }
}

/// The storages recordings write to: the config's `[storage.NAME]` and the
/// predefined `local` (`<data_dir>/recordings`), each opened once, when first used.
pub(crate) struct Storages {
    defs: Vec<StorageDef>,
    data_dir: PathBuf,
    open: HashMap<String, Arc<Storage>>,
}

impl Storages {
    /// The storages of a config (`[storage.NAME]` entries, the data directory).
    pub(crate) fn new(defs: Vec<StorageDef>, data_dir: PathBuf) -> Self {
        Self {
            defs,
            data_dir,
            open: HashMap::new(),
        }
    }

    /// The names recordings may use: `local` and every `[storage.NAME]`.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names = vec![LOCAL_STORAGE.to_owned()];
        names.extend(
            self.defs
                .iter()
                .map(|d| d.name.clone())
                .filter(|n| n != LOCAL_STORAGE),
        );
        names
    }

    /// Whether `name` is a storage recordings may use.
    pub(crate) fn contains(&self, name: &str) -> bool {
        name == LOCAL_STORAGE || self.defs.iter().any(|d| d.name == name)
    }

    /// The storage named `name`, opened now if it was not before. The error names
    /// the storage and never holds its credentials.
    pub(crate) fn open(&mut self, name: &str) -> Result<Arc<Storage>, String> {
        if let Some(s) = self.open.get(name) {
            return Ok(s.clone());
        }
        let sc = match self.defs.iter().find(|d| d.name == name) {
            Some(d) => StorageConfig {
                url: d.url.clone(),
                endpoint: d.endpoint.clone(),
                region: d.region.clone(),
                access_key_id: d.access_key_id.clone(),
                secret_access_key: d.secret_access_key.clone(),
                session_token: d.session_token.clone(),
                allow_http: d.allow_http,
                ..StorageConfig::default()
            },
            None if name == LOCAL_STORAGE => {
                let dir = self.data_dir.join("recordings");
                let dir = std::path::absolute(&dir).unwrap_or(dir);
                StorageConfig {
                    url: format!("file://{}", dir.display()),
                    ..StorageConfig::default()
                }
            }
            None => return Err(format!("no storage named {name:?}")),
        };
        let storage = Storage::from_config(&sc).map_err(|e| format!("storage {name:?}: {e}"))?;
        info!(storage = %name, at = %storage.describe(), "Storage ready");
        self.open.insert(name.to_owned(), storage.clone());
        Ok(storage)
    }

    /// A recorder of `path` for `spec` (not started).
    fn recorder(
        &mut self,
        hub: &Hub,
        path: &StreamPath,
        spec: &RecordSpec,
    ) -> Result<Recorder, String> {
        let storage = self.open(&spec.storage)?;
        let template =
            NameTemplate::parse(&spec.name_template).map_err(|e| format!("name template: {e}"))?;
        let mut rc = RecordConfig::new(spec.container, template);
        rc.segment_duration = spec.segment_duration;
        rc.segment_bytes = spec.segment_bytes;
        if let Some(d) = self.defs.iter().find(|d| d.name == spec.storage) {
            if let Some(v) = d.part_size {
                rc.part_size = v;
            }
            if let Some(v) = d.max_inflight_parts {
                rc.max_inflight_parts = v;
            }
            if let Some(v) = d.max_buffered {
                rc.max_buffered_bytes = v;
            }
        }
        Recorder::new(
            recorder_name(path, &spec.id),
            hub,
            path.clone(),
            storage,
            rc,
        )
        .map_err(|e| e.to_string())
    }
}

/// The recorder name events and logs carry: `app/name:ID`.
fn recorder_name(path: &StreamPath, id: &str) -> String {
    format!("{path}:{id}")
}

/// The recording id of a recorder named by [`recorder_name`] for `path`.
pub(crate) fn recording_id<'a>(path: &StreamPath, recorder: &'a str) -> Option<&'a str> {
    recorder
        .strip_prefix(path.as_str())
        .and_then(|r| r.strip_prefix(':'))
}

/// A desired recording with its origin.
#[derive(Debug, Clone)]
pub(super) struct DesiredRecording {
    pub(super) spec: RecordSpec,
    pub(super) origin: Origin,
    /// A runtime override of `spec.enabled` for a file-origin recording (kept across
    /// reloads).
    pub(super) enabled_override: Option<bool>,
}

impl DesiredRecording {
    /// Whether it should run: the override if any, else its spec.
    pub(super) fn enabled(&self) -> bool {
        self.enabled_override.unwrap_or(self.spec.enabled)
    }
}

/// A running recorder.
pub(super) struct RunningRecording {
    fingerprint: RecordSpec,
    pub(super) handle: RecordingHandle,
    /// The object of the open segment, from the recorder's events.
    pub(super) current_object: Option<String>,
}

impl RunningRecording {
    /// Starts a recorder of `path` for `spec`.
    pub(super) fn start(
        storages: &mut Storages,
        hub: &Hub,
        path: &StreamPath,
        spec: &RecordSpec,
    ) -> Result<Self, String> {
        let recorder = storages.recorder(hub, path, spec)?;
        info!(stream = %path, recording = %spec.id, to = %recorder.describe(), "Recording configured");
        Ok(Self {
            fingerprint: spec.fingerprint(),
            handle: recorder.spawn(BackoffPolicy::default()),
            current_object: None,
        })
    }

    /// Whether it records what `spec` asks for.
    pub(super) fn matches(&self, spec: &RecordSpec) -> bool {
        self.fingerprint == spec.fingerprint()
    }
}

/// What the console and the API show of one recording.
#[derive(Debug, Clone)]
pub(crate) struct RecordingView {
    /// Unique within the stream.
    pub(crate) id: String,
    /// Where it was declared.
    pub(crate) origin: Origin,
    /// The storage's name.
    pub(crate) storage: String,
    /// The container.
    pub(crate) container: Container,
    /// Segment length, if segmented by time.
    pub(crate) segment_duration: Option<Duration>,
    /// Whether it is enabled.
    pub(crate) enabled: bool,
    /// The recorder's status; None while disabled or not startable.
    pub(crate) status: Option<DestinationStatus>,
    /// The recorder's counters; None while not running.
    pub(crate) stats: Option<RecordingStats>,
    /// The object of the open segment.
    pub(crate) current_object: Option<String>,
    /// Why it could not be started (a storage that does not open), if so.
    pub(crate) start_error: Option<String>,
}

impl RecordingView {
    /// The view of a desired recording, `enabled` or not, and its recorder, if
    /// running.
    pub(super) fn new(
        spec: &RecordSpec,
        origin: Origin,
        enabled: bool,
        running: Option<&RunningRecording>,
        start_error: Option<&String>,
    ) -> Self {
        Self {
            id: spec.id.clone(),
            origin,
            storage: spec.storage.clone(),
            container: spec.container,
            segment_duration: spec.segment_duration,
            enabled,
            status: running.map(|r| r.handle.status()),
            stats: running.map(|r| r.handle.stats()),
            current_object: running.and_then(|r| r.current_object.clone()),
            start_error: start_error.cloned(),
        }
    }
}
