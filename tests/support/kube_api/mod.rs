//! An in-tree Kubernetes API server for tests: coordination.k8s.io/v1 Leases over HTTPS with
//! client-certificate authentication, as an `admin.conf` kubeconfig talks to a kubeadm cluster.
//!
//! What it owns: a CA, server certificate and client certificates (rcgen, generated per run
//! into a temp dir), kubeconfig files, one shared Lease store ("etcd") served by one or more
//! API server endpoints (so a cluster with several API servers, one kubeconfig each, can be
//! modelled), a per-user authorization policy, and fault switches per endpoint.
//!
//! Faithful to the real API server where alive-proxy and kubectl look:
//! - authentication: a client certificate issued by the cluster CA and not expired names the
//!   user (CN) and groups (O); anything else (no certificate, unknown CA, expired) is 401;
//! - authorization: per-user policy (default: everything allowed, like `kubernetes-admin`),
//!   403 with the real message otherwise, and SelfSubjectAccessReview answering by it;
//! - Leases: GET, list (namespaced and all namespaces), POST, PUT (unconditional when the
//!   body has no resourceVersion, create-on-update like the real Lease strategy), PATCH
//!   (merge patch; strategic merge treated as merge; server-side apply is 415), DELETE (with
//!   resourceVersion precondition), one monotonically increasing resourceVersion, 409 Conflict
//!   (stale resourceVersion) and 409 AlreadyExists, 404, 400 for undecodable bodies and 422
//!   for invalid ones, errors as `Status` objects;
//! - discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/coordination.k8s.io[/v1]`,
//!   `/apis/authorization.k8s.io/v1`, `/healthz`, `/livez`, `/readyz`.
//!
//! - OpenAPI: just enough `/openapi/v3` for kubectl to validate on the server
//!   (`?fieldValidation=Strict`: unknown fields are a 400 naming them, as on a real server),
//!   so kubectl `create`/`apply`/`replace` work without `--validate=false`;
//! - SelfSubjectAccessReview in JSON and in Kubernetes protobuf (kubectl `auth can-i`).
//!
//! Not implemented (documented so nobody relies on it): watch, label/field selectors, Table
//! output (kubectl falls back to NAME/AGE), namespaces as objects (every namespace exists),
//! managedFields, server-side apply and JSON patch (415), HTTP/2, protobuf for anything but
//! SelfSubjectAccessReview, `/openapi/v2` (404), deletecollection; dryRun is honoured only by
//! not storing.
//!
//! Layout: this file is the public test API (starting, kubeconfigs, faults, policy);
//! `pki.rs` the CA and TLS; `server.rs` accept, authentication, routing, discovery and errors;
//! `leases.rs` the Lease resource.
//!
//! The server runs on its own thread and tokio runtime, so sync tests, async tests and the
//! `fake_kube_api` example all use it the same way; dropping [`KubeApi`] stops it.
#![allow(dead_code)]

mod leases;
mod pki;
mod server;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose};
use serde_json::Value;

use pki::Ca;

const GROUP: &str = "coordination.k8s.io";
const LEASES_PREFIX: &str = "/apis/coordination.k8s.io/v1/";
const SSAR_PATH: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

/// What a user may do with leases (the only resource this server authorizes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every verb in every namespace (cluster-admin).
    All,
    /// Nothing: every lease request is 403.
    Nothing,
    /// These verbs (`get`, `list`, `create`, `update`, `patch`, `delete`) in these namespaces
    /// (empty = all namespaces).
    Verbs {
        verbs: Vec<String>,
        namespaces: Vec<String>,
    },
}

impl Access {
    pub fn verbs(verbs: &[&str]) -> Access {
        Access::Verbs {
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            namespaces: Vec::new(),
        }
    }

    fn allows(&self, verb: &str, namespace: Option<&str>) -> bool {
        match self {
            Access::All => true,
            Access::Nothing => false,
            Access::Verbs { verbs, namespaces } => {
                verbs.iter().any(|v| v == verb || v == "*")
                    && (namespaces.is_empty()
                        || namespace.is_some_and(|ns| namespaces.iter().any(|n| n == ns)))
            }
        }
    }
}

/// Fault switches of one API server endpoint. All take effect on the next request.
#[derive(Debug, Default)]
pub struct Faults {
    down: AtomicBool,
    slow_ms: AtomicU64,
    error_status: AtomicU32,
    conflicts: AtomicU32,
    down_tx: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
}

impl Faults {
    /// Down: close every open connection and close each new one right after accept.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if let Ok(guard) = self.down_tx.lock()
            && let Some(tx) = guard.as_ref()
        {
            tx.send_replace(down);
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Delay every response by this much (0 = off). A long delay models a hung server.
    pub fn set_slow(&self, delay: Duration) {
        self.slow_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answer every request with this status (e.g. 500, 503, 504) and a Status body;
    /// `None` = off.
    pub fn set_error_status(&self, status: Option<u16>) {
        self.error_status
            .store(status.map_or(0, u32::from), Ordering::SeqCst);
    }

    /// Answer the next `count` lease writes (POST, PUT, PATCH, DELETE) with 409 Conflict, as
    /// when other writers keep winning the race.
    pub fn conflict_next_writes(&self, count: u32) {
        self.conflicts.store(count, Ordering::SeqCst);
    }

    fn take_conflict(&self) -> bool {
        self.conflicts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// One API server endpoint of the cluster.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub faults: Faults,
    requests: AtomicU64,
}

impl Endpoint {
    /// Requests this endpoint has answered (after authentication or not), for tests that
    /// check which kubeconfig a client used.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        match self.addr.ip() {
            IpAddr::V6(ip) => format!("https://[{ip}]:{}", self.addr.port()),
            IpAddr::V4(ip) => format!("https://{ip}:{}", self.addr.port()),
        }
    }
}

/// A client certificate to issue and put in a kubeconfig.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub user: String,
    pub groups: Vec<String>,
    /// Seconds from now (negative = already expired).
    pub valid_for_secs: i64,
    /// Issued by a CA the cluster does not know (the server answers 401).
    pub foreign_ca: bool,
    /// Write the certificate and key to files and reference them (`client-certificate`,
    /// `client-key`) instead of embedding them (`*-data`).
    pub as_files: bool,
}

impl ClientSpec {
    pub fn admin() -> ClientSpec {
        ClientSpec::user("kubernetes-admin")
    }

    pub fn user(name: &str) -> ClientSpec {
        ClientSpec {
            user: name.to_string(),
            groups: vec!["system:masters".to_string()],
            valid_for_secs: 365 * 86_400,
            foreign_ca: false,
            as_files: false,
        }
    }

    pub fn expiring_in(mut self, secs: i64) -> ClientSpec {
        self.valid_for_secs = secs;
        self
    }

    pub fn foreign(mut self) -> ClientSpec {
        self.foreign_ca = true;
        self
    }

    pub fn files(mut self) -> ClientSpec {
        self.as_files = true;
        self
    }
}

#[derive(Debug, Clone)]
struct Identity {
    user: String,
    groups: Vec<String>,
    not_after_unix: i64,
}

struct Cluster {
    leases: Mutex<BTreeMap<(String, String), Value>>,
    resource_version: AtomicU64,
    uid_counter: AtomicU64,
    /// Issued client certificates (DER) → who they name. A certificate not here was not
    /// issued by this cluster's CA.
    identities: Mutex<HashMap<Vec<u8>, Identity>>,
    policy: Mutex<HashMap<String, Access>>,
}

impl Cluster {
    fn next_rv(&self) -> String {
        (self.resource_version.fetch_add(1, Ordering::SeqCst) + 1).to_string()
    }
}

/// A running test cluster: one Lease store, one or more API server endpoints.
pub struct KubeApi {
    cluster: Arc<Cluster>,
    endpoints: Vec<Arc<Endpoint>>,
    ca: Ca,
    foreign_ca: Ca,
    dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    kubeconfig_counter: AtomicU64,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How to start a [`KubeApi`].
#[derive(Debug, Clone, Default)]
pub struct KubeApiBuilder {
    binds: Vec<SocketAddr>,
    dir: Option<PathBuf>,
}

impl KubeApiBuilder {
    /// Add an endpoint bound to this address (port 0 = any free port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.binds.push(addr);
        self
    }

    /// `count` endpoints on 127.0.0.1, free ports.
    pub fn loopback_endpoints(mut self, count: usize) -> Self {
        for _ in 0..count {
            self.binds
                .push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
        }
        self
    }

    /// Write certificates and kubeconfigs here instead of a fresh temp dir.
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    pub fn start(self) -> std::io::Result<KubeApi> {
        KubeApi::start_with(self)
    }
}

impl KubeApi {
    pub fn builder() -> KubeApiBuilder {
        KubeApiBuilder::default()
    }

    /// One endpoint on 127.0.0.1.
    pub fn start() -> KubeApi {
        KubeApi::builder()
            .loopback_endpoints(1)
            .start()
            .expect("start the test Kubernetes API server")
    }

    /// `count` endpoints on 127.0.0.1 sharing one Lease store.
    pub fn start_endpoints(count: usize) -> KubeApi {
        KubeApi::builder()
            .loopback_endpoints(count)
            .start()
            .expect("start the test Kubernetes API server")
    }

    fn start_with(builder: KubeApiBuilder) -> std::io::Result<KubeApi> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (tempdir, dir) = match builder.dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir)?;
                (None, dir)
            }
            None => {
                let t = tempfile::tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let binds = if builder.binds.is_empty() {
            vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)]
        } else {
            builder.binds
        };
        let mut listeners = Vec::new();
        for bind in &binds {
            let l = std::net::TcpListener::bind(bind)?;
            l.set_nonblocking(true)?;
            listeners.push(l);
        }
        let mut endpoints = Vec::new();
        for l in &listeners {
            endpoints.push(Arc::new(Endpoint {
                addr: l.local_addr()?,
                faults: Faults::default(),
                requests: AtomicU64::new(0),
            }));
        }

        let ca = Ca::new("kubernetes");
        let foreign_ca = Ca::new("someone-else");
        std::fs::write(dir.join("ca.crt"), &ca.pem)?;
        let server_tls = pki::server_tls_config(&ca, &endpoints);
        let cluster = Arc::new(Cluster {
            leases: Mutex::new(BTreeMap::new()),
            resource_version: AtomicU64::new(1000),
            uid_counter: AtomicU64::new(0),
            identities: Mutex::new(HashMap::new()),
            policy: Mutex::new(HashMap::new()),
        });

        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let thread_cluster = cluster.clone();
        let thread_endpoints = endpoints.clone();
        let thread = std::thread::Builder::new()
            .name("kube-api".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("kube-api runtime");
                rt.block_on(async move {
                    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));
                    for (listener, endpoint) in listeners.into_iter().zip(thread_endpoints) {
                        let listener =
                            tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                        let (tx, _) = tokio::sync::watch::channel(endpoint.faults.is_down());
                        if let Ok(mut slot) = endpoint.faults.down_tx.lock() {
                            *slot = Some(tx);
                        }
                        tokio::spawn(server::accept_loop(
                            listener,
                            acceptor.clone(),
                            endpoint,
                            thread_cluster.clone(),
                        ));
                    }
                    let _ = shutdown_rx.await;
                });
            })?;

        Ok(KubeApi {
            cluster,
            endpoints,
            ca,
            foreign_ca,
            dir,
            _tempdir: tempdir,
            kubeconfig_counter: AtomicU64::new(0),
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    pub fn endpoint(&self, index: usize) -> &Endpoint {
        &self.endpoints[index]
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    pub fn faults(&self, index: usize) -> &Faults {
        &self.endpoints[index].faults
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca.pem
    }

    /// Set what `user` may do (default for users without a policy: [`Access::All`]).
    pub fn set_access(&self, user: &str, access: Access) {
        if let Ok(mut p) = self.cluster.policy.lock() {
            p.insert(user.to_string(), access);
        }
    }

    /// The stored lease as the server would return it, if any.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        let leases = self.cluster.leases.lock().ok()?;
        leases
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The current (highest handed out) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.cluster.resource_version.load(Ordering::SeqCst)
    }

    /// Write an admin kubeconfig for endpoint `index`.
    pub fn admin_kubeconfig(&self, index: usize) -> PathBuf {
        self.kubeconfig(index, &ClientSpec::admin())
    }

    /// Issue a client certificate per `spec` and write a kubeconfig (admin.conf style) that
    /// points at endpoint `index`.
    pub fn kubeconfig(&self, index: usize, spec: &ClientSpec) -> PathBuf {
        let server = self.endpoints[index].url();
        self.kubeconfig_for_server(&server, spec)
    }

    /// Like [`KubeApi::kubeconfig`] with any server URL (e.g. an address nothing listens on).
    pub fn kubeconfig_for_server(&self, server: &str, spec: &ClientSpec) -> PathBuf {
        let n = self.kubeconfig_counter.fetch_add(1, Ordering::SeqCst);
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params
            .distinguished_name
            .push(DnType::CommonName, &spec.user);
        for g in &spec.groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, g.as_str());
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = unix_now();
        let not_after = now + spec.valid_for_secs;
        let not_before = (now - 3600).min(not_after - 60);
        params.not_before = rcgen::date_time_ymd(1970, 1, 1)
            + Duration::from_secs(u64::try_from(not_before).unwrap_or(0));
        params.not_after = rcgen::date_time_ymd(1970, 1, 1)
            + Duration::from_secs(u64::try_from(not_after).unwrap_or(0));
        let ca = if spec.foreign_ca {
            &self.foreign_ca
        } else {
            &self.ca
        };
        let (cert, key) = ca.issue(&params);
        if !spec.foreign_ca
            && let Ok(mut ids) = self.cluster.identities.lock()
        {
            ids.insert(
                cert.der().to_vec(),
                Identity {
                    user: spec.user.clone(),
                    groups: spec.groups.clone(),
                    not_after_unix: not_after,
                },
            );
        }
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let user_block = if spec.as_files {
            let crt = self.dir.join(format!("client-{n}.crt"));
            let key_path = self.dir.join(format!("client-{n}.key"));
            std::fs::write(&crt, cert.pem()).expect("write client certificate");
            std::fs::write(&key_path, key.serialize_pem()).expect("write client key");
            format!(
                "    client-certificate: {}\n    client-key: {}\n",
                crt.display(),
                key_path.display()
            )
        } else {
            format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&cert.pem()),
                b64(&key.serialize_pem())
            )
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\npreferences: {{}}\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: {user}\n  name: {user}@kubernetes\ncurrent-context: {user}@kubernetes\nusers:\n- name: {user}\n  user:\n{user_block}",
            ca = b64(&self.ca.pem),
            user = spec.user,
        );
        let path = self.dir.join(format!("kubeconfig-{n}-{}.conf", spec.user));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
