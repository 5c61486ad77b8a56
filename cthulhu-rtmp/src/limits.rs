//! Connection limits of a listener: total, per IP address, and connections not yet
//! publishing or playing ("pending": in the handshake or the command phase).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts of a listener's connections against its limits.
#[derive(Debug)]
pub(crate) struct ConnLimits {
    max_total: usize,
    max_per_ip: usize,
    max_pending: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    pending: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection's place; given back on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
    pending: bool,
}

impl ConnLimits {
    /// Limits; zero means none.
    pub(crate) fn new(max_total: usize, max_per_ip: usize, max_pending: usize) -> Self {
        let none = |n: usize| if n == 0 { usize::MAX } else { n };
        Self {
            max_total: none(max_total),
            max_per_ip: none(max_per_ip),
            max_pending: none(max_pending),
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Admits a new connection from `ip`, pending, or says which limit it hits.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, &'static str> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.max_total {
            return Err("too many connections");
        }
        if c.pending >= self.max_pending {
            return Err("too many connections not yet publishing or playing");
        }
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_per_ip {
            return Err("too many connections from one address");
        }
        c.total += 1;
        c.pending += 1;
        c.per_ip.insert(ip, from_ip + 1);
        Ok(Permit {
            limits: self.clone(),
            ip,
            pending: true,
        })
    }

    /// (total, pending, addresses) now.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        (c.total, c.pending, c.per_ip.len())
    }
}

impl Permit {
    /// The connection publishes or plays: it no longer counts as pending.
    pub(crate) fn authorize(&mut self) {
        if self.pending {
            self.pending = false;
            let mut c = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
            c.pending = c.pending.saturating_sub(1);
        }
    }

    /// Whether [`Self::authorize`] was called.
    pub(crate) fn is_authorized(&self) -> bool {
        !self.pending
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if self.pending {
            c.pending = c.pending.saturating_sub(1);
        }
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_counted_and_given_back() {
        let l = Arc::new(ConnLimits::new(4, 2, 3));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let mut a1 = l.admit(a).unwrap();
        let _a2 = l.admit(a).unwrap();
        assert_eq!(
            l.admit(a).unwrap_err(),
            "too many connections from one address"
        );
        let _b1 = l.admit(b).unwrap();
        assert_eq!(
            l.admit(b).unwrap_err(),
            "too many connections not yet publishing or playing"
        );
        a1.authorize();
        assert!(a1.is_authorized());
        let b2 = l.admit(b).unwrap();
        assert_eq!(l.admit(c).unwrap_err(), "too many connections");
        assert_eq!(l.counts(), (4, 3, 2));
        drop(b2);
        drop(a1);
        assert_eq!(l.counts(), (2, 2, 2));
        let _c1 = l.admit(c).unwrap();
        assert_eq!(l.counts(), (3, 3, 3));
    }

    #[test]
    fn zero_means_no_limit() {
        let l = Arc::new(ConnLimits::new(0, 0, 0));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let permits: Vec<_> = (0..5000).map(|_| l.admit(a).unwrap()).collect();
        assert_eq!(l.counts(), (5000, 5000, 1));
        drop(permits);
        assert_eq!(l.counts(), (0, 0, 0));
    }
}
