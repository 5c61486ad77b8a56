//! Chaining the built-in policy with plugins behind the core [`Router`] trait.

use std::sync::Arc;

use async_trait::async_trait;
use cthulhu_core::{AccessRequest, Decision, Route, Router, StreamInfo};

use crate::auth::AuthPlugin;
use crate::route::{RouteMode, RoutePlan, RoutePlugin};

/// The config's router followed by auth and route plugins, as one [`Router`].
///
/// - `authorize`: the config router decides first; each auth plugin in turn gets the
///   decision so far as its `config-decision` and makes the next one; the last word
///   is the final decision. A plugin that fails (trap, timeout, memory, disabled)
///   ends the chain with a refusal naming the plugin and the failure: auth fails
///   closed, and a later plugin cannot turn that refusal into an allow.
/// - `route`: the config's routes, then each route plugin adds to or replaces them;
///   a plugin that fails leaves the routes as they were before it (the config's, if
///   it is the first).
pub struct PolicyChain {
    config: Arc<dyn Router>,
    auth: Vec<AuthPlugin>,
    route: Vec<RoutePlugin>,
}

impl std::fmt::Debug for PolicyChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyChain")
            .field("auth", &self.auth)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl PolicyChain {
    /// A chain with only the config's router (it decides alone until plugins are
    /// added).
    pub fn new(config: Arc<dyn Router>) -> Self {
        Self {
            config,
            auth: Vec::new(),
            route: Vec::new(),
        }
    }

    /// Adds an auth plugin at the end of the chain.
    pub fn with_auth(mut self, plugin: AuthPlugin) -> Self {
        self.auth.push(plugin);
        self
    }

    /// Adds a route plugin at the end of the chain.
    pub fn with_route(mut self, plugin: RoutePlugin) -> Self {
        self.route.push(plugin);
        self
    }

    /// The config's routes passed through the route plugins, with the recordings
    /// they ask for (which [`Router::route`] cannot return).
    pub async fn route_plan(&self, stream: &StreamInfo) -> RoutePlan {
        let mut plan = RoutePlan {
            mode: RouteMode::Add,
            routes: self.config.route(stream).await,
            recordings: Vec::new(),
        };
        for p in &self.route {
            match p.route(stream, &plan.routes).await {
                Ok(next) => {
                    plan.mode = next.mode;
                    plan.routes = next.routes;
                    plan.recordings.extend(next.recordings);
                }
                Err(e) => {
                    tracing::warn!(plugin = %p.plugin().name(), stream = %stream.path, error = %e, "Route plugin failed, keeping the routes before it");
                }
            }
        }
        plan
    }
}

#[async_trait]
impl Router for PolicyChain {
    async fn authorize(&self, request: &AccessRequest) -> Decision {
        let mut decision = self.config.authorize(request).await;
        for p in &self.auth {
            match p.authorize(request, Some(&decision)).await {
                Ok(d) => decision = d,
                Err(e) => {
                    return Decision::Deny(format!(
                        "auth plugin {} {}",
                        p.plugin().name(),
                        e.short()
                    ));
                }
            }
        }
        decision
    }

    async fn route(&self, stream: &StreamInfo) -> Vec<Route> {
        let plan = self.route_plan(stream).await;
        if !plan.recordings.is_empty() {
            tracing::debug!(stream = %stream.path, recordings = plan.recordings.len(), "Route plugins asked for recordings; Router::route returns destinations only");
        }
        plan.routes
    }
}
