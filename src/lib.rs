//! alive-proxy: a userspace TCP load balancer that replaces keepalived + kernel IPVS in
//! front of Kubernetes ingress (ALB) nodes, reading the same `alive.yaml`.
//!
//! # Layout
//! - [`config`]: `alive.yaml` and its pasted keepalived blocks → a validated [`config::Plan`].
//! - [`counters`]: what the data plane records (per-worker counter and histogram shards,
//!   process-wide event counters), below everything that records.
//! - [`dataplane`]: thread-per-core monoio workers: listeners on every VIP:port, schedulers,
//!   the session relay. Reads the routing snapshot; never waits on the control plane.
//! - [`health`]: keepalived's checkers (TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK) as pure
//!   state machines driven by tokio probes, plus passive detection fed by the data plane.
//! - [`ha`]: who holds each VIP: leases (Kubernetes, etcd), the address over netlink, and
//!   gratuitous ARP / unsolicited NA.
//! - [`daemon`]: what `run` claims from the host first: the single-instance lock and the
//!   open-file limit with its budget (sessions, splice pipes, control plane).
//! - [`stats`]: the counters merged with health and HA state for `alive-proxy stats`, the
//!   admin socket and Prometheus `/metrics`.
//!
//! - [`notify`]: sd_notify(3) readiness, reload and stop notices for `Type=notify` units.
//! - [`check`], [`app`]: the commands `check` and `run`, which put all of the above together.
//!
//! Dependencies point one way: config, counters and daemon at the bottom; then health, then
//! the data plane (which implements health's `HealthSink` and sends it `PassiveEvent`s:
//! health defines that seam and never imports the data plane), and HA, which imports
//! neither; all three report upward through small observer traits and never import stats;
//! then stats; then the app.
//!
//! The control plane (tokio) and the data plane (monoio) meet in three places only: the
//! routing snapshot (arc-swap), per-worker stats, and a command channel per worker.

// Panics are for bugs: what the input, the network or the OS can make fail is handled.
// Tests may unwrap (clippy.toml).
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod check;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod dataplane;
pub mod ha;
pub mod health;
pub mod notify;
pub mod stats;
