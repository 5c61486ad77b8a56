//! The data directory store: what the server keeps between starts.
//!
//! For now this is one file, `streams.toml`, holding the streams the server created
//! itself: the embedded default `live/main` and its key. Invariants: the directory is
//! created with mode 0700 and the file written with mode 0600 (Unix), always atomically
//! (temporary file, fsync, rename, fsync of the directory), so a crash never leaves a
//! half-written key file. One server process owns a data directory at a time. A later
//! version moves the store to SQLite behind the same small API.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use cthulhu_core::{ModelError, Secret, StreamPath};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::StreamConfig;
use crate::config::locate::line_col;
use crate::config::secret::TomlSecret;

/// Path of the stream created on a start without a config file.
pub(crate) const DEFAULT_STREAM_PATH: &str = "live/main";
/// Name of the streams file inside the data directory.
pub(crate) const STREAMS_FILE: &str = "streams.toml";
/// Length of generated stream keys: 32 alphanumerics, about 190 bits.
const KEY_LEN: usize = 32;
const HEADER: &str =
    "# Streams created by cthulhu-server. This file holds stream keys: keep it private.\n\n";

/// An error of the data directory store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum StoreError {
    /// A file system operation on the store failed.
    #[error("{}: cannot {action}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was attempted, such as "create the data directory".
        action: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// A store file exists but cannot be understood. Never quotes a key.
    #[error(
        "{}:{line}: corrupt store file: {message} (fix it, or remove it to generate new keys)",
        .path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A stream path the store was asked for is invalid.
    #[error("invalid stream path: {0}")]
    Path(ModelError),
}

/// A stream the store keeps: its path and publish key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredStream {
    /// `app/name`.
    pub(crate) path: StreamPath,
    /// Publish key.
    pub(crate) key: Secret,
}

impl From<StoredStream> for StreamConfig {
    fn from(stream: StoredStream) -> Self {
        Self {
            path: stream.path,
            key: stream.key,
            play_key: None,
            passphrase: None,
            push: Vec::new(),
            record: Vec::new(),
        }
    }
}

/// The data directory.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens the data directory, creating it (mode 0700) if missing. An existing
    /// directory keeps its mode; a warning is logged if others may read it.
    pub(crate) fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let io_err = |action| {
            move |source| StoreError::Io {
                path: data_dir.to_owned(),
                action,
                source,
            }
        };
        if data_dir.is_dir() {
            warn_if_shared(data_dir);
        } else {
            create_private_dir(data_dir).map_err(io_err("create the data directory"))?;
        }
        Ok(Self {
            dir: data_dir.to_owned(),
        })
    }

    /// Returns the default stream `live/main`, creating it with a random key on first
    /// use. `created` is true only on that first call: the caller prints the key then
    /// and never again.
    pub(crate) fn ensure_default_stream(&self) -> Result<(StoredStream, bool), StoreError> {
        let path = StreamPath::new(DEFAULT_STREAM_PATH).map_err(StoreError::Path)?;
        self.ensure_stream(&path)
    }

    fn ensure_stream(&self, path: &StreamPath) -> Result<(StoredStream, bool), StoreError> {
        let mut streams = self.read_streams()?;
        if let Some(found) = streams.iter().find(|s| &s.path == path) {
            return Ok((found.clone(), false));
        }
        let key = loop {
            let key = random_key();
            if streams.iter().all(|s| s.key != key) {
                break key;
            }
        };
        let stream = StoredStream {
            path: path.clone(),
            key,
        };
        streams.push(stream.clone());
        self.write_streams(&streams)?;
        Ok((stream, true))
    }

    fn streams_file(&self) -> PathBuf {
        self.dir.join(STREAMS_FILE)
    }

    /// The stored streams; none if the file does not exist yet.
    fn read_streams(&self) -> Result<Vec<StoredStream>, StoreError> {
        let file = self.streams_file();
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: file,
                    action: "read the store file",
                    source,
                });
            }
        };
        let corrupt = |offset: usize, message: String| StoreError::Corrupt {
            path: file.clone(),
            line: line_col(&text, offset).0,
            message,
        };
        let raw: RawStreamsFile = toml::from_str(&text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            corrupt(offset, e.message().lines().collect::<Vec<_>>().join("; "))
        })?;
        let mut streams: Vec<StoredStream> = Vec::with_capacity(raw.streams.len());
        for raw in raw.streams {
            let path = StreamPath::new(raw.path.get_ref())
                .map_err(|e| corrupt(raw.path.span().start, e.to_string()))?;
            let key_span = raw.key.span();
            let key = raw.key.into_inner().into_secret();
            if key.expose().is_empty() {
                return Err(corrupt(key_span.start, "empty key".to_owned()));
            }
            if streams.iter().any(|s| s.path == path) {
                return Err(corrupt(
                    raw.path.span().start,
                    format!("duplicate stream path \"{path}\""),
                ));
            }
            streams.push(StoredStream { path, key });
        }
        Ok(streams)
    }

    fn write_streams(&self, streams: &[StoredStream]) -> Result<(), StoreError> {
        let file = RawStreamsFileOut {
            streams: streams
                .iter()
                .map(|s| RawStoredStreamOut {
                    path: s.path.as_str(),
                    key: s.key.expose(),
                })
                .collect(),
        };
        let body = toml::to_string(&file).map_err(|e| StoreError::Io {
            path: self.streams_file(),
            action: "encode the store file",
            source: io::Error::other(e),
        })?;
        write_private_atomic(&self.streams_file(), format!("{HEADER}{body}").as_bytes())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStreamsFile {
    #[serde(default)]
    streams: Vec<RawStoredStream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStoredStream {
    path: Spanned<String>,
    key: Spanned<TomlSecret>,
}

#[derive(Serialize)]
struct RawStreamsFileOut<'a> {
    streams: Vec<RawStoredStreamOut<'a>>,
}

#[derive(Serialize)]
struct RawStoredStreamOut<'a> {
    path: &'a str,
    key: &'a str,
}

/// A fresh key: [`KEY_LEN`] alphanumerics from the thread-local CSPRNG (seeded by the OS).
fn random_key() -> Secret {
    Secret::new(random_alphanumeric(KEY_LEN))
}

fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
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

/// Writes `contents` to `path` with mode 0600: a temporary file in the same directory,
/// fsync, rename over `path`, fsync of the directory. The temporary file is removed on
/// failure.
fn write_private_atomic(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", random_alphanumeric(8)));
    let io_err = |path: &Path, action| {
        let path = path.to_owned();
        move |source| StoreError::Io {
            path,
            action,
            source,
        }
    };

    let written = (|| {
        let mut file = private_file_options()
            .open(&tmp)
            .map_err(io_err(&tmp, "create a temporary store file"))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&tmp, "write a temporary store file"))?;
        fs::rename(&tmp, path).map_err(io_err(path, "replace the store file"))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    sync_dir(dir).map_err(io_err(dir, "sync the data directory"))
}

#[cfg(unix)]
fn private_file_options() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    options
}

#[cfg(not(unix))]
fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    options
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_reuses_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.dir, dir);

        let (first, created) = store.ensure_default_stream().unwrap();
        assert!(created);
        assert_eq!(first.path.as_str(), "live/main");
        let key = first.key.expose();
        assert!(key.len() >= 24, "{key}");
        assert!(key.chars().all(|c| c.is_ascii_alphanumeric()), "{key}");

        let (again, created) = store.ensure_default_stream().unwrap();
        assert!(!created);
        assert_eq!(again, first);

        // A later start (a new Store on the same directory) reuses it too.
        let (later, created) = Store::open(&dir).unwrap().ensure_default_stream().unwrap();
        assert!(!created);
        assert_eq!(later, first);
    }

    #[test]
    fn keys_differ_between_data_dirs() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ka = Store::open(a.path())
            .unwrap()
            .ensure_default_stream()
            .unwrap()
            .0;
        let kb = Store::open(b.path())
            .unwrap()
            .ensure_default_stream()
            .unwrap()
            .0;
        assert_ne!(ka.key, kb.key);
    }

    #[cfg(unix)]
    #[test]
    fn private_permissions() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested").join("data");
        let store = Store::open(&dir).unwrap();
        store.ensure_default_stream().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(STREAMS_FILE)), 0o600);
    }

    #[test]
    fn leaves_no_temporary_files() {
        let tmp = tempfile::tempdir().unwrap();
        Store::open(tmp.path())
            .unwrap()
            .ensure_default_stream()
            .unwrap();
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [STREAMS_FILE]);
    }

    #[test]
    fn file_format_is_readable_toml() {
        let tmp = tempfile::tempdir().unwrap();
        let (stream, _) = Store::open(tmp.path())
            .unwrap()
            .ensure_default_stream()
            .unwrap();
        let text = fs::read_to_string(tmp.path().join(STREAMS_FILE)).unwrap();
        assert!(
            text.starts_with("# Streams created by cthulhu-server."),
            "{text}"
        );
        assert!(text.contains("path = \"live/main\""), "{text}");
        assert!(
            text.contains(&format!("key = \"{}\"", stream.key.expose())),
            "{text}"
        );
    }

    #[test]
    fn keeps_other_streams() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join(STREAMS_FILE),
            "[[streams]]\npath = \"live/other\"\nkey = \"other-key\"\n",
        )
        .unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let (main, created) = store.ensure_default_stream().unwrap();
        assert!(created);
        let streams = store.read_streams().unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0].path.as_str(), "live/other");
        assert_eq!(streams[0].key.expose(), "other-key");
        assert_eq!(streams[1], main);
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join(STREAMS_FILE);
        let store = Store::open(tmp.path()).unwrap();
        let cases = [
            ("[[streams]\ngarbage", 1, "invalid table header"),
            (
                "[[streams]]\npath = \"live/main\"\n",
                1,
                "missing field `key`",
            ),
            (
                "[[streams]]\npath = \"main\"\nkey = \"k1\"\n",
                2,
                "invalid stream path",
            ),
            (
                "[[streams]]\npath = \"live/main\"\nkey = \"\"\n",
                3,
                "empty key",
            ),
            (
                "[[streams]]\npath = \"live/main\"\nkey = 123456\n",
                3,
                "expected a string",
            ),
            (
                "[[streams]]\npath = \"live/main\"\nkey = \"k1\"\nextra = 1\n",
                4,
                "unknown field `extra`",
            ),
            (
                "[[streams]]\npath = \"live/a\"\nkey = \"k1\"\n[[streams]]\npath = \"live/a\"\nkey = \"k2\"\n",
                5,
                "duplicate stream path \"live/a\"",
            ),
        ];
        for (text, want_line, want) in cases {
            fs::write(&file, text).unwrap();
            let err = store.ensure_default_stream().unwrap_err();
            let StoreError::Corrupt { path, line, .. } = &err else {
                panic!("{text:?}: unexpected {err:?}");
            };
            assert_eq!((path, *line), (&file, want_line), "{text:?}: {err}");
            let shown = err.to_string();
            assert!(
                shown.starts_with(&format!(
                    "{}:{want_line}: corrupt store file: ",
                    file.display()
                )),
                "{shown}"
            );
            assert!(shown.contains(want), "{text:?}: {shown}");
            assert!(
                !shown.contains("123456") && !shown.contains("k1"),
                "{shown}"
            );
            // The corrupt file is left alone for the operator to inspect.
            assert_eq!(fs::read_to_string(&file).unwrap(), text);
        }
    }

    #[test]
    fn data_dir_that_is_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("file");
        fs::write(&path, "x").unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with(&format!(
                "{}: cannot create the data directory: ",
                path.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn stored_stream_debug_hides_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let (stream, _) = Store::open(tmp.path())
            .unwrap()
            .ensure_default_stream()
            .unwrap();
        let shown = format!("{stream:?}");
        assert!(!shown.contains(stream.key.expose()), "{shown}");
        let config = StreamConfig::from(stream.clone());
        assert_eq!(config.path, stream.path);
        assert_eq!(config.key, stream.key);
        assert!(config.push.is_empty() && config.play_key.is_none());
    }
}
