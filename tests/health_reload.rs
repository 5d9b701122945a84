//! Reloads (`apply_plan`): unchanged checkers keep their state, new ones start, removed ones
//! stop, and a replaced check cannot put a dead backend back in rotation.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alive_proxy::health::{BackendStatus, HealthSupervisor, NoopObserver};
use support::health::*;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_state_of_unchanged_checks_starts_new_and_stops_removed() {
    let mut health_a = TcpEndpoint::bind().await;
    let health_b = TcpEndpoint::bind().await;
    let health_c = TcpEndpoint::bind().await;
    let vs = vip_port(80);
    let timing = Timing::quick();
    let a = backend(traffic_addr(60), vec![check(tcp(health_a.addr), timing)]);
    let b = backend(traffic_addr(61), vec![check(tcp(health_b.addr), timing)]);
    let c = backend(traffic_addr(62), vec![check(tcp(health_c.addr), timing)]);
    let (ka, kc) = (key(vs, a.addr), key(vs, c.addr));
    let sink = RecordingSink::new();
    let (_passive_tx, passive_rx) = mpsc::unbounded_channel();
    let supervisor = HealthSupervisor::spawn(
        &plan(vec![service(vs, vec![a.clone(), b])]),
        sink.clone(),
        passive_rx,
        Arc::new(NoopObserver),
    );
    health_a.stop().await;
    eventually(
        Duration::from_secs(10),
        "a down",
        || sink.status(ka) == Some(BackendStatus::Down),
        String::new,
    )
    .await;

    let reloaded_at = Instant::now();
    supervisor.apply_plan(&plan(vec![service(vs, vec![a, c])]));
    eventually(
        Duration::from_secs(10),
        "c probed",
        || health_c.accepted() >= 1,
        String::new,
    )
    .await;
    let after_reload: Vec<_> = sink
        .backend_calls(ka)
        .into_iter()
        .filter(|(at, _)| *at >= reloaded_at)
        .map(|(_, s)| s)
        .collect();
    assert!(
        !after_reload.contains(&up(1)),
        "a's checker kept its down state across the reload; got {after_reload:?}"
    );
    assert_eq!(sink.status(kc), Some(up(1)), "new backend c starts up");

    let b_probes = health_b.accepted();
    tokio::time::sleep(timing.interval * 5).await;
    assert_eq!(
        health_b.accepted(),
        b_probes,
        "removed backend b must not be probed any more"
    );
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_replacing_the_failing_check_keeps_a_dead_backend_down() {
    let mut health = TcpEndpoint::bind().await;
    let vs = vip_port(80);
    let timing = Timing::quick();
    let a = backend(traffic_addr(70), vec![check(tcp(health.addr), timing)]);
    let ka = key(vs, a.addr);
    let sink = RecordingSink::new();
    let (_passive_tx, passive_rx) = mpsc::unbounded_channel();
    let supervisor = HealthSupervisor::spawn(
        &plan(vec![service(vs, vec![a.clone()])]),
        sink.clone(),
        passive_rx,
        Arc::new(NoopObserver),
    );
    health.stop().await;
    eventually(
        Duration::from_secs(10),
        "a down",
        || sink.status(ka) == Some(BackendStatus::Down),
        String::new,
    )
    .await;

    // Same target, different settings: a new checker replaces the failing one.
    let mut changed = a.clone();
    let mut slower = timing;
    slower.interval = Duration::from_secs(60);
    changed.checks = vec![check(tcp(health.addr), slower)];
    let reloaded_at = Instant::now();
    supervisor.apply_plan(&plan(vec![service(vs, vec![changed])]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<_> = sink
        .backend_calls(ka)
        .into_iter()
        .filter(|(at, _)| *at >= reloaded_at)
        .map(|(_, s)| s)
        .collect();
    assert!(!after.is_empty(), "status re-sent after reload");
    assert!(
        !after.contains(&up(1)),
        "a dead backend must stay out after its check is replaced: {after:?}"
    );
    supervisor.shutdown().await;
}
