//! Our caller against our listener, and hostile datagrams against the
//! listener. No external programs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cthulhu_srt::{
    CallerConfig, ListenerConfig, MAX_PAYLOAD, Reject, Secret, SrtError, SrtListener, connect,
};
use tokio::net::UdpSocket;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 1316) as u8).collect()
}

async fn listener(cfg: ListenerConfig) -> SrtListener {
    SrtListener::bind("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap()
}

/// Sends `payload` in MAX_PAYLOAD chunks, all at once.
async fn send_all(tx: &mut cthulhu_srt::SrtSender, payload: &[u8]) {
    for chunk in payload.chunks(MAX_PAYLOAD) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_to_listener_both_directions_encrypted() {
    common::init_logging();
    let mut l = listener(ListenerConfig::default()).await;
    let addr = l.local_addr();
    let accept = tokio::spawn(async move {
        let inc = l.next().await.unwrap();
        assert_eq!(inc.stream_id(), Some("#!::r=live/a,s=k"));
        assert!(inc.encrypted());
        assert_eq!(inc.key_size().bytes(), 32);
        let conn = inc
            .accept(Some(Secret::new("0123456789abc")))
            .await
            .unwrap();
        (l, conn)
    });
    let mut cfg = CallerConfig::new(addr);
    cfg.stream_id = Some("#!::r=live/a,s=k".into());
    cfg.passphrase = Some(Secret::new("0123456789abc"));
    cfg.key_size = Some(32);
    let caller = connect(cfg).await.unwrap();
    let (_l, server) = accept.await.unwrap();
    let (mut ctx, mut crx) = caller.split();
    let (mut stx, mut srx) = server.split();

    // A keyframe-sized burst (400 KB at once) each way.
    let up = pattern(400_000);
    let down = pattern(300_000);
    send_all(&mut ctx, &up).await;
    send_all(&mut stx, &down).await;
    let got_up = common::read_all(&mut srx, Duration::from_secs(3), Duration::from_secs(30)).await;
    let got_down =
        common::read_all(&mut crx, Duration::from_secs(3), Duration::from_secs(30)).await;
    assert_eq!(
        common::first_difference(&got_up, &up),
        None,
        "caller → listener"
    );
    assert_eq!(
        common::first_difference(&got_down, &down),
        None,
        "listener → caller"
    );
    let stats = ctx.stats();
    eprintln!("caller stats: {stats:?}");
    assert_eq!(stats.packets_send_dropped, 0);

    assert!(matches!(
        ctx.send(Bytes::from(vec![0; MAX_PAYLOAD + 1])).await,
        Err(SrtError::PayloadTooLarge(1317))
    ));
    ctx.close().await;
    // The listener side sees the end.
    let rest = common::read_all(&mut srx, Duration::from_secs(10), Duration::from_secs(10)).await;
    assert!(rest.is_empty());
    assert!(srx.recv().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passphrase_and_rejection_reach_the_caller() {
    common::init_logging();
    let mut l = listener(ListenerConfig::default()).await;
    let addr = l.local_addr();
    let decide = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..3 {
            let inc = l.next().await.unwrap();
            match inc.stream_id() {
                Some("nope") => {
                    inc.reject(Reject::NotFound);
                    results.push(Err(SrtError::Refused(Reject::NotFound)));
                }
                _ => results.push(
                    inc.accept(Some(Secret::new("right passphrase")))
                        .await
                        .map(drop),
                ),
            }
        }
        results
    });
    let mut cfg = CallerConfig::new(addr);
    cfg.stream_id = Some("nope".into());
    let r = connect(cfg.clone()).await;
    assert!(
        matches!(r, Err(SrtError::Rejected(Reject::NotFound))),
        "{r:?}"
    );

    cfg.stream_id = Some("enc".into());
    cfg.passphrase = Some(Secret::new("wrong passphrase"));
    let r = connect(cfg.clone()).await;
    assert!(
        matches!(r, Err(SrtError::Rejected(Reject::BadSecret))),
        "{r:?}"
    );

    cfg.passphrase = Some(Secret::new("right passphrase"));
    let conn = connect(cfg).await.unwrap();
    drop(conn);
    let results = decide.await.unwrap();
    assert!(
        matches!(results[1], Err(SrtError::Refused(Reject::BadSecret))),
        "{results:?}"
    );
    assert!(results[2].is_ok(), "{results:?}");
}

/// Garbage, truncated and hostile handshakes, and a flood of inductions from
/// many addresses: the listener keeps serving and its handshake table stays
/// bounded (a real caller gets through once the flood's entries time out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_induction_flood_do_not_hurt_the_listener() {
    common::init_logging();
    let cfg = ListenerConfig {
        max_pending_handshakes: 8,
        handshake_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let mut l = listener(cfg).await;
    let addr = l.local_addr();
    let accept = tokio::spawn(async move {
        let inc = l.next().await.unwrap();
        let conn = inc.accept(None).await.unwrap();
        (l, conn)
    });

    let garbage = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seed = 0x1234_5678_u32;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for i in 0..2000 {
        let len = (rnd() % 1600) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if i % 3 == 0 && d.len() >= 64 {
            // A handshake header to socket id 0 with a random body.
            d[0..4].copy_from_slice(&[0x80, 0, 0, 0]);
            d[12..16].copy_from_slice(&[0; 4]);
            d[16..20].copy_from_slice(&5u32.to_be_bytes());
            let ty: i32 = [1, -1, 0, -2, 1005][i % 5];
            d[36..40].copy_from_slice(&ty.to_be_bytes());
        }
        garbage.send_to(&d, addr).await.unwrap();
    }
    // Inductions from 64 addresses (table cap 8).
    let mut flood = Vec::new();
    for _ in 0..64 {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut d = vec![0u8; 64];
        d[0] = 0x80;
        d[16..20].copy_from_slice(&4u32.to_be_bytes());
        d[22..24].copy_from_slice(&2u16.to_be_bytes());
        d[36..40].copy_from_slice(&1i32.to_be_bytes());
        d[40..44].copy_from_slice(&rnd().to_be_bytes());
        s.send_to(&d, addr).await.unwrap();
        flood.push(s);
    }

    let mut cfg = CallerConfig::new(addr);
    cfg.connect_timeout = Duration::from_secs(10);
    let caller = connect(cfg).await.unwrap();
    let (_l, server) = accept.await.unwrap();
    let (mut tx, _crx) = caller.split();
    let (_stx, mut rx) = server.split();
    let data = pattern(50_000);
    send_all(&mut tx, &data).await;
    let got = common::read_all(&mut rx, Duration::from_secs(3), Duration::from_secs(20)).await;
    assert_eq!(common::first_difference(&got, &data), None);
}

#[tokio::test]
async fn connect_times_out_without_a_listener() {
    let port = common::free_udp_port();
    let mut cfg = CallerConfig::new(SocketAddr::from(([127, 0, 0, 1], port)));
    cfg.connect_timeout = Duration::from_millis(600);
    assert!(matches!(connect(cfg).await, Err(SrtError::ConnectTimeout)));
}

/// A reader that does not read: its messages are dropped and counted once its
/// queue is full, the connection stays up, and reading resumes afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_drops_and_counts_without_stalling() {
    common::init_logging();
    let cfg = ListenerConfig {
        recv_queue_messages: 16,
        ..Default::default()
    };
    let mut l = listener(cfg).await;
    let addr = l.local_addr();
    let accept = tokio::spawn(async move {
        let conn = l.next().await.unwrap().accept(None).await.unwrap();
        (l, conn)
    });
    let caller = connect(CallerConfig::new(addr)).await.unwrap();
    let (_l, server) = accept.await.unwrap();
    let (mut tx, _crx) = caller.split();
    let (_stx, mut rx) = server.split();
    send_all(&mut tx, &pattern(200 * MAX_PAYLOAD)).await;
    // Nobody reads for a while (latency 120 ms: all of it is released).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut queued = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        queued += 1;
    }
    let stats = rx.stats();
    eprintln!("queued {queued}; {stats:?}");
    assert!(queued >= 16, "{queued}");
    assert!(stats.messages_queue_dropped > 0, "{stats:?}");
    // Every message was either queued, dropped for the slow reader, or (not
    // expected on loopback) dropped by SRT as too late.
    assert_eq!(
        queued + stats.messages_queue_dropped + stats.packets_recv_dropped,
        200,
        "{stats:?}"
    );
    // Still connected: new data arrives.
    send_all(&mut tx, &pattern(MAX_PAYLOAD)).await;
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(m.map(|m| m.len()), Some(MAX_PAYLOAD));
}

/// Connections from one address beyond `max_connections_per_ip` are rejected
/// with Overload before the application sees them; the open ones keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_limited() {
    common::init_logging();
    let mut l = listener(ListenerConfig {
        max_connections_per_ip: 2,
        ..ListenerConfig::default()
    })
    .await;
    let addr = l.local_addr();
    let accept = tokio::spawn(async move {
        let mut conns = Vec::new();
        for _ in 0..2 {
            let inc = l.next().await.unwrap();
            conns.push(inc.accept(None).await.unwrap());
        }
        (l, conns)
    });
    let mut callers = Vec::new();
    for _ in 0..2 {
        callers.push(connect(CallerConfig::new(addr)).await.unwrap());
    }
    let (_l, _conns) = accept.await.unwrap();
    let third = connect(CallerConfig::new(addr)).await;
    assert!(
        matches!(third, Err(SrtError::Rejected(Reject::Overload))),
        "{third:?}"
    );
    drop(callers);
}
