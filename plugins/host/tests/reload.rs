//! Hot reload, hash pins and the precompile cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{publish, wasm};
use cthulhu_core::{Decision, StreamPath};
use cthulhu_plugins::{
    AuthPlugin, HostConfig, Manifest, PluginError, PluginHost, PluginKind, PluginState,
};
use serde_json::json;

/// Replaces a file atomically (write aside, rename), as deployments should.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The component with a custom section appended: the same behaviour, another hash.
fn with_custom_section(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"cthulhu-test";
    let mut content = vec![u8::try_from(name.len()).unwrap()];
    content.extend_from_slice(name);
    content.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    let mut n = content.len();
    loop {
        let byte = u8::try_from(n & 0x7f).unwrap();
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&content);
    out
}

fn allow(p: &str) -> Decision {
    Decision::Allow(StreamPath::new(p).unwrap())
}

/// Replacing the file changes the next decision, without a restart, through the
/// host's watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_file_changes_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.wasm");
    std::fs::copy(wasm("stream-key-auth"), &path).unwrap();
    let host = PluginHost::new(HostConfig {
        reload_poll: Some(Duration::from_millis(20)),
        ..HostConfig::default()
    })
    .unwrap();
    let auth = AuthPlugin::new(
        host.load(Manifest::new(PluginKind::Auth, &path).with_config(json!({ "keys": ["k1"] })))
            .unwrap(),
    )
    .unwrap();
    let request = publish("live", "cam", Some("k1"));
    assert_eq!(
        auth.authorize(&request, None).await.unwrap(),
        allow("live/cam")
    );
    let before = auth.plugin().status();
    assert!(before.last_reload.is_none());

    // Plugin B takes the same config (it ignores it) and refuses everything.
    replace(&path, &std::fs::read(wasm("hostile-auth")).unwrap());
    let start = Instant::now();
    while auth.plugin().status().last_reload.is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "no reload");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("reload noticed and done after {:?}", start.elapsed());
    assert_eq!(
        auth.authorize(&request, None).await.unwrap(),
        Decision::Deny("hostile-auth denies everything".into())
    );
    let after = auth.plugin().status();
    assert_ne!(after.sha256, before.sha256);
    assert!(after.reload_error.is_none());
}

/// A broken file keeps the old version serving and reports the error; a call in
/// flight during a swap finishes on the version it started on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_reload_keeps_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.wasm");
    std::fs::copy(wasm("stream-key-auth"), &path).unwrap();
    let host = common::host();
    let auth = AuthPlugin::new(
        host.load(Manifest::new(PluginKind::Auth, &path).with_config(json!({ "keys": ["k1"] })))
            .unwrap(),
    )
    .unwrap();
    let request = publish("live", "cam", Some("k1"));

    // Unchanged file: nothing to do.
    assert!(!auth.plugin().reload_if_changed().unwrap());

    // Not a component.
    replace(&path, b"\0asm garbage");
    let err = auth.plugin().reload_if_changed().unwrap_err();
    assert!(matches!(err, PluginError::Compile { .. }), "{err}");
    let status = auth.plugin().status();
    assert!(
        status
            .reload_error
            .as_deref()
            .unwrap()
            .contains("does not compile")
    );
    assert_eq!(status.state, PluginState::Ready);
    assert_eq!(
        auth.authorize(&request, None).await.unwrap(),
        allow("live/cam")
    );
    // The same broken file is not tried again at every poll.
    assert!(!auth.plugin().reload_if_changed().unwrap());

    // A component of the wrong world.
    replace(&path, &std::fs::read(wasm("route-by-app")).unwrap());
    let err = auth.plugin().reload_if_changed().unwrap_err();
    assert!(matches!(err, PluginError::Link { .. }), "{err}");
    // A component that refuses the config (ip-allowlist does not know `keys`).
    replace(&path, &std::fs::read(wasm("ip-allowlist")).unwrap());
    let err = auth.plugin().reload_if_changed().unwrap_err();
    assert!(matches!(err, PluginError::Configure { .. }), "{err}");
    // A missing file.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        auth.plugin().reload_if_changed(),
        Err(PluginError::Io { .. })
    ));
    assert_eq!(
        auth.authorize(&request, None).await.unwrap(),
        allow("live/cam")
    );

    // A good file again: swapped, error cleared.
    replace(&path, &std::fs::read(wasm("hostile-auth")).unwrap());
    assert!(auth.plugin().reload_if_changed().unwrap());
    assert!(auth.plugin().status().reload_error.is_none());
    assert!(matches!(
        auth.authorize(&request, None).await.unwrap(),
        Decision::Deny(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_finish_on_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.wasm");
    let original = std::fs::read(wasm("hostile-auth")).unwrap();
    std::fs::write(&path, &original).unwrap();
    let host = common::host();
    let plugin = host
        .load(
            Manifest::new(PluginKind::Auth, &path)
                .with_config(json!({ "mode": "sleep", "sleep_ms": 300, "only_name": "slow" }))
                .with_timeout(Duration::from_secs(5)),
        )
        .unwrap();
    let auth = AuthPlugin::new(plugin.clone()).unwrap();
    let old_sha = plugin.status().sha256;
    let in_flight = {
        let auth = auth.clone();
        tokio::spawn(async move { auth.authorize(&publish("live", "slow", None), None).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    replace(&path, &with_custom_section(&original, "v2"));
    let p = plugin.clone();
    assert!(
        tokio::task::spawn_blocking(move || p.reload_if_changed())
            .await
            .unwrap()
            .unwrap()
    );
    assert_ne!(plugin.status().sha256, old_sha);
    // The sleeping call was not cut off by the swap.
    assert_eq!(in_flight.await.unwrap().unwrap(), allow("live/slow"));
}

/// A reload re-enables a disabled plugin.
#[tokio::test]
async fn reload_re_enables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.wasm");
    let original = std::fs::read(wasm("hostile-auth")).unwrap();
    std::fs::write(&path, &original).unwrap();
    let host = common::host();
    let mut m = Manifest::new(PluginKind::Auth, &path)
        .with_config(json!({ "mode": "trap", "only_name": "bad" }));
    m.disable_after = Some(2);
    let auth = AuthPlugin::new(host.load(m).unwrap()).unwrap();
    for _ in 0..2 {
        assert!(
            auth.authorize(&publish("live", "bad", None), None)
                .await
                .is_err()
        );
    }
    assert!(matches!(
        auth.plugin().status().state,
        PluginState::Disabled { .. }
    ));
    replace(&path, &with_custom_section(&original, "fixed"));
    assert!(auth.plugin().reload_if_changed().unwrap());
    let status = auth.plugin().status();
    assert_eq!(status.state, PluginState::Ready);
    assert!(status.last_reload.is_some());
    assert_eq!(
        auth.authorize(&publish("live", "good", None), None)
            .await
            .unwrap(),
        allow("live/good")
    );
}

#[tokio::test]
async fn sha256_pin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.wasm");
    let bytes = std::fs::read(wasm("hostile-auth")).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let host = common::host();

    let wrong = "0".repeat(64);
    let err = host
        .load(Manifest::new(PluginKind::Auth, &path).with_sha256(wrong.clone()))
        .expect_err("refused");
    let PluginError::HashMismatch {
        expected, actual, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*expected, wrong);

    // The right pin (any case) loads; a changed file is then refused at reload and
    // the pinned version keeps serving.
    let plugin = host
        .load(Manifest::new(PluginKind::Auth, &path).with_sha256(actual.to_uppercase()))
        .unwrap();
    replace(&path, &with_custom_section(&bytes, "unpinned"));
    assert!(matches!(
        plugin.reload_if_changed(),
        Err(PluginError::HashMismatch { .. })
    ));
    assert_eq!(plugin.status().sha256, *actual);
    assert!(plugin.status().reload_error.is_some());

    // Not 64 hex digits.
    assert!(matches!(
        host.load(Manifest::new(PluginKind::Auth, &path).with_sha256("abc")),
        Err(PluginError::Config(_))
    ));
}

#[tokio::test]
async fn precompile_cache() {
    let cache = tempfile::tempdir().unwrap();
    let config = HostConfig {
        reload_poll: None,
        cache_dir: Some(cache.path().to_owned()),
        ..HostConfig::default()
    };
    let manifest = || {
        Manifest::new(PluginKind::Auth, wasm("stream-key-auth"))
            .with_config(json!({ "keys": ["k1"] }))
    };
    let host = PluginHost::new(config.clone()).unwrap();
    let first = host.load(manifest()).unwrap().status();
    assert!(!first.from_cache);
    let cached = host.cache_path(&first.sha256).unwrap();
    assert!(cached.exists());

    // Second load, and a new host (new engine, same settings): from the cache.
    let second = host.load(manifest()).unwrap().status();
    assert!(second.from_cache);
    let other = PluginHost::new(config.clone()).unwrap();
    let third = other.load(manifest()).unwrap();
    assert!(third.status().from_cache);
    eprintln!(
        "compile {:?}, from cache {:?}",
        first.compile_time, second.compile_time
    );
    assert!(second.compile_time < first.compile_time);
    let auth = AuthPlugin::new(third).unwrap();
    assert_eq!(
        auth.authorize(&publish("live", "cam", Some("k1")), None)
            .await
            .unwrap(),
        allow("live/cam")
    );

    // A corrupted artifact is detected and replaced, never loaded.
    let mut bytes = std::fs::read(&cached).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&cached, &bytes).unwrap();
    let again = host.load(manifest()).unwrap().status();
    assert!(!again.from_cache);
    assert!(host.load(manifest()).unwrap().status().from_cache);

    // Another engine setting (fuel) has another key: no false hit.
    let fuel = PluginHost::new(HostConfig {
        consume_fuel: true,
        ..config
    })
    .unwrap();
    assert!(!fuel.load(manifest()).unwrap().status().from_cache);
    assert_ne!(fuel.cache_path(&first.sha256), Some(cached));
}
