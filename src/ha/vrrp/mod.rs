//! VRRPv3 (RFC 5798) among the hosts in `peer`, for instances with no lock: the embedded
//! peer protocol, interoperable with keepalived's VRRP.
//!
//! # Layout
//! - [`packet`]: the advertisement on the wire, its checksum, and the receive checks.
//! - [`state`]: the state machine (pure; `state/tests.rs` by hand, `state/sim.rs` seeded
//!   simulation).
//! - [`socket`]: raw IP protocol 112 sockets (IPv4 with TTL 255, IPv6 with hop limit 255
//!   from the link-local address), unicast to the peers or multicast.
//! - [`link`]: the interface's state and addresses over rtnetlink (link up, advert source,
//!   this host's own addresses).
//! - [`driver`]: the tokio task per instance that runs the state machine and puts the VIP
//!   where it says, through the same [`super::keeper::VipKeeper`] as the lease.
//!
//! Operator-facing description: `docs/ha.md`, section VRRP.

pub mod driver;
pub mod link;
pub mod packet;
pub mod socket;
pub mod state;

pub use driver::{VrrpInstance, run_vrrp};
