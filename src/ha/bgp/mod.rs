//! BGP mode (`vip.bgp`): active-active VIPs behind the upstream router's ECMP. Every host
//! that can serve the VIP has it announced over BGP; alive-proxy decides *when*, and an
//! existing routing daemon (BIRD 2) speaks BGP.
//!
//! - [`gate`]: when to announce (quorum, hold-down, stopping). Pure.
//! - [`route`]: the one thing written: the VIP's /32 or /128 blackhole route in a kernel
//!   table of alive-proxy's own, which BIRD's `kernel` protocol learns and exports.
//! - [`bird`]: BIRD's control socket, read-only, for sessions and the route's presence;
//!   [`online`]: the same for `check --online`.
//! - [`note`]: the drain note that makes the peers send a stopping host's sessions back to
//!   it after the router rehashed them (second chance).
//! - [`track`]: conntrack kept on while peers may send drain notes, so this host's own
//!   sessions are never taken for a peer's.
//! - [`driver`]: the task per instance: VIP on `lo`, route per the gate, stop = withdraw,
//!   confirm, then drain.
//!
//! Operator documentation, BIRD configuration and measurements: `docs/bgp.md`.

pub mod bird;
pub mod driver;
pub mod gate;
pub mod note;
pub mod online;
pub mod route;
pub mod track;

pub use driver::{BgpTask, run_bgp};
pub use route::{KernelRoute, RouteOps};
