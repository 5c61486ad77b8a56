//! SRT players for conversion measurements (RTMP or SRT in, SRT out): a caller
//! asks the server for the stream, demuxes the MPEG-TS it gets back into frames
//! and, as a probe, matches every picture to its sending by
//! [`VideoKey::LastNal`](crate::key::VideoKey::LastNal).
//!
//! SRT delivers each packet at its send time plus the connection's latency
//! (TSBPD), so what a probe measures includes that latency by design: report it
//! with the `latency=` the URL asked for.

use std::net::ToSocketAddrs;
use std::time::Instant;

use cthulhu_core::MediaKind;
use cthulhu_core::format::ts::{TsDemuxer, TsEvent};
use cthulhu_srt::{CallerConfig, SrtUrl};

use crate::BenchError;
use crate::key::last_nal_key;
use crate::player::{PlayerShared, ProbeCtx};
use crate::stats::{PeerState, PeerStats};

/// FLV tag header bytes a video frame would carry over RTMP (frame type, packet
/// type, composition time): counted with SRT frames so the kept-up ratio compares
/// like with like against the publisher's message body bytes.
const FLV_VIDEO_HEADER: u64 = 5;
/// The same for an AAC frame.
const FLV_AUDIO_HEADER: u64 = 2;

/// Where and how to call for an SRT stream.
#[derive(Debug, Clone)]
pub struct SrtTarget {
    /// The caller settings (address, stream id, passphrase, latency).
    pub caller: CallerConfig,
}

impl SrtTarget {
    /// Parses `srt://host:port?streamid=...&latency=...&passphrase=...`; `what`
    /// names the URL in errors.
    pub fn parse(url: &str, what: &'static str) -> Result<Self, BenchError> {
        let u = SrtUrl::parse(url).map_err(|e| BenchError::Setup(format!("the {what}: {e}")))?;
        let addr = (u.host.as_str(), u.port)
            .to_socket_addrs()
            .map_err(|e| BenchError::Setup(format!("the {what}: resolving {}: {e}", u.host)))?
            .next()
            .ok_or_else(|| BenchError::Setup(format!("the {what}: {} has no address", u.host)))?;
        let mut caller = CallerConfig::new(addr);
        caller.stream_id = u.stream_id.as_ref().map(|s| s.expose().to_owned());
        caller.passphrase = u.passphrase.clone();
        caller.key_size = u.key_size;
        if let Some(l) = u.latency {
            caller.latency = l;
        }
        if let Some(t) = u.connect_timeout {
            caller.connect_timeout = t;
        }
        Ok(Self { caller })
    }
}

/// Plays over SRT until the connection ends (or the task is aborted).
pub(crate) async fn play(
    target: &SrtTarget,
    shared: &PlayerShared,
    stats: &PeerStats,
    probe: Option<&ProbeCtx>,
) -> Result<(), String> {
    let conn = tokio::time::timeout(
        shared.setup_timeout,
        cthulhu_srt::connect(target.caller.clone()),
    )
    .await
    .map_err(|_| "setup timed out".to_owned())?
    .map_err(|e| format!("connect: {e}"))?;
    stats.set_state(PeerState::Active);
    let (_tx, mut rx) = conn.split();
    let mut demux = TsDemuxer::new();
    let mut bytes = 0u64;
    let mut media = 0u64;
    while let Some(msg) = rx.recv().await {
        let now = Instant::now();
        let now_us = shared.clock.at_us(now);
        bytes += msg.len() as u64;
        demux.push(&msg);
        while let Some(ev) = demux.poll_event() {
            let TsEvent::Frame(f) = ev else { continue };
            if f.is_config() {
                continue;
            }
            let video = f.kind() == MediaKind::Video;
            media += f.data.len() as u64
                + if video {
                    FLV_VIDEO_HEADER
                } else {
                    FLV_AUDIO_HEADER
                };
            if video
                && let Some(p) = probe
                && let Some(k) = last_nal_key(&f.data)
            {
                p.latency.observe(&p.sent, &shared.window, k, now, now_us);
            }
        }
        stats.record_read(&shared.window, now_us, bytes, media);
    }
    Err("closed by the server".into())
}
