//! The RTMP listener: ingest (publish) and play, on rml_rtmp's `ServerSession`.
//!
//! Each connection is one tokio task driving a sans-IO `ServerSession`: read bytes,
//! feed the session, write its responses in order, act on its events. The application
//! decides through a [`Router`]: the session asks, the router answers. Once a player's
//! play request is accepted, its socket's write side belongs to the stream's fan-out
//! (`fanout.rs`): one task per stream serializes each message once and writes it
//! to every player; the connection task keeps reading and sends its session's answers
//! through the fan-out, in order with the media.
//!
//! Every call into rml_rtmp with network input is isolated with `catch_unwind`: input
//! that makes the parser panic closes that one connection with a logged reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::io;

use bytes::Bytes;
use cthulhu_core::{
    AccessRequest, Action, Decision, Frame, Hub, HubError, Meter, Protocol, Publisher,
    PublisherOrigin, RefusalLog, Router, Secret, StreamPath,
};
use rml_rtmp::handshake::PeerType;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::chunk::{TYPE_AGGREGATE, read_some, write_segments};
use crate::error::{RtmpError, guarded};
use crate::fanout::{FanoutConfig, Fanouts, Left, PLAYER_GRACE, PlayerHandle};
use crate::inbound::{InboundGuard, InboundLimits};
use crate::limits::{ConnLimits, Permit};
use crate::to_core::{self, ToCore};

/// Listener settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Outbound chunk size announced to every client.
    pub chunk_size: u32,
    /// Time allowed for the handshake and the first publish/play request.
    pub handshake_timeout: Duration,
    /// A publisher (or a connection that has not started publishing or playing) that
    /// sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A player whose socket accepts nothing for this long is closed.
    pub play_stall_timeout: Duration,
    /// TCP_NODELAY on players' sockets. Off by default: with Nagle's algorithm the
    /// kernel coalesces small writes, which measured about half the CPU per delivered
    /// Gbit/s for a few milliseconds more latency (see BENCHMARKS.md).
    pub player_nodelay: bool,
    /// Audio for players waits up to this long for the next video message so that
    /// both leave in one write: fewer, larger writes per player, which measured about
    /// half the CPU per delivered Gbit/s (see BENCHMARKS.md). Video, metadata and codec
    /// configuration never wait. Zero writes every batch at once.
    pub audio_hold: Duration,
    /// Bounds on what a connection may send (message sizes before and after a publish
    /// is accepted, AMF0 nesting).
    pub inbound: InboundLimits,
    /// Open connections at most; more are closed at once. Default 10,000.
    pub max_connections: usize,
    /// Open connections from one IP address at most. Default 1,000.
    pub max_connections_per_ip: usize,
    /// Connections still in the handshake or the command phase (not yet publishing or
    /// playing) at most, across all peers; more are closed at once. Each such
    /// connection is closed after `handshake_timeout`. Default 1,024.
    pub max_pending: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            chunk_size: 4096,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            play_stall_timeout: Duration::from_secs(30),
            player_nodelay: false,
            audio_hold: Duration::from_millis(40),
            inbound: InboundLimits::default(),
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_pending: 1_024,
        }
    }
}

/// Shared state of a listener's connections.
struct Ctx {
    hub: Hub,
    router: Arc<dyn Router>,
    config: ServerConfig,
    next_id: AtomicU64,
    fanouts: Arc<Fanouts>,
    limits: Arc<ConnLimits>,
    refusals: RefusalLog,
}

/// A bound RTMP listener. Call [`RtmpServer::run`] to accept connections.
#[must_use = "the server does nothing until run"]
pub struct RtmpServer {
    listener: TcpListener,
    ctx: Arc<Ctx>,
}

impl RtmpServer {
    /// Binds the listener.
    pub async fn bind(
        addr: SocketAddr,
        config: ServerConfig,
        hub: Hub,
        router: Arc<dyn Router>,
    ) -> Result<Self, RtmpError> {
        let listener = TcpListener::bind(addr).await?;
        let hub_config = hub.config();
        let fanouts = Fanouts::new(
            hub.clone(),
            FanoutConfig {
                queue_bytes: hub_config.queue_bytes,
                queue_messages: hub_config.queue_frames,
                stall_timeout: config.play_stall_timeout,
                nodelay: config.player_nodelay,
                gop_bytes: hub_config.gop_cache_bytes,
                audio_hold: config.audio_hold,
                publishing: false,
                grace: PLAYER_GRACE,
            },
        );
        Ok(Self {
            listener,
            ctx: Arc::new(Ctx {
                hub,
                router,
                next_id: AtomicU64::new(1),
                fanouts,
                limits: Arc::new(ConnLimits::new(
                    config.max_connections,
                    config.max_connections_per_ip,
                    config.max_pending,
                )),
                refusals: RefusalLog::new("RTMP connections"),
                config,
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, RtmpError> {
        Ok(self.listener.local_addr()?)
    }

    /// The log of refused connections; [`RefusalLog::totals`] counts them by
    /// reason (for metrics).
    pub fn refusals(&self) -> RefusalLog {
        self.ctx.refusals.clone()
    }

    /// Accepts connections until `shutdown` becomes true; connection tasks end with it.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Summaries of refused peers come out even when the refusals stop.
        let mut summaries = tokio::time::interval(Duration::from_secs(1));
        summaries.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = summaries.tick() => self.ctx.refusals.flush(),
                res = self.listener.accept() => match res {
                    Ok((sock, peer)) => {
                        let permit = match self.ctx.limits.admit(peer.ip()) {
                            Ok(p) => p,
                            Err(reason) => {
                                // Closed at once, with a reset: nothing was read.
                                let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
                                drop(sock);
                                self.ctx.refusals.refuse(peer.ip(), reason, format_args!("Connection from {peer} refused: {reason}"));
                                continue;
                            }
                        };
                        let id = self.ctx.next_id.fetch_add(1, Ordering::Relaxed);
                        let ctx = self.ctx.clone();
                        let stop = shutdown.clone();
                        let span = info_span!("rtmp", conn = id, peer = %peer);
                        tokio::spawn(
                            async move {
                                let result = Connection::run(ctx.clone(), id, sock, peer, permit, stop).await;
                                match result {
                                    Ok(()) => debug!("Connection closed"),
                                    // Logged where it was decided.
                                    Err((RtmpError::Refused(e), false)) => debug!(error = %e, "Connection closed"),
                                    // A port check (a load balancer's, a test's).
                                    Err((RtmpError::Closed, false)) => debug!("Connection closed by the peer before a request"),
                                    // Before a publish or play was accepted the peer is
                                    // anyone: its errors are summarised, not logged each.
                                    Err((e, false)) => ctx.refusals.refuse(peer.ip(), e.kind(), format_args!("Connection closed: {e}")),
                                    Err((e, true)) => info!(error = %e, "Connection closed"),
                                }
                            }
                            .instrument(span),
                        );
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        warn!(error = %e, "Accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

/// Splits an RTMP play/publish name into the name and its query (`NAME?key=KEY&x=y`).
pub(crate) fn split_name(raw: &str) -> (String, Option<Secret>, Vec<(String, String)>) {
    let (name, query) = raw.split_once('?').unwrap_or((raw, ""));
    let mut key = None;
    let mut rest = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "key" {
            key = Some(Secret::new(v.into_owned()));
        } else {
            rest.push((k.into_owned(), v.into_owned()));
        }
    }
    (name.to_owned(), key, rest)
}

struct Publishing {
    publisher: Publisher,
    to_core: ToCore,
}

/// A player handed to its stream's fan-out.
struct Playing {
    path: StreamPath,
    handle: PlayerHandle,
    /// Why the fan-out dropped the player (stalled, socket error).
    exit: oneshot::Receiver<Left>,
}

struct Connection {
    ctx: Arc<Ctx>,
    id: u64,
    peer: SocketAddr,
    sock: Arc<TcpStream>,
    session: ServerSession,
    /// Bounds the input before `session` parses it.
    guard: InboundGuard,
    /// This connection's place in the listener's limits.
    permit: Permit,
    out: Vec<Bytes>,
    publishing: Option<Publishing>,
    /// An accepted play request: the player joins the fan-out once the session's
    /// answer (stream begin, play start) is written.
    play_accepted: Option<(StreamPath, u32)>,
    playing: Option<Playing>,
    /// Set when the connection must close once pending output is written.
    closing: Option<RtmpError>,
    /// Bytes received on this connection, handshake included (acknowledgements).
    bytes_in: u64,
}

impl Connection {
    /// Serves one connection. The error says whether the peer had been let publish
    /// or play (`true`) or was still anyone (`false`).
    async fn run(
        ctx: Arc<Ctx>,
        id: u64,
        mut sock: TcpStream,
        peer: SocketAddr,
        permit: Permit,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), (RtmpError, bool)> {
        // Publishers and the command phase answer at once; players' sockets are set up
        // by the fan-out (Nagle on unless configured).
        let _ = sock.set_nodelay(true);
        let leftover = tokio::time::timeout(
            ctx.config.handshake_timeout,
            crate::handshake::run(&mut sock, PeerType::Server),
        )
        .await
        .map_err(|_| RtmpError::HandshakeTimeout)
        .and_then(|r| r)
        .map_err(|e| (e, false))?;
        let mut config = ServerSessionConfig::new();
        config.chunk_size = ctx.config.chunk_size;
        let (session, initial) =
            guarded("session start", || ServerSession::new(config)).map_err(|e| (e, false))?;
        let mut conn = Connection {
            ctx: ctx.clone(),
            id,
            peer,
            sock: Arc::new(sock),
            session,
            guard: InboundGuard::new(ctx.config.inbound),
            permit,
            out: Vec::new(),
            publishing: None,
            play_accepted: None,
            playing: None,
            closing: None,
            bytes_in: HANDSHAKE_BYTES,
        };
        conn.queue_results(initial);
        let r = conn.serve(&leftover, shutdown).await;
        r.map_err(|e| (e, conn.permit.is_authorized()))
    }

    async fn serve(
        &mut self,
        leftover: &[u8],
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), RtmpError> {
        let conn = self;
        let ctx = conn.ctx.clone();
        // Players only send acknowledgements and the odd command: a small buffer keeps
        // an idle player's footprint low; publishers get a larger one once publishing.
        let mut buf = vec![0u8; READ_BUF];
        if !leftover.is_empty() {
            conn.handle_input(leftover).await?;
        }
        let started = tokio::time::Instant::now();
        let mut last_read = tokio::time::Instant::now();
        loop {
            conn.flush().await?;
            if let Some(e) = conn.closing.take() {
                let _ = conn.sock_shutdown();
                return Err(e);
            }
            if let Some((path, stream_id)) = conn.play_accepted.take() {
                let (handle, exit) = ctx.fanouts.join(
                    &path,
                    stream_id,
                    ctx.config.chunk_size,
                    conn.id,
                    conn.sock.clone(),
                    conn.peer,
                    Meter::shared(),
                );
                conn.playing = Some(Playing { path, handle, exit });
            }
            if conn.publishing.is_some() && buf.len() < PUBLISH_READ_BUF {
                buf.resize(PUBLISH_READ_BUF, 0);
            }
            let idle_deadline = if conn.playing.is_some() {
                None
            } else if conn.publishing.is_none() {
                Some(
                    (last_read + ctx.config.idle_timeout)
                        .min(started + ctx.config.handshake_timeout.max(ctx.config.idle_timeout)),
                )
            } else {
                Some(last_read + ctx.config.idle_timeout)
            };
            let sleep = async {
                match idle_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let dropped = async {
                match conn.playing.as_mut() {
                    Some(p) => (&mut p.exit)
                        .await
                        .map_or(RtmpError::Closed, Left::into_error),
                    None => std::future::pending().await,
                }
            };
            let replaced = async {
                match conn.publishing.as_ref() {
                    Some(p) => p.publisher.ended().await,
                    None => std::future::pending().await,
                }
            };
            let sock = conn.sock.clone();
            tokio::select! {
                n = read_some(&sock, &mut buf) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(());
                    }
                    last_read = tokio::time::Instant::now();
                    let data = buf.get(..n).unwrap_or_default();
                    conn.handle_input(data).await?;
                }
                reason = dropped => return Err(reason),
                reason = replaced => {
                    return Err(RtmpError::Refused(format!("publishing ended: {reason}")));
                }
                _ = sleep => {
                    return Err(if conn.publishing.is_some() {
                        RtmpError::IdleTimeout(ctx.config.idle_timeout.as_secs())
                    } else {
                        RtmpError::Timeout("waiting for a publish or play request")
                    });
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Half-closes the socket (FIN after what was written, so the peer reads a refusal
    /// before the close); the fan-out may share the socket, hence socket2.
    fn sock_shutdown(&self) -> io::Result<()> {
        socket2::SockRef::from(&*self.sock).shutdown(std::net::Shutdown::Write)
    }

    /// Writes pending session output: directly before playing, through the fan-out
    /// once the player is in it. A connection whose socket accepts nothing for the
    /// stall timeout is closed.
    async fn flush(&mut self) -> Result<(), RtmpError> {
        if self.out.is_empty() {
            return Ok(());
        }
        if let Some(p) = &self.playing {
            for data in self.out.drain(..) {
                p.handle.control(data);
            }
            return Ok(());
        }
        // Until the player joins a fan-out, this task holds the only reference.
        let Some(sock) = Arc::get_mut(&mut self.sock) else {
            return Err(RtmpError::Protocol(
                "connection output while its socket is shared".into(),
            ));
        };
        let stall = self.ctx.config.play_stall_timeout;
        match tokio::time::timeout(stall, write_segments(sock, &mut self.out)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(RtmpError::StallTimeout(stall.as_secs())),
        }
    }

    fn queue_results(&mut self, results: Vec<ServerSessionResult>) -> Vec<ServerSessionEvent> {
        let mut events = Vec::new();
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.out.push(Bytes::from(p.bytes)),
                ServerSessionResult::RaisedEvent(e) => events.push(e),
                ServerSessionResult::UnhandleableMessageReceived(payload) => {
                    if payload.type_id == TYPE_AGGREGATE {
                        self.aggregate(&payload.data, payload.timestamp.value);
                    }
                }
            }
        }
        events
    }

    /// Feeds input to the session, in pieces the guard has checked: a piece ends
    /// after each command, whose answer (a publish accepted) may change the bounds.
    async fn handle_input(&mut self, mut data: &[u8]) -> Result<(), RtmpError> {
        while !data.is_empty() {
            let n = self.guard.check(data)?;
            let Some((now, rest)) = data.split_at_checked(n).filter(|_| n > 0) else {
                return Err(RtmpError::Protocol("input guard made no progress".into()));
            };
            self.session_input(now).await?;
            if self.closing.is_some() {
                break;
            }
            data = rest;
        }
        Ok(())
    }

    async fn session_input(&mut self, data: &[u8]) -> Result<(), RtmpError> {
        self.bytes_in += data.len() as u64;
        let mut results = guarded("rtmp input", || self.session.handle_input(data))?;
        make_ack_cumulative(&mut results, self.bytes_in);
        let events = self.queue_results(results);
        for ev in events {
            self.handle_event(ev).await?;
            if self.closing.is_some() {
                break;
            }
        }
        Ok(())
    }

    fn aggregate(&mut self, body: &Bytes, timestamp: u32) {
        if let Some(p) = &mut self.publishing {
            match p.to_core.aggregate(body, timestamp) {
                Ok(frames) => {
                    for f in frames {
                        p.publisher.send(f);
                    }
                }
                Err(e) => self.closing = Some(e),
            }
        }
    }

    fn send_frame(&mut self, frame: Result<Option<Frame>, RtmpError>) {
        match frame {
            Ok(Some(f)) => {
                if let Some(p) = &self.publishing {
                    p.publisher.send(f);
                }
            }
            Ok(None) => {}
            Err(e) => self.closing = Some(e),
        }
    }

    async fn handle_event(&mut self, ev: ServerSessionEvent) -> Result<(), RtmpError> {
        match ev {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                debug!(app = %app_name, "Connect");
                let r = guarded("accept connect", || self.session.accept_request(request_id))?;
                self.queue_results(r);
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => {
                self.on_publish(request_id, app_name, stream_key).await?;
            }
            ServerSessionEvent::PlayStreamRequested {
                request_id,
                app_name,
                stream_key,
                stream_id,
                ..
            } => {
                self.on_play(request_id, app_name, stream_key, stream_id)
                    .await?;
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                let frame = match &mut self.publishing {
                    Some(p) => p.to_core.video(&data, timestamp.value),
                    None => Ok(None),
                };
                self.send_frame(frame);
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                let frame = match &mut self.publishing {
                    Some(p) => p.to_core.audio(&data, timestamp.value),
                    None => Ok(None),
                };
                self.send_frame(frame);
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                if let Some(p) = &self.publishing {
                    p.publisher.set_metadata(to_core::metadata(&metadata));
                }
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Some(p) = self.publishing.take() {
                    info!(stream = %p.publisher.path(), "Unpublished");
                }
            }
            ServerSessionEvent::PlayStreamFinished { .. } => {
                self.play_accepted = None;
                if let Some(p) = self.playing.take() {
                    info!(stream = %p.path, "Player stopped");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Asks the router about a publish or play request. On refusal the client is told
    /// (with the right status code), the reason is logged and None is returned.
    async fn authorize(
        &mut self,
        action: Action,
        request_id: u32,
        app: String,
        raw_name: &str,
    ) -> Result<Option<StreamPath>, RtmpError> {
        let (verb, busy_code, denied_code) = match action {
            Action::Publish => (
                "Publish",
                "NetStream.Publish.BadName",
                "NetStream.Publish.Unauthorized",
            ),
            Action::Play => (
                "Play",
                "NetStream.Play.Failed",
                "NetStream.Play.StreamNotFound",
            ),
        };
        if self.publishing.is_some() || self.playing.is_some() || self.play_accepted.is_some() {
            self.refuse(
                request_id,
                busy_code,
                "this connection is already publishing or playing".into(),
            )?;
            return Ok(None);
        }
        let (name, key, query) = split_name(raw_name);
        let req = AccessRequest {
            protocol: Protocol::Rtmp,
            action,
            app,
            name,
            key,
            stream_id: None,
            remote: Some(self.peer),
            query,
        };
        match self.ctx.router.authorize(&req).await {
            Decision::Allow(path) => Ok(Some(path)),
            Decision::Deny(reason) => {
                let kind = match action {
                    Action::Publish => "publish refused",
                    Action::Play => "play refused",
                };
                let detail = format_args!("{verb} refused (app {}): {reason}", req.app);
                self.ctx.refusals.refuse(self.peer.ip(), kind, detail);
                self.refuse(request_id, denied_code, reason)?;
                Ok(None)
            }
        }
    }

    async fn on_publish(
        &mut self,
        request_id: u32,
        app: String,
        raw_name: String,
    ) -> Result<(), RtmpError> {
        let path = match self
            .authorize(Action::Publish, request_id, app, &raw_name)
            .await?
        {
            Some(path) => path,
            None => return Ok(()),
        };
        let publisher = match self
            .ctx
            .hub
            .publish_from(&path, PublisherOrigin::network("rtmp", self.peer))
        {
            Ok(p) => p,
            Err(e @ HubError::AlreadyPublishing(_)) => {
                warn!(stream = %path, "Publish refused: already publishing");
                return self.refuse(request_id, "NetStream.Publish.BadName", e.to_string());
            }
            Err(e) => return self.refuse(request_id, "NetStream.Publish.BadName", e.to_string()),
        };
        let r = guarded("accept publish", || self.session.accept_request(request_id))?;
        self.queue_results(r);
        info!(stream = %path, "Published");
        self.guard.start_publishing();
        self.permit.authorize();
        self.publishing = Some(Publishing {
            publisher,
            to_core: ToCore::new(),
        });
        Ok(())
    }

    async fn on_play(
        &mut self,
        request_id: u32,
        app: String,
        raw_name: String,
        stream_id: u32,
    ) -> Result<(), RtmpError> {
        let path = match self
            .authorize(Action::Play, request_id, app, &raw_name)
            .await?
        {
            Some(path) => path,
            None => return Ok(()),
        };
        let r = guarded("accept play", || self.session.accept_request(request_id))?;
        // rml_rtmp answers play with `|RtmpSampleAccess` and `onStatus` data messages on
        // chunk stream 3 (its only use of it); ffprobe would show them as phantom data
        // and subtitle tracks, so they are not sent. Nothing else uses chunk stream 3, so
        // leaving them out cannot break header compression.
        let r = r
            .into_iter()
            .filter(|res| !matches!(res, ServerSessionResult::OutboundResponse(p) if p.bytes.first().map(|b| b & 0x3F) == Some(3)))
            .collect();
        self.queue_results(r);
        info!(stream = %path, "Player started");
        self.permit.authorize();
        self.play_accepted = Some((path, stream_id));
        Ok(())
    }

    fn refuse(&mut self, request_id: u32, code: &str, reason: String) -> Result<(), RtmpError> {
        let r = guarded("reject", || {
            self.session.reject_request(request_id, code, &reason)
        })?;
        self.queue_results(r);
        self.closing = Some(RtmpError::Refused(reason));
        Ok(())
    }
}

/// Read buffer of a connection until it publishes.
const READ_BUF: usize = 2048;
/// Read buffer of a publishing connection.
const PUBLISH_READ_BUF: usize = 16 * 1024;

/// Bytes a client sends in the handshake (C0, C1, C2).
const HANDSHAKE_BYTES: u64 = 1 + 1536 + 1536;

/// Makes rml_rtmp's acknowledgement carry the cumulative byte count.
///
/// rml_rtmp's `ServerSession` acknowledges with the bytes received since its last
/// acknowledgement, where the specification (and clients that flow-control on
/// acknowledgements) expect the total received so far: such a client would stall
/// after two windows. The session emits the acknowledgement as the first result of
/// `handle_input`, a single chunk on chunk stream 2 whose last 4 bytes are the
/// sequence number; nothing else it emits there has that size (a ping response
/// carries 6 bytes). The sequence number is replaced with `total` (wrapping at 32 bits).
fn make_ack_cumulative(results: &mut [ServerSessionResult], total: u64) {
    let Some(ServerSessionResult::OutboundResponse(packet)) = results.first_mut() else {
        return;
    };
    let bytes = &mut packet.bytes;
    let Some(&first) = bytes.first() else { return };
    if first & 0x3F != 2 {
        return;
    }
    // Header sizes by chunk format (type 0..3), without and with an extended timestamp.
    let header = match first >> 6 {
        0 => 12,
        1 => 8,
        2 => 4,
        _ => 1,
    };
    let is_ack_shape = match first >> 6 {
        // Formats 0 and 1 carry the type id: 3 is Acknowledgement.
        0 | 1 => {
            bytes.get(7) == Some(&3) && (bytes.len() == header + 4 || bytes.len() == header + 8)
        }
        _ => bytes.len() == header + 4 || bytes.len() == header + 8,
    };
    if !is_ack_shape {
        return;
    }
    let n = bytes.len();
    if let Some(seq) = bytes.get_mut(n - 4..) {
        seq.copy_from_slice(&(total as u32).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack_packet(total_len: usize, first: u8, type_at_7: u8) -> ServerSessionResult {
        let mut bytes = vec![0u8; total_len];
        bytes[0] = first;
        if total_len > 7 {
            bytes[7] = type_at_7;
        }
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&2_500_000u32.to_be_bytes());
        ServerSessionResult::OutboundResponse(rml_rtmp::chunk_io::Packet {
            bytes,
            can_be_dropped: false,
        })
    }

    fn seq(r: &ServerSessionResult) -> u32 {
        match r {
            ServerSessionResult::OutboundResponse(p) => {
                u32::from_be_bytes(p.bytes[p.bytes.len() - 4..].try_into().unwrap())
            }
            _ => panic!("not a packet"),
        }
    }

    #[test]
    fn acknowledgements_become_cumulative() {
        // fmt 0, 1, 2, 3 on csid 2, with and without an extended timestamp.
        for (len, first) in [
            (16, 0x02),
            (20, 0x02),
            (12, 0x42),
            (16, 0x42),
            (8, 0x82),
            (12, 0x82),
            (5, 0xC2),
            (9, 0xC2),
        ] {
            let mut r = vec![ack_packet(len, first, 3)];
            make_ack_cumulative(&mut r, 7_500_000);
            assert_eq!(seq(&r[0]), 7_500_000, "len {len} first {first:#x}");
        }
        // Wraps at 32 bits like the protocol's counter.
        let mut r = vec![ack_packet(16, 0x02, 3)];
        make_ack_cumulative(&mut r, (1 << 32) + 5);
        assert_eq!(seq(&r[0]), 5);
    }

    #[test]
    fn other_packets_are_left_alone() {
        for (len, first, ty) in [
            (16, 0x03, 3),  // another chunk stream
            (18, 0x02, 4),  // ping response (6-byte user control), fmt 0
            (16, 0x02, 20), // fmt 0 but not type 3
            (10, 0x82, 0),  // ping response, fmt 2
            (7, 0xC2, 0),   // ping response, fmt 3
        ] {
            let mut r = vec![ack_packet(len, first, ty)];
            make_ack_cumulative(&mut r, 7_500_000);
            assert_eq!(seq(&r[0]), 2_500_000, "len {len} first {first:#x}");
        }
    }

    #[test]
    fn names_and_keys() {
        let (n, k, q) = split_name("studio?key=s3cr%3Dt&foo=bar");
        assert_eq!(n, "studio");
        assert_eq!(k.unwrap().expose(), "s3cr=t");
        assert_eq!(q, vec![("foo".to_string(), "bar".to_string())]);
        let (n, k, _) = split_name("abc-key");
        assert_eq!(n, "abc-key");
        assert!(k.is_none());
    }
}
