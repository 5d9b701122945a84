//! The seam from the data plane to health: connect failures seen on real client traffic.

use crate::config::BackendKey;

/// Sent (over a `tokio::sync::mpsc::UnboundedSender`, which needs no runtime to send) when a
/// worker fails to connect to a backend. The worker has already marked the backend suspect
/// in its routing view; health answers with an immediate re-probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveEvent {
    pub key: BackendKey,
    pub error: std::io::ErrorKind,
}
