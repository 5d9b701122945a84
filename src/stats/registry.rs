//! The stats registry: the data plane's recording shards ([`crate::counters`]) and the
//! control-plane state, the two things a snapshot merges.

use std::sync::Arc;
use std::time::Instant;

use super::control::ControlState;
use crate::counters::{Counters, LocalEvents, WorkerStats};

/// Everything the process counts: per-worker shards plus the control-plane state.
pub struct StatsRegistry {
    pub(crate) started: Instant,
    counters: Arc<Counters>,
    control: Arc<ControlState>,
}

impl std::fmt::Debug for StatsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsRegistry")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl StatsRegistry {
    pub fn new() -> Arc<StatsRegistry> {
        Arc::new(StatsRegistry {
            started: Instant::now(),
            counters: Counters::new(),
            control: Arc::new(ControlState::new()),
        })
    }

    /// What the data plane records into.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// A new shard for one data-plane worker (see [`Counters::worker`]).
    pub fn worker(&self, worker_id: usize) -> WorkerStats {
        self.counters.worker(worker_id)
    }

    /// Process-wide event counters (exhaustion, passive failures, timeouts, admin).
    pub fn events(&self) -> Arc<LocalEvents> {
        self.counters.events()
    }

    /// Health, HA and plan state, pushed by the control plane.
    pub fn control(&self) -> Arc<ControlState> {
        Arc::clone(&self.control)
    }

    pub(crate) fn shards(&self) -> Vec<Arc<crate::counters::Shard>> {
        self.counters.shards()
    }
}
