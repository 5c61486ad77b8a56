//! libsrt callers that panic srt-protocol 0.4.4's handshake code (key length
//! mismatch, a passphrase to an unencrypted stream, `transtype=file`) and an
//! FEC caller are refused while another stream keeps flowing through the same
//! listener, complete and in order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use cthulhu_srt::{ListenerConfig, Reject, Secret, SrtError, SrtListener};
use tokio::sync::mpsc;

use common::{Slt, first_difference, require_tools};

const PASSPHRASE: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_callers_are_refused_while_a_stream_flows() {
    common::init_logging();
    require_tools(&["srt-live-transmit", "ffmpeg"]);
    let dir = tempfile::tempdir().unwrap();
    let mut data = common::make_ts(dir.path(), "long.ts", 10.0, 1500)
        .await
        .unwrap();
    common::pad_to_chunks(&mut data);

    // Encrypted streams on this listener require AES-128 (the 16-byte key
    // length that srt-protocol panics on when a caller asks for 32).
    let cfg = ListenerConfig {
        latency: Duration::from_millis(200),
        key_size: Some(16),
        ..Default::default()
    };
    let mut l = SrtListener::bind("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let addr = l.local_addr();

    // The application: "long" and "plain" are unencrypted streams, "enc" is
    // encrypted. Results of accept() go back to the test by stream id.
    let (results_tx, mut results) = mpsc::channel(16);
    let (long_tx, long_rx) = tokio::sync::oneshot::channel();
    let app = tokio::spawn(async move {
        let mut long_tx = Some(long_tx);
        let mut refused = 0;
        while let Some(inc) = l.next().await {
            let id = inc.stream_id().unwrap_or_default().to_owned();
            let passphrase = (id == "enc").then(|| Secret::new(PASSPHRASE));
            let r = inc.accept(passphrase).await;
            match (id.as_str(), r) {
                ("long", Ok(conn)) => {
                    let _ = long_tx.take().unwrap().send(conn);
                }
                (_, r) => {
                    results_tx.send((id, r.map(drop))).await.unwrap();
                    refused += 1;
                }
            }
            if refused == 2 {
                // Both callers that get as far as a request are in.
                break;
            }
        }
        l
    });

    let mut long = Slt::caller(addr, "streamid=long").unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(20), long_rx)
        .await
        .unwrap()
        .unwrap();
    let (_tx, mut rx) = conn.split();
    let len = data.len();
    let receive = tokio::spawn(async move {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            match tokio::time::timeout(Duration::from_secs(8), rx.recv()).await {
                Ok(Some(m)) => out.extend_from_slice(&m),
                Ok(None) | Err(_) => break,
            }
        }
        (out, rx.stats())
    });
    let feed = async {
        long.feed_paced(&data, Duration::from_secs(10))
            .await
            .unwrap();
        long.close_stdin();
    };

    let hostile = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let callers = [
            (
                "key length 32 to a 16-byte listener",
                format!("streamid=enc&passphrase={PASSPHRASE}&pbkeylen=32"),
            ),
            (
                "passphrase to an unencrypted stream",
                format!("streamid=plain&passphrase={PASSPHRASE}"),
            ),
            ("transtype=file", "streamid=file&transtype=file".to_owned()),
            (
                "packetfilter=fec",
                "streamid=fec&packetfilter=fec".to_owned(),
            ),
        ];
        let mut logs = HashMap::new();
        for (what, query) in callers {
            let mut slt = Slt::caller(addr, &query).unwrap();
            let exited = slt.wait_exit(Duration::from_secs(15)).await;
            let log = slt.log();
            eprintln!("--- {what}: exit {exited:?}\n{log}");
            logs.insert(what, log);
        }
        logs
    };
    let ((), logs) = tokio::join!(feed, hostile);

    for (what, log) in &logs {
        assert!(
            !log.contains("SRT target connected"),
            "{what} connected:\n{log}"
        );
        assert!(
            log.contains("REJECT") || log.contains("reject"),
            "{what} not rejected:\n{log}"
        );
    }

    let mut refused = HashMap::new();
    for _ in 0..2 {
        let (id, r) = tokio::time::timeout(Duration::from_secs(10), results.recv())
            .await
            .unwrap()
            .unwrap();
        refused.insert(id, r);
    }
    assert!(
        matches!(refused["enc"], Err(SrtError::Refused(Reject::Unsecure))),
        "{refused:?}"
    );
    assert!(
        matches!(refused["plain"], Err(SrtError::Refused(Reject::Unsecure))),
        "{refused:?}"
    );

    let (got, stats) = receive.await.unwrap();
    eprintln!(
        "long stream: received {} of {} bytes; {stats:?}",
        got.len(),
        data.len()
    );
    assert!(
        first_difference(&got, &data).is_none(),
        "long stream: received {} of {} bytes, first difference at {:?}",
        got.len(),
        data.len(),
        first_difference(&got, &data)
    );
    assert_eq!(stats.packets_recv_dropped, 0, "{stats:?}");

    let l = app.await.unwrap();
    let ls = l.stats();
    eprintln!("listener: {ls:?}");
    assert!(l.is_running());
    assert_eq!(ls.refused_unsupported, 2, "file mode and FEC: {ls:?}");
    assert_eq!(ls.refused, 2, "{ls:?}");
    assert_eq!(ls.accepted, 1, "{ls:?}");
    assert_eq!(ls.panics, 0, "{ls:?}");
}
