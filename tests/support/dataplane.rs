//! Data-plane test helpers: plans built in code, backend stand-ins (`alive-backend`), an
//! in-process data plane per driver, and small blocking clients.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use alive_proxy::config::{
    AdminPlan, Backend, Instance, LockPlan, OnBackendDown, Plan, ProxyProtocol, Scheduler, Service,
};
use alive_proxy::dataplane::{Dataplane, DataplaneOptions, DriverChoice, PassiveEvent};
use alive_proxy::stats::StatsRegistry;

use super::process::{ChildGuard, spawn_logged};
use super::wait;

/// Generates one `#[test]` per driver for the function `$name(DriverChoice)`:
/// `mod $name { fn io_uring(); fn legacy(); }`.
#[macro_export]
macro_rules! on_both_drivers {
    ($name:ident) => {
        mod $name {
            #[test]
            fn io_uring() {
                super::$name(alive_proxy::dataplane::DriverChoice::IoUring);
            }
            #[test]
            fn legacy() {
                super::$name(alive_proxy::dataplane::DriverChoice::Legacy);
            }
        }
    };
}

pub fn backend_plan(addr: SocketAddr) -> Backend {
    Backend {
        addr,
        weight: 1,
        inhibit_on_failure: false,
        upper_threshold: 0,
        lower_threshold: 0,
        alpha: false,
        checks: Vec::new(),
    }
}

/// A round-robin service on `listen` with the given backends and test-friendly timeouts.
pub fn service(listen: SocketAddr, backends: &[SocketAddr]) -> Service {
    Service {
        vip: listen.ip(),
        port: listen.port(),
        scheduler: Scheduler::Rr,
        persistence: None,
        quorum: 1,
        hysteresis: 0,
        sorry_server: None,
        backends: backends.iter().copied().map(backend_plan).collect(),
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(900),
        client_fin_timeout: Duration::from_secs(120),
        server_fin_timeout: Duration::from_secs(120),
        proxy_protocol: ProxyProtocol::Off,
        transparent: false,
        max_connections: 0,
        on_backend_down: OnBackendDown::Close,
        connect_attempts: 3,
    }
}

pub fn plan(services: Vec<Service>) -> Plan {
    let instances = services
        .into_iter()
        .enumerate()
        .map(|(i, service)| Instance {
            name: format!("test-{i}"),
            vip: service.vip,
            id: None,
            interface: "lo".to_string(),
            check_interval: Duration::from_secs(1),
            check_timeout: Duration::from_secs(3),
            peers: Vec::new(),
            lock: LockPlan::None,
            failsafe: None,
            services: vec![service],
        })
        .collect();
    Plan {
        source: PathBuf::from("test.yaml"),
        instances,
        admin: AdminPlan {
            socket: PathBuf::from("/nonexistent/admin.sock"),
            http: None,
        },
        identity: None,
    }
}

/// A running in-process data plane and what a test inspects of it.
pub struct TestDataplane {
    pub dataplane: Option<Dataplane>,
    pub passive: tokio::sync::mpsc::UnboundedReceiver<PassiveEvent>,
    pub stats: Arc<StatsRegistry>,
}

impl TestDataplane {
    pub fn get(&self) -> &Dataplane {
        self.dataplane.as_ref().expect("data plane running")
    }
}

impl Drop for TestDataplane {
    fn drop(&mut self) {
        if let Some(dataplane) = self.dataplane.take() {
            dataplane.shutdown(Duration::ZERO);
        }
    }
}

pub fn start(plan: &Plan, driver: DriverChoice) -> TestDataplane {
    start_with(
        plan,
        DataplaneOptions {
            workers: 2,
            driver,
            ..DataplaneOptions::default()
        },
    )
}

pub fn start_with(plan: &Plan, options: DataplaneOptions) -> TestDataplane {
    let (tx, passive) = tokio::sync::mpsc::unbounded_channel();
    let stats = StatsRegistry::new();
    let dataplane = Dataplane::start(plan, options, stats.counters(), tx)
        .unwrap_or_else(|e| panic!("data plane did not start with {:?}: {e}", options.driver));
    TestDataplane {
        dataplane: Some(dataplane),
        passive,
        stats,
    }
}

pub fn alive_backend_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_alive-backend"))
}

/// Starts `alive-backend` on `listen` in `mode` (http, echo, sink) and waits until it accepts.
pub fn spawn_backend(name: &str, listen: SocketAddr, mode: &str) -> ChildGuard {
    let mut command = Command::new(alive_backend_path());
    command.args([
        "--listen",
        &listen.to_string(),
        "--name",
        name,
        "--mode",
        mode,
    ]);
    let guard = spawn_logged(name, command);
    assert!(
        wait::tcp_listening(listen, Duration::from_secs(10)),
        "backend {name} did not listen on {listen}; log:\n{}",
        guard.log()
    );
    guard
}

pub fn loopback(ip_v6: bool, port: u16) -> SocketAddr {
    let ip: IpAddr = if ip_v6 {
        "::1".parse().expect("literal")
    } else {
        "127.0.0.1".parse().expect("literal")
    };
    SocketAddr::new(ip, port)
}

/// One HTTP/1.0-style request on a new connection; returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(io::Error::other(format!(
            "unexpected response: {response:?}"
        ))),
    }
}

/// The backend name in an `alive-backend` http answer (`backend <name> <addr>`).
pub fn backend_name(body: &str) -> Option<String> {
    body.split_whitespace().nth(1).map(str::to_string)
}

/// Writes `data`, half-closes, and reads the whole answer.
pub fn send_then_read(addr: SocketAddr, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(data)?;
    stream.shutdown(Shutdown::Write)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}

/// `read` that retries EINTR. Test threads share a process with the data plane's io_uring
/// rings, and blocking syscalls here are occasionally interrupted (a real client would
/// retry too); `read_exact`/`read_to_end` already retry, a bare `read` does not.
pub fn read_retrying(stream: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
