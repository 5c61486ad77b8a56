//! A private moto S3 server per test (`moto_server`, from `pip install 'moto[server]'`).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::net::wait_for_port;
use crate::process::{ChildGuard, require_tool, signal};

/// How long moto may take to start (it imports a lot of Python).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// An in-memory S3 server on 127.0.0.1, killed on drop. State (buckets, objects,
/// multipart uploads) is lost when it stops.
///
/// moto accepts any credentials and honours `S3_UPLOAD_PART_MIN_SIZE`, which
/// [`Moto::start`] sets so tests can use multipart parts far below S3's 5 MiB.
#[derive(Debug)]
pub struct Moto {
    proc: ChildGuard,
    port: u16,
    min_part_size: usize,
}

impl Moto {
    /// Starts `moto_server` on `port` with the given minimum multipart part size (S3:
    /// 5 MiB) and waits until it answers.
    pub async fn start(port: u16, min_part_size: usize) -> Result<Moto> {
        let exe = require_tool("moto_server")?;
        let mut cmd = Command::new(exe);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("S3_UPLOAD_PART_MIN_SIZE", min_part_size.to_string())
            // no real AWS credentials or config reach the mock
            .env_remove("AWS_PROFILE");
        let mut proc = ChildGuard::spawn("moto", cmd)?;
        let ready = wait_for_port(port, START_TIMEOUT).await;
        if let Err(e) = ready {
            let _ = proc.kill().await;
            bail!("moto_server did not start: {e}; {}", proc.describe());
        }
        Ok(Moto {
            proc,
            port,
            min_part_size,
        })
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Creates a bucket (an unsigned `PUT /bucket`, which moto accepts).
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let status = self.request("PUT", &format!("/{bucket}")).await?;
        if !(200..300).contains(&status) {
            bail!(
                "creating bucket {bucket}: HTTP {status}; {}",
                self.proc.describe()
            );
        }
        Ok(())
    }

    /// Sends a bodyless request and returns the HTTP status.
    async fn request(&self, method: &str, path: &str) -> Result<u16> {
        let mut s = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        .context("connecting to moto timed out")?
        .context("connecting to moto")?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        s.write_all(req.as_bytes()).await?;
        let mut resp = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut resp))
            .await
            .context("moto did not answer")??;
        let text = String::from_utf8_lossy(&resp);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no HTTP status in moto's answer: {text:?}"))?;
        Ok(status)
    }

    /// Freezes the server (SIGSTOP): connections are still accepted by the kernel,
    /// requests hang until [`Moto::resume`].
    pub fn pause(&self) -> Result<()> {
        signal(self.pid(), "-STOP")
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        signal(self.pid(), "-CONT")
    }

    /// Kills the server and starts a new, empty one on the same port.
    pub async fn restart(&mut self) -> Result<()> {
        self.proc.kill().await?;
        let next = Moto::start(self.port, self.min_part_size).await?;
        *self = next;
        Ok(())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }
}
