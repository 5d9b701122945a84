//! `alive-proxy stats` as operators run it: against a live admin socket, and without one.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use alive_proxy::config::{AdminPlan, BackendKey};
use alive_proxy::stats::admin::{self, AdminServer};
use alive_proxy::stats::{Readiness, StatsRegistry, StatsSnapshot};

fn alive_proxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alive-proxy"))
        .args(args)
        .env_remove("ALIVE_PROXY_ADMIN_SOCKET")
        .output()
        .expect("run alive-proxy")
}

#[test]
fn stats_without_a_daemon_exits_nonzero_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("nobody-here.sock");
    let socket = socket.to_str().expect("utf-8 temp path");
    let output = alive_proxy(&["stats", "--socket", socket]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "exit status was {}",
        output.status
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "want exactly one line of explanation, got:\n{stderr}"
    );
    assert!(
        stderr.contains(socket) && stderr.contains("no alive-proxy daemon"),
        "the line should name the socket and say no daemon runs: {stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing on stdout");
}

/// An admin endpoint on a private runtime, with 5 connections recorded.
struct Daemon {
    runtime: tokio::runtime::Runtime,
    server: Option<AdminServer>,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _guard = self.runtime.enter();
        self.server.take();
    }
}

impl Daemon {
    fn socket(&self) -> String {
        self.server
            .as_ref()
            .and_then(|s| s.socket_path().to_str())
            .expect("utf-8 socket path")
            .to_owned()
    }
}

fn key() -> BackendKey {
    BackendKey {
        service: "192.0.2.1:80".parse().expect("literal"),
        backend: "198.51.100.7:80".parse().expect("literal"),
    }
}

fn daemon() -> Daemon {
    let registry = StatsRegistry::new();
    let worker = registry.worker(0);
    let service = worker.service(key().service);
    let backend = worker.backend(key());
    for _ in 0..5 {
        service.accepted();
        backend.connect_ok(Duration::from_micros(120));
        backend.session_opened();
        backend.bytes_to_backend(10);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let plan = AdminPlan {
        socket: dir.path().join("admin.sock"),
        http: None::<SocketAddr>,
    };
    let server = runtime
        .block_on(admin::serve(plan, Arc::clone(&registry), Readiness::new()))
        .expect("admin endpoint starts");
    Daemon {
        runtime,
        server: Some(server),
        _dir: dir,
    }
}

#[test]
fn stats_json_prints_the_daemon_snapshot() {
    let daemon = daemon();
    let output = alive_proxy(&["stats", "--socket", &daemon.socket(), "--json"]);
    assert!(
        output.status.success(),
        "stats --json failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let snapshot: StatsSnapshot =
        serde_json::from_slice(&output.stdout).expect("stdout is a JSON snapshot");
    let service = &snapshot.services[0];
    assert_eq!((service.accepted, service.active), (5, 5));
    assert_eq!(service.backends[0].bytes_to_backend, 50);
}

#[test]
fn stats_table_lists_each_service_and_backend() {
    let daemon = daemon();
    let output = alive_proxy(&["stats", "--socket", &daemon.socket()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stats failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let service_line = stdout
        .lines()
        .find(|l| l.starts_with("TCP  192.0.2.1:80"))
        .unwrap_or_else(|| panic!("no service line in:\n{stdout}"));
    assert_eq!(
        service_line.split_whitespace().nth(3),
        Some("5"),
        "accepted column in {service_line:?}"
    );
    let backend_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("-> 198.51.100.7:80"))
        .unwrap_or_else(|| panic!("no backend line in:\n{stdout}"));
    let columns: Vec<&str> = backend_line.split_whitespace().collect();
    assert_eq!(
        columns.get(2),
        Some(&"Proxy"),
        "forward column in {backend_line:?}"
    );
    assert_eq!(
        columns.get(4),
        Some(&"5"),
        "ActiveConn column in {backend_line:?}"
    );
}

#[test]
fn stats_watch_rejects_a_zero_interval() {
    let daemon = daemon();
    let output = alive_proxy(&["stats", "--socket", &daemon.socket(), "--watch", "0"]);
    assert!(!output.status.success(), "--watch 0 must be refused");
}

#[test]
fn stats_watch_json_prints_one_snapshot_per_interval() {
    let daemon = daemon();
    let mut command = Command::new(env!("CARGO_BIN_EXE_alive-proxy"));
    command
        .args([
            "stats",
            "--socket",
            &daemon.socket(),
            "--json",
            "--watch",
            "0.1",
        ])
        .env_remove("ALIVE_PROXY_ADMIN_SOCKET");
    let watcher = support::process::spawn_logged("stats-watch", command);
    let three_lines = || watcher.log().lines().count() >= 3;
    assert!(
        support::wait::until(Duration::from_secs(10), three_lines),
        "--watch 0.1 --json did not print 3 snapshots; output:\n{}",
        watcher.log()
    );
    for line in watcher.log().lines().take(3) {
        let snapshot: StatsSnapshot = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON snapshot ({e}): {line}"));
        assert_eq!(snapshot.services[0].accepted, 5);
    }
}
