//! A lab of network namespaces: hosts joined by one bridge, as LB hosts, backends and a
//! client would be on one L2 segment. Only documentation ranges are used (192.0.2.0/24,
//! 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32). Everything is removed when the `Lab`
//! drops, also when the test panics; namespaces left by a killed test run are swept by the
//! next `Lab::new`.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use super::process::{ChildGuard, spawn_logged};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);
const NAME_PREFIX: &str = "aplab";

pub struct Lab {
    /// Unique per lab: `aplab<pid>x<n>`; namespace names are `<id>-<host>`.
    id: String,
    switch_ns: String,
    hosts: Vec<Host>,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// The namespace's name for `ip netns exec`.
    pub ns: String,
    /// The host's interface on the bridge (always `eth0`, like the seed's `interface`).
    pub iface: String,
    /// The port's name on the bridge side, inside the switch namespace.
    pub switch_port: String,
}

/// Runs a command and panics with its output if it fails: lab setup must not half-succeed.
pub fn run_checked(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("could not run {program} {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The addresses, without prefix length, that `ip -o addr show` printed.
pub fn addresses_in(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            words
                .next()
                .and_then(|cidr| cidr.split('/').next())
                .map(str::to_string)
        })
        .collect()
}

fn ip(args: &[&str]) -> Output {
    run_checked("ip", args)
}

impl Lab {
    /// Creates the switch namespace with a bridge `br0`.
    pub fn new() -> Lab {
        sweep_stale_labs();
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let id = format!("{NAME_PREFIX}{}x{n}", std::process::id());
        let switch_ns = format!("{id}-sw");
        ip(&["netns", "add", &switch_ns]);
        let lab = Lab {
            id,
            switch_ns,
            hosts: Vec::new(),
        };
        ip(&["-n", &lab.switch_ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lab.switch_ns, "link", "set", "br0", "up"]);
        ip(&["-n", &lab.switch_ns, "link", "set", "lo", "up"]);
        lab
    }

    pub fn switch_ns(&self) -> &str {
        &self.switch_ns
    }

    /// Adds a host with `eth0` on the bridge and the given addresses in CIDR form, e.g.
    /// `["192.0.2.11/24", "2001:db8::11/64"]`. IPv6 DAD is off so addresses work at once.
    pub fn add_host(&mut self, name: &str, addrs: &[&str]) -> Host {
        let ns = format!("{}-{name}", self.id);
        let switch_port = format!("p{}", self.hosts.len());
        ip(&["netns", "add", &ns]);
        let host = Host {
            name: name.to_string(),
            ns: ns.clone(),
            iface: "eth0".into(),
            switch_port: switch_port.clone(),
        };
        self.hosts.push(host.clone());
        for sysctl in [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ] {
            run_checked("ip", &["netns", "exec", &ns, "sysctl", "-q", "-w", sysctl]);
        }
        ip(&[
            "-n",
            &self.switch_ns,
            "link",
            "add",
            &switch_port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ]);
        ip(&[
            "-n",
            &self.switch_ns,
            "link",
            "set",
            &switch_port,
            "master",
            "br0",
            "up",
        ]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        for addr in addrs {
            ip(&["-n", &ns, "addr", "add", addr, "dev", "eth0", "nodad"]);
        }
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        host
    }

    /// Adds a host off the bridge, joined to `router` by a veth pair of its own (`eth0`
    /// here, `router_iface` there), as a client behind an upstream router. The router gets
    /// `router_addrs`, the host `addrs`; the host's default routes point at `gateways`.
    pub fn add_host_behind(
        &mut self,
        name: &str,
        router: &Host,
        router_iface: &str,
        router_addrs: &[&str],
        addrs: &[&str],
        gateways: &[&str],
    ) -> Host {
        let ns = format!("{}-{name}", self.id);
        ip(&["netns", "add", &ns]);
        let host = Host {
            name: name.to_string(),
            ns: ns.clone(),
            iface: "eth0".into(),
            switch_port: String::new(),
        };
        self.hosts.push(host.clone());
        for sysctl in [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ] {
            run_checked("ip", &["netns", "exec", &ns, "sysctl", "-q", "-w", sysctl]);
        }
        ip(&[
            "-n",
            &router.ns,
            "link",
            "add",
            router_iface,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ]);
        for addr in router_addrs {
            ip(&["-n", &router.ns, "addr", "add", addr, "dev", router_iface]);
        }
        ip(&["-n", &router.ns, "link", "set", router_iface, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        for addr in addrs {
            ip(&["-n", &ns, "addr", "add", addr, "dev", "eth0"]);
        }
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        for gateway in gateways {
            ip(&["-n", &ns, "route", "add", "default", "via", gateway]);
        }
        host
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("lab has no host named {name}"))
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for host in &self.hosts {
            remove_namespace(&host.ns);
        }
        remove_namespace(&self.switch_ns);
    }
}

/// Kills every process still inside `ns`, then deletes it.
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) on a pid listed inside our own test namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).output();
}

/// Deletes namespaces of labs whose test process no longer exists.
fn sweep_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_namespace(name);
        }
    }
}

impl Host {
    /// A command that runs `program` inside this host's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns, program]);
        command
    }

    /// Like [`Host::command`], but also in a UTS namespace of its own whose host name is
    /// this host's name: `ip netns exec` alone leaves every "host" with the machine's name,
    /// and the lease identity is the host name.
    pub fn command_with_hostname(&self, program: &str) -> Command {
        let mut command = Command::new("unshare");
        command.args([
            "--uts",
            "sh",
            "-c",
            r#"hostname "$0" && ns="$1" && shift && exec ip netns exec "$ns" "$@""#,
            &self.name,
            &self.ns,
            program,
        ]);
        command
    }

    /// Moves the calling thread into this host's network namespace (setns moves only the
    /// calling thread): every socket it opens afterwards lives there.
    pub fn enter(&self) {
        let path = format!("/var/run/netns/{}", self.ns);
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns(2) on a descriptor we own; it affects only this thread.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
    }

    /// Runs `program args` in the namespace and panics if it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.ns, program];
        full.extend_from_slice(args);
        run_checked("ip", &full)
    }

    /// Runs `program args` in the namespace and returns its output whatever the status.
    pub fn try_run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("could not run {program} in {}: {e}", self.ns))
    }

    /// Starts a long-running process in the namespace under a guard.
    pub fn spawn(&self, name: &str, program: &str, args: &[&str]) -> ChildGuard {
        let mut command = self.command(program);
        command.args(args);
        spawn_logged(&format!("{}-{name}", self.name), command)
    }

    /// Takes the bridge link down (or up): how tests simulate a host dying or returning.
    /// Link down drops global IPv6 addresses; the caller re-adds them if it needs them.
    pub fn set_link(&self, up: bool) {
        ip(&[
            "-n",
            &self.ns,
            "link",
            "set",
            &self.iface,
            if up { "up" } else { "down" },
        ]);
    }

    /// Addresses on `eth0` right now, without prefix length.
    pub fn addresses(&self) -> Vec<String> {
        addresses_in(&ip(&[
            "-n",
            &self.ns,
            "-o",
            "addr",
            "show",
            "dev",
            &self.iface,
        ]))
    }

    pub fn has_address(&self, addr: &str) -> bool {
        self.addresses().iter().any(|a| a == addr)
    }

    /// The MAC address of `eth0`.
    pub fn mac(&self) -> String {
        let out = ip(&["-n", &self.ns, "-o", "link", "show", "dev", &self.iface]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut words = text.split_whitespace();
        words.find(|w| *w == "link/ether");
        words
            .next()
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no MAC on {} in {}: {text}", self.iface, self.ns))
    }
}
