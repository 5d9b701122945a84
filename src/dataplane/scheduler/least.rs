//! The load-comparing schedulers: lc, wlc, sed, nq, fo, ovf, twos.
//!
//! IPVS measures a backend's load as `activeconns * 256 + inactconns` (the "overhead"),
//! where inactive connections are the ones in FIN/TIME_WAIT states it still tracks. A proxy
//! has no such half-dead connections: a session is live until both legs are closed. So the
//! overhead here is the live-session count `active(i)` shared by all workers; ordering
//! between backends is the same as IPVS's whenever IPVS's inactive counts are zero.
//! Ties go to the earlier backend in the list, as in IPVS (strict comparisons while walking).

use super::Candidates;
use super::hash::splitmix64;

/// lc: fewest active sessions, weights ignored except that weight 0 drains.
pub(crate) fn least_connection<C: Candidates>(c: &C) -> Option<usize> {
    min_by_cost(c, |i| u64::from(c.active(i)), |_| 1)
}

/// wlc: fewest active sessions per unit of weight.
pub(crate) fn weighted_least_connection<C: Candidates>(c: &C) -> Option<usize> {
    min_by_cost(c, |i| u64::from(c.active(i)), |i| u64::from(c.weight(i)))
}

/// sed: shortest expected delay, (active + 1) / weight, so an idle heavy backend is
/// preferred over an idle light one.
pub(crate) fn shortest_expected_delay<C: Candidates>(c: &C) -> Option<usize> {
    min_by_cost(
        c,
        |i| u64::from(c.active(i)) + 1,
        |i| u64::from(c.weight(i)),
    )
}

/// nq: never queue: the first idle backend if any, else as sed.
pub(crate) fn never_queue<C: Candidates>(c: &C) -> Option<usize> {
    (0..c.len())
        .find(|&i| c.available(i) && c.active(i) == 0)
        .or_else(|| shortest_expected_delay(c))
}

/// fo: weighted failover: the available backend with the highest weight (first on ties).
pub(crate) fn failover<C: Candidates>(c: &C) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for i in (0..c.len()).filter(|&i| c.available(i)) {
        let w = c.weight(i);
        if best.is_none_or(|(_, bw)| w > bw) {
            best = Some((i, w));
        }
    }
    best.map(|(i, _)| i)
}

/// ovf: overflow-connection: the highest-weight backend whose active sessions have not
/// exceeded its weight (IPVS skips a backend once `activeconns > weight`).
pub(crate) fn overflow<C: Candidates>(c: &C) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for i in (0..c.len()).filter(|&i| c.available(i)) {
        let w = c.weight(i);
        if c.active(i) > w {
            continue;
        }
        if best.is_none_or(|(_, bw)| w > bw) {
            best = Some((i, w));
        }
    }
    best.map(|(i, _)| i)
}

/// twos: weighted random choice of two, keep the less loaded per weight. `random` yields
/// the two draws (a deterministic generator shared by the service's workers).
pub(crate) fn two_choices<C: Candidates>(c: &C, draw: u64) -> Option<usize> {
    let total: u64 = (0..c.len())
        .filter(|&i| c.available(i))
        .map(|i| u64::from(c.weight(i)))
        .sum();
    if total == 0 {
        return None;
    }
    // IPVS draws in [0, total] inclusive; 0 lands on the first backend, as there.
    let mut r1 = (draw as u32) as u64 % (total + 1);
    let mut r2 = (splitmix64(draw) as u32) as u64 % (total + 1);
    let (mut first, mut second) = (None, None);
    for i in (0..c.len()).filter(|&i| c.available(i)) {
        let w = u64::from(c.weight(i));
        if first.is_none() {
            if r1 <= w {
                first = Some(i);
            } else {
                r1 -= w;
            }
        }
        if second.is_none() {
            if r2 <= w {
                second = Some(i);
            } else {
                r2 -= w;
            }
        }
        if first.is_some() && second.is_some() {
            break;
        }
    }
    let (a, b) = (first?, second?);
    let (load_a, load_b) = (u64::from(c.active(a)), u64::from(c.active(b)));
    // Prefer b when load_a / w_a > load_b / w_b.
    if u64::from(c.weight(b)) * load_a > u64::from(c.weight(a)) * load_b {
        Some(b)
    } else {
        Some(a)
    }
}

/// The available backend with the least `cost(i) / weight(i)`, compared as IPVS does
/// without division (`cost_l * w_i > cost_i * w_l` means i is lighter); first on ties.
pub(crate) fn min_by_cost<C: Candidates>(
    c: &C,
    cost: impl Fn(usize) -> u64,
    weight: impl Fn(usize) -> u64,
) -> Option<usize> {
    let mut least: Option<(usize, u64, u64)> = None;
    for i in (0..c.len()).filter(|&i| c.available(i) && c.weight(i) > 0) {
        let (ci, wi) = (cost(i), weight(i));
        match least {
            Some((_, cl, wl)) if cl * wi <= ci * wl => {}
            _ => least = Some((i, ci, wi)),
        }
    }
    least.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::Fake;
    use super::*;

    #[test]
    fn lc_prefers_the_idle_backend() {
        let c = Fake::weights(&[1, 1, 1]).with_active(&[5, 0, 2]);
        assert_eq!(least_connection(&c), Some(1));
    }

    #[test]
    fn lc_ignores_weight_but_never_picks_a_drained_backend() {
        let c = Fake::weights(&[100, 1, 0]).with_active(&[5, 4, 0]);
        assert_eq!(least_connection(&c), Some(1), "lc compares counts only");
    }

    #[test]
    fn lc_breaks_ties_toward_the_first_backend() {
        let c = Fake::weights(&[1, 1]).with_active(&[3, 3]);
        assert_eq!(least_connection(&c), Some(0));
    }

    #[test]
    fn wlc_divides_load_by_weight() {
        let c = Fake::weights(&[1, 3]).with_active(&[2, 5]);
        assert_eq!(weighted_least_connection(&c), Some(1), "5/3 < 2/1");
    }

    #[test]
    fn wlc_skips_unavailable() {
        let mut c = Fake::weights(&[1, 1]).with_active(&[0, 9]);
        c.set_available(0, false);
        assert_eq!(weighted_least_connection(&c), Some(1));
    }

    #[test]
    fn sed_sends_idle_traffic_to_the_heavier_backend() {
        let c = Fake::weights(&[1, 4]).with_active(&[0, 0]);
        assert_eq!(shortest_expected_delay(&c), Some(1), "(0+1)/4 < (0+1)/1");
        assert_eq!(
            weighted_least_connection(&c),
            Some(0),
            "wlc ties 0/1 == 0/4 to first"
        );
    }

    #[test]
    fn nq_takes_any_idle_backend_before_weights_count() {
        let c = Fake::weights(&[10, 1]).with_active(&[3, 0]);
        assert_eq!(never_queue(&c), Some(1));
        let busy = Fake::weights(&[10, 1]).with_active(&[3, 1]);
        assert_eq!(never_queue(&busy), Some(0), "(3+1)/10 < (1+1)/1");
    }

    #[test]
    fn fo_sends_everything_to_the_highest_weight_available() {
        let mut c = Fake::weights(&[5, 10, 10]);
        assert_eq!(failover(&c), Some(1), "first of the highest weights");
        c.set_available(1, false);
        assert_eq!(failover(&c), Some(2));
    }

    #[test]
    fn ovf_overflows_once_active_exceeds_weight() {
        let c = Fake::weights(&[2, 5]).with_active(&[0, 5]);
        assert_eq!(overflow(&c), Some(1), "5 active is not above weight 5");
        let full = Fake::weights(&[2, 5]).with_active(&[0, 6]);
        assert_eq!(overflow(&full), Some(0));
        let all_full = Fake::weights(&[2, 5]).with_active(&[3, 6]);
        assert_eq!(overflow(&all_full), None);
    }

    #[test]
    fn twos_keeps_the_lighter_of_two_and_spreads_by_weight() {
        let c = Fake::weights(&[1, 1, 2]);
        let mut counts = [0usize; 3];
        for seq in 0..4000u64 {
            counts[two_choices(&c, splitmix64(seq)).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&n| n > 500),
            "every backend gets traffic: {counts:?}"
        );
        // IPVS draws in [0, total], so with weights 1,1 a draw lands on the first backend
        // 2/3 of the time: the second gets 1/3 of the picks when idle loads tie, and
        // 1 - (2/3)^2 = 5/9 when it is the only idle one.
        let second_picks = |c: &Fake| {
            (0..1000u64)
                .filter(|&s| two_choices(c, splitmix64(s)) == Some(1))
                .count()
        };
        let tied = second_picks(&Fake::weights(&[1, 1]));
        let idle = second_picks(&Fake::weights(&[1, 1]).with_active(&[100, 0]));
        assert!(
            idle > tied + 150,
            "being idle should win draws: {idle}/1000 idle vs {tied}/1000 tied"
        );
    }

    #[test]
    fn every_least_scheduler_finds_nothing_when_all_are_drained() {
        let c = Fake::weights(&[0, 0]);
        assert_eq!(least_connection(&c), None);
        assert_eq!(weighted_least_connection(&c), None);
        assert_eq!(shortest_expected_delay(&c), None);
        assert_eq!(never_queue(&c), None);
        assert_eq!(failover(&c), None);
        assert_eq!(overflow(&c), None);
        assert_eq!(two_choices(&c, 7), None);
    }
}
