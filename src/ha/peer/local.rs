//! The answering side of the failsafe, pure: what this host may truthfully say about
//! itself when a holder probes it, and the promise a vouch makes.
//!
//! The instance's driver keeps [`LocalFacts`] current (lock calls starting and ending,
//! whether it may hold the VIP); the peer task answers probes from it. Both sides go
//! through one mutex, so a vouch and the end of a lock call are ordered: a read that
//! returns after a vouch is applied after it ([`LocalFacts::end_call`] reports the vouch,
//! and the driver makes the state machine forget what it had observed before that read),
//! and no lease write starts once a vouch is pending ([`LocalFacts::begin_call`]).

use std::time::{Duration, Instant};

use super::wire::Answer;

#[derive(Debug, Clone, Copy)]
struct Call {
    started: Instant,
    write: bool,
}

#[derive(Debug, Default)]
pub struct LocalFacts {
    /// The state machine holds the lease, is releasing it, or the VIP may be here.
    holding: bool,
    /// The last completed lock call succeeded (`None`: none completed yet).
    last_call_ok: Option<bool>,
    call: Option<Call>,
    /// A vouch given and not yet applied to the state machine.
    vouch_pending: bool,
    holder_seen: Option<String>,
}

/// Why a lease write may not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VouchPending;

impl LocalFacts {
    /// Answers a probe at `now`. A call outstanding for `stall` or longer counts as the lock
    /// being unreachable (a lock that does not answer is the worst outage for a client).
    pub fn answer(&mut self, now: Instant, stall: Duration) -> Answer {
        let hanging = self
            .call
            .is_some_and(|c| now.saturating_duration_since(c.started) >= stall);
        let lock_reachable = self.last_call_ok == Some(true) && !hanging;
        let writing = self.call.is_some_and(|c| c.write);
        let vouch = !self.holding && !lock_reachable && !writing;
        self.vouch_pending |= vouch;
        Answer {
            lock_reachable,
            holding: self.holding,
            vouch,
        }
    }

    pub fn holder_seen(&self) -> Option<String> {
        self.holder_seen.clone()
    }

    pub fn is_holding(&self) -> bool {
        self.holding
    }

    /// The driver's view after each decision: whether the VIP may be here, who holds.
    pub fn set_state(&mut self, holding: bool, holder_seen: Option<String>) {
        self.holding = holding;
        self.holder_seen = holder_seen;
    }

    /// A lock call starts. A write (acquiring) is refused while a vouch is pending: the
    /// driver must first apply it (forget the observed record) and decide again.
    pub fn begin_call(&mut self, now: Instant, write: bool) -> Result<(), VouchPending> {
        if write && self.vouch_pending && !self.holding {
            return Err(VouchPending);
        }
        self.call = Some(Call {
            started: now,
            write,
        });
        Ok(())
    }

    /// The call ended (`ok`: it reached the lock, including a lost race). Returns whether
    /// a vouch is pending: the driver must make the state machine forget its observation
    /// before applying this call's result, so the next expiry counts from after the vouch.
    pub fn end_call(&mut self, ok: bool) -> bool {
        self.call = None;
        self.last_call_ok = Some(ok);
        std::mem::take(&mut self.vouch_pending)
    }

    /// Between calls: returns (and clears) a pending vouch.
    pub fn take_vouch(&mut self) -> bool {
        std::mem::take(&mut self.vouch_pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_millis(250);

    #[test]
    fn a_standby_that_reaches_the_lock_does_not_vouch() {
        let t0 = Instant::now();
        let mut f = LocalFacts::default();
        f.begin_call(t0, false).expect("read");
        assert!(!f.end_call(true));
        let a = f.answer(t0, STALL);
        assert!(a.lock_reachable && !a.vouch && !a.holding);
        // A read in progress for less than the stall time is still "reachable".
        f.begin_call(t0, false).expect("read");
        assert!(f.answer(t0 + STALL / 2, STALL).lock_reachable);
        // One hanging for longer is not.
        let a = f.answer(t0 + STALL, STALL);
        assert!(!a.lock_reachable && a.vouch);
    }

    #[test]
    fn a_vouch_is_reported_with_the_next_call_result_and_blocks_writes_until_applied() {
        let t0 = Instant::now();
        let mut f = LocalFacts::default();
        f.begin_call(t0, false).expect("read");
        assert!(!f.end_call(false));
        assert!(f.answer(t0, STALL).vouch);
        assert_eq!(f.begin_call(t0, true), Err(VouchPending));
        assert!(f.take_vouch());
        f.begin_call(t0, true)
            .expect("write after the vouch was applied");
        // While a write is in flight nothing is vouched for.
        let a = f.answer(t0, STALL);
        assert!(!a.vouch && !a.lock_reachable);
        assert!(!f.end_call(false));
        // A vouch during a read comes back with that read's result.
        f.begin_call(t0, false).expect("read");
        assert!(f.answer(t0 + STALL, STALL).vouch);
        assert!(f.end_call(true));
    }

    #[test]
    fn a_holder_never_vouches() {
        let t0 = Instant::now();
        let mut f = LocalFacts::default();
        f.set_state(true, Some("lb1".into()));
        assert!(!f.end_call(false));
        let a = f.answer(t0, STALL);
        assert!(a.holding && !a.vouch && !a.lock_reachable);
        f.begin_call(t0, true)
            .expect("a holder renews whatever it said");
    }
}
