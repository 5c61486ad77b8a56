//! The policy seam: who may publish or play, and where a published stream goes.
//!
//! Protocol crates ask, the application decides: an RTMP or SRT listener turns a
//! connection's request into an [`AccessRequest`] and acts on the [`Decision`] of a
//! [`Router`]. The built-in [`StaticRouter`] implements the config file's rules; WASM
//! plugins implement the same trait and can be chained with it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{StreamInfo, StreamPath};

/// A secret string (stream key, passphrase, token) that never prints.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<Arc<str>>) -> Self {
        Self(s.into())
    }

    /// The secret itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the first difference is.
    pub fn matches(&self, candidate: &str) -> bool {
        let a = self.0.as_bytes();
        let b = candidate.as_bytes();
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            let y = b.get(i).copied().unwrap_or(0);
            diff |= usize::from(x ^ y);
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The protocol a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// RTMP over TCP.
    Rtmp,
    /// RTMP over TLS.
    Rtmps,
    /// SRT.
    Srt,
}

/// What the client wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Publish a stream.
    Publish,
    /// Play a stream.
    Play,
}

/// A request to publish or play, as the protocol saw it.
#[derive(Clone, Debug)]
pub struct AccessRequest {
    /// The protocol.
    pub protocol: Protocol,
    /// Publish or play.
    pub action: Action,
    /// The application (`live` in `rtmp://host/live/...`).
    pub app: String,
    /// The requested name: a stream name, or the stream key itself (OBS style).
    pub name: String,
    /// The key given separately (`?key=...` or SRT `s=`), if any.
    pub key: Option<Secret>,
    /// The raw SRT stream id, if any.
    pub stream_id: Option<String>,
    /// The peer address.
    pub remote: Option<SocketAddr>,
    /// Query parameters other than the key.
    pub query: Vec<(String, String)>,
}

/// A policy decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, on this stream path.
    Allow(StreamPath),
    /// Refused, with a reason safe to log and to tell the client (never a key).
    Deny(String),
}

/// Where a published stream goes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// Push to a destination URL (`rtmp://`, `rtmps://`, later `srt://`).
    Push {
        /// The destination's name (for logs and the console).
        name: String,
        /// The URL, which holds the destination's key: never log it unredacted.
        url: Secret,
        /// An extra trust anchor (PEM CA file) for TLS destinations, if any.
        tls_ca_file: Option<std::path::PathBuf>,
    },
}

/// Decides access and routing. Object-safe: the server holds `Arc<dyn Router>`.
#[async_trait]
pub trait Router: Send + Sync {
    /// May this request go ahead, and on which stream path?
    async fn authorize(&self, request: &AccessRequest) -> Decision;

    /// The destinations a published stream gets.
    async fn route(&self, stream: &StreamInfo) -> Vec<Route>;
}

/// One stream known to the [`StaticRouter`].
#[derive(Clone, Debug)]
pub struct StreamRule {
    /// The stream path.
    pub path: StreamPath,
    /// The publish key.
    pub key: Secret,
    /// The play key; None lets anyone play.
    pub play_key: Option<Secret>,
    /// Push destinations.
    pub routes: Vec<Route>,
}

/// The built-in policy: a fixed table of streams, each with its key.
///
/// Publishing is allowed OBS-style — server `rtmp://HOST/APP`, stream key `KEY`, so the
/// requested name *is* the key — or as `APP/NAME` with the key given separately
/// (`?key=KEY`). Playing `APP/NAME` is allowed when the stream has no play key or the
/// right one is given.
#[derive(Clone, Debug, Default)]
pub struct StaticRouter {
    rules: Vec<StreamRule>,
}

impl StaticRouter {
    /// Creates a router from its rules.
    pub fn new(rules: Vec<StreamRule>) -> Self {
        Self { rules }
    }

    /// The rules.
    pub fn rules(&self) -> &[StreamRule] {
        &self.rules
    }

    fn decide(&self, req: &AccessRequest) -> Decision {
        match req.action {
            Action::Publish => {
                // OBS style: the name is the key.
                if req.key.is_none()
                    && let Some(rule) = self
                        .rules
                        .iter()
                        .find(|r| r.path.app() == req.app && r.key.matches(&req.name))
                {
                    return Decision::Allow(rule.path.clone());
                }
                let Some(rule) = self.find(req) else {
                    return Decision::Deny(format!(
                        "no stream matches app {:?} and the given key",
                        req.app
                    ));
                };
                match &req.key {
                    Some(k) if rule.key.matches(k.expose()) => Decision::Allow(rule.path.clone()),
                    Some(_) => Decision::Deny(format!("wrong key for {}", rule.path)),
                    None => Decision::Deny(format!("no key given for {}", rule.path)),
                }
            }
            Action::Play => {
                let Some(rule) = self.find(req) else {
                    return Decision::Deny(format!("unknown stream {}/{}", req.app, req.name));
                };
                match (&rule.play_key, &req.key) {
                    (None, _) => Decision::Allow(rule.path.clone()),
                    (Some(want), Some(k)) if want.matches(k.expose()) => {
                        Decision::Allow(rule.path.clone())
                    }
                    (Some(_), _) => {
                        Decision::Deny(format!("wrong or missing play key for {}", rule.path))
                    }
                }
            }
        }
    }

    fn find(&self, req: &AccessRequest) -> Option<&StreamRule> {
        self.rules
            .iter()
            .find(|r| r.path.app() == req.app && r.path.name() == req.name)
    }
}

#[async_trait]
impl Router for StaticRouter {
    async fn authorize(&self, request: &AccessRequest) -> Decision {
        self.decide(request)
    }

    async fn route(&self, stream: &StreamInfo) -> Vec<Route> {
        self.rules
            .iter()
            .find(|r| r.path == stream.path)
            .map(|r| r.routes.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn router() -> StaticRouter {
        StaticRouter::new(vec![
            StreamRule {
                path: StreamPath::new("live/studio").unwrap(),
                key: Secret::new("studio-secret"),
                play_key: None,
                routes: vec![],
            },
            StreamRule {
                path: StreamPath::new("live/private").unwrap(),
                key: Secret::new("pk"),
                play_key: Some(Secret::new("viewer")),
                routes: vec![],
            },
        ])
    }

    fn req(action: Action, app: &str, name: &str, key: Option<&str>) -> AccessRequest {
        AccessRequest {
            protocol: Protocol::Rtmp,
            action,
            app: app.into(),
            name: name.into(),
            key: key.map(Secret::new),
            stream_id: None,
            remote: None,
            query: vec![],
        }
    }

    #[tokio::test]
    async fn publish_obs_style_and_named_with_key() {
        let r = router();
        let studio = StreamPath::new("live/studio").unwrap();
        let ok = Decision::Allow(studio);
        assert_eq!(
            r.authorize(&req(Action::Publish, "live", "studio-secret", None))
                .await,
            ok
        );
        assert_eq!(
            r.authorize(&req(
                Action::Publish,
                "live",
                "studio",
                Some("studio-secret")
            ))
            .await,
            ok
        );
        for bad in [
            req(Action::Publish, "live", "studio", Some("nope")),
            req(Action::Publish, "live", "studio", None),
            req(Action::Publish, "live", "nope", None),
            req(Action::Publish, "other", "studio-secret", None),
        ] {
            match r.authorize(&bad).await {
                Decision::Deny(reason) => assert!(
                    !reason.contains("secret") && !reason.contains("nope\""),
                    "{reason}"
                ),
                d => panic!("{d:?}"),
            }
        }
    }

    #[tokio::test]
    async fn play_keys() {
        let r = router();
        assert!(matches!(
            r.authorize(&req(Action::Play, "live", "studio", None))
                .await,
            Decision::Allow(_)
        ));
        assert!(matches!(
            r.authorize(&req(Action::Play, "live", "private", None))
                .await,
            Decision::Deny(_)
        ));
        assert!(matches!(
            r.authorize(&req(Action::Play, "live", "private", Some("viewer")))
                .await,
            Decision::Allow(_)
        ));
        assert!(matches!(
            r.authorize(&req(Action::Play, "live", "ghost", None)).await,
            Decision::Deny(_)
        ));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert!(s.matches("hunter2") && !s.matches("hunter") && !s.matches("hunter22"));
    }

    #[test]
    fn matches_compares_whole_value() {
        let s = Secret::new("abc");
        assert!(s.matches("abc"));
        assert!(!s.matches("abd"));
        assert!(!s.matches("ab"));
        assert!(!s.matches("abcd"));
        assert!(!s.matches(""));
        assert!(!Secret::new("").matches("a"));
        assert!(Secret::new("").matches(""));
    }
}
