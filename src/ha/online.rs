//! `alive-proxy check --online`: tries every kubeconfig of every `kube_lock` the way the lock
//! will use it, replacing the seed's "copy kubectl to the LB host and run get node" step.
//!
//! For each kubeconfig: the API server is reachable and its TLS certificate verifies against
//! the kubeconfig's CA (`GET /version`, which also proves the client certificate is
//! accepted), this user may `get`, `create` and `update` the instance's Lease
//! (SelfSubjectAccessReview, so nothing is written), and when the client certificate
//! expires. All kubeconfigs are checked concurrently, each bounded by [`CHECK_TIMEOUT`].

use std::error::Error as _;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;

#[path = "kubeconfig.rs"]
pub mod kubeconfig;

use self::kubeconfig::{ClientCert, Expiry};
use super::lease::LeaseError;
use super::lease::kube::client_for;
use crate::config::plan::{KubeLock, LockPlan, Plan};

/// Bound on each request of the check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The lease verbs the lock needs.
pub const LEASE_VERBS: [&str; 3] = ["get", "create", "update"];

/// What `check --online` found for one kubeconfig of one instance (`Serialize` for
/// `check --online --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KubeconfigReport {
    pub instance: String,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub lease_name: String,
    /// `server` of the current context's cluster, if the file could be read.
    pub server: Option<String>,
    /// The API server answered over verified TLS and accepted the client: its version.
    pub connection: Result<String, ConnectionError>,
    /// Per verb of [`LEASE_VERBS`]: allowed, or why not (empty when not connected).
    pub permissions: Vec<(String, Result<(), String>)>,
    /// The client certificate, `None` when the kubeconfig uses none.
    pub certificate: Result<Option<ClientCert>, String>,
    /// When this report was made (to judge certificate expiry).
    pub checked_at: SystemTime,
}

/// Why the API server could not be used, by the layer that failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "layer", content = "error", rename_all = "snake_case")]
pub enum ConnectionError {
    /// The kubeconfig file cannot be read or used.
    Kubeconfig(String),
    /// TCP connect failed, refused, or timed out.
    Unreachable(String),
    /// TLS handshake failed (server certificate not trusted, wrong name, ...).
    Tls(String),
    /// Connected, but the API server refused the credentials (401) or answered an error.
    Refused(String),
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Kubeconfig(e) => write!(f, "kubeconfig unusable: {e}"),
            ConnectionError::Unreachable(e) => write!(f, "unreachable: {e}"),
            ConnectionError::Tls(e) => write!(f, "TLS failed: {e}"),
            ConnectionError::Refused(e) => write!(f, "refused: {e}"),
        }
    }
}

impl KubeconfigReport {
    /// Usable for the lock: connected, every lease verb allowed, certificate not expired.
    pub fn ok(&self) -> bool {
        self.connection.is_ok()
            && self.permissions.len() == LEASE_VERBS.len()
            && self.permissions.iter().all(|(_, p)| p.is_ok())
            && !matches!(self.expiry(), Some(Expiry::Expired { .. }))
    }

    /// Expires within [`kubeconfig::WARN_BEFORE`] (or has expired).
    pub fn expiring(&self) -> bool {
        matches!(
            self.expiry(),
            Some(Expiry::Soon { .. } | Expiry::Expired { .. })
        )
    }

    pub fn expiry(&self) -> Option<Expiry> {
        match &self.certificate {
            Ok(Some(cert)) => Some(Expiry::at(cert.not_after, self.checked_at)),
            _ => None,
        }
    }
}

impl fmt::Display for KubeconfigReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok() { "ok" } else { "FAILED" };
        write!(
            f,
            "{verdict}: instance {} kubeconfig {}",
            self.instance,
            self.kubeconfig.display()
        )?;
        if let Some(server) = &self.server {
            write!(f, " ({server})")?;
        }
        writeln!(f)?;
        match &self.connection {
            Ok(version) => writeln!(
                f,
                "  connection: ok (TLS verified, client accepted, server {version})"
            )?,
            Err(e) => writeln!(f, "  connection: FAILED: {e}")?,
        }
        if !self.permissions.is_empty() {
            let verbs: Vec<String> = self
                .permissions
                .iter()
                .map(|(verb, p)| match p {
                    Ok(()) => format!("{verb} ok"),
                    Err(why) => format!("{verb} DENIED ({why})"),
                })
                .collect();
            writeln!(
                f,
                "  lease {}/{}: {}",
                self.namespace,
                self.lease_name,
                verbs.join(", ")
            )?;
        }
        match &self.certificate {
            Ok(Some(cert)) => {
                let expiry = Expiry::at(cert.not_after, self.checked_at);
                writeln!(
                    f,
                    "  client certificate {} ({}): expires {}, {expiry}",
                    cert.user,
                    cert.subject,
                    kubeconfig::httpdate(cert.not_after)
                )
            }
            Ok(None) => writeln!(f, "  client certificate: none (other authentication)"),
            Err(e) => writeln!(f, "  client certificate: FAILED: {e}"),
        }
    }
}

/// Check every kubeconfig of every instance with a `kube_lock`.
pub async fn check(plan: &Plan) -> Vec<KubeconfigReport> {
    let mut checks = Vec::new();
    for instance in &plan.instances {
        if let LockPlan::Kube(lock) = &instance.lock {
            for kubeconfig in &lock.kubeconfigs {
                checks.push(check_one(&instance.name, lock, kubeconfig));
            }
        }
    }
    futures::future::join_all(checks).await
}

/// [`check`] for callers without a runtime (the CLI). Must not be called from inside a tokio
/// runtime.
pub fn check_blocking(plan: &Plan) -> std::io::Result<Vec<KubeconfigReport>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(check(plan)))
}

async fn check_one(instance: &str, lock: &KubeLock, path: &Path) -> KubeconfigReport {
    let mut report = KubeconfigReport {
        instance: instance.to_string(),
        kubeconfig: path.to_path_buf(),
        namespace: lock.namespace.clone(),
        lease_name: lock.lease_name.clone(),
        server: server_of(path),
        connection: Err(ConnectionError::Kubeconfig("not checked".into())),
        permissions: Vec::new(),
        certificate: kubeconfig::client_cert(path).map_err(|e| e.to_string()),
        checked_at: SystemTime::now(),
    };
    let client = match client_for(path, CHECK_TIMEOUT).await {
        Ok(client) => client,
        Err(LeaseError::Unavailable(e) | LeaseError::Invalid(e) | LeaseError::Denied(e)) => {
            report.connection = Err(ConnectionError::Kubeconfig(e));
            return report;
        }
        Err(LeaseError::Conflict) => {
            report.connection = Err(ConnectionError::Kubeconfig("unexpected conflict".into()));
            return report;
        }
    };
    report.connection = match tokio::time::timeout(CHECK_TIMEOUT, client.apiserver_version()).await
    {
        Ok(Ok(info)) => Ok(info.git_version),
        Ok(Err(e)) => Err(connection_error(&e)),
        Err(_) => Err(ConnectionError::Unreachable(format!(
            "no answer within {CHECK_TIMEOUT:?}"
        ))),
    };
    if report.connection.is_err() {
        return report;
    }
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
    for verb in LEASE_VERBS {
        let allowed = may(&reviews, lock, verb).await;
        report.permissions.push((verb.to_string(), allowed));
    }
    report
}

/// One SelfSubjectAccessReview: may this user `verb` the instance's Lease?
async fn may(
    reviews: &Api<SelfSubjectAccessReview>,
    lock: &KubeLock,
    verb: &str,
) -> Result<(), String> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some("coordination.k8s.io".into()),
                version: Some("v1".into()),
                resource: Some("leases".into()),
                namespace: Some(lock.namespace.clone()),
                // `create` cannot be limited to a name in RBAC; asking with one would
                // understate what a name-restricted role grants for get/update.
                name: (verb != "create").then(|| lock.lease_name.clone()),
                verb: Some(verb.into()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = tokio::time::timeout(
        CHECK_TIMEOUT,
        reviews.create(&PostParams::default(), &review),
    )
    .await
    .map_err(|_| format!("no answer within {CHECK_TIMEOUT:?}"))?
    .map_err(|e| format!("review failed: {e}"))?;
    match answer.status {
        Some(status) if status.allowed => Ok(()),
        Some(status) => Err(status
            .reason
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "not allowed".into())),
        None => Err("the API server returned no review status".into()),
    }
}

fn server_of(path: &Path) -> Option<String> {
    let kubeconfig = Kubeconfig::read_from(path).ok()?;
    let context_name = kubeconfig.current_context.as_deref()?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)?
        .context
        .as_ref()?;
    kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)?
        .cluster
        .as_ref()?
        .server
        .clone()
}

/// Sort a client error into the layer that failed, by walking its causes.
fn connection_error(error: &kube::Error) -> ConnectionError {
    if let kube::Error::Api(status) = error {
        return ConnectionError::Refused(format!("{} ({})", status.message, status.code));
    }
    let mut chain = vec![error.to_string()];
    let mut tls = false;
    let mut source = error.source();
    while let Some(cause) = source {
        tls |= cause.downcast_ref::<rustls::Error>().is_some();
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            tls |= io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
        }
        let text = cause.to_string();
        // hyper-util's connector may hand rustls' error on as text only.
        tls |= text.contains("peer certificate") || text.contains("handshake");
        if chain.last() != Some(&text) {
            chain.push(text);
        }
        source = cause.source();
    }
    let text = chain.join(": ");
    if tls {
        ConnectionError::Tls(text)
    } else {
        ConnectionError::Unreachable(text)
    }
}
