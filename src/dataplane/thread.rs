//! One data-plane worker thread's main loop: the monoio runtime's tasks that accept on each
//! listener and spawn a session per connection, the timeout and idle-pipe sweeps, and the
//! commands from the control plane. The state those sessions share is [`Worker`]
//! (`worker.rs`); keeping the loop here means sessions depend on the worker's state and
//! never on the loop that spawns them.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use monoio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;

use super::buffers::{self, BufferPool};
use super::clock::now_ms;
use super::command::WorkerCommand;
use super::listener::is_resource_exhaustion;
use super::pipes::PipePool;
use super::routing::Routing;
use super::session;
use super::signal::Signal;
use super::worker::{RelayOptions, TIMEOUT_SWEEP, Worker};
use crate::counters::WorkerStats;
use crate::counters::events::{During, Exhausted};
use crate::health::PassiveEvent;

/// How long accepting pauses when the process or system is out of descriptors or memory:
/// long enough for sessions to end and free some, short enough to stay responsive.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Everything a worker thread needs, built on the control thread (all `Send`).
pub struct WorkerSeed {
    pub id: usize,
    pub routing: Arc<Routing>,
    pub options: RelayOptions,
    pub max_pipes: usize,
    pub passive: UnboundedSender<PassiveEvent>,
    pub stats: WorkerStats,
    pub live: Arc<AtomicUsize>,
    pub listeners: Vec<(SocketAddr, std::net::TcpListener)>,
    pub commands: UnboundedReceiver<WorkerCommand>,
}

fn add_listener(worker: &Rc<Worker>, addr: SocketAddr, listener: std::net::TcpListener) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(worker = worker.id, %addr, %err, "cannot register listener with the runtime");
            return;
        }
    };
    let stop = Rc::new(Signal::default());
    if let Some(previous) = worker.listeners.borrow_mut().insert(addr, Rc::clone(&stop)) {
        previous.fire();
    }
    monoio::spawn(accept_loop(Rc::clone(worker), listener, addr, stop));
}

fn remove_listener(worker: &Worker, addr: &SocketAddr) {
    if let Some(stop) = worker.listeners.borrow_mut().remove(addr) {
        stop.fire();
    }
}

async fn accept_loop(
    worker: Rc<Worker>,
    listener: TcpListener,
    addr: SocketAddr,
    stop: Rc<Signal>,
) {
    tracing::debug!(worker = worker.id, %addr, "accepting");
    loop {
        if stop.is_fired() {
            break;
        }
        let accepted = monoio::select! {
            _ = stop.wait() => None,
            result = listener.accept() => Some(result),
        };
        match accepted {
            None => break,
            Some(Ok((stream, peer))) => {
                monoio::spawn(session::serve(Rc::clone(&worker), stream, peer, addr));
            }
            Some(Err(err)) if is_resource_exhaustion(&err) => {
                if let Some(resource) = Exhausted::of(&err) {
                    worker.events().exhausted(resource, During::Accept);
                }
                worker.warn_accept(addr, &err);
                monoio::time::sleep(ACCEPT_PAUSE).await;
            }
            Some(Err(err)) => {
                // ECONNABORTED and friends concern one connection; still never spin on a
                // persistent error.
                worker.warn_accept(addr, &err);
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    tracing::debug!(worker = worker.id, %addr, "listener closed");
}

/// Closes the pool's expired idle pipes every few seconds until `stop` fires.
async fn sweep_idle_pipes(pipes: Rc<PipePool>, stop: Rc<Signal>) {
    let every = super::pipes::IDLE_TTL / 2;
    loop {
        monoio::select! {
            _ = stop.wait() => return,
            _ = monoio::time::sleep(every) => pipes.close_idle(std::time::Instant::now()),
        }
    }
}

/// Sweeps the worker's sessions for expired timeouts every [`TIMEOUT_SWEEP`] until `stop`.
async fn sweep_timeouts(worker: Rc<Worker>, stop: Rc<Signal>) {
    loop {
        monoio::select! {
            _ = stop.wait() => return,
            _ = monoio::time::sleep(TIMEOUT_SWEEP) => worker.close_expired(now_ms()),
        }
    }
}

/// Fires its signal when dropped: a task tied to a scope ends with it.
struct FireOnDrop(Rc<Signal>);

impl Drop for FireOnDrop {
    fn drop(&mut self) {
        self.0.fire();
    }
}

/// The worker's main task: start the initial listeners, then obey commands until `Exit`
/// (or until the control plane drops its sender).
pub async fn run(seed: WorkerSeed) {
    let WorkerSeed {
        id,
        routing,
        options,
        max_pipes,
        passive,
        stats,
        live,
        listeners,
        mut commands,
    } = seed;
    let pipes = PipePool::new(max_pipes, Arc::clone(stats.events()));
    let buffers = BufferPool::new(options.buffer_size, buffers::IDLE_KEEP, stats.events());
    let worker = Worker::new(
        id,
        routing,
        options,
        Rc::clone(&pipes),
        buffers,
        passive,
        stats,
        live,
    );
    for (addr, listener) in listeners {
        add_listener(&worker, addr, listener);
    }
    let sweeper = Rc::new(Signal::default());
    monoio::spawn(sweep_idle_pipes(pipes, Rc::clone(&sweeper)));
    monoio::spawn(sweep_timeouts(Rc::clone(&worker), Rc::clone(&sweeper)));
    let _stop_sweeper = FireOnDrop(sweeper);
    while let Some(command) = commands.next().await {
        match command {
            WorkerCommand::AddListener { addr, listener } => add_listener(&worker, addr, listener),
            WorkerCommand::RemoveListener(addr) => remove_listener(&worker, &addr),
            WorkerCommand::CloseBackend(key) => {
                let closed = worker.close_sessions(|k| *k == key);
                tracing::info!(worker = id, backend = %key.backend, service = %key.service, closed, "closed sessions of a down backend");
            }
            WorkerCommand::StopAccepting => {
                let addrs: Vec<SocketAddr> = worker.listeners.borrow().keys().copied().collect();
                for addr in addrs {
                    remove_listener(&worker, &addr);
                }
            }
            WorkerCommand::CloseAllSessions => {
                let closed = worker.close_sessions(|_| true);
                tracing::info!(worker = id, closed, "closed remaining sessions");
            }
            WorkerCommand::Exit => break,
        }
    }
}
