//! When this host should attract the VIP: the decision, pure (health and a monotonic `now`
//! in, "announce or not, and why" out), so it is tested without a kernel or a daemon.
//!
//! Announce while the instance's services have quorum and the process is not stopping
//! (the data plane already listens when HA starts). Losing quorum withdraws at once: every
//! connection the router still sends here would go to a host that cannot serve it.
//! Regaining it re-announces only after quorum held for the whole hold-down, so a backend
//! flapping at the edge does not flap the route (each flap would rehash flows on the router
//! and cost BGP updates). The first announcement after start waits for no hold-down: a host
//! that comes up healthy should take its share at once.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Quorum on every service: announced.
    Serving,
    /// A service lacks quorum: withdrawn.
    NoQuorum,
    /// Quorum is back but has not held for the hold-down yet: still withdrawn.
    HoldDown { until: Instant },
    /// The process is stopping: withdrawn for good.
    Stopping,
}

impl Reason {
    pub fn describe(self, now: Instant) -> String {
        match self {
            Reason::Serving => "serving".to_owned(),
            Reason::NoQuorum => "no quorum".to_owned(),
            Reason::HoldDown { until } => format!(
                "hold-down, {:.1}s left",
                until.saturating_duration_since(now).as_secs_f64()
            ),
            Reason::Stopping => "stopping".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub announce: bool,
    pub reason: Reason,
}

#[derive(Debug)]
pub struct Gate {
    hold_down: Duration,
    /// Whether the route was ever announced (the first time needs no hold-down).
    announced_once: bool,
    /// While withdrawn with quorum back: since when quorum has held.
    up_since: Option<Instant>,
    announced: bool,
    stopping: bool,
}

impl Gate {
    pub fn new(hold_down: Duration) -> Gate {
        Gate {
            hold_down,
            announced_once: false,
            up_since: None,
            announced: false,
            stopping: false,
        }
    }

    /// Reload: a new hold-down applies from the next update.
    pub fn set_hold_down(&mut self, hold_down: Duration) {
        self.hold_down = hold_down;
    }

    /// From now on: withdrawn, whatever health says.
    pub fn stop(&mut self) {
        self.stopping = true;
        self.announced = false;
    }

    /// `quorum`: `Some(true)` every service has quorum, `Some(false)` one has not, `None`
    /// health has not reported (no services, or not yet): no information is no failure.
    pub fn update(&mut self, now: Instant, quorum: Option<bool>) -> Verdict {
        let reason = if self.stopping {
            Reason::Stopping
        } else if quorum == Some(false) {
            self.up_since = None;
            Reason::NoQuorum
        } else if self.announced || !self.announced_once {
            Reason::Serving
        } else {
            let since = *self.up_since.get_or_insert(now);
            let until = since + self.hold_down;
            if now >= until {
                Reason::Serving
            } else {
                Reason::HoldDown { until }
            }
        };
        self.announced = reason == Reason::Serving;
        if self.announced {
            self.announced_once = true;
            self.up_since = None;
        }
        Verdict {
            announce: self.announced,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(5);

    #[test]
    fn announces_at_start_without_hold_down() {
        let t0 = Instant::now();
        let mut gate = Gate::new(HOLD);
        assert_eq!(gate.update(t0, Some(true)).reason, Reason::Serving);
    }

    #[test]
    fn no_report_yet_is_not_a_failure() {
        let mut gate = Gate::new(HOLD);
        assert!(gate.update(Instant::now(), None).announce);
    }

    #[test]
    fn starting_without_quorum_announces_as_soon_as_it_comes() {
        let t0 = Instant::now();
        let mut gate = Gate::new(HOLD);
        assert_eq!(gate.update(t0, Some(false)).reason, Reason::NoQuorum);
        let later = t0 + Duration::from_millis(10);
        assert!(
            gate.update(later, Some(true)).announce,
            "never announced: no hold-down"
        );
    }

    #[test]
    fn losing_quorum_withdraws_at_once_and_regaining_waits_the_hold_down() {
        let t0 = Instant::now();
        let mut gate = Gate::new(HOLD);
        assert!(gate.update(t0, Some(true)).announce);
        let lost = t0 + Duration::from_secs(10);
        assert_eq!(gate.update(lost, Some(false)).reason, Reason::NoQuorum);
        let back = lost + Duration::from_secs(1);
        assert_eq!(
            gate.update(back, Some(true)).reason,
            Reason::HoldDown { until: back + HOLD }
        );
        assert!(
            !gate
                .update(back + HOLD - Duration::from_millis(1), Some(true))
                .announce
        );
        assert!(gate.update(back + HOLD, Some(true)).announce);
    }

    #[test]
    fn a_flap_during_the_hold_down_starts_it_again() {
        let t0 = Instant::now();
        let mut gate = Gate::new(HOLD);
        gate.update(t0, Some(true));
        gate.update(t0, Some(false));
        let back = t0 + Duration::from_secs(1);
        gate.update(back, Some(true));
        gate.update(back + Duration::from_secs(3), Some(false));
        let again = back + Duration::from_secs(4);
        gate.update(again, Some(true));
        assert!(
            !gate
                .update(again + Duration::from_secs(4), Some(true))
                .announce
        );
        assert!(gate.update(again + HOLD, Some(true)).announce);
    }

    #[test]
    fn stopping_withdraws_for_good() {
        let t0 = Instant::now();
        let mut gate = Gate::new(HOLD);
        gate.update(t0, Some(true));
        gate.stop();
        let v = gate.update(t0 + HOLD * 10, Some(true));
        assert_eq!((v.announce, v.reason), (false, Reason::Stopping));
    }

    #[test]
    fn zero_hold_down_re_announces_at_once() {
        let t0 = Instant::now();
        let mut gate = Gate::new(Duration::ZERO);
        gate.update(t0, Some(true));
        gate.update(t0, Some(false));
        assert!(gate.update(t0, Some(true)).announce);
    }
}
