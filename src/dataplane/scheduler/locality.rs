//! Locality-based least-connection (lblc) and its replicated variant (lblcr).
//!
//! IPVS keys these by the packet's *destination* address, for transparent web caches that
//! sit in front of many origin servers. A proxy's destination is always its VIP, so the
//! table here has exactly one entry (keyed by the VIP): lblc sticks to one backend until
//! that backend is overloaded (more active sessions than its weight while some other
//! backend is under half its weight), then moves to the wlc choice; lblcr keeps a set of
//! backends, uses the least loaded of the set, adds the wlc choice when the set's best is
//! overloaded and drops its most loaded member when the set has not changed for the
//! expiration time. They are implemented for `lb_algo` compatibility; for a proxy they are
//! a sticky wlc.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Candidates;
use super::least::weighted_least_connection;

/// IPVS `lblc_expiration` / `lblcr_expiration` default: 24 hours.
pub(crate) const EXPIRATION: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Default)]
pub(crate) struct Locality {
    entry: Mutex<Option<Entry>>,
}

#[derive(Debug)]
struct Entry {
    /// Backend identities (lblc: exactly one).
    set: Vec<SocketAddr>,
    last_use: Instant,
    last_modified: Instant,
}

/// IPVS `is_overloaded` of lblc/lblcr.
fn overloaded<C: Candidates>(c: &C, i: usize) -> bool {
    c.active(i) > c.weight(i)
        && (0..c.len()).any(|d| u64::from(c.active(d)) * 2 < u64::from(c.weight(d)))
}

impl Locality {
    pub(crate) fn lblc<C: Candidates>(
        &self,
        c: &C,
        ids: &[SocketAddr],
        index_of: impl Fn(SocketAddr) -> Option<usize>,
        now: Instant,
    ) -> Option<usize> {
        let mut guard = self.entry.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = guard.as_mut() {
            let fresh = now.saturating_duration_since(entry.last_use) <= EXPIRATION;
            let cached = entry.set.first().and_then(|&id| index_of(id));
            if let Some(i) = cached.filter(|&i| fresh && c.available(i) && !overloaded(c, i)) {
                entry.last_use = now;
                return Some(i);
            }
        }
        let chosen = weighted_least_connection(c)?;
        *guard = Some(Entry {
            set: vec![ids[chosen]],
            last_use: now,
            last_modified: now,
        });
        Some(chosen)
    }

    pub(crate) fn lblcr<C: Candidates>(
        &self,
        c: &C,
        ids: &[SocketAddr],
        index_of: impl Fn(SocketAddr) -> Option<usize>,
        now: Instant,
    ) -> Option<usize> {
        let mut guard = self.entry.lock().unwrap_or_else(|p| p.into_inner());
        let entry = match guard.as_mut() {
            Some(e) if now.saturating_duration_since(e.last_use) <= EXPIRATION => e,
            _ => {
                let chosen = weighted_least_connection(c)?;
                *guard = Some(Entry {
                    set: vec![ids[chosen]],
                    last_use: now,
                    last_modified: now,
                });
                return Some(chosen);
            }
        };
        entry.last_use = now;
        let members: Vec<usize> = entry.set.iter().filter_map(|&id| index_of(id)).collect();
        let least = least_loaded(c, &members, true);
        if entry.set.len() > 1
            && now.saturating_duration_since(entry.last_modified) > EXPIRATION
            && let Some(most) = least_loaded(c, &members, false)
        {
            entry.set.retain(|&id| id != ids[most]);
            entry.last_modified = now;
        }
        if let Some(i) = least.filter(|&i| !overloaded(c, i)) {
            return Some(i);
        }
        let chosen = weighted_least_connection(c)?;
        if !entry.set.contains(&ids[chosen]) {
            entry.set.push(ids[chosen]);
            entry.last_modified = now;
        }
        Some(chosen)
    }
}

/// IPVS `ip_vs_dest_set_min` (`least = true`) / `ip_vs_dest_set_max` over set members:
/// the lightest (or heaviest) by active/weight among available members.
fn least_loaded<C: Candidates>(c: &C, members: &[usize], least: bool) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None;
    for &i in members
        .iter()
        .filter(|&&i| c.available(i) && c.weight(i) > 0)
    {
        let (ci, wi) = (u64::from(c.active(i)), u64::from(c.weight(i)));
        let better = match best {
            None => true,
            Some((_, cb, wb)) if least => cb * wi > ci * wb,
            Some((_, cb, wb)) => ci * wb > cb * wi,
        };
        if better {
            best = Some((i, ci, wi));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::Fake;
    use super::*;

    fn index_in(ids: &[SocketAddr]) -> impl Fn(SocketAddr) -> Option<usize> + '_ {
        move |id| ids.iter().position(|&x| x == id)
    }

    #[test]
    fn lblc_sticks_until_the_backend_is_overloaded() {
        let now = Instant::now();
        let state = Locality::default();
        let light = Fake::weights(&[4, 4]).with_active(&[0, 1]);
        let ids = light.ids();
        assert_eq!(state.lblc(&light, &ids, index_in(&ids), now), Some(0));
        let busier = Fake::weights(&[4, 4]).with_active(&[3, 0]);
        assert_eq!(
            state.lblc(&busier, &ids, index_in(&ids), now),
            Some(0),
            "3 <= weight 4: stay"
        );
        let over = Fake::weights(&[4, 4]).with_active(&[5, 0]);
        assert_eq!(
            state.lblc(&over, &ids, index_in(&ids), now),
            Some(1),
            "5 > 4 and 1 is idle"
        );
    }

    #[test]
    fn lblcr_grows_its_set_under_load_and_uses_the_lightest_member() {
        let now = Instant::now();
        let state = Locality::default();
        let c = Fake::weights(&[2, 2, 2]).with_active(&[0, 0, 0]);
        let ids = c.ids();
        assert_eq!(state.lblcr(&c, &ids, index_in(&ids), now), Some(0));
        let over = Fake::weights(&[2, 2, 2]).with_active(&[3, 0, 0]);
        assert_eq!(
            state.lblcr(&over, &ids, index_in(&ids), now),
            Some(1),
            "set grows to {{0,1}}"
        );
        let later = Fake::weights(&[2, 2, 2]).with_active(&[1, 2, 0]);
        assert_eq!(
            state.lblcr(&later, &ids, index_in(&ids), now),
            Some(0),
            "lightest of the set {{0,1}}, not the idle outsider 2"
        );
    }

    #[test]
    fn lblc_forgets_an_unavailable_backend() {
        let now = Instant::now();
        let state = Locality::default();
        let mut c = Fake::weights(&[1, 1]);
        let ids = c.ids();
        assert_eq!(state.lblc(&c, &ids, index_in(&ids), now), Some(0));
        c.set_available(0, false);
        assert_eq!(state.lblc(&c, &ids, index_in(&ids), now), Some(1));
    }
}
