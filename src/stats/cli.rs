//! `alive-proxy stats`: reads the running daemon's admin socket and prints the table.

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct StatsArgs {}

#[derive(Debug, thiserror::Error)]
pub enum StatsCliError {
    #[error("not implemented yet")]
    NotImplemented,
}

pub fn run(_args: StatsArgs) -> Result<ExitCode, StatsCliError> {
    Err(StatsCliError::NotImplemented)
}
