//! The stream hub: one stream per path, publish/subscribe, GOP cache, bounded fan-out.
//!
//! Invariants:
//! - Publishing never waits on a subscriber: [`Publisher::send`] takes two short,
//!   uncontended-in-practice mutexes and never awaits.
//! - Every subscriber has its own queue bounded in frames and bytes. When a frame does
//!   not fit, the subscriber's queued media is dropped and it skips to the next video
//!   keyframe (codec configuration is always kept), or it is disconnected, as
//!   [`OverflowPolicy`] says. Every dropped frame is counted.
//! - Fan-out clones [`Frame`]s, whose payloads are [`bytes::Bytes`]: a pointer copy,
//!   never a payload copy.
//! - The GOP cache holds the codec configuration of every track and the frames since
//!   the last video keyframe (capped in bytes), so a new subscriber starts on a keyframe
//!   at once.
//! - A subscription outlives publishers: when the publisher leaves, subscribers get
//!   [`StreamEvent::Ended`]; when a publisher comes back on the path they get
//!   [`StreamEvent::Started`] again. Destinations use this (with [`Continuity`]) to
//!   ride out short publisher drops.

mod continuity;
mod gop;
mod queue;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, broadcast};

use crate::meter::{Member, MemberStats};
use crate::model::{Frame, MediaKind, MetaValue, StreamInfo, StreamPath, TrackInfo};

pub use continuity::{Continuity, ContinuityEvent};
use gop::GopCache;
use queue::SubQueue;

/// What happens when a subscriber's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Drop the queued media and resume at the next video keyframe, keeping the codec
    /// configuration. The subscriber sees a [`StreamEvent::Gap`] with the count. Best for
    /// live players and pushes: latency stays bounded, the picture recovers cleanly.
    #[default]
    SkipToKeyframe,
    /// End the subscription with [`EndReason::Overflow`]. Best for consumers that must
    /// not have holes (for example a recorder that would rather restart a segment).
    Disconnect,
}

/// What happens when a second publisher arrives on a live path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PublishConflict {
    /// Refuse the newcomer ([`HubError::AlreadyPublishing`]).
    #[default]
    Reject,
    /// End the current publisher's session and let the newcomer publish.
    Replace,
}

/// Hub settings.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Byte cap of one stream's GOP cache; past it the cache is emptied until the next keyframe.
    pub gop_cache_bytes: usize,
    /// Default per-subscriber queue bound in frames.
    pub queue_frames: usize,
    /// Default per-subscriber queue bound in payload bytes.
    pub queue_bytes: usize,
    /// Default overflow policy.
    pub overflow: OverflowPolicy,
    /// Second-publisher policy.
    pub conflict: PublishConflict,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            gop_cache_bytes: 16 << 20,
            queue_frames: 1024,
            queue_bytes: 32 << 20,
            overflow: OverflowPolicy::SkipToKeyframe,
            conflict: PublishConflict::Reject,
        }
    }
}

/// Hub errors.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubError {
    /// Another publisher is live on this path.
    #[error("stream {0} already has a publisher")]
    AlreadyPublishing(StreamPath),
    /// The hub is shut down.
    #[error("the hub is shut down")]
    Closed,
}

/// Why a stream (or one subscription) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The publisher unpublished or disconnected.
    PublisherGone,
    /// Another publisher replaced this one.
    Replaced,
    /// This subscriber was disconnected because its queue overflowed.
    Overflow,
    /// The hub shut down.
    Shutdown,
    /// An operator ended the stream ([`Hub::kick`]).
    Kicked,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndReason::PublisherGone => "publisher gone",
            EndReason::Replaced => "publisher replaced",
            EndReason::Overflow => "subscriber queue overflow",
            EndReason::Shutdown => "shutdown",
            EndReason::Kicked => "publisher kicked by an operator",
        })
    }
}

/// What a subscriber receives.
#[derive(Clone, Debug)]
pub enum StreamEvent {
    /// A publisher is live: what is known about the stream. Codec configuration and
    /// the cached GOP follow as frames.
    Started(Arc<StreamInfo>),
    /// The publisher changed its metadata.
    Updated(Arc<StreamInfo>),
    /// One frame (or configuration record).
    Frame(Frame),
    /// This many frames were dropped before the frame that follows (a keyframe).
    Gap {
        /// Frames dropped.
        dropped: u64,
    },
    /// The publisher left (or this subscription was ended).
    Ended(EndReason),
}

/// Lifecycle events of the whole hub, for logs, metrics and the console.
#[derive(Clone, Debug)]
pub enum HubEvent {
    /// A publisher went live on a path.
    Published {
        /// The path.
        path: StreamPath,
        /// The publish generation.
        generation: u64,
    },
    /// A publisher left a path.
    Unpublished {
        /// The path.
        path: StreamPath,
        /// Why.
        reason: EndReason,
    },
    /// A recorder reports progress or trouble ([`Hub::emit_recording`]).
    Recording(RecordingEvent),
}

/// What a recorder (`cthulhu-sinks`) reports on the hub's event bus, for the console and
/// notifications. `recorder` names the recording (its configuration entry), `object` is
/// the name of a segment in its storage. No field carries a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordingEvent {
    /// A segment was opened: the first of a publish session, or the next after a cut.
    Started {
        /// The recorded stream.
        path: StreamPath,
        /// The recording's name.
        recorder: String,
        /// The segment's object name.
        object: String,
        /// The segment's number within the recording (1 for the first).
        seq: u64,
    },
    /// A segment is complete and stored.
    SegmentFinished {
        /// The recorded stream.
        path: StreamPath,
        /// The recording's name.
        recorder: String,
        /// The segment's object name.
        object: String,
        /// Its size in bytes.
        bytes: u64,
        /// The media time it covers.
        duration: Duration,
    },
    /// Media was not recorded (storage too slow or unreachable, or the recorder fell
    /// behind the stream); recording went on at the next keyframe.
    Gap {
        /// The recorded stream.
        path: StreamPath,
        /// The recording's name.
        recorder: String,
        /// The media time left out.
        dropped: Duration,
    },
    /// Recording failed; what was stored before is kept. The recorder retries with
    /// backoff while the stream is live.
    Failed {
        /// The recorded stream.
        path: StreamPath,
        /// The recording's name.
        recorder: String,
        /// Why (no credentials).
        reason: String,
    },
}

/// Per-subscription settings.
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    /// A label for logs and snapshots (`player`, `push:youtube`, ...).
    pub label: String,
    /// Queue bound in frames (None: the hub default).
    pub queue_frames: Option<usize>,
    /// Queue bound in bytes (None: the hub default).
    pub queue_bytes: Option<usize>,
    /// Overflow policy (None: the hub default).
    pub overflow: Option<OverflowPolicy>,
}

impl SubscribeOptions {
    /// Options with the hub defaults and a label.
    pub fn labelled(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            queue_frames: None,
            queue_bytes: None,
            overflow: None,
        }
    }
}

/// Who publishes a stream: the protocol and the remote address, for the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublisherOrigin {
    /// `rtmp`, `srt`, or what an in-process publisher calls itself (`playout`...).
    pub protocol: &'static str,
    /// The peer's address, for a network publisher.
    pub remote: Option<std::net::SocketAddr>,
}

impl PublisherOrigin {
    /// A network publisher speaking `protocol` from `remote`.
    pub fn network(protocol: &'static str, remote: std::net::SocketAddr) -> Self {
        Self {
            protocol,
            remote: Some(remote),
        }
    }

    /// An in-process publisher (a test, an embedder, a playout).
    pub fn local(protocol: &'static str) -> Self {
        Self {
            protocol,
            remote: None,
        }
    }
}

/// A point-in-time view of one stream, for the console and metrics.
#[derive(Clone, Debug)]
pub struct StreamSnapshot {
    /// The path.
    pub path: StreamPath,
    /// Whether a publisher is live.
    pub live: bool,
    /// Latest stream info (tracks, metadata), if ever published.
    pub info: Option<Arc<StreamInfo>>,
    /// When the current publisher went live.
    pub live_since: Option<SystemTime>,
    /// Who the current publisher is.
    pub publisher: Option<PublisherOrigin>,
    /// Payload bytes received from publishers on this path.
    pub bytes_in: u64,
    /// Frames received from publishers on this path.
    pub frames_in: u64,
    /// Subscribers and their queue state.
    pub subscribers: Vec<SubscriberStats>,
    /// The last complete GOP of the current publish (video streams only).
    pub gop: Option<GopLength>,
}

/// The protocols whose players every snapshot counts (0 when none).
pub const PLAYER_PROTOCOLS: [&str; 2] = ["rtmp", "srt"];

impl StreamSnapshot {
    /// The players of the stream by protocol (`rtmp` and `srt` always listed): the
    /// members of its subscriptions labelled `PROTOCOL-play:...`, the label a
    /// protocol's player side subscribes with.
    pub fn players_by_protocol(&self) -> Vec<(&str, usize)> {
        let mut out: Vec<(&str, usize)> = PLAYER_PROTOCOLS.iter().map(|p| (*p, 0)).collect();
        for sub in &self.subscribers {
            let Some((protocol, _)) = sub.label.split_once("-play:") else {
                continue;
            };
            match out.iter_mut().find(|(p, _)| *p == protocol) {
                Some((_, n)) => *n += sub.members.len(),
                None => out.push((protocol, sub.members.len())),
            }
        }
        out
    }

    /// Every player of the stream with its counters.
    pub fn players(&self) -> impl Iterator<Item = &MemberStats> {
        self.subscribers
            .iter()
            .filter(|sub| sub.label.contains("-play:"))
            .flat_map(|sub| sub.members.iter())
    }
}

/// One GOP: from a video keyframe to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GopLength {
    /// Video frames in it, the keyframe included.
    pub frames: u32,
    /// From its keyframe's decode time to the next keyframe's.
    pub duration: Duration,
}

/// Counters of one subscriber.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// The subscriber's label.
    pub label: String,
    /// Frames queued now.
    pub queued_frames: usize,
    /// Payload bytes queued now.
    pub queued_bytes: usize,
    /// Frames dropped by the overflow policy, in total.
    pub dropped_frames: u64,
    /// Times the queue overflowed.
    pub overflows: u64,
    /// Frames delivered to the subscriber.
    pub delivered_frames: u64,
    /// The peers a shared writer serves from this subscription, with their own
    /// counters ([`Subscriber::set_members`]); empty for a plain subscriber.
    pub members: Vec<MemberStats>,
}

/// The stream hub. Cheap to clone; all clones share the same streams.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    config: HubConfig,
    streams: Mutex<HashMap<StreamPath, Arc<Stream>>>,
    events: broadcast::Sender<HubEvent>,
    next_id: AtomicU64,
}

struct Stream {
    path: StreamPath,
    state: Mutex<StreamState>,
}

struct StreamState {
    publisher: Option<PublisherSlot>,
    info: Option<Arc<StreamInfo>>,
    gop: GopCache,
    subscribers: Vec<Arc<SubShared>>,
    bytes_in: u64,
    frames_in: u64,
    generation: u64,
    shut: bool,
}

struct PublisherSlot {
    id: u64,
    since: SystemTime,
    origin: PublisherOrigin,
    ended: Arc<Notify>,
    ended_reason: Arc<Mutex<Option<EndReason>>>,
}

struct SubShared {
    id: u64,
    label: String,
    queue: Mutex<SubQueue>,
    notify: Notify,
    /// Set by shared writers (see [`Subscriber::set_members`]).
    members: Mutex<Vec<Member>>,
}

impl SubShared {
    fn stats(&self) -> SubscriberStats {
        let mut stats = lock(&self.queue).stats(&self.label);
        stats.members = lock(&self.members).iter().map(Member::stats).collect();
        stats
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data half-updated in a
    // way that matters more than losing the stream, so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// Creates a hub.
    pub fn new(config: HubConfig) -> Self {
        let (events, _) = broadcast::channel(256);
        Self {
            inner: Arc::new(HubInner {
                config,
                streams: Mutex::new(HashMap::new()),
                events,
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// The hub's settings.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// Lifecycle events (bounded; a slow reader misses events rather than slowing the hub).
    pub fn events(&self) -> broadcast::Receiver<HubEvent> {
        self.inner.events.subscribe()
    }

    /// Publishes a recorder's event on the bus [`Hub::events`] hands out. Only recording
    /// events can be sent from outside: lifecycle events come from the hub itself.
    pub fn emit_recording(&self, event: RecordingEvent) {
        // No receiver is not an error: nobody is listening.
        let _ = self.inner.events.send(HubEvent::Recording(event));
    }

    fn stream(&self, path: &StreamPath) -> Arc<Stream> {
        let mut streams = lock(&self.inner.streams);
        streams
            .entry(path.clone())
            .or_insert_with(|| {
                Arc::new(Stream {
                    path: path.clone(),
                    state: Mutex::new(StreamState {
                        publisher: None,
                        info: None,
                        gop: GopCache::new(self.inner.config.gop_cache_bytes),
                        subscribers: Vec::new(),
                        bytes_in: 0,
                        frames_in: 0,
                        generation: 0,
                        shut: false,
                    }),
                })
            })
            .clone()
    }

    /// Drops the stream entry if nobody uses it any more.
    fn gc(&self, path: &StreamPath) {
        let mut streams = lock(&self.inner.streams);
        if let Some(stream) = streams.get(path) {
            let st = lock(&stream.state);
            let unused = st.publisher.is_none() && st.subscribers.is_empty();
            drop(st);
            if unused {
                streams.remove(path);
            }
        }
    }

    /// Starts publishing on `path`.
    ///
    /// Fails with [`HubError::AlreadyPublishing`] if a publisher is live there and the
    /// conflict policy is [`PublishConflict::Reject`]. The publisher shows as
    /// `local` (see [`Hub::publish_from`]).
    pub fn publish(&self, path: &StreamPath) -> Result<Publisher, HubError> {
        self.publish_from(path, PublisherOrigin::local("local"))
    }

    /// Like [`Hub::publish`], naming who publishes (shown in snapshots).
    pub fn publish_from(
        &self,
        path: &StreamPath,
        origin: PublisherOrigin,
    ) -> Result<Publisher, HubError> {
        let stream = self.stream(path);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut st = lock(&stream.state);
        if st.shut {
            return Err(HubError::Closed);
        }
        if st.publisher.is_some() {
            match self.inner.config.conflict {
                PublishConflict::Reject => return Err(HubError::AlreadyPublishing(path.clone())),
                PublishConflict::Replace => {
                    end_locked(&mut st, EndReason::Replaced);
                    let _ = self.inner.events.send(HubEvent::Unpublished {
                        path: path.clone(),
                        reason: EndReason::Replaced,
                    });
                }
            }
        }
        st.generation += 1;
        let info = Arc::new(StreamInfo {
            path: path.clone(),
            tracks: Vec::new(),
            metadata: Vec::new(),
            generation: st.generation,
        });
        let ended = Arc::new(Notify::new());
        let ended_reason = Arc::new(Mutex::new(None));
        st.publisher = Some(PublisherSlot {
            id,
            since: SystemTime::now(),
            origin,
            ended: ended.clone(),
            ended_reason: ended_reason.clone(),
        });
        st.info = Some(info.clone());
        st.gop.clear();
        for sub in &st.subscribers {
            let mut q = lock(&sub.queue);
            q.push_control(StreamEvent::Started(info.clone()));
            drop(q);
            sub.notify.notify_one();
        }
        let generation = st.generation;
        drop(st);
        let _ = self.inner.events.send(HubEvent::Published {
            path: path.clone(),
            generation,
        });
        Ok(Publisher {
            hub: Arc::downgrade(&self.inner),
            stream,
            id,
            ended,
            ended_reason,
        })
    }

    /// Ends the live publisher of `path` (an operator's kick): its connection is
    /// closed by its protocol server, subscribers see the stream end (destinations
    /// stay connected for the grace period, as for any publisher drop), and a new
    /// publisher may come. Returns false if nobody was publishing there.
    pub fn kick(&self, path: &StreamPath) -> bool {
        let Some(stream) = lock(&self.inner.streams).get(path).cloned() else {
            return false;
        };
        let mut st = lock(&stream.state);
        if st.publisher.is_none() {
            return false;
        }
        end_locked(&mut st, EndReason::Kicked);
        drop(st);
        let _ = self.inner.events.send(HubEvent::Unpublished {
            path: path.clone(),
            reason: EndReason::Kicked,
        });
        true
    }

    /// Subscribes to `path`, whether or not a publisher is live there yet.
    ///
    /// If one is, the subscriber first receives [`StreamEvent::Started`], the codec
    /// configuration and the cached GOP (starting on a keyframe).
    pub fn subscribe(&self, path: &StreamPath, opts: SubscribeOptions) -> Subscriber {
        let stream = self.stream(path);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let cfg = &self.inner.config;
        let mut queue = SubQueue::new(
            opts.queue_frames.unwrap_or(cfg.queue_frames).max(2),
            opts.queue_bytes.unwrap_or(cfg.queue_bytes).max(1),
            opts.overflow.unwrap_or(cfg.overflow),
        );
        let mut st = lock(&stream.state);
        if st.shut {
            queue.close(EndReason::Shutdown);
        } else if st.publisher.is_some() {
            if let Some(info) = &st.info {
                queue.push_control(StreamEvent::Started(info.clone()));
            }
            let has_video = has_video(&st);
            for frame in st.gop.configs().chain(st.gop.frames()) {
                queue.offer(frame, has_video);
            }
        }
        let shared = Arc::new(SubShared {
            id,
            label: opts.label,
            queue: Mutex::new(queue),
            notify: Notify::new(),
            members: Mutex::new(Vec::new()),
        });
        st.subscribers.push(shared.clone());
        drop(st);
        Subscriber {
            hub: self.clone(),
            stream,
            shared,
        }
    }

    /// Whether a publisher is live on `path`.
    pub fn is_live(&self, path: &StreamPath) -> bool {
        let streams = lock(&self.inner.streams);
        streams
            .get(path)
            .is_some_and(|s| lock(&s.state).publisher.is_some())
    }

    /// The current info of the stream on `path`, if a publisher is or was live there
    /// and the stream is still in use.
    pub fn stream_info(&self, path: &StreamPath) -> Option<Arc<StreamInfo>> {
        let streams = lock(&self.inner.streams);
        streams.get(path).and_then(|s| lock(&s.state).info.clone())
    }

    /// Snapshots of every stream that has a publisher or subscribers.
    pub fn snapshot(&self) -> Vec<StreamSnapshot> {
        let streams: Vec<Arc<Stream>> = lock(&self.inner.streams).values().cloned().collect();
        let mut out: Vec<StreamSnapshot> = streams.iter().map(|s| stream_snapshot(s)).collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// The snapshot of one stream, if the hub has it.
    pub fn stream_snapshot(&self, path: &StreamPath) -> Option<StreamSnapshot> {
        let stream = lock(&self.inner.streams).get(path).cloned()?;
        Some(stream_snapshot(&stream))
    }

    /// Ends every publisher and subscription; later publishes fail with [`HubError::Closed`].
    pub fn shutdown(&self) {
        let streams: Vec<Arc<Stream>> = lock(&self.inner.streams).values().cloned().collect();
        for s in streams {
            let mut st = lock(&s.state);
            st.shut = true;
            end_locked(&mut st, EndReason::Shutdown);
            for sub in &st.subscribers {
                lock(&sub.queue).close(EndReason::Shutdown);
                sub.notify.notify_one();
            }
        }
    }
}

fn has_video(st: &StreamState) -> bool {
    st.gop.has_video()
        || st
            .info
            .as_ref()
            .is_some_and(|i| i.tracks.iter().any(|t| t.kind() == MediaKind::Video))
}

/// Ends the current publish session: the publisher's [`Publisher::ended`] resolves
/// with `reason` and subscribers get `Ended(reason)`.
/// A stream's snapshot (its lock held briefly).
fn stream_snapshot(s: &Stream) -> StreamSnapshot {
    let st = lock(&s.state);
    StreamSnapshot {
        path: s.path.clone(),
        live: st.publisher.is_some(),
        info: st.info.clone(),
        live_since: st.publisher.as_ref().map(|p| p.since),
        publisher: st.publisher.as_ref().map(|p| p.origin.clone()),
        bytes_in: st.bytes_in,
        frames_in: st.frames_in,
        subscribers: st.subscribers.iter().map(|sub| sub.stats()).collect(),
        gop: st.gop.last_gop(),
    }
}

fn end_locked(st: &mut StreamState, reason: EndReason) {
    let Some(publisher) = st.publisher.take() else {
        return;
    };
    *lock(&publisher.ended_reason) = Some(reason);
    // `Publisher::ended` creates its `Notified` before reading the reason, and a
    // created `Notified` receives `notify_waiters`.
    publisher.ended.notify_waiters();
    st.gop.clear();
    for sub in &st.subscribers {
        lock(&sub.queue).push_control(StreamEvent::Ended(reason));
        sub.notify.notify_one();
    }
}

/// The publishing side of one stream. Dropping it ends the stream.
#[must_use = "the stream ends when the Publisher is dropped"]
pub struct Publisher {
    hub: Weak<HubInner>,
    stream: Arc<Stream>,
    id: u64,
    ended: Arc<Notify>,
    ended_reason: Arc<Mutex<Option<EndReason>>>,
}

impl Publisher {
    /// The stream path.
    pub fn path(&self) -> &StreamPath {
        &self.stream.path
    }

    /// Sends one frame to every subscriber. Never waits.
    ///
    /// A configuration frame also updates the track list of the stream info.
    /// Returns false if this publisher has been ended (replaced or shut down).
    pub fn send(&self, frame: Frame) -> bool {
        let mut st = lock(&self.stream.state);
        if st.publisher.as_ref().map(|p| p.id) != Some(self.id) {
            return false;
        }
        st.bytes_in += frame.data.len() as u64;
        st.frames_in += 1;
        if frame.is_config() {
            self.update_track(&mut st, &frame);
        }
        st.gop.push(&frame);
        let has_video = has_video(&st);
        for sub in &st.subscribers {
            let mut q = lock(&sub.queue);
            q.offer(&frame, has_video);
            drop(q);
            sub.notify.notify_one();
        }
        true
    }

    fn update_track(&self, st: &mut StreamState, frame: &Frame) {
        let Some(info) = &st.info else { return };
        let codec = crate::model::Codec::from_config(frame.codec, frame.data.clone());
        if info.track(frame.track).is_some_and(|t| t.codec == codec) {
            return;
        }
        let mut next = (**info).clone();
        next.tracks.retain(|t| t.id != frame.track);
        next.tracks.push(TrackInfo::new(frame.track, codec));
        next.tracks.sort_by_key(|t| t.id);
        st.info = Some(Arc::new(next));
    }

    /// Replaces the publisher metadata (for example RTMP `onMetaData`).
    pub fn set_metadata(&self, metadata: Vec<(String, MetaValue)>) {
        let mut st = lock(&self.stream.state);
        if st.publisher.as_ref().map(|p| p.id) != Some(self.id) {
            return;
        }
        let Some(info) = &st.info else { return };
        let mut next = (**info).clone();
        next.metadata = metadata;
        let next = Arc::new(next);
        st.info = Some(next.clone());
        for sub in &st.subscribers {
            lock(&sub.queue).push_control(StreamEvent::Updated(next.clone()));
            sub.notify.notify_one();
        }
    }

    /// The current stream info.
    pub fn info(&self) -> Option<Arc<StreamInfo>> {
        lock(&self.stream.state).info.clone()
    }

    /// Resolves when this publisher was ended by the hub (replaced or shut down),
    /// returning why.
    pub async fn ended(&self) -> EndReason {
        loop {
            let notified = self.ended.notified();
            if let Some(r) = *lock(&self.ended_reason) {
                return r;
            }
            notified.await;
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let mut st = lock(&self.stream.state);
        if st.publisher.as_ref().map(|p| p.id) != Some(self.id) {
            return;
        }
        end_locked(&mut st, EndReason::PublisherGone);
        drop(st);
        if let Some(inner) = self.hub.upgrade() {
            let _ = inner.events.send(HubEvent::Unpublished {
                path: self.stream.path.clone(),
                reason: EndReason::PublisherGone,
            });
            Hub { inner }.gc(&self.stream.path);
        }
    }
}

/// One subscription to a stream path. Dropping it unsubscribes.
pub struct Subscriber {
    hub: Hub,
    stream: Arc<Stream>,
    shared: Arc<SubShared>,
}

impl Subscriber {
    /// The stream path.
    pub fn path(&self) -> &StreamPath {
        &self.stream.path
    }

    /// Waits for the next event. Returns None once the subscription is closed
    /// (disconnected for overflow or hub shutdown) and drained.
    pub async fn recv(&mut self) -> Option<StreamEvent> {
        loop {
            let notified = self.shared.notify.notified();
            {
                let mut q = lock(&self.shared.queue);
                if let Some(ev) = q.pop() {
                    return Some(ev);
                }
                if q.is_closed() {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Takes the next event if one is queued.
    pub fn try_recv(&mut self) -> Option<StreamEvent> {
        lock(&self.shared.queue).pop()
    }

    /// Moves up to `max` queued events into `out`, returning how many.
    pub fn drain_into(&mut self, out: &mut Vec<StreamEvent>, max: usize) -> usize {
        let mut q = lock(&self.shared.queue);
        let mut n = 0;
        while n < max {
            match q.pop() {
                Some(ev) => {
                    out.push(ev);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// The hub this subscription is on.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The label given at subscription.
    pub fn label(&self) -> &str {
        &self.shared.label
    }

    /// The stream's current info, if a publisher was ever live.
    pub fn info(&self) -> Option<Arc<StreamInfo>> {
        lock(&self.stream.state).info.clone()
    }

    /// Whether a publisher is live now.
    pub fn is_live(&self) -> bool {
        lock(&self.stream.state).publisher.is_some()
    }

    /// This subscriber's counters.
    pub fn stats(&self) -> SubscriberStats {
        self.shared.stats()
    }

    /// Lists the peers a shared writer serves from this subscription, so that
    /// snapshots show each with its counters. Call it when the set changes.
    pub fn set_members(&self, members: Vec<Member>) {
        *lock(&self.shared.members) = members;
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let mut st = lock(&self.stream.state);
        st.subscribers.retain(|s| s.id != self.shared.id);
        drop(st);
        self.hub.gc(&self.stream.path);
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("path", &self.stream.path)
            .field("label", &self.shared.label)
            .finish()
    }
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("path", &self.stream.path)
            .finish()
    }
}

#[cfg(test)]
mod tests;
