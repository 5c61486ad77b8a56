//! An RTMP player that subscribes and then stops reading.
//!
//! The exchange, on rml_rtmp's handshake, chunk and message codecs:
//!
//! 1. The RTMP handshake (client side).
//! 2. `connect` (transaction 1, with `app` and `tcUrl`), wait for `_result`.
//! 3. `createStream` (transaction 2), wait for `_result` with the stream id.
//! 4. `play <name> -2000` on that stream, wait for `onStatus`
//!    `NetStream.Play.Start`.
//! 5. Stop reading. The socket stays open; with a small receive buffer the
//!    server's sends block (or queue up) quickly.
//!
//! Incoming chunks honour `Set Chunk Size`. No acknowledgements are ever sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use cthulhu_rtmp::RtmpUrl;
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

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
        let target = RtmpUrl::parse(url).map_err(|e| anyhow!("StalledPlayer: {e}"))?;
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
        player.play(target).await?;
        Ok(player)
    }

    /// Reads what the server sent next (at least one byte).
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = self
            .stream
            .read(buf)
            .await
            .context("reading from the server")?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.bytes_read += n as u64;
        Ok(n)
    }

    /// The client side of the handshake; returns the bytes that followed it.
    async fn handshake(&mut self) -> Result<Vec<u8>> {
        let mut hs = Handshake::new(PeerType::Client);
        let c0c1 = hs
            .generate_outbound_p0_and_p1()
            .map_err(|e| anyhow!("{e}"))?;
        self.stream.write_all(&c0c1).await?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.read_some(&mut buf).await?;
            match hs
                .process_bytes(&buf[..n])
                .map_err(|e| anyhow!("handshake: {e}"))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.stream.write_all(&response_bytes).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.stream.write_all(&response_bytes).await?;
                    return Ok(remaining_bytes);
                }
            }
        }
    }

    async fn play(&mut self, target: &RtmpUrl) -> Result<()> {
        let mut input = self.handshake().await?;
        let mut ser = ChunkSerializer::new();
        let mut de = ChunkDeserializer::new();
        let s = |v: &str| Amf0Value::Utf8String(v.to_owned());
        let connect: HashMap<String, Amf0Value> = [
            ("app", s(&target.app)),
            ("flashVer", s("LNX 9,0,124,2")),
            ("tcUrl", s(&target.tc_url())),
            ("fpad", Amf0Value::Boolean(false)),
            ("capabilities", Amf0Value::Number(15.0)),
            ("audioCodecs", Amf0Value::Number(4071.0)),
            ("videoCodecs", Amf0Value::Number(252.0)),
            ("videoFunction", Amf0Value::Number(1.0)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut send =
            |name: &str, txn: f64, object: Amf0Value, args: Vec<Amf0Value>, stream_id: u32| {
                let msg = RtmpMessage::Amf0Command {
                    command_name: name.to_owned(),
                    transaction_id: txn,
                    command_object: object,
                    additional_arguments: args,
                };
                let payload = msg
                    .into_message_payload(RtmpTimestamp::new(0), stream_id)
                    .map_err(|e| anyhow!("{e}"))?;
                Ok::<_, anyhow::Error>(
                    ser.serialize(&payload, false, false)
                        .map_err(|e| anyhow!("{e}"))?
                        .bytes,
                )
            };
        let out = send("connect", 1.0, Amf0Value::Object(connect), vec![], 0)?;
        self.stream.write_all(&out).await?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut bytes: &[u8] = &input;
            while let Some(payload) = de.get_next_message(bytes).map_err(|e| anyhow!("{e}"))? {
                bytes = &[];
                let msg = payload.to_rtmp_message().map_err(|e| anyhow!("{e}"))?;
                let (name, txn, args) = match msg {
                    RtmpMessage::SetChunkSize { size } => {
                        de.set_max_chunk_size(size as usize)
                            .map_err(|e| anyhow!("{e}"))?;
                        continue;
                    }
                    RtmpMessage::Amf0Command {
                        command_name,
                        transaction_id,
                        additional_arguments,
                        ..
                    } => (command_name, transaction_id, additional_arguments),
                    _ => continue,
                };
                match name.as_str() {
                    "_result" if txn == 1.0 => {
                        let out = send("createStream", 2.0, Amf0Value::Null, vec![], 0)?;
                        self.stream.write_all(&out).await?;
                    }
                    "_result" if txn == 2.0 => {
                        let Some(Amf0Value::Number(id)) = args.first() else {
                            bail!("createStream result without stream id: {args:?}");
                        };
                        // Stream ids are small positive integers.
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let id = *id as u32;
                        self.stream_id = id;
                        let play = vec![s(&target.key), Amf0Value::Number(-2000.0)];
                        let out = send("play", 0.0, Amf0Value::Null, play, id)?;
                        self.stream.write_all(&out).await?;
                    }
                    "_error" => bail!("server refused a command: {args:?}"),
                    "onStatus" => {
                        let field = |k: &str| match args.first() {
                            Some(Amf0Value::Object(props)) => match props.get(k) {
                                Some(Amf0Value::Utf8String(v)) => v.clone(),
                                _ => String::new(),
                            },
                            _ => String::new(),
                        };
                        if field("level") == "error" {
                            bail!("server sent an error status: {args:?}");
                        }
                        let code = field("code");
                        self.status_codes.push(code.clone());
                        if code == "NetStream.Play.Start" {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
            let n = self.read_some(&mut buf).await?;
            input = buf[..n].to_vec();
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
