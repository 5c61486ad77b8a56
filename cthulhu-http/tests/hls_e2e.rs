//! LL-HLS end to end over a real hub: synthetic H.264 + AAC published, playlists,
//! init segment, segments and parts fetched through `HlsService::serve`, blocking
//! reloads held until the part exists, timeouts, refusals, viewer accounting,
//! publisher drops and the idle stop.

// Test helpers fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cthulhu_core::{
    CodecId, Frame, FrameFlags, Hub, HubConfig, Publisher, StreamPath, Timestamp, TrackId,
};
use cthulhu_http::hls::{
    CACHE_BLOCKING, CACHE_IMMUTABLE, CACHE_PLAYLIST, HlsConfig, HlsError, HlsResource, HlsResponse,
    HlsService,
};
use tokio::time::Instant;

fn avc_config() -> Bytes {
    Bytes::from_static(&[
        0x01, 0x42, 0xC0, 0x0A, 0xFF, 0xE1, 0x00, 0x0A, 0x67, 0x42, 0xC0, 0x0A, 0xD9, 0x1E, 0x84,
        0x00, 0x00, 0x03, 0x01, 0x00, 0x04, 0x68, 0xCE, 0x3C, 0x80,
    ])
}

fn config_frame(track: TrackId, codec: CodecId, data: Bytes) -> Frame {
    Frame {
        track,
        codec,
        pts: Timestamp(0),
        dts: Timestamp(0),
        flags: FrameFlags::CONFIG,
        data,
    }
}

/// 30 fps video with a keyframe every second, 48 kHz AAC, in decode order.
fn av_frames(secs: f64) -> Vec<Frame> {
    let end = (secs * 90_000.0) as i64;
    let mut out = Vec::new();
    let (mut v, mut a) = (0i64, 0i64);
    loop {
        let (vd, ad) = (v * 3000, a * 1920);
        if vd >= end && ad >= end {
            return out;
        }
        if vd <= ad {
            let key = v % 30 == 0;
            let size = 400 + (v % 7) as usize * 10;
            let mut data = (size as u32).to_be_bytes().to_vec();
            data.push(if key { 0x65 } else { 0x41 });
            data.resize(size + 4, 0x5A);
            out.push(Frame {
                track: TrackId::VIDEO,
                codec: CodecId::H264,
                pts: Timestamp(vd),
                dts: Timestamp(vd),
                flags: if key {
                    FrameFlags::KEYFRAME
                } else {
                    FrameFlags::NONE
                },
                data: Bytes::from(data),
            });
            v += 1;
        } else {
            out.push(Frame {
                track: TrackId::AUDIO,
                codec: CodecId::Aac,
                pts: Timestamp(ad),
                dts: Timestamp(ad),
                flags: FrameFlags::NONE,
                data: Bytes::from_static(&[0x21, 0x10, 0x05, 0x00, 0xA0, 0x1B]),
            });
            a += 1;
        }
    }
}

/// A publisher with its frames, sent up to a media time on demand.
struct Feeder {
    publisher: Publisher,
    frames: Vec<Frame>,
    next: usize,
}

impl Feeder {
    fn start(hub: &Hub, path: &StreamPath, secs: f64) -> Self {
        let publisher = hub.publish(path).unwrap();
        publisher.send(config_frame(TrackId::VIDEO, CodecId::H264, avc_config()));
        publisher.send(config_frame(
            TrackId::AUDIO,
            CodecId::Aac,
            Bytes::from_static(&[0x11, 0x90]),
        ));
        Self {
            publisher,
            frames: av_frames(secs),
            next: 0,
        }
    }

    /// Sends the frames before `secs` of media time.
    fn feed_until(&mut self, secs: f64) {
        let end = (secs * 90_000.0) as i64;
        while let Some(f) = self.frames.get(self.next) {
            if f.dts.ticks() >= end {
                break;
            }
            assert!(self.publisher.send(f.clone()));
            self.next += 1;
        }
    }

    /// Sends the frames before `secs`, a little at a time, yielding between.
    async fn feed_slowly(&mut self, secs: f64) {
        let mut at = self.next_time();
        while at < secs {
            at = (at + 0.1).min(secs);
            self.feed_until(at);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn next_time(&self) -> f64 {
        self.frames
            .get(self.next)
            .map_or(f64::MAX, |f| f.dts.ticks() as f64 / 90_000.0)
    }
}

fn path() -> StreamPath {
    StreamPath::new("live/test").unwrap()
}

fn viewer() -> Option<SocketAddr> {
    Some("192.0.2.7:40000".parse().unwrap())
}

async fn get(hls: &HlsService, name: &str, query: &str) -> Result<HlsResponse, HlsError> {
    let resource = HlsResource::parse(name).ok_or(HlsError::NotFound)?;
    hls.serve(&path(), &resource, query, viewer()).await
}

fn text(r: &HlsResponse) -> String {
    String::from_utf8(r.body.to_vec()).unwrap()
}

/// The top-level box names; panics when a box does not fit.
fn boxes(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        assert!(size >= 8 && at + size <= data.len(), "box at {at} fits");
        out.push(String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned());
        at += size;
    }
    out
}

/// URIs named by a playlist: (kind, uri without the query, query).
fn uris(playlist: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for line in playlist.lines() {
        let (kind, uri) = if let Some(rest) = line.strip_prefix('#') {
            let Some(i) = rest.find("URI=\"") else {
                continue;
            };
            let u = &rest[i + 5..];
            let tag = rest.split(':').next().unwrap().to_string();
            (tag, u[..u.find('"').unwrap()].to_string())
        } else {
            ("SEGMENT".to_string(), line.to_string())
        };
        let (name, query) = uri.split_once('?').unwrap_or((&uri, ""));
        out.push((kind, name.to_string(), query.to_string()));
    }
    out
}

fn config() -> HlsConfig {
    HlsConfig {
        max_blocking_wait: Duration::from_millis(800),
        publisher_grace: Duration::from_millis(600),
        ..HlsConfig::default()
    }
}

#[tokio::test]
async fn a_live_stream_plays_with_init_segments_and_parts() {
    let hub = Hub::new(HubConfig::default());
    let hls = HlsService::new(hub.clone(), config()).unwrap();
    let mut feeder = Feeder::start(&hub, &path(), 20.0);
    feeder.feed_until(0.9);

    // the first request starts the muxer and waits for its first segment
    let pushing = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        feeder.feed_slowly(4.3).await;
        feeder
    };
    let (mv, mut feeder) = tokio::join!(get(&hls, "index.m3u8", "key=abc"), pushing);
    let mv = mv.unwrap();
    assert_eq!(mv.cache_control, CACHE_PLAYLIST);
    let mv = text(&mv);
    assert!(mv.contains("CODECS=\"avc1.42c00a,mp4a.40.2\""), "{mv}");
    assert!(mv.contains("RESOLUTION=16x16"), "{mv}");
    assert!(mv.lines().any(|l| l == "media.m3u8?key=abc"), "{mv}");

    let media = get(&hls, "media.m3u8", "key=abc").await.unwrap();
    let media = text(&media);
    assert!(
        media.contains("#EXT-X-PART-INF:PART-TARGET=0.20000"),
        "{media}"
    );
    let named = uris(&media);
    assert!(named.iter().all(|(_, _, q)| q == "key=abc"), "{media}");
    let kinds = |k: &str| named.iter().filter(|(kind, ..)| kind == k).count();
    assert_eq!(kinds("EXT-X-MAP"), 1);
    assert!(kinds("SEGMENT") >= 3, "{media}");
    assert!(kinds("EXT-X-PART") >= 10, "{media}");
    assert_eq!(kinds("EXT-X-PRELOAD-HINT"), 1);

    let mut fetched = 0;
    for (kind, name, query) in &named {
        let r = match kind.as_str() {
            "EXT-X-PRELOAD-HINT" => continue,
            _ => get(&hls, name, query).await.unwrap(),
        };
        assert_eq!(r.cache_control, CACHE_IMMUTABLE);
        let b = boxes(&r.body);
        if kind == "EXT-X-MAP" {
            assert_eq!(b, ["ftyp", "moov"]);
        } else {
            assert_eq!(b[0], "moof", "{name}");
            assert!(b.iter().all(|n| n == "moof" || n == "mdat"), "{name}");
            assert_eq!(b.iter().filter(|n| *n == "moof").count(), b.len() / 2);
        }
        fetched += 1;
    }
    assert!(fetched > 14);

    // a segment's parts make up the segment
    let seg = named
        .iter()
        .rev()
        .find(|(k, ..)| k == "SEGMENT")
        .unwrap()
        .1
        .clone();
    let Some(HlsResource::Segment { msn, .. }) = HlsResource::parse(&seg) else {
        panic!("{seg}")
    };
    let mut joined = Vec::new();
    for (_, name, _) in named.iter().filter(|(k, ..)| k == "EXT-X-PART") {
        if let Some(HlsResource::Part { msn: m, .. }) = HlsResource::parse(name)
            && m == msn
        {
            joined.extend_from_slice(&get(&hls, name, "").await.unwrap().body);
        }
    }
    assert_eq!(joined, get(&hls, &seg, "").await.unwrap().body.to_vec());

    // the same playlist for the same version is the same buffer
    let a = get(&hls, "media.m3u8", "key=abc").await.unwrap().body;
    let b = get(&hls, "media.m3u8", "key=abc").await.unwrap().body;
    assert_eq!(a.as_ptr(), b.as_ptr(), "rendered once, shared");

    // the viewer shows as an HLS player of the stream
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let snap = hub.stream_snapshot(&path()).unwrap();
        let players = snap.players_by_protocol();
        if players.iter().any(|(p, n)| *p == "hls" && *n == 1) {
            let bytes: u64 = snap.players().map(|m| m.reading.bytes_sent).sum();
            assert!(bytes > 10_000, "{bytes}");
            break;
        }
        assert!(Instant::now() < deadline, "{players:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = hls.streams();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].viewers, 1);
    assert!(stats[0].live && !stats[0].ended);
    feeder.feed_until(4.4);
}

/// Starts a stream and returns its feeder and the (msn, part) of the next part.
async fn started(hls: &HlsService, hub: &Hub) -> (Feeder, u64, u64) {
    let mut feeder = Feeder::start(hub, &path(), 30.0);
    feeder.feed_until(0.9);
    let pushing = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        feeder.feed_slowly(2.45).await;
        feeder
    };
    let (first, feeder) = tokio::join!(get(hls, "media.m3u8", ""), pushing);
    first.unwrap();
    // let the muxer take what was sent
    tokio::time::sleep(Duration::from_millis(100)).await;
    let media = text(&get(hls, "media.m3u8", "").await.unwrap());
    let hint = uris(&media)
        .into_iter()
        .find(|(k, ..)| k == "EXT-X-PRELOAD-HINT")
        .expect("a preload hint");
    let Some(HlsResource::Part { msn, index, .. }) = HlsResource::parse(&hint.1) else {
        panic!("{hint:?}")
    };
    (feeder, msn, index)
}

#[tokio::test]
async fn a_blocking_reload_returns_when_the_part_appears() {
    let hub = Hub::new(HubConfig::default());
    let hls = HlsService::new(hub.clone(), config()).unwrap();
    let (mut feeder, msn, part) = started(&hls, &hub).await;
    let query = format!("_HLS_msn={msn}&_HLS_part={part}");
    let asked = Instant::now();
    let (reply, pushed_at) = tokio::join!(get(&hls, "media.m3u8", &query), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let at = Instant::now();
        // the part completes when the frame after it arrives
        feeder.feed_until(feeder.next_time() + 0.25);
        at
    });
    let answered = Instant::now();
    let reply = reply.unwrap();
    assert_eq!(reply.cache_control, CACHE_BLOCKING);
    assert!(answered >= pushed_at, "held until the part was pushed");
    assert!(answered - asked >= Duration::from_millis(300));
    // Answered (not timed out: that would be an error) after the push: the push woke
    // it. No upper bound in wall time: a loaded CI machine may be slow to schedule.
    let media = text(&reply);
    let wanted = format!("-{msn}-{part}.m4s");
    assert!(
        media
            .lines()
            .any(|l| l.starts_with("#EXT-X-PART:") && l.contains(&wanted)),
        "{media}"
    );

    // the hinted part, asked before it exists, is held the same way
    let hint = uris(&media)
        .into_iter()
        .find(|(k, ..)| k == "EXT-X-PRELOAD-HINT")
        .unwrap()
        .1;
    let (part_reply, pushed_at) = tokio::join!(get(&hls, &hint, ""), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let at = Instant::now();
        feeder.feed_until(feeder.next_time() + 0.25);
        at
    });
    assert!(Instant::now() >= pushed_at);
    let body = part_reply.unwrap().body;
    assert_eq!(boxes(&body)[0], "moof");
}

#[tokio::test]
async fn blocking_reloads_time_out_and_far_future_ones_are_refused() {
    let hub = Hub::new(HubConfig::default());
    let hls = HlsService::new(hub.clone(), config()).unwrap();
    let (_feeder, msn, part) = started(&hls, &hub).await;

    // nothing arrives: 503 after the bounded wait (0.8 s here)
    let asked = Instant::now();
    let err = get(
        &hls,
        "media.m3u8",
        &format!("_HLS_msn={msn}&_HLS_part={part}"),
    )
    .await
    .unwrap_err();
    let waited = asked.elapsed();
    assert_eq!(err, HlsError::Timeout);
    assert_eq!(err.http_status(), 503);
    assert!(waited >= Duration::from_millis(790), "{waited:?}");
    // Bounded: well past 0.8 s would mean the bound is not applied (5 s leaves room
    // for a loaded machine).
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // the hinted part too
    let err = get(
        &hls,
        &format!("part-{}-{msn}-{part}.m4s", session(&hls)),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(err, HlsError::Timeout);

    // more than two segments past the last complete one: 400 at once
    let asked = Instant::now();
    let err = get(&hls, "media.m3u8", &format!("_HLS_msn={}", msn + 2))
        .await
        .unwrap_err();
    assert_eq!(err, HlsError::TooFarAhead);
    assert_eq!(err.http_status(), 400);
    // a part far past the Advance Part Limit
    let err = get(&hls, "media.m3u8", &format!("_HLS_msn={msn}&_HLS_part=99"))
        .await
        .unwrap_err();
    assert_eq!(err, HlsError::TooFarAhead);
    // At once: not held for the 0.8 s blocking wait (either of the two would be).
    assert!(asked.elapsed() < Duration::from_millis(700));

    // malformed or unknown
    let err = get(&hls, "media.m3u8", "_HLS_part=1").await.unwrap_err();
    assert_eq!(err.http_status(), 400);
    let err = get(&hls, "seg-00000000-0.m4s", "").await.unwrap_err();
    assert_eq!(err, HlsError::NotFound, "another session");
    let err = get(
        &hls,
        &format!("part-{}-{}-0.m4s", session(&hls), msn + 50),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(err, HlsError::NotFound, "far from the live edge: not held");
    let other = StreamPath::new("live/nobody").unwrap();
    let err = hls
        .serve(&other, &HlsResource::Media, "", None)
        .await
        .unwrap_err();
    assert_eq!(err, HlsError::NotLive(other.clone()));
    assert_eq!(err.http_status(), 404);
    assert_eq!(
        hls.streams().len(),
        1,
        "no muxer for a path that is not live"
    );
}

fn session(hls: &HlsService) -> String {
    hls.streams()[0].session.clone()
}

#[tokio::test]
async fn a_publisher_drop_within_the_grace_is_a_discontinuity_and_after_it_the_end() {
    let hub = Hub::new(HubConfig::default());
    let hls = HlsService::new(hub.clone(), config()).unwrap();
    let (feeder, _, _) = started(&hls, &hub).await;
    drop(feeder);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let media = text(&get(&hls, "media.m3u8", "").await.unwrap());
    assert!(!media.contains("PRELOAD-HINT"), "{media}");
    assert!(!media.contains("ENDLIST"), "{media}");

    // back within the grace: same playlist, a discontinuity, a new init
    let mut feeder = Feeder::start(&hub, &path(), 10.0);
    feeder.feed_slowly(2.3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let media = text(&get(&hls, "media.m3u8", "").await.unwrap());
    assert_eq!(
        media.matches("#EXT-X-DISCONTINUITY\n").count(),
        1,
        "{media}"
    );
    assert_eq!(media.matches("#EXT-X-MAP").count(), 2, "{media}");
    assert!(media.contains("PRELOAD-HINT"), "{media}");

    // gone for longer than the grace: the playlist ends
    drop(feeder);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let media = text(&get(&hls, "media.m3u8", "_HLS_msn=100").await.unwrap());
    assert!(media.ends_with("#EXT-X-ENDLIST\n"), "{media}");
    assert!(!media.contains("PRELOAD-HINT"));
}

#[tokio::test]
async fn an_idle_muxer_stops_and_leaves_the_hub() {
    let hub = Hub::new(HubConfig::default());
    let hls = HlsService::new(
        hub.clone(),
        HlsConfig {
            idle_timeout: Duration::from_secs(1),
            ..config()
        },
    )
    .unwrap();
    let (mut feeder, _, _) = started(&hls, &hub).await;
    let subscribed = |hub: &Hub| {
        hub.stream_snapshot(&path())
            .unwrap()
            .subscribers
            .iter()
            .any(|s| s.label.starts_with("hls-play:"))
    };
    assert!(subscribed(&hub));
    let deadline = Instant::now() + Duration::from_secs(4);
    while !hls.streams().is_empty() {
        feeder.feed_until(feeder.next_time() + 0.1);
        assert!(Instant::now() < deadline, "the muxer stops when idle");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!subscribed(&hub));
    // media of the old session is gone; a new request starts a new session
    let err = get(&hls, "init-00000000-0.mp4", "").await.unwrap_err();
    assert_eq!(err, HlsError::NotFound);
    let pushing = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        feeder.feed_slowly(feeder.next_time() + 2.5).await;
    };
    let (media, ()) = tokio::join!(get(&hls, "media.m3u8", ""), pushing);
    assert!(text(&media.unwrap()).contains("#EXT-X-MEDIA-SEQUENCE:0"));
}

#[tokio::test]
async fn streams_are_capped() {
    let hub = Hub::new(HubConfig::default());
    let hls = HlsService::new(
        hub.clone(),
        HlsConfig {
            max_streams: 1,
            max_blocking_wait: Duration::from_millis(100),
            ..HlsConfig::default()
        },
    )
    .unwrap();
    let a = StreamPath::new("live/a").unwrap();
    let b = StreamPath::new("live/b").unwrap();
    let _pa = hub.publish(&a).unwrap();
    let _pb = hub.publish(&b).unwrap();
    // no media: the first waits and times out, but its muxer stays
    let err = hls
        .serve(&a, &HlsResource::Media, "", None)
        .await
        .unwrap_err();
    assert_eq!(err, HlsError::Timeout);
    let err = hls
        .serve(&b, &HlsResource::Media, "", None)
        .await
        .unwrap_err();
    assert_eq!(err, HlsError::TooManyStreams);
    assert_eq!(err.http_status(), 503);
}
