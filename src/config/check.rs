//! `alive-proxy check`: validate a file and print the plan.

use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("not implemented yet")]
    NotImplemented,
}

pub fn run_check(_path: &Path, _json: bool, _online: bool) -> Result<ExitCode, CheckError> {
    Err(CheckError::NotImplemented)
}
