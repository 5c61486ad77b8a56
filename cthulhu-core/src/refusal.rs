//! A rate-limited, summarising log of refusals ([`RefusalLog`]).
//!
//! A listener open to the internet refuses things all day: garbage datagrams,
//! handshakes with a bad cookie, callers with a wrong key. Logged one line each, a
//! flood of them fills the disk. A [`RefusalLog`] logs the first few refusals of
//! each reason per window one by one (`info`, with the peer and a detail) and
//! counts the rest; when the window ends it logs one `warn` line per reason:
//!
//! ```text
//! Refused 12,345 SRT handshakes from 387 peers in the last 10 s: bad version
//! ```
//!
//! Bounds, whatever the flood: per reason and window at most
//! [`LOGGED_PER_WINDOW`] individual lines and one summary; at most
//! [`MAX_REASONS`] reasons (further ones are counted under `"other reasons"`);
//! at most [`MAX_PEERS`] distinct peers remembered per reason (then "4096+").
//! The steady state allocates nothing: the peer sets keep their capacity.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// Refusals of one reason logged one by one in each window; the rest are counted.
pub const LOGGED_PER_WINDOW: u32 = 3;
/// Distinct peers counted per reason and window (more are shown as "4096+").
pub const MAX_PEERS: usize = 4096;
/// Distinct reasons tracked; refusals with further reasons count as "other reasons".
pub const MAX_REASONS: usize = 64;
/// The window of [`RefusalLog::new`].
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

const OTHER: &str = "other reasons";

/// Rate-limited, summarising log of refused peers/packets. Cheap, Clone (Arc inside), Send + Sync.
///
/// Per reason, the first [`LOGGED_PER_WINDOW`] refusals of a window are logged
/// individually at `info` (the `detail`, with `peer` and `reason` fields); the
/// window starts at the first of them. When it ends, if more refusals came than
/// were logged, one `warn` line gives the window's count and distinct peers. The
/// next refusal of that reason starts a new window (and is logged again).
///
/// Summaries are written by [`flush`](Self::flush), which a listener calls from a
/// periodic tick, and lazily by the next [`refuse`](Self::refuse); whatever is
/// left is written when the last clone is dropped.
///
/// Never put secrets (stream keys, passphrases, raw stream ids) into a `detail`:
/// it is logged as given. Reasons are `&'static str` so that callers cannot create
/// an unbounded number of them by accident; write them short and lower case
/// ("bad version", "wrong key"), they end the summary line.
#[derive(Clone)]
pub struct RefusalLog {
    inner: Arc<Inner>,
}

struct Inner {
    what: &'static str,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    reasons: Vec<Reason>,
    /// The earliest end of an open window (`None`: no window open).
    next_due: Option<Instant>,
}

struct Reason {
    reason: &'static str,
    /// Refusals since the log was created.
    total: u64,
    /// Start of the current window; `None` when no refusal came since the last one ended.
    since: Option<Instant>,
    /// Refusals in the current window.
    count: u64,
    /// Refusals of the current window logged one by one.
    logged: u32,
    /// Distinct peers of the current window, at most [`MAX_PEERS`].
    peers: HashSet<IpAddr>,
    /// More distinct peers came than `peers` holds.
    peers_overflow: bool,
}

impl Reason {
    fn new(reason: &'static str) -> Self {
        Self {
            reason,
            total: 0,
            since: None,
            count: 0,
            logged: 0,
            peers: HashSet::new(),
            peers_overflow: false,
        }
    }
}

impl RefusalLog {
    /// `what` names the refused thing in plural, e.g. "SRT handshakes", "RTMP connections".
    pub fn new(what: &'static str) -> Self {
        Self::with_window(what, DEFAULT_WINDOW)
    }

    /// Like [`new`](Self::new) with another window length (at least 1 ms).
    pub fn with_window(what: &'static str, window: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                what,
                window: window.max(Duration::from_millis(1)),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Records one refusal. `detail` is logged only for the first few refusals of a reason per window.
    ///
    /// `detail` should read as a whole log message ("SRT conclusion with a bad
    /// cookie ignored") and must not contain secrets.
    pub fn refuse(&self, peer: IpAddr, reason: &'static str, detail: fmt::Arguments<'_>) {
        self.refuse_at(Instant::now(), peer, reason, detail);
    }

    /// Emits summaries for windows that ended (call from a periodic tick; `refuse` also does it lazily).
    pub fn flush(&self) {
        self.flush_at(Instant::now());
    }

    /// Totals since creation, per reason (for stats/tests).
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        self.inner
            .lock()
            .reasons
            .iter()
            .map(|r| (r.reason, r.total))
            .collect()
    }

    fn refuse_at(
        &self,
        now: Instant,
        peer: IpAddr,
        reason: &'static str,
        detail: fmt::Arguments<'_>,
    ) {
        let inner = &*self.inner;
        let mut st = inner.lock();
        if st.next_due.is_some_and(|due| now >= due) {
            inner.summarise(&mut st, now, false);
        }
        let i = st.index(reason);
        let r = &mut st.reasons[i];
        r.total += 1;
        r.count += 1;
        let started = r.since.is_none();
        if started {
            r.since = Some(now);
        }
        if r.peers.len() < MAX_PEERS {
            r.peers.insert(peer);
        } else if !r.peers_overflow && !r.peers.contains(&peer) {
            r.peers_overflow = true;
        }
        if r.logged < LOGGED_PER_WINDOW {
            r.logged += 1;
            let reason = r.reason;
            if r.logged == LOGGED_PER_WINDOW {
                info!(
                    peer = %peer,
                    reason,
                    "{detail} (further refusals for this reason are summarised)"
                );
            } else {
                info!(peer = %peer, reason, "{detail}");
            }
        }
        if started {
            let due = now + inner.window;
            st.next_due = Some(st.next_due.map_or(due, |d| d.min(due)));
        }
    }

    fn flush_at(&self, now: Instant) {
        let inner = &*self.inner;
        let mut st = inner.lock();
        if st.next_due.is_some_and(|due| now >= due) {
            inner.summarise(&mut st, now, false);
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs the summaries of the windows that ended by `now` (all open ones if
    /// `all`) and closes those windows.
    fn summarise(&self, st: &mut State, now: Instant, all: bool) {
        let mut next_due: Option<Instant> = None;
        for r in &mut st.reasons {
            let Some(since) = r.since else { continue };
            let due = since + self.window;
            if !all && now < due {
                next_due = Some(next_due.map_or(due, |d| d.min(due)));
                continue;
            }
            if r.count > u64::from(r.logged) {
                // A root event: the summary is about many peers, not the one whose
                // refusal (or connection span) happened to close the window.
                warn!(
                    parent: None,
                    "Refused {} {} from {} in the last {}: {}",
                    Grouped(r.count),
                    self.what,
                    Peers {
                        count: r.peers.len(),
                        overflow: r.peers_overflow
                    },
                    Span(now.saturating_duration_since(since)),
                    r.reason
                );
            }
            r.since = None;
            r.count = 0;
            r.logged = 0;
            r.peers.clear();
            r.peers_overflow = false;
        }
        st.next_due = next_due;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut st = std::mem::take(self.state.get_mut().unwrap_or_else(PoisonError::into_inner));
        self.summarise(&mut st, Instant::now(), true);
    }
}

impl State {
    /// The slot of `reason`, created if new (or the "other reasons" slot when full).
    fn index(&mut self, reason: &'static str) -> usize {
        let find = |rs: &[Reason], reason: &str| {
            rs.iter()
                .position(|r| std::ptr::eq(r.reason, reason) || r.reason == reason)
        };
        if let Some(i) = find(&self.reasons, reason) {
            return i;
        }
        let reason = if self.reasons.len() < MAX_REASONS {
            reason
        } else if let Some(i) = find(&self.reasons, OTHER) {
            return i;
        } else {
            OTHER
        };
        self.reasons.push(Reason::new(reason));
        self.reasons.len() - 1
    }
}

impl fmt::Debug for RefusalLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefusalLog")
            .field("what", &self.inner.what)
            .field("window", &self.inner.window)
            .finish_non_exhaustive()
    }
}

/// A count with thousands separators: `12,345`.
struct Grouped(u64);

impl fmt::Display for Grouped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut groups = [0u16; 7];
        let mut n = self.0;
        let mut len = 0;
        loop {
            groups[len] = (n % 1000) as u16;
            len += 1;
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        write!(f, "{}", groups[len - 1])?;
        for g in groups[..len - 1].iter().rev() {
            write!(f, ",{g:03}")?;
        }
        Ok(())
    }
}

/// "1 peer", "387 peers", "4,096+ peers".
struct Peers {
    count: usize,
    overflow: bool,
}

impl fmt::Display for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = Grouped(u64::try_from(self.count).unwrap_or(u64::MAX));
        match (self.count, self.overflow) {
            (_, true) => write!(f, "{n}+ peers"),
            (1, false) => write!(f, "1 peer"),
            (_, false) => write!(f, "{n} peers"),
        }
    }
}

/// A window length for humans: "250 ms", "2.5 s", "10 s".
struct Span(Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d >= Duration::from_secs(10) {
            write!(f, "{} s", d.as_secs())
        } else if d >= Duration::from_secs(1) {
            write!(f, "{:.1} s", d.as_secs_f64())
        } else {
            write!(f, "{} ms", d.as_millis())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::net::Ipv4Addr;

    use super::*;

    /// Collects what is logged on this thread while `f` runs, one string per line.
    fn capture(f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn peer(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i))
    }

    fn summaries(lines: &[String]) -> Vec<&String> {
        lines.iter().filter(|l| l.contains(" WARN ")).collect()
    }

    #[test]
    fn a_flood_is_logged_in_a_handful_of_lines_with_exact_counts() {
        let t0 = Instant::now();
        let log = RefusalLog::new("SRT handshakes");
        let lines = capture(|| {
            for i in 0..100_000u32 {
                let at = t0 + Duration::from_micros(u64::from(i) * 50); // 5 s in all
                let reason = if i % 5 == 0 {
                    "bad cookie"
                } else {
                    "bad version"
                };
                log.refuse_at(
                    at,
                    peer(i % 387),
                    reason,
                    format_args!("refused number {i}"),
                );
            }
            log.flush_at(t0 + Duration::from_secs(9));
            log.flush_at(t0 + Duration::from_millis(10_100));
        });
        assert_eq!(lines.len(), 2 * 3 + 2, "{lines:#?}");
        let s = summaries(&lines);
        assert_eq!(s.len(), 2, "{lines:#?}");
        assert!(
            s.iter().any(|l| l.ends_with(
                "Refused 80,000 SRT handshakes from 387 peers in the last 10 s: bad version"
            )),
            "{s:#?}"
        );
        assert!(
            s.iter().any(|l| l.ends_with(
                "Refused 20,000 SRT handshakes from 387 peers in the last 10 s: bad cookie"
            )),
            "{s:#?}"
        );
        // The first three of each reason, with their details and peers.
        assert!(lines[0].contains("refused number 0") && lines[0].contains("peer=10.0.0.0"));
        assert!(lines[0].contains("reason=\"bad cookie\""), "{}", lines[0]);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("refused number 3 (further"))
        );
        assert!(!lines.iter().any(|l| l.contains("refused number 7 ")));
        let mut totals = log.totals();
        totals.sort_unstable();
        assert_eq!(
            totals,
            vec![("bad cookie", 20_000), ("bad version", 80_000)]
        );
    }

    #[test]
    fn a_flood_in_real_time_with_a_short_window_stays_small() {
        let window = Duration::from_millis(200);
        let log = RefusalLog::with_window("RTMP connections", window);
        let started = Instant::now();
        let lines = capture(|| {
            for i in 0..100_000u32 {
                log.refuse(peer(i % 1000), "wrong key", format_args!("refused {i}"));
            }
            std::thread::sleep(window + Duration::from_millis(20));
            log.flush();
        });
        let windows = u32::try_from(started.elapsed().as_millis() / window.as_millis()).unwrap();
        // Per window: three single lines and one summary.
        assert!(
            lines.len() <= 4 * usize::try_from(windows + 1).unwrap(),
            "{} lines in {windows} windows",
            lines.len()
        );
        let counted: u64 = summaries(&lines)
            .iter()
            .map(|l| {
                let n = l
                    .split("Refused ")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap();
                n.replace(',', "").parse::<u64>().unwrap()
            })
            .sum();
        // A last window of at most three refusals has no summary (they were logged).
        let unsummarised = 100_000 - counted;
        assert!(unsummarised <= 3, "{counted} summarised: {lines:#?}");
        assert_eq!(log.totals(), vec![("wrong key", 100_000)]);
    }

    #[test]
    fn distinct_peers_are_counted_up_to_the_bound() {
        let t0 = Instant::now();
        let log = RefusalLog::new("SRT handshakes");
        let lines = capture(|| {
            for i in 0..10_000 {
                log.refuse_at(t0, peer(i), "runt datagram", format_args!("runt"));
            }
            log.flush_at(t0 + Duration::from_secs(10));
            for _ in 0..10 {
                log.refuse_at(
                    t0 + Duration::from_secs(11),
                    peer(1),
                    "runt datagram",
                    format_args!("runt"),
                );
            }
            log.flush_at(t0 + Duration::from_secs(21));
        });
        let s = summaries(&lines);
        assert_eq!(s.len(), 2, "{lines:#?}");
        assert!(
            s[0].ends_with(
                "Refused 10,000 SRT handshakes from 4,096+ peers in the last 10 s: runt datagram"
            ),
            "{}",
            s[0]
        );
        assert!(
            s[1].contains("Refused 10 SRT handshakes from 1 peer in"),
            "{}",
            s[1]
        );
    }

    #[test]
    fn nothing_refused_nothing_logged() {
        let log = RefusalLog::new("SRT handshakes");
        let lines = capture(|| {
            log.flush();
            log.flush_at(Instant::now() + Duration::from_secs(3600));
            drop(log.clone());
            drop(log);
        });
        assert!(lines.is_empty(), "{lines:#?}");
    }

    #[test]
    fn a_few_refusals_are_logged_once_each_without_a_summary() {
        let t0 = Instant::now();
        let log = RefusalLog::new("RTMP connections");
        let lines = capture(|| {
            for i in 0..3 {
                log.refuse_at(
                    t0,
                    peer(i),
                    "wrong key",
                    format_args!("Publish refused {i}"),
                );
            }
            log.flush_at(t0 + Duration::from_secs(60));
            drop(log);
        });
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines.iter().all(|l| l.contains(" INFO ")), "{lines:#?}");
    }

    #[test]
    fn the_summary_comes_lazily_and_each_window_logs_its_first_refusals() {
        let t0 = Instant::now();
        let log = RefusalLog::new("SRT handshakes");
        let lines = capture(|| {
            for i in 0..10 {
                log.refuse_at(t0, peer(i), "bad cookie", format_args!("first window {i}"));
            }
            // No flush: the next refusal, after the window, writes the summary first.
            log.refuse_at(
                t0 + Duration::from_secs(30),
                peer(0),
                "bad cookie",
                format_args!("second window"),
            );
        });
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(
            lines[3]
                .contains("Refused 10 SRT handshakes from 10 peers in the last 30 s: bad cookie")
        );
        assert!(lines[4].contains("second window"), "{}", lines[4]);
    }

    #[test]
    fn dropping_the_last_clone_writes_what_is_left() {
        let log = RefusalLog::with_window("SRT handshakes", Duration::from_secs(3600));
        let lines = capture(|| {
            let other = log.clone();
            for i in 0..5 {
                other.refuse(peer(i), "handshake timed out", format_args!("timeout"));
            }
            drop(log);
            tracing::info!("first clone dropped");
            drop(other);
        });
        assert_eq!(summaries(&lines).len(), 1, "{lines:#?}");
        assert!(lines[3].contains("first clone dropped"), "{lines:#?}");
        assert!(
            lines[4].contains("Refused 5 SRT handshakes from 5 peers"),
            "{lines:#?}"
        );
    }

    #[test]
    fn reasons_are_bounded() {
        let t0 = Instant::now();
        let log = RefusalLog::new("SRT handshakes");
        let reasons: Vec<&'static str> = (0..100)
            .map(|i| &*Box::leak(format!("reason {i}").into_boxed_str()))
            .collect();
        capture(|| {
            for r in &reasons {
                log.refuse_at(t0, peer(0), r, format_args!("x"));
            }
        });
        let totals = log.totals();
        assert_eq!(totals.len(), MAX_REASONS + 1);
        assert_eq!(totals.last(), Some(&(OTHER, 100 - MAX_REASONS as u64)));
    }

    #[test]
    fn numbers_and_spans_read_well() {
        assert_eq!(Grouped(0).to_string(), "0");
        assert_eq!(Grouped(999).to_string(), "999");
        assert_eq!(Grouped(1000).to_string(), "1,000");
        assert_eq!(Grouped(12_345).to_string(), "12,345");
        assert_eq!(Grouped(1_002_003).to_string(), "1,002,003");
        assert_eq!(Grouped(u64::MAX).to_string(), "18,446,744,073,709,551,615");
        assert_eq!(Span(Duration::from_millis(250)).to_string(), "250 ms");
        assert_eq!(Span(Duration::from_millis(2500)).to_string(), "2.5 s");
        assert_eq!(Span(Duration::from_millis(10_240)).to_string(), "10 s");
    }

    #[test]
    fn refusal_log_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<RefusalLog>();
    }
}
