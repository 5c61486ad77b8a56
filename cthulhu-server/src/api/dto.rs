//! The API's JSON shapes (the core stays free of serde). Nothing here carries a key:
//! destination URLs are the redacted ones.

use cthulhu_core::hub::StreamSnapshot;
use cthulhu_core::supervisor::{DestinationState, DestinationStatus};
use serde_json::{Map, Value, json};

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
    let mut v = status_fields(d.status.as_ref());
    v.insert("name".into(), json!(d.name));
    v.insert("url".into(), json!(d.url_redacted));
    v.insert("origin".into(), json!(d.origin.as_str()));
    v.insert("enabled".into(), json!(d.enabled));
    Value::Object(v)
}

/// A destination's status change, as the event stream sends it.
pub(super) fn status_event(
    path: &cthulhu_core::StreamPath,
    name: &str,
    s: &DestinationStatus,
) -> Value {
    let mut v = status_fields(Some(s));
    v.insert("stream".into(), json!(path.as_str()));
    v.insert("name".into(), json!(name));
    v.insert("url".into(), json!(s.url_redacted));
    Value::Object(v)
}

/// What both shapes tell of a supervisor's status (None: not running, `stopped`):
/// state, attempt, last error, next retry and live-since times, connects, failures.
fn status_fields(s: Option<&DestinationStatus>) -> Map<String, Value> {
    let (attempt, next_retry_at, since) = match s.map(|s| &s.state) {
        Some(DestinationState::Connecting { attempt }) => (Some(*attempt), None, None),
        Some(DestinationState::Retrying {
            attempt,
            next_attempt_at,
            ..
        }) => (Some(*attempt), Some(unix_secs(*next_attempt_at)), None),
        Some(DestinationState::Live { since }) => (None, None, Some(unix_secs(*since))),
        _ => (None, None, None),
    };
    let fields = json!({
        "state": s.map_or("stopped", |s| state_name(&s.state)),
        "attempt": attempt,
        "last_error": s.and_then(|s| s.last_error.clone()),
        "next_retry_at": next_retry_at,
        "live_since": since,
        "connects": s.map_or(0, |s| s.connects),
        "failures": s.map_or(0, |s| s.failures),
    });
    match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
