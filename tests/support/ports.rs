//! Free ports for servers a test starts in another process (in-process servers should bind
//! port 0 and read the port back instead).

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Servers get ports *below* the kernel's ephemeral range (`ip_local_port_range`, 32768+ by
/// default). A port from `bind(…, 0)` is an ephemeral one, and the tests' own clients and
/// proxies pick their source ports from that same range: between choosing a port and the
/// server binding it, a `connect()` could take it, or another test's `bind(0)` get it
/// again, and then one test's server answers another's client (seen as reset sessions and
/// failed binds under parallel tests). Below the range, only an explicit bind takes a port.
const SERVER_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Ports this process has handed out: never twice, so parallel tests never share one.
static HANDED_OUT: Mutex<Option<(HashSet<u16>, u64)>> = Mutex::new(None);

/// A TCP port free on 127.0.0.1 right now, outside the ephemeral range, never returned
/// before in this process.
pub fn free_tcp_port() -> u16 {
    let mut state = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let (handed_out, rng) = state.get_or_insert_with(|| {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default()
            ^ (u64::from(std::process::id()) << 32);
        (HashSet::new(), seed | 1)
    });
    let span = u64::from(SERVER_PORTS.end - SERVER_PORTS.start);
    for _ in 0..10_000 {
        // xorshift64: a different walk per process, so consecutive test binaries (and their
        // lingering sockets) do not start from the same ports.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let port = SERVER_PORTS.start + (*rng % span) as u16;
        if handed_out.contains(&port) || TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        handed_out.insert(port);
        return port;
    }
    panic!("no free TCP port in {SERVER_PORTS:?} after 10000 tries");
}

/// A TCP port free on both 127.0.0.1 and ::1.
pub fn free_tcp_port_dual() -> u16 {
    for _ in 0..100 {
        let port = free_tcp_port();
        if TcpListener::bind((Ipv6Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no TCP port free on both 127.0.0.1 and ::1 after 100 tries");
}

pub fn localhost_v4(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

pub fn localhost_v6(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::LOCALHOST, port))
}
