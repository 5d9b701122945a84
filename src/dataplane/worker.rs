//! One data-plane worker: a monoio runtime on its own thread with its own SO_REUSEPORT
//! listener on every VIP:port, the sessions it accepted, its pipe pool and its stats shard.
//! It obeys [`WorkerCommand`]s from the control plane and shares nothing else with other
//! workers but the routing snapshot and the per-backend atomics in it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
use super::relay::{HalfClose, Leg};
use super::routing::{Routing, RoutingSnapshot, ServiceRoute};
use super::session;
use super::signal::Signal;
use crate::config::{BackendKey, Service};
use crate::counters::events::{During, Exhausted, LocalEvents, SessionTimeout};
use crate::counters::{BackendStats, ServiceStats, WorkerStats};
use crate::health::PassiveEvent;

/// How long accepting pauses when the process or system is out of descriptors or memory:
/// long enough for sessions to end and free some, short enough to stay responsive.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// At most one "out of descriptors" log line per worker per this many milliseconds.
const ACCEPT_LOG_EVERY_MS: u64 = 5_000;

/// Relay tuning shared by all sessions of a worker.
#[derive(Debug, Clone, Copy)]
pub struct RelayOptions {
    pub splice_after: Option<u64>,
    pub buffer_size: usize,
}

/// A worker's stats handles for one service, resolved once per snapshot.
pub struct ServiceStatsSet {
    pub service: ServiceStats,
    /// Index-aligned with `ServiceRoute::backends`.
    pub backends: Vec<BackendStats>,
    pub sorry: Option<BackendStats>,
}

#[derive(Default)]
struct StatsCache {
    generation: u64,
    services: HashMap<SocketAddr, Rc<ServiceStatsSet>>,
}

pub struct Worker {
    pub id: usize,
    pub routing: Arc<Routing>,
    pub options: RelayOptions,
    pub pipes: Rc<PipePool>,
    /// Copy buffers, lent to a relay direction only while it holds bytes.
    pub buffers: Rc<BufferPool>,
    passive: UnboundedSender<PassiveEvent>,
    stats: WorkerStats,
    stats_cache: RefCell<StatsCache>,
    sessions: RefCell<HashMap<u64, Rc<SessionWatch>>>,
    /// No session's timer can expire before this `now_ms()`: the sweep skips its walk over
    /// every session until then (100k idle sessions would otherwise cost a walk each tick).
    next_sweep_ms: Cell<u64>,
    next_session: Cell<u64>,
    listeners: RefCell<HashMap<SocketAddr, Rc<Signal>>>,
    /// Sessions alive across all workers, for the drain at shutdown.
    live: Arc<AtomicUsize>,
    last_accept_warning_ms: Cell<Option<u64>>,
}

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

/// Timeouts are checked by one sweep per worker this often, not by a timer per session (a
/// monoio `Sleep` alone is 640 bytes, and every idle session held one): a session times out
/// at most this much after its limit, never before.
pub const TIMEOUT_SWEEP: Duration = Duration::from_millis(100);

/// What the worker knows of one live session: how to close it, and what its timeouts need.
#[derive(Debug)]
pub struct SessionWatch {
    pub key: BackendKey,
    /// Fired to end the session: its backend went down, the data plane is stopping, or a
    /// timeout expired (then `timed_out` says which).
    pub close: Signal,
    /// `now_ms()` of the last transfer either way (or of the FIN passed on).
    pub last_activity: Cell<u64>,
    pub half_close: HalfClose,
    pub timed_out: Cell<Option<SessionTimeout>>,
    idle_ms: u64,
    client_fin_ms: u64,
    server_fin_ms: u64,
}

impl SessionWatch {
    fn new(key: BackendKey, service: &Service) -> SessionWatch {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        SessionWatch {
            key,
            close: Signal::default(),
            last_activity: Cell::new(now_ms()),
            half_close: HalfClose::default(),
            timed_out: Cell::new(None),
            idle_ms: millis(service.idle_timeout),
            client_fin_ms: millis(service.client_fin_timeout.min(service.idle_timeout)),
            server_fin_ms: millis(service.server_fin_timeout.min(service.idle_timeout)),
        }
    }

    /// The timer that has expired at `now`: `idle_timeout` while both sides send, or once
    /// one side has finished, the fin timeout of the side still expected to send (HAProxy's
    /// `timeout client-fin` / `server-fin`), whichever is shorter. Inactivity counts from the
    /// last byte either way, or from the FIN if that came later.
    pub fn expired(&self, now: u64) -> Option<SessionTimeout> {
        let (limit, timer) = match self.half_close.first_to_finish() {
            None => (self.idle_ms, SessionTimeout::Idle),
            // The client has finished: the backend is expected to answer.
            Some(Leg::Client) => (self.server_fin_ms, SessionTimeout::ServerFin),
            Some(Leg::Backend) => (self.client_fin_ms, SessionTimeout::ClientFin),
        };
        (now.saturating_sub(self.last_activity.get()) >= limit).then_some(timer)
    }

    /// The earliest time any of this session's timers could expire, as things stand: from
    /// the last activity, the shortest of its limits (a half-close may switch to a fin
    /// timeout at any moment, so assume it already has).
    fn earliest_due(&self) -> u64 {
        let shortest = self.idle_ms.min(self.client_fin_ms).min(self.server_fin_ms);
        self.last_activity.get().saturating_add(shortest)
    }
}

/// Unregisters a session from its worker when it ends.
pub struct SessionRegistration {
    worker: Rc<Worker>,
    id: u64,
    pub watch: Rc<SessionWatch>,
}

impl Drop for SessionRegistration {
    fn drop(&mut self) {
        self.worker.sessions.borrow_mut().remove(&self.id);
    }
}

/// Counts a session in the process-wide live count while it exists.
pub struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Worker {
    pub fn count_live(&self) -> LiveGuard {
        self.live.fetch_add(1, Ordering::Relaxed);
        LiveGuard(Arc::clone(&self.live))
    }

    pub fn report_passive(&self, event: PassiveEvent) {
        // Health may not be running (tests, or shutting down); the suspect mark still holds.
        if self.passive.send(event).is_err() {
            self.events().passive_undelivered();
            tracing::trace!(?event, "no health receiver for a passive failure");
        }
    }

    /// The process-wide event counters.
    pub fn events(&self) -> &LocalEvents {
        self.stats.events()
    }

    pub fn register_session(
        self: &Rc<Self>,
        key: BackendKey,
        service: &Service,
    ) -> SessionRegistration {
        let id = self.next_session.get();
        self.next_session.set(id + 1);
        let watch = Rc::new(SessionWatch::new(key, service));
        self.next_sweep_ms
            .set(self.next_sweep_ms.get().min(watch.earliest_due()));
        self.sessions.borrow_mut().insert(id, Rc::clone(&watch));
        SessionRegistration {
            worker: Rc::clone(self),
            id,
            watch,
        }
    }

    /// Closes every session whose timeout has expired at `now`, and notes when the next
    /// one could.
    fn close_expired(&self, now: u64) {
        if now < self.next_sweep_ms.get() {
            return;
        }
        let mut next = u64::MAX;
        for watch in self.sessions.borrow().values() {
            if watch.timed_out.get().is_some() {
                continue;
            }
            match watch.expired(now) {
                Some(timer) => {
                    watch.timed_out.set(Some(timer));
                    watch.close.fire();
                }
                None => next = next.min(watch.earliest_due()),
            }
        }
        self.next_sweep_ms.set(next);
    }

    /// The stats handles for `route` in `snapshot`, resolved on first use per snapshot.
    pub fn stats_for(
        &self,
        snapshot: &RoutingSnapshot,
        route: &ServiceRoute,
    ) -> Rc<ServiceStatsSet> {
        let mut cache = self.stats_cache.borrow_mut();
        if cache.generation != snapshot.generation {
            cache.services.clear();
            cache.generation = snapshot.generation;
        }
        let listen = route.listen_addr();
        if let Some(set) = cache.services.get(&listen) {
            return Rc::clone(set);
        }
        let set = Rc::new(ServiceStatsSet {
            service: self.stats.service(listen),
            backends: route
                .backends
                .iter()
                .map(|b| self.stats.backend(b.key))
                .collect(),
            sorry: route
                .sorry_backend
                .as_ref()
                .map(|b| self.stats.backend(b.key)),
        });
        cache.services.insert(listen, Rc::clone(&set));
        set
    }

    fn add_listener(self: &Rc<Self>, addr: SocketAddr, listener: std::net::TcpListener) {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(worker = self.id, %addr, %err, "cannot register listener with the runtime");
                return;
            }
        };
        let stop = Rc::new(Signal::default());
        if let Some(previous) = self.listeners.borrow_mut().insert(addr, Rc::clone(&stop)) {
            previous.fire();
        }
        monoio::spawn(accept_loop(Rc::clone(self), listener, addr, stop));
    }

    fn remove_listener(&self, addr: &SocketAddr) {
        if let Some(stop) = self.listeners.borrow_mut().remove(addr) {
            stop.fire();
        }
    }

    fn close_sessions(&self, matching: impl Fn(&BackendKey) -> bool) -> usize {
        let sessions = self.sessions.borrow();
        let mut closed = 0;
        for watch in sessions.values() {
            if matching(&watch.key) {
                watch.close.fire();
                closed += 1;
            }
        }
        closed
    }

    /// Whether a resource-exhaustion warning may be logged now (at most one per
    /// [`ACCEPT_LOG_EVERY_MS`]): a process out of fds would otherwise log per connection.
    fn resource_warning_due(&self) -> bool {
        let now = now_ms();
        let due = self
            .last_accept_warning_ms
            .get()
            .is_none_or(|last| now.saturating_sub(last) >= ACCEPT_LOG_EVERY_MS);
        if due {
            self.last_accept_warning_ms.set(Some(now));
        }
        due
    }

    /// A backend connect failed for lack of local resources (fds, memory, ports): logged
    /// (rate-limited with accept failures), and no backend is blamed.
    pub fn warn_local_exhaustion(&self, err: &std::io::Error) {
        if let Some(resource) = Exhausted::of(err) {
            self.events().exhausted(resource, During::Connect);
        }
        if self.resource_warning_due() {
            tracing::warn!(worker = self.id, %err, "cannot open a backend connection: out of local resources; client reset");
        }
    }

    /// Logs an accept failure at most once per [`ACCEPT_LOG_EVERY_MS`].
    fn warn_accept(&self, addr: SocketAddr, err: &std::io::Error) {
        if self.resource_warning_due() {
            tracing::warn!(worker = self.id, %addr, %err, "accept failed; pausing new connections briefly");
        }
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
    let worker = Rc::new(Worker {
        id,
        routing,
        options,
        pipes: Rc::clone(&pipes),
        buffers,
        passive,
        stats,
        stats_cache: RefCell::new(StatsCache::default()),
        sessions: RefCell::new(HashMap::new()),
        next_session: Cell::new(0),
        next_sweep_ms: Cell::new(0),
        listeners: RefCell::new(HashMap::new()),
        live,
        last_accept_warning_ms: Cell::new(None),
    });
    for (addr, listener) in listeners {
        worker.add_listener(addr, listener);
    }
    let sweeper = Rc::new(Signal::default());
    monoio::spawn(sweep_idle_pipes(pipes, Rc::clone(&sweeper)));
    monoio::spawn(sweep_timeouts(Rc::clone(&worker), Rc::clone(&sweeper)));
    let _stop_sweeper = FireOnDrop(sweeper);
    while let Some(command) = commands.next().await {
        match command {
            WorkerCommand::AddListener { addr, listener } => worker.add_listener(addr, listener),
            WorkerCommand::RemoveListener(addr) => worker.remove_listener(&addr),
            WorkerCommand::CloseBackend(key) => {
                let closed = worker.close_sessions(|k| *k == key);
                tracing::info!(worker = id, backend = %key.backend, service = %key.service, closed, "closed sessions of a down backend");
            }
            WorkerCommand::StopAccepting => {
                let addrs: Vec<SocketAddr> = worker.listeners.borrow().keys().copied().collect();
                for addr in addrs {
                    worker.remove_listener(&addr);
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
