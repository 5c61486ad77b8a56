//! Containment of panics in srt-protocol.
//!
//! srt-protocol 0.4.4 panics on some remote input (`unimplemented!`, `todo!`,
//! `unwrap`). Every call into it runs through [`guarded`], so a panic ends
//! only the connection (or pending handshake) it happened in.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tracing::error;

/// Longest panic message quoted in the log.
const MAX_MESSAGE: usize = 200;

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
            let message: String = message.chars().take(MAX_MESSAGE).collect();
            error!(
                peer = %peer,
                doing,
                panic = %message,
                "srt-protocol panicked (a bug in the dependency); dropping this peer only"
            );
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
}
