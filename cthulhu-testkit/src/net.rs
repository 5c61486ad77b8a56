//! Ports on 127.0.0.1.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Ports already handed out by [`free_port`] in this process.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Returns a TCP port on 127.0.0.1 that was free a moment ago: binds port 0,
/// reads the port the kernel chose and closes the socket. The same port is
/// never returned twice within one process, so tests running in parallel in
/// one test binary do not collide with each other. Another process can still
/// grab the port before it is used; that race is accepted.
///
/// Panics if no port can be bound (a broken test environment).
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("binding 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("reading the local address of a bound socket")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("free_port: the kernel kept returning ports already handed out");
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`,
/// polling every 50 ms, for at most `timeout`.
pub async fn wait_for_port(port: u16, timeout: Duration) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        let attempt =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                .await;
        let last_error = match attempt {
            Ok(Ok(_stream)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connect timed out".to_owned(),
        };
        if Instant::now() >= deadline {
            bail!(
                "nothing accepted connections on {addr} within {timeout:?} (last error: {last_error})"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True if process `pid` owns a socket in LISTEN state on TCP port `port`
/// (any local address, IPv4 or IPv6). Linux only: matches the socket inodes
/// of `/proc/net/tcp{,6}` against the links in `/proc/<pid>/fd`.
///
/// Unlike [`wait_for_port`] this tells *who* listens: a connect succeeds
/// just as well when some other process holds the port.
pub fn pid_is_listening(pid: u32, port: u16) -> bool {
    const TCP_LISTEN: &str = "0A";
    let port_hex = format!(":{port:04X}");
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && fields[1].ends_with(&port_hex) && fields[3] == TCP_LISTEN {
                inodes.insert(format!("socket:[{}]", fields[9]));
            }
        }
    }
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|target| inodes.contains(target.to_string_lossy().as_ref()))
}
