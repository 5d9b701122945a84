//! Single-host mode (no lock configured) and the announcement schedule, in network
//! namespaces: one LB host running `examples/ha_node.rs` without `--etcd`, and a client.
//!
//! Run: `cargo test --test ha_single_host -- --nocapture --test-threads 1`

#[path = "support/ha_lab.rs"]
mod ha_lab;
mod support;

use std::sync::Mutex;
use std::time::Duration;

use ha_lab::{ArpCapture, now_secs, start_node};
use support::netns::Lab;
use support::wait;

const VIP4: &str = "192.0.2.100";
const VIP6: &str = "2001:db8::100";

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn no_lock_and_no_peers_hold_the_vip_unconditionally_and_say_so_at_start() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new();
    let lb1 = lab.add_host("lb1", &["192.0.2.11/24", "2001:db8::11/64"]);
    let mut node = start_node(&lb1, &["--vip", VIP4, "--vip", VIP6]);
    wait::until_or_panic(Duration::from_secs(10), "lb1 to hold both VIPs", || {
        lb1.has_address(VIP4) && lb1.has_address(VIP6)
    });
    assert!(
        node.log().contains("single host: no lock and no peers"),
        "single-host mode not said at start:\n{}",
        node.log()
    );
    node.signal(libc::SIGTERM);
    let status = node.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "ha_node did not exit cleanly on SIGTERM: {status:?}\n{}",
        node.log()
    );
    assert!(
        !lb1.has_address(VIP4) && !lb1.has_address(VIP6),
        "VIPs left on the interface after shutdown: {:?}",
        lb1.addresses()
    );
}

#[test]
fn takeover_announces_five_times_then_five_more_after_five_seconds() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new();
    let client = lab.add_host("client", &["192.0.2.200/24", "2001:db8::200/64"]);
    let lb1 = lab.add_host("lb1", &["192.0.2.11/24", "2001:db8::11/64"]);
    let capture4 = ArpCapture::start(lab.switch_ns(), &client.switch_port);
    let started = now_secs();
    let _node = start_node(&lb1, &["--vip", VIP4, "--vip", VIP6]);
    wait::until_or_panic(Duration::from_secs(10), "lb1 to hold both VIPs", || {
        lb1.has_address(VIP4) && lb1.has_address(VIP6)
    });
    // The second burst is due 5 s after the first; wait for it plus a little.
    std::thread::sleep(Duration::from_millis(6500));
    let (claims4, log) = capture4.finish(VIP4);
    let claims6 = ha_lab::claims_in(&log, VIP6);
    let mac = lb1.mac();
    for (vip, claims, per_announcement) in [(VIP4, &claims4, 2), (VIP6, &claims6, 1)] {
        assert!(
            claims.iter().all(|c| c.mac == mac),
            "{vip} claimed by another MAC than lb1's {mac}: {claims:?}"
        );
        let first = claims.first().map_or(started, |c| c.at);
        let early = claims.iter().filter(|c| c.at < first + 1.0).count();
        let late = claims
            .iter()
            .filter(|c| c.at >= first + 4.0 && c.at < first + 6.0)
            .count();
        println!(
            "{vip}: {early} claims in the takeover burst, {late} in the second burst \
             ({:.3} s after the first)",
            claims
                .iter()
                .find(|c| c.at >= first + 4.0)
                .map_or(f64::NAN, |c| c.at - first)
        );
        assert_eq!(
            early,
            5 * per_announcement,
            "{vip}: takeover burst size\n{log}"
        );
        assert_eq!(
            late,
            5 * per_announcement,
            "{vip}: second burst size\n{log}"
        );
    }
}

#[test]
fn another_mac_advertising_a_held_ipv6_vip_is_logged() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new();
    let lb1 = lab.add_host("lb1", &["192.0.2.11/24", "2001:db8::11/64"]);
    let lb2 = lab.add_host("lb2", &["192.0.2.12/24", "2001:db8::12/64"]);
    let node = start_node(&lb1, &["--vip", VIP6]);
    wait::until_or_panic(Duration::from_secs(10), "lb1 to hold VIP6", || {
        lb1.has_address(VIP6)
    });
    let other_mac = lb2.mac();
    ha_lab::forge_neighbor_advertisement(&lb2, VIP6, &other_mac, 3);
    wait::until_or_panic(Duration::from_secs(5), "lb1 to report the conflict", || {
        node.log().contains("another host claims the VIP we hold")
    });
    assert!(
        node.log().contains(&other_mac),
        "the conflict log does not name lb2's MAC {other_mac}\n{}",
        node.log()
    );
}
