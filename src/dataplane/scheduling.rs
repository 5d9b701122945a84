//! The seam between the session path and the scheduler algorithms: a per-connection view
//! of the backends ([`ConnCandidates`]) and the service's scheduler.
//!
//! The algorithms live in `scheduler/` ([`SchedulerState`]); this file adapts the routing state to
//! them (eligibility = up, not suspect, weight > 0, under threshold, not yet tried for this
//! client connection).

use std::net::SocketAddr;
use std::sync::Arc;

use super::backend::BackendState;
use super::clock::now_ms;
use super::scheduler::{Candidates, SchedulerState};
use crate::config::Service;

/// Backends already tried for one client connection (bounded by `connect_attempts`, so a
/// short list beats a bitset).
#[derive(Debug, Default)]
pub struct Tried(Vec<usize>);

impl Tried {
    pub fn insert(&mut self, index: usize) {
        self.0.push(index);
    }

    pub fn contains(&self, index: usize) -> bool {
        self.0.contains(&index)
    }
}

/// The backends of one service as one client connection sees them.
pub struct ConnCandidates<'a> {
    pub backends: &'a [Arc<BackendState>],
    pub tried: &'a Tried,
    pub now_ms: u64,
}

impl Candidates for ConnCandidates<'_> {
    fn len(&self) -> usize {
        self.backends.len()
    }

    fn weight(&self, i: usize) -> u32 {
        self.backends[i].weight()
    }

    fn active(&self, i: usize) -> u32 {
        self.backends[i].active()
    }

    fn available(&self, i: usize) -> bool {
        !self.tried.contains(i) && self.backends[i].eligible(self.now_ms)
    }

    fn addr(&self, i: usize) -> Option<SocketAddr> {
        Some(self.backends[i].addr())
    }
}

/// Tells the scheduler that membership or weights changed (health verdicts, reloads).
pub fn membership_changed(scheduler: &SchedulerState, backends: &[Arc<BackendState>]) {
    let tried = Tried::default();
    scheduler.on_membership_change(&ConnCandidates {
        backends,
        tried: &tried,
        now_ms: now_ms(),
    });
}

/// The scheduler for `service` in a new snapshot: the previous one when the algorithm and
/// persistence are unchanged (so rr positions, Maglev tables and affinities survive a
/// reload), else a fresh one.
pub fn scheduler_for(
    service: &Service,
    previous: Option<(&Service, &Arc<SchedulerState>)>,
) -> Arc<SchedulerState> {
    match previous {
        Some((old, state))
            if old.scheduler == service.scheduler && old.persistence == service.persistence =>
        {
            Arc::clone(state)
        }
        _ => Arc::new(SchedulerState::new(service)),
    }
}
