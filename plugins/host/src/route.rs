//! The route hook: a plugin gives a published stream its destinations and recordings,
//! in addition to or instead of the config's.

use std::path::{Component, Path};
use std::sync::Arc;

use cthulhu_core::{MetaValue, Route, Secret, StreamInfo};

use crate::auth::{expect_kind, wrong_world};
use crate::bindings::types;
use crate::error::PluginError;
use crate::manifest::PluginKind;
use crate::plugin::{Plugin, World};
use crate::stats::Export;

/// Most destinations or recordings a plugin may give one stream.
const MAX_ITEMS: usize = 64;

/// How a plugin's destinations combine with the config's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteMode {
    /// The config's destinations plus the plugin's.
    Add,
    /// Only the plugin's.
    Replace,
}

/// A recording a route plugin asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    /// A name for logs.
    pub name: String,
    /// `flv`, `ts` or `mp4`.
    pub format: String,
    /// A relative path under the server's recording directory, with `{app}`,
    /// `{name}` and `{time}` placeholders; never absolute, never `..`.
    pub path_template: String,
}

/// What a stream gets, after a route plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePlan {
    /// How the plugin combined its destinations with the config's.
    pub mode: RouteMode,
    /// The push routes: the config's and the plugin's (mode add) or the plugin's
    /// (mode replace). A plugin destination equal to a config one (same name and
    /// URL) keeps the config's TLS settings.
    pub routes: Vec<Route>,
    /// Recordings the plugin asks for.
    pub recordings: Vec<Recording>,
}

/// A plugin of kind [`PluginKind::Route`], typed.
#[derive(Clone, Debug)]
pub struct RoutePlugin {
    plugin: Arc<Plugin>,
}

impl RoutePlugin {
    /// Wraps a loaded plugin; fails if it is not a route plugin.
    pub fn new(plugin: Arc<Plugin>) -> Result<Self, PluginError> {
        expect_kind(&plugin, PluginKind::Route)?;
        Ok(Self { plugin })
    }

    /// The plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Asks the plugin for a stream's routes; `config_routes` are the config's (given
    /// to the plugin as `config-destinations`). Destinations must be `rtmp://`,
    /// `rtmps://` or `srt://` URLs. On error callers fall back to the config's routes,
    /// as [`RoutePlugin::routes`] does.
    pub async fn route(
        &self,
        stream: &StreamInfo,
        config_routes: &[Route],
    ) -> Result<RoutePlan, PluginError> {
        let wit = to_wit(stream, config_routes);
        let config_routes = config_routes.to_vec();
        let plugin = self.plugin.name().to_owned();
        self.plugin
            .call(Export::Route, move |store, world| {
                let World::Route(w) = world else {
                    return Ok(Err(wrong_world(&plugin)));
                };
                let routes = w.call_route(store, &wit)?;
                Ok(from_wit(&plugin, routes, config_routes))
            })
            .await
    }

    /// The routes for a stream, falling back to `config_routes` if the plugin fails.
    pub async fn routes(&self, stream: &StreamInfo, config_routes: Vec<Route>) -> Vec<Route> {
        match self.route(stream, &config_routes).await {
            Ok(plan) => plan.routes,
            Err(e) => {
                tracing::warn!(plugin = %self.plugin.name(), stream = %stream.path, error = %e, "Route plugin failed, using the config's routes");
                config_routes
            }
        }
    }
}

fn to_wit(stream: &StreamInfo, config_routes: &[Route]) -> types::StreamInfo {
    types::StreamInfo {
        path: stream.path.as_str().to_owned(),
        app: stream.path.app().to_owned(),
        name: stream.path.name().to_owned(),
        generation: stream.generation,
        tracks: stream
            .tracks
            .iter()
            .map(|t| types::Track {
                kind: match t.kind() {
                    cthulhu_core::MediaKind::Video => types::MediaKind::Video,
                    cthulhu_core::MediaKind::Audio => types::MediaKind::Audio,
                },
                codec: t.codec.id().name().to_owned(),
                width: t.details.width,
                height: t.details.height,
                sample_rate: t.details.sample_rate,
                channels: t.details.channels,
            })
            .collect(),
        metadata: stream
            .metadata
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    MetaValue::Number(n) => n.to_string(),
                    MetaValue::Text(s) => s.clone(),
                    MetaValue::Bool(b) => b.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        config_destinations: config_routes
            .iter()
            .filter_map(|r| match r {
                Route::Push { name, url, .. } => Some(types::Destination {
                    name: name.clone(),
                    url: url.expose().to_owned(),
                }),
                _ => None,
            })
            .collect(),
    }
}

fn from_wit(
    plugin: &str,
    routes: types::Routes,
    config_routes: Vec<Route>,
) -> Result<RoutePlan, PluginError> {
    let invalid = |message: String| PluginError::InvalidOutput {
        plugin: plugin.to_owned(),
        message,
    };
    if routes.destinations.len() > MAX_ITEMS || routes.recordings.len() > MAX_ITEMS {
        return Err(invalid(format!(
            "more than {MAX_ITEMS} destinations or recordings"
        )));
    }
    let mut plugin_routes = Vec::with_capacity(routes.destinations.len());
    for d in routes.destinations {
        if d.name.trim().is_empty() {
            return Err(invalid("a destination without a name".into()));
        }
        let scheme_ok = ["rtmp://", "rtmps://", "srt://"].iter().any(|s| {
            d.url
                .get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
        });
        if !scheme_ok {
            // The URL holds a key: name the destination, not the URL.
            return Err(invalid(format!(
                "destination {:?} is not an rtmp://, rtmps:// or srt:// URL",
                d.name
            )));
        }
        let tls_ca_file = config_routes.iter().find_map(|r| match r {
            Route::Push {
                name,
                url,
                tls_ca_file,
            } if *name == d.name && url.matches(&d.url) => tls_ca_file.clone(),
            _ => None,
        });
        plugin_routes.push(Route::Push {
            name: d.name,
            url: Secret::new(d.url),
            tls_ca_file,
        });
    }
    let mut recordings = Vec::with_capacity(routes.recordings.len());
    for r in routes.recordings {
        if !matches!(r.format.as_str(), "flv" | "ts" | "mp4") {
            return Err(invalid(format!(
                "recording {:?} has an unknown format",
                r.name
            )));
        }
        let relative = Path::new(&r.path_template)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if r.path_template.is_empty() || !relative {
            return Err(invalid(format!(
                "recording {:?} has a path that is empty, absolute or leaves the recording directory",
                r.name
            )));
        }
        recordings.push(Recording {
            name: r.name,
            format: r.format,
            path_template: r.path_template,
        });
    }
    let (mode, routes) = match routes.mode {
        types::RouteMode::Add => {
            let mut all = config_routes;
            for r in plugin_routes {
                if !all.contains(&r) {
                    all.push(r);
                }
            }
            (RouteMode::Add, all)
        }
        types::RouteMode::Replace => {
            // Routes the interface cannot show the plugin (not push) are kept.
            let mut all: Vec<Route> = config_routes
                .into_iter()
                .filter(|r| !matches!(r, Route::Push { .. }))
                .collect();
            all.extend(plugin_routes);
            (RouteMode::Replace, all)
        }
    };
    Ok(RoutePlan {
        mode,
        routes,
        recordings,
    })
}
