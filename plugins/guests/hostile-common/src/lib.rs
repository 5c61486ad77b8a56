//! Misbehaviour for the hostile test plugins, chosen by their config:
//!
//! ```json
//! { "mode": "loop", "only_name": "bad", "sleep_ms": 10000 }
//! ```
//!
//! `mode`: `deny` (default: a well-behaved refusal), `allow` (well-behaved), `loop`
//! (spins forever), `memory` (allocates until the host refuses), `trap`
//! (`unreachable`), `sleep` (busy-waits `sleep_ms` on the host clock, default 10 s:
//! a guest has no real sleep), `panic-configure` (panics in `configure`).
//! `only_name`: misbehave only for requests or streams with this name (others get
//! the well-behaved answer). Unknown config keys are ignored, so these plugins accept
//! any config (for hot-reload tests that swap them in for another plugin).

use std::cell::RefCell;
use std::hint::black_box;

use serde::Deserialize;

/// What to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Answer with a refusal (or the kind's neutral answer).
    #[default]
    Deny,
    /// Answer with an allow.
    Allow,
    /// Spin forever.
    Loop,
    /// Allocate until the allocator fails.
    Memory,
    /// Execute `unreachable`.
    Trap,
    /// Busy-wait on the host clock.
    Sleep,
    /// Panic in `configure`.
    PanicConfigure,
}

thread_local! {
    /// The config `configure` stored (a component instance is single-threaded).
    static CONFIG: RefCell<Config> = RefCell::new(Config::default());
}

/// What every hostile plugin's `configure` does: parses and stores the config,
/// or panics when `panic-configure` asks for it. `plugin` names it in the panic.
pub fn configure(plugin: &str, json: &str) -> Result<(), String> {
    let c = Config::parse(json)?;
    if c.mode == Mode::PanicConfigure {
        panic!("{plugin}: configured to panic");
    }
    CONFIG.with(|s| *s.borrow_mut() = c);
    Ok(())
}

/// The config stored by [`configure`] (the default before it).
pub fn current() -> Config {
    CONFIG.with(|s| s.borrow().clone())
}

/// A hostile plugin's config.
#[derive(Clone, Debug, Deserialize, Default)]
pub struct Config {
    /// The behaviour.
    #[serde(default)]
    pub mode: Mode,
    /// Misbehave only for this name.
    pub only_name: Option<String>,
    /// How long `sleep` spins, in milliseconds.
    pub sleep_ms: Option<u64>,
}

impl Config {
    /// Parses a config, leniently (`null` or unknown keys are fine).
    pub fn parse(json: &str) -> Result<Self, String> {
        if json.trim() == "null" {
            return Ok(Self::default());
        }
        serde_json::from_str(json).map_err(|e| format!("invalid config: {e}"))
    }

    /// Runs the configured misbehaviour for a call about `name` (returns only for the
    /// well-behaved modes or when `only_name` does not match); then says whether to
    /// allow.
    pub fn act(&self, name: &str, now: fn() -> u64) -> bool {
        if self.only_name.as_deref().is_some_and(|n| n != name) {
            return true;
        }
        match self.mode {
            Mode::Deny | Mode::PanicConfigure => false,
            Mode::Allow => true,
            Mode::Loop => spin(),
            Mode::Memory => hog(),
            Mode::Trap => std::process::abort(),
            Mode::Sleep => {
                let until = now().saturating_add(self.sleep_ms.unwrap_or(10_000));
                while now() < until {
                    black_box(());
                }
                true
            }
        }
    }
}

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn hog() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch the memory so it is really used.
        hoard.push(vec![1u8; 1 << 20]);
        black_box(&hoard);
    }
}
