//! The tokio shell around [`Vrrp`]: one task per VRRP instance feeds the state machine
//! with adverts from the raw socket, link changes from rtnetlink, health and the stop
//! signal, and carries out its decisions: adverts on the socket, the VIP through the same
//! [`VipKeeper`] the lease drivers use. No protocol decision is made here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::link::{LinkInfo, LinkWatch, unicast_peers};
use super::packet::{self, Advert, DropReason, Expect};
use super::socket::{VrrpSocket, destinations};
use super::state::{Decision, Phase, Settings, StepDownReason, Vrrp};
use crate::config::{BackendKey, Instance, VrrpPlan};
use crate::ha::announce::announce_address;
use crate::ha::driver::StatusReporter;
use crate::ha::keeper::VipKeeper;
use crate::stats::control::{ControlState, VipRole, VrrpView};

/// How much a host with no healthy backend lowers its advertised priority (floor 1), like
/// keepalived's `track_script { weight -50 }`: a peer that can serve takes the VIP if it
/// preempts, and equal hosts keep their order when every backend is down for all of them.
pub const UNHEALTHY_PENALTY: u8 = 50;

/// What health says about an instance's backends. Implemented by the stats control state,
/// which health reports into.
pub trait BackendHealth: Send + Sync {
    /// `Some(true)`: at least one is up; `Some(false)`: health reported on them and none is
    /// up; `None`: no report yet (the priority is not lowered on no information).
    fn any_up(&self, backends: &[BackendKey]) -> Option<bool>;
}

/// The advertised priority for a configured one and what health says.
pub fn effective_priority(configured: u8, any_up: Option<bool>) -> u8 {
    match any_up {
        Some(false) => configured.saturating_sub(UNHEALTHY_PENALTY).max(1),
        _ => configured,
    }
}

/// One VRRP instance as the driver needs it.
#[derive(Debug, Clone)]
pub struct VrrpInstance {
    pub name: String,
    pub vip: IpAddr,
    pub interface: String,
    /// `peer` as configured (this host's own addresses are dropped at run time).
    pub peers: Vec<IpAddr>,
    pub settings: Settings,
    /// How often health is read and a held VIP checked (`check_interval`).
    pub check_every: Duration,
    /// The backends whose health sets the priority; empty: always healthy.
    pub backends: Vec<BackendKey>,
}

impl VrrpInstance {
    pub fn from_plan(instance: &Instance, plan: &VrrpPlan) -> VrrpInstance {
        VrrpInstance {
            name: instance.name.clone(),
            vip: instance.vip,
            interface: instance.interface.clone(),
            peers: instance.peers.clone(),
            settings: Settings::from_plan(plan),
            check_every: instance.check_interval,
            backends: instance
                .services
                .iter()
                .flat_map(|s| {
                    s.backends.iter().map(|b| BackendKey {
                        service: s.listen_addr(),
                        backend: b.addr,
                    })
                })
                .collect(),
        }
    }
}

/// Counters published with the status (`/metrics`: `alive_proxy_vrrp_*`).
#[derive(Debug, Default, Clone)]
struct Counters {
    received: u64,
    sent: u64,
    send_errors: u64,
    dropped: BTreeMap<DropReason, u64>,
}

/// Link-local peer addresses remembered per instance (see `Shell::learn`).
const MAX_LEARNED_PEERS: usize = 8;
/// How often a held VIP's address is re-checked at most, whatever `check_interval` says.
const MIN_CHECK_EVERY: Duration = Duration::from_millis(100);

/// What woke the loop.
enum Wake {
    Timer,
    Packet(Result<(IpAddr, Advert), DropReason>),
    RecvFailed(std::io::Error),
    Link,
    Tick,
    Stop,
}

struct Shell {
    inst: VrrpInstance,
    fsm: Vrrp,
    keeper: VipKeeper,
    status: StatusReporter,
    health: Arc<dyn BackendHealth>,
    control: Arc<ControlState>,
    link: Option<LinkWatch>,
    socket: Option<VrrpSocket>,
    /// Interface index and mode the socket was opened for.
    socket_for: Option<(u32, bool)>,
    source: Option<IpAddr>,
    /// `peer` minus this host's addresses; empty: multicast.
    unicast: Vec<IpAddr>,
    counters: Counters,
    last_error: Option<String>,
    last_phase: Phase,
    last_view: Option<VrrpView>,
    /// Our peer addresses announced since the link last came up.
    announced: Vec<IpAddr>,
    /// Link-local addresses peers advertised from (IPv6 unicast): also destinations.
    learned: Vec<IpAddr>,
}

/// Runs one VRRP instance until `stop` changes: removes a stale VIP, then starts as a
/// backup once the link is up.
pub async fn run_vrrp(
    inst: VrrpInstance,
    mut keeper: VipKeeper,
    status: StatusReporter,
    health: Arc<dyn BackendHealth>,
    control: Arc<ControlState>,
    mut stop: watch::Receiver<bool>,
) {
    keeper.remove_stale().await;
    let mut shell = Shell {
        fsm: Vrrp::new(inst.settings),
        inst,
        keeper,
        status,
        health,
        control,
        link: None,
        socket: None,
        socket_for: None,
        source: None,
        unicast: Vec::new(),
        counters: Counters::default(),
        last_error: None,
        last_phase: Phase::Initialize,
        last_view: None,
        announced: Vec::new(),
        learned: Vec::new(),
    };
    shell.refresh_priority(Instant::now());
    shell.setup().await;
    let tick_every = shell.inst.check_every.max(MIN_CHECK_EVERY);
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    let mut buf = vec![0u8; 2048];
    loop {
        let until = match shell.fsm.poll(Instant::now()) {
            Decision::Wait(until) => until,
            Decision::Send { priority } => {
                shell.send(priority);
                continue;
            }
            Decision::TakeOver => {
                shell.take_over().await;
                continue;
            }
            Decision::StepDown(reason) => {
                shell.step_down(reason).await;
                continue;
            }
            Decision::Stopped => break,
        };
        shell.publish();
        let wake = {
            let expect = Expect {
                vrid: shell.inst.settings.vrid,
                vip: shell.inst.vip,
                peers: (!shell.unicast.is_empty()).then_some(shell.unicast.as_slice()),
            };
            let socket = shell.socket.as_ref();
            let link = shell.link.as_mut();
            let timer = async {
                match until {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let packet = async {
                match socket {
                    Some(socket) => match socket.recv(&mut buf).await {
                        Ok(rx) => Wake::Packet(rx.and_then(|rx| {
                            packet::validate(&rx, &expect).map(|advert| (rx.src, advert))
                        })),
                        Err(e) => Wake::RecvFailed(e),
                    },
                    None => std::future::pending().await,
                }
            };
            let changed = async {
                match link {
                    Some(link) => link.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = timer => Wake::Timer,
                wake = packet => wake,
                () = changed => Wake::Link,
                _ = tick.tick() => Wake::Tick,
                _ = stop.changed(), if !stopping => Wake::Stop,
            }
        };
        let now = Instant::now();
        match wake {
            Wake::Timer => {}
            Wake::Packet(Ok((from, advert))) => {
                shell.counters.received += 1;
                shell.learn(from);
                shell
                    .fsm
                    .advert(now, from, advert.priority, advert.interval());
            }
            Wake::Packet(Err(reason)) => shell.dropped(reason),
            Wake::RecvFailed(e) => {
                tracing::error!(instance = %shell.inst.name, "receiving VRRP adverts failed: {e}; reopening the socket");
                shell.last_error = Some(format!("receiving adverts: {e}"));
                shell.socket = None;
                shell.socket_for = None;
                shell.refresh_link().await;
            }
            Wake::Link => shell.refresh_link().await,
            Wake::Tick => shell.tick().await,
            Wake::Stop => {
                stopping = true;
                shell.fsm.stop(now);
            }
        }
    }
    shell.publish();
    shell
        .status
        .publish(VipRole::Backup, None, Some(shell.endpoint()), None);
}

impl Shell {
    /// Netlink subscription, then the link's state (which opens the socket).
    async fn setup(&mut self) {
        if self.link.is_none() {
            match LinkWatch::open(&self.inst.interface) {
                Ok(link) => self.link = Some(link),
                Err(e) => {
                    tracing::error!(instance = %self.inst.name, "VRRP cannot watch its interface: {e}");
                    self.last_error = Some(e.to_string());
                    return;
                }
            }
        }
        self.refresh_link().await;
    }

    async fn refresh_link(&mut self) {
        let now = Instant::now();
        let Some(link) = &self.link else {
            return;
        };
        let info = link.info(self.inst.vip, &self.inst.peers).await;
        let own = link.own_addresses().await;
        let (info, own) = match (info, own) {
            (Ok(info), Ok(own)) => (info, own),
            (Err(e), _) | (_, Err(e)) => {
                self.fault(now, e.to_string());
                return;
            }
        };
        let unicast = unicast_peers(&self.inst.peers, &own);
        if unicast != self.unicast {
            if unicast.is_empty() {
                tracing::info!(instance = %self.inst.name, "no peer other than this host: adverts go to the VRRP multicast group");
            }
            self.unicast = unicast;
        }
        let LinkInfo {
            index,
            up,
            source,
            mac,
            addresses,
        } = info;
        let Some(source) = source.filter(|_| up) else {
            let why = if up {
                format!("no usable advert source address on {}", self.inst.interface)
            } else {
                format!("interface {} is down", self.inst.interface)
            };
            self.fault(now, why);
            return;
        };
        let wanted = (index, self.unicast.is_empty());
        if self.socket.is_none() || self.socket_for != Some(wanted) {
            match VrrpSocket::open(
                self.inst.vip.is_ipv6(),
                &self.inst.interface,
                index,
                wanted.1,
            ) {
                Ok(socket) => {
                    self.socket = Some(socket);
                    self.socket_for = Some(wanted);
                }
                Err(e) => {
                    self.socket = None;
                    self.socket_for = None;
                    self.fault(now, format!("cannot open the VRRP socket: {e}"));
                    return;
                }
            }
        }
        if self.source != Some(source) {
            tracing::info!(instance = %self.inst.name, %source, peers = ?self.unicast, "VRRP adverts go out from {source}");
        }
        self.source = Some(source);
        self.last_error = None;
        self.fsm.link_up(now, source);
        if let Some(mac) = mac {
            self.announce_own_addresses(index, mac, &addresses);
        }
    }

    /// Once per link-up, each of this host's addresses that the peers send adverts to (ours
    /// in `peer`) is announced, so a peer whose neighbour entry for it failed while our
    /// link was down reaches us now rather than at its next retry a second later.
    fn announce_own_addresses(&mut self, index: u32, mac: [u8; 6], addresses: &[IpAddr]) {
        let mine = self
            .inst
            .peers
            .iter()
            .filter(|p| addresses.contains(p) && !self.announced.contains(p))
            .copied()
            .collect::<Vec<_>>();
        for addr in mine {
            match announce_address(addr, index, mac) {
                Ok(()) => {
                    tracing::debug!(instance = %self.inst.name, %addr, "announced our peer address")
                }
                Err(e) => {
                    tracing::warn!(instance = %self.inst.name, %addr, "announcing our peer address failed: {e}")
                }
            }
            self.announced.push(addr);
        }
    }

    fn fault(&mut self, now: Instant, why: String) {
        self.announced.clear();
        if self.last_error.as_deref() != Some(why.as_str()) {
            tracing::error!(instance = %self.inst.name, "VRRP FAULT: {why}");
        }
        self.last_error = Some(why);
        self.source = None;
        self.fsm.link_down(now);
    }

    /// Health → priority, the held VIP still there, the peers' neighbour entries warm, and
    /// setup retried while broken.
    async fn tick(&mut self) {
        let now = Instant::now();
        self.refresh_priority(now);
        if self.fsm.holds_vip() && !self.keeper.ensure().await {
            self.resign(now);
        }
        if let (Some(link), Some((index, false))) = (&self.link, self.socket_for)
            && self.source.is_some()
            && let Err(e) = link.resolve(index, &self.destinations()).await
        {
            tracing::debug!(instance = %self.inst.name, "resolving the peers: {e}");
        }
        if self.link.is_none() || (self.socket.is_none() && self.last_error.is_some()) {
            self.setup().await;
        }
    }

    fn refresh_priority(&mut self, now: Instant) {
        let configured = self.inst.settings.priority;
        let any_up = if self.inst.backends.is_empty() {
            None
        } else {
            self.health.any_up(&self.inst.backends)
        };
        let priority = effective_priority(configured, any_up);
        if priority != self.fsm.priority() {
            if priority < configured {
                tracing::warn!(instance = %self.inst.name, configured, advertised = priority,
                    "no healthy backend: advertising a lower VRRP priority");
            } else {
                tracing::info!(instance = %self.inst.name, priority, "a backend is healthy again: advertising the configured VRRP priority");
            }
            self.fsm.set_priority(now, priority);
        }
    }

    fn send(&mut self, priority: u8) {
        let (Some(socket), Some(source)) = (&self.socket, self.source) else {
            return;
        };
        let advert = Advert {
            vrid: self.inst.settings.vrid,
            priority,
            interval_cs: packet::centiseconds(self.inst.settings.advert_interval),
            addresses: vec![self.inst.vip],
        };
        let mut failed = None;
        for dst in self.destinations() {
            let msg = packet::encode(&advert, source, dst);
            if let Err(e) = socket.send(&msg, source, dst) {
                failed = Some((dst, e));
            }
        }
        self.counters.sent += 1;
        if let Some((dst, e)) = failed {
            self.counters.send_errors += 1;
            // Rate-limited: a dead peer route fails every advert.
            if self.counters.send_errors.is_power_of_two() {
                tracing::warn!(instance = %self.inst.name, %dst, errors = self.counters.send_errors,
                    "sending a VRRP advert failed: {e}");
            }
        }
    }

    fn dropped(&mut self, reason: DropReason) {
        let count = self.counters.dropped.entry(reason).or_insert(0);
        *count += 1;
        if reason == DropReason::Vrid {
            // Other virtual routers on the link: normal.
            return;
        }
        if count.is_power_of_two() {
            tracing::warn!(instance = %self.inst.name, reason = reason.name(), count = *count,
                "dropped an invalid VRRP advert");
        }
    }

    async fn take_over(&mut self) {
        tracing::info!(instance = %self.inst.name, vip = %self.inst.vip, priority = self.fsm.priority(),
            "VRRP MASTER: adding the VIP");
        if !self.keeper.take_over().await {
            self.resign(Instant::now());
        }
    }

    async fn step_down(&mut self, reason: StepDownReason) {
        match reason {
            StepDownReason::Superseded => tracing::info!(instance = %self.inst.name,
                master = ?self.fsm.master(Instant::now()), "a better VRRP master is on the link; removing the VIP"),
            StepDownReason::LinkDown => tracing::error!(instance = %self.inst.name,
                "link lost; removing the VIP"),
            StepDownReason::Shutdown => tracing::info!(instance = %self.inst.name,
                "shutting down: removing the VIP, then advertising priority 0"),
            StepDownReason::Resigned => tracing::error!(instance = %self.inst.name,
                "this host cannot serve the VIP; handing it to a peer"),
        }
        self.keeper.step_down().await;
    }

    fn resign(&mut self, now: Instant) {
        let hold_off = self.fsm.master_down_interval() * 2;
        self.last_error = Some(format!(
            "cannot add the VIP on this host; handed to a peer, retrying in {hold_off:?}"
        ));
        self.fsm.resign(now, hold_off);
    }

    /// Where adverts go: the unicast peers plus the link-local addresses peers advertised
    /// from, or the multicast group.
    fn destinations(&self) -> Vec<IpAddr> {
        let mut all = destinations(&self.unicast, self.inst.vip.is_ipv6());
        if !self.unicast.is_empty() {
            all.extend(
                self.learned
                    .iter()
                    .filter(|l| !all.contains(l))
                    .copied()
                    .collect::<Vec<_>>(),
            );
        }
        all
    }

    /// keepalived binds its IPv6 unicast receive socket to its advert source, by default its
    /// link-local address: adverts sent to the global address listed in `peer` never reach
    /// it. So, in IPv6 unicast mode, the link-local source of every valid advert becomes a
    /// destination too (bounded; kept while the process runs).
    fn learn(&mut self, from: IpAddr) {
        let link_local = matches!(from, IpAddr::V6(a) if a.is_unicast_link_local());
        if link_local
            && !self.unicast.is_empty()
            && !self.learned.contains(&from)
            && self.learned.len() < MAX_LEARNED_PEERS
        {
            tracing::info!(instance = %self.inst.name, peer = %from,
                "a peer advertises from its link-local address; our adverts go there too");
            self.learned.push(from);
        }
    }

    fn endpoint(&self) -> String {
        if self.unicast.is_empty() {
            let group = destinations(&[], self.inst.vip.is_ipv6());
            format!("vrrp multicast {}", group[0])
        } else {
            let peers: Vec<String> = self.unicast.iter().map(|p| p.to_string()).collect();
            format!("vrrp unicast {}", peers.join(","))
        }
    }

    /// Role, master and counters to the stats control state, when they changed.
    fn publish(&mut self) {
        let now = Instant::now();
        let phase = self.fsm.phase();
        if phase != self.last_phase {
            tracing::info!(instance = %self.inst.name, from = phase_name(self.last_phase),
                to = phase_name(phase), priority = self.fsm.priority(), "VRRP state changed");
            self.last_phase = phase;
        }
        let role = match phase {
            _ if self.fsm.holds_vip() => VipRole::Master,
            Phase::Fault => VipRole::Fault,
            Phase::Initialize => VipRole::Init,
            _ => VipRole::Backup,
        };
        let master = self.fsm.master(now);
        let endpoint = self.endpoint();
        self.status.publish(
            role,
            master.map(|m| m.to_string()),
            Some(endpoint.clone()),
            self.last_error.clone(),
        );
        let view = VrrpView {
            vrid: self.inst.settings.vrid,
            state: phase_name(phase).to_owned(),
            priority: self.fsm.priority(),
            configured_priority: self.inst.settings.priority,
            advert_interval_ms: self.inst.settings.advert_interval.as_millis() as u64,
            master,
            source: self.source,
            destinations: self.destinations(),
            adverts_received: self.counters.received,
            adverts_sent: self.counters.sent,
            send_errors: self.counters.send_errors,
            dropped: self
                .counters
                .dropped
                .iter()
                .map(|(r, n)| (r.name().to_owned(), *n))
                .collect(),
        };
        if self.last_view.as_ref() != Some(&view) {
            self.control.vrrp_state(&self.inst.name, view.clone());
            self.last_view = Some(view);
        }
    }
}

/// keepalived's names for the states, as operators read them in its logs.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Initialize => "INIT",
        Phase::Backup => "BACKUP",
        Phase::Master => "MASTER",
        Phase::Fault => "FAULT",
        Phase::Stopped => "STOP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_with_no_healthy_backend_advertises_fifty_less_never_below_one() {
        assert_eq!(effective_priority(100, Some(false)), 50);
        assert_eq!(effective_priority(40, Some(false)), 1);
        assert_eq!(effective_priority(100, Some(true)), 100);
        assert_eq!(
            effective_priority(100, None),
            100,
            "no report yet is not a failure"
        );
    }
}
