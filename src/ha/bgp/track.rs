//! Connection tracking from the start, so a drain note never mistakes this host's own
//! sessions for a peer's.
//!
//! The forwarding a drain note installs ([`crate::ha::forward`]) sends on the flows whose
//! first packet *conntrack* saw here was not a SYN. Linux tracks connections in a network
//! namespace only once something there uses conntrack: on a host where nothing did, every
//! session established before the note would be picked up mid-stream when the forwarding
//! rules arrive, look foreign, and be sent to the draining peer (which resets it). So while
//! a BGP instance with peers runs, this table keeps conntrack on; it does nothing else (one
//! accepting rule). Shared by the process's instances: the last one to stop removes it.

use std::sync::Mutex;

use crate::ha::forward::{ForwardError, run_nft};

const TABLE: &str = "alive_proxy_track";

/// BGP instances that need tracking now.
static USERS: Mutex<usize> = Mutex::new(0);

fn users() -> std::sync::MutexGuard<'static, usize> {
    USERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Turns tracking on (idempotent: `add` keeps an existing table, the chain is rewritten).
pub async fn engage() -> Result<(), ForwardError> {
    *users() += 1;
    let script = format!(
        "add table inet {TABLE}\n\
         add chain inet {TABLE} prerouting {{ type filter hook prerouting priority -150; policy accept; }}\n\
         flush chain inet {TABLE} prerouting\n\
         add rule inet {TABLE} prerouting ct state established,related accept\n"
    );
    run_nft(&script).await
}

/// Gives the claim back; the last one removes the table.
pub async fn release() -> Result<(), ForwardError> {
    let last = {
        let mut users = users();
        *users = users.saturating_sub(1);
        *users == 0
    };
    if !last {
        return Ok(());
    }
    run_nft(&format!(
        "add table inet {TABLE}\ndelete table inet {TABLE}\n"
    ))
    .await
}
