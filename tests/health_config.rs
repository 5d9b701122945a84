//! The seed's shape through the real config parser: an `alive.yaml` with a pasted
//! `TCP_CHECK { connect_port … }` block, loaded with `config::load_str`, checked over
//! loopback. Also shows the reason every transition carries (check, origin in the file,
//! error) as stats receive it.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alive_proxy::config::{self, BackendKey, CheckKind, Mode};
use alive_proxy::health::{BackendStatus, HealthObserver, HealthSupervisor};
use support::health::*;
use support::ports::free_tcp_port;
use tokio::sync::mpsc;

#[derive(Default)]
struct RecordingObserver {
    reports: Mutex<Vec<(BackendKey, BackendStatus, String)>>,
}

impl HealthObserver for RecordingObserver {
    fn backend_health(&self, key: BackendKey, status: BackendStatus, reason: String) {
        self.reports.lock().unwrap().push((key, status, reason));
    }
}

/// The seed's layout, on loopback; only the addresses and ports differ.
fn seed_shaped_yaml(traffic_port: u16, health_port: u16) -> String {
    format!(
        r#"instances:
  - vip:
      vip: 127.0.0.1
      id: 20
      interface: "lo"
      name: "vip-test"
    ipvs:
      ips: [ "127.0.0.1" ]
      ports:
        - port: {traffic_port}
          virtual_server_config: |
            delay_loop 1
            lb_algo rr
            lb_kind NAT
            protocol TCP
          raw_check: |
            TCP_CHECK {{
                connect_timeout 1
                connect_port {health_port}
            }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_shaped_config_checks_the_health_port_and_explains_transitions() {
    let mut health = TcpEndpoint::bind().await;
    let traffic_port = free_tcp_port();
    let yaml = seed_shaped_yaml(traffic_port, health.addr.port());
    let loaded = config::load_str("alive.yaml", &yaml, Mode::Check)
        .unwrap_or_else(|e| panic!("seed-shaped yaml must load: {e:?}"));
    let plan = loaded.plan;
    let service = &plan.instances[0].services[0];
    let backend = &service.backends[0];
    let check = backend.checks[0].clone();
    let CheckKind::Tcp(tcp) = &check.kind else {
        panic!("expected a TCP_CHECK, got {:?}", check.kind)
    };
    assert_eq!(
        tcp.connect, health.addr,
        "connect_port must redirect the probe"
    );
    assert_eq!(backend.addr.port(), traffic_port);
    assert_eq!(
        (check.retry, check.delay_before_retry),
        (1, Duration::from_secs(1)),
        "keepalived defaults"
    );
    let k = key(service.listen_addr(), backend.addr);

    let sink = RecordingSink::new();
    let observer = Arc::new(RecordingObserver::default());
    let (_passive_tx, passive_rx) = mpsc::unbounded_channel();
    let supervisor = HealthSupervisor::spawn(&plan, sink.clone(), passive_rx, observer.clone());
    // warmup defaults to delay_loop: the first probe comes within 1 s.
    eventually(
        Duration::from_secs(5),
        "first probe",
        || health.accepted() >= 1,
        String::new,
    )
    .await;

    health.stop().await;
    let stopped = Instant::now();
    let bound = check.interval
        + check.delay_before_retry * check.retry
        + check.connect_timeout * (check.retry + 1)
        + Duration::from_secs(1);
    eventually(
        bound + Duration::from_secs(5),
        "down",
        || sink.status(k) == Some(BackendStatus::Down),
        || format!("{:?}", sink.backend_calls(k)),
    )
    .await;
    let detected = sink.reported_at(k, BackendStatus::Down, stopped).unwrap() - stopped;
    println!(
        "seed-shaped TCP_CHECK (delay_loop 1, connect_timeout 1, retry 1, delay_before_retry 1): down after {detected:?}, bound {bound:?}"
    );
    assert!(
        detected <= bound,
        "down after {detected:?}, beyond {bound:?}"
    );

    let reports = observer.reports.lock().unwrap().clone();
    let (_, _, reason) = reports
        .iter()
        .rev()
        .find(|(key, status, _)| *key == k && *status == BackendStatus::Down)
        .expect("stats got the down transition");
    assert!(
        reason.contains("TCP_CHECK")
            && reason.contains(&health.addr.to_string())
            && reason.contains("alive.yaml:")
            && reason.contains("failed after 1 retry")
            && reason.to_lowercase().contains("refused"),
        "the reason must name the check, its origin, the retries and the error: {reason}"
    );
    println!("transition reason: {reason}");
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_reach_the_stats_snapshot_with_their_reason() {
    let mut health = TcpEndpoint::bind().await;
    let yaml = seed_shaped_yaml(free_tcp_port(), health.addr.port());
    let plan = config::load_str("alive.yaml", &yaml, Mode::Check)
        .unwrap_or_else(|e| panic!("seed-shaped yaml must load: {e:?}"))
        .plan;
    let registry = alive_proxy::stats::StatsRegistry::new();
    registry.control().set_plan(&plan);
    let backend_addr = plan.instances[0].services[0].backends[0].addr;
    let (_passive_tx, passive_rx) = mpsc::unbounded_channel();
    // The interface's wiring: the stats ControlState is the observer.
    let supervisor =
        HealthSupervisor::spawn(&plan, RecordingSink::new(), passive_rx, registry.control());
    eventually(
        Duration::from_secs(5),
        "first probe",
        || health.accepted() >= 1,
        String::new,
    )
    .await;
    health.stop().await;
    let view = || {
        registry
            .snapshot()
            .services
            .iter()
            .flat_map(|s| s.backends.clone())
            .find(|b| b.addr == backend_addr)
            .and_then(|b| b.health)
    };
    eventually(
        Duration::from_secs(10),
        "stats show the backend down",
        || view().is_some_and(|h| h.state == alive_proxy::stats::HealthState::Down),
        || format!("{:?}", view()),
    )
    .await;
    let reason = view().map(|h| h.reason).unwrap_or_default();
    assert!(
        reason.contains("TCP_CHECK") && reason.contains("alive.yaml:"),
        "stats reason: {reason}"
    );
    supervisor.shutdown().await;
}
