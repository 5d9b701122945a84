//! Splice pipes and io_uring kernel workers stay bounded. (Issue 10, item 5: the pipe pool
//! never shrank, so after one burst of large transfers at `ulimit -n 256` concurrent
//! sessions fell from 118 to 42; and each stalled splice took its own io_uring kernel worker,
//! 489 threads with 500 slow readers.)
//!
//! `alive-proxy run` as a process with `--splice-after 1`, so every direction that moves a
//! byte asks for a pipe pair; its descriptors and threads are read from /proc.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use alive_proxy::dataplane::DriverChoice;
use support::dataplane::spawn_backend;
use support::ports::free_tcp_port;
use support::process::{ChildGuard, spawn_logged};
use support::wait;

/// Pipe pairs a worker keeps idle for reuse (`dataplane::pipes::IDLE_KEEP`).
const IDLE_KEEP: usize = alive_proxy::dataplane::pipes::IDLE_KEEP;

fn driver_flag(driver: DriverChoice) -> &'static str {
    match driver {
        DriverChoice::IoUring => "io-uring",
        DriverChoice::Legacy => "legacy",
        DriverChoice::Auto => "auto",
    }
}

struct Lab {
    _dir: tempfile::TempDir,
    _backend: ChildGuard,
    proxy: ChildGuard,
    vip: SocketAddr,
}

/// One worker, splicing from the first byte, in front of an echo backend.
fn lab(driver: DriverChoice) -> Lab {
    let port = free_tcp_port();
    let backend: SocketAddr = format!("127.0.0.2:{port}").parse().expect("backend");
    let backend = spawn_backend("echo", backend, "echo");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("alive.yaml");
    std::fs::write(
        &config,
        format!(
            "admin:\n  socket: \"{}\"\n  http: off\ninstances:\n  - vip:\n      vip: 127.0.0.1\n      interface: \"lo\"\n      name: \"local\"\n    ipvs:\n      ips: [ \"127.0.0.2\" ]\n      ports:\n        - port: {port}\n",
            dir.path().join("admin.sock").display()
        ),
    )
    .expect("write config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_alive-proxy"));
    command.args(["run", "--config"]).arg(&config).args([
        "--workers",
        "1",
        "--splice-after",
        "1",
        "--driver",
        driver_flag(driver),
    ]);
    let proxy = spawn_logged("alive-proxy", command);
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().expect("vip");
    assert!(
        wait::tcp_listening(vip, Duration::from_secs(15)),
        "alive-proxy did not listen; log:\n{}",
        proxy.log()
    );
    Lab {
        _dir: dir,
        _backend: backend,
        proxy,
        vip,
    }
}

fn pipe_fds(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("pipe:"))
        })
        .count()
}

fn kernel_workers(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("iou-wrk"))
        })
        .count()
}

/// Opens a session and moves `bytes` through it both ways (echo).
fn session_with_traffic(vip: SocketAddr, bytes: usize) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&vip, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let chunk = vec![0x5au8; 64 * 1024];
    let mut back = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < bytes {
        let n = chunk.len().min(bytes - sent);
        stream
            .write_all(&chunk[..n])
            .expect("write through the proxy");
        stream
            .read_exact(&mut back[..n])
            .expect("echo through the proxy");
        sent += n;
    }
    stream
}

fn pipes_return_to_a_few_after_a_bulk_burst(driver: DriverChoice) {
    let lab = lab(driver);
    let pid = lab.proxy.pid();
    let before = pipe_fds(pid);
    // 40 sessions at once, 1 MB each way: 80 directions want a pipe pair.
    let burst: Vec<TcpStream> = (0..40)
        .map(|_| session_with_traffic(lab.vip, 1024 * 1024))
        .collect();
    let during = pipe_fds(pid);
    drop(burst);
    let settled = wait::until(Duration::from_secs(10), || {
        pipe_fds(pid) <= before + 2 * IDLE_KEEP
    });
    let after_burst = pipe_fds(pid);
    assert!(
        during > before + 2 * IDLE_KEEP,
        "the burst did not splice ({before} pipe fds before, {during} during); log:\n{}",
        lab.proxy.log()
    );
    assert!(
        settled,
        "{after_burst} pipe fds stayed after the burst ({before} before, {during} during)"
    );
    let emptied = wait::until(Duration::from_secs(30), || pipe_fds(pid) <= before);
    assert!(
        emptied,
        "idle pipes were never closed: {} pipe fds ({before} before the burst)",
        pipe_fds(pid)
    );
    println!(
        "{driver:?}: pipe fds {before} before, {during} during, {after_burst} right after, {} later",
        pipe_fds(pid)
    );
    // The pool still lends after shrinking.
    drop(session_with_traffic(lab.vip, 256 * 1024));
}
on_both_drivers!(pipes_return_to_a_few_after_a_bulk_burst);

#[test]
fn idle_spliced_sessions_hold_a_bounded_number_of_io_uring_kernel_workers() {
    let lab = lab(DriverChoice::IoUring);
    let pid = lab.proxy.pid();
    // Every spliced direction waits in a splice that does not complete while it is idle.
    let sessions: Vec<TcpStream> = (0..150)
        .map(|_| session_with_traffic(lab.vip, 16))
        .collect();
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        peak = peak.max(kernel_workers(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    // 64 pipe pairs per worker and 8 spare (dataplane::driver::cap_kernel_workers).
    let cap = alive_proxy::daemon::fd_limit::PIPE_PAIRS_PER_WORKER_MAX + 8;
    println!("io_uring kernel workers with 300 idle directions: {peak} (cap {cap})");
    assert!(
        peak <= cap,
        "{peak} io_uring kernel workers for one worker (cap {cap})"
    );
    // Every session still works: the ones splicing and the ones copying.
    for (i, mut stream) in sessions.into_iter().enumerate() {
        stream.write_all(b"ping").expect("write");
        let mut back = [0u8; 4];
        stream
            .read_exact(&mut back)
            .unwrap_or_else(|e| panic!("session {i} after the idle period: {e}"));
        assert_eq!(&back, b"ping");
    }
}
