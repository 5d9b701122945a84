//! Health verdicts applied by the data plane (`Routing` as `HealthSink`) and service limits,
//! over real loopback sockets on both drivers.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use alive_proxy::config::{BackendKey, OnBackendDown};
use alive_proxy::dataplane::DriverChoice;
use alive_proxy::health::{BackendStatus, HealthSink};
use support::dataplane::{backend_name, http_get, loopback, plan, service, spawn_backend, start};
use support::ports::free_tcp_port;

fn keepalive_get(reader: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed mid-response",
            ));
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn open(vip: SocketAddr) -> BufReader<TcpStream> {
    let stream =
        TcpStream::connect_timeout(&vip, Duration::from_secs(5)).expect("connect to the VIP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    BufReader::new(stream)
}

fn down_backend_sessions(driver: DriverChoice, mode: OnBackendDown) {
    let port_a = free_tcp_port();
    let port_b = free_tcp_port();
    let (a, b) = (loopback(false, port_a), loopback(false, port_b));
    let _ga = spawn_backend("a", a, "http");
    let _gb = spawn_backend("b", b, "http");
    let vip = loopback(false, free_tcp_port());
    let mut svc = service(vip, &[a, b]);
    svc.on_backend_down = mode;
    let dp = start(&plan(vec![svc]), driver);
    let mut session = open(vip);
    let first =
        backend_name(&keepalive_get(&mut session).expect("first request")).expect("named answer");
    let victim = if first == "a" { a } else { b };
    dp.get().routing().backend_changed(
        BackendKey {
            service: vip,
            backend: victim,
        },
        BackendStatus::Down,
    );
    for _ in 0..10 {
        let body = http_get(vip, "/").expect("new connections still served by the other backend");
        assert_ne!(
            backend_name(&body).as_deref(),
            Some(first.as_str()),
            "a down backend got a new connection"
        );
    }
    let after = keepalive_get(&mut session);
    match mode {
        OnBackendDown::Close => assert!(
            after.is_err(),
            "the session on the down backend survived: {after:?}"
        ),
        OnBackendDown::Drain => {
            let body = after.expect("drain mode keeps the session");
            assert_eq!(
                backend_name(&body),
                Some(first.clone()),
                "the drained session moved"
            );
        }
    }
    dp.get().routing().backend_changed(
        BackendKey {
            service: vip,
            backend: victim,
        },
        BackendStatus::Up { weight: 1 },
    );
    let names: std::collections::HashSet<String> = (0..6)
        .filter_map(|_| http_get(vip, "/").ok().and_then(|b| backend_name(&b)))
        .collect();
    assert!(
        names.contains(&first),
        "the backend did not come back after Up: {names:?}"
    );
}

fn down_backend_sessions_are_closed(driver: DriverChoice) {
    down_backend_sessions(driver, OnBackendDown::Close);
}
on_both_drivers!(down_backend_sessions_are_closed);

fn down_backend_sessions_drain_when_configured(driver: DriverChoice) {
    down_backend_sessions(driver, OnBackendDown::Drain);
}
on_both_drivers!(down_backend_sessions_drain_when_configured);

fn sorry_server_takes_new_connections_while_active(driver: DriverChoice) {
    let (a, sorry) = (
        loopback(false, free_tcp_port()),
        loopback(false, free_tcp_port()),
    );
    let _ga = spawn_backend("a", a, "http");
    let _gs = spawn_backend("sorry", sorry, "http");
    let vip = loopback(false, free_tcp_port());
    let mut svc = service(vip, &[a]);
    svc.sorry_server = Some(sorry);
    let dp = start(&plan(vec![svc]), driver);
    assert_eq!(
        backend_name(&http_get(vip, "/").expect("request")).as_deref(),
        Some("a")
    );
    dp.get().routing().sorry_active(vip, true);
    assert_eq!(
        backend_name(&http_get(vip, "/").expect("request")).as_deref(),
        Some("sorry")
    );
    dp.get().routing().sorry_active(vip, false);
    assert_eq!(
        backend_name(&http_get(vip, "/").expect("request")).as_deref(),
        Some("a")
    );
}
on_both_drivers!(sorry_server_takes_new_connections_while_active);

fn max_connections_refuses_with_a_reset(driver: DriverChoice) {
    let a = loopback(false, free_tcp_port());
    let _ga = spawn_backend("a", a, "http");
    let vip = loopback(false, free_tcp_port());
    let mut svc = service(vip, &[a]);
    svc.max_connections = 2;
    let _dp = start(&plan(vec![svc]), driver);
    let mut first = open(vip);
    let mut second = open(vip);
    keepalive_get(&mut first).expect("first session within the limit");
    keepalive_get(&mut second).expect("second session within the limit");
    // The reset can reach the client while connect() is still returning, or on its first
    // request: either way the third session is refused.
    let third_served = TcpStream::connect_timeout(&vip, Duration::from_secs(5))
        .and_then(|stream| {
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            keepalive_get(&mut BufReader::new(stream))
        })
        .is_ok();
    assert!(
        !third_served,
        "a third session beyond max_connections 2 was served"
    );
    drop(first);
    let served = support::wait::until(Duration::from_secs(5), || http_get(vip, "/").is_ok());
    assert!(served, "a slot freed by a closed session was not reused");
}
on_both_drivers!(max_connections_refuses_with_a_reset);
