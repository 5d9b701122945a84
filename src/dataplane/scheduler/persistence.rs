//! Client affinity (`persistence_timeout` / `persistence_granularity`): a table from client
//! address prefix to backend, consulted before the scheduler.
//!
//! IPVS keeps a "template" connection per (client prefix, VIP, port) whose timer restarts
//! whenever a connection under it ends. The scheduler API sees only new connections, so an
//! entry here lives `timeout` after the client's last *new* connection; a client whose only
//! session outlives the timeout may be scheduled afresh on its next connection.
//! An entry pointing at a backend that can no longer take the connection (down, draining
//! with weight 0 — IPVS's `expire_quiescent_template` — over threshold, or already tried for
//! this connection) is dropped and replaced by the scheduler's choice.
//!
//! The table is shared by all workers, split into shards behind small mutexes, bounded in
//! size; expired entries are purged as time passes, and a full shard evicts the entry
//! closest to expiry.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Entries per service across all shards.
pub const DEFAULT_CAPACITY: usize = 1 << 16;
/// How often a shard sweeps out expired entries, at most.
const PURGE_EVERY: Duration = Duration::from_secs(1);

/// A client address with the granularity mask applied (IPv4-mapped clients as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey(u128, bool);

#[derive(Debug)]
pub(crate) struct Affinity {
    timeout: Duration,
    prefix: u8,
    shard_capacity: usize,
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<ClientKey, Entry>,
    next_purge: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    backend: SocketAddr,
    expires: Instant,
}

impl Affinity {
    pub(crate) fn new(timeout: Duration, prefix: u8, capacity: usize) -> Affinity {
        Affinity {
            timeout,
            prefix,
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    pub(crate) fn key(&self, client: IpAddr) -> ClientKey {
        match client.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let prefix = u32::from(self.prefix.min(32));
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                ClientKey(u128::from(bits & mask), false)
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let prefix = u32::from(self.prefix.min(128));
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                ClientKey(bits & mask, true)
            }
        }
    }

    /// The backend this client prefix is bound to, if the binding has not expired;
    /// refreshes its expiry (the caller drops it with `forget` if it cannot be used).
    pub(crate) fn lookup(&self, key: ClientKey, now: Instant) -> Option<SocketAddr> {
        let mut shard = self.shard(key);
        shard.purge_if_due(now);
        let timeout = self.timeout;
        match shard.entries.get_mut(&key) {
            Some(entry) if entry.expires > now => {
                entry.expires = now + timeout;
                Some(entry.backend)
            }
            Some(_) => {
                shard.entries.remove(&key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn forget(&self, key: ClientKey) {
        self.shard(key).entries.remove(&key);
    }

    pub(crate) fn bind(&self, key: ClientKey, backend: SocketAddr, now: Instant) {
        let mut shard = self.shard(key);
        if shard.entries.len() >= self.shard_capacity && !shard.entries.contains_key(&key) {
            shard.purge(now);
            if shard.entries.len() >= self.shard_capacity {
                let soonest = shard
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| *k);
                if let Some(victim) = soonest {
                    shard.entries.remove(&victim);
                }
            }
        }
        shard.entries.insert(
            key,
            Entry {
                backend,
                expires: now + self.timeout,
            },
        );
    }

    /// Entries currently held, expired or not (for tests and stats).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).entries.len())
            .sum()
    }

    fn shard(&self, key: ClientKey) -> std::sync::MutexGuard<'_, Shard> {
        let spread = (key.0 ^ (key.0 >> 64)) as u64;
        let index = (spread.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Shard {
    fn purge_if_due(&mut self, now: Instant) {
        if self.next_purge.is_none_or(|due| now >= due) {
            self.purge(now);
        }
    }

    fn purge(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.expires > now);
        self.next_purge = Some(now + PURGE_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(n: u8) -> SocketAddr {
        SocketAddr::new([198, 51, 100, n].into(), 80)
    }

    #[test]
    fn granularity_groups_clients_of_one_prefix() {
        let table = Affinity::new(Duration::from_secs(60), 24, 100);
        let a = table.key("192.0.2.10".parse().unwrap());
        let b = table.key("192.0.2.200".parse().unwrap());
        let other = table.key("192.0.3.10".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, other);
        let v6 = Affinity::new(Duration::from_secs(60), 64, 100);
        assert_eq!(
            v6.key("2001:db8::1".parse().unwrap()),
            v6.key("2001:db8::ffff:1".parse().unwrap())
        );
    }

    #[test]
    fn binding_expires_after_the_timeout_since_last_use() {
        let t0 = Instant::now();
        let table = Affinity::new(Duration::from_secs(10), 32, 100);
        let key = table.key("192.0.2.1".parse().unwrap());
        table.bind(key, backend(1), t0);
        assert_eq!(
            table.lookup(key, t0 + Duration::from_secs(9)),
            Some(backend(1))
        );
        assert_eq!(
            table.lookup(key, t0 + Duration::from_secs(18)),
            Some(backend(1)),
            "use at 9 s refreshed the binding to 19 s"
        );
        assert_eq!(table.lookup(key, t0 + Duration::from_secs(29)), None);
    }

    #[test]
    fn expired_entries_are_purged_and_size_stays_bounded() {
        let t0 = Instant::now();
        let table = Affinity::new(Duration::from_secs(1), 32, 64);
        let keys: Vec<ClientKey> = (0..1000u32)
            .map(|n| table.key(IpAddr::from((0xC000_0200u32 + n).to_be_bytes())))
            .collect();
        for &key in &keys {
            table.bind(key, backend(1), t0);
        }
        assert!(table.len() <= 64, "table grew to {} entries", table.len());
        let later = t0 + Duration::from_secs(5);
        for &key in &keys {
            assert_eq!(
                table.lookup(key, later),
                None,
                "expired binding was returned"
            );
        }
        assert_eq!(table.len(), 0, "expired entries survived a purge");
    }
}
