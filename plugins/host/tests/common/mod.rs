//! Shared by the integration tests and the bench: finds (or builds) the guest
//! components, and builds hosts, manifests and requests.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cthulhu_core::{AccessRequest, Action, Protocol, Secret};
use cthulhu_plugins::{HostConfig, Manifest, Plugin, PluginHost, PluginKind};

/// The path of a guest component by crate name (`stream-key-auth`).
pub fn wasm(name: &str) -> PathBuf {
    cthulhu_testkit::guest_plugin(name).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A host with a fast reload poll and no cache.
pub fn host() -> PluginHost {
    PluginHost::new(HostConfig {
        reload_poll: None,
        ..HostConfig::default()
    })
    .unwrap()
}

/// Loads a guest by crate name with a config.
pub fn load(
    host: &PluginHost,
    kind: PluginKind,
    name: &str,
    config: serde_json::Value,
) -> Arc<Plugin> {
    host.load(Manifest::new(kind, wasm(name)).with_config(config))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// A manifest for a guest with a config and a timeout.
pub fn manifest(
    kind: PluginKind,
    name: &str,
    config: serde_json::Value,
    timeout: Duration,
) -> Manifest {
    Manifest::new(kind, wasm(name))
        .with_config(config)
        .with_timeout(timeout)
}

/// A publish request.
pub fn publish(app: &str, name: &str, key: Option<&str>) -> AccessRequest {
    AccessRequest {
        protocol: Protocol::Rtmp,
        action: Action::Publish,
        app: app.into(),
        name: name.into(),
        key: key.map(Secret::new),
        stream_id: None,
        remote: Some("127.0.0.1:50000".parse().unwrap()),
        query: vec![],
    }
}
