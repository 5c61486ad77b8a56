//! Streams created and deleted at runtime: `POST /api/v1/streams`,
//! `DELETE /api/v1/streams/{app}/{name}` (the key is shown once, in the answer to
//! the creation; the store keeps it), and `POST .../kick`, which disconnects the
//! publisher.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use cthulhu_core::{Secret, StreamPath};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::{ApiError, ApiState, Body, Caller, audit, now, stream_path};
use crate::control::StreamSpec;

/// Shortest publish key accepted from a caller (generated keys have 32 characters).
const MIN_KEY_LEN: usize = 16;
/// Longest publish key.
const MAX_KEY_LEN: usize = 256;

/// The routes.
pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/streams", post(create_stream))
        .route("/streams/{app}/{name}", delete(delete_stream))
        .route("/streams/{app}/{name}/kick", post(kick))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewStream {
    path: String,
    key: Option<String>,
}

async fn create_stream(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<NewStream>,
) -> Result<Response, ApiError> {
    let path = StreamPath::new(&body.path).map_err(|e| ApiError::invalid("path", e.to_string()))?;
    let key = match body.key {
        Some(k) => {
            let n = k.chars().count();
            if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&n)
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'?')
            {
                return Err(ApiError::invalid(
                    "key",
                    format!(
                        "{MIN_KEY_LEN} to {MAX_KEY_LEN} printable ASCII characters without '/' or '?'"
                    ),
                ));
            }
            Secret::new(k)
        }
        None => crate::store::random_key(),
    };
    let spec = StreamSpec {
        path: path.clone(),
        key: key.clone(),
        play_key: None,
        passphrase: None,
    };
    state.control.add_stream(spec).await?;
    let (p, k) = (path.to_string(), key.clone());
    if let Err(e) = state
        .db
        .run(move |db| db.create_stream(&p, k.expose(), now()))
        .await
    {
        let _ = state.control.remove_stream(path.clone()).await;
        return Err(e.into());
    }
    audit(&state, &caller, "stream.create", path.to_string()).await;
    info!(stream = %path, by = %caller.actor, "API: stream created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "path": path.as_str(), "key": key.expose() })),
    )
        .into_response())
}

async fn delete_stream(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path((app, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let path = stream_path(&app, &name)?;
    state.control.remove_stream(path.clone()).await?;
    let p = path.to_string();
    state.db.run(move |db| db.delete_stream(&p)).await?;
    audit(&state, &caller, "stream.delete", path.to_string()).await;
    info!(stream = %path, by = %caller.actor, "API: stream deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn kick(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path((app, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let path = stream_path(&app, &name)?;
    if !state.hub.kick(&path) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_live",
            format!("nobody publishes {path}"),
        ));
    }
    audit(&state, &caller, "stream.kick", path.to_string()).await;
    info!(stream = %path, by = %caller.actor, "API: publisher kicked");
    Ok(StatusCode::NO_CONTENT)
}
