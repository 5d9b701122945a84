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
//! Not implemented (documented so nobody relies on it): watch, label/field selectors, Table
//! output, namespaces as objects (every namespace exists), managedFields, server-side apply,
//! HTTP/2, `/openapi/v2` and `/openapi/v3` (404: run kubectl `create`/`apply`/`replace` with
//! `--validate=false`), dryRun is honoured only by not storing.
//!
//! The server runs on its own thread and tokio runtime, so sync tests, async tests and the
//! `fake_kube_api` example all use it the same way; dropping [`KubeApi`] stops it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde_json::{Value, json};

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

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            params,
            key,
        }
    }

    fn issue(&self, params: &CertificateParams) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().expect("leaf key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("leaf certificate");
        (cert, key)
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
        let server_tls = server_tls_config(&ca, &endpoints);
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
                        tokio::spawn(accept_loop(
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

fn server_tls_config(ca: &Ca, endpoints: &[Arc<Endpoint>]) -> rustls::ServerConfig {
    let mut sans = vec!["localhost".to_string(), "kubernetes".to_string()];
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    for e in endpoints {
        if !ips.contains(&e.addr.ip()) && !e.addr.ip().is_unspecified() {
            ips.push(e.addr.ip());
        }
    }
    sans.extend(ips.iter().map(|ip| ip.to_string()));
    let mut params = CertificateParams::new(sans).expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (cert, key) = ca.issue(&params);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyClientCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server TLS config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Requests a client certificate and accepts any, like the API server (Go's
/// `RequestClientCert`): the x509 authenticator judges it after the handshake, so an unknown
/// or expired certificate is a 401, not a TLS failure. The handshake signature is still
/// verified, so the client does hold the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    endpoint: Arc<Endpoint>,
    cluster: Arc<Cluster>,
) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if endpoint.faults.is_down() {
            drop(tcp);
            continue;
        }
        let acceptor = acceptor.clone();
        let endpoint = endpoint.clone();
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut down_rx = match endpoint.faults.down_tx.lock() {
                Ok(g) => match g.as_ref() {
                    Some(tx) => tx.subscribe(),
                    None => return,
                },
                Err(_) => return,
            };
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|c| c.as_ref().to_vec());
            let service_endpoint = endpoint.clone();
            let service = hyper::service::service_fn(move |req| {
                let endpoint = service_endpoint.clone();
                let cluster = cluster.clone();
                let identity = identity.clone();
                async move {
                    // A request that raced the down switch on a kept-alive connection:
                    // an error makes hyper drop the connection without an answer.
                    if endpoint.faults.is_down() {
                        return Err(std::io::Error::other("endpoint is down"));
                    }
                    Ok(handle(req, &endpoint, &cluster, identity.as_deref()).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                biased;
                _ = down_rx.wait_for(|down| *down) => {}
                _ = conn => {}
            }
        });
    }
}

type Resp = Response<Full<Bytes>>;

async fn handle(
    req: Request<Incoming>,
    endpoint: &Endpoint,
    cluster: &Cluster,
    client_cert: Option<&[u8]>,
) -> Resp {
    endpoint.requests.fetch_add(1, Ordering::SeqCst);
    let slow = endpoint.faults.slow_ms.load(Ordering::SeqCst);
    if slow > 0 {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    let forced = endpoint.faults.error_status.load(Ordering::SeqCst);
    if forced != 0 {
        let code = u16::try_from(forced).unwrap_or(500);
        let reason = match code {
            503 => "ServiceUnavailable",
            504 => "Timeout",
            429 => "TooManyRequests",
            _ => "InternalError",
        };
        return status(code, reason, "injected fault".to_string(), None);
    }
    let identity = client_cert.and_then(|der| authenticate(cluster, der));
    let Some(identity) = identity else {
        return status(401, "Unauthorized", "Unauthorized".to_string(), None);
    };
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return status(400, "BadRequest", format!("reading body: {e}"), None),
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let content_type = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let ctx = Ctx {
        cluster,
        endpoint,
        identity: &identity,
        dry_run: query.split('&').any(|kv| kv.starts_with("dryRun=")),
        strict: query.split('&').any(|kv| kv == "fieldValidation=Strict"),
    };
    route(&ctx, &parts.method, &path, &content_type, &body)
}

struct Ctx<'a> {
    cluster: &'a Cluster,
    endpoint: &'a Endpoint,
    identity: &'a Identity,
    dry_run: bool,
    /// `?fieldValidation=Strict`: unknown fields are a 400 instead of being dropped.
    strict: bool,
}

fn authenticate(cluster: &Cluster, der: &[u8]) -> Option<Identity> {
    let ids = cluster.identities.lock().ok()?;
    let id = ids.get(der)?.clone();
    (id.not_after_unix > unix_now()).then_some(id)
}

fn route(ctx: &Ctx<'_>, method: &Method, path: &str, content_type: &str, body: &[u8]) -> Resp {
    let path = path.trim_end_matches('/');
    match (method, path) {
        (&Method::GET, "/version") => ok(json!({
            "major": "1", "minor": "32", "gitVersion": "v1.32.0-alive-test",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc",
            "platform": "linux/amd64"
        })),
        (&Method::GET, "/healthz" | "/livez" | "/readyz") => Response::builder()
            .status(200)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(b"ok")))
            .unwrap_or_default(),
        (&Method::GET, "/api") => ok(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{
                "clientCIDR": "0.0.0.0/0",
                "serverAddress": ctx.endpoint.addr.to_string()
            }]
        })),
        (&Method::GET, "/api/v1") => ok(json!({
            "kind": "APIResourceList", "groupVersion": "v1",
            "resources": [{
                "name": "namespaces", "singularName": "namespace", "namespaced": false,
                "kind": "Namespace", "verbs": ["get", "list"], "shortNames": ["ns"]
            }]
        })),
        (&Method::GET, "/api/v1/namespaces") => {
            let names: std::collections::BTreeSet<String> = match ctx.cluster.leases.lock() {
                Ok(l) => l.keys().map(|(ns, _)| ns.clone()).collect(),
                Err(_) => return internal(),
            };
            ok(json!({
                "kind": "NamespaceList", "apiVersion": "v1", "metadata": {},
                "items": names.iter().map(|n| namespace_json(n)).collect::<Vec<_>>()
            }))
        }
        (&Method::GET, p)
            if p.starts_with("/api/v1/namespaces/") && p.matches('/').count() == 4 =>
        {
            // Every namespace exists here; kubectl asks after a 404 to word its message.
            ok(namespace_json(&p["/api/v1/namespaces/".len()..]))
        }
        (&Method::GET, "/openapi/v3") => ok(json!({
            "paths": {
                "apis/coordination.k8s.io/v1": {
                    "serverRelativeURL": "/openapi/v3/apis/coordination.k8s.io/v1?hash=ALIVE0"
                }
            }
        })),
        (&Method::GET, "/openapi/v3/apis/coordination.k8s.io/v1") => ok(openapi_v3_leases()),
        (&Method::GET, "/apis") => ok(json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": [group_json(GROUP), group_json("authorization.k8s.io")]
        })),
        (&Method::GET, "/apis/coordination.k8s.io") => {
            let mut g = group_json(GROUP);
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            ok(g)
        }
        (&Method::GET, "/apis/coordination.k8s.io/v1") => ok(json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "coordination.k8s.io/v1",
            "resources": [{
                "name": "leases", "singularName": "lease", "namespaced": true, "kind": "Lease",
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "storageVersionHash": "gqkMMb/YqFM="
            }]
        })),
        (&Method::GET, "/apis/authorization.k8s.io/v1") => ok(json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "authorization.k8s.io/v1",
            "resources": [{
                "name": "selfsubjectaccessreviews", "singularName": "selfsubjectaccessreview",
                "namespaced": false, "kind": "SelfSubjectAccessReview", "verbs": ["create"]
            }]
        })),
        (&Method::POST, SSAR_PATH) => {
            if content_type.starts_with("application/vnd.kubernetes.protobuf") {
                match ssar_from_protobuf(body) {
                    Some(review) => self_subject_access_review(ctx, review),
                    None => status(
                        400,
                        "BadRequest",
                        "the body of the request was in an unknown format".to_string(),
                        None,
                    ),
                }
            } else {
                match serde_json::from_slice(body) {
                    Ok(review @ Value::Object(_)) => self_subject_access_review(ctx, review),
                    _ => status(
                        400,
                        "BadRequest",
                        "the body of the request was in an unknown format".to_string(),
                        None,
                    ),
                }
            }
        }
        _ => match path.strip_prefix(LEASES_PREFIX) {
            Some(rest) => leases(ctx, method, rest, content_type, body),
            None => status(
                404,
                "NotFound",
                "the server could not find the requested resource".to_string(),
                Some(json!({})),
            ),
        },
    }
}

fn namespace_json(name: &str) -> Value {
    json!({
        "kind": "Namespace", "apiVersion": "v1",
        "metadata": {"name": name, "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
    })
}

/// Just enough OpenAPI v3 for kubectl to see that the Lease PATCH endpoint takes
/// `fieldValidation`: it then validates on the server (`?fieldValidation=Strict`) instead of
/// downloading `/openapi/v2` for client-side validation.
fn openapi_v3_leases() -> Value {
    let gvk = json!({"group": GROUP, "version": "v1", "kind": "Lease"});
    let field_validation = json!({
        "name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}
    });
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0-alive-test"},
        "paths": {
            "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}": {
                "patch": {
                    "operationId": "patchCoordinationV1NamespacedLease",
                    "parameters": [field_validation],
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk
                }
            }
        },
        "components": {"schemas": {}}
    })
}

fn group_json(name: &str) -> Value {
    json!({
        "name": name,
        "versions": [{"groupVersion": format!("{name}/v1"), "version": "v1"}],
        "preferredVersion": {"groupVersion": format!("{name}/v1"), "version": "v1"}
    })
}

/// kubectl's typed clients send SelfSubjectAccessReview as Kubernetes protobuf (`k8s\0`
/// + runtime.Unknown{raw: SelfSubjectAccessReview}); they accept a JSON answer.
fn ssar_from_protobuf(body: &[u8]) -> Option<Value> {
    let unknown = body.strip_prefix(b"k8s\0")?;
    let raw = proto_field(unknown, 2)?;
    let spec = proto_field(raw, 2)?;
    let attrs = proto_field(spec, 1)?;
    let text = |n| {
        proto_field(attrs, n)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    Some(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {
            "namespace": text(1), "verb": text(2), "group": text(3), "version": text(4),
            "resource": text(5), "subresource": text(6), "name": text(7)
        }}
    }))
}

/// The first length-delimited field `number` of a protobuf message.
fn proto_field(mut msg: &[u8], number: u64) -> Option<&[u8]> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf.split_first()?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        match key & 7 {
            0 => {
                varint(&mut msg)?;
            }
            1 => msg = msg.get(8..)?,
            5 => msg = msg.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut msg)?).ok()?;
                let value = msg.get(..len)?;
                msg = msg.get(len..)?;
                if key >> 3 == number {
                    return Some(value);
                }
            }
            _ => return None,
        }
    }
    None
}

fn self_subject_access_review(ctx: &Ctx<'_>, mut review: Value) -> Resp {
    let attrs = &review["spec"]["resourceAttributes"];
    if !attrs.is_object() {
        return invalid(
            "SelfSubjectAccessReview",
            "",
            "spec.resourceAttributes",
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        );
    }
    let verb = attrs["verb"].as_str().unwrap_or("");
    let group = attrs["group"].as_str().unwrap_or("");
    let resource = attrs["resource"].as_str().unwrap_or("");
    let namespace = attrs["namespace"].as_str().filter(|s| !s.is_empty());
    let allowed = group == GROUP
        && resource == "leases"
        && policy_allows(ctx.cluster, ctx.identity, verb, namespace);
    let reason = if allowed {
        format!("allowed by test policy for user {:?}", ctx.identity.user)
    } else {
        String::new()
    };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = if allowed {
        json!({"allowed": true, "reason": reason})
    } else {
        json!({"allowed": false})
    };
    respond(201, &review)
}

fn policy_allows(cluster: &Cluster, identity: &Identity, verb: &str, ns: Option<&str>) -> bool {
    let Ok(policy) = cluster.policy.lock() else {
        return false;
    };
    policy
        .get(&identity.user)
        .unwrap_or(&Access::All)
        .allows(verb, ns)
}

fn forbidden(identity: &Identity, verb: &str, name: Option<&str>, ns: Option<&str>) -> Resp {
    let what = match name {
        Some(n) => format!("leases.coordination.k8s.io {n:?} is forbidden"),
        None => "leases.coordination.k8s.io is forbidden".to_string(),
    };
    let scope = match ns {
        Some(ns) => format!(" in the namespace {ns:?}"),
        None => " at the cluster scope".to_string(),
    };
    status(
        403,
        "Forbidden",
        format!(
            "{what}: User {:?} cannot {verb} resource \"leases\" in API group \"coordination.k8s.io\"{scope}",
            identity.user
        ),
        Some(json!({"name": name.unwrap_or(""), "group": GROUP, "kind": "leases"})),
    )
}

/// `rest` is the path after `/apis/coordination.k8s.io/v1/`.
fn leases(ctx: &Ctx<'_>, method: &Method, rest: &str, content_type: &str, body: &[u8]) -> Resp {
    let segments: Vec<&str> = rest.split('/').collect();
    let (ns, name) = match segments.as_slice() {
        ["leases"] => (None, None),
        ["namespaces", ns, "leases"] => (Some(*ns), None),
        ["namespaces", ns, "leases", name] => (Some(*ns), Some(*name)),
        _ => {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource".to_string(),
                Some(json!({})),
            );
        }
    };
    let verb = match (method, name) {
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, None) => "create",
        (&Method::PUT, Some(_)) => "update",
        (&Method::PATCH, Some(_)) => "patch",
        (&Method::DELETE, Some(_)) => "delete",
        (&Method::DELETE, None) => "deletecollection",
        _ => {
            return status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".to_string(),
                Some(json!({})),
            );
        }
    };
    if ns.is_none() && verb != "list" {
        return status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".to_string(),
            Some(json!({})),
        );
    }
    if !policy_allows(ctx.cluster, ctx.identity, verb, ns) {
        return forbidden(ctx.identity, verb, name, ns);
    }
    let is_write = matches!(verb, "create" | "update" | "patch" | "delete");
    if is_write && ctx.endpoint.faults.take_conflict() {
        let n = name.unwrap_or("");
        return conflict(n);
    }
    match verb {
        "list" => list(ctx.cluster, ns),
        "get" => get(ctx.cluster, ns.unwrap_or(""), name.unwrap_or("")),
        "create" => create(ctx, ns.unwrap_or(""), body),
        "update" => update(ctx, ns.unwrap_or(""), name.unwrap_or(""), body),
        "patch" => patch(
            ctx,
            ns.unwrap_or(""),
            name.unwrap_or(""),
            content_type,
            body,
        ),
        "delete" => delete(ctx, ns.unwrap_or(""), name.unwrap_or(""), body),
        _ => status(
            405,
            "MethodNotAllowed",
            "deletecollection is not implemented by the test server".to_string(),
            Some(json!({})),
        ),
    }
}

fn list(cluster: &Cluster, ns: Option<&str>) -> Resp {
    let Ok(leases) = cluster.leases.lock() else {
        return internal();
    };
    let items: Vec<Value> = leases
        .iter()
        .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
        .map(|(_, v)| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            v
        })
        .collect();
    ok(json!({
        "kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
        "metadata": {"resourceVersion": cluster.resource_version.load(Ordering::SeqCst).to_string()},
        "items": items
    }))
}

fn get(cluster: &Cluster, ns: &str, name: &str) -> Resp {
    let Ok(leases) = cluster.leases.lock() else {
        return internal();
    };
    match leases.get(&(ns.to_string(), name.to_string())) {
        Some(v) => ok(v.clone()),
        None => not_found(name),
    }
}

fn create(ctx: &Ctx<'_>, ns: &str, body: &[u8]) -> Resp {
    let mut obj = match decode_lease(body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    if let Some(r) = drop_unknown_fields(&mut obj, ctx.strict) {
        return r;
    }
    if let Some(r) = check_namespace(&obj, ns) {
        return r;
    }
    let name = match obj["metadata"]["name"].as_str() {
        Some(n) => n.to_string(),
        None => match obj["metadata"]["generateName"].as_str() {
            Some(prefix) => format!(
                "{prefix}{:05x}",
                ctx.cluster.uid_counter.load(Ordering::SeqCst) & 0xfffff
            ),
            None => {
                return invalid(
                    "Lease",
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                );
            }
        },
    };
    if let Some(r) = validate(&obj, &name) {
        return r;
    }
    let Ok(mut leases) = ctx.cluster.leases.lock() else {
        return internal();
    };
    let key = (ns.to_string(), name.clone());
    if leases.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            format!("leases.coordination.k8s.io {name:?} already exists"),
            Some(json!({"name": name, "group": GROUP, "kind": "leases"})),
        );
    }
    let uid = ctx.cluster.uid_counter.fetch_add(1, Ordering::SeqCst) + 1;
    let meta = obj["metadata"].as_object_mut();
    if let Some(meta) = meta {
        meta.insert("name".into(), json!(name));
        meta.insert("namespace".into(), json!(ns));
        meta.insert(
            "uid".into(),
            json!(format!("00000000-0000-4000-8000-{uid:012x}")),
        );
        meta.insert("creationTimestamp".into(), json!(rfc3339(unix_now())));
        meta.remove("generateName");
        meta.remove("managedFields");
        meta.remove("deletionTimestamp");
    }
    obj["metadata"]["resourceVersion"] = json!(ctx.cluster.next_rv());
    if !ctx.dry_run {
        leases.insert(key, obj.clone());
    }
    respond(201, &obj)
}

fn update(ctx: &Ctx<'_>, ns: &str, name: &str, body: &[u8]) -> Resp {
    let mut obj = match decode_lease(body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    if let Some(r) = drop_unknown_fields(&mut obj, ctx.strict) {
        return r;
    }
    if let Some(r) = check_namespace(&obj, ns) {
        return r;
    }
    match obj["metadata"]["name"].as_str() {
        Some(n) if n == name => {}
        Some(n) => {
            return status(
                400,
                "BadRequest",
                format!("the name of the object ({n}) does not match the name on the URL ({name})"),
                None,
            );
        }
        None => {
            return invalid(
                "Lease",
                name,
                "metadata.name",
                "Required value: name is required",
            );
        }
    }
    if let Some(r) = validate(&obj, name) {
        return r;
    }
    let Ok(mut leases) = ctx.cluster.leases.lock() else {
        return internal();
    };
    let key = (ns.to_string(), name.to_string());
    let wanted_rv = obj["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty());
    let Some(current) = leases.get(&key) else {
        if wanted_rv.is_some() {
            return not_found(name);
        }
        // Leases allow create-on-update (the registry's AllowCreateOnUpdate).
        drop(leases);
        return create(ctx, ns, body);
    };
    if let Some(rv) = wanted_rv
        && current["metadata"]["resourceVersion"].as_str() != Some(rv)
    {
        return conflict(name);
    }
    let stored = store_update(ctx, current, obj);
    if !ctx.dry_run {
        leases.insert(key, stored.clone());
    }
    ok(stored)
}

/// Server-owned metadata survives the client's object; the resourceVersion advances.
fn store_update(ctx: &Ctx<'_>, current: &Value, mut obj: Value) -> Value {
    for field in ["uid", "creationTimestamp", "namespace", "name"] {
        obj["metadata"][field] = current["metadata"][field].clone();
    }
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.remove("managedFields");
        meta.remove("generateName");
    }
    obj["metadata"]["resourceVersion"] = json!(ctx.cluster.next_rv());
    obj["kind"] = json!("Lease");
    obj["apiVersion"] = json!("coordination.k8s.io/v1");
    obj
}

fn patch(ctx: &Ctx<'_>, ns: &str, name: &str, content_type: &str, body: &[u8]) -> Resp {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {}
        "application/json-patch+json" | "application/apply-patch+yaml" => {
            return status(
                415,
                "UnsupportedMediaType",
                format!("the test server does not implement {media}"),
                None,
            );
        }
        other => {
            return status(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                ),
                None,
            );
        }
    }
    let patch: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return status(
                400,
                "BadRequest",
                "error decoding patch: invalid JSON object".to_string(),
                None,
            );
        }
    };
    let Ok(mut leases) = ctx.cluster.leases.lock() else {
        return internal();
    };
    let key = (ns.to_string(), name.to_string());
    let Some(current) = leases.get(&key) else {
        return not_found(name);
    };
    if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
        && current["metadata"]["resourceVersion"].as_str() != Some(rv)
    {
        return conflict(name);
    }
    let mut merged = current.clone();
    merge_patch(&mut merged, &patch);
    if let Some(r) = drop_unknown_fields(&mut merged, ctx.strict) {
        return r;
    }
    if merged["metadata"]["name"].as_str() != Some(name)
        || merged["metadata"]["namespace"].as_str() != Some(ns)
    {
        return invalid(
            "Lease",
            name,
            "metadata.name",
            "Invalid value: field is immutable",
        );
    }
    if let Some(r) = validate(&merged, name) {
        return r;
    }
    let stored = store_update(ctx, current, merged);
    if !ctx.dry_run {
        leases.insert(key, stored.clone());
    }
    ok(stored)
}

fn delete(ctx: &Ctx<'_>, ns: &str, name: &str, body: &[u8]) -> Resp {
    let precondition: Option<String> = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v["preconditions"]["resourceVersion"]
            .as_str()
            .map(String::from)
    });
    let Ok(mut leases) = ctx.cluster.leases.lock() else {
        return internal();
    };
    let key = (ns.to_string(), name.to_string());
    let Some(current) = leases.get(&key) else {
        return not_found(name);
    };
    if let Some(rv) = precondition
        && current["metadata"]["resourceVersion"].as_str() != Some(rv.as_str())
    {
        return conflict(name);
    }
    let uid = current["metadata"]["uid"].clone();
    if !ctx.dry_run {
        leases.remove(&key);
        ctx.cluster.next_rv();
    }
    ok(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "group": GROUP, "kind": "leases", "uid": uid}
    }))
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(t) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn decode_lease(body: &[u8]) -> Result<Value, Box<Resp>> {
    let obj: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(status(
            400,
            "BadRequest",
            format!("the body of the request was in an unknown format: {e}"),
            None,
        ))
    })?;
    if !obj.is_object() {
        return Err(Box::new(status(
            400,
            "BadRequest",
            "the body of the request was in an unknown format".to_string(),
            None,
        )));
    }
    if let Some(kind) = obj.get("kind")
        && kind != "Lease"
    {
        return Err(Box::new(status(
            400,
            "BadRequest",
            format!("the kind {kind} is not Lease"),
            None,
        )));
    }
    if let Some(av) = obj.get("apiVersion")
        && av != "coordination.k8s.io/v1"
    {
        return Err(Box::new(status(
            400,
            "BadRequest",
            format!(
                "the API version in the data ({av}) does not match the expected API version (coordination.k8s.io/v1)"
            ),
            None,
        )));
    }
    let mut obj = obj;
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["kind"] = json!("Lease");
    obj["apiVersion"] = json!("coordination.k8s.io/v1");
    Ok(obj)
}

const LEASE_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];
const SPEC_FIELDS: &[&str] = &[
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
    "strategy",
    "preferredHolder",
];

/// Unknown fields are dropped, as the API server's decoder does; with strict field
/// validation they are a 400 naming the first one, as `kubectl` shows it.
fn drop_unknown_fields(obj: &mut Value, strict: bool) -> Option<Resp> {
    let mut unknown = Vec::new();
    prune(obj, LEASE_FIELDS, "", &mut unknown);
    prune(&mut obj["metadata"], META_FIELDS, "metadata.", &mut unknown);
    if obj["spec"].is_object() {
        prune(&mut obj["spec"], SPEC_FIELDS, "spec.", &mut unknown);
    }
    if strict && !unknown.is_empty() {
        let list: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect();
        return Some(status(
            400,
            "BadRequest",
            format!("strict decoding error: {}", list.join(", ")),
            None,
        ));
    }
    None
}

fn prune(v: &mut Value, allowed: &[&str], prefix: &str, unknown: &mut Vec<String>) {
    if let Value::Object(map) = v {
        map.retain(|k, _| {
            let known = allowed.contains(&k.as_str());
            if !known {
                unknown.push(format!("{prefix}{k}"));
            }
            known
        });
    }
}

fn check_namespace(obj: &Value, ns: &str) -> Option<Resp> {
    match obj["metadata"]["namespace"].as_str() {
        Some(n) if !n.is_empty() && n != ns => Some(status(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request"
                .to_string(),
            None,
        )),
        _ => None,
    }
}

/// The Lease validation of the real API server (ValidateLease + ObjectMeta), plus type
/// checks that the real server does while decoding (they are 400 there; 422 here is
/// close enough for a client that only checks "it failed").
fn validate(obj: &Value, name: &str) -> Option<Resp> {
    let bad = |field: &str, msg: String| Some(invalid("Lease", name, field, &msg));
    if !is_dns_subdomain(name) {
        return bad(
            "metadata.name",
            format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        );
    }
    let spec = &obj["spec"];
    if spec.is_null() {
        return None;
    }
    if !spec.is_object() {
        return bad("spec", "Invalid value: must be an object".to_string());
    }
    if let Some(h) = spec.get("holderIdentity")
        && !(h.is_string() || h.is_null())
    {
        return bad(
            "spec.holderIdentity",
            format!("Invalid value: {h}: must be a string"),
        );
    }
    if let Some(d) = spec.get("leaseDurationSeconds")
        && !d.is_null()
    {
        match d.as_i64() {
            Some(v) if v > 0 && v <= i64::from(i32::MAX) => {}
            Some(v) if v <= 0 => {
                return bad(
                    "spec.leaseDurationSeconds",
                    format!("Invalid value: {v}: must be greater than 0"),
                );
            }
            _ => {
                return bad(
                    "spec.leaseDurationSeconds",
                    format!("Invalid value: {d}: must be a 32-bit integer"),
                );
            }
        }
    }
    if let Some(t) = spec.get("leaseTransitions")
        && !t.is_null()
    {
        match t.as_i64() {
            Some(v) if (0..=i64::from(i32::MAX)).contains(&v) => {}
            _ => {
                return bad(
                    "spec.leaseTransitions",
                    format!("Invalid value: {t}: must be greater than or equal to 0"),
                );
            }
        }
    }
    for field in ["acquireTime", "renewTime"] {
        if let Some(t) = spec.get(field)
            && !t.is_null()
            && !t.as_str().is_some_and(is_rfc3339)
        {
            return bad(
                &format!("spec.{field}"),
                format!("Invalid value: {t}: must be an RFC 3339 time (MicroTime)"),
            );
        }
    }
    None
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// `2006-01-02T15:04:05[.frac](Z|±hh:mm)`.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let head = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !head {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

fn ok(v: Value) -> Resp {
    respond(200, &v)
}

fn respond(code: u16, v: &Value) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn status(code: u16, reason: &str, message: String, details: Option<Value>) -> Resp {
    let mut v = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    });
    if let Some(d) = details {
        v["details"] = d;
    }
    respond(code, &v)
}

fn not_found(name: &str) -> Resp {
    status(
        404,
        "NotFound",
        format!("leases.coordination.k8s.io {name:?} not found"),
        Some(json!({"name": name, "group": GROUP, "kind": "leases"})),
    )
}

fn conflict(name: &str) -> Resp {
    status(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on leases.coordination.k8s.io {name:?}: the object has been modified; please apply your changes to the latest version and try again"
        ),
        Some(json!({"name": name, "group": GROUP, "kind": "leases"})),
    )
}

fn invalid(kind: &str, name: &str, field: &str, message: &str) -> Resp {
    status(
        422,
        "Invalid",
        format!("{kind}.coordination.k8s.io {name:?} is invalid: {field}: {message}"),
        Some(json!({
            "name": name, "group": GROUP, "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]
        })),
    )
}

fn internal() -> Resp {
    status(
        500,
        "InternalError",
        "test server state poisoned".to_string(),
        None,
    )
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
