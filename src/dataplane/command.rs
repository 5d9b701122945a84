//! Commands from the control plane to one worker (design "where they meet" #3): listener
//! changes on reload, closing a down backend's sessions, and the steps of a graceful stop.

use std::net::SocketAddr;

use crate::config::BackendKey;

#[derive(Debug)]
pub enum WorkerCommand {
    /// Start accepting on a socket already bound (SO_REUSEPORT) by the control thread.
    AddListener {
        addr: SocketAddr,
        listener: std::net::TcpListener,
    },
    /// Stop accepting on `addr` and close the socket; sessions from it continue.
    RemoveListener(SocketAddr),
    /// Health marked the backend down and the service closes its sessions: reset them.
    CloseBackend(BackendKey),
    /// Graceful stop, step 1: close every listener; live sessions continue.
    StopAccepting,
    /// Graceful stop, step 2 (drain deadline passed): reset every live session.
    CloseAllSessions,
    /// Leave the worker loop; the thread ends.
    Exit,
}
