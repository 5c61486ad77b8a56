//! Browser accounts (issue 14): `POST /api/v1/login` (password + TOTP, with
//! enrolment at the first login), `POST /api/v1/logout`, `GET /api/v1/me` and
//! `POST /api/v1/me/password`, and the session half of the [`Caller`] extractor.
//!
//! - **Login**: password (argon2id, on a blocking thread; [`auth::password::dummy_verify`]
//!   for unknown or disabled users, so timing does not tell them apart) and a TOTP code
//!   accepted once (its time step must be later than the last accepted one, recorded
//!   atomically). A user without TOTP gets `{"enrol": {"otpauth_uri", "qr_svg"}}` for a
//!   pending secret (the same one until it is confirmed, so a reload shows the same QR
//!   code); the first login with a valid code for it enables TOTP. A wrong password and
//!   a wrong, replayed or stale code all answer 401 `invalid_credentials` with the same
//!   message; a correct password without a code answers 401 `totp_required`.
//! - **Rate limits**: one [`auth::limit::LoginLimiter`] per server, checked before any
//!   verification, failures counted per IP and per username; over the limit: 429
//!   `rate_limited` with `Retry-After` (seconds).
//! - **Sessions**: the cookie value is a fresh 256-bit token of which the store keeps
//!   only the SHA-256; a session ends after [`SESSION_IDLE_SECS`] without a request or
//!   [`SESSION_MAX_SECS`] after the login, whichever comes first, or at logout. The
//!   cookie is `HttpOnly; SameSite=Strict; Path=/` (`Secure` when the API is on TLS).
//! - **CSRF**: a request authenticated by the cookie with a method other than GET or
//!   HEAD must carry `X-CSRF-Token` equal to the session's token (given by the login),
//!   compared in constant time; otherwise 403 `csrf`. Bearer-token calls need none.
//! - **Password change**: a password someone else has seen (the first start's
//!   `admin`, a user created or reset by an administrator or the CLI) is marked
//!   `must_change_password`. While it is, the user's sessions get 403
//!   `password_change_required` from every endpoint but the three that take an
//!   [`ExemptCaller`]: `GET /api/v1/me` (which reports the mark), `POST
//!   /api/v1/me/password` and `POST /api/v1/logout`. The check reads the user row the
//!   session lookup loads anyway: no extra query. Bearer tokens are not affected.
//!   `POST /api/v1/me/password` verifies the current password (failures count in the
//!   login rate limiter), applies the policy to the new one, and on success clears the
//!   mark and ends the user's other sessions.
//!
//! No password, code, cookie value or CSRF token is logged or written to the audit log.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};
use utoipa::ToSchema;

use super::dto::{self, ErrorBody};
use super::{ApiError, ApiState, Body, Caller, Via, now};
use crate::auth;
use crate::auth::AuthError;
use crate::auth::totp::TotpSecret;
use crate::db::{NewAudit, User, UserId};

/// A session ends after this long without a request (12 hours).
pub(crate) const SESSION_IDLE_SECS: i64 = 12 * 3600;
/// A session ends this long after the login, whatever its activity (7 days).
pub(crate) const SESSION_MAX_SECS: i64 = 7 * 24 * 3600;
/// A session's last activity is written at most this often.
const TOUCH_EVERY_SECS: i64 = 60;
/// The request header carrying the CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// Longest session cookie value looked up.
const MAX_COOKIE_VALUE: usize = 256;
/// Longest username examined; longer ones cannot exist and fail as unknown.
const MAX_USERNAME_BYTES: usize = 128;
/// The message of every refused credential (password or code): does not tell which.
const INVALID_CREDENTIALS: &str = "invalid username, password or code";

/// What the session half of the extractor found.
pub(super) struct SessionCaller {
    /// The user's name.
    pub(super) username: String,
    /// SHA-256 of the cookie value (for logout).
    pub(super) id_hash: [u8; 32],
}

/// The endpoints a session whose password must be changed may call (method, path):
/// their handlers take an [`ExemptCaller`]; listed for the OpenAPI document.
pub(super) const PASSWORD_CHANGE_EXEMPT: [(&str, &str); 3] = [
    ("GET", "/api/v1/me"),
    ("POST", "/api/v1/me/password"),
    ("POST", "/api/v1/logout"),
];

/// Marks a request whose handler takes an [`ExemptCaller`] (in the request's
/// extensions while the [`Caller`] extractor runs): [`from_cookie`] then lets a session
/// whose password must be changed through.
#[derive(Clone, Copy)]
struct PasswordChangeExempt;

/// The user of an accepted session, as the session lookup loaded it; [`from_cookie`]
/// leaves it in the request's extensions for [`ExemptCaller`].
#[derive(Clone, Copy, Debug)]
pub(super) struct SessionUser {
    /// The user's id.
    pub(super) id: UserId,
    /// Whether the user must change its password before anything else.
    pub(super) must_change_password: bool,
}

/// A [`Caller`] that may also be a session whose password must be changed: for the
/// [`PASSWORD_CHANGE_EXEMPT`] endpoints only (every other handler takes a [`Caller`],
/// which such a session does not get past).
pub(super) struct ExemptCaller {
    /// The caller.
    pub(super) caller: Caller,
    /// The session's user (None for a bearer token).
    pub(super) session_user: Option<SessionUser>,
}

impl FromRequestParts<Arc<ApiState>> for ExemptCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        parts.extensions.insert(PasswordChangeExempt);
        let caller = Caller::from_request_parts(parts, state).await;
        parts.extensions.remove::<PasswordChangeExempt>();
        let caller = caller?;
        let session_user = match caller.via {
            Via::Session { .. } => parts.extensions.get::<SessionUser>().copied(),
            Via::Token { .. } => None,
        };
        Ok(Self {
            caller,
            session_user,
        })
    }
}

/// 403 for a session whose password must be changed first.
fn password_change_required() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "password_change_required",
        "this account's password was set by someone else and must be changed first: \
         POST /api/v1/me/password with {\"current\", \"new\"} (GET /api/v1/me and \
         POST /api/v1/logout work meanwhile)",
    )
}

/// Authenticates `parts` by the session cookie, if there is one: `Ok(None)` without a
/// session cookie; 401 for an unknown, revoked or expired session; 403 `csrf` for a
/// state change without the session's CSRF token; 403 `password_change_required` for
/// a user who must change its password, unless the handler takes an
/// [`ExemptCaller`]. An accepted session leaves its [`SessionUser`] in the request's
/// extensions.
pub(super) async fn from_cookie(
    parts: &mut Parts,
    state: &ApiState,
) -> Result<Option<SessionCaller>, ApiError> {
    let value = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| auth::cookie::cookie_value(h, auth::cookie::SESSION_COOKIE))
        .filter(|v| !v.is_empty());
    let Some(value) = value else {
        return Ok(None);
    };
    if value.len() > MAX_COOKIE_VALUE {
        return Err(session_expired());
    }
    let id_hash = auth::token::hash_token(value);
    let needs_csrf = !matches!(parts.method, Method::GET | Method::HEAD);
    let csrf = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let t = now();
    let found = state
        .db
        .run(move |db| {
            let Some(session) = db.session(&id_hash, t)? else {
                return Ok(Err(session_expired()));
            };
            if t.saturating_sub(session.last_seen_at) > SESSION_IDLE_SECS {
                db.revoke_session(&id_hash)?;
                return Ok(Err(session_expired()));
            }
            if needs_csrf
                && !csrf
                    .as_deref()
                    .is_some_and(|c| session.csrf_token.matches(c))
            {
                return Ok(Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "a change made with a session needs the X-CSRF-Token header the login gave",
                )));
            }
            let Some(user) = db.user_by_id(session.user_id)? else {
                return Ok(Err(session_expired()));
            };
            if t.saturating_sub(session.last_seen_at) >= TOUCH_EVERY_SECS {
                db.touch_session(&id_hash, t)?;
            }
            let session_user = SessionUser {
                id: user.id,
                must_change_password: user.must_change_password,
            };
            Ok(Ok((user.username, session_user)))
        })
        .await?;
    let (username, session_user) = found?;
    if session_user.must_change_password && parts.extensions.get::<PasswordChangeExempt>().is_none()
    {
        return Err(password_change_required());
    }
    parts.extensions.insert(session_user);
    Ok(Some(SessionCaller { username, id_hash }))
}

/// 401 for a session that is not (or no longer) valid.
fn session_expired() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "unknown or expired session: log in again",
    )
}

/// The body of `POST /api/v1/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    /// The login name.
    #[schema(example = "admin")]
    username: String,
    /// The password.
    password: String,
    /// The current TOTP code (absent at enrolment).
    totp: Option<String>,
}

/// Why a login failed, for the audit log (never shown to the client).
#[derive(Clone, Copy)]
enum Failure {
    /// Unknown user, disabled user or wrong password.
    Password,
    /// A code that matches no step around now, or no pending secret.
    Code,
    /// A valid code whose step was already used (replay or older code).
    Replay,
}

impl Failure {
    /// The audit detail's reason.
    fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Code => "code",
            Self::Replay => "replay",
        }
    }
}

/// `POST /api/v1/login`: password and TOTP code; a user without TOTP gets the
/// enrolment, and enables TOTP with the first login that gives a code of it.
#[utoipa::path(
    post,
    path = "/login",
    tag = "session",
    request_body = LoginBody,
    security(()),
    responses(
        (status = 200, description = "Logged in: the session cookie is in `Set-Cookie`; or, for a user without TOTP, the enrolment", body = dto::LoginAnswer),
        (status = 400, description = "The body is not JSON, or not sent as `application/json` (`bad_request`)", body = ErrorBody),
        (status = 401, description = "A wrong username, password or code, or a used one (`invalid_credentials`); the password is right but the code is missing (`totp_required`)", body = ErrorBody),
        (status = 422, description = "A body of the wrong shape (`invalid`)", body = ErrorBody),
        (status = 429, description = "Too many failed logins from this address or for this user (`rate_limited`)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub(super) async fn login(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Body(body): Body<LoginBody>,
) -> Result<Response, ApiError> {
    let ip = addr.ip();
    let remote = ip.to_string();
    let LoginBody {
        username,
        password,
        totp,
    } = body;
    let totp = totp.filter(|c| !c.is_empty());

    if let Err(wait) = state.limiter.check(ip, &username, Instant::now()) {
        let secs = auth::limit::retry_after_secs(wait);
        info!(%remote, retry_after = secs, "API: login refused by the rate limit");
        login_audit(&state, "login.limited", None, &remote, None).await;
        return Ok(rate_limited(
            format!("too many failed logins: try again in {secs} s"),
            secs,
        ));
    }

    // The user, then the password on a blocking thread (dummy work when unknown).
    let user = if username.is_empty() || username.len() > MAX_USERNAME_BYTES {
        None
    } else {
        let name = username.clone();
        state.db.run(move |db| db.user_by_name(&name)).await?
    }
    .filter(|u| !u.disabled);
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    let password_ok = tokio::task::spawn_blocking(move || match phc {
        Some(phc) => auth::password::verify_password(&password, &phc),
        None => {
            auth::password::dummy_verify();
            false
        }
    })
    .await
    .map_err(|e| ApiError::internal("password verification", e))?;
    let user = match user {
        Some(u) if password_ok => u,
        known => {
            let known = known.map(|u| u.username);
            return Err(fail(&state, ip, &username, known, &remote, Failure::Password).await);
        }
    };

    let Some(code) = totp else {
        if user.totp_enabled {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "totp_required",
                "enter the code of your authenticator app",
            ));
        }
        return enrol(&state, &user).await;
    };

    // The code, against the enabled or pending secret; single use.
    let secret = user
        .totp_secret
        .as_deref()
        .and_then(|s| TotpSecret::from_bytes(s).ok());
    let unix = u64::try_from(now()).unwrap_or(0);
    let step = secret
        .as_ref()
        .and_then(|s| auth::totp::verify_code(s, &code, unix))
        .and_then(|step| i64::try_from(step).ok());
    let Some(step) = step else {
        let name = Some(user.username.clone());
        return Err(fail(&state, ip, &username, name, &remote, Failure::Code).await);
    };
    let (id, enrolling) = (user.id, !user.totp_enabled);
    let t = now();
    let accepted = state
        .db
        .run(move |db| {
            if !db.accept_totp_step(id, step)? {
                return Ok(false);
            }
            if enrolling {
                db.enable_totp(id, t)?;
            }
            Ok(true)
        })
        .await?;
    if !accepted {
        let name = Some(user.username.clone());
        return Err(fail(&state, ip, &username, name, &remote, Failure::Replay).await);
    }
    if enrolling {
        info!(user = %user.username, "API: TOTP enrolment confirmed");
        login_audit(&state, "totp.enrolled", Some(&user.username), &remote, None).await;
    }
    state.limiter.record_success(ip, &username);
    start_session(&state, &user, remote).await
}

/// 429 `rate_limited` saying `message`, with `Retry-After: secs`.
fn rate_limited(message: String, secs: u64) -> Response {
    let mut resp =
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Counts and records a failed login; the answer (401 `invalid_credentials`).
async fn fail(
    state: &ApiState,
    ip: IpAddr,
    attempted: &str,
    known: Option<String>,
    remote: &str,
    why: Failure,
) -> ApiError {
    state.limiter.record_failure(ip, attempted, Instant::now());
    // The attempted name is named only if it is a user: a password typed into the
    // username field must not land in the audit log.
    info!(user = known.as_deref().unwrap_or("(unknown)"), %remote, "API: login failed");
    let detail = json!({ "reason": why.as_str() });
    login_audit(
        state,
        "login.failed",
        Some(known.as_deref().unwrap_or("(unknown user)")),
        remote,
        Some(&detail),
    )
    .await;
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        INVALID_CREDENTIALS,
    )
}

/// Enrolment: the pending secret (a new one unless one is pending) as an otpauth URI
/// and its QR code.
async fn enrol(state: &ApiState, user: &User) -> Result<Response, ApiError> {
    let pending = user
        .totp_secret
        .as_deref()
        .and_then(|s| TotpSecret::from_bytes(s).ok());
    let secret = match pending {
        Some(s) => s,
        None => {
            let s = TotpSecret::generate();
            let (id, bytes, t) = (user.id, s.as_bytes().to_vec(), now());
            let stored = state
                .db
                .run(move |db| db.set_totp_pending(id, &bytes, t))
                .await?;
            if !stored {
                return Err(ApiError::internal(
                    "storing the TOTP secret",
                    "the user changed meanwhile",
                ));
            }
            s
        }
    };
    let uri = auth::totp::otpauth_uri(&secret, auth::totp::TOTP_ISSUER, &user.username)
        .map_err(|e| ApiError::internal("the otpauth URI", e))?;
    let svg = auth::totp::qr_svg(&uri).map_err(|e| ApiError::internal("the QR code", e))?;
    info!(user = %user.username, "API: TOTP enrolment shown");
    let answer = dto::LoginAnswer::Enrol(dto::EnrolAnswer {
        enrol: dto::Enrolment {
            otpauth_uri: uri,
            qr_svg: svg,
        },
    });
    Ok(Json(answer).into_response())
}

/// Creates the session of a successful login and answers with its cookie.
async fn start_session(
    state: &ApiState,
    user: &User,
    remote: String,
) -> Result<Response, ApiError> {
    let cookie = auth::token::new_token(auth::token::SESSION_PREFIX);
    let id_hash = auth::token::hash_token(&cookie);
    let csrf = auth::token::new_csrf_token();
    let t = now();
    let expires_at = t.saturating_add(SESSION_MAX_SECS);
    let (id, c, r) = (user.id, csrf.clone(), remote.clone());
    state
        .db
        .run(move |db| {
            // Housekeeping: expired and revoked sessions go.
            db.purge_expired(t)?;
            db.create_session(&id_hash, id, &c, t, expires_at, Some(&r))
        })
        .await?;
    info!(user = %user.username, %remote, "API: login");
    login_audit(state, "login.ok", Some(&user.username), &remote, None).await;
    let max_age = Duration::from_secs(u64::try_from(SESSION_MAX_SECS).unwrap_or(0));
    let set_cookie = auth::cookie::session_cookie(&cookie, max_age, state.secure_cookies);
    let mut resp = Json(dto::LoginAnswer::Session(dto::SessionStarted {
        username: user.username.clone(),
        csrf_token: csrf,
        expires_at,
    }))
    .into_response();
    set_cookie_header(&mut resp, &set_cookie);
    Ok(resp)
}

/// Adds `Set-Cookie: value`.
fn set_cookie_header(resp: &mut Response, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        Err(_) => warn!("API: unusable Set-Cookie value"),
    }
}

/// An audit entry of the login flow; `user` names the account (never an unknown
/// attempted name).
async fn login_audit(
    state: &ApiState,
    action: &'static str,
    user: Option<&str>,
    remote: &str,
    detail: Option<&serde_json::Value>,
) {
    let actor = user.unwrap_or("anonymous").to_owned();
    let target = user.map(str::to_owned);
    let remote = remote.to_owned();
    let detail = detail.cloned();
    let written = state
        .db
        .run(move |db| {
            db.audit(&NewAudit {
                at: now(),
                actor: &actor,
                action,
                target: target.as_deref(),
                detail: detail.as_ref(),
                remote: Some(&remote),
            })
        })
        .await;
    if let Err(e) = written {
        warn!(error = %e, "Audit entry not written");
    }
}

/// `POST /api/v1/logout`: revokes the caller's session and clears the cookie (with a
/// token, there is no session: only the cookie is cleared).
#[utoipa::path(
    post,
    path = "/logout",
    tag = "session",
    responses((status = 204, description = "Logged out; `Set-Cookie` clears the cookie"))
)]
pub(super) async fn logout(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ExemptCaller { caller, .. }: ExemptCaller,
) -> Result<Response, ApiError> {
    if let Via::Session { id_hash } = caller.via {
        state.db.run(move |db| db.revoke_session(&id_hash)).await?;
        info!(user = %caller.actor, "API: logout");
        login_audit(
            &state,
            "logout",
            Some(&caller.actor),
            &addr.ip().to_string(),
            None,
        )
        .await;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    set_cookie_header(
        &mut resp,
        &auth::cookie::clear_session_cookie(state.secure_cookies),
    );
    Ok(resp)
}

/// The answer of `GET /api/v1/me`: the caller, and whether its password must be
/// changed.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MeAnswer {
    /// The caller.
    #[serde(flatten)]
    caller: dto::Me,
    /// Whether the session's user must change its password
    /// (`POST /api/v1/me/password`) before any endpoint but this one and logout
    /// answers (always false for a token).
    must_change_password: bool,
}

/// `GET /api/v1/me`: `{"username", "via": "session"|"token", "must_change_password"}`
/// (`username` is null for a token that acts for no user; `token` names the token).
#[utoipa::path(
    get,
    path = "/me",
    tag = "session",
    responses((status = 200, description = "The caller", body = MeAnswer))
)]
pub(super) async fn me(
    ExemptCaller {
        caller,
        session_user,
    }: ExemptCaller,
) -> Json<MeAnswer> {
    let caller = match caller.via {
        Via::Session { .. } => dto::Me {
            username: Some(caller.actor),
            via: dto::ViaName::Session,
            token: None,
        },
        Via::Token { name, username } => dto::Me {
            username,
            via: dto::ViaName::Token,
            token: Some(name),
        },
    };
    Json(MeAnswer {
        caller,
        must_change_password: session_user.is_some_and(|u| u.must_change_password),
    })
}

/// The body of `POST /api/v1/me/password`. No `Debug`: it holds two passwords.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordChange {
    /// The current password.
    current: String,
    /// The new password: 12 to 256 characters, not the current one.
    new: String,
}

/// What [`check_change`] found.
#[derive(Debug, PartialEq, Eq)]
enum Checked {
    /// `current` does not match the stored hash.
    WrongCurrent,
    /// The new password is refused: why (names no password).
    Invalid(String),
    /// Accepted: the new password's PHC string.
    Hashed(String),
}

/// Verifies `current` against the stored `phc`, applies the policy to `new` (and
/// refuses the current one again), and hashes it. Slow (one or two argon2 runs): on a
/// blocking thread.
fn check_change(current: &str, new: &str, phc: &str) -> Result<Checked, AuthError> {
    if !auth::password::verify_password(current, phc) {
        return Ok(Checked::WrongCurrent);
    }
    if let Err(e) = auth::password::check_password_policy(new) {
        return Ok(Checked::Invalid(e.to_string()));
    }
    if new == current {
        return Ok(Checked::Invalid(
            "the new password must differ from the current one".to_owned(),
        ));
    }
    auth::password::hash_password(new).map(Checked::Hashed)
}

/// `POST /api/v1/me/password`: the session's user replaces its password; the
/// `must_change_password` mark goes and the user's other sessions end (this one
/// stays).
#[utoipa::path(
    post,
    path = "/me/password",
    tag = "session",
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed: the user's other sessions are ended, this one stays"),
        (status = 401, description = "The current password is wrong (`invalid_credentials`, counted by the login rate limit), or no caller (`unauthorized`)", body = ErrorBody),
        (status = 403, description = "Not a session: an API token has no password (`session_required`); or no `X-CSRF-Token` header (`csrf`)", body = ErrorBody),
        (status = 409, description = "The password was changed meanwhile (`conflict`)", body = ErrorBody),
        (status = 422, description = "The new password is refused: 12 to 256 characters, not the current one (`invalid`, field `new`); or a body of the wrong shape (`invalid`)", body = ErrorBody),
        (status = 429, description = "Too many failed logins or password changes for this user or from this address (`rate_limited`)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub(super) async fn change_password(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ExemptCaller {
        caller,
        session_user,
    }: ExemptCaller,
    Body(body): Body<PasswordChange>,
) -> Result<Response, ApiError> {
    let (Via::Session { id_hash }, Some(session_user)) = (&caller.via, session_user) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "session_required",
            "an API token has no password: log in to change the password of your account",
        ));
    };
    let id_hash = *id_hash;
    let ip = addr.ip();
    let remote = ip.to_string();
    let username = caller.actor;

    if let Err(wait) = state.limiter.check(ip, &username, Instant::now()) {
        let secs = auth::limit::retry_after_secs(wait);
        info!(user = %username, %remote, retry_after = secs, "API: password change refused by the rate limit");
        login_audit(
            &state,
            "password_change.limited",
            Some(&username),
            &remote,
            None,
        )
        .await;
        return Ok(rate_limited(
            format!("too many failed attempts: try again in {secs} s"),
            secs,
        ));
    }

    let id = session_user.id;
    let user = state
        .db
        .run(move |db| db.user_by_id(id))
        .await?
        .ok_or_else(session_expired)?;
    let phc = user.password_hash;
    let PasswordChange { current, new } = body;
    let (checked, phc) = tokio::task::spawn_blocking(move || {
        let checked = check_change(&current, &new, &phc);
        (checked, phc)
    })
    .await
    .map_err(|e| ApiError::internal("password verification", e))?;
    let new_hash = match checked.map_err(|e| ApiError::internal("password hashing", e))? {
        Checked::Hashed(h) => h,
        Checked::Invalid(message) => return Err(ApiError::invalid("new", message)),
        Checked::WrongCurrent => {
            state.limiter.record_failure(ip, &username, Instant::now());
            info!(user = %username, %remote, "API: password change refused: wrong current password");
            login_audit(
                &state,
                "password_change.failed",
                Some(&username),
                &remote,
                None,
            )
            .await;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "the current password is wrong",
            ));
        }
    };

    let t = now();
    let revoked = state
        .db
        .run(move |db| db.change_own_password(id, &phc, &new_hash, &id_hash, t))
        .await?;
    let Some(revoked) = revoked else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the password was changed meanwhile: try again with the current one",
        ));
    };
    info!(user = %username, %remote, sessions_ended = revoked, "API: password changed");
    let detail = json!({ "sessions_ended": revoked });
    login_audit(
        &state,
        "user.password_change",
        Some(&username),
        &remote,
        Some(&detail),
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_change_needs_the_current_password_and_a_valid_new_one() {
        let phc = auth::password::hash_password("the seen password").unwrap();
        let wrong = check_change("not the password", "a fine new password", &phc).unwrap();
        assert_eq!(wrong, Checked::WrongCurrent);
        // The current one is checked first: a bad new one with a wrong current one is
        // a wrong current one (counted), not a policy answer.
        let wrong = check_change("not the password", "short", &phc).unwrap();
        assert_eq!(wrong, Checked::WrongCurrent);
        for bad in ["short", "", &"x".repeat(257), "the seen password"] {
            let answer = check_change("the seen password", bad, &phc).unwrap();
            let Checked::Invalid(message) = answer else {
                panic!("{bad:?}: {answer:?}");
            };
            assert!(!message.contains("seen"), "{message}");
        }
        let Checked::Hashed(new) =
            check_change("the seen password", "a fine new password", &phc).unwrap()
        else {
            panic!("refused");
        };
        assert!(auth::password::verify_password("a fine new password", &new));
        assert!(!auth::password::verify_password("the seen password", &new));
    }

    #[test]
    fn the_exempt_list_names_the_handlers_routes() {
        let doc = super::super::routes().into_openapi();
        for (method, path) in PASSWORD_CHANGE_EXEMPT {
            let item = doc
                .paths
                .paths
                .get(path)
                .unwrap_or_else(|| panic!("{path}"));
            let op = match method {
                "GET" => &item.get,
                "POST" => &item.post,
                _ => panic!("{method}"),
            };
            assert!(op.is_some(), "{method} {path}");
        }
    }
}
