//! Play fan-out: one writer per stream.
//!
//! All players of one stream (same path and message stream id; the chunk size is the
//! listener's) share one [`Fanout`] task with one hub subscription. Each published
//! message is serialized into RTMP chunks once, into one contiguous [`Bytes`] (one copy
//! per stream, never per player), and the task walks its flat table of players doing one
//! nonblocking vectored write per player per batch of messages. Only a player whose
//! socket is full gets a backlog: references to the shared buffers, bounded in bytes;
//! past the bound its unsent media is dropped and it resumes at the next keyframe
//! (codec configuration and metadata are always kept). A player that accepts nothing
//! for the stall timeout is closed.
//!
//! This is what `../shared/PERFORMANCE-NOTES.md` measured as the cheapest forwarder on
//! this machine: per-player tasks with their own queues and wakeups cost about twice
//! the CPU per delivered Gbit/s.
//!
//! The connection task keeps reading the player's socket (acknowledgements, pings,
//! `closeStream`) and sends what its session answers through [`PlayerHandle::control`],
//! so that every byte to a player goes out in order through this one writer.
//!
//! Push destinations use the same writer ([`FanoutConfig::publishing`]): a push task
//! connects and negotiates publishing itself, then hands its plain-TCP socket to its
//! stream's push fan-out and only reads the destination's control messages. Fifty
//! destinations of one stream then cost one hub subscription, one serialization and
//! one task wakeup per batch instead of fifty.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use cthulhu_core::hub::{Continuity, ContinuityEvent, SubscribeOptions};
use cthulhu_core::{FrameFlags, Hub, MediaKind, Member, Meter, StreamPath, Subscriber};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::chunk::flatten;
use crate::error::RtmpError;
use crate::from_core::FromCore;
use crate::push::sleep_until;

/// Most messages handed to one vectored write (Linux allows 1024 iovecs).
const MAX_IOV: usize = 64;
/// How often players with a backlog are retried when no new message arrives.
const BACKLOG_TICK: Duration = Duration::from_millis(10);

/// Settings shared by the fan-outs of one listener.
#[derive(Clone, Debug)]
pub(crate) struct FanoutConfig {
    /// A player's backlog bound in bytes.
    pub(crate) queue_bytes: usize,
    /// A player's backlog bound in messages.
    pub(crate) queue_messages: usize,
    /// A player that accepts nothing for this long is closed.
    pub(crate) stall_timeout: Duration,
    /// TCP_NODELAY on player sockets (off: Nagle coalesces small writes, about half the CPU).
    pub(crate) nodelay: bool,
    /// Byte cap of the serialized GOP kept for players that join mid-stream.
    pub(crate) gop_bytes: usize,
    /// Audio waits up to this long for the next video message so that both go out in
    /// one write (zero: every batch is written at once).
    pub(crate) audio_hold: Duration,
    /// Members are push destinations: metadata goes out as `@setDataFrame`, and when
    /// the stream ends each member is released with the bytes still owed to it.
    pub(crate) publishing: bool,
    /// How long members stay on after the publisher drops (see [`Continuity`]).
    pub(crate) grace: Duration,
}

/// Grace of players' fan-outs: players stay connected across publisher drops.
pub(crate) const PLAYER_GRACE: Duration = Duration::from_secs(86_400);

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    path: StreamPath,
    stream_id: u32,
    chunk_size: u32,
}

enum Command {
    Join(Join),
    Control { id: u64, data: Bytes },
    Leave { id: u64 },
    Release { id: u64 },
    Reserve { id: u64 },
}

struct Join {
    id: u64,
    sock: Arc<TcpStream>,
    peer: SocketAddr,
    /// The member's name and counters, listed on the fan-out's subscription.
    member: Member,
    exit: oneshot::Sender<Left>,
}

/// Why a member left its fan-out.
#[derive(Debug)]
pub(crate) enum Left {
    /// Dropped: a socket error, or nothing accepted for the stall timeout.
    Failed(RtmpError),
    /// The stream ended (publishing fan-outs only). Holds the bytes not yet written,
    /// which the member finishes before unpublishing.
    Ended(Vec<Bytes>),
    /// Released on the member's request ([`PlayerHandle::release`]), with the bytes not
    /// yet written.
    Released(Vec<Bytes>),
}

impl Left {
    /// The error a connection ends with.
    pub(crate) fn into_error(self) -> RtmpError {
        match self {
            Left::Failed(e) => e,
            Left::Ended(_) | Left::Released(_) => RtmpError::Closed,
        }
    }
}

/// A running fan-out, as the registry knows it.
struct Entry {
    tx: mpsc::UnboundedSender<Command>,
    /// The fan-out's stream is in a session (started, not ended; a grace period
    /// counts as in session).
    in_session: Arc<AtomicBool>,
}

/// The fan-outs of one listener, by stream.
pub(crate) struct Fanouts {
    hub: Hub,
    config: FanoutConfig,
    map: Mutex<HashMap<Key, Entry>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fanouts {
    pub(crate) fn new(hub: Hub, config: FanoutConfig) -> Arc<Self> {
        Arc::new(Self {
            hub,
            config,
            map: Mutex::new(HashMap::new()),
        })
    }

    /// Hands a player's socket to its stream's fan-out (started on first use) for
    /// `chunk_size` chunks on message stream `stream_id`; the fan-out counts what it
    /// writes to the player on `meter`. The returned receiver yields why the fan-out
    /// let the player go.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn join(
        self: &Arc<Self>,
        path: &StreamPath,
        stream_id: u32,
        chunk_size: u32,
        id: u64,
        sock: Arc<TcpStream>,
        peer: SocketAddr,
        meter: Arc<Meter>,
    ) -> (PlayerHandle, oneshot::Receiver<Left>) {
        self.reserve(path, stream_id, chunk_size, id)
            .join(sock, peer, String::new(), meter)
    }

    /// Holds a place in a stream's fan-out (started now if need be) for a member
    /// that joins once connected: until it joins, the fan-out keeps every message
    /// from now on (up to the GOP cap) instead of only the last GOP, so a push that
    /// takes longer than a GOP to connect still starts where its session started.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        path: &StreamPath,
        stream_id: u32,
        chunk_size: u32,
        id: u64,
    ) -> Reservation {
        let key = Key {
            path: path.clone(),
            stream_id,
            chunk_size,
        };
        let mut map = lock(&self.map);
        let tx = match map.get(&key) {
            Some(e) if !e.tx.is_closed() => e.tx.clone(),
            _ => {
                let entry = self.spawn(key.clone());
                let tx = entry.tx.clone();
                map.insert(key, entry);
                tx
            }
        };
        // A fan-out retires under the map lock and not while a place is held, so the
        // channel is open here. Were its task gone anyway, the join (and its exit
        // sender) would be dropped and the member would be told at once.
        let _ = tx.send(Command::Reserve { id });
        Reservation {
            id,
            tx,
            joined: false,
        }
    }

    /// Whether a fan-out of `path` has its stream in session (grace included).
    pub(crate) fn in_session(&self, path: &StreamPath) -> bool {
        lock(&self.map)
            .iter()
            .any(|(k, e)| &k.path == path && e.in_session.load(Ordering::Relaxed))
    }

    fn spawn(self: &Arc<Self>, key: Key) -> Entry {
        let (tx, rx) = mpsc::unbounded_channel();
        let role = if self.config.publishing {
            "rtmp-push"
        } else {
            "rtmp-play"
        };
        let sub = self.hub.subscribe(
            &key.path,
            SubscribeOptions::labelled(format!("{role}:{}", key.path)),
        );
        let span = info_span!("rtmp-fanout", stream = %key.path, role);
        let in_session = Arc::new(AtomicBool::new(false));
        let fanout = Fanout::new(self.clone(), key, tx.clone(), sub, in_session.clone());
        tokio::spawn(fanout.run(rx).instrument(span));
        Entry { tx, in_session }
    }
}

/// A place held in a fan-out ([`Fanouts::reserve`]); dropping it unjoined gives it up.
pub(crate) struct Reservation {
    id: u64,
    tx: mpsc::UnboundedSender<Command>,
    joined: bool,
}

impl Reservation {
    /// Hands the member's socket to the fan-out, which lists it as `name` (empty for
    /// a player) and counts what it writes to it on `meter`. The returned receiver
    /// yields why the fan-out let the member go.
    pub(crate) fn join(
        mut self,
        sock: Arc<TcpStream>,
        peer: SocketAddr,
        name: String,
        meter: Arc<Meter>,
    ) -> (PlayerHandle, oneshot::Receiver<Left>) {
        self.joined = true;
        let (exit, exit_rx) = oneshot::channel();
        let _ = self.tx.send(Command::Join(Join {
            id: self.id,
            sock,
            peer,
            member: Member {
                name,
                remote: Some(peer),
                meter,
            },
            exit,
        }));
        (
            PlayerHandle {
                id: self.id,
                tx: self.tx.clone(),
                released: false,
            },
            exit_rx,
        )
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.joined {
            let _ = self.tx.send(Command::Leave { id: self.id });
        }
    }
}

/// A connection's handle on its place in a fan-out; dropping it removes the player.
pub(crate) struct PlayerHandle {
    id: u64,
    tx: mpsc::UnboundedSender<Command>,
    released: bool,
}

impl PlayerHandle {
    /// Sends session output (acknowledgements, ping answers, status messages) to the
    /// player in order with its media.
    pub(crate) fn control(&self, data: Bytes) {
        let _ = self.tx.send(Command::Control { id: self.id, data });
    }

    /// Asks the fan-out to let the member go: its exit receiver then yields
    /// [`Left::Released`] with what was not written yet (or why it failed first).
    pub(crate) fn release(mut self) {
        self.released = true;
        let _ = self.tx.send(Command::Release { id: self.id });
    }
}

impl Drop for PlayerHandle {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.tx.send(Command::Leave { id: self.id });
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Metadata, codec configuration and session control: never dropped.
    Keep,
    /// A point a skipping player can resume at: a video keyframe (or any audio frame of
    /// an audio-only stream).
    Sync,
    /// Other media.
    Media,
}

#[derive(Clone, Debug)]
struct Msg {
    data: Bytes,
    kind: Kind,
}

impl Msg {
    fn keep(data: Bytes) -> Self {
        Self {
            data,
            kind: Kind::Keep,
        }
    }
}

struct Player {
    id: u64,
    sock: Arc<TcpStream>,
    peer: SocketAddr,
    member: Member,
    exit: Option<oneshot::Sender<Left>>,
    backlog: VecDeque<Msg>,
    backlog_bytes: usize,
    /// The backlog's first message is partly written: it must be finished.
    head_started: bool,
    skipping: bool,
    /// Even after dropping media the backlog is over the bound (see [`Player::send`]).
    overrun: bool,
    dropped: u64,
    last_progress: Instant,
    /// Media was dropped since the socket last took bytes: the stall clock keeps
    /// running even if the backlog is empty now (a dead peer whose backlog is
    /// trimmed away again and again must still be reported stalled).
    dropped_since_progress: bool,
}

impl Player {
    fn new(join: Join, config: &FanoutConfig) -> Self {
        if let Err(e) = join.sock.set_nodelay(config.nodelay) {
            debug!(error = %e, "set_nodelay failed");
        }
        Self {
            id: join.id,
            sock: join.sock,
            peer: join.peer,
            member: join.member,
            exit: Some(join.exit),
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            head_started: false,
            skipping: false,
            overrun: false,
            dropped: 0,
            last_progress: Instant::now(),
            dropped_since_progress: false,
        }
    }

    /// Whether the player takes `m` (updating its keyframe wait).
    fn admits(&mut self, m: &Msg) -> bool {
        match m.kind {
            Kind::Keep => true,
            Kind::Sync => {
                self.skipping = false;
                true
            }
            Kind::Media => {
                if self.skipping {
                    self.dropped += 1;
                    self.member.meter.add_dropped(1);
                }
                !self.skipping
            }
        }
    }

    /// Delivers a batch: straight to the socket when nothing is pending, else through
    /// the backlog.
    ///
    /// Fails once even the messages that are never dropped (session answers,
    /// metadata, codec configuration) exceed the queue bound: a peer that keeps
    /// talking without reading cannot make its backlog grow without end.
    fn send(&mut self, msgs: &[Msg], config: &FanoutConfig, now: Instant) -> io::Result<()> {
        let r = self.send_now(msgs, config, now);
        self.member.meter.set_backlog(self.backlog_bytes);
        r?;
        if self.overrun {
            return Err(io::Error::other(
                "messages that cannot be dropped outgrew the queue bound: the peer does not read",
            ));
        }
        Ok(())
    }

    fn send_now(&mut self, msgs: &[Msg], config: &FanoutConfig, now: Instant) -> io::Result<()> {
        if self.backlog.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut taken: [usize; MAX_IOV] = [0; MAX_IOV];
            let mut n = 0;
            for (i, m) in msgs.iter().enumerate() {
                if n == MAX_IOV {
                    // More than one write's worth: the rest goes through the backlog.
                    return self.write_direct(&iov[..n], &taken[..n], msgs, i, config, now);
                }
                if self.admits(m) {
                    iov[n] = IoSlice::new(&m.data);
                    taken[n] = i;
                    n += 1;
                }
            }
            return self.write_direct(&iov[..n], &taken[..n], msgs, msgs.len(), config, now);
        }
        for m in msgs {
            if self.admits(m) {
                self.enqueue(m.clone(), config);
            }
        }
        self.flush(now)
    }

    /// Writes `iov` (the admitted messages `taken` of `msgs[..rest]`) once; what the
    /// socket does not take, and `msgs[rest..]`, go to the backlog.
    fn write_direct(
        &mut self,
        iov: &[IoSlice<'_>],
        taken: &[usize],
        msgs: &[Msg],
        rest: usize,
        config: &FanoutConfig,
        now: Instant,
    ) -> io::Result<()> {
        let mut written = if iov.is_empty() {
            0
        } else {
            match write_now(&self.sock, iov) {
                Ok(n) => {
                    self.progress(now);
                    self.member.meter.add_sent(n);
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            }
        };
        for &i in taken {
            let m = &msgs[i];
            if written >= m.data.len() {
                written -= m.data.len();
                continue;
            }
            let mut m = m.clone();
            if self.backlog.is_empty() && !self.dropped_since_progress {
                self.last_progress = now;
            }
            if written > 0 {
                m.data = m.data.slice(written..);
                self.head_started = true;
                written = 0;
            }
            self.backlog_bytes += m.data.len();
            self.backlog.push_back(m);
        }
        for m in &msgs[rest..] {
            if self.admits(m) {
                self.enqueue(m.clone(), config);
            }
        }
        self.trim(config);
        Ok(())
    }

    fn enqueue(&mut self, m: Msg, config: &FanoutConfig) {
        if self.backlog.is_empty() && !self.dropped_since_progress {
            // The stall clock starts when something is first left waiting.
            self.last_progress = Instant::now();
        }
        self.backlog_bytes += m.data.len();
        self.backlog.push_back(m);
        self.trim(config);
    }

    /// Past the bound: drops the queued media (keeping a partly written head, metadata
    /// and codec configuration) and waits for the next keyframe.
    fn trim(&mut self, config: &FanoutConfig) {
        if self.backlog_bytes <= config.queue_bytes && self.backlog.len() <= config.queue_messages {
            return;
        }
        let head = if self.head_started {
            self.backlog.pop_front()
        } else {
            None
        };
        let before = self.backlog.len();
        self.backlog.retain(|m| m.kind == Kind::Keep);
        let dropped = (before - self.backlog.len()) as u64;
        if let Some(h) = head {
            self.backlog.push_front(h);
        }
        self.backlog_bytes = self.backlog.iter().map(|m| m.data.len()).sum();
        self.overrun =
            self.backlog_bytes > config.queue_bytes || self.backlog.len() > config.queue_messages;
        self.dropped += dropped;
        self.member.meter.add_dropped(dropped);
        self.dropped_since_progress = true;
        self.skipping = true;
        if config.publishing {
            tracing::warn!(
                peer = %self.peer,
                dropped,
                "Destination fell behind: skipping to the next keyframe"
            );
        } else {
            debug!(
                peer = %self.peer,
                dropped,
                "Player fell behind: skipping to the next keyframe"
            );
        }
    }

    /// Writes as much of the backlog as the socket takes now.
    fn flush(&mut self, now: Instant) -> io::Result<()> {
        while !self.backlog.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for m in self.backlog.iter().take(MAX_IOV) {
                iov[n] = IoSlice::new(&m.data);
                n += 1;
            }
            let mut written = match write_now(&self.sock, &iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            self.progress(now);
            self.member.meter.add_sent(written);
            self.backlog_bytes -= written;
            while written > 0 {
                let Some(front) = self.backlog.front_mut() else {
                    break;
                };
                if written >= front.data.len() {
                    written -= front.data.len();
                    self.backlog.pop_front();
                    self.head_started = false;
                } else {
                    front.data = front.data.slice(written..);
                    self.head_started = true;
                    written = 0;
                }
            }
        }
        Ok(())
    }

    /// The socket took bytes.
    fn progress(&mut self, now: Instant) {
        self.last_progress = now;
        self.dropped_since_progress = false;
    }

    fn stalled(&self, now: Instant, timeout: Duration) -> bool {
        !self.backlog.is_empty() && now.duration_since(self.last_progress) >= timeout
    }

    fn close(self, reason: RtmpError) {
        self.leave(Left::Failed(reason));
    }

    /// Lets the member go with what it has not been sent yet.
    fn release(mut self, ended: bool) {
        let unsent: Vec<Bytes> = self.backlog.drain(..).map(|m| m.data).collect();
        self.leave(if ended {
            Left::Ended(unsent)
        } else {
            Left::Released(unsent)
        });
    }

    fn leave(mut self, why: Left) {
        if self.dropped > 0 {
            debug!(peer = %self.peer, dropped = self.dropped, "Player left after skipping frames");
        }
        if let Some(exit) = self.exit.take() {
            let _ = exit.send(why);
        }
    }
}

/// One nonblocking `sendmsg` on the player's socket.
///
/// Straight to the socket rather than through tokio's `try_write_vectored`: the
/// fan-out never waits for writability (backlogs are retried on new messages and on
/// a timer), so tokio's readiness bookkeeping is pure overhead here; profiling
/// showed it at about 7% of the server's CPU at 3000 players.
fn write_now(sock: &TcpStream, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    socket2::SockRef::from(sock).send_vectored(iov)
}

/// What a player joining mid-stream is sent first.
#[derive(Default)]
struct CatchUp {
    metadata: Option<Bytes>,
    video_config: Option<Bytes>,
    audio_config: Option<Bytes>,
    /// The messages since the last keyframe, while they fit the cap.
    gop: Vec<Msg>,
    gop_bytes: usize,
    /// Whether `gop` starts on a keyframe (false after a cap overflow or before the first).
    gop_valid: bool,
    has_video: bool,
}

struct Fanout {
    owner: Arc<Fanouts>,
    key: Key,
    tx: mpsc::UnboundedSender<Command>,
    sub: Subscriber,
    cont: Continuity,
    ser: FromCore,
    segments: Vec<Bytes>,
    players: Vec<Player>,
    batch: Vec<Msg>,
    /// Whether the batch holds anything but audio (then it is written at once).
    batch_urgent: bool,
    /// When a batch of audio only is written if no video comes first.
    hold_until: Option<Instant>,
    catch_up: CatchUp,
    /// Some player has a backlog (kept up to date by `deliver` and after commands,
    /// so the loop does not scan every player per message).
    backlogged: bool,
    /// Places held for members still connecting: while any is, the catch-up keeps
    /// every message rather than restarting at each keyframe.
    reserved: Vec<u64>,
    /// Published to the registry: `cont` is in a session.
    in_session: Arc<AtomicBool>,
    /// A member joined since the subscription's member list was last set.
    members_changed: bool,
    /// How many members that list holds.
    members_listed: usize,
}

impl Fanout {
    fn new(
        owner: Arc<Fanouts>,
        key: Key,
        tx: mpsc::UnboundedSender<Command>,
        sub: Subscriber,
        in_session: Arc<AtomicBool>,
    ) -> Self {
        let ser = FromCore::new(key.chunk_size, key.stream_id);
        let cont = Continuity::new(owner.config.grace);
        Self {
            owner,
            key,
            tx,
            sub,
            cont,
            ser,
            segments: Vec::new(),
            players: Vec::new(),
            batch: Vec::with_capacity(MAX_IOV),
            batch_urgent: false,
            hold_until: None,
            catch_up: CatchUp::default(),
            backlogged: false,
            reserved: Vec::new(),
            in_session,
            members_changed: false,
            members_listed: 0,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        debug!("Fan-out started");
        loop {
            let backlogged = self.backlogged;
            tokio::select! {
                biased;
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.command(cmd);
                    // Joins and session output can leave a backlog; commands are rare.
                    self.backlogged = self.players.iter().any(|p| !p.backlog.is_empty());
                }
                ev = self.cont.next(&mut self.sub) => {
                    let Some(ev) = ev else {
                        // The hub shut down.
                        self.close_all();
                        self.retire(&mut rx);
                        break;
                    };
                    self.event(ev);
                    while self.batch.len() < MAX_IOV {
                        let Some(ev) = self.cont.try_next(&mut self.sub) else { break };
                        self.event(ev);
                    }
                    self.in_session.store(self.cont.in_session(), Ordering::Relaxed);
                    let hold = self.owner.config.audio_hold;
                    if self.batch_urgent || hold.is_zero() || self.batch.len() >= MAX_IOV {
                        self.deliver();
                    } else if self.hold_until.is_none() && !self.batch.is_empty() {
                        self.hold_until = Some(Instant::now() + hold);
                    }
                }
                _ = sleep_until(self.hold_until), if self.hold_until.is_some() => {
                    self.deliver();
                }
                _ = tokio::time::sleep(BACKLOG_TICK), if backlogged => {
                    self.deliver();
                }
            }
            if self.members_changed || self.players.len() != self.members_listed {
                self.list_members();
            }
            // Members leave on commands, on write errors, and (push fan-outs) when
            // the stream ends.
            if self.idle() && self.retire(&mut rx) {
                break;
            }
        }
        debug!("Fan-out ended");
    }

    /// Lists the members on the subscription, for the hub's snapshots. Members join
    /// and leave rarely; they are only counted per message.
    fn list_members(&mut self) {
        self.sub
            .set_members(self.players.iter().map(|p| p.member.clone()).collect());
        self.members_changed = false;
        self.members_listed = self.players.len();
    }

    /// No members and no places held; for a push fan-out also no session going on,
    /// so that a destination retrying after a failure finds the session (and its
    /// grace period) where it left it.
    fn idle(&self) -> bool {
        self.players.is_empty()
            && self.reserved.is_empty()
            && !(self.owner.config.publishing && self.cont.in_session())
    }

    /// Removes this fan-out from the registry if no join is pending; true if it did.
    fn retire(&mut self, rx: &mut mpsc::UnboundedReceiver<Command>) -> bool {
        let mut map = lock(&self.owner.map);
        if !rx.is_empty() {
            return false;
        }
        if map
            .get(&self.key)
            .is_some_and(|e| e.tx.same_channel(&self.tx))
        {
            map.remove(&self.key);
        }
        rx.close();
        true
    }

    fn close_all(&mut self) {
        for p in self.players.drain(..) {
            p.close(RtmpError::Closed);
        }
    }

    fn command(&mut self, cmd: Command) {
        let config = &self.owner.config;
        let now = Instant::now();
        match cmd {
            Command::Join(join) => {
                self.reserved.retain(|&r| r != join.id);
                if !self.batch.is_empty() {
                    // The catch-up below already holds the batch's messages.
                    self.deliver();
                }
                let config = &self.owner.config;
                let mut p = Player::new(join, config);
                if config.publishing && !self.cont.in_session() && !self.sub.is_live() {
                    // The stream ended while this destination was connecting.
                    p.release(true);
                    return;
                }
                let c = &self.catch_up;
                let keep = [&c.metadata, &c.video_config, &c.audio_config];
                for data in keep.into_iter().flatten() {
                    p.enqueue(
                        Msg {
                            data: data.clone(),
                            kind: Kind::Keep,
                        },
                        config,
                    );
                }
                if c.gop_valid {
                    for m in &c.gop {
                        p.enqueue(m.clone(), config);
                    }
                } else {
                    p.skipping = true;
                }
                let r = p.flush(now);
                p.member.meter.set_backlog(p.backlog_bytes);
                match r {
                    Ok(()) => self.players.push(p),
                    Err(e) => p.close(e.into()),
                }
                self.members_changed = true;
            }
            Command::Control { id, data } => {
                if let Some(i) = self.players.iter().position(|p| p.id == id) {
                    let msg = [Msg {
                        data,
                        kind: Kind::Keep,
                    }];
                    if let Err(e) = self.players[i].send(&msg, config, now) {
                        self.players.swap_remove(i).close(e.into());
                    }
                }
            }
            Command::Leave { id } => {
                self.reserved.retain(|&r| r != id);
                if let Some(i) = self.players.iter().position(|p| p.id == id) {
                    self.players.swap_remove(i);
                }
            }
            Command::Reserve { id } => self.reserved.push(id),
            Command::Release { id } => {
                if let Some(i) = self.players.iter().position(|p| p.id == id) {
                    self.players.swap_remove(i).release(false);
                }
            }
        }
    }

    /// Serializes one event once for every player.
    fn event(&mut self, ev: ContinuityEvent) {
        let resumed = matches!(ev, ContinuityEvent::Resumed(_));
        let started = matches!(ev, ContinuityEvent::Started(_));
        match ev {
            ContinuityEvent::Started(info)
            | ContinuityEvent::Resumed(info)
            | ContinuityEvent::Updated(info) => {
                if resumed && self.owner.config.publishing {
                    info!(
                        destinations = self.players.len(),
                        "Publisher back within grace: resuming"
                    );
                }
                self.segments.clear();
                let publishing = self.owner.config.publishing;
                if let Err(e) = self.ser.metadata(&info, publishing, &mut self.segments) {
                    warn!(error = %e, "Metadata not sent to this fan-out's members");
                    return;
                }
                let data = flatten(&mut self.segments);
                let c = &mut self.catch_up;
                // A session starts with no tracks known (they come with the codec
                // configuration, and metadata often comes first): video seen since
                // counts as much as video announced.
                c.has_video = info.video().is_some() || (c.has_video && !started);
                c.metadata = Some(data.clone());
                self.batch.push(Msg::keep(data));
                self.batch_urgent = true;
            }
            ContinuityEvent::Frame(f) => {
                self.segments.clear();
                if let Err(e) = self.ser.frame(&f, &mut self.segments) {
                    warn!(error = %e, "Frame not sent to this fan-out's members");
                    return;
                }
                let data = flatten(&mut self.segments);
                let c = &mut self.catch_up;
                let video = f.kind() == MediaKind::Video;
                c.has_video |= video;
                let kind = if f.flags.contains(FrameFlags::CONFIG) {
                    if video {
                        c.video_config = Some(data.clone());
                    } else {
                        c.audio_config = Some(data.clone());
                    }
                    Kind::Keep
                } else if video && f.flags.contains(FrameFlags::KEYFRAME) {
                    if self.reserved.is_empty() || !c.gop_valid {
                        c.gop.clear();
                        c.gop_bytes = 0;
                        c.gop_valid = true;
                    }
                    Kind::Sync
                } else if !video && !c.has_video {
                    Kind::Sync
                } else {
                    Kind::Media
                };
                let msg = Msg { data, kind };
                self.batch_urgent |= video || kind == Kind::Keep;
                if kind != Kind::Keep && c.gop_valid && c.has_video {
                    c.gop_bytes += msg.data.len();
                    if c.gop_bytes > self.owner.config.gop_bytes {
                        c.gop.clear();
                        c.gop_bytes = 0;
                        c.gop_valid = false;
                    } else {
                        c.gop.push(msg.clone());
                    }
                }
                self.batch.push(msg);
            }
            ContinuityEvent::Gap { dropped } => {
                warn!(
                    dropped,
                    "Fan-out fell behind the publisher: skipped to the next keyframe"
                );
            }
            ContinuityEvent::Ended(_) => {
                if self.owner.config.publishing {
                    self.catch_up = CatchUp::default();
                    // What is batched goes first, then every destination is told.
                    self.deliver();
                    for p in self.players.drain(..) {
                        p.release(true);
                    }
                    self.backlogged = false;
                } else {
                    self.catch_up.gop.clear();
                    self.catch_up.gop_bytes = 0;
                    self.catch_up.gop_valid = false;
                }
            }
        }
    }

    /// Writes the batch (possibly empty: then only backlogs are retried) to every player.
    fn deliver(&mut self) {
        let config = &self.owner.config;
        let now = Instant::now();
        let mut backlogged = false;
        let mut i = 0;
        while i < self.players.len() {
            let p = &mut self.players[i];
            let r = if self.batch.is_empty() {
                let r = p.flush(now);
                p.member.meter.set_backlog(p.backlog_bytes);
                r
            } else {
                p.send(&self.batch, config, now)
            };
            let err = match r {
                Err(e) => Some(RtmpError::from(e)),
                Ok(()) if p.stalled(now, config.stall_timeout) => {
                    Some(RtmpError::StallTimeout(config.stall_timeout.as_secs()))
                }
                Ok(()) => None,
            };
            match err {
                Some(e) => self.players.swap_remove(i).close(e),
                None => {
                    backlogged |= !p.backlog.is_empty();
                    i += 1;
                }
            }
        }
        self.backlogged = backlogged;
        self.batch.clear();
        self.batch_urgent = false;
        self.hold_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn config(queue_bytes: usize) -> FanoutConfig {
        FanoutConfig {
            queue_bytes,
            queue_messages: 1000,
            stall_timeout: Duration::from_secs(30),
            nodelay: false,
            gop_bytes: 1 << 20,
            audio_hold: Duration::ZERO,
            publishing: false,
            grace: PLAYER_GRACE,
        }
    }

    /// A player on a loopback socket with small buffers, and the reading end.
    async fn player(queue_bytes: usize) -> (Player, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, peer) = l.accept().await.unwrap();
        let s = socket2::SockRef::from(&server);
        s.set_send_buffer_size(4096).unwrap();
        socket2::SockRef::from(&client)
            .set_recv_buffer_size(4096)
            .unwrap();
        let (exit, _rx) = oneshot::channel();
        let join = Join {
            id: 1,
            sock: Arc::new(server),
            peer,
            member: Member {
                name: String::new(),
                remote: Some(peer),
                meter: Meter::shared(),
            },
            exit,
        };
        (Player::new(join, &config(queue_bytes)), client)
    }

    /// Message `id`: `len` bytes, all equal to `id`.
    fn msg(id: u8, len: usize, kind: Kind) -> Msg {
        Msg {
            data: Bytes::from(vec![id; len]),
            kind,
        }
    }

    /// Flushes the player while reading everything it writes.
    async fn drain(p: &mut Player, mut client: TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        while !p.backlog.is_empty() {
            p.flush(Instant::now()).unwrap();
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(50), client.read(&mut buf)).await
            {
                got.extend_from_slice(&buf[..n]);
            }
        }
        // Whatever is still in flight.
        got.extend(read_until_quiet(&mut client, Duration::from_millis(100)).await);
        got
    }

    /// Reads `client` until nothing arrives for `quiet` (or it closes).
    async fn read_until_quiet(client: &mut TcpStream, quiet: Duration) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(Ok(n)) = tokio::time::timeout(quiet, client.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    /// Splits a byte stream into (id, run length) runs.
    fn runs(data: &[u8]) -> Vec<(u8, usize)> {
        let mut out: Vec<(u8, usize)> = Vec::new();
        for &b in data {
            match out.last_mut() {
                Some((id, n)) if *id == b => *n += 1,
                _ => out.push((b, 1)),
            }
        }
        out
    }

    /// A video frame whose body is 1000 bytes of `n`.
    fn video(n: u8, key: bool) -> cthulhu_core::Frame {
        use cthulhu_core::model::{CodecId, Timestamp, TrackId};
        cthulhu_core::Frame {
            track: TrackId::VIDEO,
            codec: CodecId::H264,
            pts: Timestamp::from_millis(i64::from(n) * 33),
            dts: Timestamp::from_millis(i64::from(n) * 33),
            flags: if key {
                FrameFlags::KEYFRAME
            } else {
                FrameFlags::NONE
            },
            data: Bytes::from(vec![n; 1000]),
        }
    }

    /// An H.264 configuration frame (its body is not looked into here).
    fn video_config() -> cthulhu_core::Frame {
        cthulhu_core::Frame {
            flags: FrameFlags::CONFIG,
            data: Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff, 0xe0, 0]),
            ..video(0, false)
        }
    }

    /// Publishes frames `from..to`, a keyframe every 5.
    fn gops(p: &cthulhu_core::Publisher, from: u8, to: u8) {
        for n in from..to {
            assert!(p.send(video(n, n % 5 == 0)));
        }
    }

    /// Which frames of `video` arrived in `data` (chunk size 4096: each body is whole).
    fn frames_in(data: &[u8], up_to: u8) -> Vec<u8> {
        (0..up_to)
            .filter(|&n| data.windows(1000).any(|w| w.iter().all(|&b| b == n)))
            .collect()
    }

    /// Reads what arrives on `client` until it has been quiet for a moment.
    async fn received(mut client: TcpStream) -> Vec<u8> {
        read_until_quiet(&mut client, Duration::from_millis(300)).await
    }

    /// Push fan-outs on `hub` with the given grace period.
    fn push_fanouts(hub: &Hub, grace: Duration) -> Arc<Fanouts> {
        Fanouts::new(
            hub.clone(),
            FanoutConfig {
                publishing: true,
                grace,
                ..config(1 << 20)
            },
        )
    }

    async fn socket_pair() -> (Arc<TcpStream>, SocketAddr, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, peer) = l.accept().await.unwrap();
        (Arc::new(server), peer, client)
    }

    #[tokio::test]
    async fn a_held_place_gets_every_message_since_it_was_taken() {
        let hub = Hub::new(cthulhu_core::HubConfig::default());
        let path = StreamPath::new("live/held").unwrap();
        let publisher = hub.publish(&path).unwrap();
        assert!(publisher.send(video_config()));
        let fanouts = push_fanouts(&hub, Duration::from_secs(10));
        gops(&publisher, 0, 3);
        // A destination starts connecting; three more GOPs pass before it is ready.
        let place = fanouts.reserve(&path, 1, 4096, 1);
        gops(&publisher, 3, 20);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (sock, peer, client) = socket_pair().await;
        let (_member, _left) = place.join(sock, peer, "d".into(), Meter::shared());
        let got = received(client).await;
        assert_eq!(frames_in(&got, 20), (0..20).collect::<Vec<u8>>());

        // Once nobody is connecting, a newcomer starts at the last keyframe.
        gops(&publisher, 20, 28);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (sock, peer, client) = socket_pair().await;
        let (_late, _left) = fanouts.join(&path, 1, 4096, 2, sock, peer, Meter::shared());
        let got = received(client).await;
        assert_eq!(frames_in(&got, 28), (25..28).collect::<Vec<u8>>());
    }

    #[tokio::test]
    async fn a_place_taken_as_the_stream_starts_gets_its_first_keyframe() {
        // A push reserves its place when the session starts, before the publisher has
        // sent any codec configuration: the stream's info has no tracks yet.
        let hub = Hub::new(cthulhu_core::HubConfig::default());
        let path = StreamPath::new("live/starting").unwrap();
        let fanouts = push_fanouts(&hub, Duration::from_secs(10));
        let publisher = hub.publish(&path).unwrap();
        let place = fanouts.reserve(&path, 1, 4096, 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        publisher.set_metadata(Vec::new());
        assert!(publisher.send(video_config()));
        gops(&publisher, 0, 12);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (sock, peer, client) = socket_pair().await;
        let (_member, _left) = place.join(sock, peer, "d".into(), Meter::shared());
        assert_eq!(
            frames_in(&received(client).await, 12),
            (0..12).collect::<Vec<u8>>()
        );
    }

    #[tokio::test]
    async fn a_push_fanout_keeps_its_session_through_the_grace_period() {
        let hub = Hub::new(cthulhu_core::HubConfig::default());
        let path = StreamPath::new("live/grace").unwrap();
        let publisher = hub.publish(&path).unwrap();
        assert!(publisher.send(video_config()));
        gops(&publisher, 0, 5);
        let fanouts = push_fanouts(&hub, Duration::from_millis(800));
        let (sock, peer, _client) = socket_pair().await;
        let (member, _left) = fanouts.join(&path, 1, 4096, 1, sock, peer, Meter::shared());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(fanouts.in_session(&path));
        // The only destination fails, then the publisher drops: a retry within the
        // grace period must still find the session.
        drop(member);
        drop(publisher);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(fanouts.in_session(&path), "in the grace period");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(
            !fanouts.in_session(&path),
            "the session ended with the grace period"
        );
        assert!(lock(&fanouts.map).is_empty(), "the fan-out retired");
    }

    #[tokio::test]
    async fn a_place_given_up_stops_holding_messages() {
        let hub = Hub::new(cthulhu_core::HubConfig::default());
        let path = StreamPath::new("live/given-up").unwrap();
        let publisher = hub.publish(&path).unwrap();
        assert!(publisher.send(video_config()));
        let fanouts = Fanouts::new(hub.clone(), config(1 << 20));
        let (sock, peer, client) = socket_pair().await;
        let (_watcher, _left) = fanouts.join(&path, 1, 4096, 1, sock, peer, Meter::shared());
        let place = fanouts.reserve(&path, 1, 4096, 2);
        gops(&publisher, 0, 12);
        drop(place);
        gops(&publisher, 12, 18);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (sock, peer, late) = socket_pair().await;
        let (_late, _left) = fanouts.join(&path, 1, 4096, 3, sock, peer, Meter::shared());
        assert_eq!(
            frames_in(&received(late).await, 18),
            (15..18).collect::<Vec<u8>>()
        );
        assert_eq!(frames_in(&received(client).await, 18).len(), 18);
    }

    #[tokio::test]
    async fn a_fast_player_gets_everything_in_order() {
        let (mut p, client) = player(1 << 20).await;
        let cfg = config(1 << 20);
        let batch: Vec<Msg> = (1..=10u8)
            .map(|i| msg(i, 300, if i == 1 { Kind::Sync } else { Kind::Media }))
            .collect();
        p.send(&batch, &cfg, Instant::now()).unwrap();
        let got = drain(&mut p, client).await;
        let expect: Vec<(u8, usize)> = (1..=10u8).map(|i| (i, 300)).collect();
        assert_eq!(runs(&got), expect);
        assert_eq!(p.dropped, 0);
    }

    #[tokio::test]
    async fn a_slow_player_skips_whole_messages_to_the_next_keyframe() {
        let queue = 64 * 1024;
        let (mut p, client) = player(queue).await;
        let cfg = config(queue);
        let now = Instant::now();
        // A keyframe, then far more media than socket buffers plus the queue hold.
        p.send(&[msg(1, 16 * 1024, Kind::Sync)], &cfg, now).unwrap();
        for id in 2..=40u8 {
            p.send(&[msg(id, 16 * 1024, Kind::Media)], &cfg, now)
                .unwrap();
            assert!(p.backlog_bytes <= queue + 16 * 1024, "backlog is bounded");
        }
        assert!(p.skipping, "the player must be waiting for a keyframe");
        assert!(p.dropped > 0);
        // Configuration passes while skipping; media does not; a keyframe resumes.
        p.send(&[msg(41, 100, Kind::Keep)], &cfg, now).unwrap();
        p.send(&[msg(42, 100, Kind::Media)], &cfg, now).unwrap();
        p.send(&[msg(43, 200, Kind::Sync)], &cfg, now).unwrap();
        p.send(&[msg(44, 300, Kind::Media)], &cfg, now).unwrap();
        assert!(!p.skipping);
        let meter = p.member.meter.clone();
        assert!(p.backlog_bytes > 0);
        assert_eq!(
            meter.reading().backlog_bytes,
            p.backlog_bytes as u64,
            "the lag"
        );
        let data = drain(&mut p, client).await;
        // The member's meter counts every byte the peer got and every message dropped.
        let reading = meter.reading();
        assert_eq!(reading.bytes_sent, data.len() as u64);
        assert_eq!(reading.dropped, p.dropped);
        let got = runs(&data);
        // Only whole messages arrive, in order.
        let mut last = 0;
        for &(id, n) in &got {
            let want = match id {
                1..=40 => 16 * 1024,
                41 | 42 => 100,
                43 => 200,
                _ => 300,
            };
            assert_eq!(n, want, "message {id} arrived cut: {got:?}");
            assert!(id > last, "out of order: {got:?}");
            last = id;
        }
        let ids: Vec<u8> = got.iter().map(|r| r.0).collect();
        assert_eq!(ids.first(), Some(&1));
        assert!(ids.contains(&41) && ids.contains(&43) && ids.contains(&44));
        assert!(!ids.contains(&42), "media while skipping must be dropped");
        assert!(ids.len() < 40, "some media must have been dropped: {ids:?}");
    }

    #[tokio::test]
    async fn a_peer_that_talks_without_reading_is_dropped_at_the_bound() {
        // Session answers (pings, acknowledgements) are never dropped, so a peer that
        // sends requests and reads nothing is closed once they alone outgrow the bound.
        let queue = 64 * 1024;
        let (mut p, _client) = player(queue).await;
        let cfg = config(queue);
        let now = Instant::now();
        let mut result = Ok(());
        for id in 0..1000u32 {
            result = p.send(&[msg((id % 250) as u8, 1024, Kind::Keep)], &cfg, now);
            if result.is_err() {
                break;
            }
        }
        let err = result.expect_err("the backlog must not grow past the bound");
        assert!(err.to_string().contains("does not read"), "{err}");
        assert!(p.backlog_bytes <= queue + 1024 * 2, "{}", p.backlog_bytes);
    }

    #[tokio::test]
    async fn a_player_that_reads_nothing_is_reported_stalled() {
        let (mut p, _client) = player(1 << 20).await;
        let cfg = config(1 << 20);
        let t0 = Instant::now();
        for id in 1..=20u8 {
            p.send(&[msg(id, 32 * 1024, Kind::Media)], &cfg, t0)
                .unwrap();
        }
        assert!(!p.backlog.is_empty());
        assert!(!p.stalled(Instant::now(), cfg.stall_timeout));
        assert!(p.stalled(Instant::now() + cfg.stall_timeout, cfg.stall_timeout));
    }

    #[tokio::test]
    async fn a_dead_peer_whose_backlog_is_trimmed_away_is_still_reported_stalled() {
        // A bound of 64 KiB: each GOP overflows it, and trimming empties the backlog.
        let (mut p, _client) = player(64 * 1024).await;
        let cfg = config(64 * 1024);
        let t0 = Instant::now();
        let mut at = t0;
        for gop in 0..6u8 {
            at = t0 + Duration::from_secs(u64::from(gop) * 6);
            p.send(&[msg(gop, 16 * 1024, Kind::Sync)], &cfg, at)
                .unwrap();
            for i in 0..20u8 {
                p.send(&[msg(i, 16 * 1024, Kind::Media)], &cfg, at).unwrap();
            }
        }
        assert!(p.dropped > 0, "nothing was trimmed");
        // The socket took nothing after the first few KiB: 30 s after that, stalled,
        // however often the backlog was emptied and refilled.
        let last_keyframe = t0 + Duration::from_secs(36);
        p.send(&[msg(9, 16 * 1024, Kind::Sync)], &cfg, last_keyframe)
            .unwrap();
        assert!(
            p.stalled(
                t0 + cfg.stall_timeout + Duration::from_secs(7),
                cfg.stall_timeout
            ),
            "a dead peer was kept (last progress {:?} after start)",
            p.last_progress.duration_since(t0)
        );
        let _ = at;
    }
}
