//! VRRP among the peers (no lock), in network namespaces: LB hosts running
//! `examples/ha_node.rs` with `--peer` (each in its own UTS namespace), Debian's keepalived
//! as a peer, and a host that injects forged adverts. Both address families in every
//! scenario: each LB host runs an IPv4 and an IPv6 virtual router (VRID 51 each).
//!
//! Judged by the kernel's address notifications on every LB host (the VIP on at most one
//! host at any time, from start to end) and by what each host's status reports (role,
//! counters). Failover and handover times are printed (`--nocapture`), never asserted.
//!
//! Run: `cargo test --test ha_vrrp -- --nocapture --test-threads 1`

#[path = "support/ha_lab.rs"]
mod ha_lab;
mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use alive_proxy::ha::vrrp::packet::{self, Advert};
use alive_proxy::stats::control::VrrpView;
use alive_proxy::stats::snapshot::InstanceSnapshot;
use ha_lab::{Cluster, VIP4, VIP6, in_netns, now_secs, start_node};
use support::keepalived::{Keepalived, KeepalivedInstance};
use support::netns::{Host, Lab};
use support::wait;

/// Scenarios measure timing on a 2-core machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const VRID: u8 = 51;
const ADVERT_INT: &str = "0.1";
const LB_V4: [&str; 2] = ["192.0.2.11", "192.0.2.12"];
const LB_V6: [&str; 2] = ["2001:db8::11", "2001:db8::12"];

/// A lab with a client, an extra host (`other`: keepalived's partner-less bystander or the
/// forger) and two LB hosts lb1, lb2.
fn lab() -> (Lab, Host, Host, Vec<Host>) {
    let mut lab = Lab::new();
    let other = lab.add_host("other", &["192.0.2.66/24", "2001:db8::66/64"]);
    let client = lab.add_host("client", &["192.0.2.200/24", "2001:db8::200/64"]);
    let hosts = (0..2)
        .map(|i| {
            lab.add_host(
                &format!("lb{}", i + 1),
                &[&format!("{}/24", LB_V4[i]), &format!("{}/64", LB_V6[i])],
            )
        })
        .collect();
    (lab, other, client, hosts)
}

/// ha_node arguments: both VIPs, VRRP among lb1 and lb2 (each host drops itself), 0.1 s
/// adverts, a status file.
fn node_args(priority: u8, status: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--vip", VIP4, "--vip", VIP6]
        .into_iter()
        .map(String::from)
        .collect();
    for peer in LB_V4.iter().chain(LB_V6.iter()) {
        args.extend(["--peer".to_string(), peer.to_string()]);
    }
    args.extend(
        [
            "--vrid",
            &VRID.to_string(),
            "--advert-int",
            ADVERT_INT,
            "--priority",
            &priority.to_string(),
            "--status-file",
            &status.to_string_lossy(),
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The VRRP view of instance `vip-<n>` (0: IPv4, 1: IPv6) from a node's status file.
fn vrrp_status(path: &Path, instance: usize) -> VrrpView {
    let mut last = String::new();
    for _ in 0..50 {
        last = std::fs::read_to_string(path).unwrap_or_default();
        if let Ok(instances) = serde_json::from_str::<Vec<InstanceSnapshot>>(&last)
            && let Some(view) = instances
                .into_iter()
                .find(|i| i.name == format!("vip-{instance}"))
                .and_then(|i| i.vrrp)
        {
            return view;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no VRRP status for vip-{instance} in {}: {last}",
        path.display()
    );
}

/// Puts a host's link back after a simulated death, with its global IPv6 address.
fn revive(host: &Host, v6: &str) {
    host.set_link(true);
    host.run(
        "ip",
        &["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"],
    );
}

/// Asserts `vip` stays on host `holder` only, sampling for `how_long`.
fn stays_on(cluster: &Cluster, vip: &str, holder: usize, how_long: Duration, what: &str) {
    let until = std::time::Instant::now() + how_long;
    while std::time::Instant::now() < until {
        let holders = cluster.holders(vip);
        assert_eq!(
            holders,
            vec![holder],
            "{what}: {vip} expected on {} only\n{}",
            cluster.nodes[holder].host.name,
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until both VIPs are on host `to` only; returns when each arrived (kernel time),
/// relative to `since`.
fn both_move_to(cluster: &Cluster, to: usize, since: f64, timeout: Duration) -> [f64; 2] {
    let ok = wait::until(timeout, || {
        cluster.holders(VIP4) == vec![to] && cluster.holders(VIP6) == vec![to]
    });
    assert!(
        ok,
        "VIPs did not settle on {} within {timeout:?}: v4 on {:?}, v6 on {:?}\n{}",
        cluster.nodes[to].host.name,
        cluster.holders(VIP4),
        cluster.holders(VIP6),
        cluster.logs()
    );
    [VIP4, VIP6].map(|vip| match cluster.added_at(to, vip, since) {
        Some(at) => at - since,
        None => {
            let events: Vec<_> = cluster.nodes[to]
                .monitor
                .events()
                .into_iter()
                .filter(|e| e.addr == vip)
                .collect();
            println!(
                "no add of {vip} on {} seen after {since:.3}: {events:?}",
                cluster.nodes[to].host.name
            );
            f64::NAN
        }
    })
}

struct Measured(Vec<String>);

impl Measured {
    fn add(&mut self, what: &str, secs: [f64; 2]) {
        let line = format!("{what}: IPv4 {:.3} s, IPv6 {:.3} s", secs[0], secs[1]);
        println!("{line}");
        self.0.push(line);
    }
}

#[test]
fn two_hosts_fail_over_on_link_loss_preempt_on_return_and_hand_over_on_sigterm() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("status dir");
    let status: Vec<PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("lb{i}.json")))
        .collect();
    let (lab, _other, client, hosts) = lab();
    let args = vec![
        node_args(150, &status[0], &[]),
        node_args(100, &status[1], &[]),
    ];
    let mut cluster = Cluster::start_each(lab, client, hosts, &args);
    let mut measured = Measured(Vec::new());
    stays_on(
        &cluster,
        VIP4,
        0,
        Duration::from_millis(500),
        "lb2 joins as backup",
    );
    stays_on(&cluster, VIP6, 0, Duration::ZERO, "lb2 joins as backup");
    for instance in 0..2 {
        let view = vrrp_status(&status[1], instance);
        assert_eq!(view.state, "BACKUP", "{view:?}");
        assert!(view.adverts_received > 0, "{view:?}");
        assert!(
            view.dropped.is_empty(),
            "nothing dropped between peers: {view:?}"
        );
    }
    let master6 = vrrp_status(&status[1], 1).master;
    assert!(
        matches!(master6, Some(IpAddr::V6(a)) if a.is_unicast_link_local()),
        "IPv6 adverts come from the link-local address: {master6:?}"
    );

    // The master's host dies.
    let down = now_secs();
    cluster.nodes[0].host.set_link(false);
    measured.add(
        "failover, master's link down → backup holds",
        both_move_to(&cluster, 1, down, Duration::from_secs(5)),
    );
    for instance in 0..2 {
        assert_eq!(vrrp_status(&status[0], instance).state, "FAULT");
    }

    // It returns: higher priority, preempt.
    let back = now_secs();
    revive(&cluster.nodes[0].host, LB_V6[0]);
    measured.add(
        "preemption, lb1 back → lb1 holds",
        both_move_to(&cluster, 0, back, Duration::from_secs(5)),
    );
    stays_on(
        &cluster,
        VIP4,
        0,
        Duration::from_millis(500),
        "after preemption",
    );

    // SIGTERM: priority 0, lb2 takes over after its skew.
    let signalled = now_secs();
    cluster.nodes[0].process.signal(libc::SIGTERM);
    measured.add(
        "SIGTERM handover (priority 0) → lb2 holds",
        both_move_to(&cluster, 1, signalled, Duration::from_secs(5)),
    );
    let exit = cluster.nodes[0].process.wait_exit(Duration::from_secs(5));
    assert!(
        exit.is_some_and(|s| s.success()),
        "lb1 did not exit cleanly: {exit:?}\n{}",
        cluster.logs()
    );
    assert!(
        cluster.nodes[0]
            .process
            .log()
            .contains("advertising priority 0"),
        "{}",
        cluster.logs()
    );
    for vip in [VIP4, VIP6] {
        let removed = cluster.removed_at(0, vip, signalled).unwrap_or(f64::NAN);
        println!(
            "SIGTERM {vip}: removed on lb1 {:.3} s after the signal",
            removed - signalled
        );
    }
    cluster.assert_never_two_holders(now_secs());
    println!(
        "alive-proxy ↔ alive-proxy, advert_int {ADVERT_INT} s:\n  {}",
        measured.0.join("\n  ")
    );
}

#[test]
fn nopreempt_leaves_the_vip_where_it_is_when_the_better_host_returns() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("status dir");
    let status: Vec<PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("lb{i}.json")))
        .collect();
    let (lab, _other, client, hosts) = lab();
    let args = vec![
        node_args(150, &status[0], &["--nopreempt"]),
        node_args(100, &status[1], &["--nopreempt"]),
    ];
    let cluster = Cluster::start_each(lab, client, hosts, &args);
    let down = now_secs();
    cluster.nodes[0].host.set_link(false);
    both_move_to(&cluster, 1, down, Duration::from_secs(5));
    revive(&cluster.nodes[0].host, LB_V6[0]);
    // Well past a Master_Down_Interval (0.36 s) and a handover wait.
    stays_on(&cluster, VIP4, 1, Duration::from_secs(2), "nopreempt");
    stays_on(&cluster, VIP6, 1, Duration::ZERO, "nopreempt");
    assert_eq!(vrrp_status(&status[0], 0).state, "BACKUP");
    cluster.assert_never_two_holders(now_secs());
}

#[test]
fn with_no_other_peer_listed_adverts_go_to_the_multicast_group() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("status dir");
    let (lab, _other, client, hosts) = lab();
    let args: Vec<Vec<String>> = (0..2)
        .map(|i| {
            let status = dir.path().join(format!("lb{}.json", i + 1));
            let mut a: Vec<String> = [
                "--vip", VIP4, "--vip", VIP6, "--peer", LB_V4[i], "--peer", LB_V6[i],
            ]
            .map(String::from)
            .to_vec();
            a.extend(
                [
                    "--advert-int",
                    ADVERT_INT,
                    "--priority",
                    if i == 0 { "150" } else { "100" },
                    "--status-file",
                    &status.to_string_lossy(),
                ]
                .map(String::from),
            );
            a
        })
        .collect();
    let cluster = Cluster::start_each(lab, client, hosts, &args);
    let status2 = dir.path().join("lb2.json");
    let view4 = vrrp_status(&status2, 0);
    let view6 = vrrp_status(&status2, 1);
    assert_eq!(view4.destinations, vec![IpAddr::V4(packet::MULTICAST_V4)]);
    assert_eq!(view6.destinations, vec![IpAddr::V6(packet::MULTICAST_V6)]);
    assert_eq!(
        (view4.state.as_str(), view6.state.as_str()),
        ("BACKUP", "BACKUP")
    );
    let down = now_secs();
    cluster.nodes[0].host.set_link(false);
    let took = both_move_to(&cluster, 1, down, Duration::from_secs(5));
    println!(
        "multicast failover: IPv4 {:.3} s, IPv6 {:.3} s",
        took[0], took[1]
    );
    cluster.assert_never_two_holders(now_secs());
}

fn keepalived_instances(peer: usize) -> Vec<KeepalivedInstance> {
    vec![
        KeepalivedInstance {
            name: "V4".into(),
            vrid: VRID,
            priority: 100,
            advert_int: ADVERT_INT,
            vip: VIP4.into(),
            peers: vec![LB_V4[peer].into()],
            nopreempt: false,
        },
        KeepalivedInstance {
            name: "V6".into(),
            vrid: VRID,
            priority: 100,
            advert_int: ADVERT_INT,
            vip: VIP6.into(),
            peers: vec![LB_V6[peer].into()],
            nopreempt: false,
        },
    ]
}

/// keepalived on lb1, alive-proxy on lb2, equal priorities (so neither preempts the other):
/// one master at every step, failover and planned handover both ways, IPv4 and IPv6.
#[test]
fn keepalived_and_alive_proxy_share_the_vip_with_one_master_and_fail_over_both_ways() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("status dir");
    let status = dir.path().join("lb2.json");
    let (lab, _other, client, hosts) = lab();
    let (ka_host, ap_host) = (hosts[0].clone(), hosts[1].clone());
    let ka_monitor = ha_lab::AddrMonitor::start(&ka_host);
    let mut keepalived = Keepalived::start(&ka_host, &keepalived_instances(1));
    let settled = wait::until(Duration::from_secs(10), || {
        ka_host.has_address(VIP4) && ka_host.has_address(VIP6)
    });
    assert!(
        settled,
        "keepalived did not become master alone:\n{}\n{}",
        keepalived.config(),
        keepalived.log()
    );
    let ap_args = node_args(100, &status, &[]);
    let ap_monitor = ha_lab::AddrMonitor::start(&ap_host);
    let own: Vec<&str> = ap_args.iter().map(String::as_str).collect();
    let ap = start_node(&ap_host, &own);
    let mut cluster = Cluster {
        nodes: vec![
            ha_lab::Node {
                host: ka_host.clone(),
                // keepalived is no ha_node: the host's link events stand in for its log
                // in `cluster.logs()`; keepalived's own log is added on failures.
                process: ka_host.spawn("links", "ip", &["monitor", "link"]),
                monitor: ka_monitor,
            },
            ha_lab::Node {
                host: ap_host.clone(),
                process: ap,
                monitor: ap_monitor,
            },
        ],
        client,
        lab,
    };
    let mut measured = Measured(Vec::new());
    let context = |cluster: &Cluster, keepalived: &Keepalived| {
        format!(
            "{}\n--- keepalived ---\n{}",
            cluster.logs(),
            keepalived.log()
        )
    };

    // 1. alive-proxy joins as backup: keepalived's adverts accepted, nothing dropped.
    let joined = wait::until(Duration::from_secs(5), || {
        (0..2).all(|i| vrrp_status(&status, i).state == "BACKUP")
    });
    assert!(
        joined,
        "alive-proxy did not become BACKUP\n{}",
        context(&cluster, &keepalived)
    );
    stays_on(
        &cluster,
        VIP4,
        0,
        Duration::from_secs(1),
        "alive-proxy joined as backup",
    );
    stays_on(
        &cluster,
        VIP6,
        0,
        Duration::ZERO,
        "alive-proxy joined as backup",
    );
    for i in 0..2 {
        let view = vrrp_status(&status, i);
        assert!(view.adverts_received > 5, "{view:?}");
        assert!(
            view.dropped.is_empty(),
            "keepalived's adverts must pass every check: {view:?}\n{}",
            context(&cluster, &keepalived)
        );
        println!(
            "keepalived master as alive-proxy sees it (vip-{i}): {:?}",
            view.master
        );
    }

    // 2. keepalived's host dies → alive-proxy.
    let t = now_secs();
    ka_host.set_link(false);
    measured.add(
        "failover keepalived → alive-proxy (link down)",
        both_move_to(&cluster, 1, t, Duration::from_secs(5)),
    );
    // 3. It returns as backup (equal priority: no preemption) and accepts our adverts.
    revive(&ka_host, LB_V6[0]);
    stays_on(
        &cluster,
        VIP4,
        1,
        Duration::from_secs(2),
        "keepalived returned",
    );
    stays_on(&cluster, VIP6, 1, Duration::ZERO, "keepalived returned");

    // 4. alive-proxy stops (priority 0) → keepalived.
    let t = now_secs();
    cluster.nodes[1].process.signal(libc::SIGTERM);
    measured.add(
        "handover alive-proxy → keepalived (SIGTERM, priority 0)",
        both_move_to(&cluster, 0, t, Duration::from_secs(5)),
    );
    cluster.nodes[1].process.wait_exit(Duration::from_secs(5));
    // 5. alive-proxy back as backup.
    cluster.nodes[1].process = start_node(&ap_host, &own);
    stays_on(
        &cluster,
        VIP4,
        0,
        Duration::from_secs(2),
        "alive-proxy restarted",
    );
    stays_on(&cluster, VIP6, 0, Duration::ZERO, "alive-proxy restarted");

    // 6. keepalived stops (priority 0) → alive-proxy.
    let t = now_secs();
    keepalived.stop();
    measured.add(
        "handover keepalived → alive-proxy (SIGTERM, priority 0)",
        both_move_to(&cluster, 1, t, Duration::from_secs(5)),
    );
    // 7. keepalived back as backup.
    keepalived.restart();
    stays_on(
        &cluster,
        VIP4,
        1,
        Duration::from_secs(2),
        "keepalived restarted",
    );
    stays_on(&cluster, VIP6, 1, Duration::ZERO, "keepalived restarted");

    // 8. alive-proxy's host dies → keepalived.
    let t = now_secs();
    ap_host.set_link(false);
    measured.add(
        "failover alive-proxy → keepalived (link down)",
        both_move_to(&cluster, 0, t, Duration::from_secs(5)),
    );
    revive(&ap_host, LB_V6[1]);
    stays_on(
        &cluster,
        VIP4,
        0,
        Duration::from_secs(2),
        "alive-proxy returned",
    );
    stays_on(&cluster, VIP6, 0, Duration::ZERO, "alive-proxy returned");
    for i in 0..2 {
        let view = vrrp_status(&status, i);
        assert_eq!(view.state, "BACKUP", "{view:?}");
        assert!(view.dropped.is_empty(), "{view:?}");
    }

    cluster.assert_never_two_holders(now_secs());
    println!(
        "keepalived 2.2.7 ↔ alive-proxy, advert_int {ADVERT_INT} s, unicast, VRID {VRID}:\n  {}",
        measured.0.join("\n  ")
    );
}

/// What the forger sends, and how many of each.
const FORGED_EACH: u64 = 20;

/// Sends forged adverts from `forger` to `to`: with TTL/hop limit 64, with a bad checksum
/// (IPv4 ones spoofing `peer`, the other LB host; IPv6 ones from the forger's link-local),
/// and from an address that is no peer.
/// Each would change the state if accepted: priority 254 makes a master step down,
/// priority 0 makes a backup take over.
fn forge(forger: &Host, to: [&str; 2], peer: &str) {
    let peer_src: Ipv4Addr = peer.parse().expect("peer v4");
    let to4: Ipv4Addr = to[0].parse().expect("v4");
    let to6: Ipv6Addr = to[1].parse().expect("v6");
    in_netns(forger, move || {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        // IPv4: whole packets, so TTL and source are ours to choose.
        let raw4 = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .expect("raw IPv4 socket");
        let stranger = Ipv4Addr::new(192, 0, 2, 66);
        let dst4 = SockAddr::from(std::net::SocketAddrV4::new(to4, 0));
        let raw6 = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(112)))
            .expect("raw IPv6 socket");
        // SAFETY: the name is a NUL-terminated literal.
        let index = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
        let link_local = link_local_of(index).expect("forger's link-local address");
        let dst6 = SockAddr::from(SocketAddrV6::new(to6, 0, 0, 0));
        raw6.bind(&SockAddr::from(SocketAddrV6::new(link_local, 0, 0, index)))
            .expect("bind the link-local source");
        for n in 0..FORGED_EACH {
            let priority = if n % 2 == 0 { 254 } else { 0 };
            let advert = |vip: IpAddr| Advert {
                vrid: VRID,
                priority,
                interval_cs: 10,
                addresses: vec![vip],
            };
            let v4 = advert(VIP4.parse().expect("VIP4"));
            let v6 = advert(VIP6.parse().expect("VIP6"));
            // TTL 64, spoofing a peer's address.
            let msg = packet::encode(&v4, IpAddr::V4(peer_src), IpAddr::V4(to4));
            let mut ip = packet::ipv4_packet(peer_src, to4, &msg);
            ip[8] = 64;
            raw4.send_to(&ip, &dst4).expect("send TTL 64");
            // Bad checksum.
            let mut msg = packet::encode(&v4, IpAddr::V4(peer_src), IpAddr::V4(to4));
            msg[7] ^= 0x5a;
            raw4.send_to(&packet::ipv4_packet(peer_src, to4, &msg), &dst4)
                .expect("send bad checksum");
            // Not a peer.
            let msg = packet::encode(&v4, IpAddr::V4(stranger), IpAddr::V4(to4));
            raw4.send_to(&packet::ipv4_packet(stranger, to4, &msg), &dst4)
                .expect("send from a stranger");

            // IPv6 from the forger's link-local with a bad checksum (a link-local source may
            // come with any hop limit: keepalived's unicast adverts do).
            let mut msg = packet::encode(&v6, IpAddr::V6(link_local), IpAddr::V6(to6));
            msg[7] ^= 0x5a;
            raw6.send_to(&msg, &dst6).expect("send bad checksum");
            std::thread::sleep(Duration::from_millis(20));
        }
        // IPv6 from a global address that is no peer (another socket: a new source).
        let stranger6: Ipv6Addr = "2001:db8::66".parse().expect("v6");
        let raw6 = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(112)))
            .expect("raw IPv6 socket");
        raw6.bind(&SockAddr::from(SocketAddrV6::new(stranger6, 0, 0, 0)))
            .expect("bind the stranger's address");
        for n in 0..FORGED_EACH {
            let advert = Advert {
                vrid: VRID,
                priority: if n % 2 == 0 { 254 } else { 0 },
                interval_cs: 10,
                addresses: vec![VIP6.parse().expect("VIP6")],
            };
            let msg = packet::encode(&advert, IpAddr::V6(stranger6), IpAddr::V6(to6));
            // Hop limit 64: routed, and from a global address that must then be a peer.
            raw6.set_unicast_hops_v6(64).expect("hop limit 64");
            raw6.send_to(&msg, &dst6).expect("send hop limit 64");
            raw6.set_unicast_hops_v6(255).expect("hop limit 255");
            raw6.send_to(&msg, &dst6).expect("send from a stranger");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// The link-local address on interface `index`, from /proc (this thread's namespace).
fn link_local_of(index: u32) -> Option<Ipv6Addr> {
    let table = std::fs::read_to_string("/proc/thread-self/net/if_inet6").ok()?;
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let idx = u32::from_str_radix(fields.get(1)?, 16).ok()?;
        let hex = fields.first()?;
        let addr = Ipv6Addr::from(u128::from_str_radix(hex, 16).ok()?);
        (idx == index && addr.is_unicast_link_local()).then_some(addr)
    })
}

#[test]
fn forged_adverts_with_a_wrong_ttl_a_bad_checksum_or_an_unknown_source_change_nothing_and_are_counted()
 {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("status dir");
    let status: Vec<PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("lb{i}.json")))
        .collect();
    let (lab, forger, client, hosts) = lab();
    let args = vec![
        node_args(150, &status[0], &[]),
        node_args(100, &status[1], &[]),
    ];
    let cluster = Cluster::start_each(lab, client, hosts, &args);
    let before: Vec<[VrrpView; 2]> = status
        .iter()
        .map(|s| [vrrp_status(s, 0), vrrp_status(s, 1)])
        .collect();

    // Into the master (priority 254 would depose it) and the backup (priority 0 would
    // make it take over), while the address monitors watch.
    let forger_thread = {
        let forger = forger.clone();
        std::thread::spawn(move || {
            forge(&forger, [LB_V4[0], LB_V6[0]], LB_V4[1]);
            forge(&forger, [LB_V4[1], LB_V6[1]], LB_V4[0]);
        })
    };
    while !forger_thread.is_finished() {
        assert_eq!(cluster.holders(VIP4), vec![0], "{}", cluster.logs());
        assert_eq!(cluster.holders(VIP6), vec![0], "{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(30));
    }
    forger_thread.join().expect("forger");
    stays_on(
        &cluster,
        VIP4,
        0,
        Duration::from_millis(500),
        "after the forgeries",
    );
    stays_on(&cluster, VIP6, 0, Duration::ZERO, "after the forgeries");

    for (host, path) in status.iter().enumerate() {
        for (instance, reasons) in [
            (0, ["ttl", "checksum", "source"]),
            (1, ["ttl", "checksum", "source"]),
        ] {
            let view = vrrp_status(path, instance);
            for reason in reasons {
                assert_eq!(
                    view.dropped.get(reason).copied().unwrap_or(0),
                    FORGED_EACH,
                    "lb{} vip-{instance}: {reason} drops\n{view:?}",
                    host + 1
                );
            }
            let was = &before[host][instance];
            assert_eq!(
                view.state,
                was.state,
                "lb{} vip-{instance} changed state",
                host + 1
            );
            assert_eq!(
                view.master,
                was.master,
                "lb{} vip-{instance} changed master",
                host + 1
            );
        }
    }
    cluster.assert_never_two_holders(now_secs());
}
