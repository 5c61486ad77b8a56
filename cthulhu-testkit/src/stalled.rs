//! An RTMP player that subscribes and then stops reading.
//!
//! Implemented by hand (no RTMP library) so it behaves exactly as described:
//!
//! 1. Handshake, the simple variant of the RTMP spec: send C0 (`0x03`) and C1
//!    (4-byte time, 4 zero bytes, 1528 random bytes), read S0, S1 and S2,
//!    send C2 = an echo of S1. (Servers that also speak the Flash digest
//!    handshake, like nginx-rtmp and rml_rtmp, fall back to this one.)
//! 2. `connect` (transaction 1, with `app` and `tcUrl`), wait for `_result`.
//! 3. `createStream` (transaction 2), wait for `_result` with the stream id.
//! 4. `play <name> -2000` on that stream, wait for `onStatus`
//!    `NetStream.Play.Start`.
//! 5. Stop reading. The socket stays open; with a small receive buffer the
//!    server's sends block (or queue up) quickly.
//!
//! Outgoing chunks use the default chunk size of 128 bytes; incoming chunks
//! honour `Set Chunk Size`. No acknowledgements are ever sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::amf0::{self, Amf0};

const HANDSHAKE_SIZE: usize = 1536;
const DEFAULT_CHUNK_SIZE: usize = 128;
const MSG_SET_CHUNK_SIZE: u8 = 1;
const MSG_COMMAND_AMF0: u8 = 20;
/// Chunk stream ids used for our commands (3: connection level, 8: stream
/// level), as most clients do.
const CSID_CONNECTION: u8 = 3;
const CSID_STREAM: u8 = 8;

/// Settings for [`StalledPlayer::connect_with`].
#[derive(Clone, Debug)]
pub struct StalledPlayerOptions {
    /// `SO_RCVBUF` for the socket, set before connecting. Small values make
    /// the stall visible to the server after little data (Linux doubles the
    /// value and enforces a minimum). `None` keeps the OS default, which
    /// auto-tunes up to several MiB.
    pub recv_buffer_size: Option<u32>,
    /// Limit for connecting, handshake and the command exchange.
    pub timeout: Duration,
}

impl Default for StalledPlayerOptions {
    /// A 16 KiB receive buffer and a 10 s timeout.
    fn default() -> Self {
        Self {
            recv_buffer_size: Some(16 * 1024),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What [`StalledPlayer::drain`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drained {
    /// Bytes read and discarded.
    pub bytes: u64,
    /// The server closed (or reset) the connection.
    pub closed: bool,
}

/// An RTMP subscriber that completes `play` and then stops reading, to test
/// what a server does with a player that cannot keep up. See the module
/// documentation for the exact exchange. Dropping it closes the connection.
#[derive(Debug)]
pub struct StalledPlayer {
    stream: TcpStream,
    bytes_read: u64,
    stream_id: u32,
    status_codes: Vec<String>,
}

impl StalledPlayer {
    /// Connects to `rtmp://host[:port]/app/stream` with default options,
    /// plays the stream and stops reading once `NetStream.Play.Start` arrives.
    pub async fn connect(url: &str) -> Result<StalledPlayer> {
        Self::connect_with(url, &StalledPlayerOptions::default()).await
    }

    /// [`StalledPlayer::connect`] with explicit options.
    pub async fn connect_with(url: &str, opts: &StalledPlayerOptions) -> Result<StalledPlayer> {
        let target = RtmpUrl::parse(url)?;
        tokio::time::timeout(opts.timeout, Self::subscribe(&target, opts))
            .await
            .map_err(|_| {
                anyhow!(
                    "StalledPlayer: {url} did not start playing within {:?}",
                    opts.timeout
                )
            })?
            .with_context(|| format!("StalledPlayer: playing {url}"))
    }

    async fn subscribe(target: &RtmpUrl, opts: &StalledPlayerOptions) -> Result<StalledPlayer> {
        let addr = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await?
            .next()
            .ok_or_else(|| anyhow!("{} does not resolve", target.host))?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(size) = opts.recv_buffer_size {
            socket.set_recv_buffer_size(size)?;
        }
        let stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let mut player = StalledPlayer {
            stream,
            bytes_read: 0,
            stream_id: 0,
            status_codes: Vec::new(),
        };
        player.handshake().await?;
        player.play(target).await?;
        Ok(player)
    }

    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        self.stream
            .read_exact(&mut buf)
            .await
            .context("reading from the server")?;
        self.bytes_read += n as u64;
        Ok(buf)
    }

    async fn handshake(&mut self) -> Result<()> {
        let mut c0c1 = Vec::with_capacity(1 + HANDSHAKE_SIZE);
        c0c1.push(3);
        c0c1.extend_from_slice(&[0; 8]); // time, then the zero field
        c0c1.extend_from_slice(&random_bytes(HANDSHAKE_SIZE - 8));
        self.stream.write_all(&c0c1).await?;
        let s0 = self.read_exact(1).await?;
        if s0[0] != 3 {
            bail!("server answered RTMP version {} (S0), expected 3", s0[0]);
        }
        let s1 = self.read_exact(HANDSHAKE_SIZE).await?;
        let _s2 = self.read_exact(HANDSHAKE_SIZE).await?;
        self.stream.write_all(&s1).await?; // C2 echoes S1
        Ok(())
    }

    async fn send_command(&mut self, csid: u8, stream_id: u32, values: &[Amf0]) -> Result<()> {
        let payload = amf0::encode(values);
        let bytes = chunk_message(csid, MSG_COMMAND_AMF0, stream_id, &payload)?;
        self.stream.write_all(&bytes).await?;
        Ok(())
    }

    async fn play(&mut self, target: &RtmpUrl) -> Result<()> {
        let s = |v: &str| Amf0::String(v.to_owned());
        self.send_command(
            CSID_CONNECTION,
            0,
            &[
                s("connect"),
                Amf0::Number(1.0),
                Amf0::Object(vec![
                    ("app".into(), s(&target.app)),
                    ("flashVer".into(), s("LNX 9,0,124,2")),
                    ("tcUrl".into(), s(&target.tc_url)),
                    ("fpad".into(), Amf0::Bool(false)),
                    ("capabilities".into(), Amf0::Number(15.0)),
                    ("audioCodecs".into(), Amf0::Number(4071.0)),
                    ("videoCodecs".into(), Amf0::Number(252.0)),
                    ("videoFunction".into(), Amf0::Number(1.0)),
                ]),
            ],
        )
        .await?;
        let mut chunks = ChunkReader::default();
        loop {
            let (type_id, payload) = chunks.read_message(self).await?;
            match type_id {
                MSG_SET_CHUNK_SIZE if payload.len() >= 4 => {
                    let size = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7fff_ffff;
                    chunks.chunk_size = usize::try_from(size.max(1)).unwrap_or(DEFAULT_CHUNK_SIZE);
                }
                MSG_COMMAND_AMF0 => {
                    let values = amf0::decode_all(&payload)?;
                    let name = values.first().and_then(Amf0::as_str).unwrap_or_default();
                    let txn = values.get(1).and_then(Amf0::as_f64).unwrap_or(0.0);
                    match name {
                        "_result" if txn == 1.0 => {
                            self.send_command(
                                CSID_CONNECTION,
                                0,
                                &[s("createStream"), Amf0::Number(2.0), Amf0::Null],
                            )
                            .await?;
                        }
                        "_result" if txn == 2.0 => {
                            let id = values.get(3).and_then(Amf0::as_f64).ok_or_else(|| {
                                anyhow!("createStream result without stream id: {values:?}")
                            })?;
                            // Stream ids are small positive integers.
                            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                            let id = id as u32;
                            self.stream_id = id;
                            self.send_command(
                                CSID_STREAM,
                                id,
                                &[
                                    s("play"),
                                    Amf0::Number(0.0),
                                    Amf0::Null,
                                    s(&target.stream),
                                    Amf0::Number(-2000.0),
                                ],
                            )
                            .await?;
                        }
                        "_error" => bail!("server refused a command: {values:?}"),
                        "onStatus" => {
                            let info = values.get(3);
                            let code = info
                                .and_then(|i| i.get("code"))
                                .and_then(Amf0::as_str)
                                .unwrap_or_default()
                                .to_owned();
                            let level = info
                                .and_then(|i| i.get("level"))
                                .and_then(Amf0::as_str)
                                .unwrap_or_default();
                            if level == "error" {
                                bail!("server sent an error status: {values:?}");
                            }
                            self.status_codes.push(code.clone());
                            if code == "NetStream.Play.Start" {
                                return Ok(());
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }

    /// Bytes read from the server so far (handshake, replies and whatever
    /// arrived before `NetStream.Play.Start`, plus anything [`drain`]ed).
    ///
    /// [`drain`]: StalledPlayer::drain
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The message stream id the server assigned (`createStream` result).
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// The `onStatus` codes received before the player stalled, in order
    /// (e.g. `NetStream.Play.Reset`, `NetStream.Play.Start`).
    pub fn status_codes(&self) -> &[String] {
        &self.status_codes
    }

    /// The local address of the connection (to find it in server logs).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.stream.local_addr()?)
    }

    /// Resumes reading: reads and discards data for up to `timeout` or until
    /// the server closes the connection. Use it to check that a server
    /// disconnected the stalled player, or to let a slow player recover.
    pub async fn drain(&mut self, timeout: Duration) -> Result<Drained> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 64 * 1024];
        let mut drained = Drained {
            bytes: 0,
            closed: false,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
                Err(_) => return Ok(drained),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    drained.closed = true;
                    return Ok(drained);
                }
                Ok(Ok(n)) => {
                    drained.bytes += n as u64;
                    self.bytes_read += n as u64;
                }
            }
        }
    }
}

/// The parts of an `rtmp://` URL a player needs.
#[derive(Debug, PartialEq)]
struct RtmpUrl {
    host: String,
    port: u16,
    app: String,
    stream: String,
    tc_url: String,
}

impl RtmpUrl {
    /// `rtmp://host[:port]/app/stream`; the app is the first path segment,
    /// the stream name is the rest (it may contain `/` and a query).
    fn parse(url: &str) -> Result<RtmpUrl> {
        let rest = url
            .strip_prefix("rtmp://")
            .ok_or_else(|| anyhow!("not an rtmp:// URL: {url}"))?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| anyhow!("no app in {url}"))?;
        let (app, stream) = path
            .split_once('/')
            .filter(|(a, s)| !a.is_empty() && !s.is_empty())
            .ok_or_else(|| anyhow!("expected rtmp://host[:port]/app/stream, got {url}"))?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .with_context(|| format!("bad port in {url}"))?,
            ),
            _ => (authority, 1935),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(RtmpUrl {
            tc_url: format!("rtmp://{authority}/{app}"),
            host,
            port,
            app: app.to_owned(),
            stream: stream.to_owned(),
        })
    }
}

/// Frames one message as chunks: a type-0 header, then type-3 continuation
/// headers every [`DEFAULT_CHUNK_SIZE`] bytes. Timestamp 0.
fn chunk_message(csid: u8, type_id: u8, stream_id: u32, payload: &[u8]) -> Result<Vec<u8>> {
    if !(2..64).contains(&csid) {
        bail!("chunk stream id {csid} needs a longer basic header");
    }
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l < 1 << 24)
        .ok_or_else(|| anyhow!("RTMP message too large: {} bytes", payload.len()))?;
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.push(csid); // fmt 0
    out.extend_from_slice(&[0, 0, 0]); // timestamp
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&stream_id.to_le_bytes());
    for (i, chunk) in payload.chunks(DEFAULT_CHUNK_SIZE).enumerate() {
        if i > 0 {
            out.push(0xC0 | csid); // fmt 3
        }
        out.extend_from_slice(chunk);
    }
    Ok(out)
}

/// Per chunk stream state of the incoming side.
#[derive(Default)]
struct ChunkStream {
    length: usize,
    type_id: u8,
    extended_timestamp: bool,
    payload: Vec<u8>,
}

/// Reassembles incoming chunks into messages.
struct ChunkReader {
    chunk_size: usize,
    streams: HashMap<u32, ChunkStream>,
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
        }
    }
}

impl ChunkReader {
    /// Reads chunks until one message is complete; returns its type and body.
    /// Timestamps and message stream ids are parsed but not needed here.
    async fn read_message(&mut self, conn: &mut StalledPlayer) -> Result<(u8, Vec<u8>)> {
        loop {
            let b0 = conn.read_exact(1).await?[0];
            let fmt = b0 >> 6;
            let csid = match b0 & 0x3f {
                0 => 64 + u32::from(conn.read_exact(1).await?[0]),
                1 => {
                    let b = conn.read_exact(2).await?;
                    64 + u32::from(b[0]) + 256 * u32::from(b[1])
                }
                n => u32::from(n),
            };
            let header_len = match fmt {
                0 => 11,
                1 => 7,
                2 => 3,
                _ => 0,
            };
            let header = conn.read_exact(header_len).await?;
            let state = self.streams.entry(csid).or_default();
            if fmt < 3 {
                state.extended_timestamp = header[..3] == [0xff, 0xff, 0xff];
            }
            if fmt <= 1 {
                state.length = (usize::from(header[3]) << 16)
                    | (usize::from(header[4]) << 8)
                    | usize::from(header[5]);
                state.type_id = header[6];
            }
            if state.extended_timestamp {
                conn.read_exact(4).await?;
            }
            let want = state
                .length
                .saturating_sub(state.payload.len())
                .min(self.chunk_size);
            let data = conn.read_exact(want).await?;
            state.payload.extend_from_slice(&data);
            if state.payload.len() >= state.length {
                let payload = std::mem::take(&mut state.payload);
                return Ok((state.type_id, payload));
            }
        }
    }
}

/// Non-cryptographic random bytes (xorshift64*, seeded from the clock, the
/// pid and a per-process counter); the handshake only needs them to differ.
fn random_bytes(n: usize) -> Vec<u8> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let calls = CALLS.fetch_add(1, Ordering::Relaxed);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ calls.rotate_left(17);
    x |= 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = RtmpUrl::parse("rtmp://127.0.0.1:1936/live/cam1").unwrap();
        assert_eq!(
            u,
            RtmpUrl {
                host: "127.0.0.1".into(),
                port: 1936,
                app: "live".into(),
                stream: "cam1".into(),
                tc_url: "rtmp://127.0.0.1:1936/live".into(),
            }
        );
        let u = RtmpUrl::parse("rtmp://example.invalid/app/a/b?token=1").unwrap();
        assert_eq!((u.port, u.stream.as_str()), (1935, "a/b?token=1"));
        let u = RtmpUrl::parse("rtmp://[::1]:99/app/s").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 99));
        assert!(RtmpUrl::parse("rtmp://host/app").is_err());
        assert!(RtmpUrl::parse("http://host/app/s").is_err());
    }

    #[test]
    fn chunks_long_messages() {
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let bytes = chunk_message(3, 20, 1, &payload).unwrap();
        // 12-byte header + 300 bytes + 2 continuation headers (128, 256).
        assert_eq!(bytes.len(), 12 + 300 + 2);
        assert_eq!(&bytes[..12], &[3, 0, 0, 0, 0, 1, 44, 20, 1, 0, 0, 0]);
        assert_eq!(bytes[12 + 128], 0xC3);
        assert_eq!(bytes[12 + 128 + 1 + 128], 0xC3);
    }

    #[test]
    fn random_bytes_vary() {
        let a = random_bytes(1528);
        assert_eq!(a.len(), 1528);
        assert!(a.iter().any(|&b| b != a[0]));
    }
}
