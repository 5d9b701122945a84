//! The seams between health and the data plane: what a checker concludes about a backend
//! ([`HealthSink`]), and what the data plane saw fail ([`PassiveEvent`]).
//! Health decides; whoever implements [`HealthSink`] (the routing snapshot) applies it.

use std::net::SocketAddr;

use crate::config::BackendKey;

/// A backend's effective state as health sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum BackendStatus {
    /// Takes new connections in proportion to `weight`. `weight == 0` drains: no new
    /// connections, live sessions continue (weight 0 in the plan, `inhibit_on_failure`,
    /// or a `misc_dynamic` result).
    Up { weight: u32 },
    /// Removed: no new connections; live sessions are closed unless the service says
    /// `on_backend_down: drain`.
    Down,
}

/// Receives health conclusions. Implementations must be cheap and non-blocking: they are
/// called from the control plane's probe tasks.
pub trait HealthSink: Send + Sync + 'static {
    /// The backend's state changed, or a re-probe triggered by a passive failure finished
    /// (then it is called even when the state did not change, so the data plane can clear
    /// its "suspect" mark).
    fn backend_changed(&self, key: BackendKey, status: BackendStatus);
    /// The service crossed its quorum: while `active`, new connections go to its
    /// `sorry_server`.
    fn sorry_active(&self, service: SocketAddr, active: bool);
}

/// The seam the other way: sent by the data plane (over a `tokio::sync::mpsc::UnboundedSender`,
/// which needs no runtime to send) when a worker fails to connect to a backend on real client
/// traffic. The worker has already marked the backend suspect in its routing view; health
/// answers with an immediate re-probe. Defined here, beside [`HealthSink`], so that health
/// never imports the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveEvent {
    pub key: BackendKey,
    pub error: std::io::ErrorKind,
}
