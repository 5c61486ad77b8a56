//! The guest plugin components (`plugins/guests`) for tests: found where
//! `scripts/test` built them, or built once here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// The target the guests are built for (rustup's `wasm-component-ld` links them
/// into components).
pub const GUEST_TARGET: &str = "wasm32-unknown-unknown";

/// Where the guest components are: `$CTHULHU_PLUGINS_DIR` (set by `scripts/test`
/// after it built them), else built once by this process with cargo into the
/// shared target directory.
pub fn plugins_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| match std::env::var_os("CTHULHU_PLUGINS_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => build_guests().map_err(|e| format!("{e:#}")),
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// The path of a guest component by crate name (`stream-key-auth`).
pub fn guest_plugin(name: &str) -> Result<PathBuf> {
    let path = plugins_dir()?.join(format!("{}.wasm", name.replace('-', "_")));
    if !path.exists() {
        bail!("{} is missing", path.display());
    }
    Ok(path)
}

fn target_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(dir));
    }
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().context("test binary path")?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_owned)
        .context("the test binary is not inside a target directory")
}

fn build_guests() -> Result<PathBuf> {
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/guests");
    let target = target_dir()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building guest plugins in {} into {}",
        guests.display(),
        target.display()
    );
    let status = Command::new(cargo)
        .current_dir(&guests)
        .args(["build", "--release", "--target", GUEST_TARGET])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .context("running cargo for the guest plugins")?;
    if !status.success() {
        bail!(
            "building the guest plugins failed ({status}); is the {GUEST_TARGET} target installed? (rustup target add {GUEST_TARGET})"
        );
    }
    Ok(target.join(GUEST_TARGET).join("release"))
}
