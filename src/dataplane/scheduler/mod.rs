//! Backend selection for one service, with the semantics of the IPVS schedulers that
//! keepalived's `lb_algo` names: rr, wrr, lc, wlc, sed, nq, fo, ovf, twos, sh, mh, dh,
//! lblc, lblcr; plus `persistence_timeout` client affinity in front of them.
//!
//! [`SchedulerState`] is shared by all worker threads of a service. Workers call
//! [`SchedulerState::pick`] per connection (and again per retry, with the backends already
//! tried reported unavailable); the routing snapshot calls
//! [`SchedulerState::on_membership_change`] when the backend list or a weight changes, so
//! round-robin positions, hash tables and affinities survive reloads and health changes.
//!
//! Everything is pure: decisions depend only on the candidates, the client address, the
//! caller's `now` and this state. Hot-path state is lock-free (atomics and an
//! [`ArcSwap`]ed table); only persistence (sharded) and lblc/lblcr take small locks.
//!
//! Differences from IPVS, all forced by being a proxy rather than a packet forwarder:
//! - Load is the live-session count (IPVS: `activeconns * 256 + inactconns`; a proxy has no
//!   lingering inactive connections).
//! - Hashing schedulers always fall back to the next available backend on their table walk
//!   (IPVS's `sh-fallback` / `mh-fallback`), because a down backend stays in our list marked
//!   unavailable where keepalived would have removed it from IPVS. The client port is not
//!   passed to `pick`, so `sh-port` / `mh-port` cannot apply.
//! - dh, lblc and lblcr hash the *destination*, which for a proxy is always the VIP: dh sends
//!   every client to one backend (then falls back in table order), lblc/lblcr become a
//!   sticky wlc. Implemented so existing `lb_algo` values keep working; docs/config.md should
//!   say so.

mod cursor;
mod hash;
mod least;
mod locality;
mod persistence;
mod table;
#[cfg(test)]
mod testkit;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::plan::{Scheduler, Service};
use cursor::{RoundRobin, WeightedRoundRobin, WrrParams};
use locality::Locality;
use persistence::Affinity;
use table::{HashTable, Member};

pub use persistence::DEFAULT_CAPACITY as PERSISTENCE_CAPACITY;
pub use table::MAGLEV_TABLE_SIZE;

/// The backends of a service as one connection sees them, by index in the service's list.
pub trait Candidates {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Current weight; 0 = draining, never given new connections.
    fn weight(&self, i: usize) -> u32;
    /// Live sessions on this backend across all workers.
    fn active(&self, i: usize) -> u32;
    /// Up, not suspect, weight > 0, under its connection threshold, and not already tried
    /// for this connection.
    fn available(&self, i: usize) -> bool;
    /// The backend's address: its identity for Maglev permutations and affinities across
    /// membership changes. Without it, the service's backend list at `new` (same order and
    /// length) or else the index stands in, and a reload that reorders backends moves
    /// clients.
    fn addr(&self, _i: usize) -> Option<SocketAddr> {
        None
    }
}

/// Scheduling state of one service, shared by all workers (`Send + Sync`).
#[derive(Debug)]
pub struct SchedulerState {
    algorithm: Scheduler,
    /// The service address: what dh and lblc/lblcr hash (a proxy's destination).
    vip: IpAddr,
    /// Backend identities from the plan, used when `Candidates::addr` gives none.
    plan_ids: Vec<SocketAddr>,
    tables: ArcSwap<Tables>,
    /// IPVS `last_weight`: the last non-zero weight per backend, so a backend drained to
    /// weight 0 keeps its Maglev slots (and only its clients move).
    last_weights: Mutex<HashMap<SocketAddr, u32>>,
    rr: RoundRobin,
    wrr: WeightedRoundRobin,
    /// Sequence of twos draws, turned into random numbers by splitmix64.
    draws: AtomicU64,
    locality: Locality,
    affinity: Option<Affinity>,
}

/// Everything derived from membership, swapped as a whole.
#[derive(Debug)]
struct Tables {
    len: usize,
    ids: Vec<SocketAddr>,
    index: HashMap<SocketAddr, usize>,
    wrr: WrrParams,
    hashed: Option<HashTable>,
}

impl SchedulerState {
    pub fn new(service: &Service) -> Self {
        let plan = PlanCandidates(service);
        let plan_ids: Vec<SocketAddr> = service.backends.iter().map(|b| b.addr).collect();
        let mut last_weights = HashMap::new();
        let tables = build_tables(service.scheduler, &plan, &plan_ids, &mut last_weights);
        let seed =
            hash::splitmix64(u64::from(hash::fold(service.vip)) << 16 | u64::from(service.port));
        SchedulerState {
            algorithm: service.scheduler,
            vip: service.vip,
            plan_ids,
            wrr: WeightedRoundRobin::new(tables.wrr),
            tables: ArcSwap::from_pointee(tables),
            last_weights: Mutex::new(last_weights),
            rr: RoundRobin::new(),
            draws: AtomicU64::new(seed),
            locality: Locality::default(),
            affinity: service
                .persistence
                .map(|p| Affinity::new(p.timeout, p.granularity_prefix, PERSISTENCE_CAPACITY)),
        }
    }

    pub fn algorithm(&self) -> Scheduler {
        self.algorithm
    }

    /// The backend for a new connection from `client`, or `None` when no candidate is
    /// available. A live affinity is honoured first; a new choice is remembered.
    pub fn pick(&self, c: &impl Candidates, client: IpAddr, now: Instant) -> Option<usize> {
        let n = c.len();
        if n == 0 {
            return None;
        }
        // A guard, not an Arc clone: no shared reference count bounced between workers.
        let mut tables = self.tables.load();
        if tables.len != n {
            // The caller changed the list without telling us; never index a stale table.
            drop(tables);
            self.on_membership_change(c);
            tables = self.tables.load();
        }
        let Some(affinity) = &self.affinity else {
            return self.schedule(c, &tables, client, now);
        };
        let key = affinity.key(client);
        if let Some(backend) = affinity.lookup(key, now) {
            match tables.index.get(&backend) {
                Some(&i) if i < n && c.available(i) => return Some(i),
                _ => affinity.forget(key),
            }
        }
        let chosen = self.schedule(c, &tables, client, now)?;
        affinity.bind(key, tables.ids[chosen], now);
        Some(chosen)
    }

    /// Rebuild what depends on the backend list and weights (wrr step, hash tables,
    /// identity index). Positions, affinities and locality entries are kept.
    pub fn on_membership_change(&self, c: &impl Candidates) {
        let mut last_weights = self.last_weights.lock().unwrap_or_else(|p| p.into_inner());
        let tables = build_tables(self.algorithm, c, &self.plan_ids, &mut last_weights);
        self.wrr.membership_changed(tables.wrr);
        self.tables.store(Arc::new(tables));
    }

    /// Client-affinity entries held (expired ones included until purged).
    pub fn affinity_entries(&self) -> usize {
        self.affinity.as_ref().map_or(0, Affinity::len)
    }

    fn schedule<C: Candidates>(
        &self,
        c: &C,
        t: &Tables,
        client: IpAddr,
        now: Instant,
    ) -> Option<usize> {
        let n = c.len();
        let index_of = |id: SocketAddr| t.index.get(&id).copied().filter(|&i| i < n);
        let hashed = |addr: IpAddr| t.hashed.as_ref()?.lookup(addr, |i| i < n && c.available(i));
        match self.algorithm {
            Scheduler::Rr => self.rr.pick(c),
            Scheduler::Wrr => self.wrr.pick(c, t.wrr),
            Scheduler::Lc => least::least_connection(c),
            Scheduler::Wlc => least::weighted_least_connection(c),
            Scheduler::Sed => least::shortest_expected_delay(c),
            Scheduler::Nq => least::never_queue(c),
            Scheduler::Fo => least::failover(c),
            Scheduler::Ovf => least::overflow(c),
            Scheduler::Twos => {
                let draw = hash::splitmix64(self.draws.fetch_add(1, Ordering::Relaxed));
                least::two_choices(c, draw)
            }
            Scheduler::Sh | Scheduler::Mh => hashed(client),
            Scheduler::Dh => hashed(self.vip),
            Scheduler::Lblc => self.locality.lblc(c, &t.ids, index_of, now),
            Scheduler::Lblcr => self.locality.lblcr(c, &t.ids, index_of, now),
        }
    }
}

fn build_tables<C: Candidates>(
    algorithm: Scheduler,
    c: &C,
    plan_ids: &[SocketAddr],
    last_weights: &mut HashMap<SocketAddr, u32>,
) -> Tables {
    let n = c.len();
    let ids: Vec<SocketAddr> = (0..n).map(|i| identity(c, i, plan_ids)).collect();
    let index: HashMap<SocketAddr, usize> =
        ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    for (i, &id) in ids.iter().enumerate() {
        let w = c.weight(i);
        if w > 0 {
            last_weights.insert(id, w);
        }
    }
    last_weights.retain(|id, _| index.contains_key(id));
    let members = |weight: &dyn Fn(usize, SocketAddr) -> u32| -> Vec<Member> {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| Member {
                id,
                weight: weight(i, id),
            })
            .collect()
    };
    let hashed = match algorithm {
        // IPVS sh fills buckets by current weight.
        Scheduler::Sh => Some(HashTable::source(&members(&|i, _| c.weight(i)))),
        Scheduler::Dh => Some(HashTable::destination(&members(&|i, _| c.weight(i)))),
        // IPVS mh uses last_weight so draining a backend does not reshuffle the others.
        Scheduler::Mh => Some(HashTable::maglev(&members(&|_, id| {
            last_weights.get(&id).copied().unwrap_or(0)
        }))),
        _ => None,
    };
    Tables {
        len: n,
        wrr: WrrParams::of(c),
        ids,
        index,
        hashed,
    }
}

fn identity<C: Candidates>(c: &C, i: usize, plan_ids: &[SocketAddr]) -> SocketAddr {
    c.addr(i)
        .or_else(|| (plan_ids.len() == c.len()).then(|| plan_ids[i]))
        .unwrap_or_else(|| SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), i as u16))
}

/// The plan's backends as candidates: the tables `new` builds before any snapshot exists.
struct PlanCandidates<'a>(&'a Service);

impl Candidates for PlanCandidates<'_> {
    fn len(&self) -> usize {
        self.0.backends.len()
    }
    fn weight(&self, i: usize) -> u32 {
        self.0.backends[i].weight
    }
    fn active(&self, _i: usize) -> u32 {
        0
    }
    fn available(&self, i: usize) -> bool {
        self.0.backends[i].weight > 0
    }
    fn addr(&self, i: usize) -> Option<SocketAddr> {
        Some(self.0.backends[i].addr)
    }
}

#[cfg(test)]
mod tests;
