//! `GET /api/v1/events`: Server-Sent Events for every destination state change, so
//! a console needs no polling.
//!
//! The stream opens with a `snapshot` event (every stream with its destinations, as
//! `GET /api/v1/streams` shows them); then one `destination` event per state change.
//! A reader too slow for the buffer gets a fresh `snapshot` instead of the changes
//! it missed: nothing is lost silently.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiState, Caller, all_streams_json, dto};

/// The event stream (Server-Sent Events): a `snapshot` event first, then one
/// `destination` event per state change; a reader too slow for the buffer gets a
/// fresh `snapshot` instead of the changes it missed.
#[utoipa::path(
    get,
    path = "/events",
    tag = "server",
    responses(
        (status = 200, description = "`text/event-stream`: `snapshot` events carry a \
            `StreamList` (as `GET /api/v1/streams`), `destination` events a `StatusEvent`",
            content_type = "text/event-stream", body = String),
    )
)]
pub(super) async fn events(
    State(state): State<Arc<ApiState>>,
    _caller: Caller,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribed before the snapshot: no change falls between the two.
    let rx = state.control.events();
    let first = snapshot(&state).await;
    let stream = futures_util::stream::unfold(
        (state, rx, Some(first)),
        |(state, mut rx, pending)| async move {
            if let Some(ev) = pending {
                return Some((Ok(ev), (state, rx, None)));
            }
            let ev = match rx.recv().await {
                Ok(ev) => Event::default()
                    .event("destination")
                    .json_data(dto::status_event(&ev.path, &ev.name, &ev.status))
                    .unwrap_or_default(),
                Err(RecvError::Lagged(_)) => snapshot(&state).await,
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(ev), (state, rx, None)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn snapshot(state: &Arc<ApiState>) -> Event {
    let json = all_streams_json(state).await;
    Event::default()
        .event("snapshot")
        .data(String::from_utf8_lossy(&json))
}
