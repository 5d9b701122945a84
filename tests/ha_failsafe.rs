//! The lock-outage failsafe in network namespaces, IPv4 and IPv6 at once: three LB hosts
//! (`examples/ha_node.rs`, each its own host name) hold one VIP of each family with an
//! etcd lease and `--failsafe-key`, a client, and a real etcd on its own host.
//!
//! Judged by the kernel's address notifications on every LB host (the VIP never on two
//! hosts), by sampling the holders every 500 ms, and by TCP requests from the client
//! through both VIPs to a small server on every LB host that answers with its host name.
//! Times are printed (`--nocapture`); only the safety bound is asserted.
//!
//! Run: `cargo test --test ha_failsafe -- --nocapture --test-threads 1`

#[path = "support/ha_lab.rs"]
mod ha_lab;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ha_lab::{Cluster, Etcd, Pinger, VIP4, VIP6, in_netns, lab_with_lbs, now_secs};
use support::netns::Host;
use support::wait;

/// Not 192.0.2.2 (the machine's own eth0 address in the root namespace).
const ETCD_IP: &str = "192.0.2.3";
const SERVICE_PORT: u16 = 8080;
const FAILSAFE_PORT: &str = "7411";
/// Defaults (check_interval 1 s, check_timeout 3 s): renew deadline D and probe period P.
const RENEW_DEADLINE: f64 = 1.5;
const PROBE_PERIOD: f64 = 0.25;

/// Scenarios measure timing on a 2-core machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn write_key(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, secret).expect("write the failsafe key");
    path
}

fn node_args(etcd: &Etcd, key: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--vip",
        VIP4,
        "--vip",
        VIP6,
        "--etcd",
        &etcd.endpoint,
        "--failsafe-key",
        &key.to_string_lossy(),
        "--failsafe-port",
        FAILSAFE_PORT,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 1..=3 {
        args.extend(["--peer".into(), format!("192.0.2.1{i}")]);
        args.extend(["--peer".into(), format!("2001:db8::1{i}")]);
    }
    args
}

/// A TCP server in `host`'s namespace on every address, port [`SERVICE_PORT`], answering
/// each connection with the host's name. Stops when dropped.
struct NameServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NameServer {
    fn start(host: &Host) -> NameServer {
        // The socket is made inside the namespace; accepting on it works from any thread.
        let listener = in_netns(host, || {
            let listener = TcpListener::bind(("::", SERVICE_PORT)).expect("bind [::]:8080");
            listener.set_nonblocking(true).expect("nonblocking");
            listener
        });
        let stop = Arc::new(AtomicBool::new(false));
        let name = host.name.clone();
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(name.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        NameServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Which LB host answers a TCP connection to `vip` from the client, if any.
fn served_by(client: &Host, vip: &str) -> Option<String> {
    let addr: SocketAddr = if vip.contains(':') {
        format!("[{vip}]:{SERVICE_PORT}")
    } else {
        format!("{vip}:{SERVICE_PORT}")
    }
    .parse()
    .ok()?;
    in_netns(client, move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let mut name = String::new();
        stream.read_to_string(&mut name).ok()?;
        Some(name)
    })
}

/// Drops the failsafe port in and out of `host` (nftables in its namespace): cut off from
/// its peers on the channel, still on the link.
fn cut_channel(host: &Host, cut: bool) {
    if cut {
        let rules = format!(
            "table inet failsafe_cut {{ chain in {{ type filter hook input priority 0; udp dport {FAILSAFE_PORT} drop; }}; \
             chain out {{ type filter hook output priority 0; udp dport {FAILSAFE_PORT} drop; }}; }}"
        );
        host.run("nft", &[&rules]);
    } else {
        host.run("nft", &["delete", "table", "inet", "failsafe_cut"]);
    }
}

fn cluster(key_for: impl Fn(usize) -> PathBuf) -> (Cluster, Etcd, Vec<NameServer>) {
    let (lab, lock, client, hosts) = lab_with_lbs(&[&format!("{ETCD_IP}/24")], 3);
    let etcd = Etcd::start(&lock, ETCD_IP);
    let servers = hosts.iter().map(NameServer::start).collect();
    let args: Vec<Vec<String>> = (0..hosts.len())
        .map(|i| node_args(&etcd, &key_for(i)))
        .collect();
    let cluster = Cluster::start_each(lab, client, hosts, &args);
    wait::until_or_panic(Duration::from_secs(5), "failsafe on everywhere", || {
        cluster
            .nodes
            .iter()
            .all(|n| n.process.log().matches("failsafe on").count() == 2)
    });
    (cluster, etcd, servers)
}

fn holders_both(cluster: &Cluster) -> (Vec<usize>, Vec<usize>) {
    (cluster.holders(VIP4), cluster.holders(VIP6))
}

#[test]
fn whole_lock_outage_the_holder_serves_on_and_drops_when_a_peer_is_cut_off() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("key dir");
    let key = write_key(
        dir.path(),
        "failsafe.key",
        "lab failsafe key 0123456789abcdef\n",
    );
    let (cluster, etcd, _servers) = cluster(|_| key.clone());
    assert_eq!(holders_both(&cluster), (vec![0], vec![0]), "lb1 holds both");
    for vip in [VIP4, VIP6] {
        assert_eq!(served_by(&cluster.client, vip).as_deref(), Some("lb1"));
    }
    let ping4 = Pinger::start(&cluster.client, VIP4, 120);
    let ping6 = Pinger::start(&cluster.client, VIP6, 120);

    // The lock hangs for everyone (SIGSTOP: connections open, nothing answers).
    let paused = now_secs();
    etcd.pause();
    let started = Instant::now();
    let (mut requests, mut failed) = (0u32, Vec::new());
    let mut samples = 0u32;
    while started.elapsed() < Duration::from_secs(62) {
        let (h4, h6) = holders_both(&cluster);
        samples += 1;
        assert!(
            h4 == vec![0] && h6 == vec![0],
            "{:.1} s into the outage: VIP4 on {h4:?}, VIP6 on {h6:?}\n{}",
            now_secs() - paused,
            cluster.logs()
        );
        for vip in [VIP4, VIP6] {
            requests += 1;
            let answer = served_by(&cluster.client, vip);
            if answer.as_deref() != Some("lb1") {
                failed.push((now_secs() - paused, vip, answer));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        cluster
            .removed_at(0, VIP4, paused)
            .or(cluster.removed_at(0, VIP6, paused)),
        None,
        "lb1 let go of a VIP during the outage"
    );
    assert!(
        failed.is_empty(),
        "requests through the VIPs not served by lb1 during the outage: {failed:?}"
    );

    // One peer loses the channel: no unanimous round any more; lb1 must drop both VIPs
    // within D (+ one probe period: the last unanimous round may precede the cut by one).
    let cut = now_secs();
    cut_channel(&cluster.nodes[2].host, true);
    wait::until_or_panic(Duration::from_secs(6), "lb1 to drop both VIPs", || {
        holders_both(&cluster) == (vec![], vec![])
    });
    let dropped4 = cluster.removed_at(0, VIP4, cut).expect("VIP4 removed") - cut;
    let dropped6 = cluster.removed_at(0, VIP6, cut).expect("VIP6 removed") - cut;
    let bound = RENEW_DEADLINE + PROBE_PERIOD + 0.3;
    println!(
        "failsafe: kept both VIPs through {:.1} s of etcd outage ({samples} samples, \
         {requests} requests through the VIPs, all served by lb1); peer lb3 cut off the \
         channel -> lb1 dropped VIP4 after {dropped4:.3} s, VIP6 after {dropped6:.3} s \
         (bound D + P = {:.2} s)",
        cut - paused,
        RENEW_DEADLINE + PROBE_PERIOD
    );
    assert!(
        dropped4 <= bound && dropped6 <= bound,
        "dropped after {dropped4:.3} / {dropped6:.3} s, bound {bound:.2} s"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        holders_both(&cluster),
        (vec![], vec![]),
        "nobody may hold a VIP while etcd is down and the failsafe ended"
    );

    // The lock and the channel come back: exactly one holder of each VIP.
    cut_channel(&cluster.nodes[2].host, false);
    let resumed = now_secs();
    etcd.resume();
    wait::until_or_panic(Duration::from_secs(10), "one holder of each VIP", || {
        let (h4, h6) = holders_both(&cluster);
        h4.len() == 1 && h6.len() == 1
    });
    let back = now_secs() - resumed;
    std::thread::sleep(Duration::from_secs(3));
    let (h4, h6) = holders_both(&cluster);
    assert!(
        h4.len() == 1 && h6.len() == 1,
        "VIP4 on {h4:?}, VIP6 on {h6:?}"
    );
    println!("lock back: one holder of each VIP after {back:.3} s (VIP4 {h4:?}, VIP6 {h6:?})");
    let end = now_secs();
    cluster.assert_never_two_holders(end);
    for (vip, ping) in [(VIP4, ping4), (VIP6, ping6)] {
        if let Some((gap, at)) = ping.longest_gap() {
            println!(
                "client ping {vip}: longest gap {gap:.3} s at {:.1} s",
                at - paused
            );
        }
    }
}

#[test]
fn a_holder_alone_cut_off_from_the_lock_gets_no_extension_from_peers_that_reach_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("key dir");
    let key = write_key(
        dir.path(),
        "failsafe.key",
        "lab failsafe key 0123456789abcdef\n",
    );
    let (cluster, _etcd, _servers) = cluster(|_| key.clone());
    assert_eq!(holders_both(&cluster), (vec![0], vec![0]), "lb1 holds both");
    let cut = now_secs();
    cluster.nodes[0].host.run(
        "ip",
        &["route", "add", "blackhole", &format!("{ETCD_IP}/32")],
    );
    let new4 = cluster.wait_new_holder(VIP4, 0, Duration::from_secs(10));
    let new6 = cluster.wait_new_holder(VIP6, 0, Duration::from_secs(10));
    let dropped = cluster.removed_at(0, VIP4, cut).expect("VIP4 removed") - cut;
    let taken = cluster.added_at(new4, VIP4, cut).expect("VIP4 added") - cut;
    println!(
        "holder alone cut off from etcd, peers reach it: lb1 dropped VIP4 after {dropped:.3} s, \
         {} took it after {taken:.3} s; VIP6 on {}",
        cluster.nodes[new4].host.name, cluster.nodes[new6].host.name
    );
    assert!(
        dropped <= RENEW_DEADLINE + 0.3,
        "no extension may come from peers that reach the lock: dropped after {dropped:.3} s"
    );
    cluster.assert_never_two_holders(now_secs());
}

#[test]
fn a_peer_with_another_key_is_never_believed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("key dir");
    let good = write_key(
        dir.path(),
        "good.key",
        "lab failsafe key 0123456789abcdef\n",
    );
    let other = write_key(
        dir.path(),
        "other.key",
        "not the lab key, 0123456789abcdef\n",
    );
    // lb3 has another key: its answers fail authentication at lb1.
    let (cluster, etcd, _servers) = cluster(|i| if i == 2 { other.clone() } else { good.clone() });
    let paused = now_secs();
    etcd.pause();
    wait::until_or_panic(Duration::from_secs(6), "lb1 to drop both VIPs", || {
        holders_both(&cluster) == (vec![], vec![])
    });
    let dropped = cluster.removed_at(0, VIP4, paused).expect("VIP4 removed") - paused;
    println!("etcd frozen, one peer with another key: lb1 dropped VIP4 after {dropped:.3} s");
    // lb1's probes fail authentication at lb3, which drops them (logged, counted) and so
    // never answers.
    assert!(
        cluster.nodes[2]
            .process
            .log()
            .contains("bad authentication tag"),
        "lb3 logs the unauthenticated probes\n{}",
        cluster.nodes[2].process.log()
    );
    etcd.resume();
    wait::until_or_panic(Duration::from_secs(10), "one holder of each VIP", || {
        let (h4, h6) = holders_both(&cluster);
        h4.len() == 1 && h6.len() == 1
    });
    cluster.assert_never_two_holders(now_secs());
}
