//! Incoming bitrates of every stream over the last second and the last ten, from
//! the hub's byte counters sampled once a second: nothing on the frame path counts
//! for them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use cthulhu_core::{Hub, StreamPath};

use crate::control::Changes;

/// How often the counters are read.
const PERIOD: Duration = Duration::from_secs(1);
/// Samples kept per stream: ten periods back and now.
const KEPT: usize = 11;

/// A stream's incoming bitrate, in bits per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Bitrate {
    /// Over the last second.
    pub(crate) last_1s: f64,
    /// Over the last ten seconds (or since the stream appeared, if later).
    pub(crate) last_10s: f64,
}

type Samples = HashMap<StreamPath, VecDeque<(Instant, u64)>>;

/// The sampler's results; the sampling task ends when the last clone is dropped.
#[derive(Clone, Default)]
pub(crate) struct Rates {
    samples: Arc<Mutex<Samples>>,
}

impl std::fmt::Debug for Rates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rates").finish_non_exhaustive()
    }
}

impl Rates {
    /// Starts sampling `hub`; each sample counts as a change on `changes`.
    pub(crate) fn start(hub: Hub, changes: Changes) -> Self {
        let rates = Self::default();
        let weak = Arc::downgrade(&rates.samples);
        tokio::spawn(sample(hub, weak, changes));
        rates
    }

    /// The bitrate of `path`; None for a stream not seen in two samples yet.
    pub(crate) fn get(&self, path: &StreamPath) -> Option<Bitrate> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        bitrate(samples.get(path)?)
    }

    /// Records a sample of every stream at `now` (streams gone are forgotten).
    fn record(samples: &mut Samples, now: Instant, counters: Vec<(StreamPath, u64)>) {
        let mut next = HashMap::with_capacity(counters.len());
        for (path, bytes) in counters {
            let mut ring = samples.remove(&path).unwrap_or_default();
            // A counter that went back (a new hub stream on the same path) restarts.
            if ring.back().is_some_and(|&(_, b)| b > bytes) {
                ring.clear();
            }
            ring.push_back((now, bytes));
            while ring.len() > KEPT {
                ring.pop_front();
            }
            next.insert(path, ring);
        }
        *samples = next;
    }
}

/// The rates of one stream's samples.
fn bitrate(ring: &VecDeque<(Instant, u64)>) -> Option<Bitrate> {
    let &(t_now, b_now) = ring.back()?;
    let rate = |&(t, b): &(Instant, u64)| {
        let secs = t_now.duration_since(t).as_secs_f64();
        if secs > 0.0 {
            b_now.saturating_sub(b) as f64 * 8.0 / secs
        } else {
            0.0
        }
    };
    let prev = ring.get(ring.len().checked_sub(2)?)?;
    let first = ring.front()?;
    Some(Bitrate {
        last_1s: rate(prev),
        last_10s: rate(first),
    })
}

async fn sample(hub: Hub, samples: Weak<Mutex<Samples>>, changes: Changes) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(samples) = samples.upgrade() else {
            return;
        };
        let counters = hub
            .snapshot()
            .into_iter()
            .map(|s| (s.path, s.bytes_in))
            .collect();
        let now = Instant::now();
        let mut guard = samples.lock().unwrap_or_else(PoisonError::into_inner);
        Rates::record(&mut guard, now, counters);
        drop(guard);
        changes.bump_sample();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_one_and_ten_seconds() {
        let p = StreamPath::new("live/a").unwrap();
        let mut s = Samples::new();
        let t0 = Instant::now();
        // 1,000 bytes a second for 10 s, then 3,000 in the last second.
        for i in 0..=10u64 {
            Rates::record(
                &mut s,
                t0 + Duration::from_secs(i),
                vec![(p.clone(), i * 1000)],
            );
        }
        Rates::record(
            &mut s,
            t0 + Duration::from_secs(11),
            vec![(p.clone(), 13_000)],
        );
        let r = bitrate(&s[&p]).unwrap();
        assert_eq!(r.last_1s, 24_000.0);
        // The oldest sample kept is t0 + 1 s (1,000 bytes).
        assert_eq!(r.last_10s, 12_000.0 * 8.0 / 10.0);
        assert_eq!(s[&p].len(), KEPT);
        // One sample is not a rate; a stream gone is forgotten; a counter that went
        // back starts over.
        let q = StreamPath::new("live/b").unwrap();
        Rates::record(&mut s, t0 + Duration::from_secs(12), vec![(q.clone(), 5)]);
        assert!(!s.contains_key(&p));
        assert!(bitrate(&s[&q]).is_none());
        Rates::record(&mut s, t0 + Duration::from_secs(13), vec![(q.clone(), 1)]);
        assert!(bitrate(&s[&q]).is_none());
    }
}
