//! SRT destinations (caller mode) and the send loop shared with SRT players.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cthulhu_core::hub::{Continuity, ContinuityEvent, EndReason};
use cthulhu_core::supervisor::{Destination, DestinationError, LiveSignal};
use cthulhu_core::{Meter, StreamInfo, Subscriber};
use tracing::{debug, info, warn};

use crate::pump::TsPump;
use crate::url::SrtUrl;
use crate::{CallerConfig, SrtError, SrtReceiver, SrtSender};

/// Settings of an SRT destination.
#[derive(Debug, Clone)]
pub struct SrtPushConfig {
    /// Latency when the URL does not give one.
    pub latency: Duration,
    /// Connect timeout when the URL does not give one.
    pub connect_timeout: Duration,
    /// The SRT sender buffer, bytes: must hold `latency` worth of the stream plus
    /// its largest keyframe (the default, 12 MiB, covers 20 Mbit/s at 1 s latency
    /// with margin).
    pub send_buffer_bytes: usize,
    /// SO_SNDBUF/SO_RCVBUF of the UDP socket.
    pub udp_buffer_bytes: usize,
    /// How long sending may wait on a full send queue before the push is restarted.
    pub send_timeout: Duration,
    /// How long the push stays connected while the publisher is away.
    pub grace: Duration,
}

impl Default for SrtPushConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(120),
            connect_timeout: Duration::from_secs(5),
            send_buffer_bytes: 12 * 1024 * 1024,
            udp_buffer_bytes: 4 * 1024 * 1024,
            send_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(10),
        }
    }
}

/// How a send loop ended.
#[derive(Debug)]
pub(crate) enum LoopEnd {
    /// The publish session is over.
    Ended(EndReason),
    /// The subscription was closed (the hub shut down).
    Closed,
    /// The peer closed the SRT connection.
    PeerClosed,
    /// A stop was requested.
    Stopped,
}

/// Sends a subscription as MPEG-TS over SRT until the session ends, the peer goes
/// away or `stop` resolves. Frames the muxer refuses are logged and skipped. What
/// is sent and dropped is counted on `meter`.
#[allow(clippy::too_many_arguments)] // the parts of one session, borrowed separately
pub(crate) async fn send_loop(
    label: &str,
    meter: &Meter,
    cont: &mut Continuity,
    sub: &mut Subscriber,
    pump: &mut TsPump,
    tx: &mut SrtSender,
    rx: &mut SrtReceiver,
    stop: impl Future<Output = ()>,
    send_timeout: Duration,
) -> Result<LoopEnd, SrtError> {
    tokio::pin!(stop);
    let mut out: Vec<Bytes> = Vec::new();
    let mut pending: Option<ContinuityEvent> = None;
    let mut mux_errors: u64 = 0;
    loop {
        let ev = tokio::select! {
            biased;
            _ = &mut stop => return Ok(LoopEnd::Stopped),
            m = rx.recv() => {
                if m.is_none() {
                    return Ok(LoopEnd::PeerClosed);
                }
                // Players and destinations have nothing to say; ignore stray data.
                continue;
            }
            ev = cont.next_or_pending(&mut pending, sub) => ev,
        };
        let Some(ev) = ev else {
            flush(tx, &mut out, send_timeout, meter).await?;
            return Ok(LoopEnd::Closed);
        };
        match ev {
            ContinuityEvent::Frame(f) => {
                mux(label, pump, &f, &mut mux_errors);
                // Batch what is already queued.
                for _ in 0..64 {
                    match cont.try_next(sub) {
                        Some(ContinuityEvent::Frame(f)) => mux(label, pump, &f, &mut mux_errors),
                        Some(other) => {
                            pending = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                pump.take_messages(&mut out);
                flush(tx, &mut out, send_timeout, meter).await?;
            }
            ContinuityEvent::Started(info) => start(label, pump, &info),
            ContinuityEvent::Resumed(info) => {
                info!(peer = %label, stream = %info.path, "Publisher back within grace: resuming");
                pump.gap();
            }
            ContinuityEvent::Updated(_) => {}
            ContinuityEvent::Gap { dropped } => {
                meter.add_dropped(dropped);
                warn!(peer = %label, dropped, "SRT peer fell behind: skipped to the next keyframe");
                pump.gap();
            }
            ContinuityEvent::Ended(reason) => {
                pump.take_messages(&mut out);
                flush(tx, &mut out, send_timeout, meter).await?;
                return Ok(LoopEnd::Ended(reason));
            }
        }
    }
}

fn start(label: &str, pump: &mut TsPump, info: &StreamInfo) {
    debug!(peer = %label, stream = %info.path, tracks = info.tracks.len(), "Session started");
    pump.start(info);
}

fn mux(label: &str, pump: &mut TsPump, f: &cthulhu_core::Frame, errors: &mut u64) {
    if let Err(e) = pump.frame(f) {
        *errors += 1;
        if errors.is_power_of_two() {
            warn!(peer = %label, error = %e, count = *errors, "Frame not muxed into MPEG-TS: skipped");
        }
    }
}

async fn flush(
    tx: &mut SrtSender,
    out: &mut Vec<Bytes>,
    limit: Duration,
    meter: &Meter,
) -> Result<(), SrtError> {
    for m in out.drain(..) {
        let n = m.len();
        match tokio::time::timeout(limit, tx.send(m)).await {
            Ok(r) => {
                r?;
                meter.add_sent(n);
            }
            Err(_) => return Err(SrtError::SendTimeout(limit)),
        }
    }
    Ok(())
}

/// One SRT destination: implements the supervisor's [`Destination`].
pub struct SrtPush {
    name: String,
    url: SrtUrl,
    sub: Subscriber,
    cont: Continuity,
    cfg: SrtPushConfig,
    info: Option<Arc<StreamInfo>>,
    meter: Arc<Meter>,
}

impl std::fmt::Debug for SrtPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtPush")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SrtPush {
    /// A push of `sub`'s stream to `url`.
    pub fn new(name: String, url: SrtUrl, sub: Subscriber, cfg: SrtPushConfig) -> Self {
        Self {
            name,
            url,
            sub,
            cont: Continuity::new(cfg.grace),
            cfg,
            info: None,
            meter: Meter::shared(),
        }
    }

    /// Counts what is sent to the destination and dropped for it on `meter`
    /// (by default on a meter of its own).
    pub fn with_meter(mut self, meter: Arc<Meter>) -> Self {
        self.meter = meter;
        self
    }

    async fn resolve(&self) -> Result<SocketAddr, DestinationError> {
        let mut addrs = tokio::net::lookup_host((self.url.host.as_str(), self.url.port))
            .await
            .map_err(|e| DestinationError::Connect(format!("resolving {}: {e}", self.url.host)))?;
        addrs
            .next()
            .ok_or_else(|| DestinationError::Connect(format!("{} has no address", self.url.host)))
    }

    fn caller_config(&self, addr: SocketAddr) -> CallerConfig {
        CallerConfig {
            addr,
            stream_id: self.url.stream_id.as_ref().map(|s| s.expose().to_owned()),
            passphrase: self.url.passphrase.clone(),
            key_size: self.url.key_size,
            latency: self.url.latency.unwrap_or(self.cfg.latency),
            send_buffer_bytes: self.cfg.send_buffer_bytes,
            udp_buffer_bytes: self.cfg.udp_buffer_bytes,
            connect_timeout: self.url.connect_timeout.unwrap_or(self.cfg.connect_timeout),
            ..CallerConfig::default()
        }
    }
}

fn connect_error(e: SrtError) -> DestinationError {
    match e {
        SrtError::Rejected(why) => DestinationError::Rejected(why.to_string()),
        other => DestinationError::Connect(other.to_string()),
    }
}

#[async_trait]
impl Destination for SrtPush {
    async fn wait_for_stream(&mut self) -> bool {
        if self.cont.in_session() {
            return true;
        }
        match self.cont.next_session(&mut self.sub).await {
            Some(info) => {
                self.info = Some(info);
                true
            }
            None => false,
        }
    }

    async fn push(&mut self, live: &LiveSignal) -> Result<(), DestinationError> {
        if !self.cont.in_session() {
            return Ok(());
        }
        let addr = self.resolve().await?;
        let conn = tokio::select! {
            r = crate::connect(self.caller_config(addr)) => r.map_err(connect_error)?,
            _ = live.stopping() => return Ok(()),
        };
        live.set_live();
        info!(dest = %self.name, url = %self.url.redacted(), "SRT destination connected");
        let (mut tx, mut rx) = conn.split();
        // The hub sends codec configuration once per session: a reconnect takes the
        // tracks (with their configuration) from the stream info and starts on the
        // next keyframe.
        let mut pump = TsPump::new();
        if let Some(info) = self.sub.info().or_else(|| self.info.clone()) {
            pump.start(&info);
        }
        let end = send_loop(
            &self.name,
            &self.meter,
            &mut self.cont,
            &mut self.sub,
            &mut pump,
            &mut tx,
            &mut rx,
            live.stopping(),
            self.cfg.send_timeout,
        )
        .await;
        let close = tokio::time::timeout(Duration::from_secs(2), tx.close());
        if let Ok(LoopEnd::Ended(reason)) = &end {
            info!(dest = %self.name, reason = %reason, "Stream over: unpublishing");
        }
        match end {
            Ok(LoopEnd::Stopped | LoopEnd::Closed | LoopEnd::Ended(_)) => {
                let _ = close.await;
                Ok(())
            }
            Ok(LoopEnd::PeerClosed) => Err(DestinationError::Push(
                "the destination closed the connection".into(),
            )),
            Err(e) => {
                drop(close);
                Err(DestinationError::Push(e.to_string()))
            }
        }
    }
}
