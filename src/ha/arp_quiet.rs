//! Keeping an IPv4 link quiet about a parked VIP.
//!
//! During a planned handover the old holder keeps the VIP on `lo` so its established
//! sessions go on, while the new holder answers ARP for it. Linux answers ARP on any
//! interface for any local address (`arp_ignore = 0`) and may use any local address as the
//! sender of its own ARP requests (`arp_announce = 0`): a parked VIP would then be answered
//! for by two MACs, and a neighbour probe sent from the VIP would pull the client's entry
//! back to the old holder. While any VIP is parked, the VIP's interface runs with
//! `arp_ignore = 1` (answer only for addresses on the receiving interface) and
//! `arp_announce = 2` (send ARP from the interface's own address), LVS-DR's settings; the
//! previous values come back when the last parked VIP on it goes. The kernel uses the
//! larger of `conf/all` and `conf/<interface>`, so nothing is written where that is already
//! enough.
//!
//! IPv6 needs none of this: Neighbor Discovery answers only for addresses on the receiving
//! interface and picks a solicitation's source among that interface's own addresses.
//!
//! Writing these needs a writable `/proc/sys/net` (root on the host, or a `--privileged`
//! container). Where it is read-only the handover falls back to removing the VIP outright
//! (sessions cut, logged); an operator can set the two values on the host once instead
//! (docs/operations.md).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

#[derive(Debug, thiserror::Error)]
#[error("cannot set {path}: {source}")]
pub struct ArpQuietError {
    path: PathBuf,
    source: std::io::Error,
}

/// (name, wanted value) of the two settings.
const SETTINGS: [(&str, u32); 2] = [("arp_ignore", 1), ("arp_announce", 2)];

/// Per interface: how many parked VIPs need quiet, and what to write back after the last.
struct Engaged {
    users: usize,
    restore: Vec<(PathBuf, String)>,
}

static ENGAGED: Mutex<Option<HashMap<String, Engaged>>> = Mutex::new(None);

fn setting(scope: &str, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/ipv4/conf/{scope}/{name}"))
}

fn read_value(path: &PathBuf) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A claim on quiet ARP for one interface; [`ArpQuiet::release`] gives it back.
#[derive(Debug)]
pub struct ArpQuiet {
    interface: String,
}

impl ArpQuiet {
    /// Makes `interface` quiet about addresses it does not carry (if it is not already).
    pub fn engage(interface: &str) -> Result<ArpQuiet, ArpQuietError> {
        let mut guard = ENGAGED.lock().unwrap_or_else(PoisonError::into_inner);
        let engaged = guard.get_or_insert_with(HashMap::new);
        if let Some(entry) = engaged.get_mut(interface) {
            entry.users += 1;
            return Ok(ArpQuiet {
                interface: interface.to_owned(),
            });
        }
        let mut restore = Vec::new();
        for (name, wanted) in SETTINGS {
            let all = read_value(&setting("all", name)).unwrap_or(0);
            let path = setting(interface, name);
            let current = std::fs::read_to_string(&path).map_err(|source| ArpQuietError {
                path: path.clone(),
                source,
            })?;
            if all.max(current.trim().parse().unwrap_or(0)) >= wanted {
                continue;
            }
            if let Err(source) = std::fs::write(&path, wanted.to_string()) {
                write_back(&restore);
                return Err(ArpQuietError { path, source });
            }
            restore.push((path, current.trim().to_owned()));
        }
        if !restore.is_empty() {
            tracing::info!(
                interface,
                "arp_ignore=1 / arp_announce=2 while a VIP is parked for its draining sessions"
            );
        }
        engaged.insert(interface.to_owned(), Engaged { users: 1, restore });
        Ok(ArpQuiet {
            interface: interface.to_owned(),
        })
    }

    /// Gives the claim back; the last one restores the interface's previous settings.
    pub fn release(self) {
        let mut guard = ENGAGED.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(engaged) = guard.as_mut() else {
            return;
        };
        let Some(entry) = engaged.get_mut(&self.interface) else {
            return;
        };
        entry.users -= 1;
        if entry.users == 0
            && let Some(entry) = engaged.remove(&self.interface)
        {
            write_back(&entry.restore);
        }
    }
}

fn write_back(restore: &[(PathBuf, String)]) {
    for (path, value) in restore {
        if let Err(e) = std::fs::write(path, value) {
            tracing::warn!(path = %path.display(), value, "cannot restore: {e}");
        }
    }
}
