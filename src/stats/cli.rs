//! `alive-proxy stats`: reads the running daemon's admin socket and prints the table.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::DEFAULT_ADMIN_SOCKET;

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// The daemon's admin socket (`admin.socket` in alive.yaml).
    #[arg(long, default_value = DEFAULT_ADMIN_SOCKET, env = "ALIVE_PROXY_ADMIN_SOCKET")]
    pub socket: PathBuf,
    /// Print the full snapshot as JSON.
    #[arg(long)]
    pub json: bool,
    /// Refresh every SECS seconds (default 1) in place, with rates per second.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1")]
    pub watch: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatsCliError {
    #[error("not implemented yet")]
    NotImplemented,
}

pub fn run(_args: StatsArgs) -> Result<ExitCode, StatsCliError> {
    Err(StatsCliError::NotImplemented)
}
