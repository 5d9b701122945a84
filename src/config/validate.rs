//! From raw structs to the typed [`Plan`]: the rules that span fields (uniqueness, address
//! families, scheduler flags, quorum), keepalived's inheritance of checker timings
//! (checker → real server → virtual server → keepalived default), the defaults of the
//! optional keys, and the machine-dependent checks (kubeconfig files exist).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Mode;
use super::diagnostic::{Diags, Pos};
use super::keepalived::{self, Checker, CheckerKind, Granularity, RealServer, VirtualServer};
use super::plan::*;
use super::raw::{RawBgp, RawFile, RawInstance, RawPort};

/// keepalived's defaults (check_data.c `alloc_vs`).
const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(900);
/// IPVS's TCP FIN_WAIT timeout (`ipvsadm --set`'s tcpfin), for a half-closed session.
const DEFAULT_FIN_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_CONNECT_ATTEMPTS: u32 = 3;

pub struct Context<'p> {
    pub mode: Mode,
    pub source: PathBuf,
    /// Relative kubeconfig paths are taken relative to the config file's directory.
    pub base_dir: Option<&'p Path>,
}

pub fn build(raw: RawFile, ctx: &Context<'_>, diags: &mut Diags<'_>) -> Plan {
    let mut instances = Vec::new();
    let mut seen_vips: HashMap<IpAddr, Pos> = HashMap::new();
    let mut seen_ids: HashMap<u8, Pos> = HashMap::new();
    let mut seen_names: HashMap<String, Pos> = HashMap::new();
    let mut seen_failsafe_ports: HashMap<(bool, u16), String> = HashMap::new();
    for inst in &raw.instances {
        if let Some(vip) = inst.vip
            && let Some(first) = seen_vips.insert(vip.value, vip.pos)
        {
            diags.error(
                vip.pos,
                format!("VIP {} is already used at line {}", vip.value, first.line),
                "a different address for every instance",
            );
        }
        if let Some(id) = inst.id
            && let Some(first) = seen_ids.insert(id.value, id.pos)
        {
            diags.error(
                id.pos,
                format!("id {} is already used at line {}", id.value, first.line),
                "a different id (1..255) for every instance",
            );
        }
        if let Some(plan) = instance(inst, ctx, diags) {
            if let Some(failsafe) = &plan.failsafe
                && let Some(first) = seen_failsafe_ports
                    .insert((plan.vip.is_ipv4(), failsafe.port), plan.name.clone())
            {
                diags.error(
                    inst.failsafe.as_ref().map_or(inst.pos, |f| f.pos),
                    format!(
                        "failsafe port {} is already used by instance `{first}` of the same address family",
                        failsafe.port
                    ),
                    "a different `failsafe.port` for each instance of one address family",
                );
            }
            match seen_names.get(&plan.name) {
                Some(first) => diags.error(
                    inst.name.as_ref().map(|n| n.pos).unwrap_or(inst.pos),
                    format!(
                        "name `{}` is already used at line {}",
                        plan.name, first.line
                    ),
                    "a different name for every instance",
                ),
                None => {
                    seen_names.insert(
                        plan.name.clone(),
                        inst.name.as_ref().map(|n| n.pos).unwrap_or(inst.pos),
                    );
                }
            }
            instances.push(plan);
        }
    }
    Plan {
        source: ctx.source.clone(),
        instances,
        admin: AdminPlan {
            socket: raw
                .admin_socket
                .map(|s| PathBuf::from(s.value))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_SOCKET)),
            http: match raw.admin_http {
                Some(http) => http,
                None => DEFAULT_ADMIN_HTTP.parse().ok(),
            },
        },
        identity: raw.identity.map(|s| s.value),
    }
}

/// Letters, digits and hyphens, not starting with a hyphen.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The name of an instance without `name`: derived from the VIP, so it stays the same when
/// instances are reordered (it names the lease).
pub fn default_name(vip: IpAddr) -> String {
    let addr: String = vip
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("vip-{addr}")
}

fn instance(inst: &RawInstance, ctx: &Context<'_>, diags: &mut Diags<'_>) -> Option<Instance> {
    let vip = inst.vip?;
    let family = Family::of(&vip.value);
    let name = match &inst.name {
        Some(n) if valid_name(&n.value) => n.value.clone(),
        Some(n) => {
            diags.error(
                n.pos,
                format!("invalid name `{}`", n.value),
                "letters, digits and hyphens, not starting with a hyphen",
            );
            return None;
        }
        None => default_name(vip.value),
    };
    let mut peers = Vec::new();
    for peer in &inst.peers {
        if Family::of(&peer.value) != family {
            diags.error(
                peer.pos,
                format!("peer {} is not of the VIP's address family", peer.value),
                family_expected(family),
            );
        } else if peer.value == vip.value {
            diags.error(
                peer.pos,
                format!("peer {} is the VIP itself", peer.value),
                "the addresses of the other LB hosts",
            );
        } else if peers.contains(&peer.value) {
            diags.error(
                peer.pos,
                format!("peer {} is listed twice", peer.value),
                "each peer once",
            );
        } else {
            peers.push(peer.value);
        }
    }
    let lock = lock_plan(inst, &name, ctx, diags);
    if let Some(lock) = &lock {
        warn_unused_vrrp_keys(inst, lock, diags);
    }
    let vrrp_mode = inst.mode.as_ref().is_some_and(|m| m.value == "vrrp");
    let failsafe = match (&inst.failsafe, &lock) {
        // Migration: the file keeps its failsafe for when the lease is back.
        (Some(raw), Some(_)) if vrrp_mode => {
            diags.warning(
                raw.pos,
                "`failsafe` has no effect under `mode: vrrp` (no lease to keep through an outage)",
            );
            None
        }
        (Some(raw), Some(lock)) => failsafe_plan(raw, lock, &peers, ctx, diags),
        _ => None,
    };
    let backends_ok = backends_valid(inst, family, diags);
    let mut services = Vec::new();
    let mut seen_ports: HashMap<u16, Pos> = HashMap::new();
    for port in &inst.ports {
        let Some(p) = port.port else { continue };
        if let Some(first) = seen_ports.insert(p.value, p.pos) {
            diags.error(
                p.pos,
                format!(
                    "port {} is already configured for this VIP at line {}",
                    p.value, first.line
                ),
                "each port once per VIP",
            );
            continue;
        }
        if let Some(service) = service(vip.value, p.value, port, inst, backends_ok, diags) {
            services.push(service);
        }
    }
    Some(Instance {
        name,
        vip: vip.value,
        id: inst.id.map(|i| i.value),
        interface: inst.interface.as_ref()?.value.clone(),
        check_interval: inst.check_interval.unwrap_or(DEFAULT_CHECK_INTERVAL),
        check_timeout: inst.check_timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT),
        peers,
        lock: lock?,
        failsafe,
        services,
    })
}

/// `vip.failsafe`: only meaningful with a lease (a lock) and someone to confirm (peers).
/// The key file is read here so a missing or short key stops `run` before anything starts.
fn failsafe_plan(
    raw: &super::raw::RawFailsafe,
    lock: &LockPlan,
    peers: &[IpAddr],
    ctx: &Context<'_>,
    diags: &mut Diags<'_>,
) -> Option<FailsafePlan> {
    if !matches!(lock, LockPlan::Kube(_) | LockPlan::Etcd(_)) {
        diags.error(
            raw.pos,
            "failsafe needs a lease: it keeps a lease holder's VIP through a lock outage",
            "a kube_lock or etcd_lock in this vip section, or no failsafe",
        );
        return None;
    }
    if peers.is_empty() {
        diags.error(
            raw.pos,
            "failsafe needs `peer`: the other LB hosts are who must confirm the outage",
            "`peer: [...]` with the LB hosts' addresses",
        );
        return None;
    }
    let key = raw.key_file.as_ref()?;
    let key_file = match ctx.base_dir {
        Some(base) if Path::new(&key.value).is_relative() => base.join(&key.value),
        _ => PathBuf::from(&key.value),
    };
    let problem = match std::fs::read(&key_file) {
        Ok(bytes) if bytes.trim_ascii().len() >= FailsafePlan::MIN_KEY => None,
        Ok(_) => Some(format!(
            "failsafe key file {} holds fewer than {} bytes",
            key_file.display(),
            FailsafePlan::MIN_KEY
        )),
        Err(e) => Some(format!(
            "failsafe key file {} cannot be read: {e}",
            key_file.display()
        )),
    };
    if let Some(message) = problem {
        diags.problem(
            ctx.mode == Mode::Run,
            key.pos,
            message,
            "a file with the same secret on every LB host, e.g. `openssl rand -base64 32 > FILE`",
        );
    }
    Some(FailsafePlan {
        key_file,
        port: raw.port.map_or(FailsafePlan::DEFAULT_PORT, |p| p.value),
    })
}

fn family_expected(family: Family) -> &'static str {
    match family {
        Family::V4 => "an IPv4 address, like the VIP",
        Family::V6 => "an IPv6 address, like the VIP",
    }
}

fn backends_valid(inst: &RawInstance, family: Family, diags: &mut Diags<'_>) -> bool {
    let mut ok = !inst.ips.is_empty();
    let mut seen: Vec<IpAddr> = Vec::new();
    for ip in &inst.ips {
        if Family::of(&ip.value) != family {
            diags.error(
                ip.pos,
                format!("backend {} is not of the VIP's address family", ip.value),
                family_expected(family),
            );
            ok = false;
        } else if seen.contains(&ip.value) {
            diags.error(
                ip.pos,
                format!("backend {} is listed twice", ip.value),
                "each backend once",
            );
            ok = false;
        } else {
            seen.push(ip.value);
        }
    }
    ok
}

/// DNS-1123 subdomain (Lease names) or label (namespaces).
fn valid_k8s_name(s: &str, max: usize, dots: bool) -> bool {
    s.len() <= max
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
        })
}

fn lock_plan(
    inst: &RawInstance,
    name: &str,
    ctx: &Context<'_>,
    diags: &mut Diags<'_>,
) -> Option<LockPlan> {
    if let Some(bgp) = &inst.bgp {
        if let Some(mode) = inst.mode.as_ref().filter(|m| m.value != "lease") {
            diags.error(
                mode.pos,
                format!("`mode: {}` together with `bgp`", mode.value),
                "one of them: `bgp` announces the VIP from every healthy host, `mode: vrrp` moves it between hosts",
            );
            return None;
        }
        return bgp_plan(inst, bgp, diags).map(LockPlan::Bgp);
    }
    if let Some(mode) = &inst.mode {
        match mode.value.as_str() {
            "lease" => {}
            "vrrp" if inst.peers_pos.is_some() => {
                if inst.kube_lock.is_some() || inst.etcd_lock.is_some() {
                    diags.warning(
                        mode.pos,
                        "`mode: vrrp`: the lock is not used; this VIP is held by VRRP among the peers (migration from keepalived)",
                    );
                }
                return vrrp_plan(inst, diags).map(LockPlan::Vrrp);
            }
            "vrrp" => {
                diags.error(
                    mode.pos,
                    "`mode: vrrp` without `peer`",
                    "`peer: [...]` with the LB hosts' addresses",
                );
                return None;
            }
            other => {
                diags.error(
                    mode.pos,
                    format!("unknown mode `{other}`"),
                    "`lease` (the default: the lock decides, VRRP without one) or `vrrp` (VRRP even with a lock, to share the VIP with keepalived hosts during a migration)",
                );
                return None;
            }
        }
    }
    match (&inst.kube_lock, &inst.etcd_lock) {
        (Some(_), Some(etcd)) => {
            diags.error(
                etcd.pos,
                "both kube_lock and etcd_lock are configured",
                "one lease backend per VIP: kube_lock or etcd_lock",
            );
            None
        }
        (Some(kube), None) => {
            let mut ok = !kube.kubecfgs.is_empty();
            let lease_name = match &kube.lease_name {
                Some(l) if valid_k8s_name(&l.value, 253, true) => l.value.clone(),
                Some(l) => {
                    diags.error(
                        l.pos,
                        format!("lease_name `{}` is not a valid Kubernetes name", l.value),
                        "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
                    );
                    ok = false;
                    String::new()
                }
                None => format!("alive-proxy-{}", name.to_ascii_lowercase()),
            };
            let namespace = match &kube.namespace {
                Some(n) if valid_k8s_name(&n.value, 63, false) => n.value.clone(),
                Some(n) => {
                    diags.error(
                        n.pos,
                        format!(
                            "namespace `{}` is not a valid Kubernetes namespace",
                            n.value
                        ),
                        "lowercase letters, digits and '-', at most 63 characters",
                    );
                    ok = false;
                    String::new()
                }
                None => "kube-system".to_string(),
            };
            let mut kubeconfigs = Vec::new();
            for cfg in &kube.kubecfgs {
                let path = match ctx.base_dir {
                    Some(base) if Path::new(&cfg.value).is_relative() => base.join(&cfg.value),
                    _ => PathBuf::from(&cfg.value),
                };
                check_kubeconfig(&path, cfg.pos, ctx.mode, diags);
                kubeconfigs.push(path);
            }
            ok.then_some(LockPlan::Kube(KubeLock {
                kubeconfigs,
                lease_name,
                namespace,
            }))
        }
        (None, Some(etcd)) => {
            let mut ok = !etcd.endpoints.is_empty();
            for ep in &etcd.endpoints {
                if !valid_endpoint(&ep.value) {
                    diags.error(
                        ep.pos,
                        format!("etcd endpoint `{}` is not a URL", ep.value),
                        "http://HOST:PORT or https://HOST:PORT",
                    );
                    ok = false;
                }
            }
            let key = match &etcd.key {
                Some(k) if k.value.starts_with('/') => k.value.clone(),
                Some(k) => {
                    diags.error(
                        k.pos,
                        format!("etcd key `{}` does not start with /", k.value),
                        "a key such as /alive-proxy/leases/vip-1",
                    );
                    ok = false;
                    String::new()
                }
                None => format!("/alive-proxy/leases/{name}"),
            };
            ok.then(|| {
                LockPlan::Etcd(EtcdLock {
                    endpoints: etcd.endpoints.iter().map(|e| e.value.clone()).collect(),
                    key,
                })
            })
        }
        (None, None) if inst.peers_pos.is_some() => vrrp_plan(inst, diags).map(LockPlan::Vrrp),
        (None, None) => Some(LockPlan::None),
    }
}

/// `vip.bgp`: every healthy host announces the VIP, so nothing else may decide who holds it.
fn bgp_plan(inst: &RawInstance, bgp: &RawBgp, diags: &mut Diags<'_>) -> Option<BgpPlan> {
    let mut ok = true;
    let conflicts = [
        ("kube_lock", inst.kube_lock.as_ref().map(|k| k.pos)),
        ("etcd_lock", inst.etcd_lock.as_ref().map(|e| e.pos)),
    ];
    for (key, pos) in conflicts {
        if let Some(pos) = pos {
            diags.error(
                pos,
                format!(
                    "`{key}` and `bgp` both decide who holds this VIP: with bgp every healthy host announces it"
                ),
                "either `bgp` (active-active over ECMP) or a lease (one host at a time)",
            );
            ok = false;
        }
    }
    let table = match bgp.table {
        // 253-255 are the kernel's default, main and local tables: a blackhole route there
        // would blackhole the VIP on this host itself.
        Some(t) if (253..=255).contains(&t.value) => {
            diags.error(
                t.pos,
                format!("bgp.table {} is one of the kernel's own tables (default, main, local)", t.value),
                "a table of alive-proxy's own, such as 161 (the default), that BIRD's kernel protocol learns",
            );
            ok = false;
            0
        }
        Some(t) => u32::try_from(t.value).unwrap_or(BgpPlan::DEFAULT_TABLE),
        None => BgpPlan::DEFAULT_TABLE,
    };
    let bird_socket = match &bgp.bird_socket {
        Some(s) if s.value.starts_with('/') => PathBuf::from(&s.value),
        Some(s) => {
            diags.error(
                s.pos,
                format!("bgp.bird_socket `{}` is not an absolute path", s.value),
                "BIRD's control socket, such as /run/bird/bird.ctl",
            );
            ok = false;
            PathBuf::new()
        }
        None => PathBuf::from(BgpPlan::DEFAULT_BIRD_SOCKET),
    };
    for p in &bgp.protocols {
        // BIRD symbol names; anything else could not name a protocol and would be sent to
        // BIRD's command line as is.
        let valid = p
            .value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && p.value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            diags.error(
                p.pos,
                format!(
                    "bgp.protocols entry `{}` is not a BIRD protocol name",
                    p.value
                ),
                "a name from bird.conf such as uplink4 (letters, digits and _)",
            );
            ok = false;
        }
    }
    ok.then(|| BgpPlan {
        table,
        hold_down: bgp.hold_down.unwrap_or(BgpPlan::DEFAULT_HOLD_DOWN),
        withdraw_wait: bgp.withdraw_wait.unwrap_or(BgpPlan::DEFAULT_WITHDRAW_WAIT),
        bird_socket,
        protocols: bgp.protocols.iter().map(|p| p.value.clone()).collect(),
    })
}

/// No lock and a `peer` list: VRRP among the peers, which needs a virtual router id.
fn vrrp_plan(inst: &RawInstance, diags: &mut Diags<'_>) -> Option<VrrpPlan> {
    let Some(id) = inst.id else {
        diags.error(
            inst.peers_pos.unwrap_or(inst.pos),
            "`peer` without a lock means VRRP among the peers, and VRRP needs `id` (the virtual router id)",
            "`id: N` (1..255, the same on every peer) in this vip section, or a kube_lock / etcd_lock",
        );
        return None;
    };
    let v = &inst.vrrp;
    let preempt = match (v.preempt, v.nopreempt) {
        (Some(p), Some(n)) if p.value == n.value => {
            diags.error(
                n.pos,
                format!(
                    "nopreempt {} contradicts preempt {} at line {}",
                    n.value, p.value, p.pos.line
                ),
                "one of preempt / nopreempt",
            );
            return None;
        }
        (Some(p), _) => p.value,
        (None, Some(n)) => !n.value,
        (None, None) => true,
    };
    Some(VrrpPlan {
        vrid: id.value,
        priority: v.priority.map_or(VrrpPlan::DEFAULT_PRIORITY, |p| p.value),
        advert_interval: v
            .advert_int
            .map_or(VrrpPlan::DEFAULT_ADVERT_INTERVAL, |a| a.value),
        preempt,
        preempt_delay: v.preempt_delay.map_or(Duration::ZERO, |d| d.value),
    })
}

/// VRRP keys on an instance that does not run VRRP are kept (the file stays valid) but said
/// to have no effect.
fn warn_unused_vrrp_keys(inst: &RawInstance, lock: &LockPlan, diags: &mut Diags<'_>) {
    let held_by = match lock {
        LockPlan::Vrrp(_) => return,
        LockPlan::None => "this host alone (no lock and no `peer`)",
        LockPlan::Kube(_) => "the kube_lock lease",
        LockPlan::Etcd(_) => "the etcd_lock lease",
        LockPlan::Bgp(_) => "every healthy host over BGP (`bgp`)",
    };
    if let Some((key, pos)) = inst.vrrp.first_given() {
        diags.warning(
            pos,
            format!(
                "`{key}` has no effect: VRRP runs only with a `peer` list and no lock, and this VIP is held by {held_by}"
            ),
        );
    }
}

fn valid_endpoint(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace))
}

fn check_kubeconfig(path: &Path, pos: Pos, mode: Mode, diags: &mut Diags<'_>) {
    let problem = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => None,
        Ok(_) => Some(format!("kubeconfig {} is not a file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("kubeconfig {} does not exist", path.display()))
        }
        Err(e) => Some(format!("kubeconfig {} cannot be read: {e}", path.display())),
    };
    if let Some(message) = problem {
        diags.problem(
            mode == Mode::Run,
            pos,
            message,
            "a readable kubeconfig file on this host",
        );
    }
}

fn service(
    vip: IpAddr,
    port: u16,
    raw: &RawPort,
    inst: &RawInstance,
    backends_ok: bool,
    diags: &mut Diags<'_>,
) -> Option<Service> {
    let vs = &raw.vs;
    let family = Family::of(&vip);
    let mut ok = true;
    if let Some(f) = vs.ip_family
        && f.value != family
    {
        diags.error(
            f.pos,
            "ip_family does not match the VIP's address family",
            match family {
                Family::V4 => "inet (the VIP is IPv4)",
                Family::V6 => "inet6 (the VIP is IPv6)",
            },
        );
        ok = false;
    }
    let scheduler = vs.scheduler.map(|s| s.value).unwrap_or(Scheduler::Wlc);
    for flag in &vs.sched_flags {
        if flag.value.scheduler() != scheduler {
            diags.error(
                flag.pos,
                format!(
                    "`{}` only applies to the {} scheduler, and this service uses {}",
                    flag.value.name(),
                    flag.value.scheduler().name(),
                    scheduler.name()
                ),
                format!("lb_algo {}", flag.value.scheduler().name()),
            );
            ok = false;
        }
    }
    let persistence = persistence(vs, family, diags, &mut ok);
    let sorry_server = match vs.sorry_server {
        Some(s) if Family::of(&s.ip.value) != family => {
            diags.error(
                s.ip.pos,
                format!(
                    "sorry_server {} is not of the VIP's address family",
                    s.ip.value
                ),
                family_expected(family),
            );
            ok = false;
            None
        }
        Some(s) => Some(SocketAddr::new(s.ip.value, s.port.unwrap_or(port))),
        None => None,
    };
    if let (Some(u), Some(l)) = (raw.rs.uthreshold, raw.rs.lthreshold)
        && u.value > 0
        && l.value >= u.value
    {
        diags.error(
            l.pos,
            format!("lthreshold {} is not below uthreshold {}", l.value, u.value),
            "lthreshold lower than uthreshold",
        );
        ok = false;
    }
    let mut backends = Vec::new();
    for ip in &inst.ips {
        let addr = SocketAddr::new(ip.value, port);
        match backend(addr, vs, &raw.rs, diags) {
            Some(b) => backends.push(b),
            None => ok = false,
        }
    }
    if !ok || !backends_ok {
        return None;
    }
    let (quorum, hysteresis) = quorum(vs, &backends, diags);
    Some(Service {
        vip,
        port,
        scheduler,
        persistence,
        quorum,
        hysteresis,
        sorry_server,
        backends,
        connect_timeout: vs.timers.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        idle_timeout: raw.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
        client_fin_timeout: raw.client_fin_timeout.unwrap_or(DEFAULT_FIN_TIMEOUT),
        server_fin_timeout: raw.server_fin_timeout.unwrap_or(DEFAULT_FIN_TIMEOUT),
        proxy_protocol: raw.proxy_protocol.unwrap_or(ProxyProtocol::Off),
        transparent: raw.transparent.unwrap_or(false),
        max_connections: raw.max_connections.unwrap_or(0),
        on_backend_down: raw.on_backend_down.unwrap_or(OnBackendDown::Close),
        connect_attempts: raw.connect_attempts.unwrap_or(DEFAULT_CONNECT_ATTEMPTS),
    })
}

fn persistence(
    vs: &VirtualServer,
    family: Family,
    diags: &mut Diags<'_>,
    ok: &mut bool,
) -> Option<Persistence> {
    let full = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let prefix = match vs.persistence_granularity {
        Some(g) => match (g.value, family) {
            (Granularity::V4(p), Family::V4) | (Granularity::V6(p), Family::V6) => p,
            (Granularity::V4(_), Family::V6) => {
                diags.error(
                    g.pos,
                    "persistence_granularity is an IPv4 netmask but the VIP is IPv6",
                    "a prefix length 1..128",
                );
                *ok = false;
                return None;
            }
            (Granularity::V6(_), Family::V4) => {
                diags.error(
                    g.pos,
                    "persistence_granularity is a prefix length but the VIP is IPv4",
                    "a netmask such as 255.255.255.0",
                );
                *ok = false;
                return None;
            }
        },
        None => full,
    };
    let timeout = match (vs.persistence_timeout, vs.persistence_granularity) {
        (Some(t), _) => t.value,
        // keepalived: a granularity alone turns persistence on with the default timeout.
        (None, Some(_)) => keepalived::virtual_server::DEFAULT_PERSISTENCE_TIMEOUT,
        (None, None) => return None,
    };
    Some(Persistence {
        timeout: Duration::from_secs(u64::from(timeout)),
        granularity_prefix: prefix,
    })
}

/// keepalived (check_data.c) lowers a quorum above the total weight and a hysteresis at or
/// above the quorum, with a warning; so do we.
fn quorum(vs: &VirtualServer, backends: &[Backend], diags: &mut Diags<'_>) -> (u32, u32) {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    let mut quorum = vs.quorum.map(|q| q.value).unwrap_or(1);
    if let Some(q) = vs.quorum
        && u64::from(q.value) > total
    {
        let reduced = total.max(1) as u32;
        diags.warning(
            q.pos,
            format!(
                "quorum {} exceeds the total weight {total} of the backends; using {reduced}",
                q.value
            ),
        );
        quorum = reduced;
    }
    let mut hysteresis = vs.hysteresis.map(|h| h.value).unwrap_or(0);
    if let Some(h) = vs.hysteresis
        && h.value >= quorum
    {
        hysteresis = quorum - 1;
        diags.warning(
            h.pos,
            format!(
                "hysteresis {} is not below quorum {quorum}; using {hysteresis}",
                h.value
            ),
        );
    }
    (quorum, hysteresis)
}

fn backend(
    addr: SocketAddr,
    vs: &VirtualServer,
    rs: &RealServer,
    diags: &mut Diags<'_>,
) -> Option<Backend> {
    let mut checks = Vec::new();
    let mut ok = true;
    for checker in &rs.checkers {
        match check(addr, checker, vs, rs, diags) {
            Some(c) => checks.push(c),
            None => ok = false,
        }
    }
    let base_alpha = rs.alpha.unwrap_or(vs.alpha);
    let alpha = if !rs.checkers.is_empty() && rs.checkers.iter().all(|c| c.alpha.is_some()) {
        rs.checkers.iter().any(|c| c.alpha == Some(true))
    } else {
        base_alpha || rs.checkers.iter().any(|c| c.alpha == Some(true))
    };
    ok.then(|| Backend {
        addr,
        weight: rs.weight.or(vs.weight).unwrap_or(1),
        inhibit_on_failure: rs.inhibit_on_failure.unwrap_or(vs.inhibit_on_failure),
        upper_threshold: rs.uthreshold.map(|v| v.value).unwrap_or(0),
        lower_threshold: rs.lthreshold.map(|v| v.value).unwrap_or(0),
        alpha,
        checks,
    })
}

fn check(
    backend: SocketAddr,
    c: &Checker,
    vs: &VirtualServer,
    rs: &RealServer,
    diags: &mut Diags<'_>,
) -> Option<Check> {
    let interval = c
        .timers
        .delay_loop
        .or(rs.timers.delay_loop)
        .or(vs.timers.delay_loop)
        .unwrap_or(DEFAULT_DELAY_LOOP);
    let connect_timeout = c
        .timers
        .connect_timeout
        .or(rs.timers.connect_timeout)
        .or(vs.timers.connect_timeout)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let retry = c
        .timers
        .retry
        .or(rs.timers.retry)
        .or(vs.timers.retry)
        .unwrap_or(c.kind.default_retry());
    let delay_before_retry = c
        .timers
        .delay_before_retry
        .or(rs.timers.delay_before_retry)
        .or(vs.timers.delay_before_retry)
        .unwrap_or(c.kind.default_delay_before_retry());
    let warmup = c
        .timers
        .warmup
        .or(rs.timers.warmup)
        .or(vs.timers.warmup)
        .unwrap_or(interval);
    let connect = SocketAddr::new(
        c.conn.connect_ip.map(|i| i.value).unwrap_or(backend.ip()),
        c.conn.connect_port.unwrap_or(backend.port()),
    );
    let bind = match (c.conn.bindto, c.conn.bind_port) {
        (None, None) => None,
        (ip, port) => {
            let ip = match ip {
                Some(ip) if ip.value.is_ipv4() != connect.is_ipv4() => {
                    diags.error(
                        ip.pos,
                        format!(
                            "bindto {} is not of the address family of the probe target",
                            ip.value
                        ),
                        "an address of the same family as connect_ip (or the backend)",
                    );
                    return None;
                }
                Some(ip) => ip.value,
                None if connect.is_ipv4() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            Some(SocketAddr::new(ip, port.unwrap_or(0)))
        }
    };
    let http = |spec: &keepalived::HttpSpec| HttpCheck {
        connect,
        bind,
        urls: spec.urls.clone(),
        virtualhost: spec
            .virtualhost
            .clone()
            .or_else(|| rs.virtualhost.clone())
            .or_else(|| vs.virtualhost.clone()),
        http_protocol: spec.http_protocol.clone(),
    };
    let kind = match &c.kind {
        CheckerKind::Tcp => CheckKind::Tcp(TcpCheck { connect, bind }),
        CheckerKind::Http(spec) => CheckKind::Http(http(spec)),
        CheckerKind::Ssl(spec) => CheckKind::Ssl(http(spec)),
        CheckerKind::Misc(spec) => CheckKind::Misc(MiscCheck {
            argv: spec.argv.clone(),
            timeout: spec.timeout.unwrap_or(interval),
            dynamic: spec.dynamic,
            user: spec.user.clone(),
        }),
    };
    Some(Check {
        kind,
        interval,
        connect_timeout,
        retry,
        delay_before_retry,
        warmup,
        origin: format!("{}:{}:{}", diags.file(), c.pos.line, c.pos.col),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_seed_rule() {
        assert!(valid_name("vip-1"));
        assert!(valid_name("A9"));
        assert!(!valid_name("-vip"));
        assert!(!valid_name("vip_1"));
        assert!(!valid_name(""));
    }

    #[test]
    fn default_names_derive_from_the_vip() {
        assert_eq!(
            default_name("2004::192:168:128:118".parse().unwrap()),
            "vip-2004--192-168-128-118"
        );
        assert_eq!(default_name("192.0.2.1".parse().unwrap()), "vip-192-0-2-1");
        assert!(valid_name(&default_name("::1".parse().unwrap())));
    }
}
