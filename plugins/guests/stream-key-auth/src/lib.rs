//! Auth plugin: accepts the stream keys listed in its config (each optionally bound to
//! a stream name and with an expiry), and HMAC-signed expiring keys.
//!
//! Config (JSON, from the manifest's `config` table):
//!
//! ```json
//! {
//!   "keys": ["k1", { "key": "k2", "name": "studio", "expires": 1767225600 }],
//!   "hmac_secret": "…",
//!   "config_decision": "accept",
//!   "actions": ["publish"]
//! }
//! ```
//!
//! - `keys`: plain keys, or objects with `key`, an optional stream `name` the key is
//!   bound to, and an optional `expires` (Unix seconds; the key is refused from then).
//! - `hmac_secret` (optional): enables signed keys `<name>.<expires>.<hex>` where
//!   `<hex>` is the lowercase hex HMAC-SHA256, under the secret, of
//!   `<app>/<name>.<expires>` (e.g. `live/studio.1767225600`). Such a key allows
//!   `app/name` until `expires` (Unix seconds).
//! - `config_decision`: `accept` (default): a request the proxy's config allows (its
//!   stream key matched) is allowed on the config's path — the config key is one of
//!   the accepted inputs; `ignore`: only this plugin's keys count.
//! - `actions`: which actions need a key (default `["publish"]`); for the others the
//!   config's decision stands (allow when there is none).
//!
//! The key is the request's separate key (`?key=`), or the name itself when there is
//! none (OBS style, `rtmp://host/app` with the key as stream key): then the path is
//! `app/<name bound to the key>`, and a plain key without a name is refused.
// wit-bindgen's generated glue takes one argument per flattened field.
#![allow(clippy::too_many_arguments)]

use std::cell::RefCell;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

wit_bindgen::generate!({ world: "auth", path: "../../wit" });

use cthulhu::plugin::host;
use cthulhu::plugin::types::{Action, ConfigDecision};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    keys: Vec<KeyEntry>,
    hmac_secret: Option<String>,
    #[serde(default)]
    config_decision: ConfigMode,
    #[serde(default = "default_actions")]
    actions: Vec<String>,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum ConfigMode {
    #[default]
    Accept,
    Ignore,
}

fn default_actions() -> Vec<String> {
    vec!["publish".into()]
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KeyEntry {
    Plain(String),
    Full {
        key: String,
        name: Option<String>,
        expires: Option<u64>,
    },
}

struct Key {
    key: String,
    name: Option<String>,
    expires: Option<u64>,
}

struct State {
    keys: Vec<Key>,
    hmac_secret: Option<Vec<u8>>,
    config_mode: ConfigMode,
    publish: bool,
    play: bool,
    connect: bool,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        let c: Config =
            serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?;
        let mut keys = Vec::with_capacity(c.keys.len());
        for k in c.keys {
            let key = match k {
                KeyEntry::Plain(key) => Key {
                    key,
                    name: None,
                    expires: None,
                },
                KeyEntry::Full { key, name, expires } => Key { key, name, expires },
            };
            if key.key.is_empty() {
                return Err("invalid config: an empty key".into());
            }
            keys.push(key);
        }
        let mut state = State {
            keys,
            hmac_secret: c.hmac_secret.map(String::into_bytes),
            config_mode: c.config_decision,
            publish: false,
            play: false,
            connect: false,
        };
        for a in &c.actions {
            match a.as_str() {
                "publish" => state.publish = true,
                "play" => state.play = true,
                "connect" => state.connect = true,
                other => return Err(format!("invalid config: unknown action {other:?}")),
            }
        }
        if state.hmac_secret.as_ref().is_some_and(Vec::is_empty) {
            return Err("invalid config: hmac_secret is empty".into());
        }
        let n = state.keys.len();
        STATE.with(|s| *s.borrow_mut() = Some(state));
        host::log(host::Level::Debug, &format!("configured with {n} keys"));
        Ok(())
    }

    fn authorize(request: AccessRequest) -> Decision {
        STATE.with(|s| match &*s.borrow() {
            Some(state) => decide(state, &request, host::now() / 1000),
            None => Decision::Deny("stream-key-auth is not configured".into()),
        })
    }
}

fn decide(state: &State, r: &AccessRequest, now_secs: u64) -> Decision {
    let checked = match r.action {
        Action::Publish => state.publish,
        Action::Play => state.play,
        Action::Connect => state.connect,
    };
    if !checked {
        return match &r.config_decision {
            Some(ConfigDecision::Deny(reason)) => Decision::Deny(reason.clone()),
            _ => Decision::Allow,
        };
    }
    if state.config_mode == ConfigMode::Accept
        && matches!(r.config_decision, Some(ConfigDecision::Allow(_)))
    {
        return Decision::Allow;
    }
    // OBS style: no separate key, the name is the key.
    let (key, obs_style) = match &r.key {
        Some(k) => (k.as_str(), false),
        None => (r.name.as_str(), true),
    };
    if let Some(k) = state.keys.iter().find(|k| constant_time_eq(&k.key, key)) {
        if k.expires.is_some_and(|e| now_secs >= e) {
            return Decision::Deny("stream key expired".into());
        }
        return bind(&r.app, &r.name, k.name.as_deref(), obs_style);
    }
    if let Some(secret) = &state.hmac_secret
        && let Some((name, expires, mac)) = parse_signed(key)
    {
        let mut m = match Hmac::<Sha256>::new_from_slice(secret) {
            Ok(m) => m,
            Err(_) => return Decision::Deny("stream-key-auth: bad HMAC secret".into()),
        };
        m.update(format!("{}/{name}.{expires}", r.app).as_bytes());
        if m.verify_slice(&mac).is_err() {
            return Decision::Deny("invalid stream key".into());
        }
        if now_secs >= expires {
            return Decision::Deny("stream key expired".into());
        }
        return bind(&r.app, &r.name, Some(name), obs_style);
    }
    Decision::Deny("unknown stream key".into())
}

/// The decision for a valid key bound to `key_name` (if any).
fn bind(app: &str, requested: &str, key_name: Option<&str>, obs_style: bool) -> Decision {
    match (key_name, obs_style) {
        (Some(n), true) => Decision::AllowAs(format!("{app}/{n}")),
        (None, true) => Decision::Deny(
            "this key is not bound to a stream name: publish to APP/NAME?key=KEY".into(),
        ),
        (Some(n), false) if n != requested => {
            Decision::Deny("the stream key is not valid for this stream".into())
        }
        (_, false) => Decision::Allow,
    }
}

/// Splits `<name>.<expires>.<hex-mac>`.
fn parse_signed(key: &str) -> Option<(&str, u64, Vec<u8>)> {
    let mut parts = key.rsplitn(3, '.');
    let mac = parts.next()?;
    let expires = parts.next()?.parse().ok()?;
    let name = parts.next()?;
    if name.is_empty() || mac.len() != 64 {
        return None;
    }
    let mut bytes = Vec::with_capacity(32);
    for pair in mac.as_bytes().chunks(2) {
        let hi = hex_digit(*pair.first()?)?;
        let lo = hex_digit(*pair.get(1)?)?;
        bytes.push(hi << 4 | lo);
    }
    Some((name, expires, bytes))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Compares without an early exit on the first difference.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

export!(Plugin);
