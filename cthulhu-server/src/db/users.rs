//! Accounts: users, password hashes and TOTP enrolment.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{OptionalExtension as _, Row, ToSql, Transaction, TransactionBehavior};

use super::{Db, DbError, UserId, unique_or};

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub(crate) enum Role {
    /// Everything.
    Admin,
}

impl Role {
    /// The name stored in the database.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
        }
    }

    /// The role stored as `name`, if known.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for Role {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Role {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        Self::parse(name)
            .ok_or_else(|| FromSqlError::Other(format!("unknown role {name:?}").into()))
    }
}

/// A user row. `Debug` shows neither the password hash nor the TOTP secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct User {
    /// Row id.
    pub(crate) id: UserId,
    /// Login name, unique regardless of ASCII case.
    pub(crate) username: String,
    /// PHC string of the password hash.
    pub(crate) password_hash: String,
    /// What the user may do.
    pub(crate) role: Role,
    /// Raw TOTP secret, set when enrolment starts.
    pub(crate) totp_secret: Option<Vec<u8>>,
    /// Whether enrolment was confirmed: a login needs a TOTP code.
    pub(crate) totp_enabled: bool,
    /// The last TOTP time step accepted (a code is accepted once).
    pub(crate) totp_last_step: Option<i64>,
    /// Whether the next login must change the password.
    pub(crate) must_change_password: bool,
    /// Whether the account is disabled (no login, no session, no token).
    pub(crate) disabled: bool,
    /// Creation time.
    pub(crate) created_at: i64,
    /// Time of the last change of the account.
    pub(crate) updated_at: i64,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"***")
            .field("role", &self.role)
            .field("totp_secret", &self.totp_secret.as_ref().map(|_| "***"))
            .field("totp_enabled", &self.totp_enabled)
            .field("totp_last_step", &self.totp_last_step)
            .field("must_change_password", &self.must_change_password)
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// Columns of [`user_from_row`].
const SELECT_USER: &str = "SELECT id, username, password_hash, role, totp_secret, totp_enabled, \
     totp_last_step, must_change_password, disabled, created_at, updated_at FROM users";

/// Reads a row of [`SELECT_USER`].
fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        password_hash: row.get(2)?,
        role: row.get(3)?,
        totp_secret: row.get(4)?,
        totp_enabled: row.get(5)?,
        totp_last_step: row.get(6)?,
        must_change_password: row.get(7)?,
        disabled: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
    })
}

/// Refuses a change that would leave no enabled administrator besides `id`.
fn keep_an_admin(tx: &Transaction<'_>, id: UserId, what: &str) -> Result<(), DbError> {
    let role: Option<Role> = tx
        .query_row("SELECT role FROM users WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .optional()?;
    if role != Some(Role::Admin) {
        return Ok(());
    }
    let other: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM users WHERE role = ?1 AND disabled = 0 AND id <> ?2)",
        (Role::Admin, id),
        |row| row.get(0),
    )?;
    if other {
        Ok(())
    } else {
        Err(DbError::Conflict(format!(
            "cannot {what} the last enabled administrator"
        )))
    }
}

impl Db {
    /// Creates a user; `must_change_password` for a password someone else has seen
    /// (a generated one). A name already taken (in any ASCII case) is a
    /// [`DbError::Conflict`].
    pub(crate) fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
        must_change_password: bool,
        now: i64,
    ) -> Result<UserId, DbError> {
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO users (username, password_hash, role, must_change_password, \
             created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )?
        .execute((username, password_hash, role, must_change_password, now))
        .map_err(|e| unique_or(e, || format!("user \"{username}\" already exists")))?;
        Ok(UserId(conn.last_insert_rowid()))
    }

    /// The user named `username` (ASCII case-insensitive).
    pub(crate) fn user_by_name(&self, username: &str) -> Result<Option<User>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_USER} WHERE username = ?1"))?;
        Ok(stmt.query_row([username], user_from_row).optional()?)
    }

    /// The user with id `id`.
    pub(crate) fn user_by_id(&self, id: UserId) -> Result<Option<User>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_USER} WHERE id = ?1"))?;
        Ok(stmt.query_row([id], user_from_row).optional()?)
    }

    /// All users, by id.
    pub(crate) fn list_users(&self) -> Result<Vec<User>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_USER} ORDER BY id"))?;
        let users = stmt
            .query_map([], user_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(users)
    }

    /// The number of users.
    pub(crate) fn user_count(&self) -> Result<i64, DbError> {
        Ok(self
            .lock()
            .query_row("SELECT count(*) FROM users", [], |row| row.get(0))?)
    }

    /// Deletes a user with its sessions and tokens; false if there is no such user.
    /// Deleting the last enabled administrator is a [`DbError::Conflict`].
    pub(crate) fn delete_user(&self, id: UserId) -> Result<bool, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        keep_an_admin(&tx, id, "delete")?;
        let deleted = tx.execute("DELETE FROM users WHERE id = ?1", [id])? > 0;
        tx.commit()?;
        Ok(deleted)
    }

    /// Disables or enables a user; false if there is no such user. Disabling the last
    /// enabled administrator is a [`DbError::Conflict`]. A disabled user's sessions
    /// and tokens stop working (they are kept, and work again on enabling).
    pub(crate) fn set_user_disabled(
        &self,
        id: UserId,
        disabled: bool,
        now: i64,
    ) -> Result<bool, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if disabled {
            keep_an_admin(&tx, id, "disable")?;
        }
        let changed = tx.execute(
            "UPDATE users SET disabled = ?2, updated_at = ?3 WHERE id = ?1",
            (id, disabled, now),
        )? > 0;
        tx.commit()?;
        Ok(changed)
    }

    /// Replaces the password hash; false if there is no such user. Revoking the
    /// user's other sessions is the caller's decision.
    pub(crate) fn set_password(
        &self,
        id: UserId,
        password_hash: &str,
        must_change: bool,
        now: i64,
    ) -> Result<bool, DbError> {
        Ok(self.lock().execute(
            "UPDATE users SET password_hash = ?2, must_change_password = ?3, updated_at = ?4 \
             WHERE id = ?1",
            (id, password_hash, must_change, now),
        )? > 0)
    }

    /// The user's own password change: replaces the hash if it is still
    /// `current_hash` (the one the caller verified the current password against),
    /// clears `must_change_password` and revokes the user's other live sessions, all
    /// in one transaction; `keep_session` (the id hash of the session making the
    /// change) stays. Returns how many sessions were revoked, or None if the user is
    /// gone or its password changed meanwhile (nothing is changed then).
    pub(crate) fn change_own_password(
        &self,
        id: UserId,
        current_hash: &str,
        new_hash: &str,
        keep_session: &[u8],
        now: i64,
    ) -> Result<Option<usize>, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE users SET password_hash = ?3, must_change_password = 0, updated_at = ?4 \
             WHERE id = ?1 AND password_hash = ?2",
            (id, current_hash, new_hash, now),
        )? > 0;
        if !changed {
            return Ok(None);
        }
        let revoked = tx.execute(
            "UPDATE sessions SET revoked = 1 WHERE user_id = ?1 AND id_hash <> ?2 AND revoked = 0",
            (id, keep_session),
        )?;
        tx.commit()?;
        Ok(Some(revoked))
    }

    /// Starts TOTP enrolment with `secret` (replacing an unconfirmed one). False if
    /// there is no such user or TOTP is already enabled: [`Db::reset_totp`] first.
    pub(crate) fn set_totp_pending(
        &self,
        id: UserId,
        secret: &[u8],
        now: i64,
    ) -> Result<bool, DbError> {
        Ok(self.lock().execute(
            "UPDATE users SET totp_secret = ?2, totp_last_step = NULL, updated_at = ?3 \
             WHERE id = ?1 AND totp_enabled = 0",
            (id, secret, now),
        )? > 0)
    }

    /// Confirms enrolment: logins now need a code. False if there is no such user or
    /// no pending secret.
    pub(crate) fn enable_totp(&self, id: UserId, now: i64) -> Result<bool, DbError> {
        Ok(self.lock().execute(
            "UPDATE users SET totp_enabled = 1, updated_at = ?2 \
             WHERE id = ?1 AND totp_secret IS NOT NULL",
            (id, now),
        )? > 0)
    }

    /// Removes TOTP (secret, enabled flag, last step); false if there is no such user.
    pub(crate) fn reset_totp(&self, id: UserId, now: i64) -> Result<bool, DbError> {
        Ok(self.lock().execute(
            "UPDATE users SET totp_secret = NULL, totp_enabled = 0, totp_last_step = NULL, \
             updated_at = ?2 WHERE id = ?1",
            (id, now),
        )? > 0)
    }

    /// Records TOTP time step `step` as used if it is later than the last one
    /// accepted, in one statement; returns whether it was. This is what makes a code
    /// single-use: a replay, or an older code, returns false. Also false if the user
    /// does not exist or has no TOTP secret.
    pub(crate) fn accept_totp_step(&self, id: UserId, step: i64) -> Result<bool, DbError> {
        Ok(self.lock().execute(
            "UPDATE users SET totp_last_step = ?2 WHERE id = ?1 AND totp_secret IS NOT NULL \
             AND (totp_last_step IS NULL OR totp_last_step < ?2)",
            (id, step),
        )? > 0)
    }
}
