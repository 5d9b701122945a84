//! HA against a real etcd, in network namespaces: LB hosts (each with its own host name =
//! lease identity) running `examples/ha_node.rs`, a client, and etcd on one bridge.
//!
//! Each test judges by the kernel's address notifications on every LB host (when the VIP
//! came and went) and by a capture of the client's switch port (who claimed the VIP on the
//! wire). Outage/handover numbers are printed (`--nocapture`), never asserted: speed is the
//! loadtest's job.
//!
//! Run: `cargo test --test ha_etcd -- --nocapture --test-threads 1`

#[path = "support/ha_lab.rs"]
mod ha_lab;
mod support;

use std::sync::Mutex;
use std::time::Duration;

use ha_lab::{
    Cluster, Etcd, Pinger, VIP4, VIP6, assert_one_run_per_mac, lab_with_lbs, neighbour_mac,
    now_secs, start_node,
};
use support::netns::Lab;
use support::wait;

const ETCD_IP: &str = "192.0.2.2";

/// Scenarios measure timing on a 2-core machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn etcd_args(etcd: &Etcd) -> Vec<&str> {
    vec!["--vip", VIP4, "--vip", VIP6, "--etcd", &etcd.endpoint]
}

/// etcd on its own host, a client, and `lbs` LB hosts running ha_node against it.
fn etcd_cluster(lbs: usize) -> (Cluster, Etcd) {
    let (lab, lock, client, hosts) = lab_with_lbs(&[&format!("{ETCD_IP}/24")], lbs);
    let etcd = Etcd::start(&lock, ETCD_IP);
    let cluster = Cluster::start(lab, client, hosts, &etcd_args(&etcd));
    (cluster, etcd)
}

#[test]
fn vip_moves_to_a_peer_when_the_holder_host_dies() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, _etcd) = etcd_cluster(3);
    assert_eq!(
        cluster.holders(VIP4),
        vec![0],
        "VIP4 must start on lb1 only"
    );
    assert_eq!(
        cluster.holders(VIP6),
        vec![0],
        "VIP6 must start on lb1 only"
    );
    let capture = cluster.capture();
    // The client knows the VIP's MAC before the failover.
    cluster.client.run("ping", &["-c1", "-W2", VIP4]);
    cluster.client.run("ping", &["-6", "-c1", "-W2", VIP6]);
    let ping4 = Pinger::start(&cluster.client, VIP4, 20);
    let ping6 = Pinger::start(&cluster.client, VIP6, 20);
    std::thread::sleep(Duration::from_millis(300));

    let died = now_secs();
    cluster.nodes[0].host.set_link(false);
    let new4 = cluster.wait_new_holder(VIP4, 0, Duration::from_secs(10));
    let new6 = cluster.wait_new_holder(VIP6, 0, Duration::from_secs(10));
    // Let the client's pings show the recovery.
    std::thread::sleep(Duration::from_millis(500));
    let end = now_secs();

    let v4_added = cluster
        .added_at(new4, VIP4, died)
        .expect("add event for VIP4");
    let v6_added = cluster
        .added_at(new6, VIP6, died)
        .expect("add event for VIP6");
    let gap4 = ping4.longest_gap();
    let gap6 = ping6.longest_gap();
    println!(
        "host death (etcd): VIP4 on {} after {:.3} s, VIP6 on {} after {:.3} s; \
         client ping outage v4 {:.3} s, v6 {:.3} s",
        cluster.nodes[new4].host.name,
        v4_added - died,
        cluster.nodes[new6].host.name,
        v6_added - died,
        gap4.map_or(f64::NAN, |g| g.0),
        gap6.map_or(f64::NAN, |g| g.0),
    );

    // The announcements alone moved the client: its existing entries name the new MAC.
    assert_eq!(
        neighbour_mac(&cluster.client, VIP4).as_deref(),
        Some(cluster.mac_of(new4).as_str()),
        "client's ARP entry for {VIP4} not updated to the new holder"
    );
    assert_eq!(
        neighbour_mac(&cluster.client, VIP6).as_deref(),
        Some(cluster.mac_of(new6).as_str()),
        "client's neighbour entry for {VIP6} not updated to the new holder"
    );
    cluster.client.run("ping", &["-c1", "-W2", VIP4]);
    cluster.client.run("ping", &["-6", "-c1", "-W2", VIP6]);

    cluster.assert_never_two_holders(end);
    let (claims, log) = capture.finish(VIP4);
    assert_one_run_per_mac(VIP4, &claims, &log);

    // The old holder comes back as a standby: it does not take the VIPs back.
    cluster.nodes[0].host.set_link(true);
    cluster.nodes[0].host.run(
        "ip",
        &["addr", "add", "2001:db8::11/64", "dev", "eth0", "nodad"],
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        cluster.holders(VIP4),
        vec![new4],
        "VIP4 flapped after lb1 returned"
    );
    assert_eq!(
        cluster.holders(VIP6),
        vec![new6],
        "VIP6 flapped after lb1 returned"
    );
    cluster.assert_never_two_holders(now_secs());
}

#[test]
fn sigterm_hands_the_vip_over_to_a_peer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut cluster, _etcd) = etcd_cluster(2);
    let capture = cluster.capture();
    cluster.client.run("ping", &["-c1", "-W2", VIP4]);
    let ping4 = Pinger::start(&cluster.client, VIP4, 10);
    std::thread::sleep(Duration::from_millis(300));

    let signalled = now_secs();
    cluster.nodes[0].process.signal(libc::SIGTERM);
    cluster.wait_new_holder(VIP4, 0, Duration::from_secs(5));
    cluster.wait_new_holder(VIP6, 0, Duration::from_secs(5));
    let status = cluster.nodes[0].process.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "lb1 did not exit cleanly on SIGTERM: {status:?}\n{}",
        cluster.logs()
    );
    std::thread::sleep(Duration::from_millis(300));
    let end = now_secs();

    for vip in [VIP4, VIP6] {
        let removed = cluster
            .removed_at(0, vip, signalled)
            .expect("lb1 removed the VIP");
        let added = cluster
            .added_at(1, vip, signalled)
            .expect("lb2 added the VIP");
        println!(
            "SIGTERM handover (etcd) {vip}: removed on lb1 {:.3} s after the signal, \
             on lb2 {:.3} s after the signal (gap without the VIP {:.3} s)",
            removed - signalled,
            added - signalled,
            added - removed
        );
    }
    if let Some((gap, _)) = ping4.longest_gap() {
        println!("SIGTERM handover (etcd): client ping outage v4 {gap:.3} s");
    }
    assert!(
        cluster.nodes[0].process.log().contains("lease released"),
        "lb1 did not release its lease on SIGTERM\n{}",
        cluster.logs()
    );
    cluster.assert_never_two_holders(end);
    let (claims, log) = capture.finish(VIP4);
    assert_one_run_per_mac(VIP4, &claims, &log);
}

#[test]
fn holder_cut_off_from_etcd_drops_the_vip_before_a_peer_takes_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, _etcd) = etcd_cluster(2);
    let capture = cluster.capture();
    // The client keeps asking who has the VIP, so both hosts would answer if both held it.
    let arping = cluster.client.spawn(
        "arping",
        "arping",
        &["-i", "eth0", "-W", "0.05", "-c", "200", VIP4],
    );

    // lb1 stays on the segment (answers ARP) but cannot reach etcd.
    let cut = now_secs();
    cluster.nodes[0].host.run(
        "ip",
        &["route", "add", "blackhole", &format!("{ETCD_IP}/32")],
    );
    cluster.wait_new_holder(VIP4, 0, Duration::from_secs(10));
    cluster.wait_new_holder(VIP6, 0, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let end = now_secs();
    drop(arping);

    for vip in [VIP4, VIP6] {
        let removed = cluster
            .removed_at(0, vip, cut)
            .expect("lb1 removed the VIP");
        let added = cluster.added_at(1, vip, cut).expect("lb2 added the VIP");
        println!(
            "partition from etcd {vip}: lb1 dropped it {:.3} s after the cut, lb2 took it \
             {:.3} s after the cut ({:.3} s with nobody holding it)",
            removed - cut,
            added - cut,
            added - removed
        );
        assert!(
            removed < added,
            "{vip}: lb2 added it at {added:.6} before lb1 removed it at {removed:.6}"
        );
    }
    cluster.assert_never_two_holders(end);
    let (claims, log) = capture.finish(VIP4);
    assert!(
        claims.iter().any(|c| c.mac == cluster.mac_of(1)),
        "no claim from the new holder was captured\n{log}"
    );
    assert_one_run_per_mac(VIP4, &claims, &log);
    assert!(
        cluster.nodes[0]
            .process
            .log()
            .contains("could not renew the lease in time"),
        "lb1 did not report its missed deadline\n{}",
        cluster.logs()
    );
}

#[test]
fn etcd_outage_takes_the_vip_down_everywhere_until_etcd_returns() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, etcd) = etcd_cluster(2);
    let paused = now_secs();
    etcd.pause();
    wait::until_or_panic(Duration::from_secs(5), "the holder to drop the VIP", || {
        cluster.holders(VIP4).is_empty() && cluster.holders(VIP6).is_empty()
    });
    let dropped = cluster
        .removed_at(0, VIP4, paused)
        .expect("lb1 removed VIP4");
    // A few seconds more with etcd frozen: nobody may take the VIP.
    std::thread::sleep(Duration::from_secs(3));
    let resumed = now_secs();
    etcd.resume();
    let mut holder = None;
    wait::until_or_panic(
        Duration::from_secs(10),
        "a holder after etcd returned",
        || {
            let h4 = cluster.holders(VIP4);
            let ok = h4.len() == 1 && cluster.holders(VIP6).len() == 1;
            holder = h4.first().copied();
            ok
        },
    );
    let holder = holder.expect("a holder");
    let back = cluster
        .added_at(holder, VIP4, resumed)
        .expect("VIP4 add event after resume");
    println!(
        "etcd frozen: holder dropped the VIP {:.3} s after the freeze; nobody held it for the \
         rest of the outage; {} took it {:.3} s after etcd resumed",
        dropped - paused,
        cluster.nodes[holder].host.name,
        back - resumed
    );
    for vip in [VIP4, VIP6] {
        for (host, intervals) in cluster.intervals(vip, now_secs()) {
            for (from, to) in intervals {
                assert!(
                    to <= dropped + 0.5 || from >= resumed,
                    "{vip} on {host} during the etcd outage: [{from:.3}, {to:.3}) vs outage \
                     [{dropped:.3}, {resumed:.3})"
                );
            }
        }
    }
    cluster.assert_never_two_holders(now_secs());
}

#[test]
fn stale_vip_left_on_a_standby_is_removed_at_start() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new();
    let lock = lab.add_host("etcd", &[&format!("{ETCD_IP}/24")]);
    let lb1 = lab.add_host("lb1", &["192.0.2.11/24", "2001:db8::11/64"]);
    let lb2 = lab.add_host("lb2", &["192.0.2.12/24", "2001:db8::12/64"]);
    let etcd = Etcd::start(&lock, ETCD_IP);
    let _n1 = start_node(&lb1, &etcd_args(&etcd));
    wait::until_or_panic(Duration::from_secs(10), "lb1 to hold VIP4", || {
        lb1.has_address(VIP4)
    });
    // As if an earlier run on lb2 had been SIGKILLed while holding.
    lb2.run("ip", &["addr", "add", &format!("{VIP4}/32"), "dev", "eth0"]);
    let n2 = start_node(&lb2, &etcd_args(&etcd));
    wait::until_or_panic(
        Duration::from_secs(5),
        "lb2 to remove the stale VIP",
        || !lb2.has_address(VIP4),
    );
    wait::until_or_panic(Duration::from_secs(5), "the removal to be logged", || {
        n2.log().contains("removed a VIP this host does not hold")
    });
    assert!(lb1.has_address(VIP4), "the real holder lost the VIP");
}

#[test]
fn vip_deleted_by_someone_else_is_put_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, _etcd) = etcd_cluster(1);
    let holder = &cluster.nodes[0];
    holder
        .host
        .run("ip", &["addr", "del", &format!("{VIP4}/32"), "dev", "eth0"]);
    wait::until_or_panic(Duration::from_secs(5), "the VIP to be put back", || {
        holder.host.has_address(VIP4)
    });
    assert!(
        holder
            .process
            .log()
            .contains("removed from the interface by someone else"),
        "re-adding the VIP was not logged\n{}",
        holder.process.log()
    );
}

#[test]
fn another_mac_announcing_a_held_vip_is_logged() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, _etcd) = etcd_cluster(2);
    // lb2's kernel does not hold the VIP; arping forges a gratuitous ARP from lb2's MAC.
    cluster.nodes[1].host.try_run(
        "arping",
        &["-U", "-i", "eth0", "-S", VIP4, "-c", "2", "-W", "0.1", VIP4],
    );
    wait::until_or_panic(Duration::from_secs(5), "lb1 to report the conflict", || {
        cluster.nodes[0]
            .process
            .log()
            .contains("another host claims the VIP we hold")
    });
    assert!(
        cluster.nodes[0].process.log().contains(&cluster.mac_of(1)),
        "the conflict log does not name lb2's MAC\n{}",
        cluster.nodes[0].process.log()
    );
}

#[test]
fn holder_that_cannot_add_the_vip_gives_the_lease_to_a_peer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_lab, lock, _client, hosts) = lab_with_lbs(&[&format!("{ETCD_IP}/24")], 2);
    let etcd = Etcd::start(&lock, ETCD_IP);
    // lb1 is configured with an interface it does not have, and starts first.
    let mut broken = etcd_args(&etcd);
    broken.extend(["--interface", "nosuch0"]);
    let n1 = start_node(&hosts[0], &broken);
    wait::until_or_panic(Duration::from_secs(10), "lb1 to resign the lease", || {
        n1.log().contains("cannot serve the VIP")
    });
    let n2 = start_node(&hosts[1], &etcd_args(&etcd));
    wait::until_or_panic(Duration::from_secs(15), "lb2 to hold both VIPs", || {
        hosts[1].has_address(VIP4) && hosts[1].has_address(VIP6)
    });
    // lb2 keeps them: lb1 does not win the lease back.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        hosts[1].has_address(VIP4) && hosts[1].has_address(VIP6),
        "lb2 lost the VIPs\n--- lb1 ---\n{}\n--- lb2 ---\n{}",
        n1.log(),
        n2.log()
    );
}
