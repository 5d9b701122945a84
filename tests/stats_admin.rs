//! The admin endpoint over real sockets: the Unix socket protocol, its file mode and stale
//! socket handling, `/healthz`, `/readyz`, and `/metrics` checked by `promtool`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alive_proxy::config::{AdminPlan, BackendKey, Scheduler};
use alive_proxy::health::BackendStatus;
use alive_proxy::stats::admin::{self, AdminError, AdminServer};
use alive_proxy::stats::control::VrrpView;
use alive_proxy::stats::{CertExpiry, Readiness, StatsRegistry, VipRole, VipView, socket};

const TIMEOUT: Duration = Duration::from_secs(10);

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address literal")
}

fn service_addr() -> SocketAddr {
    addr("192.0.2.1:80")
}

fn key(backend: &str) -> BackendKey {
    BackendKey {
        service: service_addr(),
        backend: addr(backend),
    }
}

/// A registry with a plan (wlc over two backends), some traffic, health and HA state.
fn populated_registry() -> Arc<StatsRegistry> {
    let registry = StatsRegistry::new();
    let mut service = support::dataplane::service(
        service_addr(),
        &[addr("198.51.100.7:80"), addr("198.51.100.8:80")],
    );
    service.scheduler = Scheduler::Wlc;
    let plan = support::dataplane::plan(vec![service]);
    let control = registry.control();
    control.set_plan(&plan);
    control.backend_health(
        key("198.51.100.7:80"),
        BackendStatus::Up { weight: 1 },
        "TCP_CHECK 198.51.100.7:1936 connected".into(),
    );
    control.backend_health(
        key("198.51.100.8:80"),
        BackendStatus::Down,
        "TCP_CHECK 198.51.100.8:1936: connection refused".into(),
    );
    control.vip_state(
        "test-0",
        VipView {
            holder: Some("lb-1".into()),
            role: VipRole::Master,
            since: SystemTime::now() - Duration::from_secs(90),
            transitions: 1,
            lock_endpoint: Some("/live/cfg/kubeconfig-a".into()),
            cert_expiry: vec![CertExpiry {
                kubeconfig: "/live/cfg/kubeconfig-a".into(),
                not_after: Some(SystemTime::now() + Duration::from_secs(86_400 * 30)),
                error: None,
            }],
            last_error: None,
            removal_pending: false,
        },
    );
    control.vrrp_state(
        "test-0",
        VrrpView {
            vrid: 51,
            state: "MASTER".into(),
            priority: 50,
            configured_priority: 100,
            advert_interval_ms: 100,
            master: Some("192.0.2.11".parse().expect("literal")),
            source: Some("192.0.2.11".parse().expect("literal")),
            destinations: vec!["192.0.2.12".parse().expect("literal")],
            adverts_received: 7,
            adverts_sent: 42,
            send_errors: 0,
            dropped: [("checksum".to_string(), 3)].into_iter().collect(),
        },
    );
    let worker = registry.worker(0);
    let stats = worker.service(service_addr());
    let backend = worker.backend(key("198.51.100.7:80"));
    for _ in 0..3 {
        stats.accepted();
        backend.connect_ok(Duration::from_micros(80));
        backend.session_opened();
        backend.first_byte(Duration::from_micros(400));
        backend.bytes_to_backend(100);
        backend.bytes_to_client(2000);
        backend.session_closed(Duration::from_millis(5));
        stats.session_closed(Duration::from_millis(5));
    }
    let down = worker.backend(key("198.51.100.8:80"));
    down.connect_failed();
    down.retried();
    registry
}

struct Running {
    runtime: tokio::runtime::Runtime,
    server: Option<AdminServer>,
    readiness: Arc<Readiness>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn socket(&self) -> PathBuf {
        self.server().socket_path().to_owned()
    }

    fn server(&self) -> &AdminServer {
        self.server.as_ref().expect("server is running")
    }

    fn http(&self) -> SocketAddr {
        self.server().http_addr().expect("HTTP listener is on")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Stop serving inside the runtime, before the runtime itself goes.
        let _guard = self.runtime.enter();
        self.server.take();
    }
}

fn start(registry: Arc<StatsRegistry>) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let readiness = Readiness::new();
    let plan = AdminPlan {
        socket: dir.path().join("run/admin.sock"),
        http: Some(addr("127.0.0.1:0")),
    };
    let server = runtime
        .block_on(admin::serve(plan, registry, Arc::clone(&readiness)))
        .expect("admin endpoint starts");
    Running {
        runtime,
        server: Some(server),
        readiness,
        _dir: dir,
    }
}

/// A blocking HTTP/1.1 GET; returns (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to admin HTTP");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header/body split in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

#[test]
fn admin_socket_answers_snapshot_with_recorded_counts() {
    let running = start(populated_registry());
    let snapshot =
        socket::request_snapshot(&running.socket(), TIMEOUT).expect("snapshot over the socket");
    let service = &snapshot.services[0];
    assert_eq!(service.addr(), service_addr());
    assert_eq!(service.scheduler.as_deref(), Some("wlc"));
    assert_eq!(service.accepted, 3);
    let up = &service.backends[0];
    assert_eq!(
        (up.connections, up.bytes_to_backend, up.bytes_to_client),
        (3, 300, 6000)
    );
    assert_eq!(up.state_name(), "up");
    let down = &service.backends[1];
    assert_eq!((down.state_name(), down.connect_failures), ("down", 1));
    assert_eq!(
        snapshot.instances[0].state.as_ref().map(|s| s.role),
        Some(VipRole::Master)
    );
}

#[test]
fn admin_socket_answers_unknown_requests_with_an_error() {
    let running = start(StatsRegistry::new());
    let reply = socket::request(&running.socket(), "reboot", TIMEOUT).expect("a reply");
    assert!(
        reply.contains("\"error\""),
        "expected an error object, got {reply:?}"
    );
    let pong = socket::request(&running.socket(), "ping", TIMEOUT).expect("a reply");
    assert_eq!(pong.trim(), "\"pong\"");
}

#[test]
fn admin_socket_is_readable_by_its_owner_only() {
    let running = start(StatsRegistry::new());
    let mode = std::fs::metadata(running.socket())
        .expect("socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode is {:o}", mode & 0o777);
}

#[test]
fn stale_socket_file_is_replaced_and_removed_on_shutdown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("admin.sock");
    // A socket file nobody listens on, as a crashed daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind stale socket"));
    assert!(path.exists(), "stale socket file is there");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let plan = AdminPlan {
        socket: path.clone(),
        http: None,
    };
    let server = runtime
        .block_on(admin::serve(plan, StatsRegistry::new(), Readiness::new()))
        .expect("a stale socket does not stop the admin endpoint");
    socket::request(&path, "ping", TIMEOUT).expect("the new socket answers");
    {
        let _guard = runtime.enter();
        server.shutdown();
    }
    assert!(!path.exists(), "socket file removed on shutdown");
}

#[test]
fn a_second_daemon_on_a_live_socket_is_refused() {
    let running = start(StatsRegistry::new());
    let plan = AdminPlan {
        socket: running.socket(),
        http: None,
    };
    let second =
        running
            .runtime
            .block_on(admin::serve(plan, StatsRegistry::new(), Readiness::new()));
    assert!(
        matches!(second, Err(AdminError::InUse { .. })),
        "expected InUse, got {second:?}"
    );
    let meta = std::fs::metadata(running.socket()).expect("first socket still there");
    assert!(meta.file_type().is_socket());
}

#[test]
fn a_regular_file_at_the_socket_path_is_not_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("admin.sock");
    std::fs::write(&path, "precious").expect("write file");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let plan = AdminPlan {
        socket: path.clone(),
        http: None,
    };
    let result = runtime.block_on(admin::serve(plan, StatsRegistry::new(), Readiness::new()));
    assert!(result.is_err(), "serving over a regular file must fail");
    assert_eq!(
        std::fs::read_to_string(&path).ok().as_deref(),
        Some("precious")
    );
}

#[test]
fn healthz_is_ok_and_readyz_follows_readiness() {
    let running = start(StatsRegistry::new());
    assert_eq!(get(running.http(), "/healthz").0, 200);
    assert_eq!(
        get(running.http(), "/readyz").0,
        503,
        "not ready before set_ready"
    );
    running.readiness.set_ready(true);
    assert_eq!(
        get(running.http(), "/readyz").0,
        200,
        "ready after set_ready"
    );
    assert_eq!(get(running.http(), "/nope").0, 404);
}

fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus)");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let output = child.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

#[test]
fn metrics_pass_promtool_check() {
    let running = start(populated_registry());
    let (status, body) = get(running.http(), "/metrics");
    assert_eq!(status, 200);
    let (ok, said) = promtool_check(&body);
    assert!(
        ok,
        "promtool check metrics failed:\n{said}\n--- metrics ---\n{body}"
    );
}

#[test]
fn metrics_report_the_recorded_counts_with_labels() {
    let running = start(populated_registry());
    let (_, body) = get(running.http(), "/metrics");
    let labels = r#"vip="192.0.2.1",port="80",backend="198.51.100.7:80""#;
    for line in [
        r#"alive_proxy_service_connections_total{vip="192.0.2.1",port="80"} 3"#.to_owned(),
        format!("alive_proxy_backend_connections_total{{{labels}}} 3"),
        format!("alive_proxy_backend_incoming_bytes_total{{{labels}}} 300"),
        format!("alive_proxy_backend_outgoing_bytes_total{{{labels}}} 6000"),
        format!("alive_proxy_backend_connect_duration_seconds_count{{{labels}}} 3"),
        format!(r#"alive_proxy_backend_connect_duration_seconds_bucket{{{labels},le="0.0001"}} 3"#),
        format!(r#"alive_proxy_backend_connect_duration_seconds_bucket{{{labels},le="+Inf"}} 3"#),
        format!("alive_proxy_backend_up{{{labels}}} 1"),
        r#"alive_proxy_vip_master{instance="test-0",vip="192.0.2.1"} 1"#.to_owned(),
        r#"alive_proxy_vip_role{instance="test-0",vip="192.0.2.1",role="MASTER"} 1"#.to_owned(),
        r#"alive_proxy_vip_role{instance="test-0",vip="192.0.2.1",role="FAULT"} 0"#.to_owned(),
        r#"alive_proxy_vrrp_priority{instance="test-0",vip="192.0.2.1",vrid="51"} 50"#.to_owned(),
        r#"alive_proxy_vrrp_adverts_sent_total{instance="test-0",vip="192.0.2.1",vrid="51"} 42"#
            .to_owned(),
        r#"alive_proxy_vrrp_adverts_received_total{instance="test-0",vip="192.0.2.1",vrid="51"} 7"#
            .to_owned(),
        r#"alive_proxy_vrrp_adverts_dropped_total{instance="test-0",vip="192.0.2.1",vrid="51",reason="checksum"} 3"#
            .to_owned(),
        r#"alive_proxy_vrrp_adverts_dropped_total{instance="test-0",vip="192.0.2.1",vrid="51",reason="ttl"} 0"#
            .to_owned(),
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing line {line}\n--- metrics ---\n{body}"
        );
    }
}

#[test]
fn socket_directory_is_created() {
    let running = start(StatsRegistry::new());
    let dir: &Path = running
        .server()
        .socket_path()
        .parent()
        .expect("has a parent");
    assert!(dir.is_dir(), "{} was created", dir.display());
}

#[test]
fn a_busy_http_port_fails_startup_and_leaves_no_socket_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let plan = AdminPlan {
        socket: dir.path().join("admin.sock"),
        http: Some(taken.local_addr().expect("bound address")),
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(admin::serve(
        plan.clone(),
        StatsRegistry::new(),
        Readiness::new(),
    ));
    assert!(
        matches!(result, Err(AdminError::Http { .. })),
        "expected an HTTP bind error, got {result:?}"
    );
    assert!(!plan.socket.exists(), "socket file left behind");
}
