//! Starts, reloads and stops one ownership task per VIP instance.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::announce::AnnounceOptions;
use super::driver::{StatusReporter, run_leased, run_unlocked};
use super::keeper::VipKeeper;
use super::lease::etcd::EtcdStore;
use super::lease::kube::{KubeLeaseStore, KubeStoreOptions};
use super::ownership::Ownership;
use super::timing::Timing;
use super::vip::{Netlink, VipError};
use super::vrrp::{VrrpInstance, run_vrrp};
use crate::config::plan::{Instance, LockPlan, Plan};
use crate::stats::control::ControlState;

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error(transparent)]
    Netlink(#[from] VipError),
    #[error("cannot read this host's name for the lease identity: {0}")]
    HostName(std::io::Error),
}

/// Settings the configuration file does not carry (yet).
#[derive(Debug, Clone, Copy, Default)]
pub struct HaOptions {
    pub announce: AnnounceOptions,
}

/// The lease identity: the plan's `identity`, else this host's name.
pub fn host_identity(plan: &Plan) -> Result<String, HaError> {
    if let Some(identity) = &plan.identity {
        return Ok(identity.clone());
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(HaError::HostName(std::io::Error::last_os_error()));
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
}

struct Running {
    instance: Instance,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    conflicts: Arc<AtomicU64>,
}

pub struct HaSupervisor {
    identity: String,
    control: Arc<ControlState>,
    netlink: Netlink,
    options: HaOptions,
    running: HashMap<String, Running>,
}

impl HaSupervisor {
    /// Starts one task per instance; call inside a tokio runtime.
    pub fn spawn(
        plan: &Plan,
        identity: String,
        control: Arc<ControlState>,
    ) -> Result<HaSupervisor, HaError> {
        HaSupervisor::spawn_with(plan, identity, control, HaOptions::default())
    }

    pub fn spawn_with(
        plan: &Plan,
        identity: String,
        control: Arc<ControlState>,
        options: HaOptions,
    ) -> Result<HaSupervisor, HaError> {
        let mut supervisor = HaSupervisor {
            identity,
            control,
            netlink: Netlink::connect()?,
            options,
            running: HashMap::new(),
        };
        for instance in &plan.instances {
            supervisor.start(instance);
        }
        Ok(supervisor)
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Announcements for a held VIP seen from another MAC, since start.
    pub fn conflicts(&self, instance: &str) -> Option<u64> {
        self.running
            .get(instance)
            .map(|r| r.conflicts.load(Ordering::Relaxed))
    }

    /// Reload: instances whose ownership settings changed or that are gone are stopped
    /// (VIP removed, lease released) before new ones start; the others keep running.
    pub async fn apply_plan(&mut self, plan: &Plan) {
        let wanted: HashMap<&str, &Instance> = plan
            .instances
            .iter()
            .map(|i| (i.name.as_str(), i))
            .collect();
        let outdated: Vec<String> = self
            .running
            .iter()
            .filter(|(name, running)| {
                wanted
                    .get(name.as_str())
                    .is_none_or(|i| !same_ownership(i, &running.instance))
            })
            .map(|(name, _)| name.clone())
            .collect();
        let stopping: Vec<Running> = outdated
            .iter()
            .filter_map(|name| self.running.remove(name))
            .collect();
        stop_all(stopping).await;
        for instance in &plan.instances {
            if !self.running.contains_key(&instance.name) {
                self.start(instance);
            }
        }
    }

    /// Removes every VIP, then releases every lease.
    pub async fn shutdown(self) {
        let started = Instant::now();
        stop_all(self.running.into_values().collect()).await;
        tracing::info!(took = ?started.elapsed(), "HA stopped");
    }

    fn start(&mut self, instance: &Instance) {
        let name = instance.name.clone();
        let conflicts = Arc::new(AtomicU64::new(0));
        let vip = self.netlink.vip(&instance.interface, instance.vip);
        let keeper = VipKeeper::new(name.clone(), vip, self.options.announce, conflicts.clone());
        let mut status = StatusReporter::new(name.clone(), self.control.clone());
        let (stop, stop_rx) = watch::channel(false);
        let timing = Timing::from_checks(instance.check_interval, instance.check_timeout);
        let task = match &instance.lock {
            LockPlan::None => {
                tracing::info!(
                    instance = %name,
                    "single host: no lock and no peers, this host holds the VIP unconditionally"
                );
                tokio::spawn(run_unlocked(
                    self.identity.clone(),
                    keeper,
                    status,
                    instance.check_interval,
                    stop_rx,
                ))
            }
            LockPlan::Vrrp(vrrp) => tokio::spawn(run_vrrp(
                VrrpInstance::from_plan(instance, vrrp),
                keeper,
                status,
                self.control.clone(),
                self.control.clone(),
                stop_rx,
            )),
            LockPlan::Etcd(lock) => {
                let store = EtcdStore::new(lock.endpoints.clone(), lock.key.clone());
                let fsm = Ownership::new(self.identity.clone(), timing, Instant::now());
                tokio::spawn(run_leased(
                    name.clone(),
                    fsm,
                    store,
                    keeper,
                    status,
                    stop_rx,
                ))
            }
            LockPlan::Kube(lock) => {
                let options =
                    KubeStoreOptions::within(timing.renew_deadline, lock.kubeconfigs.len());
                let store = KubeLeaseStore::new(lock, options);
                status.watch_certificates(lock.kubeconfigs.clone());
                let fsm = Ownership::new(self.identity.clone(), timing, Instant::now());
                tokio::spawn(run_leased(
                    name.clone(),
                    fsm,
                    store,
                    keeper,
                    status,
                    stop_rx,
                ))
            }
        };
        tracing::info!(
            instance = %name, vip = %instance.vip, identity = %self.identity,
            renew = ?timing.renew_period, deadline = ?timing.renew_deadline,
            lease = ?timing.lease_duration, "HA instance started"
        );
        self.running.insert(
            name,
            Running {
                instance: instance.clone(),
                stop,
                task,
                conflicts,
            },
        );
    }
}

/// Signals every task at once, then waits for all: their VIPs go in parallel.
async fn stop_all(running: Vec<Running>) {
    for r in &running {
        // A task that already ended has dropped its receiver; nothing to tell it.
        if r.stop.send(true).is_err() {
            tracing::debug!(instance = %r.instance.name, "HA task had already ended");
        }
    }
    for r in running {
        if let Err(e) = r.task.await {
            tracing::error!(instance = %r.instance.name, "HA task failed: {e}");
        }
    }
}

/// Whether a reload may keep the running task: everything ownership depends on is equal.
fn same_ownership(a: &Instance, b: &Instance) -> bool {
    a.vip == b.vip
        && a.interface == b.interface
        && a.check_interval == b.check_interval
        && a.check_timeout == b.check_timeout
        && a.lock == b.lock
        && a.peers == b.peers
}
