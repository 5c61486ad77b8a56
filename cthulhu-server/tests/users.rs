//! Console users against the real binary: the users API (create, list, password and
//! TOTP reset, delete, the last admin kept), the `admin reset-password` /
//! `admin reset-totp` commands, generated passwords marked to be changed,
//! `--log-format json`, and no password in the log.

mod common;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{Cthulhu, bin, call};
use cthulhu_testkit::wait_for_port;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::process::Command;

/// `POST /api/v1/login` without a code.
async fn login(
    http: &Client,
    srv: &Cthulhu,
    username: &str,
    password: &str,
) -> Result<(StatusCode, Value)> {
    call(
        http,
        srv,
        None,
        Method::POST,
        "login",
        Some(json!({ "username": username, "password": password })),
    )
    .await
}

/// Whether a login answer says the password was right: the enrolment answer, or
/// `totp_required` for a user who enrolled.
fn password_accepted(status: StatusCode, body: &Value) -> bool {
    (status == StatusCode::OK && body["enrol"]["otpauth_uri"].is_string())
        || (status == StatusCode::UNAUTHORIZED && body["error"]["code"] == "totp_required")
}

/// Whether the store marks `username`'s password to be changed.
fn must_change(srv: &Cthulhu, username: &str) -> Result<bool> {
    let db = rusqlite::Connection::open(srv.dir.path().join("data").join("cthulhu.db"))?;
    Ok(db.query_row(
        "SELECT must_change_password FROM users WHERE username = ?1",
        [username],
        |r| r.get(0),
    )?)
}

/// Runs `cthulhu-server admin ARGS --config FILE`: (success, stdout, stderr).
async fn admin_cli(srv: &Cthulhu, args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new(bin())
        .arg("admin")
        .args(args)
        .arg("--config")
        .arg(srv.config_path())
        .stdin(Stdio::null())
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn users_api_and_admin_cli() -> Result<()> {
    let srv = Cthulhu::start("").await?;
    wait_for_port(srv.http_port, Duration::from_secs(10)).await?;
    let token = srv.create_token("ops").await?;
    let t = Some(token.as_str());
    let http = Client::new();
    let mut secrets = Vec::new();

    // Anonymous: 401.
    let (status, _) = call(&http, &srv, None, Method::GET, "users", None).await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "{status}");

    // Create: the password comes once.
    let (status, made) = call(
        &http,
        &srv,
        t,
        Method::POST,
        "users",
        Some(json!({ "username": "alice" })),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status}: {made}");
    ensure!(made["username"] == "alice" && made["id"].is_i64(), "{made}");
    let first = made["password"].as_str().context("no password")?.to_owned();
    ensure!(first.len() >= 12, "{first}");
    secrets.push(first.clone());
    // The administrator saw it: alice must replace it; so must the first start's admin.
    ensure!(
        must_change(&srv, "alice")?,
        "a created user's password is to be changed"
    );
    ensure!(
        must_change(&srv, "admin")?,
        "the printed password is to be changed"
    );

    // A duplicate in another case, and invalid names.
    for (name, want) in [
        ("ALICE", StatusCode::CONFLICT),
        ("bad name", StatusCode::UNPROCESSABLE_ENTITY),
        ("", StatusCode::UNPROCESSABLE_ENTITY),
        (&"x".repeat(65), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (status, body) = call(
            &http,
            &srv,
            t,
            Method::POST,
            "users",
            Some(json!({ "username": name })),
        )
        .await?;
        ensure!(status == want, "{name:?}: {status}: {body}");
    }

    // The list: no hashes, no secrets.
    let (status, list) = call(&http, &srv, t, Method::GET, "users", None).await?;
    ensure!(status == StatusCode::OK, "{status}: {list}");
    let users = list["users"].as_array().context("no users")?;
    ensure!(users.len() == 2, "{list}");
    for u in users {
        let mut keys: Vec<&str> = u
            .as_object()
            .context("a user is an object")?
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        ensure!(
            keys == [
                "created_at",
                "disabled",
                "id",
                "role",
                "totp_enabled",
                "username"
            ],
            "{u}"
        );
    }
    let text = list.to_string();
    ensure!(!text.contains(&first) && !text.contains("argon2"), "{text}");
    ensure!(
        users
            .iter()
            .any(|u| u["username"] == "alice" && u["totp_enabled"] == false),
        "{list}"
    );

    // The new user's password goes as far as the enrolment.
    let (status, body) = login(&http, &srv, "alice", &first).await?;
    ensure!(
        status == StatusCode::OK && body["enrol"]["otpauth_uri"].is_string(),
        "{status}: {body}"
    );

    // Password reset: the old one fails, the new one works.
    let (status, reset) = call(
        &http,
        &srv,
        t,
        Method::POST,
        "users/alice/password-reset",
        None,
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status}: {reset}");
    let second = reset["password"]
        .as_str()
        .context("no password")?
        .to_owned();
    ensure!(second != first && second.len() >= 12, "{second}");
    secrets.push(second.clone());
    ensure!(
        must_change(&srv, "alice")?,
        "a reset password is to be changed"
    );
    let (status, body) = login(&http, &srv, "alice", &first).await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "{status}: {body}");
    let (status, body) = login(&http, &srv, "alice", &second).await?;
    ensure!(password_accepted(status, &body), "{status}: {body}");

    // TOTP reset; unknown users are 404.
    let (status, body) = call(&http, &srv, t, Method::POST, "users/alice/totp-reset", None).await?;
    ensure!(status == StatusCode::NO_CONTENT, "{status}: {body}");
    for path in ["users/nobody/totp-reset", "users/nobody/password-reset"] {
        let (status, body) = call(&http, &srv, t, Method::POST, path, None).await?;
        ensure!(status == StatusCode::NOT_FOUND, "{path}: {status}: {body}");
    }

    // Delete; then gone.
    let (status, body) = call(&http, &srv, t, Method::DELETE, "users/alice", None).await?;
    ensure!(status == StatusCode::NO_CONTENT, "{status}: {body}");
    let (status, body) = call(&http, &srv, t, Method::DELETE, "users/alice", None).await?;
    ensure!(status == StatusCode::NOT_FOUND, "{status}: {body}");
    let (_, list) = call(&http, &srv, t, Method::GET, "users", None).await?;
    ensure!(list["users"].as_array().map(Vec::len) == Some(1), "{list}");

    // The last admin stays.
    let (status, body) = call(&http, &srv, t, Method::DELETE, "users/admin", None).await?;
    ensure!(status == StatusCode::CONFLICT, "{status}: {body}");

    // The CLI, while the server runs: a new admin password that logs in.
    let (ok, out, err) = admin_cli(&srv, &["reset-password"]).await?;
    ensure!(ok, "reset-password failed: {err}");
    ensure!(out.len() >= 12 && !out.contains(' '), "{out:?}");
    secrets.push(out.clone());
    let (status, body) = login(&http, &srv, "admin", &out).await?;
    ensure!(password_accepted(status, &body), "{status}: {body}");
    ensure!(
        must_change(&srv, "admin")?,
        "a password the CLI printed is to be changed"
    );
    let (ok, _, err) = admin_cli(&srv, &["reset-totp", "--username", "admin"]).await?;
    ensure!(ok, "reset-totp failed: {err}");

    // An unknown user: a clear error, a non-zero exit.
    for cmd in ["reset-password", "reset-totp"] {
        let (ok, out, err) = admin_cli(&srv, &[cmd, "--username", "nobody"]).await?;
        ensure!(!ok && out.is_empty(), "{cmd}: {out}");
        ensure!(err.contains("no user named \"nobody\""), "{cmd}: {err}");
    }

    // The server log has no generated password.
    let log = srv.log();
    for secret in &secrets {
        ensure!(
            !log.contains(secret.as_str()),
            "a password in the log:\n{log}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn json_log_format() -> Result<()> {
    let srv = Cthulhu::start_with_args("", &["--log-format", "json"]).await?;
    wait_for_port(srv.http_port, Duration::from_secs(10)).await?;
    // Something logged at info after the start: a login refused.
    let http = Client::new();
    let (status, _) = login(&http, &srv, "admin", "not-the-password-4711").await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "{status}");
    srv.wait_for_log("\"level\":\"INFO\"", Duration::from_secs(10))
        .await?;
    let log = srv.log();
    let mut objects = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        if !line.starts_with('{') {
            // Plain text is only what the server prints on stdout for the operator
            // (the first start's banners), never a log line.
            ensure!(
                ![" TRACE ", " DEBUG ", " INFO ", " WARN ", " ERROR "]
                    .iter()
                    .any(|level| line.contains(level)),
                "a text log line: {line}"
            );
            continue;
        }
        let v: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        ensure!(v.is_object(), "{line}");
        ensure!(v["fields"]["message"].is_string(), "{line}");
        ensure!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        objects += 1;
    }
    ensure!(objects >= 3, "too few log lines:\n{log}");
    ensure!(!log.contains("not-the-password-4711"), "{log}");
    Ok(())
}

/// Logs `username` in with a code of the otpauth URI `uri`: (cookie pair, CSRF token).
async fn session(
    http: &Client,
    srv: &Cthulhu,
    username: &str,
    password: &str,
    uri: &str,
) -> Result<(String, String)> {
    let totp = totp_rs::Totp::from_url(uri).map_err(|e| anyhow::anyhow!("otpauth URI: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let resp = http
        .post(srv.api("login"))
        .json(&json!({ "username": username, "password": password, "totp": totp.generate(now).to_string() }))
        .send()
        .await?;
    let status = resp.status();
    let cookie = resp
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let body: Value = resp.json().await?;
    ensure!(status == StatusCode::OK, "{status}: {body}");
    let csrf = body["csrf_token"].as_str().context("no csrf_token")?;
    Ok((cookie.context("no cookie")?, csrf.to_owned()))
}

/// `GET /api/v1/me` with the session cookie `cookie`.
async fn me(http: &Client, srv: &Cthulhu, cookie: &str) -> Result<StatusCode> {
    Ok(http
        .get(srv.api("me"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await?
        .status())
}

/// The password bob chooses.
const BOB_PASSWORD: &str = "bob's own long passphrase";

#[tokio::test]
async fn sessions_need_csrf_and_end_on_resets() -> Result<()> {
    let srv = Cthulhu::start("").await?;
    wait_for_port(srv.http_port, Duration::from_secs(10)).await?;
    let token = srv.create_token("ops").await?;
    let t = Some(token.as_str());
    let http = Client::new();
    let (status, made) = call(
        &http,
        &srv,
        t,
        Method::POST,
        "users",
        Some(json!({ "username": "bob" })),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status}: {made}");
    let password = made["password"].as_str().context("no password")?.to_owned();

    // bob enrols and logs in.
    let (_, enrol) = login(&http, &srv, "bob", &password).await?;
    let uri = enrol["enrol"]["otpauth_uri"].as_str().context("no uri")?;
    let (cookie, csrf) = session(&http, &srv, "bob", &password, uri).await?;
    ensure!(me(&http, &srv, &cookie).await? == StatusCode::OK);

    // The administrator saw bob's password: bob replaces it before anything else.
    let resp = http
        .get(srv.api("users"))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await?;
    ensure!(resp.status() == StatusCode::FORBIDDEN, "{}", resp.status());
    let body: Value = resp.json().await?;
    ensure!(
        body["error"]["code"] == "password_change_required",
        "{body}"
    );
    let resp = http
        .post(srv.api("me/password"))
        .header(reqwest::header::COOKIE, &cookie)
        .header("X-CSRF-Token", &csrf)
        .json(&json!({ "current": password, "new": BOB_PASSWORD }))
        .send()
        .await?;
    ensure!(resp.status() == StatusCode::NO_CONTENT, "{}", resp.status());
    ensure!(!must_change(&srv, "bob")?);
    let password = BOB_PASSWORD.to_owned();

    // A session lists; it changes only with the CSRF token.
    let status = http
        .get(srv.api("users"))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await?
        .status();
    ensure!(status == StatusCode::OK, "{status}");
    let resp = http
        .post(srv.api("users"))
        .header(reqwest::header::COOKIE, &cookie)
        .json(&json!({ "username": "carol" }))
        .send()
        .await?;
    ensure!(resp.status() == StatusCode::FORBIDDEN, "{}", resp.status());
    let resp = http
        .post(srv.api("users"))
        .header(reqwest::header::COOKIE, &cookie)
        .header("X-CSRF-Token", &csrf)
        .json(&json!({ "username": "carol" }))
        .send()
        .await?;
    ensure!(resp.status() == StatusCode::CREATED, "{}", resp.status());

    // A TOTP reset ends the session; the next login enrols again.
    let (status, _) = call(&http, &srv, t, Method::POST, "users/bob/totp-reset", None).await?;
    ensure!(status == StatusCode::NO_CONTENT, "{status}");
    ensure!(me(&http, &srv, &cookie).await? == StatusCode::UNAUTHORIZED);
    let (status, enrol) = login(&http, &srv, "bob", &password).await?;
    ensure!(status == StatusCode::OK, "{status}: {enrol}");
    let uri = enrol["enrol"]["otpauth_uri"].as_str().context("no uri")?;
    let (cookie, _) = session(&http, &srv, "bob", &password, uri).await?;
    ensure!(me(&http, &srv, &cookie).await? == StatusCode::OK);

    // A password reset ends it too; TOTP stays enabled.
    let (status, reset) = call(
        &http,
        &srv,
        t,
        Method::POST,
        "users/bob/password-reset",
        None,
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status}: {reset}");
    ensure!(me(&http, &srv, &cookie).await? == StatusCode::UNAUTHORIZED);
    ensure!(
        must_change(&srv, "bob")?,
        "a reset password is to be changed again"
    );
    let new = reset["password"].as_str().context("no password")?;
    let (status, body) = login(&http, &srv, "bob", new).await?;
    ensure!(
        status == StatusCode::UNAUTHORIZED && body["error"]["code"] == "totp_required",
        "{status}: {body}"
    );
    let (_, list) = call(&http, &srv, t, Method::GET, "users", None).await?;
    ensure!(
        list["users"].as_array().is_some_and(|u| u
            .iter()
            .any(|u| u["username"] == "bob" && u["totp_enabled"] == true)),
        "{list}"
    );
    Ok(())
}
