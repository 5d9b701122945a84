//! Control-plane state for reporting: what health concluded about each backend, who holds
//! each VIP, and what the plan says (schedulers, configured weights). Health, HA and the app
//! push into it; snapshots read it. Never touched by the data plane, so a plain mutex is fine.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{BackendKey, LockPlan, Plan};
use crate::health::BackendStatus;

use super::registry::lock;

/// Health, HA and plan state; one per process, inside the [`super::StatsRegistry`].
#[derive(Debug, Default)]
pub struct ControlState {
    inner: Mutex<ControlInner>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct ControlInner {
    pub(crate) plan: Option<PlanView>,
    pub(crate) health: HashMap<BackendKey, HealthView>,
    pub(crate) vips: BTreeMap<String, VipView>,
    pub(crate) vrrp: BTreeMap<String, VrrpView>,
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

/// One VIP instance's ownership as HA sees it. Build with `..VipView::default()` for the
/// fields that do not apply (e.g. `cert_expiry` without a kube lock).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VipView {
    /// Who holds the lease / is VRRP master, as far as this host knows.
    pub holder: Option<String>,
    pub role: VipRole,
    /// When `role` last changed.
    pub since: SystemTime,
    /// Role changes since the process started.
    pub transitions: u64,
    /// The lock endpoint in use: kubeconfig path, etcd endpoint, or peer address.
    pub lock_endpoint: Option<String>,
    /// Client certificate expiry of each configured kubeconfig, in configured order.
    pub cert_expiry: Vec<CertExpiry>,
    /// The last error talking to the lock, if the last attempt failed.
    pub last_error: Option<String>,
}

impl Default for VipView {
    fn default() -> VipView {
        VipView {
            holder: None,
            role: VipRole::Init,
            since: SystemTime::UNIX_EPOCH,
            transitions: 0,
            lock_endpoint: None,
            cert_expiry: Vec::new(),
            last_error: None,
        }
    }
}

/// keepalived's names, which operators already read in logs: MASTER holds the VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VipRole {
    Init,
    Master,
    Backup,
    Fault,
}

impl VipRole {
    pub fn name(self) -> &'static str {
        match self {
            VipRole::Init => "INIT",
            VipRole::Master => "MASTER",
            VipRole::Backup => "BACKUP",
            VipRole::Fault => "FAULT",
        }
    }
}

/// A VRRP instance's protocol state and counters (instances owned by VRRP only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VrrpView {
    pub vrid: u8,
    /// keepalived's state names: INIT, BACKUP, MASTER, FAULT.
    pub state: String,
    /// Advertised now (lowered while no backend is healthy).
    pub priority: u8,
    pub configured_priority: u8,
    pub advert_interval_ms: u64,
    /// The master as far as this host knows (itself when master).
    pub master: Option<IpAddr>,
    /// This host's advert source address.
    pub source: Option<IpAddr>,
    /// Where adverts go: the unicast peers, or the multicast group.
    pub destinations: Vec<IpAddr>,
    /// Valid adverts for this virtual router.
    pub adverts_received: u64,
    pub adverts_sent: u64,
    pub send_errors: u64,
    /// Received packets dropped, by reason (`ttl`, `checksum`, `source`, ...).
    pub dropped: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertExpiry {
    pub kubeconfig: PathBuf,
    /// `None` when the kubeconfig has no client certificate (token auth) or could not be read.
    pub not_after: Option<SystemTime>,
    pub error: Option<String>,
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
        inner.plan = Some(view);
    }

    pub(crate) fn read(&self) -> ControlInner {
        lock(&self.inner).clone()
    }
}

/// VRRP lowers a host's priority while health reports none of the instance's backends up.
impl crate::ha::vrrp::driver::BackendHealth for ControlState {
    fn any_up(&self, backends: &[BackendKey]) -> Option<bool> {
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
