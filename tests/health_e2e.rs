//! Health and the real data plane together: clients connect through the proxy to
//! `alive-backend` processes while health checks run on a tokio runtime and feed the data
//! plane's `Routing` (the production `HealthSink`), with passive events wired back.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alive_proxy::config::{BackendKey, Check, Plan};
use alive_proxy::dataplane::DriverChoice;
use alive_proxy::health::{BackendStatus, HealthSink, HealthSupervisor, NoopObserver};
use support::dataplane::{backend_name, http_get, loopback, spawn_backend, start};
use support::health::{
    RecordingSink, TcpEndpoint, Timing, backend, check, key, plan, service, tcp, up,
};
use support::ports::free_tcp_port;
use support::wait;

/// Records what health says, then hands it to the data plane.
struct Tee {
    record: Arc<RecordingSink>,
    routing: Arc<dyn HealthSink>,
}

impl HealthSink for Tee {
    fn backend_changed(&self, key: BackendKey, status: BackendStatus) {
        self.record.backend_changed(key, status);
        self.routing.backend_changed(key, status);
    }

    fn sorry_active(&self, service: SocketAddr, active: bool) {
        self.record.sorry_active(service, active);
        self.routing.sorry_active(service, active);
    }
}

struct Running {
    rt: tokio::runtime::Runtime,
    record: Arc<RecordingSink>,
    health: Option<HealthSupervisor>,
    dataplane: support::dataplane::TestDataplane,
}

impl Running {
    fn start(plan: &Plan, rt: tokio::runtime::Runtime) -> Running {
        let mut dataplane = start(plan, DriverChoice::Auto);
        let (_unused, placeholder) = tokio::sync::mpsc::unbounded_channel();
        let passive = std::mem::replace(&mut dataplane.passive, placeholder);
        let record = RecordingSink::new();
        let sink = Arc::new(Tee {
            record: record.clone(),
            routing: dataplane.get().routing(),
        });
        let health = {
            let _entered = rt.enter();
            HealthSupervisor::spawn(plan, sink, passive, Arc::new(NoopObserver))
        };
        Running {
            rt,
            record,
            health: Some(health),
            dataplane,
        }
    }

    fn wait_status(&self, k: BackendKey, status: BackendStatus, since: Instant) -> Duration {
        wait::until_or_panic(
            Duration::from_secs(30),
            &format!("{} {status:?}", k.backend),
            || self.record.reported_at(k, status, since).is_some(),
        );
        self.record.reported_at(k, status, since).unwrap() - since
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(health) = self.health.take() {
            self.rt.block_on(health.shutdown());
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Names of the backends that answered `n` requests through `vip`; panics on any failure.
fn served_by(vip: SocketAddr, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|i| {
            let body = http_get(vip, "/")
                .unwrap_or_else(|e| panic!("request {i} through the proxy failed: {e}"));
            backend_name(&body).unwrap_or_default()
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn health_port_down_removes_backend_from_rotation_and_back() {
    let rt = runtime();
    let (a, b) = (
        loopback(false, free_tcp_port()),
        loopback(false, free_tcp_port()),
    );
    let _ga = spawn_backend("a", a, "http");
    let _gb = spawn_backend("b", b, "http");
    let mut health_a = rt.block_on(TcpEndpoint::bind());
    let health_b = rt.block_on(TcpEndpoint::bind());
    let timing = Timing {
        interval: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        retry: 1,
        delay_before_retry: Duration::from_millis(500),
    };
    let vip = loopback(false, free_tcp_port());
    let svc = service(
        vip,
        vec![
            backend(a, vec![check(tcp(health_a.addr), timing)]),
            backend(b, vec![check(tcp(health_b.addr), timing)]),
        ],
    );
    let running = Running::start(&plan(vec![svc]), rt);
    assert_eq!(
        served_by(vip, 10),
        set(&["a", "b"]),
        "both backends serve at start"
    );

    running.rt.block_on(health_a.stop());
    let detected = running.wait_status(key(vip, a), BackendStatus::Down, Instant::now());
    println!("through the proxy: health port of a stopped, a out of rotation after {detected:?}");
    assert_eq!(
        served_by(vip, 10),
        set(&["b"]),
        "a's traffic port still answers, but a is out"
    );

    running.rt.block_on(health_a.start());
    running.wait_status(key(vip, a), up(1), Instant::now());
    assert_eq!(
        served_by(vip, 10),
        set(&["a", "b"]),
        "a back in rotation without a reload"
    );
}

#[test]
fn backend_dying_between_probes_gets_one_failed_connect_and_no_client_failure() {
    let rt = runtime();
    let (a, b) = (
        loopback(false, free_tcp_port()),
        loopback(false, free_tcp_port()),
    );
    let mut guard_a = spawn_backend("a", a, "http");
    let _gb = spawn_backend("b", b, "http");
    let timing = Timing {
        interval: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(1),
        retry: 1,
        delay_before_retry: Duration::from_millis(300),
    };
    let probe = |addr| -> Check { check(tcp(addr), timing) };
    let vip = loopback(false, free_tcp_port());
    let svc = service(
        vip,
        vec![backend(a, vec![probe(a)]), backend(b, vec![probe(b)])],
    );
    let running = Running::start(&plan(vec![svc]), rt);
    assert_eq!(served_by(vip, 10), set(&["a", "b"]));

    guard_a.signal(libc::SIGKILL);
    guard_a.wait_exit(Duration::from_secs(5));
    let killed = Instant::now();
    assert_eq!(
        served_by(vip, 20),
        set(&["b"]),
        "every client served, by b only"
    );
    let detected = running.wait_status(key(vip, a), BackendStatus::Down, killed);
    println!("passive: a killed, health reports it down after {detected:?} (delay_loop 60s)");
    assert!(
        detected < timing.interval,
        "passive detection must beat delay_loop"
    );

    let snapshot = running.dataplane.stats.snapshot();
    let failures: u64 = snapshot
        .services
        .iter()
        .flat_map(|s| s.backends.iter())
        .filter(|bk| bk.addr == a)
        .map(|bk| bk.connect_failures)
        .sum();
    assert_eq!(
        failures, 1,
        "a dead backend must get no connect attempts after the first refused one"
    );
}

#[test]
fn below_quorum_sorry_server_takes_new_connections_and_gives_them_back() {
    let rt = runtime();
    let (a, b, sorry) = (
        loopback(false, free_tcp_port()),
        loopback(false, free_tcp_port()),
        loopback(false, free_tcp_port()),
    );
    let _ga = spawn_backend("a", a, "http");
    let _gb = spawn_backend("b", b, "http");
    let _gs = spawn_backend("sorry", sorry, "http");
    let mut health_a = rt.block_on(TcpEndpoint::bind());
    let health_b = rt.block_on(TcpEndpoint::bind());
    let timing = Timing::quick();
    let vip = loopback(false, free_tcp_port());
    let mut svc = service(
        vip,
        vec![
            backend(a, vec![check(tcp(health_a.addr), timing)]),
            backend(b, vec![check(tcp(health_b.addr), timing)]),
        ],
    );
    svc.quorum = 2;
    svc.sorry_server = Some(sorry);
    let running = Running::start(&plan(vec![svc]), rt);
    assert_eq!(served_by(vip, 10), set(&["a", "b"]));

    running.rt.block_on(health_a.stop());
    running.wait_status(key(vip, a), BackendStatus::Down, Instant::now());
    wait::until_or_panic(Duration::from_secs(10), "sorry server active", || {
        running.record.sorry_calls(vip).last() == Some(&true)
    });
    assert_eq!(
        served_by(vip, 10),
        set(&["sorry"]),
        "below quorum: the sorry server takes all"
    );

    running.rt.block_on(health_a.start());
    running.wait_status(key(vip, a), up(1), Instant::now());
    wait::until_or_panic(Duration::from_secs(10), "sorry server off", || {
        running.record.sorry_calls(vip).last() == Some(&false)
    });
    assert_eq!(
        served_by(vip, 10),
        set(&["a", "b"]),
        "quorum back: traffic back"
    );
}
