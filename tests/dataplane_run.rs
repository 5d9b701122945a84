//! `alive-proxy run` as a process: serving from a YAML file, reload under load (SIGHUP and
//! file change), an invalid reload that keeps the old config, graceful drain on SIGTERM.
//! Backends are `alive-backend` on 127.0.0.2/3/4 with the VIP's port, as in the seed.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alive_proxy::dataplane::DriverChoice;
use support::dataplane::{backend_name, http_get, spawn_backend};
use support::ports::free_tcp_port;
use support::process::{ChildGuard, spawn_logged};
use support::wait;

/// Each daemon gets its own admin socket in `dir` (one daemon runs per socket) and no admin
/// HTTP.
fn admin(dir: &Path) -> String {
    format!(
        "admin:\n  socket: \"{}\"\n  http: off\n",
        dir.join("admin.sock").display()
    )
}

fn config_text(dir: &Path, port: u16, backends: &[&str], algo: &str) -> String {
    let ips = backends
        .iter()
        .map(|b| format!("\"{b}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{}instances:\n  - vip:\n      vip: 127.0.0.1\n      interface: \"lo\"\n      name: \"local\"\n    ipvs:\n      ips: [ {ips} ]\n      ports:\n        - port: {port}\n          virtual_server_config: |\n            lb_algo {algo}\n            lb_kind NAT\n            protocol TCP\n",
        admin(dir)
    )
}

fn driver_flag(driver: DriverChoice) -> &'static str {
    match driver {
        DriverChoice::IoUring => "io-uring",
        DriverChoice::Legacy => "legacy",
        DriverChoice::Auto => "auto",
    }
}

fn start_proxy(config: &Path, vip: SocketAddr, driver: DriverChoice) -> ChildGuard {
    let mut command = Command::new(env!("CARGO_BIN_EXE_alive-proxy"));
    command.args(["run", "--config"]).arg(config).args([
        "--workers",
        "2",
        "--driver",
        driver_flag(driver),
        "--drain-timeout",
        "5s",
        "--watch-interval",
        "200ms",
    ]);
    let proxy = spawn_logged("alive-proxy", command);
    assert!(
        wait::tcp_listening(vip, Duration::from_secs(15)),
        "alive-proxy did not listen on {vip}; log:\n{}",
        proxy.log()
    );
    proxy
}

/// One keep-alive request on an open connection; returns the body.
fn keepalive_get(reader: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")?;
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed mid-response",
            ));
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse::<usize>().ok();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length.unwrap_or(0)];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

struct Lab {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    vip: SocketAddr,
    _backends: Vec<ChildGuard>,
    proxy: ChildGuard,
}

fn lab(driver: DriverChoice, backends: &[&str]) -> Lab {
    let port = free_tcp_port();
    let guards = backends
        .iter()
        .map(|ip| {
            let addr: SocketAddr = format!("{ip}:{port}").parse().expect("backend address");
            spawn_backend(ip, addr, "http")
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("alive.yaml");
    std::fs::write(&config, config_text(dir.path(), port, &backends[..2], "rr"))
        .expect("write config");
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().expect("vip");
    let proxy = start_proxy(&config, vip, driver);
    Lab {
        _dir: dir,
        config,
        vip,
        _backends: guards,
        proxy,
    }
}

fn names_seen(vip: SocketAddr, connections: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..connections {
        let body =
            http_get(vip, "/").unwrap_or_else(|e| panic!("request through {vip} failed: {e}"));
        *seen
            .entry(backend_name(&body).unwrap_or_default())
            .or_default() += 1;
    }
    seen
}

fn reload_under_load_loses_no_established_connection(driver: DriverChoice) {
    let lab = lab(driver, &["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let stop = Arc::clone(&stop);
        let vip = lab.vip;
        clients.push(std::thread::spawn(move || -> Result<usize, String> {
            let stream = TcpStream::connect_timeout(&vip, Duration::from_secs(5))
                .map_err(|e| format!("client {c} connect: {e}"))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let mut reader = BufReader::new(stream);
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut done = 0;
            // Bounded in count and time; stops early when the reloads are over.
            while done < 200_000 && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                keepalive_get(&mut reader)
                    .map_err(|e| format!("client {c} request {done}: {e}"))?;
                done += 1;
            }
            Ok(done)
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let port = lab.vip.port();
    let dir = lab.config.parent().expect("the config's directory");
    // SIGHUP reloads and file-change reloads, alternating backend sets and schedulers.
    let variants = [
        config_text(dir, port, &["127.0.0.2", "127.0.0.3", "127.0.0.4"], "rr"),
        config_text(dir, port, &["127.0.0.3", "127.0.0.4"], "wlc"),
        config_text(dir, port, &["127.0.0.4"], "rr"),
        config_text(dir, port, &["127.0.0.2", "127.0.0.4"], "rr"),
    ];
    for (i, text) in variants.iter().enumerate() {
        std::fs::write(&lab.config, text).expect("rewrite config");
        if i % 2 == 0 {
            lab.proxy.signal(libc::SIGHUP);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let done = client
            .join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("{e}; proxy log:\n{}", lab.proxy.log()));
        assert!(done > 0, "a client made no request at all");
    }
    // The last variant was a file change: applied once the file has settled (a second).
    let expected: HashMap<String, usize> =
        [("127.0.0.2".to_string(), 10), ("127.0.0.4".to_string(), 10)].into();
    let mut seen = HashMap::new();
    let followed = wait::until(Duration::from_secs(15), || {
        seen = names_seen(lab.vip, 20);
        seen == expected
    });
    assert!(
        followed,
        "new connections should follow the last reload (backends .2 and .4), saw {seen:?}"
    );
}
on_both_drivers!(reload_under_load_loses_no_established_connection);

fn invalid_reload_keeps_serving_the_old_config(driver: DriverChoice) {
    let mut lab = lab(driver, &["127.0.0.2", "127.0.0.3"]);
    std::fs::write(
        &lab.config,
        "instances:\n  - vip:\n      vip: not-an-address\n",
    )
    .expect("write a broken config");
    lab.proxy.signal(libc::SIGHUP);
    let logged = wait::until(Duration::from_secs(10), || {
        lab.proxy.log().contains("reload rejected")
    });
    assert!(logged, "no rejection logged; log:\n{}", lab.proxy.log());
    assert!(
        lab.proxy.log().contains("alive.yaml:"),
        "the rejection should name file:line; log:\n{}",
        lab.proxy.log()
    );
    let seen = names_seen(lab.vip, 10);
    assert_eq!(
        seen.len(),
        2,
        "the old config (two backends) should still serve: {seen:?}"
    );
    assert!(
        !lab.proxy.has_exited(),
        "the proxy exited on an invalid reload"
    );
}
on_both_drivers!(invalid_reload_keeps_serving_the_old_config);

fn sigterm_drains_live_sessions_then_exits(driver: DriverChoice) {
    let mut lab = lab(driver, &["127.0.0.2", "127.0.0.3"]);
    let stream = TcpStream::connect_timeout(&lab.vip, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reader = BufReader::new(stream);
    keepalive_get(&mut reader).expect("first request before SIGTERM");
    lab.proxy.signal(libc::SIGTERM);
    let closed = wait::until(Duration::from_secs(5), || {
        TcpStream::connect_timeout(&lab.vip, Duration::from_millis(200)).is_err()
    });
    assert!(closed, "the listener still accepts after SIGTERM");
    keepalive_get(&mut reader).expect("an established session keeps working while draining");
    drop(reader);
    let status = lab.proxy.wait_exit(Duration::from_secs(10));
    assert!(
        matches!(status, Some(s) if s.success()),
        "expected a clean exit after the drain, got {status:?}; log:\n{}",
        lab.proxy.log()
    );
}
on_both_drivers!(sigterm_drains_live_sessions_then_exits);

fn proc_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    field(11) + field(12)
}

fn out_of_descriptors_pauses_accepting_then_recovers(driver: DriverChoice) {
    let port = free_tcp_port();
    let addr: SocketAddr = format!("127.0.0.2:{port}")
        .parse()
        .expect("backend address");
    let _backend = spawn_backend("b", addr, "http");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("alive.yaml");
    // Admin HTTP on, to read the exhaustion counters afterwards.
    let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port())
        .parse()
        .expect("admin address");
    let text = config_text(dir.path(), port, &["127.0.0.2"], "rr")
        .replace("http: off", &format!("http: \"{http}\""));
    std::fs::write(&config, text).expect("write config");
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().expect("vip");
    let binary = env!("CARGO_BIN_EXE_alive-proxy");
    let script = format!(
        "ulimit -n 64 && exec {binary} run --config {} --workers 1 --driver {} --drain-timeout 1s",
        config.display(),
        driver_flag(driver)
    );
    let mut command = Command::new("sh");
    command.args(["-c", &script]);
    let mut proxy = spawn_logged("alive-proxy", command);
    assert!(
        wait::tcp_listening(vip, Duration::from_secs(15)),
        "alive-proxy did not listen; log:\n{}",
        proxy.log()
    );
    // Far more sessions than 64 descriptors allow (two per session).
    let mut held = Vec::new();
    for _ in 0..60 {
        if let Ok(stream) = TcpStream::connect_timeout(&vip, Duration::from_secs(2)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream);
            let _ = reader
                .get_mut()
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
            held.push(reader);
        }
    }
    let logged = wait::until(Duration::from_secs(10), || {
        let log = proxy.log();
        log.contains("pausing new connections") || log.contains("out of local resources")
    });
    assert!(
        logged,
        "descriptor exhaustion was not logged; log:\n{}",
        proxy.log()
    );
    let before = proc_cpu_ticks(proxy.pid());
    std::thread::sleep(Duration::from_secs(2));
    let spent = proc_cpu_ticks(proxy.pid()) - before;
    // 100 ticks per second: a spinning accept loop would burn ~200 ticks here.
    assert!(
        spent < 100,
        "the proxy burned {spent} ticks in 2 s while out of descriptors (spinning?)"
    );
    assert!(
        !proxy.has_exited(),
        "the proxy died when it ran out of descriptors; log:\n{}",
        proxy.log()
    );
    drop(held);
    let recovered = wait::until(Duration::from_secs(10), || http_get(vip, "/").is_ok());
    assert!(
        recovered,
        "the proxy did not serve again after descriptors were freed; log:\n{}",
        proxy.log()
    );
    let mut metrics = String::new();
    let counted = wait::until(Duration::from_secs(10), || {
        metrics = http_get(http, "/metrics").unwrap_or_default();
        metrics.lines().any(|l| {
            l.starts_with(r#"alive_proxy_local_exhaustion_total{resource="process_fds""#)
                && !l.ends_with(" 0")
        })
    });
    assert!(
        counted,
        "/metrics does not count the EMFILE pauses:\n{metrics}"
    );
}
on_both_drivers!(out_of_descriptors_pauses_accepting_then_recovers);

/// A config with one VIP (127.0.0.1) and one `ports` entry per port, all to 127.0.0.2.
fn config_with_ports(dir: &Path, ports: &[u16]) -> (String, String) {
    let head = "instances:\n  - vip:\n      vip: 127.0.0.1\n      interface: \"lo\"\n      name: \"local\"\n    ipvs:\n      ips: [ \"127.0.0.2\" ]\n      ports:\n";
    let entries: Vec<String> = ports
        .iter()
        .map(|port| {
            format!("        - port: {port}\n          virtual_server_config: |\n            lb_algo rr\n")
        })
        .collect();
    (format!("{}{head}", admin(dir)), entries.concat())
}

/// Issue 10, item 1: a writer that truncates the file, writes the first port, and appends the
/// second one 50 ms later must never get the one-port prefix applied. Before, a change was
/// applied at the next poll, and the second port's listener came and went.
#[test]
fn a_half_written_config_is_never_applied() {
    let [kept, appended, added] = [free_tcp_port(), free_tcp_port(), free_tcp_port()];
    let _backends: Vec<ChildGuard> = [kept, appended, added]
        .iter()
        .map(|port| {
            let addr: SocketAddr = format!("127.0.0.2:{port}").parse().expect("backend");
            spawn_backend("b", addr, "http")
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("alive.yaml");
    let (head, entries) = config_with_ports(dir.path(), &[kept, appended]);
    let (_, first) = config_with_ports(dir.path(), &[kept]);
    let second = entries[first.len()..].to_owned();
    std::fs::write(&config, format!("{head}{entries}")).expect("write config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_alive-proxy"));
    command.args(["run", "--config"]).arg(&config).args([
        "--workers",
        "1",
        "--watch-interval",
        "100ms",
    ]);
    let proxy = spawn_logged("alive-proxy", command);
    let vip = |port: u16| -> SocketAddr { format!("127.0.0.1:{port}").parse().expect("vip") };
    assert!(
        wait::tcp_listening(vip(appended), Duration::from_secs(15)),
        "alive-proxy did not listen; log:\n{}",
        proxy.log()
    );

    // Connects to the appended port all along; bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = Arc::clone(&stop);
        let target = vip(appended);
        std::thread::spawn(move || {
            let (mut refused, mut tries) = (0, 0);
            let deadline = Instant::now() + Duration::from_secs(60);
            while tries < 100_000 && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                if let Err(e) = TcpStream::connect_timeout(&target, Duration::from_secs(1))
                    && e.kind() == std::io::ErrorKind::ConnectionRefused
                {
                    refused += 1;
                }
                tries += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (refused, tries)
        })
    };
    for _ in 0..10 {
        std::fs::write(&config, format!("{head}{first}")).expect("truncate and write");
        std::thread::sleep(Duration::from_millis(50));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&config)
            .expect("open to append");
        file.write_all(second.as_bytes()).expect("append");
        drop(file);
        std::thread::sleep(Duration::from_millis(400));
    }
    // A last change that adds a port proves the watcher still applies complete files.
    let (_, all) = config_with_ports(dir.path(), &[kept, appended, added]);
    std::fs::write(&config, format!("{head}{all}")).expect("write the final config");
    let applied = wait::tcp_listening(vip(added), Duration::from_secs(15));
    stop.store(true, Ordering::Relaxed);
    let (refused, tries) = prober.join().expect("prober");
    assert!(
        applied,
        "the complete file was never applied; log:\n{}",
        proxy.log()
    );
    assert_eq!(
        refused,
        0,
        "{refused} of {tries} connections to port {appended} were refused: a half-written file was applied; log:\n{}",
        proxy.log()
    );
}
