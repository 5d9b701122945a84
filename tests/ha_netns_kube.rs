//! HA against the in-tree Kubernetes API server (`examples/fake_kube_api.rs`: two API server
//! endpoints sharing one Lease store, like a cluster with two control-plane nodes), in
//! network namespaces: LB hosts running `examples/ha_node.rs` with two kubeconfigs each.
//! Judged like `ha_etcd.rs`: kernel address notifications on every LB host and a capture of
//! the client's switch port. Timings are printed, not asserted.
//!
//! Run: `cargo test --test ha_netns_kube -- --nocapture --test-threads 1`

#[path = "support/ha_lab.rs"]
mod ha_lab;
mod support;

use std::sync::Mutex;
use std::time::Duration;

use ha_lab::{
    Cluster, FakeKubeApi, Pinger, VIP4, VIP6, assert_one_run_per_mac, lab_with_lbs, now_secs,
};
use support::wait;

const API_IPS: [&str; 2] = ["192.0.2.2", "192.0.2.3"];

static SERIAL: Mutex<()> = Mutex::new(());

fn kube_cluster(lbs: usize) -> (Cluster, FakeKubeApi) {
    let (lab, lock, client, hosts) = lab_with_lbs(&["192.0.2.2/24", "192.0.2.3/24"], lbs);
    let api = FakeKubeApi::start(&lock, &API_IPS);
    let mut args: Vec<String> = ["--vip", VIP4, "--vip", VIP6]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for kubeconfig in &api.kubeconfigs {
        args.push("--kubeconfig".into());
        args.push(kubeconfig.to_string_lossy().into_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cluster = Cluster::start(lab, client, hosts, &args);
    (cluster, api)
}

#[test]
fn kube_vip_moves_to_a_peer_when_the_holder_host_dies() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, _api) = kube_cluster(2);
    assert_eq!(
        cluster.holders(VIP4),
        vec![0],
        "VIP4 must start on lb1 only"
    );
    cluster.client.run("ping", &["-c1", "-W2", VIP4]);
    cluster.client.run("ping", &["-6", "-c1", "-W2", VIP6]);
    let ping4 = Pinger::start(&cluster.client, VIP4, 20);
    let ping6 = Pinger::start(&cluster.client, VIP6, 20);
    std::thread::sleep(Duration::from_millis(300));

    let died = now_secs();
    cluster.nodes[0].host.set_link(false);
    cluster.wait_new_holder(VIP4, 0, Duration::from_secs(10));
    cluster.wait_new_holder(VIP6, 0, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let end = now_secs();
    let v4 = cluster
        .added_at(1, VIP4, died)
        .expect("VIP4 add event on lb2");
    let v6 = cluster
        .added_at(1, VIP6, died)
        .expect("VIP6 add event on lb2");
    println!(
        "host death (kube): VIP4 on lb2 after {:.3} s, VIP6 after {:.3} s; client ping \
         outage v4 {:.3} s, v6 {:.3} s",
        v4 - died,
        v6 - died,
        ping4.longest_gap().map_or(f64::NAN, |g| g.0),
        ping6.longest_gap().map_or(f64::NAN, |g| g.0),
    );
    cluster.assert_never_two_holders(end);
}

#[test]
fn kube_sigterm_hands_the_vip_over_to_a_peer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut cluster, _api) = kube_cluster(2);
    let signalled = now_secs();
    cluster.nodes[0].process.signal(libc::SIGTERM);
    cluster.wait_new_holder(VIP4, 0, Duration::from_secs(5));
    cluster.wait_new_holder(VIP6, 0, Duration::from_secs(5));
    let status = cluster.nodes[0].process.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "lb1 did not exit cleanly: {status:?}\n{}",
        cluster.logs()
    );
    for vip in [VIP4, VIP6] {
        let removed = cluster
            .removed_at(0, vip, signalled)
            .expect("lb1 removed it");
        let added = cluster.added_at(1, vip, signalled).expect("lb2 added it");
        println!(
            "SIGTERM handover (kube) {vip}: off lb1 {:.3} s, on lb2 {:.3} s after the signal",
            removed - signalled,
            added - signalled
        );
    }
    cluster.assert_never_two_holders(now_secs());
}

#[test]
fn kube_holder_cut_off_from_the_api_servers_drops_the_vip_before_a_peer_takes_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, _api) = kube_cluster(2);
    let capture = cluster.capture();
    let arping = cluster.client.spawn(
        "arping",
        "arping",
        &["-i", "eth0", "-W", "0.05", "-c", "200", VIP4],
    );
    let cut = now_secs();
    for ip in API_IPS {
        cluster.nodes[0]
            .host
            .run("ip", &["route", "add", "blackhole", &format!("{ip}/32")]);
    }
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
            "partition from the API servers (kube) {vip}: lb1 dropped it {:.3} s after the \
             cut, lb2 took it {:.3} s after ({:.3} s with nobody holding it)",
            removed - cut,
            added - cut,
            added - removed
        );
        assert!(removed < added, "{vip}: lb2 added it before lb1 removed it");
    }
    cluster.assert_never_two_holders(end);
    let (claims, log) = capture.finish(VIP4);
    assert_one_run_per_mac(VIP4, &claims, &log);
}

#[test]
fn kube_first_api_server_down_holder_keeps_the_vip_through_the_second() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, mut api) = kube_cluster(2);
    let downed = now_secs();
    api.command("down 0");
    // Several renew periods on the second kubeconfig.
    std::thread::sleep(Duration::from_secs(4));
    let lost = cluster.removed_at(0, VIP4, downed);
    assert!(
        lost.is_none(),
        "holder dropped the VIP although the second API server worked\n{}",
        cluster.logs()
    );
    assert_eq!(cluster.holders(VIP4), vec![0], "VIP4 moved");
    assert_eq!(cluster.holders(VIP6), vec![0], "VIP6 moved");
    api.command("up 0");
    cluster.assert_never_two_holders(now_secs());
}

#[test]
fn kube_all_api_servers_down_takes_the_vip_down_until_one_returns() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, mut api) = kube_cluster(2);
    let downed = now_secs();
    api.command("down 0");
    api.command("down 1");
    wait::until_or_panic(
        Duration::from_secs(5),
        "the holder to drop the VIPs",
        || cluster.holders(VIP4).is_empty() && cluster.holders(VIP6).is_empty(),
    );
    let dropped = cluster
        .removed_at(0, VIP4, downed)
        .expect("lb1 removed VIP4");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        cluster.holders(VIP4).is_empty() && cluster.holders(VIP6).is_empty(),
        "a host took the VIP while no API server answered"
    );
    let returned = now_secs();
    api.command("up 1");
    let mut holder = None;
    wait::until_or_panic(
        Duration::from_secs(10),
        "a holder after one API server returned",
        || {
            let h = cluster.holders(VIP4);
            holder = h.first().copied();
            h.len() == 1 && cluster.holders(VIP6).len() == 1
        },
    );
    let holder = holder.expect("a holder");
    let back = cluster
        .added_at(holder, VIP4, returned)
        .expect("VIP4 add event");
    println!(
        "all API servers down (kube): holder dropped the VIP {:.3} s after; {} took it {:.3} s \
         after the second API server returned",
        dropped - downed,
        cluster.nodes[holder].host.name,
        back - returned
    );
    cluster.assert_never_two_holders(now_secs());
}
