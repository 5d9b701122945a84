//! Raw IP protocol 112 sockets, one per instance, bound to the instance's interface,
//! non-blocking and registered with tokio.
//!
//! - IPv4: IP_HDRINCL, so every advert carries TTL 255, TOS network control and the source
//!   address its checksum was computed over (the pseudo-header needs it, and the kernel
//!   could pick another one). Received packets include the IP header, which gives TTL,
//!   source and destination.
//! - IPv6: hop limit 255 (unicast and multicast), the source (link-local) and interface
//!   given per packet with IPV6_PKTINFO. The checksum is ours, not the kernel's
//!   (IPV6_CHECKSUM off): a packet with a bad one must reach us to be counted. Hop limit and
//!   destination come with each packet as IPV6_HOPLIMIT / IPV6_PKTINFO control messages.
//! - Multicast mode joins 224.0.0.18 / ff02::12 on the interface; multicast loop is off, so
//!   a host never hears itself.
//!
//! Written against libc for the control messages: socket2 has no sendmsg/recvmsg with
//! IPV6_PKTINFO and IPV6_HOPLIMIT.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{self, DropReason, MULTICAST_V4, MULTICAST_V6, PROTOCOL, Received};

pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    v6: bool,
    ifindex: u32,
}

impl VrrpSocket {
    /// `multicast`: join the VRRP group (no unicast peers left).
    pub fn open(
        v6: bool,
        interface: &str,
        ifindex: u32,
        multicast: bool,
    ) -> io::Result<VrrpSocket> {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(i32::from(PROTOCOL))))?;
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        socket.bind_device(Some(interface.as_bytes()))?;
        if v6 {
            socket.set_multicast_hops_v6(u32::from(packet::TTL))?;
            socket.set_unicast_hops_v6(u32::from(packet::TTL))?;
            socket.set_multicast_loop_v6(false)?;
            socket.set_multicast_if_v6(ifindex)?;
            socket.set_recv_hoplimit_v6(true)?;
            set_int(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
            set_int(&socket, libc::IPPROTO_IPV6, libc::IPV6_CHECKSUM, -1)?;
            if multicast {
                socket.join_multicast_v6(&MULTICAST_V6, ifindex)?;
            }
        } else {
            socket.set_header_included_v4(true)?;
            socket.set_multicast_loop_v4(false)?;
            if multicast {
                socket
                    .join_multicast_v4_n(&MULTICAST_V4, &InterfaceIndexOrAddress::Index(ifindex))?;
            }
        }
        Ok(VrrpSocket {
            // SAFETY: the Socket owns its open descriptor and moves into the AsyncFd.
            fd: unsafe { AsyncFd::register(socket)? },
            v6,
            ifindex,
        })
    }

    /// Sends one VRRP message (checksummed for `src` → `dst`).
    pub fn send(&self, msg: &[u8], src: IpAddr, dst: IpAddr) -> io::Result<()> {
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let packet = packet::ipv4_packet(src, dst, msg);
                let to = SockAddr::from(SocketAddrV4::new(dst, 0));
                self.fd.get_ref().send_to(&packet, &to).map(|_| ())
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => self.send_v6(msg, src, dst),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "source and destination of different families",
            )),
        }
    }

    fn send_v6(&self, msg: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> io::Result<()> {
        let scope = if dst.is_multicast() || dst.is_unicast_link_local() {
            self.ifindex
        } else {
            0
        };
        let to = SockAddr::from(SocketAddrV6::new(dst, 0, 0, scope));
        // SAFETY: plain data.
        let mut info: libc::in6_pktinfo = unsafe { zeroed() };
        info.ipi6_addr.s6_addr = src.octets();
        info.ipi6_ifindex = self.ifindex;
        let mut control = [0u8; 64];
        let mut iov = libc::iovec {
            iov_base: msg.as_ptr() as *mut libc::c_void,
            iov_len: msg.len(),
        };
        // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
        let mut header: libc::msghdr = unsafe { zeroed() };
        header.msg_name = to.as_ptr() as *mut libc::c_void;
        header.msg_namelen = to.len();
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is arithmetic on a constant size.
        header.msg_controllen =
            unsafe { libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) } as usize;
        // SAFETY: the control buffer is larger than CMSG_SPACE(in6_pktinfo) and aligned for
        // cmsghdr by the first-header macro; the data pointer stays inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&header);
            if cmsg.is_null() {
                return Err(io::Error::other("no room for IPV6_PKTINFO"));
            }
            (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
            (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>(), info);
        }
        // SAFETY: the header and everything it points to are valid for the call.
        let n = unsafe { libc::sendmsg(self.fd.get_ref().as_raw_fd(), &header, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next packet: `Err(reason)` inside when it is no VRRP message we could read (an
    /// IPv4 header that does not parse, a truncated datagram).
    pub async fn recv<'b>(
        &self,
        buf: &'b mut [u8],
    ) -> io::Result<Result<Received<'b>, DropReason>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|fd| recvmsg(fd.get_ref().as_raw_fd(), buf, self.v6));
            if let Ok(result) = result {
                let meta = result?;
                return Ok(meta.and_then(|m| m.into_received(buf, self.v6)));
            }
        }
    }
}

/// What recvmsg says about a datagram besides its bytes.
#[derive(Debug, Clone, Copy)]
struct Meta {
    len: usize,
    /// IPv6 only (IPv4 carries them in the header).
    src: Option<Ipv6Addr>,
    dst: Option<Ipv6Addr>,
    hop_limit: Option<u8>,
}

impl Meta {
    fn into_received(self, buf: &[u8], v6: bool) -> Result<Received<'_>, DropReason> {
        let datagram = buf.get(..self.len).ok_or(DropReason::Length)?;
        if !v6 {
            let (header, msg) = packet::parse_ipv4(datagram)?;
            return Ok(Received {
                src: IpAddr::V4(header.src),
                dst: IpAddr::V4(header.dst),
                ttl: header.ttl,
                msg,
            });
        }
        Ok(Received {
            src: IpAddr::V6(self.src.unwrap_or(Ipv6Addr::UNSPECIFIED)),
            dst: IpAddr::V6(self.dst.unwrap_or(Ipv6Addr::UNSPECIFIED)),
            // Without the control message the hop limit is unknown: treated as wrong.
            ttl: self.hop_limit.unwrap_or(0),
            msg: datagram,
        })
    }
}

fn recvmsg(fd: i32, buf: &mut [u8], v6: bool) -> io::Result<Result<Meta, DropReason>> {
    // SAFETY: plain data, filled by the kernel.
    let mut from: libc::sockaddr_in6 = unsafe { zeroed() };
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the recvmsg call.
    let mut header: libc::msghdr = unsafe { zeroed() };
    header.msg_name = (&raw mut from).cast();
    header.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = size_of_val(&control);
    // SAFETY: the header and everything it points to are valid for the call.
    let n = unsafe { libc::recvmsg(fd, &mut header, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if header.msg_flags & libc::MSG_TRUNC != 0 {
        return Ok(Err(DropReason::Length));
    }
    let mut meta = Meta {
        len: n as usize,
        src: None,
        dst: None,
        hop_limit: None,
    };
    if !v6 {
        return Ok(Ok(meta));
    }
    if i32::from(from.sin6_family) == libc::AF_INET6 {
        meta.src = Some(Ipv6Addr::from(from.sin6_addr.s6_addr));
    }
    // SAFETY: the kernel wrote well-formed control messages into `control`, bounded by
    // msg_controllen; each data pointer is read within its message's length.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IPV6 {
                let data = libc::CMSG_DATA(cmsg);
                match c.cmsg_type {
                    libc::IPV6_HOPLIMIT => {
                        let hops = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                        meta.hop_limit = u8::try_from(hops).ok();
                    }
                    libc::IPV6_PKTINFO => {
                        let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                        meta.dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    Ok(Ok(meta))
}

fn set_int(socket: &Socket, level: i32, option: i32, value: i32) -> io::Result<()> {
    // SAFETY: the option value is a valid c_int for its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&raw const value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where adverts go: each unicast peer, or the VRRP group of the family.
pub fn destinations(peers: &[IpAddr], v6: bool) -> Vec<IpAddr> {
    if !peers.is_empty() {
        return peers.to_vec();
    }
    if v6 {
        vec![IpAddr::V6(MULTICAST_V6)]
    } else {
        vec![IpAddr::V4(MULTICAST_V4)]
    }
}
