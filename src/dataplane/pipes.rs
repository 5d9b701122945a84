//! A worker's bounded pool of pipes for splice. Each spliced direction borrows one pipe pair
//! (two fds) for its lifetime; when the pool is at its bound a direction keeps copying.
//!
//! The bound comes from the descriptor budget ([`crate::daemon::fd_limit`]), so splice can
//! never starve accept of descriptors. The pool also gives descriptors back: at most
//! [`IDLE_KEEP`] empty pairs are kept for reuse, and those are closed once unused for
//! [`IDLE_TTL`] ([`PipePool::close_idle`], called by the worker's sweeper). One burst of bulk
//! transfers used to leave every pair it had opened in the pool for good.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::Pipe;

use crate::counters::LocalEvents;

/// (read end, write end).
pub type PipePair = (Pipe, Pipe);

/// Empty pairs kept for reuse; a release beyond this closes the pair at once.
pub const IDLE_KEEP: usize = 8;
/// An idle pair unused for this long is closed.
pub const IDLE_TTL: Duration = Duration::from_secs(10);

pub struct PipePool {
    /// Empty pairs with when each was released, oldest first.
    idle: RefCell<Vec<(PipePair, Instant)>>,
    /// Pairs that exist now (idle + lent).
    created: Cell<usize>,
    max: usize,
    events: Arc<LocalEvents>,
}

impl std::fmt::Debug for PipePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipePool")
            .field("created", &self.created.get())
            .field("max", &self.max)
            .finish()
    }
}

impl std::fmt::Debug for PipeLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipeLease")
    }
}

/// A lent pipe pair. Give it back with [`PipeLease::release`] only when it is empty; a
/// lease dropped otherwise closes the pipe (it may hold bytes of a dead session).
pub struct PipeLease {
    pool: Rc<PipePool>,
    pair: Option<PipePair>,
}

impl PipePool {
    /// A pool of at most `max` pairs; `events` counts the pairs open process-wide.
    pub fn new(max: usize, events: Arc<LocalEvents>) -> Rc<PipePool> {
        Rc::new(PipePool {
            idle: RefCell::new(Vec::new()),
            created: Cell::new(0),
            max,
            events,
        })
    }

    /// A pipe pair, or `None` when the pool is at its bound or pipe2 fails (EMFILE).
    pub fn take(self: &Rc<Self>) -> Option<PipeLease> {
        // The most recently released pair: the older ones are the first to expire.
        let pair = match self.idle.borrow_mut().pop() {
            Some((pair, _)) => pair,
            None => {
                if self.created.get() >= self.max {
                    self.events.splice_unavailable();
                    return None;
                }
                let Ok(pair) = monoio::net::unix::new_pipe() else {
                    self.events.splice_unavailable();
                    return None;
                };
                self.created.set(self.created.get() + 1);
                self.events.splice_pipe_opened();
                pair
            }
        };
        Some(PipeLease {
            pool: Rc::clone(self),
            pair: Some(pair),
        })
    }

    pub fn in_use(&self) -> usize {
        self.created.get() - self.idle.borrow().len()
    }

    /// Pairs open now, idle or lent.
    pub fn open(&self) -> usize {
        self.created.get()
    }

    fn closed(&self, count: usize) {
        self.created.set(self.created.get().saturating_sub(count));
        for _ in 0..count {
            self.events.splice_pipe_closed();
        }
    }

    /// Closes the idle pairs released before `now - IDLE_TTL`.
    pub fn close_idle(&self, now: Instant) {
        let expired: Vec<(PipePair, Instant)> = {
            let mut idle = self.idle.borrow_mut();
            let fresh = idle.partition_point(|(_, since)| now.duration_since(*since) >= IDLE_TTL);
            idle.drain(..fresh).collect()
        };
        self.closed(expired.len());
    }
}

impl PipeLease {
    pub fn pipes(&mut self) -> Option<&mut PipePair> {
        self.pair.as_mut()
    }

    /// Returns an empty pipe to the pool, or closes it when the pool keeps enough idle ones.
    pub fn release(mut self) {
        let Some(pair) = self.pair.take() else {
            return;
        };
        let mut idle = self.pool.idle.borrow_mut();
        if idle.len() < IDLE_KEEP {
            idle.push((pair, Instant::now()));
        } else {
            drop(idle);
            drop(pair);
            self.pool.closed(1);
        }
    }
}

impl Drop for PipeLease {
    fn drop(&mut self) {
        if self.pair.take().is_some() {
            self.pool.closed(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::driver::{self, DriverKind};

    #[test]
    fn pool_lends_at_most_its_bound_and_reuses_released_pipes() {
        driver::block_on(DriverKind::Legacy, || async {
            let events = LocalEvents::new();
            let pool = PipePool::new(2, Arc::clone(&events));
            let first = pool.take().expect("first pipe");
            let second = pool.take().expect("second pipe");
            assert!(pool.take().is_none(), "a third pipe beyond the bound of 2");
            first.release();
            assert_eq!(pool.in_use(), 1, "a released pipe is idle, not in use");
            let again = pool.take().expect("the released pipe is lent again");
            drop(second);
            assert_eq!(
                pool.in_use(),
                1,
                "a dropped (possibly dirty) pipe is closed, not kept"
            );
            assert!(
                pool.take().is_some(),
                "closing a pipe frees room under the bound"
            );
            drop(again);
            assert_eq!(
                events.splice_pipes_open(),
                0,
                "every pair closed is counted"
            );
        })
        .expect("legacy runtime");
    }

    #[test]
    fn after_a_burst_only_a_few_idle_pipes_stay_and_they_expire() {
        driver::block_on(DriverKind::Legacy, || async {
            let events = LocalEvents::new();
            let pool = PipePool::new(64, Arc::clone(&events));
            let burst: Vec<PipeLease> = (0..40).map(|_| pool.take().expect("pipe")).collect();
            assert_eq!(pool.open(), 40);
            for lease in burst {
                lease.release();
            }
            assert_eq!(
                pool.open(),
                IDLE_KEEP,
                "a release beyond IDLE_KEEP closes the pair"
            );
            assert_eq!(events.splice_pipes_open(), IDLE_KEEP as u64);
            pool.close_idle(Instant::now());
            assert_eq!(pool.open(), IDLE_KEEP, "fresh idle pairs stay");
            pool.close_idle(Instant::now() + IDLE_TTL);
            assert_eq!(pool.open(), 0, "idle pairs expire after IDLE_TTL");
            assert_eq!(events.splice_pipes_open(), 0);
        })
        .expect("legacy runtime");
    }
}
