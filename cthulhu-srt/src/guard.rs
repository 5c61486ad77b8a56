//! Containment of panics in srt-protocol.
//!
//! srt-protocol 0.4.4 panics on some remote input (`unimplemented!`, `todo!`,
//! `unwrap`). Every call into it runs through [`guarded`], so a panic ends
//! only the connection (or pending handshake) it happened in.
//!
//! Remote input may trigger such panics at will, so their log is rate-limited:
//! at most [`LOGGED_PER_WINDOW`] lines per [`WINDOW`] (process-wide), the rest
//! are counted and reported by the next line logged after the window.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::error;

/// Longest panic message quoted in the log.
const MAX_MESSAGE: usize = 200;
/// Panics logged one by one per window.
const LOGGED_PER_WINDOW: u32 = 5;
/// The rate limit's window.
const WINDOW: Duration = Duration::from_secs(10);

struct Limit {
    since: Option<Instant>,
    logged: u32,
    unlogged: u64,
}

static LIMIT: Mutex<Limit> = Mutex::new(Limit {
    since: None,
    logged: 0,
    unlogged: 0,
});

/// Whether to log this panic, and how many went unlogged in the window before.
fn may_log(now: Instant) -> (bool, u64) {
    let mut l = LIMIT.lock().unwrap_or_else(PoisonError::into_inner);
    let mut before = 0;
    if l.since
        .is_none_or(|s| now.saturating_duration_since(s) >= WINDOW)
    {
        before = l.unlogged;
        *l = Limit {
            since: Some(now),
            logged: 0,
            unlogged: 0,
        };
    }
    if l.logged < LOGGED_PER_WINDOW {
        l.logged += 1;
        (true, before)
    } else {
        l.unlogged += 1;
        (false, before)
    }
}

/// Runs `f`; if it panics, logs the panic as a bug in srt-protocol (with the
/// peer and what we were doing) and returns `None`. The caller must then
/// drop all state `f` touched.
pub(crate) fn guarded<T>(
    peer: SocketAddr,
    doing: &'static str,
    f: impl FnOnce() -> T,
) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "<non-string panic>".to_owned());
            let (log, unlogged) = may_log(Instant::now());
            if log {
                let message: String = message.chars().take(MAX_MESSAGE).collect();
                error!(
                    peer = %peer,
                    doing,
                    panic = ?message,
                    unlogged_before = unlogged,
                    "srt-protocol panicked (a bug in the dependency); dropping this peer only"
                );
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_panics() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(guarded(peer, "test", || 5), Some(5));
        let r: Option<()> = guarded(peer, "test", || unimplemented!("Key size mismatch"));
        assert_eq!(r, None);
        let r = guarded(peer, "test", || {
            std::time::Instant::now()
                .checked_sub(std::time::Duration::MAX)
                .unwrap()
        });
        assert_eq!(r, None);
    }

    #[test]
    fn panic_log_is_rate_limited() {
        let t0 = Instant::now() + Duration::from_secs(3600);
        let logged = (0..100).filter(|_| may_log(t0).0).count();
        assert!(logged <= LOGGED_PER_WINDOW as usize, "{logged}");
        let (log, unlogged) = may_log(t0 + WINDOW);
        assert!(log);
        assert!(unlogged >= 100 - u64::from(LOGGED_PER_WINDOW), "{unlogged}");
    }
}
