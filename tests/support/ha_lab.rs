//! HA test machinery on top of [`crate::support::netns::Lab`]: a real etcd in its own
//! namespace, LB hosts running `examples/ha_node.rs` (until `alive-proxy run` wires HA), and
//! the two witnesses the HA tests judge by:
//! - [`AddrMonitor`]: `ip -ts monitor address` per LB host, so when a VIP came and went on
//!   each host is known to the microsecond from the kernel's own notifications (sampling
//!   with `ip addr` could miss or invent an overlap);
//! - [`ArpCapture`]: tcpdump on the bridge, every ARP/NA that claims the VIP and its MAC.
//!
//! Included by the HA test files with `#[path = "support/ha_lab.rs"] mod ha_lab;`; not every
//! file uses every helper, hence the allow.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::netns::Host;
use crate::support::ports::free_tcp_port;
use crate::support::process::{ChildGuard, spawn_logged};
use crate::support::wait;

/// Wall-clock seconds since the epoch; the unit of every timeline here.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Builds `examples/ha_node.rs` once per test binary and returns its path.
pub fn ha_node_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "--example", "ha_node"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build --example ha_node");
            assert!(status.success(), "building examples/ha_node.rs failed");
            let exe = std::env::current_exe().expect("test binary path");
            // target/debug/deps/<test> → target/debug/examples/ha_node
            let debug_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("test binary lives in target/<profile>/deps");
            let path = debug_dir.join("examples").join("ha_node");
            assert!(path.exists(), "{} missing after build", path.display());
            path
        })
        .clone()
}

/// A single-member etcd cluster listening on `ip` inside `host`'s namespace.
pub struct Etcd {
    pub guard: ChildGuard,
    pub endpoint: String,
    _data: tempfile::TempDir,
}

impl Etcd {
    pub fn start(host: &Host, ip: &str) -> Etcd {
        let data = tempfile::tempdir().expect("etcd data dir");
        let client_port = free_tcp_port();
        let peer_port = free_tcp_port();
        let endpoint = format!("http://{ip}:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let data_dir = data.path().join("etcd");
        let data_dir = data_dir.to_string_lossy();
        let cluster = format!("lab={peer}");
        let guard = host.spawn(
            "etcd",
            "etcd",
            &[
                "--name",
                "lab",
                "--data-dir",
                &data_dir,
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &cluster,
            ],
        );
        let etcd = Etcd {
            guard,
            endpoint,
            _data: data,
        };
        wait::until_or_panic(Duration::from_secs(15), "etcd ready", || {
            etcd.guard.log().contains("ready to serve client requests")
        });
        etcd
    }

    /// Freezes etcd (SIGSTOP): connections stay open and nothing answers, the worst kind
    /// of outage for a client.
    pub fn pause(&self) {
        self.guard.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.guard.signal(libc::SIGCONT);
    }
}

/// Starts `ha_node` on `host` with its own host name (the lease identity).
pub fn start_node(host: &Host, args: &[&str]) -> ChildGuard {
    let mut command = host.command_with_hostname(&ha_node_binary().to_string_lossy());
    command
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    spawn_logged(&format!("{}-ha_node", host.name), command)
}

/// One address appearing (`added`) or going away on a host, at wall-clock `at`.
#[derive(Debug, Clone)]
pub struct AddrEvent {
    pub at: f64,
    pub added: bool,
    pub addr: String,
}

/// `ip -ts monitor address` on one host's eth0.
pub struct AddrMonitor {
    pub host: String,
    guard: ChildGuard,
    /// Addresses present when the monitor started.
    initial: Vec<String>,
    started: f64,
}

impl AddrMonitor {
    pub fn start(host: &Host) -> AddrMonitor {
        let mut command = host.command("ip");
        command
            .args(["-ts", "monitor", "address", "dev", &host.iface])
            .env("TZ", "UTC");
        let guard = spawn_logged(&format!("{}-addrmon", host.name), command);
        // `ip monitor` has subscribed once it runs; give it a moment before reading state.
        std::thread::sleep(Duration::from_millis(200));
        AddrMonitor {
            host: host.name.clone(),
            guard,
            initial: host.addresses(),
            started: now_secs(),
        }
    }

    pub fn events(&self) -> Vec<AddrEvent> {
        self.guard
            .log()
            .lines()
            .filter_map(parse_monitor_line)
            .collect()
    }

    /// Time intervals `[from, to)` during which `addr` was on the host, up to `until`.
    pub fn intervals(&self, addr: &str, until: f64) -> Vec<(f64, f64)> {
        let mut intervals = Vec::new();
        let mut since = self
            .initial
            .iter()
            .any(|a| a == addr)
            .then_some(self.started);
        for event in self.events().into_iter().filter(|e| e.addr == addr) {
            match (event.added, since) {
                (true, None) => since = Some(event.at),
                (false, Some(from)) => {
                    intervals.push((from, event.at));
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(from) = since {
            intervals.push((from, until));
        }
        intervals
    }
}

/// `[2026-11-25T11:06:33.306270] Deleted 2: eth0    inet 192.0.2.100/32 scope global eth0`
fn parse_monitor_line(line: &str) -> Option<AddrEvent> {
    let rest = line.strip_prefix('[')?;
    let (stamp, rest) = rest.split_once(']')?;
    let at = parse_utc_stamp(stamp)?;
    let rest = rest.trim_start();
    let (added, rest) = match rest.strip_prefix("Deleted ") {
        Some(r) => (false, r),
        None => (true, rest),
    };
    let mut words = rest.split_whitespace();
    words.find(|w| *w == "inet" || *w == "inet6")?;
    let addr = words.next()?.split('/').next()?.to_string();
    Some(AddrEvent { at, added, addr })
}

/// `2026-11-25T11:06:33.306270` (UTC) → seconds since the epoch.
fn parse_utc_stamp(stamp: &str) -> Option<f64> {
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let ss = t.next()?.parse::<f64>().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss)
}

/// Pairs of intervals from different hosts that intersect: the VIP on two hosts at once.
pub fn overlaps(per_host: &[(String, Vec<(f64, f64)>)]) -> Vec<String> {
    let mut found = Vec::new();
    for (i, (host_a, a)) in per_host.iter().enumerate() {
        for (host_b, b) in &per_host[i + 1..] {
            for &(a0, a1) in a {
                for &(b0, b1) in b {
                    if a0 < b1 && b0 < a1 {
                        found.push(format!(
                            "{host_a} [{a0:.6}, {a1:.6}) overlaps {host_b} [{b0:.6}, {b1:.6})"
                        ));
                    }
                }
            }
        }
    }
    found
}

/// One claim on the wire: a gratuitous ARP, an ARP reply or an NA for the VIP.
#[derive(Debug, Clone)]
pub struct Claim {
    pub at: f64,
    pub mac: String,
}

/// tcpdump on one bridge port in the switch namespace: what that host receives, including
/// unicast ARP replies to it (a capture on br0 itself would only see flooded frames).
pub struct ArpCapture {
    guard: ChildGuard,
}

impl ArpCapture {
    pub fn start(switch_ns: &str, port: &str) -> ArpCapture {
        let mut command = Command::new("ip");
        command.args([
            "netns",
            "exec",
            switch_ns,
            "tcpdump",
            "-i",
            port,
            "-n",
            "-e",
            "-l",
            "-tt",
            "-vv",
            "arp or icmp6",
        ]);
        let guard = spawn_logged("bridge-tcpdump", command);
        wait::until_or_panic(Duration::from_secs(5), "tcpdump listening", || {
            guard.log().contains("listening on")
        });
        ArpCapture { guard }
    }

    /// Stops the capture (flushing it) and returns who claimed `vip`, in order.
    pub fn finish(mut self, vip: &str) -> (Vec<Claim>, String) {
        self.guard.signal(libc::SIGINT);
        self.guard.wait_exit(Duration::from_secs(3));
        let log = self.guard.log();
        (claims_in(&log, vip), log)
    }
}

/// Claims in tcpdump `-e -tt -vv` output. ARP: replies `is-at` and gratuitous requests
/// (`who-has VIP tell VIP`). NDP: advertisements whose target is the VIP (on the next line
/// with -vv the option shows the MAC; the Ethernet source is the sender either way).
pub fn claims_in(log: &str, vip: &str) -> Vec<Claim> {
    let mut out = Vec::new();
    for line in log.lines() {
        let mut words = line.split_whitespace();
        let Some(at) = words.next().and_then(|w| w.parse::<f64>().ok()) else {
            continue;
        };
        let Some(src_mac) = words.next().map(str::to_string) else {
            continue;
        };
        let is_claim = line.contains(&format!("Reply {vip} is-at"))
            || line.contains(&format!("who-has {vip} tell {vip},"))
            || (line.contains("neighbor advertisement") && names_target(line, vip));
        if is_claim {
            out.push(Claim { at, mac: src_mac });
        }
    }
    out
}

/// `tgt is <vip>` exactly (not a longer address that starts with it).
fn names_target(line: &str, vip: &str) -> bool {
    let needle = format!("tgt is {vip}");
    line.match_indices(&needle).any(|(i, _)| {
        line[i + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_hexdigit() || c == ':' || c == '.'))
    })
}

/// The MACs that claimed the VIP, one entry per uninterrupted run of the same MAC.
pub fn claim_runs(claims: &[Claim]) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    for claim in claims {
        if runs.last() != Some(&claim.mac) {
            runs.push(claim.mac.clone());
        }
    }
    runs
}

#[test]
fn monitor_lines_parse_to_epoch_seconds() {
    let e = parse_monitor_line(
        "[1970-01-02T00:00:01.500000] Deleted 2: eth0    inet 192.0.2.100/32 scope global eth0",
    )
    .expect("parses");
    assert!((e.at - 86_401.5).abs() < 1e-6, "{}", e.at);
    assert!(!e.added);
    assert_eq!(e.addr, "192.0.2.100");
}
