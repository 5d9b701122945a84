//! The two raw sockets announcements need, non-blocking and registered with tokio.
//! - AF_PACKET/SOCK_RAW bound to the interface for ARP: we write whole Ethernet frames
//!   (the kernel has no "send gratuitous ARP" call) and read every ARP frame on the link.
//! - IPPROTO_ICMPV6 raw sockets: one bound to the VIP to send NAs (hop limit 255, which
//!   receivers require of neighbour discovery), one bound to the device to read NAs.

use std::io::{self, Read};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::frames::ICMPV6_NEIGHBOR_ADVERT;

pub struct ArpSocket {
    fd: AsyncFd<OwnedFd>,
}

impl ArpSocket {
    pub fn open(ifindex: u32) -> io::Result<ArpSocket> {
        let protocol = (libc::ETH_P_ARP as u16).to_be();
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
        // SAFETY: addr is a valid sockaddr_ll and its size is passed with it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ArpSocket {
            // SAFETY: the OwnedFd is open and moves into the AsyncFd, which owns it until drop.
            fd: unsafe { AsyncFd::register(fd)? },
        })
    }

    /// Sends one whole Ethernet frame on the bound interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer is valid for its length; the socket is bound to one interface.
        let n = unsafe {
            libc::send(
                self.fd.get_ref().as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|fd| {
                // SAFETY: the buffer is valid for writes of its length.
                let n = unsafe {
                    libc::recv(
                        fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            if let Ok(result) = result {
                return result;
            }
        }
    }
}

pub struct NaSender {
    socket: Socket,
    dest: SockAddr,
}

impl NaSender {
    pub fn open(vip: Ipv6Addr, ifindex: u32) -> io::Result<NaSender> {
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        socket.set_nonblocking(true)?;
        socket.set_multicast_hops_v6(255)?;
        socket.set_unicast_hops_v6(255)?;
        socket.set_multicast_if_v6(ifindex)?;
        socket.set_multicast_loop_v6(false)?;
        // RFC 4861 §7.2.6: the source of an unsolicited NA is an address of the interface;
        // the VIP itself is what neighbours expect (Linux's own unsolicited NAs do the same).
        socket.bind(&SockAddr::from(SocketAddrV6::new(vip, 0, 0, 0)))?;
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        Ok(NaSender {
            socket,
            dest: SockAddr::from(SocketAddrV6::new(all_nodes, 0, 0, ifindex)),
        })
    }

    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        self.socket.send_to(packet, &self.dest).map(|_| ())
    }
}

pub struct NaListener {
    socket: AsyncFd<Socket>,
}

impl NaListener {
    pub fn open(interface: &str) -> io::Result<NaListener> {
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        socket.set_nonblocking(true)?;
        socket.bind_device(Some(interface.as_bytes()))?;
        set_icmp6_filter_pass_only(&socket, ICMPV6_NEIGHBOR_ADVERT)?;
        Ok(NaListener {
            // SAFETY: the Socket owns its open descriptor and moves into the AsyncFd.
            socket: unsafe { AsyncFd::register(socket)? },
        })
    }

    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.socket.readable().await?;
            if let Ok(result) = guard.try_io(|s| s.get_ref().read(buf)) {
                return result;
            }
        }
    }
}

/// ICMP6_FILTER (RFC 3542 §3.2): deliver only `icmp_type`, so the socket is not woken for
/// every echo and router advertisement on the link.
fn set_icmp6_filter_pass_only(socket: &Socket, icmp_type: u8) -> io::Result<()> {
    const ICMP6_FILTER: libc::c_int = 1;
    let mut filter = [u32::MAX; 8];
    filter[usize::from(icmp_type >> 5)] &= !(1u32 << (icmp_type & 31));
    // SAFETY: the option value is a valid 32-byte icmp6_filter.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            ICMP6_FILTER,
            filter.as_ptr().cast(),
            std::mem::size_of_val(&filter) as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
