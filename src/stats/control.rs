//! Control-plane state for reporting: what health concluded about each backend, who holds
//! each VIP, every HA failure and reload result, and what the plan says (schedulers,
//! configured weights). Health and HA push into it through their observer traits, the app
//! directly; snapshots read it. Never touched by the data plane, so a plain mutex is fine.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{BackendKey, LockPlan, Plan};
pub use crate::ha::status::{BgpSession, BgpView, CertExpiry, VipRole, VipView, VrrpView};
use crate::ha::{HaFailure, HaObserver};
use crate::health::BackendStatus;
use crate::health::observer::HealthObserver;

use crate::counters::lock;

/// Health, HA and plan state; one per process, inside the [`super::StatsRegistry`].
#[derive(Debug, Default)]
pub struct ControlState {
    inner: Mutex<ControlInner>,
    health_changes: HealthChanges,
}

/// Bumped on every health report, so HA's BGP mode wakes at once (a tokio watch: readers
/// see "changed", never a queue that can grow).
#[derive(Debug)]
struct HealthChanges(tokio::sync::watch::Sender<u64>);

impl Default for HealthChanges {
    fn default() -> HealthChanges {
        HealthChanges(tokio::sync::watch::channel(0).0)
    }
}

impl HealthChanges {
    fn bump(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct ControlInner {
    pub(crate) plan: Option<PlanView>,
    pub(crate) health: HashMap<BackendKey, HealthView>,
    pub(crate) vips: BTreeMap<String, VipView>,
    pub(crate) vrrp: BTreeMap<String, VrrpView>,
    pub(crate) bgp: BTreeMap<String, BgpView>,
    /// Each service's quorum as health last reported it.
    pub(crate) quorum: HashMap<SocketAddr, bool>,
    /// HA failures since start, per (instance, kind).
    pub(crate) ha_failures: BTreeMap<(String, HaFailure), u64>,
    pub(crate) reloads: ReloadCounts,
}

/// Reloads since start, by result.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadCounts {
    pub success: u64,
    pub failure: u64,
}

/// What the snapshot needs from the plan: services in configuration order.
#[derive(Debug, Clone, Default)]
pub(crate) struct PlanView {
    pub(crate) instances: Vec<PlanInstance>,
    pub(crate) services: Vec<PlanService>,
}

#[derive(Debug, Clone)]
pub(crate) struct PlanInstance {
    pub(crate) name: String,
    pub(crate) vip: IpAddr,
    pub(crate) lock: String,
}

#[derive(Debug, Clone)]
pub(crate) struct PlanService {
    pub(crate) addr: SocketAddr,
    pub(crate) instance: String,
    pub(crate) scheduler: String,
    pub(crate) backends: Vec<(SocketAddr, u32)>,
    pub(crate) sorry_server: Option<SocketAddr>,
}

/// A backend's health as last reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthView {
    pub state: HealthState,
    /// Effective weight (0 while draining or down).
    pub weight: u32,
    /// When the current state began.
    pub since: SystemTime,
    /// Why it last changed, as health put it (e.g. "TCP_CHECK 192.0.2.10:1936: connection refused").
    pub reason: String,
    /// State or weight changes since the process started.
    pub transitions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Up,
    /// Up with weight 0: no new connections, live sessions continue.
    Drain,
    Down,
}

impl HealthState {
    pub fn name(self) -> &'static str {
        match self {
            HealthState::Up => "up",
            HealthState::Drain => "drain",
            HealthState::Down => "down",
        }
    }
}

fn split(status: BackendStatus) -> (HealthState, u32) {
    match status {
        BackendStatus::Up { weight: 0 } => (HealthState::Drain, 0),
        BackendStatus::Up { weight } => (HealthState::Up, weight),
        BackendStatus::Down => (HealthState::Down, 0),
    }
}

impl ControlState {
    pub fn new() -> ControlState {
        ControlState::default()
    }

    /// Health's conclusion about a backend. Re-reports of the same status keep `since`,
    /// `reason` and the transition count.
    pub fn backend_health(&self, key: BackendKey, status: BackendStatus, reason: String) {
        let (state, weight) = split(status);
        let mut inner = lock(&self.inner);
        match inner.health.get_mut(&key) {
            Some(view) if view.state == state && view.weight == weight => {}
            Some(view) => {
                *view = HealthView {
                    state,
                    weight,
                    since: SystemTime::now(),
                    reason,
                    transitions: view.transitions + 1,
                };
            }
            None => {
                inner.health.insert(
                    key,
                    HealthView {
                        state,
                        weight,
                        since: SystemTime::now(),
                        reason,
                        transitions: 0,
                    },
                );
            }
        }
    }

    /// HA's view of one VIP instance (replaces the previous one).
    pub fn vip_state(&self, instance: &str, view: VipView) {
        lock(&self.inner).vips.insert(instance.to_owned(), view);
    }

    /// A VRRP instance's protocol state and counters (replaces the previous one).
    pub fn vrrp_state(&self, instance: &str, view: VrrpView) {
        lock(&self.inner).vrrp.insert(instance.to_owned(), view);
    }

    /// One reload finished; `ok` when the new plan is in force everywhere.
    pub fn reload_result(&self, ok: bool) {
        let mut inner = lock(&self.inner);
        if ok {
            inner.reloads.success += 1;
        } else {
            inner.reloads.failure += 1;
        }
    }

    /// Whether any instance has a VIP it should have removed but could not.
    pub fn removal_pending(&self) -> bool {
        lock(&self.inner).vips.values().any(|v| v.removal_pending)
    }

    /// The plan now in force: which services and backends exist, schedulers, weights.
    /// Health and VIP entries of things no longer in the plan are dropped.
    pub fn set_plan(&self, plan: &Plan) {
        let view = PlanView {
            instances: plan
                .instances
                .iter()
                .map(|instance| PlanInstance {
                    name: instance.name.clone(),
                    vip: instance.vip,
                    lock: match &instance.lock {
                        LockPlan::None => "none".to_owned(),
                        LockPlan::Kube(kube) => {
                            format!("kube {}/{}", kube.namespace, kube.lease_name)
                        }
                        LockPlan::Etcd(etcd) => format!("etcd {}", etcd.key),
                        LockPlan::Vrrp(vrrp) => format!("vrrp vrid {}", vrrp.vrid),
                        LockPlan::Bgp(bgp) => format!("bgp table {}", bgp.table),
                    },
                })
                .collect(),
            services: plan
                .instances
                .iter()
                .flat_map(|instance| {
                    instance.services.iter().map(|service| PlanService {
                        addr: service.listen_addr(),
                        instance: instance.name.clone(),
                        scheduler: service.scheduler.name().to_owned(),
                        backends: service
                            .backends
                            .iter()
                            .map(|b| (b.addr, b.weight))
                            .collect(),
                        sorry_server: service.sorry_server,
                    })
                })
                .collect(),
        };
        let mut inner = lock(&self.inner);
        inner.health.retain(|key, _| {
            view.services.iter().any(|service| {
                service.addr == key.service
                    && service
                        .backends
                        .iter()
                        .any(|(addr, _)| *addr == key.backend)
            })
        });
        inner
            .vips
            .retain(|name, _| view.instances.iter().any(|i| &i.name == name));
        inner
            .vrrp
            .retain(|name, _| view.instances.iter().any(|i| &i.name == name));
        inner
            .bgp
            .retain(|name, _| view.instances.iter().any(|i| &i.name == name));
        inner
            .quorum
            .retain(|addr, _| view.services.iter().any(|s| s.addr == *addr));
        inner.plan = Some(view);
    }

    pub(crate) fn read(&self) -> ControlInner {
        lock(&self.inner).clone()
    }
}

/// The process's stats/admin view of health.
impl HealthObserver for ControlState {
    fn backend_health(&self, key: BackendKey, status: BackendStatus, reason: String) {
        ControlState::backend_health(self, key, status, reason);
        self.health_changes.bump();
    }

    fn service_quorum(&self, service: SocketAddr, up: bool) {
        lock(&self.inner).quorum.insert(service, up);
        self.health_changes.bump();
    }
}

impl HaObserver for ControlState {
    fn vip_state(&self, instance: &str, view: VipView) {
        ControlState::vip_state(self, instance, view);
    }

    fn vrrp_state(&self, instance: &str, view: VrrpView) {
        ControlState::vrrp_state(self, instance, view);
    }

    fn bgp_state(&self, instance: &str, view: BgpView) {
        lock(&self.inner).bgp.insert(instance.to_owned(), view);
    }

    /// BGP announces a VIP only while every one of its services has quorum.
    fn instance_quorum(&self, instance: &str) -> Option<bool> {
        let inner = lock(&self.inner);
        let mut reported = false;
        let services = inner.plan.iter().flat_map(|p| &p.services);
        for service in services.filter(|s| s.instance == instance) {
            match inner.quorum.get(&service.addr) {
                Some(false) => return Some(false),
                Some(true) => reported = true,
                None => {}
            }
        }
        reported.then_some(true)
    }

    fn health_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.health_changes.0.subscribe())
    }

    fn failure(&self, instance: &str, failure: HaFailure) {
        *lock(&self.inner)
            .ha_failures
            .entry((instance.to_owned(), failure))
            .or_insert(0) += 1;
    }

    /// VRRP lowers a host's priority while health reports none of the instance's
    /// backends up.
    fn backends_up(&self, backends: &[BackendKey]) -> Option<bool> {
        let inner = lock(&self.inner);
        let mut reported = false;
        for key in backends {
            if let Some(view) = inner.health.get(key) {
                if view.state == HealthState::Up {
                    return Some(true);
                }
                reported = true;
            }
        }
        reported.then_some(false)
    }
}

/// Seconds since the Unix epoch, for the snapshot and Prometheus.
pub(crate) fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> BackendKey {
        BackendKey {
            service: "192.0.2.1:80".parse().unwrap(),
            backend: "198.51.100.7:80".parse().unwrap(),
        }
    }

    #[test]
    fn repeating_the_same_status_is_not_a_transition() {
        let control = ControlState::new();
        control.backend_health(key(), BackendStatus::Up { weight: 1 }, "first check".into());
        control.backend_health(key(), BackendStatus::Up { weight: 1 }, "re-probe".into());
        let view = control.read().health[&key()].clone();
        assert_eq!((view.transitions, view.reason.as_str()), (0, "first check"));
    }

    #[test]
    fn a_state_change_counts_and_keeps_its_reason() {
        let control = ControlState::new();
        control.backend_health(key(), BackendStatus::Up { weight: 1 }, "up".into());
        control.backend_health(key(), BackendStatus::Down, "refused".into());
        control.backend_health(key(), BackendStatus::Up { weight: 0 }, "inhibit".into());
        let view = control.read().health[&key()].clone();
        assert_eq!(view.state, HealthState::Drain);
        assert_eq!((view.transitions, view.reason.as_str()), (2, "inhibit"));
    }
}
