//! Process-wide counters of what an operator alerts on that no backend or service owns:
//! local resource exhaustion (accept and connect paused for lack of descriptors, memory or
//! ports), backend connect failures on client traffic by cause (the passive health events),
//! splice pipes, sessions ended by a timeout, and the admin endpoint's connections.
//!
//! These events are rare next to the per-session counters of [`super::registry`], so plain
//! shared atomics are fine here: nothing in this module is touched per byte, and per session
//! only when a session ends by a timeout.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::prometheus::{Labels, counters, gauges};

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
    const ALL: [Exhausted; 4] = [
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

    fn label(self) -> &'static str {
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
    const ALL: [During; 2] = [During::Accept, During::Connect];

    fn label(self) -> &'static str {
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
    const ALL: [ConnectCause; 5] = [
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

    fn label(self) -> &'static str {
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
    const ALL: [SessionTimeout; 3] = [
        SessionTimeout::Idle,
        SessionTimeout::ClientFin,
        SessionTimeout::ServerFin,
    ];

    fn label(self) -> &'static str {
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
    const ALL: [AdminEndpoint; 2] = [AdminEndpoint::Http, AdminEndpoint::Socket];

    fn label(self) -> &'static str {
        match self {
            AdminEndpoint::Http => "http",
            AdminEndpoint::Socket => "socket",
        }
    }
}

/// The counters; one per process, inside the [`super::StatsRegistry`].
#[derive(Debug, Default)]
pub struct LocalEvents {
    exhausted: [[AtomicU64; 4]; 2],
    connect_failures: [AtomicU64; 5],
    passive_undelivered: AtomicU64,
    session_timeouts: [AtomicU64; 3],
    splice_unavailable: AtomicU64,
    splice_pipes_open: AtomicU64,
    admin_open: [AtomicU64; 2],
    admin_timed_out: [AtomicU64; 2],
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
}

/// Encodes [`LocalEvents`] on every scrape. Every label combination is present, zeros
/// included, so that `rate()` and `increase()` work from the first scrape.
#[derive(Debug)]
pub struct EventsCollector(pub Arc<LocalEvents>);

fn label(name: &'static str, value: &str) -> Labels {
    vec![(name, value.to_owned())]
}

impl Collector for EventsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let e = &mut encoder;
        let events = &self.0;
        let exhausted: Vec<(Labels, u64)> = During::ALL
            .iter()
            .flat_map(|during| {
                Exhausted::ALL.iter().map(move |resource| {
                    let mut labels = label("resource", resource.label());
                    labels.push(("during", during.label().to_owned()));
                    (labels, events.exhausted_count(*resource, *during))
                })
            })
            .collect();
        counters(
            e,
            "local_exhaustion",
            "Accepts paused and backend connects given up because this host ran out of a resource (process_fds: EMFILE, system_fds: ENFILE, memory, ports: EADDRNOTAVAIL)",
            &exhausted,
        )?;
        let causes: Vec<(Labels, u64)> = ConnectCause::ALL
            .iter()
            .enumerate()
            .map(|(i, cause)| {
                (
                    label("cause", cause.label()),
                    events.connect_failures[i].load(Relaxed),
                )
            })
            .collect();
        counters(
            e,
            "passive_connect_failures",
            "Backend connect failures on client traffic by cause; each marks the backend suspect and asks health for a re-probe",
            &causes,
        )?;
        counters(
            e,
            "passive_events_undelivered",
            "Passive failure reports health was not there to receive",
            &[(Vec::new(), events.passive_undelivered.load(Relaxed))],
        )?;
        let timeouts: Vec<(Labels, u64)> = SessionTimeout::ALL
            .iter()
            .enumerate()
            .map(|(i, timer)| {
                (
                    label("timeout", timer.label()),
                    events.session_timeouts[i].load(Relaxed),
                )
            })
            .collect();
        counters(
            e,
            "sessions_timed_out",
            "Sessions closed by a timer: idle (idle_timeout), client_fin / server_fin (half-closed and the other side silent)",
            &timeouts,
        )?;
        counters(
            e,
            "splice_unavailable",
            "Large flows that kept copying because every splice pipe of their worker was in use",
            &[(Vec::new(), events.splice_unavailable.load(Relaxed))],
        )?;
        gauges(
            e,
            "splice_pipe_pairs",
            "Splice pipe pairs open (two descriptors each), lent or idle",
            None,
            &[(Vec::new(), events.splice_pipes_open())],
        )?;
        let per_endpoint = |cells: &[AtomicU64; 2]| -> Vec<(Labels, u64)> {
            AdminEndpoint::ALL
                .iter()
                .enumerate()
                .map(|(i, endpoint)| (label("endpoint", endpoint.label()), cells[i].load(Relaxed)))
                .collect()
        };
        gauges(
            e,
            "admin_connections",
            "Admin connections being served (capped; more wait in the listen backlog)",
            None,
            &per_endpoint(&events.admin_open),
        )?;
        counters(
            e,
            "admin_connections_timed_out",
            "Admin connections closed for outliving their time limit",
            &per_endpoint(&events.admin_timed_out),
        )?;
        Ok(())
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

    #[test]
    fn every_series_is_exported_from_the_start_and_counts_show() {
        let events = LocalEvents::new();
        events.exhausted(Exhausted::ProcessFds, During::Accept);
        events.connect_failed(ConnectCause::Refused);
        let mut registry = prometheus_client::registry::Registry::with_prefix("alive_proxy");
        registry.register_collector(Box::new(EventsCollector(Arc::clone(&events))));
        let text = super::super::prometheus::encode_registry(&registry).expect("encode");
        assert!(
            text.contains(
                "alive_proxy_local_exhaustion_total{resource=\"process_fds\",during=\"accept\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "alive_proxy_local_exhaustion_total{resource=\"ports\",during=\"connect\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains("alive_proxy_passive_connect_failures_total{cause=\"refused\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("alive_proxy_admin_connections{endpoint=\"http\"} 0"),
            "{text}"
        );
    }
}
