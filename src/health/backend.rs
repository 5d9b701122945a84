//! One backend's combined health: keepalived's real-server state over its checkers.
//!
//! As keepalived's `num_failed_checkers`: a backend is alive only while every one of its
//! checkers is up. Its weight is the configured weight plus what misc_dynamic checkers add
//! (keepalived's `effective_weight`, clamped to 0..=65535 like `real_weight`). A backend that
//! is not alive is reported `Down`, or `Up { weight: 0 }` (kept, drained) with
//! `inhibit_on_failure`. Pure: no I/O, no clock.

use std::collections::BTreeMap;

use crate::health::sink::BackendStatus;

/// IPVS's weight limit, kept so weights mean what they meant under keepalived.
pub const WEIGHT_LIMIT: i64 = 65535;

/// Identifies one checker of a backend for the life of the process (survives reloads).
pub type CheckId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CheckView {
    up: bool,
    dynamic_weight: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    base_weight: u32,
    inhibit_on_failure: bool,
    checks: BTreeMap<CheckId, CheckView>,
}

impl BackendHealth {
    pub fn new(base_weight: u32, inhibit_on_failure: bool) -> BackendHealth {
        BackendHealth {
            base_weight,
            inhibit_on_failure,
            checks: BTreeMap::new(),
        }
    }

    /// Reload: the backend's own settings changed; its checkers keep their state.
    pub fn reconfigure(&mut self, base_weight: u32, inhibit_on_failure: bool) {
        self.base_weight = base_weight;
        self.inhibit_on_failure = inhibit_on_failure;
    }

    pub fn add_check(&mut self, id: CheckId, up: bool, dynamic_weight: Option<u32>) {
        self.checks.insert(id, CheckView { up, dynamic_weight });
    }

    pub fn remove_check(&mut self, id: CheckId) {
        self.checks.remove(&id);
    }

    pub fn has_check(&self, id: CheckId) -> bool {
        self.checks.contains_key(&id)
    }

    /// Records a checker's new state; returns whether the backend's status changed.
    pub fn update_check(&mut self, id: CheckId, up: bool, dynamic_weight: Option<u32>) -> bool {
        let before = self.status();
        if let Some(view) = self.checks.get_mut(&id) {
            view.up = up;
            view.dynamic_weight = dynamic_weight;
        }
        self.status() != before
    }

    /// Every checker up (a backend without checkers is always alive).
    pub fn alive(&self) -> bool {
        self.checks.values().all(|c| c.up)
    }

    /// keepalived's `real_weight(effective_weight)`: the configured weight plus, for each
    /// misc_dynamic checker, (its weight − the configured weight). With one such checker the
    /// backend's weight is that checker's; with two, keepalived adds both offsets.
    pub fn effective_weight(&self) -> u32 {
        let base = i64::from(self.base_weight);
        let offsets: i64 = self
            .checks
            .values()
            .filter_map(|c| c.dynamic_weight)
            .map(|w| i64::from(w) - base)
            .sum();
        let weight = (base + offsets).clamp(0, WEIGHT_LIMIT);
        u32::try_from(weight).unwrap_or(0)
    }

    /// What the data plane should do with this backend.
    pub fn status(&self) -> BackendStatus {
        if self.alive() {
            BackendStatus::Up {
                weight: self.effective_weight(),
            }
        } else if self.inhibit_on_failure {
            BackendStatus::Up { weight: 0 }
        } else {
            BackendStatus::Down
        }
    }

    /// What this backend contributes to its service's quorum: keepalived's
    /// `weigh_live_realservers` counts alive servers only (an inhibited one counts 0).
    pub fn live_weight(&self) -> u64 {
        if self.alive() {
            u64::from(self.effective_weight())
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_without_checks_is_up_at_its_weight() {
        let b = BackendHealth::new(3, false);
        assert_eq!(b.status(), BackendStatus::Up { weight: 3 });
    }

    #[test]
    fn backend_is_down_when_any_checker_is_down() {
        let mut b = BackendHealth::new(1, false);
        b.add_check(1, true, None);
        b.add_check(2, true, None);
        assert!(
            b.update_check(2, false, None),
            "one checker down must change status"
        );
        assert_eq!(b.status(), BackendStatus::Down);
        assert!(!b.update_check(1, false, None), "already down: no change");
        assert!(
            !b.update_check(2, true, None),
            "checker 1 still down: no change"
        );
        assert!(b.update_check(1, true, None));
        assert_eq!(b.status(), BackendStatus::Up { weight: 1 });
    }

    #[test]
    fn inhibit_on_failure_keeps_backend_at_weight_zero() {
        let mut b = BackendHealth::new(5, true);
        b.add_check(1, false, None);
        assert_eq!(b.status(), BackendStatus::Up { weight: 0 });
        assert_eq!(
            b.live_weight(),
            0,
            "an inhibited backend does not count for quorum"
        );
    }

    #[test]
    fn dynamic_weight_replaces_configured_weight() {
        let mut b = BackendHealth::new(1, false);
        b.add_check(1, true, None);
        assert!(b.update_check(1, true, Some(10)));
        assert_eq!(b.status(), BackendStatus::Up { weight: 10 });
        b.update_check(1, true, Some(0));
        assert_eq!(b.status(), BackendStatus::Up { weight: 0 });
        b.reconfigure(5, false);
        assert_eq!(
            b.effective_weight(),
            0,
            "still the script's weight after a reload"
        );
    }

    #[test]
    fn two_dynamic_checkers_add_their_offsets_and_clamp() {
        let mut b = BackendHealth::new(2, false);
        b.add_check(1, true, Some(5));
        b.add_check(2, true, Some(4));
        assert_eq!(b.effective_weight(), 2 + 3 + 2);
        b.update_check(2, true, Some(65535));
        assert_eq!(b.effective_weight(), 65535);
    }
}
