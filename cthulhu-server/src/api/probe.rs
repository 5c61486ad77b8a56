//! `POST /api/v1/probe` `{"url", "timeout_secs"?}`: connects to an RTMP or RTMPS
//! destination, asks to publish and reports the answer, sending no media (what
//! `cthulhu-server probe URL` does), so an operator can check a key before going
//! live.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::{ErrorBody, ProbeAnswer};
use super::{ApiError, ApiState, Body, Caller};

/// Longest wait a caller may ask for, per step.
const MAX_TIMEOUT_SECS: u64 = 30;

/// The route.
pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new().routes(routes!(probe))
}

/// What to probe.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ProbeBody {
    /// An `rtmp://` or `rtmps://` URL with its key (never echoed).
    #[schema(example = "rtmp://a.rtmp.youtube.com/live2/KEY")]
    url: String,
    /// The longest wait per step, 1 to 30 seconds (default 10).
    timeout_secs: Option<u64>,
}

/// Connects to an RTMP or RTMPS destination, asks to publish and reports the answer,
/// sending no media.
#[utoipa::path(
    post,
    path = "/probe",
    tag = "server",
    request_body = ProbeBody,
    responses(
        (status = 200, description = "What the destination answered (also when it refused or was unreachable)", body = ProbeAnswer),
        (status = 422, description = "Not an RTMP URL, or a bad timeout (`invalid`, with `field`)", body = ErrorBody),
    )
)]
async fn probe(
    State(_state): State<Arc<ApiState>>,
    _caller: Caller,
    Body(body): Body<ProbeBody>,
) -> Result<Json<ProbeAnswer>, ApiError> {
    let url = cthulhu_rtmp::RtmpUrl::parse(&body.url).map_err(|e| {
        ApiError::invalid(
            "url",
            format!("{e} (probe takes rtmp:// and rtmps:// URLs)"),
        )
    })?;
    let secs = body.timeout_secs.unwrap_or(10);
    if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
        return Err(ApiError::invalid(
            "timeout_secs",
            format!("1 to {MAX_TIMEOUT_SECS}"),
        ));
    }
    let cfg = cthulhu_rtmp::ClientConfig {
        connect_timeout: Duration::from_secs(secs),
        response_timeout: Duration::from_secs(secs),
        ..cthulhu_rtmp::ClientConfig::default()
    };
    let started = Instant::now();
    let result = cthulhu_rtmp::probe(&url, &cfg).await;
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let base = ProbeAnswer {
        url: url.redacted(),
        ms,
        ..ProbeAnswer::default()
    };
    let answer = match result {
        Ok(info) => ProbeAnswer {
            reachable: true,
            accepted: true,
            tcp_ms: Some(info.tcp_ms),
            handshake_ms: Some(info.handshake_ms),
            connect_ms: Some(info.connect_ms),
            publish_ms: Some(info.publish_ms),
            server_version: info.server_version,
            ..base
        },
        Err(cthulhu_rtmp::RtmpError::Refused(why)) => ProbeAnswer {
            reachable: true,
            refusal: Some(why),
            ..base
        },
        Err(e) => ProbeAnswer {
            error: Some(e.to_string()),
            ..base
        },
    };
    Ok(Json(answer))
}
