//! The alive.yaml schema: the positioned YAML tree read into raw structs, key by key.
//! Unknown keys, wrong node kinds and unparsable scalars become diagnostics here; what could
//! not be read is `None` and the load fails at the end, after every problem was reported.
//! Cross-field rules (uniqueness, families, inheritance) live in `validate`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::diagnostic::{Diags, Pos};
use super::keepalived::{self, RealServer, Spanned, VirtualServer};
use super::plan::{OnBackendDown, ProxyProtocol};
use super::yaml::{Node, NodeKind, Scalar};

#[derive(Debug, Default)]
pub struct RawFile {
    pub instances: Vec<RawInstance>,
    pub identity: Option<Spanned<String>>,
    pub admin_socket: Option<Spanned<String>>,
    /// `Some(None)` = `http: off`.
    pub admin_http: Option<Option<SocketAddr>>,
}

#[derive(Debug)]
pub struct RawInstance {
    pub pos: Pos,
    pub vip: Option<Spanned<IpAddr>>,
    pub id: Option<Spanned<u8>>,
    pub interface: Option<Spanned<String>>,
    pub check_interval: Option<Duration>,
    pub check_timeout: Option<Duration>,
    pub name: Option<Spanned<String>>,
    pub peers: Vec<Spanned<IpAddr>>,
    /// Where `vip.peer` is (VRRP errors point at it).
    pub peers_pos: Option<Pos>,
    pub vrrp: RawVrrp,
    pub bgp: Option<RawBgp>,
    pub kube_lock: Option<RawKube>,
    pub etcd_lock: Option<RawEtcd>,
    /// `vip.failsafe` (alive-proxy addition): the lock-outage failsafe among the peers.
    pub failsafe: Option<RawFailsafe>,
    /// `vip.mode` (alive-proxy addition): `vrrp` runs VRRP even with a lock (migration).
    pub mode: Option<Spanned<String>>,
    pub ips: Vec<Spanned<IpAddr>>,
    /// Where `ipvs.ips` is (for "no backends" errors).
    pub ips_pos: Pos,
    pub ports: Vec<RawPort>,
}

/// The VRRP keys under `vip:` (alive-proxy additions, keepalived's names and meanings).
#[derive(Debug, Default)]
pub struct RawVrrp {
    pub priority: Option<Spanned<u8>>,
    pub advert_int: Option<Spanned<Duration>>,
    pub preempt: Option<Spanned<bool>>,
    pub nopreempt: Option<Spanned<bool>>,
    pub preempt_delay: Option<Spanned<Duration>>,
}

impl RawVrrp {
    /// The first VRRP key given, for "has no effect" warnings.
    pub fn first_given(&self) -> Option<(&'static str, Pos)> {
        [
            ("priority", self.priority.as_ref().map(|s| s.pos)),
            ("advert_int", self.advert_int.as_ref().map(|s| s.pos)),
            ("preempt", self.preempt.as_ref().map(|s| s.pos)),
            ("nopreempt", self.nopreempt.as_ref().map(|s| s.pos)),
            ("preempt_delay", self.preempt_delay.as_ref().map(|s| s.pos)),
        ]
        .into_iter()
        .find_map(|(key, pos)| Some((key, pos?)))
    }
}

/// `vip.bgp:` (alive-proxy addition): BGP mode and its settings.
#[derive(Debug)]
pub struct RawBgp {
    pub pos: Pos,
    pub table: Option<Spanned<u64>>,
    pub hold_down: Option<Duration>,
    pub withdraw_wait: Option<Duration>,
    pub bird_socket: Option<Spanned<String>>,
    pub protocols: Vec<Spanned<String>>,
}

#[derive(Debug)]
pub struct RawKube {
    pub pos: Pos,
    pub kubecfgs: Vec<Spanned<String>>,
    pub lease_name: Option<Spanned<String>>,
    pub namespace: Option<Spanned<String>>,
}

#[derive(Debug)]
pub struct RawFailsafe {
    pub pos: Pos,
    pub key_file: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
}

#[derive(Debug)]
pub struct RawEtcd {
    pub pos: Pos,
    pub endpoints: Vec<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

#[derive(Debug)]
pub struct RawPort {
    pub pos: Pos,
    pub port: Option<Spanned<u16>>,
    pub vs: VirtualServer,
    pub rs: RealServer,
    pub idle_timeout: Option<Duration>,
    pub client_fin_timeout: Option<Duration>,
    pub server_fin_timeout: Option<Duration>,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub transparent: Option<bool>,
    pub max_connections: Option<u32>,
    pub on_backend_down: Option<OnBackendDown>,
    pub connect_attempts: Option<u32>,
}

/// A mapping being read: remembers which keys were looked at so the rest can be reported
/// as unknown.
struct MapReader<'n> {
    pairs: &'n [(Node, Node)],
    used: Vec<bool>,
}

impl<'n> MapReader<'n> {
    fn new(node: &'n Node, what: &str, diags: &mut Diags<'_>) -> Option<MapReader<'n>> {
        match &node.kind {
            NodeKind::Map(pairs) => Some(MapReader {
                pairs,
                used: vec![false; pairs.len()],
            }),
            _ => {
                diags.error(
                    node.pos,
                    format!("{what} is {}", node.kind_name()),
                    format!("a mapping ({what}: with keys below it)"),
                );
                None
            }
        }
    }

    /// The value of `key`, or `None` when absent or null.
    fn get(&mut self, key: &str) -> Option<&'n Node> {
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if matches!(&k.kind, NodeKind::Scalar(s) if s.value == key) {
                self.used[i] = true;
                return (!v.is_null()).then_some(v);
            }
        }
        None
    }

    fn finish(self, what: &str, known: &[&str], diags: &mut Diags<'_>) {
        for ((k, _), used) in self.pairs.iter().zip(self.used) {
            if used {
                continue;
            }
            let name = match &k.kind {
                NodeKind::Scalar(s) => format!("`{}`", s.value),
                _ => "a non-scalar key".to_string(),
            };
            diags.error(
                k.pos,
                format!("unknown key {name} in {what}"),
                format!("one of {}", known.join(", ")),
            );
        }
    }
}

fn scalar<'n>(
    node: &'n Node,
    what: &str,
    expected: &str,
    diags: &mut Diags<'_>,
) -> Option<&'n Scalar> {
    match &node.kind {
        NodeKind::Scalar(s) => Some(s),
        _ => {
            diags.error(
                node.pos,
                format!("{what} is {}", node.kind_name()),
                expected,
            );
            None
        }
    }
}

fn string(node: &Node, what: &str, diags: &mut Diags<'_>) -> Option<Spanned<String>> {
    let s = scalar(node, what, "a string", diags)?;
    if s.value.trim().is_empty() {
        diags.error(node.pos, format!("{what} is empty"), "a non-empty string");
        return None;
    }
    Some(Spanned {
        value: s.value.clone(),
        pos: node.pos,
    })
}

fn ip(node: &Node, what: &str, diags: &mut Diags<'_>) -> Option<Spanned<IpAddr>> {
    let s = scalar(node, what, "an IPv4 or IPv6 address", diags)?;
    match s.value.trim().parse::<IpAddr>() {
        Ok(ip) => Some(Spanned {
            value: ip,
            pos: node.pos,
        }),
        Err(_) => {
            diags.error(
                node.pos,
                format!("{what} `{}` is not an IP address", s.value),
                "an IPv4 or IPv6 address",
            );
            None
        }
    }
}

fn int(node: &Node, what: &str, min: u64, max: u64, diags: &mut Diags<'_>) -> Option<Spanned<u64>> {
    let expected = format!("an integer from {min} to {max}");
    let s = scalar(node, what, &expected, diags)?;
    let v = s.value.trim();
    let parsed = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse::<u64>().ok()
    } else {
        None
    };
    match parsed {
        Some(n) if (min..=max).contains(&n) => Some(Spanned {
            value: n,
            pos: node.pos,
        }),
        Some(_) => {
            diags.error(node.pos, format!("{what} `{v}` is out of range"), expected);
            None
        }
        None => {
            diags.error(
                node.pos,
                format!("{what} `{v}` is not an integer"),
                expected,
            );
            None
        }
    }
}

fn seconds(node: &Node, what: &str, diags: &mut Diags<'_>) -> Option<Duration> {
    let expected = "a number of seconds greater than 0, such as 1 or 0.5";
    let s = scalar(node, what, expected, diags)?;
    match keepalived::values::parse_timer(s.value.trim()) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            diags.error(node.pos, format!("{what} must be greater than 0"), expected);
            None
        }
        Err(why) => {
            diags.error(
                node.pos,
                format!("{what} `{}` is invalid: {why}", s.value),
                expected,
            );
            None
        }
    }
}

/// Seconds that may be 0 (`preempt_delay`), at most `max_secs`.
fn seconds_or_zero(
    node: &Node,
    what: &str,
    max_secs: u64,
    diags: &mut Diags<'_>,
) -> Option<Duration> {
    let expected = format!("a number of seconds from 0 to {max_secs}, such as 0 or 2.5");
    let s = scalar(node, what, &expected, diags)?;
    match keepalived::values::parse_timer(s.value.trim()) {
        Ok(d) if d <= Duration::from_secs(max_secs) => Some(d),
        Ok(_) => {
            diags.error(
                node.pos,
                format!("{what} `{}` is too large", s.value),
                expected,
            );
            None
        }
        Err(why) => {
            diags.error(
                node.pos,
                format!("{what} `{}` is invalid: {why}", s.value),
                expected,
            );
            None
        }
    }
}

/// VRRPv3 carries the advertisement interval in 12 bits of centiseconds.
fn advert_interval(node: &Node, diags: &mut Diags<'_>) -> Option<Duration> {
    const EXPECTED: &str = "seconds in whole centiseconds from 0.01 to 40.95, such as 1 or 0.1";
    let d = seconds(node, "advert_int", diags)?;
    let centis = d.as_micros() / 10_000;
    if d.as_micros() % 10_000 != 0 {
        diags.error(
            node.pos,
            "advert_int is not a whole number of centiseconds (VRRPv3 carries centiseconds)",
            EXPECTED,
        );
        None
    } else if centis > 4095 {
        diags.error(node.pos, "advert_int is longer than 40.95 s", EXPECTED);
        None
    } else {
        Some(d)
    }
}

fn boolean(node: &Node, what: &str, diags: &mut Diags<'_>) -> Option<bool> {
    let s = scalar(node, what, "true or false", diags)?;
    match s.value.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => {
            diags.error(
                node.pos,
                format!("{what} `{}` is not a boolean", s.value),
                "true or false",
            );
            None
        }
    }
}

fn seq<'n>(node: &'n Node, what: &str, diags: &mut Diags<'_>) -> &'n [Node] {
    match &node.kind {
        NodeKind::Seq(items) => items,
        _ => {
            diags.error(
                node.pos,
                format!("{what} is {}", node.kind_name()),
                "a list (`- item` lines or `[a, b]`)",
            );
            &[]
        }
    }
}

const TOP_KEYS: &[&str] = &["instances", "identity", "admin"];
const INSTANCE_KEYS: &[&str] = &["vip", "ipvs"];
const VIP_KEYS: &[&str] = &[
    "vip",
    "id",
    "interface",
    "check_interval",
    "check_timeout",
    "name",
    "peer",
    "kube_lock",
    "etcd_lock",
    "priority",
    "advert_int",
    "preempt",
    "nopreempt",
    "preempt_delay",
    "bgp",
    "failsafe",
    "mode",
];
const BGP_KEYS: &[&str] = &[
    "table",
    "hold_down",
    "withdraw_wait",
    "bird_socket",
    "protocols",
];
const KUBE_KEYS: &[&str] = &["kubecfgs", "lease_name", "namespace"];
const ETCD_KEYS: &[&str] = &["endpoints", "key"];
const FAILSAFE_KEYS: &[&str] = &["key_file", "port"];
const IPVS_KEYS: &[&str] = &["ips", "ports"];
const PORT_KEYS: &[&str] = &[
    "port",
    "virtual_server_config",
    "raw_check",
    "idle_timeout",
    "client_fin_timeout",
    "server_fin_timeout",
    "proxy_protocol",
    "transparent",
    "max_connections",
    "on_backend_down",
    "connect_attempts",
];
const ADMIN_KEYS: &[&str] = &["socket", "http"];

pub fn read(root: &Node, diags: &mut Diags<'_>) -> RawFile {
    let mut file = RawFile::default();
    let Some(mut top) = MapReader::new(root, "the file", diags) else {
        return file;
    };
    match top.get("instances") {
        Some(node) => {
            let items = seq(node, "instances", diags);
            if items.is_empty() && matches!(node.kind, NodeKind::Seq(_)) {
                diags.error(
                    node.pos,
                    "instances is empty",
                    "at least one `- vip: ...` entry",
                );
            }
            file.instances = items.iter().map(|n| instance(n, diags)).collect();
        }
        None => diags.error(
            root.pos,
            "missing key `instances`",
            "`instances:` with at least one `- vip: ...` entry",
        ),
    }
    if let Some(node) = top.get("identity") {
        file.identity = string(node, "identity", diags);
    }
    if let Some(node) = top.get("admin") {
        admin(node, &mut file, diags);
    }
    top.finish("the top level", TOP_KEYS, diags);
    file
}

fn admin(node: &Node, file: &mut RawFile, diags: &mut Diags<'_>) {
    let Some(mut m) = MapReader::new(node, "admin", diags) else {
        return;
    };
    if let Some(n) = m.get("socket")
        && let Some(s) = string(n, "admin.socket", diags)
    {
        if s.value.starts_with('/') {
            file.admin_socket = Some(s);
        } else {
            diags.error(
                n.pos,
                format!("admin.socket `{}` is not an absolute path", s.value),
                "a path such as /run/alive-proxy/admin.sock",
            );
        }
    }
    if let Some(n) = m.get("http")
        && let Some(s) = scalar(n, "admin.http", "IP:PORT or off", diags)
    {
        let v = s.value.trim();
        if v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("false") {
            file.admin_http = Some(None);
        } else {
            match v.parse::<SocketAddr>() {
                Ok(a) if a.port() != 0 => file.admin_http = Some(Some(a)),
                _ => diags.error(
                    n.pos,
                    format!("admin.http `{v}` is not an address and port"),
                    "IP:PORT such as 127.0.0.1:9736 or [::1]:9736, or off",
                ),
            }
        }
    }
    m.finish("admin", ADMIN_KEYS, diags);
}

fn instance(node: &Node, diags: &mut Diags<'_>) -> RawInstance {
    let mut inst = RawInstance {
        pos: node.pos,
        vip: None,
        id: None,
        interface: None,
        check_interval: None,
        check_timeout: None,
        name: None,
        peers: Vec::new(),
        peers_pos: None,
        vrrp: RawVrrp::default(),
        bgp: None,
        kube_lock: None,
        etcd_lock: None,
        failsafe: None,
        mode: None,
        ips: Vec::new(),
        ips_pos: node.pos,
        ports: Vec::new(),
    };
    let Some(mut m) = MapReader::new(node, "an instances entry", diags) else {
        return inst;
    };
    match m.get("vip") {
        Some(v) => vip_section(v, &mut inst, diags),
        None => diags.error(
            node.pos,
            "instance has no `vip` section",
            "`vip:` with vip, interface, ...",
        ),
    }
    match m.get("ipvs") {
        Some(v) => ipvs_section(v, &mut inst, diags),
        None => diags.error(
            node.pos,
            "instance has no `ipvs` section",
            "`ipvs:` with ips and ports",
        ),
    }
    m.finish("an instances entry", INSTANCE_KEYS, diags);
    inst
}

fn vip_section(node: &Node, inst: &mut RawInstance, diags: &mut Diags<'_>) {
    let Some(mut m) = MapReader::new(node, "vip", diags) else {
        return;
    };
    match m.get("vip") {
        Some(n) => inst.vip = ip(n, "vip", diags),
        None => diags.error(node.pos, "missing key `vip.vip`", "the virtual IP address"),
    }
    if let Some(n) = m.get("id") {
        inst.id = int(n, "id", 1, 255, diags).map(|v| Spanned {
            value: v.value as u8,
            pos: v.pos,
        });
    }
    match m.get("interface") {
        Some(n) => inst.interface = string(n, "interface", diags),
        None => diags.error(
            node.pos,
            "missing key `vip.interface`",
            "the network interface that carries the VIP, such as eth0",
        ),
    }
    if let Some(n) = m.get("check_interval") {
        inst.check_interval = seconds(n, "check_interval", diags);
    }
    if let Some(n) = m.get("check_timeout") {
        inst.check_timeout = seconds(n, "check_timeout", diags);
    }
    if let Some(n) = m.get("name") {
        inst.name = string(n, "name", diags);
    }
    if let Some(n) = m.get("peer") {
        inst.peers_pos = Some(n.pos);
        inst.peers = seq(n, "peer", diags)
            .iter()
            .filter_map(|p| ip(p, "peer", diags))
            .collect();
    }
    if let Some(n) = m.get("kube_lock") {
        inst.kube_lock = kube_lock(n, diags);
    }
    if let Some(n) = m.get("etcd_lock") {
        inst.etcd_lock = etcd_lock(n, diags);
    }
    if let Some(n) = m.get("bgp") {
        inst.bgp = bgp(n, diags);
    }
    if let Some(n) = m.get("failsafe") {
        inst.failsafe = failsafe(n, diags);
    }
    if let Some(n) = m.get("mode") {
        inst.mode = string(n, "mode", diags);
    }
    vrrp_keys(&mut m, &mut inst.vrrp, diags);
    m.finish("vip", VIP_KEYS, diags);
}

fn spanned<T>(node: &Node, value: T) -> Spanned<T> {
    Spanned {
        value,
        pos: node.pos,
    }
}

fn vrrp_keys(m: &mut MapReader<'_>, vrrp: &mut RawVrrp, diags: &mut Diags<'_>) {
    if let Some(n) = m.get("priority") {
        // 255 is RFC 5798's "address owner", which no LB host is: the VIP is nobody's own.
        vrrp.priority = int(n, "priority", 1, 254, diags).map(|v| spanned(n, v.value as u8));
    }
    if let Some(n) = m.get("advert_int") {
        vrrp.advert_int = advert_interval(n, diags).map(|d| spanned(n, d));
    }
    if let Some(n) = m.get("preempt") {
        vrrp.preempt = boolean(n, "preempt", diags).map(|b| spanned(n, b));
    }
    if let Some(n) = m.get("nopreempt") {
        vrrp.nopreempt = boolean(n, "nopreempt", diags).map(|b| spanned(n, b));
    }
    if let Some(n) = m.get("preempt_delay") {
        // keepalived's limit.
        vrrp.preempt_delay =
            seconds_or_zero(n, "preempt_delay", 1000, diags).map(|d| spanned(n, d));
    }
}

fn bgp(node: &Node, diags: &mut Diags<'_>) -> Option<RawBgp> {
    // `bgp: {}` (or `bgp:` with nothing under it) turns BGP mode on with every default.
    let empty = matches!(&node.kind, NodeKind::Map(pairs) if pairs.is_empty());
    let mut raw = RawBgp {
        pos: node.pos,
        table: None,
        hold_down: None,
        withdraw_wait: None,
        bird_socket: None,
        protocols: Vec::new(),
    };
    if empty {
        return Some(raw);
    }
    let mut m = MapReader::new(node, "bgp", diags)?;
    if let Some(n) = m.get("table") {
        raw.table = int(n, "bgp.table", 1, u64::from(u32::MAX), diags);
    }
    if let Some(n) = m.get("hold_down") {
        // 0 is allowed: re-announce as soon as quorum is back (the operator's choice).
        raw.hold_down = seconds_or_zero(n, "bgp.hold_down", 3600, diags);
    }
    if let Some(n) = m.get("withdraw_wait") {
        raw.withdraw_wait = seconds_or_zero(n, "bgp.withdraw_wait", 600, diags);
    }
    if let Some(n) = m.get("bird_socket") {
        raw.bird_socket = string(n, "bgp.bird_socket", diags);
    }
    if let Some(n) = m.get("protocols") {
        raw.protocols = seq(n, "bgp.protocols", diags)
            .iter()
            .filter_map(|p| string(p, "a bgp.protocols entry", diags))
            .collect();
    }
    m.finish("bgp", BGP_KEYS, diags);
    Some(raw)
}

fn kube_lock(node: &Node, diags: &mut Diags<'_>) -> Option<RawKube> {
    let mut m = MapReader::new(node, "kube_lock", diags)?;
    let mut kube = RawKube {
        pos: node.pos,
        kubecfgs: Vec::new(),
        lease_name: None,
        namespace: None,
    };
    match m.get("kubecfgs") {
        Some(n) => {
            kube.kubecfgs = seq(n, "kubecfgs", diags)
                .iter()
                .filter_map(|p| string(p, "a kubecfgs entry", diags))
                .collect();
            if kube.kubecfgs.is_empty() && matches!(&n.kind, NodeKind::Seq(v) if v.is_empty()) {
                diags.error(n.pos, "kubecfgs is empty", "at least one kubeconfig path");
            }
        }
        None => diags.error(
            node.pos,
            "kube_lock has no `kubecfgs`",
            "`kubecfgs:` with at least one kubeconfig path",
        ),
    }
    if let Some(n) = m.get("lease_name") {
        kube.lease_name = string(n, "kube_lock.lease_name", diags);
    }
    if let Some(n) = m.get("namespace") {
        kube.namespace = string(n, "kube_lock.namespace", diags);
    }
    m.finish("kube_lock", KUBE_KEYS, diags);
    Some(kube)
}

fn etcd_lock(node: &Node, diags: &mut Diags<'_>) -> Option<RawEtcd> {
    let mut m = MapReader::new(node, "etcd_lock", diags)?;
    let mut etcd = RawEtcd {
        pos: node.pos,
        endpoints: Vec::new(),
        key: None,
    };
    match m.get("endpoints") {
        Some(n) => {
            etcd.endpoints = seq(n, "endpoints", diags)
                .iter()
                .filter_map(|p| string(p, "an endpoints entry", diags))
                .collect();
            if matches!(&n.kind, NodeKind::Seq(v) if v.is_empty()) {
                diags.error(
                    n.pos,
                    "endpoints is empty",
                    "at least one etcd endpoint such as http://192.0.2.10:2379",
                );
            }
        }
        None => diags.error(
            node.pos,
            "etcd_lock has no `endpoints`",
            "`endpoints:` with at least one etcd endpoint such as http://192.0.2.10:2379",
        ),
    }
    if let Some(n) = m.get("key") {
        etcd.key = string(n, "etcd_lock.key", diags);
    }
    m.finish("etcd_lock", ETCD_KEYS, diags);
    Some(etcd)
}

fn failsafe(node: &Node, diags: &mut Diags<'_>) -> Option<RawFailsafe> {
    let mut m = MapReader::new(node, "failsafe", diags)?;
    let mut failsafe = RawFailsafe {
        pos: node.pos,
        key_file: None,
        port: None,
    };
    match m.get("key_file") {
        Some(n) => failsafe.key_file = string(n, "failsafe.key_file", diags),
        None => diags.error(
            node.pos,
            "failsafe has no `key_file`",
            "`key_file:` naming the file with the key shared by the LB hosts",
        ),
    }
    if let Some(n) = m.get("port") {
        failsafe.port = int(n, "failsafe.port", 1, 65535, diags).map(|v| Spanned {
            value: v.value as u16,
            pos: v.pos,
        });
    }
    m.finish("failsafe", FAILSAFE_KEYS, diags);
    Some(failsafe)
}

fn ipvs_section(node: &Node, inst: &mut RawInstance, diags: &mut Diags<'_>) {
    let Some(mut m) = MapReader::new(node, "ipvs", diags) else {
        return;
    };
    match m.get("ips") {
        Some(n) => {
            inst.ips_pos = n.pos;
            let items = seq(n, "ips", diags);
            if items.is_empty() && matches!(n.kind, NodeKind::Seq(_)) {
                diags.error(n.pos, "ips is empty", "at least one backend address");
            }
            inst.ips = items
                .iter()
                .filter_map(|p| ip(p, "backend", diags))
                .collect();
        }
        None => diags.error(
            node.pos,
            "missing key `ipvs.ips`",
            "the backend addresses (`ips: [ ... ]`)",
        ),
    }
    match m.get("ports") {
        Some(n) => {
            let items = seq(n, "ports", diags);
            if items.is_empty() && matches!(n.kind, NodeKind::Seq(_)) {
                diags.error(n.pos, "ports is empty", "at least one `- port: N` entry");
            }
            inst.ports = items.iter().filter_map(|p| port_entry(p, diags)).collect();
        }
        None => diags.error(
            node.pos,
            "missing key `ipvs.ports`",
            "`ports:` with at least one `- port: N` entry",
        ),
    }
    m.finish("ipvs", IPVS_KEYS, diags);
}

fn port_entry(node: &Node, diags: &mut Diags<'_>) -> Option<RawPort> {
    let mut m = MapReader::new(node, "a ports entry", diags)?;
    let mut p = RawPort {
        pos: node.pos,
        port: None,
        vs: VirtualServer {
            pos: node.pos,
            ..VirtualServer::default()
        },
        rs: RealServer::default(),
        idle_timeout: None,
        client_fin_timeout: None,
        server_fin_timeout: None,
        proxy_protocol: None,
        transparent: None,
        max_connections: None,
        on_backend_down: None,
        connect_attempts: None,
    };
    match m.get("port") {
        Some(n) => {
            p.port = int(n, "port", 1, 65535, diags).map(|v| Spanned {
                value: v.value as u16,
                pos: v.pos,
            })
        }
        None => diags.error(node.pos, "missing key `port`", "`port: N` (1..65535)"),
    }
    if let Some(n) = m.get("virtual_server_config")
        && let Some(s) = scalar(
            n,
            "virtual_server_config",
            "keepalived virtual_server lines (`virtual_server_config: |`)",
            diags,
        )
    {
        let statements = keepalived::statements(s, n.pos, diags);
        p.vs = keepalived::virtual_server::parse(&statements, n.pos, diags);
    }
    if let Some(n) = m.get("raw_check")
        && let Some(s) = scalar(
            n,
            "raw_check",
            "keepalived real_server lines (`raw_check: |`)",
            diags,
        )
    {
        let statements = keepalived::statements(s, n.pos, diags);
        p.rs = keepalived::real_server::parse(&statements, n.pos, diags);
    }
    if let Some(n) = m.get("idle_timeout") {
        p.idle_timeout = seconds(n, "idle_timeout", diags);
    }
    if let Some(n) = m.get("client_fin_timeout") {
        p.client_fin_timeout = seconds(n, "client_fin_timeout", diags);
    }
    if let Some(n) = m.get("server_fin_timeout") {
        p.server_fin_timeout = seconds(n, "server_fin_timeout", diags);
    }
    if let Some(n) = m.get("proxy_protocol")
        && let Some(s) = scalar(n, "proxy_protocol", "off, v1 or v2", diags)
    {
        p.proxy_protocol = match s.value.to_ascii_lowercase().as_str() {
            "off" | "false" => Some(ProxyProtocol::Off),
            "v1" => Some(ProxyProtocol::V1),
            "v2" | "true" => Some(ProxyProtocol::V2),
            _ => {
                diags.error(
                    n.pos,
                    format!("proxy_protocol `{}` is not known", s.value),
                    "off, v1 or v2 (true means v2)",
                );
                None
            }
        };
    }
    if let Some(n) = m.get("transparent") {
        p.transparent = boolean(n, "transparent", diags);
    }
    if let Some(n) = m.get("max_connections") {
        p.max_connections =
            int(n, "max_connections", 0, u64::from(u32::MAX), diags).map(|v| v.value as u32);
    }
    if let Some(n) = m.get("on_backend_down")
        && let Some(s) = scalar(n, "on_backend_down", "close or drain", diags)
    {
        p.on_backend_down = match s.value.as_str() {
            "close" => Some(OnBackendDown::Close),
            "drain" => Some(OnBackendDown::Drain),
            _ => {
                diags.error(
                    n.pos,
                    format!("on_backend_down `{}` is not known", s.value),
                    "close or drain",
                );
                None
            }
        };
    }
    if let Some(n) = m.get("connect_attempts") {
        p.connect_attempts = int(n, "connect_attempts", 1, 100, diags).map(|v| v.value as u32);
    }
    m.finish("a ports entry", PORT_KEYS, diags);
    Some(p)
}
