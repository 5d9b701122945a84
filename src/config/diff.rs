//! What a reload changes: one typed [`PlanDiff`] between the running plan and a new one,
//! computed once and read by every subsystem (data plane, health, HA, admin) so they all
//! agree on what happened.
//!
//! For VIP ownership the diff decides how much must move: only a new VIP address, a new
//! interface or a different lock record (kind, lease name and namespace, etcd key, VRRP
//! router id) means letting go of the VIP ([`InstanceChange::Moved`]); timing, kubeconfigs,
//! etcd endpoints, peers and VRRP priority, advert interval and preemption are applied to
//! the running ownership in place
//! ([`InstanceChange::Retuned`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::plan::{Instance, LockPlan, Plan, Service};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanDiff {
    /// VIP:ports to start listening on.
    pub listeners_added: BTreeSet<SocketAddr>,
    /// VIP:ports to stop listening on (their live sessions continue).
    pub listeners_removed: BTreeSet<SocketAddr>,
    /// VIP:ports present before and after whose service settings changed (schedulers,
    /// backends, checks, timeouts).
    pub services_changed: BTreeSet<SocketAddr>,
    /// Per instance name; unchanged instances are absent.
    pub instances: BTreeMap<String, InstanceChange>,
    /// `admin.socket` or `admin.http` changed.
    pub admin_changed: bool,
    /// The top-level `identity` changed: it names this host in every lease.
    pub identity_changed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceChange {
    Added,
    Removed,
    /// The VIP must move: these settings changed.
    Moved(Vec<&'static str>),
    /// Ownership settings changed that apply in place.
    Retuned(Vec<&'static str>),
    /// Only the instance's services changed; ownership is untouched.
    ServicesOnly,
}

impl PlanDiff {
    pub fn between(old: &Plan, new: &Plan) -> PlanDiff {
        let old_services = services(old);
        let new_services = services(new);
        let old_addrs: BTreeSet<SocketAddr> = old_services.keys().copied().collect();
        let new_addrs: BTreeSet<SocketAddr> = new_services.keys().copied().collect();
        let services_changed = old_services
            .iter()
            .filter(|(addr, service)| {
                new_services
                    .get(*addr)
                    .is_some_and(|new_service| new_service != *service)
            })
            .map(|(addr, _)| *addr)
            .collect();
        PlanDiff {
            listeners_added: new_addrs.difference(&old_addrs).copied().collect(),
            listeners_removed: old_addrs.difference(&new_addrs).copied().collect(),
            services_changed,
            instances: instance_changes(old, new),
            admin_changed: old.admin != new.admin,
            identity_changed: old.identity != new.identity,
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &PlanDiff::default()
    }

    /// One line for the reload log.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let addrs = |set: &BTreeSet<SocketAddr>| {
            set.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        if !self.listeners_added.is_empty() {
            parts.push(format!("listening on {}", addrs(&self.listeners_added)));
        }
        if !self.listeners_removed.is_empty() {
            parts.push(format!("no longer on {}", addrs(&self.listeners_removed)));
        }
        if !self.services_changed.is_empty() {
            parts.push(format!("changed {}", addrs(&self.services_changed)));
        }
        for (name, change) in &self.instances {
            parts.push(match change {
                InstanceChange::Added => format!("instance {name} added"),
                InstanceChange::Removed => format!("instance {name} removed"),
                InstanceChange::Moved(what) => {
                    format!("instance {name} moved ({})", what.join(", "))
                }
                InstanceChange::Retuned(what) => {
                    format!("instance {name} retuned in place ({})", what.join(", "))
                }
                InstanceChange::ServicesOnly => continue,
            });
        }
        if self.admin_changed {
            parts.push("admin endpoint moved".into());
        }
        if self.identity_changed {
            parts.push("identity changed".into());
        }
        if parts.is_empty() {
            "no change".into()
        } else {
            parts.join("; ")
        }
    }
}

fn services(plan: &Plan) -> BTreeMap<SocketAddr, &Service> {
    plan.instances
        .iter()
        .flat_map(|i| i.services.iter())
        .map(|s| (s.listen_addr(), s))
        .collect()
}

fn instance_changes(old: &Plan, new: &Plan) -> BTreeMap<String, InstanceChange> {
    let old_by_name: BTreeMap<&str, &Instance> =
        old.instances.iter().map(|i| (i.name.as_str(), i)).collect();
    let new_by_name: BTreeMap<&str, &Instance> =
        new.instances.iter().map(|i| (i.name.as_str(), i)).collect();
    let mut changes = BTreeMap::new();
    for (name, before) in &old_by_name {
        let change = match new_by_name.get(name) {
            None => Some(InstanceChange::Removed),
            Some(after) => compare(before, after),
        };
        if let Some(change) = change {
            changes.insert((*name).to_owned(), change);
        }
    }
    for name in new_by_name.keys() {
        if !old_by_name.contains_key(name) {
            changes.insert((*name).to_owned(), InstanceChange::Added);
        }
    }
    changes
}

fn compare(before: &Instance, after: &Instance) -> Option<InstanceChange> {
    let mut moved = Vec::new();
    if before.vip != after.vip {
        moved.push("vip");
    }
    if before.interface != after.interface {
        moved.push("interface");
    }
    if !same_lock_record(&before.lock, &after.lock) {
        moved.push("lock");
    }
    if before.id != after.id {
        moved.push("id");
    }
    if before.failsafe != after.failsafe {
        // The peer channel is opened with the instance: restart it under the new key/port.
        moved.push("failsafe");
    }
    if !moved.is_empty() {
        return Some(InstanceChange::Moved(moved));
    }
    let mut retuned = Vec::new();
    if before.check_interval != after.check_interval {
        retuned.push("check_interval");
    }
    if before.check_timeout != after.check_timeout {
        retuned.push("check_timeout");
    }
    match (&before.lock, &after.lock) {
        (LockPlan::Kube(a), LockPlan::Kube(b)) if a.kubeconfigs != b.kubeconfigs => {
            retuned.push("kubecfgs");
        }
        (LockPlan::Etcd(a), LockPlan::Etcd(b)) if a.endpoints != b.endpoints => {
            retuned.push("etcd endpoints");
        }
        (LockPlan::Vrrp(a), LockPlan::Vrrp(b)) => {
            if a.priority != b.priority {
                retuned.push("priority");
            }
            if a.advert_interval != b.advert_interval {
                retuned.push("advert_int");
            }
            if a.preempt != b.preempt || a.preempt_delay != b.preempt_delay {
                retuned.push("preempt");
            }
        }
        (LockPlan::Bgp(a), LockPlan::Bgp(b)) if a != b => {
            retuned.push("bgp");
        }
        _ => {}
    }
    if before.peers != after.peers {
        retuned.push("peer");
    }
    if !retuned.is_empty() {
        return Some(InstanceChange::Retuned(retuned));
    }
    (before.services != after.services).then_some(InstanceChange::ServicesOnly)
}

/// Whether two locks name the same record in the same kind of service.
fn same_lock_record(a: &LockPlan, b: &LockPlan) -> bool {
    match (a, b) {
        (LockPlan::None, LockPlan::None) => true,
        (LockPlan::Kube(a), LockPlan::Kube(b)) => {
            a.lease_name == b.lease_name && a.namespace == b.namespace
        }
        (LockPlan::Etcd(a), LockPlan::Etcd(b)) => a.key == b.key,
        (LockPlan::Vrrp(a), LockPlan::Vrrp(b)) => a.vrid == b.vrid,
        // The route's table is its record: another table is another route.
        (LockPlan::Bgp(a), LockPlan::Bgp(b)) => a.table == b.table,
        _ => false,
    }
}
