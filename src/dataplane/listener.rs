//! Listening sockets for VIP:ports: one SO_REUSEPORT socket per worker per VIP:port, so the
//! kernel spreads new connections across workers with no shared accept queue.
//!
//! IP_FREEBIND / IPV6_FREEBIND let a standby host listen on a VIP it does not hold yet: it
//! takes traffic the moment HA adds the address. IPv6 sockets are V6ONLY so a v4 and a v6
//! VIP on the same port never collide. Sockets are bound on the control thread (errors are
//! reported to the caller of start/apply_plan) and handed to workers as std listeners.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Accept backlog per worker socket. The kernel caps it at `net.core.somaxconn` (4096 on
/// current kernels); bursts of new connections queue here while a worker is busy.
pub const BACKLOG: i32 = 4096;

/// Binds one worker's listener on `addr`.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = match addr {
        SocketAddr::V4(_) => Domain::IPV4,
        SocketAddr::V6(_) => Domain::IPV6,
    };
    let socket = Socket::new(
        domain,
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    match addr {
        SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
        SocketAddr::V6(_) => {
            socket.set_only_v6(true)?;
            socket.set_freebind_v6(true)?;
        }
    }
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Binds `count` listeners on `addr`; when `addr` has port 0 the first socket's port is used
/// for the rest so all workers share one port.
pub fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let listener = bind(addr)?;
        if addr.port() == 0 {
            addr = listener.local_addr()?;
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Errors after which accepting must pause instead of retrying at once: the process or the
/// system is out of file descriptors or memory, and the pending connection stays queued.
pub fn is_resource_exhaustion(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_one_port_through_reuseport() {
        let group =
            bind_group("127.0.0.1:0".parse().expect("literal"), 3).expect("bind 3 listeners");
        let ports: Vec<u16> = group
            .iter()
            .map(|l| l.local_addr().expect("bound").port())
            .collect();
        assert!(
            ports.iter().all(|p| *p == ports[0]),
            "ports differ: {ports:?}"
        );
    }

    #[test]
    fn freebind_allows_an_address_this_host_does_not_hold() {
        // 192.0.2.1 (TEST-NET-1) is not configured here; without IP_FREEBIND bind fails
        // with EADDRNOTAVAIL.
        let listener = bind("192.0.2.1:0".parse().expect("literal"));
        assert!(listener.is_ok(), "freebind listener failed: {listener:?}");
    }

    #[test]
    fn v6_listener_is_v6_only() {
        let v6 = bind("[::1]:0".parse().expect("literal")).expect("bind ::1");
        let only_v6 = socket2::SockRef::from(&v6)
            .only_v6()
            .expect("getsockopt IPV6_V6ONLY");
        assert!(only_v6, "a v6 VIP listener would also take v4 connections");
    }
}
