//! The SQLite store in the data directory (`cthulhu.db`): accounts with TOTP, browser
//! sessions, API tokens, streams, runtime-created destinations and recording rules,
//! overrides of entries the config file declares, and the audit log.
//!
//! All SQL of the server lives in this module, so a PostgreSQL backend can follow
//! behind the same methods. [`Db`] is a cheap, cloneable handle on one connection
//! behind a mutex; its methods are synchronous and short, and async code calls them
//! through [`Db::run`]. Times are Unix seconds (`i64`) given by the caller. Secrets
//! (password hashes, TOTP secrets, token hashes, stream and destination keys) never
//! appear in errors or logs, and the row types print them as `***`.
//!
//! The schema is versioned with `PRAGMA user_version`: [`migrations::MIGRATIONS`] is
//! an ordered list of SQL scripts, each applied once in its own transaction. A
//! database newer than the code is refused.

// The HTTP API and CLI that use the store land separately (issue 14).
#![allow(dead_code, reason = "the callers of the store land separately")]

mod audit;
mod migrations;
mod runtime;
mod sessions;
mod streams;
mod users;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, ffi};

#[allow(unused_imports, reason = "the callers of the store land separately")]
pub(crate) use self::{
    audit::{AuditEntry, NewAudit},
    runtime::{Override, Segment, StoredDestination, StoredRecording},
    sessions::{Session, Token},
    streams::DbStream,
    users::{Role, User},
};

/// The store's clock: the current time in Unix seconds, as every `now` parameter
/// and timestamp column takes it.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Name of the database file inside the data directory.
pub(crate) const DB_FILE: &str = "cthulhu.db";
/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// What [`DbError`]s name as the path of an in-memory database.
const IN_MEMORY: &str = ":memory:";

/// An error of the store. Never quotes a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DbError {
    /// The database file cannot be opened or configured.
    #[error("{}: cannot open the database: {source}", .path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// A file system operation failed.
    #[error("{}: cannot {action}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was attempted, such as "create the database file".
        action: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The database was written by a newer version of the server.
    #[error(
        "{}: the database has schema version {found}, newer than this server supports \
         ({supported}); run a newer cthulhu-server or restore a backup",
        .path.display()
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest version this code knows.
        supported: i64,
    },
    /// The schema version is not one this server ever writes (negative).
    #[error("{}: invalid schema version {found}", .path.display())]
    BadVersion {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
    /// Applying a migration failed; the database keeps the previous version.
    #[error("{}: migration to schema version {version} failed: {source}", .path.display())]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The version the failed migration leads to.
        version: i64,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// A uniqueness rule refused the change (duplicate name, last administrator...).
    #[error("{0}")]
    Conflict(String),
    /// A row the change refers to does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The legacy `streams.toml` cannot be understood. Never quotes a key.
    #[error("{}:{line}: corrupt legacy streams file: {message}", .path.display())]
    LegacyCorrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Any other SQLite error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task of [`Db::run`] panicked or was cancelled.
    #[error("database task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// A handle on the store: one SQLite connection behind a mutex. Clones share it.
#[derive(Clone)]
pub(crate) struct Db {
    /// The connection. A poisoned lock is recovered: a panic while it was held rolled
    /// back any open transaction on unwinding.
    conn: Arc<Mutex<Connection>>,
    /// The database file, or `:memory:`.
    path: Arc<Path>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    /// Opens `<data_dir>/cthulhu.db`, creating it with mode 0600 (Unix) if missing, and
    /// brings its schema up to date. The data directory must exist.
    pub(crate) fn open(data_dir: &Path) -> Result<Self, DbError> {
        let path = data_dir.join(DB_FILE);
        create_private_file(&path).map_err(|source| DbError::Io {
            path: path.clone(),
            action: "create the database file",
            source,
        })?;
        let open_err = |source| DbError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "Database is not in WAL mode");
        }
        Self::setup(conn, path.into())
    }

    /// Opens a fresh in-memory database with the current schema (for tests).
    pub(crate) fn open_in_memory() -> Result<Self, DbError> {
        let path = PathBuf::from(IN_MEMORY);
        let conn = Connection::open_in_memory().map_err(|source| DbError::Open {
            path: path.clone(),
            source,
        })?;
        Self::setup(conn, path.into())
    }

    /// Turns foreign keys on and runs the migrations.
    fn setup(mut conn: Connection, path: Arc<Path>) -> Result<Self, DbError> {
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(|source| DbError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        migrations::migrate(&mut conn, migrations::MIGRATIONS, &path)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The database file (`:memory:` for an in-memory database).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a blocking thread (`spawn_blocking`), for async callers.
    pub(crate) async fn run<T>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError>
    where
        T: Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || f(&db)).await?
    }

    /// Locks the connection, recovering it if a holder panicked.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The schema version of the open database.
    pub(crate) fn schema_version(&self) -> Result<i64, DbError> {
        Ok(self
            .lock()
            .pragma_query_value(None, "user_version", |row| row.get(0))?)
    }
}

/// Creates `path` empty with mode 0600 unless it exists, so that SQLite (which gives
/// its `-wal` and `-shm` files the mode of the database) never creates it with the
/// umask's mode.
#[cfg(unix)]
fn create_private_file(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        // The umask may have removed bits; set the mode exactly.
        Ok(_) => fs::set_permissions(path, fs::Permissions::from_mode(0o600)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `path` empty unless it exists.
#[cfg(not(unix))]
fn create_private_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `e` is a UNIQUE or PRIMARY KEY constraint failure.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_error().is_some_and(|e| {
        e.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
            || e.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    })
}

/// Whether `e` is a FOREIGN KEY constraint failure.
fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_error()
        .is_some_and(|e| e.extended_code == ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// Maps a uniqueness failure to [`DbError::Conflict`] with `message`.
fn unique_or(e: rusqlite::Error, message: impl FnOnce() -> String) -> DbError {
    if is_unique_violation(&e) {
        DbError::Conflict(message())
    } else {
        DbError::Sqlite(e)
    }
}

/// Defines an `i64` row id newtype usable as an SQL value.
macro_rules! row_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub(crate) struct $name(pub(crate) i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                i64::column_result(value).map(Self)
            }
        }
    };
}

row_id!(
    /// The id of a user.
    UserId
);
row_id!(
    /// The id of an API token.
    TokenId
);
row_id!(
    /// The id of a runtime-created destination.
    DestinationId
);
