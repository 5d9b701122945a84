//! Lease stores: the contract every lock service implements, so the ownership state machine
//! is written once and each backend (Kubernetes, etcd) is a thin adapter.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

pub mod etcd;
pub mod kube;

use super::timing::Timing;
use crate::config::plan::LockPlan;

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
    /// Written with a planned release: the previous holder's sessions still drain.
    pub handover: Option<HandoverNote>,
}

/// "My established sessions on `vip` drain at `address` for `drain`": what a releasing holder
/// leaves for the next one, which forwards those sessions' packets meanwhile. A duration,
/// not a timestamp: the reader counts it from when it saw the note, on its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandoverNote {
    /// The VIP whose sessions drain (a reload may have moved the instance to another).
    pub vip: IpAddr,
    /// The releasing host's own address on the VIP's link.
    pub address: IpAddr,
    #[serde(with = "millis")]
    pub drain: Duration,
}

/// Durations as whole milliseconds in stored records.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
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
    /// Reload: new endpoints or kubeconfigs for the same lease (the caller has checked it
    /// is the same record), and timeouts from the new timing. Takes effect at the next call.
    fn retune(&mut self, lock: &LockPlan, timing: &Timing);
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
    /// Replace `prev`; `Conflict` if `prev.version` is stale. `holder` `None` = release,
    /// with `handover` on a planned one (any other write clears the note).
    fn update(
        &mut self,
        prev: &LeaseRecord,
        holder: Option<&str>,
        duration: Duration,
        handover: Option<HandoverNote>,
    ) -> impl Future<Output = Result<LeaseRecord, LeaseError>> + Send;
}
