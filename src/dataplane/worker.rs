//! One data-plane worker's state, shared by the sessions on its thread: its routing view,
//! its listeners, the sessions it accepted (with their timeouts), its pipe and buffer pools
//! and its stats shard. The thread's loop that accepts and obeys the control plane's `WorkerCommand`s is in
//! `thread.rs`. A worker shares nothing with other workers but the routing snapshot and the
//! per-backend atomics in it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::buffers::BufferPool;
use super::clock::now_ms;
use super::pipes::PipePool;
use super::relay::{HalfClose, Leg};
use super::routing::{Routing, RoutingSnapshot, ServiceRoute};
use super::signal::Signal;
use crate::config::{BackendKey, Service};
use crate::counters::events::{During, Exhausted, LocalEvents, SessionTimeout};
use crate::counters::{BackendStats, ServiceStats, WorkerStats};
use crate::health::PassiveEvent;

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
    /// Each listener's accept task stops when its signal fires.
    pub(super) listeners: RefCell<HashMap<SocketAddr, Rc<Signal>>>,
    /// Sessions alive across all workers, for the drain at shutdown.
    live: Arc<AtomicUsize>,
    last_accept_warning_ms: Cell<Option<u64>>,
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
    #[allow(clippy::too_many_arguments)] // one per part of the worker's state, named
    pub(super) fn new(
        id: usize,
        routing: Arc<Routing>,
        options: RelayOptions,
        pipes: Rc<PipePool>,
        buffers: Rc<BufferPool>,
        passive: UnboundedSender<PassiveEvent>,
        stats: WorkerStats,
        live: Arc<AtomicUsize>,
    ) -> Rc<Worker> {
        Rc::new(Worker {
            id,
            routing,
            options,
            pipes,
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
        })
    }

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
    pub(super) fn close_expired(&self, now: u64) {
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

    pub(super) fn close_sessions(&self, matching: impl Fn(&BackendKey) -> bool) -> usize {
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
    pub(super) fn warn_accept(&self, addr: SocketAddr, err: &std::io::Error) {
        if self.resource_warning_due() {
            tracing::warn!(worker = self.id, %addr, %err, "accept failed; pausing new connections briefly");
        }
    }
}
