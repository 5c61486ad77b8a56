//! Route plugin: destinations (and recordings) by stream path pattern.
//!
//! Config:
//!
//! ```json
//! {
//!   "rules": [
//!     { "match": "live/*", "destinations": [
//!         { "name": "a", "url": "rtmp://a.example/live/{name}" },
//!         { "name": "b", "url": "rtmp://b.example/app/{name}" } ] },
//!     { "match": "event/*", "mode": "replace", "destinations": [ … ],
//!       "recordings": [ { "name": "archive", "format": "mp4", "path": "{app}/{name}-{time}.mp4" } ] }
//!   ]
//! }
//! ```
//!
//! The first rule whose `match` fits the stream path (`app/name`; `*` matches any run
//! of characters, `?` one) applies. `{app}` and `{name}` in URLs and paths are
//! replaced by the stream's (`{time}` in recording paths is left to the server).
//! `mode`: `add` (default: the config's destinations plus these) or `replace`. No
//! matching rule: the config's destinations alone.
// wit-bindgen's generated glue takes one argument per flattened field.
#![allow(clippy::too_many_arguments)]

use std::cell::RefCell;

use serde::Deserialize;

wit_bindgen::generate!({ world: "route", path: "../../wit" });

use cthulhu::plugin::types::{Destination, Recording, RouteMode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(rename = "match")]
    pattern: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    destinations: Vec<Dest>,
    #[serde(default)]
    recordings: Vec<Rec>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Add,
    Replace,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Dest {
    name: String,
    url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rec {
    name: String,
    format: String,
    path: String,
}

thread_local! {
    static RULES: RefCell<Vec<Rule>> = const { RefCell::new(Vec::new()) };
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        let c: Config =
            serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?;
        RULES.with(|r| *r.borrow_mut() = c.rules);
        Ok(())
    }

    fn route(info: StreamInfo) -> Routes {
        RULES.with(|rules| {
            let rules = rules.borrow();
            let Some(rule) = rules.iter().find(|r| glob(&r.pattern, &info.path)) else {
                return Routes {
                    mode: RouteMode::Add,
                    destinations: Vec::new(),
                    recordings: Vec::new(),
                };
            };
            let fill = |s: &str| s.replace("{app}", &info.app).replace("{name}", &info.name);
            Routes {
                mode: match rule.mode {
                    Mode::Add => RouteMode::Add,
                    Mode::Replace => RouteMode::Replace,
                },
                destinations: rule
                    .destinations
                    .iter()
                    .map(|d| Destination {
                        name: d.name.clone(),
                        url: fill(&d.url),
                    })
                    .collect(),
                recordings: rule
                    .recordings
                    .iter()
                    .map(|r| Recording {
                        name: r.name.clone(),
                        format: r.format.clone(),
                        path_template: fill(&r.path),
                    })
                    .collect(),
            }
        })
    }
}

/// Glob match: `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

export!(Plugin);
