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

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::netns::{Host, Lab};
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

/// Builds `examples/<name>.rs` (once per test binary and name) and returns its path.
pub fn example_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf();
    let mut args = vec!["build", "--quiet", "--example", name];
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        args.push("--release");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap_or_else(|e| panic!("run cargo build --example {name}: {e}"));
    assert!(status.success(), "building examples/{name}.rs failed");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} missing after build", path.display());
    built.push((name.to_owned(), path.clone()));
    path
}

pub fn ha_node_binary() -> PathBuf {
    example_binary("ha_node")
}

/// `examples/fake_kube_api.rs` (the in-tree Kubernetes API server) in a namespace, one
/// endpoint per address, with its fault switches driven over stdin.
pub struct FakeKubeApi {
    child: Child,
    stdin: ChildStdin,
    log: PathBuf,
    _dir: tempfile::TempDir,
    /// Admin kubeconfig per endpoint, in `--bind` order.
    pub kubeconfigs: Vec<PathBuf>,
}

impl FakeKubeApi {
    pub fn start(host: &Host, ips: &[&str]) -> FakeKubeApi {
        let dir = tempfile::tempdir().expect("fake API server dir");
        let log = dir.path().join("fake_kube_api.log");
        let log_file = File::create(&log).expect("fake API server log");
        let log_err = log_file.try_clone().expect("clone log handle");
        let mut command = host.command(&example_binary("fake_kube_api").to_string_lossy());
        for ip in ips {
            command.args(["--bind", &format!("{ip}:{}", free_tcp_port())]);
        }
        command
            .args(["--dir", &dir.path().join("pki").to_string_lossy()])
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err))
            .process_group(0);
        let mut child = command.spawn().expect("start fake_kube_api");
        let stdin = child.stdin.take().expect("piped stdin");
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        let ready = wait::until(Duration::from_secs(20), || {
            read_log().lines().any(|l| l == "ready")
        });
        let mut api = FakeKubeApi {
            child,
            stdin,
            log: log.clone(),
            _dir: dir,
            kubeconfigs: Vec::new(),
        };
        assert!(ready, "fake_kube_api not ready:\n{}", read_log());
        api.kubeconfigs = read_log()
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("kubeconfig ")?;
                let mut words = rest.split_whitespace();
                let (_index, user, path) = (words.next()?, words.next()?, words.next()?);
                (user == "kubernetes-admin").then(|| PathBuf::from(path))
            })
            .collect();
        assert_eq!(
            api.kubeconfigs.len(),
            ips.len(),
            "kubeconfigs:\n{}",
            read_log()
        );
        api
    }

    /// Sends a fault-switch line (`down 0`, `up 1`, ...) and waits for it to be applied.
    pub fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to fake_kube_api");
        self.stdin.flush().expect("flush fake_kube_api stdin");
        let log = &self.log;
        wait::until_or_panic(Duration::from_secs(5), line, || {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .any(|l| l == format!("ok {line}"))
        });
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this guard's child leads.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

pub const VIP4: &str = "192.0.2.100";
pub const VIP6: &str = "2001:db8::100";

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
///
/// `ip monitor ... dev eth0` still prints the time stamp of an event it filters out (an
/// address added to `lo`), so one line may carry several stamps: the last one is the
/// event's.
fn parse_monitor_line(line: &str) -> Option<AddrEvent> {
    let mut rest = line.strip_prefix('[')?;
    let mut at;
    loop {
        let (stamp, after) = rest.split_once(']')?;
        at = parse_utc_stamp(stamp)?;
        match after.trim_start().strip_prefix('[') {
            Some(next) => rest = next,
            None => {
                rest = after;
                break;
            }
        }
    }
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

/// Runs `body` on a thread that has joined `host`'s network namespace (setns moves only
/// the calling thread), so every socket `body` opens lives there.
pub fn in_netns<T: Send + 'static>(host: &Host, body: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{}", host.ns);
    let thread = std::thread::spawn(move || {
        let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns(2) on a descriptor we own; it affects only this thread.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        body()
    });
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Sends `count` unsolicited Neighbor Advertisements for `vip` (Override flag, target
/// link-layer address `mac`) to ff02::1 on `host`'s eth0: another host claiming the VIP.
pub fn forge_neighbor_advertisement(host: &Host, vip: &str, mac: &str, count: usize) {
    let vip: std::net::Ipv6Addr = vip.parse().expect("IPv6 VIP");
    let mac: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("MAC byte"))
        .collect();
    in_netns(host, move || {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        // SAFETY: the name is a NUL-terminated literal.
        let index = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
        assert_ne!(index, 0, "no eth0 in the namespace");
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
            .expect("raw ICMPv6 socket");
        socket.set_multicast_hops_v6(255).expect("hop limit 255");
        socket
            .set_multicast_if_v6(index)
            .expect("multicast interface");
        let mut na = vec![136u8, 0, 0, 0, 0x20, 0, 0, 0];
        na.extend_from_slice(&vip.octets());
        na.extend_from_slice(&[2, 1]);
        na.extend_from_slice(&mac);
        let all_nodes =
            std::net::SocketAddrV6::new("ff02::1".parse().expect("literal"), 0, 0, index);
        for _ in 0..count {
            socket
                .send_to(&na, &SockAddr::from(all_nodes))
                .expect("send the forged NA");
        }
    });
}

// ---- A cluster of LB hosts and the checks every HA scenario makes ----

pub struct Node {
    pub host: Host,
    pub process: ChildGuard,
    pub monitor: AddrMonitor,
}

/// LB hosts running ha_node, a client, and the lab. Field order is drop order: processes
/// first, the lab (namespaces) last.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub client: Host,
    pub lab: Lab,
}

/// A lab with a lock host (addresses `lock_addrs`), a client and `lbs` LB hosts lb1..lbN.
pub fn lab_with_lbs(lock_addrs: &[&str], lbs: usize) -> (Lab, Host, Host, Vec<Host>) {
    let mut lab = Lab::new();
    let lock = lab.add_host("lock", lock_addrs);
    let client = lab.add_host("client", &["192.0.2.200/24", "2001:db8::200/64"]);
    let hosts = (1..=lbs)
        .map(|i| {
            lab.add_host(
                &format!("lb{i}"),
                &[&format!("192.0.2.1{i}/24"), &format!("2001:db8::1{i}/64")],
            )
        })
        .collect();
    (lab, lock, client, hosts)
}

impl Cluster {
    /// Starts ha_node with `args` on every host; the first one is started alone and holds
    /// both VIPs before the others start, so every scenario begins with a known holder.
    pub fn start(lab: Lab, client: Host, hosts: Vec<Host>, args: &[&str]) -> Cluster {
        let each = vec![args.iter().map(|a| a.to_string()).collect(); hosts.len()];
        Cluster::start_each(lab, client, hosts, &each)
    }

    /// Like [`Cluster::start`], with each host's own arguments (`args[i]` for host `i`).
    pub fn start_each(lab: Lab, client: Host, hosts: Vec<Host>, args: &[Vec<String>]) -> Cluster {
        let mut nodes: Vec<Node> = Vec::new();
        for (i, host) in hosts.into_iter().enumerate() {
            let monitor = AddrMonitor::start(&host);
            let own: Vec<&str> = args[i].iter().map(String::as_str).collect();
            let process = start_node(&host, &own);
            if nodes.is_empty() {
                wait::until_or_panic(Duration::from_secs(15), "lb1 to hold both VIPs", || {
                    host.has_address(VIP4) && host.has_address(VIP6)
                });
            }
            nodes.push(Node {
                host,
                process,
                monitor,
            });
        }
        wait::until_or_panic(Duration::from_secs(10), "every node running", || {
            nodes
                .iter()
                .all(|n| n.process.log().contains("ha_node running"))
        });
        // Standbys have read the lease once (their first read follows start at once).
        std::thread::sleep(Duration::from_millis(500));
        Cluster { nodes, client, lab }
    }

    pub fn holders(&self, vip: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].host.has_address(vip))
            .collect()
    }

    /// Waits until exactly one LB host other than `not` has `vip`, returns its index.
    pub fn wait_new_holder(&self, vip: &str, not: usize, timeout: Duration) -> usize {
        let mut found = None;
        let ok = wait::until(timeout, || {
            let holders = self.holders(vip);
            found = (holders.len() == 1 && holders[0] != not).then(|| holders[0]);
            found.is_some()
        });
        match (ok, found) {
            (true, Some(i)) => i,
            _ => panic!(
                "{vip} did not move to one other host within {timeout:?}; holders now {:?}\n{}",
                self.holders(vip),
                self.logs()
            ),
        }
    }

    pub fn intervals(&self, vip: &str, until: f64) -> Vec<(String, Vec<(f64, f64)>)> {
        self.nodes
            .iter()
            .map(|n| (n.host.name.clone(), n.monitor.intervals(vip, until)))
            .collect()
    }

    /// First time `vip` was added on node `i` after `after`.
    pub fn added_at(&self, i: usize, vip: &str, after: f64) -> Option<f64> {
        self.nodes[i]
            .monitor
            .events()
            .into_iter()
            .find(|e| e.added && e.addr == vip && e.at >= after)
            .map(|e| e.at)
    }

    /// First time `vip` was removed on node `i` after `after`.
    pub fn removed_at(&self, i: usize, vip: &str, after: f64) -> Option<f64> {
        self.nodes[i]
            .monitor
            .events()
            .into_iter()
            .find(|e| !e.added && e.addr == vip && e.at >= after)
            .map(|e| e.at)
    }

    pub fn assert_never_two_holders(&self, until: f64) {
        for vip in [VIP4, VIP6] {
            let intervals = self.intervals(vip, until);
            let found = overlaps(&intervals);
            assert!(
                found.is_empty(),
                "{vip} was on two hosts at once: {found:?}\nintervals: {intervals:?}\n{}",
                self.logs()
            );
        }
    }

    pub fn mac_of(&self, i: usize) -> String {
        self.nodes[i].host.mac()
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.host.name, n.process.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn capture(&self) -> ArpCapture {
        ArpCapture::start(self.lab.switch_ns(), &self.client.switch_port)
    }
}

pub fn assert_one_run_per_mac(vip: &str, claims: &[Claim], capture_log: &str) {
    let runs = claim_runs(claims);
    let mut seen = std::collections::HashSet::new();
    for mac in &runs {
        assert!(
            seen.insert(mac.clone()),
            "claims for {vip} alternate between MACs {runs:?}: two hosts answered for it\n{capture_log}"
        );
    }
}

/// Client-side pings every 50 ms; returns the longest silence between replies.
pub struct Pinger {
    guard: ChildGuard,
}

impl Pinger {
    pub fn start(client: &Host, vip: &str, seconds: u32) -> Pinger {
        let deadline = seconds.to_string();
        let family = if vip.contains(':') { "-6" } else { "-4" };
        Pinger {
            guard: client.spawn(
                &format!("ping{family}"),
                "ping",
                &[
                    family, "-D", "-n", "-i", "0.05", "-W", "0.2", "-w", &deadline, vip,
                ],
            ),
        }
    }

    /// Longest gap between consecutive replies, and when it started.
    pub fn longest_gap(mut self) -> Option<(f64, f64)> {
        self.guard.signal(libc::SIGINT);
        self.guard.wait_exit(Duration::from_secs(2));
        let replies: Vec<f64> = self
            .guard
            .log()
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
            .collect();
        replies
            .windows(2)
            .map(|w| (w[1] - w[0], w[0]))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }
}

pub fn neighbour_mac(client: &Host, vip: &str) -> Option<String> {
    let out = client.try_run("ip", &["neigh", "show", vip]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_string)
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

#[test]
fn monitor_line_with_the_stamp_of_a_filtered_event_parses_as_the_last_event() {
    let e = parse_monitor_line(
        "[1970-01-02T00:00:01.000000] [1970-01-02T00:00:02.000000] Deleted 3: eth0    inet 192.0.2.100/32 scope global eth0",
    )
    .expect("parses");
    assert!((e.at - 86_402.0).abs() < 1e-6, "{}", e.at);
    assert!(!e.added, "the deletion was read as an addition");
}
