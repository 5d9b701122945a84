//! High availability: which LB host holds each VIP.
//!
//! - [`lease`]: the lock services (Kubernetes Lease, etcd) behind one [`lease::LeaseStore`]
//!   trait.
//! - [`online`]: `alive-proxy check --online` (kubeconfig reachability, permissions, expiry).

pub mod announce;
pub mod lease;
pub mod online;
pub mod ownership;
pub mod timing;
pub mod vip;
pub mod driver;
pub mod keeper;
pub mod supervisor;

pub use supervisor::{HaError, HaOptions, HaSupervisor, host_identity};
