//! The control plane: the desired state of every stream path and one task that
//! alone owns the running destinations.
//!
//! Everything that changes what should run goes through a [`Control`] handle: the
//! config file at start and on reload ([`Control::apply_file`]), the HTTP API
//! (streams and destinations created at runtime), and route plugins (their plan at
//! each publish). The task keeps, per stream path, the desired pushes with their
//! [`Origin`], diffs that against what runs, and starts, stops or restarts only what
//! changed: a destination whose name, URL and TLS settings are unchanged keeps its
//! connection through any edit or reload.
//!
//! Recordings are reconciled the same way ([`recordings`]): the config file's
//! `[[streams.record]]`, the API's and a route plugin's.
//!
//! The listeners authorise publishers and players against [`SharedRules`], which the
//! task replaces whenever the set of streams changes.

mod figures;
mod recordings;
mod rules;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cthulhu_core::hub::RecordingEvent;
use cthulhu_core::hub::{HubEvent, SubscribeOptions};
use cthulhu_core::policy::StreamRule;
use cthulhu_core::supervisor::{
    BackoffPolicy, Destination, DestinationState, DestinationStatus, Supervisor, SupervisorHandle,
};
use cthulhu_core::{Hub, Meter, MeterReading, Route, Secret, StaticRouter, StreamPath};
use cthulhu_plugins::{PolicyChain, Recording as PluginRecording};
use cthulhu_rtmp::{PushConfig as RtmpPushConfig, PushGroup, RtmpPush};
use cthulhu_srt::{SrtPush, SrtPushConfig};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::{LOCAL_STORAGE, PushTarget, PushUrl, StreamConfig};

pub(crate) use figures::{DestinationFigures, RecordingFigures, StreamFigures};
use recordings::{DesiredRecording, RunningRecording};
pub(crate) use recordings::{RecordSpec, RecordingView, Storages, recording_id};
pub(crate) use rules::SharedRules;

/// Where a desired stream or destination comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Origin {
    /// The TOML config file: authoritative for what it declares (only enabling and
    /// disabling may be changed at runtime).
    File,
    /// Created at runtime (the API), kept in the data directory's store.
    Store,
    /// A route plugin's plan at the last publish.
    Plugin,
}

impl Origin {
    /// `file`, `api` or `plugin`, as the API shows it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::Store => "api",
            Origin::Plugin => "plugin",
        }
    }
}

/// A desired push destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushSpec {
    /// Unique within its stream.
    pub(crate) name: String,
    /// Where to push (holds the destination's key).
    pub(crate) url: PushUrl,
    /// Extra trust anchors for `rtmps://`.
    pub(crate) tls_ca_file: Option<PathBuf>,
    /// Whether it should run.
    pub(crate) enabled: bool,
}

/// A desired stream: who may publish and play it, and where it goes.
#[derive(Debug, Clone)]
pub(crate) struct StreamSpec {
    /// `app/name`.
    pub(crate) path: StreamPath,
    /// Publish key.
    pub(crate) key: Secret,
    /// Play key, if playing needs one.
    pub(crate) play_key: Option<Secret>,
    /// SRT passphrase, if SRT connections must be encrypted.
    pub(crate) passphrase: Option<Secret>,
}

/// Why the control plane refused a change. Messages never quote keys or URLs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ControlError {
    /// No such stream or destination.
    #[error("{0} not found")]
    NotFound(String),
    /// The change conflicts with what exists (a name taken, an entry the config file
    /// declares).
    #[error("{0}")]
    Conflict(String),
    /// A field is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// The field path, such as `url`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The control task has stopped (the server is shutting down).
    #[error("the server is shutting down")]
    Closed,
}

/// What a change started and stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Destinations started (`path:name`).
    pub(crate) started: Vec<String>,
    /// Destinations stopped.
    pub(crate) stopped: Vec<String>,
    /// Destinations restarted because their URL or TLS settings changed.
    pub(crate) restarted: Vec<String>,
    /// Running destinations left alone.
    pub(crate) kept: usize,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} started, {} stopped, {} restarted, {} unchanged",
            self.started.len(),
            self.stopped.len(),
            self.restarted.len(),
            self.kept
        )
    }
}

/// A change to one destination.
#[derive(Debug, Clone, Default)]
pub(crate) struct DestinationPatch {
    /// Enable or disable.
    pub(crate) enabled: Option<bool>,
    /// A new URL (not for destinations the config file declares).
    pub(crate) url: Option<PushUrl>,
}

/// What the console and the API show of one destination.
#[derive(Debug, Clone)]
pub(crate) struct DestinationView {
    /// Name within the stream.
    pub(crate) name: String,
    /// The URL with its key hidden.
    pub(crate) url_redacted: String,
    /// Where it was declared.
    pub(crate) origin: Origin,
    /// Whether it is enabled.
    pub(crate) enabled: bool,
    /// The supervisor's status; None while disabled.
    pub(crate) status: Option<DestinationStatus>,
    /// What was sent to it since it started; None while disabled.
    pub(crate) traffic: Option<Traffic>,
}

/// What a running destination was sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Traffic {
    /// Bytes written, frames dropped (it fell behind) and bytes waiting now.
    pub(crate) reading: MeterReading,
    /// Bit rate over the last second (None until sampled twice).
    pub(crate) bitrate: Option<u64>,
}

impl Running {
    fn traffic(&self) -> Traffic {
        Traffic {
            reading: self.meter.reading(),
            bitrate: self.sampled.1,
        }
    }
}

/// How often the destinations' counters are sampled for their bit rates.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Counters of changes to what the control plane shows (see [`Control::changes`]);
/// cheap to clone, all clones share the counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Changes(Arc<[std::sync::atomic::AtomicU64; 2]>);

/// The two counts of [`Changes`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChangeCount {
    /// Changes of desired state or of a status (a view older than this is wrong).
    pub(crate) state: u64,
    /// Samples of the counters (a view older than this is only a second late).
    pub(crate) samples: u64,
}

impl Changes {
    /// Desired state or a status changed.
    pub(crate) fn bump(&self) {
        self.0[0].fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// The counters were sampled (rates, bytes).
    pub(crate) fn bump_sample(&self) {
        self.0[1].fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// The counts now.
    pub(crate) fn get(&self) -> ChangeCount {
        ChangeCount {
            state: self.0[0].load(std::sync::atomic::Ordering::Acquire),
            samples: self.0[1].load(std::sync::atomic::Ordering::Acquire),
        }
    }
}

/// What the API shows of one stream's desired state.
#[derive(Debug, Clone)]
pub(crate) struct StreamView {
    /// `app/name`.
    pub(crate) path: StreamPath,
    /// Where it was declared.
    pub(crate) origin: Origin,
    /// Its destinations, by name.
    pub(crate) destinations: Vec<DestinationView>,
    /// Its recordings, by id.
    pub(crate) recordings: Vec<RecordingView>,
}

/// A change of a destination's state, for the event stream.
#[derive(Debug, Clone)]
pub(crate) struct DestinationEvent {
    /// The stream.
    pub(crate) path: StreamPath,
    /// The destination.
    pub(crate) name: String,
    /// Its new status.
    pub(crate) status: DestinationStatus,
}

/// The settings every push shares (from `[rtmp]`, `[srt]` and `[hub]`).
#[derive(Debug, Clone)]
pub(crate) struct PushSettings {
    /// RTMP chunk size of pushes.
    pub(crate) chunk_size: u32,
    /// Audio waits this long for video to share a write.
    pub(crate) audio_hold: Duration,
    /// A destination that accepts nothing for this long is dropped and retried.
    pub(crate) stall_timeout: Duration,
    /// SRT latency of SRT pushes.
    pub(crate) srt_latency: Duration,
    /// How long destinations stay connected after the publisher drops.
    pub(crate) grace: Duration,
}

enum Command {
    ApplyFile {
        streams: Vec<StreamConfig>,
        reply: oneshot::Sender<Applied>,
    },
    AddStream {
        spec: StreamSpec,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    RemoveStream {
        path: StreamPath,
        reply: oneshot::Sender<Result<Applied, ControlError>>,
    },
    AddDestination {
        path: StreamPath,
        spec: PushSpec,
        reply: oneshot::Sender<Result<Applied, ControlError>>,
    },
    PatchDestination {
        path: StreamPath,
        name: String,
        patch: DestinationPatch,
        reply: oneshot::Sender<Result<Applied, ControlError>>,
    },
    RemoveDestination {
        path: StreamPath,
        name: String,
        reply: oneshot::Sender<Result<Applied, ControlError>>,
    },
    Retry {
        path: StreamPath,
        name: String,
        reply: oneshot::Sender<Result<bool, ControlError>>,
    },
    AddRecording {
        path: StreamPath,
        spec: RecordSpec,
        reply: oneshot::Sender<Result<Applied, ControlError>>,
    },
    RemoveRecording {
        path: StreamPath,
        id: String,
        reply: oneshot::Sender<Result<Applied, ControlError>>,
    },
    PatchRecording {
        path: StreamPath,
        id: String,
        enabled: bool,
        reply: oneshot::Sender<Result<Applied, ControlError>>,
    },
    Snapshot {
        reply: oneshot::Sender<Vec<StreamView>>,
    },
    Figures {
        reply: oneshot::Sender<Vec<StreamFigures>>,
    },
    Stream {
        path: StreamPath,
        reply: oneshot::Sender<Option<StreamView>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A handle on the control task. Cheap to clone; every call waits for the task's
/// answer (changes are applied in the order they arrive).
#[derive(Clone)]
pub(crate) struct Control {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<DestinationEvent>,
    changes: Changes,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

/// Bound of the command queue: callers wait (they never fail) while it is full.
const COMMAND_QUEUE: usize = 64;
/// Destination events buffered for slow event readers (who resync from a snapshot).
const EVENT_BUFFER: usize = 1024;

impl Control {
    /// Starts the control task on `hub`. `chain` is the plugin chain whose route
    /// plugins may change each stream's destinations at publish time.
    ///
    /// `rules` is what the listeners authorise against (the task keeps it current);
    /// recordings write to `storages`.
    pub(crate) fn start(
        hub: Hub,
        settings: PushSettings,
        rules: SharedRules,
        chain: Option<Arc<PolicyChain>>,
        storages: Storages,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let push_group = PushGroup::new(
            &hub,
            &RtmpPushConfig {
                grace: settings.grace,
                audio_hold: settings.audio_hold,
                write_timeout: settings.stall_timeout,
                ..RtmpPushConfig::default()
            },
        );
        let changes = Changes::default();
        let task = Task {
            hub,
            changes: changes.clone(),
            settings,
            push_group,
            chain,
            storages,
            rules,
            events: events.clone(),
            streams: BTreeMap::new(),
            plans: HashMap::new(),
            running: HashMap::new(),
            recorders: HashMap::new(),
            record_errors: HashMap::new(),
            stopping: JoinSet::new(),
        };
        let join = tokio::spawn(task.run(rx));
        (
            Self {
                tx,
                events,
                changes,
            },
            join,
        )
    }

    /// The counter that moves whenever what [`Control::snapshot`] answers may have
    /// changed: a change of desired state, a destination's or recording's status, or
    /// the once-a-second sample of the destinations' counters.
    pub(crate) fn changes(&self) -> &Changes {
        &self.changes
    }

    /// Destination status changes, as they happen. A reader that falls behind gets
    /// `Lagged` and should take a [`Control::snapshot`].
    pub(crate) fn events(&self) -> broadcast::Receiver<DestinationEvent> {
        self.events.subscribe()
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Makes the config file's streams and destinations the file-origin part of the
    /// desired state (at start and on reload).
    pub(crate) async fn apply_file(&self, streams: Vec<StreamConfig>) -> Option<Applied> {
        self.ask(|reply| Command::ApplyFile { streams, reply })
            .await
    }

    /// Adds a stream created at runtime.
    pub(crate) async fn add_stream(&self, spec: StreamSpec) -> Result<(), ControlError> {
        self.ask(|reply| Command::AddStream { spec, reply })
            .await
            .unwrap_or(Err(ControlError::Closed))
    }

    /// Removes a stream created at runtime, with its destinations.
    pub(crate) async fn remove_stream(&self, path: StreamPath) -> Result<Applied, ControlError> {
        self.ask(|reply| Command::RemoveStream { path, reply })
            .await
            .unwrap_or(Err(ControlError::Closed))
    }

    /// Adds a destination at runtime to a known stream.
    pub(crate) async fn add_destination(
        &self,
        path: StreamPath,
        spec: PushSpec,
    ) -> Result<Applied, ControlError> {
        self.ask(|reply| Command::AddDestination { path, spec, reply })
            .await
            .unwrap_or(Err(ControlError::Closed))
    }

    /// Enables, disables or re-targets a destination.
    pub(crate) async fn patch_destination(
        &self,
        path: StreamPath,
        name: String,
        patch: DestinationPatch,
    ) -> Result<Applied, ControlError> {
        self.ask(|reply| Command::PatchDestination {
            path,
            name,
            patch,
            reply,
        })
        .await
        .unwrap_or(Err(ControlError::Closed))
    }

    /// Removes a destination created at runtime.
    pub(crate) async fn remove_destination(
        &self,
        path: StreamPath,
        name: String,
    ) -> Result<Applied, ControlError> {
        self.ask(|reply| Command::RemoveDestination { path, name, reply })
            .await
            .unwrap_or(Err(ControlError::Closed))
    }

    /// Retries a destination now, skipping its backoff; false if it was not waiting
    /// to retry.
    pub(crate) async fn retry(&self, path: StreamPath, name: String) -> Result<bool, ControlError> {
        self.ask(|reply| Command::Retry { path, name, reply })
            .await
            .unwrap_or(Err(ControlError::Closed))
    }

    /// Adds a recording at runtime to a known stream.
    pub(crate) async fn add_recording(
        &self,
        path: StreamPath,
        spec: RecordSpec,
    ) -> Result<Applied, ControlError> {
        self.ask(|reply| Command::AddRecording { path, spec, reply })
            .await
            .unwrap_or(Err(ControlError::Closed))
    }

    /// Stops and removes a recording created at runtime (its open segment is
    /// finished and kept).
    pub(crate) async fn remove_recording(
        &self,
        path: StreamPath,
        id: String,
    ) -> Result<Applied, ControlError> {
        self.ask(|reply| Command::RemoveRecording { path, id, reply })
            .await
            .unwrap_or(Err(ControlError::Closed))
    }

    /// Enables or disables a recording of the config file or the API (kept as an
    /// override for the file's). Disabled, its recorder stops (the open segment is
    /// finished and kept); enabled again, it starts a new segment while the stream is
    /// live. A route plugin's recording is the plugin's to decide: a conflict.
    pub(crate) async fn patch_recording(
        &self,
        path: StreamPath,
        id: String,
        enabled: bool,
    ) -> Result<Applied, ControlError> {
        self.ask(|reply| Command::PatchRecording {
            path,
            id,
            enabled,
            reply,
        })
        .await
        .unwrap_or(Err(ControlError::Closed))
    }

    /// The desired state with each destination's status.
    pub(crate) async fn snapshot(&self) -> Vec<StreamView> {
        self.ask(|reply| Command::Snapshot { reply })
            .await
            .unwrap_or_default()
    }

    /// What `/metrics` shows of every stream's destinations and recordings.
    pub(crate) async fn figures(&self) -> Vec<StreamFigures> {
        self.ask(|reply| Command::Figures { reply })
            .await
            .unwrap_or_default()
    }

    /// One stream's desired state with the status of its destinations and
    /// recordings; None if there is no such stream.
    pub(crate) async fn stream(&self, path: StreamPath) -> Option<StreamView> {
        self.ask(|reply| Command::Stream { path, reply })
            .await
            .flatten()
    }

    /// Stops every destination (each unpublishes within its stop grace) and ends the
    /// task.
    pub(crate) async fn shutdown(&self) {
        let _ = self.ask(|reply| Command::Shutdown { reply }).await;
    }
}

/// A desired push with its origin.
#[derive(Debug, Clone)]
struct DesiredPush {
    spec: PushSpec,
    origin: Origin,
    /// A runtime override of `spec.enabled` for a file-origin push (kept across
    /// reloads).
    enabled_override: Option<bool>,
}

impl DesiredPush {
    fn enabled(&self) -> bool {
        self.enabled_override.unwrap_or(self.spec.enabled)
    }
}

#[derive(Debug, Clone)]
struct DesiredStream {
    spec: StreamSpec,
    origin: Origin,
    pushes: BTreeMap<String, DesiredPush>,
    recordings: BTreeMap<String, DesiredRecording>,
}

/// What a plugin chain gave a stream at its last publish.
#[derive(Debug, Clone, Default)]
struct Plan {
    /// The stream's destinations while the plan holds (the chain saw the desired
    /// ones and kept, changed or dropped them).
    routes: Vec<Route>,
    /// Recordings the route plugin asked for, besides the desired ones.
    recordings: Vec<RecordSpec>,
}

/// What identifies a running push: a change of any of it restarts the push.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    url: String,
    tls_ca_file: Option<PathBuf>,
}

struct Running {
    fingerprint: Fingerprint,
    handle: SupervisorHandle,
    /// Forwards the supervisor's status changes to the event stream.
    forward: tokio::task::AbortHandle,
    /// What the push sent and dropped (updated by its writer).
    meter: Arc<Meter>,
    /// Bytes sent at the last sample, and the bit rate between the last two.
    sampled: (u64, Option<u64>),
}

struct Task {
    hub: Hub,
    changes: Changes,
    settings: PushSettings,
    push_group: PushGroup,
    chain: Option<Arc<PolicyChain>>,
    storages: Storages,
    rules: SharedRules,
    events: broadcast::Sender<DestinationEvent>,
    streams: BTreeMap<StreamPath, DesiredStream>,
    /// The plan a plugin chain gave each stream at its last publish.
    plans: HashMap<StreamPath, Plan>,
    running: HashMap<(StreamPath, String), Running>,
    /// Running recorders by (stream, recording id).
    recorders: HashMap<(StreamPath, String), RunningRecording>,
    /// Why a wanted recording could not start, until it does.
    record_errors: HashMap<(StreamPath, String), String>,
    /// Destinations being stopped (each within its supervisor's stop grace).
    stopping: JoinSet<()>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut hub_events = self.hub.events();
        let mut sample = tokio::time::interval(SAMPLE_EVERY);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sample.tick() => {
                    self.sample();
                    self.changes.bump_sample();
                }
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    if !matches!(
                        cmd,
                        Command::Snapshot { .. } | Command::Stream { .. } | Command::Figures { .. }
                    ) {
                        self.changes.bump();
                    }
                    if let Some(reply) = self.handle(cmd).await {
                        self.stop_all().await;
                        let _ = reply.send(());
                        return;
                    }
                }
                ev = hub_events.recv() => match ev {
                    Ok(HubEvent::Published { path, .. }) => {
                        self.changes.bump();
                        self.published(&path).await;
                    }
                    Ok(HubEvent::Recording(ev)) => {
                        self.changes.bump();
                        self.recording_event(&ev);
                    }
                    Ok(_) => self.changes.bump(),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        self.changes.bump();
                        warn!(missed, "Missed hub events: re-routing every live stream");
                        let live: Vec<StreamPath> = self
                            .hub
                            .snapshot()
                            .into_iter()
                            .filter(|s| s.live)
                            .map(|s| s.path)
                            .collect();
                        for path in live {
                            self.published(&path).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        hub_events = self.hub.events();
                    }
                },
                Some(_) = self.stopping.join_next(), if !self.stopping.is_empty() => {}
            }
        }
        self.stop_all().await;
    }

    /// Handles a command; returns the reply of a shutdown request.
    async fn handle(&mut self, cmd: Command) -> Option<oneshot::Sender<()>> {
        match cmd {
            Command::ApplyFile { streams, reply } => {
                let applied = self.apply_file(streams).await;
                let _ = reply.send(applied);
            }
            Command::AddStream { spec, reply } => {
                let r = if self.streams.contains_key(&spec.path) {
                    Err(ControlError::Conflict(format!(
                        "stream {} exists already",
                        spec.path
                    )))
                } else if let Some(other) = self.streams.values().find(|s| s.spec.key == spec.key) {
                    Err(ControlError::Conflict(format!(
                        "the key is the key of stream {} already",
                        other.spec.path
                    )))
                } else {
                    info!(stream = %spec.path, "Stream created");
                    self.streams.insert(
                        spec.path.clone(),
                        DesiredStream {
                            spec,
                            origin: Origin::Store,
                            pushes: BTreeMap::new(),
                            recordings: BTreeMap::new(),
                        },
                    );
                    self.publish_rules();
                    Ok(())
                };
                let _ = reply.send(r);
            }
            Command::RemoveStream { path, reply } => {
                let r = match self.streams.get(&path) {
                    None => Err(ControlError::NotFound(format!("stream {path}"))),
                    Some(s) if s.origin == Origin::File => {
                        Err(declared_in_file(&format!("stream {path}")))
                    }
                    Some(_) => {
                        self.streams.remove(&path);
                        self.plans.remove(&path);
                        self.publish_rules();
                        info!(stream = %path, "Stream deleted");
                        Ok(self.reconcile_all().await)
                    }
                };
                let _ = reply.send(r);
            }
            Command::AddDestination { path, spec, reply } => {
                let r = self.add_destination(&path, spec).await;
                let _ = reply.send(r);
            }
            Command::PatchDestination {
                path,
                name,
                patch,
                reply,
            } => {
                let r = self.patch_destination(&path, &name, patch).await;
                let _ = reply.send(r);
            }
            Command::RemoveDestination { path, name, reply } => {
                let r = self.remove_destination(&path, &name).await;
                let _ = reply.send(r);
            }
            Command::Retry { path, name, reply } => {
                let r = match self.running.get(&(path.clone(), name.clone())) {
                    Some(run) => Ok(run.handle.retry_now()),
                    None => Err(ControlError::NotFound(format!(
                        "running destination {name} of {path}"
                    ))),
                };
                let _ = reply.send(r);
            }
            Command::AddRecording { path, spec, reply } => {
                let r = self.add_recording(&path, spec);
                let _ = reply.send(r);
            }
            Command::RemoveRecording { path, id, reply } => {
                let r = self.remove_recording(&path, &id);
                let _ = reply.send(r);
            }
            Command::PatchRecording {
                path,
                id,
                enabled,
                reply,
            } => {
                let r = self.patch_recording(&path, &id, enabled);
                let _ = reply.send(r);
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(self.snapshot());
            }
            Command::Figures { reply } => {
                let _ = reply.send(self.figures());
            }
            Command::Stream { path, reply } => {
                let _ = reply.send(self.stream_view(&path));
            }
            Command::Shutdown { reply } => return Some(reply),
        }
        None
    }

    async fn apply_file(&mut self, streams: Vec<StreamConfig>) -> Applied {
        // Overrides of file entries survive the reload.
        let mut overrides: HashMap<(StreamPath, String), bool> = HashMap::new();
        let mut record_overrides: HashMap<(StreamPath, String), bool> = HashMap::new();
        for s in self.streams.values() {
            for (name, p) in &s.pushes {
                if let (Origin::File, Some(on)) = (p.origin, p.enabled_override) {
                    overrides.insert((s.spec.path.clone(), name.clone()), on);
                }
            }
            for (id, r) in &s.recordings {
                if let (Origin::File, Some(on)) = (r.origin, r.enabled_override) {
                    record_overrides.insert((s.spec.path.clone(), id.clone()), on);
                }
            }
        }
        // Runtime destinations and recordings of file streams, kept if their stream
        // stays.
        let mut runtime: HashMap<StreamPath, Vec<(String, DesiredPush)>> = HashMap::new();
        let mut runtime_recs: HashMap<StreamPath, Vec<DesiredRecording>> = HashMap::new();
        self.streams.retain(|path, s| {
            if s.origin == Origin::File {
                let kept: Vec<(String, DesiredPush)> = s
                    .pushes
                    .iter()
                    .filter(|(_, p)| p.origin != Origin::File)
                    .map(|(n, p)| (n.clone(), p.clone()))
                    .collect();
                runtime.insert(path.clone(), kept);
                let recs = s
                    .recordings
                    .values()
                    .filter(|r| r.origin != Origin::File)
                    .cloned()
                    .collect();
                runtime_recs.insert(path.clone(), recs);
                false
            } else {
                true
            }
        });
        for sc in streams {
            if self.streams.contains_key(&sc.path) {
                warn!(stream = %sc.path, "The config file declares a stream created at runtime: the file's version is used");
            }
            let mut pushes = BTreeMap::new();
            for p in sc.push {
                let enabled_override = overrides.get(&(sc.path.clone(), p.name.clone())).copied();
                pushes.insert(
                    p.name.clone(),
                    DesiredPush {
                        spec: PushSpec {
                            name: p.name,
                            url: p.url,
                            tls_ca_file: p.tls_ca_file,
                            enabled: p.enabled,
                        },
                        origin: Origin::File,
                        enabled_override,
                    },
                );
            }
            for (name, p) in runtime.remove(&sc.path).unwrap_or_default() {
                if pushes.contains_key(&name) {
                    warn!(stream = %sc.path, dest = %name, "The config file now declares a destination created at runtime: the file's version is used");
                    continue;
                }
                pushes.insert(name, p);
            }
            let mut recordings = BTreeMap::new();
            for (i, def) in sc.record.iter().enumerate() {
                let spec = RecordSpec::from_def(i, def);
                let enabled_override = record_overrides
                    .get(&(sc.path.clone(), spec.id.clone()))
                    .copied();
                recordings.insert(
                    spec.id.clone(),
                    DesiredRecording {
                        spec,
                        origin: Origin::File,
                        enabled_override,
                    },
                );
            }
            for r in runtime_recs.remove(&sc.path).unwrap_or_default() {
                recordings.entry(r.spec.id.clone()).or_insert(r);
            }
            self.streams.insert(
                sc.path.clone(),
                DesiredStream {
                    spec: StreamSpec {
                        path: sc.path,
                        key: sc.key,
                        play_key: sc.play_key,
                        passphrase: sc.passphrase,
                    },
                    origin: Origin::File,
                    pushes,
                    recordings,
                },
            );
        }
        self.publish_rules();
        // A stream's plugin plan was made from the old routes.
        let live: Vec<StreamPath> = self.plans.keys().cloned().collect();
        for path in live {
            self.replan(&path).await;
        }
        self.reconcile_all().await
    }

    async fn add_destination(
        &mut self,
        path: &StreamPath,
        spec: PushSpec,
    ) -> Result<Applied, ControlError> {
        let Some(stream) = self.streams.get_mut(path) else {
            return Err(ControlError::NotFound(format!("stream {path}")));
        };
        if stream.pushes.contains_key(&spec.name) {
            return Err(ControlError::Conflict(format!(
                "stream {path} has a destination named {:?} already",
                spec.name
            )));
        }
        info!(stream = %path, dest = %spec.name, url = %spec.url.redacted(), "Destination added");
        stream.pushes.insert(
            spec.name.clone(),
            DesiredPush {
                spec,
                origin: Origin::Store,
                enabled_override: None,
            },
        );
        self.changed(path).await
    }

    async fn patch_destination(
        &mut self,
        path: &StreamPath,
        name: &str,
        patch: DestinationPatch,
    ) -> Result<Applied, ControlError> {
        let push = self
            .streams
            .get_mut(path)
            .and_then(|s| s.pushes.get_mut(name))
            .ok_or_else(|| ControlError::NotFound(format!("destination {name} of {path}")))?;
        if push.origin == Origin::File && patch.url.is_some() {
            return Err(declared_in_file(&format!("destination {name} of {path}")));
        }
        if let Some(url) = patch.url {
            push.spec.url = url;
        }
        if let Some(on) = patch.enabled {
            match push.origin {
                Origin::File => push.enabled_override = Some(on),
                _ => push.spec.enabled = on,
            }
            info!(stream = %path, dest = %name, "Destination {}", if on { "enabled" } else { "disabled" });
        }
        self.changed(path).await
    }

    async fn remove_destination(
        &mut self,
        path: &StreamPath,
        name: &str,
    ) -> Result<Applied, ControlError> {
        let stream = self
            .streams
            .get_mut(path)
            .ok_or_else(|| ControlError::NotFound(format!("stream {path}")))?;
        match stream.pushes.get(name) {
            None => {
                return Err(ControlError::NotFound(format!(
                    "destination {name} of {path}"
                )));
            }
            Some(p) if p.origin == Origin::File => {
                return Err(declared_in_file(&format!("destination {name} of {path}")));
            }
            Some(_) => {
                stream.pushes.remove(name);
            }
        }
        info!(stream = %path, dest = %name, "Destination deleted");
        self.changed(path).await
    }

    /// After a change of `path`'s desired destinations: a new plan if a plugin chain
    /// routes it, then the diff.
    async fn changed(&mut self, path: &StreamPath) -> Result<Applied, ControlError> {
        self.publish_rules();
        if self.plans.contains_key(path) {
            self.replan(path).await;
        }
        Ok(self.reconcile(path))
    }

    /// A stream went live: with route plugins, its destinations are the chain's plan.
    async fn published(&mut self, path: &StreamPath) {
        if self.chain.is_some() {
            self.replan(path).await;
        }
        self.reconcile(path);
    }

    /// Asks the plugin chain for `path`'s routes again (only while it is live).
    async fn replan(&mut self, path: &StreamPath) {
        let Some(chain) = self.chain.clone() else {
            return;
        };
        let Some(info) = self.hub.stream_info(path) else {
            self.plans.remove(path);
            return;
        };
        let plan = chain.route_plan(&info).await;
        let recordings = plan
            .recordings
            .iter()
            .filter_map(|r| plugin_recording(path, r))
            .collect();
        self.plans.insert(
            path.clone(),
            Plan {
                routes: plan.routes,
                recordings,
            },
        );
    }

    /// Swaps the listeners' rules for the current desired streams.
    fn publish_rules(&self) {
        let rules = self
            .streams
            .values()
            .map(|s| StreamRule {
                path: s.spec.path.clone(),
                key: s.spec.key.clone(),
                play_key: s.spec.play_key.clone(),
                routes: s
                    .pushes
                    .values()
                    .filter(|p| p.enabled())
                    .map(|p| Route::Push {
                        name: p.spec.name.clone(),
                        url: Secret::new(p.spec.url.as_str()),
                        tls_ca_file: p.spec.tls_ca_file.clone(),
                    })
                    .collect(),
            })
            .collect();
        let passphrases = self
            .streams
            .values()
            .filter_map(|s| Some((s.spec.path.clone(), s.spec.passphrase.clone()?)))
            .collect();
        self.rules.set(StaticRouter::new(rules), passphrases);
    }

    /// The pushes that should run for `path`: the plugin plan if there is one, else
    /// the enabled desired pushes.
    fn wanted(&self, path: &StreamPath) -> BTreeMap<String, PushSpec> {
        let mut out = BTreeMap::new();
        if let Some(plan) = self.plans.get(path) {
            for route in &plan.routes {
                let Route::Push {
                    name,
                    url,
                    tls_ca_file,
                } = route
                else {
                    continue;
                };
                match PushUrl::parse(url.expose()) {
                    Ok(url) => {
                        out.insert(
                            name.clone(),
                            PushSpec {
                                name: name.clone(),
                                url,
                                tls_ca_file: tls_ca_file.clone(),
                                enabled: true,
                            },
                        );
                    }
                    Err(e) => {
                        warn!(stream = %path, dest = %name, error = %e, "Destination skipped")
                    }
                }
            }
            return out;
        }
        if let Some(s) = self.streams.get(path) {
            for (name, p) in &s.pushes {
                if p.enabled() {
                    out.insert(name.clone(), p.spec.clone());
                }
            }
        }
        out
    }

    async fn reconcile_all(&mut self) -> Applied {
        let mut paths: Vec<StreamPath> = self.streams.keys().cloned().collect();
        let known: std::collections::HashSet<StreamPath> = paths.iter().cloned().collect();
        let orphans: std::collections::BTreeSet<StreamPath> = self
            .running
            .keys()
            .chain(self.recorders.keys())
            .map(|(p, _)| p)
            .filter(|p| !known.contains(*p))
            .cloned()
            .collect();
        paths.extend(orphans);
        let mut total = Applied::default();
        for path in paths {
            let a = self.reconcile(&path);
            total.started.extend(a.started);
            total.stopped.extend(a.stopped);
            total.restarted.extend(a.restarted);
            total.kept += a.kept;
        }
        total
    }

    /// Diffs `path`'s wanted pushes against the running ones.
    fn reconcile(&mut self, path: &StreamPath) -> Applied {
        let wanted = self.wanted(path);
        let mut applied = Applied::default();
        let running: Vec<String> = self
            .running
            .keys()
            .filter(|(p, _)| p == path)
            .map(|(_, n)| n.clone())
            .collect();
        for name in running {
            let key = (path.clone(), name.clone());
            let keep = wanted.get(&name).is_some_and(|w| {
                self.running
                    .get(&key)
                    .is_some_and(|r| r.fingerprint == fingerprint(w))
            });
            if keep {
                applied.kept += 1;
                continue;
            }
            if let Some(run) = self.running.remove(&key) {
                self.stop(run);
                if wanted.contains_key(&name) {
                    applied.restarted.push(format!("{path}:{name}"));
                } else {
                    applied.stopped.push(format!("{path}:{name}"));
                }
            }
        }
        for (name, spec) in wanted {
            let key = (path.clone(), name.clone());
            if self.running.contains_key(&key) {
                continue;
            }
            let run = self.start(path, &spec);
            if !applied.restarted.contains(&format!("{path}:{name}")) {
                applied.started.push(format!("{path}:{name}"));
            }
            self.running.insert(key, run);
        }
        self.reconcile_recordings(path, &mut applied);
        applied
    }

    /// The recordings that should run for `path`: the enabled desired ones and
    /// those of a plugin plan.
    fn wanted_recordings(&self, path: &StreamPath) -> BTreeMap<String, RecordSpec> {
        let mut out = BTreeMap::new();
        if let Some(s) = self.streams.get(path) {
            for (id, r) in &s.recordings {
                if r.enabled() {
                    out.insert(id.clone(), r.spec.clone());
                }
            }
        }
        if let Some(plan) = self.plans.get(path) {
            for r in &plan.recordings {
                out.entry(r.id.clone()).or_insert_with(|| r.clone());
            }
        }
        out
    }

    /// Diffs `path`'s wanted recordings against the running recorders.
    fn reconcile_recordings(&mut self, path: &StreamPath, applied: &mut Applied) {
        let wanted = self.wanted_recordings(path);
        let label = |id: &str| format!("{path}:recording:{id}");
        let running: Vec<String> = self
            .recorders
            .keys()
            .filter(|(p, _)| p == path)
            .map(|(_, id)| id.clone())
            .collect();
        for id in running {
            let key = (path.clone(), id.clone());
            let keep = wanted
                .get(&id)
                .is_some_and(|w| self.recorders.get(&key).is_some_and(|r| r.matches(w)));
            if keep {
                applied.kept += 1;
                continue;
            }
            if let Some(rec) = self.recorders.remove(&key) {
                self.stopping.spawn(rec.handle.stop());
                if wanted.contains_key(&id) {
                    applied.restarted.push(label(&id));
                } else {
                    applied.stopped.push(label(&id));
                }
            }
        }
        self.record_errors
            .retain(|(p, id), _| p != path || wanted.contains_key(id));
        for (id, spec) in wanted {
            let key = (path.clone(), id.clone());
            if self.recorders.contains_key(&key) {
                continue;
            }
            match RunningRecording::start(&mut self.storages, &self.hub, path, &spec) {
                Ok(rec) => {
                    self.record_errors.remove(&key);
                    self.recorders.insert(key, rec);
                    if !applied.restarted.contains(&label(&id)) {
                        applied.started.push(label(&id));
                    }
                }
                Err(e) => {
                    warn!(stream = %path, recording = %id, error = %e, "Recording not started");
                    self.record_errors.insert(key, e);
                }
            }
        }
    }

    fn add_recording(
        &mut self,
        path: &StreamPath,
        spec: RecordSpec,
    ) -> Result<Applied, ControlError> {
        if !self.storages.contains(&spec.storage) {
            return Err(ControlError::Invalid {
                field: "storage".into(),
                message: format!(
                    "no storage named {:?} (known: {})",
                    spec.storage,
                    self.storages.names().join(", ")
                ),
            });
        }
        let Some(stream) = self.streams.get_mut(path) else {
            return Err(ControlError::NotFound(format!("stream {path}")));
        };
        if stream.recordings.contains_key(&spec.id) {
            return Err(ControlError::Conflict(format!(
                "stream {path} has a recording {:?} already",
                spec.id
            )));
        }
        info!(stream = %path, recording = %spec.id, storage = %spec.storage, "Recording added");
        stream.recordings.insert(
            spec.id.clone(),
            DesiredRecording {
                spec,
                origin: Origin::Store,
                enabled_override: None,
            },
        );
        let mut applied = Applied::default();
        self.reconcile_recordings(path, &mut applied);
        Ok(applied)
    }

    fn remove_recording(&mut self, path: &StreamPath, id: &str) -> Result<Applied, ControlError> {
        let stream = self
            .streams
            .get_mut(path)
            .ok_or_else(|| ControlError::NotFound(format!("stream {path}")))?;
        match stream.recordings.get(id) {
            None => {
                return Err(ControlError::NotFound(format!("recording {id} of {path}")));
            }
            Some(r) if r.origin == Origin::File => {
                return Err(declared_in_file(&format!("recording {id} of {path}")));
            }
            Some(_) => {
                stream.recordings.remove(id);
            }
        }
        info!(stream = %path, recording = %id, "Recording deleted");
        let mut applied = Applied::default();
        self.reconcile_recordings(path, &mut applied);
        Ok(applied)
    }

    /// Enables or disables the recording `id` of `path`: an override for the config
    /// file's, its spec for the API's; a route plugin's is refused.
    fn patch_recording(
        &mut self,
        path: &StreamPath,
        id: &str,
        on: bool,
    ) -> Result<Applied, ControlError> {
        let stream = self
            .streams
            .get_mut(path)
            .ok_or_else(|| ControlError::NotFound(format!("stream {path}")))?;
        match stream.recordings.get_mut(id) {
            Some(r) => match r.origin {
                Origin::File => r.enabled_override = Some(on),
                _ => r.spec.enabled = on,
            },
            None => {
                let planned = self
                    .plans
                    .get(path)
                    .is_some_and(|p| p.recordings.iter().any(|r| r.id == id));
                if planned {
                    return Err(ControlError::Conflict(format!(
                        "recording {id} of {path} is a route plugin's: the plugin decides it at each publish (it cannot be enabled or disabled here)"
                    )));
                }
                return Err(ControlError::NotFound(format!("recording {id} of {path}")));
            }
        }
        if on {
            info!(stream = %path, recording = %id, "Recording enabled");
        } else {
            info!(stream = %path, recording = %id, "Recording disabled");
        }
        let mut applied = Applied::default();
        self.reconcile_recordings(path, &mut applied);
        Ok(applied)
    }

    /// Keeps each recorder's open segment from its events.
    fn recording_event(&mut self, ev: &RecordingEvent) {
        // A finished segment clears the open one only if it is that one: the
        // recorder stopped by a disable finishes its segment after a quick enable
        // started the next recorder of the same id, and a cut may announce the next
        // segment before the last one is stored.
        let (path, recorder, object, finished) = match ev {
            RecordingEvent::Started {
                path,
                recorder,
                object,
                ..
            } => (path, recorder, Some(object), None),
            RecordingEvent::SegmentFinished {
                path,
                recorder,
                object,
                ..
            } => (path, recorder, None, Some(object)),
            RecordingEvent::Failed { path, recorder, .. } => (path, recorder, None, None),
            _ => return,
        };
        let Some(id) = recording_id(path, recorder) else {
            return;
        };
        if let Some(rec) = self.recorders.get_mut(&(path.clone(), id.to_owned())) {
            if finished.is_some_and(|f| rec.current_object.as_ref() != Some(f)) {
                return;
            }
            rec.current_object = object.cloned();
        }
    }

    fn start(&self, path: &StreamPath, spec: &PushSpec) -> Running {
        let name = &spec.name;
        let sub = self
            .hub
            .subscribe(path, SubscribeOptions::labelled(format!("push:{name}")));
        let redacted = spec.url.redacted();
        let meter = Meter::shared();
        let push: Box<dyn Destination> = match spec.url.target() {
            PushTarget::Rtmp(url) => {
                let cfg = RtmpPushConfig {
                    client: cthulhu_rtmp::ClientConfig {
                        chunk_size: self.settings.chunk_size,
                        tls_ca_file: spec.tls_ca_file.clone(),
                        ..Default::default()
                    },
                    grace: self.settings.grace,
                    audio_hold: self.settings.audio_hold,
                    write_timeout: self.settings.stall_timeout,
                };
                Box::new(
                    RtmpPush::new(name.clone(), url.clone(), sub, cfg)
                        .in_group(&self.push_group)
                        .with_meter(meter.clone()),
                )
            }
            PushTarget::Srt(url) => {
                let cfg = SrtPushConfig {
                    latency: self.settings.srt_latency,
                    grace: self.settings.grace,
                    ..SrtPushConfig::default()
                };
                Box::new(
                    SrtPush::new(name.clone(), url.clone(), sub, cfg).with_meter(meter.clone()),
                )
            }
        };
        match &spec.tls_ca_file {
            None => info!(stream = %path, dest = %name, url = %redacted, "Destination configured"),
            Some(ca) => {
                info!(stream = %path, dest = %name, url = %redacted, tls_ca_file = %ca.display(), "Destination configured")
            }
        }
        let handle = Supervisor::spawn(
            format!("{path}:{name}"),
            redacted,
            push,
            BackoffPolicy::default(),
        );
        let mut rx = handle.watch();
        let events = self.events.clone();
        let changes = self.changes.clone();
        let (ev_path, ev_name) = (path.clone(), name.clone());
        let forward = tokio::spawn(async move {
            loop {
                let status = rx.borrow_and_update().clone();
                changes.bump();
                let _ = events.send(DestinationEvent {
                    path: ev_path.clone(),
                    name: ev_name.clone(),
                    status,
                });
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
        .abort_handle();
        Running {
            fingerprint: fingerprint(spec),
            handle,
            forward,
            meter,
            sampled: (0, None),
        }
    }

    fn stop(&mut self, run: Running) {
        let forward = run.forward;
        let handle = run.handle;
        self.stopping.spawn(async move {
            handle.stop().await;
            forward.abort();
        });
    }

    /// Samples every running push's byte counter: its bit rate over the last period.
    fn sample(&mut self) {
        let secs = SAMPLE_EVERY.as_secs_f64();
        for run in self.running.values_mut() {
            let sent = run.meter.reading().bytes_sent;
            let rate = (sent.saturating_sub(run.sampled.0) as f64 * 8.0 / secs).round() as u64;
            run.sampled = (sent, Some(rate));
        }
    }

    async fn stop_all(&mut self) {
        for (_, run) in std::mem::take(&mut self.running) {
            self.stop(run);
        }
        for (_, rec) in std::mem::take(&mut self.recorders) {
            self.stopping.spawn(rec.handle.stop());
        }
        while self.stopping.join_next().await.is_some() {}
    }

    /// The running pushes by stream, built once per snapshot: a lookup per stream,
    /// not a scan of every push.
    fn running_by_path(&self) -> HashMap<&StreamPath, Vec<(&String, &Running)>> {
        let mut by_path: HashMap<&StreamPath, Vec<(&String, &Running)>> = HashMap::new();
        for ((path, name), run) in &self.running {
            by_path.entry(path).or_default().push((name, run));
        }
        by_path
    }

    fn snapshot(&self) -> Vec<StreamView> {
        let by_path = self.running_by_path();
        self.streams
            .values()
            .map(|s| {
                let running = by_path.get(&s.spec.path).map_or(&[][..], Vec::as_slice);
                self.view(s, running)
            })
            .collect()
    }

    /// The view of the stream at `path`.
    fn stream_view(&self, path: &StreamPath) -> Option<StreamView> {
        let s = self.streams.get(path)?;
        let running: Vec<(&String, &Running)> = self
            .running
            .iter()
            .filter(|((p, _), _)| p == path)
            .map(|((_, name), run)| (name, run))
            .collect();
        Some(self.view(s, &running))
    }

    /// The view of `s`, whose running pushes are `running`.
    fn view(&self, s: &DesiredStream, running: &[(&String, &Running)]) -> StreamView {
        let path = &s.spec.path;
        let run_of = |name: &str| running.iter().find(|(n, _)| n.as_str() == name);
        let mut destinations: Vec<DestinationView> = s
            .pushes
            .values()
            .map(|p| DestinationView {
                name: p.spec.name.clone(),
                url_redacted: p.spec.url.redacted(),
                origin: p.origin,
                enabled: p.enabled(),
                status: run_of(&p.spec.name).map(|(_, r)| r.handle.status()),
                traffic: run_of(&p.spec.name).map(|(_, r)| r.traffic()),
            })
            .collect();
        // Plugin destinations that are not desired pushes.
        for (name, run) in running {
            if !s.pushes.contains_key(*name) {
                let status = run.handle.status();
                destinations.push(DestinationView {
                    name: (*name).clone(),
                    url_redacted: status.url_redacted.clone(),
                    origin: Origin::Plugin,
                    enabled: true,
                    status: Some(status),
                    traffic: Some(run.traffic()),
                });
            }
        }
        destinations.sort_by(|a, b| a.name.cmp(&b.name));
        let recording_view = |spec: &RecordSpec, origin: Origin, enabled: bool| {
            let key = (path.clone(), spec.id.clone());
            RecordingView::new(
                spec,
                origin,
                enabled,
                self.recorders.get(&key),
                self.record_errors.get(&key),
            )
        };
        let mut recordings: Vec<RecordingView> = s
            .recordings
            .values()
            .map(|r| recording_view(&r.spec, r.origin, r.enabled()))
            .collect();
        let planned = self.plans.get(path).map_or(&[][..], |p| &p.recordings[..]);
        for r in planned {
            if !s.recordings.contains_key(&r.id) {
                recordings.push(recording_view(r, Origin::Plugin, true));
            }
        }
        StreamView {
            path: path.clone(),
            origin: s.origin,
            destinations,
            recordings,
        }
    }
}

/// The recording a route plugin asks for, to the local storage; None (logged) if
/// its format is unknown.
fn plugin_recording(path: &StreamPath, r: &PluginRecording) -> Option<RecordSpec> {
    match r.format.parse() {
        Ok(container) => Some(RecordSpec {
            id: format!("plugin:{}", r.name),
            storage: LOCAL_STORAGE.to_owned(),
            container,
            name_template: r.path_template.clone(),
            segment_duration: None,
            segment_bytes: None,
            enabled: true,
        }),
        Err(e) => {
            warn!(stream = %path, recording = %r.name, error = %e, "Plugin recording skipped");
            None
        }
    }
}

fn fingerprint(spec: &PushSpec) -> Fingerprint {
    Fingerprint {
        url: spec.url.as_str().to_owned(),
        tls_ca_file: spec.tls_ca_file.clone(),
    }
}

fn declared_in_file(what: &str) -> ControlError {
    ControlError::Conflict(format!(
        "{what} is declared in the config file: change it there (only enabling and disabling work at runtime)"
    ))
}

/// The state name the API shows: `waiting`, `connecting`, `live`, `retrying` or
/// `stopped`.
pub(crate) fn state_name(state: &DestinationState) -> &'static str {
    match state {
        DestinationState::Idle => "waiting",
        other => other.as_str(),
    }
}

/// Seconds since the Unix epoch of `t` (0 before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
