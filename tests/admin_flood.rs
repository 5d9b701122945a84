//! The admin HTTP listener under a local flood: an unprivileged user holding 2000 connections
//! to it cannot take the descriptors the data plane needs. (Issue 10, item 4: 1100 held
//! connections from `nobody` drove a 1024-descriptor daemon to EMFILE and the data plane
//! lost requests.) The admin endpoint serves a bounded number at once; the rest wait in the
//! kernel's backlog, and `/metrics` counts the ones it closed for taking too long.
//!
//! The flood runs as `nobody` in a copy of this test binary (the `flood_client` helper below,
//! ignored in normal runs), holding its connections until its stdin closes.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::dataplane::{http_get, spawn_backend};
use support::ports::free_tcp_port;
use support::process::spawn_logged;
use support::wait;

const FLOOD: usize = 2000;
/// Sessions the data plane must serve during the flood (600 descriptors of 1024).
const SESSIONS: usize = 300;
const NOBODY: u32 = 65534;

const FLOOD_ADDR: &str = "ALIVE_TEST_FLOOD_ADDR";

/// Helper run as `nobody`: opens FLOOD non-blocking connections to the address in
/// `ALIVE_TEST_FLOOD_ADDR`, prints how many it opened, and holds them until stdin closes
/// (at most a minute).
#[test]
#[ignore = "helper process for admin_flood; does nothing without ALIVE_TEST_FLOOD_ADDR"]
fn flood_client() {
    let Ok(addr) = std::env::var(FLOOD_ADDR) else {
        return;
    };
    let addr: SocketAddr = addr.parse().expect("flood address");
    let mut held = Vec::new();
    for _ in 0..FLOOD {
        let Ok(socket) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        else {
            break;
        };
        socket.set_nonblocking(true).expect("non-blocking");
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(_) => break,
        }
        held.push(socket);
    }
    // SAFETY: getuid(2) cannot fail and touches no memory of ours.
    let uid = unsafe { libc::getuid() };
    println!("opened {} as uid {uid}", held.len());
    std::io::stdout().flush().expect("flush");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stdin = std::io::stdin();
    let mut byte = [0u8; 1];
    while Instant::now() < deadline && matches!(stdin.read(&mut byte), Ok(n) if n > 0) {}
    drop(held);
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Client sockets to `port` whose server side has closed (state CLOSE-WAIT).
fn closed_by_server(port: u16) -> usize {
    let filter = format!("( dport = :{port} )");
    Command::new("ss")
        .args(["-Htn", "state", "close-wait", &filter])
        .output()
        .map_or(0, |out| {
            String::from_utf8_lossy(&out.stdout).lines().count()
        })
}

#[test]
fn two_thousand_admin_connections_from_nobody_leave_the_data_plane_serving() {
    let port = free_tcp_port();
    let backend: SocketAddr = format!("127.0.0.2:{port}").parse().expect("backend");
    let _backend = spawn_backend("b", backend, "http");
    let dir = tempfile::tempdir().expect("tempdir");
    let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port())
        .parse()
        .expect("admin address");
    let config = dir.path().join("alive.yaml");
    std::fs::write(
        &config,
        format!(
            "admin:\n  socket: \"{}\"\n  http: \"{http}\"\ninstances:\n  - vip:\n      vip: 127.0.0.1\n      interface: \"lo\"\n      name: \"local\"\n    ipvs:\n      ips: [ \"127.0.0.2\" ]\n      ports:\n        - port: {port}\n",
            dir.path().join("admin.sock").display()
        ),
    )
    .expect("write config");
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().expect("vip");
    // 1024 descriptors, soft and hard, as in the issue.
    let script = format!(
        "ulimit -n 1024 && exec {} run --config {} --workers 1",
        env!("CARGO_BIN_EXE_alive-proxy"),
        config.display()
    );
    let mut command = Command::new("sh");
    command.args(["-c", &script]);
    let proxy = spawn_logged("alive-proxy", command);
    assert!(
        wait::tcp_listening(vip, Duration::from_secs(15))
            && wait::tcp_listening(http, Duration::from_secs(15)),
        "alive-proxy did not listen; log:\n{}",
        proxy.log()
    );

    // A copy of this binary nobody can execute, wherever the checkout lives.
    let exe_dir = tempfile::tempdir().expect("tempdir for the flood binary");
    std::fs::set_permissions(exe_dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let exe = exe_dir.path().join("flood");
    std::fs::copy(std::env::current_exe().expect("current exe"), &exe).expect("copy");
    let mut flood = Command::new(&exe)
        .args([
            "--exact",
            "flood_client",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(FLOOD_ADDR, http.to_string())
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the flood as nobody");
    let mut opened = String::new();
    let mut lines = BufReader::new(flood.stdout.take().expect("flood stdout"));
    while lines.read_line(&mut opened).is_ok_and(|n| n > 0) && !opened.contains("opened") {}
    let flood_guard = FloodGuard(flood);
    assert!(
        opened.contains(&format!("opened {FLOOD} as uid {NOBODY}")),
        "the flood did not open its connections: {opened:?}"
    );

    // The daemon takes what it will of the flood; wait until its descriptor count settles.
    let pid = proxy.pid();
    let mut last = open_fds(pid);
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && stable_since.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(100));
        let now = open_fds(pid);
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    println!("daemon descriptors under the flood: {last} of 1024");

    // The data plane: SESSIONS concurrent sessions, each answered.
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        let stream = TcpStream::connect_timeout(&vip, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("session {i}: connect: {e}; log:\n{}", proxy.log()));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        sessions.push(stream);
    }
    let mut failed = Vec::new();
    for (i, stream) in sessions.iter_mut().enumerate() {
        let mut answer = String::new();
        let ok = stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .and_then(|()| stream.read_to_string(&mut answer))
            .is_ok()
            && answer.starts_with("HTTP/1.1 200");
        if !ok {
            failed.push(i);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {SESSIONS} sessions failed during the admin flood (daemon at {last} descriptors); log:\n{}",
        failed.len(),
        proxy.log()
    );
    drop(sessions);
    // The daemon cuts flood connections that send nothing: their client side is left in
    // CLOSE-WAIT. Wait for one before the flood ends, so that /metrics has counted it.
    let cut = wait::until(Duration::from_secs(30), || {
        closed_by_server(http.port()) > 0
    });
    assert!(cut, "the daemon never closed an idle flood connection");
    drop(flood_guard);

    // Once the flood is gone, /metrics answers and counts what the admin endpoint cut off.
    let mut metrics = String::new();
    let answered = wait::until(Duration::from_secs(30), || {
        metrics = http_get(http, "/metrics").unwrap_or_default();
        metrics.lines().any(|l| {
            l.starts_with("alive_proxy_admin_connections_timed_out_total{endpoint=\"http\"}")
                && !l.ends_with(" 0")
        })
    });
    assert!(
        answered,
        "/metrics did not count the flood's timed-out admin connections:\n{metrics}"
    );
    support::metrics::promtool_check(&metrics);
}

/// Kills the flood's process group and reaps it, also when the test fails.
struct FloodGuard(std::process::Child);

impl Drop for FloodGuard {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        // SAFETY: kill(2) on the process group we started (process_group(0)).
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}
