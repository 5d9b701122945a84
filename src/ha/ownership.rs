//! Who holds a VIP: the lease ownership state machine, pure (no I/O, no clock reads).
//!
//! The driver asks [`Ownership::poll`] what to do at `now`, performs it (a lease-store call
//! bounded by the decision's deadline, a netlink change, or a sleep), and reports store
//! results back with [`Ownership::complete`]. All instants are this host's monotonic clock.
//!
//! # Semantics (client-go's leader election, applied to a VIP)
//! - A standby host reads the record every poll period. It takes the lease when the record
//!   is absent, released (no holder), held by itself, or when it has seen the *same version*
//!   for the lease duration on its own clock, counted from when the read that first showed
//!   that version returned. Remote timestamps are never compared.
//! - Every write is a compare-and-swap on the version the host last saw, so of two rivals at
//!   most one wins.
//! - The holder renews every renew period. It holds the VIP only while less than the renew
//!   deadline has passed since it *sent* its last successful write; after that it steps down
//!   (removes the VIP) even if it cannot tell whether it lost the lease.
//! - On shutdown the holder removes the VIP first, then writes the record with no holder, so
//!   a standby takes over at its next poll instead of waiting the lease duration.
//! - A holder that cannot serve the VIP ([`Ownership::resign`]) does the same, then stays
//!   out of the race for a hold-off so a healthy peer gets the lease.
//!
//! # Guarantee
//! With a linearizable lock service (etcd, the Kubernetes API's resourceVersion checks),
//! at most one host decides it holds the lease at any instant, provided every host's
//! monotonic clock runs at a rate within the margin documented in [`super::timing`] and no
//! host stalls (SIGSTOP, VM pause, swap) for longer than the margin between its deadline
//! and the removal of the address.
//!
//! # Not covered
//! - No fencing: on a shared L2 segment nothing stops a stalled or partitioned-from-netlink
//!   holder from keeping the address; the guarantee is about decisions, made safe by timing.
//! - A SIGKILLed process leaves its address on the interface (the kernel keeps it); the
//!   restarted process removes a VIP it does not hold at start. A dead host takes its
//!   addresses with it.
//! - Clocks that jump are fine (monotonic time does not jump); clocks whose *rate* is off by
//!   more than the margin allows are not.

use std::time::{Duration, Instant};

use super::lease::LeaseRecord;
use super::timing::Timing;

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do until this instant (or until asked to stop).
    Wait(Instant),
    /// Read the record and report [`Outcome::Read`]; give up at `deadline`.
    Get { deadline: Instant },
    /// Create the record held by us.
    Create {
        duration: Duration,
        deadline: Instant,
    },
    /// Compare-and-swap the record from `prev`; `holder` `None` releases it.
    Update {
        purpose: Purpose,
        prev: LeaseRecord,
        holder: Option<String>,
        duration: Duration,
        deadline: Instant,
    },
    /// We hold the lease now: add the VIP, then announce it.
    TakeOver,
    /// We no longer hold the lease: remove the VIP before doing anything else.
    StepDown(StepDownReason),
    /// Shutdown complete; the driver exits.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Acquire,
    Renew,
    Release,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepDownReason {
    /// No successful renewal within the renew deadline.
    DeadlineMissed,
    /// The record names another holder.
    Lost,
    /// Planned: shutdown.
    Shutdown,
    /// This host cannot serve the VIP (see [`Ownership::resign`]).
    Resigned,
}

/// The result of the store call the last decision asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Read(Option<LeaseRecord>),
    Wrote(LeaseRecord),
    /// Someone else wrote the record (or it exists, for a create).
    Conflict,
    /// Unavailable, denied, invalid or timed out: nothing is known about the write.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standby,
    Holder,
    Stopped,
}

#[derive(Debug, Clone)]
enum State {
    Standby,
    /// `renewed_at`: when the last successful write was *sent*. `verify`: a renewal hit a
    /// conflict, read the record before writing again.
    Holding {
        renewed_at: Instant,
        record: LeaseRecord,
        verify: bool,
    },
    /// The VIP is gone; the record still names us and is to be released. `stop`: then stop
    /// (shutdown), else become a standby again (resigned).
    Releasing {
        record: LeaseRecord,
        stop: bool,
    },
    Stopped,
}

/// A record version and when this host first saw it (receive time of that read).
#[derive(Debug, Clone)]
struct Observed {
    record: Option<LeaseRecord>,
    since: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Inflight {
    purpose: Option<Purpose>,
    started: Instant,
}

#[derive(Debug)]
pub struct Ownership {
    identity: String,
    timing: Timing,
    state: State,
    /// `None`: unknown, read before anything else.
    observed: Option<Observed>,
    inflight: Option<Inflight>,
    /// Earliest time for the next store call.
    next_call: Instant,
    /// A TakeOver / StepDown the driver has not been told about yet.
    edge: Option<Decision>,
    /// After resigning: no acquiring before this.
    hold_off_until: Option<Instant>,
}

impl Ownership {
    pub fn new(identity: String, timing: Timing, now: Instant) -> Ownership {
        Ownership {
            identity,
            timing,
            state: State::Standby,
            observed: None,
            inflight: None,
            next_call: now,
            edge: None,
            hold_off_until: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    pub fn role(&self) -> Role {
        match self.state {
            State::Holding { .. } => Role::Holder,
            State::Stopped => Role::Stopped,
            State::Standby | State::Releasing { .. } => Role::Standby,
        }
    }

    /// The holder named by the last record this host read or wrote.
    pub fn observed_holder(&self) -> Option<&str> {
        match &self.state {
            State::Holding { record, .. } => record.holder.as_deref(),
            _ => self
                .observed
                .as_ref()
                .and_then(|o| o.record.as_ref())
                .and_then(|r| r.holder.as_deref()),
        }
    }

    pub fn transitions(&self) -> u32 {
        match &self.state {
            State::Holding { record, .. } | State::Releasing { record, .. } => record.transitions,
            _ => self
                .observed
                .as_ref()
                .and_then(|o| o.record.as_ref())
                .map_or(0, |r| r.transitions),
        }
    }

    /// Begin shutdown: a holder steps down (VIP first), then releases the record.
    /// Call between store calls; a result still in flight is applied to the release.
    pub fn stop(&mut self) {
        self.state = match std::mem::replace(&mut self.state, State::Stopped) {
            State::Holding { record, .. } => {
                self.edge = Some(Decision::StepDown(StepDownReason::Shutdown));
                State::Releasing { record, stop: true }
            }
            State::Releasing { record, .. } => State::Releasing { record, stop: true },
            State::Standby | State::Stopped => State::Stopped,
        };
    }

    /// Give the lease up because this host cannot serve the VIP (e.g. adding the address
    /// failed): step down, release the record so a peer takes over at its next poll, and do
    /// not take the lease again before `now + hold_off`.
    pub fn resign(&mut self, now: Instant, hold_off: Duration) {
        self.hold_off_until = Some(now + hold_off);
        if let State::Holding { record, .. } = &self.state {
            self.state = State::Releasing {
                record: record.clone(),
                stop: false,
            };
            self.edge = Some(Decision::StepDown(StepDownReason::Resigned));
        }
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Decision {
        if let Some(edge) = self.edge.take() {
            return edge;
        }
        if let State::Holding { renewed_at, .. } = &self.state
            && now >= *renewed_at + self.timing.renew_deadline
        {
            self.state = State::Standby;
            self.observed = None;
            self.next_call = now;
            return Decision::StepDown(StepDownReason::DeadlineMissed);
        }
        if self.inflight.is_some() {
            // The driver polled without completing its call; nothing new to decide.
            return Decision::Wait(now + self.timing.poll_period);
        }
        match &self.state {
            State::Stopped => Decision::Stopped,
            State::Releasing { record, .. } => {
                let prev = record.clone();
                self.start(now, Some(Purpose::Release));
                Decision::Update {
                    purpose: Purpose::Release,
                    prev,
                    holder: None,
                    duration: self.timing.lease_duration,
                    deadline: now + self.timing.renew_deadline,
                }
            }
            State::Holding {
                renewed_at,
                record,
                verify,
            } => {
                let deadline = *renewed_at + self.timing.renew_deadline;
                if now < self.next_call {
                    return Decision::Wait(self.next_call.min(deadline));
                }
                if *verify {
                    self.start(now, None);
                    return Decision::Get { deadline };
                }
                let prev = record.clone();
                self.start(now, Some(Purpose::Renew));
                Decision::Update {
                    purpose: Purpose::Renew,
                    prev,
                    holder: Some(self.identity.clone()),
                    duration: self.timing.lease_duration,
                    deadline,
                }
            }
            State::Standby => self.poll_standby(now),
        }
    }

    fn poll_standby(&mut self, now: Instant) -> Decision {
        let call_deadline = now + self.timing.renew_deadline;
        let held_off = self.hold_off_until.is_some_and(|until| now < until);
        let Some(observed) = &self.observed else {
            if now < self.next_call {
                return Decision::Wait(self.next_call);
            }
            self.start(now, None);
            return Decision::Get {
                deadline: call_deadline,
            };
        };
        // A free record is taken as soon as a read shows it; failures clear `observed`, so
        // retries go through a read after the poll period.
        let Some(record) = &observed.record else {
            if held_off {
                return self.poll_or_wait(now, call_deadline);
            }
            self.start(now, Some(Purpose::Acquire));
            return Decision::Create {
                duration: self.timing.lease_duration,
                deadline: call_deadline,
            };
        };
        let free = match record.holder.as_deref() {
            None => true,
            Some(holder) => holder == self.identity,
        };
        let expires = observed.since + record.duration.max(self.timing.lease_duration);
        if (free || now >= expires) && !held_off {
            let prev = record.clone();
            self.start(now, Some(Purpose::Acquire));
            return Decision::Update {
                purpose: Purpose::Acquire,
                prev,
                holder: Some(self.identity.clone()),
                duration: self.timing.lease_duration,
                deadline: call_deadline,
            };
        }
        if now < self.next_call {
            // Held off, an expired record must not wake us before the next read.
            let wake = if held_off {
                self.next_call
            } else {
                self.next_call.min(expires)
            };
            return Decision::Wait(wake);
        }
        self.start(now, None);
        Decision::Get {
            deadline: call_deadline,
        }
    }

    /// Read at the poll period (used while held off from acquiring).
    fn poll_or_wait(&mut self, now: Instant, call_deadline: Instant) -> Decision {
        if now < self.next_call {
            return Decision::Wait(self.next_call);
        }
        self.start(now, None);
        Decision::Get {
            deadline: call_deadline,
        }
    }

    fn start(&mut self, now: Instant, purpose: Option<Purpose>) {
        self.inflight = Some(Inflight {
            purpose,
            started: now,
        });
    }

    /// Report the result of the store call the last decision asked for.
    pub fn complete(&mut self, now: Instant, outcome: Outcome) {
        let Some(call) = self.inflight.take() else {
            return;
        };
        match call.purpose {
            None => self.on_read(now, outcome),
            Some(Purpose::Acquire) => self.on_acquire(now, call.started, outcome),
            Some(Purpose::Renew) => self.on_renew(now, call.started, outcome),
            Some(Purpose::Release) => {
                self.state = match self.state {
                    State::Releasing { stop: false, .. } => {
                        self.observed = None;
                        self.next_call = now;
                        State::Standby
                    }
                    _ => State::Stopped,
                }
            }
        }
    }

    fn on_read(&mut self, now: Instant, outcome: Outcome) {
        let Outcome::Read(record) = outcome else {
            self.next_call = now + self.timing.poll_period;
            return;
        };
        let unchanged = self.observed.as_ref().is_some_and(|o| {
            o.record.as_ref().map(|r| &r.version) == record.as_ref().map(|r| &r.version)
        });
        if !unchanged {
            self.observed = Some(Observed {
                record: record.clone(),
                since: now,
            });
        }
        match &mut self.state {
            State::Holding {
                record: held,
                verify,
                ..
            } => match record {
                Some(current) if current.holder.as_deref() == Some(self.identity.as_str()) => {
                    // Our own write whose answer we missed: renew from it right away.
                    *held = current;
                    *verify = false;
                    self.next_call = now;
                }
                _ => {
                    self.state = State::Standby;
                    self.next_call = now + self.timing.poll_period;
                    self.edge = Some(Decision::StepDown(StepDownReason::Lost));
                }
            },
            State::Releasing { record: held, .. } => {
                if let Some(current) = record {
                    *held = current;
                }
            }
            State::Standby | State::Stopped => {
                self.next_call = now + self.timing.poll_period;
            }
        }
    }

    fn on_acquire(&mut self, now: Instant, started: Instant, outcome: Outcome) {
        match outcome {
            Outcome::Wrote(record) => {
                if matches!(self.state, State::Stopped) {
                    // Stopped while acquiring: give it straight back, never add the VIP.
                    self.state = State::Releasing { record, stop: true };
                } else if now < started + self.timing.renew_deadline {
                    self.state = State::Holding {
                        renewed_at: started,
                        record,
                        verify: false,
                    };
                    self.next_call = started + self.timing.renew_period;
                    self.edge = Some(Decision::TakeOver);
                } else {
                    // The answer came too late to use; the record names us, so the next
                    // poll re-acquires it by compare-and-swap.
                    self.observed = Some(Observed {
                        record: Some(record),
                        since: now,
                    });
                    self.next_call = now;
                }
            }
            Outcome::Conflict => {
                self.observed = None;
                self.next_call = now;
            }
            Outcome::Read(_) | Outcome::Failed => {
                self.observed = None;
                self.next_call = now + self.timing.poll_period;
            }
        }
    }

    fn on_renew(&mut self, now: Instant, started: Instant, outcome: Outcome) {
        match (&mut self.state, outcome) {
            (
                State::Holding {
                    renewed_at, record, ..
                },
                Outcome::Wrote(written),
            ) => {
                *renewed_at = started;
                *record = written;
                self.next_call = started + self.timing.renew_period;
            }
            (State::Releasing { record, .. }, Outcome::Wrote(written)) => *record = written,
            (State::Holding { verify, .. }, Outcome::Conflict) => {
                // Maybe our own earlier write landed after its answer was lost; read to know.
                *verify = true;
                self.next_call = now;
            }
            (State::Holding { .. }, _) => {
                self.next_call = now + self.timing.poll_period;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
