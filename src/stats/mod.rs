//! Statistics: what the load balancer is doing and how fast.
//!
//! - [`registry`]: [`StatsRegistry`]: the data plane's recording shards
//!   ([`crate::counters`]: single-writer counters and histograms) and the control state.
//! - [`control`]: [`ControlState`], health / HA / plan state pushed by the control plane
//!   through their observer traits, which it implements.
//! - [`events`]: `/metrics` for the process-wide event counters
//!   ([`crate::counters::LocalEvents`]).
//! - [`snapshot`]: [`StatsSnapshot`], everything merged on demand (serde).
//! - [`admin`]: the admin Unix socket and the HTTP listener (`/metrics`, `/healthz`, `/readyz`).
//! - [`prometheus`]: the snapshot encoded as Prometheus metrics; `families` holds the
//!   encoding helpers it shares with [`events`].
//! - [`cli`] and [`table`]: `alive-proxy stats`.

pub mod admin;
mod bgp;
pub mod cli;
pub mod control;
pub mod events;
mod families;
mod http;
pub mod prometheus;
pub mod registry;
pub mod snapshot;
pub mod socket;
pub mod table;

pub use crate::counters::LatencySummary;
pub use admin::Readiness;
pub use control::{CertExpiry, ControlState, HealthState, HealthView, VipRole, VipView};
pub use registry::StatsRegistry;
pub use snapshot::{BackendSnapshot, InstanceSnapshot, ServiceSnapshot, StatsSnapshot};
