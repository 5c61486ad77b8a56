use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::model::{CodecId, FrameFlags, Timestamp, TrackId};

fn path() -> StreamPath {
    StreamPath::new("live/test").unwrap()
}

fn video(n: i64, key: bool) -> Frame {
    Frame {
        track: TrackId::VIDEO,
        codec: CodecId::H264,
        pts: Timestamp::from_millis(n * 33),
        dts: Timestamp::from_millis(n * 33),
        flags: if key {
            FrameFlags::KEYFRAME
        } else {
            FrameFlags::NONE
        },
        data: Bytes::from(vec![n as u8; 1000]),
    }
}

fn audio(n: i64) -> Frame {
    Frame {
        track: TrackId::AUDIO,
        codec: CodecId::Aac,
        pts: Timestamp::from_millis(n * 21),
        dts: Timestamp::from_millis(n * 21),
        flags: FrameFlags::NONE,
        data: Bytes::from(vec![0xAA; 300]),
    }
}

fn config(codec: CodecId, track: TrackId) -> Frame {
    Frame {
        track,
        codec,
        pts: Timestamp(0),
        dts: Timestamp(0),
        flags: FrameFlags::CONFIG,
        data: Bytes::from_static(&[1, 2, 3, 4]),
    }
}

fn drain(sub: &mut Subscriber) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    sub.drain_into(&mut out, usize::MAX);
    out
}

fn frames(events: &[StreamEvent]) -> Vec<&Frame> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

#[test]
fn late_subscriber_starts_on_cached_keyframe_with_configs() {
    let hub = Hub::new(HubConfig::default());
    let publisher = hub.publish(&path()).unwrap();
    publisher.send(config(CodecId::H264, TrackId::VIDEO));
    publisher.send(config(CodecId::Aac, TrackId::AUDIO));
    for n in 0..50 {
        publisher.send(video(n, n % 30 == 0));
        publisher.send(audio(n));
    }
    let mut sub = hub.subscribe(&path(), SubscribeOptions::labelled("late"));
    let evs = drain(&mut sub);
    assert!(matches!(evs[0], StreamEvent::Started(_)));
    let fs = frames(&evs);
    assert!(fs[0].is_config() && fs[1].is_config());
    assert!(
        fs[2].is_keyframe(),
        "first media frame is the cached keyframe"
    );
    assert_eq!(fs[2].dts, Timestamp::from_millis(30 * 33));
    // GOP 30..50 for video plus the audio frames after the keyframe
    assert_eq!(
        fs.iter().filter(|f| f.kind() == MediaKind::Video).count(),
        20 + 1
    );
    // The stream info learnt both tracks from the config frames.
    let info = sub.info().unwrap();
    assert_eq!(info.tracks.len(), 2);
}

#[test]
fn subscriber_without_cache_waits_for_keyframe_silently() {
    let hub = Hub::new(HubConfig {
        gop_cache_bytes: 1500, // less than two frames: the cache gives up
        ..HubConfig::default()
    });
    let publisher = hub.publish(&path()).unwrap();
    publisher.send(config(CodecId::H264, TrackId::VIDEO));
    for n in 0..5 {
        publisher.send(video(n, n == 0));
    }
    let mut sub = hub.subscribe(&path(), SubscribeOptions::labelled("p"));
    for n in 5..10 {
        publisher.send(video(n, n == 8));
    }
    let evs = drain(&mut sub);
    let fs = frames(&evs);
    assert!(fs[0].is_config());
    assert!(fs[1].is_keyframe());
    assert_eq!(fs[1].dts, Timestamp::from_millis(8 * 33));
    assert!(!evs.iter().any(|e| matches!(e, StreamEvent::Gap { .. })));
    assert_eq!(sub.stats().dropped_frames, 0, "starting is not dropping");
}

#[test]
fn second_publisher_is_rejected_then_allowed_after_unpublish() {
    let hub = Hub::new(HubConfig::default());
    let first = hub.publish(&path()).unwrap();
    assert_eq!(
        hub.publish(&path()).unwrap_err(),
        HubError::AlreadyPublishing(path())
    );
    drop(first);
    assert!(!hub.is_live(&path()));
    let _second = hub.publish(&path()).unwrap();
    assert!(hub.is_live(&path()));
}

#[tokio::test]
async fn replace_policy_ends_the_old_publisher() {
    let hub = Hub::new(HubConfig {
        conflict: PublishConflict::Replace,
        ..HubConfig::default()
    });
    let first = hub.publish(&path()).unwrap();
    let second = hub.publish(&path()).unwrap();
    assert_eq!(first.ended().await, EndReason::Replaced);
    assert!(!first.send(video(0, true)), "replaced publisher is refused");
    assert!(second.send(video(0, true)));
    drop(first); // must not end the new session
    assert!(hub.is_live(&path()));
}

#[test]
fn slow_subscriber_skips_to_next_keyframe_and_counts_drops() {
    let hub = Hub::new(HubConfig::default());
    let publisher = hub.publish(&path()).unwrap();
    let mut slow = hub.subscribe(
        &path(),
        SubscribeOptions {
            queue_frames: Some(10),
            ..SubscribeOptions::labelled("slow")
        },
    );
    let mut fast = hub.subscribe(&path(), SubscribeOptions::labelled("fast"));
    publisher.send(config(CodecId::H264, TrackId::VIDEO));
    let mut fast_seen = 0;
    for n in 0..95 {
        publisher.send(video(n, n % 30 == 0));
        fast_seen += frames(&drain(&mut fast)).len();
        let st = slow.stats();
        assert!(st.queued_frames <= 10 + 1, "queue bound holds: {st:?}");
    }
    assert_eq!(fast_seen, 96, "the fast subscriber lost nothing");
    let evs = drain(&mut slow);
    let fs = frames(&evs);
    // kept: config, then the frames from the last keyframe (90) on
    assert!(fs[0].is_config());
    assert!(fs[1].is_keyframe());
    assert_eq!(fs[1].dts, Timestamp::from_millis(90 * 33));
    assert_eq!(fs.len(), 1 + 5);
    let gap: u64 = evs
        .iter()
        .map(|e| match e {
            StreamEvent::Gap { dropped } => *dropped,
            _ => 0,
        })
        .sum();
    assert_eq!(
        gap, 90,
        "every media frame before 90 was dropped and reported"
    );
    assert_eq!(slow.stats().dropped_frames, 90);
    assert!(slow.stats().overflows >= 1);
}

#[test]
fn byte_bound_is_enforced() {
    let hub = Hub::new(HubConfig::default());
    let publisher = hub.publish(&path()).unwrap();
    let sub = hub.subscribe(
        &path(),
        SubscribeOptions {
            queue_bytes: Some(10_000),
            ..SubscribeOptions::labelled("bytes")
        },
    );
    for n in 0..1000 {
        publisher.send(video(n, n % 30 == 0));
        assert!(sub.stats().queued_bytes <= 10_000);
    }
    assert!(sub.stats().dropped_frames > 900);
}

#[tokio::test]
async fn disconnect_policy_ends_the_subscription() {
    let hub = Hub::new(HubConfig::default());
    let publisher = hub.publish(&path()).unwrap();
    let mut sub = hub.subscribe(
        &path(),
        SubscribeOptions {
            queue_frames: Some(5),
            overflow: Some(OverflowPolicy::Disconnect),
            ..SubscribeOptions::labelled("strict")
        },
    );
    for n in 0..20 {
        publisher.send(video(n, n == 0));
    }
    assert!(matches!(
        sub.recv().await,
        Some(StreamEvent::Ended(EndReason::Overflow))
    ));
    assert!(sub.recv().await.is_none());
}

#[test]
fn fan_out_shares_payload_memory() {
    let hub = Hub::new(HubConfig::default());
    let publisher = hub.publish(&path()).unwrap();
    let mut subs: Vec<_> = (0..10)
        .map(|i| hub.subscribe(&path(), SubscribeOptions::labelled(format!("s{i}"))))
        .collect();
    let frame = video(0, true);
    let ptr = frame.data.as_ptr();
    publisher.send(frame);
    for sub in &mut subs {
        let evs = drain(sub);
        let f = frames(&evs)[0];
        assert_eq!(f.data.as_ptr(), ptr, "no per-subscriber copy");
    }
}

#[tokio::test]
async fn subscription_outlives_publishers() {
    let hub = Hub::new(HubConfig::default());
    let mut sub = hub.subscribe(&path(), SubscribeOptions::labelled("dest"));
    let p = hub.publish(&path()).unwrap();
    assert!(matches!(sub.recv().await, Some(StreamEvent::Started(i)) if i.generation == 1));
    p.send(video(0, true));
    assert!(matches!(sub.recv().await, Some(StreamEvent::Frame(_))));
    drop(p);
    assert!(matches!(
        sub.recv().await,
        Some(StreamEvent::Ended(EndReason::PublisherGone))
    ));
    let p2 = hub.publish(&path()).unwrap();
    assert!(matches!(sub.recv().await, Some(StreamEvent::Started(i)) if i.generation == 2));
    p2.send(video(0, true));
    assert!(matches!(sub.recv().await, Some(StreamEvent::Frame(_))));
}

#[test]
fn unused_streams_are_collected() {
    let hub = Hub::new(HubConfig::default());
    let sub = hub.subscribe(&path(), SubscribeOptions::labelled("x"));
    assert_eq!(hub.snapshot().len(), 1);
    drop(sub);
    assert!(hub.snapshot().is_empty());
    let p = hub.publish(&path()).unwrap();
    p.send(video(0, true));
    let snap = hub.snapshot();
    assert!(snap[0].live);
    assert_eq!(snap[0].frames_in, 1);
    assert_eq!(snap[0].bytes_in, 1000);
    drop(p);
    assert!(hub.snapshot().is_empty());
}

#[tokio::test]
async fn shutdown_ends_everyone() {
    let hub = Hub::new(HubConfig::default());
    let mut sub = hub.subscribe(&path(), SubscribeOptions::labelled("x"));
    let p = hub.publish(&path()).unwrap();
    hub.shutdown();
    assert_eq!(p.ended().await, EndReason::Shutdown);
    let mut last = None;
    while let Some(ev) = sub.recv().await {
        last = Some(ev);
    }
    assert!(matches!(
        last,
        Some(StreamEvent::Ended(EndReason::Shutdown))
    ));
    assert_eq!(hub.publish(&path()).unwrap_err(), HubError::Closed);
}

#[tokio::test(start_paused = true)]
async fn continuity_resumes_within_grace_on_one_timeline() {
    let hub = Hub::new(HubConfig::default());
    let mut sub = hub.subscribe(&path(), SubscribeOptions::labelled("dest"));
    let mut cont = Continuity::new(Duration::from_secs(10));
    let p = hub.publish(&path()).unwrap();
    assert!(matches!(
        cont.next(&mut sub).await,
        Some(ContinuityEvent::Started(_))
    ));
    for n in 0..31 {
        p.send(video(n, n == 0));
    }
    let mut last = Timestamp(0);
    for _ in 0..31 {
        match cont.next(&mut sub).await {
            Some(ContinuityEvent::Frame(f)) => last = f.dts,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(last, Timestamp::from_millis(990));
    drop(p);
    // The publisher is back after 3 s: the session resumes, timestamps continue.
    let hub2 = hub.clone();
    let back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let p = hub2.publish(&path()).unwrap();
        p.send(video(0, true));
        p.send(video(1, false));
        p
    });
    assert!(matches!(
        cont.next(&mut sub).await,
        Some(ContinuityEvent::Resumed(_))
    ));
    let _p2 = back.await.unwrap();
    let Some(ContinuityEvent::Frame(f0)) = cont.next(&mut sub).await else {
        panic!("expected a frame")
    };
    let Some(ContinuityEvent::Frame(f1)) = cont.next(&mut sub).await else {
        panic!("expected a frame")
    };
    assert_eq!(f0.dts, Timestamp::from_millis(990 + 3000));
    assert_eq!(f1.dts, Timestamp::from_millis(990 + 3000 + 33));
}

#[tokio::test(start_paused = true)]
async fn continuity_next_session_skips_to_a_start_and_pending_comes_first() {
    let hub = Hub::new(HubConfig::default());
    let mut sub = hub.subscribe(&path(), SubscribeOptions::labelled("dest"));
    let mut cont = Continuity::new(Duration::ZERO);
    let p = hub.publish(&path()).unwrap();
    p.send(video(0, true));
    let info = cont.next_session(&mut sub).await.expect("a session");
    assert_eq!(info.path, path());
    // An event set aside while batching is returned before anything queued.
    let mut pending = Some(ContinuityEvent::Gap { dropped: 3 });
    assert!(matches!(
        cont.next_or_pending(&mut pending, &mut sub).await,
        Some(ContinuityEvent::Gap { dropped: 3 })
    ));
    assert!(pending.is_none());
    assert!(matches!(
        cont.next_or_pending(&mut pending, &mut sub).await,
        Some(ContinuityEvent::Frame(_))
    ));
    // Once the hub has shut down there is no next session.
    drop(p);
    hub.shutdown();
    assert!(cont.next_session(&mut sub).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn continuity_ends_after_grace() {
    let hub = Hub::new(HubConfig::default());
    let mut sub = hub.subscribe(&path(), SubscribeOptions::labelled("dest"));
    let mut cont = Continuity::new(Duration::from_secs(10));
    let p = hub.publish(&path()).unwrap();
    assert!(matches!(
        cont.next(&mut sub).await,
        Some(ContinuityEvent::Started(_))
    ));
    drop(p);
    let t0 = tokio::time::Instant::now();
    assert!(matches!(
        cont.next(&mut sub).await,
        Some(ContinuityEvent::Ended(EndReason::PublisherGone))
    ));
    assert_eq!(t0.elapsed(), Duration::from_secs(10));
    // A later publisher starts a fresh session at its own timestamps.
    let p = hub.publish(&path()).unwrap();
    p.send(video(7, true));
    assert!(matches!(
        cont.next(&mut sub).await,
        Some(ContinuityEvent::Started(_))
    ));
    let Some(ContinuityEvent::Frame(f)) = cont.next(&mut sub).await else {
        panic!("expected a frame")
    };
    assert_eq!(f.dts, Timestamp::from_millis(7 * 33));
}

#[test]
fn stream_info_follows_publishes() {
    let hub = Hub::new(HubConfig::default());
    assert!(hub.stream_info(&path()).is_none());
    let _sub = hub.subscribe(&path(), SubscribeOptions::labelled("keep"));
    let p = hub.publish(&path()).unwrap();
    p.send(config(CodecId::H264, TrackId::VIDEO));
    let info = hub.stream_info(&path()).unwrap();
    assert_eq!((info.generation, info.tracks.len()), (1, 1));
    drop(p);
    let p = hub.publish(&path()).unwrap();
    assert_eq!(hub.stream_info(&path()).unwrap().generation, 2);
    drop(p);
}

#[tokio::test(start_paused = true)]
async fn continuity_rides_through_a_replaced_publisher() {
    let hub = Hub::new(HubConfig {
        conflict: PublishConflict::Replace,
        ..HubConfig::default()
    });
    let mut sub = hub.subscribe(&path(), SubscribeOptions::labelled("dest"));
    let mut cont = Continuity::new(Duration::from_secs(10));
    let first = hub.publish(&path()).unwrap();
    assert!(matches!(
        cont.next(&mut sub).await,
        Some(ContinuityEvent::Started(_))
    ));
    first.send(video(0, true));
    assert!(matches!(
        cont.next(&mut sub).await,
        Some(ContinuityEvent::Frame(_))
    ));
    let second = hub.publish(&path()).unwrap();
    second.send(video(0, true));
    assert!(matches!(
        cont.next(&mut sub).await,
        Some(ContinuityEvent::Resumed(_))
    ));
    let Some(ContinuityEvent::Frame(f)) = cont.next(&mut sub).await else {
        panic!("expected a frame")
    };
    assert!(
        f.dts > Timestamp(0),
        "the new publisher continues the timeline"
    );
    drop(first);
}

#[tokio::test]
async fn kick_ends_the_publisher_and_a_new_one_may_come() {
    let hub = Hub::new(HubConfig::default());
    assert!(!hub.kick(&path()), "nobody to kick");
    let mut events = hub.events();
    let mut sub = hub.subscribe(&path(), SubscribeOptions::labelled("x"));
    let p = hub.publish(&path()).unwrap();
    assert!(hub.kick(&path()));
    assert_eq!(p.ended().await, EndReason::Kicked);
    assert!(!p.send(video(0, true)), "a kicked publisher sends nothing");
    assert!(!hub.kick(&path()), "kicked already");
    let mut ended = false;
    while let Some(ev) = sub.try_recv() {
        ended |= matches!(ev, StreamEvent::Ended(EndReason::Kicked));
    }
    assert!(ended);
    let mut unpublished = false;
    while let Ok(ev) = events.try_recv() {
        unpublished |= matches!(
            ev,
            HubEvent::Unpublished {
                reason: EndReason::Kicked,
                ..
            }
        );
    }
    assert!(unpublished);
    let again = hub.publish(&path()).unwrap();
    assert!(again.send(video(0, true)));
}

#[test]
fn snapshot_names_the_publisher() {
    let hub = Hub::new(HubConfig::default());
    let peer: std::net::SocketAddr = "192.0.2.7:50123".parse().unwrap();
    let publisher = hub
        .publish_from(&path(), PublisherOrigin::network("rtmp", peer))
        .unwrap();
    let snap = hub.snapshot();
    let s = snap.iter().find(|s| s.path == path()).unwrap();
    assert_eq!(
        s.publisher,
        Some(PublisherOrigin {
            protocol: "rtmp",
            remote: Some(peer)
        })
    );
    assert!(s.live_since.is_some());
    drop(publisher);
    assert!(
        hub.snapshot()
            .iter()
            .all(|s| s.path != path() || s.publisher.is_none())
    );
    // Without an origin the publisher is local.
    let _p = hub.publish(&path()).unwrap();
    let snap = hub.snapshot();
    let s = snap.iter().find(|s| s.path == path()).unwrap();
    assert_eq!(s.publisher, Some(PublisherOrigin::local("local")));
}

#[test]
fn snapshot_measures_the_last_complete_gop() {
    let hub = Hub::new(HubConfig::default());
    let publisher = hub.publish(&path()).unwrap();
    publisher.send(config(CodecId::H264, TrackId::VIDEO));
    // Frames 0..60 at 33 ms: a keyframe every 30th, audio in between.
    for n in 0..45 {
        publisher.send(video(n, n % 30 == 0));
        publisher.send(audio(n));
        if n < 30 {
            let snap = hub.stream_snapshot(&path()).unwrap();
            assert_eq!(
                snap.gop, None,
                "no GOP is complete before the second keyframe"
            );
        }
    }
    let gop = hub.stream_snapshot(&path()).unwrap().gop.unwrap();
    assert_eq!(gop.frames, 30);
    assert_eq!(gop.duration, Duration::from_millis(30 * 33));
    drop(publisher);
    let _p = hub.publish(&path()).unwrap();
    assert_eq!(
        hub.stream_snapshot(&path()).unwrap().gop,
        None,
        "a new publish starts over"
    );
}

#[test]
fn snapshot_lists_the_members_of_a_shared_writer() {
    let hub = Hub::new(HubConfig::default());
    let sub = hub.subscribe(&path(), SubscribeOptions::labelled("rtmp-play:live/test"));
    let meter = crate::Meter::shared();
    let remote: std::net::SocketAddr = "192.0.2.8:40000".parse().unwrap();
    sub.set_members(vec![crate::Member {
        name: String::new(),
        remote: Some(remote),
        meter: meter.clone(),
    }]);
    meter.add_sent(4096);
    meter.add_dropped(2);
    let snap = hub.stream_snapshot(&path()).unwrap();
    let members = &snap.subscribers[0].members;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].remote, Some(remote));
    assert_eq!(members[0].reading.bytes_sent, 4096);
    assert_eq!(members[0].reading.dropped, 2);
    sub.set_members(Vec::new());
    assert!(
        hub.stream_snapshot(&path()).unwrap().subscribers[0]
            .members
            .is_empty()
    );
}
