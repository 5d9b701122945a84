//! Migrating from keepalived one host at a time (docs/ha.md, "Migrating from keepalived"),
//! in network namespaces, IPv4 and IPv6 at once, with the real daemon (`alive-proxy run`)
//! and Debian's keepalived:
//!
//! 1. lb1 runs keepalived (VRRPv3, unicast peers), lb2 runs alive-proxy with the same
//!    alive.yaml plus `mode: vrrp` (its `etcd_lock` stays in the file, unused): one master,
//!    failover keepalived → alive-proxy and alive-proxy → keepalived.
//! 2. lb1 is migrated: keepalived stops (its priority-0 advert hands the VIPs to lb2) and
//!    alive-proxy starts there with the same file: two alive-proxy hosts on VRRP.
//! 3. Finishing on leases: the backup (lb1) stops; the master (lb2) drops `mode: vrrp` and
//!    reloads (SIGHUP): it takes the etcd lease, its VIPs parked for its sessions meanwhile;
//!    lb1 starts with the same file and stays a standby. A lease failover ends the test.
//!
//! At every step the kernel's address notifications on both hosts must never show a VIP on
//! two hosts, and the expected host must hold both VIPs.
//!
//! Run: `cargo test --test ha_migration -- --nocapture`

#[path = "support/ha_lab.rs"]
mod ha_lab;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ha_lab::{AddrMonitor, Cluster, Etcd, Node, VIP4, VIP6, now_secs};
use support::keepalived::{Keepalived, KeepalivedInstance};
use support::netns::{Host, Lab};
use support::process::{ChildGuard, spawn_logged};
use support::wait;

const ETCD_IP: &str = "192.0.2.3";
const BACKEND: &str = "192.0.2.50";
const LB_V4: [&str; 2] = ["192.0.2.11", "192.0.2.12"];
const LB_V6: [&str; 2] = ["2001:db8::11", "2001:db8::12"];
const VRID4: u8 = 51;
const VRID6: u8 = 52;
const ADVERT_INT: &str = "0.1";

/// The operators' alive.yaml (both families, etcd lock, peers, ids), `mode: vrrp` or not.
fn config(dir: &Path, host: &str, etcd: &str, vrrp: bool) -> PathBuf {
    let path = dir.join(format!(
        "{host}-{}.yaml",
        if vrrp { "vrrp" } else { "lease" }
    ));
    let mode = if vrrp { "      mode: vrrp\n" } else { "" };
    let instance = |vip: &str, id: u8, peers: [&str; 2], backend: &str, name: &str| {
        format!(
            r#"  - vip:
      vip: {vip}
      id: {id}
      interface: "eth0"
      name: "{name}"
      peer: [ "{p0}", "{p1}" ]
      advert_int: {ADVERT_INT}
{mode}      etcd_lock:
        endpoints: [ "{etcd}" ]
    ipvs:
      ips: [ "{backend}" ]
      ports:
        - port: 8080
          virtual_server_config: |
            delay_loop 1
            lb_algo rr
            lb_kind NAT
            protocol TCP
          raw_check: |
            TCP_CHECK {{
                connect_timeout 1
                connect_port 1936
            }}
"#,
            p0 = peers[0],
            p1 = peers[1],
        )
    };
    let text = format!(
        "admin:\n  socket: \"{socket}\"\n  http: off\ninstances:\n{v4}{v6}",
        socket = dir.join(format!("{host}.sock")).display(),
        v4 = instance(VIP4, VRID4, LB_V4, BACKEND, "vip-4"),
        v6 = instance(VIP6, VRID6, LB_V6, "2001:db8::50", "vip-6"),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn start_proxy(host: &Host, config: &Path) -> ChildGuard {
    let mut command = host.command_with_hostname(env!("CARGO_BIN_EXE_alive-proxy"));
    command
        .args(["run", "--config", &config.to_string_lossy()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    spawn_logged(&format!("{}-alive-proxy", host.name), command)
}

fn keepalived_instances() -> Vec<KeepalivedInstance> {
    vec![
        KeepalivedInstance {
            name: "V4".into(),
            vrid: VRID4,
            priority: 100,
            advert_int: ADVERT_INT,
            vip: VIP4.into(),
            peers: vec![LB_V4[1].into()],
            nopreempt: false,
        },
        KeepalivedInstance {
            name: "V6".into(),
            vrid: VRID6,
            priority: 100,
            advert_int: ADVERT_INT,
            vip: VIP6.into(),
            peers: vec![LB_V6[1].into()],
            nopreempt: false,
        },
    ]
}

/// How many instances reported becoming a VRRP backup in an alive-proxy log.
fn backups(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("VRRP state changed") && l.contains("BACKUP"))
        .count()
}

fn revive(host: &Host, v6: &str) {
    host.set_link(true);
    host.try_run(
        "ip",
        &["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"],
    );
}

struct Migration {
    cluster: Cluster,
    keepalived: Option<Keepalived>,
    proxies: [Option<ChildGuard>; 2],
}

impl Migration {
    fn context(&self) -> String {
        let mut out = String::new();
        for (i, p) in self.proxies.iter().enumerate() {
            if let Some(p) = p {
                out.push_str(&format!("--- lb{} alive-proxy ---\n{}\n", i + 1, p.log()));
            }
        }
        if let Some(k) = &self.keepalived {
            out.push_str(&format!("--- lb1 keepalived ---\n{}\n", k.log()));
        }
        out
    }

    /// Waits until both VIPs are on `to` only; returns the seconds since `since`.
    fn settle_on(&self, to: usize, since: f64, what: &str) -> f64 {
        let ok = wait::until(Duration::from_secs(10), || {
            self.cluster.holders(VIP4) == vec![to] && self.cluster.holders(VIP6) == vec![to]
        });
        assert!(
            ok,
            "{what}: VIPs not on lb{} alone (v4 {:?}, v6 {:?})\n{}",
            to + 1,
            self.cluster.holders(VIP4),
            self.cluster.holders(VIP6),
            self.context()
        );
        [VIP4, VIP6]
            .iter()
            .filter_map(|vip| self.cluster.added_at(to, vip, since))
            .fold(0.0, f64::max)
            .max(since)
            - since
    }

    /// Samples for `how_long` that both VIPs stay on `on` only.
    fn stays_on(&self, on: usize, how_long: Duration, what: &str) {
        let until = std::time::Instant::now() + how_long;
        while std::time::Instant::now() < until {
            let (h4, h6) = (self.cluster.holders(VIP4), self.cluster.holders(VIP6));
            assert!(
                h4 == vec![on] && h6 == vec![on],
                "{what}: expected lb{} alone, v4 on {h4:?}, v6 on {h6:?}\n{}",
                on + 1,
                self.context()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn one_host_at_a_time_from_keepalived_to_vrrp_to_leases_with_one_holder_at_every_step() {
    let mut lab = Lab::new();
    let lock = lab.add_host("etcd", &[&format!("{ETCD_IP}/24")]);
    let backend = lab.add_host("alb", &[&format!("{BACKEND}/24"), "2001:db8::50/64"]);
    let client = lab.add_host("client", &["192.0.2.200/24", "2001:db8::200/64"]);
    let hosts: Vec<Host> = (0..2)
        .map(|i| {
            lab.add_host(
                &format!("lb{}", i + 1),
                &[&format!("{}/24", LB_V4[i]), &format!("{}/64", LB_V6[i])],
            )
        })
        .collect();
    let etcd = Etcd::start(&lock, ETCD_IP);
    let _backend4 = backend.spawn(
        "alive-backend4",
        env!("CARGO_BIN_EXE_alive-backend"),
        &[
            "--listen",
            &format!("{BACKEND}:8080"),
            "--health",
            &format!("{BACKEND}:1936"),
            "--name",
            "alb",
        ],
    );
    let _backend6 = backend.spawn(
        "alive-backend6",
        env!("CARGO_BIN_EXE_alive-backend"),
        &[
            "--listen",
            "[2001:db8::50]:8080",
            "--health",
            "[2001:db8::50]:1936",
            "--name",
            "alb6",
        ],
    );
    let dir = tempfile::tempdir().expect("config dir");
    let vrrp_cfg = |host: &str| config(dir.path(), host, &etcd.endpoint, true);
    let lease_cfg = |host: &str| config(dir.path(), host, &etcd.endpoint, false);

    // Start: keepalived on lb1 holds both VIPs.
    let monitors = [AddrMonitor::start(&hosts[0]), AddrMonitor::start(&hosts[1])];
    let keepalived = Keepalived::start(&hosts[0], &keepalived_instances());
    let [m0, m1] = monitors;
    let mut mig = Migration {
        cluster: Cluster {
            nodes: vec![
                Node {
                    host: hosts[0].clone(),
                    process: hosts[0].spawn("links", "ip", &["monitor", "link"]),
                    monitor: m0,
                },
                Node {
                    host: hosts[1].clone(),
                    process: hosts[1].spawn("links", "ip", &["monitor", "link"]),
                    monitor: m1,
                },
            ],
            client,
            lab,
        },
        keepalived: Some(keepalived),
        proxies: [None, None],
    };
    mig.settle_on(0, now_secs(), "keepalived alone");

    // 1. lb2 runs alive-proxy with `mode: vrrp`: joins as backup.
    let lb2_cfg = vrrp_cfg("lb2");
    mig.proxies[1] = Some(start_proxy(&hosts[1], &lb2_cfg));
    wait::until_or_panic(Duration::from_secs(20), "lb2 running VRRP", || {
        mig.proxies[1]
            .as_ref()
            .is_some_and(|p| backups(&p.log()) >= 2)
    });
    mig.stays_on(0, Duration::from_secs(2), "alive-proxy joined as backup");

    // Failover keepalived → alive-proxy (lb1's link down), and back as backup.
    let t = now_secs();
    hosts[0].set_link(false);
    let ka_to_ap = mig.settle_on(1, t, "keepalived's host died");
    revive(&hosts[0], LB_V6[0]);
    mig.stays_on(1, Duration::from_secs(2), "keepalived returned as backup");

    // Failover alive-proxy → keepalived (lb2's link down), and back as backup.
    let t = now_secs();
    hosts[1].set_link(false);
    let ap_to_ka = mig.settle_on(0, t, "alive-proxy's host died");
    revive(&hosts[1], LB_V6[1]);
    mig.stays_on(0, Duration::from_secs(2), "alive-proxy returned as backup");

    // 2. lb1 is migrated: keepalived stops (hands over), alive-proxy starts with the file.
    let t = now_secs();
    if let Some(mut k) = mig.keepalived.take() {
        k.stop();
    }
    let ka_stop = mig.settle_on(1, t, "keepalived stopped");
    mig.proxies[0] = Some(start_proxy(&hosts[0], &vrrp_cfg("lb1")));
    wait::until_or_panic(Duration::from_secs(20), "lb1 running VRRP", || {
        mig.proxies[0]
            .as_ref()
            .is_some_and(|p| backups(&p.log()) >= 2)
    });
    mig.stays_on(1, Duration::from_secs(2), "lb1 joined on alive-proxy");

    // 3. Finish on leases: the backup stops, the master reloads without `mode: vrrp`.
    if let Some(mut p) = mig.proxies[0].take() {
        p.terminate(Duration::from_secs(10));
    }
    mig.stays_on(1, Duration::from_secs(1), "backup stopped");
    let t = now_secs();
    // The operator's edit, made atomically (the daemon also watches the file).
    let edited = dir.path().join("lb2-edit.yaml");
    std::fs::copy(lease_cfg("lb2"), &edited).expect("write the edited config");
    std::fs::rename(&edited, &lb2_cfg).expect("replace lb2's config");
    if let Some(p) = &mig.proxies[1] {
        p.signal(libc::SIGHUP);
    }
    let on_lease = wait::until(Duration::from_secs(20), || {
        mig.proxies[1]
            .as_ref()
            .is_some_and(|p| p.log().matches("lease acquired").count() >= 2)
    });
    assert!(on_lease, "lb2 not on the lease\n{}", mig.context());
    let switched = mig.settle_on(1, t, "master moved to the lease");
    mig.proxies[0] = Some(start_proxy(&hosts[0], &lease_cfg("lb1")));
    wait::until_or_panic(Duration::from_secs(20), "lb1 reading the lease", || {
        mig.proxies[0]
            .as_ref()
            .is_some_and(|p| p.log().contains("lease holder changed"))
    });
    mig.stays_on(1, Duration::from_secs(3), "lb1 started on the lease");

    // On leases now: a failover to lb1.
    let t = now_secs();
    hosts[1].set_link(false);
    let lease_failover = mig.settle_on(0, t, "lease failover to lb1");
    let end = now_secs();
    println!(
        "migration: keepalived→alive-proxy failover {ka_to_ap:.3} s, alive-proxy→keepalived \
         {ap_to_ka:.3} s, keepalived stop→alive-proxy {ka_stop:.3} s, VRRP→lease reload on the \
         master: VIPs back on the link {switched:.3} s after SIGHUP, lease failover {lease_failover:.3} s"
    );
    mig.cluster.assert_never_two_holders(end);
}
