//! Round-robin (rr) and weighted round-robin (wrr) with one position shared by all workers.
//!
//! IPVS keeps the position under the service's scheduler lock. Here it is a single atomic
//! word advanced by compare-and-swap: each pick computes the IPVS successor of the position
//! it read and publishes it only if no other worker moved first (else it retries from the
//! new position). So the picks of all workers together form exactly the IPVS sequence:
//! 300 connections over 3 equal backends give 100/100/100 however they are spread over
//! threads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::Candidates;
use super::table::gcd;

/// The position before the first backend (IPVS: the list head).
const HEAD: usize = usize::MAX;

/// rr: the index of the last backend picked.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    last: AtomicUsize,
}

impl RoundRobin {
    pub(crate) fn new() -> RoundRobin {
        RoundRobin {
            last: AtomicUsize::new(HEAD),
        }
    }

    /// IPVS `ip_vs_rr_schedule`: the next available backend after the last one picked,
    /// wrapping once around the list (the last one itself is tried last).
    pub(crate) fn pick<C: Candidates>(&self, c: &C) -> Option<usize> {
        let n = c.len();
        if n == 0 {
            return None;
        }
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let start = if last >= n { 0 } else { last + 1 };
            let found = (0..n).map(|k| (start + k) % n).find(|&i| c.available(i))?;
            match self
                .last
                .compare_exchange_weak(last, found, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(found),
                Err(current) => last = current,
            }
        }
    }
}

/// The membership-derived parameters of wrr: IPVS `mark->mw` and `mark->di`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WrrParams {
    /// Max weight minus (gcd - 1): the first current weight of a round.
    max_weight: i64,
    /// gcd of the positive weights: the step of the current weight.
    gcd: i64,
}

impl WrrParams {
    pub(crate) fn of<C: Candidates>(c: &C) -> WrrParams {
        let weights = (0..c.len()).map(|i| c.weight(i));
        let g = weights.clone().filter(|&w| w > 0).fold(0, gcd).max(1);
        let max = weights.max().unwrap_or(0);
        WrrParams {
            max_weight: i64::from(max) - (i64::from(g) - 1),
            gcd: i64::from(g),
        }
    }
}

/// wrr: IPVS's (last position, current weight) pair packed in one word.
#[derive(Debug)]
pub(crate) struct WeightedRoundRobin {
    state: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    /// Last picked index, `HEAD` before the first.
    last: usize,
    /// Current weight: backends with weight >= it are picked in this pass.
    current: i64,
}

impl Mark {
    fn pack(self) -> u64 {
        let last = if self.last == HEAD {
            u32::MAX
        } else {
            self.last as u32
        };
        (u64::from(last) << 32) | u64::from(self.current.clamp(0, i64::from(u32::MAX)) as u32)
    }

    fn unpack(word: u64) -> Mark {
        let last = (word >> 32) as u32;
        Mark {
            last: if last == u32::MAX {
                HEAD
            } else {
                last as usize
            },
            current: i64::from(word as u32),
        }
    }
}

impl WeightedRoundRobin {
    pub(crate) fn new(params: WrrParams) -> WeightedRoundRobin {
        let mark = Mark {
            last: HEAD,
            current: params.max_weight,
        };
        WeightedRoundRobin {
            state: AtomicU64::new(mark.pack()),
        }
    }

    /// IPVS `ip_vs_wrr_dest_changed`: restart from the head, keep the current weight when
    /// it is still meaningful.
    pub(crate) fn membership_changed(&self, params: WrrParams) {
        let _ = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let mut mark = Mark::unpack(word);
                mark.last = HEAD;
                if mark.current > params.max_weight || mark.current == 0 {
                    mark.current = params.max_weight;
                } else if params.gcd > 1 {
                    mark.current = (mark.current / params.gcd) * params.gcd + 1;
                }
                Some(mark.pack())
            });
    }

    /// IPVS `ip_vs_wrr_schedule`: walk on from the last pick to the next available
    /// backend whose weight reaches the current weight; at the end of the list lower the
    /// current weight by the gcd (back to the max after the last step).
    pub(crate) fn pick<C: Candidates>(&self, c: &C, params: WrrParams) -> Option<usize> {
        let n = c.len();
        if params.max_weight <= 0 || n == 0 {
            return None;
        }
        let mut word = self.state.load(Ordering::Relaxed);
        loop {
            let (found, next) = walk(Mark::unpack(word), c, params)?;
            match self.state.compare_exchange_weak(
                word,
                next.pack(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(found),
                Err(current) => word = current,
            }
        }
    }
}

fn walk<C: Candidates>(mut mark: Mark, c: &C, params: WrrParams) -> Option<(usize, Mark)> {
    let n = c.len();
    if mark.current <= 0 || mark.current > params.max_weight {
        mark.current = params.max_weight;
    }
    let mut position = if mark.last >= n {
        None
    } else {
        Some(mark.last)
    };
    // Passes in which nothing available can match only lower the current weight, so at the
    // end of the list jump over them (IPVS walks them; the outcome is the same). The
    // highest available weight is computed there, once, so the common pick that finds a
    // backend before the end of the list stays O(distance), and "nothing available" is
    // answered without walking max_weight/gcd empty passes.
    let mut max_available: Option<i64> = None;
    // A partial pass, a wrap and one full pass always suffice; the bound only guards
    // against weights that changed without a membership update.
    for _ in 0..2 * n + 4 {
        let next = position.map_or(0, |p| p + 1);
        if next < n {
            position = Some(next);
            if c.available(next) && i64::from(c.weight(next)) >= mark.current {
                mark.last = next;
                return Some((next, mark));
            }
            continue;
        }
        position = None;
        mark.current -= params.gcd;
        if mark.current <= 0 {
            mark.current = params.max_weight;
        }
        let max_available = match max_available {
            Some(max) => max,
            None => {
                let max = (0..n)
                    .filter(|&i| c.available(i))
                    .map(|i| i64::from(c.weight(i)))
                    .max()
                    .filter(|&w| w > 0)?;
                *max_available.insert(max)
            }
        };
        if mark.current > max_available {
            let steps = (mark.current - max_available + params.gcd - 1) / params.gcd;
            mark.current -= steps * params.gcd;
            if mark.current <= 0 {
                mark.current = params.gcd.min(max_available);
            }
        }
    }
    let fallback = (0..n).find(|&i| c.available(i))?;
    mark.last = fallback;
    Some((fallback, mark))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::Fake;
    use super::*;

    fn sequence(wrr: &WeightedRoundRobin, c: &Fake, picks: usize) -> Vec<usize> {
        let params = WrrParams::of(c);
        (0..picks).map(|_| wrr.pick(c, params).unwrap()).collect()
    }

    #[test]
    fn wrr_follows_the_ipvs_interleaving() {
        let c = Fake::weights(&[3, 2, 1]);
        let wrr = WeightedRoundRobin::new(WrrParams::of(&c));
        assert_eq!(
            sequence(&wrr, &c, 12),
            [0, 0, 1, 0, 1, 2, 0, 0, 1, 0, 1, 2],
            "IPVS wrr with weights 3,2,1 yields A A B A B C per round"
        );
    }

    #[test]
    fn wrr_with_common_divisor_steps_by_the_gcd() {
        let c = Fake::weights(&[4, 2]);
        let wrr = WeightedRoundRobin::new(WrrParams::of(&c));
        assert_eq!(sequence(&wrr, &c, 6), [0, 0, 1, 0, 0, 1]);
    }

    #[test]
    fn wrr_skips_unavailable_without_losing_the_ratio_of_the_rest() {
        let mut c = Fake::weights(&[3, 2, 1]);
        c.set_available(0, false);
        let wrr = WeightedRoundRobin::new(WrrParams::of(&c));
        let picks = sequence(&wrr, &c, 300);
        assert!(!picks.contains(&0), "unavailable backend was picked");
        let ones = picks.iter().filter(|&&p| p == 1).count();
        assert_eq!(ones, 200, "weights 2:1 over 300 picks should give 200:100");
    }

    #[test]
    fn wrr_finds_nothing_when_nothing_is_available() {
        let mut c = Fake::weights(&[5, 1]);
        c.set_available(0, false);
        c.set_available(1, false);
        let wrr = WeightedRoundRobin::new(WrrParams::of(&c));
        assert_eq!(wrr.pick(&c, WrrParams::of(&c)), None);
    }

    #[test]
    fn rr_wraps_and_skips_unavailable() {
        let mut c = Fake::weights(&[1, 1, 1]);
        let rr = RoundRobin::new();
        let picks: Vec<_> = (0..4).map(|_| rr.pick(&c).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0]);
        c.set_available(1, false);
        let picks: Vec<_> = (0..3).map(|_| rr.pick(&c).unwrap()).collect();
        assert_eq!(picks, [2, 0, 2]);
    }
}
