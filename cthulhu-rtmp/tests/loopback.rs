//! Our push client against our listener, in process: frames survive the round trip
//! client → chunks → rml_rtmp's deserializer → hub bit for bit.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cthulhu_core::hub::SubscribeOptions;
use cthulhu_core::policy::StreamRule;
use cthulhu_core::{
    CodecId, Frame, FrameFlags, Hub, HubConfig, Router, Secret, StaticRouter, StreamEvent,
    StreamPath, Timestamp, TrackId,
};
use cthulhu_rtmp::from_core::FromCore;
use cthulhu_rtmp::{ClientConfig, PublishingClient, RtmpError, RtmpServer, RtmpUrl, ServerConfig};
use tokio::sync::watch;

async fn server(hub: &Hub) -> (u16, watch::Sender<bool>) {
    let router = StaticRouter::new(vec![StreamRule {
        path: StreamPath::new("live/loop").unwrap(),
        key: Secret::new("loop-key"),
        play_key: None,
        routes: vec![],
    }]);
    let srv = RtmpServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig::default(),
        hub.clone(),
        Arc::new(router) as Arc<dyn Router>,
    )
    .await
    .unwrap();
    let port = srv.local_addr().unwrap().port();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(srv.run(rx));
    (port, tx)
}

fn frame(
    codec: CodecId,
    track: TrackId,
    ms: i64,
    cts_ms: i64,
    flags: FrameFlags,
    len: usize,
) -> Frame {
    Frame {
        track,
        codec,
        dts: Timestamp::from_millis(ms),
        pts: Timestamp::from_millis(ms + cts_ms),
        flags,
        data: Bytes::from(
            (0..len)
                .map(|i| (i * 7 + ms as usize) as u8)
                .collect::<Vec<u8>>(),
        ),
    }
}

#[tokio::test]
async fn frames_round_trip_through_client_and_server() {
    let hub = Hub::new(HubConfig::default());
    let (port, _stop) = server(&hub).await;
    let path = StreamPath::new("live/loop").unwrap();
    let mut sub = hub.subscribe(&path, SubscribeOptions::labelled("check"));

    let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/loop-key")).unwrap();
    let mut client = PublishingClient::connect(&url, &ClientConfig::default())
        .await
        .unwrap();
    let mut from = FromCore::new(4096, client.stream_id);
    let sent = vec![
        frame(CodecId::H264, TrackId::VIDEO, 0, 0, FrameFlags::CONFIG, 40),
        frame(CodecId::Aac, TrackId::AUDIO, 0, 0, FrameFlags::CONFIG, 2),
        frame(
            CodecId::H264,
            TrackId::VIDEO,
            0,
            66,
            FrameFlags::KEYFRAME,
            100_000,
        ),
        frame(CodecId::Aac, TrackId::AUDIO, 21, 0, FrameFlags::NONE, 371),
        frame(
            CodecId::H264,
            TrackId::VIDEO,
            33,
            -33,
            FrameFlags::NONE,
            9_000,
        ),
        // Past the 24-bit timestamp field: extended timestamps on every chunk.
        frame(
            CodecId::H264,
            TrackId::VIDEO,
            0x00FF_FFFF + 5,
            0,
            FrameFlags::NONE,
            10_000,
        ),
        frame(
            CodecId::H265,
            TrackId::VIDEO,
            0x0100_0000 + 40,
            33,
            FrameFlags::NONE,
            5_000,
        ),
    ];
    let mut out = Vec::new();
    for f in &sent {
        from.frame(f, &mut out).unwrap();
    }
    client.write_media(&mut out).await.unwrap();

    let mut got = Vec::new();
    while got.len() < sent.len() {
        match tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap()
        {
            Some(StreamEvent::Frame(f)) => got.push(f),
            Some(_) => {}
            None => panic!("subscription closed"),
        }
    }
    assert_eq!(got, sent);
    client.close().await.unwrap();
}

#[tokio::test]
async fn refusals_are_reported_exactly() {
    let hub = Hub::new(HubConfig::default());
    let (port, _stop) = server(&hub).await;
    let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/wrong")).unwrap();
    match PublishingClient::connect(&url, &ClientConfig::default()).await {
        Err(RtmpError::Refused(why)) => {
            assert!(why.starts_with("NetStream.Publish.Unauthorized"), "{why}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("wrong key accepted"),
    }
    let ok = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/loop-key")).unwrap();
    let first = PublishingClient::connect(&ok, &ClientConfig::default())
        .await
        .unwrap();
    match PublishingClient::connect(&ok, &ClientConfig::default()).await {
        Err(RtmpError::Refused(why)) => assert!(why.contains("already has a publisher"), "{why}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("second publisher accepted"),
    }
    first.close().await.unwrap();
}

#[tokio::test]
async fn garbage_closes_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = Hub::new(HubConfig::default());
    let (port, _stop) = server(&hub).await;
    // A valid handshake version byte, then junk for C1 and beyond.
    for junk in [
        vec![3u8; 1537 + 4000],
        vec![0x42; 10],
        vec![3u8]
            .into_iter()
            .chain((0..5000).map(|i| (i * 31) as u8))
            .collect(),
    ] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let _ = s.write_all(&junk).await;
        let mut buf = vec![0u8; 8192];
        // The server either closes or keeps waiting; it must not take the listener down.
        let _ = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
    }
    let ok = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/loop-key")).unwrap();
    let client = PublishingClient::connect(&ok, &ClientConfig::default())
        .await
        .unwrap();
    client.close().await.unwrap();
}

/// rml_rtmp's `@setDataFrame` handler indexes its arguments unchecked: a bare
/// `@setDataFrame` panics inside the parser. The connection is closed, the stream
/// ends, and the listener keeps serving.
#[tokio::test]
async fn parser_panic_closes_only_that_connection() {
    use cthulhu_rtmp::chunk::{CSID_DATA, Chunker, Message, TYPE_DATA_AMF0};
    let hub = Hub::new(HubConfig::default());
    let (port, _stop) = server(&hub).await;
    let path = StreamPath::new("live/loop").unwrap();
    let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/loop-key")).unwrap();
    let mut client = PublishingClient::connect(&url, &ClientConfig::default())
        .await
        .unwrap();
    assert!(hub.is_live(&path));
    let payload = Bytes::from(
        rml_amf0::serialize(&vec![rml_amf0::Amf0Value::Utf8String(
            "@setDataFrame".into(),
        )])
        .unwrap(),
    );
    let mut out = Vec::new();
    Chunker::new(4096)
        .push(
            Message {
                csid: CSID_DATA,
                type_id: TYPE_DATA_AMF0,
                stream_id: client.stream_id,
                timestamp: 0,
                prefix: &[],
                payload: &payload,
            },
            &mut out,
        )
        .unwrap();
    client.write_media(&mut out).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if client.poll_server().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "server kept the connection after a parser panic"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while hub.is_live(&path) {
        assert!(tokio::time::Instant::now() < deadline, "stream still live");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let again = PublishingClient::connect(&url, &ClientConfig::default())
        .await
        .unwrap();
    again.close().await.unwrap();
}

/// Acknowledgements carry the total bytes received (rml_rtmp alone would send the
/// bytes since the previous acknowledgement), so clients that flow-control on them
/// keep sending.
#[tokio::test]
async fn acknowledgements_are_cumulative() {
    use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    use rml_rtmp::messages::RtmpMessage;
    use rml_rtmp::time::RtmpTimestamp;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let hub = Hub::new(HubConfig::default());
    let (port, _stop) = server(&hub).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().unwrap())
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut leftover = loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed during handshake");
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).await.unwrap()
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                s.write_all(&response_bytes).await.unwrap();
                break remaining_bytes;
            }
        }
    };
    let mut ser = ChunkSerializer::new();
    let mut send = |msg: RtmpMessage| {
        let payload = msg.into_message_payload(RtmpTimestamp::new(0), 0).unwrap();
        ser.serialize(&payload, false, false).unwrap().bytes
    };
    let mut out = send(RtmpMessage::WindowAcknowledgement { size: 4096 });
    // Data messages the server ignores, 40 KB in all.
    for _ in 0..20 {
        out.extend(send(RtmpMessage::Amf0Data {
            values: vec![rml_amf0::Amf0Value::Utf8String("x".repeat(2000))],
        }));
    }
    for piece in out.chunks(1000) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut de = ChunkDeserializer::new();
    let mut acks = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline && acks.len() < 5 {
        let input = std::mem::take(&mut leftover);
        let mut input: &[u8] = &input;
        while let Some(m) = de.get_next_message(input).unwrap() {
            input = &[];
            match m.to_rtmp_message().unwrap() {
                RtmpMessage::Acknowledgement { sequence_number } => acks.push(sequence_number),
                RtmpMessage::SetChunkSize { size } => de.set_max_chunk_size(size as usize).unwrap(),
                _ => {}
            }
        }
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
        {
            leftover = buf[..n].to_vec();
        }
    }
    assert!(acks.len() >= 5, "acknowledgements: {acks:?}");
    assert!(
        acks.windows(2).all(|w| w[1] > w[0]),
        "not cumulative: {acks:?}"
    );
    assert!(*acks.last().unwrap() > 5 * 4096, "{acks:?}");
}
