//! LL-HLS (and plain HLS from the same playlist) with fMP4/CMAF parts.
//!
//! [`HlsService`] serves the streams of a [`Hub`]: per stream path one muxer task,
//! started by the first playlist request while the path is live and stopped when
//! no request came for [`HlsConfig::idle_timeout`] (or when the playlist ended and
//! nobody asks any more). The task is an ordinary hub subscriber (labelled
//! `hls-play:{path}`), so the publisher never waits on it; its frames go through
//! the sans-IO segmenter into an in-memory window of segments and parts held as
//! shared [`Bytes`]: a thousand viewers get clones of the same buffers.
//!
//! Resources, relative to `/{app}/{name}/` ([`HlsResource::parse`] reads the last
//! path segment):
//! - `index.m3u8`: the multivariant playlist, naming `media.m3u8`;
//! - `media.m3u8`: the media playlist, with blocking reloads (`_HLS_msn`,
//!   `_HLS_part`); `_HLS_skip` is ignored (delta updates are not offered);
//! - `init-{session}-{n}.mp4`, `seg-{session}-{msn}.m4s`,
//!   `part-{session}-{msn}-{i}.m4s`: immutable media. The session changes when a
//!   muxer restarts, so a name is never reused for other bytes.
//!
//! Every URI in a playlist carries the query the playlist was requested with,
//! minus the `_HLS_` directives ([`PlaylistRequest::parse`]), so play keys reach
//! the media requests.
//!
//! The module knows no HTTP: [`HlsError::http_status`] and the `cache_control` of
//! [`HlsResponse`] say what the HTTP layer should answer.
//!
//! Viewers: clients are told apart by IP address; each is a [`Member`] (with its
//! [`Meter`] counting the bytes served to it) of the muxer's hub subscription
//! until it made no request for [`HlsConfig::viewer_timeout`], so
//! `StreamSnapshot::players_by_protocol` counts them under `hls`.

mod config;
mod playlist;
mod segmenter;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;
mod window;

pub use config::HlsConfig;

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use cthulhu_core::hub::{EndReason, SubscribeOptions};
use cthulhu_core::{Hub, Member, Meter, StreamEvent, StreamPath, Subscriber};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info};

use segmenter::{SegEvent, Segmenter, SegmenterConfig, ticks};
use window::{Lookup, Reload, Window, WindowConfig};

/// `Cache-Control` of immutable media (init segments, segments, parts).
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of playlists requested without `_HLS_msn`, and of the
/// multivariant playlist: they change with every part.
pub const CACHE_PLAYLIST: &str = "public, max-age=1";
/// `Cache-Control` of blocking playlist reloads: the same URL always answers with
/// a playlist that has the requested part, so a CDN may keep it a little.
pub const CACHE_BLOCKING: &str = "public, max-age=6";
/// `Cache-Control` of errors.
pub const CACHE_ERROR: &str = "no-cache";
/// The `Content-Type` of playlists.
pub const CONTENT_TYPE_PLAYLIST: &str = "application/vnd.apple.mpegurl";
/// The `Content-Type` of init segments, segments and parts.
pub const CONTENT_TYPE_MP4: &str = "video/mp4";

/// The longest query carried into playlist URIs.
const MAX_CARRIED_QUERY: usize = 1024;
/// Rendered playlists kept per stream (per window version and query).
const PLAYLIST_CACHE: usize = 16;
/// Events handled per batch before the window is updated.
const BATCH_EVENTS: usize = 256;

/// Errors of the HLS service; [`http_status`](Self::http_status) maps them.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HlsError {
    /// No such resource (unknown name, an old session, a part that was never
    /// made, a stream without a muxer for media requests). 404.
    #[error("not found")]
    NotFound,
    /// The stream is not live, so no muxer is started for it. 404.
    #[error("stream {0} is not live")]
    NotLive(StreamPath),
    /// A malformed request (`_HLS_part` without `_HLS_msn`, a value that is not a
    /// number, a query too long to carry). 400.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// `_HLS_msn` more than two segments past the playlist's last, or `_HLS_part`
    /// past the Advance Part Limit (RFC 8216bis 6.2.5.2). 400.
    #[error("_HLS_msn or _HLS_part too far ahead of the playlist")]
    TooFarAhead,
    /// What was waited for did not come within the bounded wait (three target
    /// durations, at most `max_blocking_wait`). 503.
    #[error("not available in time")]
    Timeout,
    /// [`HlsConfig::max_streams`] muxers run already. 503.
    #[error("too many HLS streams")]
    TooManyStreams,
    /// The service cannot start a muxer here (no tokio runtime). 503.
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    /// Settings that do not validate ([`HlsConfig::validate`]).
    #[error("invalid HLS settings: {0}")]
    Config(String),
}

impl HlsError {
    /// The HTTP status for this error: 404, 400 or 503 (500 for `Config`).
    pub fn http_status(&self) -> u16 {
        match self {
            HlsError::NotFound | HlsError::NotLive(_) => 404,
            HlsError::BadRequest(_) | HlsError::TooFarAhead => 400,
            HlsError::Timeout | HlsError::TooManyStreams | HlsError::Unavailable(_) => 503,
            HlsError::Config(_) => 500,
        }
    }
}

/// A playlist request's delivery directives and the query to carry into its URIs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlaylistRequest {
    /// `_HLS_msn`: block until this segment (or with `part`, this part) exists.
    pub msn: Option<u64>,
    /// `_HLS_part`.
    pub part: Option<u64>,
    /// `_HLS_skip=YES|v2` was asked (ignored: delta updates are not offered, so the
    /// full playlist is returned, as RFC 8216bis 6.2.5.1 says).
    pub skip: bool,
    /// The rest of the query, checked and percent-encoded where needed, carried
    /// into every URI (empty, or starting with `?`).
    suffix: String,
}

impl PlaylistRequest {
    /// Reads a raw query string (without the leading `?`): the `_HLS_` directives,
    /// and every other parameter to carry (a play key...). Errors: a directive
    /// that is not a decimal integer, `_HLS_part` without `_HLS_msn`, a query
    /// longer than 1 KiB.
    pub fn parse(query: &str) -> Result<Self, HlsError> {
        let mut req = PlaylistRequest::default();
        let mut carried = String::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| HlsError::BadRequest("_HLS_msn and _HLS_part take a number"))
            };
            match name {
                "_HLS_msn" => req.msn = Some(number()?),
                "_HLS_part" => req.part = Some(number()?),
                "_HLS_skip" => req.skip = matches!(value, "YES" | "v2"),
                n if n.starts_with("_HLS_") => {}
                _ => {
                    carried.push(if carried.is_empty() { '?' } else { '&' });
                    escape_into(&mut carried, pair);
                }
            }
        }
        if req.part.is_some() && req.msn.is_none() {
            return Err(HlsError::BadRequest("_HLS_part without _HLS_msn"));
        }
        if carried.len() > MAX_CARRIED_QUERY {
            return Err(HlsError::BadRequest("query too long"));
        }
        req.suffix = carried;
        Ok(req)
    }

    /// What every URI in the playlist gets appended: empty, or `?` and the
    /// carried query.
    pub fn suffix(&self) -> &str {
        &self.suffix
    }
}

/// Copies a query parameter, percent-encoding every byte that may not appear in a
/// quoted playlist attribute or a URI query.
fn escape_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        let ok = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
            );
        if ok {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// One of a stream's HLS resources, by the last segment of its URL path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HlsResource {
    /// `index.m3u8`.
    Multivariant,
    /// `media.m3u8`.
    Media,
    /// `init-{session}-{id}.mp4`.
    Init {
        /// The muxer session.
        session: String,
        /// The init segment's number.
        id: u64,
    },
    /// `seg-{session}-{msn}.m4s`.
    Segment {
        /// The muxer session.
        session: String,
        /// The media sequence number.
        msn: u64,
    },
    /// `part-{session}-{msn}-{index}.m4s`.
    Part {
        /// The muxer session.
        session: String,
        /// The media sequence number of its segment.
        msn: u64,
        /// Its index in the segment, from 0.
        index: u64,
    },
}

impl HlsResource {
    /// Reads a file name; `None` for names that are not HLS resources.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "index.m3u8" => return Some(HlsResource::Multivariant),
            "media.m3u8" => return Some(HlsResource::Media),
            _ => {}
        }
        let session_ok =
            |s: &str| !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let num = |s: &str| {
            if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                s.parse::<u64>().ok()
            }
        };
        if let Some(rest) = name
            .strip_prefix("init-")
            .and_then(|r| r.strip_suffix(".mp4"))
        {
            let (session, id) = rest.split_once('-')?;
            return session_ok(session).then_some(HlsResource::Init {
                session: session.into(),
                id: num(id)?,
            });
        }
        if let Some(rest) = name
            .strip_prefix("seg-")
            .and_then(|r| r.strip_suffix(".m4s"))
        {
            let (session, msn) = rest.split_once('-')?;
            return session_ok(session).then_some(HlsResource::Segment {
                session: session.into(),
                msn: num(msn)?,
            });
        }
        if let Some(rest) = name
            .strip_prefix("part-")
            .and_then(|r| r.strip_suffix(".m4s"))
        {
            let (session, rest) = rest.split_once('-')?;
            let (msn, index) = rest.split_once('-')?;
            return session_ok(session).then_some(HlsResource::Part {
                session: session.into(),
                msn: num(msn)?,
                index: num(index)?,
            });
        }
        None
    }
}

/// A resource to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HlsResponse {
    /// The body: a shared buffer, sent as it is.
    pub body: Bytes,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its `Cache-Control`.
    pub cache_control: &'static str,
}

/// What [`HlsService::streams`] reports of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HlsStreamStats {
    /// The stream.
    pub path: StreamPath,
    /// The muxer session (part of the media names).
    pub session: String,
    /// Clients seen within the viewer timeout.
    pub viewers: usize,
    /// Bytes of media held in memory.
    pub bytes_held: usize,
    /// Complete segments held.
    pub segments: usize,
    /// The media sequence number of the segment being written.
    pub next_msn: u64,
    /// The playlist's target duration, once fixed.
    pub target_duration: Option<u64>,
    /// A publisher is live.
    pub live: bool,
    /// The playlist ended.
    pub ended: bool,
    /// Requests answered.
    pub requests: u64,
    /// Body bytes handed out.
    pub bytes_served: u64,
}

/// Serves LL-HLS for the streams of a hub. Cheap to clone.
#[derive(Clone)]
pub struct HlsService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HlsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlsService")
            .field("streams", &lock(&self.inner.streams).len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    hub: Hub,
    config: HlsConfig,
    streams: Mutex<HashMap<StreamPath, Arc<StreamHls>>>,
}

/// One muxed stream.
struct StreamHls {
    path: StreamPath,
    session: String,
    config: HlsConfig,
    window: Mutex<Window>,
    changed: watch::Sender<u64>,
    cache: Mutex<Vec<Cached>>,
    born: Instant,
    /// Milliseconds since `born` of the last request.
    last_request: AtomicU64,
    viewers: Mutex<Viewers>,
    stopped: AtomicBool,
    requests: AtomicU64,
    bytes_served: AtomicU64,
}

struct Cached {
    version: u64,
    media: bool,
    suffix: String,
    body: Bytes,
}

#[derive(Default)]
struct Viewers {
    map: HashMap<IpAddr, Viewer>,
    dirty: bool,
}

struct Viewer {
    remote: SocketAddr,
    meter: Arc<Meter>,
    last_seen: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here is left half-updated by a panic in a way that matters more than
    // serving the stream: poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a wait's check says.
enum Step<T> {
    Done(T),
    Wait,
    Fail(HlsError),
}

impl StreamHls {
    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_request.fetch_max(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_request.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }

    /// Counts a response to `remote`.
    fn served(&self, remote: Option<SocketAddr>, bytes: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes_served.fetch_add(bytes as u64, Ordering::Relaxed);
        let Some(remote) = remote else {
            return;
        };
        let mut v = lock(&self.viewers);
        let now = Instant::now();
        if let Some(viewer) = v.map.get_mut(&remote.ip()) {
            viewer.last_seen = now;
            viewer.meter.add_sent(bytes);
            return;
        }
        if v.map.len() >= self.config.max_viewers {
            return;
        }
        let meter = Meter::shared();
        meter.add_sent(bytes);
        v.map.insert(
            remote.ip(),
            Viewer {
                remote,
                meter,
                last_seen: now,
            },
        );
        v.dirty = true;
    }

    /// Forgets viewers not seen for the viewer timeout; the member list when it
    /// changed.
    fn expire_viewers(&self) -> Option<Vec<Member>> {
        let mut v = lock(&self.viewers);
        let timeout = self.config.viewer_timeout;
        let before = v.map.len();
        v.map
            .retain(|_, viewer| viewer.last_seen.elapsed() < timeout);
        if v.map.len() == before && !v.dirty {
            return None;
        }
        v.dirty = false;
        Some(
            v.map
                .values()
                .map(|viewer| Member {
                    name: String::new(),
                    remote: Some(viewer.remote),
                    meter: viewer.meter.clone(),
                })
                .collect(),
        )
    }

    /// How long a request may wait.
    fn wait_limit(&self) -> Duration {
        let td = lock(&self.window).target_duration;
        match td {
            Some(td) => self
                .config
                .max_blocking_wait
                .min(Duration::from_secs(td.saturating_mul(3))),
            None => self.config.max_blocking_wait,
        }
    }

    /// Waits until `check` is done or fails, at most the wait limit.
    async fn wait_for<T>(&self, mut check: impl FnMut(&Window) -> Step<T>) -> Result<T, HlsError> {
        let deadline = Instant::now() + self.wait_limit();
        let mut rx = self.changed.subscribe();
        loop {
            rx.borrow_and_update();
            if self.stopped.load(Ordering::Acquire) {
                return Err(HlsError::NotFound);
            }
            match check(&lock(&self.window)) {
                Step::Done(v) => return Ok(v),
                Step::Fail(e) => return Err(e),
                Step::Wait => {}
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(HlsError::NotFound),
                Err(_) => return Err(HlsError::Timeout),
            }
        }
    }

    /// A rendered playlist, from the cache when the window did not change.
    fn playlist(&self, media: bool, suffix: &str) -> Bytes {
        let w = lock(&self.window);
        let mut cache = lock(&self.cache);
        if cache.first().is_some_and(|c| c.version != w.version) {
            cache.clear();
        }
        if let Some(c) = cache
            .iter()
            .find(|c| c.media == media && c.suffix == suffix)
        {
            return c.body.clone();
        }
        let text = if media {
            playlist::media_playlist(
                &w,
                &playlist::Names {
                    session: &self.session,
                    suffix,
                },
            )
        } else {
            playlist::multivariant(&w, suffix)
        };
        let body = Bytes::from(text);
        if cache.len() >= PLAYLIST_CACHE {
            cache.remove(0);
        }
        cache.push(Cached {
            version: w.version,
            media,
            suffix: suffix.into(),
            body: body.clone(),
        });
        body
    }

    fn check_session(&self, session: &str) -> Result<(), HlsError> {
        if session == self.session {
            Ok(())
        } else {
            Err(HlsError::NotFound)
        }
    }
}

/// A fresh session name: 32 random bits in hex.
fn new_session() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:08x}", h.finish() as u32)
}

impl HlsService {
    /// A service over `hub`. Fails when the settings do not validate.
    pub fn new(hub: Hub, config: HlsConfig) -> Result<Self, HlsError> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                hub,
                config,
                streams: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &HlsConfig {
        &self.inner.config
    }

    /// Answers a request for `resource` of `path`: `query` is the raw query
    /// string (without `?`), `remote` the client, for viewer accounting.
    pub async fn serve(
        &self,
        path: &StreamPath,
        resource: &HlsResource,
        query: &str,
        remote: Option<SocketAddr>,
    ) -> Result<HlsResponse, HlsError> {
        let media = |body: Bytes| HlsResponse {
            body,
            content_type: CONTENT_TYPE_MP4,
            cache_control: CACHE_IMMUTABLE,
        };
        match resource {
            HlsResource::Multivariant => {
                let req = PlaylistRequest::parse(query)?;
                Ok(HlsResponse {
                    body: self.multivariant(path, &req, remote).await?,
                    content_type: CONTENT_TYPE_PLAYLIST,
                    cache_control: CACHE_PLAYLIST,
                })
            }
            HlsResource::Media => {
                let req = PlaylistRequest::parse(query)?;
                Ok(HlsResponse {
                    body: self.media_playlist(path, &req, remote).await?,
                    content_type: CONTENT_TYPE_PLAYLIST,
                    cache_control: if req.msn.is_some() {
                        CACHE_BLOCKING
                    } else {
                        CACHE_PLAYLIST
                    },
                })
            }
            HlsResource::Init { session, id } => self.init(path, session, *id, remote).map(media),
            HlsResource::Segment { session, msn } => {
                self.segment(path, session, *msn, remote).await.map(media)
            }
            HlsResource::Part {
                session,
                msn,
                index,
            } => self
                .part(path, session, *msn, *index, remote)
                .await
                .map(media),
        }
    }

    /// The multivariant playlist. Starts the stream's muxer if needed (the path
    /// must be live) and waits (bounded) for its first segment.
    pub async fn multivariant(
        &self,
        path: &StreamPath,
        req: &PlaylistRequest,
        remote: Option<SocketAddr>,
    ) -> Result<Bytes, HlsError> {
        let stream = self.stream(path, true)?;
        stream.wait_for(first_segment).await?;
        let body = stream.playlist(false, req.suffix());
        stream.served(remote, body.len());
        Ok(body)
    }

    /// The media playlist. Starts the stream's muxer if needed (the path must be
    /// live); with `_HLS_msn` (and `_HLS_part`), holds the request until the
    /// segment (part) is in the playlist, refuses one too far ahead at once
    /// ([`HlsError::TooFarAhead`]) and gives up after the bounded wait
    /// ([`HlsError::Timeout`]).
    pub async fn media_playlist(
        &self,
        path: &StreamPath,
        req: &PlaylistRequest,
        remote: Option<SocketAddr>,
    ) -> Result<Bytes, HlsError> {
        if req.part.is_some() && req.msn.is_none() {
            return Err(HlsError::BadRequest("_HLS_part without _HLS_msn"));
        }
        let stream = self.stream(path, true)?;
        let (msn, part) = (req.msn, req.part);
        stream
            .wait_for(|w| match first_segment(w) {
                Step::Done(()) => match msn {
                    None => Step::Done(()),
                    Some(m) => match w.reload(m, part) {
                        Reload::Ready => Step::Done(()),
                        Reload::Wait => Step::Wait,
                        Reload::TooFar => Step::Fail(HlsError::TooFarAhead),
                    },
                },
                other => {
                    if let Some(m) = msn
                        && w.reload(m, part) == Reload::TooFar
                    {
                        return Step::Fail(HlsError::TooFarAhead);
                    }
                    other
                }
            })
            .await?;
        let body = stream.playlist(true, req.suffix());
        stream.served(remote, body.len());
        Ok(body)
    }

    /// Init segment `id` of `session`.
    pub fn init(
        &self,
        path: &StreamPath,
        session: &str,
        id: u64,
        remote: Option<SocketAddr>,
    ) -> Result<Bytes, HlsError> {
        let stream = self.stream(path, false)?;
        stream.check_session(session)?;
        let found = lock(&stream.window).init(id);
        match found {
            Lookup::Found(b) => {
                stream.served(remote, b.len());
                Ok(b)
            }
            _ => Err(HlsError::NotFound),
        }
    }

    /// Segment `msn` of `session`; the one being written is waited for (bounded).
    pub async fn segment(
        &self,
        path: &StreamPath,
        session: &str,
        msn: u64,
        remote: Option<SocketAddr>,
    ) -> Result<Bytes, HlsError> {
        let stream = self.stream(path, false)?;
        stream.check_session(session)?;
        let b = stream
            .wait_for(|w| lookup_step(w.segment_data(msn)))
            .await?;
        stream.served(remote, b.len());
        Ok(b)
    }

    /// Part `index` of segment `msn` of `session`. A part that does not exist yet
    /// but comes next (the preload hint names it) is waited for (bounded).
    pub async fn part(
        &self,
        path: &StreamPath,
        session: &str,
        msn: u64,
        index: u64,
        remote: Option<SocketAddr>,
    ) -> Result<Bytes, HlsError> {
        let stream = self.stream(path, false)?;
        stream.check_session(session)?;
        let b = stream.wait_for(|w| lookup_step(w.part(msn, index))).await?;
        stream.served(remote, b.len());
        Ok(b)
    }

    /// The streams muxed now.
    pub fn streams(&self) -> Vec<HlsStreamStats> {
        let streams: Vec<Arc<StreamHls>> = lock(&self.inner.streams).values().cloned().collect();
        let mut out: Vec<HlsStreamStats> = streams
            .iter()
            .map(|s| {
                let w = lock(&s.window);
                HlsStreamStats {
                    path: s.path.clone(),
                    session: s.session.clone(),
                    viewers: lock(&s.viewers).map.len(),
                    bytes_held: w.bytes(),
                    segments: w.segments.len(),
                    next_msn: w.current().0,
                    target_duration: w.target_duration,
                    live: w.live,
                    ended: w.ended,
                    requests: s.requests.load(Ordering::Relaxed),
                    bytes_served: s.bytes_served.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// The stream's muxer; with `start`, started if there is none and the path is
    /// live.
    fn stream(&self, path: &StreamPath, start: bool) -> Result<Arc<StreamHls>, HlsError> {
        let inner = &self.inner;
        let mut streams = lock(&inner.streams);
        if let Some(s) = streams.get(path) {
            if !s.stopped.load(Ordering::Acquire) {
                s.touch();
                return Ok(s.clone());
            }
            streams.remove(path);
        }
        if !start {
            return Err(HlsError::NotFound);
        }
        if !inner.hub.is_live(path) {
            return Err(HlsError::NotLive(path.clone()));
        }
        if streams.len() >= inner.config.max_streams {
            return Err(HlsError::TooManyStreams);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(HlsError::Unavailable("no tokio runtime"));
        };
        let cfg = &inner.config;
        let segment_target = ticks(cfg.segment_target);
        let max_segment = ticks(cfg.max_segment);
        // the publisher's GOP: segments will be whole GOPs of at least the target
        let expected_segment = inner
            .hub
            .stream_snapshot(path)
            .and_then(|s| s.gop)
            .map(|g| ticks(g.duration))
            .filter(|g| *g > 0 && *g <= max_segment)
            .map_or(0, |g| {
                let n = (segment_target + g - 1) / g;
                (n * g).min(max_segment)
            });
        let stream = Arc::new(StreamHls {
            path: path.clone(),
            session: new_session(),
            config: cfg.clone(),
            window: Mutex::new(Window::new(WindowConfig {
                segments_kept: cfg.segments_kept,
                max_bytes: cfg.max_bytes,
                part_target: ticks(cfg.part_target),
                max_segment,
                expected_segment,
            })),
            changed: watch::Sender::new(0),
            cache: Mutex::new(Vec::new()),
            born: Instant::now(),
            last_request: AtomicU64::new(0),
            viewers: Mutex::new(Viewers::default()),
            stopped: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
        });
        let sub = inner
            .hub
            .subscribe(path, SubscribeOptions::labelled(format!("hls-play:{path}")));
        let segmenter = Segmenter::new(SegmenterConfig {
            part_target: ticks(cfg.part_target),
            segment_target,
            max_segment,
            max_part_bytes: cfg.max_part_bytes,
        });
        info!(stream = %path, session = %stream.session, "HLS muxer started");
        runtime.spawn(run(stream.clone(), sub, segmenter, Arc::downgrade(inner)));
        streams.insert(path.clone(), stream.clone());
        Ok(stream)
    }
}

/// Done once the first segment is complete (or the playlist ended).
fn first_segment(w: &Window) -> Step<()> {
    if w.target_duration.is_some() || w.ended {
        Step::Done(())
    } else {
        Step::Wait
    }
}

fn lookup_step(found: Lookup) -> Step<Bytes> {
    match found {
        Lookup::Found(b) => Step::Done(b),
        Lookup::Pending => Step::Wait,
        Lookup::Gone => Step::Fail(HlsError::NotFound),
    }
}

/// The muxer task of one stream.
async fn run(
    stream: Arc<StreamHls>,
    mut sub: Subscriber,
    mut segmenter: Segmenter,
    service: Weak<Inner>,
) {
    let cfg = stream.config.clone();
    let mut events: Vec<StreamEvent> = Vec::with_capacity(BATCH_EVENTS);
    let mut out: Vec<SegEvent> = Vec::new();
    let tick_every =
        (cfg.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut grace_until: Option<Instant> = None;
    let far_future = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut target_set = false;
    let mut why = "idle";
    'task: loop {
        tokio::select! {
            ev = sub.recv() => {
                let Some(ev) = ev else {
                    why = "subscription closed";
                    break 'task;
                };
                events.push(ev);
                sub.drain_into(&mut events, BATCH_EVENTS);
                let mut live = None;
                let mut end_now = false;
                let mut restart = false;
                for ev in events.drain(..) {
                    match ev {
                        StreamEvent::Started(info) => {
                            if lock(&stream.window).ended {
                                // the playlist is over: a new session starts afresh
                                restart = true;
                                break;
                            }
                            segmenter.start_session(&info.tracks, &mut out);
                            grace_until = None;
                            live = Some(true);
                        }
                        StreamEvent::Updated(_) => {}
                        StreamEvent::Frame(frame) => segmenter.push(&frame, &mut out),
                        StreamEvent::Gap { dropped } => {
                            debug!(stream = %stream.path, dropped, "HLS muxer fell behind: discontinuity");
                            segmenter.finish(&mut out);
                        }
                        StreamEvent::Ended(reason) => {
                            segmenter.finish(&mut out);
                            live = Some(false);
                            match reason {
                                EndReason::PublisherGone | EndReason::Replaced | EndReason::Kicked
                                    if !cfg.publisher_grace.is_zero() =>
                                {
                                    grace_until = Some(Instant::now() + cfg.publisher_grace);
                                }
                                _ => end_now = true,
                            }
                        }
                    }
                }
                {
                    let mut w = lock(&stream.window);
                    let before = w.version;
                    for ev in out.drain(..) {
                        w.apply(ev);
                    }
                    if let Some(live) = live {
                        w.set_live(live);
                    }
                    if end_now {
                        w.end();
                    }
                    if !target_set && let Some(td) = w.target_duration {
                        segmenter.set_target_duration(td);
                        target_set = true;
                    }
                    if w.version != before {
                        stream.changed.send_replace(w.version);
                    }
                }
                if restart {
                    why = "new publish after the end";
                    break 'task;
                }
            }
            () = tokio::time::sleep_until(grace_until.unwrap_or(far_future)), if grace_until.is_some() => {
                grace_until = None;
                let mut w = lock(&stream.window);
                w.end();
                stream.changed.send_replace(w.version);
                info!(stream = %stream.path, "HLS playlist ended: the publisher did not come back");
            }
            _ = tick.tick() => {
                if stream.idle_for() >= cfg.idle_timeout {
                    break 'task;
                }
                if let Some(members) = stream.expire_viewers() {
                    sub.set_members(members);
                }
            }
        }
    }
    stream.stopped.store(true, Ordering::Release);
    stream.changed.send_modify(|v| *v = v.wrapping_add(1));
    if let Some(service) = service.upgrade() {
        let mut streams = lock(&service.streams);
        if streams
            .get(&stream.path)
            .is_some_and(|s| Arc::ptr_eq(s, &stream))
        {
            streams.remove(&stream.path);
        }
    }
    info!(stream = %stream.path, session = %stream.session, reason = why, dropped = segmenter.dropped(), "HLS muxer stopped");
}
