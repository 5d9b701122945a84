//! `alive-proxy run` as a process, read by `alive-proxy stats` and `/metrics`: after N client
//! connections, both report exactly N accepted on the VIP:port, the per-backend split the
//! clients saw, and the bytes each way; `/readyz` turns ready once the listeners are up.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use alive_proxy::stats::StatsSnapshot;
use support::dataplane::{backend_name, spawn_backend};
use support::ports::free_tcp_port;
use support::process::spawn_logged;
use support::wait;

const CONNECTIONS: u64 = 30;
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

fn config_text(port: u16, backends: &[&str], socket: &Path, http: SocketAddr) -> String {
    let ips = backends
        .iter()
        .map(|b| format!("\"{b}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "admin:\n  socket: \"{}\"\n  http: \"{http}\"\ninstances:\n  - vip:\n      vip: 127.0.0.1\n      interface: \"lo\"\n      name: \"local\"\n    ipvs:\n      ips: [ {ips} ]\n      ports:\n        - port: {port}\n          virtual_server_config: |\n            lb_algo rr\n            lb_kind NAT\n            protocol TCP\n",
        socket.display()
    )
}

/// (status, body) of a GET, or None if nothing answers.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn stats_json(socket: &Path) -> Result<StatsSnapshot, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_alive-proxy"))
        .args(["stats", "--json", "--socket"])
        .arg(socket)
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())
}

#[test]
fn stats_and_metrics_count_exactly_the_connections_through_run() {
    let port = free_tcp_port();
    let backend_ips = ["127.0.0.2", "127.0.0.3"];
    let _backends: Vec<_> = backend_ips
        .iter()
        .map(|ip| {
            let addr: SocketAddr = format!("{ip}:{port}").parse().expect("backend address");
            spawn_backend(ip, addr, "http")
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("run/admin.sock");
    let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port())
        .parse()
        .expect("admin address");
    let config = dir.path().join("alive.yaml");
    std::fs::write(&config, config_text(port, &backend_ips, &socket, http)).expect("write config");
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().expect("vip");

    let mut command = Command::new(env!("CARGO_BIN_EXE_alive-proxy"));
    command
        .args(["run", "--config"])
        .arg(&config)
        .args(["--workers", "2"]);
    let proxy = spawn_logged("alive-proxy", command);
    assert!(
        wait::tcp_listening(vip, Duration::from_secs(15)),
        "alive-proxy did not listen on {vip}; log:\n{}",
        proxy.log()
    );
    let ready = || get(http, "/readyz").is_some_and(|(status, _)| status == 200);
    assert!(
        wait::until(Duration::from_secs(10), ready),
        "/readyz on {http} never answered 200; log:\n{}",
        proxy.log()
    );
    // wait::tcp_listening's probes went through the proxy too: let them finish, count from here.
    let quiet = || {
        stats_json(&socket).is_ok_and(|s| {
            s.services
                .iter()
                .find(|s| s.addr() == vip)
                .is_some_and(|s| s.active == 0 && s.backends.iter().all(|b| b.active == 0))
        })
    };
    assert!(
        wait::until(Duration::from_secs(10), quiet),
        "probe sessions never closed; stats: {:?}\nlog:\n{}",
        stats_json(&socket),
        proxy.log()
    );
    let baseline = stats_json(&socket).expect("stats --json");
    let base = |addr: SocketAddr| {
        let service = baseline.services.iter().find(|s| s.addr() == vip);
        let backend = service.and_then(|s| s.backends.iter().find(|b| b.addr == addr));
        (
            service.map_or(0, |s| s.accepted),
            backend.map_or((0, 0, 0), |b| {
                (b.connections, b.bytes_to_backend, b.bytes_to_client)
            }),
        )
    };

    let mut seen: BTreeMap<SocketAddr, (u64, u64, u64)> = BTreeMap::new();
    for i in 0..CONNECTIONS {
        let mut stream = TcpStream::connect_timeout(&vip, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        stream.write_all(REQUEST).expect("send request");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("read response");
        let text = String::from_utf8_lossy(&response);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let name = backend_name(body).unwrap_or_else(|| panic!("no backend in {text:?}"));
        let addr: SocketAddr = format!("{name}:{port}")
            .parse()
            .expect("backend name is its ip");
        let entry = seen.entry(addr).or_default();
        entry.0 += 1;
        entry.1 += REQUEST.len() as u64;
        entry.2 += response.len() as u64;
    }

    let all_closed = || {
        stats_json(&socket).is_ok_and(|s| {
            s.services
                .iter()
                .find(|s| s.addr() == vip)
                .is_some_and(|s| s.active == 0 && s.accepted >= base(vip).0 + CONNECTIONS)
        })
    };
    assert!(
        wait::until(Duration::from_secs(10), all_closed),
        "sessions never all closed; stats: {:?}",
        stats_json(&socket)
    );
    let snapshot = stats_json(&socket).expect("stats --json");
    let service = snapshot
        .services
        .iter()
        .find(|s| s.addr() == vip)
        .expect("the VIP:port in stats");
    assert_eq!(service.accepted - base(vip).0, CONNECTIONS, "accepted");
    assert_eq!(service.scheduler.as_deref(), Some("rr"));
    for backend in &service.backends {
        let (c0, to0, from0) = base(backend.addr).1;
        let got = (
            backend.connections - c0,
            backend.bytes_to_backend - to0,
            backend.bytes_to_client - from0,
        );
        let want = seen.get(&backend.addr).copied().unwrap_or_default();
        assert_eq!(
            got, want,
            "backend {}: (connections, bytes to backend, bytes to client)",
            backend.addr
        );
    }

    let (status, metrics) = get(http, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    let line = format!(
        r#"alive_proxy_service_connections_total{{vip="127.0.0.1",port="{port}"}} {}"#,
        service.accepted
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "/metrics lacks {line}:\n{metrics}"
    );
}
