//! Streams created and deleted at runtime: `POST /api/v1/streams`,
//! `DELETE /api/v1/streams/{app}/{name}` (the key is shown once, in the answer to
//! the creation; the store keeps it), and `POST .../kick`, which disconnects the
//! publisher.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cthulhu_core::{Secret, StreamPath};
use serde::Deserialize;
use tracing::info;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::{self, ErrorBody, StreamParams};
use super::{ApiError, ApiState, Body, Caller, audit, now, stream_path};
use crate::control::StreamSpec;

/// Shortest publish key accepted from a caller (generated keys have 32 characters).
const MIN_KEY_LEN: usize = 16;
/// Longest publish key.
const MAX_KEY_LEN: usize = 256;

/// The routes.
pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(create_stream))
        .routes(routes!(delete_stream))
        .routes(routes!(kick))
}

/// A new stream.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewStream {
    /// `app/name`.
    #[schema(example = "live/studio")]
    path: String,
    /// The publish key: 16 to 256 printable ASCII characters without `/` or `?`
    /// (generated when absent).
    key: Option<String>,
}

/// Creates a stream; the answer is the only time its key is shown.
#[utoipa::path(
    post,
    path = "/streams",
    tag = "streams",
    request_body = NewStream,
    responses(
        (status = 201, description = "Created (the key shown once)", body = dto::CreatedStream),
        (status = 409, description = "The stream exists (`conflict`)", body = ErrorBody),
        (status = 422, description = "A bad path, key or body (`invalid`, with `field`)", body = ErrorBody),
    )
)]

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
        Json(dto::CreatedStream {
            path: path.as_str().to_owned(),
            key: key.expose().to_owned(),
        }),
    )
        .into_response())
}

/// Deletes a stream made through the API, with its destinations.
#[utoipa::path(
    delete,
    path = "/streams/{app}/{name}",
    tag = "streams",
    params(StreamParams),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such stream (`not_found`)", body = ErrorBody),
        (status = 409, description = "A config file or plugin stream (`conflict`)", body = ErrorBody),
        (status = 422, description = "Not a stream path (`invalid`, field `path`)", body = ErrorBody),
    )
)]
async fn delete_stream(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(StreamParams { app, name }): Path<StreamParams>,
) -> Result<StatusCode, ApiError> {
    let path = stream_path(&app, &name)?;
    state.control.remove_stream(path.clone()).await?;
    let p = path.to_string();
    state.db.run(move |db| db.delete_stream(&p)).await?;
    audit(&state, &caller, "stream.delete", path.to_string()).await;
    info!(stream = %path, by = %caller.actor, "API: stream deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Disconnects the stream's publisher.
#[utoipa::path(
    post,
    path = "/streams/{app}/{name}/kick",
    tag = "streams",
    params(StreamParams),
    responses(
        (status = 204, description = "Disconnected"),
        (status = 409, description = "Nobody publishes the stream (`not_live`)", body = ErrorBody),
        (status = 422, description = "Not a stream path (`invalid`, field `path`)", body = ErrorBody),
    )
)]
async fn kick(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(StreamParams { app, name }): Path<StreamParams>,
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
