//! The tokio shells around [`super::ownership::Ownership`]: one task per VIP instance runs
//! the state machine against a [`LeaseStore`], bounds every store call by the deadline the
//! state machine gives, and carries out its decisions on the VIP. No decision is made here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::keeper::VipKeeper;
use super::lease::{LeaseError, LeaseStore};
use super::online::kubeconfig::check_and_warn;
use super::ownership::{Decision, Outcome, Ownership, Purpose, Role, StepDownReason};
use crate::stats::control::{CertExpiry, ControlState, VipRole, VipView};

/// How often kubeconfig client certificates are re-read for their expiry (and warned
/// about): a rotated certificate shows up within this.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// Publishes an instance's ownership to the stats control state (admin socket, /metrics).
pub struct StatusReporter {
    instance: String,
    control: Arc<ControlState>,
    role: VipRole,
    since: SystemTime,
    transitions: u64,
    last: Option<VipView>,
    certificates: Option<CertificateWatch>,
}

/// The kube lock's kubeconfigs, whose client certificate expiry goes into the status.
struct CertificateWatch {
    kubeconfigs: Vec<PathBuf>,
    next_check: Instant,
    expiry: Vec<CertExpiry>,
}

impl StatusReporter {
    pub fn new(instance: String, control: Arc<ControlState>) -> StatusReporter {
        StatusReporter {
            instance,
            control,
            role: VipRole::Init,
            since: SystemTime::now(),
            transitions: 0,
            last: None,
            certificates: None,
        }
    }

    /// Report (and warn about) the expiry of these kubeconfigs' client certificates, read
    /// now and every [`CERT_CHECK_INTERVAL`].
    pub fn watch_certificates(&mut self, kubeconfigs: Vec<PathBuf>) {
        self.certificates = Some(CertificateWatch {
            kubeconfigs,
            next_check: Instant::now(),
            expiry: Vec::new(),
        });
    }

    fn cert_expiry(&mut self) -> Vec<CertExpiry> {
        let Some(watch) = &mut self.certificates else {
            return Vec::new();
        };
        let now = Instant::now();
        if now >= watch.next_check {
            watch.expiry = check_and_warn(&self.instance, &watch.kubeconfigs, SystemTime::now());
            watch.next_check = now + CERT_CHECK_INTERVAL;
        }
        watch.expiry.clone()
    }

    pub fn publish(
        &mut self,
        role: VipRole,
        holder: Option<String>,
        endpoint: Option<String>,
        last_error: Option<String>,
    ) {
        if role != self.role {
            self.role = role;
            self.since = SystemTime::now();
            self.transitions += 1;
        }
        let view = VipView {
            holder,
            role,
            since: self.since,
            transitions: self.transitions,
            lock_endpoint: endpoint,
            cert_expiry: self.cert_expiry(),
            last_error,
        };
        if self.last.as_ref() != Some(&view) {
            self.control.vip_state(&self.instance, view.clone());
            self.last = Some(view);
        }
    }
}

/// Single-host mode: hold the VIP for as long as the task runs.
pub async fn run_unlocked(
    identity: String,
    mut keeper: VipKeeper,
    mut status: StatusReporter,
    check_every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    // Without a lock there is nobody to hand over to: keep retrying the address.
    let mut healthy = keeper.take_over().await;
    status.publish(VipRole::Master, Some(identity.clone()), None, None);
    loop {
        tokio::select! {
            () = tokio::time::sleep(check_every) => {
                healthy = if healthy { keeper.ensure().await } else { keeper.take_over().await };
                let error = (!healthy).then(|| "cannot add the VIP".to_owned());
                let role = if healthy { VipRole::Master } else { VipRole::Fault };
                status.publish(role, Some(identity.clone()), None, error);
            }
            _ = stop.changed() => break,
        }
    }
    keeper.step_down().await;
    status.publish(VipRole::Backup, None, None, None);
}

/// Lease mode: ownership decided by `fsm` against `store`.
pub async fn run_leased<S: LeaseStore>(
    instance: String,
    mut fsm: Ownership,
    mut store: S,
    mut keeper: VipKeeper,
    mut status: StatusReporter,
    mut stop: watch::Receiver<bool>,
) {
    keeper.remove_stale().await;
    let mut stopping = false;
    let mut last_error: Option<String> = None;
    let mut seen_record = false;
    let mut last_holder: Option<String> = None;
    loop {
        let decision = fsm.poll(Instant::now());
        match decision {
            Decision::Wait(until) => {
                let role = match fsm.role() {
                    Role::Holder => VipRole::Master,
                    _ if last_error.is_some() => VipRole::Fault,
                    _ if seen_record => VipRole::Backup,
                    _ => VipRole::Init,
                };
                let holder = fsm.observed_holder().map(str::to_owned);
                if holder != last_holder {
                    tracing::info!(
                        instance,
                        holder = holder.as_deref().unwrap_or("(none)"),
                        transitions = fsm.transitions(),
                        "lease holder changed"
                    );
                    last_holder.clone_from(&holder);
                }
                status.publish(role, holder, Some(store.endpoint()), last_error.clone());
                tokio::select! {
                    () = tokio::time::sleep_until(until.into()) => {}
                    _ = stop.changed(), if !stopping => {
                        stopping = true;
                        fsm.stop();
                    }
                }
            }
            Decision::Get { deadline } => {
                let result = bounded(deadline, store.get()).await;
                seen_record |= result.is_ok();
                let (outcome, error) = classify(
                    &instance,
                    "reading the lease",
                    &store,
                    result,
                    Outcome::Read,
                );
                last_error = error;
                fsm.complete(Instant::now(), outcome);
            }
            Decision::Create { duration, deadline } => {
                let result = bounded(deadline, store.create(fsm.identity(), duration)).await;
                let (outcome, error) = classify(
                    &instance,
                    "creating the lease",
                    &store,
                    result,
                    Outcome::Wrote,
                );
                last_error = error;
                fsm.complete(Instant::now(), outcome);
            }
            Decision::Update {
                purpose,
                prev,
                holder,
                duration,
                deadline,
            } => {
                let what = match purpose {
                    Purpose::Acquire => "taking over the lease",
                    Purpose::Renew => "renewing the lease",
                    Purpose::Release => "releasing the lease",
                };
                if purpose == Purpose::Acquire {
                    tracing::info!(
                        instance, previous_holder = ?prev.holder, version = %prev.version,
                        "lease free or expired; taking it over"
                    );
                }
                let result =
                    bounded(deadline, store.update(&prev, holder.as_deref(), duration)).await;
                let (outcome, error) = classify(&instance, what, &store, result, Outcome::Wrote);
                last_error = error;
                let renewed = purpose == Purpose::Renew && matches!(outcome, Outcome::Wrote(_));
                if purpose == Purpose::Release && matches!(outcome, Outcome::Wrote(_)) {
                    tracing::info!(instance, "lease released");
                }
                fsm.complete(Instant::now(), outcome);
                if renewed && fsm.role() == Role::Holder && !keeper.ensure().await {
                    resign(&instance, &mut fsm, &mut last_error);
                }
            }
            Decision::TakeOver => {
                tracing::info!(instance, identity = fsm.identity(), "lease acquired");
                if !keeper.take_over().await {
                    resign(&instance, &mut fsm, &mut last_error);
                }
            }
            Decision::StepDown(reason) => {
                match reason {
                    StepDownReason::DeadlineMissed => tracing::error!(
                        instance,
                        deadline = ?fsm.timing().renew_deadline,
                        "could not renew the lease in time; removing the VIP before anyone may take it"
                    ),
                    StepDownReason::Lost => tracing::error!(
                        instance, holder = ?fsm.observed_holder(),
                        "the lease names another holder; removing the VIP"
                    ),
                    StepDownReason::Shutdown => {
                        tracing::info!(instance, "shutting down: removing the VIP, then releasing")
                    }
                    StepDownReason::Resigned => tracing::error!(
                        instance, hold_off = ?resign_hold_off(&fsm),
                        "this host cannot serve the VIP; releasing the lease to a peer"
                    ),
                }
                keeper.step_down().await;
            }
            Decision::Stopped => break,
        }
    }
    status.publish(VipRole::Backup, None, Some(store.endpoint()), last_error);
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

/// Turns a store result into what the state machine needs, logging failures; the second
/// value is the error to show in the status (`None` on success and on a lost race).
fn classify<T, S: LeaseStore>(
    instance: &str,
    what: &str,
    store: &S,
    result: Result<T, LeaseError>,
    ok: impl FnOnce(T) -> Outcome,
) -> (Outcome, Option<String>) {
    match result {
        Ok(value) => (ok(value), None),
        Err(LeaseError::Conflict) => {
            tracing::info!(instance, "{what}: someone else wrote the lease first");
            (Outcome::Conflict, None)
        }
        Err(e) => {
            tracing::warn!(instance, endpoint = %store.endpoint(), "{what} failed: {e}");
            (Outcome::Failed, Some(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::StatsRegistry;

    fn state(registry: &StatsRegistry, instance: &str) -> Option<VipView> {
        registry
            .snapshot()
            .instances
            .into_iter()
            .find(|i| i.name == instance)
            .and_then(|i| i.state)
    }

    #[test]
    fn status_counts_role_changes_and_keeps_since_on_repeats() {
        let registry = StatsRegistry::new();
        let mut status = StatusReporter::new("vip-1".into(), registry.control());
        status.publish(
            VipRole::Backup,
            Some("lb2".into()),
            Some("etcd".into()),
            None,
        );
        let first = state(&registry, "vip-1").expect("state published");
        assert_eq!(first.role, VipRole::Backup);
        assert_eq!(first.holder.as_deref(), Some("lb2"));
        assert_eq!(first.transitions, 1, "Init -> Backup is one change");
        status.publish(
            VipRole::Backup,
            Some("lb2".into()),
            Some("etcd".into()),
            None,
        );
        assert_eq!(
            state(&registry, "vip-1").map(|v| v.since),
            Some(first.since)
        );
        status.publish(
            VipRole::Master,
            Some("lb1".into()),
            Some("etcd".into()),
            None,
        );
        let now = state(&registry, "vip-1").expect("state published");
        assert_eq!(now.role, VipRole::Master);
        assert_eq!(now.transitions, 2);
    }

    #[test]
    fn status_carries_each_kubeconfig_certificate_expiry() {
        let registry = StatsRegistry::new();
        let mut status = StatusReporter::new("vip-1".into(), registry.control());
        let missing = PathBuf::from("/nonexistent/kubecfg01.conf");
        status.watch_certificates(vec![missing.clone()]);
        status.publish(VipRole::Backup, None, None, None);
        let view = state(&registry, "vip-1").expect("state published");
        assert_eq!(view.cert_expiry.len(), 1, "{:?}", view.cert_expiry);
        assert_eq!(view.cert_expiry[0].kubeconfig, missing);
        assert!(
            view.cert_expiry[0].error.is_some(),
            "an unreadable kubeconfig must report why"
        );
    }

    #[test]
    fn status_shows_the_last_lock_error() {
        let registry = StatsRegistry::new();
        let mut status = StatusReporter::new("vip-1".into(), registry.control());
        status.publish(
            VipRole::Fault,
            None,
            Some("etcd".into()),
            Some("timed out".into()),
        );
        let view = state(&registry, "vip-1").expect("state published");
        assert_eq!(view.role, VipRole::Fault);
        assert_eq!(view.last_error.as_deref(), Some("timed out"));
    }
}
