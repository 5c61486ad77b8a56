//! Counters of the consumers the hub does not see one by one.
//!
//! A shared writer (the RTMP fan-out of a stream's players, or of its push
//! destinations) holds one hub subscription for many peers. Each peer gets a
//! [`Meter`] that the writer updates as it writes (relaxed atomics, one add per
//! write, nothing shared between writers), and the writer lists its members on its
//! subscription ([`crate::Subscriber::set_members`]) so that a hub snapshot shows
//! every player and destination with its own bytes, backlog and drops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Byte, backlog and drop counters of one consumer; cheap to update from its writer.
#[derive(Debug, Default)]
pub struct Meter {
    sent: AtomicU64,
    dropped: AtomicU64,
    backlog: AtomicU64,
}

impl Meter {
    /// A new meter at zero, to share between a writer and its readers.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// `n` more bytes were written to the peer.
    #[inline]
    pub fn add_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` more frames (or messages) were dropped for this peer (it fell behind).
    #[inline]
    pub fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// `bytes` are waiting for the peer now: how far it lags.
    #[inline]
    pub fn set_backlog(&self, bytes: usize) {
        self.backlog.store(bytes as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn reading(&self) -> MeterReading {
        MeterReading {
            bytes_sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            backlog_bytes: self.backlog.load(Ordering::Relaxed),
        }
    }
}

/// What a [`Meter`] reads at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeterReading {
    /// Bytes written to the peer, in total.
    pub bytes_sent: u64,
    /// Frames or messages dropped because the peer fell behind, in total.
    pub dropped: u64,
    /// Bytes waiting for the peer now.
    pub backlog_bytes: u64,
}

/// One peer of a shared writer, as its subscription lists it.
#[derive(Clone, Debug)]
pub struct Member {
    /// The member's name: a destination's name, or empty for a player.
    pub name: String,
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// Its counters.
    pub meter: Arc<Meter>,
}

/// A [`Member`] as a hub snapshot shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStats {
    /// The member's name (see [`Member::name`]).
    pub name: String,
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// Its counters at the snapshot.
    pub reading: MeterReading,
}

impl Member {
    /// The member's figures now.
    pub fn stats(&self) -> MemberStats {
        MemberStats {
            name: self.name.clone(),
            remote: self.remote,
            reading: self.meter.reading(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_counts_what_its_writer_tells() {
        let m = Meter::shared();
        m.add_sent(1000);
        m.add_sent(24);
        m.add_dropped(3);
        m.set_backlog(4096);
        m.set_backlog(512);
        assert_eq!(
            m.reading(),
            MeterReading {
                bytes_sent: 1024,
                dropped: 3,
                backlog_bytes: 512
            }
        );
        let member = Member {
            name: "youtube".into(),
            remote: None,
            meter: m.clone(),
        };
        m.add_sent(1);
        assert_eq!(member.stats().reading.bytes_sent, 1025);
    }
}
