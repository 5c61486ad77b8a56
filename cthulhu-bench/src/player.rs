//! RTMP players: cheap ones that drain and count bytes, and probes that also hash
//! every video message to match it to the publisher's send time.
//!
//! Both follow the chunk stream with a [`Skimmer`] (acknowledgements, ping
//! responses, chunk size) and read into one scratch buffer per thread, so a player
//! owns no read buffer: its memory is its socket, its task and a few counters.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::BenchError;
use crate::key::VideoKey;
use crate::skim::Skimmer;
use crate::srt::SrtTarget;
use crate::stats::{Clock, ErrorLog, LatencyLog, PeerState, PeerStats, SentLog, Window};

/// Size of the per-thread read buffer.
const SCRATCH_LEN: usize = 64 * 1024;

/// How much a discarding player drops per `recv`.
const DISCARD_LEN: usize = 256 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_LEN]);
    /// Never written by the kernel (`MSG_TRUNC`): only its length matters.
    static DISCARD: RefCell<Vec<MaybeUninit<u8>>> = RefCell::new(vec![MaybeUninit::uninit(); DISCARD_LEN]);
}

/// What to play: the parts of an `rtmp://host[:port]/app/name` URL.
#[derive(Debug, Clone)]
pub struct PlayTarget {
    /// Host to connect to.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The application.
    pub app: String,
    /// The stream name (with its query, if any).
    pub name: String,
    /// The `tcUrl` sent with `connect`.
    pub tc_url: String,
}

impl PlayTarget {
    /// Parses a play URL (`rtmp://` only: the players speak plain TCP).
    pub fn parse(url: &str) -> Result<Self, BenchError> {
        let u = cthulhu_rtmp::RtmpUrl::parse(url).map_err(|source| BenchError::Url {
            what: "play URL",
            source,
        })?;
        if u.tls {
            return Err(BenchError::Setup("players support rtmp:// only".into()));
        }
        Ok(Self {
            tc_url: u.tc_url(),
            host: u.host,
            port: u.port,
            app: u.app,
            name: u.key,
        })
    }
}

/// What to play, over which protocol.
#[derive(Debug, Clone)]
pub enum Target {
    /// An RTMP stream.
    Rtmp(PlayTarget),
    /// An SRT stream (MPEG-TS), played by calling the server.
    Srt(SrtTarget),
}

impl Target {
    /// Parses an `rtmp://` or `srt://` play URL.
    pub fn parse(url: &str) -> Result<Self, BenchError> {
        if url.starts_with("srt://") {
            SrtTarget::parse(url, "play URL").map(Target::Srt)
        } else {
            PlayTarget::parse(url).map(Target::Rtmp)
        }
    }

    /// Whether this plays over SRT.
    pub fn is_srt(&self) -> bool {
        matches!(self, Target::Srt(_))
    }
}

/// What every player of a run shares.
#[derive(Debug)]
pub struct PlayerShared {
    /// What to play.
    pub target: Target,
    /// How probes match video messages to their sending.
    pub video_key: VideoKey,
    /// The run's clock.
    pub clock: Clock,
    /// The measurement window.
    pub window: Arc<Window>,
    /// Why players failed.
    pub errors: ErrorLog,
    /// Time allowed from TCP connect to `play` sent.
    pub setup_timeout: Duration,
    /// Pause of cheap players after each read (zero: read as soon as data arrives).
    ///
    /// On loopback, how often receivers read changes the sender's cost (window
    /// updates, wake-ups), so this is a measurement setting to report with results.
    pub read_interval: Duration,
    /// Cheap players discard media in the kernel (`recv` with `MSG_TRUNC`: nothing
    /// is copied out) instead of reading and skimming it.
    ///
    /// This halves the tool's cost per byte, so one tool core can read more than
    /// one server core writes. Discarding players count wire bytes (chunk headers
    /// included, under 1% more than the media bytes) and still acknowledge by
    /// byte count; they no longer see the chunk stream, so they do not answer
    /// ping requests (neither server pings within the default 60 s).
    pub discard: bool,
    /// `SO_RCVLOWAT` of discarding players (0: the kernel's default of one byte).
    ///
    /// On loopback the server's core runs the receiving side of every write it makes,
    /// including waking the reader (on a VM, an inter-processor interrupt when the
    /// tool's core is idle); remote players never cost a server that. With a low-water
    /// mark the kernel wakes a cheap player only once that many bytes are queued,
    /// so the server's figures are less about the tool's wake-ups. Probes never set it.
    pub recv_lowat: usize,
}

/// Sets `SO_RCVLOWAT` (socket2, rustix and nix have no setter for it).
#[allow(unsafe_code)]
fn set_recv_lowat(stream: &TcpStream, bytes: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid open socket and a pointer to a c_int of the stated length.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What a probe needs on top of a cheap player.
#[derive(Debug, Clone)]
pub struct ProbeCtx {
    /// The publisher's send times.
    pub sent: Arc<SentLog>,
    /// Where latencies go.
    pub latency: Arc<LatencyLog>,
}

/// Runs one player until its connection ends (or the task is aborted): connects,
/// plays, then drains. Failures are counted in `shared.errors`.
pub async fn run_player(shared: Arc<PlayerShared>, stats: Arc<PeerStats>, probe: Option<ProbeCtx>) {
    let r = match &shared.target {
        Target::Rtmp(t) => play(t, &shared, &stats, probe.as_ref()).await,
        Target::Srt(t) => crate::srt::play(t, &shared, &stats, probe.as_ref()).await,
    };
    stats.set_state(PeerState::Gone);
    if let Err(e) = r {
        shared.errors.add(e);
    }
}

/// Waits for the socket to be readable and reads once into the thread's scratch
/// buffer, giving the bytes to `f`. `Ok(None)`: the peer closed the connection.
async fn read_with<R>(stream: &TcpStream, mut f: impl FnMut(&[u8]) -> R) -> io::Result<Option<R>> {
    loop {
        stream.readable().await?;
        let r = SCRATCH.with(|cell| -> io::Result<Option<Option<R>>> {
            let mut buf = cell
                .try_borrow_mut()
                .map_err(|_| io::Error::other("scratch buffer in use"))?;
            match stream.try_read(&mut buf) {
                Ok(0) => Ok(Some(None)),
                Ok(n) => Ok(Some(Some(f(buf.get(..n).unwrap_or_default())))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        if let Some(r) = r {
            return Ok(r);
        }
    }
}

/// The connection's protocol state during setup.
struct Setup {
    skim: Skimmer,
    ser: ChunkSerializer,
    out: Vec<u8>,
}

impl Setup {
    fn command(
        &mut self,
        name: &str,
        txn: f64,
        object: Amf0Value,
        args: Vec<Amf0Value>,
        stream_id: u32,
    ) -> Result<(), String> {
        let msg = RtmpMessage::Amf0Command {
            command_name: name.into(),
            transaction_id: txn,
            command_object: object,
            additional_arguments: args,
        };
        let payload = msg
            .into_message_payload(RtmpTimestamp::new(0), stream_id)
            .map_err(|e| format!("encoding {name}: {e}"))?;
        // Full headers only: the acknowledgements we write by hand also use chunk
        // stream 2 with full headers, so no compressed header depends on state.
        let packet = self
            .ser
            .serialize(&payload, true, false)
            .map_err(|e| format!("encoding {name}: {e}"))?;
        self.out.extend_from_slice(&packet.bytes);
        Ok(())
    }
}

/// Reads until the `_result`/`_error` of transaction `txn`; returns its arguments.
async fn await_result(
    stream: &mut TcpStream,
    st: &mut Setup,
    txn: f64,
) -> Result<Vec<Amf0Value>, String> {
    loop {
        let fed = read_with(stream, |data| st.skim.handle_bytes(data))
            .await
            .map_err(|e| format!("reading: {e}"))?;
        match fed {
            None => return Err("closed by the server during setup".into()),
            Some(Err(e)) => return Err(format!("chunk stream: {e}")),
            Some(Ok(())) => {}
        }
        st.skim.poll_transmit(&mut st.out);
        flush(stream, &mut st.out).await?;
        while let Some((_, body)) = st.skim.poll_command() {
            let values = guarded_amf(&body)?;
            let mut it = values.into_iter();
            let name = match it.next() {
                Some(Amf0Value::Utf8String(s)) => s,
                _ => continue,
            };
            let t = match it.next() {
                Some(Amf0Value::Number(n)) => n,
                _ => continue,
            };
            let _object = it.next();
            let args: Vec<Amf0Value> = it.collect();
            match name.as_str() {
                "_result" if t == txn => return Ok(args),
                "_error" if t == txn => return Err(format!("refused: {}", status(&args))),
                "onStatus" if status_level(&args) == "error" => {
                    return Err(format!("refused: {}", status(&args)));
                }
                _ => {}
            }
        }
    }
}

/// AMF0 decoding of untrusted bytes: errors and panics of the decoder become errors.
fn guarded_amf(body: &[u8]) -> Result<Vec<Amf0Value>, String> {
    let r = std::panic::catch_unwind(|| rml_amf0::deserialize(&mut io::Cursor::new(body)));
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("bad AMF0 command: {e:?}")),
        Err(_) => Err("bad AMF0 command".into()),
    }
}

fn status_props(args: &[Amf0Value]) -> Option<&HashMap<String, Amf0Value>> {
    args.iter().find_map(|a| match a {
        Amf0Value::Object(p) => Some(p),
        _ => None,
    })
}

fn status_level(args: &[Amf0Value]) -> &str {
    match status_props(args).and_then(|p| p.get("level")) {
        Some(Amf0Value::Utf8String(s)) => s,
        _ => "",
    }
}

fn status(args: &[Amf0Value]) -> String {
    match status_props(args).and_then(|p| p.get("code")) {
        Some(Amf0Value::Utf8String(s)) => s.clone(),
        _ => "no status code".into(),
    }
}

async fn flush(stream: &mut TcpStream, out: &mut Vec<u8>) -> Result<(), String> {
    if !out.is_empty() {
        stream
            .write_all(out)
            .await
            .map_err(|e| format!("writing: {e}"))?;
        out.clear();
    }
    Ok(())
}

async fn handshake(stream: &mut TcpStream, skim: &mut Skimmer) -> Result<(), String> {
    let mut hs = Handshake::new(PeerType::Client);
    let p0p1 = hs
        .generate_outbound_p0_and_p1()
        .map_err(|e| format!("handshake: {e}"))?;
    stream
        .write_all(&p0p1)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    loop {
        let r = read_with(stream, |data| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hs.process_bytes(data)))
        })
        .await
        .map_err(|e| format!("handshake: {e}"))?;
        let res = match r {
            None => return Err("closed by the server in the handshake".into()),
            Some(Err(_)) => return Err("handshake: malformed input".into()),
            Some(Ok(Err(e))) => return Err(format!("handshake: {e}")),
            Some(Ok(Ok(res))) => res,
        };
        match res {
            HandshakeProcessResult::InProgress { response_bytes } => {
                flush(stream, &mut response_bytes.clone()).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                flush(stream, &mut response_bytes.clone()).await?;
                return skim
                    .handle_bytes(&remaining_bytes)
                    .map_err(|e| format!("chunk stream: {e}"));
            }
        }
    }
}

/// Connects, handshakes and asks to play; returns the socket and the skimmer.
async fn setup(t: &PlayTarget) -> Result<(TcpStream, Skimmer), String> {
    let mut stream = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    let mut st = Setup {
        skim: Skimmer::new(),
        ser: ChunkSerializer::new(),
        out: Vec::new(),
    };
    handshake(&mut stream, &mut st.skim).await?;
    let mut obj = HashMap::new();
    obj.insert("app".to_owned(), Amf0Value::Utf8String(t.app.clone()));
    obj.insert(
        "flashVer".to_owned(),
        Amf0Value::Utf8String("LNX 9,0,124,2".into()),
    );
    obj.insert("tcUrl".to_owned(), Amf0Value::Utf8String(t.tc_url.clone()));
    obj.insert("fpad".to_owned(), Amf0Value::Boolean(false));
    obj.insert("capabilities".to_owned(), Amf0Value::Number(15.0));
    obj.insert("audioCodecs".to_owned(), Amf0Value::Number(4071.0));
    obj.insert("videoCodecs".to_owned(), Amf0Value::Number(252.0));
    obj.insert("videoFunction".to_owned(), Amf0Value::Number(1.0));
    st.command("connect", 1.0, Amf0Value::Object(obj), vec![], 0)?;
    flush(&mut stream, &mut st.out).await?;
    await_result(&mut stream, &mut st, 1.0).await?;
    st.command("createStream", 2.0, Amf0Value::Null, vec![], 0)?;
    flush(&mut stream, &mut st.out).await?;
    let args = await_result(&mut stream, &mut st, 2.0).await?;
    let stream_id = match args.first() {
        Some(Amf0Value::Number(n)) if *n >= 0.0 && *n < f64::from(u32::MAX) => *n as u32,
        _ => return Err("createStream gave no stream id".into()),
    };
    st.command(
        "play",
        3.0,
        Amf0Value::Null,
        vec![
            Amf0Value::Utf8String(t.name.clone()),
            // Live stream or recorded: the default of players.
            Amf0Value::Number(-2.0),
        ],
        stream_id,
    )?;
    flush(&mut stream, &mut st.out).await?;
    // From here on commands are skipped like media.
    st.skim.set_capture_commands(false);
    Ok((stream, st.skim))
}

/// What one read of the drain loop found.
enum Drained {
    /// The peer closed the connection.
    Closed,
    /// Bytes were read.
    Read,
    /// Nothing to read after all.
    Empty,
}

async fn play(
    target: &PlayTarget,
    shared: &PlayerShared,
    stats: &PeerStats,
    probe: Option<&ProbeCtx>,
) -> Result<(), String> {
    let (stream, mut skim) = tokio::time::timeout(shared.setup_timeout, setup(target))
        .await
        .map_err(|_| "setup timed out".to_owned())??;
    stats.set_state(PeerState::Active);
    skim.set_hash_video(probe.is_some());
    skim.set_video_key(shared.video_key);
    let mut out: Vec<u8> = Vec::new();
    // Probes always parse; cheap players discard once media flows (the answers to
    // `play` come first and are skimmed like everything before them).
    let mut discard = false;
    loop {
        if !discard && probe.is_none() && shared.discard && skim.media_started() {
            discard = true;
            if shared.recv_lowat > 0 {
                set_recv_lowat(&stream, shared.recv_lowat)
                    .map_err(|e| format!("SO_RCVLOWAT: {}", e.kind()))?;
            }
        }
        stream
            .readable()
            .await
            .map_err(|e| format!("reading: {}", e.kind()))?;
        // A short read means the socket is empty: the closure then reports
        // WouldBlock so tokio clears readiness without a second, empty read.
        let mut drained = Drained::Empty;
        let mut failed = None;
        if discard {
            let sock = socket2::SockRef::from(&stream);
            let _ = stream.try_io(Interest::READABLE, || {
                DISCARD.with(|cell| {
                    let Ok(mut buf) = cell.try_borrow_mut() else {
                        failed = Some("discard buffer in use".to_owned());
                        return Ok(());
                    };
                    match sock.recv_with_flags(&mut buf, libc::MSG_TRUNC) {
                        Ok(0) => drained = Drained::Closed,
                        Ok(n) => {
                            skim.discarded(n);
                            drained = Drained::Read;
                            if n < buf.len() {
                                return Err(io::ErrorKind::WouldBlock.into());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                        Err(e) => failed = Some(format!("reading: {}", e.kind())),
                    }
                    Ok(())
                })
            });
        } else {
            let _ = stream.try_io(Interest::READABLE, || {
                SCRATCH.with(|cell| {
                    let Ok(mut buf) = cell.try_borrow_mut() else {
                        failed = Some("scratch buffer in use".to_owned());
                        return Ok(());
                    };
                    match stream.try_read(&mut buf) {
                        Ok(0) => drained = Drained::Closed,
                        Ok(n) => {
                            if let Err(e) = skim.handle_bytes(buf.get(..n).unwrap_or_default()) {
                                failed = Some(format!("chunk stream: {e}"));
                            }
                            drained = Drained::Read;
                            if n < buf.len() {
                                return Err(io::ErrorKind::WouldBlock.into());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                        Err(e) => failed = Some(format!("reading: {}", e.kind())),
                    }
                    Ok(())
                })
            });
        }
        if let Some(e) = failed {
            return Err(e);
        }
        match drained {
            Drained::Closed => return Err("closed by the server".into()),
            Drained::Empty => continue,
            Drained::Read => {}
        }
        if probe.is_none() && !shared.read_interval.is_zero() {
            tokio::time::sleep(shared.read_interval).await;
        }
        let now = Instant::now();
        let now_us = shared.clock.at_us(now);
        stats.record_read(&shared.window, now_us, skim.bytes_in(), skim.media_bytes());
        if let Some(p) = probe {
            while let Some(h) = skim.poll_video_hash() {
                p.latency.observe(&p.sent, &shared.window, h, now, now_us);
            }
        }
        skim.poll_transmit(&mut out);
        if !out.is_empty() {
            // A few bytes, rarely: written straight away; whatever the socket does
            // not take now goes out after the next read.
            match stream.try_write(&out) {
                Ok(n) => {
                    out.drain(..n.min(out.len()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("writing: {}", e.kind())),
            }
        }
    }
}
