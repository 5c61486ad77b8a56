//! # cthulhu-testkit
//!
//! Test support for Cthulhu integration tests that talk to **real peers** on
//! `127.0.0.1`: an nginx-rtmp instance per test ([`Nginx`]), ffmpeg publishers
//! ([`Ffmpeg`]), ffprobe/ffmpeg based checks ([`ffprobe_json`], [`probe_streams`],
//! [`decode_check`]), an RTMP client (on rml_rtmp) that stops reading after
//! `play` ([`StalledPlayer`]) and an in-memory S3 server ([`Moto`]); for RTMPS, a
//! TLS-terminating nginx ([`Nginx::start_rtmps`]) with certificates of a throwaway
//! CA ([`TestCa`]); and fault-injecting proxies to put between peers ([`fault`]:
//! [`TcpFaultProxy`] with delay, jitter, bandwidth caps, blackholes, resets,
//! half-open and refused connections; [`UdpFaultProxy`] with loss, delay, jitter,
//! reordering, bandwidth caps and blackholes).
//!
//! Conventions:
//!
//! * Every child process is spawned with `kill_on_drop(true)` and owned by a
//!   [`ChildGuard`], so a failing (panicking) test never leaks peers.
//! * stdout and stderr of every child go to a log file in a temporary
//!   directory; error messages include the tail of that log.
//! * Missing tools are **errors**, not skips ([`require_tool`]): CI installs
//!   them (`scripts/test`), and a test that silently skips proves nothing.
//! * Set `CTHULHU_TESTKIT_KEEP=1` to keep the temporary directories (logs,
//!   nginx config, recordings) after the test for post-mortem debugging.
//!
//! Needs Linux (reads `/proc`), ffmpeg/ffprobe ≥ 5.1 and nginx ≥ 1.19.5 with the
//! rtmp module (Debian: `ffmpeg nginx libnginx-mod-rtmp`; for RTMPS also the stream
//! module, `libnginx-mod-stream`).

// This crate only runs inside tests: failing loudly (panicking) is the correct
// reaction to a broken environment in the few places where an API returns a
// plain value (e.g. `free_port() -> u16`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fault;
mod ffmpeg;
mod moto;
mod net;
mod nginx;
pub mod plugins;
mod process;
mod stalled;
mod tls;

pub use fault::{
    TcpFaultProxy, TcpFaults, TcpLink, TcpProxyOptions, TcpStats, UdpCounts, UdpFaultProxy,
    UdpFaults, UdpLink, UdpStats,
};
pub use ffmpeg::{
    DecodeReport, Ffmpeg, ProbedStream, PublishOptions, decode_check, ffprobe_json,
    ffprobe_json_timeout, probe_streams,
};
pub use moto::Moto;
pub use net::{free_port, pid_is_listening, wait_for_port};
pub use nginx::{Nginx, rtmp_module_path, stream_module_path};
pub use plugins::guest_plugin;
pub use process::{ChildGuard, find_tool, require_tool, rss_kib};
pub use stalled::{Drained, StalledPlayer, StalledPlayerOptions};
pub use tls::{ServerCert, TestCa};
