//! An open SRT connection: the public halves and the driver task.
//!
//! The driver owns srt-protocol's `DuplexConnection` and is the only code
//! that touches it. Its inputs: datagrams from a bounded queue (filled by the
//! listener's dispatcher or the caller's socket reader, which drop when it is
//! full), messages from the [`SrtSender`] (bounded; `send` waits), and timers.
//! Its outputs: datagrams to the UDP socket and messages to the
//! [`SrtReceiver`] (bounded; dropped and counted when full, so a slow reader
//! never delays acknowledgements). Each step into srt-protocol is wrapped in
//! [`guarded`]: a panic ends this connection only.
//!
//! Closing: [`SrtSender::close`] waits until the peer had the latency to
//! deliver the last message (libsrt drops what it still holds when a shutdown
//! arrives), then asks srt-protocol to flush and shut down (bounded by twice
//! the latency, plus a hard deadline of ours). Dropping one
//! half leaves the other working (an ingest drops its sender); dropping both
//! closes gracefully in the background.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use srt_protocol::connection::DuplexConnection;
use srt_protocol::packet::{ControlPacket, ControlTypes, Packet, ReceivePacketError, TimeStamp};
use srt_protocol::statistics::SocketStatistics;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;
use tracing::{debug, info, warn};

use crate::config::{ConnParams, MAX_PAYLOAD};
use crate::error::SrtError;
use crate::guard::guarded;
use crate::streamid::redact as redact_stream_id;

/// Datagrams or messages handled per wake-up before outputs are drained.
const BATCH: usize = 64;
/// Time beyond the peer's latency a close waits after the last message
/// before the shutdown (round trip and scheduling).
const LINGER_MARGIN: Duration = Duration::from_millis(200);
/// Extra time, beyond srt-protocol's own flush timeout, before a closing
/// connection is abandoned.
const CLOSE_SLACK: Duration = Duration::from_secs(2);

/// Counters of one connection. Totals since the connection opened; the SRT
/// figures are refreshed about once a second and when it closes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Time since the connection started.
    pub elapsed: Duration,
    /// Data packets sent, retransmissions included.
    pub packets_sent: u64,
    /// Data packets received, retransmissions included.
    pub packets_received: u64,
    /// Packets the peer reported lost (we retransmitted or dropped them).
    pub packets_sent_lost: u64,
    /// Gaps we detected in what the peer sent (srt-protocol 0.4.4 never
    /// counts these: always 0).
    pub packets_received_lost: u64,
    /// Packets we retransmitted.
    pub packets_retransmitted: u64,
    /// Retransmitted packets we received.
    pub packets_received_retransmitted: u64,
    /// Packets our sender dropped (too late, or the send buffer was full).
    pub packets_send_dropped: u64,
    /// Packets our receiver gave up on (too late for the latency).
    pub packets_recv_dropped: u64,
    /// Datagrams dropped before SRT saw them because this connection's
    /// inbound queue was full (the driver fell behind).
    pub datagrams_queue_dropped: u64,
    /// Received messages dropped because the [`SrtReceiver`] queue was full.
    pub messages_queue_dropped: u64,
    /// Packets that failed to decrypt.
    pub decrypt_errors: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Smoothed round-trip time (srt-protocol 0.4.4 does not report it:
    /// always 0 for now).
    pub rtt: Duration,
    /// Packets in the send buffer (sent or waiting, not yet acknowledged).
    pub send_buffer_packets: u64,
    /// Bytes in the send buffer.
    pub send_buffer_bytes: u64,
    /// Send buffer capacity in bytes (from the configuration).
    pub send_buffer_capacity_bytes: u64,
}

/// State shared between the driver and the handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    snapshot: Mutex<ConnectionStats>,
    pub(crate) datagrams_dropped: AtomicU64,
    messages_dropped: AtomicU64,
}

impl Shared {
    fn stats(&self) -> ConnectionStats {
        let mut s = self
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        s.datagrams_queue_dropped = self.datagrams_dropped.load(Ordering::Relaxed);
        s.messages_queue_dropped = self.messages_dropped.load(Ordering::Relaxed);
        s
    }

    fn update(&self, st: &SocketStatistics) {
        let mut s = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        s.elapsed = st.elapsed_time;
        s.packets_sent = st.tx_data;
        s.packets_received = st.rx_data;
        s.packets_sent_lost = st.tx_loss_data;
        s.packets_received_lost = st.rx_loss_data;
        s.packets_retransmitted = st.tx_retransmit_data;
        s.packets_received_retransmitted = st.rx_retransmit_data;
        s.packets_send_dropped = st.tx_dropped_data;
        s.packets_recv_dropped = st.rx_dropped_data;
        s.decrypt_errors = st.rx_decrypt_errors;
        s.bytes_sent = st.tx_bytes;
        s.bytes_received = st.rx_bytes;
        s.rtt = if st.tx_average_rtt.is_zero() {
            st.rx_average_rtt
        } else {
            st.tx_average_rtt
        };
        s.send_buffer_packets = st.tx_buffered_data;
        s.send_buffer_bytes = st.tx_buffered_bytes;
    }
}

/// What the sender half asks of the driver.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// A message and the time it was handed over (its SRT source time).
    Data(Instant, Bytes),
    /// Flush and shut down.
    Close,
}

/// An open SRT connection (listener or caller side). Use [`split`](Self::split)
/// to send and receive. Its `Debug` output redacts the stream id.
#[must_use = "an SrtConnection closes when dropped"]
pub struct SrtConnection {
    peer: SocketAddr,
    stream_id: Option<String>,
    latency: Duration,
    sender: SrtSender,
    receiver: SrtReceiver,
}

impl SrtConnection {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The stream id of the handshake (may contain a key: never log it raw,
    /// see [`redact_stream_id`](crate::redact_stream_id)).
    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref()
    }

    /// The negotiated receive latency (TSBPD delay).
    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// Current counters.
    pub fn stats(&self) -> ConnectionStats {
        self.sender.stats()
    }

    /// The sending and receiving halves. Dropping one leaves the other
    /// working; dropping both closes the connection.
    pub fn split(self) -> (SrtSender, SrtReceiver) {
        (self.sender, self.receiver)
    }
}

impl std::fmt::Debug for SrtConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtConnection")
            .field("peer", &self.peer)
            .field(
                "stream_id",
                &self.stream_id.as_deref().map(redact_stream_id),
            )
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

/// The sending half of an [`SrtConnection`].
#[derive(Debug)]
pub struct SrtSender {
    cmds: mpsc::Sender<Cmd>,
    done: watch::Receiver<bool>,
    shared: Arc<Shared>,
    close_bound: Duration,
}

impl SrtSender {
    /// Queues one message of at most [`MAX_PAYLOAD`] (1316) bytes, normally
    /// seven MPEG-TS packets; it becomes one SRT data packet. Waits only while
    /// the driver's bounded input queue is full. Larger messages are refused
    /// with [`SrtError::PayloadTooLarge`].
    pub async fn send(&mut self, data: Bytes) -> Result<(), SrtError> {
        check_len(&data)?;
        self.cmds
            .send(Cmd::Data(Instant::now(), data))
            .await
            .map_err(|_| SrtError::Closed)
    }

    /// Like [`send`](Self::send) without waiting: [`SrtError::Full`] when the
    /// queue is full, [`SrtError::Closed`] when the connection is gone.
    pub fn try_send(&mut self, data: Bytes) -> Result<(), SrtError> {
        check_len(&data)?;
        self.cmds
            .try_send(Cmd::Data(Instant::now(), data))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SrtError::Full,
                mpsc::error::TrySendError::Closed(_) => SrtError::Closed,
            })
    }

    /// True once the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.cmds.is_closed()
    }

    /// Current counters of the connection.
    pub fn stats(&self) -> ConnectionStats {
        self.shared.stats()
    }

    /// Graceful shutdown: what is queued is sent; the shutdown goes out once
    /// the peer had its latency (plus 200 ms) to deliver the last message and
    /// SRT has flushed what the peer still misses (up to twice the latency).
    /// Returns when the connection is closed, after at most about three times
    /// the latency plus 3 s (the receiving half ends too).
    pub async fn close(mut self) {
        let bound = self.close_bound;
        let _ = tokio::time::timeout(bound, async {
            let _ = self.cmds.send(Cmd::Close).await;
            let _ = self.done.wait_for(|done| *done).await;
        })
        .await;
    }
}

fn check_len(data: &Bytes) -> Result<(), SrtError> {
    if data.len() > MAX_PAYLOAD {
        return Err(SrtError::PayloadTooLarge(data.len()));
    }
    Ok(())
}

/// The receiving half of an [`SrtConnection`].
#[derive(Debug)]
pub struct SrtReceiver {
    data: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
}

impl SrtReceiver {
    /// The next message (one SRT message, usually 1316 bytes of MPEG-TS), in
    /// order, when its latency has passed; `None` once the connection closed.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.data.recv().await
    }

    /// Current counters of the connection.
    pub fn stats(&self) -> ConnectionStats {
        self.shared.stats()
    }
}

/// Starts the driver for an established connection. `inbound` carries the
/// peer's datagrams; `shared` is also held by whoever fills `inbound`.
pub(crate) fn spawn(
    conn: DuplexConnection,
    params: &ConnParams,
    socket: Arc<UdpSocket>,
    inbound: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
) -> SrtConnection {
    let settings = conn.settings();
    let peer = settings.remote;
    let stream_id = settings.stream_id.clone();
    let latency = settings.recv_tsbpd_latency;
    let flush = settings.send_tsbpd_latency.max(settings.recv_tsbpd_latency) * 2;
    let linger = settings.send_tsbpd_latency + LINGER_MARGIN;
    let close_bound = linger + flush + CLOSE_SLACK + Duration::from_secs(1);
    {
        let mut s = shared
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        s.send_buffer_capacity_bytes = u64::try_from(params.send_buffer_bytes).unwrap_or(u64::MAX);
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(params.send_queue_messages);
    let (data_tx, data_rx) = mpsc::channel(params.recv_queue_messages);
    let (done_tx, done_rx) = watch::channel(false);
    let driver = Driver {
        peer,
        remote_sockid: settings.remote_sockid,
        start: settings.socket_start_time,
        flush,
        linger,
        conn,
        socket,
        inbound,
        cmds: cmd_rx,
        data: data_tx,
        shared: shared.clone(),
        done: done_tx,
        ignored: 0,
    };
    tokio::spawn(driver.run());
    SrtConnection {
        peer,
        stream_id,
        latency,
        sender: SrtSender {
            cmds: cmd_tx,
            done: done_rx,
            shared: shared.clone(),
            close_bound,
        },
        receiver: SrtReceiver {
            data: data_rx,
            shared,
        },
    }
}

/// Control packets srt-protocol 0.4.4 answers with `todo!()` or
/// `unimplemented!()` (congestion warning, peer error, SRT extension packets
/// other than handshake and key material): never handed to it.
fn unhandled_control(d: &[u8]) -> Option<&'static str> {
    let first = u16::from_be_bytes([*d.first()?, *d.get(1)?]);
    if first & 0x8000 == 0 {
        return None;
    }
    match first & 0x7FFF {
        0x4 => Some("congestion warning"),
        0x8 => Some("peer error"),
        0x7FFF => {
            let subtype = u16::from_be_bytes([*d.get(2)?, *d.get(3)?]);
            (!(1..=4).contains(&subtype)).then_some("SRT extension")
        }
        _ => None,
    }
}

/// Why a driver stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// srt-protocol closed the connection (shutdown, idle timeout, flushed).
    Closed,
    /// Our close did not finish within the bound.
    CloseTimeout,
    /// srt-protocol panicked.
    Panic,
}

struct Driver {
    peer: SocketAddr,
    remote_sockid: srt_protocol::packet::SocketId,
    start: Instant,
    flush: Duration,
    linger: Duration,
    conn: DuplexConnection,
    socket: Arc<UdpSocket>,
    inbound: mpsc::Receiver<Bytes>,
    cmds: mpsc::Receiver<Cmd>,
    data: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    done: watch::Sender<bool>,
    /// Datagrams ignored (unhandled control packets, unparsable packets),
    /// logged only at powers of two: the peer (or anyone spoofing its
    /// address) decides how many there are.
    ignored: u64,
}

/// What one step of srt-protocol produced.
struct Step {
    open: bool,
    next_timer: Instant,
    stats: Option<SocketStatistics>,
}

impl Driver {
    async fn run(mut self) {
        let stream = self
            .conn
            .settings()
            .stream_id
            .as_deref()
            .map(redact_stream_id);
        debug!(peer = %self.peer, stream = ?stream, "SRT connection driver started");
        let mut packets: Vec<Bytes> = Vec::new();
        let mut messages: Vec<Bytes> = Vec::new();
        let mut buf = BytesMut::new();
        let mut cmds_open = true;
        let mut inbound_open = true;
        // When the last message was queued.
        let mut last_data: Option<Instant> = None;
        // A graceful close was requested: shut down at this time, once the
        // peer had the latency to deliver the last message (libsrt discards
        // what it still holds for TSBPD when it receives a shutdown).
        let mut close_at: Option<Instant> = None;
        // Set once we asked srt-protocol to shut down.
        let mut closing_since: Option<Instant> = None;
        let end = loop {
            let now = Instant::now();
            let Some(step) = self.step(now, &mut buf, &mut packets, &mut messages) else {
                break End::Panic;
            };
            if let Some(st) = &step.stats {
                self.shared.update(st);
            }
            for p in packets.drain(..) {
                if let Err(e) = self.socket.send_to(&p, self.peer).await {
                    debug!(peer = %self.peer, error = %e, "SRT send failed");
                }
            }
            for m in messages.drain(..) {
                if self.data.is_closed() {
                    break;
                }
                if self.data.try_send(m).is_err() {
                    self.shared.messages_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            if !step.open {
                break End::Closed;
            }
            // Both halves gone: close gracefully.
            if close_at.is_none() && !cmds_open && self.data.is_closed() {
                close_at = Some(self.linger_end(last_data, now));
            }
            if let Some(at) = close_at
                && closing_since.is_none()
                && now >= at
            {
                closing_since = Some(now);
                if !self.handle_data(now, None) {
                    break End::Panic;
                }
                continue;
            }
            let deadline = match (closing_since, close_at) {
                (Some(t), _) => {
                    let hard = t + self.flush + CLOSE_SLACK;
                    if now >= hard {
                        break End::CloseTimeout;
                    }
                    step.next_timer.min(hard)
                }
                (None, Some(at)) => step.next_timer.min(at),
                (None, None) => step.next_timer,
            };
            let watch_receiver = !cmds_open && close_at.is_none();
            tokio::select! {
                d = self.inbound.recv(), if inbound_open => match d {
                    Some(d) => {
                        let mut ok = self.handle_datagram(now, d);
                        for _ in 1..BATCH {
                            match self.inbound.try_recv() {
                                Ok(d) if ok => ok = self.handle_datagram(now, d),
                                _ => break,
                            }
                        }
                        if !ok {
                            break End::Panic;
                        }
                    }
                    None => {
                        // The dispatcher dropped us (listener gone, or the
                        // peer reconnected from the same address).
                        inbound_open = false;
                        let closed = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "listener gone");
                        let conn = &mut self.conn;
                        if guarded(self.peer, "closing a connection", || {
                            conn.handle_packet_input(now, Err(ReceivePacketError::Io(closed)));
                        }).is_none() {
                            break End::Panic;
                        }
                    }
                },
                c = self.cmds.recv(), if cmds_open && close_at.is_none() => match c {
                    Some(Cmd::Data(t, m)) => {
                        last_data = Some(t);
                        let mut ok = self.handle_data(now, Some((t, m)));
                        for _ in 1..BATCH {
                            match self.cmds.try_recv() {
                                Ok(Cmd::Data(t, m)) if ok => {
                                    last_data = Some(t);
                                    ok = self.handle_data(now, Some((t, m)));
                                }
                                Ok(Cmd::Close) => {
                                    close_at = Some(self.linger_end(last_data, now));
                                    break;
                                }
                                _ => break,
                            }
                        }
                        if !ok {
                            break End::Panic;
                        }
                    }
                    Some(Cmd::Close) => close_at = Some(self.linger_end(last_data, now)),
                    None => cmds_open = false,
                },
                _ = self.data.closed(), if watch_receiver => {}
                _ = sleep_until(deadline.into()) => {}
            }
        };
        if end != End::Closed {
            self.send_shutdown().await;
        }
        let conn = &mut self.conn;
        if let Some(st) = guarded(self.peer, "final statistics", || {
            conn.update_statistics(Instant::now());
            conn.statistics().clone()
        }) {
            self.shared.update(&st);
        }
        let stats = self.shared.stats();
        match end {
            End::Panic => {
                warn!(peer = %self.peer, stream = ?stream, "SRT connection ended by an srt-protocol panic")
            }
            End::CloseTimeout => {
                info!(peer = %self.peer, stream = ?stream, "SRT connection closed (flush timed out)")
            }
            End::Closed => info!(
                peer = %self.peer,
                stream = ?stream,
                sent = stats.packets_sent,
                received = stats.packets_received,
                retransmitted = stats.packets_retransmitted,
                recv_lost = stats.packets_received_lost,
                send_dropped = stats.packets_send_dropped,
                recv_dropped = stats.packets_recv_dropped,
                queue_dropped = stats.datagrams_queue_dropped + stats.messages_queue_dropped,
                "SRT connection closed"
            ),
        }
        let _ = self.done.send(true);
    }

    /// Runs srt-protocol's timers and collects its output. `None` if it
    /// panicked.
    fn step(
        &mut self,
        now: Instant,
        buf: &mut BytesMut,
        packets: &mut Vec<Bytes>,
        messages: &mut Vec<Bytes>,
    ) -> Option<Step> {
        let conn = &mut self.conn;
        guarded(self.peer, "driving a connection", || {
            let open = conn.is_open();
            if open {
                conn.check_timers(now);
            }
            let stats = if conn.should_update_statistics(now) {
                conn.update_statistics(now);
                Some(conn.statistics().clone())
            } else {
                None
            };
            while let Some((p, _)) = conn.next_packet(now) {
                p.serialize(buf);
                packets.push(buf.split().freeze());
            }
            while let Some((_, m)) = conn.next_data(now) {
                messages.push(m);
            }
            Step {
                open: open && conn.is_open(),
                next_timer: conn.next_timer(now),
                stats,
            }
        })
    }

    /// When a close may send the shutdown: once the peer's latency has passed
    /// since the last message was queued.
    fn linger_end(&self, last_data: Option<Instant>, now: Instant) -> Instant {
        last_data.map_or(now, |t| (t + self.linger).max(now))
    }

    /// Parses one datagram and hands it to srt-protocol. `false` if it panicked.
    fn handle_datagram(&mut self, now: Instant, d: Bytes) -> bool {
        let peer = self.peer;
        if let Some(kind) = unhandled_control(&d) {
            self.ignored += 1;
            if self.ignored.is_power_of_two() {
                debug!(peer = %peer, kind, ignored = self.ignored, "SRT control packet srt-protocol cannot handle; ignored");
            }
            return true;
        }
        let conn = &mut self.conn;
        let parsed = guarded(peer, "handling a packet", || {
            match Packet::parse(&mut &d[..], peer.is_ipv6()) {
                Ok(p) => {
                    conn.handle_packet_input(now, Ok((p, peer)));
                    None
                }
                Err(e) => Some(e),
            }
        });
        match parsed {
            None => false,
            Some(None) => true,
            Some(Some(e)) => {
                self.ignored += 1;
                if self.ignored.is_power_of_two() {
                    debug!(peer = %peer, error = %e, ignored = self.ignored, "Unparsable SRT packet ignored");
                }
                true
            }
        }
    }

    /// Hands a message (or the end of the stream) to srt-protocol. `false` if
    /// it panicked.
    fn handle_data(&mut self, now: Instant, m: Option<(Instant, Bytes)>) -> bool {
        let conn = &mut self.conn;
        guarded(self.peer, "queueing data", || {
            conn.handle_data_input(now, m)
        })
        .is_some()
    }

    /// Best-effort shutdown packet when we end without srt-protocol's own.
    async fn send_shutdown(&self) {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        let packet = Packet::Control(ControlPacket {
            timestamp: TimeStamp::from_micros(
                u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX),
            ),
            dest_sockid: self.remote_sockid,
            control_type: ControlTypes::Shutdown,
        });
        let mut buf = BytesMut::new();
        if guarded(self.peer, "serialising a shutdown", || {
            packet.serialize(&mut buf)
        })
        .is_some()
        {
            let _ = self.socket.send_to(&buf, self.peer).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_packets_that_panic_srt_protocol_are_recognised() {
        let mut p = [
            0x80, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0,
        ];
        assert_eq!(unhandled_control(&p), Some("peer error"));
        p[1] = 0x04;
        assert_eq!(unhandled_control(&p), Some("congestion warning"));
        p[0..4].copy_from_slice(&[0xFF, 0xFF, 0, 5]);
        assert_eq!(unhandled_control(&p), Some("SRT extension"));
        p[3] = 3; // key material request: handled
        assert_eq!(unhandled_control(&p), None);
        p[0..2].copy_from_slice(&[0x80, 0x02]); // ACK
        assert_eq!(unhandled_control(&p), None);
        p[0] = 0; // data
        assert_eq!(unhandled_control(&p), None);
        assert_eq!(unhandled_control(&[0x80]), None);
    }

    /// The panic is real: srt-protocol's DuplexConnection hits `todo!()` on a
    /// peer error packet; `guarded` contains it.
    #[test]
    fn srt_protocol_panics_on_peer_error_and_guarded_contains_it() {
        use srt_protocol::connection::{Connection, ConnectionSettings};
        use srt_protocol::options::{LiveBandwidthMode, PacketCount, PacketSize};
        use srt_protocol::packet::{SeqNumber, SocketId};
        use srt_protocol::protocol::handshake::Handshake;

        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let now = Instant::now();
        let mut conn = DuplexConnection::new(Connection {
            settings: ConnectionSettings {
                remote: peer,
                remote_sockid: SocketId(2),
                local_sockid: SocketId(1),
                socket_start_time: now,
                rtt: Duration::from_millis(1),
                init_seq_num: SeqNumber::new_truncate(0),
                max_packet_size: PacketSize(1316),
                max_flow_size: PacketCount(8192),
                send_tsbpd_latency: Duration::from_millis(120),
                recv_tsbpd_latency: Duration::from_millis(120),
                too_late_packet_drop: true,
                peer_idle_timeout: Duration::from_secs(5),
                recv_buffer_size: PacketCount(8192),
                send_buffer_size: PacketCount(8192),
                cipher: None,
                stream_id: None,
                bandwidth: LiveBandwidthMode::Unlimited,
                statistics_interval: Duration::from_secs(1),
            },
            handshake: Handshake::Connector,
        });
        let packet = Packet::Control(ControlPacket {
            timestamp: TimeStamp::from_micros(0),
            dest_sockid: SocketId(1),
            control_type: ControlTypes::PeerError(1),
        });
        let r = guarded(peer, "test", || {
            conn.handle_packet_input(now, Ok((packet, peer)))
        });
        assert!(r.is_none(), "srt-protocol no longer panics on a peer error");
    }
}
