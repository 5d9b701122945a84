//! Kubernetes coordination.k8s.io/v1 Lease store: [`LeaseStore`] over kube-rs, one Lease per
//! VIP instance, with the kubeconfigs of `kube_lock.kubecfgs` as ordered fallbacks.
//!
//! # Which kubeconfig is used
//! Requests go to the *active* kubeconfig, the first one at start. When it is unavailable
//! (connect/TLS failure, timeout, 5xx/429, unreadable file) or refuses this client (401/403:
//! e.g. its certificate expired while the next kubeconfig's has not), the same request is
//! tried on the next one in order, wrapping around, and the first that answers becomes
//! active. Answers from a working server — 409 Conflict, 404, 422 — are authoritative and
//! returned as they are. While a later kubeconfig is active, a background probe reads the
//! lease through the first one every `probe_interval`; when that works, the next request
//! goes to the first kubeconfig again. Every request is bounded by `request_timeout`, so one
//! call costs at most `kubeconfigs × request_timeout`.
//!
//! # Record
//! Written as client-go's `LeaseLock` writes it: `holderIdentity`, `leaseDurationSeconds`
//! (rounded up to whole seconds: rivals then wait longer, never shorter), `acquireTime` set
//! when the holder changes, `renewTime` on every write, `leaseTransitions` incremented when a
//! new holder takes over, unchanged on renew and on release (empty holder). Updates are
//! optimistic: the `resourceVersion` of the record the caller saw goes with the write, and a
//! 409 means someone else wrote in between. Timestamps are informational only; expiry is
//! judged by the ownership state machine on its own monotonic clock. A planned release's
//! [`HandoverNote`] is the annotation [`HANDOVER_ANNOTATION`] (JSON); every other write
//! removes it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::{HandoverNote, LeaseError, LeaseRecord, LeaseStore};

/// Where a released Lease carries the previous holder's handover note.
pub const HANDOVER_ANNOTATION: &str = "alive-proxy.io/handover";
use crate::config::plan::{KubeLock, LockPlan};
use crate::ha::timing::Timing;

/// Tuning of the store; [`KubeStoreOptions::within`] derives it from the renew deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeStoreOptions {
    /// Bound on one request to one API server (connect + TLS + response).
    pub request_timeout: Duration,
    /// How often the first kubeconfig is probed while another one is active.
    pub probe_interval: Duration,
}

impl Default for KubeStoreOptions {
    fn default() -> Self {
        KubeStoreOptions {
            request_timeout: Duration::from_secs(1),
            probe_interval: Duration::from_secs(5),
        }
    }
}

impl KubeStoreOptions {
    /// Options under which one call that has to try every kubeconfig still ends within
    /// `deadline` (at least 200 ms per request, at most 5 s).
    pub fn within(deadline: Duration, kubeconfigs: usize) -> KubeStoreOptions {
        let per = deadline / u32::try_from(kubeconfigs.max(1)).unwrap_or(u32::MAX);
        KubeStoreOptions {
            request_timeout: per.clamp(Duration::from_millis(200), Duration::from_secs(5)),
            ..KubeStoreOptions::default()
        }
    }
}

/// One kubeconfig and the client built from it (rebuilt after a failure, so a rotated
/// certificate in the file is picked up).
struct Target {
    path: PathBuf,
    api: Option<Api<Lease>>,
}

pub struct KubeLeaseStore {
    targets: Vec<Target>,
    active: usize,
    name: String,
    namespace: String,
    options: KubeStoreOptions,
    /// Set by the probe task when the first kubeconfig works again.
    primary_ok: Arc<AtomicBool>,
    probe: Option<tokio::task::JoinHandle<()>>,
    /// The last full object seen, so updates keep fields we do not manage (labels,
    /// annotations, acquireTime on renew).
    last: Option<Lease>,
}

impl KubeLeaseStore {
    /// No I/O happens here: kubeconfigs are read on first use, so a missing file is an
    /// unavailable lock at run time (and a `check` warning), not a start failure.
    pub fn new(lock: &KubeLock, options: KubeStoreOptions) -> KubeLeaseStore {
        KubeLeaseStore {
            targets: lock
                .kubeconfigs
                .iter()
                .map(|path| Target {
                    path: path.clone(),
                    api: None,
                })
                .collect(),
            active: 0,
            name: lock.lease_name.clone(),
            namespace: lock.namespace.clone(),
            options,
            primary_ok: Arc::new(AtomicBool::new(false)),
            probe: None,
            last: None,
        }
    }

    /// Index (in `kube_lock.kubecfgs`) of the kubeconfig in use.
    pub fn active_index(&self) -> usize {
        self.active
    }

    /// Try `op` on the active kubeconfig, then the following ones, until one answers.
    async fn run<T, F, Fut>(&mut self, what: &str, op: F) -> Result<T, LeaseError>
    where
        F: Fn(Api<Lease>) -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        if self.targets.is_empty() {
            return Err(LeaseError::Invalid("kube_lock has no kubeconfigs".into()));
        }
        if self.active != 0 && self.primary_ok.swap(false, Ordering::SeqCst) {
            tracing::info!(
                lease = %self.name, kubeconfig = %self.targets[0].path.display(),
                "first kubeconfig works again; returning to it"
            );
            self.set_active(0);
        }
        let n = self.targets.len();
        let mut failures = Vec::new();
        let mut all_denied = true;
        for step in 0..n {
            let index = (self.active + step) % n;
            let result = match self.api(index).await {
                Ok(api) => {
                    match tokio::time::timeout(self.options.request_timeout, op(api)).await {
                        Ok(Ok(value)) => Ok(value),
                        Ok(Err(e)) => Err(classify(e)),
                        Err(_) => Err(LeaseError::Unavailable(format!(
                            "no answer within {:?}",
                            self.options.request_timeout
                        ))),
                    }
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(value) => {
                    if index != self.active {
                        tracing::warn!(
                            lease = %self.name, from = %self.targets[self.active].path.display(),
                            to = %self.targets[index].path.display(), "switched kubeconfig"
                        );
                        self.set_active(index);
                    }
                    return Ok(value);
                }
                Err(e @ (LeaseError::Unavailable(_) | LeaseError::Denied(_))) => {
                    all_denied &= matches!(e, LeaseError::Denied(_));
                    tracing::debug!(
                        lease = %self.name, kubeconfig = %self.targets[index].path.display(),
                        error = %e, "{what} failed; trying the next kubeconfig"
                    );
                    // Rebuild this client next time: re-reads the file, new connections.
                    self.targets[index].api = None;
                    failures.push(format!("{}: {e}", self.targets[index].path.display()));
                }
                Err(other) => return Err(other),
            }
        }
        let message = format!(
            "{what} lease {}/{}: {}",
            self.namespace,
            self.name,
            failures.join("; ")
        );
        Err(if all_denied {
            LeaseError::Denied(message)
        } else {
            LeaseError::Unavailable(message)
        })
    }

    fn set_active(&mut self, index: usize) {
        self.active = index;
        if index == 0 {
            if let Some(probe) = self.probe.take() {
                probe.abort();
            }
        } else if self.probe.as_ref().is_none_or(|p| p.is_finished()) {
            self.primary_ok.store(false, Ordering::SeqCst);
            self.probe = Some(tokio::spawn(probe_primary(
                self.targets[0].path.clone(),
                self.namespace.clone(),
                self.name.clone(),
                self.options,
                self.primary_ok.clone(),
            )));
        }
    }

    async fn api(&mut self, index: usize) -> Result<Api<Lease>, LeaseError> {
        if let Some(api) = &self.targets[index].api {
            return Ok(api.clone());
        }
        let api = lease_api(&self.targets[index].path, &self.namespace, self.options).await?;
        self.targets[index].api = Some(api.clone());
        Ok(api)
    }

    fn remember(&mut self, lease: Lease) -> Result<LeaseRecord, LeaseError> {
        let record = record_of(&lease)?;
        self.last = Some(lease);
        Ok(record)
    }
}

impl Drop for KubeLeaseStore {
    fn drop(&mut self) {
        if let Some(probe) = self.probe.take() {
            probe.abort();
        }
    }
}

impl LeaseStore for KubeLeaseStore {
    fn retune(&mut self, lock: &LockPlan, timing: &Timing) {
        let LockPlan::Kube(lock) = lock else {
            return;
        };
        self.options = KubeStoreOptions::within(timing.renew_deadline, lock.kubeconfigs.len());
        let paths: Vec<&PathBuf> = self.targets.iter().map(|t| &t.path).collect();
        if lock.kubeconfigs.iter().collect::<Vec<_>>() != paths {
            if let Some(probe) = self.probe.take() {
                probe.abort();
            }
            self.targets = lock
                .kubeconfigs
                .iter()
                .map(|path| Target {
                    path: path.clone(),
                    api: None,
                })
                .collect();
            self.active = 0;
            self.primary_ok.store(false, Ordering::SeqCst);
        } else {
            // New timeouts: rebuild the clients at their next use.
            for target in &mut self.targets {
                target.api = None;
            }
        }
    }

    fn endpoint(&self) -> String {
        self.targets
            .get(self.active)
            .map(|t| t.path.display().to_string())
            .unwrap_or_default()
    }

    async fn get(&mut self) -> Result<Option<LeaseRecord>, LeaseError> {
        let name = self.name.clone();
        let lease = self
            .run("get", |api| {
                let name = name.clone();
                async move { api.get_opt(&name).await }
            })
            .await?;
        match lease {
            Some(lease) => self.remember(lease).map(Some),
            None => {
                self.last = None;
                Ok(None)
            }
        }
    }

    async fn create(
        &mut self,
        holder: &str,
        duration: Duration,
    ) -> Result<LeaseRecord, LeaseError> {
        let lease = new_lease(
            &self.name,
            &self.namespace,
            holder,
            duration,
            Timestamp::now(),
        );
        let created = self
            .run("create", |api| {
                let lease = lease.clone();
                async move { api.create(&PostParams::default(), &lease).await }
            })
            .await?;
        self.remember(created)
    }

    async fn update(
        &mut self,
        prev: &LeaseRecord,
        holder: Option<&str>,
        duration: Duration,
        handover: Option<HandoverNote>,
    ) -> Result<LeaseRecord, LeaseError> {
        let base = self
            .last
            .as_ref()
            .filter(|l| l.metadata.resource_version.as_deref() == Some(prev.version.as_str()));
        let mut lease = next_lease(
            base,
            &self.name,
            &self.namespace,
            prev,
            holder,
            duration,
            Timestamp::now(),
        );
        set_handover(&mut lease, handover)?;
        let name = self.name.clone();
        let updated = self
            .run("update", |api| {
                let (lease, name) = (lease.clone(), name.clone());
                async move { api.replace(&name, &PostParams::default(), &lease).await }
            })
            .await?;
        self.remember(updated)
    }
}

/// A client for one kubeconfig file, with our timeouts and without kube's own retries (a
/// retry belongs on the next kubeconfig, not the same dead one).
async fn lease_api(
    path: &std::path::Path,
    namespace: &str,
    options: KubeStoreOptions,
) -> Result<Api<Lease>, LeaseError> {
    let client = client_for(path, options.request_timeout).await?;
    Ok(Api::namespaced(client, namespace))
}

/// A kube client for `path` with every timeout set to `timeout`. Shared with
/// `check --online`.
pub(crate) async fn client_for(
    path: &std::path::Path,
    timeout: Duration,
) -> Result<kube::Client, LeaseError> {
    let unavailable =
        |e: &dyn std::fmt::Display| LeaseError::Unavailable(format!("{}: {e}", path.display()));
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| unavailable(&e))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| unavailable(&e))?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    config.reset_reader_on_write = true;
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| unavailable(&e))
}

/// While another kubeconfig is active: read the lease through the first one until that
/// works, then raise the flag and stop.
async fn probe_primary(
    path: PathBuf,
    namespace: String,
    name: String,
    options: KubeStoreOptions,
    primary_ok: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(options.probe_interval).await;
        let Ok(api) = lease_api(&path, &namespace, options).await else {
            continue;
        };
        if let Ok(Ok(_)) = tokio::time::timeout(options.request_timeout, api.get_opt(&name)).await {
            primary_ok.store(true, Ordering::SeqCst);
            return;
        }
    }
}

/// Which answers mean "try elsewhere" and which are the lock service's verdict.
fn classify(error: kube::Error) -> LeaseError {
    match error {
        kube::Error::Api(status) => match status.code {
            409 => LeaseError::Conflict,
            401 | 403 => LeaseError::Denied(format!("{} ({})", status.message, status.code)),
            400 | 404 | 405 | 415 | 422 => {
                LeaseError::Invalid(format!("{} ({})", status.message, status.code))
            }
            _ => LeaseError::Unavailable(format!("{} ({})", status.message, status.code)),
        },
        other => LeaseError::Unavailable(other.to_string()),
    }
}

/// Whole seconds, rounded up, at least 1 (the API server rejects 0).
fn duration_seconds(duration: Duration) -> i32 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

fn record_of(lease: &Lease) -> Result<LeaseRecord, LeaseError> {
    let version = lease
        .metadata
        .resource_version
        .clone()
        .ok_or_else(|| LeaseError::Invalid("lease has no resourceVersion".into()))?;
    let spec = lease.spec.as_ref();
    Ok(LeaseRecord {
        holder: spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty()),
        version,
        duration: Duration::from_secs(
            spec.and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0),
        ),
        transitions: spec
            .and_then(|s| s.lease_transitions)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(0),
        // A note someone else mangled is no note: forwarding is an optimisation.
        handover: lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(HANDOVER_ANNOTATION))
            .and_then(|text| serde_json::from_str(text).ok()),
    })
}

fn set_handover(lease: &mut Lease, note: Option<HandoverNote>) -> Result<(), LeaseError> {
    let annotations = lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    match note {
        Some(note) => {
            let text =
                serde_json::to_string(&note).map_err(|e| LeaseError::Invalid(e.to_string()))?;
            annotations.insert(HANDOVER_ANNOTATION.to_owned(), text);
        }
        None => {
            annotations.remove(HANDOVER_ANNOTATION);
        }
    }
    if annotations.is_empty() {
        lease.metadata.annotations = None;
    }
    Ok(())
}

fn new_lease(
    name: &str,
    namespace: &str,
    holder: &str,
    duration: Duration,
    now: Timestamp,
) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(duration_seconds(duration)),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

/// The object to write over `prev` (client-go's `tryAcquireOrRenew` / `release`): `base` is
/// the full object `prev` was read from, when we still have it.
fn next_lease(
    base: Option<&Lease>,
    name: &str,
    namespace: &str,
    prev: &LeaseRecord,
    holder: Option<&str>,
    duration: Duration,
    now: Timestamp,
) -> Lease {
    let mut lease = base.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    lease.metadata.resource_version = Some(prev.version.clone());
    lease.metadata.managed_fields = None;
    let old = lease.spec.take().unwrap_or_default();
    let same_holder = holder.is_some() && holder == prev.holder.as_deref();
    let transitions = match holder {
        Some(_) if !same_holder => prev.transitions.saturating_add(1),
        _ => prev.transitions,
    };
    let acquire_time = if same_holder {
        old.acquire_time.clone().or(Some(MicroTime(now)))
    } else {
        Some(MicroTime(now))
    };
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(holder.unwrap_or("").to_string()),
        lease_duration_seconds: Some(duration_seconds(duration)),
        acquire_time,
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(i32::try_from(transitions).unwrap_or(i32::MAX)),
        ..old
    });
    lease
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid timestamp")
    }

    fn record(holder: Option<&str>, transitions: u32) -> LeaseRecord {
        LeaseRecord {
            holder: holder.map(String::from),
            version: "7".into(),
            duration: Duration::from_secs(2),
            transitions,
            handover: None,
        }
    }

    fn stored(holder: &str, acquired: i64, transitions: i32) -> Lease {
        let mut lease = new_lease("l", "ns", holder, Duration::from_secs(2), at(acquired));
        lease.metadata.resource_version = Some("7".into());
        if let Some(spec) = lease.spec.as_mut() {
            spec.lease_transitions = Some(transitions);
        }
        lease
    }

    #[test]
    fn durations_round_up_to_whole_seconds_and_never_zero() {
        assert_eq!(duration_seconds(Duration::from_millis(400)), 1);
        assert_eq!(duration_seconds(Duration::from_millis(2000)), 2);
        assert_eq!(duration_seconds(Duration::from_millis(2001)), 3);
        assert_eq!(duration_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn renew_keeps_acquire_time_and_transitions_and_moves_renew_time() {
        let base = stored("lb1", 100, 4);
        let next = next_lease(
            Some(&base),
            "l",
            "ns",
            &record(Some("lb1"), 4),
            Some("lb1"),
            Duration::from_secs(2),
            at(200),
        );
        let spec = next.spec.expect("spec");
        assert_eq!(spec.acquire_time, Some(MicroTime(at(100))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(200))));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(next.metadata.resource_version.as_deref(), Some("7"));
    }

    #[test]
    fn takeover_counts_a_transition_and_resets_acquire_time() {
        let base = stored("lb1", 100, 4);
        let next = next_lease(
            Some(&base),
            "l",
            "ns",
            &record(Some("lb1"), 4),
            Some("lb2"),
            Duration::from_secs(2),
            at(200),
        );
        let spec = next.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("lb2"));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(200))));
        assert_eq!(spec.lease_transitions, Some(5));
    }

    #[test]
    fn acquiring_a_released_lease_counts_a_transition() {
        let next = next_lease(
            None,
            "l",
            "ns",
            &record(None, 4),
            Some("lb2"),
            Duration::from_secs(2),
            at(200),
        );
        assert_eq!(next.spec.expect("spec").lease_transitions, Some(5));
    }

    #[test]
    fn release_empties_the_holder_and_keeps_transitions() {
        let base = stored("lb1", 100, 4);
        let next = next_lease(
            Some(&base),
            "l",
            "ns",
            &record(Some("lb1"), 4),
            None,
            Duration::from_secs(1),
            at(200),
        );
        let spec = next.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some(""));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(
            record_of(&Lease {
                spec: Some(spec),
                ..base
            })
            .expect("record")
            .holder,
            None
        );
    }

    #[test]
    fn record_reads_holder_version_duration_and_transitions() {
        let r = record_of(&stored("lb1", 100, 3)).expect("record");
        assert_eq!(
            r,
            LeaseRecord {
                holder: Some("lb1".into()),
                version: "7".into(),
                duration: Duration::from_secs(2),
                transitions: 3,
                handover: None,
            }
        );
    }

    #[test]
    fn handover_note_goes_into_an_annotation_and_the_next_write_clears_it() {
        let mut lease = stored("lb1", 100, 3);
        let note = HandoverNote {
            vip: "192.0.2.100".parse().expect("vip"),
            address: "192.0.2.11".parse().expect("address"),
            drain: Duration::from_millis(29_500),
        };
        set_handover(&mut lease, Some(note)).expect("note written");
        assert_eq!(record_of(&lease).expect("record").handover, Some(note));
        set_handover(&mut lease, None).expect("note cleared");
        assert_eq!(record_of(&lease).expect("record").handover, None);
        assert!(lease.metadata.annotations.is_none());
    }

    #[test]
    fn options_within_a_deadline_split_it_per_kubeconfig() {
        let o = KubeStoreOptions::within(Duration::from_millis(1500), 3);
        assert_eq!(o.request_timeout, Duration::from_millis(500));
        let o = KubeStoreOptions::within(Duration::from_millis(100), 3);
        assert_eq!(o.request_timeout, Duration::from_millis(200));
    }
}
