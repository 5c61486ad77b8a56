//! The command line: `check`, `probe` and the embedded-default first start.

mod common;

use std::process::Stdio;
use std::time::Duration;

use anyhow::Result;
use common::{Cthulhu, bin, strip_ansi};
use cthulhu_testkit::{ChildGuard, Nginx, TestCa, free_port, wait_for_port};
use tokio::process::Command;

async fn run(args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), strip_ansi(&text)))
}

#[tokio::test]
async fn check_accepts_good_and_locates_bad_configs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[rtmp]\nlisten = \"127.0.0.1:1935\"\n[[streams]]\npath = \"live/studio\"\nkey = \"k1\"\n[[streams.push]]\nname = \"yt\"\nurl = \"rtmp://a.rtmp.youtube.com/live2/xxxx\"\n",
    )?;
    let (ok, text) = run(&["check", "--config", good.to_str().unwrap_or_default()]).await?;
    assert!(ok, "{text}");
    assert!(
        text.contains("OK (1 stream(s), 1 destination(s))"),
        "{text}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[rtmp]\nlisten = \"127.0.0.1:1935\"\n[[streams]]\npath = \"live/studio\"\nkey = \"k1\"\n[[streams.push]]\nname = \"yt\"\nurl = \"http://a.example/live2/secret-dest-key\"\n",
    )?;
    let (ok, text) = run(&["check", "--config", bad.to_str().unwrap_or_default()]).await?;
    assert!(!ok);
    assert!(text.contains("bad.toml:8:"), "names file and line: {text}");
    assert!(
        text.contains("streams[0].push[0].url"),
        "names the key: {text}"
    );
    assert!(!text.contains("secret-dest-key"), "leaks the key: {text}");

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[rtmp]\nlisten = \"127.0.0.1:1935\"\nchunk = 5\n")?;
    let (ok, text) = run(&["check", "--config", unknown.to_str().unwrap_or_default()]).await?;
    assert!(!ok);
    assert!(
        text.contains("unknown.toml:3:") && text.contains("chunk"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn probe_reports_success_refusal_and_failure() -> Result<()> {
    let nginx = Nginx::start_rtmp_debug(free_port()).await?;
    let (ok, text) = run(&["probe", &nginx.url("probe-test")]).await?;
    assert!(ok, "{text}");
    assert!(text.contains("OK: publish accepted"), "{text}");
    assert!(!text.contains("probe-test"), "key printed: {text}");
    // The command sequence ingest platforms expect, as nginx-rtmp received it (nginx
    // may log the last ones a moment after the probe exits).
    for _ in 0..50 {
        if nginx.amf_commands().iter().any(|c| c == "deletestream") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        nginx.amf_commands(),
        [
            "connect",
            "releasestream",
            "fcpublish",
            "createstream",
            "publish",
            "fcunpublish",
            "deletestream"
        ],
        "commands nginx received"
    );

    // Our own server refuses a wrong key: the exact refusal is reported.
    let srv = Cthulhu::start("[[streams]]\npath = \"live/studio\"\nkey = \"right-key\"\n").await?;
    let (ok, text) = run(&["probe", &srv.url("wrong-key")]).await?;
    assert!(!ok);
    assert!(
        text.contains("REFUSED: NetStream.Publish.Unauthorized"),
        "{text}"
    );

    let closed = free_port();
    let (ok, text) = run(&[
        "probe",
        "--timeout",
        "3",
        &format!("rtmp://127.0.0.1:{closed}/live/x"),
    ])
    .await?;
    assert!(!ok);
    assert!(text.contains("FAILED"), "{text}");
    Ok(())
}

/// No arguments: a working proxy on defaults; the key and the admin password are
/// printed once, the key is reused, and the API on 127.0.0.1:8080 wants a token.
#[tokio::test]
async fn first_start_creates_and_keeps_a_random_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let start = || {
        let mut cmd = Command::new(bin());
        cmd.current_dir(dir.path()).stdin(Stdio::null());
        cmd
    };
    // The embedded default listens on 0.0.0.0:1935.
    let mut first = ChildGuard::spawn_with_log("first", start(), &dir.path().join("first.log"))?;
    wait_for_port(1935, Duration::from_secs(10)).await?;
    // The notices come once the listeners are bound, just after the port opens.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !strip_ansi(&first.log()).contains("with the password: ")
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = strip_ansi(&first.log());
    let key = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("Stream key: "))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no key printed:\n{log}"))?;
    assert!(key.len() >= 24, "key too short");
    let password = log
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Cthulhu created the console user admin with the password: ")
        })
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no admin password printed:\n{log}"))?;
    assert!(password.len() >= 16, "password too short");
    wait_for_port(8080, Duration::from_secs(10)).await?;
    let resp = reqwest::get("http://127.0.0.1:8080/api/v1/streams").await?;
    assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert!(
        log.contains("rtmp://<this machine's address>:1935/live"),
        "{log}"
    );
    // The key works for publishing.
    let mut publisher = cthulhu_testkit::Ffmpeg::publish_test_pattern(
        &format!("rtmp://127.0.0.1:1935/live/{key}"),
        &cthulhu_testkit::PublishOptions::seconds(2.0),
    )
    .await?;
    publisher.wait_success(Duration::from_secs(20)).await?;
    assert!(strip_ansi(&first.log()).contains("Published stream=live/main"));
    first.kill().await?;
    assert!(dir.path().join("cthulhu-data/cthulhu.db").is_file());

    let mut second = ChildGuard::spawn_with_log("second", start(), &dir.path().join("second.log"))?;
    wait_for_port(1935, Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = strip_ansi(&second.log());
    assert!(!log.contains(&key), "key shown again:\n{log}");
    assert!(!log.contains(&password), "password shown again:\n{log}");
    // The stored key still publishes.
    let mut publisher = cthulhu_testkit::Ffmpeg::publish_test_pattern(
        &format!("rtmp://127.0.0.1:1935/live/{key}"),
        &cthulhu_testkit::PublishOptions::seconds(1.0),
    )
    .await?;
    publisher.wait_success(Duration::from_secs(20)).await?;
    assert!(strip_ansi(&second.log()).contains("Published stream=live/main"));
    assert!(!strip_ansi(&first.log()).contains(&format!("password={password}")));
    second.kill().await?;
    Ok(())
}

/// `probe --tls-ca-file`: an RTMPS server signed by a private CA is accepted with the
/// CA's file and refused without it; the option makes no sense for rtmp://.
#[tokio::test]
async fn probe_trusts_a_private_ca_with_tls_ca_file() -> Result<()> {
    let ca = TestCa::new("Cthulhu probe test CA")?;
    let cert = ca.issue_localhost()?;
    let nginx = Nginx::start_rtmps(free_port(), free_port(), &cert.cert_pem, &cert.key_pem).await?;
    let url = nginx.rtmps_url("probe-secret");
    let ca_path = ca.cert_path().display().to_string();

    let (ok, text) = run(&["probe", "--tls-ca-file", &ca_path, &url]).await?;
    assert!(ok, "{text}");
    assert!(text.contains("OK: publish accepted"), "{text}");
    assert!(!text.contains("probe-secret"), "key printed: {text}");

    let (ok, text) = run(&["probe", "--timeout", "5", &url]).await?;
    assert!(!ok);
    assert!(
        text.contains("FAILED: tls: localhost: invalid peer certificate: UnknownIssuer"),
        "{text}"
    );

    let (ok, text) = run(&["probe", "--tls-ca-file", "/nonexistent/ca.pem", &url]).await?;
    assert!(!ok);
    assert!(
        text.contains("FAILED: tls: CA file /nonexistent/ca.pem: cannot read it"),
        "{text}"
    );

    let (ok, text) = run(&["probe", "--tls-ca-file", &ca_path, &nginx.url("x")]).await?;
    assert!(!ok);
    assert!(
        text.contains("--tls-ca-file only applies to rtmps:// URLs"),
        "{text}"
    );
    Ok(())
}

/// `check` also loads the CA files the destinations name.
#[tokio::test]
async fn check_reads_tls_ca_files() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new("Cthulhu check test CA")?;
    std::fs::copy(ca.cert_path(), dir.path().join("ca.pem"))?;
    std::fs::write(dir.path().join("junk.pem"), "not a certificate\n")?;
    let config = |ca_file: &str| {
        format!(
            "[[streams]]\npath = \"live/studio\"\nkey = \"k1\"\n[[streams.push]]\nname = \"private\"\n\
             url = \"rtmps://ingest.example/live/xxxx\"\ntls_ca_file = \"{ca_file}\"\n"
        )
    };
    let path = dir.path().join("cthulhu.toml");
    let arg = path.display().to_string();

    // Relative to the config file, wherever check runs from.
    std::fs::write(&path, config("ca.pem"))?;
    let (ok, text) = run(&["check", "--config", &arg]).await?;
    assert!(ok, "{text}");
    assert!(
        text.contains("OK (1 stream(s), 1 destination(s))"),
        "{text}"
    );

    for (file, why) in [
        ("junk.pem", "no certificate found"),
        ("missing.pem", "cannot read it"),
    ] {
        std::fs::write(&path, config(file))?;
        let (ok, text) = run(&["check", "--config", &arg]).await?;
        assert!(!ok, "{file}: {text}");
        let want = format!(
            "{arg}: streams[0].push[0].tls_ca_file: tls: CA file {}: {why}",
            dir.path().join(file).display()
        );
        assert!(text.contains(&want), "{file}: {text}");
    }
    Ok(())
}
