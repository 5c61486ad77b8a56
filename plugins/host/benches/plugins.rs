//! Plugin call latency and load costs, with the real runtime and guest components.
//!
//! Run with: `cargo bench -p cthulhu-plugins --bench plugins` (builds the guests on
//! demand unless `CTHULHU_PLUGINS_DIR` points at them).
// bench setup: failures here are programming errors, not inputs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// criterion_group! generates an undocumented `pub fn`.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use cthulhu_core::{Route, Secret, StreamInfo, StreamPath};
use cthulhu_plugins::{AuthPlugin, HostConfig, Manifest, PluginHost, PluginKind, RoutePlugin};
use serde_json::json;

fn auth_manifest() -> Manifest {
    Manifest::new(PluginKind::Auth, common::wasm("stream-key-auth"))
        .with_config(json!({ "keys": ["k1", "k2", "k3"], "hmac_secret": "s3cret" }))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let host = PluginHost::new(HostConfig {
        reload_poll: None,
        ..HostConfig::default()
    })
    .unwrap();

    // The thread hop every call makes, alone: how much of a call is not the plugin.
    c.bench_function("spawn_blocking round trip (reference, no plugin)", |b| {
        b.iter(|| {
            rt.block_on(async { tokio::task::spawn_blocking(|| black_box(1)).await })
                .unwrap()
        })
    });

    // Per call on a warm instance: conversion, semaphore, spawn_blocking, epoch
    // deadline, the guest's work and back.
    let auth = AuthPlugin::new(host.load(auth_manifest()).unwrap()).unwrap();
    let request = common::publish("live", "cam", Some("k2"));
    c.bench_function("authorize (warm, stream-key-auth)", |b| {
        b.iter(|| {
            rt.block_on(auth.authorize(black_box(&request), None))
                .unwrap()
        })
    });

    let route = RoutePlugin::new(
        host.load(
            Manifest::new(PluginKind::Route, common::wasm("route-by-app")).with_config(json!({
                "rules": [ { "match": "live/*", "destinations": [
                    { "name": "a", "url": "rtmp://127.0.0.1:1935/a/{name}" },
                    { "name": "b", "url": "rtmp://127.0.0.1:1936/b/{name}" } ] } ] })),
        )
        .unwrap(),
    )
    .unwrap();
    let stream = StreamInfo {
        path: StreamPath::new("live/cam").unwrap(),
        tracks: vec![],
        metadata: vec![],
        generation: 1,
    };
    let config_routes = vec![Route::Push {
        name: "cfg".into(),
        url: Secret::new("rtmp://127.0.0.1:1/cfg/key"),
        tls_ca_file: None,
    }];
    c.bench_function("route (warm, route-by-app)", |b| {
        b.iter(|| {
            rt.block_on(route.route(black_box(&stream), &config_routes))
                .unwrap()
        })
    });

    // What a fresh instance per call would cost: store + instantiate (pooling
    // allocator) + configure.
    let plugin = auth.plugin().clone();
    c.bench_function("instantiate + configure (stream-key-auth)", |b| {
        b.iter(|| plugin.check().unwrap())
    });

    let mut slow = c.benchmark_group("load");
    slow.sample_size(10)
        .measurement_time(Duration::from_secs(3));
    // A load without cache: read, hash, compile with Cranelift, link, instantiate,
    // configure.
    slow.bench_function("load, compiling (stream-key-auth)", |b| {
        b.iter(|| host.load(auth_manifest()).unwrap())
    });
    // A load from the precompile cache: read, hash, read and verify the artifact,
    // deserialize, link, instantiate, configure.
    let cache = tempfile::tempdir().unwrap();
    let cached_host = PluginHost::new(HostConfig {
        reload_poll: None,
        cache_dir: Some(cache.path().to_owned()),
        ..HostConfig::default()
    })
    .unwrap();
    cached_host.load(auth_manifest()).unwrap();
    slow.bench_function("load, cache hit (stream-key-auth)", |b| {
        b.iter(|| {
            let p = cached_host.load(auth_manifest()).unwrap();
            assert!(p.status().from_cache);
            p
        })
    });
    slow.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
