//! A worker's pool of copy buffers, lent to a relay direction only while it has bytes in
//! hand: from the moment its socket is readable until those bytes are written to the other
//! leg. An idle session holds no buffer at all (issue 11): the relay waits for readability
//! first (a PollAdd on io_uring, the epoll readiness on the legacy driver) and only then
//! takes a buffer, reads with a non-blocking `recv(2)` and gives the buffer back once the
//! write has completed.
//!
//! Bounded two ways: at most `keep` buffers are kept idle for reuse (a release beyond that
//! frees the buffer), and a direction holds at most one buffer at a time, so the buffers
//! lent never exceed the directions currently blocked on a peer that does not drain.
//!
//! The number lent is a per-worker gauge in [`LocalEvents`] (cache-line sized, written only
//! by its worker), so tests and stats can check that every buffer came back.

use std::cell::{Cell, RefCell};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::sync::Arc;

use crate::counters::LocalEvents;
use crate::counters::events::Gauge;

/// Buffers kept idle for reuse per worker. Lent buffers are few at any time (a buffer is
/// held across a write only), so a small stock absorbs bursts without holding memory.
pub const IDLE_KEEP: usize = 64;

pub struct BufferPool {
    idle: RefCell<Vec<Box<[u8]>>>,
    size: usize,
    keep: usize,
    lent: Cell<u64>,
    gauge: Arc<Gauge>,
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("size", &self.size)
            .field("idle", &self.idle.borrow().len())
            .field("lent", &self.lent.get())
            .finish()
    }
}

/// A lent buffer; it goes back to its pool when dropped (also when the relay future that
/// holds it is dropped on cancel: no I/O ever owns it across an await but a plain write).
pub struct PooledBuffer {
    pool: Rc<BufferPool>,
    buffer: Option<Box<[u8]>>,
}

impl BufferPool {
    /// A pool of `size`-byte buffers keeping at most `keep` idle; its lent count is
    /// published through `events`.
    pub fn new(size: usize, keep: usize, events: &LocalEvents) -> Rc<BufferPool> {
        Rc::new(BufferPool {
            idle: RefCell::new(Vec::new()),
            size: size.max(1),
            keep,
            lent: Cell::new(0),
            gauge: events.relay_buffer_gauge(),
        })
    }

    /// A buffer of the pool's size (reused when one is idle, else allocated).
    pub fn take(self: &Rc<Self>) -> PooledBuffer {
        let buffer = self
            .idle
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0u8; self.size].into_boxed_slice());
        self.lent.set(self.lent.get() + 1);
        self.gauge.set(self.lent.get());
        PooledBuffer {
            pool: Rc::clone(self),
            buffer: Some(buffer),
        }
    }

    /// Buffers lent now.
    pub fn lent(&self) -> u64 {
        self.lent.get()
    }

    /// Buffers kept idle now.
    pub fn idle(&self) -> usize {
        self.idle.borrow().len()
    }

    fn give_back(&self, buffer: Box<[u8]>) {
        self.lent.set(self.lent.get().saturating_sub(1));
        self.gauge.set(self.lent.get());
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.keep {
            idle.push(buffer);
        }
    }
}

impl Deref for PooledBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.buffer.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for PooledBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buffer.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.pool.give_back(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_only_a_few_stay_idle() {
        let events = LocalEvents::new();
        let pool = BufferPool::new(1024, 2, &events);
        let lent: Vec<PooledBuffer> = (0..5).map(|_| pool.take()).collect();
        assert!(lent.iter().all(|b| b.len() == 1024));
        assert_eq!(pool.lent(), 5);
        assert_eq!(events.relay_buffers_lent(), 5, "the gauge follows the pool");
        drop(lent);
        assert_eq!(pool.lent(), 0);
        assert_eq!(events.relay_buffers_lent(), 0);
        assert_eq!(pool.idle(), 2, "releases beyond `keep` free the buffer");
        let again = pool.take();
        assert_eq!(pool.idle(), 1, "an idle buffer is reused");
        drop(again);
    }

    #[test]
    fn two_pools_add_up_in_the_gauge() {
        let events = LocalEvents::new();
        let a = BufferPool::new(16, 1, &events);
        let b = BufferPool::new(16, 1, &events);
        let (x, y) = (a.take(), b.take());
        assert_eq!(events.relay_buffers_lent(), 2);
        drop((x, y));
        assert_eq!(events.relay_buffers_lent(), 0);
    }
}
