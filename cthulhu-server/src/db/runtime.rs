//! What is configured at run time on top of the config file: destinations, recording
//! rules, and overrides enabling or disabling entries the file declares.
//!
//! Stream paths are plain text without a foreign key: these may belong to streams of
//! the config file as well as to streams of the database.

use cthulhu_core::Secret;
use rusqlite::Row;

use super::{Db, DbError, DestinationId, unique_or};

/// A runtime-created destination. `Debug` does not show the URL (it holds the key).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StoredDestination {
    /// Row id.
    pub(crate) id: DestinationId,
    /// The stream it pushes, `app/name`.
    pub(crate) stream_path: String,
    /// Name, unique within the stream.
    pub(crate) name: String,
    /// Destination URL, including its key.
    pub(crate) url: Secret,
    /// Whether it is pushed.
    pub(crate) enabled: bool,
    /// Creation time.
    pub(crate) created_at: i64,
    /// Time of the last change.
    pub(crate) updated_at: i64,
}

/// A runtime-created recording rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredRecording {
    /// Id, random, chosen by the caller.
    pub(crate) id: String,
    /// The stream recorded, `app/name`.
    pub(crate) stream_path: String,
    /// Name of the storage to write to (the default if none).
    pub(crate) storage: Option<String>,
    /// Container format (the default if none).
    pub(crate) format: Option<String>,
    /// Segment length (the default if none).
    pub(crate) segment_seconds: Option<i64>,
    /// Creation time.
    pub(crate) created_at: i64,
    /// Whether it records (false: kept, but stopped).
    pub(crate) enabled: bool,
}

/// A finished segment of a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Row id, increasing: a page of older segments starts below the last one seen.
    pub(crate) id: i64,
    /// The recorded stream, `app/name`.
    pub(crate) stream_path: String,
    /// The recording's id within the stream.
    pub(crate) recording: String,
    /// The object (file or key) name in its storage.
    pub(crate) object: String,
    /// Size in bytes.
    pub(crate) bytes: i64,
    /// Media time covered, in milliseconds.
    pub(crate) duration_ms: i64,
    /// When it was finished (Unix seconds).
    pub(crate) finished_at: i64,
}

/// An override of an entry the config file declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Override {
    /// What kind of entry, e.g. `destination`.
    pub(crate) kind: String,
    /// Its stream, `app/name`.
    pub(crate) stream_path: String,
    /// Its name within the stream.
    pub(crate) name: String,
    /// Whether it is enabled.
    pub(crate) enabled: bool,
    /// Time of the last change.
    pub(crate) updated_at: i64,
}

/// Columns of [`destination_from_row`].
const SELECT_DESTINATION: &str = "SELECT id, stream_path, name, url, enabled, created_at, \
     updated_at FROM destinations";

/// Reads a row of [`SELECT_DESTINATION`].
fn destination_from_row(row: &Row<'_>) -> rusqlite::Result<StoredDestination> {
    Ok(StoredDestination {
        id: row.get(0)?,
        stream_path: row.get(1)?,
        name: row.get(2)?,
        url: Secret::new(row.get::<_, String>(3)?),
        enabled: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

/// Columns of [`recording_from_row`].
const SELECT_RECORDING: &str = "SELECT id, stream_path, storage, format, segment_seconds, \
     created_at, enabled FROM recordings";

/// Reads a row of [`SELECT_RECORDING`].
fn recording_from_row(row: &Row<'_>) -> rusqlite::Result<StoredRecording> {
    Ok(StoredRecording {
        id: row.get(0)?,
        stream_path: row.get(1)?,
        storage: row.get(2)?,
        format: row.get(3)?,
        segment_seconds: row.get(4)?,
        created_at: row.get(5)?,
        enabled: row.get(6)?,
    })
}

impl Db {
    /// Creates a destination. A name already used in the stream is a
    /// [`DbError::Conflict`].
    pub(crate) fn create_destination(
        &self,
        stream_path: &str,
        name: &str,
        url: &str,
        enabled: bool,
        now: i64,
    ) -> Result<DestinationId, DbError> {
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO destinations (stream_path, name, url, enabled, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )?
        .execute((stream_path, name, url, enabled, now))
        .map_err(|e| {
            unique_or(e, || {
                format!("stream \"{stream_path}\" already has a destination \"{name}\"")
            })
        })?;
        Ok(DestinationId(conn.last_insert_rowid()))
    }

    /// All destinations, by stream path then name.
    pub(crate) fn destinations(&self) -> Result<Vec<StoredDestination>, DbError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached(&format!("{SELECT_DESTINATION} ORDER BY stream_path, name"))?;
        let rows = stmt
            .query_map([], destination_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The destinations of one stream, by name.
    pub(crate) fn destinations_of(
        &self,
        stream_path: &str,
    ) -> Result<Vec<StoredDestination>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_DESTINATION} WHERE stream_path = ?1 ORDER BY name"
        ))?;
        let rows = stmt
            .query_map([stream_path], destination_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Changes the URL and/or the enabled flag of a destination (`None` keeps the
    /// value) and sets its update time; false if there is no such destination.
    pub(crate) fn update_destination(
        &self,
        stream_path: &str,
        name: &str,
        url: Option<&str>,
        enabled: Option<bool>,
        now: i64,
    ) -> Result<bool, DbError> {
        Ok(self.lock().execute(
            "UPDATE destinations SET url = coalesce(?3, url), enabled = coalesce(?4, enabled), \
             updated_at = ?5 WHERE stream_path = ?1 AND name = ?2",
            (stream_path, name, url, enabled, now),
        )? > 0)
    }

    /// Deletes a destination; false if there is no such destination.
    pub(crate) fn delete_destination(
        &self,
        stream_path: &str,
        name: &str,
    ) -> Result<bool, DbError> {
        Ok(self.lock().execute(
            "DELETE FROM destinations WHERE stream_path = ?1 AND name = ?2",
            (stream_path, name),
        )? > 0)
    }

    /// Creates a recording rule. An id already used is a [`DbError::Conflict`].
    pub(crate) fn create_recording(&self, rule: &StoredRecording) -> Result<(), DbError> {
        self.lock()
            .execute(
                "INSERT INTO recordings (id, stream_path, storage, format, segment_seconds, \
                 created_at, enabled) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                (
                    &rule.id,
                    &rule.stream_path,
                    &rule.storage,
                    &rule.format,
                    rule.segment_seconds,
                    rule.created_at,
                    rule.enabled,
                ),
            )
            .map_err(|e| unique_or(e, || format!("recording \"{}\" already exists", rule.id)))?;
        Ok(())
    }

    /// All recording rules, by stream path then creation.
    pub(crate) fn recordings(&self) -> Result<Vec<StoredRecording>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_RECORDING} ORDER BY stream_path, created_at, id"
        ))?;
        let rows = stmt
            .query_map([], recording_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The recording rules of one stream, by creation.
    pub(crate) fn recordings_of(&self, stream_path: &str) -> Result<Vec<StoredRecording>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_RECORDING} WHERE stream_path = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt
            .query_map([stream_path], recording_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Enables or disables the recording rule `id` of `stream_path`; false if there
    /// is no such rule.
    pub(crate) fn set_recording_enabled(
        &self,
        stream_path: &str,
        id: &str,
        enabled: bool,
    ) -> Result<bool, DbError> {
        Ok(self.lock().execute(
            "UPDATE recordings SET enabled = ?3 WHERE id = ?1 AND stream_path = ?2",
            (id, stream_path, enabled),
        )? > 0)
    }

    /// Deletes a recording rule; false if there is no such rule.
    pub(crate) fn delete_recording(&self, id: &str) -> Result<bool, DbError> {
        Ok(self
            .lock()
            .execute("DELETE FROM recordings WHERE id = ?1", [id])?
            > 0)
    }

    /// Records a finished segment (`segment.id` is ignored); returns its id.
    pub(crate) fn add_segment(&self, segment: &Segment) -> Result<i64, DbError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO recording_segments (stream_path, recording, object, bytes, \
             duration_ms, finished_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            (
                &segment.stream_path,
                &segment.recording,
                &segment.object,
                segment.bytes,
                segment.duration_ms,
                segment.finished_at,
            ),
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Finished segments, newest first: of one stream if `stream_path` is given,
    /// with ids below `before` if given, at most `limit`.
    pub(crate) fn segments(
        &self,
        stream_path: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Segment>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, stream_path, recording, object, bytes, duration_ms, finished_at \
             FROM recording_segments WHERE (?1 IS NULL OR stream_path = ?1) \
             AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt
            .query_map((stream_path, before, limit), |row| {
                Ok(Segment {
                    id: row.get(0)?,
                    stream_path: row.get(1)?,
                    recording: row.get(2)?,
                    object: row.get(3)?,
                    bytes: row.get(4)?,
                    duration_ms: row.get(5)?,
                    finished_at: row.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Enables or disables an entry of the config file, replacing an earlier override.
    pub(crate) fn set_override(
        &self,
        kind: &str,
        stream_path: &str,
        name: &str,
        enabled: bool,
        now: i64,
    ) -> Result<(), DbError> {
        self.lock().execute(
            "INSERT INTO overrides (kind, stream_path, name, enabled, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (kind, stream_path, name) \
             DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
            (kind, stream_path, name, enabled, now),
        )?;
        Ok(())
    }

    /// All overrides, by kind, stream path and name.
    pub(crate) fn overrides(&self) -> Result<Vec<Override>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT kind, stream_path, name, enabled, updated_at FROM overrides \
             ORDER BY kind, stream_path, name",
        )?;
        let rows = stmt
            .query_map([], |row| {
                Ok(Override {
                    kind: row.get(0)?,
                    stream_path: row.get(1)?,
                    name: row.get(2)?,
                    enabled: row.get(3)?,
                    updated_at: row.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Removes an override (the config file decides again); false if there was none.
    pub(crate) fn clear_override(
        &self,
        kind: &str,
        stream_path: &str,
        name: &str,
    ) -> Result<bool, DbError> {
        Ok(self.lock().execute(
            "DELETE FROM overrides WHERE kind = ?1 AND stream_path = ?2 AND name = ?3",
            (kind, stream_path, name),
        )? > 0)
    }
}
