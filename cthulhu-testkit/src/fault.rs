//! Fault-injecting proxies on 127.0.0.1: a TCP one ([`TcpFaultProxy`]) and a UDP one
//! ([`UdpFaultProxy`]) to put between a peer and the server under test.
//!
//! Each proxy listens on an ephemeral port of 127.0.0.1 ([`TcpFaultProxy::addr`]) and
//! forwards to a target address; point the client (a publisher, the server's push) at
//! the proxy instead of the target. Faults are plain data ([`TcpFaults`],
//! [`UdpFaults`], one [`TcpLink`] / [`UdpLink`] per direction) changed at any time
//! through the handle (`set`, `update`, and shortcuts such as
//! [`TcpFaultProxy::blackhole`]); a change applies at once to current connections and
//! to new ones. Counters ([`TcpStats`], [`UdpStats`]) tell what was forwarded, and
//! `wait_until` awaits a condition on them without polling sleeps.
//!
//! Everything runs in tokio tasks owned by the handle: dropping it stops the proxy
//! and closes every connection it carries. Randomness (jitter, loss) comes from a
//! [`StdRng`], seeded for repeatable runs with `start_seeded`. A TCP proxy can announce
//! an Ethernet MSS ([`TcpProxyOptions::mss`]) so that the kernel buffers in front of a
//! blackhole or a bandwidth cap are as large as over a real network, not loopback's.
//!
//! ```no_run
//! # async fn demo(nginx: std::net::SocketAddr) -> anyhow::Result<()> {
//! use std::time::Duration;
//! use cthulhu_testkit::fault::{TcpFaultProxy, TcpFaults};
//!
//! let proxy = TcpFaultProxy::start(nginx).await?;
//! // ... point the push at proxy.addr() ...
//! proxy.set(TcpFaults::none().with_delay(Duration::from_millis(50)));
//! proxy.blackhole(true); // silent: no RST, no FIN, the sender's socket fills
//! proxy.blackhole(false);
//! proxy.reset_all(); // RST on every current connection
//! # Ok(()) }
//! ```

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes a TCP direction holds in its delay queue before it stops reading (the
/// sender then feels backpressure, as behind a real slow link).
const TCP_QUEUE_LIMIT: usize = 1024 * 1024;
/// A bandwidth-capped TCP direction reads once this many tokens are there (or the
/// whole burst, if smaller), not byte by byte.
const MIN_READ: f64 = 1024.0;
/// How long the proxy waits for the target to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A bandwidth-capped UDP direction queues at most this much sending time; datagrams
/// that would wait longer are dropped (tail drop, as a router's queue does).
const UDP_QUEUE_LIMIT: Duration = Duration::from_millis(200);
/// Receive buffer asked for the proxy's UDP sockets, so that the kernel does not drop
/// datagrams the proxy did not mean to drop (capped by `net.core.rmem_max`).
const UDP_RECV_BUFFER: usize = 4 * 1024 * 1024;

fn rng_from(seed: Option<u64>) -> StdRng {
    match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    }
}

/// A random extra delay in `0..=jitter`.
fn jitter_sample(rng: &mut StdRng, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        Duration::ZERO
    } else {
        jitter.mul_f64(rng.random::<f64>())
    }
}

/// Waits until `pred` holds for `snapshot()`, re-checking whenever `changed` is
/// notified; fails after `timeout` with the last snapshot.
async fn wait_on<S: std::fmt::Debug>(
    changed: &Notify,
    snapshot: impl Fn() -> S,
    timeout: Duration,
    mut pred: impl FnMut(&S) -> bool,
) -> Result<S> {
    let deadline = Instant::now() + timeout;
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        // Registered before the check, so a change between check and wait is seen.
        notified.as_mut().enable();
        let s = snapshot();
        if pred(&s) {
            return Ok(s);
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            bail!("condition not reached within {timeout:?}; last counters: {s:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// TCP
// ---------------------------------------------------------------------------

/// Faults of one direction of a TCP connection (client to target, or back).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TcpLink {
    /// Fixed delay added to every chunk read in this direction.
    pub delay: Duration,
    /// Up to this much random extra delay per chunk (uniform). Byte order is kept: a
    /// chunk never leaves before the one read before it.
    pub jitter: Duration,
    /// Bandwidth cap in bytes per second (a token bucket with a 50 ms burst); `None`
    /// is unlimited. The proxy reads no faster than the cap, so the sender's socket
    /// fills as behind a real slow link.
    pub rate: Option<u64>,
    /// Nothing is read from the sender or written to the receiver in this direction;
    /// both sockets stay open (no RST, no FIN) and the sender's socket buffer fills.
    /// Data already read waits in the proxy and is forwarded once this is cleared.
    pub stalled: bool,
    /// Half-close: the receiver gets a FIN (`shutdown(Write)` on the proxy's socket
    /// to it), data waiting in the proxy is discarded and nothing more is read from the
    /// sender in this direction, whose socket stays open. Irreversible for the
    /// connections it reached; clear it for new ones.
    pub shut: bool,
}

/// The faults of a [`TcpFaultProxy`]; `TcpFaults::default()` (or [`TcpFaults::none`])
/// forwards everything untouched.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TcpFaults {
    /// Client to target.
    pub to_target: TcpLink,
    /// Target to client.
    pub to_client: TcpLink,
    /// Resets a connection (RST to both peers) once it has forwarded this many bytes,
    /// both directions together, counted from when this value was set (for a
    /// connection opened later: from its start). The last write is cut so that exactly
    /// this many bytes are forwarded. `Some(0)` resets every connection at once.
    pub reset_after: Option<u64>,
    /// New connections are accepted and reset at once (RST); current ones go on.
    pub refuse: bool,
}

impl TcpFaults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// `delay` in both directions (a round trip gets twice that).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.to_target.delay = delay;
        self.to_client.delay = delay;
        self
    }

    /// `jitter` in both directions.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.to_target.jitter = jitter;
        self.to_client.jitter = jitter;
        self
    }

    /// A cap of `bytes_per_sec` in each direction (each has its own bucket).
    pub fn with_rate(mut self, bytes_per_sec: u64) -> Self {
        self.to_target.rate = Some(bytes_per_sec);
        self.to_client.rate = Some(bytes_per_sec);
        self
    }

    /// Both directions stalled (`on`) or flowing: see [`TcpLink::stalled`].
    pub fn with_blackhole(mut self, on: bool) -> Self {
        self.to_target.stalled = on;
        self.to_client.stalled = on;
        self
    }

    /// See [`TcpFaults::reset_after`].
    pub fn with_reset_after(mut self, bytes: u64) -> Self {
        self.reset_after = Some(bytes);
        self
    }

    /// See [`TcpFaults::refuse`].
    pub fn with_refuse(mut self, on: bool) -> Self {
        self.refuse = on;
        self
    }

    /// Both directions stalled.
    pub fn is_blackholed(&self) -> bool {
        self.to_target.stalled && self.to_client.stalled
    }
}

/// Counters of a [`TcpFaultProxy`] since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Connections accepted from clients (refused ones included).
    pub connections: u64,
    /// Connections reset at once because [`TcpFaults::refuse`] was set.
    pub refused: u64,
    /// Connections currently carried (connected to the target).
    pub active: u64,
    /// Connections the proxy reset (RST): [`TcpFaultProxy::reset_all`],
    /// [`TcpFaults::reset_after`], a peer's reset passed on, or a failed connect to
    /// the target.
    pub resets: u64,
    /// Bytes written to the target.
    pub to_target_bytes: u64,
    /// Bytes written to clients.
    pub to_client_bytes: u64,
}

#[derive(Default)]
struct TcpShared {
    connections: AtomicU64,
    refused: AtomicU64,
    active: AtomicU64,
    resets: AtomicU64,
    to_target: AtomicU64,
    to_client: AtomicU64,
    changed: Notify,
}

impl TcpShared {
    fn bump(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    fn snapshot(&self) -> TcpStats {
        TcpStats {
            connections: self.connections.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
            to_target_bytes: self.to_target.load(Ordering::Relaxed),
            to_client_bytes: self.to_client.load(Ordering::Relaxed),
        }
    }
}

/// Settings of a [`TcpFaultProxy`] fixed when it starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpProxyOptions {
    /// Seed of the jitter's random numbers; `None` takes one from the OS.
    pub seed: Option<u64>,
    /// TCP maximum segment size (`TCP_MAXSEG`) of the proxy's sockets, announced to
    /// its clients and to the target; `None` keeps the kernel's. Loopback's MSS is
    /// about 64 KiB, with which the kernel grows a busy sender's socket buffer to
    /// several MiB within seconds (up to `net.ipv4.tcp_wmem`'s maximum), far more
    /// than over a real network: behind a blackhole or a bandwidth cap the sender's
    /// kernel then holds a minute of a 500 kbit/s stream before the application
    /// notices. 1460 (Ethernet) keeps the buffers the size they have on the internet.
    pub mss: Option<u32>,
}

impl TcpProxyOptions {
    /// The MSS of an Ethernet path (1460 bytes).
    pub const ETHERNET_MSS: u32 = 1460;
}

/// A TCP proxy on 127.0.0.1 that injects [`TcpFaults`] between its clients and a
/// target. Each accepted connection gets its own connection to the target (made
/// when the connection is accepted, or once a blackhole in force then lifts: the
/// target sees nothing of a connection opened into a blackhole). `TCP_NODELAY` is set
/// on both sockets. Dropping the handle stops it and closes every connection.
#[derive(Debug)]
pub struct TcpFaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    faults: watch::Sender<TcpFaults>,
    resets: watch::Sender<u64>,
    shared: Arc<TcpShared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TcpShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl Drop for TcpFaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpFaultProxy {
    /// Listens on an ephemeral port of 127.0.0.1 and forwards to `target`, with no
    /// faults until told.
    pub async fn start(target: SocketAddr) -> Result<Self> {
        Self::start_with(target, TcpProxyOptions::default()).await
    }

    /// [`TcpFaultProxy::start`] with a fixed seed for the jitter.
    pub async fn start_seeded(target: SocketAddr, seed: u64) -> Result<Self> {
        let opts = TcpProxyOptions {
            seed: Some(seed),
            ..TcpProxyOptions::default()
        };
        Self::start_with(target, opts).await
    }

    /// [`TcpFaultProxy::start`] with `opts`.
    pub async fn start_with(target: SocketAddr, opts: TcpProxyOptions) -> Result<Self> {
        let listener =
            tcp_listener(opts.mss).context("binding the TCP fault proxy on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let (faults, faults_rx) = watch::channel(TcpFaults::none());
        let (resets, resets_rx) = watch::channel(0u64);
        let shared = Arc::new(TcpShared::default());
        let task = tokio::spawn(tcp_accept_loop(
            listener,
            target,
            opts.mss,
            faults_rx,
            resets_rx,
            shared.clone(),
            rng_from(opts.seed),
        ));
        Ok(Self {
            addr,
            target,
            faults,
            resets,
            shared,
            task,
        })
    }

    /// The address clients connect to (127.0.0.1, ephemeral port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port of [`TcpFaultProxy::addr`].
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where connections are forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Replaces the faults (current and new connections).
    pub fn set(&self, faults: TcpFaults) {
        self.faults.send_replace(faults);
    }

    /// Changes the faults in place: `proxy.update(|f| f.to_target.rate = Some(50_000))`.
    pub fn update(&self, change: impl FnOnce(&mut TcpFaults)) {
        self.faults.send_modify(change);
    }

    /// The faults in force.
    pub fn faults(&self) -> TcpFaults {
        self.faults.borrow().clone()
    }

    /// No faults from now on (data held by a blackhole is forwarded).
    pub fn clear(&self) {
        self.set(TcpFaults::none());
    }

    /// Stalls both directions (`true`) or lets them flow again: see
    /// [`TcpLink::stalled`]. Other faults are kept.
    pub fn blackhole(&self, on: bool) {
        self.update(|f| {
            f.to_target.stalled = on;
            f.to_client.stalled = on;
        });
    }

    /// Resets every current connection at once: RST to the client and to the target
    /// (`SO_LINGER` 0, then close). New connections are not affected.
    pub fn reset_all(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// The counters now.
    pub fn stats(&self) -> TcpStats {
        self.shared.snapshot()
    }

    /// Waits until `pred` holds for the counters (checked on every change), for at
    /// most `timeout`; returns the counters that satisfied it.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl FnMut(&TcpStats) -> bool,
    ) -> Result<TcpStats> {
        wait_on(&self.shared.changed, || self.stats(), timeout, pred).await
    }
}

/// A listener on an ephemeral port of 127.0.0.1 whose connections use `mss`.
fn tcp_listener(mss: Option<u32>) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    if let Some(mss) = mss {
        // Inherited by accepted sockets and announced in the SYN-ACK.
        sock.set_tcp_mss(mss)?;
    }
    sock.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    sock.listen(1024)?;
    sock.set_nonblocking(true)?;
    TcpListener::from_std(sock.into())
}

/// Connects to `target` announcing `mss`.
async fn tcp_connect(target: SocketAddr, mss: Option<u32>) -> io::Result<TcpStream> {
    let Some(mss) = mss else {
        return TcpStream::connect(target).await;
    };
    let sock = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sock.set_tcp_mss(mss)?;
    sock.set_nonblocking(true)?;
    TcpSocket::from_std_stream(sock.into())
        .connect(target)
        .await
}

/// Closes `sock` with an RST: `SO_LINGER` 0, then drop.
fn rst(sock: TcpStream) {
    let _ = SockRef::from(&sock).set_linger(Some(Duration::ZERO));
    drop(sock);
}

async fn tcp_accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mss: Option<u32>,
    faults: watch::Receiver<TcpFaults>,
    resets: watch::Receiver<u64>,
    shared: Arc<TcpShared>,
    mut rng: StdRng,
) {
    // Connection tasks are owned here: aborting this task aborts them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let client = match r {
                    Ok((client, _)) => client,
                    // EMFILE and the like: try again shortly.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                shared.bump(&shared.connections, 1);
                if faults.borrow().refuse {
                    rst(client);
                    shared.bump(&shared.refused, 1);
                    continue;
                }
                let conn = TcpConn {
                    faults: faults.clone(),
                    resets: resets.clone(),
                    shared: shared.clone(),
                    rng: StdRng::seed_from_u64(rng.random()),
                };
                conns.spawn(conn.run(client, target, mss));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Token bucket of a bandwidth-capped direction.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn burst(rate: u64) -> f64 {
        (rate as f64 / 20.0).max(MIN_READ)
    }

    fn refill(&mut self, rate: Option<u64>, now: Instant) {
        match rate {
            Some(r) => {
                let dt = now.saturating_duration_since(self.at).as_secs_f64();
                self.tokens = (self.tokens + dt * r as f64).min(Self::burst(r));
            }
            None => self.tokens = 0.0,
        }
        self.at = now;
    }

    /// How many bytes may be read now.
    fn budget(&self, rate: Option<u64>) -> usize {
        match rate {
            None => READ_CHUNK,
            Some(_) => (self.tokens.floor() as usize).min(READ_CHUNK),
        }
    }

    /// `None` if a read may happen now (or never will at rate 0); else when.
    fn ready_at(&self, rate: Option<u64>) -> Option<Instant> {
        let r = rate?;
        if r == 0 {
            return None;
        }
        let need = MIN_READ.min(Self::burst(r));
        if self.tokens >= need {
            None
        } else {
            Some(self.at + Duration::from_secs_f64((need - self.tokens) / r as f64))
        }
    }

    fn can_read(&self, rate: Option<u64>) -> bool {
        match rate {
            None => true,
            Some(0) => false,
            Some(r) => self.tokens >= MIN_READ.min(Self::burst(r)),
        }
    }
}

/// One direction of a connection: what was read and waits for its deadline.
struct Pipe {
    queue: VecDeque<(Instant, Vec<u8>, usize)>,
    queued: usize,
    last_deadline: Instant,
    bucket: Bucket,
    /// The sender closed its side (read returned 0).
    eof: bool,
    /// The proxy shut its write side toward the receiver.
    shut: bool,
}

impl Pipe {
    fn new(now: Instant) -> Self {
        Self {
            queue: VecDeque::new(),
            queued: 0,
            last_deadline: now,
            bucket: Bucket {
                tokens: 0.0,
                at: now,
            },
            eof: false,
            shut: false,
        }
    }
}

enum Event {
    Reset,
    Stop,
    Config,
    Readable(usize, io::Result<()>),
    Writable(usize, io::Result<()>),
    Timer,
}

/// How a connection ended.
enum End {
    /// Both sides closed normally (or the proxy stopped).
    Closed,
    /// RST to both sides.
    Reset,
}

struct TcpConn {
    faults: watch::Receiver<TcpFaults>,
    resets: watch::Receiver<u64>,
    shared: Arc<TcpShared>,
    rng: StdRng,
}

impl TcpConn {
    async fn run(mut self, client: TcpStream, target: SocketAddr, mss: Option<u32>) {
        // Only resets asked for from now on concern this connection.
        self.resets.borrow_and_update();
        let mut cfg = self.faults.borrow_and_update().clone();
        // Opened into a blackhole: the target sees nothing until it lifts.
        while cfg.is_blackholed() {
            tokio::select! {
                r = self.faults.changed() => {
                    if r.is_err() {
                        return;
                    }
                    cfg = self.faults.borrow_and_update().clone();
                }
                _ = self.resets.changed() => {
                    rst(client);
                    self.shared.bump(&self.shared.resets, 1);
                    return;
                }
            }
        }
        let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, tcp_connect(target, mss)).await {
            Ok(Ok(s)) => s,
            _ => {
                rst(client);
                self.shared.bump(&self.shared.resets, 1);
                return;
            }
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        self.shared.bump(&self.shared.active, 1);
        let end = self.pump(&client, &upstream, cfg).await;
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
        match end {
            End::Closed => self.shared.changed.notify_waiters(),
            End::Reset => {
                rst(client);
                rst(upstream);
                self.shared.bump(&self.shared.resets, 1);
            }
        }
    }

    /// Forwards both directions until both are closed, or a reset.
    async fn pump(&mut self, client: &TcpStream, upstream: &TcpStream, mut cfg: TcpFaults) -> End {
        let now = Instant::now();
        let mut pipes = [Pipe::new(now), Pipe::new(now)];
        // Bytes forwarded since `reset_after` was set.
        let mut since_reset_set: u64 = 0;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let now = Instant::now();
            if cfg.reset_after.is_some_and(|n| since_reset_set >= n) {
                return End::Reset;
            }
            let mut want_read = [false; 2];
            let mut due = [false; 2];
            let mut wake: Option<Instant> = None;
            for (i, pipe) in pipes.iter_mut().enumerate() {
                let link = if i == 0 {
                    &cfg.to_target
                } else {
                    &cfg.to_client
                };
                let dst = if i == 0 { upstream } else { client };
                if !pipe.shut && (link.shut || (pipe.eof && pipe.queue.is_empty())) {
                    let _ = SockRef::from(dst).shutdown(Shutdown::Write);
                    pipe.shut = true;
                    pipe.queue.clear();
                    pipe.queued = 0;
                }
                pipe.bucket.refill(link.rate, now);
                if pipe.shut || link.stalled {
                    continue;
                }
                if !pipe.eof && pipe.queued < TCP_QUEUE_LIMIT {
                    if pipe.bucket.can_read(link.rate) {
                        want_read[i] = true;
                    } else if let Some(at) = pipe.bucket.ready_at(link.rate) {
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                    }
                }
                if let Some((at, _, _)) = pipe.queue.front() {
                    if *at <= now {
                        due[i] = true;
                    } else {
                        wake = Some(wake.map_or(*at, |w| w.min(*at)));
                    }
                }
            }
            if pipes.iter().all(|p| p.eof && p.shut) {
                return End::Closed;
            }
            let event = tokio::select! {
                biased;
                r = self.resets.changed() => if r.is_ok() { Event::Reset } else { Event::Stop },
                r = self.faults.changed() => if r.is_ok() { Event::Config } else { Event::Stop },
                r = client.readable(), if want_read[0] => Event::Readable(0, r),
                r = upstream.readable(), if want_read[1] => Event::Readable(1, r),
                r = upstream.writable(), if due[0] => Event::Writable(0, r),
                r = client.writable(), if due[1] => Event::Writable(1, r),
                () = sleep_until_opt(wake), if wake.is_some() => Event::Timer,
            };
            match event {
                Event::Reset => return End::Reset,
                Event::Stop => return End::Closed,
                Event::Timer => {}
                Event::Config => {
                    let new = self.faults.borrow_and_update().clone();
                    if new.reset_after != cfg.reset_after {
                        since_reset_set = 0;
                    }
                    cfg = new;
                }
                Event::Readable(i, r) => {
                    if r.is_err() {
                        return End::Reset;
                    }
                    let link = if i == 0 {
                        &cfg.to_target
                    } else {
                        &cfg.to_client
                    };
                    let src = if i == 0 { client } else { upstream };
                    let pipe = &mut pipes[i];
                    let max = pipe.bucket.budget(link.rate).max(1);
                    match src.try_read(&mut buf[..max]) {
                        Ok(0) => pipe.eof = true,
                        Ok(n) => {
                            if link.rate.is_some() {
                                pipe.bucket.tokens -= n as f64;
                            }
                            let jitter = jitter_sample(&mut self.rng, link.jitter);
                            let at = (now + link.delay + jitter).max(pipe.last_deadline);
                            pipe.last_deadline = at;
                            pipe.queue.push_back((at, buf[..n].to_vec(), 0));
                            pipe.queued += n;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // The sender reset (or worse): pass it on.
                        Err(_) => return End::Reset,
                    }
                }
                Event::Writable(i, r) => {
                    if r.is_err() {
                        return End::Reset;
                    }
                    let dst = if i == 0 { upstream } else { client };
                    let pipe = &mut pipes[i];
                    let Some((_, data, off)) = pipe.queue.front_mut() else {
                        continue;
                    };
                    let mut end = data.len();
                    if let Some(limit) = cfg.reset_after {
                        let left = limit.saturating_sub(since_reset_set);
                        end = end.min(*off + usize::try_from(left).unwrap_or(usize::MAX));
                    }
                    match dst.try_write(&data[*off..end]) {
                        Ok(n) => {
                            *off += n;
                            pipe.queued -= n;
                            if *off == data.len() {
                                pipe.queue.pop_front();
                            }
                            since_reset_set += n as u64;
                            let counter = if i == 0 {
                                &self.shared.to_target
                            } else {
                                &self.shared.to_client
                            };
                            self.shared.bump(counter, n as u64);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return End::Reset,
                    }
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever without one (for an optional `select!` deadline).
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------

/// Faults of one direction of a [`UdpFaultProxy`] (clients to target, or back).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UdpLink {
    /// Probability (0.0 to 1.0) that a datagram is dropped, independently of others.
    pub loss: f64,
    /// Fixed delay added to every datagram.
    pub delay: Duration,
    /// Up to this much random extra delay per datagram (uniform).
    pub jitter: Duration,
    /// With jitter, a datagram may overtake the ones received before it (what real
    /// jitter does). Without, each leaves no earlier than the one before it.
    pub reorder: bool,
    /// Bandwidth cap in bytes per second: datagrams leave no faster, and those that
    /// would wait more than 200 ms in the queue are dropped. `None` is unlimited.
    pub rate: Option<u64>,
    /// Every datagram in this direction is dropped.
    pub blackhole: bool,
}

/// The faults of a [`UdpFaultProxy`]; `UdpFaults::default()` (or [`UdpFaults::none`])
/// forwards everything untouched.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UdpFaults {
    /// Clients to target.
    pub to_target: UdpLink,
    /// Target to clients.
    pub to_client: UdpLink,
}

impl UdpFaults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// A loss probability of `p` in both directions.
    pub fn with_loss(mut self, p: f64) -> Self {
        self.to_target.loss = p;
        self.to_client.loss = p;
        self
    }

    /// `delay` in both directions.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.to_target.delay = delay;
        self.to_client.delay = delay;
        self
    }

    /// `jitter` in both directions, reordering datagrams or not.
    pub fn with_jitter(mut self, jitter: Duration, reorder: bool) -> Self {
        for link in [&mut self.to_target, &mut self.to_client] {
            link.jitter = jitter;
            link.reorder = reorder;
        }
        self
    }

    /// A cap of `bytes_per_sec` in each direction.
    pub fn with_rate(mut self, bytes_per_sec: u64) -> Self {
        self.to_target.rate = Some(bytes_per_sec);
        self.to_client.rate = Some(bytes_per_sec);
        self
    }

    /// Both directions dropping everything (`on`) or not.
    pub fn with_blackhole(mut self, on: bool) -> Self {
        self.to_target.blackhole = on;
        self.to_client.blackhole = on;
        self
    }
}

/// Datagram counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpCounts {
    /// Datagrams sent on.
    pub forwarded: u64,
    /// Datagrams dropped (loss, blackhole, bandwidth queue overflow).
    pub dropped: u64,
    /// Bytes sent on.
    pub forwarded_bytes: u64,
}

/// Counters of a [`UdpFaultProxy`] since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Distinct client addresses seen (each has its own socket toward the target).
    pub clients: u64,
    /// Clients to target.
    pub to_target: UdpCounts,
    /// Target to clients.
    pub to_client: UdpCounts,
}

#[derive(Default)]
struct UdpDirCounters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    forwarded_bytes: AtomicU64,
}

impl UdpDirCounters {
    fn snapshot(&self) -> UdpCounts {
        UdpCounts {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            forwarded_bytes: self.forwarded_bytes.load(Ordering::Relaxed),
        }
    }
}

#[derive(Default)]
struct UdpShared {
    clients: AtomicU64,
    to_target: UdpDirCounters,
    to_client: UdpDirCounters,
    changed: Notify,
}

impl UdpShared {
    fn snapshot(&self) -> UdpStats {
        UdpStats {
            clients: self.clients.load(Ordering::Relaxed),
            to_target: self.to_target.snapshot(),
            to_client: self.to_client.snapshot(),
        }
    }
}

impl std::fmt::Debug for UdpShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// A UDP proxy on 127.0.0.1 that injects [`UdpFaults`] between its clients and a
/// target. Each client address gets its own socket toward the target, so the target
/// sees distinct peers (as many as there are clients) and its replies go back to the
/// right client. Dropping the handle stops it.
#[derive(Debug)]
pub struct UdpFaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    faults: watch::Sender<UdpFaults>,
    shared: Arc<UdpShared>,
    task: JoinHandle<()>,
}

impl Drop for UdpFaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A datagram on its way, and the socket and address it leaves through.
struct Datagram {
    out: Arc<UdpSocket>,
    to: SocketAddr,
    data: Vec<u8>,
}

/// A datagram waiting for its departure time (a min-heap entry: earliest first, then
/// in arrival order).
struct Scheduled {
    at: Instant,
    seq: u64,
    dgram: Datagram,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Reversed: BinaryHeap is a max-heap.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

fn udp_bind_addr(target: SocketAddr) -> SocketAddr {
    match target {
        SocketAddr::V4(a) if a.ip().is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(a) if a.ip().is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

async fn udp_bind(addr: SocketAddr) -> Result<UdpSocket> {
    let sock = UdpSocket::bind(addr)
        .await
        .with_context(|| format!("binding a UDP socket on {addr}"))?;
    let _ = SockRef::from(&sock).set_recv_buffer_size(UDP_RECV_BUFFER);
    Ok(sock)
}

impl UdpFaultProxy {
    /// Listens on an ephemeral UDP port of 127.0.0.1 and forwards to `target`, with no
    /// faults until told.
    pub async fn start(target: SocketAddr) -> Result<Self> {
        Self::start_with(target, None).await
    }

    /// [`UdpFaultProxy::start`] with a fixed seed for loss and jitter.
    pub async fn start_seeded(target: SocketAddr, seed: u64) -> Result<Self> {
        Self::start_with(target, Some(seed)).await
    }

    async fn start_with(target: SocketAddr, seed: Option<u64>) -> Result<Self> {
        let listener = Arc::new(udp_bind((Ipv4Addr::LOCALHOST, 0).into()).await?);
        let addr = listener.local_addr()?;
        let (faults, faults_rx) = watch::channel(UdpFaults::none());
        let shared = Arc::new(UdpShared::default());
        let mut rng = rng_from(seed);
        let task = tokio::spawn(udp_main(
            listener,
            target,
            faults_rx,
            shared.clone(),
            [
                StdRng::seed_from_u64(rng.random()),
                StdRng::seed_from_u64(rng.random()),
            ],
        ));
        Ok(Self {
            addr,
            target,
            faults,
            shared,
            task,
        })
    }

    /// The address clients send to (127.0.0.1, ephemeral port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port of [`UdpFaultProxy::addr`].
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where datagrams are forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Replaces the faults (datagrams already scheduled keep their departure time).
    pub fn set(&self, faults: UdpFaults) {
        self.faults.send_replace(faults);
    }

    /// Changes the faults in place: `proxy.update(|f| f.to_target.loss = 0.1)`.
    pub fn update(&self, change: impl FnOnce(&mut UdpFaults)) {
        self.faults.send_modify(change);
    }

    /// The faults in force.
    pub fn faults(&self) -> UdpFaults {
        self.faults.borrow().clone()
    }

    /// No faults from now on.
    pub fn clear(&self) {
        self.set(UdpFaults::none());
    }

    /// Drops everything in both directions (`true`), or stops doing so.
    pub fn blackhole(&self, on: bool) {
        self.update(|f| {
            f.to_target.blackhole = on;
            f.to_client.blackhole = on;
        });
    }

    /// The counters now.
    pub fn stats(&self) -> UdpStats {
        self.shared.snapshot()
    }

    /// Waits until `pred` holds for the counters (checked on every change), for at
    /// most `timeout`; returns the counters that satisfied it.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl FnMut(&UdpStats) -> bool,
    ) -> Result<UdpStats> {
        wait_on(&self.shared.changed, || self.stats(), timeout, pred).await
    }
}

async fn udp_main(
    listener: Arc<UdpSocket>,
    target: SocketAddr,
    faults: watch::Receiver<UdpFaults>,
    shared: Arc<UdpShared>,
    [rng_up, rng_down]: [StdRng; 2],
) {
    // Every task of the proxy is owned here: aborting this task aborts them all.
    let mut tasks = JoinSet::new();
    let (up_tx, up_rx) = mpsc::unbounded_channel();
    let (down_tx, down_rx) = mpsc::unbounded_channel();
    tasks.spawn(udp_link(up_rx, faults.clone(), 0, shared.clone(), rng_up));
    tasks.spawn(udp_link(down_rx, faults, 1, shared.clone(), rng_down));
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match listener.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(_) => continue,
        };
        let up = match upstreams.get(&from) {
            Some(up) => up.clone(),
            None => {
                let Ok(sock) = udp_bind(udp_bind_addr(target)).await else {
                    continue;
                };
                let up = Arc::new(sock);
                upstreams.insert(from, up.clone());
                shared.clients.fetch_add(1, Ordering::Relaxed);
                shared.changed.notify_waiters();
                tasks.spawn(udp_upstream(
                    up.clone(),
                    target,
                    listener.clone(),
                    from,
                    down_tx.clone(),
                ));
                up
            }
        };
        let _ = up_tx.send(Datagram {
            out: up,
            to: target,
            data: buf[..n].to_vec(),
        });
    }
}

/// Reads what the target sends to one client's upstream socket and hands it to the
/// target-to-client link.
async fn udp_upstream(
    up: Arc<UdpSocket>,
    target: SocketAddr,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    down: mpsc::UnboundedSender<Datagram>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = up.recv_from(&mut buf).await else {
            continue;
        };
        if from != target {
            continue;
        }
        let d = Datagram {
            out: listener.clone(),
            to: client,
            data: buf[..n].to_vec(),
        };
        if down.send(d).is_err() {
            return;
        }
    }
}

/// One direction: decides each datagram's fate and sends it at its departure time.
async fn udp_link(
    mut rx: mpsc::UnboundedReceiver<Datagram>,
    faults: watch::Receiver<UdpFaults>,
    dir: usize,
    shared: Arc<UdpShared>,
    mut rng: StdRng,
) {
    let counters = if dir == 0 {
        &shared.to_target
    } else {
        &shared.to_client
    };
    let mut heap: BinaryHeap<Scheduled> = BinaryHeap::new();
    let mut seq = 0u64;
    // The bandwidth-capped queue is busy until then.
    let mut link_free = Instant::now();
    let mut last_at = Instant::now();
    loop {
        let next = heap.peek().map(|s| s.at);
        tokio::select! {
            biased;
            () = sleep_until_opt(next), if next.is_some() => {
                let now = Instant::now();
                while heap.peek().is_some_and(|s| s.at <= now) {
                    let Some(s) = heap.pop() else { break };
                    let d = s.dgram;
                    // A send error (no route, buffer full) is a loss like any other.
                    if d.out.send_to(&d.data, d.to).await.is_ok() {
                        counters.forwarded.fetch_add(1, Ordering::Relaxed);
                        counters
                            .forwarded_bytes
                            .fetch_add(d.data.len() as u64, Ordering::Relaxed);
                    } else {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                shared.changed.notify_waiters();
            }
            d = rx.recv() => {
                let Some(d) = d else { return };
                let link = {
                    let f = faults.borrow();
                    if dir == 0 { f.to_target.clone() } else { f.to_client.clone() }
                };
                let now = Instant::now();
                let lost = link.loss > 0.0 && rng.random::<f64>() < link.loss;
                let mut depart = now;
                let mut overflow = false;
                if let Some(rate) = link.rate {
                    let start = link_free.max(now);
                    if rate == 0 || start - now > UDP_QUEUE_LIMIT {
                        overflow = true;
                    } else if !link.blackhole && !lost {
                        link_free = start + Duration::from_secs_f64(d.data.len() as f64 / rate as f64);
                        depart = link_free;
                    }
                }
                if link.blackhole || lost || overflow {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    shared.changed.notify_waiters();
                    continue;
                }
                let mut at = depart + link.delay + jitter_sample(&mut rng, link.jitter);
                if !link.reorder {
                    at = at.max(last_at);
                }
                last_at = last_at.max(at);
                heap.push(Scheduled { at, seq, dgram: d });
                seq += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TCP echo server on 127.0.0.1; runs until the test's runtime ends.
    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// What a [`sink_server`] connection saw.
    #[derive(Default)]
    struct Sink {
        bytes: AtomicU64,
        /// 1 once the connection ended: EOF or error.
        ended: AtomicU64,
        /// 1 if it ended with an error (e.g. ECONNRESET).
        errored: AtomicU64,
        changed: Notify,
    }

    /// A TCP server that reads and counts everything of its (single) connection.
    async fn sink_server() -> (SocketAddr, Arc<Sink>) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let sink = Arc::new(Sink::default());
        let s2 = sink.clone();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        s2.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        s2.changed.notify_waiters();
                    }
                    Err(_) => {
                        s2.errored.store(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            s2.ended.store(1, Ordering::Relaxed);
            s2.changed.notify_waiters();
        });
        (addr, sink)
    }

    impl Sink {
        async fn wait_bytes(&self, n: u64, timeout: Duration) -> u64 {
            wait_on(
                &self.changed,
                || self.bytes.load(Ordering::Relaxed),
                timeout,
                |b| *b >= n,
            )
            .await
            .unwrap()
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Writes `data` and reads the echo back concurrently.
    async fn echo_roundtrip(stream: TcpStream, data: Vec<u8>) -> Vec<u8> {
        let (mut r, mut w) = stream.into_split();
        let len = data.len();
        let writer = tokio::spawn(async move {
            w.write_all(&data).await.unwrap();
            w
        });
        let mut got = vec![0u8; len];
        r.read_exact(&mut got).await.unwrap();
        drop(writer.await.unwrap());
        got
    }

    #[tokio::test]
    async fn tcp_bytes_pass_intact_without_faults() {
        let proxy = TcpFaultProxy::start(echo_server().await).await.unwrap();
        let data = pattern(3 * 1024 * 1024 + 17);
        let s = TcpStream::connect(proxy.addr()).await.unwrap();
        let got = echo_roundtrip(s, data.clone()).await;
        assert!(got == data, "echo differs");
        let st = proxy.stats();
        assert_eq!(st.connections, 1);
        assert_eq!(st.to_target_bytes, data.len() as u64);
        assert_eq!(st.to_client_bytes, data.len() as u64);
        // The client closing ends the proxied connection.
        proxy
            .wait_until(Duration::from_secs(5), |s| s.active == 0)
            .await
            .unwrap();
        assert_eq!(proxy.stats().resets, 0);
    }

    #[tokio::test]
    async fn tcp_mss_option_is_announced_both_ways() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let opts = TcpProxyOptions {
            mss: Some(TcpProxyOptions::ETHERNET_MSS),
            ..TcpProxyOptions::default()
        };
        let proxy = TcpFaultProxy::start_with(l.local_addr().unwrap(), opts)
            .await
            .unwrap();
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut server, _) = l.accept().await.unwrap();
        // What each end may send per segment: at most what the proxy announced.
        for s in [&client, &server] {
            let mss = SockRef::from(s).tcp_mss().unwrap();
            assert!(mss <= TcpProxyOptions::ETHERNET_MSS, "mss {mss}");
        }
        let data = pattern(100_000);
        client.write_all(&data).await.unwrap();
        let mut got = vec![0u8; data.len()];
        server.read_exact(&mut got).await.unwrap();
        assert!(got == data);
    }

    #[tokio::test]
    async fn tcp_delay_adds_at_least_the_delay_and_jitter_keeps_order() {
        let proxy = TcpFaultProxy::start_seeded(echo_server().await, 7)
            .await
            .unwrap();
        let delay = Duration::from_millis(150);
        proxy.set(TcpFaults::none().with_delay(delay));
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.set_nodelay(true).unwrap();
        let t0 = Instant::now();
        s.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        let rtt = t0.elapsed();
        assert_eq!(&b, b"ping");
        // One delay each way.
        assert!(
            rtt >= 2 * delay,
            "round trip {rtt:?} with {delay:?} each way"
        );

        // Jitter larger than the spacing of the writes: order must still hold.
        proxy.set(TcpFaults::none().with_jitter(Duration::from_millis(40)));
        let data = pattern(200 * 101);
        let (mut r, mut w) = s.into_split();
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in data.chunks(101) {
                w.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let mut got = vec![0u8; expect.len()];
        r.read_exact(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == expect, "jitter reordered bytes");
    }

    #[tokio::test]
    async fn tcp_bandwidth_cap_holds_the_rate() {
        let (target, sink) = sink_server().await;
        let proxy = TcpFaultProxy::start(target).await.unwrap();
        let rate = 200_000u64;
        proxy.set(TcpFaults::none().with_rate(rate));
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let writer = tokio::spawn(async move {
            let chunk = vec![0u8; 64 * 1024];
            // Far more than 1.5 s worth; the writer blocks on backpressure.
            while s.write_all(&chunk).await.is_ok() {}
        });
        // Measure from the first bytes on, over about 1.5 s.
        let start_bytes = sink.wait_bytes(1, Duration::from_secs(5)).await;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let bytes = sink.bytes.load(Ordering::Relaxed) - start_bytes;
        let measured = bytes as f64 / t0.elapsed().as_secs_f64();
        writer.abort();
        let ratio = measured / rate as f64;
        eprintln!("bandwidth cap {rate} B/s: measured {measured:.0} B/s ({ratio:.3})");
        assert!(
            (0.7..=1.3).contains(&ratio),
            "measured {measured:.0} B/s for a cap of {rate} B/s"
        );
    }

    #[tokio::test]
    async fn tcp_blackhole_goes_silent_without_closing() {
        let (target, sink) = sink_server().await;
        let proxy = TcpFaultProxy::start(target).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(&[1u8; 1000]).await.unwrap();
        sink.wait_bytes(1000, Duration::from_secs(5)).await;

        proxy.blackhole(true);
        // Writes are accepted until the socket buffers (the client's send buffer and
        // the proxy's receive buffer) are full, then stall.
        let chunk = vec![2u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            assert!(written < 256 * 1024 * 1024, "writes never stalled");
            let write = tokio::time::timeout(Duration::from_millis(500), s.write_all(&chunk));
            if let Ok(r) = write.await {
                r.unwrap();
                written += chunk.len() as u64;
                continue;
            }
            // Half a second without progress: stalled for good if the socket takes
            // not even one more byte (a loaded machine may just have been slow).
            match s.try_write(&[2u8]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                r => written += r.unwrap() as u64,
            }
        }
        eprintln!("blackhole: writes stalled after {written} bytes");
        // Nothing was delivered, and the connection is open on both ends: no EOF or
        // RST for the client, none for the target.
        assert_eq!(sink.bytes.load(Ordering::Relaxed), 1000);
        assert_eq!(proxy.stats().to_target_bytes, 1000);
        let mut b = [0u8; 1];
        match s.try_read(&mut b) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("the blackholed connection was not silent: {other:?}"),
        }
        assert_eq!(sink.ended.load(Ordering::Relaxed), 0, "target saw a close");
        assert_eq!(proxy.stats().resets, 0);

        // Lifted: what was held flows on (the last chunk may be partly written).
        proxy.blackhole(false);
        sink.wait_bytes(1000 + written, Duration::from_secs(10))
            .await;
        assert_eq!(sink.ended.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn tcp_reset_gives_econnreset() {
        let (target, sink) = sink_server().await;
        let proxy = TcpFaultProxy::start(target).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        sink.wait_bytes(5, Duration::from_secs(5)).await;
        proxy.reset_all();
        let mut b = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .unwrap();
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::ConnectionReset));
        // The target was reset too.
        wait_on(
            &sink.changed,
            || sink.ended.load(Ordering::Relaxed),
            Duration::from_secs(5),
            |e| *e == 1,
        )
        .await
        .unwrap();
        assert_eq!(sink.errored.load(Ordering::Relaxed), 1, "target saw a FIN");
        assert_eq!(proxy.stats().resets, 1);
    }

    #[tokio::test]
    async fn tcp_reset_after_n_bytes_forwards_exactly_n() {
        let (target, sink) = sink_server().await;
        let proxy = TcpFaultProxy::start(target).await.unwrap();
        proxy.set(TcpFaults::none().with_reset_after(10_000));
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        // Keep writing until the reset shows.
        let chunk = vec![3u8; 4096];
        let mut err = None;
        for _ in 0..1000 {
            if let Err(e) = s.write_all(&chunk).await {
                err = Some(e.kind());
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            matches!(
                err,
                Some(io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
            ),
            "{err:?}"
        );
        proxy
            .wait_until(Duration::from_secs(5), |s| s.resets == 1)
            .await
            .unwrap();
        assert_eq!(proxy.stats().to_target_bytes, 10_000);
        assert!(sink.bytes.load(Ordering::Relaxed) <= 10_000);
    }

    #[tokio::test]
    async fn tcp_refuse_and_half_open() {
        let proxy = TcpFaultProxy::start(echo_server().await).await.unwrap();
        proxy.set(TcpFaults::none().with_refuse(true));
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = [0u8; 4];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .unwrap();
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::ConnectionReset));
        assert_eq!(proxy.stats().refused, 1);

        // Half-open: the echo flows to the target but not back.
        proxy.set(TcpFaults::none());
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.update(|f| f.to_client.stalled = true);
        s.write_all(b"abcd").await.unwrap();
        proxy
            .wait_until(Duration::from_secs(5), |s| s.to_target_bytes == 4)
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), s.read(&mut b))
                .await
                .is_err()
        );
        proxy.update(|f| f.to_client.stalled = false);
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"abcd");

        // Half-close toward the client: it reads EOF, and can still send.
        proxy.update(|f| f.to_client.shut = true);
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0, "EOF expected");
        s.write_all(b"more").await.unwrap();
        proxy
            .wait_until(Duration::from_secs(5), |s| s.to_target_bytes == 8)
            .await
            .unwrap();
    }

    /// A UDP echo server on 127.0.0.1 counting the datagrams it received (in
    /// [`Sink::bytes`]).
    async fn udp_echo() -> (SocketAddr, Arc<Sink>) {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = s.local_addr().unwrap();
        let count = Arc::new(Sink::default());
        let c2 = count.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let (n, from) = s.recv_from(&mut buf).await.unwrap();
                c2.bytes.fetch_add(1, Ordering::Relaxed);
                c2.changed.notify_waiters();
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        (addr, count)
    }

    async fn udp_client(proxy: &UdpFaultProxy) -> UdpSocket {
        let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        c.connect(proxy.addr()).await.unwrap();
        c
    }

    #[tokio::test]
    async fn udp_passes_intact_with_distinct_peers() {
        let (target, _) = udp_echo().await;
        let proxy = UdpFaultProxy::start(target).await.unwrap();
        let (a, b) = (udp_client(&proxy).await, udp_client(&proxy).await);
        let mut buf = [0u8; 64];
        for (c, msg) in [(&a, b"from a".as_slice()), (&b, b"from b".as_slice())] {
            c.send(msg).await.unwrap();
            let n = tokio::time::timeout(Duration::from_secs(5), c.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], msg);
        }
        let st = proxy.stats();
        assert_eq!(st.clients, 2);
        assert_eq!(st.to_target.forwarded, 2);
        assert_eq!(st.to_client.forwarded, 2);
    }

    #[tokio::test]
    async fn udp_loss_of_half_drops_about_half() {
        let (target, echoed) = udp_echo().await;
        let proxy = UdpFaultProxy::start_seeded(target, 42).await.unwrap();
        proxy.update(|f| f.to_target.loss = 0.5);
        let c = udp_client(&proxy).await;
        let total = 2000u64;
        for batch in 0..(total / 50) {
            for i in 0..50u64 {
                c.send(&(batch * 50 + i).to_be_bytes()).await.unwrap();
            }
            // Let the proxy catch up, so no socket buffer overflows.
            proxy
                .wait_until(Duration::from_secs(5), |s| {
                    s.to_target.forwarded + s.to_target.dropped >= (batch + 1) * 50
                })
                .await
                .unwrap();
        }
        let st = proxy.stats();
        let dropped = st.to_target.dropped as f64 / total as f64;
        eprintln!("UDP loss 0.5: dropped {dropped:.3} of {total}");
        assert!((0.35..=0.65).contains(&dropped), "dropped {dropped:.3}");
        // The target got exactly what was forwarded.
        let got = echoed
            .wait_bytes(st.to_target.forwarded, Duration::from_secs(5))
            .await;
        assert_eq!(got, st.to_target.forwarded);
    }

    #[tokio::test]
    async fn udp_delay_and_jitter() {
        let (target, _) = udp_echo().await;
        let proxy = UdpFaultProxy::start_seeded(target, 1).await.unwrap();
        let delay = Duration::from_millis(100);
        proxy.update(|f| f.to_target.delay = delay);
        let c = udp_client(&proxy).await;
        let mut buf = [0u8; 64];
        let t0 = Instant::now();
        c.send(b"x").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), c.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(t0.elapsed() >= delay, "{:?}", t0.elapsed());

        // Jitter much larger than the spacing: with reordering some datagrams
        // overtake others, without none do.
        for reorder in [true, false] {
            proxy.set(UdpFaults::none().with_jitter(Duration::from_millis(20), reorder));
            let n = 100u64;
            let mut got = Vec::new();
            for i in 0..n {
                c.send(&i.to_be_bytes()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                while let Ok(len) = c.try_recv(&mut buf) {
                    got.push(u64::from_be_bytes(buf[..len].try_into().unwrap()));
                }
            }
            while got.len() < n as usize {
                let len = tokio::time::timeout(Duration::from_secs(5), c.recv(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                got.push(u64::from_be_bytes(buf[..len].try_into().unwrap()));
            }
            let inversions = got.windows(2).filter(|w| w[1] < w[0]).count();
            if reorder {
                assert!(inversions > 0, "no reordering with reorder on");
            } else {
                assert_eq!(inversions, 0, "reordered with reorder off: {got:?}");
            }
        }
    }

    #[tokio::test]
    async fn udp_blackhole_and_rate() {
        let (target, echoed) = udp_echo().await;
        let proxy = UdpFaultProxy::start(target).await.unwrap();
        proxy.blackhole(true);
        let c = udp_client(&proxy).await;
        for _ in 0..10 {
            c.send(b"lost").await.unwrap();
        }
        let st = proxy
            .wait_until(Duration::from_secs(5), |s| s.to_target.dropped == 10)
            .await
            .unwrap();
        assert_eq!(st.to_target.forwarded, 0);
        assert_eq!(echoed.bytes.load(Ordering::Relaxed), 0);

        // 1000-byte datagrams at 50 kB/s: 20 per second get through, and the queue
        // (200 ms) overflows.
        proxy.set(UdpFaults::none());
        proxy.update(|f| f.to_target.rate = Some(50_000));
        let t0 = Instant::now();
        for _ in 0..100 {
            c.send(&[0u8; 1000]).await.unwrap();
        }
        let st = proxy
            .wait_until(Duration::from_secs(5), |s| {
                s.to_target.forwarded + s.to_target.dropped >= 110
            })
            .await
            .unwrap();
        let elapsed = t0.elapsed();
        assert!(st.to_target.dropped > 10 + 50, "{st:?}");
        assert!(st.to_target.forwarded >= 5, "{st:?}");
        // What was forwarded left no faster than the rate allows (minus one datagram).
        let max = 50_000.0 * elapsed.as_secs_f64() / 1000.0 + 1.0;
        assert!(
            (st.to_target.forwarded as f64) <= max,
            "{st:?} in {elapsed:?}"
        );
    }
}
