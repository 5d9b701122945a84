//! RLIMIT_NOFILE and how the descriptors are shared.
//!
//! A proxied session costs two descriptors, so the process limit is the session limit: the
//! usual inherited soft limit of 1024 allows about 500 sessions although the hard limit is
//! often far higher. `run` raises the soft limit to the hard one at start
//! ([`raise_and_report`]) and logs what that allows.
//!
//! The budget ([`Budget::for_limit`]) splits the limit three ways, so that no part can take
//! what another needs:
//! - the control plane keeps [`Budget::control`] descriptors: the admin endpoint's
//!   connections are capped inside it ([`Budget::admin_http_connections`],
//!   [`Budget::admin_socket_connections`]), health probes are one per configured check at a
//!   time, leases and netlink a handful;
//! - splice pipes get at most an eighth of the rest, split between the workers
//!   ([`Budget::pipe_pairs_per_worker`]), so a burst of bulk transfers cannot leave the data
//!   plane without descriptors for new sessions (each pipe pair is two);
//! - sessions take what is left ([`Budget::sessions`]).

use std::io;

/// The process's RLIMIT_NOFILE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    pub soft: u64,
    pub hard: u64,
}

/// The current RLIMIT_NOFILE.
pub fn current() -> io::Result<NoFile> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NoFile {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Raises the soft limit to the hard limit (never lowers it). Returns (before, after).
pub fn raise_to_hard() -> io::Result<(NoFile, NoFile)> {
    let before = current()?;
    if before.soft >= before.hard {
        return Ok((before, before));
    }
    let limit = libc::rlimit {
        rlim_cur: before.hard,
        rlim_max: before.hard,
    };
    // SAFETY: setrlimit reads one rlimit struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before, current()?))
}

/// Most admin HTTP connections served at once (scrapers and probes need a few).
const ADMIN_HTTP_MAX: usize = 64;
/// Most admin socket connections served at once (`alive-proxy stats` needs one).
const ADMIN_SOCKET_MAX: usize = 16;
/// Splice pipe pairs per worker when descriptors are plentiful: each stalled splice can
/// hold one io_uring kernel worker thread, so this also bounds those threads.
pub const PIPE_PAIRS_PER_WORKER_MAX: usize = 64;

/// How the descriptor limit is shared; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The soft RLIMIT_NOFILE the budget was made for.
    pub limit: u64,
    /// Kept for the control plane: an eighth of the limit, between 32 and 1024.
    pub control: u64,
    /// Splice pipe pairs each worker may hold.
    pub pipe_pairs_per_worker: usize,
    /// Sessions (two descriptors each) the rest allows, with every pipe in use.
    pub sessions: u64,
    /// Concurrent admin HTTP connections.
    pub admin_http_connections: usize,
    /// Concurrent admin socket connections.
    pub admin_socket_connections: usize,
}

impl Budget {
    pub fn for_limit(limit: u64, workers: usize) -> Budget {
        let workers = workers.max(1);
        let control = (limit / 8).clamp(32, 1024).min(limit);
        let data = limit - control;
        let pipe_pairs_per_worker = usize::try_from(data / 8 / 2 / workers as u64)
            .unwrap_or(usize::MAX)
            .min(PIPE_PAIRS_PER_WORKER_MAX);
        let pipe_fds = 2 * pipe_pairs_per_worker as u64 * workers as u64;
        let quarter = usize::try_from(control / 4).unwrap_or(usize::MAX);
        Budget {
            limit,
            control,
            pipe_pairs_per_worker,
            sessions: data.saturating_sub(pipe_fds) / 2,
            admin_http_connections: quarter.clamp(2, ADMIN_HTTP_MAX),
            admin_socket_connections: (quarter / 2).clamp(1, ADMIN_SOCKET_MAX),
        }
    }

    /// The budget for the process's current soft limit (1024 if it cannot be read).
    pub fn current(workers: usize) -> Budget {
        let limit = current().map_or(1024, |l| l.soft);
        Budget::for_limit(limit, workers)
    }
}

/// Raises RLIMIT_NOFILE to the hard limit and logs the limit and the session capacity for
/// `workers` data-plane workers (0 = one per core). A failure is logged, not fatal: the
/// daemon still runs within the limit it has.
pub fn raise_and_report(workers: usize) -> Budget {
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    match raise_to_hard() {
        Ok((before, after)) if before.soft < after.soft => {
            tracing::info!(
                from = before.soft,
                to = after.soft,
                "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
            );
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "cannot raise the open-file limit (RLIMIT_NOFILE)"),
    }
    let budget = Budget::current(workers);
    tracing::info!(
        open_files = budget.limit,
        sessions = budget.sessions,
        control_reserve = budget.control,
        pipe_pairs_per_worker = budget.pipe_pairs_per_worker,
        workers,
        "descriptor budget: about {} concurrent sessions",
        budget.sessions
    );
    if budget.sessions < 1000 {
        tracing::warn!(
            open_files = budget.limit,
            "the open-file limit allows fewer than 1000 sessions; raise the hard limit (ulimit -Hn, docker run --ulimit nofile=...)"
        );
    }
    budget
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_1024_leaves_room_for_sessions_and_caps_pipes_and_admin() {
        let b = Budget::for_limit(1024, 2);
        assert_eq!(b.control, 128);
        assert_eq!(b.pipe_pairs_per_worker, 28, "896 / 8 / 2 / 2 workers");
        assert_eq!(b.sessions, (896 - 112) / 2);
        assert_eq!(b.admin_http_connections, 32);
        assert_eq!(b.admin_socket_connections, 16);
    }

    #[test]
    fn a_large_limit_caps_pipes_per_worker_and_keeps_the_rest_for_sessions() {
        let b = Budget::for_limit(20_000, 2);
        assert_eq!(b.control, 1024);
        assert_eq!(b.pipe_pairs_per_worker, PIPE_PAIRS_PER_WORKER_MAX);
        assert_eq!(b.sessions, (20_000 - 1024 - 4 * 64) / 2);
        assert_eq!(b.admin_http_connections, 64);
    }

    #[test]
    fn a_tiny_limit_still_gives_every_part_something_sane() {
        let b = Budget::for_limit(64, 1);
        assert_eq!(b.control, 32);
        assert_eq!(b.pipe_pairs_per_worker, 2);
        assert!(b.sessions > 0 && b.admin_http_connections >= 2);
        let b = Budget::for_limit(16, 4);
        assert_eq!(b.control, 16, "never more than the limit");
        assert_eq!((b.pipe_pairs_per_worker, b.sessions), (0, 0));
    }

    #[test]
    fn raising_never_lowers_and_ends_at_the_hard_limit() {
        let (before, after) = raise_to_hard().expect("getrlimit/setrlimit");
        assert!(after.soft >= before.soft);
        assert_eq!(after.soft, after.hard);
    }
}
