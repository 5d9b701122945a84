//! TCP_CHECK over real loopback sockets, in the seed's shape: traffic on one port, health on
//! another (`connect_port 1936` while traffic goes to 80). Also alpha, inhibit_on_failure,
//! bindto, and the CPU cost of 100 backends checked every second.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alive_proxy::config::{CheckKind, TcpCheck};
use alive_proxy::health::{BackendStatus, HealthSupervisor, NoopObserver};
use support::health::*;
use tokio::sync::mpsc;

fn spawn(plan: &alive_proxy::config::Plan, sink: &Arc<RecordingSink>) -> HealthSupervisor {
    let (_passive_tx, passive_rx) = mpsc::unbounded_channel();
    HealthSupervisor::spawn(plan, sink.clone(), passive_rx, Arc::new(NoopObserver))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_only_the_health_port_takes_backend_down_within_configured_bound_and_back() {
    let mut health = TcpEndpoint::bind().await;
    let traffic = TcpEndpoint::bind().await;
    let timing = Timing {
        interval: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        retry: 2,
        delay_before_retry: Duration::from_millis(500),
    };
    let vs = vip_port(80);
    let b = backend(traffic.addr, vec![check(tcp(health.addr), timing)]);
    let k = key(vs, traffic.addr);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, vec![b])]), &sink);

    eventually(
        Duration::from_secs(5),
        "first probe on the health port",
        || health.accepted() >= 1,
        String::new,
    )
    .await;
    assert_eq!(sink.status(k), Some(up(1)), "backend starts up (no alpha)");

    health.stop().await;
    let stopped = Instant::now();
    let bound = timing.interval
        + timing.delay_before_retry * timing.retry
        + timing.connect_timeout * (timing.retry + 1)
        + Duration::from_secs(1); // scheduling slack on a loaded 2-core box
    eventually(
        bound + Duration::from_secs(5),
        "backend reported down",
        || sink.status(k) == Some(BackendStatus::Down),
        || format!("{:?}", sink.backend_calls(k)),
    )
    .await;
    let detected = sink.reported_at(k, BackendStatus::Down, stopped).unwrap() - stopped;
    println!(
        "TCP_CHECK detection: {detected:?} (interval 1s, retry 2, delay_before_retry 500ms, connect_timeout 1s; bound {bound:?})"
    );
    assert!(
        detected >= timing.delay_before_retry * timing.retry,
        "down after {detected:?}: too early for retry+1 failures spaced by delay_before_retry"
    );
    assert!(
        detected <= bound,
        "down after {detected:?}, beyond the configured bound {bound:?}"
    );
    assert_eq!(
        traffic.accepted(),
        0,
        "the check must probe the health port, never the traffic port"
    );

    health.start().await;
    let restarted = Instant::now();
    eventually(
        Duration::from_secs(5),
        "backend back up",
        || sink.status(k) == Some(up(1)),
        || format!("{:?}", sink.backend_calls(k)),
    )
    .await;
    let recovered = sink.reported_at(k, up(1), restarted).unwrap() - restarted;
    println!("TCP_CHECK recovery: {recovered:?} (one success)");
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpha_backend_starts_down_until_first_success() {
    let health = TcpEndpoint::bind().await;
    let vs = vip_port(80);
    let mut b = backend(
        traffic_addr(1),
        vec![check(tcp(health.addr), Timing::quick())],
    );
    b.alpha = true;
    let k = key(vs, b.addr);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, vec![b])]), &sink);
    let calls = sink.backend_calls(k);
    assert_eq!(
        calls.first().map(|c| c.1),
        Some(BackendStatus::Down),
        "alpha: first report is down: {calls:?}"
    );
    eventually(
        Duration::from_secs(5),
        "alpha backend up after first success",
        || sink.status(k) == Some(up(1)),
        || format!("{:?}", sink.backend_calls(k)),
    )
    .await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inhibit_on_failure_reports_weight_zero_instead_of_down() {
    let mut health = TcpEndpoint::bind().await;
    let vs = vip_port(80);
    let mut b = backend(
        traffic_addr(2),
        vec![check(tcp(health.addr), Timing::quick())],
    );
    b.inhibit_on_failure = true;
    b.weight = 4;
    let k = key(vs, b.addr);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, vec![b])]), &sink);
    eventually(
        Duration::from_secs(5),
        "first probe",
        || health.accepted() >= 1,
        String::new,
    )
    .await;
    health.stop().await;
    eventually(
        Duration::from_secs(5),
        "inhibited backend at weight 0",
        || sink.status(k) == Some(up(0)),
        || format!("{:?}", sink.backend_calls(k)),
    )
    .await;
    assert!(
        !sink
            .backend_calls(k)
            .iter()
            .any(|c| c.1 == BackendStatus::Down),
        "inhibit_on_failure must never report Down"
    );
    health.start().await;
    eventually(
        Duration::from_secs(5),
        "weight 4 again",
        || sink.status(k) == Some(up(4)),
        || format!("{:?}", sink.backend_calls(k)),
    )
    .await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_connects_from_bindto_address() {
    // Accept on 127.0.0.1 and look at where the probe comes from.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = listener.local_addr().unwrap();
    let bind: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let vs = vip_port(80);
    let kind = CheckKind::Tcp(TcpCheck {
        connect: health,
        bind: Some(bind),
    });
    let b = backend(traffic_addr(3), vec![check(kind, Timing::quick())]);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, vec![b])]), &sink);
    let (_, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("a probe within 5 s")
        .unwrap();
    assert_eq!(peer.ip(), bind.ip(), "probe must come from bindto");
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_backends_checked_every_second_cost_little_cpu() {
    let health = TcpEndpoint::bind().await;
    let vs = vip_port(80);
    let timing = Timing {
        interval: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        retry: 1,
        delay_before_retry: Duration::from_secs(1),
    };
    let mut backends = Vec::new();
    for n in 0..100 {
        let mut c = check(tcp(health.addr), timing);
        c.warmup = Duration::from_secs(1);
        backends.push(backend(traffic_addr(100 + n), vec![c]));
    }
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, backends)]), &sink);
    let cpu_before = process_cpu_time();
    let wall_before = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu = process_cpu_time() - cpu_before;
    let wall = wall_before.elapsed();
    let probes = health.accepted();
    println!(
        "100 backends x 1s delay_loop for {wall:?}: {probes} probes, process CPU {cpu:?} = {:.2}% of one core (includes the in-process health endpoint)",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
    assert!(probes >= 500, "expected ~1000 probes in 10 s, saw {probes}");
    assert!(
        !sink.events().iter().any(|e| matches!(
            e,
            SinkEvent::Backend {
                status: BackendStatus::Down,
                ..
            }
        )),
        "no backend may go down while its health port answers"
    );
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_backend_is_checked_on_its_ipv6_health_port() {
    // The seed's second instance is IPv6; the same shape over ::1.
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let health = listener.local_addr().unwrap();
    let vs: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
    let traffic: SocketAddr = "[::1]:40080".parse().unwrap();
    let b = backend(traffic, vec![check(tcp(health), Timing::quick())]);
    let k = key(vs, traffic);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, vec![b])]), &sink);
    let (_, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("an IPv6 probe within 5 s")
        .unwrap();
    assert!(peer.is_ipv6(), "probe came from {peer}");
    drop(listener);
    eventually(
        Duration::from_secs(5),
        "IPv6 backend down once its health port closes",
        || sink.status(k) == Some(BackendStatus::Down),
        || format!("{:?}", sink.backend_calls(k)),
    )
    .await;
    supervisor.shutdown().await;
}
