//! The RTMP publishing client used for pushes and probes.
//!
//! rml_rtmp's `ClientSession` sends neither `releaseStream` nor `FCPublish`, counts
//! acknowledgements from the last ack instead of cumulatively, and has no TLS, so this
//! client drives the connection itself on rml_rtmp's handshake, chunk and message
//! codecs, with the command sequence ffmpeg and OBS send:
//! `connect`, `releaseStream`, `FCPublish`, `createStream`, `publish`, and on stop
//! `FCUnpublish`, `deleteStream`.

use std::any::Any;
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::handshake::PeerType;
use rml_rtmp::messages::{MessagePayload, RtmpMessage, UserControlEventType};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::chunk::{consume, flatten, read_some, write_segments};
use crate::error::{RtmpError, guarded};
use crate::inbound::{InboundGuard, InboundLimits};
use crate::url::RtmpUrl;

/// A byte stream: TCP or TLS over TCP.
pub trait IoStream: AsyncRead + AsyncWrite + Unpin + Send + Any {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Any> IoStream for T {}

/// Client settings: timeouts, chunk size and RTMPS trust.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Time for each command round trip (connect, createStream, publish).
    pub response_timeout: Duration,
    /// Outbound chunk size.
    pub chunk_size: u32,
    /// For `rtmps://`: a PEM file of one or more CA certificates trusted in addition
    /// to the webpki and system roots, for servers whose certificate a private CA
    /// signed. Read when connecting (and cached per path until the file changes); a
    /// file that cannot be loaded fails the connection with [`RtmpError::Tls`] naming
    /// it. Ignored for `rtmp://`.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(10),
            chunk_size: 4096,
            tls_ca_file: None,
        }
    }
}

/// What the server said while we connected, for probes and logs.
#[derive(Clone, Debug, Default)]
pub struct ConnectInfo {
    /// The server's `fmsVer`, if it sent one.
    pub server_version: Option<String>,
    /// Time to the TCP (and TLS) connection.
    pub tcp_ms: u64,
    /// Time to the end of the RTMP handshake.
    pub handshake_ms: u64,
    /// Time to `NetConnection.Connect.Success`.
    pub connect_ms: u64,
    /// Time to `NetStream.Publish.Start`.
    pub publish_ms: u64,
}

/// A connected RTMP client that is allowed to publish.
pub struct PublishingClient {
    rd: ReadHalf<Box<dyn IoStream>>,
    wr: WriteHalf<Box<dyn IoStream>>,
    proto: ClientProto,
    /// The message stream id the server gave us.
    pub stream_id: u32,
    /// What the server said.
    pub info: ConnectInfo,
    key: String,
    read_buf: BytesMut,
}

/// The protocol state shared by the connect phase and the publishing phase.
struct ClientProto {
    ser: ChunkSerializer,
    de: ChunkDeserializer,
    out: Vec<Bytes>,
    bytes_in: u64,
    acked: u64,
    window: Option<u32>,
    epoch: Instant,
    /// Bounds what the server sends before `de` parses it.
    guard: InboundGuard,
}

/// Something the server told us while publishing.
#[derive(Debug)]
pub enum ServerNotice {
    /// An `onStatus` with an error level or a stop code: publishing is over.
    Stopped(String),
}

impl ClientProto {
    fn now(&self) -> RtmpTimestamp {
        RtmpTimestamp::new(self.epoch.elapsed().as_millis() as u32)
    }

    fn send(&mut self, msg: RtmpMessage, stream_id: u32) -> Result<(), RtmpError> {
        let payload = msg
            .into_message_payload(self.now(), stream_id)
            .map_err(|e| RtmpError::Protocol(e.to_string()))?;
        let packet = self
            .ser
            .serialize(&payload, false, false)
            .map_err(|e| RtmpError::Protocol(e.to_string()))?;
        self.out.push(Bytes::from(packet.bytes));
        Ok(())
    }

    fn command(
        &mut self,
        name: &str,
        txn: f64,
        args: Vec<Amf0Value>,
        stream_id: u32,
    ) -> Result<(), RtmpError> {
        self.send(
            RtmpMessage::Amf0Command {
                command_name: name.into(),
                transaction_id: txn,
                command_object: Amf0Value::Null,
                additional_arguments: args,
            },
            stream_id,
        )
    }

    /// Queues `FCUnpublish` and `deleteStream`.
    fn unpublish(&mut self, key: &str, stream_id: u32) -> Result<(), RtmpError> {
        let key = Amf0Value::Utf8String(key.to_owned());
        self.command("FCUnpublish", 6.0, vec![key], 0)?;
        self.command(
            "deleteStream",
            7.0,
            vec![Amf0Value::Number(f64::from(stream_id))],
            0,
        )
    }

    /// Feeds received bytes; returns the messages they completed. Also queues
    /// acknowledgements (cumulative, as the specification says) and ping responses.
    fn input(&mut self, data: &[u8]) -> Result<Vec<MessagePayload>, RtmpError> {
        self.bytes_in += data.len() as u64;
        // A destination sends commands only; all of it is checked before any is parsed.
        let mut rest = data;
        while !rest.is_empty() {
            let n = self.guard.check(rest)?;
            rest = match rest.get(n..) {
                Some(r) if n > 0 => r,
                _ => return Err(RtmpError::Protocol("input guard made no progress".into())),
            };
        }
        let mut out = Vec::new();
        let mut input = data;
        loop {
            let next = guarded("chunk from server", || self.de.get_next_message(input))?;
            input = &[];
            let Some(payload) = next else { break };
            // A chunk size change applies to the very next chunk, so it is handled
            // before anything else is parsed.
            match decode(&payload) {
                Ok(RtmpMessage::SetChunkSize { size }) => {
                    self.de
                        .set_max_chunk_size(size as usize)
                        .map_err(|e| RtmpError::Protocol(e.to_string()))?;
                }
                Ok(RtmpMessage::WindowAcknowledgement { size }) => self.window = Some(size),
                Ok(RtmpMessage::UserControl {
                    event_type: UserControlEventType::PingRequest,
                    timestamp,
                    ..
                }) => {
                    self.send(
                        RtmpMessage::UserControl {
                            event_type: UserControlEventType::PingResponse,
                            stream_id: None,
                            buffer_length: None,
                            timestamp,
                        },
                        0,
                    )?;
                }
                _ => out.push(payload),
            }
        }
        if let Some(w) = self.window
            && w > 0
            && self.bytes_in - self.acked >= u64::from(w)
        {
            self.acked = self.bytes_in;
            // The sequence number is the total received so far (it wraps at 32 bits).
            self.send(
                RtmpMessage::Acknowledgement {
                    sequence_number: self.bytes_in as u32,
                },
                0,
            )?;
        }
        Ok(out)
    }
}

/// Decodes a message from the server; rml_rtmp can panic on some (a command of
/// fewer than three values), which must end this connection, not the task.
fn decode(m: &MessagePayload) -> Result<RtmpMessage, RtmpError> {
    guarded("message from server", || m.to_rtmp_message())
}

async fn open(url: &RtmpUrl, cfg: &ClientConfig) -> Result<Box<dyn IoStream>, RtmpError> {
    // The TLS configuration first: a CA file that cannot be loaded is reported as
    // such, not hidden behind a network error.
    let tls = if url.tls {
        Some(crate::tls::connector(cfg.tls_ca_file.as_deref())?)
    } else {
        None
    };
    // A (host, port) pair, not "host:port": an IPv6 host is kept without brackets.
    let addr = (url.host.as_str(), url.port);
    let tcp = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| RtmpError::Timeout("connecting"))??;
    let _ = tcp.set_nodelay(true);
    if let Some(tls) = tls {
        let s = tokio::time::timeout(cfg.connect_timeout, tls.connect(&url.host, tcp))
            .await
            .map_err(|_| RtmpError::Timeout("in the TLS handshake"))??;
        Ok(Box::new(s))
    } else {
        Ok(Box::new(tcp))
    }
}

fn status_of(args: &[Amf0Value]) -> (String, String, String) {
    for a in args {
        if let Amf0Value::Object(props) = a {
            let get = |k: &str| match props.get(k) {
                Some(Amf0Value::Utf8String(s)) => s.clone(),
                _ => String::new(),
            };
            return (get("level"), get("code"), get("description"));
        }
    }
    (String::new(), String::new(), String::new())
}

impl PublishingClient {
    /// Connects, handshakes and asks to publish `url.key` on `url.app`.
    ///
    /// On success the server has answered `NetStream.Publish.Start`; on refusal the
    /// error carries the server's code and description.
    pub async fn connect(url: &RtmpUrl, cfg: &ClientConfig) -> Result<Self, RtmpError> {
        let t0 = Instant::now();
        let mut s = open(url, cfg).await?;
        let mut info = ConnectInfo {
            tcp_ms: t0.elapsed().as_millis() as u64,
            ..ConnectInfo::default()
        };
        let leftover = tokio::time::timeout(
            cfg.response_timeout,
            crate::handshake::run(&mut s, PeerType::Client),
        )
        .await
        .map_err(|_| RtmpError::HandshakeTimeout)??;
        info.handshake_ms = t0.elapsed().as_millis() as u64;
        let (rd, wr) = tokio::io::split(s);
        let mut proto = ClientProto {
            ser: ChunkSerializer::new(),
            de: ChunkDeserializer::new(),
            out: Vec::new(),
            bytes_in: 0,
            acked: 0,
            window: None,
            epoch: Instant::now(),
            // Each reply is decoded on its own and one that fails is ignored.
            guard: InboundGuard::new(InboundLimits {
                min_command_values: 0,
                ..InboundLimits::default()
            }),
        };
        let packet = proto
            .ser
            .set_max_chunk_size(cfg.chunk_size, RtmpTimestamp::new(0))
            .map_err(|e| RtmpError::Protocol(e.to_string()))?;
        proto.out.push(Bytes::from(packet.bytes));
        let mut client = PublishingClient {
            rd,
            wr,
            proto,
            stream_id: 0,
            info,
            key: url.key.clone(),
            read_buf: BytesMut::with_capacity(8192),
        };
        if !leftover.is_empty() {
            let early = client.proto.input(&leftover)?;
            drop(early);
        }
        let mut obj = HashMap::new();
        obj.insert("app".to_string(), Amf0Value::Utf8String(url.app.clone()));
        obj.insert(
            "type".to_string(),
            Amf0Value::Utf8String("nonprivate".into()),
        );
        obj.insert(
            "flashVer".to_string(),
            Amf0Value::Utf8String("FMLE/3.0 (compatible; Cthulhu)".into()),
        );
        obj.insert("tcUrl".to_string(), Amf0Value::Utf8String(url.tc_url()));
        client.proto.send(
            RtmpMessage::Amf0Command {
                command_name: "connect".into(),
                transaction_id: 1.0,
                command_object: Amf0Value::Object(obj),
                additional_arguments: vec![],
            },
            0,
        )?;
        client.flush().await?;
        let (cmd, obj, args) = client.await_result(1.0, cfg.response_timeout).await?;
        if cmd != "_result" {
            let (_, code, desc) = status_of(&args);
            return Err(RtmpError::Refused(
                format!("connect: {code} {desc}").trim().to_owned(),
            ));
        }
        if let Amf0Value::Object(props) = &obj
            && let Some(Amf0Value::Utf8String(v)) = props.get("fmsVer")
        {
            client.info.server_version = Some(v.clone());
        }
        client.info.connect_ms = t0.elapsed().as_millis() as u64;
        let key = Amf0Value::Utf8String(client.key.clone());
        client
            .proto
            .command("releaseStream", 2.0, vec![key.clone()], 0)?;
        client
            .proto
            .command("FCPublish", 3.0, vec![key.clone()], 0)?;
        client.proto.command("createStream", 4.0, vec![], 0)?;
        client.flush().await?;
        let (cmd, _, args) = client.await_result(4.0, cfg.response_timeout).await?;
        client.stream_id = match (cmd.as_str(), args.first()) {
            ("_result", Some(Amf0Value::Number(n))) if *n >= 0.0 && *n < f64::from(u32::MAX) => {
                *n as u32
            }
            _ => return Err(RtmpError::Refused("createStream was not accepted".into())),
        };
        let sid = client.stream_id;
        client.proto.command(
            "publish",
            5.0,
            vec![key, Amf0Value::Utf8String("live".into())],
            sid,
        )?;
        client.flush().await?;
        client.await_publish_start(cfg.response_timeout).await?;
        client.info.publish_ms = t0.elapsed().as_millis() as u64;
        Ok(client)
    }

    async fn flush(&mut self) -> Result<(), RtmpError> {
        write_segments(&mut self.wr, &mut self.proto.out).await?;
        Ok(())
    }

    async fn read_messages(&mut self) -> Result<Vec<MessagePayload>, RtmpError> {
        let n = self.rd.read_buf(&mut self.read_buf).await?;
        if n == 0 {
            return Err(RtmpError::Closed);
        }
        let data = self.read_buf.split();
        if self.read_buf.capacity() < 4096 {
            self.read_buf.reserve(8192);
        }
        let msgs = self.proto.input(&data)?;
        self.flush().await?;
        Ok(msgs)
    }

    /// Waits for `_result`/`_error` of a transaction.
    async fn await_result(
        &mut self,
        txn: f64,
        limit: Duration,
    ) -> Result<(String, Amf0Value, Vec<Amf0Value>), RtmpError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let msgs = tokio::time::timeout_at(deadline, self.read_messages())
                .await
                .map_err(|_| RtmpError::Timeout("waiting for the server's answer"))??;
            for m in msgs {
                if let Ok(RtmpMessage::Amf0Command {
                    command_name,
                    transaction_id,
                    command_object,
                    additional_arguments,
                }) = decode(&m)
                {
                    if (command_name == "_result" || command_name == "_error")
                        && transaction_id == txn
                    {
                        return Ok((command_name, command_object, additional_arguments));
                    }
                    if command_name == "onStatus" {
                        let (level, code, desc) = status_of(&additional_arguments);
                        if level == "error" {
                            return Err(RtmpError::Refused(
                                format!("{code} {desc}").trim().to_owned(),
                            ));
                        }
                    }
                }
            }
        }
    }

    async fn await_publish_start(&mut self, limit: Duration) -> Result<(), RtmpError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let msgs = tokio::time::timeout_at(deadline, self.read_messages())
                .await
                .map_err(|_| RtmpError::Timeout("waiting for NetStream.Publish.Start"))??;
            for m in msgs {
                if let Ok(RtmpMessage::Amf0Command {
                    command_name,
                    additional_arguments,
                    ..
                }) = decode(&m)
                {
                    match command_name.as_str() {
                        "onStatus" => {
                            let (level, code, desc) = status_of(&additional_arguments);
                            if code == "NetStream.Publish.Start" {
                                return Ok(());
                            }
                            if level == "error"
                                || code.ends_with("BadName")
                                || code.ends_with("Failed")
                            {
                                return Err(RtmpError::Refused(
                                    format!("{code} {desc}").trim().to_owned(),
                                ));
                            }
                        }
                        "_error" => {
                            let (_, code, desc) = status_of(&additional_arguments);
                            return Err(RtmpError::Refused(
                                format!("{code} {desc}").trim().to_owned(),
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Writes media segments (from [`crate::from_core::FromCore`]) after any pending control output.
    pub async fn write_media(&mut self, segments: &mut Vec<Bytes>) -> Result<(), RtmpError> {
        self.flush().await?;
        write_segments(&mut self.wr, segments).await?;
        Ok(())
    }

    /// Reads from the server: handles pings and acknowledgements, and reports a
    /// server-side stop. Cancel-safe (a read is either complete or not started).
    pub async fn poll_server(&mut self) -> Result<Option<ServerNotice>, RtmpError> {
        let msgs = self.read_messages().await?;
        Ok(notice_of(msgs))
    }

    /// Unpublishes cleanly (`FCUnpublish`, `deleteStream`) and closes the connection.
    pub async fn close(mut self) -> Result<(), RtmpError> {
        self.proto.unpublish(&self.key, self.stream_id)?;
        self.flush().await?;
        let _ = self.wr.shutdown().await;
        Ok(())
    }

    /// The connection as a plain TCP socket with its protocol state, for a push
    /// fan-out to write media to. Only for `rtmp://` destinations: an RTMPS
    /// connection is refused with an error (and closed).
    pub(crate) fn into_plain(self) -> Result<PlainPublisher, RtmpError> {
        let stream: Box<dyn Any> = self.rd.unsplit(self.wr);
        let tcp = stream
            .downcast::<TcpStream>()
            .map_err(|_| RtmpError::Protocol("not a plain TCP connection".into()))?;
        Ok(PlainPublisher {
            sock: Arc::new(*tcp),
            proto: self.proto,
            stream_id: self.stream_id,
            key: self.key,
            read_buf: vec![0; 8192],
        })
    }
}

/// A publishing connection on plain TCP whose media a push fan-out writes: this side
/// only reads the server (acknowledgements, pings, a stop) and hands what the
/// protocol answers to the fan-out, so that every byte goes out in order.
pub(crate) struct PlainPublisher {
    pub(crate) sock: Arc<TcpStream>,
    proto: ClientProto,
    /// The message stream id the server gave us.
    pub(crate) stream_id: u32,
    key: String,
    read_buf: Vec<u8>,
}

impl PlainPublisher {
    /// Control output waiting to be sent, as one buffer.
    pub(crate) fn take_output(&mut self) -> Option<Bytes> {
        (!self.proto.out.is_empty()).then(|| flatten(&mut self.proto.out))
    }

    /// Reads from the server like [`PublishingClient::poll_server`]; answers
    /// (acknowledgements, ping responses) are left for [`Self::take_output`].
    /// Cancel-safe.
    pub(crate) async fn poll_server(&mut self) -> Result<Option<ServerNotice>, RtmpError> {
        let n = read_some(&self.sock, &mut self.read_buf).await?;
        if n == 0 {
            return Err(RtmpError::Closed);
        }
        let msgs = self
            .proto
            .input(self.read_buf.get(..n).unwrap_or_default())?;
        Ok(notice_of(msgs))
    }

    /// Writes `unsent` (what the fan-out still owed) and, with `unpublish`,
    /// `FCUnpublish` and `deleteStream`; then shuts the connection down.
    pub(crate) async fn finish(
        mut self,
        mut unsent: Vec<Bytes>,
        unpublish: bool,
    ) -> Result<(), RtmpError> {
        if unpublish {
            self.proto.unpublish(&self.key, self.stream_id)?;
        }
        unsent.extend(self.take_output());
        while !unsent.is_empty() {
            self.sock.writable().await?;
            let iov: Vec<IoSlice<'_>> = unsent.iter().take(64).map(|b| IoSlice::new(b)).collect();
            let n = match self.sock.try_write_vectored(&iov) {
                Ok(0) => return Err(RtmpError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            };
            drop(iov);
            consume(&mut unsent, n);
        }
        let _ = socket2::SockRef::from(&*self.sock).shutdown(std::net::Shutdown::Write);
        Ok(())
    }
}

/// A server-side stop among received messages.
fn notice_of(msgs: Vec<MessagePayload>) -> Option<ServerNotice> {
    for m in msgs {
        if let Ok(RtmpMessage::Amf0Command {
            command_name,
            additional_arguments,
            ..
        }) = decode(&m)
            && command_name == "onStatus"
        {
            let (level, code, desc) = status_of(&additional_arguments);
            if level == "error"
                || code == "NetStream.Publish.BadName"
                || code == "NetStream.Unpublish.Success"
            {
                return Some(ServerNotice::Stopped(
                    format!("{code} {desc}").trim().to_owned(),
                ));
            }
        }
    }
    None
}

/// Checks that a destination accepts publishing, without sending media.
pub async fn probe(url: &RtmpUrl, cfg: &ClientConfig) -> Result<ConnectInfo, RtmpError> {
    let client = PublishingClient::connect(url, cfg).await?;
    let info = client.info.clone();
    client.close().await?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA file that cannot be loaded fails an RTMPS connection with a TLS error
    /// naming the file, before any connection is attempted (nothing listens here).
    #[tokio::test]
    async fn an_unusable_ca_file_fails_before_connecting() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = RtmpUrl::parse(&format!("rtmps://127.0.0.1:{port}/live/k")).unwrap();
        let cfg = ClientConfig {
            tls_ca_file: Some("/nonexistent/ca.pem".into()),
            ..ClientConfig::default()
        };
        match PublishingClient::connect(&url, &cfg).await {
            Err(RtmpError::Tls(m)) => {
                assert!(
                    m.starts_with("CA file /nonexistent/ca.pem: cannot read it"),
                    "{m}"
                )
            }
            Err(other) => panic!("expected a TLS error, got {other:?}"),
            Ok(_) => panic!("connected to nothing"),
        }
        // Plain RTMP ignores the setting and fails to connect as usual.
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/k")).unwrap();
        assert!(matches!(
            PublishingClient::connect(&url, &cfg).await,
            Err(RtmpError::Io(_))
        ));
    }

    /// An IPv6 destination connects to the bare address and sends a bracketed tcUrl.
    #[tokio::test]
    async fn ipv6_destination_connects_by_address() {
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            eprintln!("skipped: no IPv6 loopback on this machine");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let url = RtmpUrl::parse(&format!("rtmp://[::1]:{port}/live/k")).unwrap();
        assert_eq!(url.tc_url(), format!("rtmp://[::1]:{port}/live"));
        let accept = tokio::spawn(async move { listener.accept().await.map(|(_, peer)| peer) });
        let s = open(&url, &ClientConfig::default()).await.unwrap();
        drop(s);
        assert!(accept.await.unwrap().unwrap().is_ipv6());
    }
}
