//! Browser accounts against the real binary: TOTP enrolment at the first login,
//! password + code logins with single-use codes, the session cookie and its CSRF
//! token, logout, the login rate limit, the password change a printed password needs
//! first, the audit log, and no secret in the log.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use common::Cthulhu;
use cthulhu_testkit::wait_for_port;
use reqwest::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use totp_rs::Totp;

/// The session cookie's name.
const COOKIE_NAME: &str = "cthulhu_session";
/// A wrong password, searched for in the log afterwards.
const WRONG_PASSWORD: &str = "not-the-admin-password-4711";
/// The password admin chooses for itself, searched for in the log afterwards.
const CHOSEN_PASSWORD: &str = "admin's own long passphrase 0815";

/// A response: status, headers, JSON body (Null when empty).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn send(req: RequestBuilder) -> Result<Answer> {
    let resp = req.send().await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("{status}: {text}"))?
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The TOTP generator of an otpauth URI, and the codes it gives per time step.
struct Authenticator {
    totp: Totp,
    /// The last step used in a successful login (later logins need a later one).
    last_step: u64,
}

impl Authenticator {
    fn from_uri(uri: &str) -> Result<Self> {
        let totp = Totp::from_url(uri).map_err(|e| anyhow::anyhow!("otpauth URI: {e}"))?;
        Ok(Self { totp, last_step: 0 })
    }

    fn code_at(&self, step: u64) -> String {
        self.totp.generate(step * 30).to_string()
    }

    /// The code for the next login: the earliest step later than the last one used
    /// that the server accepts now (it takes the current step ±1). If the last login
    /// used the next step already, waits for the clock to reach it, so that the chosen
    /// step is never more than one ahead of the server's.
    async fn next_code(&mut self) -> String {
        loop {
            let current = now_secs() / 30;
            let step = (self.last_step + 1).max(current);
            if step <= current + 1 {
                self.last_step = step;
                return self.code_at(step);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn login_req(http: &Client, srv: &Cthulhu, body: Value) -> RequestBuilder {
    http.post(srv.api("login")).json(&body)
}

/// The cookie's `name=value` from a login answer, after checking its attributes.
fn session_cookie(answer: &Answer) -> Result<String> {
    let set = answer
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{COOKIE_NAME}=")))
        .context("no session cookie set")?;
    let attrs: Vec<&str> = set.split(';').map(str::trim).collect();
    ensure!(attrs.contains(&"HttpOnly"), "{set}");
    ensure!(attrs.contains(&"SameSite=Strict"), "{set}");
    ensure!(attrs.contains(&"Path=/"), "{set}");
    ensure!(!attrs.contains(&"Secure"), "no TLS, no Secure: {set}");
    ensure!(
        attrs.iter().any(|a| a.starts_with("Max-Age=")),
        "a persistent cookie: {set}"
    );
    let pair = attrs[0];
    ensure!(pair.len() > COOKIE_NAME.len() + 10, "{set}");
    Ok(pair.to_owned())
}

/// Whether `code` occurs in `text` as a number of its own (not inside a longer run of
/// digits, such as a timestamp's microseconds).
fn contains_code(text: &str, code: &str) -> bool {
    text.match_indices(code).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// The admin password the first start printed.
async fn first_password(srv: &Cthulhu) -> Result<String> {
    srv.wait_for_log("with the password: ", Duration::from_secs(10))
        .await?;
    let password = srv
        .log()
        .lines()
        .find_map(|l| l.split("with the password: ").nth(1))
        .map(|p| p.trim().to_owned())
        .context("admin password not printed")?;
    ensure!(password.len() >= 12, "{password}");
    Ok(password)
}

/// `POST /api/v1/me/password` with the session `cookie` and its `csrf` token.
async fn change_password(
    http: &Client,
    srv: &Cthulhu,
    cookie: &str,
    csrf: &str,
    body: Value,
) -> Result<Answer> {
    send(
        http.post(srv.api("me/password"))
            .header(COOKIE, cookie)
            .header("X-CSRF-Token", csrf)
            .json(&body),
    )
    .await
}

/// Enrols `username` (the login with its password alone): its authenticator.
async fn enrol(
    http: &Client,
    srv: &Cthulhu,
    username: &str,
    password: &str,
) -> Result<Authenticator> {
    let enrol = send(login_req(
        http,
        srv,
        json!({"username": username, "password": password}),
    ))
    .await?;
    ensure!(
        enrol.status == StatusCode::OK,
        "{} {}",
        enrol.status,
        enrol.body
    );
    let uri = enrol.body["enrol"]["otpauth_uri"]
        .as_str()
        .context("no otpauth_uri")?;
    Authenticator::from_uri(uri)
}

/// A full login (with the authenticator's next code): (cookie pair, CSRF token).
async fn session(
    http: &Client,
    srv: &Cthulhu,
    username: &str,
    password: &str,
    app: &mut Authenticator,
) -> Result<(String, String)> {
    let code = app.next_code().await;
    let ok = send(login_req(
        http,
        srv,
        json!({"username": username, "password": password, "totp": code}),
    ))
    .await?;
    ensure!(ok.status == StatusCode::OK, "{} {}", ok.status, ok.body);
    let csrf = ok.body["csrf_token"].as_str().context("no csrf_token")?;
    Ok((session_cookie(&ok)?, csrf.to_owned()))
}

#[tokio::test]
async fn login_with_password_and_totp_sessions_csrf_and_limits() -> Result<()> {
    let srv = Cthulhu::start("").await?;
    wait_for_port(srv.http_port, Duration::from_secs(10)).await?;
    let password = first_password(&srv).await?;
    let http = Client::new();

    // Anonymous: 401, also on the new endpoints (login aside).
    let a = send(http.get(srv.api("me"))).await?;
    ensure!(a.status == StatusCode::UNAUTHORIZED, "{}", a.status);
    let a = send(http.post(srv.api("logout"))).await?;
    ensure!(a.status == StatusCode::UNAUTHORIZED, "{}", a.status);

    // Enrolment: the password alone shows the pending secret, the same on a reload.
    let enrol = send(login_req(
        &http,
        &srv,
        json!({"username": "admin", "password": password}),
    ))
    .await?;
    ensure!(
        enrol.status == StatusCode::OK,
        "{} {}",
        enrol.status,
        enrol.body
    );
    ensure!(
        enrol.headers.get(SET_COOKIE).is_none(),
        "no session before the code"
    );
    let uri = enrol.body["enrol"]["otpauth_uri"]
        .as_str()
        .context("no otpauth_uri")?
        .to_owned();
    ensure!(
        uri.starts_with("otpauth://totp/Cthulhu:admin?") && uri.contains("secret="),
        "{uri}"
    );
    let svg = enrol.body["enrol"]["qr_svg"]
        .as_str()
        .context("no qr_svg")?;
    ensure!(
        svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg:.80}"
    );
    let again = send(login_req(
        &http,
        &srv,
        json!({"username": "admin", "password": password, "totp": ""}),
    ))
    .await?;
    ensure!(again.status == StatusCode::OK, "{}", again.status);
    ensure!(
        again.body["enrol"]["otpauth_uri"] == uri,
        "a reload shows the same secret"
    );
    let mut app = Authenticator::from_uri(&uri)?;

    // Confirming enrolment logs in: the cookie and the CSRF token.
    let first_code = app.next_code().await;
    let ok = send(login_req(
        &http,
        &srv,
        json!({"username": "admin", "password": password, "totp": first_code}),
    ))
    .await?;
    ensure!(ok.status == StatusCode::OK, "{} {}", ok.status, ok.body);
    ensure!(ok.body["username"] == "admin", "{}", ok.body);
    ensure!(ok.body["expires_at"].as_i64().is_some(), "{}", ok.body);
    let csrf = ok.body["csrf_token"]
        .as_str()
        .context("no csrf_token")?
        .to_owned();
    let cookie = session_cookie(&ok)?;
    let cookie_value = cookie
        .split_once('=')
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default();

    // The printed password must be replaced first (see the test below).
    let me = send(http.get(srv.api("me")).header(COOKIE, &cookie)).await?;
    ensure!(me.status == StatusCode::OK, "{} {}", me.status, me.body);
    ensure!(
        me.body == json!({"username": "admin", "via": "session", "must_change_password": true}),
        "{}",
        me.body
    );
    let a = change_password(
        &http,
        &srv,
        &cookie,
        &csrf,
        json!({"current": password, "new": CHOSEN_PASSWORD}),
    )
    .await?;
    ensure!(
        a.status == StatusCode::NO_CONTENT,
        "{} {}",
        a.status,
        a.body
    );
    let printed_password = password;
    let password = CHOSEN_PASSWORD.to_owned();

    let me = send(http.get(srv.api("me")).header(COOKIE, &cookie)).await?;
    ensure!(me.status == StatusCode::OK, "{} {}", me.status, me.body);
    ensure!(
        me.body == json!({"username": "admin", "via": "session", "must_change_password": false}),
        "{}",
        me.body
    );
    // Reads work with the cookie alone.
    let a = send(http.get(srv.api("streams")).header(COOKIE, &cookie)).await?;
    ensure!(a.status == StatusCode::OK, "{}", a.status);

    // A change with the cookie needs the CSRF token.
    let a = send(
        http.post(srv.api("tokens"))
            .header(COOKIE, &cookie)
            .json(&json!({"name": "from-browser"})),
    )
    .await?;
    ensure!(a.status == StatusCode::FORBIDDEN, "{} {}", a.status, a.body);
    ensure!(a.body["error"]["code"] == "csrf", "{}", a.body);
    let a = send(
        http.post(srv.api("tokens"))
            .header(COOKIE, &cookie)
            .header("X-CSRF-Token", "0".repeat(64))
            .json(&json!({"name": "from-browser"})),
    )
    .await?;
    ensure!(
        a.status == StatusCode::FORBIDDEN,
        "wrong token: {}",
        a.status
    );
    let a = send(
        http.post(srv.api("tokens"))
            .header(COOKIE, &cookie)
            .header("X-CSRF-Token", &csrf)
            .json(&json!({"name": "from-browser"})),
    )
    .await?;
    ensure!(a.status == StatusCode::CREATED, "{} {}", a.status, a.body);
    let api_token = a.body["token"].as_str().context("no token")?.to_owned();

    // A bearer token needs no CSRF token.
    let a = send(
        http.post(srv.api("tokens"))
            .bearer_auth(&api_token)
            .json(&json!({"name": "from-script"})),
    )
    .await?;
    ensure!(a.status == StatusCode::CREATED, "{} {}", a.status, a.body);
    let me = send(http.get(srv.api("me")).bearer_auth(&api_token)).await?;
    ensure!(me.body["via"] == "token", "{}", me.body);
    // An unknown session cookie is refused.
    let a = send(
        http.get(srv.api("me"))
            .header(COOKIE, format!("{COOKIE_NAME}=cths_{}", "a".repeat(64))),
    )
    .await?;
    ensure!(a.status == StatusCode::UNAUTHORIZED, "{}", a.status);

    // Failures (each counts against the limit: admin has 5 per 15 minutes).
    // 1. The same code again: a replay.
    let a = send(login_req(
        &http,
        &srv,
        json!({"username": "admin", "password": password, "totp": first_code}),
    ))
    .await?;
    ensure!(a.status == StatusCode::UNAUTHORIZED, "replay: {}", a.status);
    ensure!(
        a.body["error"]["code"] == "invalid_credentials",
        "{}",
        a.body
    );
    let replay_message = a.body["error"]["message"].clone();
    // 2. A wrong password: the same answer.
    let a = send(login_req(
        &http,
        &srv,
        json!({"username": "admin", "password": WRONG_PASSWORD, "totp": "123456"}),
    ))
    .await?;
    ensure!(a.status == StatusCode::UNAUTHORIZED, "{}", a.status);
    ensure!(
        a.body["error"]["code"] == "invalid_credentials",
        "{}",
        a.body
    );
    ensure!(a.body["error"]["message"] == replay_message, "{}", a.body);
    // The right password without a code: asked for the code (not a failure).
    let a = send(login_req(
        &http,
        &srv,
        json!({"username": "admin", "password": password}),
    ))
    .await?;
    ensure!(a.status == StatusCode::UNAUTHORIZED, "{}", a.status);
    ensure!(a.body["error"]["code"] == "totp_required", "{}", a.body);
    ensure!(a.headers.get(SET_COOKIE).is_none());
    // An unknown user: the same answer as a wrong password.
    let a = send(login_req(
        &http,
        &srv,
        json!({"username": "nobody", "password": WRONG_PASSWORD, "totp": "123456"}),
    ))
    .await?;
    ensure!(a.status == StatusCode::UNAUTHORIZED, "{}", a.status);
    ensure!(a.body["error"]["message"] == replay_message, "{}", a.body);

    // A second login with a later step's code: a second, independent session.
    let second_code = app.next_code().await;
    let ok2 = send(login_req(
        &http,
        &srv,
        json!({"username": "admin", "password": password, "totp": second_code}),
    ))
    .await?;
    ensure!(ok2.status == StatusCode::OK, "{} {}", ok2.status, ok2.body);
    let cookie2 = session_cookie(&ok2)?;
    ensure!(cookie2 != cookie);
    let csrf2 = ok2.body["csrf_token"].as_str().context("csrf")?.to_owned();
    ensure!(csrf2 != csrf);
    // One session's CSRF token is not the other's.
    let a = send(
        http.post(srv.api("logout"))
            .header(COOKIE, &cookie2)
            .header("X-CSRF-Token", &csrf),
    )
    .await?;
    ensure!(a.status == StatusCode::FORBIDDEN, "{}", a.status);

    // Logout: the cookie stops working, the other session does not.
    let out = send(
        http.post(srv.api("logout"))
            .header(COOKIE, &cookie2)
            .header("X-CSRF-Token", &csrf2),
    )
    .await?;
    ensure!(out.status == StatusCode::NO_CONTENT, "{}", out.status);
    let cleared = out
        .headers
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    ensure!(
        cleared.starts_with(&format!("{COOKIE_NAME}=;")) && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let a = send(http.get(srv.api("me")).header(COOKIE, &cookie2)).await?;
    ensure!(
        a.status == StatusCode::UNAUTHORIZED,
        "after logout: {}",
        a.status
    );
    let a = send(http.get(srv.api("me")).header(COOKIE, &cookie)).await?;
    ensure!(a.status == StatusCode::OK, "first session: {}", a.status);

    // Brute force on admin: refused with 429 and Retry-After before the 6th guess.
    let mut limited = None;
    for attempt in 0..6 {
        let a = send(login_req(
            &http,
            &srv,
            json!({"username": "admin", "password": WRONG_PASSWORD, "totp": "000000"}),
        ))
        .await?;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((attempt, a));
            break;
        }
        ensure!(a.status == StatusCode::UNAUTHORIZED, "{}", a.status);
    }
    let (attempt, a) = limited.context("6 wrong passwords were never rate limited")?;
    ensure!(attempt <= 5, "{attempt}");
    ensure!(a.body["error"]["code"] == "rate_limited", "{}", a.body);
    let retry: u64 = a
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("no Retry-After")?;
    ensure!((1..=15 * 60).contains(&retry), "{retry}");
    // Even the right password and a fresh code wait now.
    let a = send(login_req(
        &http,
        &srv,
        json!({"username": "admin", "password": password, "totp": app.code_at(app.last_step + 1)}),
    ))
    .await?;
    ensure!(a.status == StatusCode::TOO_MANY_REQUESTS, "{}", a.status);

    // Logout of the first session; the API token still works (not a session).
    let out = send(
        http.post(srv.api("logout"))
            .header(COOKIE, &cookie)
            .header("X-CSRF-Token", &csrf),
    )
    .await?;
    ensure!(out.status == StatusCode::NO_CONTENT, "{}", out.status);
    let a = send(http.get(srv.api("me")).header(COOKIE, &cookie)).await?;
    ensure!(a.status == StatusCode::UNAUTHORIZED, "{}", a.status);
    let a = send(http.get(srv.api("me")).bearer_auth(&api_token)).await?;
    ensure!(a.status == StatusCode::OK, "{}", a.status);

    // The audit log has the logins.
    let db = rusqlite::Connection::open(srv.dir.path().join("data").join("cthulhu.db"))?;
    let mut stmt = db.prepare("SELECT action, actor, coalesce(detail, '') FROM audit")?;
    let rows: Vec<(String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let count = |action: &str| rows.iter().filter(|r| r.0 == action).count();
    ensure!(count("totp.enrolled") == 1, "{rows:?}");
    ensure!(count("login.ok") == 2, "{rows:?}");
    ensure!(count("logout") == 2, "{rows:?}");
    ensure!(count("login.limited") >= 2, "{rows:?}");
    ensure!(count("login.failed") >= 5, "{rows:?}");
    ensure!(count("user.password_change") == 1, "{rows:?}");
    ensure!(
        rows.iter().any(|r| r.1 == "admin" && r.0 == "token.create"),
        "a session's changes are audited under the username: {rows:?}"
    );
    let audit_text = format!("{rows:?}");
    ensure!(!audit_text.contains("nobody"), "unknown names are not kept");

    // No secret in the log: the printed password only in the first start's notice.
    let log = srv.log();
    ensure!(
        log.matches(printed_password.as_str()).count() == 1,
        "password logged"
    );
    ensure!(
        !audit_text.contains(&printed_password),
        "a password in the audit log"
    );
    for secret in [
        WRONG_PASSWORD,
        CHOSEN_PASSWORD,
        &cookie_value,
        &csrf,
        &csrf2,
        &api_token,
    ] {
        ensure!(!log.contains(secret), "a secret is in the log");
        ensure!(!audit_text.contains(secret), "a secret is in the audit log");
    }
    let secret_b32 = uri
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("secret="))
        .unwrap_or("none");
    ensure!(!log.contains(secret_b32), "the TOTP secret is in the log");
    for code in [&first_code, &second_code] {
        ensure!(!contains_code(&log, code), "a TOTP code is in the log");
    }
    ensure!(log.contains("API: login"), "logins are logged");
    Ok(())
}

/// Every endpoint but login refuses anonymous calls, whatever the method.
#[tokio::test]
async fn anonymous_calls_are_refused() -> Result<()> {
    let srv = Cthulhu::start("").await?;
    wait_for_port(srv.http_port, Duration::from_secs(10)).await?;
    let http = Client::new();
    for (method, path) in [
        (Method::GET, "me"),
        (Method::POST, "logout"),
        (Method::GET, "streams"),
        (Method::GET, "tokens"),
        (Method::POST, "tokens"),
        (Method::POST, "reload"),
        (Method::DELETE, "tokens/1"),
    ] {
        let a = send(
            http.request(method.clone(), srv.api(path))
                .json(&json!({"name": "x"})),
        )
        .await?;
        ensure!(
            a.status == StatusCode::UNAUTHORIZED,
            "{method} {path}: {}",
            a.status
        );
    }
    // Login itself answers without a caller (here: bad credentials).
    let a = send(login_req(
        &http,
        &srv,
        json!({"username": "admin", "password": WRONG_PASSWORD}),
    ))
    .await?;
    ensure!(a.status == StatusCode::UNAUTHORIZED, "{}", a.status);
    ensure!(
        a.body["error"]["code"] == "invalid_credentials",
        "{}",
        a.body
    );
    // A malformed body is refused in the API's format.
    let a = send(login_req(&http, &srv, json!({"username": "admin"}))).await?;
    ensure!(a.status == StatusCode::UNPROCESSABLE_ENTITY, "{}", a.status);
    Ok(())
}

/// A printed password (the first start's) must be changed before anything else: every
/// endpoint but `GET /me`, `POST /me/password` and `POST /logout` refuses the session
/// until it is; the change verifies the current password, applies the policy to the
/// new one and ends the user's other sessions.
#[tokio::test]
async fn a_printed_password_must_be_changed_first() -> Result<()> {
    let srv = Cthulhu::start("").await?;
    wait_for_port(srv.http_port, Duration::from_secs(10)).await?;
    let printed = first_password(&srv).await?;
    let token = srv.create_token("ops").await?;
    let http = Client::new();

    // Enrolment and two sessions of admin, both with the printed password.
    let mut app = enrol(&http, &srv, "admin", &printed).await?;
    let (cookie, csrf) = session(&http, &srv, "admin", &printed, &mut app).await?;
    let (other, other_csrf) = session(&http, &srv, "admin", &printed, &mut app).await?;

    // GET /me tells the console to show the form.
    let me = send(http.get(srv.api("me")).header(COOKIE, &cookie)).await?;
    ensure!(me.status == StatusCode::OK, "{} {}", me.status, me.body);
    ensure!(
        me.body == json!({"username": "admin", "via": "session", "must_change_password": true}),
        "{}",
        me.body
    );
    // Everything else: 403 password_change_required, reads and changes alike.
    for (method, path, body) in [
        (Method::GET, "streams", None),
        (Method::GET, "streams/live/main", None),
        (Method::GET, "users", None),
        (Method::GET, "tokens", None),
        (Method::GET, "recordings", None),
        (Method::GET, "events", None),
        (Method::GET, "openapi.json", None),
        (
            Method::POST,
            "tokens",
            Some(json!({"name": "from-browser"})),
        ),
        (Method::POST, "users/admin/password-reset", None),
        (Method::POST, "users/admin/totp-reset", None),
        (Method::POST, "reload", None),
        (Method::DELETE, "tokens/1", None),
    ] {
        let mut req = http
            .request(method.clone(), srv.api(path))
            .header(COOKIE, &cookie)
            .header("X-CSRF-Token", &csrf);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let a = send(req).await?;
        ensure!(
            a.status == StatusCode::FORBIDDEN
                && a.body["error"]["code"] == "password_change_required",
            "{method} {path}: {} {}",
            a.status,
            a.body
        );
        let message = a.body["error"]["message"].as_str().unwrap_or_default();
        ensure!(message.contains("POST /api/v1/me/password"), "{message}");
    }
    // The CSRF check still comes first for a change.
    let a = send(
        http.post(srv.api("tokens"))
            .header(COOKIE, &cookie)
            .json(&json!({"name": "from-browser"})),
    )
    .await?;
    ensure!(a.body["error"]["code"] == "csrf", "{} {}", a.status, a.body);

    // A bearer token is not affected; it has no password to change.
    let a = send(http.get(srv.api("streams")).bearer_auth(&token)).await?;
    ensure!(a.status == StatusCode::OK, "{} {}", a.status, a.body);
    let a = send(http.get(srv.api("me")).bearer_auth(&token)).await?;
    ensure!(a.body["must_change_password"] == false, "{}", a.body);
    let a = send(
        http.post(srv.api("me/password"))
            .bearer_auth(&token)
            .json(&json!({"current": printed, "new": CHOSEN_PASSWORD})),
    )
    .await?;
    ensure!(
        a.status == StatusCode::FORBIDDEN && a.body["error"]["code"] == "session_required",
        "{} {}",
        a.status,
        a.body
    );

    // The change needs the CSRF token like any change made with the cookie.
    let a = send(
        http.post(srv.api("me/password"))
            .header(COOKIE, &cookie)
            .json(&json!({"current": printed, "new": CHOSEN_PASSWORD})),
    )
    .await?;
    ensure!(
        a.status == StatusCode::FORBIDDEN && a.body["error"]["code"] == "csrf",
        "{} {}",
        a.status,
        a.body
    );
    // A wrong current password: 401 (counted by the login rate limit).
    let a = change_password(
        &http,
        &srv,
        &cookie,
        &csrf,
        json!({"current": WRONG_PASSWORD, "new": CHOSEN_PASSWORD}),
    )
    .await?;
    ensure!(
        a.status == StatusCode::UNAUTHORIZED && a.body["error"]["code"] == "invalid_credentials",
        "{} {}",
        a.status,
        a.body
    );
    // A new password the policy refuses: 422 naming `new`.
    for new in ["too short", printed.as_str(), &"x".repeat(257)] {
        let a = change_password(
            &http,
            &srv,
            &cookie,
            &csrf,
            json!({"current": printed, "new": new}),
        )
        .await?;
        ensure!(
            a.status == StatusCode::UNPROCESSABLE_ENTITY
                && a.body["error"]["code"] == "invalid"
                && a.body["error"]["field"] == "new",
            "{new:?}: {} {}",
            a.status,
            a.body
        );
    }
    // A body of the wrong shape.
    let a = change_password(&http, &srv, &cookie, &csrf, json!({"current": printed})).await?;
    ensure!(
        a.status == StatusCode::UNPROCESSABLE_ENTITY,
        "{} {}",
        a.status,
        a.body
    );
    // Still to be changed.
    let a = send(http.get(srv.api("streams")).header(COOKIE, &cookie)).await?;
    ensure!(a.status == StatusCode::FORBIDDEN, "{} {}", a.status, a.body);

    // The change: 204; this session works now, the other one is ended.
    let a = change_password(
        &http,
        &srv,
        &cookie,
        &csrf,
        json!({"current": printed, "new": CHOSEN_PASSWORD}),
    )
    .await?;
    ensure!(
        a.status == StatusCode::NO_CONTENT,
        "{} {}",
        a.status,
        a.body
    );
    let me = send(http.get(srv.api("me")).header(COOKIE, &cookie)).await?;
    ensure!(me.body["must_change_password"] == false, "{}", me.body);
    let a = send(http.get(srv.api("streams")).header(COOKIE, &cookie)).await?;
    ensure!(a.status == StatusCode::OK, "{} {}", a.status, a.body);
    let a = send(
        http.post(srv.api("tokens"))
            .header(COOKIE, &cookie)
            .header("X-CSRF-Token", &csrf)
            .json(&json!({"name": "from-browser"})),
    )
    .await?;
    ensure!(a.status == StatusCode::CREATED, "{} {}", a.status, a.body);
    for (method, path) in [(Method::GET, "me"), (Method::GET, "streams")] {
        let a = send(http.request(method, srv.api(path)).header(COOKIE, &other)).await?;
        ensure!(
            a.status == StatusCode::UNAUTHORIZED,
            "the other session: {} {}",
            a.status,
            a.body
        );
    }
    let a = send(
        http.post(srv.api("logout"))
            .header(COOKIE, &other)
            .header("X-CSRF-Token", &other_csrf),
    )
    .await?;
    ensure!(a.status == StatusCode::UNAUTHORIZED, "{}", a.status);

    // The printed password is refused at login; the chosen one logs in.
    let a = send(login_req(
        &http,
        &srv,
        json!({"username": "admin", "password": printed, "totp": app.code_at(app.last_step + 1)}),
    ))
    .await?;
    ensure!(
        a.status == StatusCode::UNAUTHORIZED && a.body["error"]["code"] == "invalid_credentials",
        "{} {}",
        a.status,
        a.body
    );
    let (fresh, fresh_csrf) = session(&http, &srv, "admin", CHOSEN_PASSWORD, &mut app).await?;
    let me = send(http.get(srv.api("me")).header(COOKIE, &fresh)).await?;
    ensure!(
        me.body == json!({"username": "admin", "via": "session", "must_change_password": false}),
        "{}",
        me.body
    );
    // The first session is still there.
    let a = send(http.get(srv.api("me")).header(COOKIE, &cookie)).await?;
    ensure!(a.status == StatusCode::OK, "{}", a.status);

    // Guessing the current password with a session: limited like logins (5 failures
    // per user in 15 minutes, counted afresh since the last login), 429 with
    // Retry-After.
    let mut limited = None;
    for attempt in 0..6 {
        let a = change_password(
            &http,
            &srv,
            &fresh,
            &fresh_csrf,
            json!({"current": WRONG_PASSWORD, "new": "another long passphrase"}),
        )
        .await?;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((attempt, a));
            break;
        }
        ensure!(
            a.status == StatusCode::UNAUTHORIZED,
            "{} {}",
            a.status,
            a.body
        );
    }
    let (attempt, a) = limited.context("wrong current passwords were never rate limited")?;
    ensure!(attempt == 5, "limited after {attempt} failures");
    ensure!(a.body["error"]["code"] == "rate_limited", "{}", a.body);
    let retry: u64 = a
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("no Retry-After")?;
    ensure!((1..=15 * 60).contains(&retry), "{retry}");

    // The audit log has the change and the failures, never a password.
    let db = rusqlite::Connection::open(srv.dir.path().join("data").join("cthulhu.db"))?;
    let mut stmt =
        db.prepare("SELECT action, actor, coalesce(target, ''), coalesce(detail, '') FROM audit")?;
    let rows: Vec<(String, String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let count = |action: &str| rows.iter().filter(|r| r.0 == action).count();
    ensure!(count("user.password_change") == 1, "{rows:?}");
    ensure!(count("password_change.failed") == 6, "{rows:?}");
    ensure!(count("password_change.limited") == 1, "{rows:?}");
    ensure!(
        rows.iter().any(|r| r.0 == "user.password_change"
            && r.1 == "admin"
            && r.3.contains("\"sessions_ended\":1")),
        "{rows:?}"
    );
    let audit_text = format!("{rows:?}");
    let log = srv.log();
    for secret in [CHOSEN_PASSWORD, WRONG_PASSWORD, "another long passphrase"] {
        ensure!(!audit_text.contains(secret), "a password in the audit log");
        ensure!(!log.contains(secret), "a password in the log");
    }
    ensure!(
        !audit_text.contains(&printed),
        "a password in the audit log"
    );
    ensure!(
        log.contains("API: password changed"),
        "the change is logged"
    );
    Ok(())
}
