//! Login rate limiting: failures counted per client IP and per username, separately.
//!
//! Policy ([`LoginLimits::default`]): per IP 10 failures per 5 minutes, per username 5
//! failures per 15 minutes. A counter's window opens at its first failure; the failure
//! that reaches the maximum locks the key for a full window from that moment, during
//! which [`LoginLimiter::check`] refuses with the time left (the HTTP layer answers
//! 429 with `Retry-After`, see [`retry_after_secs`]). A window that passes without
//! reaching the maximum starts afresh. So a key sees at most the maximum of failures
//! per lock period, and at worst about twice that across a window boundary.
//!
//! IPv6 clients are grouped by /64 (one subscriber usually holds a whole /64);
//! IPv4-mapped IPv6 addresses count as their IPv4 address. Usernames are compared
//! lower-cased, on their first 128 bytes.
//!
//! Memory is bounded: each table holds at most `max_keys` keys. When a table is full,
//! expired keys go first, then unlocked keys, oldest window first, until it is 90 %
//! full (so the cost of a purge is amortised over a tenth of the table's inserts);
//! locked keys go last, so a flood of new keys cannot easily unlock a victim.
//!
//! The per-username limit lets anyone lock a user out of password logins for a while;
//! that is the price of capping guesses against one account from many addresses.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A limit: at most `max_failures` failures in `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    /// Failures that lock the key (at least 1).
    pub(crate) max_failures: u32,
    /// Length of the counting window and of the lock.
    pub(crate) window: Duration,
}

/// The limiter's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoginLimits {
    /// Per client IP (IPv6: per /64). Default: 10 failures per 5 minutes.
    pub(crate) per_ip: Limit,
    /// Per lower-cased username. Default: 5 failures per 15 minutes.
    pub(crate) per_user: Limit,
    /// Most keys kept in each of the two tables. Default: 100 000 (a few MiB).
    pub(crate) max_keys: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            per_ip: Limit {
                max_failures: 10,
                window: Duration::from_secs(5 * 60),
            },
            per_user: Limit {
                max_failures: 5,
                window: Duration::from_secs(15 * 60),
            },
            max_keys: 100_000,
        }
    }
}

/// Longest username prefix used as a key, in bytes.
const MAX_USER_KEY_BYTES: usize = 128;

/// One key's counter.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Start of the window (or of the lock, once locked).
    start: Instant,
    /// Failures in the window.
    failures: u32,
}

impl Entry {
    /// Whether the window has passed at `now`.
    fn expired(&self, limit: Limit, now: Instant) -> bool {
        now.saturating_duration_since(self.start) >= limit.window
    }

    /// Whether the key is locked at `now`.
    fn locked(&self, limit: Limit, now: Instant) -> bool {
        self.failures >= limit.max_failures && !self.expired(limit, now)
    }

    /// Time until the lock ends.
    fn remaining(&self, limit: Limit, now: Instant) -> Duration {
        limit
            .window
            .saturating_sub(now.saturating_duration_since(self.start))
    }
}

/// A bounded table of counters for one kind of key.
#[derive(Debug)]
struct Table<K> {
    /// The counters.
    map: HashMap<K, Entry>,
    /// The limit applied.
    limit: Limit,
    /// Most keys kept.
    cap: usize,
}

impl<K: Eq + Hash> Table<K> {
    /// An empty table.
    fn new(limit: Limit, cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            limit: Limit {
                max_failures: limit.max_failures.max(1),
                window: limit.window,
            },
            cap: cap.max(1),
        }
    }

    /// Time left on `key`'s lock, if it is locked.
    fn locked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let entry = self.map.get(key)?;
        entry
            .locked(self.limit, now)
            .then(|| entry.remaining(self.limit, now))
    }

    /// Counts a failure of `key`.
    fn fail(&mut self, key: K, now: Instant) {
        let limit = self.limit;
        if let Some(entry) = self.map.get_mut(&key) {
            if !entry.expired(limit, now) {
                if entry.failures < limit.max_failures {
                    entry.failures += 1;
                    if entry.failures == limit.max_failures {
                        // Lock for a full window from the failure that tripped it.
                        entry.start = now;
                    }
                }
                // Already locked: failures past the maximum do not extend the lock.
                return;
            }
        } else if self.map.len() >= self.cap {
            self.purge(now);
        }
        self.map.insert(
            key,
            Entry {
                start: now,
                failures: 1,
            },
        );
    }

    /// Forgets `key`.
    fn clear(&mut self, key: &K) {
        self.map.remove(key);
    }

    /// Makes room: drops expired keys, then unlocked keys (oldest window first), then
    /// locked ones, until the table is at most 90 % full.
    fn purge(&mut self, now: Instant) {
        let limit = self.limit;
        self.map.retain(|_, e| !e.expired(limit, now));
        let target = self.cap - self.cap.div_ceil(10);
        if self.map.len() <= target {
            return;
        }
        let excess = self.map.len() - target;
        // Eviction rank: unlocked before locked, then older windows first.
        let rank = |e: &Entry| (e.locked(limit, now), e.start);
        let mut ranks: Vec<(bool, Instant)> = self.map.values().map(rank).collect();
        let (_, &mut threshold, _) = ranks.select_nth_unstable(excess - 1);
        // Everything ranked below the threshold goes; ties at it go until `excess`.
        let below = ranks.iter().filter(|r| **r < threshold).count();
        let mut ties = excess - below;
        self.map.retain(|_, e| {
            let r = rank(e);
            if r < threshold {
                false
            } else if r == threshold && ties > 0 {
                ties -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// The two tables, under one lock.
#[derive(Debug)]
struct Tables {
    /// Per IP (IPv6: per /64).
    ips: Table<IpAddr>,
    /// Per lower-cased username.
    users: Table<Box<str>>,
}

/// Counts failed logins per IP and per username and refuses logins over the limits.
/// Shared by reference (e.g. in an `Arc`); the critical sections are short and never
/// await.
#[derive(Debug)]
pub(crate) struct LoginLimiter {
    /// The tables.
    tables: Mutex<Tables>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(LoginLimits::default())
    }
}

impl LoginLimiter {
    /// A limiter with these limits.
    pub(crate) fn new(limits: LoginLimits) -> Self {
        Self {
            tables: Mutex::new(Tables {
                ips: Table::new(limits.per_ip, limits.max_keys),
                users: Table::new(limits.per_user, limits.max_keys),
            }),
        }
    }

    /// Whether a login attempt for `user` from `ip` may proceed at `now`: `Err` with
    /// the time until it may (the longer of the two locks) if the IP or the username
    /// is locked. Call it before verifying anything.
    pub(crate) fn check(&self, ip: IpAddr, user: &str, now: Instant) -> Result<(), Duration> {
        let tables = self.lock();
        let by_ip = tables.ips.locked_for(&ip_key(ip), now);
        let by_user = tables.users.locked_for(&user_key(user), now);
        match by_ip.max(by_user) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Counts a failed login (wrong password or code, or unknown user) against both
    /// the IP and the username.
    pub(crate) fn record_failure(&self, ip: IpAddr, user: &str, now: Instant) {
        let mut tables = self.lock();
        tables.ips.fail(ip_key(ip), now);
        tables.users.fail(user_key(user), now);
    }

    /// A successful login clears the username's counter. The IP's counter stays, so
    /// that holding one valid account does not reset an address's budget for guessing
    /// others.
    pub(crate) fn record_success(&self, _ip: IpAddr, user: &str) {
        self.lock().users.clear(&user_key(user));
    }

    /// Keys currently held: (IPs, usernames).
    pub(crate) fn tracked_keys(&self) -> (usize, usize) {
        let tables = self.lock();
        (tables.ips.map.len(), tables.users.map.len())
    }

    /// The tables; a poisoned lock is taken over (every update leaves them consistent).
    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The counting key of a client address: IPv4 as is, IPv4-mapped IPv6 as IPv4, other
/// IPv6 reduced to its /64.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// The counting key of a username: its first 128 bytes (cut at a character
/// boundary), lower-cased.
fn user_key(user: &str) -> Box<str> {
    let mut end = user.len().min(MAX_USER_KEY_BYTES);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user.get(..end).unwrap_or_default().to_lowercase().into()
}

/// The `Retry-After` value for a wait: whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::net::Ipv4Addr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn defaults_are_the_documented_policy() {
        let l = LoginLimits::default();
        assert_eq!((l.per_ip.max_failures, l.per_ip.window), (10, secs(300)));
        assert_eq!((l.per_user.max_failures, l.per_user.window), (5, secs(900)));
        assert_eq!(l.max_keys, 100_000);
    }

    #[test]
    fn brute_force_on_one_user_hits_the_user_limit() {
        let lim = LoginLimiter::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..5 {
            assert_eq!(lim.check(a, "admin", t0 + secs(i)), Ok(()), "attempt {i}");
            lim.record_failure(a, "admin", t0 + secs(i));
        }
        // The 5th failure (at t0+4) locks the user for 15 minutes.
        let wait = lim.check(a, "admin", t0 + secs(5)).unwrap_err();
        assert_eq!(wait, secs(899));
        assert_eq!(retry_after_secs(wait), 899);
        // Case does not matter.
        assert!(lim.check(a, "ADMIN", t0 + secs(5)).is_err());
        // Another user from the same IP is not locked yet (IP: 5 of 10).
        assert_eq!(lim.check(a, "bob", t0 + secs(5)), Ok(()));
        // Free again once the lock's window has passed.
        assert!(lim.check(a, "admin", t0 + secs(903)).is_err());
        assert_eq!(lim.check(a, "admin", t0 + secs(904)), Ok(()));
    }

    #[test]
    fn retry_after_decreases_to_zero() {
        let lim = LoginLimiter::default();
        let t0 = Instant::now();
        let a = ip("198.51.100.7");
        for i in 0..10 {
            lim.record_failure(a, &format!("user{i}"), t0);
        }
        let mut previous = Duration::MAX;
        for s in (0..300).step_by(7) {
            let wait = lim.check(a, "someone", t0 + secs(s)).unwrap_err();
            assert!(wait < previous, "at {s}: {wait:?} !< {previous:?}");
            assert!(wait <= secs(300));
            assert_eq!(wait, secs(300 - s));
            previous = wait;
        }
        assert_eq!(lim.check(a, "someone", t0 + secs(300)), Ok(()));
    }

    #[test]
    fn ip_limit_trips_across_many_users() {
        let lim = LoginLimiter::default();
        let t0 = Instant::now();
        let a = ip("203.0.113.9");
        for i in 0..10u64 {
            assert!(lim.check(a, &format!("u{i}"), t0 + secs(i)).is_ok());
            lim.record_failure(a, &format!("u{i}"), t0 + secs(i));
        }
        assert_eq!(lim.check(a, "fresh", t0 + secs(10)), Err(secs(299)));
        // Another IP, another user: unaffected.
        assert_eq!(
            lim.check(ip("203.0.113.10"), "other", t0 + secs(10)),
            Ok(())
        );
        // Another IP for a user that failed once: fine too.
        assert_eq!(lim.check(ip("203.0.113.10"), "u1", t0 + secs(10)), Ok(()));
    }

    #[test]
    fn user_limit_trips_across_many_ips() {
        let lim = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..5u8 {
            let a = IpAddr::V4(Ipv4Addr::new(10, 0, i, 1));
            assert!(lim.check(a, "Alice", t0).is_ok());
            lim.record_failure(a, "Alice", t0);
        }
        // A sixth, never-seen IP is refused for alice.
        let wait = lim
            .check(ip("192.0.2.200"), "alice", t0 + secs(60))
            .unwrap_err();
        assert_eq!(wait, secs(840));
        // …but not for another user.
        assert_eq!(lim.check(ip("192.0.2.200"), "carol", t0 + secs(60)), Ok(()));
    }

    #[test]
    fn other_ip_and_user_unaffected() {
        let lim = LoginLimiter::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..20 {
            lim.record_failure(a, "admin", t0);
        }
        assert!(lim.check(a, "admin", t0).is_err());
        assert!(lim.check(a, "x", t0).is_err());
        assert_eq!(lim.check(ip("192.0.2.2"), "x", t0), Ok(()));
        // Failures past the maximum do not extend the lock.
        assert_eq!(lim.check(a, "x", t0 + secs(300)), Ok(()));
    }

    #[test]
    fn success_clears_the_user_but_not_the_ip() {
        let lim = LoginLimiter::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..4 {
            lim.record_failure(a, "admin", t0);
        }
        lim.record_success(a, "Admin");
        // Four more failures would lock it only if the counter had not been cleared.
        for _ in 0..4 {
            lim.record_failure(a, "admin", t0);
        }
        assert_eq!(lim.check(ip("192.0.2.99"), "admin", t0), Ok(()));
        // The IP has 8 failures: two more lock it.
        lim.record_failure(a, "z1", t0);
        lim.record_failure(a, "z2", t0);
        assert!(lim.check(a, "anyone", t0).is_err());
    }

    #[test]
    fn window_without_reaching_the_max_restarts() {
        let lim = LoginLimiter::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..4 {
            lim.record_failure(a, "admin", t0);
        }
        // 15 minutes later the four old failures no longer count.
        let t1 = t0 + secs(900);
        for _ in 0..4 {
            lim.record_failure(ip("192.0.2.2"), "admin", t1);
        }
        assert_eq!(lim.check(a, "admin", t1), Ok(()));
        lim.record_failure(ip("192.0.2.3"), "admin", t1);
        assert!(lim.check(a, "admin", t1).is_err());
    }

    #[test]
    fn ipv6_grouped_by_64_and_mapped_v4() {
        assert_eq!(
            ip_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(ip_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(ip_key(ip("192.0.2.1")), ip("192.0.2.1"));

        let lim = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..10u16 {
            let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 7, i, i, i, i));
            lim.record_failure(a, &format!("u{i}"), t0);
        }
        assert!(lim.check(ip("2001:db8:0:7::1"), "v", t0).is_err());
        assert_eq!(lim.check(ip("2001:db8:0:8::1"), "v", t0), Ok(()));
    }

    #[test]
    fn user_keys_are_lowercased_and_bounded() {
        assert_eq!(&*user_key("AdMiN"), "admin");
        let long = "É".repeat(1000);
        let key = user_key(&long);
        assert!(key.len() <= 2 * MAX_USER_KEY_BYTES);
        assert!(key.chars().all(|c| c == 'é'));
        // Names equal on their first 128 bytes share a counter (conservative).
        assert_eq!(user_key(&"a".repeat(500)), user_key(&"a".repeat(129)));
    }

    #[test]
    fn memory_bound_under_a_million_ips() {
        let lim = LoginLimiter::default();
        let t0 = Instant::now();
        let cap = LoginLimits::default().max_keys;
        for i in 0..1_000_000u32 {
            let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            // Within one second: nothing expires, eviction must still hold the cap.
            lim.record_failure(a, "admin", t0 + Duration::from_micros(u64::from(i)));
            if i % 50_000 == 0 {
                assert!(lim.tracked_keys().0 <= cap);
            }
        }
        let (ips, users) = lim.tracked_keys();
        assert!(ips <= cap && ips >= cap * 9 / 10, "{ips}");
        assert_eq!(users, 1);
        // The user has been locked since its 5th failure.
        assert!(lim.check(ip("192.0.2.1"), "admin", t0 + secs(1)).is_err());
    }

    #[test]
    fn memory_bound_with_distinct_users_and_ties() {
        let lim = LoginLimiter::new(LoginLimits {
            max_keys: 1000,
            ..LoginLimits::default()
        });
        let t0 = Instant::now();
        for i in 0..20_000u32 {
            lim.record_failure(IpAddr::V4(Ipv4Addr::from(i)), &format!("user{i}"), t0);
            let (ips, users) = lim.tracked_keys();
            assert!(ips <= 1000 && users <= 1000, "{ips} {users}");
        }
    }

    #[test]
    fn eviction_keeps_locked_keys() {
        let lim = LoginLimiter::new(LoginLimits {
            max_keys: 100,
            ..LoginLimits::default()
        });
        let t0 = Instant::now();
        let victim = ip("192.0.2.1");
        for _ in 0..10 {
            lim.record_failure(victim, "victim", t0);
        }
        for i in 0..10_000u32 {
            let a = IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64));
            lim.record_failure(a, &format!("junk{i}"), t0 + secs(1));
        }
        assert!(lim.check(victim, "x", t0 + secs(2)).is_err());
        assert!(lim.check(ip("192.0.2.2"), "victim", t0 + secs(2)).is_err());
        let (ips, users) = lim.tracked_keys();
        assert!(ips <= 100 && users <= 100);
    }

    #[test]
    fn expired_keys_are_purged_first() {
        let lim = LoginLimiter::new(LoginLimits {
            max_keys: 10,
            ..LoginLimits::default()
        });
        let t0 = Instant::now();
        for i in 0..10u32 {
            lim.record_failure(IpAddr::V4(Ipv4Addr::from(i)), "u", t0);
        }
        assert_eq!(lim.tracked_keys().0, 10);
        // An hour later every counter has expired: one purge empties the table.
        lim.record_failure(ip("192.0.2.1"), "u", t0 + secs(3600));
        assert_eq!(lim.tracked_keys(), (1, 1));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(secs(300)), 300);
    }

    #[test]
    fn poisoned_lock_still_works() {
        let lim = std::sync::Arc::new(LoginLimiter::default());
        let l2 = lim.clone();
        let _ = std::thread::spawn(move || {
            let _guard = l2.tables.lock().unwrap();
            panic!("poison");
        })
        .join();
        lim.record_failure(ip("192.0.2.1"), "a", Instant::now());
        assert_eq!(lim.tracked_keys(), (1, 1));
    }
}
