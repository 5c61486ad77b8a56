//! The notify hook: a plugin chooses which lifecycle events become notifications, and
//! to whom. Fails open: when the plugin fails, the server's default notifications are
//! sent unfiltered.

use std::sync::Arc;
use std::time::SystemTime;

use cthulhu_core::hub::{HubEvent, RecordingEvent};

use crate::auth::{expect_kind, wrong_world};
use crate::bindings::types;
use crate::error::PluginError;
use crate::manifest::PluginKind;
use crate::plugin::{Plugin, World, clip, truncate};
use crate::stats::Export;
use crate::store::unix_ms;

/// Most notifications a plugin may return for one event.
const MAX_NOTIFICATIONS: usize = 32;

/// Kinds of lifecycle events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A publisher went live.
    StreamStarted,
    /// A publisher left.
    StreamStopped,
    /// A push destination failed.
    DestinationFailed,
    /// A push destination works again.
    DestinationRecovered,
    /// A recording was finished.
    RecordingFinished,
    /// A scheduled item started.
    ScheduleFired,
    /// A scheduled item failed.
    ScheduleFailed,
}

/// Something that happened to a stream, a destination, a recording or a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// What.
    pub kind: EventKind,
    /// When.
    pub at: SystemTime,
    /// The stream path, if the event concerns a stream.
    pub path: Option<String>,
    /// The destination, recording or schedule item name, if any.
    pub subject: Option<String>,
    /// A detail for people (an error, a file name, a reason). Never a key.
    pub detail: Option<String>,
}

impl LifecycleEvent {
    /// An event of this kind now, without details.
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            at: SystemTime::now(),
            path: None,
            subject: None,
            detail: None,
        }
    }

    /// The event for a hub event (stream started or stopped, recording segment
    /// finished), stamped now.
    pub fn from_hub(event: &HubEvent) -> Option<Self> {
        match event {
            HubEvent::Published { path, .. } => Some(Self {
                path: Some(path.to_string()),
                ..Self::new(EventKind::StreamStarted)
            }),
            HubEvent::Unpublished { path, reason } => Some(Self {
                path: Some(path.to_string()),
                detail: Some(reason.to_string()),
                ..Self::new(EventKind::StreamStopped)
            }),
            HubEvent::Recording(RecordingEvent::SegmentFinished {
                path,
                recorder,
                object,
                ..
            }) => Some(Self {
                path: Some(path.to_string()),
                subject: Some(recorder.clone()),
                detail: Some(object.clone()),
                ..Self::new(EventKind::RecordingFinished)
            }),
            // Segment starts and gaps are progress, not lifecycle; failures get their
            // own kind when the notifier lands.
            HubEvent::Recording(_) => None,
        }
    }
}

/// Where a notification goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NotifyTarget {
    /// An email address.
    Email(String),
    /// A webhook URL.
    Webhook(String),
}

/// A notification to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Where.
    pub target: NotifyTarget,
    /// A subject line.
    pub subject: String,
    /// The body.
    pub body: String,
}

/// A plugin of kind [`PluginKind::Notify`], typed.
#[derive(Clone, Debug)]
pub struct NotifyPlugin {
    plugin: Arc<Plugin>,
}

impl NotifyPlugin {
    /// Wraps a loaded plugin; fails if it is not a notify plugin.
    pub fn new(plugin: Arc<Plugin>) -> Result<Self, PluginError> {
        expect_kind(&plugin, PluginKind::Notify)?;
        Ok(Self { plugin })
    }

    /// The plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The notifications for an event: what the plugin returns, or `defaults` (the
    /// server's own notifications for this event) if the plugin fails: notify fails
    /// open, so a broken filter never silences alerts.
    pub async fn on_event(
        &self,
        event: &LifecycleEvent,
        defaults: Vec<Notification>,
    ) -> Vec<Notification> {
        match self.try_on_event(event, &defaults).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(plugin = %self.plugin.name(), event = ?event.kind, error = %e, "Notify plugin failed, sending the default notifications");
                defaults
            }
        }
    }

    /// Asks the plugin, returning its error instead of falling back.
    pub async fn try_on_event(
        &self,
        event: &LifecycleEvent,
        defaults: &[Notification],
    ) -> Result<Vec<Notification>, PluginError> {
        let wit_event = event_to_wit(event);
        let wit_defaults: Vec<types::Notification> = defaults.iter().map(to_wit).collect();
        let plugin = self.plugin.name().to_owned();
        self.plugin
            .call(Export::OnEvent, move |store, world| {
                let World::Notify(w) = world else {
                    return Ok(Err(wrong_world(&plugin)));
                };
                let out = w.call_on_event(store, &wit_event, &wit_defaults)?;
                Ok(from_wit(&plugin, out))
            })
            .await
    }
}

fn event_to_wit(e: &LifecycleEvent) -> types::LifecycleEvent {
    types::LifecycleEvent {
        kind: match e.kind {
            EventKind::StreamStarted => types::EventKind::StreamStarted,
            EventKind::StreamStopped => types::EventKind::StreamStopped,
            EventKind::DestinationFailed => types::EventKind::DestinationFailed,
            EventKind::DestinationRecovered => types::EventKind::DestinationRecovered,
            EventKind::RecordingFinished => types::EventKind::RecordingFinished,
            EventKind::ScheduleFired => types::EventKind::ScheduleFired,
            EventKind::ScheduleFailed => types::EventKind::ScheduleFailed,
        },
        at: unix_ms(e.at),
        path: e.path.clone(),
        subject: e.subject.clone(),
        detail: e.detail.clone(),
    }
}

fn to_wit(n: &Notification) -> types::Notification {
    types::Notification {
        target: match &n.target {
            NotifyTarget::Email(a) => types::Target::Email(a.clone()),
            NotifyTarget::Webhook(u) => types::Target::Webhook(u.clone()),
        },
        subject: n.subject.clone(),
        body: n.body.clone(),
    }
}

fn from_wit(plugin: &str, out: Vec<types::Notification>) -> Result<Vec<Notification>, PluginError> {
    if out.len() > MAX_NOTIFICATIONS {
        return Err(PluginError::InvalidOutput {
            plugin: plugin.to_owned(),
            message: format!("more than {MAX_NOTIFICATIONS} notifications for one event"),
        });
    }
    let mut result = Vec::with_capacity(out.len());
    for n in out {
        let target = match n.target {
            types::Target::Email(a) if !a.trim().is_empty() => NotifyTarget::Email(a),
            types::Target::Webhook(u) if u.starts_with("http://") || u.starts_with("https://") => {
                NotifyTarget::Webhook(u)
            }
            _ => {
                return Err(PluginError::InvalidOutput {
                    plugin: plugin.to_owned(),
                    message: "a notification without a valid email address or http(s) webhook"
                        .into(),
                });
            }
        };
        result.push(Notification {
            target,
            subject: truncate(n.subject, 256),
            body: clip(n.body, 16 * 1024),
        });
    }
    Ok(result)
}
