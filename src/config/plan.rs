//! The validated, typed plan: what alive-proxy will do, built from `alive.yaml`.
//!
//! Everything here is already valid ("parse, don't validate"): the data plane, the health
//! checkers and the HA drivers consume it without re-checking. Only `config::load` builds it.
//! It is immutable; a reload builds a whole new `Plan` and the parts diff old against new.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// The whole configuration, one per loaded file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The file this plan was read from (for messages and reload).
    pub source: PathBuf,
    pub instances: Vec<Instance>,
    pub admin: AdminPlan,
    /// Lease/VRRP identity of this host; `None` = the host name (the seed requires unique
    /// host names). Optional top-level key `identity`.
    pub identity: Option<String>,
}

/// One `instances[]` entry: a VIP, how it is owned, and the services on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    /// `vip.name`: letters, digits and hyphens, not starting with a hyphen.
    pub name: String,
    pub vip: IpAddr,
    /// `vip.id`: keepalived's VRRP router id (1..=255), optional.
    pub id: Option<u8>,
    pub interface: String,
    /// `vip.check_interval` (default 1 s): drives the lease renew period.
    pub check_interval: Duration,
    /// `vip.check_timeout` (default 3 s): drives the lease renew deadline.
    pub check_timeout: Duration,
    /// `vip.peer`: the other LB hosts (keepalived unicast peers).
    pub peers: Vec<IpAddr>,
    pub lock: LockPlan,
    /// `vip.failsafe` (alive-proxy addition, off unless given): with a lock and peers, the
    /// holder keeps the VIP through a lock outage while every peer confirms it too cannot
    /// reach the lock and does not hold the VIP.
    pub failsafe: Option<FailsafePlan>,
    /// One per `ipvs.ports[]` entry, i.e. one per VIP:port (keepalived virtual_server).
    pub services: Vec<Service>,
}

impl Instance {
    pub fn family(&self) -> Family {
        Family::of(&self.vip)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Family {
    #[serde(rename = "ipv4")]
    V4,
    #[serde(rename = "ipv6")]
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// Who decides which host holds the VIP: a lock (with or without peers) → the lease; no
/// lock and a `peer` list → VRRP among the peers; neither → this host alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum LockPlan {
    /// No lock and no peers: this host holds the VIP unconditionally (single-host mode).
    None,
    /// `kube_lock`: a coordination.k8s.io/v1 Lease, kubeconfigs tried in order.
    Kube(KubeLock),
    /// `etcd_lock` (alive-proxy addition): an etcd v3 lease + transaction on one key.
    Etcd(EtcdLock),
    /// No lock and a `peer` list: VRRPv3 (RFC 5798) among the peers, as keepalived does.
    Vrrp(VrrpPlan),
    /// `vip.bgp` (alive-proxy addition): active-active. Every host able to serve has the VIP
    /// announced over BGP by the local routing daemon (BIRD 2); the upstream router's ECMP
    /// spreads clients over them (docs/bgp.md).
    Bgp(BgpPlan),
}

/// BGP mode of one instance (keys under `vip.bgp:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpPlan {
    /// `bgp.table` (default 161): the kernel routing table alive-proxy puts the VIP's
    /// /32 or /128 route in and BIRD's `kernel` protocol learns from. Never main/local.
    pub table: u32,
    /// `bgp.hold_down` (default 5 s): how long quorum must be back before the route is
    /// announced again, so a backend flapping at the edge does not flap the route.
    pub hold_down: Duration,
    /// `bgp.withdraw_wait` (default 5 s): at stop, how long to wait for BIRD to stop
    /// exporting the route before draining anyway.
    pub withdraw_wait: Duration,
    /// `bgp.bird_socket` (default `/run/bird/bird.ctl`): BIRD's control socket, read for
    /// session and route state.
    pub bird_socket: PathBuf,
    /// `bgp.protocols`: BIRD protocol names whose sessions are reported; empty = every BGP
    /// protocol BIRD runs.
    pub protocols: Vec<String>,
}

impl BgpPlan {
    pub const DEFAULT_TABLE: u32 = 161;
    pub const DEFAULT_HOLD_DOWN: Duration = Duration::from_secs(5);
    pub const DEFAULT_WITHDRAW_WAIT: Duration = Duration::from_secs(5);
    pub const DEFAULT_BIRD_SOCKET: &'static str = "/run/bird/bird.ctl";
}

/// VRRPv3 settings of one instance (optional keys under `vip:`, keepalived's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VrrpPlan {
    /// `vip.id`, required for VRRP: the virtual router id (1..=255).
    pub vrid: u8,
    /// `vip.priority` (default 100, 1..=254): the highest priority becomes master.
    pub priority: u8,
    /// `vip.advert_int` (default 1 s, whole centiseconds from 0.01 s to 40.95 s).
    pub advert_interval: Duration,
    /// `vip.preempt` (default true; `nopreempt: true` turns it off): a higher-priority
    /// backup takes the VIP from a lower-priority master.
    pub preempt: bool,
    /// `vip.preempt_delay` (default 0): no preemption this long after start or link up.
    pub preempt_delay: Duration,
}

impl VrrpPlan {
    pub const DEFAULT_PRIORITY: u8 = 100;
    pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);
}

/// The lock-outage failsafe's channel among the peers (docs/ha.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailsafePlan {
    /// `failsafe.key_file`: the HMAC-SHA256 key shared by the LB hosts (its bytes, at least
    /// 16). The plan holds the path only, so `check --json` never prints the key.
    pub key_file: PathBuf,
    /// `failsafe.port` (default [`FailsafePlan::DEFAULT_PORT`]): UDP, on every LB host.
    pub port: u16,
}

impl FailsafePlan {
    pub const DEFAULT_PORT: u16 = 7411;
    /// Shortest key accepted (bytes of the file, surrounding whitespace not counted).
    pub const MIN_KEY: usize = 16;
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KubeLock {
    pub kubeconfigs: Vec<PathBuf>,
    /// `kube_lock.lease_name`, default `alive-proxy-<instance name>`.
    pub lease_name: String,
    /// `kube_lock.namespace`, default `kube-system`.
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EtcdLock {
    /// `etcd_lock.endpoints`, e.g. `http://192.0.2.10:2379`.
    pub endpoints: Vec<String>,
    /// `etcd_lock.key`, default `/alive-proxy/leases/<instance name>`.
    pub key: String,
}

/// One VIP:port: keepalived's `virtual_server`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub vip: IpAddr,
    pub port: u16,
    pub scheduler: Scheduler,
    /// `persistence_timeout` / `persistence_granularity`: client-address affinity.
    pub persistence: Option<Persistence>,
    /// Summed weight of live backends needed for the service to be "up" (default 1).
    pub quorum: u32,
    pub hysteresis: u32,
    /// Takes all new connections while live weight is below quorum.
    pub sorry_server: Option<SocketAddr>,
    pub backends: Vec<Backend>,
    /// Data-plane connect timeout to a backend (`connect_timeout` at virtual_server level,
    /// else keepalived's 5 s).
    pub connect_timeout: Duration,
    /// Optional key `idle_timeout` (alive-proxy addition): a session with no bytes either way
    /// for this long is closed. Default 900 s, like IPVS's established TCP timeout.
    pub idle_timeout: Duration,
    /// Optional key `client_fin_timeout` (alive-proxy addition, HAProxy's `timeout
    /// client-fin`): once the backend has finished sending, the session is closed after this
    /// long without a byte from the client. Default 120 s, IPVS's FIN_WAIT timeout.
    pub client_fin_timeout: Duration,
    /// Optional key `server_fin_timeout` (HAProxy's `timeout server-fin`): once the client has
    /// finished sending, the session is closed after this long without a byte from the
    /// backend. Default 120 s.
    pub server_fin_timeout: Duration,
    /// Optional key `proxy_protocol`: send a PROXY header to the backend.
    pub proxy_protocol: ProxyProtocol,
    /// Optional key `transparent`: connect to backends from the client's address.
    pub transparent: bool,
    /// Optional key `max_connections`: concurrent sessions on this VIP:port (0 = unlimited).
    pub max_connections: u32,
    /// Optional key `on_backend_down`: what happens to a backend's live sessions when it is
    /// marked down. Default `close`, like the seed's `expire_nodest_conn = 1`.
    pub on_backend_down: OnBackendDown,
    /// Optional key `connect_attempts` (default 3): backends tried per client connection.
    pub connect_attempts: u32,
}

impl Service {
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.vip, self.port)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    Rr,
    Wrr,
    Lc,
    Wlc,
    Sed,
    Nq,
    Fo,
    Ovf,
    Twos,
    Sh,
    Mh,
    Dh,
    Lblc,
    Lblcr,
}

impl Scheduler {
    pub const ALL: [Scheduler; 14] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Fo,
        Scheduler::Ovf,
        Scheduler::Twos,
        Scheduler::Sh,
        Scheduler::Mh,
        Scheduler::Dh,
        Scheduler::Lblc,
        Scheduler::Lblcr,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
            Scheduler::Fo => "fo",
            Scheduler::Ovf => "ovf",
            Scheduler::Twos => "twos",
            Scheduler::Sh => "sh",
            Scheduler::Mh => "mh",
            Scheduler::Dh => "dh",
            Scheduler::Lblc => "lblc",
            Scheduler::Lblcr => "lblcr",
        }
    }

    pub fn from_name(name: &str) -> Option<Scheduler> {
        Scheduler::ALL.into_iter().find(|s| s.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Persistence {
    pub timeout: Duration,
    /// Prefix length applied to the client address (IPv4 from a netmask, IPv6 a length).
    pub granularity_prefix: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    Off,
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBackendDown {
    /// Reset the backend's live sessions (IPVS `expire_nodest_conn = 1`).
    Close,
    /// Let them finish; only new connections avoid the backend.
    Drain,
}

/// One real server of a service: an `ipvs.ips` entry on the service port.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backend {
    pub addr: SocketAddr,
    /// `weight` (default 1); 0 drains.
    pub weight: u32,
    /// `inhibit_on_failure`: on failure set weight 0 instead of removing.
    pub inhibit_on_failure: bool,
    /// `uthreshold`: max concurrent sessions (0 = unlimited).
    pub upper_threshold: u32,
    /// `lthreshold`: below this, a backend over uthreshold takes connections again.
    pub lower_threshold: u32,
    /// `alpha`: start down until the first successful check.
    pub alpha: bool,
    /// Health checks; empty = always up.
    pub checks: Vec<Check>,
}

/// One checker block with its effective timings (checker → real server → virtual server →
/// keepalived default inheritance already applied). Equality ignores `origin`: a check
/// that only moved in the file (a line added above it) is the same check, and a reload
/// must not restart it or call its service changed.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub kind: CheckKind,
    /// Time between checks (`delay_loop`).
    pub interval: Duration,
    pub connect_timeout: Duration,
    /// Extra attempts before declaring failure (`retry`, keepalived's `nb_get_retry`).
    pub retry: u32,
    pub delay_before_retry: Duration,
    /// Random initial delay up to this (`warmup`, default = interval).
    pub warmup: Duration,
    /// Where in alive.yaml the checker block starts, e.g. `alive.yaml:23:13`, for logs.
    pub origin: String,
}

impl PartialEq for Check {
    fn eq(&self, other: &Check) -> bool {
        let Check {
            kind,
            interval,
            connect_timeout,
            retry,
            delay_before_retry,
            warmup,
            origin: _,
        } = self;
        *kind == other.kind
            && *interval == other.interval
            && *connect_timeout == other.connect_timeout
            && *retry == other.retry
            && *delay_before_retry == other.delay_before_retry
            && *warmup == other.warmup
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum CheckKind {
    #[serde(rename = "TCP_CHECK")]
    Tcp(TcpCheck),
    #[serde(rename = "HTTP_GET")]
    Http(HttpCheck),
    #[serde(rename = "SSL_GET")]
    Ssl(HttpCheck),
    #[serde(rename = "MISC_CHECK")]
    Misc(MiscCheck),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcpCheck {
    /// `connect_ip`/`connect_port`, defaulting to the backend address.
    pub connect: SocketAddr,
    /// `bindto`/`bind_port`.
    pub bind: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpCheck {
    pub connect: SocketAddr,
    pub bind: Option<SocketAddr>,
    pub urls: Vec<UrlCheck>,
    /// `virtualhost` (checker level, else virtual_server level): the Host header.
    pub virtualhost: Option<String>,
    /// `http_protocol`: "1.0" (keepalived's default), "1.0C" (close), "1.1".
    pub http_protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UrlCheck {
    pub path: String,
    /// Inclusive status ranges; keepalived's default is 200-299.
    pub status: Vec<(u16, u16)>,
    /// MD5 of the body, lowercase hex.
    pub digest: Option<String>,
    pub virtualhost: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MiscCheck {
    /// Program and arguments, already split as keepalived splits `misc_path`.
    pub argv: Vec<String>,
    pub timeout: Duration,
    /// `misc_dynamic`: exit codes 2..=255 set weight = code - 2.
    pub dynamic: bool,
    /// `user`/group to run as; `None` = this process's.
    pub user: Option<String>,
}

/// Admin endpoint settings (optional top-level key `admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminPlan {
    /// Unix socket for `alive-proxy stats`; default `/run/alive-proxy/admin.sock`.
    pub socket: PathBuf,
    /// HTTP listener for /metrics, /healthz, /readyz; default `127.0.0.1:9736`, `None` = off.
    pub http: Option<SocketAddr>,
}

pub const DEFAULT_ADMIN_SOCKET: &str = "/run/alive-proxy/admin.sock";
pub const DEFAULT_ADMIN_HTTP: &str = "127.0.0.1:9736";

/// Names one backend of one service across the process: plan, routing, health, stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct BackendKey {
    /// The service's VIP:port.
    pub service: SocketAddr,
    /// The backend's address and traffic port.
    pub backend: SocketAddr,
}
