//! The merged, serialisable view of everything: all workers' counters and histograms summed
//! per VIP:port and per backend, joined with health, HA and plan state. One type serves the
//! admin socket (JSON), `alive-proxy stats` and `/metrics`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::BackendKey;

use super::control::{
    BgpView, ControlInner, HealthView, PlanView, VipView, VrrpView, unix_seconds,
};
use super::registry::StatsRegistry;
use crate::counters::histogram::{LatencySummary, Merged};
use crate::counters::{Shard, lock};

/// Bumped when a field changes meaning or goes away (adding fields does not bump it).
pub const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub format: u32,
    /// When the snapshot was taken, milliseconds since the Unix epoch (integers, so the JSON
    /// round trip is exact).
    pub taken_at_ms: u64,
    pub uptime_ms: u64,
    /// Data-plane worker shards merged into this snapshot.
    pub workers: usize,
    /// Plan order first, then services seen only in traffic (e.g. removed by a reload while
    /// sessions were still open).
    pub services: Vec<ServiceSnapshot>,
    pub instances: Vec<InstanceSnapshot>,
    /// HA control-loop failures since start, per instance and kind (non-zero ones).
    #[serde(default)]
    pub ha_failures: Vec<HaFailureCount>,
    /// Config reloads since start.
    #[serde(default)]
    pub reloads: ReloadSnapshot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaFailureCount {
    pub instance: String,
    /// [`crate::ha::HaFailure::name`].
    pub kind: String,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadSnapshot {
    pub success: u64,
    pub failure: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSnapshot {
    pub name: String,
    pub vip: Option<IpAddr>,
    /// How the VIP is owned, from the plan ("none", "kube ns/lease", "etcd key").
    pub lock: Option<String>,
    /// As HA last reported; `None` before HA's first report.
    pub state: Option<VipView>,
    /// VRRP instances only: protocol state and advert counters.
    #[serde(default)]
    pub vrrp: Option<VrrpView>,
    /// BGP instances only: the VIP's route and the daemon's sessions.
    #[serde(default)]
    pub bgp: Option<BgpView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSnapshot {
    pub vip: IpAddr,
    pub port: u16,
    pub instance: Option<String>,
    pub scheduler: Option<String>,
    pub in_plan: bool,
    /// Connections taken from the listener.
    pub accepted: u64,
    /// Accepted and not yet closed.
    pub active: u64,
    pub closed: u64,
    pub refused_limit: u64,
    pub no_backend: u64,
    pub session_duration: LatencySummary,
    pub backends: Vec<BackendSnapshot>,
}

impl StatsSnapshot {
    /// When the snapshot was taken, seconds since the Unix epoch.
    pub fn taken_at(&self) -> f64 {
        self.taken_at_ms as f64 / 1e3
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.uptime_ms as f64 / 1e3
    }
}

impl ServiceSnapshot {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.vip, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendSnapshot {
    pub addr: SocketAddr,
    pub in_plan: bool,
    /// The service's `sorry_server` (takes connections only while the service is below quorum).
    #[serde(default)]
    pub sorry_server: bool,
    pub configured_weight: Option<u32>,
    /// As health last reported; `None` before its first report.
    pub health: Option<HealthView>,
    /// Successful connects (IPVS "Conns").
    pub connections: u64,
    pub active: u64,
    pub opened: u64,
    pub closed: u64,
    pub connect_failures: u64,
    pub retries: u64,
    pub resets: u64,
    /// Client → backend (IPVS "incoming").
    pub bytes_to_backend: u64,
    /// Backend → client (IPVS "outgoing").
    pub bytes_to_client: u64,
    pub connect_time: LatencySummary,
    pub first_byte: LatencySummary,
    pub session_duration: LatencySummary,
}

impl BackendSnapshot {
    /// The weight in force: health's if reported, else the plan's.
    pub fn weight(&self) -> u32 {
        match &self.health {
            Some(health) => health.weight,
            None => self.configured_weight.unwrap_or(0),
        }
    }

    pub fn state_name(&self) -> &'static str {
        if self.sorry_server {
            return "sorry";
        }
        match &self.health {
            Some(health) => health.state.name(),
            None => "unknown",
        }
    }
}

#[derive(Default)]
struct ServiceSums {
    accepted: u64,
    closed: u64,
    refused_limit: u64,
    no_backend: u64,
    session_duration: Option<Merged>,
}

#[derive(Default)]
struct BackendSums {
    connections: u64,
    opened: u64,
    closed: u64,
    connect_failures: u64,
    retries: u64,
    resets: u64,
    bytes_to_backend: u64,
    bytes_to_client: u64,
    connect_time: Option<Merged>,
    first_byte: Option<Merged>,
    session_duration: Option<Merged>,
}

fn merged(slot: &mut Option<Merged>) -> &mut Merged {
    slot.get_or_insert_with(Merged::new)
}

fn summary(slot: &Option<Merged>) -> LatencySummary {
    slot.as_ref()
        .map(Merged::summary)
        .unwrap_or_else(|| Merged::new().summary())
}

impl StatsRegistry {
    /// Merge every worker's counters and histograms with the control-plane state. Runs on the
    /// control plane; workers keep recording meanwhile (each counter is read atomically, the
    /// set of them is not one instant, and "closed" is read before "opened" so `active` never
    /// underflows).
    pub fn snapshot(&self) -> StatsSnapshot {
        let shards = self.shards();
        let (mut services, mut backends) = merge_shards(&shards);
        let control = self.control().read();
        let plan = control.plan.clone().unwrap_or_default();

        // Services: plan order, then traffic-only ones in address order.
        let mut order: Vec<(SocketAddr, bool)> =
            plan.services.iter().map(|s| (s.addr, true)).collect();
        for addr in services.keys().chain(backends.keys().map(|k| &k.service)) {
            if !order.iter().any(|(seen, _)| seen == addr) {
                order.push((*addr, false));
            }
        }
        let service_snapshots = order
            .into_iter()
            .map(|(addr, in_plan)| {
                let sums = services.remove(&addr).unwrap_or_default();
                service_snapshot(addr, in_plan, sums, &plan, &control, &mut backends)
            })
            .collect();

        StatsSnapshot {
            format: SNAPSHOT_FORMAT,
            taken_at_ms: (unix_seconds(SystemTime::now()) * 1e3) as u64,
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            workers: shards.len(),
            services: service_snapshots,
            instances: instance_snapshots(&plan, &control),
            ha_failures: control
                .ha_failures
                .iter()
                .map(|((instance, kind), count)| HaFailureCount {
                    instance: instance.clone(),
                    kind: kind.name().to_owned(),
                    count: *count,
                })
                .collect(),
            reloads: ReloadSnapshot {
                success: control.reloads.success,
                failure: control.reloads.failure,
            },
        }
    }
}

type ServiceTotals = BTreeMap<SocketAddr, ServiceSums>;
type BackendTotals = BTreeMap<BackendKey, BackendSums>;

/// Every worker's counters and histograms, summed per service and per backend.
fn merge_shards(shards: &[Arc<Shard>]) -> (ServiceTotals, BackendTotals) {
    let mut services = ServiceTotals::new();
    let mut backends = BackendTotals::new();
    for shard in shards {
        for (addr, cells) in lock(&shard.services).iter() {
            let sums = services.entry(*addr).or_default();
            sums.closed += cells.closed.load(Relaxed);
            sums.accepted += cells.accepted.load(Relaxed);
            sums.refused_limit += cells.refused_limit.load(Relaxed);
            sums.no_backend += cells.no_backend.load(Relaxed);
            merged(&mut sums.session_duration).add(&cells.session_duration);
        }
        for (key, cells) in lock(&shard.backends).iter() {
            let sums = backends.entry(*key).or_default();
            sums.closed += cells.closed.load(Relaxed);
            sums.opened += cells.opened.load(Relaxed);
            sums.connections += cells.connect_ok.load(Relaxed);
            sums.connect_failures += cells.connect_failed.load(Relaxed);
            sums.retries += cells.retried.load(Relaxed);
            sums.resets += cells.resets.load(Relaxed);
            sums.bytes_to_backend += cells.bytes_to_backend.load(Relaxed);
            sums.bytes_to_client += cells.bytes_to_client.load(Relaxed);
            merged(&mut sums.connect_time).add(&cells.connect_time);
            merged(&mut sums.first_byte).add(&cells.first_byte);
            merged(&mut sums.session_duration).add(&cells.session_duration);
        }
    }
    (services, backends)
}

/// One VIP:port: its backends in plan order (the sorry server, then backends seen only in
/// traffic, after them), each taking its totals out of `backends`.
fn service_snapshot(
    addr: SocketAddr,
    in_plan: bool,
    sums: ServiceSums,
    plan: &PlanView,
    control: &ControlInner,
    backends: &mut BackendTotals,
) -> ServiceSnapshot {
    let planned = plan.services.iter().find(|s| s.addr == addr);
    let mut backend_order: Vec<(SocketAddr, Option<u32>)> = planned
        .map(|s| s.backends.iter().map(|(a, w)| (*a, Some(*w))).collect())
        .unwrap_or_default();
    let sorry = planned.and_then(|s| s.sorry_server);
    if let Some(sorry) = sorry
        && !backend_order.iter().any(|(seen, _)| *seen == sorry)
    {
        backend_order.push((sorry, None));
    }
    for key in backends.keys().filter(|k| k.service == addr) {
        if !backend_order.iter().any(|(seen, _)| *seen == key.backend) {
            backend_order.push((key.backend, None));
        }
    }
    let backend_snapshots = backend_order
        .into_iter()
        .map(|(backend, configured_weight)| {
            let key = BackendKey {
                service: addr,
                backend,
            };
            let sums = backends.remove(&key).unwrap_or_default();
            BackendSnapshot {
                addr: backend,
                in_plan: configured_weight.is_some() || sorry == Some(backend),
                sorry_server: sorry == Some(backend),
                configured_weight,
                health: control.health.get(&key).cloned(),
                connections: sums.connections,
                active: sums.opened.saturating_sub(sums.closed),
                opened: sums.opened,
                closed: sums.closed,
                connect_failures: sums.connect_failures,
                retries: sums.retries,
                resets: sums.resets,
                bytes_to_backend: sums.bytes_to_backend,
                bytes_to_client: sums.bytes_to_client,
                connect_time: summary(&sums.connect_time),
                first_byte: summary(&sums.first_byte),
                session_duration: summary(&sums.session_duration),
            }
        })
        .collect();
    ServiceSnapshot {
        vip: addr.ip(),
        port: addr.port(),
        instance: planned.map(|s| s.instance.clone()),
        scheduler: planned.map(|s| s.scheduler.clone()),
        in_plan,
        accepted: sums.accepted,
        active: sums.accepted.saturating_sub(sums.closed),
        closed: sums.closed,
        refused_limit: sums.refused_limit,
        no_backend: sums.no_backend,
        session_duration: summary(&sums.session_duration),
        backends: backend_snapshots,
    }
}

/// The plan's instances in order, then any HA still reports on (removed by a reload).
fn instance_snapshots(plan: &PlanView, control: &ControlInner) -> Vec<InstanceSnapshot> {
    let mut instances: Vec<InstanceSnapshot> = plan
        .instances
        .iter()
        .map(|i| InstanceSnapshot {
            name: i.name.clone(),
            vip: Some(i.vip),
            lock: Some(i.lock.clone()),
            state: control.vips.get(&i.name).cloned(),
            vrrp: control.vrrp.get(&i.name).cloned(),
            bgp: control.bgp.get(&i.name).cloned(),
        })
        .collect();
    for (name, view) in &control.vips {
        if !instances.iter().any(|i| &i.name == name) {
            instances.push(InstanceSnapshot {
                name: name.clone(),
                vip: None,
                lock: None,
                state: Some(view.clone()),
                vrrp: control.vrrp.get(name).cloned(),
                bgp: control.bgp.get(name).cloned(),
            });
        }
    }
    instances
}
