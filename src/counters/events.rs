//! Process-wide counters of what an operator alerts on that no backend or service owns:
//! local resource exhaustion (accept and connect paused for lack of descriptors, memory or
//! ports), backend connect failures on client traffic by cause (the passive health events),
//! splice pipes, sessions ended by a timeout, and the admin endpoint's connections.
//!
//! These events are rare next to the per-session counters of [`super::shards`], so plain
//! shared atomics are fine here: nothing in this module is touched per byte, and per session
//! only when a session ends by a timeout.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// A local resource that ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// EMFILE: the process's open-file limit.
    ProcessFds,
    /// ENFILE: the system-wide file table.
    SystemFds,
    /// ENOMEM, ENOBUFS.
    Memory,
    /// EADDRNOTAVAIL on connect: no free local port toward the backend.
    Ports,
}

impl Exhausted {
    pub const ALL: [Exhausted; 4] = [
        Exhausted::ProcessFds,
        Exhausted::SystemFds,
        Exhausted::Memory,
        Exhausted::Ports,
    ];

    /// The resource `err` says ran out, if it is an exhaustion error.
    pub fn of(err: &io::Error) -> Option<Exhausted> {
        match err.raw_os_error()? {
            libc::EMFILE => Some(Exhausted::ProcessFds),
            libc::ENFILE => Some(Exhausted::SystemFds),
            libc::ENOMEM | libc::ENOBUFS => Some(Exhausted::Memory),
            libc::EADDRNOTAVAIL => Some(Exhausted::Ports),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Exhausted::ProcessFds => "process_fds",
            Exhausted::SystemFds => "system_fds",
            Exhausted::Memory => "memory",
            Exhausted::Ports => "ports",
        }
    }
}

/// What the data plane was doing when a resource ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum During {
    /// Accepting a client connection (accepting pauses briefly).
    Accept,
    /// Connecting to a backend (the client is reset; no backend is blamed).
    Connect,
}

impl During {
    pub const ALL: [During; 2] = [During::Accept, During::Connect];

    pub fn label(self) -> &'static str {
        match self {
            During::Accept => "accept",
            During::Connect => "connect",
        }
    }
}

/// Why a backend connect on client traffic failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCause {
    Refused,
    Timeout,
    Unreachable,
    Reset,
    Other,
}

impl ConnectCause {
    pub const ALL: [ConnectCause; 5] = [
        ConnectCause::Refused,
        ConnectCause::Timeout,
        ConnectCause::Unreachable,
        ConnectCause::Reset,
        ConnectCause::Other,
    ];

    pub fn of(err: &io::Error) -> ConnectCause {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => ConnectCause::Refused,
            io::ErrorKind::TimedOut => ConnectCause::Timeout,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                ConnectCause::Unreachable
            }
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                ConnectCause::Reset
            }
            _ => ConnectCause::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ConnectCause::Refused => "refused",
            ConnectCause::Timeout => "timeout",
            ConnectCause::Unreachable => "unreachable",
            ConnectCause::Reset => "reset",
            ConnectCause::Other => "other",
        }
    }
}

/// Which timer ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTimeout {
    /// `idle_timeout`: nothing moved either way.
    Idle,
    /// `client_fin_timeout`: the backend had closed its side; the client stayed silent.
    ClientFin,
    /// `server_fin_timeout`: the client had closed its side; the backend stayed silent.
    ServerFin,
}

impl SessionTimeout {
    pub const ALL: [SessionTimeout; 3] = [
        SessionTimeout::Idle,
        SessionTimeout::ClientFin,
        SessionTimeout::ServerFin,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SessionTimeout::Idle => "idle",
            SessionTimeout::ClientFin => "client_fin",
            SessionTimeout::ServerFin => "server_fin",
        }
    }
}

/// The admin endpoint's two listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminEndpoint {
    Http,
    Socket,
}

impl AdminEndpoint {
    pub const ALL: [AdminEndpoint; 2] = [AdminEndpoint::Http, AdminEndpoint::Socket];

    pub fn label(self) -> &'static str {
        match self {
            AdminEndpoint::Http => "http",
            AdminEndpoint::Socket => "socket",
        }
    }
}

/// The counters; one per process, inside [`super::Counters`].
#[derive(Debug, Default)]
pub struct LocalEvents {
    pub(crate) exhausted: [[AtomicU64; 4]; 2],
    pub(crate) connect_failures: [AtomicU64; 5],
    pub(crate) passive_undelivered: AtomicU64,
    pub(crate) session_timeouts: [AtomicU64; 3],
    pub(crate) splice_unavailable: AtomicU64,
    pub(crate) splice_pipes_open: AtomicU64,
    pub(crate) admin_open: [AtomicU64; 2],
    pub(crate) admin_timed_out: [AtomicU64; 2],
    /// One gauge per data-plane worker: relay buffers lent now (see `relay_buffer_gauge`).
    relay_buffers: Mutex<Vec<Arc<Gauge>>>,
}

/// A value written by one thread and read by others, alone on its cache line so a worker
/// updating its own gauge per message never contends with another worker's.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, value: u64) {
        self.0.store(value, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

fn index<T: PartialEq>(all: &[T], item: &T) -> usize {
    all.iter().position(|x| x == item).unwrap_or(0)
}

impl LocalEvents {
    pub fn new() -> Arc<LocalEvents> {
        Arc::new(LocalEvents::default())
    }

    pub fn exhausted(&self, resource: Exhausted, during: During) {
        self.exhausted[index(&During::ALL, &during)][index(&Exhausted::ALL, &resource)]
            .fetch_add(1, Relaxed);
    }

    pub fn connect_failed(&self, cause: ConnectCause) {
        self.connect_failures[index(&ConnectCause::ALL, &cause)].fetch_add(1, Relaxed);
    }

    /// A passive event could not reach health (not running, or stopping).
    pub fn passive_undelivered(&self) {
        self.passive_undelivered.fetch_add(1, Relaxed);
    }

    pub fn session_timed_out(&self, timer: SessionTimeout) {
        self.session_timeouts[index(&SessionTimeout::ALL, &timer)].fetch_add(1, Relaxed);
    }

    /// A direction that qualified for splice kept copying: its worker's pipes were all lent.
    pub fn splice_unavailable(&self) {
        self.splice_unavailable.fetch_add(1, Relaxed);
    }

    pub fn splice_pipe_opened(&self) {
        self.splice_pipes_open.fetch_add(1, Relaxed);
    }

    pub fn splice_pipe_closed(&self) {
        self.splice_pipes_open.fetch_sub(1, Relaxed);
    }

    pub fn admin_opened(&self, endpoint: AdminEndpoint) {
        self.admin_open[index(&AdminEndpoint::ALL, &endpoint)].fetch_add(1, Relaxed);
    }

    pub fn admin_closed(&self, endpoint: AdminEndpoint) {
        self.admin_open[index(&AdminEndpoint::ALL, &endpoint)].fetch_sub(1, Relaxed);
    }

    /// An admin connection was closed because it outlived its time limit.
    pub fn admin_timed_out(&self, endpoint: AdminEndpoint) {
        self.admin_timed_out[index(&AdminEndpoint::ALL, &endpoint)].fetch_add(1, Relaxed);
    }

    pub fn exhausted_count(&self, resource: Exhausted, during: During) -> u64 {
        self.exhausted[index(&During::ALL, &during)][index(&Exhausted::ALL, &resource)]
            .load(Relaxed)
    }

    pub fn session_timeouts(&self, timer: SessionTimeout) -> u64 {
        self.session_timeouts[index(&SessionTimeout::ALL, &timer)].load(Relaxed)
    }

    pub fn splice_pipes_open(&self) -> u64 {
        self.splice_pipes_open.load(Relaxed)
    }

    /// A new gauge for one worker's relay buffers lent, summed by [`Self::relay_buffers_lent`].
    /// Called once per worker start, never per session.
    pub fn relay_buffer_gauge(&self) -> Arc<Gauge> {
        let gauge = Arc::new(Gauge::default());
        let mut gauges = super::lock(&self.relay_buffers);
        // Gauges of workers that are gone (only this list holds them) and read 0 go.
        gauges.retain(|g| Arc::strong_count(g) > 1 || g.get() != 0);
        gauges.push(Arc::clone(&gauge));
        gauge
    }

    /// Relay buffers lent now, over all workers: 0 when no session is mid-write.
    pub fn relay_buffers_lent(&self) -> u64 {
        super::lock(&self.relay_buffers)
            .iter()
            .map(|g| g.get())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_resources_and_causes() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(
            Exhausted::of(&os(libc::EMFILE)),
            Some(Exhausted::ProcessFds)
        );
        assert_eq!(Exhausted::of(&os(libc::ENFILE)), Some(Exhausted::SystemFds));
        assert_eq!(Exhausted::of(&os(libc::ENOBUFS)), Some(Exhausted::Memory));
        assert_eq!(
            Exhausted::of(&os(libc::EADDRNOTAVAIL)),
            Some(Exhausted::Ports)
        );
        assert_eq!(Exhausted::of(&os(libc::ECONNREFUSED)), None);
        assert_eq!(
            ConnectCause::of(&os(libc::ECONNREFUSED)),
            ConnectCause::Refused
        );
        assert_eq!(
            ConnectCause::of(&os(libc::EHOSTUNREACH)),
            ConnectCause::Unreachable
        );
        assert_eq!(
            ConnectCause::of(&io::Error::new(io::ErrorKind::TimedOut, "t")),
            ConnectCause::Timeout
        );
    }
}
