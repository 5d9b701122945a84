//! `alive-proxy check`: validate a file without touching the network (like `haproxy -c`,
//! `nginx -t`), print the plan (or the plan as JSON), warnings and errors on stderr.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{LoadError, Mode, Severity, load, summary};

/// Each message carries its cause; none is repeated as a `source()` (see [`LoadError`]).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file could not be read (an invalid one is a report, not an error).
    #[error(transparent)]
    Load(LoadError),
    #[error("cannot encode the plan as JSON: {0}")]
    Json(serde_json::Error),
    #[error("cannot run the online checks: {0}")]
    Online(std::io::Error),
    #[error("cannot write the report: {0}")]
    Output(std::io::Error),
}

impl From<serde_json::Error> for CheckError {
    fn from(error: serde_json::Error) -> Self {
        CheckError::Json(error)
    }
}

impl From<std::io::Error> for CheckError {
    fn from(error: std::io::Error) -> Self {
        CheckError::Output(error)
    }
}

/// Exit 0 with the plan on stdout (warnings on stderr), or 1 with every diagnostic on
/// stderr. Only an unreadable file or a failing stdout is an `Err`.
pub fn run_check(path: &Path, json: bool, online: bool) -> Result<ExitCode, CheckError> {
    let loaded = match load(path, Mode::Check) {
        Ok(loaded) => loaded,
        Err(err @ LoadError::Invalid(_)) => {
            let mut stderr = std::io::stderr().lock();
            writeln!(stderr, "{err}")?;
            return Ok(ExitCode::FAILURE);
        }
        Err(err) => return Err(CheckError::Load(err)),
    };
    let mut stderr = std::io::stderr().lock();
    for w in &loaded.warnings {
        writeln!(stderr, "{w}")?;
    }
    drop(stderr);
    let online_reports = if online {
        Some(crate::ha::online::check_blocking(&loaded.plan).map_err(CheckError::Online)?)
    } else {
        None
    };
    let bgp_reports = if online {
        crate::ha::bgp::online::check_blocking(&loaded.plan).map_err(CheckError::Online)?
    } else {
        Vec::new()
    };
    let mut stdout = std::io::stdout().lock();
    if json {
        let document = match &online_reports {
            Some(reports) => serde_json::json!({
                "plan": &loaded.plan,
                "online": reports,
                "online_bgp": &bgp_reports,
            }),
            None => serde_json::to_value(&loaded.plan)?,
        };
        writeln!(stdout, "{}", serde_json::to_string_pretty(&document)?)?;
    } else {
        let warnings = loaded
            .warnings
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count();
        write!(stdout, "{}", summary::render(&loaded.plan, warnings))?;
        if let Some(reports) = &online_reports {
            writeln!(stdout, "\nOnline checks ({} kubeconfigs):", reports.len())?;
            for report in reports {
                writeln!(stdout, "{report}")?;
            }
            if !bgp_reports.is_empty() {
                writeln!(
                    stdout,
                    "\nRouting daemon ({} BGP instances):",
                    bgp_reports.len()
                )?;
                for report in &bgp_reports {
                    writeln!(stdout, "{report}")?;
                }
            }
        }
    }
    // Online problems fail the check: a kubeconfig that cannot take the lease is the
    // outage the seed's operators only found when failover did not happen.
    let online_ok =
        online_reports.iter().flatten().all(|r| r.ok()) && bgp_reports.iter().all(|r| r.ok());
    Ok(if online_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
