//! Health-test machinery: a recording `HealthSink`, plan builders (tests build `Plan`s
//! directly, not through the YAML parser), and small loopback servers that play a backend's
//! health endpoint (TCP, HTTP, HTTPS with a self-signed certificate).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alive_proxy::config::{
    AdminPlan, Backend, BackendKey, Check, CheckKind, HttpCheck, Instance, LockPlan, MiscCheck,
    OnBackendDown, Plan, ProxyProtocol, Scheduler, Service, TcpCheck, UrlCheck,
};
use alive_proxy::health::{BackendStatus, HealthSink};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------- recording sink

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkEvent {
    Backend {
        at: Instant,
        key: BackendKey,
        status: BackendStatus,
    },
    Sorry {
        at: Instant,
        service: SocketAddr,
        active: bool,
    },
}

/// Records every call health makes, with the time it was made.
#[derive(Debug, Default)]
pub struct RecordingSink {
    events: Mutex<Vec<SinkEvent>>,
}

impl HealthSink for RecordingSink {
    fn backend_changed(&self, key: BackendKey, status: BackendStatus) {
        self.events.lock().unwrap().push(SinkEvent::Backend {
            at: Instant::now(),
            key,
            status,
        });
    }

    fn sorry_active(&self, service: SocketAddr, active: bool) {
        self.events.lock().unwrap().push(SinkEvent::Sorry {
            at: Instant::now(),
            service,
            active,
        });
    }
}

impl RecordingSink {
    pub fn new() -> Arc<RecordingSink> {
        Arc::new(RecordingSink::default())
    }

    pub fn events(&self) -> Vec<SinkEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Every `backend_changed` call for `key`, in order.
    pub fn backend_calls(&self, key: BackendKey) -> Vec<(Instant, BackendStatus)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                SinkEvent::Backend { at, key: k, status } if k == key => Some((at, status)),
                _ => None,
            })
            .collect()
    }

    /// The last status reported for `key`.
    pub fn status(&self, key: BackendKey) -> Option<BackendStatus> {
        self.backend_calls(key).last().map(|(_, s)| *s)
    }

    /// The first time after `since` that `key` was reported with `status`.
    pub fn reported_at(
        &self,
        key: BackendKey,
        status: BackendStatus,
        since: Instant,
    ) -> Option<Instant> {
        self.backend_calls(key)
            .into_iter()
            .find(|(at, s)| *at >= since && *s == status)
            .map(|(at, _)| at)
    }

    /// Every `sorry_active` value reported for `service`, in order.
    pub fn sorry_calls(&self, service: SocketAddr) -> Vec<bool> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                SinkEvent::Sorry {
                    service: s, active, ..
                } if s == service => Some(active),
                _ => None,
            })
            .collect()
    }
}

/// Polls `condition` every 10 ms (without blocking the runtime) until it holds; panics
/// with `what` and `context()` after `timeout`.
pub async fn eventually(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; {}",
                context()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- plan builders

pub fn vip_port(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), port)
}

pub fn plan(services: Vec<Service>) -> Plan {
    Plan {
        source: PathBuf::from("test.yaml"),
        instances: vec![Instance {
            name: "vip-test".into(),
            vip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            id: Some(20),
            interface: "lo".into(),
            check_interval: Duration::from_secs(1),
            check_timeout: Duration::from_secs(3),
            peers: vec![],
            lock: LockPlan::None,
            failsafe: None,
            services,
        }],
        admin: AdminPlan {
            socket: PathBuf::from("/nonexistent/admin.sock"),
            http: None,
        },
        identity: None,
    }
}

pub fn service(listen: SocketAddr, backends: Vec<Backend>) -> Service {
    Service {
        vip: listen.ip(),
        port: listen.port(),
        scheduler: Scheduler::Rr,
        persistence: None,
        quorum: 1,
        hysteresis: 0,
        sorry_server: None,
        backends,
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(900),
        client_fin_timeout: Duration::from_secs(120),
        server_fin_timeout: Duration::from_secs(120),
        proxy_protocol: ProxyProtocol::Off,
        transparent: false,
        max_connections: 0,
        on_backend_down: OnBackendDown::Close,
        connect_attempts: 3,
    }
}

pub fn backend(addr: SocketAddr, checks: Vec<Check>) -> Backend {
    Backend {
        addr,
        weight: 1,
        inhibit_on_failure: false,
        upper_threshold: 0,
        lower_threshold: 0,
        alpha: false,
        checks,
    }
}

/// Timings of a check, chosen per test.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub interval: Duration,
    pub connect_timeout: Duration,
    pub retry: u32,
    pub delay_before_retry: Duration,
}

impl Timing {
    /// Fast enough for tests, slow enough to be meaningful on a loaded 2-core box.
    pub fn quick() -> Timing {
        Timing {
            interval: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(500),
            retry: 0,
            delay_before_retry: Duration::from_millis(200),
        }
    }
}

pub fn check(kind: CheckKind, timing: Timing) -> Check {
    Check {
        kind,
        interval: timing.interval,
        connect_timeout: timing.connect_timeout,
        retry: timing.retry,
        delay_before_retry: timing.delay_before_retry,
        warmup: Duration::ZERO,
        origin: "test.yaml:1:1".into(),
    }
}

pub fn tcp(connect: SocketAddr) -> CheckKind {
    CheckKind::Tcp(TcpCheck {
        connect,
        bind: None,
    })
}

pub fn url(path: &str, status: Vec<(u16, u16)>, digest: Option<&str>) -> UrlCheck {
    UrlCheck {
        path: path.into(),
        status,
        digest: digest.map(Into::into),
        virtualhost: None,
    }
}

pub fn http(connect: SocketAddr, urls: Vec<UrlCheck>) -> HttpCheck {
    HttpCheck {
        connect,
        bind: None,
        urls,
        virtualhost: None,
        http_protocol: "1.0".into(),
    }
}

pub fn misc(argv: &[&str], timeout: Duration, dynamic: bool) -> CheckKind {
    CheckKind::Misc(MiscCheck {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout,
        dynamic,
        user: None,
    })
}

pub fn key(service: SocketAddr, backend: SocketAddr) -> BackendKey {
    BackendKey { service, backend }
}

pub fn up(weight: u32) -> BackendStatus {
    BackendStatus::Up { weight }
}

/// A backend address nothing listens on (the traffic port, never probed by these tests).
pub fn traffic_addr(n: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 40000 + n)
}

// ---------------------------------------------------------------- TCP health endpoint

/// A port that accepts and closes connections, counting them; `stop` closes the listener
/// (connects are then refused), `start` opens it again on the same port.
pub struct TcpEndpoint {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl TcpEndpoint {
    pub async fn bind() -> TcpEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind health endpoint");
        let addr = listener.local_addr().expect("local_addr");
        let mut endpoint = TcpEndpoint {
            addr,
            accepted: Arc::new(AtomicUsize::new(0)),
            task: None,
        };
        endpoint.serve(listener);
        endpoint
    }

    fn serve(&mut self, listener: TcpListener) {
        let accepted = self.accepted.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        }));
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub async fn start(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("re-bind health endpoint");
        self.serve(listener);
    }
}

impl Drop for TcpEndpoint {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------- HTTP(S) health endpoint

/// What the HTTP endpoint answers on one path.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// Wait this long before answering (to provoke read timeouts).
    pub delay: Duration,
}

impl Answer {
    pub fn new(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }
}

/// An HTTP/1.0 server (optionally TLS with a self-signed certificate) whose answers the test
/// changes while it runs; it records the request lines it saw.
pub struct HttpEndpoint {
    pub addr: SocketAddr,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl HttpEndpoint {
    pub async fn start(tls: bool) -> HttpEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind http endpoint");
        let addr = listener.local_addr().expect("local_addr");
        let answers: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let acceptor = tls.then(self_signed_acceptor);
        let (a, r) = (answers.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (a, r, acceptor) = (a.clone(), r.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_one(stream, a, r).await;
                            }
                        }
                        None => serve_one(stream, a, r).await,
                    }
                });
            }
        });
        HttpEndpoint {
            addr,
            answers,
            requests,
            task,
        }
    }

    pub fn answer(&self, path: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(path.into(), answer);
    }

    /// Request heads received so far (the whole head, `\r\n`-separated).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one<S>(
    mut stream: S,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    requests: Arc<Mutex<Vec<String>>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    requests.lock().unwrap().push(head);
    let answer = answers
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or(Answer::new(404, "not found"));
    tokio::time::sleep(answer.delay).await;
    let mut response = format!(
        "HTTP/1.0 {} X\r\nContent-Length: {}\r\n\r\n",
        answer.status,
        answer.body.len()
    )
    .into_bytes();
    response.extend_from_slice(&answer.body);
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

fn self_signed_acceptor() -> tokio_rustls::TlsAcceptor {
    let cert = rcgen::generate_simple_self_signed(vec!["alb.test".to_string()]).expect("rcgen");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server cert");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// MD5 hex of `body`, as keepalived's genhash prints it.
pub fn md5_hex(body: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// CPU time (user + system) this process has used so far.
pub fn process_cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
