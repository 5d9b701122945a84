//! `alive-proxy run`: the process wiring. Loads the plan, starts the data plane workers and
//! the control plane (health, HA, stats), handles signals (SIGHUP reload, SIGTERM drain).

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[arg(
        short,
        long,
        default_value = "/live/cfg/alive.yaml",
        env = "ALIVE_PROXY_CONFIG"
    )]
    pub config: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("not wired yet")]
    NotWired,
}

pub fn run(_args: RunArgs) -> Result<ExitCode, RunError> {
    Err(RunError::NotWired)
}
