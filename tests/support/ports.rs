//! Free ports for servers a test starts in another process (in-process servers should bind
//! port 0 and read the port back instead).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

/// A TCP port free on 127.0.0.1 right now. The kernel hands out ephemeral ports in sequence,
/// so a port just released is not handed out again soon; the small race is acceptable for
/// tests that start the server immediately.
pub fn free_tcp_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 for a free port");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
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
