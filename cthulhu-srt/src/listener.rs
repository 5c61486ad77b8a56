//! The SRT listener: one UDP socket, one dispatcher task, one driver task per
//! connection.
//!
//! The dispatcher reads every datagram and routes it by source address:
//! connection requests (handshakes to socket id 0, and anything from a peer in
//! handshake) go to that peer's own srt-protocol `Listen` state machine;
//! everything else goes to the peer's connection driver through a bounded
//! queue (dropped when full, never waited on). Per-peer state is all there
//! is: no listener-wide encryption settings, so one connection's request can
//! never affect another. Conclusion requests are checked raw first
//! ([`handshake`](crate::handshake)); calls into srt-protocol are guarded, so a
//! panic drops that peer's state and the dispatcher keeps serving.
//!
//! Bounds: at most `max_pending_handshakes` peers in handshake (further
//! inductions are ignored), each for at most `handshake_timeout`; at most
//! `backlog` requests waiting for [`SrtListener::next`]; at most
//! `max_connections` open connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cthulhu_core::Secret;
use srt_protocol::connection::DuplexConnection;
use srt_protocol::packet::{Packet, ReceivePacketError};
use srt_protocol::protocol::pending_connection::listen::Listen;
use srt_protocol::protocol::pending_connection::{
    AccessControlResponse, ConnectionReject, ConnectionResult,
};
use srt_protocol::settings::KeySettings;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::{ConnParams, KeySize, ListenerConfig, passphrase};
use crate::connection::{self, Shared, SrtConnection};
use crate::error::SrtError;
use crate::guard::guarded;
use crate::handshake::{self, CONCLUSION, INDUCTION};
use crate::reject::Reject;
use crate::socket::bind_udp;
use crate::streamid::redact as redact_stream_id;

/// Housekeeping period of the dispatcher (timeouts, closed connections).
const TICK: Duration = Duration::from_millis(250);
/// Largest datagram read (anything longer is truncated and fails to parse).
const MAX_DATAGRAM: usize = 65_536;
/// Minimum time between two "handshake table full" warnings.
const FLOOD_WARN_EVERY: Duration = Duration::from_secs(10);

/// Counters of a listener, totals since it was bound.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Peers that started a handshake (induction) and got a handshake slot.
    pub handshakes: u64,
    /// Inductions ignored because the handshake table was full.
    pub handshakes_ignored: u64,
    /// Requests refused before the application saw them because they ask for
    /// something unsupported or are malformed (file mode, FEC, groups, ...).
    pub refused_unsupported: u64,
    /// Requests handed to [`SrtListener::next`].
    pub requests: u64,
    /// Requests refused after that (by the application, an encryption
    /// mismatch, a wrong passphrase, a full backlog, a timeout).
    pub refused: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Panics of srt-protocol contained (each dropped one peer).
    pub panics: u64,
}

#[derive(Debug, Default)]
struct Counters {
    handshakes: AtomicU64,
    handshakes_ignored: AtomicU64,
    refused_unsupported: AtomicU64,
    requests: AtomicU64,
    refused: AtomicU64,
    accepted: AtomicU64,
    panics: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ListenerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ListenerStats {
            handshakes: get(&self.handshakes),
            handshakes_ignored: get(&self.handshakes_ignored),
            refused_unsupported: get(&self.refused_unsupported),
            requests: get(&self.requests),
            refused: get(&self.refused),
            accepted: get(&self.accepted),
            panics: get(&self.panics),
        }
    }
}

/// An SRT listener. Connection requests arrive through [`next`](Self::next).
///
/// Dropping the listener stops accepting new connections; connections already
/// open keep working (the dispatcher task lives until the last one closes).
#[derive(Debug)]
#[must_use = "a listener accepts nothing unless `next` is called"]
pub struct SrtListener {
    local_addr: SocketAddr,
    incoming: mpsc::Receiver<Incoming>,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl SrtListener {
    /// Binds the UDP socket and starts the dispatcher.
    pub async fn bind(addr: SocketAddr, cfg: ListenerConfig) -> Result<SrtListener, SrtError> {
        cfg.validate()?;
        let socket = Arc::new(bind_udp(addr, cfg.udp_buffer_bytes)?);
        let local_addr = socket.local_addr()?;
        let (incoming_tx, incoming) = mpsc::channel(cfg.backlog);
        let (decisions_tx, decisions_rx) = mpsc::channel(cfg.max_pending_handshakes + cfg.backlog);
        let counters = Arc::new(Counters::default());
        let dispatcher = Dispatcher {
            socket,
            params: cfg.conn_params(),
            cfg,
            local_addr,
            pending: HashMap::new(),
            conns: HashMap::new(),
            incoming_tx,
            decisions_tx,
            next_id: 0,
            last_flood_warning: None,
            counters: counters.clone(),
        };
        let task = tokio::spawn(dispatcher.run(decisions_rx));
        info!(addr = %local_addr, "SRT listener bound");
        Ok(SrtListener {
            local_addr,
            incoming,
            task,
            counters,
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next connection request that completed the induction phase and
    /// passed the protocol checks. The caller decides: [`Incoming::accept`] or
    /// [`Incoming::reject`]. `None` only if the dispatcher stopped.
    pub async fn next(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }

    /// Current counters.
    pub fn stats(&self) -> ListenerStats {
        self.counters.snapshot()
    }

    /// True while the dispatcher task runs.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

/// A connection request waiting for the application's decision. Dropping it
/// undecided rejects it with [`Reject::Peer`]. Its `Debug` output redacts the
/// stream id.
#[must_use = "an undecided request is rejected when dropped"]
pub struct Incoming {
    peer: SocketAddr,
    stream_id: Option<String>,
    key_size: KeySize,
    encrypted: bool,
    id: u64,
    decisions: mpsc::Sender<Decision>,
    decided: bool,
}

impl Incoming {
    /// The caller's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The stream id as sent (may contain a key: never log it raw, see
    /// [`redact_stream_id`](crate::redact_stream_id)). `None` if absent or not
    /// valid UTF-8 of at most 512 bytes.
    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref()
    }

    /// The key length the caller asked for (`Unspecified` when unencrypted).
    pub fn key_size(&self) -> KeySize {
        self.key_size
    }

    /// True if the caller sent key material (it has a passphrase).
    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    /// Accepts with this stream's passphrase (`None`: unencrypted); the key
    /// length follows the caller's request (or must match
    /// [`ListenerConfig::key_size`] when set). Fails with
    /// [`SrtError::Refused`] if the encryption does not match (the caller is
    /// told [`Reject::Unsecure`] or, for a wrong passphrase,
    /// [`Reject::BadSecret`]), with [`SrtError::InvalidPassphrase`] for a
    /// passphrase SRT cannot use, and with [`SrtError::RequestExpired`] when the
    /// request timed out meanwhile.
    pub async fn accept(mut self, passphrase: Option<Secret>) -> Result<SrtConnection, SrtError> {
        self.decided = true;
        let (reply, result) = oneshot::channel();
        let decision = Decision::Accept {
            peer: self.peer,
            id: self.id,
            passphrase,
            reply,
        };
        self.decisions
            .send(decision)
            .await
            .map_err(|_| SrtError::Closed)?;
        result.await.unwrap_or(Err(SrtError::Closed))
    }

    /// Refuses the request, telling the caller `reason` (logged with the peer
    /// and the redacted stream id).
    pub fn reject(mut self, reason: Reject) {
        self.send_reject(reason);
    }

    fn send_reject(&mut self, reason: Reject) {
        self.decided = true;
        let decision = Decision::Reject {
            peer: self.peer,
            id: self.id,
            reason,
        };
        if self.decisions.try_send(decision).is_err() {
            debug!(peer = %self.peer, "Listener busy or gone; the request will time out instead");
        }
    }
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("peer", &self.peer)
            .field(
                "stream_id",
                &self.stream_id.as_deref().map(redact_stream_id),
            )
            .field("key_size", &self.key_size)
            .field("encrypted", &self.encrypted)
            .finish_non_exhaustive()
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.decided {
            self.send_reject(Reject::Peer);
        }
    }
}

/// The application's answer to an [`Incoming`].
enum Decision {
    Accept {
        peer: SocketAddr,
        id: u64,
        passphrase: Option<Secret>,
        reply: oneshot::Sender<Result<SrtConnection, SrtError>>,
    },
    Reject {
        peer: SocketAddr,
        id: u64,
        reason: Reject,
    },
}

/// A peer in handshake.
struct Pending {
    listen: Listen,
    started: Instant,
    id: u64,
    /// Set once the conclusion passed our checks.
    conclusion: Option<handshake::Conclusion>,
    /// The redacted stream id, once known (for logs).
    stream: Option<String>,
    /// True while an [`Incoming`] for it is out.
    awaiting: bool,
}

/// A peer with an open connection.
struct Open {
    inbound: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    /// Our conclusion response, resent if the caller repeats its conclusion
    /// (the response was lost).
    response: Bytes,
}

struct Dispatcher {
    socket: Arc<UdpSocket>,
    cfg: ListenerConfig,
    params: ConnParams,
    local_addr: SocketAddr,
    pending: HashMap<SocketAddr, Pending>,
    conns: HashMap<SocketAddr, Open>,
    incoming_tx: mpsc::Sender<Incoming>,
    decisions_tx: mpsc::Sender<Decision>,
    next_id: u64,
    last_flood_warning: Option<Instant>,
    counters: Arc<Counters>,
}

impl Dispatcher {
    async fn run(mut self, mut decisions: mpsc::Receiver<Decision>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let d = Bytes::copy_from_slice(&buf[..n]);
                        self.on_datagram(d, from, Instant::now());
                    }
                    // ICMP errors of earlier sends and the like: not fatal.
                    Err(e) => debug!(addr = %self.local_addr, error = %e, "SRT listener receive error"),
                },
                Some(d) = decisions.recv() => self.on_decision(d, Instant::now()),
                _ = tick.tick() => {
                    self.housekeeping(Instant::now());
                    if self.incoming_tx.is_closed() && self.conns.is_empty() && self.pending.is_empty() {
                        break;
                    }
                }
            }
        }
        info!(addr = %self.local_addr, "SRT listener stopped");
    }

    fn on_datagram(&mut self, d: Bytes, from: SocketAddr, now: Instant) {
        let Some(dest) = handshake::dest_sockid(&d) else {
            debug!(peer = %from, len = d.len(), "Runt datagram ignored");
            return;
        };
        if let Some(hs) = handshake::handshake_header(&d)
            && (dest == 0 || self.pending.contains_key(&from))
        {
            self.on_handshake(d, hs, from, now);
            return;
        }
        if let Some(open) = self.conns.get(&from) {
            match open.inbound.try_send(d) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    open.shared
                        .datagrams_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.conns.remove(&from);
                }
            }
        }
    }

    fn on_handshake(
        &mut self,
        d: Bytes,
        hs: handshake::HandshakeHeader,
        from: SocketAddr,
        now: Instant,
    ) {
        match hs.shake_type {
            INDUCTION if !self.pending.contains_key(&from) => {
                if self.pending.len() >= self.cfg.max_pending_handshakes {
                    Counters::bump(&self.counters.handshakes_ignored);
                    if self
                        .last_flood_warning
                        .is_none_or(|t| now.duration_since(t) >= FLOOD_WARN_EVERY)
                    {
                        self.last_flood_warning = Some(now);
                        warn!(
                            addr = %self.local_addr,
                            pending = self.pending.len(),
                            ignored_total = self.counters.handshakes_ignored.load(Ordering::Relaxed),
                            "SRT handshake table full; ignoring new connection requests"
                        );
                    }
                    return;
                }
                Counters::bump(&self.counters.handshakes);
                let listen = Listen::new(self.params.init_settings(None), true);
                self.next_id += 1;
                self.pending.insert(
                    from,
                    Pending {
                        listen,
                        started: now,
                        id: self.next_id,
                        conclusion: None,
                        stream: None,
                        awaiting: false,
                    },
                );
                self.feed(d, from, now);
            }
            CONCLUSION if hs.version == 5 && self.pending.contains_key(&from) => {
                let awaiting = self.pending.get(&from).is_some_and(|p| p.awaiting);
                if awaiting {
                    // The caller repeats its conclusion while the application decides.
                    return;
                }
                match handshake::inspect_conclusion(&d) {
                    Ok(c) => {
                        let packet = c.packet.clone();
                        if let Some(p) = self.pending.get_mut(&from) {
                            p.conclusion = Some(c);
                        }
                        self.feed(packet, from, now);
                    }
                    Err(unsupported) => {
                        Counters::bump(&self.counters.refused_unsupported);
                        if unsupported.reject == Reject::BadRequest {
                            // Malformed: garbage, not a caller worth an info line.
                            debug!(
                                peer = %from,
                                reason = %unsupported.reason,
                                "Malformed SRT conclusion refused"
                            );
                        } else {
                            info!(
                                peer = %from,
                                reject = %unsupported.reject,
                                reason = %unsupported.reason,
                                "SRT connection refused before the handshake completed"
                            );
                        }
                        self.send_raw_rejection(&d, unsupported.reject, from);
                        self.pending.remove(&from);
                    }
                }
            }
            CONCLUSION if !self.pending.contains_key(&from) => {
                // Our response got lost: the caller repeats its conclusion.
                if let Some(open) = self.conns.get(&from) {
                    let response = open.response.clone();
                    self.send(&response, from);
                }
            }
            _ if self.pending.contains_key(&from) => self.feed(d, from, now),
            _ => {}
        }
    }

    /// Gives a datagram to the peer's `Listen` and acts on the result.
    fn feed(&mut self, d: Bytes, from: SocketAddr, now: Instant) {
        let Some(p) = self.pending.get_mut(&from) else {
            return;
        };
        let listen = &mut p.listen;
        let result = guarded(from, "handling a handshake", || {
            let packet = Packet::parse(&mut &d[..], from.is_ipv6())
                .map(|p| (p, from))
                .map_err(ReceivePacketError::Parse);
            listen.handle_packet(now, packet)
        });
        let Some(result) = result else {
            Counters::bump(&self.counters.panics);
            self.send_raw_rejection(&d, Reject::InternalError, from);
            self.pending.remove(&from);
            return;
        };
        match result {
            ConnectionResult::SendPacket((packet, to)) => self.send_packet(&packet, to),
            ConnectionResult::RequestAccess(req) => {
                let stream_id = req.stream_id.map(|s| s.to_string());
                self.request_access(from, stream_id, now);
            }
            ConnectionResult::Reject(packet, reject) => {
                if let Some((packet, to)) = packet {
                    self.send_packet(&packet, to);
                }
                info!(peer = %from, reject = %reject, "SRT handshake rejected");
                self.pending.remove(&from);
            }
            ConnectionResult::NotHandled(e) => {
                debug!(peer = %from, error = %e, "SRT handshake packet not handled");
            }
            ConnectionResult::Connected(..) => {
                // Cannot happen with access control on; drop the peer.
                warn!(peer = %from, "SRT handshake completed without a decision; dropped");
                self.pending.remove(&from);
            }
            ConnectionResult::NoAction | ConnectionResult::Failure(_) => {}
        }
    }

    /// Hands a checked request to the application (or refuses it when full).
    fn request_access(&mut self, from: SocketAddr, stream_id: Option<String>, now: Instant) {
        let Some(p) = self.pending.get_mut(&from) else {
            return;
        };
        let (encrypted, key_size) = p
            .conclusion
            .as_ref()
            .map_or((false, KeySize::Unspecified), |c| (c.encrypted, c.key_size));
        p.stream = stream_id.as_deref().map(redact_stream_id);
        let id = p.id;
        if self.conns.len() >= self.cfg.max_connections {
            self.refuse(from, Reject::Overload, "too many open connections", now);
            return;
        }
        let incoming = Incoming {
            peer: from,
            stream_id,
            key_size,
            encrypted,
            id,
            decisions: self.decisions_tx.clone(),
            decided: false,
        };
        match self.incoming_tx.try_send(incoming) {
            Ok(()) => {
                Counters::bump(&self.counters.requests);
                if let Some(p) = self.pending.get_mut(&from) {
                    p.awaiting = true;
                }
            }
            Err(e) => {
                // Do not let the returned Incoming reject through the channel.
                let (mut incoming, reason, why) = match e {
                    mpsc::error::TrySendError::Full(i) => (i, Reject::Backlog, "backlog full"),
                    mpsc::error::TrySendError::Closed(i) => (i, Reject::Peer, "listener closed"),
                };
                incoming.decided = true;
                self.refuse(from, reason, why, now);
            }
        }
    }

    fn on_decision(&mut self, d: Decision, now: Instant) {
        match d {
            Decision::Reject { peer, id, reason } => {
                if self
                    .pending
                    .get(&peer)
                    .is_some_and(|p| p.id == id && p.awaiting)
                {
                    self.refuse(peer, reason, "rejected by the application", now);
                }
            }
            Decision::Accept {
                peer,
                id,
                passphrase,
                reply,
            } => {
                let result = self.accept(peer, id, passphrase, now);
                if let Err(Ok(conn)) = reply.send(result) {
                    // The accepting task went away: close the connection.
                    drop(conn);
                }
            }
        }
    }

    fn accept(
        &mut self,
        peer: SocketAddr,
        id: u64,
        secret: Option<Secret>,
        now: Instant,
    ) -> Result<SrtConnection, SrtError> {
        let Some(p) = self.pending.get(&peer).filter(|p| p.id == id && p.awaiting) else {
            return Err(SrtError::RequestExpired);
        };
        let (encrypted, key_size) = p
            .conclusion
            .as_ref()
            .map_or((false, KeySize::Unspecified), |c| (c.encrypted, c.key_size));
        let keys = match (encrypted, secret) {
            (false, None) => None,
            (true, None) => {
                return Err(self.refuse(
                    peer,
                    Reject::Unsecure,
                    "the caller sent a passphrase (key material) but the stream is not encrypted",
                    now,
                ));
            }
            (false, Some(_)) => {
                return Err(self.refuse(
                    peer,
                    Reject::Unsecure,
                    "the stream is encrypted but the caller sent no key material (no passphrase)",
                    now,
                ));
            }
            (true, Some(secret)) => {
                if let Some(required) = self.cfg.key_size
                    && required != key_size.bytes()
                {
                    let why = format!(
                        "key length mismatch: the caller uses {} bytes (pbkeylen), the listener requires {required}",
                        key_size.bytes()
                    );
                    return Err(self.refuse(peer, Reject::Unsecure, &why, now));
                }
                match passphrase(&secret) {
                    Ok(passphrase) => Some(KeySettings {
                        key_size: key_size.to_protocol(),
                        passphrase,
                    }),
                    Err(e) => {
                        self.refuse(
                            peer,
                            Reject::BadSecret,
                            "the stream's configured passphrase is not 10 to 79 bytes",
                            now,
                        );
                        return Err(e);
                    }
                }
            }
        };
        let Some(mut p) = self.pending.remove(&peer) else {
            return Err(SrtError::RequestExpired);
        };
        let listen = &mut p.listen;
        let result = guarded(peer, "accepting a connection", || {
            listen.handle_access_control_response(now, AccessControlResponse::Accepted(keys))
        });
        let Some(result) = result else {
            Counters::bump(&self.counters.panics);
            self.send_listen_rejection(&mut p, Reject::InternalError, peer, now);
            return Err(SrtError::Internal);
        };
        match result {
            ConnectionResult::Connected(response, conn) => {
                let response = match response {
                    Some((packet, _)) => {
                        let mut buf = BytesMut::new();
                        if guarded(peer, "serialising a handshake", || {
                            packet.serialize(&mut buf)
                        })
                        .is_none()
                        {
                            Counters::bump(&self.counters.panics);
                            return Err(SrtError::Internal);
                        }
                        buf.freeze()
                    }
                    None => Bytes::new(),
                };
                let Some(duplex) = guarded(peer, "creating a connection", || {
                    DuplexConnection::new(conn)
                }) else {
                    Counters::bump(&self.counters.panics);
                    return Err(SrtError::Internal);
                };
                Counters::bump(&self.counters.accepted);
                self.send(&response, peer);
                let shared = Arc::new(Shared::default());
                let (inbound_tx, inbound_rx) = mpsc::channel(self.params.inbound_queue_packets);
                let conn = connection::spawn(
                    duplex,
                    &self.params,
                    self.socket.clone(),
                    inbound_rx,
                    shared.clone(),
                );
                info!(
                    peer = %peer,
                    stream = ?p.stream,
                    encrypted,
                    key_bytes = key_size.bytes(),
                    latency_ms = u64::try_from(conn.latency().as_millis()).unwrap_or(u64::MAX),
                    "SRT connection accepted"
                );
                // A previous connection from the same address is dropped here
                // (its driver sees its queue close and winds down).
                self.conns.insert(
                    peer,
                    Open {
                        inbound: inbound_tx,
                        shared,
                        response,
                    },
                );
                Ok(conn)
            }
            ConnectionResult::Reject(packet, reject) => {
                if let Some((packet, to)) = packet {
                    self.send_packet(&packet, to);
                }
                let reason = reject_reason(&reject);
                let why = if reason == Reject::BadSecret {
                    "wrong passphrase"
                } else {
                    "handshake refused"
                };
                info!(peer = %peer, stream = ?p.stream, reject = %reason, reason = why, "SRT connection refused");
                Counters::bump(&self.counters.refused);
                Err(SrtError::Refused(reason))
            }
            other => {
                warn!(peer = %peer, result = ?other, "Unexpected SRT handshake result; dropped");
                Err(SrtError::Internal)
            }
        }
    }

    /// Rejects a pending request through its `Listen`, logs why and forgets
    /// it. Returns the error for the accepting side.
    fn refuse(&mut self, peer: SocketAddr, reason: Reject, why: &str, now: Instant) -> SrtError {
        if let Some(mut p) = self.pending.remove(&peer) {
            Counters::bump(&self.counters.refused);
            info!(peer = %peer, stream = ?p.stream, reject = %reason, reason = why, "SRT connection refused");
            self.send_listen_rejection(&mut p, reason, peer, now);
        }
        SrtError::Refused(reason)
    }

    fn send_listen_rejection(
        &mut self,
        p: &mut Pending,
        reason: Reject,
        peer: SocketAddr,
        now: Instant,
    ) {
        let listen = &mut p.listen;
        let result = guarded(peer, "rejecting a connection", || {
            listen.handle_access_control_response(
                now,
                AccessControlResponse::Rejected(reason.to_protocol()),
            )
        });
        if let Some(ConnectionResult::Reject(Some((packet, to)), _)) = result {
            self.send_packet(&packet, to);
        }
    }

    fn send_raw_rejection(&self, request: &[u8], reason: Reject, to: SocketAddr) {
        if let Some(packet) = handshake::rejection(request, reason, rand::random::<u32>().max(1)) {
            self.send(&packet, to);
        }
    }

    fn send_packet(&self, packet: &Packet, to: SocketAddr) {
        let mut buf = BytesMut::new();
        if guarded(to, "serialising a handshake", || packet.serialize(&mut buf)).is_some() {
            self.send(&buf, to);
        }
    }

    /// Sends without waiting: the dispatcher never blocks on a full socket
    /// buffer (handshake packets are retransmitted by the caller).
    fn send(&self, d: &[u8], to: SocketAddr) {
        if d.is_empty() {
            return;
        }
        if let Err(e) = self.socket.try_send_to(d, to) {
            debug!(peer = %to, error = %e, "SRT handshake send failed");
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let timeout = self.cfg.handshake_timeout;
        let expired: Vec<SocketAddr> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.started) >= timeout)
            .map(|(a, _)| *a)
            .collect();
        for peer in expired {
            if let Some(mut p) = self.pending.remove(&peer) {
                if p.awaiting {
                    Counters::bump(&self.counters.refused);
                    info!(peer = %peer, stream = ?p.stream, "SRT connection request timed out waiting for a decision");
                    self.send_listen_rejection(&mut p, Reject::Timeout, peer, now);
                } else {
                    debug!(peer = %peer, "SRT handshake timed out");
                }
            }
        }
        self.conns.retain(|_, open| !open.inbound.is_closed());
    }
}

/// The reason inside srt-protocol's rejection.
fn reject_reason(r: &ConnectionReject) -> Reject {
    match r {
        ConnectionReject::Rejecting(r) | ConnectionReject::Rejected(r) => Reject::from_protocol(*r),
    }
}
