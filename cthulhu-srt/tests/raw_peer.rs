//! A raw SRT peer (srt-protocol's caller state machine on a plain UDP socket)
//! that completes a handshake and then sends packets srt-protocol 0.4.4 cannot
//! handle (peer error, congestion warning, unknown SRT extension packets, a
//! bogus loss report) and garbage. Only that connection may suffer; the
//! listener keeps serving others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cthulhu_srt::{CallerConfig, ListenerConfig, MAX_PAYLOAD, SrtListener, connect};
use srt_protocol::connection::ConnectionSettings;
use srt_protocol::packet::{
    CompressedLossList, ControlPacket, ControlTypes, Packet, SeqNumber, SocketId, SrtControlPacket,
    TimeStamp,
};
use srt_protocol::protocol::pending_connection::ConnectionResult;
use srt_protocol::protocol::pending_connection::connect::Connect;
use tokio::net::UdpSocket;

/// Runs srt-protocol's caller handshake over `socket` to `remote`.
async fn raw_connect(
    socket: &UdpSocket,
    remote: SocketAddr,
    stream_id: &str,
) -> ConnectionSettings {
    let mut connect = Connect::new(
        remote,
        [127, 0, 0, 1].into(),
        srt_protocol::settings::ConnInitSettings::default(),
        Some(stream_id.to_owned()),
        SeqNumber::new_truncate(1000),
    );
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut result = connect.handle_tick(Instant::now());
    loop {
        assert!(Instant::now() < deadline, "raw handshake timed out");
        match result {
            ConnectionResult::SendPacket((p, to)) => {
                let mut b = BytesMut::new();
                p.serialize(&mut b);
                socket.send_to(&b, to).await.unwrap();
            }
            ConnectionResult::Connected(_, conn) => return conn.settings,
            ConnectionResult::Reject(_, r) => panic!("rejected: {r}"),
            _ => {}
        }
        result = match tokio::time::timeout(Duration::from_millis(250), socket.recv_from(&mut buf))
            .await
        {
            Ok(Ok((n, from))) => {
                let p = Packet::parse(&mut &buf[..n], false).unwrap();
                connect.handle_packet(Ok((p, from)), Instant::now())
            }
            _ => connect.handle_tick(Instant::now()),
        };
    }
}

fn control(dest: SocketId, control_type: ControlTypes) -> Bytes {
    let mut b = BytesMut::new();
    Packet::Control(ControlPacket {
        timestamp: TimeStamp::from_micros(1000),
        dest_sockid: dest,
        control_type,
    })
    .serialize(&mut b);
    b.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_packets_on_an_open_connection_hurt_no_one_else() {
    common::init_logging();
    let mut l = SrtListener::bind("127.0.0.1:0".parse().unwrap(), ListenerConfig::default())
        .await
        .unwrap();
    let addr = l.local_addr();

    // The hostile peer connects; the listener side streams data to it.
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (settings, hostile_conn) = tokio::join!(raw_connect(&raw, addr, "hostile"), async {
        l.next().await.unwrap().accept(None).await.unwrap()
    });
    let dest = settings.remote_sockid;
    let (mut htx, _hrx) = hostile_conn.split();
    for i in 0..100u8 {
        htx.send(Bytes::from(vec![i; MAX_PAYLOAD])).await.unwrap();
    }

    // An honest connection (our caller) at the same time.
    let caller = tokio::spawn(connect(CallerConfig::new(addr)));
    let honest = l.next().await.unwrap().accept(None).await.unwrap();
    let caller = caller.await.unwrap().unwrap();
    let (mut tx, _crx) = caller.split();
    let (_stx, mut rx) = honest.split();

    let loss = CompressedLossList::try_from_range(
        SeqNumber::new_truncate(0)..SeqNumber::new_truncate(2_000_000),
    )
    .unwrap();
    let mut hostile: Vec<Bytes> = vec![
        control(dest, ControlTypes::PeerError(7)),
        control(dest, ControlTypes::CongestionWarning),
        control(
            dest,
            ControlTypes::Srt(SrtControlPacket::StreamId("x".into())),
        ),
        control(
            dest,
            ControlTypes::Srt(SrtControlPacket::Congestion("file".into())),
        ),
        control(dest, ControlTypes::Srt(SrtControlPacket::Reject)),
        control(dest, ControlTypes::Nak(loss)),
    ];
    // Truncated and random packets to the connection's socket id.
    for len in [4usize, 16, 17, 20, 33, 100, 1500] {
        let mut d = vec![0x5Au8; len];
        if len >= 16 {
            d[0] = 0x80;
            d[1] = (len % 9) as u8;
            d[12..16].copy_from_slice(&dest.0.to_be_bytes());
        }
        hostile.push(Bytes::from(d));
    }

    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let send = async {
        for chunk in data.chunks(MAX_PAYLOAD) {
            tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let attack = async {
        for d in &hostile {
            raw.send_to(d, addr).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut got = Vec::new();
    let recv = async {
        while got.len() < data.len() {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(m)) => got.extend_from_slice(&m),
                _ => break,
            }
        }
    };
    tokio::join!(send, attack, recv);
    assert!(
        common::first_difference(&got, &data).is_none(),
        "honest stream damaged: {} of {} bytes",
        got.len(),
        data.len()
    );

    // The hostile connection itself: still open (the unhandled control packets
    // were filtered) unless srt-protocol panicked on something else.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!(
        "hostile connection closed: {}; stats {:?}",
        htx.is_closed(),
        htx.stats()
    );
    assert!(l.is_running());
    let st = l.stats();
    eprintln!("listener: {st:?}");
    assert_eq!(st.accepted, 2);
}

/// A peer that completes the handshake and then goes silent is closed after
/// the peer idle timeout; the receiving half sees the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_times_out() {
    common::init_logging();
    let cfg = ListenerConfig {
        peer_idle_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let mut l = SrtListener::bind("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let addr = l.local_addr();
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_settings, conn) = tokio::join!(raw_connect(&raw, addr, "silent"), async {
        l.next().await.unwrap().accept(None).await.unwrap()
    });
    let (_tx, mut rx) = conn.split();
    let end = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
    assert!(
        matches!(end, Ok(None)),
        "connection to a silent peer did not end: {end:?}"
    );
}
