//! Browser sessions and API tokens. Both are looked up by a hash the caller computes
//! (SHA-256 of the cookie or bearer value): the database never holds the values.

use std::fmt;

use cthulhu_core::Secret;
use rusqlite::{OptionalExtension as _, Row};

use super::{Db, DbError, TokenId, UserId, is_foreign_key_violation, unique_or};

/// A live session. `Debug` shows neither the id hash nor the CSRF token.
#[derive(Clone, PartialEq)]
pub(crate) struct Session {
    /// Hash of the cookie value.
    pub(crate) id_hash: Vec<u8>,
    /// Whose session it is.
    pub(crate) user_id: UserId,
    /// The CSRF token of the session (compare with [`Secret::matches`]).
    pub(crate) csrf_token: Secret,
    /// Login time.
    pub(crate) created_at: i64,
    /// When the session stops being valid.
    pub(crate) expires_at: i64,
    /// Last request seen.
    pub(crate) last_seen_at: i64,
    /// Address the login came from.
    pub(crate) remote: Option<String>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id_hash", &"***")
            .field("user_id", &self.user_id)
            .field("csrf_token", &self.csrf_token)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("remote", &self.remote)
            .finish()
    }
}

/// An API token, without its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    /// Row id.
    pub(crate) id: TokenId,
    /// Unique name, shown in the audit log as `token:NAME`.
    pub(crate) name: String,
    /// The user it acts for, if any.
    pub(crate) user_id: Option<UserId>,
    /// Creation time.
    pub(crate) created_at: i64,
    /// Last use, if any.
    pub(crate) last_used_at: Option<i64>,
    /// Whether it was revoked.
    pub(crate) revoked: bool,
}

/// Columns of [`token_from_row`], on table alias `t`.
const SELECT_TOKEN: &str =
    "SELECT t.id, t.name, t.user_id, t.created_at, t.last_used_at, t.revoked FROM api_tokens t";

/// Reads a row of [`SELECT_TOKEN`].
fn token_from_row(row: &Row<'_>) -> rusqlite::Result<Token> {
    Ok(Token {
        id: row.get(0)?,
        name: row.get(1)?,
        user_id: row.get(2)?,
        created_at: row.get(3)?,
        last_used_at: row.get(4)?,
        revoked: row.get(5)?,
    })
}

impl Db {
    /// Stores a new session. An unknown user is a [`DbError::NotFound`].
    pub(crate) fn create_session(
        &self,
        id_hash: &[u8],
        user_id: UserId,
        csrf_token: &str,
        now: i64,
        expires_at: i64,
        remote: Option<&str>,
    ) -> Result<(), DbError> {
        self.lock()
            .prepare_cached(
                "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at, \
                 last_seen_at, remote) VALUES (?1, ?2, ?3, ?4, ?5, ?4, ?6)",
            )?
            .execute((id_hash, user_id, csrf_token, now, expires_at, remote))
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    DbError::NotFound(format!("no user with id {user_id}"))
                } else {
                    unique_or(e, || "session id already exists".to_owned())
                }
            })?;
        Ok(())
    }

    /// The session with `id_hash` if it is valid at `now`: not revoked, not expired,
    /// and its user not disabled.
    pub(crate) fn session(&self, id_hash: &[u8], now: i64) -> Result<Option<Session>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT s.id_hash, s.user_id, s.csrf_token, s.created_at, s.expires_at, \
             s.last_seen_at, s.remote FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id_hash = ?1 AND s.revoked = 0 AND s.expires_at > ?2 AND u.disabled = 0",
        )?;
        let session = stmt
            .query_row((id_hash, now), |row| {
                Ok(Session {
                    id_hash: row.get(0)?,
                    user_id: row.get(1)?,
                    csrf_token: Secret::new(row.get::<_, String>(2)?),
                    created_at: row.get(3)?,
                    expires_at: row.get(4)?,
                    last_seen_at: row.get(5)?,
                    remote: row.get(6)?,
                })
            })
            .optional()?;
        Ok(session)
    }

    /// Records activity on a session; false if there is no such session.
    pub(crate) fn touch_session(&self, id_hash: &[u8], now: i64) -> Result<bool, DbError> {
        Ok(self
            .lock()
            .prepare_cached("UPDATE sessions SET last_seen_at = ?2 WHERE id_hash = ?1")?
            .execute((id_hash, now))?
            > 0)
    }

    /// Revokes a session (logout); false if there is no such session.
    pub(crate) fn revoke_session(&self, id_hash: &[u8]) -> Result<bool, DbError> {
        Ok(self.lock().execute(
            "UPDATE sessions SET revoked = 1 WHERE id_hash = ?1",
            [id_hash],
        )? > 0)
    }

    /// Revokes every live session of a user; returns how many were revoked.
    pub(crate) fn revoke_user_sessions(&self, user_id: UserId) -> Result<usize, DbError> {
        Ok(self.lock().execute(
            "UPDATE sessions SET revoked = 1 WHERE user_id = ?1 AND revoked = 0",
            [user_id],
        )?)
    }

    /// Deletes sessions expired at `now` or revoked; returns how many.
    pub(crate) fn purge_expired(&self, now: i64) -> Result<usize, DbError> {
        Ok(self.lock().execute(
            "DELETE FROM sessions WHERE expires_at <= ?1 OR revoked = 1",
            [now],
        )?)
    }

    /// Stores a new API token by its hash. A name or hash already used is a
    /// [`DbError::Conflict`]; an unknown user a [`DbError::NotFound`].
    pub(crate) fn create_token(
        &self,
        name: &str,
        token_hash: &[u8],
        user_id: Option<UserId>,
        now: i64,
    ) -> Result<TokenId, DbError> {
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO api_tokens (name, token_hash, user_id, created_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute((name, token_hash, user_id, now))
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                DbError::NotFound("no such user".to_owned())
            } else if e.to_string().contains("api_tokens.token_hash") {
                unique_or(e, || "token already exists".to_owned())
            } else {
                unique_or(e, || format!("a token named \"{name}\" already exists"))
            }
        })?;
        Ok(TokenId(conn.last_insert_rowid()))
    }

    /// The token with `token_hash` if it may be used: not revoked, and its user (if
    /// any) not disabled.
    pub(crate) fn token_by_hash(&self, token_hash: &[u8]) -> Result<Option<Token>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_TOKEN} LEFT JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = ?1 AND t.revoked = 0 AND coalesce(u.disabled, 0) = 0"
        ))?;
        Ok(stmt.query_row([token_hash], token_from_row).optional()?)
    }

    /// All tokens, revoked ones included, by id.
    pub(crate) fn list_tokens(&self) -> Result<Vec<Token>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_TOKEN} ORDER BY t.id"))?;
        let tokens = stmt
            .query_map([], token_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(tokens)
    }

    /// Revokes a token; false if there is no such token.
    pub(crate) fn revoke_token(&self, id: TokenId) -> Result<bool, DbError> {
        Ok(self
            .lock()
            .execute("UPDATE api_tokens SET revoked = 1 WHERE id = ?1", [id])?
            > 0)
    }

    /// Records a use of a token; false if there is no such token.
    pub(crate) fn touch_token(&self, id: TokenId, now: i64) -> Result<bool, DbError> {
        Ok(self
            .lock()
            .prepare_cached("UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1")?
            .execute((id, now))?
            > 0)
    }
}
