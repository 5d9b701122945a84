//! `alive_proxy::app::serve` as a library call, driven by the test: listeners bound by the
//! test (port 0, no free-port race), reloads through a channel, the stop as a future.
//! Loopback only; backends are `alive-backend` processes.
//!
//! Run: `cargo test --test app_serve`

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alive_proxy::app::{ServeOptions, serve};
use alive_proxy::stats::socket::request_snapshot;
use support::dataplane::spawn_backend;
use support::wait;
use tokio::sync::{mpsc, oneshot};

/// A config with one loopback VIP instance and one service per `port`, all to `backend`.
fn write_config(dir: &Path, ports: &[u16], backend: SocketAddr) -> PathBuf {
    let mut text = format!(
        "admin:\n  socket: \"{}\"\n  http: \"off\"\ninstances:\n  - vip:\n      vip: 127.0.0.1\n      interface: \"lo\"\n      name: \"local\"\n    ipvs:\n      ips: [ \"{}\" ]\n      ports:\n",
        dir.join("admin.sock").display(),
        backend.ip()
    );
    for port in ports {
        text.push_str(&format!(
            "        - port: {port}\n          virtual_server_config: |\n            lb_algo rr\n            lb_kind NAT\n            protocol TCP\n"
        ));
    }
    let path = dir.join("alive.yaml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// `serve` on its own runtime thread, with its reload channel and stop trigger.
struct Served {
    reloads: mpsc::UnboundedSender<()>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Served {
    fn start(options: ServeOptions) -> Served {
        let (reloads, reload_rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(serve(options, reload_rx, async {
                    let _ = stopped.await;
                }))
                .map_err(|e| e.to_string())
        });
        Served {
            reloads,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops `serve` and waits for it to return; how long that took.
    fn stop(&mut self) -> (Duration, Result<(), String>) {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err("serve panicked".into()),
            None => Err("already stopped".into()),
        };
        (started.elapsed(), result)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

/// Binds 127.0.0.1:0 the way the data plane would (SO_REUSEPORT, so its workers can share
/// it), returning the listener and its port.
fn prebind() -> (TcpListener, u16) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.set_reuse_port(true).expect("SO_REUSEPORT");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    socket.bind(&addr.into()).expect("bind 127.0.0.1:0");
    socket.listen(1024).expect("listen");
    let listener: TcpListener = socket.into();
    let port = listener.local_addr().expect("local_addr").port();
    (listener, port)
}

fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// The backend for a VIP on `port`: alive-backend on 127.0.0.2 with the same port (the
/// seed's virtual server port equals the real server port).
fn backend(port: u16) -> (support::process::ChildGuard, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.2:{port}").parse().expect("literal");
    (spawn_backend("alb", addr, "http"), addr)
}

fn options(config: PathBuf, listener: TcpListener, drain: Duration) -> ServeOptions {
    let mut options = ServeOptions::new(config);
    options.dataplane.workers = 1;
    options.drain_timeout = drain;
    options.watch_interval = Duration::ZERO;
    options.prebound.add(listener).expect("prebound listener");
    options
}

#[test]
fn reload_whose_listener_cannot_bind_keeps_the_old_config_serving_and_counts_a_failure() {
    let dir = tempfile::tempdir().expect("dir");
    let (listener, port) = prebind();
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().expect("literal");
    let (_backend, backend) = backend(port);
    let config = write_config(dir.path(), &[port], backend);
    let mut served = Served::start(options(config, listener, Duration::from_secs(1)));
    assert!(wait::until(Duration::from_secs(10), || get(vip).is_ok()));

    // Someone else holds the new port, without SO_REUSEPORT: the reload cannot bind it.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to hold");
    let taken_port = taken.local_addr().expect("addr").port();
    write_config(dir.path(), &[port, taken_port], backend);
    served.reloads.send(()).expect("serve is running");
    let socket = dir.path().join("admin.sock");
    let counted = wait::until(Duration::from_secs(10), || {
        request_snapshot(&socket, Duration::from_secs(1)).is_ok_and(|s| s.reloads.failure == 1)
    });
    let snapshot = request_snapshot(&socket, Duration::from_secs(1)).expect("stats answer");
    assert!(
        counted,
        "the failed reload was not counted: {:?}",
        snapshot.reloads
    );
    assert_eq!(snapshot.reloads.success, 0, "{:?}", snapshot.reloads);
    let ports: Vec<u16> = snapshot.services.iter().map(|s| s.port).collect();
    assert_eq!(ports, vec![port], "the plan in force changed: {ports:?}");
    assert!(
        get(vip).is_ok_and(|a| a.contains("backend alb")),
        "the old service stopped serving after the failed reload"
    );
    let (_, result) = served.stop();
    assert_eq!(result, Ok(()));
}

#[test]
fn drain_deadline_resets_a_session_that_outlives_it_and_serve_returns() {
    let dir = tempfile::tempdir().expect("dir");
    let (listener, port) = prebind();
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().expect("literal");
    let (_backend, backend) = backend(port);
    let config = write_config(dir.path(), &[port], backend);
    let mut served = Served::start(options(config, listener, Duration::from_millis(800)));
    assert!(wait::until(Duration::from_secs(10), || get(vip).is_ok()));

    // A keep-alive session that never ends by itself.
    let stream = TcpStream::connect(vip).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    writer
        .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
        .expect("request");
    let mut status = String::new();
    reader.read_line(&mut status).expect("response");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    let (took, result) = served.stop();
    assert_eq!(result, Ok(()));
    assert!(
        took >= Duration::from_millis(800),
        "serve returned after {took:?}, before the drain deadline"
    );
    // The session was ended by the proxy: reading reaches EOF or a reset, not a timeout.
    let mut rest = Vec::new();
    let ended = reader.read_to_end(&mut rest);
    assert!(
        match &ended {
            Ok(_) => true,
            Err(e) =>
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
        },
        "the session outlived the drain deadline: {ended:?}"
    );
    assert!(
        TcpStream::connect_timeout(&vip, Duration::from_millis(500)).is_err(),
        "still accepting after the stop"
    );
}
