//! Schedule plugin: playout only inside configured hours.
//!
//! Config:
//!
//! ```json
//! {
//!   "windows": [ { "days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "20:00" },
//!                { "start": "22:00", "end": "02:00" } ],
//!   "utc_offset_minutes": 60,
//!   "max_attempts": 3,
//!   "retry_after_ms": 30000
//! }
//! ```
//!
//! - `windows`: local times `HH:MM`; a window whose end is not after its start runs
//!   past midnight (into the next day); `days` (default: every day) are the days a
//!   window starts on.
//! - `utc_offset_minutes`: local time = UTC + this (default 0).
//! - `may-start`: allow inside a window; outside, defer to the next window's start
//!   (deny if none within a week).
//! - `on-tick`: start due pending items inside a window, stop running items outside
//!   all windows, retry failed items after `retry_after_ms` until `max_attempts`
//!   failures, then skip them.
// wit-bindgen's generated glue takes one argument per flattened field.
#![allow(clippy::too_many_arguments)]

use std::cell::RefCell;

use serde::Deserialize;

wit_bindgen::generate!({ world: "schedule", path: "../../wit" });

use cthulhu::plugin::host;
use cthulhu::plugin::types::ItemStatus;

const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    windows: Vec<WindowConfig>,
    #[serde(default)]
    utc_offset_minutes: i32,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    #[serde(default = "default_retry")]
    retry_after_ms: u64,
}

fn default_attempts() -> u32 {
    3
}

fn default_retry() -> u64 {
    30_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowConfig {
    days: Option<Vec<String>>,
    start: String,
    end: String,
}

struct Window {
    /// Bit i set: the window starts on weekday i (0 = Monday).
    days: u8,
    start_min: i64,
    end_min: i64,
}

struct State {
    windows: Vec<Window>,
    offset_ms: i64,
    max_attempts: u32,
    retry_after_ms: u64,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn parse_hhmm(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid config: {s:?} is not HH:MM");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let h: i64 = h.parse().map_err(|_| bad())?;
    let m: i64 = m.parse().map_err(|_| bad())?;
    if !(0..=24).contains(&h) || !(0..60).contains(&m) || h * 60 + m > 24 * 60 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_days(days: &Option<Vec<String>>) -> Result<u8, String> {
    let Some(days) = days else { return Ok(0x7f) };
    let mut bits = 0u8;
    for d in days {
        let i = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .iter()
            .position(|n| d.eq_ignore_ascii_case(n))
            .ok_or_else(|| format!("invalid config: unknown day {d:?}"))?;
        bits |= 1 << i;
    }
    Ok(bits)
}

impl State {
    /// Local milliseconds since the epoch.
    fn local(&self, utc_ms: u64) -> i64 {
        i64::try_from(utc_ms)
            .unwrap_or(i64::MAX)
            .saturating_add(self.offset_ms)
    }

    fn inside(&self, utc_ms: u64) -> bool {
        let t = self.local(utc_ms);
        let day = t.div_euclid(DAY_MS);
        let minute = t.rem_euclid(DAY_MS) / MINUTE_MS;
        self.windows.iter().any(|w| {
            if w.start_min < w.end_min {
                starts_on(w, day) && (w.start_min..w.end_min).contains(&minute)
            } else {
                (starts_on(w, day) && minute >= w.start_min)
                    || (starts_on(w, day - 1) && minute < w.end_min)
            }
        })
    }

    /// The next window start after `utc_ms`, within a week.
    fn next_start(&self, utc_ms: u64) -> Option<u64> {
        let t = self.local(utc_ms);
        let today = t.div_euclid(DAY_MS);
        let mut best: Option<i64> = None;
        for d in today..=today + 7 {
            for w in &self.windows {
                let start = d * DAY_MS + w.start_min * MINUTE_MS;
                if starts_on(w, d) && start > t && best.is_none_or(|b| start < b) {
                    best = Some(start);
                }
            }
        }
        best.and_then(|b| u64::try_from(b - self.offset_ms).ok())
    }
}

fn starts_on(w: &Window, day: i64) -> bool {
    // 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
    let weekday = (day + 3).rem_euclid(7);
    w.days & (1 << weekday) != 0
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        let c: Config =
            serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?;
        let mut windows = Vec::new();
        for w in &c.windows {
            windows.push(Window {
                days: parse_days(&w.days)?,
                start_min: parse_hhmm(&w.start)?,
                end_min: parse_hhmm(&w.end)?,
            });
        }
        let state = State {
            windows,
            offset_ms: i64::from(c.utc_offset_minutes) * MINUTE_MS,
            max_attempts: c.max_attempts,
            retry_after_ms: c.retry_after_ms,
        };
        STATE.with(|s| *s.borrow_mut() = Some(state));
        Ok(())
    }

    fn on_tick(now: u64, state: ScheduleState) -> Vec<Command> {
        STATE.with(|s| {
            let s = s.borrow();
            let Some(cfg) = &*s else { return Vec::new() };
            let inside = cfg.inside(now);
            let mut commands = Vec::new();
            for item in state.items {
                match item.status {
                    ItemStatus::Pending if inside && item.start_at.is_none_or(|t| t <= now) => {
                        commands.push(Command::Start(item.id))
                    }
                    ItemStatus::Running if !inside => commands.push(Command::Stop(item.id)),
                    ItemStatus::Failed if item.attempts >= cfg.max_attempts => {
                        let reason = format!("failed {} times", item.attempts);
                        commands.push(Command::Skip((item.id, reason)));
                    }
                    ItemStatus::Failed => {
                        commands.push(Command::Retry((item.id, cfg.retry_after_ms)))
                    }
                    _ => {}
                }
            }
            commands
        })
    }

    fn may_start(_item: ScheduleItem) -> StartDecision {
        let now = host::now();
        STATE.with(|s| match &*s.borrow() {
            None => StartDecision::Deny("schedule-window is not configured".into()),
            Some(cfg) if cfg.inside(now) => StartDecision::Allow,
            Some(cfg) => match cfg.next_start(now) {
                Some(t) => StartDecision::Defer(t),
                None => StartDecision::Deny("outside the playout windows".into()),
            },
        })
    }
}

export!(Plugin);
