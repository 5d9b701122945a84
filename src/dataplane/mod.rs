//! Data plane: thread-per-core monoio workers, listeners, schedulers, the session relay.
//!
//! # Layout
//! - [`driver`]: io_uring detection and fallback to the legacy (epoll) driver; ring flags.
//! - [`listener`]: SO_REUSEPORT + FREEBIND listening sockets, one per worker per VIP:port.
//! - [`routing`]: the arc-swap routing snapshot; [`backend`]: per-backend shared state;
//!   [`clock`]: the millisecond clock for their deadlines. [`Routing`] is the
//!   [`HealthSink`](crate::health::HealthSink) health writes to.
//! - [`scheduler`]: the IPVS scheduler algorithms; [`scheduling`]: the per-connection view
//!   handed to them.
//! - [`worker`] (a worker's state), [`thread`] (its loop), [`command`], [`signal`]: one
//!   runtime per thread and how the control plane steers it.
//! - [`session`], [`connect`], [`relay`], [`buffers`], [`pipes`], [`proxy_header`]: one client
//!   connection.
//! - Connect failures go to health as [`PassiveEvent`]s, health's type.
//!
//! [`Dataplane`] is the handle the control plane holds: start, reload, stop.

pub mod backend;
pub mod buffers;
pub mod clock;
pub mod command;
pub mod connect;
pub mod driver;
pub mod listener;
pub mod pipes;
pub mod proxy_header;
pub mod relay;
pub mod routing;
pub mod scheduler;
pub mod scheduling;
pub mod session;
pub mod signal;
pub mod thread;
pub mod worker;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedSender;

pub use crate::health::PassiveEvent;
pub use driver::{DriverChoice, DriverKind};
pub use routing::Routing;

use command::WorkerCommand;
use thread::WorkerSeed;
use worker::RelayOptions;

use crate::config::Plan;
use crate::counters::Counters;

/// Tuning of the data plane (flags of `alive-proxy run`).
#[derive(Debug, Clone, Copy)]
pub struct DataplaneOptions {
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    pub driver: DriverChoice,
    /// A direction switches from copy to splice after this many bytes; `None` = copy only.
    pub splice_after: Option<u64>,
    /// Pipe pairs per worker for splice (two fds each); the descriptor budget may lower it.
    pub max_pipes_per_worker: usize,
    /// Copy buffer per direction.
    pub buffer_size: usize,
}

impl Default for DataplaneOptions {
    fn default() -> Self {
        DataplaneOptions {
            workers: 0,
            driver: DriverChoice::Auto,
            splice_after: Some(DEFAULT_SPLICE_AFTER),
            max_pipes_per_worker: crate::daemon::fd_limit::PIPE_PAIRS_PER_WORKER_MAX,
            buffer_size: 16 * 1024,
        }
    }
}

/// Bytes a direction copies before it moves to splice: past request/response sizes of
/// typical HTTP traffic, where splice costs more than it saves.
pub const DEFAULT_SPLICE_AFTER: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Driver(#[from] driver::DriverError),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot start data-plane worker {worker}: {error}")]
    Worker {
        worker: usize,
        error: std::io::Error,
    },
}

struct WorkerHandle {
    commands: UnboundedSender<WorkerCommand>,
    thread: Option<JoinHandle<()>>,
}

/// The running data plane.
pub struct Dataplane {
    routing: Arc<Routing>,
    workers: Vec<WorkerHandle>,
    listening: Mutex<BTreeSet<SocketAddr>>,
    live: Arc<AtomicUsize>,
    driver: DriverKind,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("workers", &self.workers.len())
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

fn listen_addrs(plan: &Plan) -> BTreeSet<SocketAddr> {
    plan.instances
        .iter()
        .flat_map(|i| i.services.iter())
        .map(|s| s.listen_addr())
        .collect()
}

/// Listening sockets bound by the caller (tests bind port 0 first; no free-port races),
/// used instead of binding their addresses. Every worker accepts on a duplicate of one.
#[derive(Debug, Default)]
pub struct Prebound {
    listeners: std::collections::HashMap<SocketAddr, std::net::TcpListener>,
}

impl Prebound {
    /// Adds `listener` for the address it is bound to.
    pub fn add(&mut self, listener: std::net::TcpListener) -> std::io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        self.listeners.insert(addr, listener);
        Ok(addr)
    }
}

type PerWorker = Vec<Vec<(SocketAddr, std::net::TcpListener)>>;

/// Binds `count` SO_REUSEPORT sockets per address (or duplicates a pre-bound one); on
/// failure nothing stays bound.
fn bind_all(
    addrs: &BTreeSet<SocketAddr>,
    count: usize,
    prebound: &mut Prebound,
) -> Result<PerWorker, DataplaneError> {
    let mut per_worker: Vec<Vec<_>> = (0..count).map(|_| Vec::new()).collect();
    for &addr in addrs {
        let group = match prebound.listeners.remove(&addr) {
            Some(listener) => (0..count)
                .map(|_| listener.try_clone())
                .collect::<Result<Vec<_>, _>>(),
            None => listener::bind_group(addr, count),
        }
        .map_err(|error| DataplaneError::Listen { addr, error })?;
        for (slot, socket) in per_worker.iter_mut().zip(group) {
            slot.push((addr, socket));
        }
    }
    Ok(per_worker)
}

/// A reload's listeners, bound and not yet serving: [`Dataplane::prepare_plan`] makes it,
/// [`Dataplane::commit_plan`] puts it to work; dropping it unbinds everything.
#[derive(Debug)]
pub struct PreparedListeners {
    per_worker: PerWorker,
    added: BTreeSet<SocketAddr>,
    removed: Vec<SocketAddr>,
    wanted: BTreeSet<SocketAddr>,
}

impl Dataplane {
    pub fn start(
        plan: &Plan,
        options: DataplaneOptions,
        counters: Arc<Counters>,
        passive: tokio::sync::mpsc::UnboundedSender<PassiveEvent>,
    ) -> Result<Dataplane, DataplaneError> {
        Dataplane::start_with(plan, options, counters, passive, Prebound::default())
    }

    /// [`Dataplane::start`] with some listeners bound by the caller.
    pub fn start_with(
        plan: &Plan,
        options: DataplaneOptions,
        counters: Arc<Counters>,
        passive: tokio::sync::mpsc::UnboundedSender<PassiveEvent>,
        mut prebound: Prebound,
    ) -> Result<Dataplane, DataplaneError> {
        let (driver, fallback_reason) = driver::resolve(options.driver)?;
        if let Some(why) = fallback_reason {
            // Said once, with the fix: in a container this is nearly always the seccomp
            // profile (Docker >= 25 and containerd >= 2.0 block io_uring by default).
            tracing::warn!(
                %why,
                "io_uring unavailable: the data plane falls back to epoll (same behaviour, more \
                 CPU per connection); in a container allow io_uring with \
                 --security-opt seccomp=docker/seccomp.json (docs/operations.md)"
            );
        }
        let count = match options.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let routing = Arc::new(Routing::new(plan));
        let addrs = listen_addrs(plan);
        let listeners = bind_all(&addrs, count, &mut prebound)?;
        let live = Arc::new(AtomicUsize::new(0));
        // Splice may take only its share of descriptors, and each pipe lent can hold one
        // io_uring kernel worker in a stalled splice: both bounded by the same number.
        let max_pipes = options
            .max_pipes_per_worker
            .min(crate::daemon::fd_limit::Budget::current(count).pipe_pairs_per_worker);
        let relay = RelayOptions {
            splice_after: options.splice_after,
            buffer_size: options.buffer_size,
        };

        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<(usize, std::io::Result<()>)>();
        let mut workers = Vec::with_capacity(count);
        for (id, worker_listeners) in listeners.into_iter().enumerate() {
            let (commands, receiver) = futures::channel::mpsc::unbounded();
            let seed = WorkerSeed {
                id,
                routing: Arc::clone(&routing),
                options: relay,
                max_pipes,
                passive: passive.clone(),
                stats: counters.worker(id),
                live: Arc::clone(&live),
                listeners: worker_listeners,
                commands: receiver,
            };
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("alive-dp-{id}"))
                .spawn(move || {
                    let signal_ready = ready.clone();
                    let result = driver::block_on(driver, move || async move {
                        driver::cap_kernel_workers(driver, max_pipes);
                        tracing::info!(worker = id, %driver, max_pipes, "data-plane worker started");
                        // The receiver may be gone if start already failed elsewhere.
                        let _ = signal_ready.send((id, Ok(())));
                        thread::run(seed).await;
                    });
                    if let Err(err) = result {
                        let _ = ready.send((id, Err(err)));
                    }
                })
                .map_err(|error| DataplaneError::Worker { worker: id, error })?;
            workers.push(WorkerHandle {
                commands,
                thread: Some(thread),
            });
        }
        drop(ready_tx);
        routing.set_workers(workers.iter().map(|w| w.commands.clone()).collect());
        let dataplane = Dataplane {
            routing,
            workers,
            listening: Mutex::new(addrs),
            live,
            driver,
        };
        for _ in 0..count {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((worker, Err(error))) => {
                    // Dropping the data plane ends the workers that did start.
                    drop(dataplane);
                    return Err(DataplaneError::Worker { worker, error });
                }
                Err(_) => break,
            }
        }
        Ok(dataplane)
    }

    pub fn routing(&self) -> Arc<Routing> {
        Arc::clone(&self.routing)
    }

    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Sessions alive across all workers.
    pub fn live_sessions(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Reload: [`Dataplane::prepare_plan`] then [`Dataplane::commit_plan`].
    pub fn apply_plan(&self, plan: &Plan) -> Result<(), DataplaneError> {
        let prepared = self.prepare_plan(plan)?;
        self.commit_plan(plan, prepared);
        Ok(())
    }

    /// Reload, phase 1: binds listeners for new VIP:ports. A bind failure changes nothing.
    pub fn prepare_plan(&self, plan: &Plan) -> Result<PreparedListeners, DataplaneError> {
        let listening = self.listening();
        let wanted = listen_addrs(plan);
        let added: BTreeSet<SocketAddr> = wanted.difference(&listening).copied().collect();
        let removed: Vec<SocketAddr> = listening.difference(&wanted).copied().collect();
        let per_worker = bind_all(&added, self.workers.len(), &mut Prebound::default())?;
        Ok(PreparedListeners {
            per_worker,
            added,
            removed,
            wanted,
        })
    }

    /// Reload, phase 2: publishes the new routing snapshot, then tells workers to add and
    /// remove listeners. Live sessions are untouched, including those of removed services.
    pub fn commit_plan(&self, plan: &Plan, prepared: PreparedListeners) {
        let PreparedListeners {
            per_worker,
            added,
            removed,
            wanted,
        } = prepared;
        self.routing.apply_plan(plan);
        for (worker, sockets) in self.workers.iter().zip(per_worker) {
            for (addr, listener) in sockets {
                self.send(worker, WorkerCommand::AddListener { addr, listener });
            }
            for addr in &removed {
                self.send(worker, WorkerCommand::RemoveListener(*addr));
            }
        }
        tracing::info!(added = ?added, removed = ?removed, "data plane reloaded");
        *self.listening() = wanted;
    }

    fn listening(&self) -> std::sync::MutexGuard<'_, BTreeSet<SocketAddr>> {
        self.listening
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn send(&self, worker: &WorkerHandle, command: WorkerCommand) {
        if worker.commands.unbounded_send(command).is_err() {
            tracing::warn!("data-plane worker is gone; command dropped");
        }
    }

    fn broadcast(&self, command: impl Fn() -> WorkerCommand) {
        for worker in &self.workers {
            self.send(worker, command());
        }
    }

    /// Graceful stop: close listeners, let sessions finish for up to `drain`, reset what is
    /// left, then end the worker threads. Blocks the calling thread.
    pub fn shutdown(mut self, drain: Duration) {
        self.stop_accepting();
        let deadline = Instant::now() + drain;
        while self.live_sessions() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = self.live_sessions();
        if left > 0 {
            self.reset_sessions(drain);
            let deadline = Instant::now() + Duration::from_secs(1);
            while self.live_sessions() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.join_workers();
    }

    /// Graceful stop, step 1: every listener closes; live sessions continue.
    pub fn stop_accepting(&self) {
        self.broadcast(|| WorkerCommand::StopAccepting);
    }

    /// Graceful stop, step 2, when the drain timeout passed: resets every live session.
    pub fn reset_sessions(&self, drain: Duration) {
        tracing::warn!(
            sessions = self.live_sessions(),
            ?drain,
            "drain timeout; resetting remaining sessions"
        );
        self.broadcast(|| WorkerCommand::CloseAllSessions);
    }

    /// Ends the worker threads (after the drain) and waits for them.
    pub fn join(mut self) {
        self.join_workers();
    }

    /// Ends every worker thread that is still running and waits for it.
    fn join_workers(&mut self) {
        for worker in &mut self.workers {
            let Some(thread) = worker.thread.take() else {
                continue;
            };
            // A worker whose loop already ended has dropped its receiver; nothing to tell.
            let _ = worker.commands.unbounded_send(WorkerCommand::Exit);
            if thread.join().is_err() {
                tracing::error!("a data-plane worker panicked");
            }
        }
    }
}

/// A data plane dropped without [`Dataplane::shutdown`] (an error path) still ends its
/// threads instead of leaving them serving.
impl Drop for Dataplane {
    fn drop(&mut self) {
        self.join_workers();
    }
}
