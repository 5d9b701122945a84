//! `alive-proxy check`: validate a file without touching the network (like `haproxy -c`,
//! `nginx -t`), print the plan (or the plan as JSON), warnings and errors on stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{LoadError, Mode, Plan, Severity, load, summary};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the plan as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// Exit 0 with the plan on stdout (warnings on stderr), or 1 with every diagnostic on
/// stderr. Only an unreadable file or a failing stdout is an `Err`.
pub fn run_check(path: &Path, json: bool, online: bool) -> Result<ExitCode, CheckError> {
    let loaded = match load(path, Mode::Check) {
        Ok(loaded) => loaded,
        Err(LoadError::Read { path, source }) => return Err(CheckError::Read { path, source }),
        Err(err @ LoadError::Invalid(_)) => {
            let mut stderr = std::io::stderr().lock();
            writeln!(stderr, "{err}")?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut stderr = std::io::stderr().lock();
    for w in &loaded.warnings {
        writeln!(stderr, "{w}")?;
    }
    drop(stderr);
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&loaded.plan)?)?;
    } else {
        let warnings = loaded
            .warnings
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count();
        write!(stdout, "{}", summary::render(&loaded.plan, warnings))?;
    }
    if online {
        writeln!(stdout, "{}", online_checks(&loaded.plan))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--online`: reachability, TLS and certificate expiry of each kubeconfig belong to the HA
/// module (`crate::ha::online`), which the CLI wiring will call here once it exists.
fn online_checks(_plan: &Plan) -> &'static str {
    "online checks (kubeconfig reachability, lease permissions, certificate expiry) are done by the HA module and are not wired into `check` yet"
}
