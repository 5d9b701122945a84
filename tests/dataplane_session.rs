//! Session behaviour over real loopback sockets on both drivers: resets propagated as
//! resets, the idle timeout, transparent source addresses, and the stats a session records.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use alive_proxy::dataplane::DriverChoice;
use support::dataplane::{http_get, loopback, plan, read_retrying, service, spawn_backend, start};
use support::ports::free_tcp_port;

fn reset_on_drop(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

fn backend_reset_reaches_the_client_as_reset(driver: DriverChoice) {
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind test backend");
    let backend_addr = backend.local_addr().expect("backend addr");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = backend.accept().expect("backend accept");
        let mut buf = [0u8; 5];
        stream
            .read_exact(&mut buf)
            .expect("backend reads the request");
        reset_on_drop(&stream);
    });
    let vip = loopback(false, free_tcp_port());
    let _dp = start(&plan(vec![service(vip, &[backend_addr])]), driver);
    let mut client = TcpStream::connect_timeout(&vip, Duration::from_secs(5)).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    client.write_all(b"hello").expect("send");
    server.join().expect("backend thread");
    let mut buf = [0u8; 16];
    match read_retrying(&mut client, &mut buf) {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::ConnectionReset,
            "expected a reset, got {e}"
        ),
        Ok(n) => panic!("the backend's RST reached the client as {n} bytes / EOF, not as a reset"),
    }
}
on_both_drivers!(backend_reset_reaches_the_client_as_reset);

fn client_reset_reaches_the_backend_as_reset(driver: DriverChoice) {
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind test backend");
    let backend_addr = backend.local_addr().expect("backend addr");
    let server = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut stream, _) = backend.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf)?;
        read_retrying(&mut stream, &mut [0u8; 16])
    });
    let vip = loopback(false, free_tcp_port());
    let _dp = start(&plan(vec![service(vip, &[backend_addr])]), driver);
    let mut client = TcpStream::connect_timeout(&vip, Duration::from_secs(5)).expect("connect");
    client.write_all(b"hello").expect("send");
    std::thread::sleep(Duration::from_millis(200));
    reset_on_drop(&client);
    drop(client);
    match server.join().expect("backend thread") {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::ConnectionReset,
            "expected a reset at the backend, got {e}"
        ),
        Ok(n) => panic!("the client's RST reached the backend as {n} bytes / EOF, not as a reset"),
    }
}
on_both_drivers!(client_reset_reaches_the_backend_as_reset);

fn idle_session_is_closed_after_idle_timeout(driver: DriverChoice) {
    let backend = loopback(false, free_tcp_port());
    let _echo = spawn_backend("echo", backend, "echo");
    let vip = loopback(false, free_tcp_port());
    let mut svc = service(vip, &[backend]);
    svc.idle_timeout = Duration::from_secs(1);
    let _dp = start(&plan(vec![svc]), driver);
    let mut client = TcpStream::connect_timeout(&vip, Duration::from_secs(5)).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    client.write_all(b"ping").expect("send");
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).expect("echo through the proxy");
    let quiet_since = Instant::now();
    let ended = read_retrying(&mut client, &mut buf);
    let waited = quiet_since.elapsed();
    assert!(
        matches!(&ended, Err(e) if e.kind() == ErrorKind::ConnectionReset)
            || matches!(ended, Ok(0)),
        "an idle session was not closed: {ended:?}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the 1 s idle timeout"
    );
}
on_both_drivers!(idle_session_is_closed_after_idle_timeout);

/// Issue 10, item 7: the client has sent its request and its FIN, the backend never answers
/// nor closes. The session ends at `server_fin_timeout`, not at the 900 s idle timeout.
fn half_closed_session_ends_at_its_server_fin_timeout(driver: DriverChoice) {
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind test backend");
    let backend_addr = backend.local_addr().expect("backend addr");
    // Reads the request to its end (the FIN is passed on), then holds the connection open
    // without a word until the test is done.
    let (done, hold) = std::sync::mpsc::channel::<()>();
    let silent = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut stream, _) = backend.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut request = Vec::new();
        stream.read_to_end(&mut request)?;
        let _ = hold.recv_timeout(Duration::from_secs(60));
        Ok(request)
    });
    let vip = loopback(false, free_tcp_port());
    let mut svc = service(vip, &[backend_addr]);
    svc.idle_timeout = Duration::from_secs(900);
    svc.server_fin_timeout = Duration::from_secs(1);
    let dp = start(&plan(vec![svc]), driver);
    let mut client = TcpStream::connect_timeout(&vip, Duration::from_secs(5)).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    client.write_all(b"request").expect("send");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let half_closed_at = Instant::now();
    let ended = read_retrying(&mut client, &mut [0u8; 16]);
    let waited = half_closed_at.elapsed();
    let _ = done.send(());
    assert!(
        matches!(&ended, Err(e) if e.kind() == ErrorKind::ConnectionReset)
            || matches!(ended, Ok(0)),
        "the half-closed session was not closed: {ended:?}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the 1 s server_fin_timeout"
    );
    let request = silent.join().expect("backend thread").expect("backend I/O");
    assert_eq!(
        request, b"request",
        "the backend got the request and its FIN"
    );
    let timed_out = dp
        .stats
        .events()
        .session_timeouts(alive_proxy::counters::events::SessionTimeout::ServerFin);
    assert_eq!(timed_out, 1, "counted as a server_fin timeout");
}
on_both_drivers!(half_closed_session_ends_at_its_server_fin_timeout);

fn transparent_mode_connects_from_the_client_address(driver: DriverChoice) {
    let backend = loopback(false, free_tcp_port());
    let _b = spawn_backend("b", backend, "http");
    let vip = loopback(false, free_tcp_port());
    let mut svc = service(vip, &[backend]);
    svc.transparent = true;
    let _dp = start(&plan(vec![svc]), driver);
    // A client on another loopback address, so "seen as the client" differs from "seen as
    // the proxy" (127.0.0.1).
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let client_ip: SocketAddr = "127.0.0.5:0".parse().expect("literal");
    socket
        .bind(&client_ip.into())
        .expect("bind client to 127.0.0.5");
    socket
        .connect_timeout(&vip.into(), Duration::from_secs(5))
        .expect("connect to the VIP");
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(
        body.starts_with("127.0.0.5:"),
        "the backend saw {body:?}, not the client address 127.0.0.5"
    );
}
on_both_drivers!(transparent_mode_connects_from_the_client_address);

fn sessions_are_counted_in_stats(driver: DriverChoice) {
    let backend = loopback(false, free_tcp_port());
    let _b = spawn_backend("b", backend, "http");
    let vip = loopback(false, free_tcp_port());
    let dp = start(&plan(vec![service(vip, &[backend])]), driver);
    for i in 0..10 {
        http_get(vip, "/").unwrap_or_else(|e| panic!("request {i}: {e}"));
    }
    let settled = support::wait::until(Duration::from_secs(5), || {
        let snapshot = dp.stats.snapshot();
        snapshot
            .services
            .iter()
            .any(|s| s.port == vip.port() && s.accepted == 10 && s.closed == 10)
    });
    let snapshot = dp.stats.snapshot();
    assert!(
        settled,
        "service counters did not reach 10 accepted / 10 closed: {:?}",
        snapshot.services
    );
    let service = snapshot
        .services
        .iter()
        .find(|s| s.port == vip.port())
        .expect("service in the snapshot");
    let b = service
        .backends
        .iter()
        .find(|b| b.addr == backend)
        .expect("backend in the snapshot");
    assert_eq!((b.opened, b.closed), (10, 10), "backend sessions");
    assert!(
        b.bytes_to_backend > 0 && b.bytes_to_client > 0,
        "bytes not counted: {b:?}"
    );
}
on_both_drivers!(sessions_are_counted_in_stats);
