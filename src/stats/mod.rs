//! Statistics: what the load balancer is doing and how fast.
//!
//! - [`registry`]: [`StatsRegistry`] and the per-worker recording handles the data plane
//!   holds ([`WorkerStats`], [`ServiceStats`], [`BackendStats`]): single-writer counters and
//!   histograms, no lock or contended atomic on the hot path.
//! - [`histogram`]: the lock-free latency recorder and its merged summary.
//! - [`control`]: [`ControlState`], health / HA / plan state pushed by the control plane.
//! - [`events`]: [`LocalEvents`], process-wide counters of exhaustion, passive failures,
//!   timeouts and admin connections.
//! - [`snapshot`]: [`StatsSnapshot`], everything merged on demand (serde).
//! - [`admin`]: the admin Unix socket and the HTTP listener (`/metrics`, `/healthz`, `/readyz`).
//! - [`prometheus`]: the snapshot encoded as Prometheus metrics.
//! - [`cli`] and [`table`]: `alive-proxy stats`.

pub mod admin;
pub mod cli;
pub mod control;
pub mod events;
pub mod histogram;
mod http;
pub mod prometheus;
pub mod registry;
pub mod snapshot;
pub mod socket;
pub mod table;

pub use admin::Readiness;
pub use control::{CertExpiry, ControlState, HealthState, HealthView, VipRole, VipView};
pub use events::LocalEvents;
pub use histogram::LatencySummary;
pub use registry::{BackendStats, ServiceStats, StatsRegistry, WorkerStats};
pub use snapshot::{BackendSnapshot, InstanceSnapshot, ServiceSnapshot, StatsSnapshot};
