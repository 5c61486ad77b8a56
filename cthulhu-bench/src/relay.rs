//! Relay destinations: an RTMP listener (on rml_rtmp's `ServerSession`) that
//! accepts every connect and publish from the server under test and measures
//! what arrives per destination, matching video to the publisher's send times.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tracing::{debug, info};

use crate::skim::body_hash;
use crate::stats::{Clock, ErrorLog, LatencyLog, PeerState, PeerStats, SentLog, Window};

/// One destination: a publishing connection from the server under test.
#[derive(Debug)]
pub struct Destination {
    /// The stream name it published (`d0`, `d1`, ...).
    pub name: String,
    /// Its byte counters.
    pub stats: PeerStats,
    /// Its video latencies.
    pub latency: LatencyLog,
}

/// The destinations that have connected so far.
#[derive(Debug, Default)]
pub struct Destinations {
    list: Mutex<Vec<Arc<Destination>>>,
    changed: Notify,
}

impl Destinations {
    /// No destinations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The destinations so far.
    pub fn list(&self) -> Vec<Arc<Destination>> {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `k` destinations publish.
    pub async fn wait_for(&self, k: usize) {
        loop {
            let notified = self.changed.notified();
            if self.list().len() >= k {
                return;
            }
            notified.await;
        }
    }

    fn add(&self, d: Arc<Destination>) {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(d);
        self.changed.notify_waiters();
    }
}

/// What every destination session shares.
#[derive(Debug, Clone)]
pub struct RelayShared {
    /// The run's clock.
    pub clock: Clock,
    /// The measurement window.
    pub window: Arc<Window>,
    /// The publisher's send times.
    pub sent: Arc<SentLog>,
    /// Where destinations register.
    pub dests: Arc<Destinations>,
    /// Why sessions failed.
    pub errors: ErrorLog,
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, shared: RelayShared) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                debug!(peer = %peer, "Relay connection");
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = session(sock, &shared).await {
                        shared.errors.add(e);
                    }
                });
            }
            Err(e) => {
                shared.errors.add(format!("accept: {}", e.kind()));
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

fn guarded<T, E: std::fmt::Display>(
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: malformed input")),
    }
}

async fn session(mut sock: TcpStream, shared: &RelayShared) -> Result<(), String> {
    let _ = sock.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut hs = Handshake::new(PeerType::Server);
    let leftover = loop {
        let n = sock
            .read(&mut buf)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        if n == 0 {
            return Err("closed in the handshake".into());
        }
        let input = buf.get(..n).unwrap_or_default();
        match guarded("handshake", || hs.process_bytes(input))? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                sock.write_all(&response_bytes)
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                sock.write_all(&response_bytes)
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                break remaining_bytes;
            }
        }
    };
    let mut config = ServerSessionConfig::new();
    // Acknowledge often enough that no sender waits on us.
    config.window_ack_size = 2_500_000;
    let (mut session, initial) = guarded("session", || ServerSession::new(config))?;
    let mut conn = Conn {
        dest: None,
        out: Vec::new(),
        bytes: 0,
        media_bytes: 0,
    };
    conn.results(&mut session, initial, shared)?;
    conn.input(&mut session, &leftover, shared)?;
    loop {
        if !conn.out.is_empty() {
            sock.write_all(&conn.out)
                .await
                .map_err(|e| format!("writing: {e}"))?;
            conn.out.clear();
        }
        let n = sock
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading: {}", e.kind()))?;
        if n == 0 {
            if let Some(d) = &conn.dest {
                d.stats.set_state(PeerState::Gone);
                info!(dest = %d.name, "Relay destination closed");
            }
            return Ok(());
        }
        let input = buf.get(..n).unwrap_or_default();
        conn.bytes += n as u64;
        conn.input(&mut session, input, shared)?;
    }
}

struct Conn {
    dest: Option<Arc<Destination>>,
    out: Vec<u8>,
    bytes: u64,
    media_bytes: u64,
}

impl Conn {
    fn input(
        &mut self,
        session: &mut ServerSession,
        input: &[u8],
        shared: &RelayShared,
    ) -> Result<(), String> {
        let results = guarded("chunk stream", || session.handle_input(input))?;
        self.results(session, results, shared)?;
        let now = Instant::now();
        let now_us = shared.clock.at_us(now);
        if let Some(d) = &self.dest {
            d.stats
                .record_read(&shared.window, now_us, self.bytes, self.media_bytes);
        }
        Ok(())
    }

    fn results(
        &mut self,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
        shared: &RelayShared,
    ) -> Result<(), String> {
        let mut queue = std::collections::VecDeque::from(results);
        while let Some(r) = queue.pop_front() {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.out.extend_from_slice(&p.bytes),
                ServerSessionResult::RaisedEvent(ev) => {
                    let more = self.event(session, ev, shared)?;
                    queue.extend(more);
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    fn event(
        &mut self,
        session: &mut ServerSession,
        ev: ServerSessionEvent,
        shared: &RelayShared,
    ) -> Result<Vec<ServerSessionResult>, String> {
        match ev {
            ServerSessionEvent::ConnectionRequested { request_id, .. }
            | ServerSessionEvent::ReleaseStreamRequested { request_id, .. } => {
                guarded("accept", || session.accept_request(request_id))
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => {
                let name = stream_key
                    .split_once('?')
                    .map_or(stream_key.as_str(), |(n, _)| n)
                    .to_owned();
                info!(dest = %name, "Relay destination publishing");
                let d = Arc::new(Destination {
                    name,
                    stats: PeerStats::new(),
                    latency: LatencyLog::new(),
                });
                d.stats.set_state(PeerState::Active);
                shared.dests.add(d.clone());
                self.dest = Some(d);
                guarded("accept publish", || session.accept_request(request_id))
            }
            ServerSessionEvent::VideoDataReceived { data, .. } => {
                self.media_bytes += data.len() as u64;
                if let Some(d) = &self.dest {
                    let now = Instant::now();
                    d.latency.observe(
                        &shared.sent,
                        &shared.window,
                        body_hash(&data),
                        now,
                        shared.clock.at_us(now),
                    );
                }
                Ok(Vec::new())
            }
            ServerSessionEvent::AudioDataReceived { data, .. } => {
                self.media_bytes += data.len() as u64;
                Ok(Vec::new())
            }
            _ => Ok(Vec::new()),
        }
    }
}
