//! Recordings started, stopped, enabled and disabled at runtime, and the segments
//! recorded: `POST /api/v1/streams/{app}/{name}/recordings`,
//! `PATCH` and `DELETE /api/v1/streams/{app}/{name}/recordings/{id}`,
//! `GET /api/v1/recordings`.
//!
//! A recording made here is kept in the store and comes back at the next start; one
//! the config file declares is changed there (409), but may be enabled or disabled
//! here (kept as an override across reloads and restarts). A route plugin's is the
//! plugin's (409). Every finished segment, of any recording, is listed by
//! `GET /api/v1/recordings`, newest first.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cthulhu_core::StreamPath;
use cthulhu_core::supervisor::DestinationState;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::{ErrorBody, StreamParams};
use super::{ApiError, ApiState, Body, Caller, audit, now, stream_path};
use crate::control::{Origin, RecordSpec, RecordingView, state_name, unix_secs};
use crate::db::{Segment, StoredRecording};

/// Longest segment length accepted (a day), as `segment_seconds` in the file.
const MAX_SEGMENT_SECONDS: u64 = 86_400;
/// Segments listed per page by default, and at most.
const DEFAULT_PAGE: u32 = 100;
/// The most segments a page may ask for.
const MAX_PAGE: u32 = 1000;

/// The routes.
pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(create_recording))
        .routes(routes!(patch_recording, delete_recording))
        .routes(routes!(list_segments))
}

/// `POST .../recordings`: every field optional.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRecording {
    /// A `[storage.NAME]` of the config file, or `local` (the default).
    storage: Option<String>,
    /// `fmp4` (the default), `ts` or `flv`.
    format: Option<String>,
    /// Cut a segment at the first keyframe after this many seconds (1 to 86400);
    /// without it, one segment per publish.
    segment_seconds: Option<u64>,
}

/// The answer to a creation.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Created {
    /// The recording's id within its stream.
    id: String,
    /// The storage it writes to.
    storage: String,
    /// The container.
    format: String,
}

/// A new recording id: `r` and 10 random letters and digits.
fn new_id() -> String {
    let mut rng = rand::rng();
    let id: String = (0..10)
        .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)).to_ascii_lowercase())
        .collect();
    format!("r{id}")
}

/// Starts a recording of a stream, kept in the store.
#[utoipa::path(
    post,
    path = "/streams/{app}/{name}/recordings",
    tag = "recordings",
    params(StreamParams),
    request_body = NewRecording,
    responses(
        (status = 201, description = "Started", body = Created),
        (status = 404, description = "No such stream (`not_found`)", body = ErrorBody),
        (status = 409, description = "A conflicting recording (`conflict`)", body = ErrorBody),
        (status = 422, description = "A bad storage, format, segment length or body (`invalid`, with `field`)", body = ErrorBody),
    )
)]
async fn create_recording(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path((app, name)): Path<(String, String)>,
    Body(body): Body<NewRecording>,
) -> Result<Response, ApiError> {
    let path = stream_path(&app, &name)?;
    let format = match body.format.as_deref() {
        None => None,
        Some(f @ ("fmp4" | "ts" | "flv")) => Some(f.to_owned()),
        Some(_) => return Err(ApiError::invalid("format", "one of fmp4, ts, flv")),
    };
    if let Some(s) = body.segment_seconds
        && !(1..=MAX_SEGMENT_SECONDS).contains(&s)
    {
        return Err(ApiError::invalid(
            "segment_seconds",
            format!("1 to {MAX_SEGMENT_SECONDS}"),
        ));
    }
    let stored = StoredRecording {
        id: new_id(),
        stream_path: path.to_string(),
        storage: body.storage,
        format,
        segment_seconds: body
            .segment_seconds
            .map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        created_at: now(),
        enabled: true,
    };
    let spec = RecordSpec::from_stored(&stored).map_err(|e| ApiError::invalid("format", e))?;
    let created = Created {
        id: spec.id.clone(),
        storage: spec.storage.clone(),
        format: spec.container.to_string(),
    };
    state.control.add_recording(path.clone(), spec).await?;
    let row = stored.clone();
    if let Err(e) = state.db.run(move |db| db.create_recording(&row)).await {
        let _ = state
            .control
            .remove_recording(path.clone(), stored.id.clone())
            .await;
        return Err(e.into());
    }
    audit(
        &state,
        &caller,
        "recording.create",
        format!("{path}:{}", stored.id),
    )
    .await;
    info!(stream = %path, recording = %stored.id, storage = %created.storage, by = %caller.actor, "API: recording started");
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Stops and deletes a recording made through the API (its segments stay).
#[utoipa::path(
    delete,
    path = "/streams/{app}/{name}/recordings/{id}",
    tag = "recordings",
    params(
        StreamParams,
        ("id" = String, Path, description = "The recording's id within the stream", example = "r0123456789"),
    ),
    responses(
        (status = 204, description = "Stopped and deleted"),
        (status = 404, description = "No such stream or recording (`not_found`)", body = ErrorBody),
        (status = 409, description = "A config file recording, changed there (`conflict`)", body = ErrorBody),
        (status = 422, description = "Not a stream path (`invalid`, field `path`)", body = ErrorBody),
    )
)]
async fn delete_recording(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path((app, name, id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let path = stream_path(&app, &name)?;
    state
        .control
        .remove_recording(path.clone(), id.clone())
        .await?;
    let rid = id.clone();
    state.db.run(move |db| db.delete_recording(&rid)).await?;
    audit(&state, &caller, "recording.delete", format!("{path}:{id}")).await;
    info!(stream = %path, recording = %id, by = %caller.actor, "API: recording stopped");
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH .../recordings/{id}`: enables or disables a recording.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordingPatch {
    /// Whether it records (required). Disabled, the open segment is finished and
    /// kept; enabled again, a new segment starts while the stream is live.
    enabled: Option<bool>,
}

/// Enables or disables a recording of the config file (kept as an override, across
/// reloads and restarts) or of the API (kept in the store); the others of the stream
/// are not touched.
#[utoipa::path(
    patch,
    path = "/streams/{app}/{name}/recordings/{id}",
    tag = "recordings",
    params(
        StreamParams,
        ("id" = String, Path, description = "The recording's id within the stream", example = "record0"),
    ),
    request_body = RecordingPatch,
    responses(
        (status = 200, description = "Changed", body = Recording),
        (status = 404, description = "No such stream or recording (`not_found`)", body = ErrorBody),
        (status = 409, description = "A route plugin's recording, which the plugin decides (`conflict`)", body = ErrorBody),
        (status = 422, description = "A body without `enabled`, or with other fields (`invalid`)", body = ErrorBody),
    )
)]
async fn patch_recording(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path((app, name, id)): Path<(String, String, String)>,
    Body(body): Body<RecordingPatch>,
) -> Result<Json<Recording>, ApiError> {
    let path = stream_path(&app, &name)?;
    let Some(on) = body.enabled else {
        return Err(ApiError::invalid("enabled", "required: true or false"));
    };
    let before = recording_view(&state, &path, &id).await?;
    state
        .control
        .patch_recording(path.clone(), id.clone(), on)
        .await?;
    let (p, rid, origin) = (path.to_string(), id.clone(), before.origin);
    let kept = state
        .db
        .run(move |db| match origin {
            Origin::File => db.set_override("recording", &p, &rid, on, now()),
            _ => db.set_recording_enabled(&p, &rid, on).map(|_| ()),
        })
        .await;
    if let Err(e) = kept {
        // Not kept: not applied either.
        let _ = state
            .control
            .patch_recording(path.clone(), id.clone(), before.enabled)
            .await;
        return Err(e.into());
    }
    audit(&state, &caller, "recording.update", format!("{path}:{id}")).await;
    info!(stream = %path, recording = %id, enabled = on, by = %caller.actor, "API: recording {}", if on { "enabled" } else { "disabled" });
    let view = recording_view(&state, &path, &id).await?;
    Ok(Json(recording(&view)))
}

/// The recording `id` of `path` as the control plane shows it now; 404 if there is
/// no such stream or recording.
async fn recording_view(
    state: &ApiState,
    path: &StreamPath,
    id: &str,
) -> Result<RecordingView, ApiError> {
    let stream = state.control.stream(path.clone()).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("stream {path} not found"),
        )
    })?;
    stream
        .recordings
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("recording {id} of {path} not found"),
            )
        })
}

/// `GET /api/v1/recordings` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct SegmentQuery {
    /// Only this stream's segments (`app/name`).
    stream: Option<String>,
    /// Only segments older than this id (the `next_before` of the page before).
    before: Option<i64>,
    /// Segments per page (default 100, at most 1000).
    limit: Option<u32>,
}

/// A finished segment.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SegmentView {
    /// Increasing id.
    id: i64,
    /// The stream, `app/name`.
    stream: String,
    /// The recording's id within the stream.
    recording: String,
    /// Object (file or key) name in the storage.
    object: String,
    /// Size in bytes.
    bytes: i64,
    /// Media time covered, in seconds.
    duration_seconds: f64,
    /// When it was finished (Unix seconds).
    finished_at: i64,
}

/// A page of segments.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SegmentPage {
    /// Newest first.
    segments: Vec<SegmentView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<i64>,
}

/// The finished segments of every recording, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/recordings",
    tag = "recordings",
    params(SegmentQuery),
    responses(
        (status = 200, description = "A page of segments", body = SegmentPage),
        (status = 422, description = "A bad query, stream or limit (`invalid`, with `field`)", body = ErrorBody),
    )
)]
async fn list_segments(
    State(state): State<Arc<ApiState>>,
    _caller: Caller,
    query: Result<Query<SegmentQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SegmentPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    if let Some(s) = &q.stream {
        StreamPath::new(s).map_err(|e| ApiError::invalid("stream", e.to_string()))?;
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("1 to {MAX_PAGE}")));
    }
    let stream = q.stream.clone();
    let rows: Vec<Segment> = state
        .db
        .run(move |db| db.segments(stream.as_deref(), q.before, limit))
        .await?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|s| s.id))
        .flatten();
    Ok(Json(SegmentPage {
        segments: rows
            .into_iter()
            .map(|s| SegmentView {
                id: s.id,
                stream: s.stream_path,
                recording: s.recording,
                object: s.object,
                bytes: s.bytes,
                duration_seconds: s.duration_ms as f64 / 1000.0,
                finished_at: s.finished_at,
            })
            .collect(),
        next_before,
    }))
}

/// What a stream's view shows of one recording.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Recording {
    /// Unique within the stream.
    id: String,
    /// `file`, `api` or `plugin`.
    origin: &'static str,
    /// The storage's name.
    storage: String,
    /// The container.
    format: String,
    /// Segment length in seconds, if cut by time.
    #[serde(skip_serializing_if = "Option::is_none")]
    segment_seconds: Option<u64>,
    /// Whether it is enabled.
    enabled: bool,
    /// `waiting` (for the stream), `live` (recording), `retrying`, `stopped` (also
    /// while disabled); absent when it could not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    /// Why the last attempt failed, or why it could not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// Since when it records (Unix seconds, while `live`).
    #[serde(skip_serializing_if = "Option::is_none")]
    live_since: Option<u64>,
    /// The object of the open segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    current_object: Option<String>,
    /// Bytes handed to the storage.
    bytes: u64,
    /// Segments finished.
    segments: u64,
    /// Multipart parts uploaded (object storage).
    parts_uploaded: u64,
    /// Times media was left out.
    gaps: u64,
    /// Segments that failed.
    failures: u64,
}

/// The view of one recording.
pub(super) fn recording(v: &RecordingView) -> Recording {
    let stats = v.stats.clone().unwrap_or_default();
    Recording {
        id: v.id.clone(),
        origin: v.origin.as_str(),
        storage: v.storage.clone(),
        format: v.container.to_string(),
        segment_seconds: v.segment_duration.map(|d| d.as_secs()),
        enabled: v.enabled,
        state: if v.enabled {
            v.status.as_ref().map(|s| state_name(&s.state))
        } else {
            Some("stopped")
        },
        last_error: v
            .start_error
            .clone()
            .or_else(|| v.status.as_ref().and_then(|s| s.last_error.clone())),
        live_since: v.status.as_ref().and_then(|s| match s.state {
            DestinationState::Live { since } => Some(unix_secs(since)),
            _ => None,
        }),
        current_object: v.current_object.clone(),
        bytes: stats.bytes_written,
        segments: stats.segments_finished,
        parts_uploaded: stats.parts_uploaded,
        gaps: stats.gaps,
        failures: stats.failures,
    }
}
