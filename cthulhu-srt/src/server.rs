//! The SRT service: a listener whose callers publish MPEG-TS into the hub or play
//! from it, admitted by stream id through the same [`Router`] as RTMP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cthulhu_core::format::ts::{TsDemuxer, TsEvent};
use cthulhu_core::hub::{Continuity, PublishConflict, SubscribeOptions};
use cthulhu_core::{
    Action, Decision, Hub, Member, Meter, Publisher, PublisherOrigin, RefusalLog, Router, Secret,
    StreamPath,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::pump::TsPump;
use crate::push::{LoopEnd, send_loop};
use crate::streamid::{self, redact};
use crate::{Incoming, ListenerConfig, Reject, SrtConnection, SrtError, SrtListener};

/// Where the listener finds a stream's passphrase (None: the stream is not encrypted).
pub trait PassphraseSource: Send + Sync + 'static {
    /// The passphrase of `path`, if its SRT connections are encrypted.
    fn passphrase(&self, path: &StreamPath) -> Option<Secret>;
}

impl<F> PassphraseSource for F
where
    F: Fn(&StreamPath) -> Option<Secret> + Send + Sync + 'static,
{
    fn passphrase(&self, path: &StreamPath) -> Option<Secret> {
        self(path)
    }
}

/// Settings of the SRT service.
#[derive(Clone)]
pub struct SrtServerConfig {
    /// The listener's transport settings.
    pub listener: ListenerConfig,
    /// Per-stream passphrases.
    pub passphrases: Arc<dyn PassphraseSource>,
    /// A publisher that sends nothing for this long is disconnected.
    pub idle_timeout: Duration,
    /// A player whose connection takes nothing for this long is disconnected.
    pub send_timeout: Duration,
    /// Players stay connected this long while the publisher is away.
    pub play_grace: Duration,
}

impl std::fmt::Debug for SrtServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtServerConfig")
            .field("listener", &self.listener)
            .field("idle_timeout", &self.idle_timeout)
            .field("send_timeout", &self.send_timeout)
            .field("play_grace", &self.play_grace)
            .finish_non_exhaustive()
    }
}

impl Default for SrtServerConfig {
    fn default() -> Self {
        Self {
            listener: ListenerConfig::default(),
            passphrases: Arc::new(|_: &StreamPath| None),
            idle_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
            play_grace: Duration::from_secs(86_400),
        }
    }
}

/// The SRT listener service.
pub struct SrtServer {
    listener: SrtListener,
    hub: Hub,
    router: Arc<dyn Router>,
    cfg: Arc<SrtServerConfig>,
}

impl SrtServer {
    /// Binds the UDP socket.
    pub async fn bind(
        addr: SocketAddr,
        cfg: SrtServerConfig,
        hub: Hub,
        router: Arc<dyn Router>,
    ) -> Result<Self, SrtError> {
        let listener = SrtListener::bind(addr, cfg.listener.clone()).await?;
        Ok(Self {
            listener,
            hub,
            router,
            cfg: Arc::new(cfg),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The log of refused handshakes and requests; [`RefusalLog::totals`] counts
    /// them by reason (for metrics).
    pub fn refusals(&self) -> RefusalLog {
        self.listener.refusals().clone()
    }

    /// Serves callers until `stop` turns true; then closes every connection.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        break;
                    }
                }
                inc = self.listener.next() => match inc {
                    Some(inc) => {
                        tasks.spawn(handle(inc, self.hub.clone(), self.router.clone(), self.cfg.clone()));
                    }
                    None => {
                        warn!("SRT listener ended");
                        break;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.shutdown().await;
    }
}

/// Refuses through the listener's refusal log (rate-limited: a flood of bad
/// requests costs a few lines per reason and window). `shown` is the redacted
/// stream id; `detail` must not contain secrets.
fn refuse(
    inc: Incoming,
    shown: &str,
    reason: Reject,
    why: &'static str,
    detail: &dyn std::fmt::Display,
) {
    let peer = inc.peer();
    inc.refuse(
        reason,
        why,
        format_args!("SRT connection refused: {detail} (peer {peer}, stream id {shown:?})"),
    );
}

/// Logs a failed accept unless the listener logged it already (a refusal, an
/// expired request).
fn accept_failed(peer: SocketAddr, path: &StreamPath, e: &SrtError) {
    match e {
        SrtError::Refused(_) | SrtError::RequestExpired | SrtError::InvalidPassphrase(_) => {}
        e => warn!(peer = %peer, stream = %path, error = %e, "SRT handshake failed"),
    }
}

async fn handle(inc: Incoming, hub: Hub, router: Arc<dyn Router>, cfg: Arc<SrtServerConfig>) {
    let peer = inc.peer();
    let raw = inc.stream_id().unwrap_or_default().to_owned();
    let shown = redact(&raw);
    let req = match streamid::parse(inc.stream_id()) {
        Ok(r) => r,
        Err(e) => return refuse(inc, &shown, Reject::BadRequest, "bad stream id", &e),
    };
    let path = match router
        .authorize(&req.access_request(&raw, Some(peer)))
        .await
    {
        Decision::Allow(p) => p,
        Decision::Deny(why) => {
            let (code, refused) = match req.action {
                Action::Publish => (Reject::Unauthorized, "publish not allowed"),
                Action::Play => (Reject::NotFound, "play not allowed"),
            };
            return refuse(inc, &shown, code, refused, &why);
        }
    };
    let passphrase = cfg.passphrases.passphrase(&path);
    match (passphrase.is_some(), inc.encrypted()) {
        (true, false) => {
            return refuse(
                inc,
                &shown,
                Reject::BadSecret,
                "encryption mismatch",
                &"the stream is encrypted: a passphrase is required",
            );
        }
        (false, true) => {
            return refuse(
                inc,
                &shown,
                Reject::BadSecret,
                "encryption mismatch",
                &"the stream is not encrypted: connect without a passphrase",
            );
        }
        _ => {}
    }
    match req.action {
        Action::Publish => {
            if hub.config().conflict == PublishConflict::Reject && hub.is_live(&path) {
                return refuse(
                    inc,
                    &shown,
                    Reject::Conflict,
                    "stream already published",
                    &"the stream already has a publisher",
                );
            }
            let conn = match inc.accept(passphrase).await {
                Ok(c) => c,
                Err(e) => return accept_failed(peer, &path, &e),
            };
            let publisher = match hub.publish_from(&path, PublisherOrigin::network("srt", peer)) {
                Ok(p) => p,
                Err(e) => {
                    warn!(peer = %peer, stream = %path, error = %e, "SRT publish refused");
                    return;
                }
            };
            info!(peer = %peer, stream = %path, "SRT publisher connected");
            let why = ingest(conn, &publisher, cfg.idle_timeout).await;
            info!(peer = %peer, stream = %path, reason = %why, "SRT publisher gone");
        }
        Action::Play => {
            let conn = match inc.accept(passphrase).await {
                Ok(c) => c,
                Err(e) => return accept_failed(peer, &path, &e),
            };
            info!(peer = %peer, stream = %path, "SRT player connected");
            let why = play(conn, &hub, &path, &cfg).await;
            info!(peer = %peer, stream = %path, reason = %why, "SRT player gone");
        }
    }
}

/// Demuxes an SRT publisher's MPEG-TS into the hub until it stops or goes silent.
async fn ingest(conn: SrtConnection, publisher: &Publisher, idle: Duration) -> String {
    let label = conn.peer().to_string();
    let (tx, mut rx) = conn.split();
    let mut demux = TsDemuxer::new();
    let mut errors = 0u64;
    let why = loop {
        let m = tokio::select! {
            biased;
            r = publisher.ended() => break format!("{r}"),
            m = tokio::time::timeout(idle, rx.recv()) => m,
        };
        match m {
            Err(_) => break format!("no data for {} s", idle.as_secs()),
            Ok(None) => {
                // A clean close (the sender's shutdown): SRT delivered everything before
                // it in order, so the open PES packets are complete.
                demux.flush();
                forward(&label, &mut demux, publisher, &mut errors);
                break "connection closed".to_owned();
            }
            Ok(Some(b)) => {
                demux.push(&b);
                if !forward(&label, &mut demux, publisher, &mut errors) {
                    break "replaced by another publisher".to_owned();
                }
            }
        }
    };
    // No flush after a timeout or a replacement: the last video PES is unbounded and
    // may have lost its tail; a truncated frame would reach every player and recording
    // as a decode error. Dropping that one frame is the better loss.
    drop(rx);
    let _ = tokio::time::timeout(Duration::from_secs(1), tx.close()).await;
    why
}

/// Sends the demuxer's frames to the hub; false once the publisher was ended.
fn forward(label: &str, demux: &mut TsDemuxer, publisher: &Publisher, errors: &mut u64) -> bool {
    while let Some(ev) = demux.poll_event() {
        match ev {
            TsEvent::Frame(f) => {
                let sent = publisher.send(f);
                if !sent {
                    return false;
                }
            }
            TsEvent::Error(e) => {
                *errors += 1;
                // Loss on the way shows up as continuity errors: log, do not flood.
                if errors.is_power_of_two() {
                    warn!(peer = %label, error = %e, count = *errors, "MPEG-TS error in SRT input");
                }
            }
            TsEvent::Tracks(_) | TsEvent::Pcr(_) => {}
            _ => {}
        }
    }
    true
}

/// Plays a stream to an SRT caller as MPEG-TS.
async fn play(conn: SrtConnection, hub: &Hub, path: &StreamPath, cfg: &SrtServerConfig) -> String {
    let label = conn.peer().to_string();
    let mut sub = hub.subscribe(
        path,
        SubscribeOptions::labelled(format!("srt-play:{label}")),
    );
    // One member: this player, with its address and counters.
    let meter = Meter::shared();
    sub.set_members(vec![Member {
        name: String::new(),
        remote: Some(conn.peer()),
        meter: meter.clone(),
    }]);
    let mut cont = Continuity::new(cfg.play_grace);
    let mut pump = TsPump::new();
    let (mut tx, mut rx) = conn.split();
    let r = send_loop(
        &label,
        &meter,
        &mut cont,
        &mut sub,
        &mut pump,
        &mut tx,
        &mut rx,
        std::future::pending(),
        cfg.send_timeout,
    )
    .await;
    let why = match r {
        Ok(LoopEnd::Ended(r)) => format!("stream ended: {r}"),
        Ok(LoopEnd::Closed) => "server shutting down".to_owned(),
        Ok(LoopEnd::PeerClosed) => "connection closed".to_owned(),
        Ok(LoopEnd::Stopped) => "stopped".to_owned(),
        Err(e) => e.to_string(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), tx.close()).await;
    why
}
