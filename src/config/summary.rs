//! The human-readable plan printed by `alive-proxy check`: per VIP its family, interface,
//! id, what holds it (a lease with its kubeconfigs in order, VRRP, or this host alone) and
//! peers; per port the scheduler,
//! persistence, quorum, backends with weights and each health check with its timings.

use std::fmt::Write;
use std::time::Duration;

use super::plan::*;

/// `10s`, `0.5s`, `1.25s`.
pub fn secs(d: Duration) -> String {
    if d.subsec_micros() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let s = format!("{:.6}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

pub fn render(plan: &Plan, warnings: usize) -> String {
    let mut out = String::new();
    let services: usize = plan.instances.iter().map(|i| i.services.len()).sum();
    let backends: usize = plan
        .instances
        .iter()
        .flat_map(|i| &i.services)
        .map(|s| s.backends.len())
        .sum();
    let _ = writeln!(
        out,
        "{}: configuration OK: {} VIP instance{}, {} service{}, {} backend{}{}",
        plan.source.display(),
        plan.instances.len(),
        plural(plan.instances.len()),
        services,
        plural(services),
        backends,
        plural(backends),
        if warnings > 0 {
            format!(", {warnings} warning{}", plural(warnings))
        } else {
            String::new()
        }
    );
    for inst in &plan.instances {
        instance(&mut out, inst);
    }
    let _ = writeln!(
        out,
        "admin: socket {}, http {}, identity {}",
        plan.admin.socket.display(),
        plan.admin
            .http
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".to_string()),
        plan.identity.as_deref().unwrap_or("(host name)")
    );
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn instance(out: &mut String, inst: &Instance) {
    let family = match inst.family() {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    };
    let _ = writeln!(
        out,
        "\ninstance {}: VIP {} ({family}) on interface {}, id {}",
        inst.name,
        inst.vip,
        inst.interface,
        inst.id
            .map(|i| i.to_string())
            .unwrap_or_else(|| "none".to_string())
    );
    let timing = format!(
        "check_interval {}, check_timeout {}",
        secs(inst.check_interval),
        secs(inst.check_timeout)
    );
    match &inst.lock {
        LockPlan::None => {
            let _ = writeln!(
                out,
                "  held by: this host alone (single host: no lock and no peers), {timing}"
            );
        }
        LockPlan::Vrrp(v) => {
            let _ = writeln!(
                out,
                "  held by: VRRPv3 among the peers (no lock): vrid {}, priority {}, advert_int {}, {}",
                v.vrid,
                v.priority,
                secs(v.advert_interval),
                if v.preempt {
                    format!("preempt (preempt_delay {})", secs(v.preempt_delay))
                } else {
                    "nopreempt".to_string()
                }
            );
        }
        LockPlan::Kube(k) => {
            let _ = writeln!(
                out,
                "  lease: kube Lease {}/{}, {timing}",
                k.namespace, k.lease_name
            );
            for (i, cfg) in k.kubeconfigs.iter().enumerate() {
                let _ = writeln!(out, "    kubeconfig {}: {}", i + 1, cfg.display());
            }
        }
        LockPlan::Bgp(b) => {
            let _ = writeln!(
                out,
                "  held by: every healthy host, announced over BGP by BIRD (route in kernel table {}, hold_down {}, withdraw_wait {}, control socket {})",
                b.table,
                secs(b.hold_down),
                secs(b.withdraw_wait),
                b.bird_socket.display()
            );
        }
        LockPlan::Etcd(e) => {
            let _ = writeln!(out, "  lease: etcd key {}, {timing}", e.key);
            for (i, ep) in e.endpoints.iter().enumerate() {
                let _ = writeln!(out, "    endpoint {}: {ep}", i + 1);
            }
        }
    }
    let peers: Vec<String> = inst.peers.iter().map(|p| p.to_string()).collect();
    let _ = writeln!(
        out,
        "  peers: {}{}",
        if peers.is_empty() {
            "none".to_string()
        } else {
            peers.join(", ")
        },
        if matches!(inst.lock, LockPlan::Vrrp(_)) {
            " (adverts go to those that are not this host's addresses; multicast if none is left)"
        } else {
            ""
        }
    );
    if let Some(f) = &inst.failsafe {
        let _ = writeln!(
            out,
            "  failsafe: on, UDP port {}, key {} (through a lock outage the holder keeps the VIP while every peer confirms it)",
            f.port,
            f.key_file.display()
        );
    }
    for svc in &inst.services {
        service(out, svc);
    }
}

fn service(out: &mut String, svc: &Service) {
    let persistence = match svc.persistence {
        Some(p) => format!(
            "persistence {} per /{}",
            secs(p.timeout),
            p.granularity_prefix
        ),
        None => "no persistence".to_string(),
    };
    let _ = writeln!(
        out,
        "  service {}: scheduler {}, {persistence}, quorum {}, hysteresis {}",
        svc.listen_addr(),
        svc.scheduler.name(),
        svc.quorum,
        svc.hysteresis
    );
    let _ = writeln!(
        out,
        "    connect_timeout {}, connect_attempts {}, idle_timeout {}, client_fin_timeout {}, server_fin_timeout {}, max_connections {}, proxy_protocol {}, transparent {}, on_backend_down {}",
        secs(svc.connect_timeout),
        svc.connect_attempts,
        secs(svc.idle_timeout),
        secs(svc.client_fin_timeout),
        secs(svc.server_fin_timeout),
        if svc.max_connections == 0 {
            "unlimited".to_string()
        } else {
            svc.max_connections.to_string()
        },
        match svc.proxy_protocol {
            ProxyProtocol::Off => "off",
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        },
        svc.transparent,
        match svc.on_backend_down {
            OnBackendDown::Close => "close",
            OnBackendDown::Drain => "drain",
        }
    );
    if let Some(sorry) = svc.sorry_server {
        let _ = writeln!(out, "    sorry_server {sorry}");
    }
    for b in &svc.backends {
        let mut flags = Vec::new();
        if b.inhibit_on_failure {
            flags.push("inhibit_on_failure".to_string());
        }
        if b.alpha {
            flags.push("alpha".to_string());
        }
        if b.upper_threshold > 0 {
            flags.push(format!("uthreshold {}", b.upper_threshold));
        }
        if b.lower_threshold > 0 {
            flags.push(format!("lthreshold {}", b.lower_threshold));
        }
        let extra = if flags.is_empty() {
            String::new()
        } else {
            format!(", {}", flags.join(", "))
        };
        let _ = writeln!(out, "    backend {}: weight {}{extra}", b.addr, b.weight);
        if b.checks.is_empty() {
            let _ = writeln!(out, "      no health check (always up)");
        }
        for c in &b.checks {
            check(out, c);
        }
    }
}

fn check(out: &mut String, c: &Check) {
    let what = match &c.kind {
        CheckKind::Tcp(t) => format!("TCP_CHECK connect {}{}", t.connect, bind(t.bind)),
        CheckKind::Http(h) | CheckKind::Ssl(h) => {
            let name = if matches!(c.kind, CheckKind::Ssl(_)) {
                "SSL_GET"
            } else {
                "HTTP_GET"
            };
            let urls: Vec<String> = h
                .urls
                .iter()
                .map(|u| {
                    let status: Vec<String> = u
                        .status
                        .iter()
                        .map(|(a, b)| {
                            if a == b {
                                a.to_string()
                            } else {
                                format!("{a}-{b}")
                            }
                        })
                        .collect();
                    let mut s = format!("{} status {}", u.path, status.join(","));
                    if let Some(d) = &u.digest {
                        s.push_str(&format!(" digest {d}"));
                    }
                    s
                })
                .collect();
            format!(
                "{name} connect {}{} HTTP/{}{} url {}",
                h.connect,
                bind(h.bind),
                h.http_protocol,
                h.virtualhost
                    .as_ref()
                    .map(|v| format!(" host {v}"))
                    .unwrap_or_default(),
                urls.join("; ")
            )
        }
        CheckKind::Misc(m) => format!(
            "MISC_CHECK {:?} timeout {}{}{}",
            m.argv,
            secs(m.timeout),
            if m.dynamic { " dynamic" } else { "" },
            m.user
                .as_ref()
                .map(|u| format!(" user {u}"))
                .unwrap_or_default()
        ),
    };
    let _ = writeln!(
        out,
        "      {what}: delay_loop {}, connect_timeout {}, retry {}, delay_before_retry {}, warmup {} ({})",
        secs(c.interval),
        secs(c.connect_timeout),
        c.retry,
        secs(c.delay_before_retry),
        secs(c.warmup),
        c.origin
    );
}

fn bind(b: Option<std::net::SocketAddr>) -> String {
    b.map(|a| format!(" from {a}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_print_without_trailing_zeros() {
        assert_eq!(secs(Duration::from_secs(10)), "10s");
        assert_eq!(secs(Duration::from_millis(500)), "0.5s");
        assert_eq!(secs(Duration::from_micros(1_250_000)), "1.25s");
    }
}
