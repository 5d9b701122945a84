//! A minimal LB host for the HA network-namespace tests: runs `HaSupervisor` for the VIPs
//! given on the command line until SIGTERM/SIGINT, then shuts down (VIP first, then the
//! lease). Stands in for `alive-proxy run` until that wires HA.
//!
//! ```text
//! ha_node --interface eth0 --vip 192.0.2.100 --vip 2001:db8::100 \
//!         (--etcd http://192.0.2.2:2379 | --kubeconfig PATH...)
//!         [--check-interval-ms 1000] [--check-timeout-ms 3000]
//! ```
//! Each VIP is its own instance `vip-<n>`: etcd key `/alive-proxy/leases/vip-<n>`, or Lease
//! `kube-system/alive-proxy-vip-<n>`. Without a lock the VIPs are held unconditionally.
//! Identity: `--identity` or the host name.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use alive_proxy::config::plan::{
    AdminPlan, DEFAULT_ADMIN_SOCKET, EtcdLock, Instance, KubeLock, LockPlan, Plan,
};
use alive_proxy::ha::{HaOptions, HaSupervisor, host_identity};
use alive_proxy::stats::control::ControlState;
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
    /// Peers to list (only matters without --etcd: triggers the no-lock warning).
    #[arg(long)]
    peer: Vec<IpAddr>,
}

fn plan(args: &Args) -> Plan {
    let instances = args
        .vip
        .iter()
        .enumerate()
        .map(|(n, vip)| {
            let name = format!("vip-{n}");
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
                } else {
                    LockPlan::None
                },
                name,
                vip: *vip,
                id: None,
                interface: args.interface.clone(),
                check_interval: Duration::from_millis(args.check_interval_ms),
                check_timeout: Duration::from_millis(args.check_timeout_ms),
                peers: args.peer.clone(),
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
        let control = std::sync::Arc::new(ControlState::new());
        let supervisor =
            HaSupervisor::spawn(&plan, identity.clone(), control, HaOptions::default())?;
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
