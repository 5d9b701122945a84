//! `HaSupervisor` driven in-process inside a network namespace (the test thread joins it
//! with setns): reload adds and removes VIP instances, shutdown removes every VIP.
//!
//! Run: `cargo test --test ha_supervisor_reload`

mod support;

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use alive_proxy::config::diff::PlanDiff;
use alive_proxy::config::plan::{AdminPlan, DEFAULT_ADMIN_SOCKET, Instance, LockPlan, Plan};
use alive_proxy::ha::{HaOptions, HaSupervisor};
use alive_proxy::stats::StatsRegistry;
use support::netns::{Host, Lab};

fn instance(name: &str, vip: &str) -> Instance {
    Instance {
        name: name.into(),
        vip: vip.parse::<IpAddr>().expect("literal VIP"),
        id: None,
        interface: "eth0".into(),
        check_interval: Duration::from_secs(1),
        check_timeout: Duration::from_secs(3),
        peers: Vec::new(),
        lock: LockPlan::None,
        failsafe: None,
        services: Vec::new(),
    }
}

fn plan(instances: Vec<Instance>) -> Plan {
    Plan {
        source: PathBuf::from("test"),
        instances,
        admin: AdminPlan {
            socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
            http: None,
        },
        identity: Some("lb1".into()),
    }
}

/// Runs `body` on a new thread that has joined `host`'s network namespace, inside a tokio
/// runtime on that thread (so every socket it opens lives in the namespace).
fn in_namespace<F>(host: &Host, body: impl FnOnce() -> F + Send + 'static)
where
    F: Future<Output = ()>,
{
    let path = format!("/var/run/netns/{}", host.ns);
    let thread = std::thread::spawn(move || {
        let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns(2) on an fd we own; it moves only this thread.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(body());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

async fn wait_for(what: &str, host: &Host, mut condition: impl FnMut(&[String]) -> bool) {
    for _ in 0..100 {
        if condition(&host.addresses()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "timed out waiting for {what}; addresses now {:?}",
        host.addresses()
    );
}

#[test]
fn reload_removes_dropped_vips_adds_new_ones_and_shutdown_removes_all() {
    let mut lab = Lab::new();
    let lb1 = lab.add_host("lb1", &["192.0.2.11/24", "2001:db8::11/64"]);
    let host = lb1.clone();
    in_namespace(&lb1, move || async move {
        let registry = StatsRegistry::new();
        let first = plan(vec![
            instance("vip-a", "192.0.2.100"),
            instance("vip-b", "2001:db8::100"),
        ]);
        let mut ha = HaSupervisor::spawn(
            &first,
            "lb1".into(),
            registry.control(),
            HaOptions::default(),
        )
        .expect("HaSupervisor starts");
        wait_for("both VIPs", &host, |a| {
            a.iter().any(|x| x == "192.0.2.100") && a.iter().any(|x| x == "2001:db8::100")
        })
        .await;

        let second = plan(vec![
            instance("vip-b", "2001:db8::100"),
            instance("vip-c", "192.0.2.101"),
        ]);
        ha.apply(&second, &PlanDiff::between(&first, &second)).await;
        wait_for("vip-a gone, vip-c added, vip-b kept", &host, |a| {
            !a.iter().any(|x| x == "192.0.2.100")
                && a.iter().any(|x| x == "192.0.2.101")
                && a.iter().any(|x| x == "2001:db8::100")
        })
        .await;
        let snapshot = registry.snapshot();
        assert!(
            snapshot
                .instances
                .iter()
                .any(|i| i.name == "vip-c" && i.state.is_some()),
            "vip-c not reported to the stats control state: {:?}",
            snapshot.instances
        );

        ha.shutdown().await;
        let left: Vec<String> = host
            .addresses()
            .into_iter()
            .filter(|a| a.ends_with("::100") || a.starts_with("192.0.2.10"))
            .collect();
        assert!(left.is_empty(), "VIPs left after shutdown: {left:?}");
    });
}
