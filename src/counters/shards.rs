//! The per-worker recording shards the data plane writes.
//!
//! Each data-plane worker gets its own [`WorkerStats`] shard. Its handles
//! ([`ServiceStats`], [`BackendStats`]) point at counters and histograms that only that worker
//! writes, so recording is a plain load and store on memory no other core writes: no lock,
//! no locked instruction, no shared cache line. The handles are neither `Send` nor `Sync`,
//! which makes the single-writer rule a compile-time fact. Stats merges all shards on demand
//! ([`Counters::shards`]); shards are never dropped, so totals never go backwards when a
//! worker exits.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::config::BackendKey;

use super::events::LocalEvents;
use super::histogram::{Recorder, bump};

/// Lock a mutex that guards only counters: a panic elsewhere must not take the stats down
/// with it (the data inside is plain counters, valid at any point).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every shard the process's workers record into, and the process-wide event counters.
#[derive(Default)]
pub struct Counters {
    shards: Mutex<Vec<Arc<Shard>>>,
    events: Arc<LocalEvents>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("workers", &lock(&self.shards).len())
            .finish_non_exhaustive()
    }
}

impl Counters {
    pub fn new() -> Arc<Counters> {
        Arc::new(Counters::default())
    }

    /// A new shard for one data-plane worker. Call once per worker thread and keep it there
    /// (it may be created on another thread and moved in). Calling it again with the same id
    /// (e.g. a restarted worker) adds another shard; merged totals include both.
    pub fn worker(&self, worker_id: usize) -> WorkerStats {
        let shard = Arc::new(Shard {
            worker_id,
            services: Mutex::new(HashMap::new()),
            backends: Mutex::new(HashMap::new()),
        });
        lock(&self.shards).push(Arc::clone(&shard));
        WorkerStats {
            shard,
            events: Arc::clone(&self.events),
        }
    }

    /// Process-wide event counters (exhaustion, passive failures, timeouts, admin).
    pub fn events(&self) -> Arc<LocalEvents> {
        Arc::clone(&self.events)
    }

    /// Every shard, for merging.
    pub(crate) fn shards(&self) -> Vec<Arc<Shard>> {
        lock(&self.shards).clone()
    }
}

/// One worker's counters, keyed by service and backend. The maps are locked only when a
/// handle is resolved (once per routing snapshot) and when the control plane merges.
pub(crate) struct Shard {
    pub(crate) worker_id: usize,
    pub(crate) services: Mutex<HashMap<SocketAddr, Arc<ServiceCells>>>,
    pub(crate) backends: Mutex<HashMap<BackendKey, Arc<BackendCells>>>,
}

/// One data-plane worker's recording shard. `Send` (create it anywhere, move it into the
/// worker thread) but not `Clone`: one writer per shard.
pub struct WorkerStats {
    shard: Arc<Shard>,
    events: Arc<LocalEvents>,
}

impl std::fmt::Debug for WorkerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerStats")
            .field("worker_id", &self.shard.worker_id)
            .finish_non_exhaustive()
    }
}

impl WorkerStats {
    /// The handle for one VIP:port. Resolve once per routing snapshot and cache it: this takes
    /// a (control-plane-shared, rarely contended) lock; recording through the handle does not.
    pub fn service(&self, vip_port: SocketAddr) -> ServiceStats {
        let cells = Arc::clone(
            lock(&self.shard.services)
                .entry(vip_port)
                .or_insert_with(|| Arc::new(ServiceCells::new())),
        );
        ServiceStats {
            cells,
            _single_thread: PhantomData,
        }
    }

    /// The handle for one backend of one service; same rules as [`WorkerStats::service`].
    pub fn backend(&self, key: BackendKey) -> BackendStats {
        let cells = Arc::clone(
            lock(&self.shard.backends)
                .entry(key)
                .or_insert_with(|| Arc::new(BackendCells::new())),
        );
        BackendStats {
            cells,
            _single_thread: PhantomData,
        }
    }

    pub fn worker_id(&self) -> usize {
        self.shard.worker_id
    }

    /// The process-wide event counters.
    pub fn events(&self) -> &Arc<LocalEvents> {
        &self.events
    }
}

/// Makes a handle `!Send + !Sync`: its counters have exactly one writer, the worker thread
/// that resolved it.
type SingleThread = PhantomData<*const ()>;

pub(crate) struct ServiceCells {
    pub(crate) accepted: AtomicU64,
    pub(crate) refused_limit: AtomicU64,
    pub(crate) no_backend: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) session_duration: Recorder,
}

impl ServiceCells {
    fn new() -> ServiceCells {
        ServiceCells {
            accepted: AtomicU64::new(0),
            refused_limit: AtomicU64::new(0),
            no_backend: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            session_duration: Recorder::new(),
        }
    }
}

/// Records one VIP:port's events on one worker. Cheap to clone; stays on its thread.
///
/// Counting rules: [`accepted`](Self::accepted) once for every connection taken from the
/// listener; [`session_closed`](Self::session_closed) once when that connection ends, whatever
/// the reason (including refused and no-backend ones, with their short duration), so
/// `active = accepted − closed`.
#[derive(Clone)]
pub struct ServiceStats {
    cells: Arc<ServiceCells>,
    _single_thread: SingleThread,
}

impl ServiceStats {
    #[inline]
    pub fn accepted(&self) {
        bump(&self.cells.accepted, 1);
    }

    /// Closed at once because the service is at `max_connections`.
    #[inline]
    pub fn refused_limit(&self) {
        bump(&self.cells.refused_limit, 1);
    }

    /// Closed because no backend (and no sorry server) could take it.
    #[inline]
    pub fn no_backend(&self) {
        bump(&self.cells.no_backend, 1);
    }

    /// An accepted connection ended after `duration` (from accept to close).
    #[inline]
    pub fn session_closed(&self, duration: Duration) {
        bump(&self.cells.closed, 1);
        self.cells.session_duration.record(duration);
    }
}

impl std::fmt::Debug for ServiceStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceStats")
    }
}

pub(crate) struct BackendCells {
    pub(crate) connect_ok: AtomicU64,
    pub(crate) connect_failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) bytes_to_backend: AtomicU64,
    pub(crate) bytes_to_client: AtomicU64,
    pub(crate) opened: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) connect_time: Recorder,
    pub(crate) first_byte: Recorder,
    pub(crate) session_duration: Recorder,
}

impl BackendCells {
    fn new() -> BackendCells {
        BackendCells {
            connect_ok: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            bytes_to_backend: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            connect_time: Recorder::new(),
            first_byte: Recorder::new(),
            session_duration: Recorder::new(),
        }
    }
}

/// Records one backend's events on one worker. Cheap to clone; stays on its thread.
///
/// Counting rules: [`session_opened`](Self::session_opened) once a session is relaying to this
/// backend and [`session_closed`](Self::session_closed) once when it ends, so
/// `active = opened − closed`; bytes may be added in as many pieces as convenient.
#[derive(Clone)]
pub struct BackendStats {
    cells: Arc<BackendCells>,
    _single_thread: SingleThread,
}

impl BackendStats {
    /// The TCP connect to the backend succeeded after `connect_time`.
    #[inline]
    pub fn connect_ok(&self, connect_time: Duration) {
        bump(&self.cells.connect_ok, 1);
        self.cells.connect_time.record(connect_time);
    }

    /// A connect attempt failed (refused, unreachable, timed out).
    #[inline]
    pub fn connect_failed(&self) {
        bump(&self.cells.connect_failed, 1);
    }

    /// A client connection that failed on this backend was retried on another.
    #[inline]
    pub fn retried(&self) {
        bump(&self.cells.retried, 1);
    }

    /// The backend's first response byte arrived `ttfb` after the connect completed.
    #[inline]
    pub fn first_byte(&self, ttfb: Duration) {
        self.cells.first_byte.record(ttfb);
    }

    #[inline]
    pub fn bytes_to_backend(&self, n: u64) {
        bump(&self.cells.bytes_to_backend, n);
    }

    #[inline]
    pub fn bytes_to_client(&self, n: u64) {
        bump(&self.cells.bytes_to_client, n);
    }

    #[inline]
    pub fn session_opened(&self) {
        bump(&self.cells.opened, 1);
    }

    /// The session ended after `duration` (from backend connect to close).
    #[inline]
    pub fn session_closed(&self, duration: Duration) {
        bump(&self.cells.closed, 1);
        self.cells.session_duration.record(duration);
    }

    /// The session was reset (by either side, or closed by us because the backend went down).
    #[inline]
    pub fn reset(&self) {
        bump(&self.cells.resets, 1);
    }
}

impl std::fmt::Debug for BackendStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendStats")
    }
}
