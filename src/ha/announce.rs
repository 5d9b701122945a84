//! Telling the segment where a VIP now lives, and noticing when someone else claims it.
//!
//! On takeover: `repeat` gratuitous ARPs (each a broadcast request and a broadcast reply)
//! or unsolicited Neighbor Advertisements (Override flag, to ff02::1, hop limit 255), and
//! `repeat` more after `second_burst_after` — keepalived's `vrrp_garp_master_repeat 5` and
//! `vrrp_garp_master_delay 5`, which operators of the seed system already rely on.
//!
//! Then a refresh every `refresh` (default 60 s; keepalived's own default is off). We
//! refresh because a cache or switch table that missed the takeover burst (a switch that
//! rebooted, a client partitioned at the time) otherwise points at the old holder until it
//! ages out, and because an IPv4 refresh also sends an ARP probe for the VIP: any answer
//! from another MAC exposes a second holder.
//!
//! While holding, every ARP frame and NA on the link is read: one that claims the VIP from
//! another MAC is logged and counted (it means two holders, or a stale address elsewhere).
//!
//! [`Announcer::stop`] closes a gate that every send takes, so once it returns no packet for
//! the VIP leaves this host — the driver calls it before removing the address.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::status::{Alarm, HaFailure};

mod frames;
mod raw;

use frames::{ArpOp, arp_probe, gratuitous_arp, parse_arp, parse_na, unsolicited_na};
pub use frames::{Mac, format_mac};

/// Announces one of this host's own addresses once: a gratuitous ARP request, or an
/// unsolicited NA with the Override flag. Neighbours whose entry for it got stuck
/// (incomplete or failed while our link was down; Linux retries only every second) learn
/// our MAC at once. VRRP sends it when its link returns, for the addresses its peers send
/// their adverts to.
pub fn announce_address(addr: IpAddr, ifindex: u32, mac: Mac) -> std::io::Result<()> {
    match addr {
        IpAddr::V4(a) => {
            raw::ArpSocket::open(ifindex)?.send(&gratuitous_arp(ArpOp::Request, mac, a))
        }
        IpAddr::V6(a) => raw::NaSender::open(a, ifindex)?.send(&unsolicited_na(mac, a)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceOptions {
    /// Announcements per burst.
    pub repeat: u32,
    /// Delay before the second burst.
    pub second_burst_after: Duration,
    /// Period of the refresh after that; `None` = off.
    pub refresh: Option<Duration>,
}

impl Default for AnnounceOptions {
    fn default() -> AnnounceOptions {
        AnnounceOptions {
            repeat: 5,
            second_burst_after: Duration::from_secs(5),
            refresh: Some(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open {what} socket on {interface}: {source}")]
pub struct AnnounceError {
    what: &'static str,
    interface: String,
    source: std::io::Error,
}

/// What the announcer needs to know about the VIP and its link.
#[derive(Debug, Clone)]
pub struct Target {
    pub instance: String,
    pub vip: IpAddr,
    pub interface: String,
    pub ifindex: u32,
    pub mac: Mac,
}

enum Sockets {
    V4(raw::ArpSocket),
    V6 {
        sender: raw::NaSender,
        listener: raw::NaListener,
    },
}

/// Announces one VIP while this host holds it.
pub struct Announcer {
    gate: Arc<Mutex<bool>>,
    task: JoinHandle<()>,
}

impl Announcer {
    /// Opens the sockets (so a missing capability shows at once) and starts announcing.
    /// Announcements for the VIP from other MACs and failed sends are raised on `alarm`.
    pub fn start(
        target: Target,
        options: AnnounceOptions,
        alarm: Alarm,
    ) -> Result<Announcer, AnnounceError> {
        let open_error = |what, source| AnnounceError {
            what,
            interface: target.interface.clone(),
            source,
        };
        let sockets = match target.vip {
            IpAddr::V4(_) => Sockets::V4(
                raw::ArpSocket::open(target.ifindex).map_err(|e| open_error("AF_PACKET", e))?,
            ),
            IpAddr::V6(vip) => Sockets::V6 {
                sender: raw::NaSender::open(vip, target.ifindex)
                    .map_err(|e| open_error("ICMPv6 send", e))?,
                listener: raw::NaListener::open(&target.interface)
                    .map_err(|e| open_error("ICMPv6 listen", e))?,
            },
        };
        let gate = Arc::new(Mutex::new(true));
        let task = tokio::spawn(run(target, options, sockets, gate.clone(), alarm));
        Ok(Announcer { gate, task })
    }

    /// Stops announcing; no packet is sent after this returns.
    pub fn stop(self) {
        *self.gate.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.task.abort();
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        *self.gate.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.task.abort();
    }
}

async fn run(
    target: Target,
    options: AnnounceOptions,
    sockets: Sockets,
    gate: Arc<Mutex<bool>>,
    alarm: Alarm,
) {
    let announce = async {
        burst(&target, &sockets, &gate, &alarm, options.repeat, false);
        tokio::time::sleep(options.second_burst_after).await;
        burst(&target, &sockets, &gate, &alarm, options.repeat, false);
        let Some(period) = options.refresh else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(period).await;
            burst(&target, &sockets, &gate, &alarm, 1, true);
        }
    };
    tokio::join!(announce, watch(&target, &sockets, &alarm));
}

/// Sends `count` announcements (and with `probe`, an ARP probe) unless the gate is closed.
fn burst(
    target: &Target,
    sockets: &Sockets,
    gate: &Mutex<bool>,
    alarm: &Alarm,
    count: u32,
    probe: bool,
) {
    let open = gate.lock().unwrap_or_else(PoisonError::into_inner);
    if !*open {
        return;
    }
    let mut failures = Vec::new();
    for _ in 0..count {
        match (sockets, target.vip) {
            (Sockets::V4(socket), IpAddr::V4(vip)) => {
                for op in [ArpOp::Request, ArpOp::Reply] {
                    if let Err(e) = socket.send(&gratuitous_arp(op, target.mac, vip)) {
                        failures.push(e);
                    }
                }
            }
            (Sockets::V6 { sender, .. }, IpAddr::V6(vip)) => {
                if let Err(e) = sender.send(&unsolicited_na(target.mac, vip)) {
                    failures.push(e);
                }
            }
            _ => {}
        }
    }
    if let (true, Sockets::V4(socket), IpAddr::V4(vip)) = (probe, sockets, target.vip)
        && let Err(e) = socket.send(&arp_probe(target.mac, vip))
    {
        failures.push(e);
    }
    drop(open);
    if let Some(e) = failures.first() {
        alarm.raise(HaFailure::Announce);
        tracing::warn!(
            instance = %target.instance, vip = %target.vip, interface = %target.interface,
            failed = failures.len(), "announcing the VIP failed: {e}"
        );
    } else {
        tracing::debug!(instance = %target.instance, vip = %target.vip, count, "announced VIP");
    }
}

/// Reads ARP frames / NAs and counts claims on the VIP from other MACs.
async fn watch(target: &Target, sockets: &Sockets, alarm: &Alarm) {
    let mut buf = [0u8; 1600];
    let mut total = 0u64;
    loop {
        let claimant = match (sockets, target.vip) {
            (Sockets::V4(socket), IpAddr::V4(vip)) => match socket.recv(&mut buf).await {
                Ok(n) => parse_arp(&buf[..n])
                    .filter(|seen| seen.sender_ip == vip && seen.sender_mac != target.mac)
                    .map(|seen| seen.sender_mac),
                Err(e) => {
                    tracing::warn!(instance = %target.instance, "reading ARP failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    None
                }
            },
            (Sockets::V6 { listener, .. }, IpAddr::V6(vip)) => {
                match listener.recv(&mut buf).await {
                    Ok(n) => parse_na(&buf[..n])
                        .filter(|(t, mac)| *t == vip && mac.is_some_and(|m| m != target.mac))
                        .and_then(|(_, mac)| mac),
                    Err(e) => {
                        tracing::warn!(instance = %target.instance, "reading NAs failed: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        None
                    }
                }
            }
            _ => return,
        };
        if let Some(mac) = claimant {
            total += 1;
            alarm.raise(HaFailure::Conflict);
            tracing::error!(
                instance = %target.instance, vip = %target.vip, other_mac = %format_mac(&mac),
                our_mac = %format_mac(&target.mac), total,
                "another host claims the VIP we hold"
            );
        }
    }
}
