//! The schedule hook: scheduling policy (blackout windows, retry or skip on failure).
//! The scheduler itself is not here; this is the world and the typed calls.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::{expect_kind, wrong_world};
use crate::bindings::types;
use crate::error::PluginError;
use crate::manifest::PluginKind;
use crate::plugin::{Plugin, World, truncate};
use crate::stats::Export;
use crate::store::unix_ms;

/// Most commands a plugin may return from one tick.
const MAX_COMMANDS: usize = 1024;

/// A scheduled item's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemStatus {
    /// Not started yet.
    Pending,
    /// Playing.
    Running,
    /// Its last attempt failed.
    Failed,
    /// Finished.
    Done,
}

/// One scheduled item (a playout of a source to a stream path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleItem {
    /// Its id.
    pub id: String,
    /// What plays (a file, a URL).
    pub source: String,
    /// Where it plays to (`app/name`).
    pub path: String,
    /// When it should start.
    pub start_at: Option<SystemTime>,
    /// How long it should run.
    pub duration: Option<Duration>,
    /// Its state.
    pub status: ItemStatus,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
}

/// What the scheduler should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleCommand {
    /// Start this item now.
    Start(String),
    /// Stop this running item.
    Stop(String),
    /// Give up on this item.
    Skip {
        /// The item.
        id: String,
        /// Why.
        reason: String,
    },
    /// Try this failed item again after a delay.
    Retry {
        /// The item.
        id: String,
        /// After how long.
        after: Duration,
    },
}

/// Whether an item may start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartDecision {
    /// Yes.
    Allow,
    /// No, with a reason.
    Deny(String),
    /// Not before this time.
    Defer(SystemTime),
}

/// A plugin of kind [`PluginKind::Schedule`], typed. Errors are returned as they are:
/// what the scheduler does when its policy plugin fails is the scheduler's decision.
#[derive(Clone, Debug)]
pub struct SchedulePlugin {
    plugin: Arc<Plugin>,
}

impl SchedulePlugin {
    /// Wraps a loaded plugin; fails if it is not a schedule plugin.
    pub fn new(plugin: Arc<Plugin>) -> Result<Self, PluginError> {
        expect_kind(&plugin, PluginKind::Schedule)?;
        Ok(Self { plugin })
    }

    /// The plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// What to do now, given the scheduler's items.
    pub async fn on_tick(
        &self,
        now: SystemTime,
        items: &[ScheduleItem],
    ) -> Result<Vec<ScheduleCommand>, PluginError> {
        let state = types::ScheduleState {
            items: items.iter().map(item_to_wit).collect(),
        };
        let now = unix_ms(now);
        let plugin = self.plugin.name().to_owned();
        self.plugin
            .call(Export::OnTick, move |store, world| {
                let World::Schedule(w) = world else {
                    return Ok(Err(wrong_world(&plugin)));
                };
                let commands = w.call_on_tick(store, now, &state)?;
                if commands.len() > MAX_COMMANDS {
                    return Ok(Err(PluginError::InvalidOutput {
                        plugin,
                        message: format!("more than {MAX_COMMANDS} commands"),
                    }));
                }
                Ok(Ok(commands.into_iter().map(command_from_wit).collect()))
            })
            .await
    }

    /// Whether an item may start now.
    pub async fn may_start(&self, item: &ScheduleItem) -> Result<StartDecision, PluginError> {
        let item = item_to_wit(item);
        let plugin = self.plugin.name().to_owned();
        self.plugin
            .call(Export::MayStart, move |store, world| {
                let World::Schedule(w) = world else {
                    return Ok(Err(wrong_world(&plugin)));
                };
                Ok(Ok(match w.call_may_start(store, &item)? {
                    types::StartDecision::Allow => StartDecision::Allow,
                    types::StartDecision::Deny(r) => StartDecision::Deny(truncate(r, 256)),
                    types::StartDecision::Defer(ms) => {
                        match UNIX_EPOCH.checked_add(Duration::from_millis(ms)) {
                            Some(t) => StartDecision::Defer(t),
                            None => StartDecision::Deny("deferred beyond the clock's range".into()),
                        }
                    }
                }))
            })
            .await
    }
}

fn item_to_wit(i: &ScheduleItem) -> types::ScheduleItem {
    types::ScheduleItem {
        id: i.id.clone(),
        source: i.source.clone(),
        path: i.path.clone(),
        start_at: i.start_at.map(unix_ms),
        duration_ms: i
            .duration
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        status: match i.status {
            ItemStatus::Pending => types::ItemStatus::Pending,
            ItemStatus::Running => types::ItemStatus::Running,
            ItemStatus::Failed => types::ItemStatus::Failed,
            ItemStatus::Done => types::ItemStatus::Done,
        },
        attempts: i.attempts,
        last_error: i.last_error.clone(),
    }
}

fn command_from_wit(c: types::Command) -> ScheduleCommand {
    match c {
        types::Command::Start(id) => ScheduleCommand::Start(id),
        types::Command::Stop(id) => ScheduleCommand::Stop(id),
        types::Command::Skip((id, reason)) => ScheduleCommand::Skip {
            id,
            reason: truncate(reason, 256),
        },
        types::Command::Retry((id, ms)) => ScheduleCommand::Retry {
            id,
            after: Duration::from_millis(ms),
        },
    }
}
