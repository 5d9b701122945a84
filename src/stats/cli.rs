//! `alive-proxy stats`: reads the running daemon's admin socket and prints the table
//! ([`super::table`]), the JSON snapshot (`--json`), or either one repeatedly (`--watch`).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::DEFAULT_ADMIN_SOCKET;

use super::snapshot::StatsSnapshot;
use super::socket::{self, ClientError};
use super::table;

/// How long to wait for the daemon's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Clear the screen and home the cursor (refresh in place).
const CLEAR: &str = "\x1b[H\x1b[2J";

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// The daemon's admin socket (`admin.socket` in alive.yaml).
    #[arg(long, default_value = DEFAULT_ADMIN_SOCKET, env = "ALIVE_PROXY_ADMIN_SOCKET")]
    pub socket: PathBuf,
    /// Print the full snapshot as JSON (with --watch: one JSON document per line).
    #[arg(long)]
    pub json: bool,
    /// Refresh every SECS seconds (default 1) in place, with rates per second.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1")]
    pub watch: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatsCliError {
    #[error(transparent)]
    Daemon(#[from] ClientError),
    #[error("--watch wants a number of seconds between 0.1 and 86400, not {0}")]
    WatchInterval(f64),
    #[error("encoding JSON: {0}")]
    Json(serde_json::Error),
    #[error("writing to stdout: {0}")]
    Stdout(io::Error),
}

impl From<serde_json::Error> for StatsCliError {
    fn from(error: serde_json::Error) -> Self {
        StatsCliError::Json(error)
    }
}

pub fn run(args: StatsArgs) -> Result<ExitCode, StatsCliError> {
    let result = match args.watch {
        None => once(&args),
        Some(seconds) => watch(&args, seconds),
    };
    match result {
        // `alive-proxy stats --watch | head` ends with a closed pipe; that is not a failure.
        Err(StatsCliError::Stdout(err)) if err.kind() == io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        other => other.map(|()| ExitCode::SUCCESS),
    }
}

fn fetch(args: &StatsArgs) -> Result<StatsSnapshot, StatsCliError> {
    Ok(socket::request_snapshot(&args.socket, REPLY_TIMEOUT)?)
}

fn print(text: &str) -> Result<(), StatsCliError> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(StatsCliError::Stdout)
}

fn once(args: &StatsArgs) -> Result<(), StatsCliError> {
    let snapshot = fetch(args)?;
    if args.json {
        let mut json = serde_json::to_string_pretty(&snapshot)?;
        json.push('\n');
        print(&json)
    } else {
        print(&table::render(&snapshot, None))
    }
}

fn watch(args: &StatsArgs, seconds: f64) -> Result<(), StatsCliError> {
    if !(0.1..=86_400.0).contains(&seconds) {
        return Err(StatsCliError::WatchInterval(seconds));
    }
    let interval = Duration::from_secs_f64(seconds);
    let mut previous: Option<StatsSnapshot> = None;
    loop {
        let snapshot = fetch(args)?;
        if args.json {
            let mut json = serde_json::to_string(&snapshot)?;
            json.push('\n');
            print(&json)?;
        } else {
            let text = table::render(&snapshot, previous.as_ref());
            print(&format!("{CLEAR}{text}"))?;
        }
        previous = Some(snapshot);
        std::thread::sleep(interval);
    }
}
