//! The data plane over real loopback sockets, on both monoio drivers: scheduling spread,
//! retries past dead backends, resets, half-close and byte-exact bulk transfer.

mod support;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use alive_proxy::dataplane::DriverChoice;
use support::dataplane::{
    backend_name, http_get, loopback, plan, read_retrying, send_then_read, service, spawn_backend,
    start,
};
use support::ports::{free_tcp_port, free_tcp_port_dual};

fn three_backends(v6: bool) -> (Vec<support::process::ChildGuard>, Vec<SocketAddr>) {
    let mut guards = Vec::new();
    let mut addrs = Vec::new();
    for name in ["b1", "b2", "b3"] {
        let addr = loopback(
            v6,
            if v6 {
                free_tcp_port_dual()
            } else {
                free_tcp_port()
            },
        );
        guards.push(spawn_backend(name, addr, "http"));
        addrs.push(addr);
    }
    (guards, addrs)
}

fn rr_spreads_evenly(driver: DriverChoice, v6: bool) {
    let (_backends, addrs) = three_backends(v6);
    let vip = loopback(
        v6,
        if v6 {
            free_tcp_port_dual()
        } else {
            free_tcp_port()
        },
    );
    let _dp = start(&plan(vec![service(vip, &addrs)]), driver);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..300 {
        let body = http_get(vip, "/")
            .unwrap_or_else(|e| panic!("connection {i} through {vip} failed: {e}"));
        let name = backend_name(&body).unwrap_or_else(|| panic!("no backend name in {body:?}"));
        *counts.entry(name).or_default() += 1;
    }
    for name in ["b1", "b2", "b3"] {
        assert_eq!(
            counts.get(name).copied(),
            Some(100),
            "rr over 3 backends, 300 connections: {counts:?}"
        );
    }
}

fn rr_spreads_300_connections_evenly_v4(driver: DriverChoice) {
    rr_spreads_evenly(driver, false);
}
on_both_drivers!(rr_spreads_300_connections_evenly_v4);

fn rr_spreads_300_connections_evenly_v6(driver: DriverChoice) {
    rr_spreads_evenly(driver, true);
}
on_both_drivers!(rr_spreads_300_connections_evenly_v6);

fn killed_backend_fails_no_client_connection(driver: DriverChoice) {
    let (mut backends, addrs) = three_backends(false);
    let vip = loopback(false, free_tcp_port());
    let mut dp = start(&plan(vec![service(vip, &addrs)]), driver);
    let mut failures = Vec::new();
    let mut served_after_kill: HashMap<String, usize> = HashMap::new();
    for i in 0..150 {
        if i == 30 {
            // Between two connections, so no session is in flight on it.
            backends[1].kill_group();
        }
        match http_get(vip, "/") {
            Ok(body) if i > 30 => {
                *served_after_kill
                    .entry(backend_name(&body).unwrap_or_default())
                    .or_default() += 1
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("connection {i}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "client connections failed after a backend died: {failures:?}"
    );
    assert!(
        !served_after_kill.contains_key("b2"),
        "the dead backend served: {served_after_kill:?}"
    );
    assert!(
        served_after_kill.len() == 2,
        "both survivors should serve: {served_after_kill:?}"
    );
    // Health hears about the dead backend from the data path at once.
    let event = dp
        .passive
        .try_recv()
        .expect("a passive failure event for the dead backend");
    assert_eq!(
        event.key.backend, addrs[1],
        "the passive event names the wrong backend"
    );
    assert_eq!(event.error, ErrorKind::ConnectionRefused);
}
on_both_drivers!(killed_backend_fails_no_client_connection);

fn all_backends_dead_resets_the_client_at_once(driver: DriverChoice) {
    // Ports nobody listens on: connects are refused.
    let addrs: Vec<SocketAddr> = (0..3).map(|_| loopback(false, free_tcp_port())).collect();
    let vip = loopback(false, free_tcp_port());
    let mut svc = service(vip, &addrs);
    svc.connect_timeout = Duration::from_secs(30);
    let _dp = start(&plan(vec![svc]), driver);
    let started = Instant::now();
    // The reset can reach the client while connect() is still returning, or on its first
    // read: either way it is refused at once.
    let result = TcpStream::connect_timeout(&vip, Duration::from_secs(5)).and_then(|mut stream| {
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let _ = stream.write_all(b"GET / HTTP/1.1\r\n\r\n");
        let mut buf = [0u8; 64];
        read_retrying(&mut stream, &mut buf)
    });
    let waited = started.elapsed();
    match result {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::ConnectionReset,
            "expected a reset, got {e}"
        ),
        Ok(n) => panic!("expected a reset, read {n} bytes"),
    }
    assert!(
        waited < Duration::from_secs(10),
        "the reset took {waited:?}: the client was left hanging"
    );
}
on_both_drivers!(all_backends_dead_resets_the_client_at_once);

fn half_close_delivers_the_whole_answer(driver: DriverChoice) {
    let backend = loopback(false, free_tcp_port());
    let _echo = spawn_backend("echo", backend, "echo");
    let vip = loopback(false, free_tcp_port());
    let _dp = start(&plan(vec![service(vip, &[backend])]), driver);
    let request: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let answer = send_then_read(vip, &request).expect("send, half-close, read through the proxy");
    assert_eq!(
        answer.len(),
        request.len(),
        "the answer after our FIN was cut short"
    );
    assert!(answer == request, "the echoed bytes differ");
}
on_both_drivers!(half_close_delivers_the_whole_answer);

/// A reproducible byte stream (xorshift64), so both ends can check without storing it.
struct Stream(u64);

impl Stream {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

fn bulk_256_mib_arrives_byte_identical_both_ways(driver: DriverChoice) {
    const TOTAL: usize = 256 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    let backend = loopback(false, free_tcp_port());
    let _echo = spawn_backend("echo", backend, "echo");
    let vip = loopback(false, free_tcp_port());
    let _dp = start(&plan(vec![service(vip, &[backend])]), driver);
    let stream =
        TcpStream::connect_timeout(&vip, Duration::from_secs(5)).expect("connect to the VIP");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set read timeout");
    let mut writer = stream.try_clone().expect("clone the client socket");
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut source = Stream(0x9E37_79B9_7F4A_7C15);
        let mut buf = vec![0u8; CHUNK];
        for _ in 0..TOTAL / CHUNK {
            source.fill(&mut buf);
            writer.write_all(&buf)?;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut expected = Stream(0x9E37_79B9_7F4A_7C15);
    let mut reader = stream;
    let mut got = vec![0u8; CHUNK];
    let mut want = vec![0u8; CHUNK];
    let mut received = 0usize;
    let deadline = Instant::now() + Duration::from_secs(300);
    while received < TOTAL {
        assert!(
            Instant::now() < deadline,
            "bulk transfer still running after 300 s at {received} bytes"
        );
        let n = std::cmp::min(CHUNK, TOTAL - received);
        reader
            .read_exact(&mut got[..n])
            .unwrap_or_else(|e| panic!("read failed after {received} bytes: {e}"));
        expected.fill(&mut want[..n]);
        assert!(
            got[..n] == want[..n],
            "bytes differ in the chunk at offset {received}"
        );
        received += n;
    }
    let mut tail = [0u8; 1];
    assert_eq!(
        read_retrying(&mut reader, &mut tail).expect("read EOF"),
        0,
        "more bytes than were sent"
    );
    sender
        .join()
        .expect("sender thread")
        .expect("sending 256 MiB through the proxy");
}
on_both_drivers!(bulk_256_mib_arrives_byte_identical_both_ways);
