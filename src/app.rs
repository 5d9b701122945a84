//! `alive-proxy run`: the process wiring. Loads the plan, starts the control-plane runtime
//! (tokio, two threads), the stats registry and the data plane, then serves until a stop
//! signal: SIGHUP or a change of the config file reloads (the new plan is built and
//! validated first; an invalid file is logged with file:line and the running config keeps
//! serving), SIGTERM/SIGINT stop gracefully (listeners close, sessions drain up to
//! `--drain-timeout`, what is left is reset).
//!
//! Health, HA and the admin endpoint plug in at [`start_health`], [`start_ha`] and
//! [`start_admin`]; their reload and stop hooks are in [`ControlPlane`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::config::{self, LoadError, Mode, Plan};
use crate::dataplane::{
    DEFAULT_SPLICE_AFTER, Dataplane, DataplaneError, DataplaneOptions, DriverChoice, PassiveEvent,
    Routing,
};
use crate::stats::StatsRegistry;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[arg(
        short,
        long,
        default_value = "/live/cfg/alive.yaml",
        env = "ALIVE_PROXY_CONFIG"
    )]
    pub config: PathBuf,
    /// Data-plane worker threads; 0 = one per core.
    #[arg(long, default_value_t = 0, env = "ALIVE_PROXY_WORKERS")]
    pub workers: usize,
    /// I/O driver of the data plane: io_uring when available (auto), or forced.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto, env = "ALIVE_PROXY_DRIVER")]
    pub driver: DriverChoice,
    /// How long a graceful stop waits for live sessions before resetting them
    /// (e.g. `30s`, `500ms`, `2m`; a bare number is seconds).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// A direction of a session switches from buffer copies to splice after this many bytes;
    /// 0 = never splice.
    #[arg(long, default_value_t = DEFAULT_SPLICE_AFTER)]
    pub splice_after: u64,
    /// How often the config file is checked for changes; 0 = only on SIGHUP.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub watch_interval: Duration,
}

/// `30`, `30s`, `500ms`, `2m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}; use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] LoadError),
    #[error("cannot start the control-plane runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("cannot install the {name} handler: {source}")]
    Signal {
        name: &'static str,
        source: std::io::Error,
    },
}

pub fn run(args: RunArgs) -> Result<ExitCode, RunError> {
    init_logging();
    let loaded = config::load(&args.config, Mode::Run)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let plan = loaded.plan;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("alive-control")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let stats = StatsRegistry::new();
    let (passive_tx, passive_rx) = tokio::sync::mpsc::unbounded_channel();
    let options = DataplaneOptions {
        workers: args.workers,
        driver: args.driver,
        splice_after: (args.splice_after > 0).then_some(args.splice_after),
        ..DataplaneOptions::default()
    };
    let signals = runtime.block_on(async { Signals::install() })?;
    let dataplane = Dataplane::start(&plan, options, Arc::clone(&stats), passive_tx)?;
    tracing::info!(
        config = %args.config.display(),
        workers = dataplane.worker_count(),
        driver = %dataplane.driver(),
        services = plan.instances.iter().map(|i| i.services.len()).sum::<usize>(),
        "alive-proxy serving"
    );
    let outcome = runtime.block_on(async {
        let control = ControlPlane::start(&plan, dataplane.routing(), &stats, passive_rx);
        let result = serve_until_stopped(&args, signals, plan, &dataplane, &control).await;
        (control, result)
    });
    let (control, result) = outcome;
    tracing::info!(drain = ?args.drain_timeout, live = dataplane.live_sessions(), "stopping: draining sessions");
    dataplane.shutdown(args.drain_timeout);
    runtime.block_on(control.shutdown());
    result.map(|()| ExitCode::SUCCESS)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALIVE_PROXY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Already set (tests, embedding): keep the existing subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The control-plane parts started next to the data plane.
pub struct ControlPlane {
    health: HealthHandle,
    ha: HaHandle,
    admin: AdminHandle,
}

impl ControlPlane {
    fn start(
        plan: &Plan,
        routing: Arc<Routing>,
        stats: &Arc<StatsRegistry>,
        passive: UnboundedReceiver<PassiveEvent>,
    ) -> Self {
        ControlPlane {
            health: start_health(plan, routing, stats, passive),
            ha: start_ha(plan, stats),
            admin: start_admin(plan, stats),
        }
    }

    /// Called after the data plane took the new plan.
    fn apply_plan(&self, plan: &Plan) {
        self.health.apply_plan(plan);
        self.ha.apply_plan(plan);
        self.admin.apply_plan(plan);
    }

    async fn shutdown(self) {
        self.admin.shutdown().await;
        self.ha.shutdown().await;
        self.health.shutdown().await;
    }
}

/// Health checks (lead plugs `HealthSupervisor` in here).
pub struct HealthHandle {
    passive_drain: tokio::task::JoinHandle<()>,
}

/// Starts health checking: results go to `routing` (a [`crate::health::HealthSink`]),
/// passive failures come from the data plane on `passive`.
///
/// Not wired yet: until the health supervisor is plugged in here, passive events are only
/// logged (so the channel does not grow) and backends without checks stay up.
pub fn start_health(
    _plan: &Plan,
    _routing: Arc<Routing>,
    _stats: &Arc<StatsRegistry>,
    mut passive: UnboundedReceiver<PassiveEvent>,
) -> HealthHandle {
    let passive_drain = tokio::spawn(async move {
        while let Some(event) = passive.recv().await {
            tracing::debug!(backend = %event.key.backend, service = %event.key.service, error = ?event.error, "passive connect failure");
        }
    });
    HealthHandle { passive_drain }
}

impl HealthHandle {
    fn apply_plan(&self, _plan: &Plan) {}

    async fn shutdown(self) {
        self.passive_drain.abort();
    }
}

/// VIP ownership (lead plugs `HaSupervisor` in here).
pub struct HaHandle;

/// Starts lease-based VIP ownership. Not wired yet: the data plane listens with FREEBIND,
/// so it serves whatever VIPs this host holds.
pub fn start_ha(_plan: &Plan, _stats: &Arc<StatsRegistry>) -> HaHandle {
    HaHandle
}

impl HaHandle {
    fn apply_plan(&self, _plan: &Plan) {}

    async fn shutdown(self) {}
}

/// The admin socket and HTTP endpoint (lead plugs `stats::admin::serve` in here).
pub struct AdminHandle;

/// Starts the admin endpoint. Not wired yet.
pub fn start_admin(_plan: &Plan, _stats: &Arc<StatsRegistry>) -> AdminHandle {
    AdminHandle
}

impl AdminHandle {
    fn apply_plan(&self, _plan: &Plan) {}

    async fn shutdown(self) {}
}

/// What identifies a version of the config file without reading it: a ConfigMap update
/// swaps a symlink, an editor rewrites in place; either changes one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// The signals `run` obeys. Installed before the first listener opens: a SIGHUP or
/// SIGTERM that arrives once clients can connect must never hit the default action
/// (terminate without draining).
struct Signals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must run inside the tokio runtime.
    fn install() -> Result<Signals, RunError> {
        let install = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| RunError::Signal { name, source })
        };
        Ok(Signals {
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
        })
    }
}

/// Serves until SIGTERM or SIGINT, reloading on SIGHUP and on file change.
async fn serve_until_stopped(
    args: &RunArgs,
    signals: Signals,
    mut plan: Plan,
    dataplane: &Dataplane,
    control: &ControlPlane,
) -> Result<(), RunError> {
    let Signals {
        mut hangup,
        mut terminate,
        mut interrupt,
    } = signals;
    let watching = !args.watch_interval.is_zero();
    let mut ticker = tokio::time::interval(if watching {
        args.watch_interval
    } else {
        Duration::from_secs(3600)
    });
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_stamp = stamp(&args.config);
    loop {
        tokio::select! {
            _ = terminate.recv() => { tracing::info!("SIGTERM received"); return Ok(()); }
            _ = interrupt.recv() => { tracing::info!("SIGINT received"); return Ok(()); }
            _ = hangup.recv() => {
                tracing::info!(config = %args.config.display(), "SIGHUP received: reloading");
                last_stamp = stamp(&args.config);
                reload(&args.config, &mut plan, dataplane, control);
            }
            _ = ticker.tick(), if watching => {
                let now = stamp(&args.config);
                if now != last_stamp {
                    last_stamp = now;
                    tracing::info!(config = %args.config.display(), "config file changed: reloading");
                    reload(&args.config, &mut plan, dataplane, control);
                }
            }
        }
    }
}

/// Builds and validates the new plan first; only a valid one replaces the running one.
fn reload(path: &Path, plan: &mut Plan, dataplane: &Dataplane, control: &ControlPlane) {
    let loaded = match config::load(path, Mode::Run) {
        Ok(loaded) => loaded,
        Err(err) => {
            for diagnostic in err.diagnostics() {
                tracing::error!("{diagnostic}");
            }
            if err.diagnostics().is_empty() {
                tracing::error!("{err}");
            }
            tracing::error!(config = %path.display(), "reload rejected; still serving the previous configuration");
            return;
        }
    };
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    if loaded.plan == *plan {
        tracing::info!("configuration unchanged");
        return;
    }
    if let Err(err) = dataplane.apply_plan(&loaded.plan) {
        tracing::error!(%err, "reload rejected by the data plane; still serving the previous configuration");
        return;
    }
    control.apply_plan(&loaded.plan);
    *plan = loaded.plan;
    tracing::info!("configuration reloaded");
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn drain_timeout_accepts_units_and_bare_seconds() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(
            parse_duration("5h").is_err(),
            "hours are not a drain timeout unit"
        );
    }
}
