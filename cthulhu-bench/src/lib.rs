//! # cthulhu-bench
//!
//! `loadgen`, a load tool for RTMP servers (nginx-rtmp, Cthulhu): it publishes an
//! FLV file in real time and measures what many players, or many relay
//! destinations, get — how many kept up, the delivered throughput, the
//! publisher-to-player latency and the server's CPU and memory.
//!
//! * [`run::run_fanout`]: one publisher, N players ramped at a set rate. Most are
//!   cheap byte-draining players; a few are probes that match every video message
//!   to its sending by a hash of its body (never by timestamp: servers may rebase
//!   timestamps), giving latencies.
//! * [`run::run_idle`]: N players on a stream nobody publishes, for the server's
//!   memory per idle player.
//! * [`run::run_relay`]: the tool serves K RTMP destinations the server under test
//!   pushes to, and measures each.
//!
//! "Kept up" means: at least [`report::KEPT_UP_RATIO`] of the message body bytes
//! the publisher sent in the window arrived in the window, and no gap between
//! reads exceeded [`report::KEPT_UP_MAX_GAP_MS`].
//!
//! The protocol logic the players need ([`skim::Skimmer`]) does no I/O; the drivers
//! around it read a socket, feed it and write what it asks for.

use std::path::PathBuf;

pub mod key;
pub mod player;
pub mod procstat;
pub mod publisher;
pub mod relay;
pub mod report;
pub mod run;
pub mod skim;
pub mod srt;
pub mod stats;
pub mod timing;

pub use report::{FanoutReport, IdleReport, RelayReport};
pub use run::{
    FanoutConfig, IdleConfig, RelayConfig, SourceConfig, run_fanout, run_idle, run_relay,
};

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The input file could not be read.
    #[error("reading {}: {source}", .path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The input file is not usable FLV.
    #[error("the input file: {0}")]
    Flv(String),
    /// A URL does not parse.
    #[error("the {what}: {source}")]
    Url {
        /// Which URL.
        what: &'static str,
        /// Why.
        source: cthulhu_rtmp::UrlError,
    },
    /// The publisher failed.
    #[error("publisher: {0}")]
    Publish(String),
    /// Something the run needs is missing or wrong.
    #[error("{0}")]
    Setup(String),
    /// An I/O error while setting up.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
