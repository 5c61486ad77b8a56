//! The auth hook: a plugin decides access requests, with the config's decision as one
//! of its inputs.

use std::sync::Arc;

use cthulhu_core::{AccessRequest, Action, Decision, Protocol, StreamPath};

use crate::bindings::types;
use crate::error::PluginError;
use crate::manifest::PluginKind;
use crate::plugin::{Plugin, World, truncate};
use crate::stats::Export;

/// Longest refusal reason taken from a plugin, in bytes.
const MAX_REASON: usize = 256;

/// A plugin of kind [`PluginKind::Auth`], typed.
#[derive(Clone, Debug)]
pub struct AuthPlugin {
    plugin: Arc<Plugin>,
}

impl AuthPlugin {
    /// Wraps a loaded plugin; fails if it is not an auth plugin.
    pub fn new(plugin: Arc<Plugin>) -> Result<Self, PluginError> {
        expect_kind(&plugin, PluginKind::Auth)?;
        Ok(Self { plugin })
    }

    /// The plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Asks the plugin. `config` is the decision of the policy that ran before it
    /// (the config router), passed to the plugin as `config-decision`.
    ///
    /// The plugin's `allow` means the config's path when the config allowed, else the
    /// requested `app/name` (refused if that is not a valid path); `allow-as` names
    /// the path. An error means the plugin failed: callers must fail closed, as
    /// [`AuthPlugin::decide`] does.
    pub async fn authorize(
        &self,
        request: &AccessRequest,
        config: Option<&Decision>,
    ) -> Result<Decision, PluginError> {
        let wit = to_wit(request, config).map_err(|message| PluginError::Host {
            plugin: self.plugin.name().to_owned(),
            message,
        })?;
        let config_path = match config {
            Some(Decision::Allow(p)) => Some(p.clone()),
            _ => None,
        };
        let app = request.app.clone();
        let name = request.name.clone();
        let plugin = self.plugin.name().to_owned();
        self.plugin
            .call(Export::Authorize, move |store, world| {
                let World::Auth(w) = world else {
                    return Ok(Err(wrong_world(&plugin)));
                };
                let d = w.call_authorize(store, &wit)?;
                Ok(from_wit(&plugin, d, config_path, &app, &name))
            })
            .await
    }

    /// Asks the plugin and fails closed: a failed call is a refusal naming the plugin
    /// and the failure (never a key).
    pub async fn decide(&self, request: &AccessRequest, config: Option<&Decision>) -> Decision {
        match self.authorize(request, config).await {
            Ok(d) => d,
            Err(e) => Decision::Deny(format!("auth plugin {} {}", self.plugin.name(), e.short())),
        }
    }
}

pub(crate) fn expect_kind(plugin: &Plugin, kind: PluginKind) -> Result<(), PluginError> {
    if plugin.kind() == kind {
        Ok(())
    } else {
        Err(PluginError::WrongKind {
            plugin: plugin.name().to_owned(),
            expected: kind,
            actual: plugin.kind(),
        })
    }
}

pub(crate) fn wrong_world(plugin: &str) -> PluginError {
    PluginError::Host {
        plugin: plugin.to_owned(),
        message: "instance of another world".into(),
    }
}

fn to_wit(
    request: &AccessRequest,
    config: Option<&Decision>,
) -> Result<types::AccessRequest, String> {
    let protocol = match request.protocol {
        Protocol::Rtmp => types::Protocol::Rtmp,
        Protocol::Rtmps => types::Protocol::Rtmps,
        Protocol::Srt => types::Protocol::Srt,
        _ => return Err("the request's protocol is not in the plugin interface".into()),
    };
    let action = match request.action {
        Action::Publish => types::Action::Publish,
        Action::Play => types::Action::Play,
    };
    Ok(types::AccessRequest {
        protocol,
        action,
        app: request.app.clone(),
        name: request.name.clone(),
        key: request.key.as_ref().map(|k| k.expose().to_owned()),
        stream_id: request.stream_id.clone(),
        remote_addr: request.remote.map(|a| a.to_string()),
        query: request.query.clone(),
        config_decision: config.map(|d| match d {
            Decision::Allow(p) => types::ConfigDecision::Allow(p.as_str().to_owned()),
            Decision::Deny(r) => types::ConfigDecision::Deny(r.clone()),
        }),
    })
}

fn from_wit(
    plugin: &str,
    d: types::Decision,
    config_path: Option<StreamPath>,
    app: &str,
    name: &str,
) -> Result<Decision, PluginError> {
    Ok(match d {
        types::Decision::Allow => match config_path {
            Some(p) => Decision::Allow(p),
            // The name may be a key (OBS style): never echo it.
            None => match StreamPath::from_parts(app, name) {
                Ok(p) => Decision::Allow(p),
                Err(_) => {
                    Decision::Deny("the requested stream name is not a valid stream path".into())
                }
            },
        },
        types::Decision::AllowAs(p) => match StreamPath::new(&p) {
            Ok(p) => Decision::Allow(p),
            Err(_) => {
                return Err(PluginError::InvalidOutput {
                    plugin: plugin.to_owned(),
                    message: "allow-as with an invalid stream path".into(),
                });
            }
        },
        types::Decision::Deny(reason) => {
            let reason = truncate(reason, MAX_REASON);
            if reason.trim().is_empty() {
                Decision::Deny(format!("refused by plugin {plugin}"))
            } else {
                Decision::Deny(reason)
            }
        }
    })
}
