//! Planned transitions with the real daemon, in network namespaces with the VIP on a veth
//! interface (not loopback, where all of 127/8 stays local and hides what these test):
//! - a holder's SIGTERM hands the VIP to its peer while every established session (a slow
//!   download, 50 keep-alive clients) finishes on the old holder, new connections go to the
//!   new one, and the VIP is never on two hosts' links or claimed by two MACs at once;
//! - in single-host mode a SIGTERM lets a download finish within the drain timeout;
//! - a reload that changes timing and lock endpoints keeps the VIP where it is.
//!
//! Run: `cargo test --test ha_handover -- --nocapture --test-threads 1`

#[path = "support/ha_lab.rs"]
mod ha_lab;
mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ha_lab::{AddrMonitor, ArpCapture, Etcd, assert_one_run_per_mac, now_secs, overlaps};
use support::netns::{Host, Lab};
use support::process::{ChildGuard, spawn_logged};
use support::traffic::{Download, KeepAliveClients, Prober};
use support::wait;

const PORT: u16 = 8080;
const DOWNLOAD: u64 = 12 * 1024 * 1024;

struct Family {
    vip: &'static str,
    backend: &'static str,
    lb: [&'static str; 2],
}

const V4: Family = Family {
    vip: "192.0.2.100",
    backend: "192.0.2.50",
    lb: ["192.0.2.11", "192.0.2.12"],
};
const V6: Family = Family {
    vip: "2001:db8::100",
    backend: "2001:db8::50",
    lb: ["2001:db8::11", "2001:db8::12"],
};

/// The lab every test here uses: a lock host, a backend host, a client and two LB hosts,
/// all dual-stack.
struct Site {
    dir: tempfile::TempDir,
    _backends: Vec<ChildGuard>,
    client: Host,
    lbs: Vec<Host>,
    lock: Host,
    lab: Lab,
}

impl Site {
    fn new() -> Site {
        let mut lab = Lab::new();
        let lock = lab.add_host("lock", &["192.0.2.2/24", "2001:db8::2/64"]);
        let alb = lab.add_host("alb", &["192.0.2.50/24", "2001:db8::50/64"]);
        let client = lab.add_host("client", &["192.0.2.200/24", "2001:db8::200/64"]);
        let lbs = vec![
            lab.add_host("lb1", &["192.0.2.11/24", "2001:db8::11/64"]),
            lab.add_host("lb2", &["192.0.2.12/24", "2001:db8::12/64"]),
        ];
        let backends = [V4.backend, V6.backend]
            .iter()
            .map(|ip| {
                let ip: IpAddr = ip.parse().expect("literal");
                alb.spawn(
                    &format!("backend-{ip}"),
                    env!("CARGO_BIN_EXE_alive-backend"),
                    &[
                        "--listen",
                        &SocketAddr::new(ip, PORT).to_string(),
                        "--health",
                        &SocketAddr::new(ip, 1936).to_string(),
                        "--name",
                        "alb",
                    ],
                )
            })
            .collect();
        for ip in [V4.backend, V6.backend] {
            let addr = SocketAddr::new(ip.parse().expect("literal"), PORT);
            let up = ha_lab::in_netns(&client, move || {
                wait::tcp_listening(addr, Duration::from_secs(10))
            });
            assert!(up, "backend {addr} not listening");
        }
        Site {
            dir: tempfile::tempdir().expect("config dir"),
            _backends: backends,
            client,
            lbs,
            lock,
            lab,
        }
    }

    fn vip_addr(family: &Family) -> SocketAddr {
        SocketAddr::new(family.vip.parse().expect("literal"), PORT)
    }
}

/// The config of one LB host: one instance for `family`'s VIP, `lock` as YAML lines under
/// `vip:` (empty: single host).
fn write_config(dir: &Path, host: &str, family: &Family, lock: &str, timing: &str) -> PathBuf {
    let path = dir.join(format!("{host}.yaml"));
    let text = format!(
        r#"admin:
  socket: "{socket}"
  http: "off"
instances:
  - vip:
      vip: {vip}
      interface: "eth0"
      name: "e2e"
{timing}{lock}    ipvs:
      ips: [ "{backend}" ]
      ports:
        - port: {PORT}
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
        socket = dir.join(format!("{host}.sock")).display(),
        vip = family.vip,
        backend = family.backend,
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn etcd_lock(endpoint: &str) -> String {
    format!("      etcd_lock:\n        endpoints: [ \"{endpoint}\" ]\n")
}

fn start_proxy(host: &Host, config: &Path, drain: &str) -> ChildGuard {
    let mut command = host.command_with_hostname(env!("CARGO_BIN_EXE_alive-proxy"));
    command
        .args([
            "run",
            "--config",
            &config.to_string_lossy(),
            "--drain-timeout",
            drain,
            "--watch-interval",
            "0",
        ])
        .env("ALIVE_PROXY_LOG", "info")
        .env("NO_COLOR", "1");
    spawn_logged(&format!("{}-alive-proxy", host.name), command)
}

/// Waits until a new connection through `vip` is proxied by the LB host `lb`.
fn await_served_by(client: &Host, vip: SocketAddr, lb: &str, proxies: &[&ChildGuard]) {
    let mut last = Err(String::new());
    let served = wait::until(Duration::from_secs(20), || {
        last = support::traffic::peer_through(Some(client), vip);
        last.as_deref() == Ok(lb)
    });
    assert!(
        served,
        "no connection through {vip} served by {lb}; last answer {last:?}\n{}",
        logs(proxies)
    );
}

fn logs(proxies: &[&ChildGuard]) -> String {
    proxies
        .iter()
        .map(|p| format!("--- {} ---\n{}", p.name(), p.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Who decides which LB host holds the VIP in a handover test.
enum Ownership {
    Etcd,
    Vrrp,
}

fn planned_stop_hands_over_without_losing_a_session(family: &Family, ownership: Ownership) {
    let site = Site::new();
    let etcd = matches!(ownership, Ownership::Etcd).then(|| Etcd::start(&site.lock, "192.0.2.2"));
    let vip = Site::vip_addr(family);
    let (lb1, lb2) = (&site.lbs[0], &site.lbs[1]);
    let monitors = [AddrMonitor::start(lb1), AddrMonitor::start(lb2)];
    let lock = match &etcd {
        Some(etcd) => etcd_lock(&etcd.endpoint),
        None => format!(
            "      id: 51\n      advert_int: 0.1\n      peer: [ \"{}\", \"{}\" ]\n",
            family.lb[0], family.lb[1]
        ),
    };
    let mut p1 = start_proxy(
        lb1,
        &write_config(site.dir.path(), "lb1", family, &lock, ""),
        "20s",
    );
    wait::until_or_panic(Duration::from_secs(20), "lb1 to hold the VIP", || {
        lb1.has_address(family.vip)
    });
    let p2 = start_proxy(
        lb2,
        &write_config(site.dir.path(), "lb2", family, &lock, ""),
        "20s",
    );
    wait::until_or_panic(Duration::from_secs(20), "lb2 to see lb1 holding", || {
        let log = p2.log();
        log.contains("lease holder changed") || log.contains("to=\"BACKUP\"")
    });
    await_served_by(&site.client, vip, family.lb[0], &[&p1, &p2]);
    let capture = ArpCapture::start(site.lab.switch_ns(), &site.client.switch_port);

    let download = Download::start(Some(&site.client), vip, DOWNLOAD, Duration::from_millis(25));
    let clients = KeepAliveClients::start(Some(&site.client), vip, 50, Duration::from_millis(50));
    wait::until_or_panic(Duration::from_secs(10), "the download under way", || {
        download.progress() > 256 * 1024
    });
    std::thread::sleep(Duration::from_millis(500));
    let prober = Prober::start(Some(&site.client), vip, Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(300));

    let stopped = Instant::now();
    let stopped_at = now_secs();
    p1.signal(libc::SIGTERM);
    wait::until_or_panic(Duration::from_secs(10), "lb2 to hold the VIP", || {
        lb2.has_address(family.vip)
    });
    let took_over = stopped.elapsed();
    // Long enough for every keep-alive client to send dozens of requests after the switch.
    std::thread::sleep(Duration::from_secs(3));
    let probes = prober.finish();
    let tally = clients.finish();
    let downloaded = download.finish();
    let exit = p1.wait_exit(Duration::from_secs(25));
    let proxies = [&p1, &p2];
    assert!(
        tally.errors.is_empty(),
        "{} of {} keep-alive requests failed, first: {:?}\n{}",
        tally.errors.len(),
        tally.requests,
        &tally.errors[..tally.errors.len().min(5)],
        logs(&proxies)
    );
    assert_eq!(
        downloaded,
        Ok(DOWNLOAD),
        "the download through the old holder did not complete intact\n{}",
        logs(&proxies)
    );
    assert!(
        exit.is_some_and(|s| s.success()),
        "lb1 did not exit cleanly after its sessions drained ({exit:?})\n{}",
        logs(&proxies)
    );
    let failed: Vec<_> = probes.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} new connections failed during the handover: {:?}\n{}",
        failed.len(),
        probes.len(),
        &failed[..failed.len().min(5)],
        logs(&proxies)
    );
    let first_on_lb2 = probes
        .iter()
        .find(|(_, r)| r.as_deref() == Ok(family.lb[1]))
        .map(|(at, _)| at.saturating_duration_since(stopped))
        .unwrap_or_else(|| panic!("no new connection reached lb2: {probes:?}"));
    let late_on_lb1: Vec<_> = probes
        .iter()
        .filter(|(at, r)| {
            at.saturating_duration_since(stopped) > first_on_lb2 && r.as_deref() == Ok(family.lb[0])
        })
        .collect();
    assert!(
        late_on_lb1.is_empty(),
        "new connections went back to the old holder after lb2 served one: {late_on_lb1:?}"
    );

    let until = now_secs();
    let intervals: Vec<(String, Vec<(f64, f64)>)> = monitors
        .iter()
        .map(|m| (m.host.clone(), m.intervals(family.vip, until)))
        .collect();
    let both = overlaps(&intervals);
    assert!(
        both.is_empty(),
        "the VIP was on both links: {both:?}\n{:?}\n{:?}\n{}",
        monitors[0].events(),
        monitors[1].events(),
        logs(&proxies)
    );
    let (claims, capture_log) = capture.finish(family.vip);
    assert_one_run_per_mac(family.vip, &claims, &capture_log);
    println!(
        "{}: SIGTERM → lb2 holds the VIP after {:.3} s, first new connection served by lb2 \
         after {:.3} s; {} keep-alive requests and a {} MiB download through lb1 all intact; \
         lb1 exited {:.1} s after the signal; {} new connections, none failed (t0 {stopped_at:.3})",
        family.vip,
        took_over.as_secs_f64(),
        first_on_lb2.as_secs_f64(),
        tally.requests,
        DOWNLOAD / (1024 * 1024),
        now_secs() - stopped_at,
        probes.len(),
    );
    drop(p2);
    drop(etcd);
}

#[test]
fn planned_stop_hands_over_without_losing_a_session_ipv4() {
    planned_stop_hands_over_without_losing_a_session(&V4, Ownership::Etcd);
}

#[test]
fn planned_stop_hands_over_without_losing_a_session_ipv6() {
    planned_stop_hands_over_without_losing_a_session(&V6, Ownership::Etcd);
}

#[test]
fn planned_stop_on_vrrp_hands_over_without_losing_a_session_ipv4() {
    planned_stop_hands_over_without_losing_a_session(&V4, Ownership::Vrrp);
}

#[test]
fn planned_stop_on_vrrp_hands_over_without_losing_a_session_ipv6() {
    planned_stop_hands_over_without_losing_a_session(&V6, Ownership::Vrrp);
}

#[test]
fn single_host_stop_lets_a_download_finish_within_the_drain_timeout() {
    let site = Site::new();
    let vip = Site::vip_addr(&V4);
    let lb1 = &site.lbs[0];
    let mut p1 = start_proxy(
        lb1,
        &write_config(site.dir.path(), "lb1", &V4, "", ""),
        "20s",
    );
    await_served_by(&site.client, vip, V4.lb[0], &[&p1]);
    let download = Download::start(Some(&site.client), vip, DOWNLOAD, Duration::from_millis(25));
    wait::until_or_panic(Duration::from_secs(10), "the download under way", || {
        download.progress() > 256 * 1024
    });
    let stopped = Instant::now();
    p1.signal(libc::SIGTERM);
    let downloaded = download.finish();
    let finished = stopped.elapsed();
    let exit = p1.wait_exit(Duration::from_secs(25));
    assert_eq!(
        downloaded,
        Ok(DOWNLOAD),
        "the download did not survive the stop\n{}",
        p1.log()
    );
    assert!(
        exit.is_some_and(|s| s.success()),
        "did not exit cleanly: {exit:?}\n{}",
        p1.log()
    );
    assert!(
        !lb1.has_address(V4.vip),
        "the VIP is still on eth0 after the stop"
    );
    println!(
        "single host: download finished {:.1} s after SIGTERM; process exited right after",
        finished.as_secs_f64()
    );
}

#[test]
fn reload_of_timing_and_lock_endpoints_keeps_the_vip_and_every_client() {
    let site = Site::new();
    let etcd = Etcd::start(&site.lock, "192.0.2.2");
    let vip = Site::vip_addr(&V4);
    let lb1 = &site.lbs[0];
    let monitor = AddrMonitor::start(lb1);
    let config = write_config(site.dir.path(), "lb1", &V4, &etcd_lock(&etcd.endpoint), "");
    let mut p1 = start_proxy(lb1, &config, "5s");
    await_served_by(&site.client, vip, V4.lb[0], &[&p1]);
    let held_since = now_secs();
    let clients = KeepAliveClients::start(Some(&site.client), vip, 20, Duration::from_millis(50));
    let prober = Prober::start(Some(&site.client), vip, Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(500));
    // Same lease, new timing, the endpoint listed twice (a second member added).
    let retuned = format!(
        "      etcd_lock:\n        endpoints: [ \"{0}\", \"{0}\" ]\n",
        etcd.endpoint
    );
    write_config(
        site.dir.path(),
        "lb1",
        &V4,
        &retuned,
        "      check_interval: 2\n      check_timeout: 5\n",
    );
    p1.signal(libc::SIGHUP);
    wait::until_or_panic(Duration::from_secs(10), "the reload applied", || {
        p1.log().contains("configuration reloaded")
    });
    std::thread::sleep(Duration::from_secs(3));
    let probes = prober.finish();
    let tally = clients.finish();
    let log = p1.log();
    assert!(
        log.contains("retuned in place (check_interval, check_timeout, etcd endpoints)"),
        "the reload did not apply the change in place:\n{log}"
    );
    assert!(
        tally.errors.is_empty(),
        "{} keep-alive requests failed: {:?}\n{log}",
        tally.errors.len(),
        &tally.errors[..tally.errors.len().min(5)]
    );
    let failed: Vec<_> = probes.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "new connections failed: {failed:?}\n{log}"
    );
    let intervals = monitor.intervals(V4.vip, now_secs());
    assert_eq!(
        intervals.len(),
        1,
        "the VIP left eth0 during the reload: {intervals:?}\n{log}"
    );
    assert!(intervals[0].0 <= held_since, "{intervals:?}");
    assert!(
        !log.contains("VIP removed") && !log.contains("lease released"),
        "the reload let go of the VIP:\n{log}"
    );
    p1.signal(libc::SIGTERM);
    p1.wait_exit(Duration::from_secs(15));
}
