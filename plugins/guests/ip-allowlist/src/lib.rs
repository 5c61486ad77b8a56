//! Auth plugin: only peers from the listed networks may publish (and play); for them
//! the proxy's config still decides.
//!
//! Config:
//!
//! ```json
//! { "allow": ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"], "actions": ["publish", "play"] }
//! ```
//!
//! - `allow`: addresses or CIDR networks (IPv4 and IPv6; IPv4-mapped IPv6 peers match
//!   IPv4 networks).
//! - `actions`: which actions are checked (default both); others pass through.
//!
//! A peer outside the list is refused (`address not allowed`), as is a request
//! without a peer address. A listed peer gets the config's decision (allowed when no
//! config runs before the plugin): this plugin narrows, it never widens.
// wit-bindgen's generated glue takes one argument per flattened field.
#![allow(clippy::too_many_arguments)]

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

wit_bindgen::generate!({ world: "auth", path: "../../wit" });

use cthulhu::plugin::types::{Action, ConfigDecision};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    allow: Vec<String>,
    #[serde(default = "default_actions")]
    actions: Vec<String>,
}

fn default_actions() -> Vec<String> {
    vec!["publish".into(), "play".into()]
}

struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("invalid config: {s:?} is not an address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid config: bad prefix length in {s:?}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

struct State {
    nets: Vec<Net>,
    actions: Vec<Action>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        let c: Config =
            serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?;
        let nets = c
            .allow
            .iter()
            .map(|s| Net::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut actions = Vec::new();
        for a in &c.actions {
            actions.push(match a.as_str() {
                "publish" => Action::Publish,
                "play" => Action::Play,
                "connect" => Action::Connect,
                other => return Err(format!("invalid config: unknown action {other:?}")),
            });
        }
        STATE.with(|s| *s.borrow_mut() = Some(State { nets, actions }));
        Ok(())
    }

    fn authorize(request: AccessRequest) -> Decision {
        STATE.with(|s| match &*s.borrow() {
            Some(state) => decide(state, &request),
            None => Decision::Deny("ip-allowlist is not configured".into()),
        })
    }
}

fn decide(state: &State, r: &AccessRequest) -> Decision {
    if state.actions.contains(&r.action) {
        let ip = r.remote_addr.as_deref().and_then(|a| {
            a.parse::<SocketAddr>()
                .ok()
                .map(|s| s.ip())
                .or_else(|| a.parse().ok())
        });
        let Some(ip) = ip else {
            return Decision::Deny("no peer address to check".into());
        };
        if !state.nets.iter().any(|n| n.contains(ip)) {
            return Decision::Deny("address not allowed".into());
        }
    }
    match &r.config_decision {
        Some(ConfigDecision::Deny(reason)) => Decision::Deny(reason.clone()),
        _ => Decision::Allow,
    }
}

export!(Plugin);
