//! A minimal LB host for the HA network-namespace tests: runs `HaSupervisor` for the VIPs
//! given on the command line until SIGTERM/SIGINT, then shuts down (VIP first, then the
//! lease). Stands in for `alive-proxy run` until that wires HA.
//!
//! ```text
//! ha_node --interface eth0 --vip 192.0.2.100 --vip 2001:db8::100 \
//!         (--etcd http://192.0.2.2:2379 | --kubeconfig PATH... | --peer IP...)
//!         [--check-interval-ms 1000] [--check-timeout-ms 3000]
//!         [--vrid 51] [--priority 100] [--advert-int 0.1] [--nopreempt] [--preempt-delay 0]
//!         [--failsafe-key FILE [--failsafe-port 7411]]
//! ```
//! Each VIP is its own instance `vip-<n>`: etcd key `/alive-proxy/leases/vip-<n>`, or Lease
//! `kube-system/alive-proxy-vip-<n>`, or, with peers and no lock, VRRP with virtual router
//! id `--vrid` (the same for every VIP: IPv4 and IPv6 virtual routers are separate). Without
//! a lock or peers the VIPs are held unconditionally.
//! Identity: `--identity` or the host name.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use alive_proxy::config::plan::{
    AdminPlan, DEFAULT_ADMIN_SOCKET, EtcdLock, FailsafePlan, Instance, KubeLock, LockPlan, Plan,
    VrrpPlan,
};
use alive_proxy::ha::{HaOptions, HaSupervisor, host_identity};
use alive_proxy::stats::StatsRegistry;
use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "eth0")]
    interface: String,
    #[arg(long, required = true)]
    vip: Vec<IpAddr>,
    #[arg(long)]
    etcd: Vec<String>,
    /// Kubeconfigs for a Kubernetes Lease lock, tried in order.
    #[arg(long)]
    kubeconfig: Vec<PathBuf>,
    #[arg(long)]
    identity: Option<String>,
    #[arg(long, default_value_t = 1000)]
    check_interval_ms: u64,
    #[arg(long, default_value_t = 3000)]
    check_timeout_ms: u64,
    /// Peers: without a lock, VRRP among them (only those of a VIP's family count).
    #[arg(long)]
    peer: Vec<IpAddr>,
    #[arg(long, default_value_t = 51)]
    vrid: u8,
    #[arg(long, default_value_t = VrrpPlan::DEFAULT_PRIORITY)]
    priority: u8,
    /// Seconds, in centiseconds.
    #[arg(long, default_value_t = 1.0)]
    advert_int: f64,
    #[arg(long)]
    nopreempt: bool,
    /// Seconds.
    #[arg(long, default_value_t = 0.0)]
    preempt_delay: f64,
    /// With a lock and peers: the lock-outage failsafe among the peers, with this key.
    #[arg(long)]
    failsafe_key: Option<PathBuf>,
    #[arg(long, default_value_t = FailsafePlan::DEFAULT_PORT)]
    failsafe_port: u16,
    /// Write the instances' state here as JSON every 100 ms.
    #[arg(long)]
    status_file: Option<PathBuf>,
}

fn plan(args: &Args) -> Plan {
    let instances = args
        .vip
        .iter()
        .enumerate()
        .map(|(n, vip)| {
            let name = format!("vip-{n}");
            let peers: Vec<IpAddr> = args
                .peer
                .iter()
                .copied()
                .filter(|p| p.is_ipv4() == vip.is_ipv4())
                .collect();
            Instance {
                lock: if !args.etcd.is_empty() {
                    LockPlan::Etcd(EtcdLock {
                        endpoints: args.etcd.clone(),
                        key: format!("/alive-proxy/leases/{name}"),
                    })
                } else if !args.kubeconfig.is_empty() {
                    LockPlan::Kube(KubeLock {
                        kubeconfigs: args.kubeconfig.clone(),
                        lease_name: format!("alive-proxy-{name}"),
                        namespace: "kube-system".into(),
                    })
                } else if !peers.is_empty() {
                    LockPlan::Vrrp(VrrpPlan {
                        vrid: args.vrid,
                        priority: args.priority,
                        advert_interval: Duration::from_millis((args.advert_int * 1000.0) as u64),
                        preempt: !args.nopreempt,
                        preempt_delay: Duration::from_secs_f64(args.preempt_delay),
                    })
                } else {
                    LockPlan::None
                },
                name,
                vip: *vip,
                id: Some(args.vrid),
                interface: args.interface.clone(),
                check_interval: Duration::from_millis(args.check_interval_ms),
                check_timeout: Duration::from_millis(args.check_timeout_ms),
                peers,
                failsafe: args.failsafe_key.as_ref().map(|key_file| FailsafePlan {
                    key_file: key_file.clone(),
                    port: args.failsafe_port,
                }),
                services: Vec::new(),
            }
        })
        .collect();
    Plan {
        source: PathBuf::from("ha_node"),
        instances,
        admin: AdminPlan {
            socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
            http: None,
        },
        identity: args.identity.clone(),
    }
}

/// Every 100 ms, the instances' state (role, holder, VRRP counters) as JSON, replaced
/// atomically: what the tests read instead of an admin socket.
async fn write_status(registry: std::sync::Arc<StatsRegistry>, path: PathBuf) {
    let temp = path.with_extension("tmp");
    loop {
        let instances = registry.snapshot().instances;
        match serde_json::to_vec(&instances) {
            Ok(json) => {
                if let Err(e) =
                    std::fs::write(&temp, json).and_then(|()| std::fs::rename(&temp, &path))
                {
                    tracing::warn!("writing {}: {e}", path.display());
                }
            }
            Err(e) => tracing::warn!("encoding the status: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let plan = plan(&args);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async {
        let identity = host_identity(&plan)?;
        let registry = StatsRegistry::new();
        let control = registry.control();
        control.set_plan(&plan);
        let supervisor =
            HaSupervisor::spawn(&plan, identity.clone(), control, HaOptions::default())?;
        if let Some(path) = args.status_file.clone() {
            tokio::spawn(write_status(registry, path));
        }
        tracing::info!(identity, "ha_node running");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("signal received: shutting down");
        supervisor.shutdown().await;
        tracing::info!("ha_node stopped");
        anyhow::Ok(())
    })
}
