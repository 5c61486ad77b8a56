//! The audit log: who did what, when, from where. Entries are only appended.

use rusqlite::Row;
use serde::Serialize;

use super::{Db, DbError};

/// An entry to append. `detail` must never hold a secret.
#[derive(Clone, Debug, Default)]
pub(crate) struct NewAudit<'a> {
    /// Time of the event.
    pub(crate) at: i64,
    /// Who: a username, `token:NAME`, `cli` or `system`.
    pub(crate) actor: &'a str,
    /// What, e.g. `login.ok`, `login.failed`, `destination.create`.
    pub(crate) action: &'a str,
    /// On what, e.g. a stream path or a username.
    pub(crate) target: Option<&'a str>,
    /// Details, stored as JSON text.
    pub(crate) detail: Option<&'a serde_json::Value>,
    /// Address the request came from.
    pub(crate) remote: Option<&'a str>,
}

/// An entry of the log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct AuditEntry {
    /// Row id, increasing in order of insertion.
    pub(crate) id: i64,
    /// Time of the event.
    pub(crate) at: i64,
    /// Who.
    pub(crate) actor: String,
    /// What.
    pub(crate) action: String,
    /// On what.
    pub(crate) target: Option<String>,
    /// Details.
    pub(crate) detail: Option<serde_json::Value>,
    /// Address the request came from.
    pub(crate) remote: Option<String>,
}

/// Reads a row of the audit table.
fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let detail = match row.get::<_, Option<String>>(5)? {
        None => None,
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, e.into())
        })?),
    };
    Ok(AuditEntry {
        id: row.get(0)?,
        at: row.get(1)?,
        actor: row.get(2)?,
        action: row.get(3)?,
        target: row.get(4)?,
        detail,
        remote: row.get(6)?,
    })
}

impl Db {
    /// Appends an entry; returns its id.
    pub(crate) fn audit(&self, entry: &NewAudit<'_>) -> Result<i64, DbError> {
        let detail = entry.detail.map(serde_json::Value::to_string);
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO audit (at, actor, action, target, detail, remote) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute((
            entry.at,
            entry.actor,
            entry.action,
            entry.target,
            detail,
            entry.remote,
        ))?;
        Ok(conn.last_insert_rowid())
    }

    /// Up to `limit` entries, newest first, older than entry `before_id` if given (for
    /// the next page, pass the id of the last entry of this one).
    pub(crate) fn audit_log(
        &self,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditEntry>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, actor, action, target, detail, remote FROM audit \
             WHERE ?1 IS NULL OR id < ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map((before_id, i64::from(limit)), entry_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
