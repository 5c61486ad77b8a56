//! Notify plugin: selects event kinds, rate-limits them, and chooses recipients.
//!
//! Config:
//!
//! ```json
//! {
//!   "events": ["stream-started", "stream-stopped", "destination-failed"],
//!   "rate_limit": { "max": 3, "per_secs": 60, "key": "kind+path" },
//!   "to": [ { "email": "ops@example.com" }, { "webhook": "https://hooks.example/x" } ]
//! }
//! ```
//!
//! - `events`: the kinds that notify (default: all); others are dropped.
//! - `rate_limit` (optional): at most `max` notifications per `per_secs` for each key:
//!   `kind`, `path` or `kind+path` (default). Counters live in the plugin's memory:
//!   they reset when the instance is replaced (after a failure or a reload).
//! - `to` (optional): send to these instead of the server's default recipients.
// wit-bindgen's generated glue takes one argument per flattened field.
#![allow(clippy::too_many_arguments)]

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

use serde::Deserialize;

wit_bindgen::generate!({ world: "notify", path: "../../wit" });

use cthulhu::plugin::types::{EventKind, Target};

/// Rate-limit keys remembered at most; the oldest are forgotten beyond this.
const MAX_KEYS: usize = 4096;

const KINDS: [(&str, EventKind); 7] = [
    ("stream-started", EventKind::StreamStarted),
    ("stream-stopped", EventKind::StreamStopped),
    ("destination-failed", EventKind::DestinationFailed),
    ("destination-recovered", EventKind::DestinationRecovered),
    ("recording-finished", EventKind::RecordingFinished),
    ("schedule-fired", EventKind::ScheduleFired),
    ("schedule-failed", EventKind::ScheduleFailed),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    events: Option<Vec<String>>,
    rate_limit: Option<RateConfig>,
    to: Option<Vec<To>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateConfig {
    max: u32,
    per_secs: u64,
    #[serde(default = "default_key")]
    key: String,
}

fn default_key() -> String {
    "kind+path".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum To {
    Email(String),
    Webhook(String),
}

struct State {
    events: Vec<EventKind>,
    rate: Option<(u32, u64, String)>,
    to: Option<Vec<Target>>,
    /// Per key, the times (ms) of the notifications inside the window.
    sent: BTreeMap<String, VecDeque<u64>>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn kind_name(k: EventKind) -> &'static str {
    KINDS
        .iter()
        .find(|(_, e)| *e == k)
        .map(|(n, _)| *n)
        .unwrap_or("event")
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        let c: Config = if config.trim() == "null" {
            Config {
                events: None,
                rate_limit: None,
                to: None,
            }
        } else {
            serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?
        };
        let events = match c.events {
            None => KINDS.iter().map(|(_, k)| *k).collect(),
            Some(names) => {
                let mut v = Vec::new();
                for n in names {
                    let k = KINDS
                        .iter()
                        .find(|(name, _)| *name == n)
                        .ok_or_else(|| format!("invalid config: unknown event {n:?}"))?;
                    v.push(k.1);
                }
                v
            }
        };
        let rate = match c.rate_limit {
            None => None,
            Some(r) => {
                if !matches!(r.key.as_str(), "kind" | "path" | "kind+path") {
                    return Err(format!(
                        "invalid config: unknown rate_limit key {:?}",
                        r.key
                    ));
                }
                if r.per_secs == 0 {
                    return Err("invalid config: rate_limit per_secs must be positive".into());
                }
                Some((r.max, r.per_secs.saturating_mul(1000), r.key))
            }
        };
        let to = c.to.map(|t| {
            t.into_iter()
                .map(|t| match t {
                    To::Email(a) => Target::Email(a),
                    To::Webhook(u) => Target::Webhook(u),
                })
                .collect()
        });
        STATE.with(|s| {
            *s.borrow_mut() = Some(State {
                events,
                rate,
                to,
                sent: BTreeMap::new(),
            })
        });
        Ok(())
    }

    fn on_event(event: LifecycleEvent, defaults: Vec<Notification>) -> Vec<Notification> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let Some(state) = s.as_mut() else {
                return defaults;
            };
            if !state.events.contains(&event.kind) {
                return Vec::new();
            }
            if let Some((max, window_ms, key)) = &state.rate {
                let path = event.path.as_deref().unwrap_or("");
                let key = match key.as_str() {
                    "kind" => kind_name(event.kind).to_owned(),
                    "path" => path.to_owned(),
                    _ => format!("{}|{path}", kind_name(event.kind)),
                };
                if !state.sent.contains_key(&key) && state.sent.len() >= MAX_KEYS {
                    state.sent.pop_first();
                }
                let times = state.sent.entry(key).or_default();
                while times
                    .front()
                    .is_some_and(|t| event.at.saturating_sub(*t) >= *window_ms)
                {
                    times.pop_front();
                }
                if times.len() >= *max as usize {
                    return Vec::new();
                }
                times.push_back(event.at);
            }
            match &state.to {
                None => defaults,
                Some(targets) => {
                    let what = kind_name(event.kind);
                    let about = event.path.as_deref().unwrap_or("");
                    let subject = format!("[cthulhu] {what} {about}").trim_end().to_owned();
                    let mut body = what.to_owned();
                    for (label, v) in [
                        ("stream", &event.path),
                        ("subject", &event.subject),
                        ("detail", &event.detail),
                    ] {
                        if let Some(v) = v {
                            body.push_str(&format!("\n{label}: {v}"));
                        }
                    }
                    targets
                        .iter()
                        .map(|t| Notification {
                            target: t.clone(),
                            subject: subject.clone(),
                            body: body.clone(),
                        })
                        .collect()
                }
            }
        })
    }
}

export!(Plugin);
