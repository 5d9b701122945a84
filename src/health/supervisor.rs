//! The health actor: owns every backend's and service's combined state, runs one
//! [`CheckTask`] per checker, applies reloads, answers passive events with a re-probe, and is
//! the only caller of the [`HealthSink`] and the [`HealthObserver`].
//!
//! Passive events: the data plane has already marked the backend suspect. The actor pokes
//! every checker of that backend (at most one re-probe in flight per backend; more events
//! meanwhile are coalesced). Each checker probes at once and, if that fails while it is up,
//! continues keepalived's retry sequence at `delay_before_retry` pace. When every checker has
//! settled (passed, or concluded down) the actor calls `backend_changed` with the backend's
//! status — also when it did not change, which is the data plane's cue to clear "suspect".

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::PassiveEvent;
use crate::config::{Backend, BackendKey, Check, Plan, Service};
use crate::health::backend::{BackendHealth, CheckId};
use crate::health::checker::{CheckerState, label_of};
use crate::health::observer::HealthObserver;
use crate::health::quorum::QuorumState;
use crate::health::sink::HealthSink;
use crate::health::task::{CheckTask, Report};

/// Handle to the running health checks. Dropping it without [`HealthSupervisor::shutdown`]
/// stops the actor too (its command channel closes).
pub struct HealthSupervisor {
    commands: mpsc::UnboundedSender<Command>,
    actor: JoinHandle<()>,
}

enum Command {
    /// The plan, and who waits for it to be in force.
    Apply(Box<Plan>, Option<tokio::sync::oneshot::Sender<()>>),
    Shutdown,
}

impl HealthSupervisor {
    /// Starts checking every backend of `plan`. Must be called inside a tokio runtime.
    /// Reports each backend's initial status (and each sorry server's state) at once.
    pub fn spawn(
        plan: &Plan,
        sink: Arc<dyn HealthSink>,
        passive: mpsc::UnboundedReceiver<PassiveEvent>,
        control: Arc<dyn HealthObserver>,
    ) -> HealthSupervisor {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (reports, report_rx) = mpsc::unbounded_channel();
        let mut actor = Actor {
            sink,
            observer: control,
            services: BTreeMap::new(),
            reports,
            next_id: 0,
        };
        actor.apply(plan);
        let actor = tokio::spawn(actor.run(command_rx, report_rx, passive));
        HealthSupervisor { commands, actor }
    }

    /// Reload: unchanged checkers keep running with their state; new ones start, removed
    /// ones stop. Every backend's status is re-sent afterwards.
    pub fn apply_plan(&self, plan: &Plan) {
        if self
            .commands
            .send(Command::Apply(Box::new(plan.clone()), None))
            .is_err()
        {
            tracing::warn!("health supervisor is not running; reload ignored");
        }
    }

    /// [`HealthSupervisor::apply_plan`], answering once the new checkers run and every
    /// backend's status was re-sent. `false`: the supervisor is gone.
    pub async fn apply(&self, plan: &Plan) -> bool {
        let (done, answered) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::Apply(Box::new(plan.clone()), Some(done)))
            .is_ok()
            && answered.await.is_ok()
    }

    /// Stops every checker (killing running MISC_CHECK scripts) and waits for them.
    pub async fn shutdown(self) {
        // The actor may already be gone; then there is nothing left to stop.
        let _sent = self.commands.send(Command::Shutdown);
        if let Err(error) = self.actor.await
            && error.is_panic()
        {
            tracing::error!(%error, "health supervisor panicked");
        }
    }
}

struct Actor {
    sink: Arc<dyn HealthSink>,
    observer: Arc<dyn HealthObserver>,
    services: BTreeMap<SocketAddr, ServiceEntry>,
    reports: mpsc::UnboundedSender<Report>,
    next_id: CheckId,
}

struct ServiceEntry {
    quorum: QuorumState,
    sorry_server: Option<SocketAddr>,
    sorry_active: bool,
    backends: BTreeMap<SocketAddr, BackendEntry>,
}

struct BackendEntry {
    health: BackendHealth,
    checks: Vec<RunningCheck>,
    /// Checkers that have not yet settled in the passive re-probe in flight, if any.
    passive_pending: Option<BTreeSet<CheckId>>,
}

struct RunningCheck {
    id: CheckId,
    check: Check,
    poke: mpsc::Sender<()>,
    task: JoinHandle<()>,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut reports: mpsc::UnboundedReceiver<Report>,
        mut passive: mpsc::UnboundedReceiver<PassiveEvent>,
    ) {
        let mut passive_open = true;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Apply(plan, done)) => {
                        self.apply(&plan);
                        if let Some(done) = done {
                            // The caller may have stopped waiting.
                            let _ = done.send(());
                        }
                    }
                    Some(Command::Shutdown) | None => break,
                },
                Some(report) = reports.recv() => self.on_report(report),
                event = passive.recv(), if passive_open => match event {
                    Some(event) => self.on_passive(event),
                    None => passive_open = false,
                },
            }
        }
        self.stop_all().await;
    }

    async fn stop_all(&mut self) {
        let mut tasks = Vec::new();
        for service in std::mem::take(&mut self.services).into_values() {
            for backend in service.backends.into_values() {
                tasks.extend(backend.checks.into_iter().map(|c| c.task));
            }
        }
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // Cancelled is the expected outcome; a panic inside a checker is worth a log.
            if let Err(error) = task.await
                && error.is_panic()
            {
                tracing::error!(%error, "health checker panicked");
            }
        }
    }

    fn apply(&mut self, plan: &Plan) {
        let wanted: BTreeMap<SocketAddr, &Service> = plan
            .instances
            .iter()
            .flat_map(|i| i.services.iter())
            .map(|s| (s.listen_addr(), s))
            .collect();
        let removed: Vec<SocketAddr> = self
            .services
            .keys()
            .filter(|addr| !wanted.contains_key(addr))
            .copied()
            .collect();
        for addr in removed {
            if let Some(entry) = self.services.remove(&addr) {
                tracing::info!(service = %addr, "service removed; stopping its checks");
                for backend in entry.backends.into_values() {
                    stop_checks(backend.checks);
                }
            }
        }
        for (addr, service) in wanted {
            self.apply_service(addr, service);
        }
    }

    fn apply_service(&mut self, addr: SocketAddr, service: &Service) {
        let is_new = !self.services.contains_key(&addr);
        let mut entry = self.services.remove(&addr).unwrap_or_else(|| ServiceEntry {
            quorum: QuorumState::new(service.quorum, service.hysteresis, 0),
            sorry_server: service.sorry_server,
            sorry_active: false,
            backends: BTreeMap::new(),
        });
        entry.sorry_server = service.sorry_server;
        entry.quorum.reconfigure(service.quorum, service.hysteresis);

        let wanted: BTreeMap<SocketAddr, &Backend> =
            service.backends.iter().map(|b| (b.addr, b)).collect();
        entry.backends.retain(|backend_addr, backend| {
            let keep = wanted.contains_key(backend_addr);
            if !keep {
                tracing::info!(service = %addr, backend = %backend_addr, "backend removed; stopping its checks");
                stop_checks(std::mem::take(&mut backend.checks));
            }
            keep
        });
        for (backend_addr, backend) in wanted {
            let key = BackendKey {
                service: addr,
                backend: backend_addr,
            };
            let existing = entry.backends.remove(&backend_addr);
            let status_before = existing.as_ref().map(|b| b.health.status());
            let reason = if existing.is_some() {
                "configuration reloaded"
            } else if backend.alpha && !backend.checks.is_empty() {
                "starting: alpha, down until the first successful check"
            } else {
                "starting: up until a check fails"
            };
            let updated = self.reconcile_backend(key, backend, existing);
            let status = updated.health.status();
            if status_before == Some(status) {
                tracing::debug!(service = %addr, backend = %backend_addr, ?status, reason, "backend health");
            } else {
                tracing::info!(service = %addr, backend = %backend_addr, ?status, reason, "backend health");
            }
            self.sink.backend_changed(key, status);
            self.observer
                .backend_health(key, status, reason.to_string());
            entry.backends.insert(backend_addr, updated);
        }

        let live = live_weight(&entry);
        if is_new {
            entry.quorum = QuorumState::new(service.quorum, service.hysteresis, live);
            if !entry.quorum.is_up() {
                tracing::info!(service = %addr, live, quorum = service.quorum, hysteresis = service.hysteresis, "starting with quorum down");
            }
        } else if let Some(change) = entry.quorum.update(addr, live) {
            tracing::info!(service = %addr, reason = change.reason, "quorum changed on reload");
        }
        entry.sorry_active = entry.sorry_server.is_some() && !entry.quorum.is_up();
        self.observer.service_quorum(addr, entry.quorum.is_up());
        if entry.sorry_server.is_some() || !is_new {
            self.sink.sorry_active(addr, entry.sorry_active);
        }
        self.services.insert(addr, entry);
    }

    /// Keeps the checkers whose settings did not change (their state survives), starts the
    /// new ones, stops the rest.
    fn reconcile_backend(
        &mut self,
        key: BackendKey,
        backend: &Backend,
        existing: Option<BackendEntry>,
    ) -> BackendEntry {
        let reloaded = existing.is_some();
        let mut entry = existing.unwrap_or_else(|| BackendEntry {
            health: BackendHealth::new(backend.weight, backend.inhibit_on_failure),
            checks: Vec::new(),
            passive_pending: None,
        });
        // A checker added by a reload to a backend that is down starts down too (as with
        // alpha), so that replacing a failing check cannot put a dead backend back in
        // rotation before anything has probed it; it probes at once instead of after warmup.
        let start_down = backend.alpha || (reloaded && !entry.health.alive());
        entry
            .health
            .reconfigure(backend.weight, backend.inhibit_on_failure);
        let mut old: Vec<Option<RunningCheck>> = std::mem::take(&mut entry.checks)
            .into_iter()
            .map(Some)
            .collect();
        for check in &backend.checks {
            let reused = old
                .iter_mut()
                .find(|slot| slot.as_ref().is_some_and(|c| same_check(&c.check, check)))
                .and_then(Option::take);
            match reused {
                Some(running) => entry.checks.push(running),
                None => {
                    let running = self.start_check(key, check, start_down, reloaded);
                    entry.health.add_check(running.id, !start_down, None);
                    entry.checks.push(running);
                }
            }
        }
        for stale in old.into_iter().flatten() {
            tracing::info!(backend = %key.backend, check = label_of(&stale.check), "check removed by reload");
            entry.health.remove_check(stale.id);
            if let Some(pending) = entry.passive_pending.as_mut() {
                pending.remove(&stale.id);
            }
            stale.task.abort();
        }
        if entry
            .passive_pending
            .as_ref()
            .is_some_and(BTreeSet::is_empty)
        {
            entry.passive_pending = None;
        }
        entry
    }

    fn start_check(
        &mut self,
        key: BackendKey,
        check: &Check,
        start_down: bool,
        skip_warmup: bool,
    ) -> RunningCheck {
        self.next_id += 1;
        let id = self.next_id;
        // One slot: a poke while one is queued adds nothing.
        let (poke, pokes) = mpsc::channel(1);
        let task = CheckTask {
            key,
            id,
            check: check.clone(),
            state: CheckerState::new(check, start_down),
            skip_warmup,
            pokes,
            reports: self.reports.clone(),
        };
        tracing::info!(service = %key.service, backend = %key.backend, check = label_of(check), "activating health checker");
        RunningCheck {
            id,
            check: check.clone(),
            poke,
            task: tokio::spawn(task.run()),
        }
    }

    fn on_report(&mut self, report: Report) {
        let key = report.key;
        let Some(service) = self.services.get_mut(&key.service) else {
            return;
        };
        let Some(backend) = service.backends.get_mut(&key.backend) else {
            return;
        };
        if !backend.health.has_check(report.check) {
            return; // from a checker a reload just stopped
        }
        let changed = backend
            .health
            .update_check(report.check, report.up, report.dynamic_weight);
        let status = backend.health.status();
        if report.flipped {
            tracing::info!(service = %key.service, backend = %key.backend, up = report.up, reason = report.reason, "checker state changed");
        }
        let mut told_sink = false;
        if changed {
            tracing::info!(service = %key.service, backend = %key.backend, ?status, reason = report.reason, "backend health changed");
            self.sink.backend_changed(key, status);
            self.observer
                .backend_health(key, status, report.reason.clone());
            told_sink = true;
        }
        if report.passive_settled
            && let Some(pending) = backend.passive_pending.as_mut()
        {
            pending.remove(&report.check);
            if pending.is_empty() {
                backend.passive_pending = None;
                tracing::info!(service = %key.service, backend = %key.backend, ?status, reason = report.reason, "passive re-probe finished");
                if !told_sink {
                    self.sink.backend_changed(key, status);
                }
            }
        }
        if changed {
            update_quorum(
                self.sink.as_ref(),
                self.observer.as_ref(),
                key.service,
                service,
            );
        }
    }

    fn on_passive(&mut self, event: PassiveEvent) {
        let key = event.key;
        let Some(service) = self.services.get_mut(&key.service) else {
            tracing::debug!(?key, "passive event for a backend health does not know");
            return;
        };
        let Some(backend) = service.backends.get_mut(&key.backend) else {
            tracing::debug!(?key, "passive event for a backend health does not know");
            return;
        };
        if backend.passive_pending.is_some() {
            return; // a re-probe is already in flight; its answer covers this event too
        }
        tracing::info!(service = %key.service, backend = %key.backend, error = ?event.error, "connect failure on the data path; re-probing now");
        if backend.checks.is_empty() {
            // Nothing to probe: a backend without checkers is always up (as in keepalived).
            self.sink.backend_changed(key, backend.health.status());
            return;
        }
        let mut pending = BTreeSet::new();
        for check in &backend.checks {
            // Full means a poke is already queued: this one is covered by it.
            if check.poke.try_send(()).is_ok() || !check.task.is_finished() {
                pending.insert(check.id);
            }
        }
        backend.passive_pending = Some(pending);
    }
}

fn stop_checks(checks: Vec<RunningCheck>) {
    for check in checks {
        check.task.abort();
    }
}

fn live_weight(service: &ServiceEntry) -> u64 {
    service
        .backends
        .values()
        .map(|b| b.health.live_weight())
        .sum()
}

fn update_quorum(
    sink: &dyn HealthSink,
    observer: &dyn HealthObserver,
    addr: SocketAddr,
    service: &mut ServiceEntry,
) {
    let live = live_weight(service);
    let Some(change) = service.quorum.update(addr, live) else {
        return;
    };
    tracing::info!(service = %addr, reason = change.reason, "quorum changed");
    observer.service_quorum(addr, change.up);
    if service.sorry_server.is_some() {
        let active = !change.up;
        if active != service.sorry_active {
            service.sorry_active = active;
            tracing::info!(service = %addr, sorry_server = ?service.sorry_server, active, "sorry server");
            sink.sorry_active(addr, active);
        }
    }
}

/// Same checker across a reload: every setting equal; where it is written may move.
fn same_check(a: &Check, b: &Check) -> bool {
    a.kind == b.kind
        && a.interval == b.interval
        && a.connect_timeout == b.connect_timeout
        && a.retry == b.retry
        && a.delay_before_retry == b.delay_before_retry
        && a.warmup == b.warmup
}
