//! The data directory: where the server keeps its state between starts.
//!
//! It holds the SQLite store (`cthulhu.db`, see [`crate::db`]), recordings of the
//! `local` storage and the plugin cache. The directory is created with mode 0700
//! (Unix); an existing one keeps its mode, with a warning if others may read it. One
//! server process owns a data directory at a time (the CLI's `token create` and
//! `admin` commands may open the store beside it: SQLite's WAL allows that).
//!
//! Earlier versions kept the embedded default stream in `streams.toml` here; the
//! store imports that file once ([`crate::db::Db::import_legacy_streams_toml`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cthulhu_core::Secret;
use rand::Rng as _;
use rand::distr::Alphanumeric;

/// Path of the stream created on a start without a config file.
pub(crate) const DEFAULT_STREAM_PATH: &str = "live/main";
/// The file earlier versions kept streams in (imported into the store once).
pub(crate) const STREAMS_FILE: &str = "streams.toml";
/// Length of generated stream keys: 32 alphanumerics, about 190 bits.
const KEY_LEN: usize = 32;

/// An error of the data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum StoreError {
    /// A file system operation failed.
    #[error("{}: cannot {action}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was attempted, such as "create the data directory".
        action: &'static str,
        /// The underlying error.
        source: io::Error,
    },
}

/// The data directory.
#[derive(Debug)]
pub(crate) struct Store;

impl Store {
    /// Opens the data directory, creating it (mode 0700) if missing. An existing
    /// directory keeps its mode; a warning is logged if others may read it.
    pub(crate) fn open(data_dir: &Path) -> Result<Self, StoreError> {
        if data_dir.is_dir() {
            warn_if_shared(data_dir);
        } else {
            create_private_dir(data_dir).map_err(|source| StoreError::Io {
                path: data_dir.to_owned(),
                action: "create the data directory",
                source,
            })?;
        }
        Ok(Self)
    }
}

/// A new random stream key.
pub(crate) fn random_key() -> Secret {
    Secret::new(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(KEY_LEN)
            .map(char::from)
            .collect::<String>(),
    )
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // The umask may have removed bits; set the mode exactly.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(unix)]
fn warn_if_shared(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = fs::metadata(dir)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            dir = %dir.display(),
            mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
            "Data directory is accessible to other users; stream keys in it are not"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_dir: &Path) {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn private_permissions() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested").join("data");
        Store::open(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn data_dir_that_is_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("file");
        fs::write(&path, "x").unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "{}: cannot create the data directory: ",
                path.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn keys_are_long_and_differ() {
        let (a, b) = (random_key(), random_key());
        assert_eq!(a.expose().len(), KEY_LEN);
        assert_ne!(a.expose(), b.expose());
    }
}
