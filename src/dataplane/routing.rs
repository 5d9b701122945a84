//! The routing snapshot: what every worker reads per connection, and what health writes.
//!
//! The plan's services become an immutable [`RoutingSnapshot`] published with arc-swap; a
//! reload publishes a new one. Mutable per-backend facts (health state, effective weight,
//! suspect mark, live session count, threshold state) live in [`BackendState`] behind an
//! `Arc` that a reload carries over for every backend it keeps, so live sessions keep
//! counting against the right backend and health's verdicts survive a reload. Workers
//! only read the snapshot and touch atomics: the per-connection path takes no lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::backend::BackendState;
use super::command::WorkerCommand;
use super::scheduler::SchedulerState;
use super::scheduling::{membership_changed, scheduler_for};
use crate::config::{BackendKey, OnBackendDown, Plan, Service};
use crate::health::{BackendStatus, HealthSink};

/// Per-service facts that outlive a snapshot: the quorum/sorry state and live sessions.
#[derive(Debug, Default)]
pub struct ServiceShared {
    pub sorry: AtomicBool,
    pub active: AtomicU32,
}

/// Counts a client session against its service's `max_connections`.
#[derive(Debug)]
pub struct ServiceGuard(Arc<ServiceShared>);

impl ServiceShared {
    /// Admits one more session unless `limit` (0 = unlimited) is reached.
    pub fn try_admit(self: &Arc<Self>, limit: u32) -> Option<ServiceGuard> {
        let previous = self.active.fetch_add(1, Ordering::Relaxed);
        if limit != 0 && previous >= limit {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ServiceGuard(Arc::clone(self)))
    }
}

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One VIP:port in one snapshot.
#[derive(Debug)]
pub struct ServiceRoute {
    pub config: Service,
    pub backends: Vec<Arc<BackendState>>,
    pub sorry_backend: Option<Arc<BackendState>>,
    pub shared: Arc<ServiceShared>,
    pub scheduler: Arc<SchedulerState>,
}

impl ServiceRoute {
    pub fn listen_addr(&self) -> SocketAddr {
        self.config.listen_addr()
    }

    pub fn sorry_active(&self) -> bool {
        self.shared.sorry.load(Ordering::Relaxed)
    }
}

/// Everything workers route by; immutable once published.
#[derive(Debug, Default)]
pub struct RoutingSnapshot {
    pub services: HashMap<SocketAddr, Arc<ServiceRoute>>,
    /// Bumped on every publish (reload or membership change) so workers can refresh caches.
    pub generation: u64,
}

impl RoutingSnapshot {
    pub fn backend(&self, key: &BackendKey) -> Option<&Arc<BackendState>> {
        let service = self.services.get(&key.service)?;
        service
            .backends
            .iter()
            .chain(service.sorry_backend.iter())
            .find(|b| b.key == *key)
    }
}

/// Builds the snapshot for `plan`, reusing the state of backends and services that `old`
/// already has.
fn build_snapshot(plan: &Plan, old: &RoutingSnapshot) -> RoutingSnapshot {
    let mut services = HashMap::new();
    for service in plan.instances.iter().flat_map(|i| i.services.iter()) {
        let listen = service.listen_addr();
        let old_service = old.services.get(&listen);
        let reuse = |key: BackendKey| old_service.and_then(|_| old.backend(&key)).cloned();
        let backends = service
            .backends
            .iter()
            .map(|b| {
                let key = BackendKey {
                    service: listen,
                    backend: b.addr,
                };
                match reuse(key) {
                    Some(state) => {
                        state.update_from_plan(b);
                        state
                    }
                    None => Arc::new(BackendState::new(key, Some(b))),
                }
            })
            .collect::<Vec<_>>();
        let sorry_backend = service.sorry_server.map(|addr| {
            let key = BackendKey {
                service: listen,
                backend: addr,
            };
            reuse(key).unwrap_or_else(|| Arc::new(BackendState::new(key, None)))
        });
        let shared = old_service
            .map(|s| Arc::clone(&s.shared))
            .unwrap_or_default();
        let scheduler = scheduler_for(service, old_service.map(|s| (&s.config, &s.scheduler)));
        membership_changed(&scheduler, &backends);
        services.insert(
            listen,
            Arc::new(ServiceRoute {
                config: service.clone(),
                backends,
                sorry_backend,
                shared,
                scheduler,
            }),
        );
    }
    RoutingSnapshot {
        services,
        generation: old.generation + 1,
    }
}

/// The published snapshot plus the way back to the workers; implements [`HealthSink`].
pub struct Routing {
    snapshot: ArcSwap<RoutingSnapshot>,
    workers: Mutex<Vec<futures::channel::mpsc::UnboundedSender<WorkerCommand>>>,
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("snapshot", &self.snapshot.load())
            .finish()
    }
}

impl Routing {
    pub fn new(plan: &Plan) -> Self {
        Routing {
            snapshot: ArcSwap::from_pointee(build_snapshot(plan, &RoutingSnapshot::default())),
            workers: Mutex::new(Vec::new()),
        }
    }

    /// The current snapshot (workers call this per connection).
    pub fn load(&self) -> arc_swap::Guard<Arc<RoutingSnapshot>> {
        self.snapshot.load()
    }

    pub fn current(&self) -> Arc<RoutingSnapshot> {
        self.snapshot.load_full()
    }

    /// Publishes the snapshot for a reloaded plan.
    pub fn apply_plan(&self, plan: &Plan) {
        let old = self.snapshot.load_full();
        self.snapshot.store(Arc::new(build_snapshot(plan, &old)));
    }

    pub(super) fn set_workers(
        &self,
        workers: Vec<futures::channel::mpsc::UnboundedSender<WorkerCommand>>,
    ) {
        if let Ok(mut slot) = self.workers.lock() {
            *slot = workers;
        }
    }

    fn tell_workers(&self, command: impl Fn() -> WorkerCommand) {
        let Ok(workers) = self.workers.lock() else {
            return;
        };
        for worker in workers.iter() {
            // A worker that has exited (shutdown) has nothing left to close.
            if worker.unbounded_send(command()).is_err() {
                tracing::debug!("worker command channel closed");
            }
        }
    }
}

impl HealthSink for Routing {
    fn backend_changed(&self, key: BackendKey, status: BackendStatus) {
        let snapshot = self.snapshot.load();
        let Some(service) = snapshot.services.get(&key.service) else {
            tracing::debug!(?key, "health result for a backend no longer in the plan");
            return;
        };
        let Some(backend) = snapshot.backend(&key) else {
            tracing::debug!(?key, "health result for a backend no longer in the plan");
            return;
        };
        let applied = backend.apply_health(status);
        if applied.went_down && service.config.on_backend_down == OnBackendDown::Close {
            self.tell_workers(|| WorkerCommand::CloseBackend(key));
        }
        if applied.changed {
            tracing::info!(service = %key.service, backend = %key.backend, ?status, "backend state applied");
            membership_changed(&service.scheduler, &service.backends);
        }
    }

    fn sorry_active(&self, service: SocketAddr, active: bool) {
        let snapshot = self.snapshot.load();
        match snapshot.services.get(&service) {
            Some(route) => {
                let was = route.shared.sorry.swap(active, Ordering::Relaxed);
                if was != active {
                    tracing::warn!(%service, sorry_server = ?route.config.sorry_server, active, "sorry server switched");
                }
            }
            None => tracing::debug!(%service, "sorry state for a service no longer in the plan"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::config::{AdminPlan, Instance, LockPlan, ProxyProtocol, Scheduler};
    use crate::dataplane::backend::{ActiveGuard, SUSPECT_HOLD, suspect_hold};
    use crate::dataplane::clock::now_ms;
    use std::path::PathBuf;
    use std::time::Duration;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address literal")
    }

    fn backend(a: &str, upper: u32, lower: u32) -> Backend {
        Backend {
            addr: addr(a),
            weight: 1,
            inhibit_on_failure: false,
            upper_threshold: upper,
            lower_threshold: lower,
            alpha: false,
            checks: Vec::new(),
        }
    }

    fn plan(backends: Vec<Backend>) -> Plan {
        let service = Service {
            vip: "192.0.2.1".parse().expect("literal"),
            port: 80,
            scheduler: Scheduler::Rr,
            persistence: None,
            quorum: 1,
            hysteresis: 0,
            sorry_server: None,
            backends,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(900),
            client_fin_timeout: Duration::from_secs(120),
            server_fin_timeout: Duration::from_secs(120),
            proxy_protocol: ProxyProtocol::Off,
            transparent: false,
            max_connections: 0,
            on_backend_down: OnBackendDown::Close,
            connect_attempts: 3,
        };
        Plan {
            source: PathBuf::from("t.yaml"),
            instances: vec![Instance {
                name: "t".into(),
                vip: service.vip,
                id: None,
                interface: "lo".into(),
                check_interval: Duration::from_secs(1),
                check_timeout: Duration::from_secs(3),
                peers: Vec::new(),
                lock: LockPlan::None,
                failsafe: None,
                services: vec![service],
            }],
            admin: AdminPlan {
                socket: PathBuf::from("/nonexistent"),
                http: None,
            },
            identity: None,
        }
    }

    fn key(b: &str) -> BackendKey {
        BackendKey {
            service: addr("192.0.2.1:80"),
            backend: addr(b),
        }
    }

    #[test]
    fn upper_threshold_excludes_until_below_lower_threshold() {
        let routing = Routing::new(&plan(vec![backend("198.51.100.1:80", 3, 1)]));
        let snapshot = routing.current();
        let b = snapshot
            .backend(&key("198.51.100.1:80"))
            .expect("backend in snapshot");
        let sessions: Vec<ActiveGuard> = (0..3).map(|_| b.open_session()).collect();
        assert!(!b.under_threshold(), "3 sessions reached uthreshold 3");
        let mut sessions = sessions;
        sessions.pop();
        assert!(
            !b.under_threshold(),
            "2 sessions: still above lthreshold 1 (hysteresis)"
        );
        sessions.pop();
        assert!(!b.under_threshold(), "1 session: not below lthreshold 1");
        sessions.pop();
        assert!(b.under_threshold(), "0 sessions: below lthreshold, back in");
    }

    #[test]
    fn max_connections_admits_up_to_the_limit() {
        let shared = Arc::new(ServiceShared::default());
        let first = shared.try_admit(2).expect("first within limit");
        let _second = shared.try_admit(2).expect("second within limit");
        assert!(shared.try_admit(2).is_none(), "third beyond limit 2");
        drop(first);
        assert!(shared.try_admit(2).is_some(), "a freed slot is reusable");
    }

    #[test]
    fn reload_keeps_backend_state_and_live_counts() {
        let routing = Routing::new(&plan(vec![
            backend("198.51.100.1:80", 0, 0),
            backend("198.51.100.2:80", 0, 0),
        ]));
        let kept = Arc::clone(
            routing
                .current()
                .backend(&key("198.51.100.1:80"))
                .expect("backend"),
        );
        let _session = kept.open_session();
        routing.backend_changed(key("198.51.100.1:80"), BackendStatus::Up { weight: 7 });
        routing.apply_plan(&plan(vec![
            backend("198.51.100.1:80", 0, 0),
            backend("198.51.100.3:80", 0, 0),
        ]));
        let after = routing.current();
        let same = after
            .backend(&key("198.51.100.1:80"))
            .expect("kept backend");
        assert!(
            Arc::ptr_eq(same, &kept),
            "a kept backend must keep its shared state"
        );
        assert_eq!(
            (same.active(), same.weight()),
            (1, 7),
            "live count and health weight survive a reload"
        );
        assert!(
            after.backend(&key("198.51.100.2:80")).is_none(),
            "removed backend still routed"
        );
    }

    #[test]
    fn down_and_suspect_backends_are_not_eligible() {
        let routing = Routing::new(&plan(vec![backend("198.51.100.1:80", 0, 0)]));
        let snapshot = routing.current();
        let b = snapshot.backend(&key("198.51.100.1:80")).expect("backend");
        assert!(b.eligible(now_ms()));
        b.mark_suspect();
        assert!(!b.eligible(now_ms()), "a suspect backend got picked");
        routing.backend_changed(key("198.51.100.1:80"), BackendStatus::Up { weight: 1 });
        assert!(
            b.eligible(now_ms()),
            "health's answer clears the suspect mark"
        );
        routing.backend_changed(key("198.51.100.1:80"), BackendStatus::Down);
        assert!(!b.eligible(now_ms()), "a down backend got picked");
        routing.backend_changed(key("198.51.100.1:80"), BackendStatus::Up { weight: 0 });
        assert!(!b.eligible(now_ms()), "weight 0 drains: no new connections");
    }

    #[test]
    fn suspect_hold_outlasts_healths_slowest_reprobe() {
        use crate::config::{Check, CheckKind, TcpCheck};
        let mut b = backend("192.0.2.10:80", 0, 0);
        assert_eq!(
            suspect_hold(&b),
            SUSPECT_HOLD,
            "a backend without checks keeps the minimum hold"
        );
        b.checks.push(Check {
            kind: CheckKind::Tcp(TcpCheck {
                connect: addr("192.0.2.10:1936"),
                bind: None,
            }),
            interval: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            retry: 2,
            delay_before_retry: Duration::from_secs(3),
            warmup: Duration::ZERO,
            origin: "t.yaml:1:1".into(),
        });
        // 3 attempts × 5 s + 2 pauses × 3 s + 1 s slack.
        assert_eq!(suspect_hold(&b), Duration::from_secs(22));
    }
}
