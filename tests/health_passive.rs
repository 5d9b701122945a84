//! Passive health: a connect failure seen by the data plane (a `PassiveEvent`) triggers an
//! immediate re-probe — long before the next `delay_loop` — and ends with a
//! `backend_changed` call even when nothing changed.

mod support;

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alive_proxy::dataplane::PassiveEvent;
use alive_proxy::health::{BackendStatus, HealthSupervisor, NoopObserver};
use support::health::*;
use tokio::sync::mpsc;

/// delay_loop 60 s, as in the issue: without passive detection nothing would happen for a
/// minute.
fn slow_timing() -> Timing {
    Timing {
        interval: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(1),
        retry: 1,
        delay_before_retry: Duration::from_millis(300),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_event_reprobes_at_once_and_reports_even_if_unchanged() {
    let health = TcpEndpoint::bind().await;
    let vs = vip_port(80);
    let b = backend(
        traffic_addr(50),
        vec![check(tcp(health.addr), slow_timing())],
    );
    let k = key(vs, b.addr);
    let sink = RecordingSink::new();
    let (passive_tx, passive_rx) = mpsc::unbounded_channel();
    let supervisor = HealthSupervisor::spawn(
        &plan(vec![service(vs, vec![b])]),
        sink.clone(),
        passive_rx,
        Arc::new(NoopObserver),
    );
    eventually(
        Duration::from_secs(5),
        "first probe",
        || health.accepted() == 1,
        String::new,
    )
    .await;
    let calls_before = sink.backend_calls(k).len();

    let sent = Instant::now();
    passive_tx
        .send(PassiveEvent {
            key: k,
            error: ErrorKind::ConnectionRefused,
        })
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "backend_changed after the re-probe",
        || sink.backend_calls(k).len() > calls_before,
        || format!("{:?}", sink.backend_calls(k)),
    )
    .await;
    let took = sent.elapsed();
    println!("passive re-probe of a live backend answered in {took:?} (delay_loop 60s)");
    assert_eq!(health.accepted(), 2, "exactly one immediate re-probe");
    assert_eq!(sink.status(k), Some(up(1)), "a live backend stays up");
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_between_probes_is_down_after_passive_event_not_after_delay_loop() {
    let mut health = TcpEndpoint::bind().await;
    let vs = vip_port(80);
    let timing = slow_timing();
    let b = backend(traffic_addr(51), vec![check(tcp(health.addr), timing)]);
    let k = key(vs, b.addr);
    let sink = RecordingSink::new();
    let (passive_tx, passive_rx) = mpsc::unbounded_channel();
    let supervisor = HealthSupervisor::spawn(
        &plan(vec![service(vs, vec![b])]),
        sink.clone(),
        passive_rx,
        Arc::new(NoopObserver),
    );
    eventually(
        Duration::from_secs(5),
        "first probe",
        || health.accepted() == 1,
        String::new,
    )
    .await;

    health.stop().await;
    let sent = Instant::now();
    passive_tx
        .send(PassiveEvent {
            key: k,
            error: ErrorKind::ConnectionRefused,
        })
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "down after passive re-probe and retries",
        || sink.status(k) == Some(BackendStatus::Down),
        || format!("{:?}", sink.backend_calls(k)),
    )
    .await;
    let took = sink.reported_at(k, BackendStatus::Down, sent).unwrap() - sent;
    println!(
        "passive detection (re-probe + {} retry at {:?}): {took:?} vs delay_loop {:?}",
        timing.retry, timing.delay_before_retry, timing.interval
    );
    assert!(
        took >= timing.delay_before_retry * timing.retry,
        "down after {took:?}: the retry was skipped"
    );
    assert!(
        took < timing.interval,
        "down after {took:?}: passive detection must beat delay_loop"
    );
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_passive_events_is_coalesced_into_one_reprobe() {
    let health = TcpEndpoint::bind().await;
    let vs = vip_port(80);
    let b = backend(
        traffic_addr(52),
        vec![check(tcp(health.addr), slow_timing())],
    );
    let k = key(vs, b.addr);
    let sink = RecordingSink::new();
    let (passive_tx, passive_rx) = mpsc::unbounded_channel();
    let supervisor = HealthSupervisor::spawn(
        &plan(vec![service(vs, vec![b])]),
        sink.clone(),
        passive_rx,
        Arc::new(NoopObserver),
    );
    eventually(
        Duration::from_secs(5),
        "first probe",
        || health.accepted() == 1,
        String::new,
    )
    .await;
    let calls_before = sink.backend_calls(k).len();
    for _ in 0..100 {
        passive_tx
            .send(PassiveEvent {
                key: k,
                error: ErrorKind::TimedOut,
            })
            .unwrap();
    }
    eventually(
        Duration::from_secs(10),
        "re-probe answered",
        || sink.backend_calls(k).len() > calls_before,
        String::new,
    )
    .await;
    let probes = health.accepted() - 1;
    assert!(
        probes <= 3,
        "100 events while one re-probe is in flight caused {probes} probes"
    );
    supervisor.shutdown().await;
}
