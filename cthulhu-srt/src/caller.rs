//! The caller side: [`connect`].

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use srt_protocol::connection::DuplexConnection;
use srt_protocol::packet::{Packet, ReceivePacketError, SeqNumber};
use srt_protocol::protocol::pending_connection::connect::Connect;
use srt_protocol::protocol::pending_connection::{ConnectionReject, ConnectionResult};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::config::CallerConfig;
use crate::connection::{self, Shared, SrtConnection};
use crate::error::SrtError;
use crate::guard::guarded;
use crate::handshake;
use crate::reject::Reject;
use crate::socket::bind_udp;
use crate::streamid::redact as redact_stream_id;

/// Handshake retransmission period (libsrt uses 250 ms too).
const RETRY: Duration = Duration::from_millis(250);
/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_536;

/// Calls an SRT listener (the push side). Binds an ephemeral UDP port, runs
/// the caller handshake and starts the connection driver. A refusal by the
/// peer is [`SrtError::Rejected`] with its reason (for example
/// [`Reject::BadSecret`] for a wrong passphrase).
pub async fn connect(cfg: CallerConfig) -> Result<SrtConnection, SrtError> {
    let (params, keys) = cfg.validate()?;
    let remote = cfg.addr;
    let bind: SocketAddr = if remote.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = Arc::new(bind_udp(bind, cfg.udp_buffer_bytes)?);
    let stream = cfg.stream_id.as_deref().map(redact_stream_id);
    let mut connect = Connect::new(
        remote,
        bind.ip(),
        params.init_settings(keys),
        cfg.stream_id.clone(),
        SeqNumber::new_truncate(rand::random::<u32>()),
    );
    let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
    let mut retry = tokio::time::interval(RETRY);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut not_handled = 0u64;
    loop {
        let result = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                debug!(peer = %remote, stream = ?stream, "SRT connect timed out");
                return Err(SrtError::ConnectTimeout);
            }
            _ = retry.tick() => guarded(remote, "starting a handshake", || connect.handle_tick(Instant::now())),
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) if from == remote => {
                    let d = &buf[..n];
                    guarded(remote, "handling a handshake", || {
                        let packet = Packet::parse(&mut &d[..], remote.is_ipv6())
                            .map(|p| (p, from))
                            .map_err(ReceivePacketError::Parse);
                        connect.handle_packet(packet, Instant::now())
                    })
                }
                Ok(_) => continue,
                // ICMP port unreachable while the listener is not up yet.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e.into()),
            },
        };
        let Some(result) = result else {
            return Err(SrtError::Internal);
        };
        match result {
            ConnectionResult::SendPacket((packet, to)) => send_packet(&socket, &packet, to).await,
            ConnectionResult::Reject(packet, reject) => {
                if let Some((packet, to)) = packet {
                    send_packet(&socket, &packet, to).await;
                }
                let reason = match reject {
                    ConnectionReject::Rejected(r) | ConnectionReject::Rejecting(r) => {
                        Reject::from_protocol(r)
                    }
                };
                info!(peer = %remote, stream = ?stream, reject = %reason, "SRT connection rejected by the peer");
                return Err(SrtError::Rejected(reason));
            }
            ConnectionResult::Connected(packet, conn) => {
                if let Some((packet, to)) = packet {
                    send_packet(&socket, &packet, to).await;
                }
                let duplex = guarded(remote, "creating a connection", || {
                    DuplexConnection::new(conn)
                })
                .ok_or(SrtError::Internal)?;
                let shared = Arc::new(Shared::default());
                let (inbound_tx, inbound_rx) = mpsc::channel(params.inbound_queue_packets);
                tokio::spawn(read_socket(
                    socket.clone(),
                    remote,
                    inbound_tx,
                    shared.clone(),
                ));
                let conn = connection::spawn(duplex, &params, socket, inbound_rx, shared);
                info!(
                    peer = %remote,
                    stream = ?stream,
                    encrypted = cfg.passphrase.is_some(),
                    latency_ms = u64::try_from(conn.latency().as_millis()).unwrap_or(u64::MAX),
                    "SRT connected"
                );
                return Ok(conn);
            }
            ConnectionResult::NotHandled(e) => {
                // Anyone can send these (spoofing the listener's address): log
                // a few, and never the error's Display (it quotes whole
                // handshakes, stream ids included).
                not_handled += 1;
                if not_handled.is_power_of_two() {
                    debug!(
                        peer = %remote,
                        error = handshake::connect_error_kind(&e),
                        count = not_handled,
                        "SRT handshake packet not handled"
                    );
                }
            }
            ConnectionResult::Failure(e) => return Err(e.into()),
            ConnectionResult::NoAction | ConnectionResult::RequestAccess(_) => {}
        }
    }
}

/// Forwards the peer's datagrams to the driver until it ends; drops (and
/// counts) datagrams when the driver's queue is full.
async fn read_socket(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    inbound: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut errors = 0u64;
    loop {
        tokio::select! {
            _ = inbound.closed() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) if from == peer => {
                    match inbound.try_send(Bytes::copy_from_slice(&buf[..n])) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            shared.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    errors += 1;
                    if errors.is_power_of_two() {
                        debug!(peer = %peer, error = %e, count = errors, "SRT receive error");
                    }
                    if e.kind() != ErrorKind::ConnectionRefused {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            },
        }
    }
}

async fn send_packet(socket: &UdpSocket, packet: &Packet, to: SocketAddr) {
    let mut buf = BytesMut::new();
    if guarded(to, "serialising a handshake", || packet.serialize(&mut buf)).is_some()
        && let Err(e) = socket.send_to(&buf, to).await
    {
        debug!(peer = %to, error = %e, "SRT handshake send failed");
    }
}
