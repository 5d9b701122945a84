//! The tokio shells around the ownership decisions: one task per VIP instance runs the lease
//! state machine against a [`LeaseStore`] (or holds the VIP unconditionally when no lock is
//! configured), bounds every store call by the deadline the state machine gives, carries
//! its decisions out on the VIP, and obeys the supervisor's [`InstanceCommand`]s. No
//! ownership decision is made here.
//!
//! # Planned handover, as this task runs it
//! On `Stop` with a drain deadline, a holder parks the VIP on `lo` (its sessions go on, the
//! link no longer hears from it), releases the lease with a [`HandoverNote`] naming its own
//! address, watches the lease until the next holder has it (or a bound passes: nobody may
//! come), reports "handed over", then waits for `FinishDrain` or the drain deadline before
//! removing the parked VIP. The next holder forwards the parked sessions' packets to it
//! ([`super::forward`]). In single-host mode nobody takes over: the VIP stays where it is
//! until the drain ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::forward::{Forwarder, Forwarding};
use super::keeper::VipKeeper;
use super::lease::{HandoverNote, LeaseError, LeaseRecord, LeaseStore};
use super::ownership::{Decision, Forward, Outcome, Ownership, Purpose, Role, StepDownReason};
use super::peer::{PeerHandle, PeerSettings};
use super::status::{Alarm, HaFailure, Report, StatusReporter, VipRole};
use super::timing::Timing;
use super::vip::VipOps;
use crate::config::plan::Instance;

/// How often a removal that keeps failing at stop is tried, and for how long at most.
const STOP_REMOVE_RETRY: Duration = Duration::from_millis(100);
const STOP_REMOVE_ATTEMPTS: u32 = 30;

/// What the supervisor tells a running instance task.
#[derive(Debug)]
pub enum InstanceCommand {
    /// Reload with the same VIP, interface and lock identity: new timing, kubeconfigs,
    /// endpoints or peers, applied in place (the VIP stays where it is). `done` fires once
    /// applied.
    Retune {
        instance: Box<Instance>,
        done: oneshot::Sender<()>,
    },
    /// Let go of the VIP and end. `drain_until`: as a planned handover, keeping this host's
    /// sessions alive until then (or until `FinishDrain`). `handed_over` fires once the
    /// lease is released and, with `await_next_holder`, once another host holds it (or a
    /// bound passed: with no peer alive nobody comes); it carries whether the VIP was parked
    /// here for draining sessions while the link moved to another host.
    Stop {
        drain_until: Option<Instant>,
        await_next_holder: bool,
        handed_over: oneshot::Sender<bool>,
    },
    /// The sessions have drained: remove a parked VIP now.
    FinishDrain,
}

/// Everything an instance task works with, besides its lock.
pub struct InstanceTask<V: VipOps> {
    pub instance: Instance,
    pub keeper: VipKeeper<V>,
    pub status: StatusReporter,
    pub forwarder: Arc<Forwarder>,
    pub commands: mpsc::UnboundedReceiver<InstanceCommand>,
}

/// A stop in progress.
pub(crate) struct Stopping {
    pub(crate) drain_until: Option<Instant>,
    pub(crate) await_next_holder: bool,
    handed_over: Option<oneshot::Sender<bool>>,
    /// Give up on a VIP that cannot be removed after this.
    give_up_at: Instant,
}

impl Stopping {
    pub(crate) fn from(
        command: Option<InstanceCommand>,
        now: Instant,
        bound: Duration,
    ) -> Option<Stopping> {
        match command {
            Some(InstanceCommand::Stop {
                drain_until,
                await_next_holder,
                handed_over,
            }) => Some(Stopping {
                drain_until,
                await_next_holder,
                handed_over: Some(handed_over),
                give_up_at: now + bound,
            }),
            // The supervisor is gone: stop as plainly as possible.
            None => Some(Stopping {
                drain_until: None,
                await_next_holder: false,
                handed_over: None,
                give_up_at: now + bound,
            }),
            Some(_) => None,
        }
    }

    pub(crate) fn handed_over(&mut self, parked: bool) {
        if let Some(tx) = self.handed_over.take() {
            // The supervisor may have stopped waiting; nothing else to tell.
            let _ = tx.send(parked);
        }
    }
}

/// Waits until `until` or a `FinishDrain` (or the supervisor going away).
pub(crate) async fn wait_for_drain(
    commands: &mut mpsc::UnboundedReceiver<InstanceCommand>,
    until: Instant,
) {
    let deadline = tokio::time::sleep_until(until.into());
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return,
            command = commands.recv() => match command {
                Some(InstanceCommand::FinishDrain) | None => return,
                Some(_) => {}
            },
        }
    }
}

/// Removes the VIP, retrying a failure for a bounded time.
async fn remove_at_stop<V: VipOps>(name: &str, keeper: &mut VipKeeper<V>) {
    for attempt in 1..=STOP_REMOVE_ATTEMPTS {
        if keeper.step_down().await {
            return;
        }
        if attempt == STOP_REMOVE_ATTEMPTS {
            tracing::error!(
                instance = name,
                "giving up: the VIP could not be removed and may still be on its interface"
            );
        }
        tokio::time::sleep(STOP_REMOVE_RETRY).await;
    }
}

async fn unpark_at_stop<V: VipOps>(name: &str, keeper: &mut VipKeeper<V>) {
    for attempt in 1..=STOP_REMOVE_ATTEMPTS {
        if keeper.unpark().await {
            return;
        }
        if attempt == STOP_REMOVE_ATTEMPTS {
            tracing::error!(
                instance = name,
                "giving up: the parked VIP could not be removed from lo"
            );
        }
        tokio::time::sleep(STOP_REMOVE_RETRY).await;
    }
}

/// Single-host mode: hold the VIP for as long as the task runs.
pub async fn run_unlocked<V: VipOps>(identity: String, task: InstanceTask<V>) {
    let InstanceTask {
        mut instance,
        mut keeper,
        mut status,
        commands: mut rx,
        ..
    } = task;
    let name = instance.name.clone();
    // Without a lock there is nobody to hand over to: keep retrying the address.
    let mut healthy = keeper.take_over().await;
    let report = |healthy: bool| Report {
        holder: Some(identity.clone()),
        last_error: (!healthy).then(|| "cannot add the VIP".to_owned()),
        ..Report::default()
    };
    status.publish(VipRole::Master, report(healthy));
    let stopping = loop {
        tokio::select! {
            () = tokio::time::sleep(instance.check_interval) => {
                healthy = if healthy { keeper.ensure().await } else { keeper.take_over().await };
                let role = if healthy { VipRole::Master } else { VipRole::Fault };
                status.publish(role, report(healthy));
            }
            command = rx.recv() => match command {
                Some(InstanceCommand::Retune { instance: new, done }) => {
                    instance = *new;
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
    let mut stopping = stopping;
    stopping.handed_over(false);
    if let Some(until) = stopping.drain_until {
        tracing::info!(instance = %name, "single host: keeping the VIP while sessions drain");
        wait_for_drain(&mut rx, until).await;
    }
    remove_at_stop(&name, &mut keeper).await;
    status.publish(VipRole::Backup, Report::default());
}

/// Lease mode: ownership decided by `fsm` against `store`.
pub async fn run_leased<S: LeaseStore, V: VipOps>(task: InstanceTask<V>, fsm: Ownership, store: S) {
    run_leased_with_peers(task, fsm, store, None).await;
}

/// Lease mode with the lock-outage failsafe among the peers (`peer`: the instance's peer
/// task, see [`super::peer`]).
pub async fn run_leased_with_peers<S: LeaseStore, V: VipOps>(
    task: InstanceTask<V>,
    fsm: Ownership,
    store: S,
    peer: Option<PeerHandle>,
) {
    let InstanceTask {
        instance,
        keeper,
        status,
        forwarder,
        commands,
    } = task;
    let alarm = status.alarm();
    let mut leased = Leased {
        name: instance.name.clone(),
        instance,
        keeper,
        status,
        forwarder,
        commands,
        alarm,
        fsm,
        store,
        stopping: None,
        last_error: None,
        seen_record: false,
        last_holder: None,
        peer,
    };
    leased.keeper.remove_stale().await;
    loop {
        leased.sync_peer();
        let now = Instant::now();
        if leased
            .stopping
            .as_ref()
            .is_some_and(|s| now >= s.give_up_at)
        {
            tracing::error!(
                instance = %leased.name,
                "stopping took too long (the VIP cannot be removed?); ending without releasing the lease"
            );
            break;
        }
        match leased.fsm.poll(now) {
            Decision::Wait(until) => leased.wait(until).await,
            Decision::Get { deadline } => leased.get(deadline).await,
            Decision::Create { duration, deadline } => leased.create(duration, deadline).await,
            Decision::Update {
                purpose,
                prev,
                holder,
                duration,
                handover,
                deadline,
            } => {
                let write = Write {
                    purpose,
                    holder,
                    duration,
                    handover,
                    deadline,
                };
                leased.update(&prev, write).await;
            }
            Decision::TakeOver { forward } => leased.take_over(forward).await,
            Decision::StepDown(reason) => leased.step_down(reason).await,
            Decision::Stopped => break,
        }
    }
    leased.finish().await;
}

/// A lease write the state machine asked for (all of [`Decision::Update`] but `prev`).
struct Write {
    purpose: Purpose,
    holder: Option<String>,
    duration: Duration,
    handover: Option<HandoverNote>,
    deadline: Instant,
}

/// One lease-mode instance task: the state machine, its store, the VIP, and what it
/// reports.
struct Leased<S, V: VipOps> {
    name: String,
    instance: Instance,
    keeper: VipKeeper<V>,
    status: StatusReporter,
    forwarder: Arc<Forwarder>,
    commands: mpsc::UnboundedReceiver<InstanceCommand>,
    alarm: Alarm,
    fsm: Ownership,
    store: S,
    stopping: Option<Stopping>,
    last_error: Option<String>,
    seen_record: bool,
    last_holder: Option<String>,
    peer: Option<PeerHandle>,
}

impl<S: LeaseStore, V: VipOps> Leased<S, V> {
    /// Publishes the status, then sleeps until `until`, a command from the supervisor, or
    /// a change in what the failsafe peers confirm.
    async fn wait(&mut self, until: Instant) {
        self.publish();
        let until = self
            .stopping
            .as_ref()
            .map_or(until, |s| until.min(s.give_up_at));
        let peer_changed = async {
            match &mut self.peer {
                Some(peer) => peer.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(until.into()) => {}
            () = peer_changed => {}
            command = self.commands.recv(), if self.stopping.is_none() => self.obey(command).await,
        }
    }

    /// Between decisions: a vouch given meanwhile makes the state machine forget what it
    /// observed; the failsafe's latest confirmation goes in; the peer task learns whether
    /// this host may hold the VIP.
    fn sync_peer(&mut self) {
        let Some(peer) = &self.peer else {
            return;
        };
        let confirmed = peer.confirmed();
        let mut facts = peer.facts();
        if facts.take_vouch() {
            self.fsm.forget_observed();
        }
        self.fsm.set_failsafe(confirmed);
        facts.set_state(
            self.fsm.may_hold(),
            self.fsm.observed_holder().map(str::to_owned),
        );
    }

    /// A lock call starts; `false` when an acquiring write must not (a vouch is pending:
    /// the state machine is told to re-read instead).
    fn begin_call(&mut self, write: bool) -> bool {
        let Some(peer) = &self.peer else {
            return true;
        };
        let refused = peer.facts().begin_call(Instant::now(), write).is_err();
        if refused {
            tracing::info!(
                instance = %self.name,
                "not taking the lease: this host just vouched to the holder's failsafe; reading it again"
            );
            self.sync_peer();
            self.fsm.complete(Instant::now(), Outcome::Conflict);
        }
        !refused
    }

    /// A lock call ended: apply a vouch given during it before its result, so the result
    /// counts as observed after the vouch.
    fn end_call(&mut self, outcome: &Outcome) {
        if let Some(peer) = &self.peer {
            let reached = !matches!(outcome, Outcome::Failed);
            if peer.facts().end_call(reached) {
                self.fsm.forget_observed();
            }
        }
    }

    fn publish(&mut self) {
        let role = match self.fsm.role() {
            Role::Holder => VipRole::Master,
            _ if self.last_error.is_some() || self.fsm.removal_pending() => VipRole::Fault,
            _ if self.seen_record => VipRole::Backup,
            _ => VipRole::Init,
        };
        let holder = self.fsm.observed_holder().map(str::to_owned);
        if holder != self.last_holder {
            tracing::info!(
                instance = %self.name,
                holder = holder.as_deref().unwrap_or("(none)"),
                transitions = self.fsm.transitions(),
                "lease holder changed"
            );
            self.last_holder.clone_from(&holder);
        }
        let last_error = match &self.last_error {
            Some(e) if self.fsm.held_by_failsafe(Instant::now()) => Some(format!(
                "{e}; VIP kept by the failsafe: every peer confirms the outage"
            )),
            other => other.clone(),
        };
        let report = Report {
            holder,
            endpoint: Some(self.store.endpoint()),
            last_error,
            removal_pending: self.fsm.removal_pending(),
        };
        self.status.publish(role, report);
    }

    async fn obey(&mut self, command: Option<InstanceCommand>) {
        match command {
            Some(InstanceCommand::Retune {
                instance: new,
                done,
            }) => {
                retune(&mut self.fsm, &mut self.store, &mut self.status, &new);
                if let Some(peer) = &self.peer {
                    peer.retune(PeerSettings {
                        timing: self.fsm.timing(),
                        peers: new.peers.clone(),
                    });
                }
                // The supervisor may have stopped waiting.
                let _ = done.send(());
            }
            Some(InstanceCommand::FinishDrain) => {}
            other => {
                let bound = stop_bound(&self.fsm.timing());
                self.stopping = Stopping::from(other, Instant::now(), bound);
                if self.stopping.is_some() {
                    // A stopping holder releases, never needs an extension, and its
                    // successor task (a reload) must be able to open the same port.
                    self.peer = None;
                    self.fsm.set_failsafe(None);
                }
                if let Some(stop) = &self.stopping {
                    let note = match stop.drain_until {
                        Some(until) if self.fsm.role() == Role::Holder => {
                            handover_note(&self.name, &self.keeper, until).await
                        }
                        _ => None,
                    };
                    self.fsm.stop_with(Instant::now(), note);
                }
            }
        }
    }

    async fn get(&mut self, deadline: Instant) {
        self.begin_call(false);
        let result = bounded(deadline, self.store.get()).await;
        self.seen_record |= result.is_ok();
        let (outcome, error) = classify(
            &self.alarm,
            HaFailure::LeaseRead,
            "reading the lease",
            &self.store,
            result,
            Outcome::Read,
        );
        self.last_error = error;
        self.end_call(&outcome);
        self.fsm.complete(Instant::now(), outcome);
    }

    async fn create(&mut self, duration: Duration, deadline: Instant) {
        if !self.begin_call(true) {
            return;
        }
        let result = bounded(deadline, self.store.create(self.fsm.identity(), duration)).await;
        let (outcome, error) = classify(
            &self.alarm,
            HaFailure::LeaseWrite,
            "creating the lease",
            &self.store,
            result,
            Outcome::Wrote,
        );
        self.last_error = error;
        self.end_call(&outcome);
        self.fsm.complete(Instant::now(), outcome);
    }

    async fn update(&mut self, prev: &LeaseRecord, write: Write) {
        let what = match write.purpose {
            Purpose::Acquire => "taking over the lease",
            Purpose::Renew => "renewing the lease",
            Purpose::Release => "releasing the lease",
        };
        if write.purpose == Purpose::Acquire {
            tracing::info!(
                instance = %self.name, previous_holder = ?prev.holder, version = %prev.version,
                "lease free or expired; taking it over"
            );
        }
        if !self.begin_call(true) {
            return;
        }
        let call = self.store.update(
            prev,
            write.holder.as_deref(),
            write.duration,
            write.handover,
        );
        let result = bounded(write.deadline, call).await;
        let (outcome, error) = classify(
            &self.alarm,
            HaFailure::LeaseWrite,
            what,
            &self.store,
            result,
            Outcome::Wrote,
        );
        self.last_error = error;
        let wrote = matches!(outcome, Outcome::Wrote(_));
        if write.purpose == Purpose::Release && wrote {
            tracing::info!(instance = %self.name, handover = ?write.handover, "lease released");
        }
        self.end_call(&outcome);
        self.fsm.complete(Instant::now(), outcome);
        self.sync_peer();
        let renewed = write.purpose == Purpose::Renew && wrote;
        if renewed && self.fsm.role() == Role::Holder && !self.keeper.ensure().await {
            resign(&self.name, &mut self.fsm, &mut self.last_error);
        }
    }

    async fn take_over(&mut self, forward: Option<Forward>) {
        tracing::info!(instance = %self.name, identity = self.fsm.identity(), "lease acquired");
        // A note about another VIP (this instance's VIP changed on reload) is not ours.
        if let Some(forward) = forward.filter(|f| f.vip == self.instance.vip) {
            start_forwarding(&self.forwarder, &self.alarm, &self.instance, forward).await;
        }
        if !self.keeper.take_over().await {
            resign(&self.name, &mut self.fsm, &mut self.last_error);
        }
    }

    async fn step_down(&mut self, reason: StepDownReason) {
        log_step_down(&self.name, &self.fsm, reason, &self.alarm);
        if let Err(e) = self.forwarder.remove(&self.name).await {
            self.alarm.raise(HaFailure::Forward);
            tracing::error!(instance = %self.name, "ending the handover forwarding: {e}");
        }
        let planned = reason == StepDownReason::Shutdown
            && self
                .stopping
                .as_ref()
                .is_some_and(|s| s.drain_until.is_some());
        let gone = if planned {
            let gone = self.keeper.park().await;
            if !self.keeper.is_parked() {
                // Nothing is left here to forward to.
                self.fsm.forget_handover_note();
            }
            gone
        } else {
            self.keeper.step_down().await
        };
        self.fsm.vip_removed(Instant::now(), gone);
    }

    /// After the state machine stopped: wait for the next holder, report, drain, unpark.
    async fn finish(mut self) {
        if let Some(mut stop) = self.stopping.take() {
            if self.keeper.is_parked() && stop.await_next_holder {
                let timing = self.fsm.timing();
                await_next_holder(&self.name, &mut self.store, self.fsm.identity(), &timing).await;
            }
            stop.handed_over(self.keeper.is_parked());
            if self.keeper.is_parked() {
                if let Some(until) = stop.drain_until {
                    wait_for_drain(&mut self.commands, until).await;
                }
                unpark_at_stop(&self.name, &mut self.keeper).await;
            }
        }
        let report = Report {
            endpoint: Some(self.store.endpoint()),
            last_error: self.last_error,
            ..Report::default()
        };
        self.status.publish(VipRole::Backup, report);
    }
}

/// How long a stop may take before the task gives up on a VIP it cannot remove.
fn stop_bound(timing: &Timing) -> Duration {
    (timing.lease_duration * 2).max(Duration::from_secs(5))
}

fn retune<S: LeaseStore>(
    fsm: &mut Ownership,
    store: &mut S,
    status: &mut StatusReporter,
    instance: &Instance,
) {
    let timing = Timing::from_checks(instance.check_interval, instance.check_timeout);
    fsm.set_timing(timing);
    store.retune(&instance.lock, &timing);
    if let crate::config::plan::LockPlan::Kube(lock) = &instance.lock {
        status.watch_certificates(lock.kubeconfigs.clone());
    }
    tracing::info!(
        instance = %instance.name, renew = ?timing.renew_period, deadline = ?timing.renew_deadline,
        lease = ?timing.lease_duration, endpoint = %store.endpoint(),
        "ownership settings applied in place"
    );
}

/// The note a planned release leaves: this host's address on the VIP's link, and the time
/// left to drain. `None` (logged) when the address cannot be found: the handover then
/// cuts this host's sessions like an unplanned one.
async fn handover_note<V: VipOps>(
    name: &str,
    keeper: &VipKeeper<V>,
    drain_until: Instant,
) -> Option<HandoverNote> {
    if keeper.vip().addr().is_loopback() {
        return None;
    }
    let drain = drain_until.saturating_duration_since(Instant::now());
    match keeper.vip().host_address().await {
        Ok(Some(address)) => Some(HandoverNote {
            vip: keeper.vip().addr(),
            address,
            drain,
        }),
        Ok(None) => {
            tracing::warn!(
                instance = name, interface = %keeper.vip().interface(),
                "no address of the VIP's family on its interface: the next holder cannot \
                 forward this host's sessions to it"
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                instance = name,
                "cannot read this host's address for the handover: {e}"
            );
            None
        }
    }
}

async fn start_forwarding(
    forwarder: &Forwarder,
    alarm: &Alarm,
    instance: &Instance,
    forward: Forward,
) {
    let forwarding = Forwarding {
        vip: instance.vip,
        to: forward.address,
        interface: instance.interface.clone(),
        until: forward.until.into(),
    };
    if let Err(e) = forwarder.install(&instance.name, forwarding).await {
        alarm.raise(HaFailure::Forward);
        tracing::error!(
            instance = %instance.name,
            "cannot forward the previous holder's sessions (they will be reset): {e}"
        );
    }
}

/// After a planned release: reads the lease until another host holds it, so new
/// connections go on here until someone else serves them. Bounded: with no peer alive
/// nobody comes.
async fn await_next_holder<S: LeaseStore>(
    name: &str,
    store: &mut S,
    identity: &str,
    timing: &Timing,
) {
    let started = Instant::now();
    let bound = timing.lease_duration + timing.poll_period * 2;
    while started.elapsed() < bound {
        let deadline = Instant::now() + timing.poll_period.max(Duration::from_millis(100));
        match bounded(deadline, store.get()).await {
            Ok(Some(record)) => {
                if let Some(holder) = record.holder.filter(|h| h != identity) {
                    tracing::info!(
                        instance = name, next_holder = %holder, after = ?started.elapsed(),
                        "handed over"
                    );
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(instance = name, "watching for the next holder: {e}"),
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
    tracing::warn!(
        instance = name, waited = ?bound,
        "no other host took the lease; the VIP is unserved until one does"
    );
}

fn log_step_down(name: &str, fsm: &Ownership, reason: StepDownReason, alarm: &Alarm) {
    let retrying = fsm.removal_pending();
    match reason {
        StepDownReason::DeadlineMissed => {
            if !retrying {
                alarm.raise(HaFailure::DeadlineMissed);
            }
            tracing::error!(
                instance = name, deadline = ?fsm.timing().renew_deadline, retrying,
                "could not renew the lease in time; removing the VIP before anyone may take it"
            )
        }
        StepDownReason::Lost => tracing::error!(
            instance = name, holder = ?fsm.observed_holder(), retrying,
            "the lease names another holder; removing the VIP"
        ),
        StepDownReason::Shutdown => tracing::info!(
            instance = name,
            retrying,
            "stopping: the VIP goes first, then the lease"
        ),
        StepDownReason::Resigned => tracing::error!(
            instance = name, hold_off = ?resign_hold_off(fsm), retrying,
            "this host cannot serve the VIP; releasing the lease to a peer"
        ),
    }
}

/// A host that resigned stays out of the race this long: a healthy peer reads the
/// released lease within one poll period and takes it first.
fn resign_hold_off(fsm: &Ownership) -> Duration {
    fsm.timing().lease_duration * 2
}

fn resign(instance: &str, fsm: &mut Ownership, last_error: &mut Option<String>) {
    let hold_off = resign_hold_off(fsm);
    fsm.resign(Instant::now(), hold_off);
    *last_error = Some(format!(
        "cannot add the VIP on this host; lease released, retrying in {hold_off:?}"
    ));
    tracing::debug!(instance, "resigning");
}

async fn bounded<T>(
    deadline: Instant,
    call: impl Future<Output = Result<T, LeaseError>>,
) -> Result<T, LeaseError> {
    match tokio::time::timeout_at(deadline.into(), call).await {
        Ok(result) => result,
        Err(_) => Err(LeaseError::Unavailable("timed out".into())),
    }
}

/// Turns a store result into what the state machine needs, logging and counting failures;
/// the second value is the error to show in the status (`None` on success and on a lost
/// race).
fn classify<T, S: LeaseStore>(
    alarm: &Alarm,
    failure: HaFailure,
    what: &str,
    store: &S,
    result: Result<T, LeaseError>,
    ok: impl FnOnce(T) -> Outcome,
) -> (Outcome, Option<String>) {
    match result {
        Ok(value) => (ok(value), None),
        Err(LeaseError::Conflict) => {
            tracing::info!(
                instance = alarm.instance(),
                "{what}: someone else wrote the lease first"
            );
            (Outcome::Conflict, None)
        }
        Err(e) => {
            alarm.raise(failure);
            tracing::warn!(instance = alarm.instance(), endpoint = %store.endpoint(), "{what} failed: {e}");
            (Outcome::Failed, Some(e.to_string()))
        }
    }
}
