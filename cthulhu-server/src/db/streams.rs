//! Streams the server created (replacing the legacy `streams.toml`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cthulhu_core::{Secret, StreamPath};
use rusqlite::{OptionalExtension as _, Row, TransactionBehavior};
use serde::Deserialize;
use toml::Spanned;

use super::{Db, DbError, unique_or};
use crate::config::locate::line_col;
use crate::config::secret::TomlSecret;
use crate::store::STREAMS_FILE;

/// What the legacy streams file is renamed to once imported.
pub(crate) const IMPORTED_STREAMS_FILE: &str = "streams.toml.imported";

/// A stream row. `Debug` shows none of its keys.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DbStream {
    /// `app/name`.
    pub(crate) path: String,
    /// Publish key.
    pub(crate) key: Secret,
    /// Key players must give, if any.
    pub(crate) play_key: Option<Secret>,
    /// SRT passphrase, if any.
    pub(crate) passphrase: Option<Secret>,
    /// Creation time.
    pub(crate) created_at: i64,
}

/// Columns of [`stream_from_row`].
const SELECT_STREAM: &str = "SELECT path, key, play_key, passphrase, created_at FROM streams";

/// Reads a row of [`SELECT_STREAM`].
fn stream_from_row(row: &Row<'_>) -> rusqlite::Result<DbStream> {
    Ok(DbStream {
        path: row.get(0)?,
        key: Secret::new(row.get::<_, String>(1)?),
        play_key: row.get::<_, Option<String>>(2)?.map(Secret::new),
        passphrase: row.get::<_, Option<String>>(3)?.map(Secret::new),
        created_at: row.get(4)?,
    })
}

/// The legacy `streams.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyFile {
    /// Its `[[streams]]` tables.
    #[serde(default)]
    streams: Vec<LegacyStream>,
}

/// One `[[streams]]` table of the legacy file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyStream {
    /// `app/name`.
    path: Spanned<String>,
    /// Publish key.
    key: Spanned<TomlSecret>,
}

impl Db {
    /// Creates a stream with its publish key. An existing path is a
    /// [`DbError::Conflict`].
    pub(crate) fn create_stream(&self, path: &str, key: &str, now: i64) -> Result<(), DbError> {
        self.lock()
            .execute(
                "INSERT INTO streams (path, key, created_at) VALUES (?1, ?2, ?3)",
                (path, key, now),
            )
            .map_err(|e| unique_or(e, || format!("stream \"{path}\" already exists")))?;
        Ok(())
    }

    /// All streams, by path.
    pub(crate) fn streams(&self) -> Result<Vec<DbStream>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_STREAM} ORDER BY path"))?;
        let streams = stmt
            .query_map([], stream_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(streams)
    }

    /// The stream at `path`.
    pub(crate) fn stream(&self, path: &str) -> Result<Option<DbStream>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_STREAM} WHERE path = ?1"))?;
        Ok(stmt.query_row([path], stream_from_row).optional()?)
    }

    /// Replaces the publish key (rotation); false if there is no such stream.
    pub(crate) fn set_stream_key(&self, path: &str, key: &str) -> Result<bool, DbError> {
        Ok(self
            .lock()
            .execute("UPDATE streams SET key = ?2 WHERE path = ?1", (path, key))?
            > 0)
    }

    /// Sets or removes the play key; false if there is no such stream.
    pub(crate) fn set_stream_play_key(
        &self,
        path: &str,
        play_key: Option<&str>,
    ) -> Result<bool, DbError> {
        Ok(self.lock().execute(
            "UPDATE streams SET play_key = ?2 WHERE path = ?1",
            (path, play_key),
        )? > 0)
    }

    /// Sets or removes the SRT passphrase; false if there is no such stream.
    pub(crate) fn set_stream_passphrase(
        &self,
        path: &str,
        passphrase: Option<&str>,
    ) -> Result<bool, DbError> {
        Ok(self.lock().execute(
            "UPDATE streams SET passphrase = ?2 WHERE path = ?1",
            (path, passphrase),
        )? > 0)
    }

    /// Deletes a stream with the runtime-created destinations and recording rules of
    /// its path, in one transaction; false (and nothing deleted) if there is no such
    /// stream. Overrides are kept: they concern entries of the config file.
    pub(crate) fn delete_stream(&self, path: &str) -> Result<bool, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if tx.execute("DELETE FROM streams WHERE path = ?1", [path])? == 0 {
            return Ok(false);
        }
        tx.execute("DELETE FROM destinations WHERE stream_path = ?1", [path])?;
        tx.execute("DELETE FROM recordings WHERE stream_path = ?1", [path])?;
        tx.commit()?;
        Ok(true)
    }

    /// Imports the legacy `<data_dir>/streams.toml`, if it exists: inserts the streams
    /// whose path is not in the table yet (an existing row keeps its key), then renames
    /// the file to `streams.toml.imported` (replacing an older one). Returns `None`
    /// without the file, else how many streams were inserted. Idempotent, also across
    /// a crash between the insertion and the rename. A file that cannot be understood
    /// is a [`DbError::LegacyCorrupt`] and is left alone.
    pub(crate) fn import_legacy_streams_toml(
        &self,
        data_dir: &Path,
        now: i64,
    ) -> Result<Option<usize>, DbError> {
        let file = data_dir.join(STREAMS_FILE);
        let io_err = |path: &Path, action| {
            let path = path.to_owned();
            move |source| DbError::Io {
                path,
                action,
                source,
            }
        };
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&file, "read the legacy streams file")(e)),
        };
        let streams = parse_legacy(&file, &text)?;

        let inserted = {
            let mut conn = self.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut inserted = 0;
            {
                let mut stmt = tx.prepare(
                    "INSERT INTO streams (path, key, created_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (path) DO NOTHING",
                )?;
                for (path, key) in &streams {
                    inserted += stmt.execute((path.as_str(), key.expose(), now))?;
                }
            }
            tx.commit()?;
            inserted
        };

        let imported = data_dir.join(IMPORTED_STREAMS_FILE);
        fs::rename(&file, &imported).map_err(io_err(&file, "rename the legacy streams file"))?;
        sync_dir(data_dir).map_err(io_err(data_dir, "sync the data directory"))?;
        tracing::info!(
            file = %file.display(),
            found = streams.len(),
            inserted,
            "Imported the legacy streams file into the database"
        );
        Ok(Some(inserted))
    }
}

/// Parses and checks the legacy file: valid, distinct paths and non-empty keys.
fn parse_legacy(file: &Path, text: &str) -> Result<Vec<(StreamPath, Secret)>, DbError> {
    let corrupt = |offset: usize, message: String| DbError::LegacyCorrupt {
        path: PathBuf::from(file),
        line: line_col(text, offset).0,
        message,
    };
    // `message()` leaves out the quoted source line, which may hold a key.
    let raw: LegacyFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        corrupt(offset, e.message().lines().collect::<Vec<_>>().join("; "))
    })?;
    let mut streams: Vec<(StreamPath, Secret)> = Vec::with_capacity(raw.streams.len());
    for raw in raw.streams {
        let path = StreamPath::new(raw.path.get_ref())
            .map_err(|e| corrupt(raw.path.span().start, e.to_string()))?;
        let key_span = raw.key.span();
        let key = raw.key.into_inner().into_secret();
        if key.expose().is_empty() {
            return Err(corrupt(key_span.start, "empty key".to_owned()));
        }
        if streams.iter().any(|(p, _)| *p == path) {
            return Err(corrupt(
                raw.path.span().start,
                format!("duplicate stream path \"{path}\""),
            ));
        }
        streams.push((path, key));
    }
    Ok(streams)
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Makes a rename in `dir` durable (nothing to do here).
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}
