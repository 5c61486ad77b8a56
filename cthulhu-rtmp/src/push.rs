//! Pushing a hub stream to an RTMP/RTMPS destination, under the core supervisor.
//!
//! A push in a [`PushGroup`] hands its connection, once publishing is accepted, to
//! its stream's push fan-out (see `fanout.rs`), which serializes each message once
//! and writes it to every destination of the stream; the push task then only reads
//! the destination. RTMPS pushes, and pushes outside a group, write their own media.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cthulhu_core::hub::{Continuity, ContinuityEvent, SubscribeOptions};
use cthulhu_core::supervisor::{Destination, DestinationError, LiveSignal};
use cthulhu_core::{Frame, Hub, MediaKind, Meter, StreamInfo, StreamPath, Subscriber};
use tracing::{debug, info};

use crate::client::{ClientConfig, PlainPublisher, PublishingClient, ServerNotice};
use crate::error::RtmpError;
use crate::fanout::{FanoutConfig, Fanouts, Left, Reservation};
use crate::from_core::FromCore;
use crate::url::RtmpUrl;

/// Ids of push members in fan-outs (unique per process).
static NEXT_MEMBER: AtomicU64 = AtomicU64::new(1);

/// The message stream id shared writers serialize for: the first one a server
/// hands out, which is what `createStream` answers on a fresh connection (nginx-rtmp
/// does). A destination that answers another gets its own writer.
const SHARED_STREAM_ID: u32 = 1;

/// Pushes that share one writer per stream: what
/// `../shared/PERFORMANCE-NOTES.md` found cheapest for players, for destinations.
/// Create one per hub with the settings all its pushes use, and add pushes to it
/// with [`RtmpPush::in_group`].
#[derive(Clone)]
pub struct PushGroup {
    fanouts: Arc<Fanouts>,
}

impl PushGroup {
    /// A group on `hub`. Its fan-outs use `cfg`'s grace, audio hold and write timeout
    /// (a destination that accepts nothing for that long is dropped and retried); a
    /// destination's backlog is bounded by the hub's subscriber queue bounds, past
    /// which it skips to the next keyframe.
    pub fn new(hub: &Hub, cfg: &PushConfig) -> Self {
        let hc = hub.config();
        let config = FanoutConfig {
            queue_bytes: hc.queue_bytes,
            queue_messages: hc.queue_frames,
            stall_timeout: cfg.write_timeout,
            // As the client's own writes: no Nagle delay on the last segment of a
            // frame over long-RTT paths.
            nodelay: true,
            gop_bytes: hc.gop_cache_bytes,
            audio_hold: cfg.audio_hold,
            publishing: true,
            grace: cfg.grace,
        };
        Self {
            fanouts: Fanouts::new(hub.clone(), config),
        }
    }
}

impl fmt::Debug for PushGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushGroup").finish_non_exhaustive()
    }
}

/// Push settings.
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// Client timeouts and chunk size.
    pub client: ClientConfig,
    /// How long the destination stays connected after the publisher drops.
    pub grace: Duration,
    /// A destination that accepts no bytes for this long is dropped and retried.
    pub write_timeout: Duration,
    /// Audio waits up to this long for the next video frame so that both leave in one
    /// write (zero: every batch is written at once). Video and configuration never wait.
    pub audio_hold: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            grace: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            audio_hold: Duration::from_millis(40),
        }
    }
}

/// One RTMP push destination: implements the supervisor's [`Destination`].
pub struct RtmpPush {
    name: String,
    url: RtmpUrl,
    /// None while the group's fan-out carries the stream (no second subscription).
    sub: Option<Subscriber>,
    hub: Hub,
    path: StreamPath,
    label: String,
    group: Option<PushGroup>,
    cont: Continuity,
    cfg: PushConfig,
    info: Option<Arc<StreamInfo>>,
    configs: Vec<Frame>,
    /// A non-frame event taken while batching, handled next.
    pending: Option<ContinuityEvent>,
    /// The subscription was taken again after the shared writer dropped this push
    /// and has not been through a session start since: retries go on while the
    /// stream is live (or in grace) rather than reporting the stream ended.
    rejoining: bool,
    /// What either writer sent to the destination and dropped for it.
    meter: Arc<Meter>,
}

impl RtmpPush {
    /// Creates a push of `sub`'s stream to `url`.
    pub fn new(name: String, url: RtmpUrl, sub: Subscriber, cfg: PushConfig) -> Self {
        Self {
            name,
            url,
            hub: sub.hub().clone(),
            path: sub.path().clone(),
            label: sub.label().to_owned(),
            sub: Some(sub),
            group: None,
            cont: Continuity::new(cfg.grace),
            cfg,
            info: None,
            configs: Vec::new(),
            pending: None,
            rejoining: false,
            meter: Meter::shared(),
        }
    }

    /// Counts what is sent to the destination and dropped for it on `meter`
    /// (by default on a meter of its own).
    pub fn with_meter(mut self, meter: Arc<Meter>) -> Self {
        self.meter = meter;
        self
    }

    /// Writes media through `group`'s shared per-stream writer (`rtmp://` URLs;
    /// RTMPS pushes keep writing their own, each connection being encrypted apart).
    pub fn in_group(mut self, group: &PushGroup) -> Self {
        self.group = Some(group.clone());
        self
    }

    /// Subscribes again after the shared writer carried the stream.
    fn resubscribe(&mut self) {
        self.cont = Continuity::new(self.cfg.grace);
        self.pending = None;
        self.sub = Some(
            self.hub
                .subscribe(&self.path, SubscribeOptions::labelled(self.label.clone())),
        );
    }

    /// Hands the connection to the group's fan-out and serves the destination's side
    /// of it until the stream ends, a stop, or an error.
    async fn push_shared(
        &mut self,
        place: Reservation,
        mut conn: PlainPublisher,
        live: &LiveSignal,
    ) -> Result<(), DestinationError> {
        // The fan-out has its own subscription; ours would only queue copies.
        self.sub = None;
        self.rejoining = false;
        let peer = conn
            .sock
            .peer_addr()
            .map_err(|e| DestinationError::Push(e.to_string()))?;
        let (handle, mut left) = place.join(
            conn.sock.clone(),
            peer,
            self.name.clone(),
            self.meter.clone(),
        );
        if let Some(out) = conn.take_output() {
            handle.control(out);
        }
        let stopping = live.stopping();
        tokio::pin!(stopping);
        let finish = |conn: PlainPublisher, unsent: Vec<Bytes>| async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.finish(unsent, true)).await;
        };
        loop {
            tokio::select! {
                biased;
                _ = &mut stopping => {
                    handle.release();
                    let unsent = match (&mut left).await {
                        Ok(Left::Released(unsent) | Left::Ended(unsent)) => unsent,
                        Ok(Left::Failed(_)) | Err(_) => Vec::new(),
                    };
                    finish(conn, unsent).await;
                    return Ok(());
                }
                why = &mut left => {
                    return match why {
                        Ok(Left::Ended(unsent) | Left::Released(unsent)) => {
                            info!(dest = %self.name, stream = %self.path, "Stream over: unpublishing");
                            finish(conn, unsent).await;
                            Ok(())
                        }
                        Ok(Left::Failed(RtmpError::StallTimeout(secs))) => Err(stalled(secs)),
                        Ok(Left::Failed(e)) => Err(DestinationError::Push(e.to_string())),
                        Err(_) => Err(DestinationError::Push("the stream's writer stopped".into())),
                    };
                }
                r = conn.poll_server() => {
                    let r = r.map_err(|e| DestinationError::Push(e.to_string()))?;
                    if let Some(out) = conn.take_output() {
                        handle.control(out);
                    }
                    if let Some(ServerNotice::Stopped(why)) = r {
                        return Err(DestinationError::Rejected(why));
                    }
                }
            }
        }
    }

    fn remember_config(&mut self, f: &Frame) {
        match self.configs.iter_mut().find(|c| c.track == f.track) {
            Some(slot) => *slot = f.clone(),
            None => self.configs.push(f.clone()),
        }
    }

    /// Whether a frame is sent: configuration always (and remembered for reconnects);
    /// media only from the first video keyframe after connecting.
    fn admit(&mut self, f: &Frame, need_key: &mut bool) -> bool {
        if f.is_config() {
            self.remember_config(f);
            return true;
        }
        if *need_key {
            let has_video = self.configs.iter().any(|c| c.kind() == MediaKind::Video);
            if has_video && !(f.kind() == MediaKind::Video && f.is_keyframe()) {
                return false;
            }
            *need_key = false;
        }
        true
    }

    async fn write(
        &self,
        client: &mut PublishingClient,
        out: &mut Vec<Bytes>,
    ) -> Result<(), DestinationError> {
        let bytes: usize = out.iter().map(Bytes::len).sum();
        match tokio::time::timeout(self.cfg.write_timeout, client.write_media(out)).await {
            Ok(Ok(())) => {
                self.meter.add_sent(bytes);
                Ok(())
            }
            Ok(Err(e)) => Err(DestinationError::Push(e.to_string())),
            Err(_) => Err(stalled(self.cfg.write_timeout.as_secs())),
        }
    }
}

/// A destination that took no bytes for the write timeout, by either writer.
fn stalled(secs: u64) -> DestinationError {
    DestinationError::Push(format!("destination accepted nothing for {secs} s"))
}

fn connect_error(e: RtmpError) -> DestinationError {
    match e {
        RtmpError::Refused(why) => DestinationError::Rejected(why),
        other => DestinationError::Connect(other.to_string()),
    }
}

#[async_trait]
impl Destination for RtmpPush {
    async fn wait_for_stream(&mut self) -> bool {
        if self.sub.is_some() && self.cont.in_session() {
            return true;
        }
        if self.sub.is_none() {
            self.resubscribe();
        }
        let Some(sub) = self.sub.as_mut() else {
            return false;
        };
        self.rejoining = false;
        match self.cont.next_session(sub).await {
            Some(info) => {
                self.info = Some(info);
                self.configs.clear();
                true
            }
            None => false,
        }
    }

    async fn push(&mut self, live: &LiveSignal) -> Result<(), DestinationError> {
        if self.sub.is_none() || self.rejoining {
            // Retrying after the shared writer dropped this destination (maybe again,
            // after a failed reconnection): go on if the stream is live or in its
            // grace period, else wait for the next session.
            if self.sub.is_none() {
                self.resubscribe();
                self.rejoining = true;
            }
            let live_now = self.sub.as_ref().is_some_and(Subscriber::is_live);
            let in_grace = self
                .group
                .as_ref()
                .is_some_and(|g| g.fanouts.in_session(&self.path));
            if !live_now && !in_grace {
                return Ok(());
            }
        } else if !self.cont.in_session() {
            return Ok(());
        }
        // A place in the stream's shared writer, held while connecting so that the
        // destination starts where the session did even if connecting takes long.
        let place = self.group.as_ref().filter(|_| !self.url.tls).map(|g| {
            let id = NEXT_MEMBER.fetch_add(1, Ordering::Relaxed);
            g.fanouts
                .reserve(&self.path, SHARED_STREAM_ID, self.cfg.client.chunk_size, id)
        });
        let client = tokio::select! {
            r = PublishingClient::connect(&self.url, &self.cfg.client) => r.map_err(connect_error)?,
            _ = live.stopping() => return Ok(()),
        };
        live.set_live();
        match place {
            Some(place) if client.stream_id == SHARED_STREAM_ID => {
                let conn = client
                    .into_plain()
                    .map_err(|e| DestinationError::Push(e.to_string()))?;
                return self.push_shared(place, conn, live).await;
            }
            Some(_) => debug!(
                dest = %self.name,
                stream_id = client.stream_id,
                "Destination gave an unusual message stream id: writing its own"
            ),
            None => {}
        }
        // Only pushes in a group ever give their subscription up, and this one is
        // not shared: the subscription is here.
        let Some(mut sub) = self.sub.take() else {
            return Ok(());
        };
        let r = self.push_own(&mut sub, client, live).await;
        // A rejoined subscription is back in a session once `push_own` took its start.
        self.rejoining &= !self.cont.in_session();
        self.sub = Some(sub);
        r
    }
}

impl RtmpPush {
    /// Writes the stream to `client` from this push's own subscription.
    async fn push_own(
        &mut self,
        sub: &mut Subscriber,
        mut client: PublishingClient,
        live: &LiveSignal,
    ) -> Result<(), DestinationError> {
        let mut from = FromCore::new(self.cfg.client.chunk_size, client.stream_id);
        let mut out = Vec::new();
        if let Some(info) = self.info.as_ref().filter(|i| !i.metadata.is_empty()) {
            from.metadata(info, true, &mut out)
                .map_err(|e| DestinationError::Push(e.to_string()))?;
        }
        for c in &self.configs {
            from.frame(c, &mut out)
                .map_err(|e| DestinationError::Push(e.to_string()))?;
        }
        self.write(&mut client, &mut out).await?;
        // After (re)connecting, media starts on a video keyframe.
        let mut need_key = true;
        // Set while `out` holds audio only, waiting for video to share its write.
        let mut hold_until: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                biased;
                _ = live.stopping() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
                    return Ok(());
                }
                _ = sleep_until(hold_until), if hold_until.is_some() => {
                    hold_until = None;
                    self.write(&mut client, &mut out).await?;
                }
                r = client.poll_server() => match r {
                    Ok(None) => {}
                    Ok(Some(ServerNotice::Stopped(why))) => return Err(DestinationError::Rejected(why)),
                    Err(e) => return Err(DestinationError::Push(e.to_string())),
                },
                ev = self.cont.next_or_pending(&mut self.pending, sub) => {
                    let Some(ev) = ev else {
                        self.write(&mut client, &mut out).await?;
                        let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
                        return Ok(());
                    };
                    match ev {
                        ContinuityEvent::Frame(f) => {
                            if !self.admit(&f, &mut need_key) {
                                continue;
                            }
                            let mut urgent = f.kind() == MediaKind::Video || f.is_config();
                            from.frame(&f, &mut out)
                                .map_err(|e| DestinationError::Push(e.to_string()))?;
                            // Batch whatever else is already queued (frames only).
                            while out.len() < 256 {
                                match self.cont.try_next(sub) {
                                    Some(ContinuityEvent::Frame(f)) => {
                                        if self.admit(&f, &mut need_key) {
                                            urgent |= f.kind() == MediaKind::Video || f.is_config();
                                            from.frame(&f, &mut out).map_err(|e| {
                                                DestinationError::Push(e.to_string())
                                            })?;
                                        }
                                    }
                                    Some(other) => {
                                        self.pending = Some(other);
                                        break;
                                    }
                                    None => break,
                                }
                            }
                            let hold = self.cfg.audio_hold;
                            if urgent || hold.is_zero() || out.len() >= 256 {
                                hold_until = None;
                                self.write(&mut client, &mut out).await?;
                            } else if hold_until.is_none() {
                                hold_until = Some(tokio::time::Instant::now() + hold);
                            }
                        }
                        ContinuityEvent::Updated(info) => {
                            from.metadata(&info, true, &mut out).map_err(|e| DestinationError::Push(e.to_string()))?;
                            self.info = Some(info);
                            hold_until = None;
                            self.write(&mut client, &mut out).await?;
                        }
                        ContinuityEvent::Resumed(info) | ContinuityEvent::Started(info) => {
                            info!(dest = %self.name, stream = %info.path, "Publisher back within grace: resuming");
                            from.metadata(&info, true, &mut out).map_err(|e| DestinationError::Push(e.to_string()))?;
                            self.info = Some(info);
                            hold_until = None;
                            self.write(&mut client, &mut out).await?;
                        }
                        ContinuityEvent::Gap { dropped } => {
                            self.meter.add_dropped(dropped);
                            tracing::warn!(dest = %self.name, dropped, "Destination fell behind: skipped to the next keyframe");
                        }
                        ContinuityEvent::Ended(reason) => {
                            info!(dest = %self.name, reason = %reason, "Stream over: unpublishing");
                            self.write(&mut client, &mut out).await?;
                            let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever without one (for an optional `select!` deadline).
pub(crate) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
