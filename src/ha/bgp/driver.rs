//! The tokio task of one BGP-mode instance: keeps the VIP on `lo`, puts the VIP's route in
//! its kernel table while [`Gate`] says so, reads BIRD for the status, and obeys the
//! supervisor's commands.
//!
//! # Stop, as this task runs it
//! Withdraw first: the route leaves the table, BIRD sends the withdrawal, and the task
//! watches BIRD until it no longer carries the route (bounded by `withdraw_wait` and the
//! drain deadline). Only then does it report "handed over", after which the process closes
//! its listeners and drains: the router stopped sending new flows here before the
//! listeners closed, so no new connection is refused. The VIP stays on `lo` until the
//! drain ends, so established sessions finish here.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, mpsc, watch};

use super::bird::{Bird, BirdState};
use super::gate::{Gate, Reason};
use super::note::{self, Note, Received};
use super::route::RouteOps;
use super::track;
use crate::config::plan::{BgpPlan, Instance};
use crate::ha::arp_quiet::ArpQuiet;
use crate::ha::driver::{InstanceCommand, InstanceTask, Stopping, wait_for_drain};
use crate::ha::forward::{Forwarder, Forwarding};
use crate::ha::status::{Alarm, BgpView, HaFailure, HaObserver, Report, StatusReporter, VipRole};
use crate::ha::vip::VipOps;

/// Health is re-read at least this often even without a change signal.
const TICK: Duration = Duration::from_millis(250);
/// BIRD is read this often for the status (and the route re-asserted in the table).
const BIRD_POLL: Duration = Duration::from_secs(1);
/// While waiting for BIRD to drop the route at stop.
const WITHDRAW_POLL: Duration = Duration::from_millis(20);
/// Tries of a route removal at stop, [`TICK`] apart.
const STOP_ATTEMPTS: u32 = 20;

/// What the BGP task needs besides the common [`InstanceTask`].
pub struct BgpTask<R: RouteOps> {
    pub plan: BgpPlan,
    pub route: R,
    pub observer: Arc<dyn HaObserver>,
    pub identity: String,
}

struct Bgp<V: VipOps, R: RouteOps> {
    name: String,
    instance: Instance,
    plan: BgpPlan,
    vip: V,
    route: R,
    bird: Bird,
    observer: Arc<dyn HaObserver>,
    identity: String,
    status: StatusReporter,
    alarm: Alarm,
    forwarder: Arc<Forwarder>,
    gate: Gate,
    /// The route is in the table (as far as the last netlink answer says).
    installed: bool,
    /// The VIP is on `lo`.
    on_lo: bool,
    quiet: Option<ArpQuiet>,
    quiet_tried: bool,
    /// Conntrack is kept on for the drain notes ([`track`]).
    tracking: bool,
    reason: Reason,
    last_error: Option<String>,
    bird_state: Option<BirdState>,
    bird_error: Option<String>,
    since: SystemTime,
    changes: u64,
    last_view: Option<BgpView>,
}

/// BGP mode: announce while able to serve (module doc).
pub async fn run_bgp<V: VipOps, R: RouteOps>(task: InstanceTask<V>, bgp: BgpTask<R>) {
    let InstanceTask {
        instance,
        keeper,
        status,
        forwarder,
        mut commands,
    } = task;
    let alarm = status.alarm();
    let now = Instant::now();
    let mut me = Bgp {
        name: instance.name.clone(),
        bird: Bird::new(&bgp.plan.bird_socket),
        gate: Gate::new(bgp.plan.hold_down),
        plan: bgp.plan,
        instance,
        vip: keeper.into_vip(),
        route: bgp.route,
        observer: bgp.observer,
        identity: bgp.identity,
        status,
        alarm,
        forwarder,
        installed: false,
        on_lo: false,
        quiet: None,
        quiet_tried: false,
        tracking: false,
        reason: Reason::NoQuorum,
        last_error: None,
        bird_state: None,
        bird_error: None,
        since: SystemTime::now(),
        changes: 0,
        last_view: None,
    };
    me.start().await;
    let mut changes = me.observer.health_changes();
    // Only hosts told about their peers hear (and act on) their drain notes.
    let mut notes = (!me.instance.peers.is_empty()).then(note::subscribe);
    let mut next_bird = now;
    let stopping = loop {
        me.step(Instant::now()).await;
        if Instant::now() >= next_bird {
            me.poll_bird().await;
            next_bird = Instant::now() + BIRD_POLL;
        }
        me.publish();
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = health_changed(&mut changes) => {}
            received = next_note(&mut notes) => me.on_note(received).await,
            command = commands.recv() => match command {
                Some(InstanceCommand::Retune { instance, done }) => {
                    me.retune(*instance);
                    // A reload that added `peer`: hear their notes from now on.
                    if !me.instance.peers.is_empty() {
                        me.ensure_tracking().await;
                        if notes.is_none() {
                            notes = Some(note::subscribe());
                        }
                    }
                    // The supervisor may have stopped waiting.
                    let _ = done.send(());
                }
                Some(InstanceCommand::FinishDrain) => {}
                other => {
                    if let Some(stopping) = Stopping::from(other, Instant::now(), Duration::ZERO) {
                        break stopping;
                    }
                }
            },
        }
    };
    me.stop(stopping, &mut commands).await;
}

/// The next drain note from the process's listener; never, without a subscription.
async fn next_note(notes: &mut Option<broadcast::Receiver<Received>>) -> Received {
    loop {
        match notes {
            Some(rx) => match rx.recv().await {
                Ok(received) => return received,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "drain notes arrived faster than handled");
                }
                Err(broadcast::error::RecvError::Closed) => *notes = None,
            },
            None => std::future::pending::<()>().await,
        }
    }
}

/// Resolves when health reported something new; never, without a signal.
async fn health_changed(changes: &mut Option<watch::Receiver<u64>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                // The sender is gone (process stopping): polling alone from now on.
                *changes = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

impl<V: VipOps, R: RouteOps> Bgp<V, R> {
    /// The VIP leaves its interface (a lease or VRRP run before may have left it there) and
    /// goes on `lo`, where the host serves it without answering ARP/ND on the link.
    async fn start(&mut self) {
        match self.vip.remove().await {
            Ok(true) => tracing::warn!(
                instance = %self.name, vip = %self.vip.addr(), interface = %self.vip.interface(),
                "removed the VIP from its interface: in BGP mode it lives on lo"
            ),
            Ok(false) => {}
            Err(e) => {
                self.alarm.raise(HaFailure::VipRemove);
                tracing::error!(instance = %self.name, "checking the interface for the VIP: {e}");
            }
        }
        tracing::info!(
            instance = %self.name, vip = %self.instance.vip, table = self.plan.table,
            bird = %self.plan.bird_socket.display(), hold_down = ?self.plan.hold_down,
            "BGP mode: the VIP goes on lo; its route is announced through BIRD while every service has quorum"
        );
        if !self.instance.peers.is_empty() {
            self.ensure_tracking().await;
        }
        self.ensure_on_lo().await;
    }

    /// Conntrack on for the drain notes ([`track`]), once.
    async fn ensure_tracking(&mut self) {
        if self.tracking {
            return;
        }
        // Claimed even when nft fails: the count is ours to give back at stop.
        self.tracking = true;
        if let Err(e) = track::engage().await {
            self.alarm.raise(HaFailure::Forward);
            tracing::error!(instance = %self.name,
                "cannot keep conntrack on: a peer's drain could take this host's own sessions for its own: {e}");
        }
    }

    async fn ensure_on_lo(&mut self) {
        if self.quiet.is_none() && !self.quiet_tried && self.vip.addr().is_ipv4() {
            // Linux answers ARP on any interface for an address on lo unless told not to; the
            // router reaches the VIP through the BGP next hop, never by ARP for the VIP.
            // Tried once: a read-only /proc stays read-only, and one warning says so.
            self.quiet_tried = true;
            match ArpQuiet::engage(self.vip.interface()) {
                Ok(quiet) => self.quiet = Some(quiet),
                Err(e) => tracing::warn!(instance = %self.name,
                    "the link may answer ARP for the VIP on lo: {e}"),
            }
        }
        match self.vip.park().await {
            Ok(()) => {
                if !self.on_lo {
                    tracing::info!(instance = %self.name, vip = %self.vip.addr(), "VIP on lo");
                }
                self.on_lo = true;
            }
            Err(e) => {
                if self.on_lo || self.last_error.is_none() {
                    tracing::error!(instance = %self.name, "putting the VIP on lo failed: {e}");
                }
                self.alarm.raise(HaFailure::VipAdd);
                self.on_lo = false;
                self.last_error = Some(format!("cannot put the VIP on lo: {e}"));
            }
        }
    }

    fn retune(&mut self, instance: Instance) {
        if let crate::config::LockPlan::Bgp(plan) = &instance.lock {
            self.gate.set_hold_down(plan.hold_down);
            if plan.bird_socket != self.plan.bird_socket {
                self.bird = Bird::new(&plan.bird_socket);
            }
            self.plan = plan.clone();
        }
        tracing::info!(instance = %self.name, hold_down = ?self.plan.hold_down, "BGP settings retuned");
        self.instance = instance;
    }

    /// A peer is about to withdraw its route: the flows the router moves here from it are
    /// sent on to it until its drain ends ([`super::note`]).
    async fn on_note(&mut self, received: Received) {
        let from = received.from.ip();
        if received.note.vip != self.instance.vip {
            return;
        }
        if !self.instance.peers.contains(&from) {
            tracing::warn!(instance = %self.name, %from, "ignoring a drain note from an address not in `peer`");
            return;
        }
        let forwarding = Forwarding {
            vip: self.instance.vip,
            to: from,
            interface: self.instance.interface.clone(),
            until: tokio::time::Instant::now()
                + Duration::from_secs(u64::from(received.note.seconds)),
        };
        tracing::info!(instance = %self.name, peer = %from, seconds = received.note.seconds,
            "peer drains: forwarding its sessions' packets to it");
        match self.forwarder.install(&self.name, forwarding).await {
            Ok(()) => note::acknowledge(&received).await,
            Err(e) => {
                self.alarm.raise(HaFailure::Forward);
                tracing::error!(instance = %self.name,
                    "cannot forward a draining peer's sessions (they will be reset): {e}");
            }
        }
    }

    /// Before withdrawing: every peer forwards our sessions back to us until the drain ends.
    async fn tell_peers(&self, drain_until: Instant) {
        if self.instance.peers.is_empty() {
            return;
        }
        let left = drain_until.saturating_duration_since(Instant::now());
        let note = Note {
            vip: self.instance.vip,
            seconds: u32::try_from(left.as_secs() + 1).unwrap_or(note::MAX_NOTE_SECS),
        };
        let started = Instant::now();
        let missing = note::announce_drain(note, &self.instance.peers).await;
        if missing.is_empty() {
            tracing::info!(instance = %self.name, after = ?started.elapsed(),
                "every peer forwards our sessions to us while we drain");
        } else {
            self.alarm.raise(HaFailure::Forward);
            tracing::warn!(instance = %self.name, ?missing,
                "peers did not acknowledge the drain note: sessions the router moves to them will be reset");
        }
    }

    /// Health → gate → route.
    async fn step(&mut self, now: Instant) {
        let quorum = self.observer.instance_quorum(&self.name);
        // Without the VIP on lo this host cannot serve it: nothing to announce.
        let quorum = if self.on_lo { quorum } else { Some(false) };
        let verdict = self.gate.update(now, quorum);
        if verdict.reason != self.reason {
            match verdict.reason {
                Reason::NoQuorum => tracing::warn!(instance = %self.name,
                    "a service has no quorum: withdrawing the VIP's route"),
                Reason::HoldDown { .. } => tracing::info!(instance = %self.name,
                    hold_down = ?self.plan.hold_down, "quorum is back: announcing after the hold-down"),
                Reason::Serving | Reason::Stopping => {}
            }
        }
        self.reason = verdict.reason;
        if verdict.announce && !self.installed {
            self.announce().await;
        } else if !verdict.announce && self.installed {
            self.withdraw().await;
        }
    }

    async fn announce(&mut self) {
        match self.route.announce().await {
            Ok(()) => {
                self.installed = true;
                self.changed();
                self.last_error = None;
                tracing::info!(instance = %self.name, vip = %self.instance.vip,
                    table = self.plan.table, "route announced");
            }
            Err(e) => {
                self.alarm.raise(HaFailure::RouteAdd);
                tracing::error!(instance = %self.name, "announcing the VIP's route failed: {e}");
                self.last_error = Some(e.to_string());
            }
        }
    }

    async fn withdraw(&mut self) -> bool {
        match self.route.withdraw().await {
            Ok(_) => {
                self.installed = false;
                self.changed();
                self.last_error = None;
                tracing::info!(instance = %self.name, vip = %self.instance.vip,
                    table = self.plan.table, "route withdrawn");
                true
            }
            Err(e) => {
                self.alarm.raise(HaFailure::RouteRemove);
                tracing::error!(instance = %self.name, "withdrawing the VIP's route failed: {e}");
                self.last_error = Some(e.to_string());
                false
            }
        }
    }

    fn changed(&mut self) {
        self.since = SystemTime::now();
        self.changes += 1;
    }

    /// Reads BIRD for the status; re-asserts the VIP on lo and an announced route (someone
    /// may have flushed them).
    async fn poll_bird(&mut self) {
        self.ensure_on_lo().await;
        if self.installed
            && let Err(e) = self.route.announce().await
        {
            self.alarm.raise(HaFailure::RouteAdd);
            tracing::warn!(instance = %self.name, "re-asserting the VIP's route failed: {e}");
        }
        match self
            .bird
            .read(self.instance.vip, &self.plan.protocols)
            .await
        {
            Ok(state) => {
                if self.bird_error.take().is_some() || self.bird_state.is_none() {
                    tracing::info!(instance = %self.name, daemon = %state.greeting,
                        sessions = state.sessions.len(), "routing daemon answers");
                }
                self.bird_state = Some(state);
            }
            Err(e) => {
                self.alarm.raise(HaFailure::Daemon);
                let text = e.to_string();
                if self.bird_error.as_deref() != Some(text.as_str()) {
                    tracing::error!(instance = %self.name,
                        "routing daemon unreachable (the route stays in its table for when it is back): {text}");
                }
                self.bird_error = Some(text);
                self.bird_state = None;
            }
        }
    }

    fn publish(&mut self) {
        let (role, holder) = match (self.installed, &self.last_error) {
            (true, _) => (VipRole::Master, Some(self.identity.clone())),
            (false, Some(_)) => (VipRole::Fault, None),
            (false, None) => (VipRole::Backup, None),
        };
        self.status.publish(
            role,
            Report {
                holder,
                endpoint: Some(format!("bird {}", self.bird.socket().display())),
                last_error: self.last_error.clone(),
                removal_pending: false,
            },
        );
        let view = BgpView {
            table: self.plan.table,
            announced: self.installed,
            reason: self.reason.describe(Instant::now()),
            since: self.since,
            changes: self.changes,
            daemon: self.bird_state.as_ref().map(|s| s.greeting.clone()),
            daemon_error: self.bird_error.clone(),
            in_daemon: self.bird_state.as_ref().map(|s| s.has_route),
            sessions: self
                .bird_state
                .as_ref()
                .map(|s| s.sessions.clone())
                .unwrap_or_default(),
        };
        // The hold-down countdown changes every tick; only its start is news.
        let mut comparable = view.clone();
        if let Some(last) = &self.last_view
            && matches!(self.reason, Reason::HoldDown { .. })
        {
            comparable.reason.clone_from(&last.reason);
        }
        if self.last_view.as_ref() != Some(&comparable) {
            self.observer.bgp_state(&self.name, view.clone());
            self.last_view = Some(view);
        }
    }

    async fn stop(
        mut self,
        mut stopping: Stopping,
        commands: &mut mpsc::UnboundedReceiver<InstanceCommand>,
    ) {
        let started = Instant::now();
        if let Some(until) = stopping.drain_until {
            self.tell_peers(until).await;
        }
        self.gate.stop();
        self.reason = Reason::Stopping;
        for attempt in 1..=STOP_ATTEMPTS {
            // Even when not installed as far as we know: a failed add may have landed.
            if self.withdraw().await {
                break;
            }
            if attempt == STOP_ATTEMPTS {
                tracing::error!(instance = %self.name,
                    "giving up: the VIP's route could not be removed and BIRD may keep announcing it");
            }
            tokio::time::sleep(TICK).await;
        }
        self.publish();
        let mut bound = started + self.plan.withdraw_wait;
        if let Some(until) = stopping.drain_until {
            bound = bound.min(until);
        }
        self.await_bird_withdrawal(started, bound).await;
        let parked = stopping.drain_until.is_some() && self.on_lo;
        stopping.handed_over(parked);
        if let Some(until) = stopping.drain_until {
            wait_for_drain(commands, until).await;
        }
        for attempt in 1..=STOP_ATTEMPTS {
            match self.vip.unpark().await {
                Ok(_) => {
                    tracing::info!(instance = %self.name, vip = %self.vip.addr(), "VIP removed from lo");
                    break;
                }
                Err(e) => {
                    self.alarm.raise(HaFailure::VipRemove);
                    tracing::error!(instance = %self.name, attempt, "removing the VIP from lo failed: {e}");
                }
            }
            tokio::time::sleep(TICK).await;
        }
        if let Some(quiet) = self.quiet.take() {
            quiet.release();
        }
        if let Err(e) = self.forwarder.remove(&self.name).await {
            self.alarm.raise(HaFailure::Forward);
            tracing::error!(instance = %self.name, "ending the forwarding for a peer: {e}");
        }
        if self.tracking
            && let Err(e) = track::release().await
        {
            tracing::warn!(instance = %self.name, "removing the conntrack table: {e}");
        }
        self.status.publish(VipRole::Backup, Report::default());
    }

    /// Until BIRD no longer carries the route (so its withdrawal is on the wire), or `bound`.
    async fn await_bird_withdrawal(&mut self, started: Instant, bound: Instant) {
        loop {
            match self.bird.has_route(self.instance.vip).await {
                Ok(false) => {
                    tracing::info!(instance = %self.name, after = ?started.elapsed(),
                        "BIRD no longer carries the VIP's route: withdrawn from the peers");
                    return;
                }
                Ok(true) => {}
                Err(e) => {
                    // Nothing to wait for: a daemon that cannot be asked is not announcing
                    // anything new, and its sessions go down with it.
                    self.alarm.raise(HaFailure::Daemon);
                    tracing::warn!(instance = %self.name,
                        "cannot confirm the withdrawal with the routing daemon: {e}");
                    return;
                }
            }
            if Instant::now() >= bound {
                tracing::warn!(instance = %self.name, after = ?started.elapsed(),
                    "BIRD still carries the VIP's route; draining anyway");
                return;
            }
            tokio::time::sleep(WITHDRAW_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The task against in-memory doubles: a VIP, a route whose writes are recorded in
    //! order, health's quorum set by the test, and no BIRD (its socket does not exist, so
    //! every read is a counted daemon failure, as on a host where BIRD is down).

    use std::collections::BTreeMap;
    use std::net::IpAddr;
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::oneshot;

    use super::*;
    use crate::config::plan::LockPlan;
    use crate::ha::announce::AnnounceOptions;
    use crate::ha::keeper::VipKeeper;
    use crate::ha::status::VipView;
    use crate::ha::vip::VipError;

    #[derive(Default)]
    struct Log(Mutex<Vec<&'static str>>);

    impl Log {
        fn push(&self, event: &'static str) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
        }
        fn events(&self) -> Vec<&'static str> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }

    struct FakeVip(Arc<Log>);

    impl VipOps for FakeVip {
        fn addr(&self) -> IpAddr {
            "2001:db8:100::100"
                .parse()
                .unwrap_or(IpAddr::from([0u16; 8]))
        }
        fn interface(&self) -> &str {
            "test0"
        }
        async fn link(&self) -> Result<(u32, Option<[u8; 6]>), VipError> {
            Ok((1, None))
        }
        async fn is_present(&self) -> Result<bool, VipError> {
            Ok(false)
        }
        async fn add(&self) -> Result<(), VipError> {
            Ok(())
        }
        async fn remove(&self) -> Result<bool, VipError> {
            Ok(false)
        }
        async fn park(&self) -> Result<(), VipError> {
            Ok(())
        }
        async fn unpark(&self) -> Result<bool, VipError> {
            self.0.push("vip off lo");
            Ok(true)
        }
        async fn host_address(&self) -> Result<Option<IpAddr>, VipError> {
            Ok(None)
        }
    }

    /// Logs changes only, as the kernel has them: re-adding a present route is no event.
    struct FakeRoute {
        log: Arc<Log>,
        fail_adds: AtomicBool,
        present: AtomicBool,
    }

    impl RouteOps for Arc<FakeRoute> {
        async fn announce(&self) -> Result<(), super::super::route::RouteError> {
            if self.fail_adds.load(Ordering::SeqCst) {
                return Err(super::super::route::RouteError::Socket("test".into()));
            }
            if !self.present.swap(true, Ordering::SeqCst) {
                self.log.push("announce");
            }
            Ok(())
        }
        async fn withdraw(&self) -> Result<bool, super::super::route::RouteError> {
            let was = self.present.swap(false, Ordering::SeqCst);
            if was {
                self.log.push("withdraw");
            }
            Ok(was)
        }
    }

    #[derive(Default)]
    struct Health {
        quorum: Mutex<Option<bool>>,
        failures: Mutex<BTreeMap<HaFailure, u64>>,
        views: Mutex<Vec<BgpView>>,
        roles: Mutex<Vec<VipRole>>,
    }

    impl HaObserver for Health {
        fn vip_state(&self, _: &str, view: VipView) {
            self.roles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(view.role);
        }
        fn failure(&self, _: &str, failure: HaFailure) {
            *self
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(failure)
                .or_default() += 1;
        }
        fn bgp_state(&self, _: &str, view: BgpView) {
            self.views
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(view);
        }
        fn instance_quorum(&self, _: &str) -> Option<bool> {
            *self.quorum.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    impl Health {
        fn set(&self, up: bool) {
            *self.quorum.lock().unwrap_or_else(|e| e.into_inner()) = Some(up);
        }
        fn failures(&self, kind: HaFailure) -> u64 {
            self.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&kind)
                .copied()
                .unwrap_or(0)
        }
        fn last_view(&self) -> Option<BgpView> {
            self.views
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .last()
                .cloned()
        }
    }

    struct Running {
        log: Arc<Log>,
        route: Arc<FakeRoute>,
        health: Arc<Health>,
        commands: mpsc::UnboundedSender<InstanceCommand>,
        task: tokio::task::JoinHandle<()>,
    }

    fn test_instance(lock: LockPlan) -> Instance {
        Instance {
            name: "edge".into(),
            vip: "2001:db8:100::100"
                .parse()
                .unwrap_or(IpAddr::from([0u16; 8])),
            id: None,
            interface: "test0".into(),
            check_interval: Duration::from_secs(1),
            check_timeout: Duration::from_secs(3),
            peers: Vec::new(),
            lock,
            failsafe: None,
            services: Vec::new(),
        }
    }

    fn start(hold_down: Duration, fail_adds: bool) -> Running {
        let log = Arc::new(Log::default());
        let health = Arc::new(Health::default());
        health.set(true);
        let plan = BgpPlan {
            table: 161,
            hold_down,
            withdraw_wait: Duration::from_millis(200),
            bird_socket: PathBuf::from("/nonexistent/alive-proxy-test/bird.ctl"),
            protocols: Vec::new(),
        };
        let instance = test_instance(LockPlan::Bgp(plan.clone()));
        let observer: Arc<dyn HaObserver> = health.clone();
        let status = StatusReporter::new(instance.name.clone(), Arc::clone(&observer));
        let keeper = VipKeeper::new(
            FakeVip(Arc::clone(&log)),
            AnnounceOptions::default(),
            status.alarm(),
        );
        let (commands, rx) = mpsc::unbounded_channel();
        let route = Arc::new(FakeRoute {
            log: Arc::clone(&log),
            fail_adds: AtomicBool::new(fail_adds),
            present: AtomicBool::new(false),
        });
        let task = InstanceTask {
            instance,
            keeper,
            status,
            forwarder: Forwarder::start(),
            commands: rx,
        };
        let bgp = BgpTask {
            plan,
            route: Arc::clone(&route),
            observer,
            identity: "lb1".into(),
        };
        let task = tokio::spawn(run_bgp(task, bgp));
        Running {
            log,
            route,
            health,
            commands,
            task,
        }
    }

    async fn until(what: &str, mut condition: impl FnMut() -> bool) {
        for _ in 0..200 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn quorum_loss_withdraws_at_once_and_regain_waits_the_hold_down() {
        let r = start(Duration::from_millis(300), false);
        until("the first announcement", || r.log.events() == ["announce"]).await;
        r.health.set(false);
        until("the withdrawal", || r.log.events().ends_with(&["withdraw"])).await;
        let back = Instant::now();
        r.health.set(true);
        until("the re-announcement", || {
            r.log.events().ends_with(&["announce"])
        })
        .await;
        assert!(
            back.elapsed() >= Duration::from_millis(300),
            "re-announced after {:?}, inside the hold-down",
            back.elapsed()
        );
        assert!(
            r.health.failures(HaFailure::Daemon) > 0,
            "no BIRD is a counted failure"
        );
        let view = r.health.last_view().expect("a BGP view");
        assert!(view.announced && view.daemon.is_none() && view.daemon_error.is_some());
        r.task.abort();
    }

    #[tokio::test]
    async fn stop_withdraws_before_handing_over_and_keeps_the_vip_until_the_drain_ends() {
        let r = start(Duration::from_secs(5), false);
        until("the announcement", || r.log.events() == ["announce"]).await;
        let (tx, handed_over) = oneshot::channel();
        let sent = r.commands.send(InstanceCommand::Stop {
            drain_until: Some(Instant::now() + Duration::from_secs(30)),
            await_next_holder: true,
            handed_over: tx,
        });
        assert!(sent.is_ok());
        let parked = handed_over.await.expect("handed over");
        assert!(parked, "the VIP stays on lo for the draining sessions");
        assert_eq!(
            r.log.events(),
            ["announce", "withdraw"],
            "withdrawn first, VIP kept"
        );
        assert!(r.commands.send(InstanceCommand::FinishDrain).is_ok());
        r.task.await.expect("task ends");
        assert_eq!(r.log.events(), ["announce", "withdraw", "vip off lo"]);
        assert!(!r.health.last_view().expect("a view").announced);
    }

    #[tokio::test]
    async fn a_route_that_cannot_be_written_is_a_counted_fault_and_is_retried() {
        let r = start(Duration::ZERO, true);
        until("a failed add", || {
            r.health.failures(HaFailure::RouteAdd) > 0
        })
        .await;
        until("FAULT", || {
            r.health
                .roles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&VipRole::Fault)
        })
        .await;
        r.route.fail_adds.store(false, Ordering::SeqCst);
        until("the retried announcement", || {
            r.log.events().contains(&"announce")
        })
        .await;
        r.task.abort();
    }
}
