//! Run with: `cargo run -p example-embed-restream -- LISTEN_ADDR STREAM_KEY DESTINATION_URL`
//!
//! Embeds Cthulhu in a Rust service: an RTMP listener accepts one stream, `live/main`,
//! published with `<stream key>`, and a supervised push relays it to `<destination url>`
//! (`rtmp://` or `rtmps://`), reconnecting with backoff. Destination status changes are
//! printed; Ctrl-C unpublishes from the destination and stops.
//!
//! For example, with a local nginx-rtmp or a second Cthulhu on port 1936:
//!
//! ```text
//! cargo run -p example-embed-restream -- 127.0.0.1:1935 s3cret rtmp://127.0.0.1:1936/live/KEY
//! ffmpeg -re -i input.mp4 -c copy -f flv rtmp://127.0.0.1:1935/live/s3cret
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use cthulhu_core::hub::SubscribeOptions;
use cthulhu_core::policy::{Route, StreamRule};
use cthulhu_core::supervisor::{BackoffPolicy, DestinationState, Supervisor};
use cthulhu_core::{Hub, HubConfig, Router, Secret, StaticRouter, StreamPath};
use cthulhu_rtmp::{PushConfig, PushGroup, RtmpPush, RtmpServer, RtmpUrl, ServerConfig};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage: example-embed-restream <listen addr> <stream key> <destination url>";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(key), Some(dest), None) =
        (args.next(), args.next(), args.next(), args.next())
    else {
        bail!(USAGE);
    };
    let listen: SocketAddr = listen
        .parse()
        .with_context(|| format!("{listen:?} is not an address like 0.0.0.0:1935\n{USAGE}"))?;
    // Error messages of RtmpUrl never contain the stream key.
    let dest_url = RtmpUrl::parse(&dest)?;
    let path = StreamPath::new("live/main")?;

    // The hub carries frames from publishers to subscribers; the router decides who may
    // publish or play which path (here: `live/main` with the given key, open to players).
    let hub = Hub::new(HubConfig::default());
    let rule = StreamRule {
        path: path.clone(),
        key: Secret::new(key),
        play_key: None,
        routes: vec![Route::Push {
            name: "dest".into(),
            url: Secret::new(dest),
            tls_ca_file: None,
        }],
    };
    let router: Arc<dyn Router> = Arc::new(StaticRouter::new(vec![rule]));

    let server = RtmpServer::bind(listen, ServerConfig::default(), hub.clone(), router)
        .await
        .with_context(|| format!("listening for RTMP on {listen}"))?;
    let addr = server.local_addr()?;
    println!("Publish to rtmp://{addr}/live with your stream key; play rtmp://{addr}/{path}");
    let (stop_tx, stop_rx) = watch::channel(false);
    let server_task = tokio::spawn(server.run(stop_rx));

    // The push subscribes before anyone publishes: it waits (Idle), goes live with the
    // stream and rides out short publisher drops. In a PushGroup, the stream's pushes
    // share one writer (one serialization and one wakeup per message for them all);
    // with fifty it cut the CPU by about 40% in the relay benchmark (BENCHMARKS.md).
    let group = PushGroup::new(&hub, &PushConfig::default());
    let sub = hub.subscribe(&path, SubscribeOptions::labelled("push:dest"));
    let redacted = dest_url.redacted();
    let push = RtmpPush::new("dest".into(), dest_url, sub, PushConfig::default()).in_group(&group);
    let handle = Supervisor::spawn(
        format!("{path}:dest"),
        redacted,
        Box::new(push),
        BackoffPolicy::default(),
    );

    let mut status = handle.watch();
    loop {
        tokio::select! {
            res = tokio::signal::ctrl_c() => {
                res.context("waiting for Ctrl-C")?;
                break;
            }
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = status.borrow_and_update().clone();
                match &s.state {
                    DestinationState::Retrying { attempt, last_error, .. } => println!(
                        "{} ({}): retrying after failure {attempt}: {last_error}",
                        s.name, s.url_redacted
                    ),
                    state => println!("{} ({}): {}", s.name, s.url_redacted, state.as_str()),
                }
            }
        }
    }

    println!("Stopping: unpublishing from the destination");
    handle.stop().await;
    let _ = stop_tx.send(true);
    hub.shutdown();
    let _ = server_task.await;
    Ok(())
}
