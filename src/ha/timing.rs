//! Lease timing derived from a VIP instance's `check_interval` and `check_timeout`.
//!
//! # Mapping
//! The seed's keys meant "run the lock check every `check_interval`" and "give up on the
//! check after `check_timeout`". alive-proxy keeps that meaning for the operator: the lock is
//! checked a few times per `check_interval`, and a dead holder's VIP moves within
//! `check_timeout`.
//!
//! | value | formula | default (1 s / 3 s) |
//! |---|---|---|
//! | renew period `R` (holder writes the lease) | `check_interval / 2` | 500 ms |
//! | poll period `P` (standby reads the lease) | `check_interval / 4` | 250 ms |
//! | lease duration `L` (written into the record) | `max(check_timeout - check_interval, check_interval, 400 ms)` | 2 s |
//! | safety margin `M` | `max(L / 4, 100 ms)` | 500 ms |
//! | renew deadline `D` (holder drops the VIP) | `L - M` | 1.5 s |
//!
//! Unplanned failover (holder dies) takes at most `L + P` + one write + netlink, i.e.
//! < 2.3 s with the defaults, and at least `L - R`. Planned handover (the holder releases)
//! takes at most `P` + one write, ≤ 0.3 s with the defaults.
//!
//! # Why the margin is what it is
//! A holder drops the VIP at `D` after it *sent* its last successful write (on its own
//! monotonic clock); a rival may take over only after it has seen that write's version
//! unchanged for `L` on *its* monotonic clock, starting when the read *returned*. Real time
//! orders the holder's send before the rival's receive, so the two never hold at once when
//! `D·(1+ρ) + t_drop < L·(1−ρ)`, with `ρ` the largest clock-rate error and `t_drop` the time
//! from the holder's deadline to the address being gone (timer wake-up + one netlink call).
//! `M = L/4` tolerates `ρ` up to ~10 % or a scheduling stall of up to `M − 2ρL` (≈ 450 ms
//! by default) — not a stopped process (SIGSTOP, VM pause) longer than that.

use std::time::Duration;

/// The floor for the margin: one netlink round trip plus a tokio timer wake-up on a loaded
/// host stay well below it.
const MIN_MARGIN: Duration = Duration::from_millis(100);
/// Below this the margin would eat the whole deadline.
const MIN_LEASE: Duration = Duration::from_millis(400);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often the holder renews (writes) the lease.
    pub renew_period: Duration,
    /// How often a standby host reads the lease.
    pub poll_period: Duration,
    /// Written into the record: how long rivals must see it unchanged before taking over.
    pub lease_duration: Duration,
    /// A holder that has not renewed for this long (since sending its last successful
    /// write) drops the VIP. Always `lease_duration - margin`.
    pub renew_deadline: Duration,
}

impl Timing {
    /// The mapping documented in the module doc.
    pub fn from_checks(check_interval: Duration, check_timeout: Duration) -> Timing {
        let check_interval = check_interval.max(Duration::from_millis(100));
        let lease_duration = check_timeout
            .saturating_sub(check_interval)
            .max(check_interval)
            .max(MIN_LEASE);
        let margin = (lease_duration / 4).max(MIN_MARGIN);
        Timing {
            renew_period: check_interval / 2,
            poll_period: check_interval / 4,
            lease_duration,
            renew_deadline: lease_duration.saturating_sub(margin),
        }
    }

    pub fn margin(&self) -> Duration {
        self.lease_duration - self.renew_deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn seed_defaults_give_two_second_lease_and_half_second_margin() {
        let t = Timing::from_checks(ms(1000), ms(3000));
        assert_eq!(t.renew_period, ms(500));
        assert_eq!(t.poll_period, ms(250));
        assert_eq!(t.lease_duration, ms(2000));
        assert_eq!(t.renew_deadline, ms(1500));
        assert_eq!(t.margin(), ms(500));
    }

    #[test]
    fn worst_case_failover_with_defaults_is_under_three_seconds() {
        let t = Timing::from_checks(ms(1000), ms(3000));
        assert!(t.lease_duration + t.poll_period < ms(3000));
        assert!(
            t.poll_period < ms(500),
            "planned handover bound is one poll period"
        );
    }

    #[test]
    fn timeout_not_above_interval_still_leaves_a_deadline_after_two_renewals() {
        let t = Timing::from_checks(ms(2000), ms(1000));
        assert_eq!(t.lease_duration, ms(2000));
        assert!(t.renew_deadline > t.renew_period);
        assert!(t.renew_deadline < t.lease_duration);
    }

    #[test]
    fn margin_never_below_floor() {
        let t = Timing::from_checks(ms(100), ms(300));
        assert!(t.margin() >= MIN_MARGIN, "{t:?}");
        assert!(t.renew_deadline > Duration::ZERO, "{t:?}");
    }
}
