//! One backend's live state, shared by all workers and carried across reloads: health
//! state, effective weight, the data path's suspect mark, the live session count and the
//! connection-threshold state. Workers touch only atomics here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::clock::now_ms;
use crate::config::{Backend, BackendKey};
use crate::health::BackendStatus;

/// What applying a health verdict did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HealthApplied {
    /// Up before, down now: live sessions may have to be closed.
    pub went_down: bool,
    /// State or weight changed: the scheduler must hear of it.
    pub changed: bool,
}

/// The shortest time a backend stays out of picks after a connect failure on the data path
/// when health does not answer sooner (health clears the mark when its re-probe finishes).
pub const SUSPECT_HOLD: Duration = Duration::from_secs(3);

/// How long the suspect mark must last so that health's verdict arrives first: a re-probe
/// that times out takes up to `(retry + 1) × connect_timeout + retry × delay_before_retry`
/// per checker (MISC_CHECK: its timeout instead of the connect timeout). Clearing the mark
/// earlier would send new connections to a dead backend before health has concluded.
pub fn suspect_hold(backend: &Backend) -> Duration {
    let worst_reprobe = backend
        .checks
        .iter()
        .map(|check| {
            let attempt = match &check.kind {
                crate::config::CheckKind::Misc(misc) => misc.timeout,
                _ => check.connect_timeout,
            };
            attempt.saturating_mul(check.retry.saturating_add(1))
                + check.delay_before_retry.saturating_mul(check.retry)
        })
        .max()
        .unwrap_or_default();
    // One second of slack for scheduling and the verdict's trip back to the data plane.
    SUSPECT_HOLD.max(worst_reprobe + Duration::from_secs(1))
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One backend's live state, shared by all workers and kept across reloads.
#[derive(Debug)]
pub struct BackendState {
    pub key: BackendKey,
    /// The weight the plan gave it; a reload that changes it overrides health's weight.
    plan_weight: AtomicU32,
    weight: AtomicU32,
    up: AtomicBool,
    suspect_until_ms: AtomicU64,
    /// See [`suspect_hold`]; follows the plan across reloads.
    suspect_hold_ms: AtomicU64,
    /// Sessions (and connects in progress) across all workers: lc/wlc/sed/nq read this.
    active: AtomicU32,
    upper_threshold: AtomicU32,
    lower_threshold: AtomicU32,
    /// Set when `active` reached `upper_threshold`; cleared below `lower_threshold`
    /// (keepalived's uthreshold/lthreshold hysteresis).
    overloaded: AtomicBool,
}

impl BackendState {
    pub(super) fn new(key: BackendKey, backend: Option<&Backend>) -> Self {
        let (weight, up, upper, lower, hold) = match backend {
            // `alpha`: down until the first successful check; no checks = always up.
            Some(b) => (
                b.weight,
                !b.alpha || b.checks.is_empty(),
                b.upper_threshold,
                b.lower_threshold,
                suspect_hold(b),
            ),
            // The sorry server: always up, weight 1, no thresholds.
            None => (1, true, 0, 0, SUSPECT_HOLD),
        };
        BackendState {
            key,
            plan_weight: AtomicU32::new(weight),
            weight: AtomicU32::new(weight),
            up: AtomicBool::new(up),
            suspect_until_ms: AtomicU64::new(0),
            suspect_hold_ms: AtomicU64::new(duration_ms(hold)),
            active: AtomicU32::new(0),
            upper_threshold: AtomicU32::new(upper),
            lower_threshold: AtomicU32::new(lower),
            overloaded: AtomicBool::new(false),
        }
    }

    pub(super) fn update_from_plan(&self, backend: &Backend) {
        let old_plan_weight = self.plan_weight.swap(backend.weight, Ordering::Relaxed);
        if old_plan_weight != backend.weight {
            self.weight.store(backend.weight, Ordering::Relaxed);
        }
        self.upper_threshold
            .store(backend.upper_threshold, Ordering::Relaxed);
        self.lower_threshold
            .store(backend.lower_threshold, Ordering::Relaxed);
        self.suspect_hold_ms
            .store(duration_ms(suspect_hold(backend)), Ordering::Relaxed);
    }

    /// Applies health's verdict and clears the suspect mark (the re-probe it waited for has
    /// answered). Returns whether the backend went up or down, and whether that changed its
    /// state or weight (the scheduler must then hear of it).
    pub(super) fn apply_health(&self, status: BackendStatus) -> HealthApplied {
        self.suspect_until_ms.store(0, Ordering::Relaxed);
        let was_up = self.up.load(Ordering::Relaxed);
        let old_weight = self.weight.load(Ordering::Relaxed);
        match status {
            BackendStatus::Up { weight } => {
                self.weight.store(weight, Ordering::Relaxed);
                self.up.store(true, Ordering::Relaxed);
            }
            BackendStatus::Down => self.up.store(false, Ordering::Relaxed),
        }
        let now_up = self.up.load(Ordering::Relaxed);
        HealthApplied {
            went_down: was_up && !now_up,
            changed: was_up != now_up || old_weight != self.weight.load(Ordering::Relaxed),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.key.backend
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn is_suspect(&self, now_ms: u64) -> bool {
        self.suspect_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// A connect on the data path failed: keep new connections away until health re-probes.
    pub fn mark_suspect(&self) {
        let hold = self.suspect_hold_ms.load(Ordering::Relaxed);
        self.suspect_until_ms
            .store(now_ms().saturating_add(hold), Ordering::Relaxed);
    }

    /// Whether the thresholds let it take one more session (updates the hysteresis flag).
    pub fn under_threshold(&self) -> bool {
        let upper = self.upper_threshold.load(Ordering::Relaxed);
        if upper == 0 {
            return true;
        }
        let active = self.active();
        if self.overloaded.load(Ordering::Relaxed) {
            let lower = match self.lower_threshold.load(Ordering::Relaxed) {
                0 => upper,
                lower => lower,
            };
            if active < lower {
                self.overloaded.store(false, Ordering::Relaxed);
                return true;
            }
            return false;
        }
        if active >= upper {
            self.overloaded.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Eligible for a new connection (before per-connection "already tried").
    pub fn eligible(&self, now_ms: u64) -> bool {
        self.is_up() && self.weight() > 0 && !self.is_suspect(now_ms) && self.under_threshold()
    }

    /// Counts a session (or a connect in progress); the guard uncounts it when dropped.
    pub fn open_session(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(self))
    }
}

/// Decrements a backend's active count on drop.
#[derive(Debug)]
pub struct ActiveGuard(Arc<BackendState>);

impl ActiveGuard {
    pub fn backend(&self) -> &Arc<BackendState> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
