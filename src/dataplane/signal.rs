//! A worker-local, single-waiter "fire once" signal: how a worker tells one accept loop or
//! one session to stop. Cheaper than a channel (no allocation per wait) and never crosses
//! threads, so `Cell`/`RefCell` suffice.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Debug, Default)]
pub struct Signal {
    fired: Cell<bool>,
    waiter: RefCell<Option<Waker>>,
}

impl Signal {
    pub fn fire(&self) {
        self.fired.set(true);
        if let Some(waker) = self.waiter.borrow_mut().take() {
            waker.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once [`fire`](Self::fire) has been called (at once if it already was).
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.fired.get() {
                return Poll::Ready(());
            }
            let mut waiter = self.waiter.borrow_mut();
            match waiter.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waiter = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn waiter_wakes_when_fired_and_later_waits_return_at_once() {
        let fired = crate::dataplane::driver::block_on(
            crate::dataplane::driver::DriverKind::Legacy,
            || async {
                let signal = Rc::new(Signal::default());
                let waiter = monoio::spawn({
                    let signal = Rc::clone(&signal);
                    async move { signal.wait().await }
                });
                monoio::time::sleep(std::time::Duration::from_millis(5)).await;
                signal.fire();
                waiter.await;
                signal.wait().await;
                signal.is_fired()
            },
        )
        .expect("legacy runtime");
        assert!(fired);
    }
}
