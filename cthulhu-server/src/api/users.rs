//! Console users: `GET`/`POST /api/v1/users`, `DELETE /api/v1/users/{username}`,
//! `POST /api/v1/users/{username}/password-reset` and `.../totp-reset`.
//!
//! A new or reset password is generated here and shown once, in the answer; it is
//! never logged nor written to the audit log. A new user enrols TOTP at the first
//! login; a password or TOTP reset, and a deletion, end the user's sessions. The
//! last enabled administrator cannot be deleted (409).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::{ApiError, ApiState, Body, Caller, audit, now};
use crate::auth;
use crate::db::{Role, User};

/// Longest username.
const MAX_USERNAME_LEN: usize = 64;

/// The user endpoints.
pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/users", get(list_users).post(create_user))
        .route("/users/{username}", axum::routing::delete(delete_user))
        .route("/users/{username}/password-reset", post(reset_password))
        .route("/users/{username}/totp-reset", post(reset_totp))
}

/// A user as the API shows it: no hash, no secret.
fn user_view(u: &User) -> serde_json::Value {
    json!({
        "id": u.id.0,
        "username": u.username,
        "role": u.role.as_str(),
        "totp_enabled": u.totp_enabled,
        "created_at": u.created_at,
        "disabled": u.disabled,
    })
}

/// 1 to [`MAX_USERNAME_LEN`] of `[A-Za-z0-9._-]`.
fn check_username(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > MAX_USERNAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(ApiError::invalid(
            "username",
            format!("1 to {MAX_USERNAME_LEN} letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(())
}

fn user_not_found(username: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("user {username} not found"),
    )
}

/// The user named `username`, or 404.
async fn find_user(state: &ApiState, username: &str) -> Result<User, ApiError> {
    if username.is_empty() || username.len() > MAX_USERNAME_LEN {
        return Err(user_not_found(username));
    }
    let name = username.to_owned();
    state
        .db
        .run(move |db| db.user_by_name(&name))
        .await?
        .ok_or_else(|| user_not_found(username))
}

/// A generated password and its argon2id hash (computed on a blocking thread).
async fn new_password() -> Result<(String, String), ApiError> {
    let password = auth::password::generate_password();
    let p = password.clone();
    let hash = tokio::task::spawn_blocking(move || auth::password::hash_password(&p))
        .await
        .map_err(|e| ApiError::internal("password hashing", e))?
        .map_err(|e| ApiError::internal("password hashing", e))?;
    Ok((password, hash))
}

async fn list_users(
    State(state): State<Arc<ApiState>>,
    _caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let users = state.db.run(|db| db.list_users()).await?;
    let users: Vec<_> = users.iter().map(user_view).collect();
    Ok(Json(json!({ "users": users })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
}

async fn create_user(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<NewUser>,
) -> Result<Response, ApiError> {
    check_username(&body.username)?;
    let (password, hash) = new_password().await?;
    let name = body.username.clone();
    let id = state
        .db
        .run(move |db| db.create_user(&name, &hash, Role::Admin, now()))
        .await?;
    audit(
        &state,
        &caller,
        "user.create",
        format!("user:{}", body.username),
    )
    .await;
    info!(user = %body.username, by = %caller.actor, "API: user created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id.0, "username": body.username, "password": password })),
    )
        .into_response())
}

async fn delete_user(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = find_user(&state, &username).await?;
    let id = user.id;
    let deleted = state
        .db
        .run(move |db| {
            // Refused for the last admin; its sessions go with it (and explicitly).
            let deleted = db.delete_user(id)?;
            if deleted {
                db.revoke_user_sessions(id)?;
            }
            Ok(deleted)
        })
        .await?;
    if !deleted {
        return Err(user_not_found(&username));
    }
    audit(
        &state,
        &caller,
        "user.delete",
        format!("user:{}", user.username),
    )
    .await;
    info!(user = %user.username, by = %caller.actor, "API: user deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn reset_password(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = find_user(&state, &username).await?;
    let (password, hash) = new_password().await?;
    let id = user.id;
    let changed = state
        .db
        .run(move |db| {
            let changed = db.set_password(id, &hash, true, now())?;
            db.revoke_user_sessions(id)?;
            Ok(changed)
        })
        .await?;
    if !changed {
        return Err(user_not_found(&username));
    }
    audit(
        &state,
        &caller,
        "user.password_reset",
        format!("user:{}", user.username),
    )
    .await;
    info!(user = %user.username, by = %caller.actor, "API: password reset");
    Ok(Json(json!({ "password": password })))
}

async fn reset_totp(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = find_user(&state, &username).await?;
    let id = user.id;
    let changed = state
        .db
        .run(move |db| {
            let changed = db.reset_totp(id, now())?;
            db.revoke_user_sessions(id)?;
            Ok(changed)
        })
        .await?;
    if !changed {
        return Err(user_not_found(&username));
    }
    audit(
        &state,
        &caller,
        "user.totp_reset",
        format!("user:{}", user.username),
    )
    .await;
    info!(user = %user.username, by = %caller.actor, "API: TOTP reset");
    Ok(StatusCode::NO_CONTENT)
}
