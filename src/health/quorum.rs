//! A service's quorum with hysteresis (keepalived `update_quorum_state`). Pure.
//!
//! The live weight is the summed weight of alive backends. Starting up, the quorum is up when
//! live ≥ quorum + hysteresis. While up, it is lost when live < quorum − hysteresis or live is
//! 0; while down, it is gained when live ≥ quorum + hysteresis. The gap between the two
//! thresholds is what stops a backend flapping at the edge from flapping the sorry server.

use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumState {
    quorum: u32,
    hysteresis: u32,
    up: bool,
}

/// A quorum crossing, with keepalived's wording for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumChange {
    pub up: bool,
    pub reason: String,
}

impl QuorumState {
    pub fn new(quorum: u32, hysteresis: u32, live_weight: u64) -> QuorumState {
        QuorumState {
            quorum,
            hysteresis,
            up: live_weight >= u64::from(quorum) + u64::from(hysteresis),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Reload: new thresholds, applied at the next update (keepalived re-evaluates at once,
    /// and so do callers by calling [`QuorumState::update`] right after).
    pub fn reconfigure(&mut self, quorum: u32, hysteresis: u32) {
        self.quorum = quorum;
        self.hysteresis = hysteresis;
    }

    pub fn update(&mut self, service: SocketAddr, live_weight: u64) -> Option<QuorumChange> {
        let quorum = i64::from(self.quorum);
        let hysteresis = i64::from(self.hysteresis);
        let live = i64::try_from(live_weight).unwrap_or(i64::MAX);
        if !self.up && live >= quorum + hysteresis {
            self.up = true;
            return Some(QuorumChange {
                up: true,
                reason: format!(
                    "service {service} gained quorum: live weight {live} >= {quorum}+{hysteresis}"
                ),
            });
        }
        if self.up && (live == 0 || live < quorum - hysteresis) {
            self.up = false;
            return Some(QuorumChange {
                up: false,
                reason: format!(
                    "service {service} lost quorum: live weight {live} < {quorum}-{hysteresis}"
                ),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs() -> SocketAddr {
        "192.0.2.1:80".parse().unwrap()
    }

    #[test]
    fn starts_up_only_at_quorum_plus_hysteresis() {
        assert!(QuorumState::new(2, 1, 3).is_up());
        assert!(!QuorumState::new(2, 1, 2).is_up());
    }

    #[test]
    fn goes_down_below_quorum_minus_hysteresis_and_up_at_plus() {
        let mut q = QuorumState::new(3, 1, 5);
        assert_eq!(q.update(vs(), 2), None, "2 >= 3-1: still up");
        let lost = q.update(vs(), 1).expect("1 < 3-1 loses quorum");
        assert!(!lost.up);
        assert_eq!(q.update(vs(), 3), None, "3 < 3+1: stays down");
        let gained = q.update(vs(), 4).expect("4 >= 3+1 gains quorum");
        assert!(gained.up);
    }

    #[test]
    fn hysteresis_stops_flapping_at_the_edge() {
        let mut q = QuorumState::new(2, 1, 4);
        let mut changes = 0;
        for live in [2, 1, 2, 1, 2, 1] {
            if q.update(vs(), live).is_some() {
                changes += 1;
            }
        }
        assert_eq!(changes, 0, "oscillating between 1 and 2 must not cross 2±1");
    }

    #[test]
    fn zero_live_weight_always_loses_quorum() {
        let mut q = QuorumState::new(1, 5, 10);
        assert!(q.update(vs(), 0).is_some_and(|c| !c.up));
    }
}
