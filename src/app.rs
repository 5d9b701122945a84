//! `alive-proxy run`: the process wiring. Loads the plan, starts the control-plane runtime
//! (tokio, two threads), the stats registry and the data plane, then serves until a stop
//! signal: SIGHUP or a change of the config file reloads (the new plan is built and
//! validated first; an invalid file is logged with file:line and the running config keeps
//! serving), SIGTERM/SIGINT stop gracefully (listeners close, sessions drain up to
//! `--drain-timeout`, what is left is reset).
//!
//! Health, HA and the admin endpoint start in [`ControlPlane`], which also carries their
//! reload and stop hooks. A stop releases the VIPs first, then drains.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::config::{self, LoadError, Mode, Plan};
use crate::dataplane::{
    DEFAULT_SPLICE_AFTER, Dataplane, DataplaneError, DataplaneOptions, DriverChoice, PassiveEvent,
    Routing,
};
use crate::ha::{self, HaSupervisor};
use crate::health::supervisor::HealthSupervisor;
use crate::stats::admin::AdminServer;
use crate::stats::{self, Readiness, StatsRegistry};

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
    #[error(transparent)]
    Config(#[from] LoadError),
    #[error("cannot start the control-plane runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Ha(#[from] crate::ha::HaError),
    #[error(transparent)]
    Instance(#[from] crate::daemon::instance_lock::InstanceLockError),
    #[error("cannot install the {name} handler: {error}")]
    Signal {
        name: &'static str,
        error: std::io::Error,
    },
}

pub fn run(args: RunArgs) -> Result<ExitCode, RunError> {
    init_logging();
    let loaded = config::load(&args.config, Mode::Run)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let plan = loaded.plan;
    // Before anything binds or touches a VIP: refuse to run next to another instance.
    let _instance = crate::daemon::instance_lock::acquire(&plan.admin.socket)?;
    crate::daemon::fd_limit::raise_and_report(args.workers);
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
    let started = runtime.block_on(async {
        let mut control =
            ControlPlane::start(&plan, dataplane.routing(), &stats, passive_rx).await?;
        let result = serve_until_stopped(&args, signals, plan, &dataplane, &control).await;
        // Planned handover: the VIP leaves this host before the sessions drain, so a peer
        // serves new connections while the old ones finish here.
        control.release_vips().await;
        Ok::<_, RunError>((control, result))
    });
    let (control, result) = match started {
        Ok(pair) => pair,
        Err(err) => {
            dataplane.shutdown(Duration::ZERO);
            return Err(err);
        }
    };
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
    health: HealthSupervisor,
    ha: HaHandle,
    admin: Option<AdminServer>,
    readiness: Arc<Readiness>,
    stats: Arc<StatsRegistry>,
}

impl ControlPlane {
    /// Health first (backends' initial states reach the routing snapshot), then VIP
    /// ownership, then the admin endpoint. An admin endpoint that cannot bind is logged,
    /// not fatal: serving traffic matters more than reporting on it.
    async fn start(
        plan: &Plan,
        routing: Arc<Routing>,
        stats: &Arc<StatsRegistry>,
        passive: UnboundedReceiver<PassiveEvent>,
    ) -> Result<Self, RunError> {
        stats.control().set_plan(plan);
        let health = HealthSupervisor::spawn(plan, routing, passive, stats.control());
        let ha = HaHandle::start(plan, stats)?;
        let readiness = Readiness::new();
        let admin = match stats::admin::serve(
            plan.admin.clone(),
            Arc::clone(stats),
            Arc::clone(&readiness),
        )
        .await
        {
            Ok(server) => Some(server),
            Err(err) => {
                tracing::error!("admin endpoint not started: {err}");
                None
            }
        };
        // The data plane's listeners are up (Dataplane::start returned) and health has
        // published every backend's first state.
        readiness.set_ready(true);
        Ok(ControlPlane {
            health,
            ha,
            admin,
            readiness,
            stats: Arc::clone(stats),
        })
    }

    /// Called after the data plane took the new plan.
    fn apply_plan(&self, plan: &Plan) {
        self.stats.control().set_plan(plan);
        self.health.apply_plan(plan);
        self.ha.apply_plan(plan);
        // The admin socket and HTTP address are bound once at start; a reload that changes
        // them takes effect at the next start.
        if let Some(admin) = &self.admin
            && admin.socket_path() != plan.admin.socket
        {
            tracing::warn!("admin.socket changed: the new path is used after a restart");
        }
    }

    /// VIP ownership goes first (address removed, lease released) so a peer takes over
    /// while this host drains; returns once that handover is done.
    async fn release_vips(&mut self) {
        self.readiness.set_ready(false);
        self.ha.shutdown().await;
    }

    async fn shutdown(self) {
        self.health.shutdown().await;
        if let Some(admin) = self.admin {
            admin.shutdown();
        }
    }
}

/// Lease-based VIP ownership, run as a task so reloads (which need `&mut` and await VIP
/// removal) never block the signal loop.
struct HaHandle {
    commands: tokio::sync::mpsc::UnboundedSender<HaCommand>,
    task: Option<tokio::task::JoinHandle<()>>,
}

enum HaCommand {
    Apply(Box<Plan>),
    Shutdown,
}

impl HaHandle {
    fn start(plan: &Plan, stats: &Arc<StatsRegistry>) -> Result<HaHandle, RunError> {
        let identity = ha::host_identity(plan)?;
        tracing::info!(%identity, "lease identity");
        let mut supervisor = HaSupervisor::spawn(plan, identity, stats.control())?;
        let (commands, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(command) = rx.recv().await {
                match command {
                    HaCommand::Apply(plan) => supervisor.apply_plan(&plan).await,
                    HaCommand::Shutdown => break,
                }
            }
            supervisor.shutdown().await;
        });
        Ok(HaHandle {
            commands,
            task: Some(task),
        })
    }

    fn apply_plan(&self, plan: &Plan) {
        if self
            .commands
            .send(HaCommand::Apply(Box::new(plan.clone())))
            .is_err()
        {
            tracing::error!("HA supervisor is not running; reload not applied to VIP ownership");
        }
    }

    async fn shutdown(&mut self) {
        let Some(task) = self.task.take() else { return };
        // Already stopped if the send fails; the join below still waits for its cleanup.
        let _stopping = self.commands.send(HaCommand::Shutdown);
        if let Err(err) = task.await {
            tracing::error!(%err, "HA supervisor failed while stopping");
        }
    }
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
            signal(kind).map_err(|error| RunError::Signal { name, error })
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
    let mut watcher = config::watch::ConfigWatcher::new(&args.config, args.watch_interval);
    loop {
        tokio::select! {
            _ = terminate.recv() => { tracing::info!("SIGTERM received"); return Ok(()); }
            _ = interrupt.recv() => { tracing::info!("SIGINT received"); return Ok(()); }
            _ = hangup.recv() => {
                tracing::info!(config = %args.config.display(), "SIGHUP received: reloading");
                watcher.mark_applied();
                reload(&args.config, &mut plan, dataplane, control);
            }
            () = watcher.next_stable_change(), if watching => {
                tracing::info!(config = %args.config.display(), "config file changed: reloading");
                reload(&args.config, &mut plan, dataplane, control);
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
