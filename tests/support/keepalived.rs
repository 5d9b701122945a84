//! Debian's keepalived as a VRRP peer in a lab namespace, in VRRP-only mode, with its own
//! config and pid files. keepalived forks a VRRP child even with `-n`: both are stopped by
//! pid (the parent from the guard, the child from its pid file), never by name.

use std::path::PathBuf;
use std::time::Duration;

use super::netns::Host;
use super::process::{ChildGuard, spawn_logged};
use super::wait;

/// One VRRP instance in keepalived's config.
#[derive(Debug, Clone)]
pub struct KeepalivedInstance {
    pub name: String,
    pub vrid: u8,
    pub priority: u8,
    /// keepalived's `advert_int`, seconds (fractions need `vrrp_version 3`).
    pub advert_int: &'static str,
    pub vip: String,
    pub peers: Vec<String>,
    pub nopreempt: bool,
}

impl KeepalivedInstance {
    fn render(&self, interface: &str) -> String {
        let prefix = if self.vip.contains(':') { 128 } else { 32 };
        let peers: String = self
            .peers
            .iter()
            .map(|p| format!("        {p}\n"))
            .collect();
        format!(
            "vrrp_instance {name} {{\n    state BACKUP\n    interface {interface}\n    \
             virtual_router_id {vrid}\n    priority {priority}\n    advert_int {adv}\n{nopreempt}    \
             unicast_peer {{\n{peers}    }}\n    virtual_ipaddress {{\n        {vip}/{prefix} dev {interface}\n    }}\n}}\n",
            name = self.name,
            vrid = self.vrid,
            priority = self.priority,
            adv = self.advert_int,
            nopreempt = if self.nopreempt {
                "    nopreempt\n"
            } else {
                ""
            },
            vip = self.vip,
        )
    }
}

pub struct Keepalived {
    guard: Option<ChildGuard>,
    host: Host,
    dir: tempfile::TempDir,
    instances: Vec<KeepalivedInstance>,
}

impl Keepalived {
    /// Writes the config and starts keepalived in `host`'s namespace (own UTS namespace so
    /// its router_id is the host name).
    pub fn start(host: &Host, instances: &[KeepalivedInstance]) -> Keepalived {
        let dir = tempfile::tempdir().expect("keepalived dir");
        let mut ka = Keepalived {
            guard: None,
            host: host.clone(),
            dir,
            instances: instances.to_vec(),
        };
        ka.spawn();
        ka
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self) {
        let mut config = format!(
            "global_defs {{\n    router_id {}\n    vrrp_version 3\n    script_user root\n}}\n",
            self.host.name
        );
        for instance in &self.instances {
            config.push_str(&instance.render(&self.host.iface));
        }
        let conf = self.path("keepalived.conf");
        std::fs::write(&conf, config).expect("write keepalived.conf");
        let (pid, vrrp_pid) = (self.path("keepalived.pid"), self.path("vrrp.pid"));
        let _ = std::fs::remove_file(&vrrp_pid);
        let mut command = self.host.command_with_hostname("keepalived");
        command.args([
            "--vrrp",
            "-n",
            "-l",
            "-D",
            "-f",
            &conf.to_string_lossy(),
            "-p",
            &pid.to_string_lossy(),
            "-r",
            &vrrp_pid.to_string_lossy(),
        ]);
        self.guard = Some(spawn_logged(
            &format!("{}-keepalived", self.host.name),
            command,
        ));
        let child_pid = self.path("vrrp.pid");
        wait::until_or_panic(Duration::from_secs(10), "keepalived's VRRP child", || {
            std::fs::read_to_string(&child_pid).is_ok_and(|s| !s.trim().is_empty())
        });
    }

    /// The config keepalived runs with (for failure messages).
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.path("keepalived.conf")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        self.guard.as_ref().map(|g| g.log()).unwrap_or_default()
    }

    fn child_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.path("vrrp.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// SIGTERM to the parent (which stops its VRRP child: priority-0 adverts, VIPs removed);
    /// waits for both, then makes sure of it by pid.
    pub fn stop(&mut self) {
        let child = self.child_pid();
        if let Some(guard) = &mut self.guard {
            guard.signal(libc::SIGTERM);
            guard.wait_exit(Duration::from_secs(5));
        }
        if let Some(pid) = child {
            wait::until(Duration::from_secs(5), || !alive(pid));
        }
        self.kill();
    }

    /// Starts it again with the same config.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(pid) = self.child_pid()
            && alive(pid)
        {
            // SAFETY: kill(2) on the VRRP child of the keepalived this guard started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(mut guard) = self.guard.take() {
            guard.kill_group();
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.kill();
    }
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
}
