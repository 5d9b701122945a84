//! `alive-proxy run`: the process wiring. [`run`] starts the control-plane runtime (tokio,
//! two threads) and turns signals into triggers for [`serve`], which tests call directly
//! with pre-bound listeners, their own reload channel and stop future.
//!
//! [`serve`] loads the plan, starts the stats registry, the data plane and the control
//! plane (health, HA, admin endpoint), then serves until stopped:
//! - **Reload** (SIGHUP, a change of the config file) is one transaction: the new file is
//!   loaded and validated, one [`PlanDiff`] says what changes, every subsystem prepares
//!   what can fail (the data plane binds new listeners) and only then do all commit; each
//!   answers, and only then are the log line and `alive_proxy_config_reloads_total` written.
//!   Any failure before the commit leaves the previous configuration serving everywhere.
//!   A change of `identity` or `admin.*` is refused: both need a restart (see docs).
//! - **Stop** (SIGTERM, SIGINT) is a planned handover: VIP holders park their VIPs and
//!   release their leases so a peer takes new connections at once, listeners close once the
//!   peer has them, established sessions drain here for up to `--drain-timeout` (the peer
//!   forwards their packets back), what is left is reset, then the VIPs go.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::config::diff::PlanDiff;
use crate::config::{self, LoadError, Mode, Plan};
use crate::dataplane::{
    DEFAULT_SPLICE_AFTER, Dataplane, DataplaneError, DataplaneOptions, DriverChoice, PassiveEvent,
    Prebound, Routing,
};
use crate::ha::{self, HaOptions, HaSupervisor};
use crate::health::supervisor::HealthSupervisor;
use crate::stats::admin::AdminServer;
use crate::stats::{self, Readiness, StatsRegistry};

/// After the next holder took a VIP, listeners stay open this long: clients whose ARP or
/// neighbour entry still names this host (the takeover announcement is on its way) are
/// served here rather than reset.
const HANDOVER_GRACE: Duration = Duration::from_millis(1000);

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

/// Why a reload was refused; the previous configuration keeps serving in every case.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error("{0}")]
    Load(LoadError),
    #[error(
        "`identity` changed: it names this host in every lease and cannot change while it \
         holds them; restart alive-proxy to use the new identity"
    )]
    Identity,
    #[error(
        "`admin` changed: the admin socket and HTTP listener move only on restart (a \
         running `alive-proxy stats` would lose the daemon); restart alive-proxy, or put \
         the old values back to reload the rest"
    )]
    Admin,
    #[error("the data plane cannot take the new configuration: {0}")]
    Dataplane(DataplaneError),
}

/// Everything [`serve`] needs besides the configuration file's content.
#[derive(Debug)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub dataplane: DataplaneOptions,
    /// How long a stop lets established sessions finish.
    pub drain_timeout: Duration,
    /// How often the file is checked for changes; zero: only on request.
    pub watch_interval: Duration,
    /// Listeners bound by the caller for some VIP:ports (tests bind port 0).
    pub prebound: Prebound,
}

impl ServeOptions {
    pub fn new(config: PathBuf) -> ServeOptions {
        ServeOptions {
            config,
            dataplane: DataplaneOptions::default(),
            drain_timeout: Duration::from_secs(30),
            watch_interval: Duration::from_secs(2),
            prebound: Prebound::default(),
        }
    }
}

impl From<RunArgs> for ServeOptions {
    fn from(args: RunArgs) -> ServeOptions {
        ServeOptions {
            config: args.config,
            dataplane: DataplaneOptions {
                workers: args.workers,
                driver: args.driver,
                splice_after: (args.splice_after > 0).then_some(args.splice_after),
                ..DataplaneOptions::default()
            },
            drain_timeout: args.drain_timeout,
            watch_interval: args.watch_interval,
            prebound: Prebound::default(),
        }
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode, RunError> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("alive-control")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    runtime.block_on(async {
        // Before the first listener opens: a SIGHUP or SIGTERM that arrives once clients can
        // connect must never hit the default action (terminate without draining).
        let signals = Signals::install()?;
        let (reloads, reload_rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(signals.forward(reloads, stop));
        serve(ServeOptions::from(args), reload_rx, async {
            // A dropped sender also means stop.
            let _ = stopped.await;
        })
        .await
    })?;
    Ok(ExitCode::SUCCESS)
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

/// Serves `options.config` until `stop` resolves, then stops as described in the module
/// doc. Each message on `reloads` reloads the file. Call inside a multi-thread tokio
/// runtime.
pub async fn serve(
    options: ServeOptions,
    reloads: mpsc::UnboundedReceiver<()>,
    stop: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let loaded = config::load(&options.config, Mode::Run)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let plan = loaded.plan;
    // Before anything binds or touches a VIP: refuse to run next to another instance.
    let _instance = crate::daemon::instance_lock::acquire(&plan.admin.socket)?;
    crate::daemon::fd_limit::raise_and_report(options.dataplane.workers);
    let stats = StatsRegistry::new();
    let (passive_tx, passive_rx) = mpsc::unbounded_channel();
    let dataplane = Dataplane::start_with(
        &plan,
        options.dataplane,
        stats.counters(),
        passive_tx,
        options.prebound,
    )?;
    tracing::info!(
        config = %options.config.display(),
        workers = dataplane.worker_count(),
        driver = %dataplane.driver(),
        services = plan.instances.iter().map(|i| i.services.len()).sum::<usize>(),
        "alive-proxy serving"
    );
    let ha_options = HaOptions {
        drain: options.drain_timeout,
        ..HaOptions::default()
    };
    let control =
        match ControlPlane::start(&plan, dataplane.routing(), &stats, passive_rx, ha_options).await
        {
            Ok(control) => control,
            Err(err) => {
                join(dataplane).await;
                return Err(err);
            }
        };
    let mut serving = Serving {
        path: options.config,
        plan,
        dataplane,
        control,
        stats,
    };
    crate::notify::ready("serving");
    serving
        .serve_until(reloads, stop, options.watch_interval)
        .await;
    crate::notify::stopping("handing the VIPs over, then draining sessions");
    serving.stop(options.drain_timeout).await;
    Ok(())
}

/// Ends the data plane's threads without blocking the runtime.
async fn join(dataplane: Dataplane) {
    if let Err(e) = tokio::task::spawn_blocking(move || dataplane.join()).await {
        tracing::error!("joining the data plane: {e}");
    }
}

/// The control-plane parts started next to the data plane.
pub struct ControlPlane {
    health: HealthSupervisor,
    ha: HaSupervisor,
    admin: Option<AdminServer>,
    readiness: Arc<Readiness>,
}

impl ControlPlane {
    /// Health first (backends' initial states reach the routing snapshot), then VIP
    /// ownership, then the admin endpoint. An admin endpoint that cannot bind is logged,
    /// not fatal: serving traffic matters more than reporting on it.
    async fn start(
        plan: &Plan,
        routing: Arc<Routing>,
        stats: &Arc<StatsRegistry>,
        passive: mpsc::UnboundedReceiver<PassiveEvent>,
        ha_options: HaOptions,
    ) -> Result<Self, RunError> {
        stats.control().set_plan(plan);
        let health = HealthSupervisor::spawn(plan, routing, passive, stats.control());
        let identity = ha::host_identity(plan)?;
        tracing::info!(%identity, "lease identity");
        let ha = HaSupervisor::spawn(plan, identity, stats.control(), ha_options)?;
        let readiness = Readiness::new();
        readiness.watch(stats.control());
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
        })
    }
}

/// The running process: what [`serve`] reloads and stops.
struct Serving {
    path: PathBuf,
    plan: Plan,
    dataplane: Dataplane,
    control: ControlPlane,
    stats: Arc<StatsRegistry>,
}

impl Serving {
    /// Reloads on request and on file change until `stop` resolves.
    async fn serve_until(
        &mut self,
        mut reloads: mpsc::UnboundedReceiver<()>,
        stop: impl Future<Output = ()>,
        watch_interval: Duration,
    ) {
        let watching = !watch_interval.is_zero();
        let mut watcher = config::watch::ConfigWatcher::new(&self.path, watch_interval);
        let mut reloads_open = true;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                request = reloads.recv(), if reloads_open => match request {
                    Some(()) => {
                        tracing::info!(config = %self.path.display(), "reload requested");
                        watcher.mark_applied();
                        self.reload().await;
                    }
                    None => reloads_open = false,
                },
                () = watcher.next_stable_change(), if watching => {
                    tracing::info!(config = %self.path.display(), "config file changed and settled: reloading");
                    self.reload().await;
                }
            }
        }
    }

    /// One reload, logged and counted only once every part answered.
    async fn reload(&mut self) {
        crate::notify::reloading();
        let result = self.try_reload().await;
        crate::notify::ready("serving");
        self.stats.control().reload_result(result.is_ok());
        match result {
            Ok(summary) => tracing::info!("configuration reloaded: {summary}"),
            Err(ReloadError::Load(err)) => {
                for diagnostic in err.diagnostics() {
                    tracing::error!("{diagnostic}");
                }
                if err.diagnostics().is_empty() {
                    tracing::error!("{err}");
                }
                tracing::error!(config = %self.path.display(), "reload rejected; still serving the previous configuration");
            }
            Err(err) => {
                tracing::error!(config = %self.path.display(), "reload rejected: {err}; still serving the previous configuration");
            }
        }
    }

    async fn try_reload(&mut self) -> Result<String, ReloadError> {
        let loaded = config::load(&self.path, Mode::Run).map_err(ReloadError::Load)?;
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let plan = loaded.plan;
        let diff = PlanDiff::between(&self.plan, &plan);
        if diff.is_empty() {
            return Ok("unchanged".into());
        }
        if diff.identity_changed {
            return Err(ReloadError::Identity);
        }
        if diff.admin_changed {
            return Err(ReloadError::Admin);
        }
        // Prepare: everything that can fail. Dropping `listeners` unbinds them again.
        let listeners = self
            .dataplane
            .prepare_plan(&plan)
            .map_err(ReloadError::Dataplane)?;
        // Commit: every part takes the plan and answers.
        self.dataplane.commit_plan(&plan, listeners);
        self.stats.control().set_plan(&plan);
        if !self.control.health.apply(&plan).await {
            tracing::error!("health checks did not answer the reload (supervisor gone)");
        }
        let ha = self.control.ha.apply(&plan, &diff).await;
        self.plan = plan;
        let mut summary = diff.summary();
        if !ha.handed_over.is_empty() {
            summary.push_str(&format!(
                "; VIP ownership handed over: {}",
                ha.handed_over.join(", ")
            ));
        }
        Ok(summary)
    }

    /// Planned handover, drain, then the VIPs go (module doc).
    async fn stop(self, drain_timeout: Duration) {
        let Serving {
            dataplane, control, ..
        } = self;
        let ControlPlane {
            health,
            mut ha,
            admin,
            readiness,
        } = control;
        readiness.set_ready(false);
        let started = Instant::now();
        let drain_until = started + drain_timeout;
        tracing::info!(drain = ?drain_timeout, live = dataplane.live_sessions(), "stopping: handing the VIPs over");
        let parked = ha.hand_over(drain_until).await;
        if parked {
            tokio::time::sleep(
                HANDOVER_GRACE.min(drain_until.saturating_duration_since(Instant::now())),
            )
            .await;
        }
        dataplane.stop_accepting();
        tracing::info!(live = dataplane.live_sessions(), after = ?started.elapsed(), "listeners closed; draining sessions");
        while dataplane.live_sessions() > 0 && Instant::now() < drain_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if dataplane.live_sessions() > 0 {
            dataplane.reset_sessions(drain_timeout);
            let reset_until = Instant::now() + Duration::from_secs(1);
            while dataplane.live_sessions() > 0 && Instant::now() < reset_until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        tracing::info!(after = ?started.elapsed(), "sessions drained; releasing the VIPs");
        ha.shutdown().await;
        health.shutdown().await;
        if let Some(admin) = admin {
            admin.shutdown();
        }
        join(dataplane).await;
        tracing::info!(took = ?started.elapsed(), "stopped");
    }
}

/// The signals `run` obeys.
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

    /// SIGHUP → a reload request; SIGTERM/SIGINT → the stop (once).
    async fn forward(mut self, reloads: mpsc::UnboundedSender<()>, stop: oneshot::Sender<()>) {
        loop {
            tokio::select! {
                _ = self.terminate.recv() => { tracing::info!("SIGTERM received"); break; }
                _ = self.interrupt.recv() => { tracing::info!("SIGINT received"); break; }
                _ = self.hangup.recv() => {
                    tracing::info!("SIGHUP received");
                    if reloads.send(()).is_err() {
                        return;
                    }
                }
            }
        }
        // `serve` may already be stopping on its own; nothing else to tell it.
        let _ = stop.send(());
        // Later signals must not hit the default action while the drain runs.
        loop {
            tokio::select! {
                _ = self.terminate.recv() => tracing::info!("SIGTERM received again: still draining"),
                _ = self.interrupt.recv() => tracing::info!("SIGINT received again: still draining"),
                _ = self.hangup.recv() => tracing::info!("SIGHUP ignored while stopping"),
            }
        }
    }
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
