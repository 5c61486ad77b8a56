//! Versioned schema migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Each entry of
//! [`MIGRATIONS`] is applied in its own IMMEDIATE transaction together with the version
//! bump, so a failed migration leaves the previous version intact and two processes
//! opening the same file never both apply one. Entries are never edited once released:
//! a change of schema is a new entry at the end.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::DbError;

/// The migrations, in order: entry `i` takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// Version 1: the initial schema.
const V1: &str = "
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE CHECK (length(username) > 0),
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    totp_secret BLOB,
    totp_enabled INTEGER NOT NULL DEFAULT 0
        CHECK (totp_enabled = 0 OR (totp_enabled = 1 AND totp_secret IS NOT NULL)),
    totp_last_step INTEGER,
    must_change_password INTEGER NOT NULL DEFAULT 0 CHECK (must_change_password IN (0, 1)),
    disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    id_hash BLOB PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    remote TEXT
) STRICT, WITHOUT ROWID;
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash BLOB NOT NULL UNIQUE,
    user_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
) STRICT;
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE streams (
    path TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    play_key TEXT,
    passphrase TEXT,
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- No foreign key to streams: destinations may belong to streams of the config file.
CREATE TABLE destinations (
    id INTEGER PRIMARY KEY,
    stream_path TEXT NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (stream_path, name)
) STRICT;

CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    stream_path TEXT NOT NULL,
    storage TEXT,
    format TEXT,
    segment_seconds INTEGER CHECK (segment_seconds IS NULL OR segment_seconds > 0),
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX recordings_stream ON recordings (stream_path);

CREATE TABLE overrides (
    kind TEXT NOT NULL,
    stream_path TEXT NOT NULL,
    name TEXT NOT NULL,
    enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (kind, stream_path, name)
) STRICT, WITHOUT ROWID;

CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT CHECK (detail IS NULL OR json_valid(detail)),
    remote TEXT
) STRICT;
";

/// Version 2: the finished segments of every recording, for `GET /api/v1/recordings`.
const V2: &str = "
CREATE TABLE recording_segments (
    id INTEGER PRIMARY KEY,
    stream_path TEXT NOT NULL,
    recording TEXT NOT NULL,
    object TEXT NOT NULL,
    bytes INTEGER NOT NULL CHECK (bytes >= 0),
    duration_ms INTEGER NOT NULL CHECK (duration_ms >= 0),
    finished_at INTEGER NOT NULL
) STRICT;
CREATE INDEX recording_segments_stream ON recording_segments (stream_path, id);
";

/// Version 3: a recording made through the API may be disabled (and enabled again)
/// without being deleted; the rows from before are enabled.
const V3: &str = "
ALTER TABLE recordings ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1));
";

/// Applies the migrations `conn` lacks. `path` names the database in errors.
pub(super) fn migrate(
    conn: &mut Connection,
    migrations: &[&str],
    path: &Path,
) -> Result<(), DbError> {
    let supported = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let Ok(index) = usize::try_from(found) else {
            return Err(DbError::BadVersion {
                path: path.to_owned(),
                found,
            });
        };
        let Some(sql) = migrations.get(index) else {
            if found > supported {
                return Err(DbError::TooNew {
                    path: path.to_owned(),
                    found,
                    supported,
                });
            }
            return Ok(());
        };
        let version = found + 1;
        let failed = |source| DbError::Migration {
            path: path.to_owned(),
            version,
            source,
        };
        tx.execute_batch(sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(path = %path.display(), version, "Database schema migrated");
    }
}
