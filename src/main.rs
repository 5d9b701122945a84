//! The `alive-proxy` command: argument parsing and wiring only. Everything it does lives in
//! the library; errors get their context here (anyhow) and become the exit status.

// Panics are for bugs: what the input, the network or the OS can make fail is handled.
// Tests may unwrap (clippy.toml).
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Where the seed's container mounts the operators' config directory.
const DEFAULT_CONFIG: &str = "/live/cfg/alive.yaml";

#[derive(Parser, Debug)]
#[command(
    name = "alive-proxy",
    version,
    about = "TCP load balancer with lease-based VIP failover; reads keepalived's alive.yaml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve: listen on every VIP:port, probe backends, hold VIPs per their leases.
    Run(alive_proxy::app::RunArgs),
    /// Validate a config file and print the plan (like `haproxy -c`, `nginx -t`).
    Check {
        #[arg(short, long, default_value = DEFAULT_CONFIG, env = "ALIVE_PROXY_CONFIG")]
        config: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Also try each kubeconfig: reachability, TLS, lease permissions, certificate expiry.
        #[arg(long)]
        online: bool,
    },
    /// Show what the running daemon is doing (an `ipvsadm -ln` with latencies).
    Stats(alive_proxy::stats::cli::StatsArgs),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => alive_proxy::app::run(args).context("run"),
        Command::Check {
            config,
            json,
            online,
        } => alive_proxy::check::run_check(&config, json, online)
            .with_context(|| format!("check {}", config.display())),
        Command::Stats(args) => alive_proxy::stats::cli::run(args).context("stats"),
        Command::Version => {
            println!("alive-proxy {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("alive-proxy: {err:#}");
            ExitCode::FAILURE
        }
    }
}
