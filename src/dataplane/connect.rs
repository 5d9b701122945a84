//! Connecting to a backend: bounded by the service's connect timeout, TCP_NODELAY set, and
//! in transparent mode from the client's own address (IP_TRANSPARENT), as IPVS NAT would.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

/// Connects to `backend` within `timeout`. `source`: bind to this (client) address first with
/// IP_TRANSPARENT; the port is left to the kernel so two connections from one client
/// address never collide.
pub async fn connect(
    backend: SocketAddr,
    timeout: Duration,
    source: Option<SocketAddr>,
) -> io::Result<TcpStream> {
    let attempt = async {
        match source {
            Some(source) if source.is_ipv4() == backend.is_ipv4() => {
                connect_transparent(backend, source).await
            }
            _ => TcpStream::connect_addr(backend).await,
        }
    };
    let stream = match monoio::time::timeout(timeout, attempt).await {
        Ok(result) => result?,
        Err(_elapsed) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {backend} timed out after {timeout:?}"),
            ));
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn connect_transparent(backend: SocketAddr, source: SocketAddr) -> io::Result<TcpStream> {
    let domain = if backend.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(
        domain,
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    if backend.is_ipv4() {
        socket.set_ip_transparent_v4(true)?;
    } else {
        socket.set_ip_transparent_v6(true)?;
    }
    socket.bind(&SocketAddr::new(source.ip(), 0).into())?;
    match socket.connect(&backend.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    stream.writable(false).await?;
    match socket2::SockRef::from(&BorrowedStream(&stream)).take_error()? {
        Some(err) => Err(err),
        None => Ok(stream),
    }
}

/// Lends a monoio stream's fd to socket2 for a getsockopt.
struct BorrowedStream<'a>(&'a TcpStream);

impl std::os::fd::AsFd for BorrowedStream<'_> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the fd belongs to the stream, which outlives this borrow.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0.as_raw_fd()) }
    }
}

/// Makes the next close of `fd` send RST instead of FIN (SO_LINGER with a zero timeout):
/// how a reset on one leg is propagated to the other, and how a refused client is told at
/// once. Errors are ignored: the socket may already be dead, and a FIN is the fallback.
pub fn set_reset_on_close(fd: std::os::fd::RawFd) {
    // SAFETY: `fd` is a live socket owned by the caller for the duration of this call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if let Err(err) = socket2::SockRef::from(&borrowed).set_linger(Some(Duration::ZERO)) {
        tracing::trace!(%err, "SO_LINGER 0 failed");
    }
}
