//! End to end through the real data plane: after N client connections, the stats (registry
//! snapshot, `alive-proxy stats --json`, `/metrics`) report exactly N accepted, the per-backend
//! split the scheduler produced, and the bytes each way that the clients sent and received.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use alive_proxy::config::AdminPlan;
use alive_proxy::dataplane::DriverChoice;
use alive_proxy::stats::admin::{self, AdminServer};
use alive_proxy::stats::prometheus;
use alive_proxy::stats::{Readiness, StatsSnapshot};
use support::dataplane::{backend_name, loopback, plan, service, spawn_backend, start};
use support::ports::free_tcp_port;

const CONNECTIONS: u64 = 40;
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

#[derive(Default, Debug, PartialEq)]
struct Seen {
    connections: u64,
    sent: u64,
    received: u64,
}

/// One request on its own connection; returns the backend name and the response size.
fn one_request(vip: SocketAddr) -> (String, u64) {
    let mut stream =
        TcpStream::connect_timeout(&vip, Duration::from_secs(5)).expect("connect to the VIP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream.write_all(REQUEST).expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let name = backend_name(body).unwrap_or_else(|| panic!("no backend name in {body:?}"));
    (name, response.len() as u64)
}

struct Admin {
    runtime: tokio::runtime::Runtime,
    server: Option<AdminServer>,
    _dir: tempfile::TempDir,
}

impl Drop for Admin {
    fn drop(&mut self) {
        let _guard = self.runtime.enter();
        self.server.take();
    }
}

fn counts_reach_exactly_n_through_the_proxy(driver: DriverChoice) {
    let names = ["b1", "b2"];
    let mut guards = Vec::new();
    let mut addrs = Vec::new();
    let mut name_of = BTreeMap::new();
    for name in names {
        let addr = loopback(false, free_tcp_port());
        guards.push(spawn_backend(name, addr, "http"));
        addrs.push(addr);
        name_of.insert(name.to_owned(), addr);
    }
    let vip = loopback(false, free_tcp_port());
    let dataplane = start(&plan(vec![service(vip, &addrs)]), driver);

    let mut seen: BTreeMap<SocketAddr, Seen> = BTreeMap::new();
    for _ in 0..CONNECTIONS {
        let (name, received) = one_request(vip);
        let addr = name_of[&name];
        let entry = seen.entry(addr).or_default();
        entry.connections += 1;
        entry.sent += REQUEST.len() as u64;
        entry.received += received;
    }

    // Sessions are counted closed once the relay has finished both directions.
    let closed = || {
        let snapshot = dataplane.stats.snapshot();
        snapshot.services.first().map(|s| s.closed) == Some(CONNECTIONS)
    };
    assert!(
        support::wait::until(Duration::from_secs(10), closed),
        "sessions never all closed: {:#?}",
        dataplane.stats.snapshot().services
    );
    let snapshot = dataplane.stats.snapshot();
    check(&snapshot, vip, &seen, "registry snapshot");

    // The same numbers through the admin socket (`alive-proxy stats --json`) and `/metrics`.
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = runtime
        .block_on(admin::serve(
            AdminPlan {
                socket: dir.path().join("admin.sock"),
                http: Some(loopback(false, 0)),
            },
            Arc::clone(&dataplane.stats),
            Readiness::new(),
        ))
        .expect("admin endpoint starts");
    let socket = server.socket_path().to_owned();
    let http = server.http_addr().expect("HTTP on");
    let _admin = Admin {
        runtime,
        server: Some(server),
        _dir: dir,
    };
    let output = Command::new(env!("CARGO_BIN_EXE_alive-proxy"))
        .args(["stats", "--json", "--socket"])
        .arg(&socket)
        .output()
        .expect("run alive-proxy stats");
    assert!(
        output.status.success(),
        "stats --json failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let from_cli: StatsSnapshot =
        serde_json::from_slice(&output.stdout).expect("stats --json prints a snapshot");
    check(&from_cli, vip, &seen, "alive-proxy stats --json");

    let metrics = http_get_body(http, "/metrics");
    let service_labels = format!(r#"vip="{}",port="{}""#, vip.ip(), vip.port());
    let mut want = vec![format!(
        "alive_proxy_service_connections_total{{{service_labels}}} {CONNECTIONS}"
    )];
    for (addr, s) in &seen {
        let labels = format!(r#"{service_labels},backend="{addr}""#);
        want.push(format!(
            "alive_proxy_backend_connections_total{{{labels}}} {}",
            s.connections
        ));
        want.push(format!(
            "alive_proxy_backend_incoming_bytes_total{{{labels}}} {}",
            s.sent
        ));
        want.push(format!(
            "alive_proxy_backend_outgoing_bytes_total{{{labels}}} {}",
            s.received
        ));
    }
    for line in want {
        assert!(
            metrics.lines().any(|l| l == line),
            "/metrics lacks {line}\n{metrics}"
        );
    }
}

fn check(snapshot: &StatsSnapshot, vip: SocketAddr, seen: &BTreeMap<SocketAddr, Seen>, from: &str) {
    let service = snapshot
        .services
        .iter()
        .find(|s| s.addr() == vip)
        .unwrap_or_else(|| panic!("{from}: no service {vip}"));
    assert_eq!(service.accepted, CONNECTIONS, "{from}: accepted");
    assert_eq!(service.active, 0, "{from}: nothing left open");
    for backend in &service.backends {
        let want = seen
            .get(&backend.addr)
            .map_or((0, 0, 0), |s| (s.connections, s.sent, s.received));
        let got = (
            backend.connections,
            backend.bytes_to_backend,
            backend.bytes_to_client,
        );
        assert_eq!(
            got, want,
            "{from}: backend {} (connections, bytes to backend, bytes to client)",
            backend.addr
        );
        assert_eq!(
            backend.connect_time.count, backend.connections,
            "{from}: one connect time per connection"
        );
    }
}

fn http_get_body(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to admin HTTP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_else(|| panic!("no body in {response:?}"))
}

on_both_drivers!(counts_reach_exactly_n_through_the_proxy);

/// `/metrics` (the encoder the endpoint serves) counts a refused backend connect by cause and a
/// session closed by its idle timer, and the exposition passes `promtool check metrics`.
fn metrics_count_passive_failures_by_cause_and_session_timeouts(driver: DriverChoice) {
    let live = loopback(false, free_tcp_port());
    let _echo = spawn_backend("echo", live, "echo");
    let dead = loopback(false, free_tcp_port());
    let vip = loopback(false, free_tcp_port());
    let mut svc = service(vip, &[dead, live]);
    svc.idle_timeout = Duration::from_secs(1);
    let dataplane = start(&plan(vec![svc]), driver);
    // Round robin over two backends: some of these try the dead one first.
    for _ in 0..4 {
        let mut stream = TcpStream::connect_timeout(&vip, Duration::from_secs(5)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        stream.write_all(b"ping").expect("send");
        let mut echo = [0u8; 4];
        stream
            .read_exact(&mut echo)
            .expect("served by the live backend");
        if stream.read(&mut echo).is_err() {
            // Reset by the idle timer: expected.
        }
    }
    let metrics = prometheus::encode_registry(&prometheus::live_registry(
        Arc::clone(&dataplane.stats),
        Readiness::new(),
    ))
    .expect("encode /metrics");
    for (series, what) in [
        (
            r#"alive_proxy_passive_connect_failures_total{cause="refused"}"#,
            "a refused connect",
        ),
        (
            r#"alive_proxy_sessions_timed_out_total{timeout="idle"}"#,
            "idle sessions closed",
        ),
    ] {
        let value = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse::<u64>().ok());
        assert!(
            value.is_some_and(|v| v > 0),
            "/metrics does not count {what} ({series}: {value:?}):\n{metrics}"
        );
    }
    support::metrics::promtool_check(&metrics);
}
on_both_drivers!(metrics_count_passive_failures_by_cause_and_session_timeouts);
