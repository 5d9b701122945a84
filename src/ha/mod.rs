//! High availability: which LB host holds each VIP, and putting the address where the lease
//! says.
//!
//! # Layout
//! - [`ownership`]: the lease state machine (pure: observations and monotonic `now` in,
//!   decisions out). Its module doc states the guarantee and what it does not cover.
//! - [`timing`]: renew period, poll period, lease duration, renew deadline and safety margin
//!   derived from `check_interval` / `check_timeout`.
//! - [`lease`]: the lock services behind one [`lease::LeaseStore`] trait: Kubernetes Lease
//!   ([`lease::kube`]) and etcd ([`lease::etcd`]).
//! - [`driver`]: the tokio task per instance that runs the state machine against a store
//!   (or holds the VIP unconditionally when no lock is configured), obeys reload and stop
//!   commands, and reports its state.
//! - [`keeper`]: the VIP kept present and announced while held, absent otherwise, parked on
//!   `lo` while a planned handover drains; [`arp_quiet`]: the link kept quiet about a
//!   parked IPv4 VIP.
//! - [`vip`]: the address over rtnetlink behind the [`vip::VipOps`] trait; [`announce`]:
//!   gratuitous ARP / unsolicited NA and the watch for other hosts claiming a held VIP.
//! - [`forward`]: the new holder's nftables forwarding of a handed-over VIP's sessions to
//!   the previous holder.
//! - [`peer`]: the lock-outage failsafe: an authenticated UDP channel among the peers of a
//!   leased instance, and the rule by which their answers extend the holder's hold.
//! - [`vrrp`]: VRRPv3 among the peers when no lock is configured (RFC 5798, keepalived
//!   interoperable): packet, state machine, raw sockets, driver.
//! - [`bgp`]: BGP mode: the VIP on `lo` and its route announced through BIRD while every
//!   service has quorum (active-active behind ECMP).
//! - [`status`]: what HA reports upward ([`status::HaObserver`]: ownership and failures).
//! - [`supervisor`]: [`HaSupervisor`], one task per instance, reload, handover, shutdown.
//! - [`online`]: `alive-proxy check --online` (kubeconfig reachability, permissions, expiry).
//!
//! Operator-facing description, timings and measurements: `docs/ha.md`.

pub mod announce;
pub mod arp_quiet;
pub mod bgp;
pub mod driver;
pub mod forward;
pub mod keeper;
pub mod lease;
pub mod online;
pub mod ownership;
pub mod peer;
pub mod status;
pub mod supervisor;
pub mod timing;
pub mod vip;
pub mod vrrp;

pub use status::{HaFailure, HaObserver};
pub use supervisor::{HaApplied, HaError, HaOptions, HaSupervisor, host_identity};
