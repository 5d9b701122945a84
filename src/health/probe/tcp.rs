//! TCP_CHECK: a connect within `connect_timeout`, from `bindto`/`bind_port` if set, closed
//! at once (keepalived sends nothing either).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use crate::health::checker::ProbeResult;
use crate::health::error::ProbeError;

pub async fn probe(
    connect: SocketAddr,
    bind: Option<SocketAddr>,
    timeout: Duration,
) -> ProbeResult {
    match connect_with(connect, bind, timeout).await {
        Ok(_stream) => ProbeResult::Pass,
        Err(ConnectError::Local(reason)) => ProbeResult::NotRun(reason),
        Err(ConnectError::Probe(error)) => ProbeResult::Fail(error),
    }
}

pub enum ConnectError {
    /// Our side could not even try (socket, bind): not the backend's fault.
    Local(String),
    Probe(ProbeError),
}

/// Opens a TCP connection the way keepalived's checkers do (`socket_bind_connect`).
pub async fn connect_with(
    connect: SocketAddr,
    bind: Option<SocketAddr>,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let socket = match connect {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| ConnectError::Local(format!("cannot create a socket: {e}")))?;
    if let Some(bind) = bind {
        // A fixed bind_port is reused every delay_loop while the last probe's connection
        // may still be in TIME_WAIT.
        if bind.port() != 0 {
            socket
                .set_reuseaddr(true)
                .map_err(|e| ConnectError::Local(format!("cannot set SO_REUSEADDR: {e}")))?;
        }
        socket
            .bind(bind)
            .map_err(|e| ConnectError::Local(format!("cannot bind to {bind}: {e}")))?;
    }
    match tokio::time::timeout(timeout, socket.connect(connect)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) if is_local(&e) => {
            Err(ConnectError::Local(format!("connect to {connect}: {e}")))
        }
        Ok(Err(e)) => Err(ConnectError::Probe(ProbeError::Connect(e.into()))),
        Err(_) => Err(ConnectError::Probe(ProbeError::ConnectTimeout(timeout))),
    }
}

/// keepalived counts refused/unreachable/reset/timeout as the backend failing, anything
/// else (e.g. EADDRNOTAVAIL from a bad bindto) as a local error.
fn is_local(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::AddrInUse
            | io::ErrorKind::PermissionDenied
    )
}
