//! Shared by the integration tests and the bench: finds (or builds) the guest
//! components, and builds hosts, manifests and requests.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cthulhu_core::{AccessRequest, Action, Protocol, Secret};
use cthulhu_plugins::{HostConfig, Manifest, Plugin, PluginHost, PluginKind};

/// Where the guest components are: `$CTHULHU_PLUGINS_DIR` (set by scripts/test after
/// it built them), else built here once with cargo into the shared target dir.
pub fn plugins_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| match std::env::var_os("CTHULHU_PLUGINS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => build_guests(),
    })
}

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .expect("test binary inside a target directory")
        .to_owned()
}

fn build_guests() -> PathBuf {
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests");
    let target = target_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building guest plugins in {} into {}",
        guests.display(),
        target.display()
    );
    let status = Command::new(cargo)
        .current_dir(&guests)
        .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("run cargo for the guest plugins");
    assert!(status.success(), "building the guest plugins failed");
    target.join("wasm32-unknown-unknown/release")
}

/// The path of a guest component by crate name (`stream-key-auth`).
pub fn wasm(name: &str) -> PathBuf {
    let path = plugins_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} is missing", path.display());
    path
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
