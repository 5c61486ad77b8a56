//! The HTTP API (`/api/v1`), JSON over axum, on `[http] listen` (the loopback by
//! default).
//!
//! Every endpoint but `POST /api/v1/login` needs a caller: `Authorization: Bearer
//! TOKEN` with an API token (`cthulhu-server token create --name NAME`), stored
//! hashed, or the session cookie of a browser login (password + TOTP, see
//! [`session`]), whose changes also need the `X-CSRF-Token` header. Anonymous calls
//! get 401. Errors are `{"error": {"code", "message", "field"?}}`. Secrets are
//! write-only: stream keys and destination URLs with their keys are never returned
//! (destinations show the redacted URL), and a token is shown once, at creation.
//!
//! Changes go through the [`Control`] handle, so the running destinations change
//! at once and the others are not touched; destinations created here are kept in the
//! store and come back at the next start, and enabling or disabling a destination
//! or a recording the config file declares is kept as an override.

mod dto;
mod events;
mod openapi;
mod probe;
mod recordings;
mod session;
mod streams;
pub(crate) mod tls;
mod users;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use cthulhu_core::{Hub, StreamPath};
use serde::Deserialize;
use tracing::{info, warn};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth;
use crate::config::{Config, PushUrl};
use crate::control::{ChangeCount, Control, ControlError, DestinationPatch, Origin, PushSpec};
use crate::db::{Db, DbError, NewAudit, unix_now as now};
use dto::{DestinationParams, ErrorBody, StreamParams, TokenParams};

/// Request bodies are small JSON documents.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Destination names: what logs, metrics labels and URLs can carry as they are.
const MAX_NAME_LEN: usize = 64;

/// What the handlers share.
pub(crate) struct ApiState {
    /// The control plane.
    pub(crate) control: Control,
    /// The store.
    pub(crate) db: Db,
    /// The hub, for live figures.
    pub(crate) hub: Hub,
    /// The config file, for reloads (None on the embedded default).
    pub(crate) config_path: Option<PathBuf>,
    /// Failed logins per IP and per username.
    pub(crate) limiter: auth::limit::LoginLimiter,
    /// Whether the session cookie is `Secure` (the API is served over TLS).
    pub(crate) secure_cookies: bool,
    /// Incoming bitrates.
    pub(crate) rates: crate::rates::Rates,
    /// The last stream list, while nothing it shows has changed.
    pub(crate) streams_cache: StreamsCache,
}

/// The JSON of the last stream list and the change counts it was built at
/// ([`crate::control::Control::changes`]). Building the list of 1,000 streams of 10
/// destinations costs tens of milliseconds; a console, its event stream and scripts
/// asking again share one build:
/// - after a change of desired state or of a status, the next request builds (so a
///   change made through the API shows in the next answer);
/// - when only the once-a-second sample of the counters moved, the request gets the
///   last list at once and the next one is built aside (the counters shown are then
///   at most a sample and a build late).
#[derive(Default)]
pub(crate) struct StreamsCache {
    last: std::sync::Mutex<Option<(ChangeCount, axum::body::Bytes)>>,
    /// Held while building: one build at a time.
    build: tokio::sync::Mutex<()>,
    /// A build aside is under way.
    refreshing: std::sync::atomic::AtomicBool,
}

impl StreamsCache {
    fn last(&self) -> Option<(ChangeCount, axum::body::Bytes)> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The API's routes, and the OpenAPI document describing them
/// (`GET /api/v1/openapi.json`, see [`openapi`]).
pub(crate) fn router(state: Arc<ApiState>) -> Router {
    let (router, mut doc) = routes()
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
        .split_for_parts();
    openapi::finish(&mut doc);
    router.layer(Extension(Arc::new(doc)))
}

/// Every route with its description: each is registered with utoipa-axum's
/// `routes!`, which takes the path and methods from the handler's `#[utoipa::path]`,
/// so the router and the document cannot disagree.
fn routes() -> OpenApiRouter<Arc<ApiState>> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(session::login))
        .routes(routes!(session::logout))
        .routes(routes!(session::me))
        .routes(routes!(session::change_password))
        .routes(routes!(events::events))
        .routes(routes!(list_streams))
        .routes(routes!(get_stream))
        .routes(routes!(add_destination))
        .routes(routes!(patch_destination, delete_destination))
        .routes(routes!(retry_destination))
        .routes(routes!(reload))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(openapi::openapi_json))
        .merge(users::routes())
        .merge(streams::routes())
        .merge(probe::routes())
        .merge(recordings::routes())
        .fallback(not_found);
    OpenApiRouter::with_openapi(openapi::base())
        .nest("/api/v1", v1)
        .fallback(not_found)
}

/// Serves the API on `listener` until `shutdown` resolves; over TLS only if `tls` is
/// given (see [`tls`]). `extra` holds routes outside `/api/v1` on the same listener
/// (`/metrics`).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    extra: Router,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = extra.merge(router(state));
    if let Some(config) = tls {
        return tls::serve(listener, config, app, shutdown).await;
    }
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// An error answer: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "authentication required: log in, or send Authorization: Bearer TOKEN",
        )
    }

    fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        warn!(error = %e, "API: {what} failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what} failed (see the server log)"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: dto::ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            ControlError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            ControlError::Invalid { field, message } => Self::invalid(&field, message),
            ControlError::Closed => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            DbError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, "not_found", m),
            other => Self::internal("the store", other),
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// A JSON body whose rejections answer in the API's error format.
struct Body<T>(T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    Json<T>: axum::extract::FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                e.body_text(),
            )),
            Err(e) => Err(ApiError::new(e.status(), "bad_request", e.body_text())),
        }
    }
}

/// Who is calling: only authenticated callers reach a handler.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// As the audit log names it (`token:NAME`, or the username of a session).
    actor: String,
    /// How the caller authenticated.
    via: Via,
}

/// How a [`Caller`] authenticated.
#[derive(Clone)]
enum Via {
    /// An API token.
    Token {
        /// The token's name.
        name: String,
        /// The user it acts for, if any.
        username: Option<String>,
    },
    /// A browser session.
    Session {
        /// SHA-256 of the cookie value.
        id_hash: [u8; 32],
    },
}

impl std::fmt::Debug for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token { name, .. } => write!(f, "Token({name})"),
            Self::Session { .. } => f.write_str("Session(***)"),
        }
    }
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256);
        let Some(token) = bearer else {
            // No bearer token: the session cookie, if any.
            return match session::from_cookie(parts, state).await? {
                Some(s) => Ok(Caller {
                    actor: s.username,
                    via: Via::Session { id_hash: s.id_hash },
                }),
                None => Err(ApiError::unauthorized()),
            };
        };
        let hash = auth::token::hash_token(token);
        let found = state
            .db
            .run(move |db| {
                let Some(t) = db.token_by_hash(&hash)? else {
                    return Ok(None);
                };
                db.touch_token(t.id, now())?;
                let username = match t.user_id {
                    Some(id) => db.user_by_id(id)?.map(|u| u.username),
                    None => None,
                };
                Ok(Some((t, username)))
            })
            .await?;
        match found {
            Some((t, username)) => Ok(Caller {
                actor: format!("token:{}", t.name),
                via: Via::Token {
                    name: t.name,
                    username,
                },
            }),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown or revoked token",
            )),
        }
    }
}

fn stream_path(app: &str, name: &str) -> Result<StreamPath, ApiError> {
    StreamPath::new(&format!("{app}/{name}")).map_err(|e| ApiError::invalid("path", e.to_string()))
}

async fn audit(state: &ApiState, caller: &Caller, action: &'static str, target: String) {
    let actor = caller.actor.clone();
    let written = state
        .db
        .run(move |db| {
            db.audit(&NewAudit {
                at: now(),
                actor: &actor,
                action,
                target: Some(&target),
                ..NewAudit::default()
            })
        })
        .await;
    if let Err(e) = written {
        warn!(error = %e, "Audit entry not written");
    }
}

/// Every stream with its live figures and destinations.
#[utoipa::path(
    get,
    path = "/streams",
    tag = "streams",
    responses((status = 200, description = "Every stream", body = dto::StreamList))
)]
async fn list_streams(State(state): State<Arc<ApiState>>, _caller: Caller) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        all_streams_json(&state).await,
    )
        .into_response()
}

/// [`all_streams`] as JSON, from the cache (see [`StreamsCache`]).
pub(super) async fn all_streams_json(state: &Arc<ApiState>) -> axum::body::Bytes {
    let now = state.control.changes().get();
    let cache = &state.streams_cache;
    if let Some((at, body)) = cache.last() {
        if at == now {
            return body;
        }
        if at.state == now.state {
            if !cache
                .refreshing
                .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                let state = state.clone();
                tokio::spawn(async move {
                    build_streams_json(&state).await;
                    state
                        .streams_cache
                        .refreshing
                        .store(false, std::sync::atomic::Ordering::Release);
                });
            }
            return body;
        }
    }
    build_streams_json(state).await
}

/// Builds the stream list's JSON and keeps it (unless another build, waited for,
/// is already current).
async fn build_streams_json(state: &ApiState) -> axum::body::Bytes {
    let cache = &state.streams_cache;
    let _building = cache.build.lock().await;
    // Read before building: a change during the build makes the next request build.
    let at = state.control.changes().get();
    if let Some((built_at, body)) = cache.last()
        && built_at == at
    {
        return body;
    }
    let list = all_streams(state).await;
    let body = match serde_json::to_vec(&list) {
        Ok(json) => axum::body::Bytes::from(json),
        // Derived structs of strings, numbers and string-keyed maps: not expected.
        Err(e) => {
            tracing::error!(error = %e, "Stream list not serialized");
            return axum::body::Bytes::from_static(b"{\"streams\":[]}");
        }
    };
    *cache
        .last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((at, body.clone()));
    body
}

/// `{"streams": [...]}`: every stream with its live figures and destinations (the
/// answer of `GET /api/v1/streams` and the event stream's snapshot).
async fn all_streams(state: &ApiState) -> dto::StreamList {
    let views = state.control.snapshot().await;
    let live: std::collections::HashMap<StreamPath, cthulhu_core::hub::StreamSnapshot> = state
        .hub
        .snapshot()
        .into_iter()
        .map(|s| (s.path.clone(), s))
        .collect();
    let streams: Vec<_> = views
        .iter()
        .map(|v| dto::stream(v, live.get(&v.path), state.rates.get(&v.path)))
        .collect();
    dto::StreamList { streams }
}

/// The destination `name` of `path` as the control plane shows it now.
async fn destination_view(
    state: &ApiState,
    path: &StreamPath,
    name: &str,
) -> Option<crate::control::DestinationView> {
    state
        .control
        .stream(path.clone())
        .await
        .and_then(|v| v.destinations.into_iter().find(|d| d.name == name))
}

/// One stream with its live figures and destinations.
#[utoipa::path(
    get,
    path = "/streams/{app}/{name}",
    tag = "streams",
    params(StreamParams),
    responses(
        (status = 200, description = "The stream", body = dto::Stream),
        (status = 404, description = "No such stream (`not_found`)", body = ErrorBody),
        (status = 422, description = "Not a stream path (`invalid`, field `path`)", body = ErrorBody),
    )
)]
async fn get_stream(
    State(state): State<Arc<ApiState>>,
    _caller: Caller,
    Path(StreamParams { app, name }): Path<StreamParams>,
) -> Result<Json<dto::Stream>, ApiError> {
    let path = stream_path(&app, &name)?;
    let view = state.control.stream(path.clone()).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("stream {path} not found"),
        )
    })?;
    let live = state.hub.stream_snapshot(&path);
    Ok(Json(dto::stream(
        &view,
        live.as_ref(),
        state.rates.get(&path),
    )))
}

/// A new destination.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewDestination {
    /// 1 to 64 letters, digits, `-`, `_` or `.`, unique within the stream.
    #[schema(example = "youtube")]
    name: String,
    /// `rtmp://`, `rtmps://` or `srt://` URL with its key (never shown again).
    #[schema(example = "rtmps://a.rtmps.youtube.com/live2/KEY")]
    url: String,
    /// Whether it starts at once (default true).
    enabled: Option<bool>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(ApiError::invalid(
            "name",
            format!("1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(())
}

fn parse_url(raw: &str) -> Result<PushUrl, ApiError> {
    // The error names the problem, never the key.
    PushUrl::parse(raw).map_err(|e| ApiError::invalid("url", e.to_string()))
}

/// Adds a destination to a stream; it starts at once (unless disabled) and is kept
/// in the store.
#[utoipa::path(
    post,
    path = "/streams/{app}/{name}/destinations",
    tag = "destinations",
    params(StreamParams),
    request_body = NewDestination,
    responses(
        (status = 201, description = "Added (the URL redacted)", body = dto::Destination),
        (status = 404, description = "No such stream (`not_found`)", body = ErrorBody),
        (status = 409, description = "The stream has a destination of that name (`conflict`)", body = ErrorBody),
        (status = 422, description = "A bad name, URL or body (`invalid`, with `field`)", body = ErrorBody),
    )
)]
async fn add_destination(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(StreamParams { app, name }): Path<StreamParams>,
    Body(body): Body<NewDestination>,
) -> Result<Response, ApiError> {
    let path = stream_path(&app, &name)?;
    check_name(&body.name)?;
    let url = parse_url(&body.url)?;
    let enabled = body.enabled.unwrap_or(true);
    let spec = PushSpec {
        name: body.name.clone(),
        url: url.clone(),
        tls_ca_file: None,
        enabled,
    };
    let applied = state.control.add_destination(path.clone(), spec).await?;
    let (p, n, u) = (path.to_string(), body.name.clone(), url.as_str().to_owned());
    if let Err(e) = state
        .db
        .run(move |db| db.create_destination(&p, &n, &u, enabled, now()))
        .await
    {
        // Not kept: not running either.
        let _ = state
            .control
            .remove_destination(path.clone(), body.name.clone())
            .await;
        return Err(e.into());
    }
    audit(
        &state,
        &caller,
        "destination.create",
        format!("{path}:{}", body.name),
    )
    .await;
    info!(stream = %path, dest = %body.name, by = %caller.actor, started = applied.started.len(), "API: destination added");
    let view = destination_view(&state, &path, &body.name).await;
    let dest = view.map(|d| dto::destination(&d));
    Ok((StatusCode::CREATED, Json(dest)).into_response())
}

/// A change of a destination: what is given changes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    /// Enables or disables it (kept as an override for the config file's entries).
    enabled: Option<bool>,
    /// A new URL with its key (not for the config file's entries: 409).
    url: Option<String>,
}

async fn origin_of(state: &ApiState, path: &StreamPath, dest: &str) -> Result<Origin, ApiError> {
    destination_view(state, path, dest)
        .await
        .map(|d| d.origin)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("destination {dest} of {path} not found"),
            )
        })
}

/// Enables, disables or re-targets a destination, live; the others are not touched.
#[utoipa::path(
    patch,
    path = "/streams/{app}/{name}/destinations/{dest}",
    tag = "destinations",
    params(DestinationParams),
    request_body = PatchBody,
    responses(
        (status = 200, description = "Changed (the URL redacted)", body = dto::Destination),
        (status = 404, description = "No such stream or destination (`not_found`)", body = ErrorBody),
        (status = 409, description = "A change other than enabling of a config file entry (`conflict`)", body = ErrorBody),
        (status = 422, description = "A bad URL or body (`invalid`, with `field`)", body = ErrorBody),
    )
)]
async fn patch_destination(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(DestinationParams { app, name, dest }): Path<DestinationParams>,
    Body(body): Body<PatchBody>,
) -> Result<Json<Option<dto::Destination>>, ApiError> {
    let path = stream_path(&app, &name)?;
    let url = body.url.as_deref().map(parse_url).transpose()?;
    let origin = origin_of(&state, &path, &dest).await?;
    let patch = DestinationPatch {
        enabled: body.enabled,
        url: url.clone(),
    };
    state
        .control
        .patch_destination(path.clone(), dest.clone(), patch)
        .await?;
    let (p, n) = (path.to_string(), dest.clone());
    let enabled = body.enabled;
    let u = url.map(|u| u.as_str().to_owned());
    state
        .db
        .run(move |db| {
            match origin {
                Origin::File => {
                    if let Some(on) = enabled {
                        db.set_override("destination", &p, &n, on, now())?;
                    }
                }
                _ => {
                    db.update_destination(&p, &n, u.as_deref(), enabled, now())?;
                }
            }
            Ok(())
        })
        .await?;
    audit(
        &state,
        &caller,
        "destination.update",
        format!("{path}:{dest}"),
    )
    .await;
    let view = destination_view(&state, &path, &dest).await;
    Ok(Json(view.map(|d| dto::destination(&d))))
}

/// Stops and deletes a destination made through the API.
#[utoipa::path(
    delete,
    path = "/streams/{app}/{name}/destinations/{dest}",
    tag = "destinations",
    params(DestinationParams),
    responses(
        (status = 204, description = "Stopped and deleted"),
        (status = 404, description = "No such stream or destination (`not_found`)", body = ErrorBody),
        (status = 409, description = "A config file or plugin entry, which only the file or plugin removes (`conflict`)", body = ErrorBody),
        (status = 422, description = "Not a stream path (`invalid`, field `path`)", body = ErrorBody),
    )
)]
async fn delete_destination(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(DestinationParams { app, name, dest }): Path<DestinationParams>,
) -> Result<StatusCode, ApiError> {
    let path = stream_path(&app, &name)?;
    state
        .control
        .remove_destination(path.clone(), dest.clone())
        .await?;
    let (p, n) = (path.to_string(), dest.clone());
    state
        .db
        .run(move |db| db.delete_destination(&p, &n))
        .await?;
    audit(
        &state,
        &caller,
        "destination.delete",
        format!("{path}:{dest}"),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends a destination's backoff wait: it reconnects now.
#[utoipa::path(
    post,
    path = "/streams/{app}/{name}/destinations/{dest}/retry",
    tag = "destinations",
    params(DestinationParams),
    responses(
        (status = 200, description = "Whether it was waiting and retries now", body = dto::Retried),
        (status = 404, description = "No such stream or destination (`not_found`)", body = ErrorBody),
        (status = 422, description = "Not a stream path (`invalid`, field `path`)", body = ErrorBody),
    )
)]
async fn retry_destination(
    State(state): State<Arc<ApiState>>,
    _caller: Caller,
    Path(DestinationParams { app, name, dest }): Path<DestinationParams>,
) -> Result<Json<dto::Retried>, ApiError> {
    let path = stream_path(&app, &name)?;
    let retried = state.control.retry(path, dest).await?;
    Ok(Json(dto::Retried { retried }))
}

/// Reads the config file again and applies what changed (as `SIGHUP` does).
#[utoipa::path(
    post,
    path = "/reload",
    tag = "server",
    responses(
        (status = 200, description = "Applied", body = dto::Reloaded),
        (status = 409, description = "The server runs without a config file (`no_config_file`)", body = ErrorBody),
        (status = 422, description = "The file is invalid: the running configuration is kept (`config_invalid`)", body = ErrorBody),
    )
)]
async fn reload(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<dto::Reloaded>, ApiError> {
    let Some(path) = state.config_path.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_config_file",
            "the server runs without a config file: nothing to reload",
        ));
    };
    let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
        .await
        .map_err(|e| ApiError::internal("reading the config file", e))?;
    let cfg = match loaded {
        Ok(cfg) => cfg,
        Err(e) => {
            warn!(error = %e, "Config reload failed: keeping the running configuration");
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "config_invalid",
                format!("{e} (the running configuration is kept)"),
            ));
        }
    };
    let applied = state
        .control
        .apply_file(cfg.streams)
        .await
        .ok_or_else(|| ApiError::from(ControlError::Closed))?;
    info!(by = %caller.actor, %applied, "Config reloaded");
    audit(&state, &caller, "config.reload", String::new()).await;
    Ok(Json(dto::Reloaded {
        started: applied.started,
        stopped: applied.stopped,
        restarted: applied.restarted,
        unchanged: applied.kept,
    }))
}

/// Every API token (never the tokens themselves).
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    responses((status = 200, description = "The tokens", body = dto::TokenList))
)]
async fn list_tokens(
    State(state): State<Arc<ApiState>>,
    _caller: Caller,
) -> Result<Json<dto::TokenList>, ApiError> {
    let tokens = state.db.run(|db| db.list_tokens()).await?;
    let tokens = tokens
        .into_iter()
        .map(|t| dto::TokenView {
            id: t.id.0,
            name: t.name,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            revoked: t.revoked,
        })
        .collect();
    Ok(Json(dto::TokenList { tokens }))
}

/// A new API token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// 1 to 64 letters, digits, `-`, `_` or `.`, unique.
    #[schema(example = "ci")]
    name: String,
}

/// Creates an API token; the answer is the only time it is shown.
#[utoipa::path(
    post,
    path = "/tokens",
    tag = "tokens",
    request_body = NewToken,
    responses(
        (status = 201, description = "Created (the token shown once)", body = dto::CreatedToken),
        (status = 409, description = "A token of that name exists (`conflict`)", body = ErrorBody),
        (status = 422, description = "A bad name or body (`invalid`)", body = ErrorBody),
    )
)]
async fn create_token(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<NewToken>,
) -> Result<Response, ApiError> {
    check_name(&body.name)?;
    let (id, token) = issue_token(&state.db, body.name.clone()).await?;
    audit(
        &state,
        &caller,
        "token.create",
        format!("token:{}", body.name),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(dto::CreatedToken {
            id,
            name: body.name,
            token,
        }),
    )
        .into_response())
}

/// Creates an API token named `name`; returns its id and the token (shown once).
pub(crate) async fn issue_token(db: &Db, name: String) -> Result<(i64, String), DbError> {
    let token = auth::token::new_token(auth::token::API_TOKEN_PREFIX);
    let hash = auth::token::hash_token(&token);
    let id = db
        .run(move |db| db.create_token(&name, &hash, None, now()))
        .await?;
    Ok((id.0, token))
}

/// Revokes an API token: it is refused from now on.
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = "tokens",
    params(TokenParams),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token (`not_found`)", body = ErrorBody),
    )
)]
async fn revoke_token(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(TokenParams { id }): Path<TokenParams>,
) -> Result<StatusCode, ApiError> {
    let revoked = state
        .db
        .run(move |db| db.revoke_token(crate::db::TokenId(id)))
        .await?;
    if !revoked {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("token {id} not found"),
        ));
    }
    audit(&state, &caller, "token.revoke", format!("token #{id}")).await;
    Ok(StatusCode::NO_CONTENT)
}
