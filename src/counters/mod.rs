//! What the data plane records: per-worker shards of counters and histograms
//! ([`shards`]), the histogram cells they use ([`histogram`]) and the process-wide event
//! counters ([`events`]). Workers write; [`crate::stats`] reads and merges, and this module
//! knows nothing of it — recording sits below every subsystem that records.

pub mod events;
pub mod histogram;
pub mod shards;

pub use events::LocalEvents;
pub use histogram::LatencySummary;
pub use shards::{BackendStats, Counters, ServiceStats, WorkerStats};
pub(crate) use shards::{Shard, lock};
