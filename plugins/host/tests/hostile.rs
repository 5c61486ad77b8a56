//! Hostile plugins: each is stopped within its limits, the decision falls back as
//! specified, other plugins keep being served, and the status shows the failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{host, manifest, publish};
use cthulhu_core::policy::StreamRule;
use cthulhu_core::{Decision, Route, Router, Secret, StaticRouter, StreamInfo, StreamPath};
use cthulhu_plugins::{
    AuthPlugin, EventKind, FailureReason, HostConfig, LifecycleEvent, Notification, NotifyPlugin,
    NotifyTarget, PluginError, PluginHost, PluginKind, PluginState, PolicyChain, RoutePlugin,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_millis(50);

fn hostile_auth(host: &PluginHost, mode: &str) -> AuthPlugin {
    let m = manifest(
        PluginKind::Auth,
        "hostile-auth",
        json!({ "mode": mode, "only_name": "bad" }),
        TIMEOUT,
    );
    AuthPlugin::new(host.load(m).unwrap()).unwrap()
}

/// Each misbehaviour is stopped, reported as what it is, within 10× the timeout;
/// the instance is replaced and the next call is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hostile_plugin_is_stopped() {
    let host = host();
    for (mode, check, reason) in [
        (
            "loop",
            (|e: &PluginError| matches!(e, PluginError::Timeout { .. }))
                as fn(&PluginError) -> bool,
            FailureReason::Timeout,
        ),
        (
            "sleep",
            |e| matches!(e, PluginError::Timeout { .. }),
            FailureReason::Timeout,
        ),
        (
            "memory",
            |e| matches!(e, PluginError::MemoryLimit { .. }),
            FailureReason::Memory,
        ),
        (
            "trap",
            |e| matches!(e, PluginError::Trap { .. }),
            FailureReason::Trap,
        ),
    ] {
        let auth = hostile_auth(&host, mode);
        let start = Instant::now();
        let err = auth
            .authorize(&publish("live", "bad", None), None)
            .await
            .expect_err(mode);
        let took = start.elapsed();
        eprintln!("{mode}: stopped after {took:?}: {err}");
        assert!(check(&err), "{mode}: {err}");
        assert!(took < TIMEOUT * 10, "{mode}: took {took:?}");

        let status = auth.plugin().status();
        assert!(
            matches!(status.state, PluginState::Failing { consecutive: 1, .. }),
            "{mode}: {:?}",
            status.state
        );
        assert_eq!(status.failures, 1);

        // Fails closed, naming the plugin and the failure.
        let d = auth.decide(&publish("live", "bad", None), None).await;
        assert_eq!(
            d,
            Decision::Deny(format!("auth plugin hostile_auth {}", err.short())),
            "{mode}"
        );

        // The next call gets a fresh instance and is served.
        let d = auth
            .authorize(&publish("live", "good", None), None)
            .await
            .unwrap();
        assert!(matches!(d, Decision::Allow(_)), "{mode}: {d:?}");
        let status = auth.plugin().status();
        assert_eq!(status.state, PluginState::Ready, "{mode}");
        assert_eq!(status.failures, 2);
        assert!(status.last_error.is_some());

        // Three calls of `authorize`, two failed for this reason, the stopped ones
        // in the latency buckets from the timeout up (or, for memory and trap, any).
        let stats = auth.plugin().stats();
        assert_eq!(stats.name, "hostile_auth");
        let [f] = stats.functions.as_slice() else {
            panic!("{stats:?}")
        };
        assert_eq!(f.function, "authorize");
        assert_eq!((f.calls, f.latency.count), (3, 3), "{mode}: {f:?}");
        assert_eq!(f.failures_for(reason), 2, "{mode}: {f:?}");
        assert_eq!(f.failures_total(), 2, "{mode}: {f:?}");
        assert_eq!(
            f.latency.buckets.iter().map(|(_, n)| n).sum::<u64>(),
            3,
            "{mode}"
        );
        if reason == FailureReason::Timeout {
            let slow: u64 = f
                .latency
                .buckets
                .iter()
                .filter(|(le, _)| *le >= TIMEOUT.as_secs_f64())
                .map(|(_, n)| n)
                .sum();
            assert!(slow >= 2, "{mode}: {f:?}");
            assert!(f.latency.sum_seconds >= 2.0 * TIMEOUT.as_secs_f64());
        }
    }
}

#[tokio::test]
async fn panic_in_configure_refuses_the_plugin() {
    let host = host();
    let err = host
        .load(manifest(
            PluginKind::Auth,
            "hostile-auth",
            json!({ "mode": "panic-configure" }),
            TIMEOUT,
        ))
        .expect_err("refused");
    assert!(matches!(err, PluginError::Configure { .. }), "{err}");
    assert!(err.to_string().contains("configure trapped"), "{err}");
}

/// Fuel, where the host counts it, stops a loop long before a generous timeout.
#[tokio::test]
async fn fuel_stops_a_loop() {
    let host = PluginHost::new(HostConfig {
        reload_poll: None,
        consume_fuel: true,
        ..HostConfig::default()
    })
    .unwrap();
    let mut m = manifest(
        PluginKind::Auth,
        "hostile-auth",
        json!({ "mode": "loop", "only_name": "bad" }),
        Duration::from_secs(10),
    );
    m.fuel = Some(10_000_000);
    let auth = AuthPlugin::new(host.load(m).unwrap()).unwrap();
    let start = Instant::now();
    let err = auth
        .authorize(&publish("live", "bad", None), None)
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::OutOfFuel { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        auth.authorize(&publish("live", "good", None), None).await,
        Ok(Decision::Allow(_))
    ));
    let f = &auth.plugin().stats().functions[0];
    assert_eq!((f.calls, f.failures_for(FailureReason::Fuel)), (2, 1));
    assert_eq!(f.failures_total(), 1);
    // Without consume_fuel a manifest may not ask for fuel.
    let mut m = manifest(PluginKind::Auth, "hostile-auth", json!(null), TIMEOUT);
    m.fuel = Some(1);
    assert!(matches!(
        common::host().load(m),
        Err(PluginError::Config(_))
    ));
}

fn config_router() -> Arc<dyn Router> {
    Arc::new(StaticRouter::new(vec![StreamRule {
        path: StreamPath::new("live/bad").unwrap(),
        key: Secret::new("k"),
        play_key: None,
        routes: vec![Route::Push {
            name: "cfg".into(),
            url: Secret::new("rtmp://127.0.0.1:1/cfg/key"),
            tls_ca_file: None,
        }],
    }]))
}

/// Auth fails closed even when the config allows.
#[tokio::test]
async fn auth_fails_closed_in_the_chain() {
    let host = host();
    let chain = PolicyChain::new(config_router()).with_auth(hostile_auth(&host, "loop"));
    // The config alone would allow this request.
    let request = publish("live", "bad", Some("k"));
    assert!(matches!(
        config_router().authorize(&request).await,
        Decision::Allow(_)
    ));
    assert_eq!(
        chain.authorize(&request).await,
        Decision::Deny("auth plugin hostile_auth timed out".into())
    );
}

/// Route falls back to the config's routes; notify sends the defaults.
#[tokio::test]
async fn route_and_notify_fall_back() {
    let host = host();
    let stream = StreamInfo {
        path: StreamPath::new("live/bad").unwrap(),
        tracks: vec![],
        metadata: vec![],
        generation: 1,
    };
    let config_routes = config_router().route(&stream).await;
    for mode in ["loop", "memory", "trap", "sleep"] {
        let route = RoutePlugin::new(
            host.load(manifest(
                PluginKind::Route,
                "hostile-route",
                json!({ "mode": mode, "only_name": "bad" }),
                TIMEOUT,
            ))
            .unwrap(),
        )
        .unwrap();
        let chain = PolicyChain::new(config_router()).with_route(route.clone());
        assert_eq!(chain.route(&stream).await, config_routes, "{mode}");
        assert!(route.plugin().status().failures == 1, "{mode}");
    }
    // The same plugin, behaving, replaces the routes: the fallback above was one.
    let route = RoutePlugin::new(
        host.load(manifest(
            PluginKind::Route,
            "hostile-route",
            json!({ "mode": "allow" }),
            TIMEOUT,
        ))
        .unwrap(),
    )
    .unwrap();
    let chain = PolicyChain::new(config_router()).with_route(route);
    let routes = chain.route(&stream).await;
    assert_eq!(routes.len(), 1);
    assert!(matches!(&routes[0], Route::Push { name, .. } if name == "hostile"));

    let defaults = vec![Notification {
        target: NotifyTarget::Email("ops@example.com".into()),
        subject: "s".into(),
        body: "b".into(),
    }];
    let event = LifecycleEvent {
        path: Some("bad".into()),
        ..LifecycleEvent::new(EventKind::StreamStarted)
    };
    for mode in ["loop", "memory", "trap", "sleep"] {
        let notify = NotifyPlugin::new(
            host.load(manifest(
                PluginKind::Notify,
                "hostile-notify",
                json!({ "mode": mode }),
                TIMEOUT,
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            notify.on_event(&event, defaults.clone()).await,
            defaults,
            "{mode}"
        );
        assert!(notify.try_on_event(&event, &defaults).await.is_err());
    }
    // Behaving, the plugin drops everything: the defaults above were the fallback.
    let notify = NotifyPlugin::new(
        host.load(manifest(
            PluginKind::Notify,
            "hostile-notify",
            json!(null),
            TIMEOUT,
        ))
        .unwrap(),
    )
    .unwrap();
    assert!(notify.on_event(&event, defaults).await.is_empty());
}

/// While a hostile plugin burns its timeouts, a healthy plugin keeps answering fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_plugins_keep_being_served() {
    let host = host();
    let slow = Duration::from_millis(400);
    let hostile = AuthPlugin::new(
        host.load(manifest(
            PluginKind::Auth,
            "hostile-auth",
            json!({ "mode": "loop" }),
            slow,
        ))
        .unwrap(),
    )
    .unwrap();
    let healthy = AuthPlugin::new(common::load(
        &host,
        PluginKind::Auth,
        "stream-key-auth",
        json!({ "keys": ["k1"] }),
    ))
    .unwrap();

    let start = Instant::now();
    let mut hostile_calls = Vec::new();
    for _ in 0..4 {
        let h = hostile.clone();
        hostile_calls.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = h.authorize(&publish("live", "x", None), None).await;
            (r, t.elapsed())
        }));
    }
    let mut worst = Duration::ZERO;
    let mut served = 0;
    while start.elapsed() < slow {
        let t = Instant::now();
        let d = healthy
            .authorize(&publish("live", "cam", Some("k1")), None)
            .await
            .unwrap();
        assert!(matches!(d, Decision::Allow(_)));
        worst = worst.max(t.elapsed());
        served += 1;
    }
    eprintln!("healthy plugin: {served} calls during the hostile ones, slowest {worst:?}");
    assert!(served >= 10, "only {served} calls served");
    assert!(worst < slow / 2, "a healthy call took {worst:?}");
    for c in hostile_calls {
        let (r, took) = c.await.unwrap();
        assert!(matches!(r, Err(PluginError::Timeout { .. })), "{r:?}");
        assert!(took < slow * 10, "{took:?}");
    }
    assert_eq!(healthy.plugin().status().failures, 0);
}

/// N failures in a row disable the plugin: calls fail at once, auth denies, the
/// status says why; enable() brings it back.
#[tokio::test]
async fn repeated_failures_disable() {
    let host = host();
    let mut m = manifest(
        PluginKind::Auth,
        "hostile-auth",
        json!({ "mode": "trap", "only_name": "bad" }),
        TIMEOUT,
    );
    m.disable_after = Some(3);
    let auth = AuthPlugin::new(host.load(m).unwrap()).unwrap();
    for _ in 0..3 {
        assert!(matches!(
            auth.authorize(&publish("live", "bad", None), None).await,
            Err(PluginError::Trap { .. })
        ));
    }
    let status = auth.plugin().status();
    let PluginState::Disabled { reason, .. } = &status.state else {
        panic!("{:?}", status.state)
    };
    assert!(reason.starts_with("3 consecutive failures"), "{reason}");
    assert_eq!(status.failures, 3);

    // Even a request the plugin would serve is refused now, without running it.
    let start = Instant::now();
    assert!(matches!(
        auth.authorize(&publish("live", "good", None), None).await,
        Err(PluginError::Disabled { .. })
    ));
    assert!(start.elapsed() < TIMEOUT);
    assert_eq!(
        auth.decide(&publish("live", "good", None), None).await,
        Decision::Deny("auth plugin hostile_auth is disabled".into())
    );
    let status = auth.plugin().status();
    assert_eq!(status.failures, 3);
    assert_eq!(status.calls, 5);
    // The refusals count as calls failed for being disabled.
    let f = &auth.plugin().stats().functions[0];
    assert_eq!(f.calls, 5);
    assert_eq!(f.failures_for(FailureReason::Trap), 3);
    assert_eq!(f.failures_for(FailureReason::Disabled), 2);

    auth.plugin().enable();
    assert_eq!(auth.plugin().status().state, PluginState::Ready);
    assert!(matches!(
        auth.authorize(&publish("live", "good", None), None).await,
        Ok(Decision::Allow(_))
    ));
}

/// A memory cap below what the guest needs to start refuses it at load.
#[tokio::test]
async fn memory_cap_applies_at_load() {
    let host = host();
    let m = manifest(
        PluginKind::Auth,
        "stream-key-auth",
        json!({ "keys": [] }),
        TIMEOUT,
    )
    .with_memory_bytes(64 << 10);
    let err = host.load(m).expect_err("refused");
    assert!(
        matches!(
            err,
            PluginError::MemoryLimit { .. } | PluginError::Link { .. }
        ),
        "{err}"
    );
}

/// With `instances = 2` two slow calls run side by side; with 1 they queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_serve_calls_in_parallel() {
    let host = host();
    let sleep = Duration::from_millis(300);
    for (instances, parallel) in [(2, true), (1, false)] {
        let mut m = manifest(
            PluginKind::Auth,
            "hostile-auth",
            json!({ "mode": "sleep", "sleep_ms": sleep.as_millis() as u64 }),
            Duration::from_secs(5),
        );
        m.instances = instances;
        let auth = AuthPlugin::new(host.load(m).unwrap()).unwrap();
        let start = Instant::now();
        let calls: Vec<_> = (0..2)
            .map(|_| {
                let a = auth.clone();
                tokio::spawn(async move { a.authorize(&publish("live", "x", None), None).await })
            })
            .collect();
        for c in calls {
            assert!(matches!(c.await.unwrap(), Ok(Decision::Allow(_))));
        }
        let took = start.elapsed();
        eprintln!("instances = {instances}: two {sleep:?} calls took {took:?}");
        // The guest's clock has millisecond steps: compare with 1.5 sleeps.
        assert_eq!(took < sleep * 3 / 2, parallel, "{took:?}");
    }
}
