//! Console users: `GET`/`POST /api/v1/users`, `DELETE /api/v1/users/{username}`,
//! `POST /api/v1/users/{username}/password-reset` and `.../totp-reset`.
//!
//! A new or reset password is generated here and shown once, in the answer; it is
//! never logged nor written to the audit log. Having been seen by the administrator,
//! it is marked to be changed: the user's session can do nothing else until
//! `POST /api/v1/me/password` (see [`super::session`]). A new user enrols TOTP at the
//! first login; a password or TOTP reset, and a deletion, end the user's sessions. The
//! last enabled administrator cannot be deleted (409).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::info;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::{self, ErrorBody, UserParams};
use super::{ApiError, ApiState, Body, Caller, audit, now};
use crate::auth;
use crate::db::{Role, User};

/// Longest username.
const MAX_USERNAME_LEN: usize = 64;

/// The user endpoints.
pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(delete_user))
        .routes(routes!(reset_password))
        .routes(routes!(reset_totp))
}

/// A user as the API shows it: no hash, no secret.
fn user_view(u: &User) -> dto::UserView {
    dto::UserView {
        id: u.id.0,
        username: u.username.clone(),
        role: u.role.as_str(),
        totp_enabled: u.totp_enabled,
        created_at: u.created_at,
        disabled: u.disabled,
    }
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

/// Every console user.
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    responses((status = 200, description = "The users", body = dto::UserList))
)]
async fn list_users(
    State(state): State<Arc<ApiState>>,
    _caller: Caller,
) -> Result<Json<dto::UserList>, ApiError> {
    let users = state.db.run(|db| db.list_users()).await?;
    let users = users.iter().map(user_view).collect();
    Ok(Json(dto::UserList { users }))
}

/// A new console user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    /// 1 to 64 letters, digits, `-`, `_` or `.`, unique.
    #[schema(example = "alice")]
    username: String,
}

/// Creates a console user with a generated password (shown once, to be changed by
/// the user); TOTP is enrolled at the first login.
#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    request_body = NewUser,
    responses(
        (status = 201, description = "Created (the password shown once)", body = dto::CreatedUser),
        (status = 409, description = "A user of that name exists (`conflict`)", body = ErrorBody),
        (status = 422, description = "A bad username or body (`invalid`)", body = ErrorBody),
    )
)]

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
        .run(move |db| db.create_user(&name, &hash, Role::Admin, true, now()))
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
        Json(dto::CreatedUser {
            id: id.0,
            username: body.username,
            password,
        }),
    )
        .into_response())
}

/// Deletes a user and ends its sessions.
#[utoipa::path(
    delete,
    path = "/users/{username}",
    tag = "users",
    params(UserParams),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such user (`not_found`)", body = ErrorBody),
        (status = 409, description = "The last enabled administrator (`conflict`)", body = ErrorBody),
    )
)]
async fn delete_user(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(UserParams { username }): Path<UserParams>,
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

/// Gives a user a new generated password (shown once) and ends its sessions.
#[utoipa::path(
    post,
    path = "/users/{username}/password-reset",
    tag = "users",
    params(UserParams),
    responses(
        (status = 200, description = "The new password (shown once)", body = dto::NewPassword),
        (status = 404, description = "No such user (`not_found`)", body = ErrorBody),
    )
)]
async fn reset_password(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(UserParams { username }): Path<UserParams>,
) -> Result<Json<dto::NewPassword>, ApiError> {
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
    Ok(Json(dto::NewPassword { password }))
}

/// Removes a user's TOTP (it enrols again at the next login) and ends its sessions.
#[utoipa::path(
    post,
    path = "/users/{username}/totp-reset",
    tag = "users",
    params(UserParams),
    responses(
        (status = 204, description = "Reset"),
        (status = 404, description = "No such user (`not_found`)", body = ErrorBody),
    )
)]
async fn reset_totp(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(UserParams { username }): Path<UserParams>,
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
