//! The API's JSON shapes (the core stays free of serde). Nothing here carries a key:
//! destination URLs are the redacted ones.

use cthulhu_core::hub::StreamSnapshot;
use cthulhu_core::supervisor::DestinationState;
use serde_json::{Value, json};

use crate::control::{DestinationView, StreamView, state_name, unix_secs};

/// One stream: the desired state and, if it was ever published, live figures.
pub(super) fn stream(view: &StreamView, live: Option<&StreamSnapshot>) -> Value {
    let tracks: Vec<Value> = live
        .and_then(|s| s.info.as_ref())
        .map(|info| {
            info.tracks
                .iter()
                .map(|t| {
                    json!({
                        "id": t.id.0,
                        "codec": format!("{:?}", t.codec.id()),
                        "width": t.details.width,
                        "height": t.details.height,
                        "sample_rate": t.details.sample_rate,
                        "channels": t.details.channels,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let players = live.map_or(0, |s| {
        s.subscribers
            .iter()
            .filter(|sub| !sub.label.starts_with("push:") && !sub.label.starts_with("record"))
            .count()
    });
    json!({
        "path": view.path.as_str(),
        "origin": view.origin.as_str(),
        "live": live.is_some_and(|s| s.live),
        "live_since": live.and_then(|s| s.live_since).map(unix_secs),
        "bytes_in": live.map_or(0, |s| s.bytes_in),
        "frames_in": live.map_or(0, |s| s.frames_in),
        "tracks": tracks,
        "subscribers": live.map_or(0, |s| s.subscribers.len()),
        "players": players,
        "destinations": view.destinations.iter().map(destination).collect::<Vec<_>>(),
    })
}

/// One destination with its supervisor's state.
pub(super) fn destination(d: &DestinationView) -> Value {
    let (state, attempt, last_error, next_retry_at, since) = match d.status.as_ref() {
        None => ("stopped", None, None, None, None),
        Some(s) => {
            let (attempt, next, since) = match &s.state {
                DestinationState::Connecting { attempt } => (Some(*attempt), None, None),
                DestinationState::Retrying {
                    attempt,
                    next_attempt_at,
                    ..
                } => (Some(*attempt), Some(unix_secs(*next_attempt_at)), None),
                DestinationState::Live { since } => (None, None, Some(unix_secs(*since))),
                _ => (None, None, None),
            };
            (
                state_name(&s.state),
                attempt,
                s.last_error.clone(),
                next,
                since,
            )
        }
    };
    json!({
        "name": d.name,
        "url": d.url_redacted,
        "origin": d.origin.as_str(),
        "enabled": d.enabled,
        "state": state,
        "attempt": attempt,
        "last_error": last_error,
        "next_retry_at": next_retry_at,
        "live_since": since,
        "connects": d.status.as_ref().map_or(0, |s| s.connects),
        "failures": d.status.as_ref().map_or(0, |s| s.failures),
    })
}

/// A destination's status change, as the event stream sends it.
pub(super) fn status_event(
    path: &cthulhu_core::StreamPath,
    name: &str,
    s: &cthulhu_core::supervisor::DestinationStatus,
) -> Value {
    let (attempt, next_retry_at, since) = match &s.state {
        DestinationState::Connecting { attempt } => (Some(*attempt), None, None),
        DestinationState::Retrying {
            attempt,
            next_attempt_at,
            ..
        } => (Some(*attempt), Some(unix_secs(*next_attempt_at)), None),
        DestinationState::Live { since } => (None, None, Some(unix_secs(*since))),
        _ => (None, None, None),
    };
    json!({
        "stream": path.as_str(),
        "name": name,
        "url": s.url_redacted,
        "state": state_name(&s.state),
        "attempt": attempt,
        "last_error": s.last_error,
        "next_retry_at": next_retry_at,
        "live_since": since,
        "connects": s.connects,
        "failures": s.failures,
    })
}
