//! The machine's Docker Engine, for the image test: the cached base image, images packaged
//! from the host-built binary (`docker/package.sh`), containers, and a link from the root
//! network namespace into a [`Lab`].
//!
//! `--network=host` under dockerd means the machine's root network namespace (not the
//! caller's, as with podman), so a container's VIPs live on an interface the test creates
//! there: [`RootLink`], a veth whose other end is a port of the lab's bridge.
//!
//! Every container, image and link is removed when its guard drops, also when the test
//! panics; names carry the test process's pid, and what a killed run left behind is swept
//! by the next one. The base image is kept: making it takes a minute (debootstrap).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::netns::{Lab, addresses_in, run_checked};

/// Made by `docker/base-image.sh` when missing, then reused by every run.
pub const BASE_IMAGE: &str = "localhost/alive-proxy-base:bookworm";
/// Containers are `alive-proxy-test-<pid>-<label>`, images `localhost/alive-proxy-test:<pid>-<label>`.
const NAME_PREFIX: &str = "alive-proxy-test";
const IMAGE_REPO: &str = "localhost/alive-proxy-test";
/// Root-namespace links are `apd<pid>x<n>` (at most 15 characters).
const LINK_PREFIX: &str = "apd";
/// Held while a test uses the engine: containers on the host network share the root
/// namespace's addresses and ports with every other run on this machine.
const MACHINE_LOCK: &str = "/run/lock/alive-proxy-docker-test.lock";

static NEXT_LINK: AtomicU32 = AtomicU32::new(0);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why no test can use Docker here, or `None` when `docker info` answers.
pub fn engine_unavailable() -> Option<String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`docker info` failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
        )),
        Err(err) => Some(format!("no docker command: {err}")),
    }
}

/// Runs `docker args` and panics with its output if it fails.
pub fn docker(args: &[&str]) -> Output {
    run_checked("docker", args)
}

/// Runs `docker args` whatever the outcome (cleanup, probes).
fn docker_quiet(args: &[&str]) -> Option<Output> {
    Command::new("docker").args(args).output().ok()
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// One Docker test at a time on this machine (across processes); the lock goes with the
/// guard, or with the process if it is killed.
pub struct MachineLock {
    _file: File,
}

pub fn lock_machine() -> MachineLock {
    let file = File::create(MACHINE_LOCK)
        .or_else(|_| File::create(std::env::temp_dir().join("alive-proxy-docker-test.lock")))
        .expect("create the Docker test lock file");
    if file.try_lock().is_err() {
        println!("waiting for another run's Docker test to finish ({MACHINE_LOCK})");
        file.lock().expect("lock the Docker test lock file");
    }
    sweep_stale();
    MachineLock { _file: file }
}

/// Makes [`BASE_IMAGE`] with `docker/base-image.sh` unless it is already there.
pub fn ensure_base_image() -> &'static str {
    let present = docker_quiet(&["image", "inspect", "--format", "{{.Id}}", BASE_IMAGE])
        .is_some_and(|out| out.status.success());
    if !present {
        println!("making {BASE_IMAGE} with debootstrap (once; cached afterwards)");
        let script = repo_root().join("docker/base-image.sh");
        let started = Instant::now();
        run_checked("bash", &[path_str(&script), BASE_IMAGE]);
        println!("{BASE_IMAGE} made in {:.0?}", started.elapsed());
    }
    BASE_IMAGE
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("repository paths are UTF-8")
}

/// An image this test made; removed on drop.
pub struct Image {
    tag: String,
}

impl Image {
    /// `docker/package.sh --runtime-image BASE --strip BINARY TAG`: the image operators get
    /// from a host-built binary, without compiling inside Docker.
    pub fn package(binary: &Path, base: &str, label: &str) -> Image {
        let tag = format!("{IMAGE_REPO}:{}-{label}", std::process::id());
        let image = Image { tag };
        let script = repo_root().join("docker/package.sh");
        let started = Instant::now();
        run_checked(
            "bash",
            &[
                path_str(&script),
                "--runtime-image",
                base,
                "--strip",
                path_str(binary),
                &image.tag,
            ],
        );
        println!(
            "packaged {} in {:.1?}: {:.1} MB",
            image.tag,
            started.elapsed(),
            image.size_bytes() as f64 / 1e6
        );
        image
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn size_bytes(&self) -> u64 {
        stdout_of(&docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Size}}",
            &self.tag,
        ]))
        .parse()
        .unwrap_or(0)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        docker_quiet(&["rmi", "-f", &self.tag]);
    }
}

/// A container this test started; removed (with `docker rm -f`) on drop.
pub struct Container {
    name: String,
}

impl Container {
    /// `docker run --name <unique> FLAGS IMAGE`; FLAGS must include `-d`.
    pub fn run(label: &str, flags: &[&str], image: &Image) -> Container {
        Container::try_run(label, flags, image)
            .unwrap_or_else(|err| panic!("docker run {} {}: {err}", flags.join(" "), image.tag()))
    }

    /// Like [`Container::run`], but returns the engine's complaint instead of panicking.
    pub fn try_run(label: &str, flags: &[&str], image: &Image) -> Result<Container, String> {
        let container = Container {
            name: format!("{NAME_PREFIX}-{}-{label}", std::process::id()),
        };
        docker_quiet(&["rm", "-f", &container.name]);
        let mut args = vec!["run", "--name", container.name.as_str()];
        args.extend_from_slice(flags);
        args.push(image.tag());
        let out = Command::new("docker")
            .args(&args)
            .output()
            .map_err(|e| format!("could not run docker: {e}"))?;
        if out.status.success() {
            Ok(container)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything the container wrote (stdout and stderr), without terminal colours.
    pub fn logs(&self) -> String {
        let out = docker_quiet(&["logs", &self.name]);
        let text = out
            .map(|o| {
                let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&o.stderr));
                text
            })
            .unwrap_or_default();
        strip_ansi(&text).replace('\r', "")
    }

    /// `docker exec NAME args...`, whatever its outcome.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["exec", self.name.as_str()];
        full.extend_from_slice(args);
        Command::new("docker")
            .args(&full)
            .output()
            .unwrap_or_else(|e| panic!("could not run docker exec: {e}"))
    }

    fn inspect(&self, format: &str) -> String {
        stdout_of(&docker(&["inspect", "--format", format, &self.name]))
    }

    pub fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// The exit code of a stopped container (137 = killed by SIGKILL).
    pub fn exit_code(&self) -> i64 {
        self.inspect("{{.State.ExitCode}}").parse().unwrap_or(-1)
    }

    /// The network namespace the container's process runs in (`net:[inode]`).
    pub fn net_namespace(&self) -> String {
        let pid = self.inspect("{{.State.Pid}}");
        std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("unknown ({e})"))
    }

    /// `docker stop -t GRACE NAME`; returns how long the command took.
    pub fn stop(&self, grace_secs: u32) -> Duration {
        let started = Instant::now();
        docker(&["stop", "-t", &grace_secs.to_string(), &self.name]);
        started.elapsed()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        docker_quiet(&["rm", "-f", "-v", &self.name]);
    }
}

/// Linux capabilities by number, as Docker names them.
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Capabilities this machine's bounding set lacks (Docker's names). A sandboxed machine
/// without, say, SYS_RESOURCE cannot start `--privileged` containers at all: runc grants
/// every capability and fails with "unable to apply caps: operation not permitted".
pub fn missing_capabilities() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(bounding) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return Vec::new();
    };
    let last: usize = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(CAPABILITIES.len() - 1);
    CAPABILITIES
        .iter()
        .enumerate()
        .take(last + 1)
        .filter(|(bit, _)| bounding & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect()
}

/// This process's network namespace (`net:[inode]`).
pub fn own_net_namespace() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Drops terminal escape sequences (`ESC [ ... letter`): the seed's `docker run -t` gives
/// the daemon a terminal, so its log is coloured.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for end in chars.by_ref() {
                if ('@'..='~').contains(&end) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A veth from the machine's root network namespace to a port of `lab`'s bridge: the LB
/// host's interface for containers on `--network=host`. Deleted on drop (deleting one end
/// deletes the pair).
pub struct RootLink {
    name: String,
}

impl RootLink {
    /// Creates the link with `addrs` (CIDR, documentation ranges) on the root side, DAD off.
    /// Panics before touching anything if the machine already routes one of them: this is
    /// the machine's own namespace, and an address there can shadow its real network (on
    /// these machines eth0 itself sits in 192.0.2.0/24, its gateway at 192.0.2.1).
    pub fn attach(lab: &Lab, addrs: &[&str]) -> RootLink {
        for addr in addrs {
            let ip = addr.split('/').next().unwrap_or(addr);
            let family = if ip.contains(':') { "-6" } else { "-4" };
            let routes = run_checked("ip", &["-o", family, "route", "show", "to", "match", ip]);
            let routes = String::from_utf8_lossy(&routes.stdout);
            let taken: Vec<&str> = routes
                .lines()
                .filter(|route| !route.starts_with("default"))
                .collect();
            assert!(
                taken.is_empty(),
                "{addr} is already routed in the machine's network namespace ({taken:?}); \
                 the Docker test needs a documentation range this machine does not use"
            );
        }
        let n = NEXT_LINK.fetch_add(1, Ordering::Relaxed);
        let name = format!("{LINK_PREFIX}{}x{n}", std::process::id());
        let port = format!("r{n}");
        run_checked(
            "ip",
            &[
                "link",
                "add",
                &name,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                lab.switch_ns(),
            ],
        );
        let link = RootLink { name };
        run_checked(
            "ip",
            &[
                "-n",
                lab.switch_ns(),
                "link",
                "set",
                &port,
                "master",
                "br0",
                "up",
            ],
        );
        run_checked(
            "sysctl",
            &[
                "-q",
                "-w",
                &format!("net.ipv6.conf.{}.accept_dad=0", link.name),
            ],
        );
        for addr in addrs {
            run_checked("ip", &["addr", "add", addr, "dev", &link.name, "nodad"]);
        }
        run_checked("ip", &["link", "set", &link.name, "up"]);
        link
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Addresses on the link right now, without prefix length.
    pub fn addresses(&self) -> Vec<String> {
        addresses_in(&run_checked(
            "ip",
            &["-o", "addr", "show", "dev", &self.name],
        ))
    }

    pub fn has_address(&self, addr: &str) -> bool {
        self.addresses().iter().any(|a| a == addr)
    }
}

impl Drop for RootLink {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

/// The pid in a name made by a test run (`<prefix><pid>...`), if that run is gone.
fn dead_owner(rest: &str) -> bool {
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse::<u32>()
        .is_ok_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes containers, images and root-namespace links of test runs that no longer exist
/// (a `--restart=always` container outlives a killed test and keeps its VIPs otherwise).
fn sweep_stale() {
    let prefix = format!("{NAME_PREFIX}-");
    if let Some(out) = docker_quiet(&["ps", "-a", "--format", "{{.Names}}"]) {
        for name in stdout_of(&out).lines() {
            if name.strip_prefix(&prefix).is_some_and(dead_owner) {
                docker_quiet(&["rm", "-f", "-v", name]);
            }
        }
    }
    if let Some(out) = docker_quiet(&["images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO])
    {
        for image in stdout_of(&out).lines() {
            let tag = image.rsplit(':').next().unwrap_or_default();
            if dead_owner(tag) {
                docker_quiet(&["rmi", "-f", image]);
            }
        }
    }
    if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "12: apd4242x0@if11: <...>"
            let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) else {
                continue;
            };
            if name.strip_prefix(LINK_PREFIX).is_some_and(dead_owner) {
                let _ = Command::new("ip").args(["link", "del", name]).output();
            }
        }
    }
}
