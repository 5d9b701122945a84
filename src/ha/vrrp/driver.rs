//! The tokio shell around [`Vrrp`]: one task per VRRP instance feeds the state machine
//! with adverts from the raw socket, link changes from rtnetlink, health and the
//! supervisor's commands, and carries out its decisions: adverts on the socket, the VIP
//! through the same [`VipKeeper`] the lease drivers use. No protocol decision is made here.
//!
//! # Planned handover
//! A stop with a drain deadline parks the VIP on `lo` (this host's sessions go on) before
//! the priority-0 advert, and removes it when the drain ends. A backup that takes over
//! right after a priority-0 advert forwards the packets of flows it does not know to the
//! sender of that advert (its address on the link) for its own drain timeout
//! ([`crate::ha::forward`]): VRRP carries no note, and the advert's source is exactly the
//! host those sessions live on. A master that dies sends no priority 0: nothing is
//! forwarded.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::link::{LinkInfo, LinkWatch, unicast_peers};
use super::packet::{self, Advert, DropReason, Expect};
use super::socket::{VrrpSocket, destinations};
use super::state::{Decision, Phase, Settings, StepDownReason, Vrrp};
use crate::config::{BackendKey, Instance, LockPlan, VrrpPlan};
use crate::ha::announce::announce_address;
use crate::ha::driver::{InstanceCommand, InstanceTask, Stopping, wait_for_drain};
use crate::ha::forward::{Forwarder, Forwarding};
use crate::ha::keeper::VipKeeper;
use crate::ha::status::{Alarm, HaFailure, HaObserver, Report, StatusReporter, VipRole, VrrpView};
use crate::ha::vip::VipOps;

/// How much a host with no healthy backend lowers its advertised priority (floor 1), like
/// keepalived's `track_script { weight -50 }`: a peer that can serve takes the VIP if it
/// preempts, and equal hosts keep their order when every backend is down for all of them.
pub const UNHEALTHY_PENALTY: u8 = 50;

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

/// How often a removal that keeps failing at stop is tried, and how many times.
const STOP_REMOVE_RETRY: Duration = Duration::from_millis(100);
const STOP_REMOVE_ATTEMPTS: u32 = 30;

/// What woke the loop.
enum Wake {
    Timer,
    Packet(Result<(IpAddr, Advert), DropReason>),
    RecvFailed(std::io::Error),
    Link,
    Tick,
    Command(Option<InstanceCommand>),
}

struct Shell<V: VipOps> {
    inst: VrrpInstance,
    fsm: Vrrp,
    keeper: VipKeeper<V>,
    status: StatusReporter,
    observer: Arc<dyn HaObserver>,
    alarm: Alarm,
    forwarder: Arc<Forwarder>,
    /// How long this host forwards a previous master's sessions after a planned handover.
    drain: Duration,
    /// The last priority-0 advert heard: a master handing over, and where it was.
    handover_from: Option<(IpAddr, Instant)>,
    stopping: Option<Stopping>,
    /// A removal failed and has not succeeded since: retried every tick.
    removal_pending: bool,
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

/// Runs one VRRP instance until told to stop: removes a stale VIP, then starts as a
/// backup once the link is up. `drain`: how long a takeover after a priority-0 advert
/// forwards the previous master's sessions to it.
pub async fn run_vrrp<V: VipOps>(
    task: InstanceTask<V>,
    inst: VrrpInstance,
    observer: Arc<dyn HaObserver>,
    drain: Duration,
) {
    let InstanceTask {
        mut keeper,
        status,
        forwarder,
        mut commands,
        ..
    } = task;
    keeper.remove_stale().await;
    let alarm = status.alarm();
    let mut shell = Shell {
        fsm: Vrrp::new(inst.settings),
        inst,
        keeper,
        status,
        observer,
        alarm,
        forwarder,
        drain,
        handover_from: None,
        stopping: None,
        removal_pending: false,
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
        let wake = shell.wait(until, &mut tick, &mut commands, &mut buf).await;
        shell.handle(wake).await;
    }
    shell.publish();
    shell.finish(&mut commands, &mut buf).await;
}

impl<V: VipOps> Shell<V> {
    /// Sleeps until the state machine's `until`, an advert, a link change, the tick or a
    /// command from the supervisor.
    async fn wait(
        &mut self,
        until: Option<Instant>,
        tick: &mut tokio::time::Interval,
        commands: &mut mpsc::UnboundedReceiver<InstanceCommand>,
        buf: &mut [u8],
    ) -> Wake {
        let expect = Expect {
            vrid: self.inst.settings.vrid,
            vip: self.inst.vip,
            peers: (!self.unicast.is_empty()).then_some(self.unicast.as_slice()),
        };
        let socket = self.socket.as_ref();
        let link = self.link.as_mut();
        let timer = async {
            match until {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let packet = async {
            match socket {
                Some(socket) => match socket.recv(buf).await {
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
            command = commands.recv(), if self.stopping.is_none() => Wake::Command(command),
        }
    }

    async fn handle(&mut self, wake: Wake) {
        let now = Instant::now();
        match wake {
            Wake::Timer => {}
            Wake::Packet(Ok((from, advert))) => {
                self.counters.received += 1;
                self.learn(from);
                if advert.priority == 0 {
                    self.handover_from = Some((from, now));
                }
                self.fsm
                    .advert(now, from, advert.priority, advert.interval());
            }
            Wake::Packet(Err(reason)) => self.dropped(reason),
            Wake::RecvFailed(e) => {
                tracing::error!(instance = %self.inst.name, "receiving VRRP adverts failed: {e}; reopening the socket");
                self.last_error = Some(format!("receiving adverts: {e}"));
                self.socket = None;
                self.socket_for = None;
                self.refresh_link().await;
            }
            Wake::Link => self.refresh_link().await,
            Wake::Tick => self.tick().await,
            Wake::Command(command) => self.obey(command, now),
        }
    }

    fn obey(&mut self, command: Option<InstanceCommand>, now: Instant) {
        match command {
            Some(InstanceCommand::Retune { instance, done }) => {
                if let LockPlan::Vrrp(plan) = &instance.lock {
                    let inst = VrrpInstance::from_plan(&instance, plan);
                    self.fsm.retune(now, inst.settings);
                    self.inst = inst;
                    // The configured priority may have changed: apply it with health.
                    self.refresh_priority(now);
                    tracing::info!(instance = %self.inst.name, "VRRP settings applied in place");
                }
                // The supervisor may have stopped waiting.
                let _ = done.send(());
            }
            Some(InstanceCommand::FinishDrain) => {}
            other => {
                self.stopping = Stopping::from(other, now, Duration::from_secs(5));
                self.fsm.stop(now);
            }
        }
    }

    /// After the state machine stopped: a parked VIP waits for the next master, reports,
    /// drains, and goes.
    async fn finish(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<InstanceCommand>,
        buf: &mut [u8],
    ) {
        if let Err(e) = self.forwarder.remove(&self.inst.name).await {
            self.alarm.raise(HaFailure::Forward);
            tracing::error!(instance = %self.inst.name, "ending the handover forwarding: {e}");
        }
        if let Some(mut stop) = self.stopping.take() {
            let parked = self.keeper.is_parked();
            if parked && stop.await_next_holder {
                self.await_new_master(buf).await;
            }
            stop.handed_over(parked);
            if parked {
                if let Some(until) = stop.drain_until {
                    wait_for_drain(commands, until).await;
                }
                for _ in 0..STOP_REMOVE_ATTEMPTS {
                    if self.keeper.unpark().await {
                        break;
                    }
                    tokio::time::sleep(STOP_REMOVE_RETRY).await;
                }
            }
        }
        let report = Report {
            endpoint: Some(self.endpoint()),
            ..Report::default()
        };
        self.status.publish(VipRole::Backup, report);
    }

    /// After our priority-0 advert: until a peer advertises as master (or a master-down
    /// interval passed), so listeners stay open for clients still sent here.
    async fn await_new_master(&mut self, buf: &mut [u8]) {
        let Some(socket) = &self.socket else {
            return;
        };
        let expect = Expect {
            vrid: self.inst.settings.vrid,
            vip: self.inst.vip,
            peers: (!self.unicast.is_empty()).then_some(self.unicast.as_slice()),
        };
        let bound = self.fsm.master_down_interval();
        let started = Instant::now();
        let heard = tokio::time::timeout(bound, async {
            loop {
                if let Ok(Ok(rx)) = socket.recv(buf).await
                    && let Ok(advert) = packet::validate(&rx, &expect)
                    && advert.priority > 0
                {
                    return rx.src;
                }
            }
        })
        .await;
        match heard {
            Ok(master) => {
                tracing::info!(instance = %self.inst.name, %master, after = ?started.elapsed(), "handed over")
            }
            Err(_) => tracing::warn!(instance = %self.inst.name, waited = ?bound,
                "no peer took over as VRRP master; the VIP is unserved until one does"),
        }
    }

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
        if self.removal_pending && !self.fsm.holds_vip() {
            self.removal_pending = !self.keeper.step_down().await;
        }
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
            self.observer.backends_up(&self.inst.backends)
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
        self.removal_pending = false;
        let now = Instant::now();
        // A master that handed over just now (priority 0) still serves its sessions.
        if let Some((from, at)) = self.handover_from.take()
            && now.saturating_duration_since(at) < self.fsm.master_down_interval() * 2
            && !self.drain.is_zero()
        {
            let forwarding = Forwarding {
                vip: self.inst.vip,
                to: from,
                interface: self.inst.interface.clone(),
                until: (now + self.drain).into(),
            };
            if let Err(e) = self.forwarder.install(&self.inst.name, forwarding).await {
                self.alarm.raise(HaFailure::Forward);
                tracing::error!(instance = %self.inst.name,
                    "cannot forward the previous master's sessions (they will be reset): {e}");
            }
        }
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
        if let Err(e) = self.forwarder.remove(&self.inst.name).await {
            self.alarm.raise(HaFailure::Forward);
            tracing::error!(instance = %self.inst.name, "ending the handover forwarding: {e}");
        }
        let planned = reason == StepDownReason::Shutdown
            && self
                .stopping
                .as_ref()
                .is_some_and(|s| s.drain_until.is_some());
        // The priority-0 advert that follows tells the peers the VIP is free: it goes only
        // once the VIP is confirmed gone from the link (bounded for a stop or resign).
        let planned_or_resigned =
            matches!(reason, StepDownReason::Shutdown | StepDownReason::Resigned);
        for attempt in 1..=STOP_REMOVE_ATTEMPTS {
            let gone = if planned {
                self.keeper.park().await
            } else {
                self.keeper.step_down().await
            };
            self.removal_pending = !gone;
            if gone || !planned_or_resigned {
                return;
            }
            if attempt == STOP_REMOVE_ATTEMPTS {
                tracing::error!(instance = %self.inst.name,
                    "giving up: the VIP could not be removed and may still be on its interface");
            }
            tokio::time::sleep(STOP_REMOVE_RETRY).await;
        }
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
        let report = Report {
            holder: master.map(|m| m.to_string()),
            endpoint: Some(self.endpoint()),
            last_error: self.last_error.clone(),
            removal_pending: self.removal_pending,
        };
        self.status.publish(role, report);
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
            self.observer.vrrp_state(&self.inst.name, view.clone());
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
