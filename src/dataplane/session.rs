//! One client connection, from accept to close: admit it against the service limit, pick
//! and connect a backend (retrying the next eligible one on refusal or timeout, reporting
//! each failure to health at once), send the PROXY header, relay, and close the way the
//! session ended (FIN for a clean end, RST where a reset must be propagated).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use super::backend::{ActiveGuard, BackendState};
use super::clock::now_ms;
use super::connect::{connect, set_reset_on_close};
use super::listener::is_resource_exhaustion;
use super::proxy_header;
use super::relay::{RelayEnv, RelayError, relay};
use super::routing::ServiceRoute;
use super::scheduling::{ConnCandidates, Tried};
use super::worker::{ServiceStatsSet, Worker};
use crate::config::ProxyProtocol;
use crate::counters::BackendStats;
use crate::counters::events::{ConnectCause, SessionTimeout};
use crate::health::PassiveEvent;

/// Why a relayed session ended.
enum End {
    Relay(Result<super::relay::Moved, RelayError>),
    /// The backend went down (close mode), or the data plane is stopping.
    Closed,
    TimedOut(SessionTimeout),
}

/// Closes `stream` with RST: the client is refused, or its session must be torn down.
fn reset(stream: TcpStream) {
    set_reset_on_close(stream.as_raw_fd());
    drop(stream);
}

pub async fn serve(worker: Rc<Worker>, client: TcpStream, peer: SocketAddr, listen: SocketAddr) {
    let accepted_at = Instant::now();
    let _live = worker.count_live();
    let snapshot = worker.routing.current();
    let Some(route) = snapshot.services.get(&listen).cloned() else {
        // The service was removed by a reload while this connection sat in the backlog.
        reset(client);
        return;
    };
    let stats = worker.stats_for(&snapshot, &route);
    stats.service.accepted();
    let Some(_admitted) = route.shared.try_admit(route.config.max_connections) else {
        stats.service.refused_limit();
        reset(client);
        stats.service.session_closed(accepted_at.elapsed());
        return;
    };
    // TCP_NODELAY is inherited from the listener (set there once, not per connection).
    // Boxed: the connect phase (with its 640-byte connect timer) is the largest state of
    // this future, and inline it would stay reserved in every session's task for the
    // session's whole life; boxed it is freed once connected (issue 11, idle memory).
    let Some(connected) = Box::pin(connect_backend(&worker, &route, &stats, peer)).await else {
        stats.service.no_backend();
        tracing::debug!(%peer, service = %listen, "no backend could take the connection; reset");
        reset(client);
        stats.service.session_closed(accepted_at.elapsed());
        return;
    };
    // The address the client reached matters only for the PROXY header; getsockname(2)
    // is skipped otherwise (one syscall less per connection).
    let local = match route.config.proxy_protocol {
        ProxyProtocol::Off => listen,
        _ => client.local_addr().unwrap_or(listen),
    };
    run_session(&worker, &route, client, connected, peer, local).await;
    stats.service.session_closed(accepted_at.elapsed());
}

struct Connected {
    stream: TcpStream,
    guard: ActiveGuard,
    stats: BackendStats,
    at: Instant,
}

async fn connect_backend(
    worker: &Worker,
    route: &ServiceRoute,
    stats: &ServiceStatsSet,
    peer: SocketAddr,
) -> Option<Connected> {
    let config = &route.config;
    let source = config.transparent.then_some(peer);
    let mut tried = Tried::default();
    let attempts = config.connect_attempts.max(1);
    if route.sorry_active() {
        let sorry = route.sorry_backend.as_ref()?;
        return attempt(
            worker,
            sorry,
            stats.sorry.as_ref()?,
            config.connect_timeout,
            source,
        )
        .await
        .ok();
    }
    for attempt_no in 0..attempts {
        let candidates = ConnCandidates {
            backends: &route.backends,
            tried: &tried,
            now_ms: now_ms(),
        };
        let Some(index) = route.scheduler.pick(&candidates, peer.ip(), Instant::now()) else {
            break;
        };
        tried.insert(index);
        let (backend, backend_stats) = (&route.backends[index], &stats.backends[index]);
        match attempt(
            worker,
            backend,
            backend_stats,
            config.connect_timeout,
            source,
        )
        .await
        {
            Ok(connected) => return Some(connected),
            Err(AttemptFailed::Local) => return None,
            Err(AttemptFailed::Backend) => {}
        }
        if attempt_no + 1 < attempts {
            backend_stats.retried();
        }
    }
    // Nothing in the pool could take it: the sorry server is the last resort, as in IPVS.
    if let (Some(sorry), Some(sorry_stats)) = (&route.sorry_backend, &stats.sorry) {
        return attempt(worker, sorry, sorry_stats, config.connect_timeout, source)
            .await
            .ok();
    }
    None
}

/// Why one connect attempt did not give a session.
enum AttemptFailed {
    /// The backend refused, timed out or was unreachable: try the next one.
    Backend,
    /// This host is out of descriptors, memory or ephemeral ports: no backend is to blame
    /// and none would do better now.
    Local,
}

/// Errors of our own host, not of the backend, when connecting.
fn is_local_exhaustion(err: &std::io::Error) -> bool {
    is_resource_exhaustion(err) || err.raw_os_error() == Some(libc::EADDRNOTAVAIL)
}

async fn attempt(
    worker: &Worker,
    backend: &Arc<BackendState>,
    stats: &BackendStats,
    timeout: Duration,
    source: Option<SocketAddr>,
) -> Result<Connected, AttemptFailed> {
    let guard = backend.open_session();
    let started = Instant::now();
    match connect(backend.addr(), timeout, source).await {
        Ok(stream) => {
            stats.connect_ok(started.elapsed());
            Ok(Connected {
                stream,
                guard,
                stats: stats.clone(),
                at: Instant::now(),
            })
        }
        Err(err) if is_local_exhaustion(&err) => {
            worker.warn_local_exhaustion(&err);
            Err(AttemptFailed::Local)
        }
        Err(err) => {
            stats.connect_failed();
            worker.events().connect_failed(ConnectCause::of(&err));
            backend.mark_suspect();
            worker.report_passive(PassiveEvent {
                key: backend.key,
                error: err.kind(),
            });
            tracing::debug!(backend = %backend.addr(), %err, "backend connect failed; trying the next");
            Err(AttemptFailed::Backend)
        }
    }
}

async fn run_session(
    worker: &Rc<Worker>,
    route: &ServiceRoute,
    client: TcpStream,
    connected: Connected,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let Connected {
        stream: backend,
        guard,
        stats,
        at,
    } = connected;
    let key = guard.backend().key;
    let registration = worker.register_session(key, &route.config);
    let watch = &registration.watch;
    stats.session_opened();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut backend_read, mut backend_write) = backend.into_split();

    let header = proxy_header::encode(route.config.proxy_protocol, peer, local);
    let mut end = None;
    if !header.is_empty() {
        let (result, _) = backend_write.write_all(header).await;
        if let Err(error) = result {
            end = Some(End::Relay(Err(RelayError {
                leg: super::relay::Leg::Backend,
                error,
            })));
        }
    }
    watch.last_activity.set(now_ms());
    let env = RelayEnv {
        pipes: &worker.pipes,
        splice_after: worker.options.splice_after,
        buffers: &worker.buffers,
        last_activity: &watch.last_activity,
        stats: &stats,
        connected_at: at,
        half_close: &watch.half_close,
    };
    let end = match end {
        Some(end) => end,
        None => {
            monoio::select! {
                result = relay(&mut client_read, &mut client_write, &mut backend_read, &mut backend_write, &env) => End::Relay(result),
                // Timeouts too: the worker's sweeper fires this and says which timer.
                _ = watch.close.wait() => match watch.timed_out.get() {
                    Some(timer) => End::TimedOut(timer),
                    None => End::Closed,
                },
            }
        }
    };
    let reset_both = match &end {
        End::Relay(Ok(_)) => false,
        End::Relay(Err(failure)) => {
            tracing::debug!(%peer, backend = %key.backend, leg = ?failure.leg, error = %failure.error, "session reset");
            true
        }
        End::Closed => {
            tracing::debug!(%peer, backend = %key.backend, "session closed by the data plane");
            true
        }
        End::TimedOut(timer) => {
            worker.events().session_timed_out(*timer);
            tracing::debug!(%peer, backend = %key.backend, ?timer, "session timed out");
            true
        }
    };
    // Reunite so the close is a plain close(2): dropping a lone write half would shut it
    // down first and send FIN ahead of the RST.
    let client = client_read.reunite(client_write);
    let backend = backend_read.reunite(backend_write);
    if reset_both {
        stats.reset();
        if let Ok(client) = &client {
            set_reset_on_close(client.as_raw_fd());
        }
        if let Ok(backend) = &backend {
            set_reset_on_close(backend.as_raw_fd());
        }
    }
    drop((client, backend));
    stats.session_closed(at.elapsed());
    drop(registration);
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function returns, without calling it.
    fn future_size<A, B, C, D, Fut>(_: fn(A, B, C, D) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// A session's task is mostly this future, and every idle connection holds one (issue
    /// 11's budget is 4 kB per idle connection, all included): no per-session timer (the
    /// worker sweeps timeouts) and the connect phase boxed. 3 kB before. Printed with
    /// --nocapture.
    #[test]
    fn session_future_is_small() {
        let size = future_size(serve as fn(_, _, _, _) -> _);
        println!("session future: {size} bytes");
        assert!(size <= 2048, "session future {size} bytes");
    }
}
