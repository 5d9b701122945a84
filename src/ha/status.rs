//! What HA tells the rest of the process: each instance's ownership ([`VipView`]) and every
//! control-loop failure ([`HaFailure`]), reported upward through [`HaObserver`] so this
//! module never depends on stats (stats implements the trait).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::online::kubeconfig::check_and_warn;
use crate::config::BackendKey;

/// How often kubeconfig client certificates are re-read for their expiry (and warned
/// about): a rotated certificate shows up within this.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

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
    /// The VIP should be gone from this host but removing it keeps failing: the lease is
    /// kept (or never released) until it is, and `/readyz` fails.
    #[serde(default)]
    pub removal_pending: bool,
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
            removal_pending: false,
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

/// A BGP-mode instance: the VIP's route and the routing daemon's sessions (BGP only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BgpView {
    /// The kernel table the route goes in (BIRD's `kernel` protocol learns it from there).
    pub table: u32,
    /// The VIP's route is in the table: BIRD announces this host for the VIP.
    pub announced: bool,
    /// Why the route is (not) there: `serving`, `no quorum on ...`, `hold-down`, `stopping`.
    pub reason: String,
    /// When `announced` last changed.
    pub since: SystemTime,
    /// Announce/withdraw changes since start.
    pub changes: u64,
    /// BIRD's greeting (`BIRD 2.0.12 ready.`) while its control socket answers.
    pub daemon: Option<String>,
    /// Why the control socket did not answer, when it did not.
    pub daemon_error: Option<String>,
    /// Whether BIRD has the VIP's route in its tables (`None`: not asked yet / no answer).
    pub in_daemon: Option<bool>,
    /// BIRD's BGP protocols (the configured ones, or all).
    pub sessions: Vec<BgpSession>,
}

/// One BGP protocol as `birdc show protocols` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpSession {
    pub name: String,
    /// BIRD's protocol state: `up`, `start`, `down`, ...
    pub state: String,
    /// Since when, as BIRD prints it.
    pub since: String,
    /// BGP state and last error, e.g. `Established` or `Active  Socket: Connection refused`.
    pub info: String,
}

impl BgpSession {
    pub fn established(&self) -> bool {
        self.info.starts_with("Established")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertExpiry {
    pub kubeconfig: PathBuf,
    /// `None` when the kubeconfig has no client certificate (token auth) or could not be read.
    pub not_after: Option<SystemTime>,
    pub error: Option<String>,
}

/// A control-loop failure, one label value each in `alive_proxy_ha_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HaFailure {
    /// Reading the lease record failed (unavailable, denied, invalid, timed out).
    LeaseRead,
    /// Creating, renewing, taking over or releasing the lease failed (not a lost race).
    LeaseWrite,
    /// The holder could not renew within its deadline and dropped the VIP.
    DeadlineMissed,
    /// Adding the VIP to its interface failed.
    VipAdd,
    /// Removing the VIP failed (retried until it succeeds).
    VipRemove,
    /// Checking that a held VIP is still present failed.
    VipCheck,
    /// Opening the announcement sockets or sending an announcement failed.
    Announce,
    /// Another MAC claimed a VIP this host holds (ARP or NA).
    Conflict,
    /// Installing or removing the handover forwarding rules failed.
    Forward,
    /// Preparing the VIP for a session-preserving handover failed (the sessions are cut).
    Park,
    /// BGP mode: adding the VIP's route to its kernel table failed.
    RouteAdd,
    /// BGP mode: removing the VIP's route failed (retried until it succeeds).
    RouteRemove,
    /// BGP mode: the routing daemon's control socket did not answer.
    Daemon,
    /// A failsafe peer message was dropped (malformed, unauthenticated, replayed, from a
    /// host not in `peer`, or answering no open round).
    PeerMessage,
    /// Sending a failsafe peer message failed.
    PeerSend,
    /// The failsafe stopped extending the holder's hold (a peer reaches the lock, holds the
    /// VIP, or stopped answering).
    FailsafeEnded,
}

impl HaFailure {
    pub const ALL: [HaFailure; 16] = [
        HaFailure::LeaseRead,
        HaFailure::LeaseWrite,
        HaFailure::DeadlineMissed,
        HaFailure::VipAdd,
        HaFailure::VipRemove,
        HaFailure::VipCheck,
        HaFailure::Announce,
        HaFailure::Conflict,
        HaFailure::Forward,
        HaFailure::Park,
        HaFailure::RouteAdd,
        HaFailure::RouteRemove,
        HaFailure::Daemon,
        HaFailure::PeerMessage,
        HaFailure::PeerSend,
        HaFailure::FailsafeEnded,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HaFailure::LeaseRead => "lease_read",
            HaFailure::LeaseWrite => "lease_write",
            HaFailure::DeadlineMissed => "deadline_missed",
            HaFailure::VipAdd => "vip_add",
            HaFailure::VipRemove => "vip_remove",
            HaFailure::VipCheck => "vip_check",
            HaFailure::Announce => "announce",
            HaFailure::Conflict => "conflict",
            HaFailure::Forward => "forward",
            HaFailure::Park => "park",
            HaFailure::RouteAdd => "route_add",
            HaFailure::RouteRemove => "route_remove",
            HaFailure::Daemon => "daemon",
            HaFailure::PeerMessage => "peer_message",
            HaFailure::PeerSend => "peer_send",
            HaFailure::FailsafeEnded => "failsafe_ended",
        }
    }
}

/// HA's window on the rest of the process: where it reports to, and what it may ask of
/// it. Implemented by the stats control state (which health also reports into); tests
/// use their own.
pub trait HaObserver: Send + Sync + 'static {
    /// The instance's current ownership (replaces the previous report).
    fn vip_state(&self, instance: &str, view: VipView);
    /// A VRRP instance's protocol state and counters (replaces the previous report).
    fn vrrp_state(&self, _instance: &str, _view: VrrpView) {}
    /// One occurrence of `failure` (already logged by the caller).
    fn failure(&self, instance: &str, failure: HaFailure);
    /// Whether health reports any of `backends` up: `Some(false)` only when it reported on
    /// them and none is up; `None` before any report (no information is no failure).
    fn backends_up(&self, _backends: &[BackendKey]) -> Option<bool> {
        None
    }
    /// A BGP instance's route and sessions (replaces the previous report).
    fn bgp_state(&self, _instance: &str, _view: BgpView) {}
    /// Whether health reports quorum on every service of `instance` (as the plan in force
    /// lists them, so a reload that adds a port counts it at once): `Some(false)` when one
    /// reported without it, `None` when none reported yet.
    fn instance_quorum(&self, _instance: &str) -> Option<bool> {
        None
    }
    /// Changes whenever health reports a backend or a quorum, so BGP mode reacts at once
    /// instead of at its next poll. `None`: no such signal (then polling alone).
    fn health_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// An observer that drops everything: tools and tests that run HA without stats.
#[derive(Debug, Default)]
pub struct NoObserver;

impl HaObserver for NoObserver {
    fn vip_state(&self, _: &str, _: VipView) {}
    fn failure(&self, _: &str, _: HaFailure) {}
}

/// One instance's handle on the observer, for the parts (keeper, announcer, forwarder) that
/// only count failures.
#[derive(Clone)]
pub struct Alarm {
    instance: Arc<str>,
    observer: Arc<dyn HaObserver>,
}

impl Alarm {
    pub fn new(instance: &str, observer: Arc<dyn HaObserver>) -> Alarm {
        Alarm {
            instance: instance.into(),
            observer,
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn raise(&self, failure: HaFailure) {
        self.observer.failure(&self.instance, failure);
    }
}

/// Publishes an instance's ownership: keeps `since` and the transition count, and sends a
/// report only when something changed.
pub struct StatusReporter {
    instance: String,
    observer: Arc<dyn HaObserver>,
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

/// One report: what the driver knows now.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub holder: Option<String>,
    pub endpoint: Option<String>,
    pub last_error: Option<String>,
    pub removal_pending: bool,
}

impl StatusReporter {
    pub fn new(instance: String, observer: Arc<dyn HaObserver>) -> StatusReporter {
        StatusReporter {
            instance,
            observer,
            role: VipRole::Init,
            since: SystemTime::now(),
            transitions: 0,
            last: None,
            certificates: None,
        }
    }

    pub fn alarm(&self) -> Alarm {
        Alarm::new(&self.instance, Arc::clone(&self.observer))
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

    pub fn publish(&mut self, role: VipRole, report: Report) {
        if role != self.role {
            self.role = role;
            self.since = SystemTime::now();
            self.transitions += 1;
        }
        let view = VipView {
            holder: report.holder,
            role,
            since: self.since,
            transitions: self.transitions,
            lock_endpoint: report.endpoint,
            cert_expiry: self.cert_expiry(),
            last_error: report.last_error,
            removal_pending: report.removal_pending,
        };
        if self.last.as_ref() != Some(&view) {
            self.observer.vip_state(&self.instance, view.clone());
            self.last = Some(view);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        views: Mutex<Vec<VipView>>,
    }

    impl HaObserver for Recorder {
        fn vip_state(&self, _: &str, view: VipView) {
            self.views
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(view);
        }
        fn failure(&self, _: &str, _: HaFailure) {}
    }

    fn last(recorder: &Recorder) -> VipView {
        recorder
            .views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
            .expect("a view was published")
    }

    fn report(holder: &str) -> Report {
        Report {
            holder: Some(holder.into()),
            endpoint: Some("etcd".into()),
            ..Report::default()
        }
    }

    #[test]
    fn status_counts_role_changes_and_keeps_since_on_repeats() {
        let recorder = Arc::new(Recorder::default());
        let mut status = StatusReporter::new("vip-1".into(), recorder.clone());
        status.publish(VipRole::Backup, report("lb2"));
        let first = last(&recorder);
        assert_eq!(first.role, VipRole::Backup);
        assert_eq!(first.holder.as_deref(), Some("lb2"));
        assert_eq!(first.transitions, 1, "Init -> Backup is one change");
        status.publish(VipRole::Backup, report("lb2"));
        assert_eq!(
            recorder.views.lock().map(|v| v.len()).unwrap_or(0),
            1,
            "an unchanged view is not published again"
        );
        status.publish(VipRole::Master, report("lb1"));
        let now = last(&recorder);
        assert_eq!(now.role, VipRole::Master);
        assert_eq!(now.transitions, 2);
    }

    #[test]
    fn status_carries_each_kubeconfig_certificate_expiry() {
        let recorder = Arc::new(Recorder::default());
        let mut status = StatusReporter::new("vip-1".into(), recorder.clone());
        let missing = PathBuf::from("/nonexistent/kubecfg01.conf");
        status.watch_certificates(vec![missing.clone()]);
        status.publish(VipRole::Backup, Report::default());
        let view = last(&recorder);
        assert_eq!(view.cert_expiry.len(), 1, "{:?}", view.cert_expiry);
        assert_eq!(view.cert_expiry[0].kubeconfig, missing);
        assert!(
            view.cert_expiry[0].error.is_some(),
            "an unreadable kubeconfig must report why"
        );
    }

    #[test]
    fn status_shows_the_last_lock_error_and_a_pending_removal() {
        let recorder = Arc::new(Recorder::default());
        let mut status = StatusReporter::new("vip-1".into(), recorder.clone());
        status.publish(
            VipRole::Fault,
            Report {
                last_error: Some("timed out".into()),
                removal_pending: true,
                ..Report::default()
            },
        );
        let view = last(&recorder);
        assert_eq!(view.role, VipRole::Fault);
        assert_eq!(view.last_error.as_deref(), Some("timed out"));
        assert!(view.removal_pending);
    }
}
