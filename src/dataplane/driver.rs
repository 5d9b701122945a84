//! Which monoio driver the workers run, and building a worker's runtime on it.
//!
//! io_uring is the fast path, but it is not always there: Docker's and containerd's default
//! seccomp profiles block `io_uring_setup`, `kernel.io_uring_disabled` turns it off, old
//! kernels lack it. [`resolve`] probes once at start by building a real ring and falls back
//! to monoio's legacy (epoll) driver when that fails with "not permitted / not supported".
//! The ring is built with COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN: monoio's flagless
//! default sends an inter-processor interrupt for nearly every completion and halves
//! keep-alive throughput (lab notes). Kernels older than 6.1 reject DEFER_TASKRUN with
//! EINVAL; then the ring is built without flags rather than giving up io_uring.

use std::fmt;
use std::future::Future;
use std::io;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

/// What the operator asked for (`--driver`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverChoice {
    /// io_uring when this kernel and sandbox allow it, else legacy.
    #[default]
    Auto,
    /// io_uring or fail to start.
    IoUring,
    /// epoll, even where io_uring works.
    Legacy,
}

/// What the workers actually run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// `tuned` = built with the COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN flags.
    IoUring {
        tuned: bool,
    },
    Legacy,
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverKind::IoUring { tuned: true } => {
                f.write_str("io_uring (coop_taskrun, single_issuer, defer_taskrun)")
            }
            DriverKind::IoUring { tuned: false } => f.write_str("io_uring (no setup flags)"),
            DriverKind::Legacy => f.write_str("legacy (epoll)"),
        }
    }
}

/// Ring size per worker: each in-flight recv/send/accept holds one entry; monoio grows the
/// completion queue to twice this.
pub const RING_ENTRIES: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("io_uring was requested (--driver io-uring) but is not available: {0}")]
    IoUringUnavailable(io::Error),
}

/// Probes the kernel once and decides the driver for every worker.
pub fn resolve(choice: DriverChoice) -> Result<(DriverKind, Option<io::Error>), DriverError> {
    match choice {
        DriverChoice::Legacy => Ok((DriverKind::Legacy, None)),
        DriverChoice::IoUring => probe()
            .map(|k| (k, None))
            .map_err(DriverError::IoUringUnavailable),
        DriverChoice::Auto => match probe() {
            Ok(kind) => Ok((kind, None)),
            Err(why) => Ok((DriverKind::Legacy, Some(why))),
        },
    }
}

fn tuned_builder() -> io_uring::Builder {
    let mut builder = io_uring::IoUring::builder();
    builder
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun();
    builder
}

/// Builds and drops a ring the way a worker will. EINVAL from the tuned flags (pre-6.1
/// kernel) is retried flagless; any other failure (EPERM from seccomp or
/// `io_uring_disabled`, ENOSYS) means no io_uring.
fn probe() -> io::Result<DriverKind> {
    match tuned_builder().build(RING_ENTRIES) {
        Ok(_ring) => Ok(DriverKind::IoUring { tuned: true }),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            io_uring::IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
                .build(RING_ENTRIES)?;
            Ok(DriverKind::IoUring { tuned: false })
        }
        Err(e) => Err(e),
    }
}

/// io_uring kernel workers (io-wq) for socket operations beyond the splice pipes: a punted
/// connect or close may need one while every pipe's splice is stalled.
const KERNEL_WORKERS_SPARE: u32 = 8;

/// Caps the calling thread's io_uring kernel workers for socket operations ("unbounded"
/// io-wq workers) at `max_pipes` + [`KERNEL_WORKERS_SPARE`]. A splice never completes inline:
/// each one runs in such a worker and blocks there while its socket has nothing to give or
/// no room to take, so 500 stalled readers used to mean ~500 kernel threads. A direction
/// splices only while it holds one of the worker's `max_pipes` pipe pairs, and does one splice
/// at a time, so under this cap a splice never waits behind another's stall (a cap below the
/// pool's bound does: measured, sessions then stop moving).
///
/// io-wq belongs to the thread, shared by all its rings, so the limit is set through a small
/// ring of its own: monoio does not expose its ring. Best effort: a kernel without
/// IORING_REGISTER_IOWQ_MAX_WORKERS (before 5.15) keeps its default and says so.
pub fn cap_kernel_workers(kind: DriverKind, max_pipes: usize) {
    if kind == DriverKind::Legacy {
        return;
    }
    let max = u32::try_from(max_pipes)
        .unwrap_or(u32::MAX)
        .saturating_add(KERNEL_WORKERS_SPARE);
    let capped = io_uring::IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::new(2)
        .and_then(|ring| ring.submitter().register_iowq_max_workers(&mut [0, max]));
    if let Err(err) = capped {
        tracing::warn!(%err, "cannot cap io_uring kernel workers; stalled splices may each hold a kernel thread");
    }
}

/// Runs `make()`'s future to completion on a fresh runtime of `kind` on the calling thread.
/// The future is made inside the runtime so it may create monoio resources.
pub fn block_on<F, Fut>(kind: DriverKind, make: F) -> io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    match kind {
        DriverKind::IoUring { tuned } => {
            let urb = if tuned {
                tuned_builder()
            } else {
                io_uring::IoUring::builder()
            };
            let mut runtime = RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(RING_ENTRIES)
                .uring_builder(urb)
                .enable_timer()
                .build()?;
            Ok(runtime.block_on(async move { make().await }))
        }
        DriverKind::Legacy => {
            let mut runtime = RuntimeBuilder::<LegacyDriver>::new()
                .enable_timer()
                .build()?;
            Ok(runtime.block_on(async move { make().await }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_choice_never_probes_io_uring() {
        let (kind, why) = resolve(DriverChoice::Legacy).expect("legacy always resolves");
        assert_eq!(kind, DriverKind::Legacy);
        assert!(why.is_none());
    }

    #[test]
    fn auto_resolves_to_a_runnable_driver() {
        let (kind, _) = resolve(DriverChoice::Auto).expect("auto always resolves");
        let answer =
            block_on(kind, || async { 42 }).expect("runtime of the resolved driver builds");
        assert_eq!(answer, 42, "the future ran on {kind}");
    }
}
