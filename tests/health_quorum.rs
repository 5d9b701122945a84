//! Quorum, hysteresis and the sorry server over real health endpoints: losing backends below
//! quorum − hysteresis activates the sorry server, restoring them to quorum + hysteresis
//! gives traffic back, and nothing flaps in between.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alive_proxy::config::Plan;
use alive_proxy::health::{BackendStatus, HealthSupervisor, NoopObserver};
use support::health::*;
use tokio::sync::mpsc;

fn spawn(plan: &Plan, sink: &Arc<RecordingSink>) -> HealthSupervisor {
    let (_passive_tx, passive_rx) = mpsc::unbounded_channel();
    HealthSupervisor::spawn(plan, sink.clone(), passive_rx, Arc::new(NoopObserver))
}

async fn wait_backend(
    sink: &RecordingSink,
    k: alive_proxy::config::BackendKey,
    status: BackendStatus,
) {
    eventually(
        Duration::from_secs(10),
        &format!("{} {status:?}", k.backend),
        || sink.status(k) == Some(status),
        || format!("{:?}", sink.backend_calls(k)),
    )
    .await;
}

/// The sorry-server calls are made right after the backend call that caused them.
async fn wait_sorry(sink: &RecordingSink, vs: SocketAddr, expected: &[bool], what: &str) {
    eventually(
        Duration::from_secs(5),
        what,
        || sink.sorry_calls(vs) == expected,
        || format!("sorry calls {:?}", sink.sorry_calls(vs)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorry_server_takes_over_below_quorum_and_hands_back_without_flapping() {
    let vs = vip_port(80);
    let sorry: SocketAddr = "127.0.0.1:39999".parse().unwrap();
    let mut endpoints = Vec::new();
    let mut backends = Vec::new();
    for n in 0..4 {
        let e = TcpEndpoint::bind().await;
        backends.push(backend(
            traffic_addr(30 + n),
            vec![check(tcp(e.addr), Timing::quick())],
        ));
        endpoints.push(e);
    }
    let keys: Vec<_> = backends.iter().map(|b| key(vs, b.addr)).collect();
    let mut svc = service(vs, backends);
    // Up at >= 4 (quorum + hysteresis), down below 2 (quorum - hysteresis).
    svc.quorum = 3;
    svc.hysteresis = 1;
    svc.sorry_server = Some(sorry);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![svc]), &sink);
    assert_eq!(
        sink.sorry_calls(vs),
        vec![false],
        "starts with quorum (4 >= 3+1)"
    );

    for n in 0..2 {
        endpoints[n].stop().await;
        wait_backend(&sink, keys[n], BackendStatus::Down).await;
    }
    assert_eq!(
        sink.sorry_calls(vs),
        vec![false],
        "live 2 is not below 3-1: no sorry server yet"
    );

    endpoints[2].stop().await;
    wait_backend(&sink, keys[2], BackendStatus::Down).await;
    wait_sorry(&sink, vs, &[false, true], "live 1 < 2: sorry server active").await;

    for n in 0..2 {
        endpoints[n].start().await;
        wait_backend(&sink, keys[n], up(1)).await;
    }
    assert_eq!(
        sink.sorry_calls(vs),
        vec![false, true],
        "live 3 < 3+1: sorry server stays (hysteresis)"
    );

    endpoints[2].start().await;
    wait_backend(&sink, keys[2], up(1)).await;
    wait_sorry(
        &sink,
        vs,
        &[false, true, false],
        "live 4: quorum regained, sorry server off",
    )
    .await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sorry_server_quorum_loss_does_not_call_sorry_active() {
    let vs = vip_port(81);
    let mut e = TcpEndpoint::bind().await;
    let b = backend(traffic_addr(40), vec![check(tcp(e.addr), Timing::quick())]);
    let k = key(vs, b.addr);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, vec![b])]), &sink);
    e.stop().await;
    wait_backend(&sink, k, BackendStatus::Down).await;
    assert!(
        sink.sorry_calls(vs).is_empty(),
        "no sorry server configured: {:?}",
        sink.sorry_calls(vs)
    );
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpha_service_below_quorum_starts_with_sorry_server() {
    let vs = vip_port(82);
    let e = TcpEndpoint::bind().await;
    let mut b = backend(traffic_addr(41), vec![check(tcp(e.addr), Timing::quick())]);
    b.alpha = true;
    let k = key(vs, b.addr);
    let mut svc = service(vs, vec![b]);
    svc.sorry_server = Some("127.0.0.1:39998".parse().unwrap());
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![svc]), &sink);
    assert_eq!(
        sink.sorry_calls(vs),
        vec![true],
        "alpha: no live weight at start"
    );
    wait_backend(&sink, k, up(1)).await;
    wait_sorry(&sink, vs, &[true, false], "first success regains quorum").await;
    supervisor.shutdown().await;
}
