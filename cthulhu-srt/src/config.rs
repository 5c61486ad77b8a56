//! Listener and caller configuration, and its translation into srt-protocol's
//! connection settings.

use std::net::SocketAddr;
use std::time::Duration;

use cthulhu_core::Secret;
use srt_protocol::options::{self, PacketCount, PacketSize};
use srt_protocol::packet::SocketId;
use srt_protocol::settings::{
    ConnInitSettings, KeyMaterialRefreshSettings, KeySettings, Passphrase,
};

use crate::error::SrtError;

/// The largest message [`SrtSender::send`](crate::SrtSender::send) accepts: one
/// SRT live-mode payload, seven 188-byte MPEG-TS packets.
pub const MAX_PAYLOAD: usize = 1316;

/// Default SRT send and receive buffer: 12 MiB, about 4.8 s of a 20 Mbit/s
/// stream, enough for 1 s of latency plus the sender's drop delay plus
/// keyframe bursts.
pub const DEFAULT_SRT_BUFFER_BYTES: usize = 12 * 1024 * 1024;
/// Default requested `SO_RCVBUF`/`SO_SNDBUF`: 8 MiB (Linux caps it at
/// `net.core.rmem_max`/`wmem_max`; the effective size is logged).
pub const DEFAULT_UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Bytes of one buffer slot as srt-protocol counts them (MSS 1500 minus
/// IPv4, UDP and SRT headers).
const SLOT_BYTES: usize = 1500 - 44;

/// AES key length of an encrypted SRT connection (`pbkeylen`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeySize {
    /// Not stated (unencrypted, or the peer's default).
    #[default]
    Unspecified,
    /// AES-128 (16 bytes).
    Aes128,
    /// AES-192 (24 bytes).
    Aes192,
    /// AES-256 (32 bytes).
    Aes256,
}

impl KeySize {
    /// The key length in bytes (0 when unspecified).
    pub fn bytes(self) -> u16 {
        match self {
            KeySize::Unspecified => 0,
            KeySize::Aes128 => 16,
            KeySize::Aes192 => 24,
            KeySize::Aes256 => 32,
        }
    }

    /// The key size for a length in bytes (0, 16, 24 or 32).
    pub fn from_bytes(bytes: u16) -> Option<KeySize> {
        match bytes {
            0 => Some(KeySize::Unspecified),
            16 => Some(KeySize::Aes128),
            24 => Some(KeySize::Aes192),
            32 => Some(KeySize::Aes256),
            _ => None,
        }
    }

    pub(crate) fn to_protocol(self) -> options::KeySize {
        match self {
            KeySize::Unspecified => options::KeySize::Unspecified,
            KeySize::Aes128 => options::KeySize::AES128,
            KeySize::Aes192 => options::KeySize::AES192,
            KeySize::Aes256 => options::KeySize::AES256,
        }
    }
}

/// Configuration of an [`SrtListener`](crate::SrtListener).
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Our receive latency (`SRTO_RCVLATENCY`, also offered as peer latency);
    /// the connection uses the larger of ours and the peer's. Default 120 ms.
    pub latency: Duration,
    /// SRT receive buffer per connection, in bytes. Default 12 MiB.
    pub recv_buffer_bytes: usize,
    /// SRT send buffer per connection, in bytes. Default 12 MiB.
    pub send_buffer_bytes: usize,
    /// Requested `SO_RCVBUF` and `SO_SNDBUF` of the UDP socket. Default 8 MiB.
    pub udp_buffer_bytes: usize,
    /// How long a connection request may wait, from its conclusion, for the
    /// application's decision ([`Incoming::accept`](crate::Incoming::accept)
    /// or [`reject`](crate::Incoming::reject)); also the period of the
    /// listener's SYN cookies (at least 1 s; a cookie is valid for one to two
    /// periods after the induction). Default 5 s.
    pub handshake_timeout: Duration,
    /// A connection that receives nothing for this long is closed. Default 5 s.
    pub peer_idle_timeout: Duration,
    /// Required AES key length in bytes (16, 24 or 32) for encrypted streams;
    /// `None` (default) follows the caller's `pbkeylen`. A caller asking for a
    /// different length is rejected with [`Reject::Unsecure`](crate::Reject::Unsecure).
    pub key_size: Option<u16>,
    /// Connection requests waiting for a decision at once. Inductions cost no
    /// state (they are answered with a SYN cookie); only a conclusion with a
    /// valid cookie takes a slot, until the decision or `handshake_timeout`.
    /// When all are taken, further requests are ignored (the caller repeats
    /// its conclusion). Default 256.
    pub max_pending_handshakes: usize,
    /// Open connections at once; beyond it requests are rejected with
    /// [`Reject::Overload`](crate::Reject::Overload). Default 1024.
    pub max_connections: usize,
    /// Open connections from one IP address at once (0: no limit); beyond it
    /// requests from that address are rejected with
    /// [`Reject::Overload`](crate::Reject::Overload). Default 256.
    pub max_connections_per_ip: usize,
    /// Requests waiting for [`SrtListener::next`](crate::SrtListener::next);
    /// when full, new requests are rejected with
    /// [`Reject::Backlog`](crate::Reject::Backlog). Default 64.
    pub backlog: usize,
    /// Received datagrams queued for one connection's driver; when full, that
    /// connection's datagrams are dropped (SRT recovers or drops them). Default 2048.
    pub inbound_queue_packets: usize,
    /// Received messages queued for the [`SrtReceiver`](crate::SrtReceiver);
    /// when full, messages are dropped and counted. Default 2048.
    pub recv_queue_messages: usize,
    /// Messages queued by the [`SrtSender`](crate::SrtSender) for the driver;
    /// `send` waits while it is full, `try_send` fails. Default 2048.
    pub send_queue_messages: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(120),
            recv_buffer_bytes: DEFAULT_SRT_BUFFER_BYTES,
            send_buffer_bytes: DEFAULT_SRT_BUFFER_BYTES,
            udp_buffer_bytes: DEFAULT_UDP_BUFFER_BYTES,
            handshake_timeout: Duration::from_secs(5),
            peer_idle_timeout: Duration::from_secs(5),
            key_size: None,
            max_pending_handshakes: 256,
            max_connections: 1024,
            max_connections_per_ip: 256,
            backlog: 64,
            inbound_queue_packets: 2048,
            recv_queue_messages: 2048,
            send_queue_messages: 2048,
        }
    }
}

/// Configuration of an outgoing connection ([`connect`](crate::connect)).
/// Its `Debug` output redacts the stream id (the passphrase never prints).
#[derive(Clone)]
pub struct CallerConfig {
    /// The SRT listener to call.
    pub addr: SocketAddr,
    /// The stream id sent in the handshake (at most 512 bytes).
    pub stream_id: Option<String>,
    /// Passphrase (10 to 79 bytes) to encrypt with; `None`: unencrypted.
    pub passphrase: Option<Secret>,
    /// AES key length in bytes (16, 24 or 32) when encrypted. Default 16.
    pub key_size: Option<u16>,
    /// Latency we ask for (`SRTO_LATENCY`). Default 120 ms.
    pub latency: Duration,
    /// SRT send buffer in bytes. Default 12 MiB (a 46 KB buffer overflows on
    /// the first keyframe and never recovers).
    pub send_buffer_bytes: usize,
    /// SRT receive buffer in bytes. Default 12 MiB.
    pub recv_buffer_bytes: usize,
    /// Requested `SO_RCVBUF` and `SO_SNDBUF`. Default 8 MiB.
    pub udp_buffer_bytes: usize,
    /// Give up when the handshake has not completed after this long. Default 5 s.
    pub connect_timeout: Duration,
    /// A connection that receives nothing for this long is closed. Default 5 s.
    pub peer_idle_timeout: Duration,
    /// See [`ListenerConfig::inbound_queue_packets`]. Default 2048.
    pub inbound_queue_packets: usize,
    /// See [`ListenerConfig::recv_queue_messages`]. Default 2048.
    pub recv_queue_messages: usize,
    /// See [`ListenerConfig::send_queue_messages`]. Default 2048.
    pub send_queue_messages: usize,
}

impl std::fmt::Debug for CallerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerConfig")
            .field("addr", &self.addr)
            .field(
                "stream_id",
                &self.stream_id.as_deref().map(crate::redact_stream_id),
            )
            .field("passphrase", &self.passphrase)
            .field("key_size", &self.key_size)
            .field("latency", &self.latency)
            .field("send_buffer_bytes", &self.send_buffer_bytes)
            .field("recv_buffer_bytes", &self.recv_buffer_bytes)
            .field("udp_buffer_bytes", &self.udp_buffer_bytes)
            .field("connect_timeout", &self.connect_timeout)
            .field("peer_idle_timeout", &self.peer_idle_timeout)
            .finish_non_exhaustive()
    }
}

impl CallerConfig {
    /// Defaults for calling `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream_id: None,
            passphrase: None,
            key_size: None,
            latency: Duration::from_millis(120),
            send_buffer_bytes: DEFAULT_SRT_BUFFER_BYTES,
            recv_buffer_bytes: DEFAULT_SRT_BUFFER_BYTES,
            udp_buffer_bytes: DEFAULT_UDP_BUFFER_BYTES,
            connect_timeout: Duration::from_secs(5),
            peer_idle_timeout: Duration::from_secs(5),
            inbound_queue_packets: 2048,
            recv_queue_messages: 2048,
            send_queue_messages: 2048,
        }
    }
}

impl Default for CallerConfig {
    /// Defaults with the unspecified address `0.0.0.0:0`: set `addr`.
    fn default() -> Self {
        Self::new(SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

/// The per-connection part shared by both configurations.
#[derive(Clone, Debug)]
pub(crate) struct ConnParams {
    pub(crate) latency: Duration,
    pub(crate) recv_buffer_bytes: usize,
    pub(crate) send_buffer_bytes: usize,
    pub(crate) peer_idle_timeout: Duration,
    pub(crate) inbound_queue_packets: usize,
    pub(crate) recv_queue_messages: usize,
    pub(crate) send_queue_messages: usize,
}

impl ConnParams {
    fn validate(&self) -> Result<(), SrtError> {
        let min_buffer = 32 * SLOT_BYTES;
        if self.recv_buffer_bytes < min_buffer || self.send_buffer_bytes < min_buffer {
            return Err(SrtError::Config(format!(
                "SRT buffers must be at least {min_buffer} bytes"
            )));
        }
        if self.latency > Duration::from_secs(60) {
            return Err(SrtError::Config("latency above 60 s".into()));
        }
        if self.peer_idle_timeout < Duration::from_millis(500) {
            return Err(SrtError::Config("peer idle timeout below 500 ms".into()));
        }
        if self.inbound_queue_packets == 0
            || self.recv_queue_messages == 0
            || self.send_queue_messages == 0
        {
            return Err(SrtError::Config("queue sizes must be at least 1".into()));
        }
        Ok(())
    }

    /// srt-protocol's handshake settings for one connection, with a fresh
    /// random local socket id.
    pub(crate) fn init_settings(&self, key_settings: Option<KeySettings>) -> ConnInitSettings {
        let slots =
            |bytes: usize| PacketCount(u64::try_from(bytes / SLOT_BYTES).unwrap_or(u64::MAX));
        ConnInitSettings {
            // Socket id 0 means "connection request" on the wire.
            local_sockid: SocketId(rand::random::<u32>().max(1)),
            key_settings,
            key_refresh: KeyMaterialRefreshSettings::default(),
            send_latency: self.latency,
            recv_latency: self.latency,
            peer_idle_timeout: self.peer_idle_timeout,
            bandwidth: options::LiveBandwidthMode::Unlimited,
            statistics_interval: Duration::from_secs(1),
            too_late_packet_drop: true,
            recv_buffer_size: slots(self.recv_buffer_bytes),
            send_buffer_size: slots(self.send_buffer_bytes),
            max_packet_size: PacketSize(MAX_PAYLOAD as u64),
            max_flow_size: PacketCount(25_600),
        }
    }
}

impl ListenerConfig {
    pub(crate) fn validate(&self) -> Result<(), SrtError> {
        self.conn_params().validate()?;
        if let Some(k) = self.key_size {
            check_key_size(k)?;
        }
        if self.max_pending_handshakes == 0 || self.max_connections == 0 || self.backlog == 0 {
            return Err(SrtError::Config(
                "max_pending_handshakes, max_connections and backlog must be at least 1".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn conn_params(&self) -> ConnParams {
        ConnParams {
            latency: self.latency,
            recv_buffer_bytes: self.recv_buffer_bytes,
            send_buffer_bytes: self.send_buffer_bytes,
            peer_idle_timeout: self.peer_idle_timeout,
            inbound_queue_packets: self.inbound_queue_packets,
            recv_queue_messages: self.recv_queue_messages,
            send_queue_messages: self.send_queue_messages,
        }
    }
}

impl CallerConfig {
    /// Checks the values and returns the connection parameters and the key
    /// settings to encrypt with.
    pub(crate) fn validate(&self) -> Result<(ConnParams, Option<KeySettings>), SrtError> {
        let params = ConnParams {
            latency: self.latency,
            recv_buffer_bytes: self.recv_buffer_bytes,
            send_buffer_bytes: self.send_buffer_bytes,
            peer_idle_timeout: self.peer_idle_timeout,
            inbound_queue_packets: self.inbound_queue_packets,
            recv_queue_messages: self.recv_queue_messages,
            send_queue_messages: self.send_queue_messages,
        };
        params.validate()?;
        if self.addr.port() == 0 || self.addr.ip().is_unspecified() {
            return Err(SrtError::Config(format!("cannot call {}", self.addr)));
        }
        if self.stream_id.as_ref().is_some_and(|s| s.len() > 512) {
            return Err(SrtError::Config("stream id longer than 512 bytes".into()));
        }
        let key_size = match self.key_size {
            Some(k) => check_key_size(k)?,
            None => KeySize::Aes128,
        };
        let keys = match &self.passphrase {
            None => None,
            Some(p) => Some(KeySettings {
                key_size: key_size.to_protocol(),
                passphrase: passphrase(p)?,
            }),
        };
        Ok((params, keys))
    }
}

/// Checks a key length in bytes (16, 24 or 32).
fn check_key_size(bytes: u16) -> Result<KeySize, SrtError> {
    match KeySize::from_bytes(bytes) {
        Some(KeySize::Unspecified) | None => Err(SrtError::Config(format!(
            "key size must be 16, 24 or 32 bytes (got {bytes})"
        ))),
        Some(k) => Ok(k),
    }
}

/// srt-protocol's passphrase type (10 to 79 bytes).
pub(crate) fn passphrase(secret: &Secret) -> Result<Passphrase, SrtError> {
    let len = secret.expose().len();
    Passphrase::try_from(secret.expose().to_owned()).map_err(|_| SrtError::InvalidPassphrase(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_size_buffers_in_slots() {
        let cfg = ListenerConfig::default();
        cfg.validate().unwrap();
        let s = cfg.conn_params().init_settings(None);
        assert_eq!(
            s.send_buffer_size,
            PacketCount((12 * 1024 * 1024 / 1456) as u64)
        );
        assert_eq!(s.max_packet_size, PacketSize(1316));
        assert_ne!(s.local_sockid, SocketId(0));
    }

    #[test]
    fn key_sizes() {
        assert_eq!(KeySize::from_bytes(32), Some(KeySize::Aes256));
        assert_eq!(KeySize::from_bytes(12), None);
        assert!(check_key_size(0).is_err());
        let cfg = ListenerConfig {
            key_size: Some(20),
            ..Default::default()
        };
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn caller_validation() {
        let mut cfg = CallerConfig::new("127.0.0.1:9000".parse().unwrap());
        cfg.passphrase = Some(Secret::new("short"));
        assert!(matches!(
            cfg.validate(),
            Err(SrtError::InvalidPassphrase(5))
        ));
        cfg.passphrase = Some(Secret::new("long enough secret"));
        cfg.key_size = Some(32);
        let (_, keys) = cfg.validate().unwrap();
        assert_eq!(keys.unwrap().key_size, options::KeySize::AES256);
        assert!(CallerConfig::default().validate().is_err());
    }

    #[test]
    fn caller_debug_hides_secrets() {
        let mut cfg = CallerConfig::new("127.0.0.1:9000".parse().unwrap());
        cfg.stream_id = Some("#!::r=live/a,s=streamkey".into());
        cfg.passphrase = Some(Secret::new("passphrase123"));
        let text = format!("{cfg:?}");
        assert!(
            !text.contains("streamkey") && !text.contains("passphrase123"),
            "{text}"
        );
        assert!(text.contains("r=live/a"), "{text}");
    }
}
