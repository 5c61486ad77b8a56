//! The SRT listener: one UDP socket, one dispatcher task, one driver task per
//! connection.
//!
//! The dispatcher reads every datagram and routes it by source address:
//! connection requests (handshakes to socket id 0, conclusions from peers
//! without a connection) are handled by the dispatcher itself; everything else
//! goes to the peer's connection driver through a bounded queue (dropped when
//! full, never waited on).
//!
//! SYN cookies: no state is kept for a peer before it proves that it receives
//! at its address. An induction is answered statelessly
//! ([`handshake::induction_response`]) with a cookie that is a keyed hash
//! (SipHash with a random per-listener key) of the peer's address and a coarse
//! clock (periods of `handshake_timeout`, at least 1 s; the current and the
//! previous period are valid). A conclusion without a valid cookie is dropped.
//! Only for a valid one is srt-protocol's `Listen` state machine created: it is
//! given a synthetic induction made from the conclusion (srt-protocol's `Listen`
//! has no API to start from a conclusion, and it checks the conclusion against
//! its own cookie, which we put in before handing the conclusion over), then the
//! conclusion. Our conclusion response carries the caller's cookie again.
//!
//! Per-peer state is all there is: no listener-wide encryption settings, so one
//! connection's request can never affect another. Conclusion requests are
//! checked raw first ([`handshake`](crate::handshake)); calls into srt-protocol
//! are guarded, so a panic drops that peer's state and the dispatcher keeps
//! serving.
//!
//! Bounds: at most `max_pending_handshakes` requests with a valid cookie waiting
//! for a decision (further ones are ignored; the caller repeats its conclusion),
//! each for at most `handshake_timeout`; at most `backlog` requests waiting for
//! [`SrtListener::next`]; at most `max_connections` open connections, and
//! `max_connections_per_ip` from one address. Refusals
//! (runts, bad cookies, wrong versions, malformed or unsupported requests,
//! full tables, timeouts, the application's refusals) go through one
//! [`RefusalLog`] per listener: a flood costs a handful of log lines per reason
//! every 10 s.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cthulhu_core::{RefusalLog, Secret};
use srt_protocol::connection::DuplexConnection;
use srt_protocol::packet::{
    ControlPacket, ControlTypes, HandshakeControlInfo, HandshakeVsInfo, Packet, ShakeType,
    SocketId, SocketType,
};
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
/// What the listener's [`RefusalLog`] calls the things it refuses.
const REFUSED: &str = "SRT handshakes";

/// Counters of a listener, totals since it was bound.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Inductions answered (statelessly, with a cookie).
    pub inductions: u64,
    /// Conclusions dropped because their cookie was missing, wrong or expired.
    pub bad_cookies: u64,
    /// Requests with a valid cookie that got a handshake slot.
    pub handshakes: u64,
    /// Requests with a valid cookie ignored because the handshake table was
    /// full (`max_pending_handshakes` requests waiting for a decision).
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
    /// Handshake packets not sent because the socket buffer was full.
    pub send_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    inductions: AtomicU64,
    bad_cookies: AtomicU64,
    handshakes: AtomicU64,
    handshakes_ignored: AtomicU64,
    refused_unsupported: AtomicU64,
    requests: AtomicU64,
    refused: AtomicU64,
    accepted: AtomicU64,
    panics: AtomicU64,
    send_failures: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ListenerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ListenerStats {
            inductions: get(&self.inductions),
            bad_cookies: get(&self.bad_cookies),
            handshakes: get(&self.handshakes),
            handshakes_ignored: get(&self.handshakes_ignored),
            refused_unsupported: get(&self.refused_unsupported),
            requests: get(&self.requests),
            refused: get(&self.refused),
            accepted: get(&self.accepted),
            panics: get(&self.panics),
            send_failures: get(&self.send_failures),
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
    refusals: RefusalLog,
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
        let refusals = RefusalLog::new(REFUSED);
        let dispatcher = Dispatcher {
            socket,
            params: cfg.conn_params(),
            cookies: Cookies::new(cfg.handshake_timeout, Instant::now()),
            cfg,
            local_addr,
            pending: HashMap::new(),
            conns: HashMap::new(),
            incoming_tx,
            decisions_tx,
            next_id: 0,
            counters: counters.clone(),
            refusals: refusals.clone(),
            recv_errors: 0,
        };
        let task = tokio::spawn(dispatcher.run(decisions_rx));
        info!(addr = %local_addr, "SRT listener bound");
        Ok(SrtListener {
            local_addr,
            incoming,
            task,
            counters,
            refusals,
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

    /// The listener's log of refused handshakes and requests (rate-limited and
    /// summarised per reason); [`RefusalLog::totals`] gives the counts.
    pub fn refusals(&self) -> &RefusalLog {
        &self.refusals
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
    refusals: RefusalLog,
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
    /// and the redacted stream id, through the listener's [`RefusalLog`]).
    pub fn reject(mut self, reason: Reject) {
        self.send_reject(reason, false);
    }

    /// Refuses the request like [`reject`](Self::reject), but logs it through
    /// the listener's [`RefusalLog`] with the application's own reason (`why`,
    /// short, e.g. "wrong key") and `detail` (a whole message, which must not
    /// contain the stream id unredacted, keys or passphrases).
    pub fn refuse(mut self, reason: Reject, why: &'static str, detail: std::fmt::Arguments<'_>) {
        self.refusals.refuse(self.peer.ip(), why, detail);
        self.send_reject(reason, true);
    }

    fn send_reject(&mut self, reason: Reject, logged: bool) {
        self.decided = true;
        let decision = Decision::Reject {
            peer: self.peer,
            id: self.id,
            reason,
            logged,
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
            self.send_reject(Reject::Peer, false);
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
        /// The application logged the refusal already.
        logged: bool,
    },
}

/// A peer whose conclusion (with a valid cookie) waits for the application's
/// decision.
struct Pending {
    listen: Listen,
    started: Instant,
    id: u64,
    /// What the raw checks learned from the conclusion.
    conclusion: handshake::Conclusion,
    /// The caller's socket id and cookie (our conclusion response carries it).
    caller_sockid: u32,
    cookie: i32,
    /// The redacted stream id, once known (for logs).
    stream: Option<String>,
    /// True while an [`Incoming`] for it is out.
    awaiting: bool,
}

/// A peer with an open connection.
struct Open {
    inbound: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    /// The caller's socket id: a conclusion with another one is a new request.
    caller_sockid: u32,
    /// Our conclusion response, resent if the caller repeats its conclusion
    /// (the response was lost).
    response: Bytes,
}

/// SYN cookies: a keyed hash of the peer's address and a coarse clock, so that
/// an induction needs no state.
struct Cookies {
    key: RandomState,
    epoch: Instant,
    period: Duration,
}

impl Cookies {
    fn new(handshake_timeout: Duration, epoch: Instant) -> Self {
        Self {
            key: RandomState::new(),
            epoch,
            period: handshake_timeout.max(Duration::from_secs(1)),
        }
    }

    fn period_at(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(elapsed / self.period.as_millis()).unwrap_or(u64::MAX)
    }

    /// The cookie and our socket id for `peer` in period `period`.
    fn make(&self, peer: SocketAddr, period: u64) -> (i32, u32) {
        let h = self.key.hash_one((peer, period));
        (h as u32 as i32, ((h >> 32) as u32).max(1))
    }

    /// The period whose cookie `cookie` is, if it is valid now (issued in this
    /// period or the previous one).
    fn check(&self, peer: SocketAddr, cookie: i32, now: Instant) -> Option<u64> {
        let current = self.period_at(now);
        [Some(current), current.checked_sub(1)]
            .into_iter()
            .flatten()
            .find(|p| self.make(peer, *p).0 == cookie)
    }
}

struct Dispatcher {
    socket: Arc<UdpSocket>,
    cfg: ListenerConfig,
    params: ConnParams,
    cookies: Cookies,
    local_addr: SocketAddr,
    pending: HashMap<SocketAddr, Pending>,
    conns: HashMap<SocketAddr, Open>,
    incoming_tx: mpsc::Sender<Incoming>,
    decisions_tx: mpsc::Sender<Decision>,
    next_id: u64,
    counters: Arc<Counters>,
    refusals: RefusalLog,
    recv_errors: u64,
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
                    Err(e) => {
                        self.recv_errors += 1;
                        if self.recv_errors.is_power_of_two() {
                            debug!(addr = %self.local_addr, error = %e, count = self.recv_errors, "SRT listener receive error");
                        }
                    }
                },
                Some(d) = decisions.recv() => self.on_decision(d, Instant::now()),
                _ = tick.tick() => {
                    self.housekeeping(Instant::now());
                    self.refusals.flush();
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
            self.refusals.refuse(
                from.ip(),
                "runt datagram",
                format_args!(
                    "SRT datagram of {} bytes from {from} ignored (shorter than an SRT header)",
                    d.len()
                ),
            );
            return;
        };
        if let Some(hs) = handshake::handshake_header(&d) {
            let open = self.conns.contains_key(&from);
            // Requests go to socket id 0; a conclusion may name the socket id
            // of our induction response.
            if dest == 0
                || self.pending.contains_key(&from)
                || (!open && hs.shake_type == CONCLUSION)
            {
                self.on_handshake(d, hs, from, now);
                return;
            }
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
        // Anything else (the tail of a closed connection, garbage) is dropped
        // without a word: there is nobody to tell.
    }

    fn on_handshake(
        &mut self,
        d: Bytes,
        hs: handshake::HandshakeHeader,
        from: SocketAddr,
        now: Instant,
    ) {
        match hs.shake_type {
            INDUCTION => self.on_induction(&d, hs, from, now),
            CONCLUSION => self.on_conclusion(d, hs, from, now),
            _ if self.pending.contains_key(&from) || self.conns.contains_key(&from) => {}
            other => self.refusals.refuse(
                from.ip(),
                "unexpected handshake type",
                format_args!(
                    "SRT handshake of type {other} from {from} ignored (only caller-listener handshakes are supported)"
                ),
            ),
        }
    }

    /// Answers an induction with a cookie, keeping nothing.
    fn on_induction(
        &mut self,
        d: &[u8],
        hs: handshake::HandshakeHeader,
        from: SocketAddr,
        now: Instant,
    ) {
        // libsrt sends version 4 here, HSv5 callers may send 5.
        if hs.version != 4 && hs.version != 5 {
            self.refusals.refuse(
                from.ip(),
                "bad version",
                format_args!(
                    "SRT induction with handshake version {} from {from} ignored",
                    hs.version
                ),
            );
            return;
        }
        let (cookie, sockid) = self.cookies.make(from, self.cookies.period_at(now));
        if let Some(response) = handshake::induction_response(d, cookie, sockid, from.is_ipv6()) {
            Counters::bump(&self.counters.inductions);
            self.send(&response, from);
        }
    }

    fn on_conclusion(
        &mut self,
        d: Bytes,
        hs: handshake::HandshakeHeader,
        from: SocketAddr,
        now: Instant,
    ) {
        if self.pending.contains_key(&from) {
            // The caller repeats its conclusion while the application decides.
            return;
        }
        if let Some(open) = self.conns.get(&from)
            && open.caller_sockid == hs.socket_id
        {
            // Our response got lost: the caller repeats its conclusion.
            let response = open.response.clone();
            self.send(&response, from);
            return;
        }
        let period = self.cookies.check(from, hs.cookie, now);
        if hs.version != 5 {
            // Only a caller that proved its address is told why.
            if period.is_some() {
                self.send_raw_rejection(&d, Reject::Version, from);
            }
            self.refusals.refuse(
                from.ip(),
                "bad version",
                format_args!(
                    "SRT conclusion with handshake version {} from {from} refused (only HSv5 callers are supported)",
                    hs.version
                ),
            );
            return;
        }
        let Some(period) = period else {
            Counters::bump(&self.counters.bad_cookies);
            self.refusals.refuse(
                from.ip(),
                "bad cookie",
                format_args!(
                    "SRT conclusion from {from} without a valid cookie ignored (no induction from this address, or a forged or expired cookie)"
                ),
            );
            return;
        };
        let conclusion = match handshake::inspect_conclusion(&d) {
            Ok(c) => c,
            Err(unsupported) => {
                Counters::bump(&self.counters.refused_unsupported);
                self.refusals.refuse(
                    from.ip(),
                    unsupported_reason(unsupported.reject),
                    format_args!(
                        "SRT connection from {from} refused before the handshake completed: {} (reject {})",
                        unsupported.reason, unsupported.reject
                    ),
                );
                self.send_raw_rejection(&d, unsupported.reject, from);
                return;
            }
        };
        if self.pending.len() >= self.cfg.max_pending_handshakes {
            Counters::bump(&self.counters.handshakes_ignored);
            self.refusals.refuse(
                from.ip(),
                "handshake table full",
                format_args!(
                    "SRT connection request from {from} ignored: {} requests wait for a decision (max_pending_handshakes); the caller will repeat it",
                    self.pending.len()
                ),
            );
            return;
        }
        Counters::bump(&self.counters.handshakes);
        let mut settings = self.params.init_settings(None);
        settings.local_sockid = SocketId(self.cookies.make(from, period).1);
        let mut listen = Listen::new(settings, true);
        let packet = conclusion.packet.clone();
        let replayed = guarded(from, "handling a handshake", || {
            replay_conclusion(&mut listen, &packet, from, now)
        });
        let result = match replayed {
            None => {
                Counters::bump(&self.counters.panics);
                self.send_raw_rejection(&d, Reject::InternalError, from);
                return;
            }
            Some(Some(r)) => r,
            Some(None) => {
                self.refusals.refuse(
                    from.ip(),
                    "malformed handshake",
                    format_args!(
                        "SRT conclusion from {from} refused: srt-protocol cannot parse it"
                    ),
                );
                self.send_raw_rejection(&d, Reject::BadRequest, from);
                return;
            }
        };
        match result {
            ConnectionResult::RequestAccess(req) => {
                self.next_id += 1;
                self.pending.insert(
                    from,
                    Pending {
                        listen,
                        started: now,
                        id: self.next_id,
                        conclusion,
                        caller_sockid: hs.socket_id,
                        cookie: hs.cookie,
                        stream: None,
                        awaiting: false,
                    },
                );
                let stream_id = req.stream_id.map(|s| s.to_string());
                self.request_access(from, stream_id, now);
            }
            ConnectionResult::Reject(packet, reject) => {
                if let Some((packet, to)) = packet {
                    self.send_packet(&packet, to);
                }
                let reason = reject_reason(&reject);
                self.refusals.refuse(
                    from.ip(),
                    "handshake refused",
                    format_args!("SRT handshake from {from} refused (reject {reason})"),
                );
            }
            ConnectionResult::NotHandled(e) => {
                self.refusals.refuse(
                    from.ip(),
                    "malformed handshake",
                    format_args!(
                        "SRT conclusion from {from} refused: {}",
                        handshake::connect_error_kind(&e)
                    ),
                );
                self.send_raw_rejection(&d, Reject::BadRequest, from);
            }
            ConnectionResult::Connected(..) => {
                // Cannot happen with access control on; drop the peer.
                warn!(peer = %from, "SRT handshake completed without a decision; dropped");
            }
            ConnectionResult::SendPacket(_)
            | ConnectionResult::NoAction
            | ConnectionResult::Failure(_) => {}
        }
    }

    /// Hands a checked request to the application (or refuses it when full).
    fn request_access(&mut self, from: SocketAddr, stream_id: Option<String>, now: Instant) {
        let Some(p) = self.pending.get_mut(&from) else {
            return;
        };
        let (encrypted, key_size) = (p.conclusion.encrypted, p.conclusion.key_size);
        p.stream = stream_id.as_deref().map(redact_stream_id);
        let id = p.id;
        if self.conns.len() >= self.cfg.max_connections {
            self.refuse(
                from,
                Reject::Overload,
                "too many open connections",
                format_args!(
                    "{} connections are open (max_connections)",
                    self.conns.len()
                ),
                now,
            );
            return;
        }
        let from_ip = self.conns.keys().filter(|a| a.ip() == from.ip()).count();
        let per_ip = self.cfg.max_connections_per_ip;
        if per_ip > 0 && from_ip >= per_ip {
            self.refuse(
                from,
                Reject::Overload,
                "too many connections from one address",
                format_args!(
                    "{from_ip} connections are open from {} (max_connections_per_ip)",
                    from.ip()
                ),
                now,
            );
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
            refusals: self.refusals.clone(),
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
                self.refuse(from, reason, why, format_args!("{why}"), now);
            }
        }
    }

    fn on_decision(&mut self, d: Decision, now: Instant) {
        match d {
            Decision::Reject {
                peer,
                id,
                reason,
                logged,
            } => {
                if self
                    .pending
                    .get(&peer)
                    .is_some_and(|p| p.id == id && p.awaiting)
                {
                    if logged {
                        self.refuse_quietly(peer, reason, now);
                    } else {
                        self.refuse(
                            peer,
                            reason,
                            "rejected by the application",
                            format_args!("rejected by the application"),
                            now,
                        );
                    }
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
        let (encrypted, key_size) = (p.conclusion.encrypted, p.conclusion.key_size);
        let keys = match (encrypted, secret) {
            (false, None) => None,
            (true, None) => {
                return Err(self.refuse(
                    peer,
                    Reject::Unsecure,
                    "encryption mismatch",
                    format_args!(
                        "the caller sent a passphrase (key material) but the stream is not encrypted"
                    ),
                    now,
                ));
            }
            (false, Some(_)) => {
                return Err(self.refuse(
                    peer,
                    Reject::Unsecure,
                    "encryption mismatch",
                    format_args!(
                        "the stream is encrypted but the caller sent no key material (no passphrase)"
                    ),
                    now,
                ));
            }
            (true, Some(secret)) => {
                if let Some(required) = self.cfg.key_size
                    && required != key_size.bytes()
                {
                    return Err(self.refuse(
                        peer,
                        Reject::Unsecure,
                        "key length mismatch",
                        format_args!(
                            "key length mismatch: the caller uses {} bytes (pbkeylen), the listener requires {required}",
                            key_size.bytes()
                        ),
                        now,
                    ));
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
                            "invalid configured passphrase",
                            format_args!(
                                "the stream's configured passphrase is not 10 to 79 bytes"
                            ),
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
                        // srt-protocol answered with its own cookie; the caller's is ours.
                        handshake::set_cookie(&mut buf, p.cookie);
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
                        caller_sockid: p.caller_sockid,
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
                self.refusals.refuse(
                    peer.ip(),
                    why,
                    format_args!(
                        "SRT connection refused: {why} (peer {peer}, stream {:?}, reject {reason})",
                        p.stream.as_deref().unwrap_or("none")
                    ),
                );
                Counters::bump(&self.counters.refused);
                Err(SrtError::Refused(reason))
            }
            other => {
                warn!(peer = %peer, result = result_kind(&other), "Unexpected SRT handshake result; dropped");
                Err(SrtError::Internal)
            }
        }
    }

    /// Rejects a pending request through its `Listen`, logs why (through the
    /// refusal log) and forgets it. Returns the error for the accepting side.
    fn refuse(
        &mut self,
        peer: SocketAddr,
        reason: Reject,
        why: &'static str,
        detail: std::fmt::Arguments<'_>,
        now: Instant,
    ) -> SrtError {
        if let Some(p) = self.pending.get(&peer) {
            self.refusals.refuse(
                peer.ip(),
                why,
                format_args!(
                    "SRT connection refused: {detail} (peer {peer}, stream {:?}, reject {reason})",
                    p.stream.as_deref().unwrap_or("none")
                ),
            );
        }
        self.refuse_quietly(peer, reason, now)
    }

    /// [`refuse`](Self::refuse) without the log line.
    fn refuse_quietly(&mut self, peer: SocketAddr, reason: Reject, now: Instant) -> SrtError {
        if let Some(mut p) = self.pending.remove(&peer) {
            Counters::bump(&self.counters.refused);
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
            let n = self.counters.send_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                debug!(peer = %to, error = %e, count = n, "SRT handshake send failed");
            }
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
                Counters::bump(&self.counters.refused);
                self.refusals.refuse(
                    peer.ip(),
                    "timed out waiting for a decision",
                    format_args!(
                        "SRT connection request from {peer} timed out waiting for a decision (stream {:?})",
                        p.stream.as_deref().unwrap_or("none")
                    ),
                );
                self.send_listen_rejection(&mut p, Reject::Timeout, peer, now);
            }
        }
        self.conns.retain(|_, open| !open.inbound.is_closed());
    }
}

/// Gives a checked conclusion to a fresh `Listen`: first a synthetic induction
/// made from it (srt-protocol starts only from an induction), then the
/// conclusion itself with the cookie the `Listen` chose (ours was checked
/// already). `None` if srt-protocol cannot parse the conclusion (or did not
/// answer the induction).
fn replay_conclusion(
    listen: &mut Listen,
    packet: &[u8],
    from: SocketAddr,
    now: Instant,
) -> Option<ConnectionResult> {
    let Ok(Packet::Control(mut conclusion)) = Packet::parse(&mut &packet[..], from.is_ipv6())
    else {
        return None;
    };
    let ControlTypes::Handshake(shake) = &conclusion.control_type else {
        return None;
    };
    let induction = Packet::Control(ControlPacket {
        timestamp: conclusion.timestamp,
        dest_sockid: SocketId(0),
        control_type: ControlTypes::Handshake(HandshakeControlInfo {
            shake_type: ShakeType::Induction,
            syn_cookie: 0,
            info: HandshakeVsInfo::V4(SocketType::Datagram),
            ..shake.clone()
        }),
    });
    let cookie = match listen.handle_packet(now, Ok((induction, from))) {
        ConnectionResult::SendPacket((Packet::Control(response), _)) => match response.control_type
        {
            ControlTypes::Handshake(r) => r.syn_cookie,
            _ => return None,
        },
        _ => return None,
    };
    if let ControlTypes::Handshake(shake) = &mut conclusion.control_type {
        shake.syn_cookie = cookie;
    }
    Some(listen.handle_packet(now, Ok((Packet::Control(conclusion), from))))
}

/// The refusal log's reason for a request the raw checks refuse.
fn unsupported_reason(r: Reject) -> &'static str {
    match r {
        Reject::BadRequest => "malformed handshake",
        Reject::Congestion | Reject::MessageApi => "not live mode",
        Reject::Filter => "packet filter requested",
        Reject::Group => "socket group requested",
        Reject::Version => "no HSv5 handshake extension",
        Reject::Unsecure => "invalid key material",
        _ => "unsupported request",
    }
}

/// The name of a handshake result (its `Debug` would show the stream id).
fn result_kind(r: &ConnectionResult) -> &'static str {
    match r {
        ConnectionResult::NotHandled(_) => "not handled",
        ConnectionResult::Reject(..) => "reject",
        ConnectionResult::SendPacket(_) => "send packet",
        ConnectionResult::Connected(..) => "connected",
        ConnectionResult::NoAction => "no action",
        ConnectionResult::RequestAccess(_) => "request access",
        ConnectionResult::Failure(_) => "failure",
    }
}

/// The reason inside srt-protocol's rejection.
fn reject_reason(r: &ConnectionReject) -> Reject {
    match r {
        ConnectionReject::Rejecting(r) | ConnectionReject::Rejected(r) => Reject::from_protocol(*r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use srt_protocol::packet::SeqNumber;
    use srt_protocol::protocol::pending_connection::connect::Connect;
    use srt_protocol::settings::ConnInitSettings;

    fn serialize(p: &Packet) -> Vec<u8> {
        let mut b = BytesMut::new();
        p.serialize(&mut b);
        b.to_vec()
    }

    async fn recv(socket: &UdpSocket) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("no answer from the listener")
            .unwrap();
        buf.truncate(n);
        buf
    }

    /// srt-protocol's caller up to its conclusion: returns the caller, the
    /// cookie of the induction response and the conclusion (sent if `send`).
    async fn induction_and_conclusion(
        socket: &UdpSocket,
        to: SocketAddr,
        stream_id: &str,
        send: bool,
    ) -> (Connect, i32, Vec<u8>) {
        let mut connect = Connect::new(
            to,
            [127, 0, 0, 1].into(),
            ConnInitSettings::default(),
            Some(stream_id.to_owned()),
            SeqNumber::new_truncate(77),
        );
        let ConnectionResult::SendPacket((induction, _)) = connect.handle_tick(Instant::now())
        else {
            panic!("no induction")
        };
        socket.send_to(&serialize(&induction), to).await.unwrap();
        let response = recv(socket).await;
        let cookie = handshake::handshake_header(&response).unwrap().cookie;
        let parsed = Packet::parse(&mut &response[..], false).unwrap();
        let ConnectionResult::SendPacket((conclusion, _)) =
            connect.handle_packet(Ok((parsed, to)), Instant::now())
        else {
            panic!("no conclusion")
        };
        let conclusion = serialize(&conclusion);
        if send {
            socket.send_to(&conclusion, to).await.unwrap();
        }
        (connect, cookie, conclusion)
    }

    #[test]
    fn cookies_are_keyed_per_address_and_expire() {
        let t0 = Instant::now();
        let c = Cookies::new(Duration::from_secs(5), t0);
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:5001".parse().unwrap();
        let (cookie, sockid) = c.make(a, c.period_at(t0));
        assert_ne!(sockid, 0);
        assert_eq!(c.check(a, cookie, t0), Some(0));
        assert_eq!(
            c.check(a, cookie, t0 + Duration::from_millis(9_999)),
            Some(0)
        );
        assert_eq!(c.check(a, cookie, t0 + Duration::from_secs(10)), None);
        assert_eq!(c.check(b, cookie, t0), None);
        assert_eq!(c.check(a, cookie.wrapping_add(1), t0), None);
        // Another listener has another key.
        let other = Cookies::new(Duration::from_secs(5), t0);
        assert_ne!(other.make(a, 0).0, cookie);
        // Short handshake timeouts still give callers a second.
        assert_eq!(
            Cookies::new(Duration::from_millis(10), t0).period,
            Duration::from_secs(1)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inductions_keep_no_state_and_only_a_valid_cookie_makes_a_request() {
        let cfg = ListenerConfig {
            max_pending_handshakes: 2,
            ..Default::default()
        };
        let mut l = SrtListener::bind("127.0.0.1:0".parse().unwrap(), cfg)
            .await
            .unwrap();
        let addr = l.local_addr();

        // Inductions from 50 ports: each answered, none kept.
        let mut sockets = Vec::new();
        for _ in 0..50 {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut d = vec![0u8; 64];
            d[0] = 0x80;
            d[16..20].copy_from_slice(&4u32.to_be_bytes());
            d[22..24].copy_from_slice(&2u16.to_be_bytes());
            d[36..40].copy_from_slice(&INDUCTION.to_be_bytes());
            d[40..44].copy_from_slice(&7u32.to_be_bytes());
            s.send_to(&d, addr).await.unwrap();
            let r = recv(&s).await;
            let h = handshake::handshake_header(&r).unwrap();
            assert_eq!((h.shake_type, h.version, h.dest_sockid), (INDUCTION, 5, 7));
            sockets.push(s);
        }

        // A conclusion with a forged cookie is ignored; so is the real cookie
        // from another address.
        let forger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (_, cookie, mut conclusion) = induction_and_conclusion(&forger, addr, "x", false).await;
        handshake::set_cookie(&mut conclusion, cookie.wrapping_add(1));
        forger.send_to(&conclusion, addr).await.unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        handshake::set_cookie(&mut conclusion, cookie);
        other.send_to(&conclusion, addr).await.unwrap();

        // A real caller: its request reaches the application, and our
        // conclusion response carries its cookie.
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (mut connect, cookie, _) = induction_and_conclusion(&caller, addr, "real", true).await;
        let inc = tokio::time::timeout(Duration::from_secs(5), l.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(inc.stream_id(), Some("real"));
        let accept = tokio::spawn(inc.accept(None));
        let response = recv(&caller).await;
        let h = handshake::handshake_header(&response).unwrap();
        assert_eq!((h.shake_type, h.cookie), (CONCLUSION, cookie));
        let parsed = Packet::parse(&mut &response[..], false).unwrap();
        assert!(matches!(
            connect.handle_packet(Ok((parsed, addr)), Instant::now()),
            ConnectionResult::Connected(..)
        ));
        let _conn = accept.await.unwrap().unwrap();

        // Two requests nobody decides fill the table; the third is ignored.
        let mut waiting = Vec::new();
        for i in 0..3 {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            induction_and_conclusion(&s, addr, &format!("wait{i}"), true).await;
            waiting.push(s);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let st = l.stats();
        assert_eq!(st.inductions, 50 + 2 + 3, "{st:?}");
        assert_eq!(st.bad_cookies, 2, "{st:?}");
        assert_eq!((st.handshakes, st.handshakes_ignored), (3, 1), "{st:?}");
        assert_eq!(st.accepted, 1, "{st:?}");
        let totals = l.refusals().totals();
        assert!(totals.contains(&("bad cookie", 2)), "{totals:?}");
        assert!(totals.contains(&("handshake table full", 1)), "{totals:?}");
    }
}
