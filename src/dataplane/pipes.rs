//! A worker's bounded pool of pipes for splice. Each spliced direction borrows one pipe pair
//! (two fds) for its lifetime; the pool bounds how many fds splice may take so that it can
//! never starve accept of descriptors. When it is empty a direction keeps copying.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use monoio::net::Pipe;

/// (read end, write end).
pub type PipePair = (Pipe, Pipe);

pub struct PipePool {
    idle: RefCell<Vec<PipePair>>,
    /// Pairs that exist now (idle + lent).
    created: Cell<usize>,
    max: usize,
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
    pub fn new(max: usize) -> Rc<PipePool> {
        Rc::new(PipePool {
            idle: RefCell::new(Vec::new()),
            created: Cell::new(0),
            max,
        })
    }

    /// A pipe pair, or `None` when the pool is at its bound or pipe2 fails (EMFILE).
    pub fn take(self: &Rc<Self>) -> Option<PipeLease> {
        let pair = match self.idle.borrow_mut().pop() {
            Some(pair) => pair,
            None => {
                if self.created.get() >= self.max {
                    return None;
                }
                let pair = monoio::net::unix::new_pipe().ok()?;
                self.created.set(self.created.get() + 1);
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
}

impl PipeLease {
    pub fn pipes(&mut self) -> Option<&mut PipePair> {
        self.pair.as_mut()
    }

    /// Returns an empty pipe to the pool.
    pub fn release(mut self) {
        if let Some(pair) = self.pair.take() {
            self.pool.idle.borrow_mut().push(pair);
        }
    }
}

impl Drop for PipeLease {
    fn drop(&mut self) {
        if self.pair.take().is_some() {
            self.pool
                .created
                .set(self.pool.created.get().saturating_sub(1));
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
            let pool = PipePool::new(2);
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
        })
        .expect("legacy runtime");
    }
}
