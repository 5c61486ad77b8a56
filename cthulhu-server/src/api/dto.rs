//! The API's JSON shapes (the core stays free of serde). Nothing here carries a key:
//! destination URLs are the redacted ones.

use std::collections::BTreeMap;

use cthulhu_core::hub::StreamSnapshot;
use cthulhu_core::supervisor::{DestinationState, DestinationStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::control::{DestinationView, StreamView, state_name, unix_secs};
use crate::rates::Bitrate;

/// The error answer of every endpoint: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ErrorBody {
    /// What went wrong.
    pub(super) error: ErrorDetail,
}

/// The `error` of an [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ErrorDetail {
    /// A stable machine-readable code: `unauthorized`, `csrf`, `not_found`, `conflict`,
    /// `invalid`, `bad_request`, `rate_limited`, `invalid_credentials`,
    /// `totp_required`, `not_live`, `no_config_file`, `config_invalid`,
    /// `shutting_down` or `internal`.
    #[schema(example = "not_found")]
    pub(super) code: &'static str,
    /// What a human reads.
    pub(super) message: String,
    /// The request body field at fault (with `invalid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) field: Option<String>,
}

/// `{"streams": [...]}`: every stream.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StreamList {
    /// The streams, with their live figures and destinations.
    pub(super) streams: Vec<Stream>,
}

/// One stream: the desired state and, if it was ever published, live figures.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Stream {
    /// `app/name`.
    #[schema(example = "live/main")]
    path: String,
    /// Where it was declared: `file`, `api` or `plugin`.
    origin: &'static str,
    /// Whether a publisher is live now.
    live: bool,
    /// When the current publisher went live (Unix seconds).
    live_since: Option<u64>,
    /// Who publishes now.
    publisher: Option<Publisher>,
    /// The incoming bitrate in bit/s (absent until sampled twice, a second apart).
    bitrate_in: Option<BitrateIn>,
    /// Payload bytes received from publishers.
    bytes_in: u64,
    /// Frames received from publishers.
    frames_in: u64,
    /// The tracks of the latest publish.
    tracks: Vec<Track>,
    /// The last complete GOP (video streams, from the second keyframe on).
    gop: Option<Gop>,
    /// Hub subscriptions reading the stream: destinations, recorders and the shared
    /// writers of the players.
    subscribers: usize,
    /// Players, every protocol.
    players: usize,
    /// Players by protocol (`rtmp`, `srt`).
    players_by_protocol: BTreeMap<String, usize>,
    /// Bytes sent to the players now connected.
    bytes_to_players: u64,
    /// The destinations, by name.
    destinations: Vec<Destination>,
    /// The recordings, by id.
    recordings: Vec<super::recordings::Recording>,
}

/// The publisher of a live stream.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Publisher {
    /// `rtmp` or `srt` (or an in-process publisher's name).
    #[schema(example = "rtmp")]
    protocol: &'static str,
    /// The peer's address, `ip:port`.
    #[schema(example = "192.0.2.10:53122")]
    remote: Option<String>,
    /// When it went live (Unix seconds).
    since: Option<u64>,
}

/// A stream's GOP: from a video keyframe to the next.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Gop {
    /// Video frames in it, the keyframe included.
    frames: u32,
    /// Its length in seconds.
    seconds: f64,
}

/// A stream's incoming bitrate.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct BitrateIn {
    /// Over the last second, in bit/s.
    last_1s: u64,
    /// Over the last ten seconds, in bit/s.
    last_10s: u64,
}

/// One track of a stream.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Track {
    /// The track id.
    id: u32,
    /// The codec (`H264`, `Hevc`, `Aac`, `Av1`, `Opus`, ...).
    codec: String,
    /// Video width in pixels.
    width: Option<u32>,
    /// Video height in pixels.
    height: Option<u32>,
    /// Audio sample rate in Hz.
    sample_rate: Option<u32>,
    /// Audio channels.
    channels: Option<u8>,
}

/// One destination with its supervisor's state.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Destination {
    /// The name within the stream.
    name: String,
    /// The URL with its key hidden.
    #[schema(example = "rtmp://a.rtmp.youtube.com/live2/***")]
    url: String,
    /// Where it was declared: `file`, `api` or `plugin`.
    origin: &'static str,
    /// Whether it is enabled.
    enabled: bool,
    /// Its supervisor's state.
    #[serde(flatten)]
    status: Status,
    /// Bytes sent since it was started (0 while disabled).
    bytes_sent: u64,
    /// Bit rate sent over the last second, in bit/s (absent until sampled twice).
    bitrate: Option<u64>,
    /// Frames dropped because it fell behind (it skips to the next keyframe).
    drops: u64,
    /// Bytes waiting for it now: how far it lags.
    backlog_bytes: u64,
}

/// A destination's state change, as the event stream sends it (`destination`).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StatusEvent {
    /// The stream (`app/name`).
    stream: String,
    /// The destination.
    name: String,
    /// The URL with its key hidden.
    url: String,
    /// Its supervisor's state.
    #[serde(flatten)]
    status: Status,
}

/// What a destination's supervisor tells (`stopped` when not running).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Status {
    /// `waiting`, `connecting`, `live`, `retrying` or `stopped`.
    #[schema(example = "live")]
    state: &'static str,
    /// The connection attempt (while `connecting` or `retrying`).
    attempt: Option<u32>,
    /// The most recent push error, kept after a recovery.
    last_error: Option<String>,
    /// When the next attempt starts (Unix seconds, while `retrying`).
    next_retry_at: Option<u64>,
    /// When the push went live (Unix seconds, while `live`).
    live_since: Option<u64>,
    /// Pushes that went live since the supervisor started.
    connects: u64,
    /// Pushes that failed since the supervisor started.
    failures: u64,
}

/// The path of a stream: `/streams/{app}/{name}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct StreamParams {
    /// The first half of the stream's path `app/name`.
    #[param(example = "live")]
    pub(super) app: String,
    /// The second half of the stream's path.
    #[param(example = "main")]
    pub(super) name: String,
}

/// The path of a destination: `/streams/{app}/{name}/destinations/{dest}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct DestinationParams {
    /// The first half of the stream's path `app/name`.
    #[param(example = "live")]
    pub(super) app: String,
    /// The second half of the stream's path.
    #[param(example = "main")]
    pub(super) name: String,
    /// The destination's name within the stream.
    #[param(example = "youtube")]
    pub(super) dest: String,
}

/// The path of a token: `/tokens/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct TokenParams {
    /// The token's id.
    pub(super) id: i64,
}

/// The path of a user: `/users/{username}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct UserParams {
    /// The user's login name.
    #[param(example = "admin")]
    pub(super) username: String,
}

/// The answer of `POST .../retry`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Retried {
    /// Whether a waiting destination was told to retry now (false: it was not waiting).
    pub(super) retried: bool,
}

/// What a config reload changed.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Reloaded {
    /// Destinations started (`app/name:dest`).
    pub(super) started: Vec<String>,
    /// Destinations stopped.
    pub(super) stopped: Vec<String>,
    /// Destinations restarted because their URL or TLS settings changed.
    pub(super) restarted: Vec<String>,
    /// How many running destinations were left alone.
    pub(super) unchanged: usize,
}

/// `{"tokens": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TokenList {
    /// Every API token, revoked ones too.
    pub(super) tokens: Vec<TokenView>,
}

/// An API token as the API shows it (never the token itself).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TokenView {
    /// The token's id.
    pub(super) id: i64,
    /// Its unique name (the audit log shows `token:NAME`).
    pub(super) name: String,
    /// Creation time (Unix seconds).
    pub(super) created_at: i64,
    /// Last use (Unix seconds).
    pub(super) last_used_at: Option<i64>,
    /// Whether it was revoked.
    pub(super) revoked: bool,
}

/// A new API token: the only answer that shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CreatedToken {
    /// The token's id.
    pub(super) id: i64,
    /// Its name.
    pub(super) name: String,
    /// The token, for `Authorization: Bearer TOKEN` (shown once).
    #[schema(example = "cth_...")]
    pub(super) token: String,
}

/// `{"users": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UserList {
    /// Every console user.
    pub(super) users: Vec<UserView>,
}

/// A console user as the API shows it: no hash, no secret.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UserView {
    /// The user's id.
    pub(super) id: i64,
    /// The login name.
    pub(super) username: String,
    /// The role (`admin`).
    pub(super) role: &'static str,
    /// Whether TOTP is enrolled.
    pub(super) totp_enabled: bool,
    /// Creation time (Unix seconds).
    pub(super) created_at: i64,
    /// Whether the account is disabled.
    pub(super) disabled: bool,
}

/// A new user with its generated password (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CreatedUser {
    /// The user's id.
    pub(super) id: i64,
    /// The login name.
    pub(super) username: String,
    /// The generated password (shown once; TOTP is enrolled at the first login).
    pub(super) password: String,
}

/// A generated password (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct NewPassword {
    /// The new password; the user's sessions were ended.
    pub(super) password: String,
}

/// A new stream with its publish key (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CreatedStream {
    /// `app/name`.
    pub(super) path: String,
    /// The publish key (given or generated; shown once).
    pub(super) key: String,
}

/// How the caller authenticated.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum ViaName {
    /// A browser session.
    Session,
    /// An API token.
    Token,
}

/// The caller (`GET /api/v1/me`).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Me {
    /// The user; null for a token that acts for no user.
    pub(super) username: Option<String>,
    /// How the caller authenticated.
    pub(super) via: ViaName,
    /// The token's name (with `via: token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) token: Option<String>,
}

/// The answer of a login: a session, or (for a user without TOTP) the enrolment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(super) enum LoginAnswer {
    /// Logged in: the session cookie is set (`Set-Cookie`).
    Session(SessionStarted),
    /// TOTP enrolment: log in again with a code of this secret to enable it.
    Enrol(EnrolAnswer),
}

/// A session started by a login (its cookie is in `Set-Cookie`).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SessionStarted {
    /// The user.
    pub(super) username: String,
    /// The token every change made with this session sends as `X-CSRF-Token`.
    pub(super) csrf_token: String,
    /// When the session ends at the latest (Unix seconds).
    pub(super) expires_at: i64,
}

/// `{"enrol": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EnrolAnswer {
    /// The pending TOTP secret.
    pub(super) enrol: Enrolment,
}

/// A pending TOTP secret, for an authenticator app.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Enrolment {
    /// The `otpauth://totp/...` URI.
    pub(super) otpauth_uri: String,
    /// The URI as a QR code (SVG).
    pub(super) qr_svg: String,
}

/// What a probe found. `reachable` and `accepted` tell the outcome: accepted (with
/// the timings), refused (`refusal`), or unreachable (`error`).
#[derive(Debug, Default, Serialize, ToSchema)]
pub(super) struct ProbeAnswer {
    /// The URL with its key hidden.
    pub(super) url: String,
    /// Whether the server answered the RTMP connect.
    pub(super) reachable: bool,
    /// Whether it accepted the publish.
    pub(super) accepted: bool,
    /// The whole probe, in milliseconds.
    pub(super) ms: u64,
    /// TCP (and TLS) connect, in milliseconds (accepted only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tcp_ms: Option<u64>,
    /// RTMP handshake, in milliseconds (accepted only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) handshake_ms: Option<u64>,
    /// RTMP `connect`, in milliseconds (accepted only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) connect_ms: Option<u64>,
    /// `publish`, in milliseconds (accepted only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) publish_ms: Option<u64>,
    /// The server's `fmsVer`, if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) server_version: Option<String>,
    /// Why the server refused the publish (refused only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) refusal: Option<String>,
    /// Why the probe failed (unreachable only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
}

/// One stream: the desired state and, if it was ever published, live figures.
pub(super) fn stream(
    view: &StreamView,
    live: Option<&StreamSnapshot>,
    rate: Option<Bitrate>,
) -> Stream {
    let tracks: Vec<Track> = live
        .and_then(|s| s.info.as_ref())
        .map(|info| {
            info.tracks
                .iter()
                .map(|t| Track {
                    id: t.id.0,
                    codec: format!("{:?}", t.codec.id()),
                    width: t.details.width,
                    height: t.details.height,
                    sample_rate: t.details.sample_rate,
                    channels: t.details.channels,
                })
                .collect()
        })
        .unwrap_or_default();
    // Not live: no players, but the protocols are listed all the same.
    let players_by_protocol: BTreeMap<String, usize> = live
        .map(|s| s.players_by_protocol())
        .unwrap_or_else(|| cthulhu_core::hub::PLAYER_PROTOCOLS.map(|p| (p, 0)).to_vec())
        .into_iter()
        .map(|(p, n)| (p.to_owned(), n))
        .collect();
    let bytes_to_players = live.map_or(0, |s| s.players().map(|m| m.reading.bytes_sent).sum());
    let players = players_by_protocol.values().sum();
    Stream {
        path: view.path.as_str().to_owned(),
        origin: view.origin.as_str(),
        live: live.is_some_and(|s| s.live),
        live_since: live.and_then(|s| s.live_since).map(unix_secs),
        publisher: live.and_then(|s| {
            let p = s.publisher.as_ref()?;
            Some(Publisher {
                protocol: p.protocol,
                remote: p.remote.map(|a| a.to_string()),
                since: s.live_since.map(unix_secs),
            })
        }),
        bitrate_in: rate.map(|r| BitrateIn {
            last_1s: r.last_1s.round() as u64,
            last_10s: r.last_10s.round() as u64,
        }),
        bytes_in: live.map_or(0, |s| s.bytes_in),
        frames_in: live.map_or(0, |s| s.frames_in),
        tracks,
        gop: live.and_then(|s| s.gop).map(|g| Gop {
            frames: g.frames,
            seconds: g.duration.as_secs_f64(),
        }),
        subscribers: live.map_or(0, |s| s.subscribers.len()),
        players,
        players_by_protocol,
        bytes_to_players,
        destinations: view.destinations.iter().map(destination).collect(),
        recordings: view
            .recordings
            .iter()
            .map(super::recordings::recording)
            .collect(),
    }
}

/// One destination with its supervisor's state.
pub(super) fn destination(d: &DestinationView) -> Destination {
    Destination {
        name: d.name.clone(),
        url: d.url_redacted.clone(),
        origin: d.origin.as_str(),
        enabled: d.enabled,
        status: status(d.status.as_ref()),
        bytes_sent: d.traffic.map_or(0, |t| t.reading.bytes_sent),
        bitrate: d.traffic.and_then(|t| t.bitrate),
        drops: d.traffic.map_or(0, |t| t.reading.dropped),
        backlog_bytes: d.traffic.map_or(0, |t| t.reading.backlog_bytes),
    }
}

/// A destination's status change, as the event stream sends it.
pub(super) fn status_event(
    path: &cthulhu_core::StreamPath,
    name: &str,
    s: &DestinationStatus,
) -> StatusEvent {
    StatusEvent {
        stream: path.as_str().to_owned(),
        name: name.to_owned(),
        url: s.url_redacted.clone(),
        status: status(Some(s)),
    }
}

/// What both shapes tell of a supervisor's status (None: not running, `stopped`):
/// state, attempt, last error, next retry and live-since times, connects, failures.
fn status(s: Option<&DestinationStatus>) -> Status {
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
    Status {
        state: s.map_or("stopped", |s| state_name(&s.state)),
        attempt,
        last_error: s.and_then(|s| s.last_error.clone()),
        next_retry_at,
        live_since: since,
        connects: s.map_or(0, |s| s.connects),
        failures: s.map_or(0, |s| s.failures),
    }
}
