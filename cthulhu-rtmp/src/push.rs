//! Pushing a hub stream to an RTMP/RTMPS destination, under the core supervisor.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cthulhu_core::hub::{Continuity, ContinuityEvent};
use cthulhu_core::supervisor::{Destination, DestinationError, LiveSignal};
use cthulhu_core::{Frame, MediaKind, StreamInfo, Subscriber};
use tracing::info;

use crate::client::{ClientConfig, PublishingClient, ServerNotice};
use crate::error::RtmpError;
use crate::from_core::FromCore;
use crate::url::RtmpUrl;

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
    sub: Subscriber,
    cont: Continuity,
    cfg: PushConfig,
    info: Option<Arc<StreamInfo>>,
    configs: Vec<Frame>,
    /// A non-frame event taken while batching, handled next.
    pending: Option<ContinuityEvent>,
}

impl RtmpPush {
    /// Creates a push of `sub`'s stream to `url`.
    pub fn new(name: String, url: RtmpUrl, sub: Subscriber, cfg: PushConfig) -> Self {
        Self {
            name,
            url,
            sub,
            cont: Continuity::new(cfg.grace),
            cfg,
            info: None,
            configs: Vec::new(),
            pending: None,
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
        match tokio::time::timeout(self.cfg.write_timeout, client.write_media(out)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DestinationError::Push(e.to_string())),
            Err(_) => Err(DestinationError::Push(format!(
                "destination accepted nothing for {} s",
                self.cfg.write_timeout.as_secs()
            ))),
        }
    }
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
        if self.cont.in_session() {
            return true;
        }
        match self.cont.next_session(&mut self.sub).await {
            Some(info) => {
                self.info = Some(info);
                self.configs.clear();
                true
            }
            None => false,
        }
    }

    async fn push(&mut self, live: &LiveSignal) -> Result<(), DestinationError> {
        if !self.cont.in_session() {
            return Ok(());
        }
        let mut client = tokio::select! {
            r = PublishingClient::connect(&self.url, &self.cfg.client) => r.map_err(connect_error)?,
            _ = live.stopping() => return Ok(()),
        };
        live.set_live();
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
                ev = self.cont.next_or_pending(&mut self.pending, &mut self.sub) => {
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
                                match self.cont.try_next(&mut self.sub) {
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
