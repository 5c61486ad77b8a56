//! The HTTP API over HTTPS (`[http] tls_cert` and `tls_key`) against the real binary,
//! with a certificate from a throwaway CA: token and session calls over HTTPS, the
//! `Secure` session cookie, curl (OpenSSL) as a peer we did not write, and clients
//! that fail their handshake (plain HTTP, garbage, an untrusting client, a silent
//! one) without harm to the listener.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use common::Cthulhu;
use cthulhu_testkit::{ChildGuard, TestCa, free_port, wait_for_port};
use reqwest::header::SET_COOKIE;
use reqwest::{Certificate, Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use totp_rs::Totp;

/// The server's handshake timeout (`api::tls::HANDSHAKE_TIMEOUT`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server whose API speaks HTTPS with a certificate of `ca`.
struct TlsServer {
    srv: Cthulhu,
    ca: TestCa,
    /// Trusts `ca` only.
    http: Client,
}

impl TlsServer {
    /// Starts the binary with `[http] tls_cert` and `tls_key` given relative to the
    /// config file (`certs/cert.pem`, the leaf and the CA: a chain; `certs/key.pem`).
    async fn start() -> Result<Self> {
        let ca = TestCa::new("Cthulhu HTTPS test CA")?;
        let leaf = ca.issue_localhost()?;
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("certs"))?;
        std::fs::write(
            dir.path().join("certs/cert.pem"),
            leaf.cert_pem + &ca.cert_pem(),
        )?;
        std::fs::write(dir.path().join("certs/key.pem"), &leaf.key_pem)?;
        let (port, srt_port, http_port) = (free_port(), common::free_udp_port(), free_port());
        let config = format!(
            "[server]\ndata_dir = \"{}\"\nlog = \"info,cthulhu=debug\"\n\
             [rtmp]\nlisten = \"127.0.0.1:{port}\"\n\
             [srt]\nlisten = \"127.0.0.1:{srt_port}\"\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             tls_cert = \"certs/cert.pem\"\ntls_key = \"certs/key.pem\"\n",
            dir.path().join("data").display()
        );
        let path = dir.path().join("cthulhu.toml");
        std::fs::write(&path, config)?;
        let mut cmd = Command::new(common::bin());
        cmd.arg("--config").arg(&path).stdin(Stdio::null());
        let proc =
            ChildGuard::spawn_with_log("cthulhu-server", cmd, &dir.path().join("server.log"))?;
        wait_for_port(http_port, Duration::from_secs(10))
            .await
            .with_context(|| format!("server did not listen: {}", proc.log_tail()))?;
        let http = trusting(&ca, |b| b)?;
        let srv = Cthulhu {
            proc,
            port,
            srt_port,
            http_port,
            restarts: 0,
            dir,
        };
        Ok(Self { srv, ca, http })
    }

    /// Another client trusting the CA, built with `f`.
    fn client(
        &self,
        f: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Result<Client> {
        trusting(&self.ca, f)
    }

    /// `https://127.0.0.1:HTTP_PORT/api/v1/PATH` (the certificate names the address).
    fn api(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/api/v1/{path}", self.srv.http_port)
    }

    /// `GET /api/v1/me` with `token` over HTTPS: the status and the body.
    async fn me(&self, token: &str) -> Result<(StatusCode, Value)> {
        let resp = self
            .http
            .get(self.api("me"))
            .bearer_auth(token)
            .send()
            .await?;
        Ok((resp.status(), resp.json().await?))
    }
}

/// A client that trusts `ca` only, built with `f`.
fn trusting(
    ca: &TestCa,
    f: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<Client> {
    let root = Certificate::from_pem(ca.cert_pem().as_bytes())?;
    Ok(f(Client::builder().tls_certs_only([root])).build()?)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::test]
async fn the_api_over_https_with_a_token_a_secure_session_cookie_and_curl() -> Result<()> {
    let tls = TlsServer::start().await?;
    let srv = &tls.srv;
    srv.wait_for_log("HTTP API listening", Duration::from_secs(10))
        .await?;
    ensure!(
        srv.log()
            .lines()
            .any(|l| l.contains("HTTP API listening") && l.contains("tls=true")),
        "{}",
        srv.log()
    );

    // A token over HTTPS.
    let token = srv.create_token("https").await?;
    let (status, body) = tls.me(&token).await?;
    ensure!(status == StatusCode::OK, "{status} {body}");
    ensure!(body["via"] == "token", "{body}");
    let (status, _) = tls.me("not-a-token").await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "{status}");

    // curl (OpenSSL) verifying the chain against the CA, negotiating HTTP/1.1.
    let out = Command::new("curl")
        .args(["-sS", "-v", "--cacert"])
        .arg(tls.ca.cert_path())
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(tls.api("me"))
        .output()
        .await
        .context("running curl")?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    ensure!(out.status.success(), "curl: {stderr}");
    ensure!(stdout.contains(r#""via":"token""#), "{stdout}");
    ensure!(stderr.contains("HTTP/1.1 200"), "{stderr}");

    // A console login: enrolment, then password and TOTP code; the cookie is Secure.
    srv.wait_for_log("with the password: ", Duration::from_secs(10))
        .await?;
    let password = srv
        .log()
        .lines()
        .find_map(|l| l.split("with the password: ").nth(1))
        .map(|p| p.trim().to_owned())
        .context("admin password not printed")?;
    let login = |body: Value| tls.http.post(tls.api("login")).json(&body).send();
    let enrol: Value = login(json!({"username": "admin", "password": password}))
        .await?
        .json()
        .await?;
    let uri = enrol["enrol"]["otpauth_uri"]
        .as_str()
        .context("no otpauth_uri")?;
    let totp = Totp::from_url(uri).map_err(|e| anyhow::anyhow!("otpauth URI: {e}"))?;
    let code = totp.generate(now_secs() / 30 * 30).to_string();
    let ok = login(json!({"username": "admin", "password": password, "totp": code})).await?;
    ensure!(ok.status() == StatusCode::OK, "{}", ok.status());
    let cookie = ok
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("cthulhu_session="))
        .context("no session cookie")?
        .to_owned();
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    ensure!(attrs.contains(&"Secure"), "HTTPS, so Secure: {cookie}");
    ensure!(attrs.contains(&"HttpOnly"), "{cookie}");
    let me: Value = tls
        .http
        .get(tls.api("me"))
        .header(reqwest::header::COOKIE, attrs[0])
        .send()
        .await?
        .json()
        .await?;
    ensure!(me["via"] == "session", "{me}");
    Ok(())
}

#[tokio::test]
async fn failed_handshakes_close_only_their_own_connection() -> Result<()> {
    let tls = TlsServer::start().await?;
    let token = tls.srv.create_token("https").await?;
    let addr = ("127.0.0.1", tls.srv.http_port);

    // A silent client: it holds its own connection only, until the handshake timeout.
    let mut silent = TcpStream::connect(addr).await?;
    let silent_since = Instant::now();
    // Connections in mid-handshake (the first bytes of a ClientHello) too.
    let mut partial = TcpStream::connect(addr).await?;
    partial.write_all(&[0x16, 0x03, 0x01]).await?;

    // Plain HTTP to the HTTPS port: answered 400 with a hint, by reqwest and raw.
    let resp = Client::new()
        .get(format!("http://127.0.0.1:{}/api/v1/me", tls.srv.http_port))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::BAD_REQUEST,
        "{}",
        resp.status()
    );
    let text = resp.text().await?;
    ensure!(text.contains("use an https:// URL"), "{text}");
    let mut raw = TcpStream::connect(addr).await?;
    raw.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_string(&mut answer))
        .await
        .context("the plain-HTTP answer did not come")??;
    ensure!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );

    // Garbage that starts like a TLS record: closed (an alert at most).
    let mut garbage = TcpStream::connect(addr).await?;
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7, 8])
        .await?;
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut sink)).await;
    ensure!(closed.is_ok(), "garbage was not closed");

    // A TLS client that does not trust the CA fails; so does one asking for another
    // name than the certificate's.
    let untrusting = Client::builder()
        .tls_certs_only(Vec::<Certificate>::new())
        .build()?;
    ensure!(untrusting.get(tls.api("me")).send().await.is_err());
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--cacert"])
        .arg(tls.ca.cert_path())
        .args([
            "--resolve",
            &format!("elsewhere.example:{}:127.0.0.1", tls.srv.http_port),
        ])
        .arg(format!(
            "https://elsewhere.example:{}/api/v1/me",
            tls.srv.http_port
        ))
        .output()
        .await?;
    ensure!(!out.status.success(), "a wrong name must fail");

    // Meanwhile HTTPS works, on kept-alive connections as on new ones.
    let fresh = tls.client(|b| b.pool_max_idle_per_host(0))?;
    for _ in 0..3 {
        let (status, body) = tls.me(&token).await?;
        ensure!(status == StatusCode::OK, "{status} {body}");
        let resp = fresh.get(tls.api("me")).bearer_auth(&token).send().await?;
        ensure!(resp.status() == StatusCode::OK, "{}", resp.status());
    }

    // The silent and the partial client are closed after the handshake timeout.
    for (name, conn) in [("silent", &mut silent), ("partial", &mut partial)] {
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(
            HANDSHAKE_TIMEOUT + Duration::from_secs(5),
            conn.read(&mut buf),
        )
        .await
        .with_context(|| format!("the {name} client was not closed"))?;
        ensure!(matches!(r, Ok(0) | Err(_)), "{name}: {r:?}");
    }
    let held = silent_since.elapsed();
    ensure!(
        held >= HANDSHAKE_TIMEOUT - Duration::from_secs(1),
        "closed too early: {held:?}"
    );

    let (status, _) = tls.me(&token).await?;
    ensure!(status == StatusCode::OK, "{status}");
    let mut srv = tls.srv;
    ensure!(srv.proc.is_running(), "the server died");
    let log = srv.log();
    for needle in [
        "TLS handshake failed",
        "plain HTTP request",
        "TLS handshake timed out",
    ] {
        ensure!(log.contains(needle), "{needle:?} not logged:\n{log}");
    }

    // Graceful shutdown over TLS, and a start on the same files.
    srv.restart().await?;
    wait_for_port(srv.http_port, Duration::from_secs(10)).await?;
    let resp = trusting(&tls.ca, |b| b)?
        .get(format!("https://127.0.0.1:{}/api/v1/me", srv.http_port))
        .bearer_auth(&token)
        .send()
        .await?;
    ensure!(resp.status() == StatusCode::OK, "{}", resp.status());
    Ok(())
}

#[tokio::test]
async fn check_names_the_tls_setting_at_fault() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cthulhu.toml");
    let check = |text: String| {
        std::fs::write(&path, text)?;
        let out = std::process::Command::new(common::bin())
            .args(["check", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()?;
        anyhow::Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (ok, err) = check("[http]\ntls_cert = \"cert.pem\"\n".to_owned())?;
    ensure!(!ok, "{err}");
    ensure!(
        err.contains(&format!(
            "{}:2:12: http.tls_cert: needs http.tls_key too",
            path.display()
        )),
        "{err}"
    );
    let (ok, err) = check("[http]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n".to_owned())?;
    ensure!(!ok, "{err}");
    ensure!(
        err.contains(&format!(
            "{}:2:12: http.tls_cert: cannot read {}",
            path.display(),
            dir.path().join("cert.pem").display()
        )),
        "{err}"
    );
    Ok(())
}
