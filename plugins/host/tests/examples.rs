//! The example plugins' decisions, through the real runtime and components.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{host, load, publish};
use cthulhu_core::policy::StreamRule;
use cthulhu_core::{Action, Decision, Route, Router, Secret, StaticRouter, StreamInfo, StreamPath};
use cthulhu_plugins::{
    AuthPlugin, EventKind, FailureReason, ItemStatus, LifecycleEvent, Notification, NotifyPlugin,
    NotifyTarget, PluginKind, PolicyChain, RouteMode, RoutePlugin, ScheduleCommand, ScheduleItem,
    SchedulePlugin, StartDecision,
};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

fn path(s: &str) -> StreamPath {
    StreamPath::new(s).unwrap()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed_key(secret: &str, app: &str, name: &str, expires: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{app}/{name}.{expires}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{name}.{expires}.{hex}")
}

fn denied(d: &Decision) -> &str {
    match d {
        Decision::Deny(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn stream_key_auth_decisions() {
    let host = host();
    let past = now_secs() - 10;
    let future = now_secs() + 3600;
    let auth = AuthPlugin::new(load(
        &host,
        PluginKind::Auth,
        "stream-key-auth",
        json!({
            "keys": [
                "k1",
                { "key": "k-old", "expires": past },
                { "key": "k-new", "expires": future, "name": "studio" },
            ],
            "hmac_secret": "s3cret",
        }),
    ))
    .unwrap();

    // A listed key, given separately: the requested path.
    let d = auth
        .authorize(&publish("live", "cam", Some("k1")), None)
        .await
        .unwrap();
    assert_eq!(d, Decision::Allow(path("live/cam")));

    // Unknown key: refused with the plugin's reason, which never holds the key.
    let d = auth
        .authorize(&publish("live", "cam", Some("nope")), None)
        .await
        .unwrap();
    assert_eq!(denied(&d), "unknown stream key");

    // Expired key.
    let d = auth
        .authorize(&publish("live", "cam", Some("k-old")), None)
        .await
        .unwrap();
    assert_eq!(denied(&d), "stream key expired");

    // A key bound to a name, OBS style (the name is the key): allowed as live/studio.
    let d = auth
        .authorize(&publish("live", "k-new", None), None)
        .await
        .unwrap();
    assert_eq!(d, Decision::Allow(path("live/studio")));
    // ... and refused for another stream name.
    let d = auth
        .authorize(&publish("live", "other", Some("k-new")), None)
        .await
        .unwrap();
    assert!(denied(&d).contains("not valid for this stream"));

    // An unbound key OBS style: no name to publish on.
    let d = auth
        .authorize(&publish("live", "k1", None), None)
        .await
        .unwrap();
    assert!(denied(&d).contains("not bound to a stream name"));

    // HMAC-signed expiring key, OBS style and as ?key=.
    let key = signed_key("s3cret", "live", "show", future);
    let d = auth
        .authorize(&publish("live", &key, None), None)
        .await
        .unwrap();
    assert_eq!(d, Decision::Allow(path("live/show")));
    let d = auth
        .authorize(&publish("live", "show", Some(&key)), None)
        .await
        .unwrap();
    assert_eq!(d, Decision::Allow(path("live/show")));
    // Signed for another app.
    let d = auth
        .authorize(&publish("event", &key, None), None)
        .await
        .unwrap();
    assert_eq!(denied(&d), "invalid stream key");
    // Tampered: another name, another expiry, a flipped MAC digit, another secret.
    let tampered_name = key.replacen("show", "shox", 1);
    let tampered_expiry = key.replacen(&future.to_string(), &(future + 1).to_string(), 1);
    let mut flipped = key.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == '0' { '1' } else { '0' });
    let other_secret = signed_key("other", "live", "show", future);
    for bad in [tampered_name, tampered_expiry, flipped, other_secret] {
        let d = auth
            .authorize(&publish("live", &bad, None), None)
            .await
            .unwrap();
        assert_eq!(denied(&d), "invalid stream key", "{bad}");
    }
    // Expired signed key.
    let expired = signed_key("s3cret", "live", "show", past);
    let d = auth
        .authorize(&publish("live", &expired, None), None)
        .await
        .unwrap();
    assert_eq!(denied(&d), "stream key expired");

    // Play is not checked by default: the config decision (none here) stands.
    let mut play = publish("live", "cam", None);
    play.action = Action::Play;
    assert_eq!(
        auth.authorize(&play, None).await.unwrap(),
        Decision::Allow(path("live/cam"))
    );

    let status = auth.plugin().status();
    assert_eq!(status.failures, 0);
    assert!(status.calls >= 14);
}

#[tokio::test]
async fn stream_key_auth_refuses_bad_config() {
    let host = host();
    let err = host
        .load(
            cthulhu_plugins::Manifest::new(PluginKind::Auth, common::wasm("stream-key-auth"))
                .with_config(json!({ "keyz": [] })),
        )
        .expect_err("a bad config is refused at load");
    assert!(
        matches!(err, cthulhu_plugins::PluginError::Configure { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("unknown field"), "{err}");
}

/// The config's key is one input of the plugin: the chain asks the StaticRouter
/// first and hands its decision to the plugin, which accepts it or its own keys.
#[tokio::test]
async fn policy_chain_uses_config_decision() {
    let host = host();
    let config: Arc<dyn Router> = Arc::new(StaticRouter::new(vec![StreamRule {
        path: path("live/studio"),
        key: Secret::new("config-key"),
        play_key: None,
        routes: vec![],
    }]));
    let auth = AuthPlugin::new(load(
        &host,
        PluginKind::Auth,
        "stream-key-auth",
        json!({ "keys": ["plugin-key"] }),
    ))
    .unwrap();
    let chain = PolicyChain::new(config.clone()).with_auth(auth);

    // The config's key, OBS style: the config's path, accepted by the plugin.
    assert_eq!(
        chain.authorize(&publish("live", "config-key", None)).await,
        Decision::Allow(path("live/studio"))
    );
    // The plugin's key on a stream the config does not know.
    assert_eq!(
        chain
            .authorize(&publish("live", "new", Some("plugin-key")))
            .await,
        Decision::Allow(path("live/new"))
    );
    // Neither.
    assert_eq!(
        denied(
            &chain
                .authorize(&publish("live", "studio", Some("bad")))
                .await
        ),
        "unknown stream key"
    );

    // With config_decision = ignore the config's key no longer counts.
    let strict = AuthPlugin::new(load(
        &host,
        PluginKind::Auth,
        "stream-key-auth",
        json!({ "keys": ["plugin-key"], "config_decision": "ignore" }),
    ))
    .unwrap();
    let chain = PolicyChain::new(config).with_auth(strict);
    assert_eq!(
        denied(&chain.authorize(&publish("live", "config-key", None)).await),
        "unknown stream key"
    );
}

#[tokio::test]
async fn ip_allowlist_narrows_the_config_decision() {
    let host = host();
    let auth = AuthPlugin::new(load(
        &host,
        PluginKind::Auth,
        "ip-allowlist",
        json!({ "allow": ["10.0.0.0/8", "127.0.0.1", "2001:db8::/32"] }),
    ))
    .unwrap();
    let with = |addr: &str| {
        let mut r = publish("live", "cam", Some("k"));
        r.remote = Some(addr.parse().unwrap());
        r
    };
    let ok = Decision::Allow(path("live/cam"));
    for addr in [
        "10.1.2.3:1935",
        "127.0.0.1:1",
        "[2001:db8::1]:1935",
        "[::ffff:10.9.9.9]:5",
    ] {
        assert_eq!(
            auth.authorize(&with(addr), None).await.unwrap(),
            ok,
            "{addr}"
        );
    }
    for addr in ["11.0.0.1:1935", "127.0.0.2:1", "[2001:db9::1]:1935"] {
        let d = auth.authorize(&with(addr), None).await.unwrap();
        assert_eq!(denied(&d), "address not allowed", "{addr}");
    }
    let mut no_addr = with("10.0.0.1:1");
    no_addr.remote = None;
    assert_eq!(
        denied(&auth.authorize(&no_addr, None).await.unwrap()),
        "no peer address to check"
    );
    // A listed peer still gets the config's refusal; the config's allow keeps its path.
    let config_deny = Decision::Deny("wrong key for live/cam".into());
    assert_eq!(
        auth.authorize(&with("10.0.0.1:1"), Some(&config_deny))
            .await
            .unwrap(),
        config_deny
    );
    let config_allow = Decision::Allow(path("live/studio"));
    assert_eq!(
        auth.authorize(&with("10.0.0.1:1"), Some(&config_allow))
            .await
            .unwrap(),
        config_allow
    );
}

fn stream(p: &str) -> StreamInfo {
    StreamInfo {
        path: path(p),
        tracks: vec![],
        metadata: vec![],
        generation: 1,
    }
}

fn push(name: &str, url: &str) -> Route {
    Route::Push {
        name: name.into(),
        url: Secret::new(url),
        tls_ca_file: None,
    }
}

fn push_names(routes: &[Route]) -> Vec<(String, String)> {
    routes
        .iter()
        .map(|r| match r {
            Route::Push { name, url, .. } => (name.clone(), url.expose().to_owned()),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn route_by_app() {
    let host = host();
    let route = RoutePlugin::new(load(
        &host,
        PluginKind::Route,
        "route-by-app",
        json!({ "rules": [
            { "match": "live/*", "destinations": [
                { "name": "a", "url": "rtmp://127.0.0.1:1935/a/{name}" },
                { "name": "b", "url": "rtmp://127.0.0.1:1936/b/{app}-{name}" } ] },
            { "match": "event/*", "mode": "replace",
              "destinations": [ { "name": "e", "url": "rtmps://127.0.0.1:443/e/{name}" } ],
              "recordings": [ { "name": "archive", "format": "mp4", "path": "{app}/{name}-{time}.mp4" } ] },
            { "match": "bad/*", "destinations": [ { "name": "x", "url": "file:///etc/passwd" } ] },
        ] }),
    ))
    .unwrap();
    let config = vec![push("cfg", "rtmp://127.0.0.1:1/cfg/key")];

    let plan = route.route(&stream("live/cam"), &config).await.unwrap();
    assert_eq!(plan.mode, RouteMode::Add);
    assert_eq!(
        push_names(&plan.routes),
        [
            ("cfg".into(), "rtmp://127.0.0.1:1/cfg/key".into()),
            ("a".into(), "rtmp://127.0.0.1:1935/a/cam".into()),
            ("b".into(), "rtmp://127.0.0.1:1936/b/live-cam".into()),
        ]
    );

    let plan = route
        .route(&stream("event/keynote"), &config)
        .await
        .unwrap();
    assert_eq!(plan.mode, RouteMode::Replace);
    assert_eq!(
        push_names(&plan.routes),
        [("e".into(), "rtmps://127.0.0.1:443/e/keynote".into())]
    );
    assert_eq!(plan.recordings.len(), 1);
    assert_eq!(plan.recordings[0].path_template, "event/keynote-{time}.mp4");

    // No rule: the config's routes alone.
    let plan = route.route(&stream("other/x"), &config).await.unwrap();
    assert_eq!(plan.routes, config);

    // A destination outside rtmp/rtmps/srt is refused; routes() falls back to the
    // config's.
    let err = route.route(&stream("bad/x"), &config).await.unwrap_err();
    assert!(err.to_string().contains("not an rtmp://"), "{err}");
    assert!(!err.to_string().contains("passwd"), "{err}");
    assert_eq!(route.routes(&stream("bad/x"), config.clone()).await, config);

    // Five calls of `route`, the last two answered with something unusable.
    let stats = route.plugin().stats();
    assert_eq!(stats.kind, PluginKind::Route);
    let [f] = stats.functions.as_slice() else {
        panic!("{stats:?}")
    };
    assert_eq!(f.function, "route");
    assert_eq!((f.calls, f.latency.count), (5, 5));
    assert_eq!(f.failures_for(FailureReason::InvalidOutput), 2);
    assert_eq!(f.failures_total(), 2);
    assert!(f.latency.sum_seconds > 0.0);
}

#[tokio::test]
async fn policy_chain_routes() {
    let host = host();
    let config: Arc<dyn Router> = Arc::new(StaticRouter::new(vec![StreamRule {
        path: path("live/cam"),
        key: Secret::new("k"),
        play_key: None,
        routes: vec![push("cfg", "rtmp://127.0.0.1:1/cfg/key")],
    }]));
    let route = RoutePlugin::new(load(
        &host,
        PluginKind::Route,
        "route-by-app",
        json!({ "rules": [ { "match": "live/*", "destinations": [
            { "name": "a", "url": "rtmp://127.0.0.1:2/a/{name}" } ] } ] }),
    ))
    .unwrap();
    let chain = PolicyChain::new(config).with_route(route);
    assert_eq!(
        push_names(&chain.route(&stream("live/cam")).await),
        [
            ("cfg".into(), "rtmp://127.0.0.1:1/cfg/key".into()),
            ("a".into(), "rtmp://127.0.0.1:2/a/cam".into()),
        ]
    );
}

fn event(kind: EventKind, p: &str, at_ms: u64) -> LifecycleEvent {
    LifecycleEvent {
        path: Some(p.into()),
        at: UNIX_EPOCH + Duration::from_millis(at_ms),
        ..LifecycleEvent::new(kind)
    }
}

#[tokio::test]
async fn notify_filter_selects_and_rate_limits() {
    let host = host();
    let notify = NotifyPlugin::new(load(
        &host,
        PluginKind::Notify,
        "notify-filter",
        json!({
            "events": ["stream-started", "destination-failed"],
            "rate_limit": { "max": 2, "per_secs": 60, "key": "kind+path" },
        }),
    ))
    .unwrap();
    let defaults = vec![Notification {
        target: NotifyTarget::Email("ops@example.com".into()),
        subject: "stream started".into(),
        body: "live/cam".into(),
    }];
    let t0 = 1_700_000_000_000;
    // Not selected: nothing.
    let out = notify
        .on_event(
            &event(EventKind::StreamStopped, "live/cam", t0),
            defaults.clone(),
        )
        .await;
    assert!(out.is_empty());
    // Two pass, the third inside the minute is dropped, another path has its own
    // budget, and after the window it passes again.
    for i in 0..2 {
        let out = notify
            .on_event(
                &event(EventKind::StreamStarted, "live/cam", t0 + i),
                defaults.clone(),
            )
            .await;
        assert_eq!(out, defaults);
    }
    let out = notify
        .on_event(
            &event(EventKind::StreamStarted, "live/cam", t0 + 1000),
            defaults.clone(),
        )
        .await;
    assert!(out.is_empty(), "rate limited");
    let out = notify
        .on_event(
            &event(EventKind::StreamStarted, "live/other", t0 + 1000),
            defaults.clone(),
        )
        .await;
    assert_eq!(out, defaults);
    let out = notify
        .on_event(
            &event(EventKind::StreamStarted, "live/cam", t0 + 61_000),
            defaults.clone(),
        )
        .await;
    assert_eq!(out, defaults);

    // Own recipients instead of the defaults.
    let to = NotifyPlugin::new(load(
        &host,
        PluginKind::Notify,
        "notify-filter",
        json!({ "to": [ { "webhook": "https://127.0.0.1/hook" } ] }),
    ))
    .unwrap();
    let mut e = event(EventKind::DestinationFailed, "live/cam", t0);
    e.subject = Some("youtube".into());
    e.detail = Some("connection refused".into());
    let out = to.on_event(&e, defaults.clone()).await;
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].target,
        NotifyTarget::Webhook("https://127.0.0.1/hook".into())
    );
    assert_eq!(out[0].subject, "[cthulhu] destination-failed live/cam");
    assert!(
        out[0].body.contains("detail: connection refused"),
        "{}",
        out[0].body
    );
}

fn item(id: &str, status: ItemStatus, attempts: u32) -> ScheduleItem {
    ScheduleItem {
        id: id.into(),
        source: "file.mp4".into(),
        path: "live/tv".into(),
        start_at: None,
        duration: None,
        status,
        attempts,
        last_error: None,
    }
}

#[tokio::test]
async fn schedule_window() {
    let host = host();
    // 2024-01-01 was a Monday. 10:00 UTC inside 08:00-20:00, 21:00 outside.
    let monday = UNIX_EPOCH + Duration::from_secs(1_704_067_200);
    let inside = monday + Duration::from_secs(10 * 3600);
    let outside = monday + Duration::from_secs(21 * 3600);
    let plugin = SchedulePlugin::new(load(
        &host,
        PluginKind::Schedule,
        "schedule-window",
        json!({ "windows": [ { "days": ["mon", "tue"], "start": "08:00", "end": "20:00" } ],
                "max_attempts": 2, "retry_after_ms": 5000 }),
    ))
    .unwrap();
    let items = vec![
        item("p", ItemStatus::Pending, 0),
        item("r", ItemStatus::Running, 0),
        item("f1", ItemStatus::Failed, 1),
        item("f2", ItemStatus::Failed, 2),
    ];
    let cmds = plugin.on_tick(inside, &items).await.unwrap();
    assert_eq!(
        cmds,
        [
            ScheduleCommand::Start("p".into()),
            ScheduleCommand::Retry {
                id: "f1".into(),
                after: Duration::from_secs(5)
            },
            ScheduleCommand::Skip {
                id: "f2".into(),
                reason: "failed 2 times".into()
            },
        ]
    );
    let cmds = plugin.on_tick(outside, &items).await.unwrap();
    assert!(
        cmds.contains(&ScheduleCommand::Stop("r".into())),
        "{cmds:?}"
    );
    assert!(
        !cmds.contains(&ScheduleCommand::Start("p".into())),
        "{cmds:?}"
    );

    // may-start uses the host's clock: a window that covers every minute allows, an
    // empty set of days defers or denies.
    let always = SchedulePlugin::new(load(
        &host,
        PluginKind::Schedule,
        "schedule-window",
        json!({ "windows": [ { "start": "00:00", "end": "24:00" } ] }),
    ))
    .unwrap();
    assert_eq!(
        always.may_start(&items[0]).await.unwrap(),
        StartDecision::Allow
    );
    let never = SchedulePlugin::new(load(
        &host,
        PluginKind::Schedule,
        "schedule-window",
        json!({ "windows": [ { "days": [], "start": "08:00", "end": "09:00" } ] }),
    ))
    .unwrap();
    assert_eq!(
        never.may_start(&items[0]).await.unwrap(),
        StartDecision::Deny("outside the playout windows".into())
    );

    // Each export is counted on its own; the host lists every plugin in use.
    let calls = |p: &SchedulePlugin| {
        p.plugin()
            .stats()
            .functions
            .iter()
            .map(|f| (f.function, f.calls, f.failures_total()))
            .collect::<Vec<_>>()
    };
    assert_eq!(calls(&plugin), [("on-tick", 2, 0), ("may-start", 0, 0)]);
    assert_eq!(calls(&always), [("on-tick", 0, 0), ("may-start", 1, 0)]);
    let all = host.stats();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|s| s.kind == PluginKind::Schedule));
}

#[tokio::test]
async fn wrong_kind_is_refused() {
    let host = host();
    // A route component loaded as auth does not fit the auth world.
    let err = host
        .load(cthulhu_plugins::Manifest::new(
            PluginKind::Auth,
            common::wasm("route-by-app"),
        ))
        .expect_err("refused");
    assert!(
        matches!(err, cthulhu_plugins::PluginError::Link { .. }),
        "{err}"
    );
    // An auth plugin cannot be wrapped as a route plugin.
    let p = load(&host, PluginKind::Auth, "hostile-auth", json!(null));
    assert!(RoutePlugin::new(p).is_err());
}

#[test]
fn manifest_from_server_toml() {
    #[derive(serde::Deserialize)]
    struct ServerConfig {
        plugins: Vec<cthulhu_plugins::Manifest>,
    }
    let c: ServerConfig = toml::from_str(
        r#"
        [[plugins]]
        kind = "auth"
        path = "plugins/stream-key-auth.wasm"
        sha256 = "AB00000000000000000000000000000000000000000000000000000000000000"
        config = { keys = ["k1", "k2"] }
        timeout_ms = 50
        memory_mb = 16

        [[plugins]]
        kind = "notify"
        path = "plugins/notify-filter.wasm"
        "#,
    )
    .unwrap();
    let m = &c.plugins[0];
    assert_eq!(m.kind, PluginKind::Auth);
    assert_eq!(m.name, "stream-key-auth");
    assert_eq!(m.config, json!({ "keys": ["k1", "k2"] }));
    assert_eq!(m.timeout, Duration::from_millis(50));
    assert_eq!(m.memory_bytes, 16 << 20);
    assert_eq!(
        m.sha256.as_deref(),
        Some("ab00000000000000000000000000000000000000000000000000000000000000")
    );
    assert_eq!(c.plugins[1].config, serde_json::Value::Null);
    assert!(!format!("{m:?}").contains("k1"), "{m:?}");
    assert_eq!(c.plugins[1].timeout, cthulhu_plugins::DEFAULT_TIMEOUT);

    let bad: Result<ServerConfig, _> =
        toml::from_str("[[plugins]]\nkind = \"auth\"\npath = \"x.wasm\"\ntimeout = 5\n");
    assert!(bad.is_err(), "unknown keys are refused");
}
