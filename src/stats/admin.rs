//! The admin endpoint: a Unix socket for `alive-proxy stats` and an optional HTTP listener
//! for `/metrics`, `/healthz` and `/readyz`. Runs on the control-plane tokio runtime.
//!
//! The socket (default `/run/alive-proxy/admin.sock`, mode 0600) is the local, privileged
//! channel: the protocol is in [`socket`]. The HTTP listener (default `127.0.0.1:9736`) is for
//! scrapers and orchestrator probes and reveals nothing but metrics.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::config::AdminPlan;

use super::{StatsRegistry, http, prometheus, socket};

/// Set by the app once the config is loaded and the listeners are up; `/readyz` reports it.
/// Also not ready while HA cannot remove a VIP that must leave this host.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    control: std::sync::OnceLock<Arc<super::ControlState>>,
}

impl Readiness {
    pub fn new() -> Arc<Readiness> {
        Arc::new(Readiness::default())
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Consult `control` too: a VIP stuck on this host makes it not ready.
    pub fn watch(&self, control: Arc<super::ControlState>) {
        // Set once per process; a second call would watch the same state.
        let _ = self.control.set(control);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self.control.get().is_none_or(|c| !c.removal_pending())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin socket {}: {error}", path.display())]
    Socket {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("admin socket {path}: another alive-proxy is already serving on it")]
    InUse { path: PathBuf },
    #[error("admin HTTP listener {addr}: {error}")]
    Http {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// The running admin endpoint. Dropping it (or [`AdminServer::shutdown`]) stops serving and
/// removes the socket file.
#[derive(Debug)]
pub struct AdminServer {
    socket: PathBuf,
    http: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl AdminServer {
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The bound HTTP address (resolves port 0), if HTTP is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Err(err) = std::fs::remove_file(&self.socket)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(socket = %self.socket.display(), %err, "cannot remove admin socket");
        }
    }
}

/// Bind the admin socket (and the HTTP listener if configured) and serve in background tasks
/// on the current tokio runtime. Binding problems are returned; per-request problems are
/// logged and answered, never fatal.
pub async fn serve(
    plan: AdminPlan,
    registry: Arc<StatsRegistry>,
    readiness: Arc<Readiness>,
) -> Result<AdminServer, AdminError> {
    let unix = bind_socket(&plan.socket).await?;
    // The admin endpoint's share of descriptors; the data plane keeps the rest.
    let budget = crate::daemon::fd_limit::Budget::current(1);
    // Built first so that a failure below drops it: its task stops and the socket goes away.
    let mut server = AdminServer {
        socket: plan.socket,
        http: None,
        tasks: vec![tokio::spawn(socket::accept_loop(
            unix,
            Arc::clone(&registry),
            budget.admin_socket_connections,
        ))],
    };
    if let Some(addr) = plan.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| AdminError::Http { addr, error })?;
        let bound = listener
            .local_addr()
            .map_err(|error| AdminError::Http { addr, error })?;
        server.http = Some(bound);
        let events = registry.events();
        let metrics = Arc::new(prometheus::live_registry(registry, Arc::clone(&readiness)));
        server.tasks.push(tokio::spawn(http::accept_loop(
            listener,
            metrics,
            readiness,
            budget.admin_http_connections,
            events,
        )));
    }
    tracing::info!(socket = %server.socket.display(), http = ?server.http, "admin endpoint up");
    Ok(server)
}

/// Create the socket's directory (0700 if we create it), refuse if a live daemon already
/// answers on the path, remove a stale socket file, bind, then restrict the socket to its owner.
async fn bind_socket(path: &Path) -> Result<UnixListener, AdminError> {
    let fail = |error| AdminError::Socket {
        path: path.to_owned(),
        error,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(AdminError::InUse {
                    path: path.to_owned(),
                });
            }
            std::fs::remove_file(path).map_err(fail)?;
        }
        Ok(_) => {
            return Err(fail(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket; not removing it",
            )));
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(fail(err)),
    }
    let listener = UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    Ok(listener)
}
