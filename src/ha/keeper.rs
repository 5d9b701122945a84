//! Keeps one VIP in the state ownership asks for: present and announced while held, absent
//! otherwise, or parked on `lo` while a planned handover lets this host's sessions finish.
//! Wraps a [`VipOps`] (netlink, or a test double) and the [`Announcer`] so the drivers only
//! say "take over", "step down", "park", "check".
//!
//! Every method reports whether the address is where it was asked to be; the drivers (and
//! through them the ownership state machine) never assume a removal they were not told
//! happened. Each failure is logged and raised on the instance's [`Alarm`].

use super::announce::{AnnounceOptions, Announcer, Target};
use super::arp_quiet::ArpQuiet;
use super::status::{Alarm, HaFailure};
use super::vip::{Vip, VipOps};

pub struct VipKeeper<V: VipOps = Vip> {
    vip: V,
    options: AnnounceOptions,
    alarm: Alarm,
    announcer: Option<Announcer>,
    holding: bool,
    /// Consecutive failed checks of the address. Netlink dumps fail now and then for
    /// reasons that pass (EBUSY when the address list changes mid-dump); only a failure
    /// that persists means this host cannot serve the VIP.
    failed_checks: u32,
    /// Set while the VIP is parked on `lo` (IPv4: with the interface kept quiet about it).
    parked: Option<Option<ArpQuiet>>,
}

/// Checks (one per renew period) that must fail in a row before the keeper gives up.
const CHECK_FAILURES_BEFORE_GIVING_UP: u32 = 3;

impl<V: VipOps> VipKeeper<V> {
    pub fn new(vip: V, options: AnnounceOptions, alarm: Alarm) -> VipKeeper<V> {
        VipKeeper {
            vip,
            options,
            alarm,
            announcer: None,
            holding: false,
            failed_checks: 0,
            parked: None,
        }
    }

    fn instance(&self) -> &str {
        self.alarm.instance()
    }

    pub fn vip(&self) -> &V {
        &self.vip
    }

    /// The address alone, for a mode that keeps the VIP its own way (BGP: on `lo`).
    pub fn into_vip(self) -> V {
        self.vip
    }

    /// At start, before the lease is held: an address left by a killed predecessor (on the
    /// interface, or parked on `lo` by one killed while draining) would make this host
    /// answer for a VIP it does not hold.
    pub async fn remove_stale(&mut self) {
        match self.vip.remove().await {
            Ok(true) => tracing::warn!(
                instance = %self.instance(), vip = %self.vip.addr(), interface = %self.vip.interface(),
                "removed a VIP this host does not hold (left by an earlier run?)"
            ),
            Ok(false) => {}
            Err(e) => {
                self.alarm.raise(HaFailure::VipRemove);
                tracing::error!(instance = %self.instance(), "checking for a stale VIP: {e}");
            }
        }
        match self.vip.unpark().await {
            Ok(true) => tracing::warn!(
                instance = %self.instance(), vip = %self.vip.addr(),
                "removed a parked VIP from lo (left by an earlier run that was draining)"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(instance = %self.instance(), "checking lo for a parked VIP: {e}")
            }
        }
    }

    /// Adds and announces the VIP. `false`: the address could not be added, so this host
    /// cannot serve the VIP and should give the lease to a peer.
    pub async fn take_over(&mut self) -> bool {
        self.holding = true;
        match self.vip.add().await {
            Ok(()) => tracing::info!(
                instance = %self.instance(), vip = %self.vip.addr(), interface = %self.vip.interface(),
                "VIP added"
            ),
            Err(e) => {
                self.alarm.raise(HaFailure::VipAdd);
                tracing::error!(instance = %self.instance(), "adding the VIP failed: {e}");
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
                tracing::warn!(instance = %self.instance(), interface = %self.vip.interface(),
                    "interface has no Ethernet address; not announcing the VIP");
                return;
            }
            Err(e) => {
                self.alarm.raise(HaFailure::Announce);
                tracing::error!(instance = %self.instance(), "cannot announce the VIP: {e}");
                return;
            }
        };
        let target = Target {
            instance: self.instance().to_owned(),
            vip: self.vip.addr(),
            interface: self.vip.interface().to_owned(),
            ifindex,
            mac,
        };
        match Announcer::start(target, self.options, self.alarm.clone()) {
            Ok(announcer) => self.announcer = Some(announcer),
            Err(e) => {
                self.alarm.raise(HaFailure::Announce);
                tracing::error!(instance = %self.instance(), "cannot announce the VIP: {e}");
            }
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
                    instance = %self.instance(), vip = %self.vip.addr(), interface = %self.vip.interface(),
                    "the VIP we hold was removed from the interface by someone else; adding it back"
                );
                match self.vip.add().await {
                    Ok(()) => {
                        self.announce().await;
                        true
                    }
                    Err(e) => {
                        self.alarm.raise(HaFailure::VipAdd);
                        tracing::error!(instance = %self.instance(), "re-adding the VIP failed: {e}");
                        false
                    }
                }
            }
            Err(e) => {
                // Persistently failing (the interface is gone, netlink broken): nothing can
                // be served. A single failure keeps the VIP until the next check.
                self.failed_checks += 1;
                self.alarm.raise(HaFailure::VipCheck);
                tracing::warn!(
                    instance = %self.instance(), failures = self.failed_checks,
                    "checking the VIP failed: {e}"
                );
                self.failed_checks < CHECK_FAILURES_BEFORE_GIVING_UP
            }
        }
    }

    /// Stops announcing, then removes the address. `true` once it is confirmed gone from
    /// the interface; `false` means it may still be there and the caller must try again
    /// before telling anyone it let go.
    pub async fn step_down(&mut self) -> bool {
        self.holding = false;
        if let Some(announcer) = self.announcer.take() {
            announcer.stop();
        }
        match self.vip.remove().await {
            Ok(_) => {
                tracing::info!(instance = %self.instance(), vip = %self.vip.addr(), "VIP removed");
                true
            }
            Err(e) => {
                self.alarm.raise(HaFailure::VipRemove);
                tracing::error!(instance = %self.instance(), "removing the VIP failed: {e}");
                false
            }
        }
    }

    /// Planned handover: moves the VIP from its interface to `lo`, where this host keeps
    /// sending and receiving for its established sessions but answers no ARP/ND for it.
    /// Where parking is impossible the VIP is only removed (its sessions are cut; logged and
    /// counted). `true` once the VIP is confirmed gone from the interface.
    pub async fn park(&mut self) -> bool {
        if let Some(announcer) = self.announcer.take() {
            announcer.stop();
        }
        if self.parked.is_none() && !self.vip.addr().is_loopback() {
            match self.prepare_park().await {
                Ok(quiet) => self.parked = Some(quiet),
                Err(why) => {
                    self.alarm.raise(HaFailure::Park);
                    tracing::warn!(
                        instance = %self.instance(), vip = %self.vip.addr(),
                        "cannot keep the VIP for draining sessions ({why}); removing it: \
                         sessions through this host end now"
                    );
                }
            }
        }
        let gone = self.step_down().await;
        if gone && self.parked.is_some() {
            tracing::info!(
                instance = %self.instance(), vip = %self.vip.addr(),
                "VIP parked on lo: draining sessions continue here, the link sees the next holder"
            );
        }
        gone
    }

    async fn prepare_park(&mut self) -> Result<Option<ArpQuiet>, String> {
        let quiet = if self.vip.addr().is_ipv4() {
            Some(ArpQuiet::engage(self.vip.interface()).map_err(|e| e.to_string())?)
        } else {
            None
        };
        if let Err(e) = self.vip.park().await {
            if let Some(quiet) = quiet {
                quiet.release();
            }
            return Err(e.to_string());
        }
        Ok(quiet)
    }

    /// Whether the VIP is parked on `lo`.
    pub fn is_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// Ends the drain: removes the parked VIP from `lo` and gives the link's ARP settings
    /// back. `false` if the address is still there.
    pub async fn unpark(&mut self) -> bool {
        let Some(quiet) = self.parked.take() else {
            return true;
        };
        match self.vip.unpark().await {
            Ok(_) => {
                tracing::info!(instance = %self.instance(), vip = %self.vip.addr(), "parked VIP removed from lo");
                if let Some(quiet) = quiet {
                    quiet.release();
                }
                true
            }
            Err(e) => {
                // Keep the link quiet while the address may still be on lo; retried.
                self.parked = Some(quiet);
                self.alarm.raise(HaFailure::VipRemove);
                tracing::error!(instance = %self.instance(), "removing the parked VIP from lo failed: {e}");
                false
            }
        }
    }
}
