//! `POST /api/v1/probe` `{"url", "timeout_secs"?}`: connects to an RTMP or RTMPS
//! destination, asks to publish and reports the answer, sending no media (what
//! `cthulhu-server probe URL` does), so an operator can check a key before going
//! live.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, Body, Caller};

/// Longest wait a caller may ask for, per step.
const MAX_TIMEOUT_SECS: u64 = 30;

/// The route.
pub(super) fn routes() -> axum::Router<Arc<ApiState>> {
    axum::Router::new().route("/probe", post(probe))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeBody {
    url: String,
    timeout_secs: Option<u64>,
}

async fn probe(
    State(_state): State<Arc<ApiState>>,
    _caller: Caller,
    Body(body): Body<ProbeBody>,
) -> Result<Json<Value>, ApiError> {
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
    let answer = match result {
        Ok(info) => json!({
            "url": url.redacted(),
            "reachable": true,
            "accepted": true,
            "ms": ms,
            "tcp_ms": info.tcp_ms,
            "handshake_ms": info.handshake_ms,
            "connect_ms": info.connect_ms,
            "publish_ms": info.publish_ms,
            "server_version": info.server_version,
        }),
        Err(cthulhu_rtmp::RtmpError::Refused(why)) => json!({
            "url": url.redacted(),
            "reachable": true,
            "accepted": false,
            "refusal": why,
            "ms": ms,
        }),
        Err(e) => json!({
            "url": url.redacted(),
            "reachable": false,
            "accepted": false,
            "error": e.to_string(),
            "ms": ms,
        }),
    };
    Ok(Json(answer))
}
