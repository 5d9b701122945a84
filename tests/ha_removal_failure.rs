//! A VIP removal that fails never leads to two hosts holding the VIP: lb1 runs the lease
//! driver in-process with a VIP whose removal fails its first attempts (a [`VipOps`]
//! wrapper around the real netlink one), lb2 runs `ha_node`, both against a real etcd in
//! network namespaces. lb1 is told to stop while it holds the VIP: it must keep the lease
//! (and keep retrying) until the removal succeeds, and only then may lb2 take the VIP.
//!
//! Run: `cargo test --test ha_removal_failure -- --nocapture`

#[path = "support/ha_lab.rs"]
mod ha_lab;
mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use alive_proxy::config::plan::{EtcdLock, Instance, LockPlan};
use alive_proxy::ha::announce::AnnounceOptions;
use alive_proxy::ha::driver::{InstanceCommand, InstanceTask, run_leased};
use alive_proxy::ha::forward::Forwarder;
use alive_proxy::ha::keeper::VipKeeper;
use alive_proxy::ha::lease::etcd::EtcdStore;
use alive_proxy::ha::ownership::Ownership;
use alive_proxy::ha::status::{NoObserver, StatusReporter};
use alive_proxy::ha::timing::Timing;
use alive_proxy::ha::vip::{Netlink, Vip, VipError, VipOps};
use ha_lab::{AddrMonitor, Etcd, VIP4, lab_with_lbs, now_secs, overlaps, start_node};
use support::wait;

/// Removal attempts that fail before one succeeds.
const FAILURES: u32 = 8;

/// The real VIP, except that its first [`FAILURES`] removals fail without touching it.
struct FailingRemoval {
    inner: Vip,
    attempts: Arc<AtomicU32>,
}

impl VipOps for FailingRemoval {
    fn addr(&self) -> IpAddr {
        self.inner.addr()
    }
    fn interface(&self) -> &str {
        self.inner.interface()
    }
    async fn link(&self) -> Result<(u32, Option<[u8; 6]>), VipError> {
        self.inner.link().await
    }
    async fn is_present(&self) -> Result<bool, VipError> {
        self.inner.is_present().await
    }
    async fn add(&self) -> Result<(), VipError> {
        self.inner.add().await
    }
    async fn remove(&self) -> Result<bool, VipError> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) < FAILURES {
            return Err(VipError::Timeout {
                action: "remove",
                addr: self.inner.addr(),
                interface: self.inner.interface().to_owned(),
            });
        }
        self.inner.remove().await
    }
    async fn park(&self) -> Result<(), VipError> {
        self.inner.park().await
    }
    async fn unpark(&self) -> Result<bool, VipError> {
        self.inner.unpark().await
    }
    async fn host_address(&self) -> Result<Option<IpAddr>, VipError> {
        self.inner.host_address().await
    }
}

#[test]
fn failing_vip_removal_keeps_the_lease_until_the_vip_is_gone() {
    let (_lab, lock, _client, hosts) = lab_with_lbs(&["192.0.2.2/24"], 2);
    let etcd = Etcd::start(&lock, "192.0.2.2");
    let monitors = [AddrMonitor::start(&hosts[0]), AddrMonitor::start(&hosts[1])];
    let endpoint = etcd.endpoint.clone();
    let attempts = Arc::new(AtomicU32::new(0));
    let (commands, rx) = tokio::sync::mpsc::unbounded_channel();
    let lb1 = hosts[0].clone();
    let counted = Arc::clone(&attempts);
    let node = std::thread::spawn(move || {
        lb1.enter();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async move {
            let instance = Instance {
                name: "vip-0".into(),
                vip: VIP4.parse().expect("literal"),
                id: None,
                interface: "eth0".into(),
                check_interval: Duration::from_secs(1),
                check_timeout: Duration::from_secs(3),
                peers: Vec::new(),
                lock: LockPlan::Etcd(EtcdLock {
                    endpoints: vec![endpoint.clone()],
                    key: "/alive-proxy/leases/vip-0".into(),
                }),
                failsafe: None,
                services: Vec::new(),
            };
            let vip = FailingRemoval {
                inner: Netlink::connect()
                    .expect("netlink")
                    .vip("eth0", instance.vip),
                attempts: counted,
            };
            let status = StatusReporter::new("vip-0".into(), Arc::new(NoObserver));
            let keeper = VipKeeper::new(vip, AnnounceOptions::default(), status.alarm());
            let timing = Timing::from_checks(instance.check_interval, instance.check_timeout);
            let store = EtcdStore::new(vec![endpoint], "/alive-proxy/leases/vip-0".into());
            let task = InstanceTask {
                instance,
                keeper,
                status,
                forwarder: Forwarder::start(),
                commands: rx,
            };
            run_leased(
                task,
                Ownership::new("lb1".into(), timing, Instant::now()),
                store,
            )
            .await;
        });
    });
    wait::until_or_panic(Duration::from_secs(15), "lb1 to hold the VIP", || {
        hosts[0].has_address(VIP4)
    });
    let n2 = start_node(&hosts[1], &["--etcd", &etcd.endpoint, "--vip", VIP4]);
    wait::until_or_panic(Duration::from_secs(10), "lb2 running", || {
        n2.log().contains("lease holder changed")
    });

    let stopped = now_secs();
    let (handed_over, _) = tokio::sync::oneshot::channel();
    commands
        .send(InstanceCommand::Stop {
            drain_until: None,
            await_next_holder: false,
            handed_over,
        })
        .expect("lb1's task is running");
    wait::until_or_panic(Duration::from_secs(15), "lb2 to hold the VIP", || {
        hosts[1].has_address(VIP4)
    });
    let took_over = now_secs() - stopped;
    node.join().expect("lb1's task ended");

    let until = now_secs();
    let intervals: Vec<_> = monitors
        .iter()
        .map(|m| (m.host.clone(), m.intervals(VIP4, until)))
        .collect();
    assert!(
        overlaps(&intervals).is_empty(),
        "the VIP was on both hosts: {:?}\n--- lb2 ---\n{}",
        overlaps(&intervals),
        n2.log()
    );
    let tried = attempts.load(Ordering::SeqCst);
    assert!(
        tried > FAILURES,
        "removal tried {tried} times; the failures were not retried"
    );
    let removed_at = monitors[0]
        .events()
        .iter()
        .find(|e| !e.added && e.addr == VIP4)
        .map(|e| e.at)
        .expect("lb1 removed the VIP");
    println!(
        "removal failed {FAILURES} times: lb1 removed the VIP {:.2} s after the stop, lb2 \
         held it {took_over:.2} s after the stop",
        removed_at - stopped
    );
    drop(etcd);
}
