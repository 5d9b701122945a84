//! Lease stores: the contract every lock service implements, so the ownership state machine
//! is written once and each backend (Kubernetes, etcd) is a thin adapter.

use std::future::Future;
use std::time::Duration;

pub mod etcd;
pub mod kube;

/// One observation of the lease record as the lock service stores it.
///
/// Deliberately carries no remote timestamps: expiry is judged by how long this host has
/// observed `version` unchanged on its own monotonic clock (client-go semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Identity of the holder; `None` = released (nobody holds it).
    pub holder: Option<String>,
    /// Opaque version for optimistic concurrency: a Kubernetes `resourceVersion` or an etcd
    /// `mod_revision`. Any change means someone wrote the record.
    pub version: String,
    /// How long the holder claims the lease for, as written by the holder.
    pub duration: Duration,
    /// How many times the holder changed (Kubernetes `leaseTransitions`).
    pub transitions: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("conflict: someone else wrote the lease")]
    Conflict,
    /// Network, TLS, timeout, 5xx: try the next endpoint.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("denied: {0}")]
    Denied(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

/// A lock service holding one lease record (one per VIP instance).
pub trait LeaseStore: Send + 'static {
    /// What is in use now, e.g. the kubeconfig path or the etcd endpoint.
    fn endpoint(&self) -> String;
    /// The current record, `None` if it does not exist.
    fn get(&mut self) -> impl Future<Output = Result<Option<LeaseRecord>, LeaseError>> + Send;
    /// Create the record held by `holder`; `Conflict` if it exists.
    fn create(
        &mut self,
        holder: &str,
        duration: Duration,
    ) -> impl Future<Output = Result<LeaseRecord, LeaseError>> + Send;
    /// Replace `prev`; `Conflict` if `prev.version` is stale. `holder` `None` = release.
    fn update(
        &mut self,
        prev: &LeaseRecord,
        holder: Option<&str>,
        duration: Duration,
    ) -> impl Future<Output = Result<LeaseRecord, LeaseError>> + Send;
}
