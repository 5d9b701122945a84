//! Where health reports each backend's state for stats and the admin endpoint.
//!
//! The stats control state implements it (there, so health never depends on stats), so
//! `HealthSupervisor::spawn(.., registry.control())` works as the interface says; tests pass
//! [`NoopObserver`] or a recorder.

use std::net::SocketAddr;

use crate::config::BackendKey;
use crate::health::sink::BackendStatus;

pub trait HealthObserver: Send + Sync + 'static {
    /// Called on every backend transition (and once per backend at start), with the reason:
    /// which check, at which origin in alive.yaml, and what error.
    fn backend_health(&self, key: BackendKey, status: BackendStatus, reason: String);
    /// A service's quorum (keepalived's, with hysteresis): reported once when the service
    /// starts or is reloaded, then on every crossing. BGP mode announces a VIP only while its
    /// services have quorum.
    fn service_quorum(&self, _service: SocketAddr, _up: bool) {}
}

/// Discards everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl HealthObserver for NoopObserver {
    fn backend_health(&self, _key: BackendKey, _status: BackendStatus, _reason: String) {}
}
