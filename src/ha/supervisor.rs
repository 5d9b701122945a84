//! Starts, reloads and stops one ownership task per VIP instance.
//!
//! A reload never lets go of a VIP it does not have to: timing, kubeconfig, endpoint and
//! peer changes are applied to the running task in place; only a change of the VIP, its
//! interface or the lock record itself ([`crate::config::diff::InstanceChange::Moved`])
//! stops the task, and then as a planned handover.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::announce::AnnounceOptions;
use super::bgp::{BgpTask, KernelRoute, run_bgp};
use super::driver::{InstanceCommand, InstanceTask, run_leased_with_peers, run_unlocked};
use super::forward::Forwarder;
use super::keeper::VipKeeper;
use super::lease::etcd::EtcdStore;
use super::lease::kube::{KubeLeaseStore, KubeStoreOptions};
use super::ownership::Ownership;
use super::peer::{PeerHandle, PeerSettings, wire::Key};
use super::status::Alarm;
use super::status::{HaObserver, StatusReporter};
use super::timing::Timing;
use super::vip::{Netlink, VipError};
use super::vrrp::{VrrpInstance, run_vrrp};
use crate::config::diff::{InstanceChange, PlanDiff};
use crate::config::plan::{Instance, LockPlan, Plan};

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error(transparent)]
    Netlink(#[from] VipError),
    #[error("cannot read this host's name for the lease identity: {0}")]
    HostName(std::io::Error),
}

/// Settings the configuration file does not carry.
#[derive(Debug, Clone, Copy, Default)]
pub struct HaOptions {
    pub announce: AnnounceOptions,
    /// How long an instance that a reload removes or moves keeps its VIP parked for the
    /// sessions still using it (the process's drain timeout).
    pub drain: Duration,
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
    commands: mpsc::UnboundedSender<InstanceCommand>,
    task: JoinHandle<()>,
}

/// An instance task told to stop, not yet ended.
struct Leaving {
    name: String,
    running: Running,
    /// Taken once awaited.
    handed_over: Option<oneshot::Receiver<bool>>,
}

impl Leaving {
    /// Waits until the task reported "handed over" (or ended); at once if it already did.
    /// Whether its VIP is parked here for draining sessions.
    async fn handed_over(&mut self) -> bool {
        match self.handed_over.take() {
            Some(rx) => rx.await.unwrap_or_else(|_| {
                tracing::debug!(instance = %self.name, "HA task ended without handing over");
                false
            }),
            None => false,
        }
    }
}

pub struct HaSupervisor {
    identity: String,
    observer: Arc<dyn HaObserver>,
    netlink: Netlink,
    options: HaOptions,
    forwarder: Arc<Forwarder>,
    running: HashMap<String, Running>,
    /// Instances a reload removed or moved, draining until their deadline.
    leaving: Vec<Leaving>,
}

/// What a reload did to VIP ownership, for the reload's log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HaApplied {
    pub started: Vec<String>,
    pub retuned: Vec<String>,
    pub handed_over: Vec<String>,
}

impl HaSupervisor {
    /// Starts one task per instance; call inside a tokio runtime.
    pub fn spawn(
        plan: &Plan,
        identity: String,
        observer: Arc<dyn HaObserver>,
        options: HaOptions,
    ) -> Result<HaSupervisor, HaError> {
        let mut supervisor = HaSupervisor {
            identity,
            observer,
            netlink: Netlink::connect()?,
            options,
            forwarder: Forwarder::start(),
            running: HashMap::new(),
            leaving: Vec::new(),
        };
        for instance in &plan.instances {
            supervisor.start(instance);
        }
        Ok(supervisor)
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Reload, after the rest of the process accepted `plan`: new instances start, moved
    /// and removed ones hand over (their VIPs parked for draining sessions up to the drain
    /// timeout), retuned ones change in place. Returns once every instance took its part.
    pub async fn apply(&mut self, plan: &Plan, diff: &PlanDiff) -> HaApplied {
        let mut applied = HaApplied::default();
        let by_name: HashMap<&str, &Instance> = plan
            .instances
            .iter()
            .map(|i| (i.name.as_str(), i))
            .collect();
        let mut acks = Vec::new();
        for (name, change) in &diff.instances {
            match change {
                InstanceChange::Removed | InstanceChange::Moved(_) => {
                    if let Some(running) = self.running.remove(name) {
                        let drain_until = Some(Instant::now() + self.options.drain);
                        self.leaving.push(stop(name, running, drain_until, false));
                        applied.handed_over.push(name.clone());
                    }
                }
                InstanceChange::Retuned(_) => {
                    if let (Some(running), Some(instance)) =
                        (self.running.get(name), by_name.get(name.as_str()))
                    {
                        let (tx, rx) = oneshot::channel();
                        let retune = InstanceCommand::Retune {
                            instance: Box::new((*instance).clone()),
                            done: tx,
                        };
                        if running.commands.send(retune).is_ok() {
                            acks.push((name.clone(), rx));
                        }
                        applied.retuned.push(name.clone());
                    }
                }
                InstanceChange::Added | InstanceChange::ServicesOnly => {}
            }
        }
        for (name, ack) in acks {
            if ack.await.is_err() {
                tracing::error!(instance = %name, "HA task ended before applying the reload");
            }
        }
        // A moved instance starts again under its new settings once the old task released
        // the lease (the record may be the same): never two tasks of ours on one lease.
        for leaving in &mut self.leaving {
            leaving.handed_over().await;
        }
        for instance in &plan.instances {
            if !self.running.contains_key(&instance.name) {
                self.start(instance);
                applied.started.push(instance.name.clone());
            }
        }
        self.reap_leaving();
        applied
    }

    /// Ends the tasks of removed/moved instances that have finished draining.
    fn reap_leaving(&mut self) {
        self.leaving.retain(|l| !l.running.task.is_finished());
    }

    /// Shutdown, step 1 (planned handover): every holder parks its VIP for the sessions
    /// draining until `drain_until`, releases its lease with a handover note, and this
    /// returns once every instance's next holder has it (or a bound passed). New
    /// connections should then stop being accepted here. Returns whether any VIP is
    /// parked here for draining sessions (its link now answered by another host).
    pub async fn hand_over(&mut self, drain_until: Instant) -> bool {
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            if let Some(running) = self.running.remove(&name) {
                self.leaving
                    .push(stop(&name, running, Some(drain_until), true));
            }
        }
        let mut parked = false;
        for leaving in &mut self.leaving {
            parked |= leaving.handed_over().await;
        }
        parked
    }

    /// Shutdown, step 2: the sessions are gone (or the drain timed out): parked VIPs are
    /// removed and every task ends. Also a plain stop when [`Self::hand_over`] was not
    /// called: every VIP removed, then every lease released.
    pub async fn shutdown(mut self) {
        let started = Instant::now();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            if let Some(running) = self.running.remove(&name) {
                self.leaving.push(stop(&name, running, None, false));
            }
        }
        for leaving in &self.leaving {
            // A task that already ended has dropped its receiver; nothing to tell it.
            let _ = leaving.running.commands.send(InstanceCommand::FinishDrain);
        }
        for leaving in self.leaving {
            if let Err(e) = leaving.running.task.await {
                tracing::error!(instance = %leaving.name, "HA task failed: {e}");
            }
        }
        if let Err(e) = self.forwarder.clear().await {
            tracing::error!("removing the handover forwarding tables: {e}");
        }
        tracing::info!(took = ?started.elapsed(), "HA stopped");
    }

    fn start(&mut self, instance: &Instance) {
        let name = instance.name.clone();
        let vip = self.netlink.vip(&instance.interface, instance.vip);
        let mut status = StatusReporter::new(name.clone(), Arc::clone(&self.observer));
        let keeper = VipKeeper::new(vip, self.options.announce, status.alarm());
        let timing = Timing::from_checks(instance.check_interval, instance.check_timeout);
        let (commands, rx) = mpsc::unbounded_channel();
        if let LockPlan::Kube(lock) = &instance.lock {
            status.watch_certificates(lock.kubeconfigs.clone());
        }
        let peer = start_failsafe(instance, timing, status.alarm());
        let task = InstanceTask {
            instance: instance.clone(),
            keeper,
            status,
            forwarder: Arc::clone(&self.forwarder),
            commands: rx,
        };
        let task = match &instance.lock {
            LockPlan::None => {
                tracing::info!(
                    instance = %name,
                    "single host: no lock and no peers, this host holds the VIP unconditionally"
                );
                tokio::spawn(run_unlocked(self.identity.clone(), task))
            }
            LockPlan::Vrrp(vrrp) => tokio::spawn(run_vrrp(
                task,
                VrrpInstance::from_plan(instance, vrrp),
                Arc::clone(&self.observer),
                self.options.drain,
            )),
            LockPlan::Bgp(plan) => {
                let route = KernelRoute::connect(instance.vip, plan.table);
                let bgp = BgpTask {
                    plan: plan.clone(),
                    route,
                    observer: Arc::clone(&self.observer),
                    identity: self.identity.clone(),
                };
                tokio::spawn(run_bgp(task, bgp))
            }
            LockPlan::Etcd(lock) => {
                let store = EtcdStore::new(lock.endpoints.clone(), lock.key.clone());
                let fsm = Ownership::new(self.identity.clone(), timing, Instant::now());
                tokio::spawn(run_leased_with_peers(task, fsm, store, peer))
            }
            LockPlan::Kube(lock) => {
                let options =
                    KubeStoreOptions::within(timing.renew_deadline, lock.kubeconfigs.len());
                let store = KubeLeaseStore::new(lock, options);
                let fsm = Ownership::new(self.identity.clone(), timing, Instant::now());
                tokio::spawn(run_leased_with_peers(task, fsm, store, peer))
            }
        };
        tracing::info!(
            instance = %name, vip = %instance.vip, identity = %self.identity,
            renew = ?timing.renew_period, deadline = ?timing.renew_deadline,
            lease = ?timing.lease_duration, "HA instance started"
        );
        self.running.insert(name, Running { commands, task });
    }
}

/// The instance's lock-outage failsafe, when configured. Any failure is logged and the
/// instance runs without it (the plain lease: the VIP goes down in an outage, never twice).
fn start_failsafe(instance: &Instance, timing: Timing, alarm: Alarm) -> Option<PeerHandle> {
    let plan = instance.failsafe.as_ref()?;
    let key = match std::fs::read(&plan.key_file) {
        Ok(bytes) => Key::new(bytes.trim_ascii()),
        Err(e) => {
            tracing::error!(
                instance = %instance.name, key_file = %plan.key_file.display(),
                "failsafe off: cannot read the key file: {e}"
            );
            return None;
        }
    };
    let Some(key) = key else {
        tracing::error!(
            instance = %instance.name, key_file = %plan.key_file.display(),
            "failsafe off: the key file holds fewer than 16 bytes"
        );
        return None;
    };
    let settings = PeerSettings {
        timing,
        peers: instance.peers.clone(),
    };
    match PeerHandle::start(
        &instance.name,
        instance.vip,
        plan.port,
        key,
        settings,
        alarm,
    ) {
        Ok(handle) => {
            tracing::info!(
                instance = %instance.name, port = plan.port, peers = ?instance.peers,
                "failsafe on: through a lock outage the holder keeps the VIP while every peer confirms the outage"
            );
            Some(handle)
        }
        Err(e) => {
            tracing::error!(instance = %instance.name, "failsafe off: {e}");
            None
        }
    }
}

fn stop(
    name: &str,
    running: Running,
    drain_until: Option<Instant>,
    await_next_holder: bool,
) -> Leaving {
    let (tx, rx) = oneshot::channel();
    let command = InstanceCommand::Stop {
        drain_until,
        await_next_holder,
        handed_over: tx,
    };
    if running.commands.send(command).is_err() {
        tracing::debug!(instance = name, "HA task had already ended");
    }
    Leaving {
        name: name.to_owned(),
        running,
        handed_over: Some(rx),
    }
}
