//! Lookup tables of the hashing schedulers: source hashing (sh), destination hashing (dh)
//! and Maglev hashing (mh), built from the candidate list on membership change and read
//! lock-free by every worker.
//!
//! Tables are a function of the membership (backend identities and weights) only, never of
//! health, so every LB host builds the same table and a client lands on the same backend
//! whichever host holds the VIP. A backend that is down, draining or over its threshold
//! keeps its slots; a lookup that lands on it walks on, as IPVS does with its
//! `sh-fallback` / `mh-fallback` flags, so only that backend's clients move (IPVS without the
//! flag returns no destination, but there keepalived removes a dead backend from the
//! service; here it stays in the list marked unavailable, so falling back is the equivalent).

use std::net::{IpAddr, SocketAddr};

use super::hash::{MH_KEY_1, MH_KEY_2, backend_key, fold, hash_32, keyed};

/// IPVS `IP_VS_SH_TAB_BITS` / `IP_VS_DH_TAB_BITS`: 256 buckets.
const BUCKET_BITS: u32 = 8;
const BUCKETS: usize = 1 << BUCKET_BITS;

/// Maglev table size: IPVS's default `CONFIG_IP_VS_MH_TAB_INDEX = 12` selects the prime
/// 4093 (the smallest choice is 251). Must be prime and larger than the backend count.
pub const MAGLEV_TABLE_SIZE: usize = 4093;
/// IPVS `IP_VS_MH_TAB_BITS`: weights are shifted so max weight / gcd fits in this many bits.
const MH_WEIGHT_BITS: u32 = 6;

const EMPTY: u32 = u32::MAX;

/// A hashed lookup table: each slot holds a candidate index or `EMPTY`.
#[derive(Debug, Clone)]
pub(crate) struct HashTable {
    kind: Kind,
    slots: Box<[u32]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Source,
    Destination,
    Maglev,
}

/// One member of the service as the tables see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member {
    pub id: SocketAddr,
    /// Current weight (sh), or last non-zero weight (mh, IPVS's `last_weight`).
    pub weight: u32,
}

impl HashTable {
    /// IPVS `ip_vs_sh_reassign`: walk the members, each taking `weight` consecutive
    /// buckets (at least one), wrapping until all 256 are filled.
    pub(crate) fn source(members: &[Member]) -> HashTable {
        HashTable {
            kind: Kind::Source,
            slots: weighted_buckets(members),
        }
    }

    /// IPVS `ip_vs_dh_reassign`: members in turn, one bucket each, weights ignored.
    pub(crate) fn destination(members: &[Member]) -> HashTable {
        let slots = (0..BUCKETS)
            .map(|b| {
                if members.is_empty() {
                    EMPTY
                } else {
                    (b % members.len()) as u32
                }
            })
            .collect();
        HashTable {
            kind: Kind::Destination,
            slots,
        }
    }

    /// IPVS `ip_vs_mh_permutate` + `ip_vs_mh_populate`: each member walks its own
    /// permutation of the table (offset, skip from its address), taking `turns` free slots
    /// per round in member order until the table is full.
    pub(crate) fn maglev(members: &[Member]) -> HashTable {
        let size = MAGLEV_TABLE_SIZE;
        let mut slots = vec![EMPTY; size].into_boxed_slice();
        let gcd = members
            .iter()
            .map(|m| m.weight)
            .filter(|&w| w > 0)
            .fold(0, gcd);
        if gcd == 0 || members.len() >= size {
            return HashTable {
                kind: Kind::Maglev,
                slots,
            };
        }
        let max = members.iter().map(|m| m.weight).max().unwrap_or(0) / gcd;
        let rshift = (32 - max.leading_zeros()).saturating_sub(MH_WEIGHT_BITS);
        struct Setup {
            perm: usize,
            skip: usize,
            turns: u32,
        }
        let mut setups: Vec<Setup> = members
            .iter()
            .map(|m| {
                let key = backend_key(m.id);
                let shifted = (m.weight / gcd) >> rshift;
                Setup {
                    perm: keyed(MH_KEY_1, key) as usize % size,
                    skip: keyed(MH_KEY_2, key) as usize % (size - 1) + 1,
                    turns: if shifted > 0 {
                        shifted
                    } else {
                        u32::from(m.weight != 0)
                    },
                }
            })
            .collect();
        let mut filled = 0;
        while filled < size {
            for (index, setup) in setups.iter_mut().enumerate() {
                for _ in 0..setup.turns {
                    while slots[setup.perm] != EMPTY {
                        setup.perm += setup.skip;
                        if setup.perm >= size {
                            setup.perm -= size;
                        }
                    }
                    slots[setup.perm] = index as u32;
                    filled += 1;
                    if filled == size {
                        return HashTable {
                            kind: Kind::Maglev,
                            slots,
                        };
                    }
                }
            }
        }
        HashTable {
            kind: Kind::Maglev,
            slots,
        }
    }

    /// The candidate `addr` hashes to, or, when that one is unavailable, the first
    /// available one on IPVS's fallback walk. `None` when the walk finds none.
    pub(crate) fn lookup(&self, addr: IpAddr, available: impl Fn(usize) -> bool) -> Option<usize> {
        let home = self.slot(addr, 0);
        let first = self.slots[home];
        if first == EMPTY {
            return None;
        }
        if available(first as usize) {
            return Some(first as usize);
        }
        let size = self.slots.len();
        for offset in 0..size {
            let rotated = (offset + home) % size;
            let index = self.slots[self.slot(addr, rotated as u32)];
            if index == EMPTY {
                break;
            }
            if available(index as usize) {
                return Some(index as usize);
            }
        }
        // The hash walk can miss a member whose slots are few; never fail a client while
        // any slot holder can serve it.
        self.slots
            .iter()
            .copied()
            .find(|&i| i != EMPTY && available(i as usize))
            .map(|i| i as usize)
    }

    /// The slot of `addr` with IPVS's per-algorithm hash and fallback `offset`.
    fn slot(&self, addr: IpAddr, offset: u32) -> usize {
        let folded = fold(addr);
        match self.kind {
            Kind::Source => {
                (offset.wrapping_add(hash_32(folded, BUCKET_BITS)) as usize) & (BUCKETS - 1)
            }
            // dh has no fallback in IPVS; a linear walk over the buckets is ours.
            Kind::Destination => {
                (hash_32(folded, BUCKET_BITS).wrapping_add(offset) as usize) & (BUCKETS - 1)
            }
            Kind::Maglev => {
                keyed(MH_KEY_1, offset.wrapping_add(folded)) as usize % self.slots.len()
            }
        }
    }

    /// The candidate index in each slot (`None` = empty), for tests and diagnostics.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.slots
            .iter()
            .map(|&s| (s != EMPTY).then_some(s as usize))
    }
}

fn weighted_buckets(members: &[Member]) -> Box<[u32]> {
    let mut slots = vec![EMPTY; BUCKETS].into_boxed_slice();
    if members.is_empty() {
        return slots;
    }
    let mut member = 0;
    let mut taken = 0;
    for slot in slots.iter_mut() {
        *slot = member as u32;
        taken += 1;
        if taken >= members[member].weight {
            member = (member + 1) % members.len();
            taken = 0;
        }
    }
    slots
}

pub(crate) fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Member {
                id: SocketAddr::new([198, 51, 100, i as u8 + 1].into(), 80),
                weight,
            })
            .collect()
    }

    fn share(table: &HashTable, index: usize) -> usize {
        table.slots().filter(|&s| s == Some(index)).count()
    }

    #[test]
    fn source_buckets_follow_weights() {
        let table = HashTable::source(&members(&[3, 1]));
        assert_eq!(
            share(&table, 0),
            192,
            "weight 3 of 4 should own 3/4 of 256 buckets"
        );
        assert_eq!(share(&table, 1), 64);
    }

    #[test]
    fn maglev_fills_every_slot_in_proportion_to_weight() {
        let table = HashTable::maglev(&members(&[1, 1, 2]));
        assert!(table.slots().all(|s| s.is_some()), "maglev table has holes");
        let (a, b, c) = (share(&table, 0), share(&table, 1), share(&table, 2));
        assert_eq!(a + b + c, MAGLEV_TABLE_SIZE);
        assert!(a.abs_diff(b) <= 2, "equal weights got {a} and {b} slots");
        assert!(c.abs_diff(2 * a) <= 4, "double weight got {c} slots vs {a}");
    }

    #[test]
    fn maglev_without_weight_is_empty_and_finds_nothing() {
        let table = HashTable::maglev(&members(&[0, 0]));
        assert_eq!(table.lookup("192.0.2.1".parse().unwrap(), |_| true), None);
    }
}
