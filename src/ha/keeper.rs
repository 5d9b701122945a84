//! Keeps one VIP in the state ownership asks for: present and announced while held,
//! absent otherwise. Wraps [`super::vip::Vip`] and [`super::announce::Announcer`] so the
//! drivers only say "take over", "step down", "check".

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::announce::{AnnounceOptions, Announcer, Target};
use super::vip::Vip;

/// Removal is the safety action: retried a few times in quick succession before giving up.
const REMOVE_ATTEMPTS: u32 = 3;
const REMOVE_RETRY_DELAY: Duration = Duration::from_millis(20);

pub struct VipKeeper {
    instance: String,
    vip: Vip,
    options: AnnounceOptions,
    conflicts: Arc<AtomicU64>,
    announcer: Option<Announcer>,
    holding: bool,
    /// Consecutive failed checks of the address. Netlink dumps fail now and then for
    /// reasons that pass (EBUSY when the address list changes mid-dump); only a failure
    /// that persists means this host cannot serve the VIP.
    failed_checks: u32,
}

/// Checks (one per renew period) that must fail in a row before the keeper gives up.
const CHECK_FAILURES_BEFORE_GIVING_UP: u32 = 3;

impl VipKeeper {
    pub fn new(
        instance: String,
        vip: Vip,
        options: AnnounceOptions,
        conflicts: Arc<AtomicU64>,
    ) -> VipKeeper {
        VipKeeper {
            instance,
            vip,
            options,
            conflicts,
            announcer: None,
            holding: false,
            failed_checks: 0,
        }
    }

    /// At start, before the lease is held: an address left by a killed predecessor would
    /// make this host answer for a VIP it does not hold.
    pub async fn remove_stale(&mut self) {
        match self.vip.remove().await {
            Ok(true) => tracing::warn!(
                instance = %self.instance, vip = %self.vip.addr(), interface = %self.vip.interface(),
                "removed a VIP this host does not hold (left by an earlier run?)"
            ),
            Ok(false) => {}
            Err(e) => tracing::error!(instance = %self.instance, "checking for a stale VIP: {e}"),
        }
    }

    /// Adds and announces the VIP. `false`: the address could not be added, so this host
    /// cannot serve the VIP and should give the lease to a peer.
    pub async fn take_over(&mut self) -> bool {
        self.holding = true;
        match self.vip.add().await {
            Ok(()) => tracing::info!(
                instance = %self.instance, vip = %self.vip.addr(), interface = %self.vip.interface(),
                "VIP added"
            ),
            Err(e) => {
                tracing::error!(instance = %self.instance, "adding the VIP failed: {e}");
                return false;
            }
        }
        self.announce().await;
        true
    }

    async fn announce(&mut self) {
        if let Some(old) = self.announcer.take() {
            old.stop();
        }
        if self.vip.addr().is_loopback() {
            // Nobody on a link learns a loopback address from us (demo and test VIPs).
            return;
        }
        let (ifindex, mac) = match self.vip.link().await {
            Ok((ifindex, Some(mac))) => (ifindex, mac),
            Ok((_, None)) => {
                tracing::warn!(instance = %self.instance, interface = %self.vip.interface(),
                    "interface has no Ethernet address; not announcing the VIP");
                return;
            }
            Err(e) => {
                tracing::error!(instance = %self.instance, "cannot announce the VIP: {e}");
                return;
            }
        };
        let target = Target {
            instance: self.instance.clone(),
            vip: self.vip.addr(),
            interface: self.vip.interface().to_owned(),
            ifindex,
            mac,
        };
        match Announcer::start(target, self.options, self.conflicts.clone()) {
            Ok(announcer) => self.announcer = Some(announcer),
            Err(e) => tracing::error!(instance = %self.instance, "cannot announce the VIP: {e}"),
        }
    }

    /// While holding: put the address back if someone removed it. `false`: it is missing
    /// and cannot be added back.
    pub async fn ensure(&mut self) -> bool {
        if !self.holding {
            return true;
        }
        let present = self.vip.is_present().await;
        if present.is_ok() {
            self.failed_checks = 0;
        }
        match present {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(
                    instance = %self.instance, vip = %self.vip.addr(), interface = %self.vip.interface(),
                    "the VIP we hold was removed from the interface by someone else; adding it back"
                );
                match self.vip.add().await {
                    Ok(()) => {
                        self.announce().await;
                        true
                    }
                    Err(e) => {
                        tracing::error!(instance = %self.instance, "re-adding the VIP failed: {e}");
                        false
                    }
                }
            }
            Err(e) => {
                // Persistently failing (the interface is gone, netlink broken): nothing can
                // be served. A single failure keeps the VIP until the next check.
                self.failed_checks += 1;
                tracing::warn!(
                    instance = %self.instance, failures = self.failed_checks,
                    "checking the VIP failed: {e}"
                );
                self.failed_checks < CHECK_FAILURES_BEFORE_GIVING_UP
            }
        }
    }

    /// Stops announcing, then removes the address.
    pub async fn step_down(&mut self) {
        self.holding = false;
        if let Some(announcer) = self.announcer.take() {
            announcer.stop();
        }
        for attempt in 1..=REMOVE_ATTEMPTS {
            match self.vip.remove().await {
                Ok(_) => {
                    tracing::info!(instance = %self.instance, vip = %self.vip.addr(), "VIP removed");
                    return;
                }
                Err(e) => {
                    tracing::error!(instance = %self.instance, attempt, "removing the VIP failed: {e}");
                    tokio::time::sleep(REMOVE_RETRY_DELAY).await;
                }
            }
        }
    }
}
