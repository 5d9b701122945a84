//! Scheduler behaviour through the proxy over real loopback sockets, on both monoio drivers:
//! wrr follows the weights, sh and persistence keep a client on one backend, mh moves only
//! the clients of a removed backend, lc prefers the idle backend. (rr is in
//! dataplane_relay.rs.)
//!
//! Clients that must look distinct to the proxy bind their socket to their own 127.0.0.x
//! source address before connecting; loopback accepts any 127/8 source.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use alive_proxy::config::{BackendKey, Persistence, Scheduler};
use alive_proxy::dataplane::DriverChoice;
use alive_proxy::health::{BackendStatus, HealthSink};
use socket2::{Domain, Protocol, Socket, Type};
use support::dataplane::{
    TestDataplane, backend_name, http_get, loopback, plan, service, spawn_backend, start,
};
use support::ports::{free_tcp_port, free_tcp_port_dual};
use support::process::ChildGuard;
use support::wait;

const NAMES: [&str; 3] = ["b1", "b2", "b3"];

fn free_port(v6: bool) -> u16 {
    if v6 {
        free_tcp_port_dual()
    } else {
        free_tcp_port()
    }
}

/// Three `http` backends named b1, b2, b3, in that order.
fn three_backends(v6: bool) -> (Vec<ChildGuard>, Vec<SocketAddr>) {
    let mut guards = Vec::new();
    let mut addrs = Vec::new();
    for name in NAMES {
        let addr = loopback(v6, free_port(v6));
        guards.push(spawn_backend(name, addr, "http"));
        addrs.push(addr);
    }
    (guards, addrs)
}

/// The client address number `n` (1..=250) on 127.0.0.0/8, never 127.0.0.1 itself.
fn client_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, n))
}

/// A connection to `to` whose source address is `from`.
fn connect_from(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// One `GET /` from source address `from` on a new connection; the backend that answered.
fn backend_for(from: IpAddr, vip: SocketAddr) -> String {
    let answer = connect_from(from, vip).and_then(|mut stream| {
        stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    });
    let response = answer.unwrap_or_else(|e| panic!("request from {from} through {vip}: {e}"));
    let body = match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => body,
        _ => panic!("unexpected answer from {from} through {vip}: {response:?}"),
    };
    backend_name(body).unwrap_or_else(|| panic!("no backend name in {body:?}"))
}

/// A keep-alive session held open through the proxy, and the backend serving it.
struct HeldSession {
    _stream: BufReader<TcpStream>,
    backend: String,
}

/// Opens a keep-alive connection and makes one request on it, so the proxy has connected
/// it to a backend (and counts it there) before this returns.
fn hold_session(vip: SocketAddr) -> HeldSession {
    let open = || -> io::Result<(BufReader<TcpStream>, String)> {
        let stream = TcpStream::connect_timeout(&vip, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream);
        reader
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
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
        Ok((reader, String::from_utf8_lossy(&body).into_owned()))
    };
    let (stream, body) = open().unwrap_or_else(|e| panic!("keep-alive session via {vip}: {e}"));
    let backend = backend_name(&body).unwrap_or_else(|| panic!("no backend name in {body:?}"));
    HeldSession {
        _stream: stream,
        backend,
    }
}

/// Live sessions the proxy counts on `backend` of the service at `vip`.
fn active_on(dp: &TestDataplane, vip: SocketAddr, backend: SocketAddr) -> u32 {
    dp.get()
        .routing()
        .current()
        .backend(&BackendKey {
            service: vip,
            backend,
        })
        .map_or_else(
            || panic!("{backend} not in the routing snapshot"),
            |b| b.active(),
        )
}

fn wrr_follows_the_weights(driver: DriverChoice, v6: bool) {
    let (_backends, addrs) = three_backends(v6);
    let vip = loopback(v6, free_port(v6));
    let mut svc = service(vip, &addrs);
    svc.scheduler = Scheduler::Wrr;
    for (backend, weight) in svc.backends.iter_mut().zip([3, 2, 1]) {
        backend.weight = weight;
    }
    let _dp = start(&plan(vec![svc]), driver);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..600 {
        let body = http_get(vip, "/")
            .unwrap_or_else(|e| panic!("connection {i} through {vip} failed: {e}"));
        let name = backend_name(&body).unwrap_or_else(|| panic!("no backend name in {body:?}"));
        *counts.entry(name).or_default() += 1;
    }
    // The wrr position is one word shared by all workers, advanced by compare-and-swap, so
    // the picks of both workers together are exactly IPVS's sequence: 100 full cycles of
    // b1 b1 b2 b1 b2 b3.
    for (name, expected) in NAMES.into_iter().zip([300, 200, 100]) {
        assert_eq!(
            counts.get(name).copied().unwrap_or(0),
            expected,
            "wrr with weights 3/2/1 over 600 connections should give exactly 300/200/100, got {counts:?}"
        );
    }
}

fn wrr_splits_600_connections_300_200_100_v4(driver: DriverChoice) {
    wrr_follows_the_weights(driver, false);
}
on_both_drivers!(wrr_splits_600_connections_300_200_100_v4);

fn wrr_splits_600_connections_300_200_100_v6(driver: DriverChoice) {
    wrr_follows_the_weights(driver, true);
}
on_both_drivers!(wrr_splits_600_connections_300_200_100_v6);

/// Each client's backends over `per_client` connections, clients in order.
fn backends_seen(vip: SocketAddr, clients: &[IpAddr], per_client: usize) -> Vec<BTreeSet<String>> {
    clients
        .iter()
        .map(|&client| {
            (0..per_client)
                .map(|_| backend_for(client, vip))
                .collect::<BTreeSet<_>>()
        })
        .collect()
}

fn sh_keeps_each_client_on_one_backend(driver: DriverChoice) {
    let (_backends, addrs) = three_backends(false);
    let vip = loopback(false, free_tcp_port());
    let mut svc = service(vip, &addrs);
    svc.scheduler = Scheduler::Sh;
    let _dp = start(&plan(vec![svc]), driver);
    let clients: Vec<IpAddr> = (10..18).map(client_ip).collect();
    let seen = backends_seen(vip, &clients, 20);
    for (client, backends) in clients.iter().zip(&seen) {
        assert_eq!(
            backends.len(),
            1,
            "sh sent client {client} to several backends over 20 connections: {backends:?}"
        );
    }
    let used: BTreeSet<&String> = seen.iter().flatten().collect();
    assert!(
        used.len() > 1,
        "sh sent all {} distinct clients to one backend: {used:?}",
        clients.len()
    );
}
on_both_drivers!(sh_keeps_each_client_on_one_backend);

fn persistence_keeps_a_client_while_new_clients_rotate(driver: DriverChoice) {
    let (_backends, addrs) = three_backends(false);
    let vip = loopback(false, free_tcp_port());
    let mut svc = service(vip, &addrs);
    svc.persistence = Some(Persistence {
        timeout: Duration::from_secs(300),
        granularity_prefix: 32,
    });
    let _dp = start(&plan(vec![svc]), driver);
    let clients: Vec<IpAddr> = (20..23).map(client_ip).collect();
    // Interleaved rounds: between two connections of one client, the others connect too,
    // so without affinity rr would move every client.
    let mut seen: Vec<Vec<String>> = vec![Vec::new(); clients.len()];
    for _round in 0..10 {
        for (client, seen) in clients.iter().zip(seen.iter_mut()) {
            seen.push(backend_for(*client, vip));
        }
    }
    for (client, backends) in clients.iter().zip(&seen) {
        let distinct: BTreeSet<&String> = backends.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "persistence let client {client} move between backends: {backends:?}"
        );
    }
    // Each new client is scheduled by rr, which moves on from the previous new client's
    // backend: three new clients cover all three backends.
    let firsts: BTreeSet<&String> = seen.iter().map(|s| &s[0]).collect();
    assert_eq!(
        firsts.len(),
        3,
        "three new clients under persistence + rr should land on three backends: {seen:?}"
    );
}
on_both_drivers!(persistence_keeps_a_client_while_new_clients_rotate);

fn mh_moves_only_the_clients_of_a_removed_backend(driver: DriverChoice) {
    let (_backends, addrs) = three_backends(false);
    let vip = loopback(false, free_tcp_port());
    let mut svc = service(vip, &addrs);
    svc.scheduler = Scheduler::Mh;
    let dp = start(&plan(vec![svc]), driver);
    let clients: Vec<IpAddr> = (30..90).map(client_ip).collect();
    let map = |vip| -> Vec<String> { clients.iter().map(|&c| backend_for(c, vip)).collect() };
    let before = map(vip);
    let removed = "b2";
    assert!(
        before.iter().any(|b| b == removed),
        "precondition: no client of 60 hashed to {removed}: {before:?}"
    );
    dp.get().routing().backend_changed(
        BackendKey {
            service: vip,
            backend: addrs[1],
        },
        BackendStatus::Down,
    );
    let after = map(vip);
    let mut moved_survivor_clients = Vec::new();
    let mut stuck_on_removed = Vec::new();
    for ((client, was), now) in clients.iter().zip(&before).zip(&after) {
        if was == removed {
            if now == removed {
                stuck_on_removed.push(client);
            }
        } else if was != now {
            moved_survivor_clients.push(format!("{client}: {was} -> {now}"));
        }
    }
    assert!(
        moved_survivor_clients.is_empty(),
        "mh moved clients of surviving backends when {removed} went down: {moved_survivor_clients:?}"
    );
    assert!(
        stuck_on_removed.is_empty(),
        "clients still sent to {removed} after it went down: {stuck_on_removed:?}"
    );
}
on_both_drivers!(mh_moves_only_the_clients_of_a_removed_backend);

fn lc_sends_new_connections_to_the_idle_backend(driver: DriverChoice) {
    let (_backends, addrs) = three_backends(false);
    let vip = loopback(false, free_tcp_port());
    let mut svc = service(vip, &addrs);
    svc.scheduler = Scheduler::Lc;
    let dp = start(&plan(vec![svc]), driver);
    // Six held sessions: lc (ties to the first backend) fills the three backends evenly.
    let held: Vec<HeldSession> = (0..6).map(|_| hold_session(vip)).collect();
    let per_backend =
        |held: &[HeldSession], name: &str| held.iter().filter(|s| s.backend == name).count();
    for name in NAMES {
        assert_eq!(
            per_backend(&held, name),
            2,
            "precondition: lc should spread 6 held sessions 2/2/2, got {:?}",
            held.iter().map(|s| &s.backend).collect::<Vec<_>>()
        );
    }
    // Close b2's sessions: it becomes the idle one while b1 and b3 keep 2 each.
    let (b2_sessions, mut held): (Vec<_>, Vec<_>) =
        held.into_iter().partition(|s| s.backend == "b2");
    drop(b2_sessions);
    let b2_idle = || active_on(&dp, vip, addrs[1]) == 0;
    wait::until_or_panic(
        Duration::from_secs(10),
        "the proxy to stop counting b2's closed sessions",
        b2_idle,
    );
    for i in 0..5 {
        let body = http_get(vip, "/")
            .unwrap_or_else(|e| panic!("short connection {i} through {vip} failed: {e}"));
        assert_eq!(
            backend_name(&body).as_deref(),
            Some("b2"),
            "short connection {i} did not go to the idle b2 (b1, b3 hold 2 sessions each): {body:?}"
        );
        wait::until_or_panic(
            Duration::from_secs(10),
            "the proxy to stop counting b2's finished short connection",
            b2_idle,
        );
    }
    // Held again: b2 takes new sessions until it catches up with the others.
    for i in 0..2 {
        let session = hold_session(vip);
        assert_eq!(
            session.backend, "b2",
            "held session {i} did not go to b2, which had {i} sessions against 2 on b1 and b3"
        );
        held.push(session);
    }
    for (name, &addr) in NAMES.iter().zip(&addrs) {
        assert_eq!(
            active_on(&dp, vip, addr),
            2,
            "after lc filled the idle backend every backend should count 2 sessions; {name} differs"
        );
    }
}
on_both_drivers!(lc_sends_new_connections_to_the_idle_backend);
