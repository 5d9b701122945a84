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
//!   a standby takes over at its next poll instead of waiting the lease duration. A planned
//!   handover also writes a [`HandoverNote`] ("my sessions drain at ADDRESS for DRAIN")
//!   with the release; the host that takes the lease next gets it with its
//!   [`Decision::TakeOver`] and forwards those sessions' packets until the drain ends.
//! - A holder that cannot serve the VIP ([`Ownership::resign`]) does the same, then stays
//!   out of the race for a hold-off so a healthy peer gets the lease.
//! - The lease is released only after the driver *confirmed* the VIP is gone
//!   ([`Ownership::vip_removed`]). Until then a planned stop or resign keeps renewing, and
//!   every step-down is retried every [`REMOVE_RETRY`]: a removal that keeps failing leaves
//!   the lease with this host (nobody else adds the VIP) and is visible in
//!   [`Ownership::removal_pending`].
//! - Timing changes on reload ([`Ownership::set_timing`]) apply in place; the deadline of a
//!   write already made never grows past what that write promised.
//! - Lock-outage failsafe ([`Ownership::set_failsafe`]): a holder keeps the VIP past its
//!   renew deadline up to `D` after the *send* of the latest probe round every peer
//!   vouched for ([`super::peer::failsafe`]), the same bound as for a write. A standby that
//!   vouched forgets what it observed ([`Ownership::forget_observed`]), so it may take the
//!   lease only a whole lease duration after a read that returned after its vouch.
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

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::lease::{HandoverNote, LeaseRecord};
use super::timing::Timing;

/// How soon a failed VIP removal is tried again.
pub const REMOVE_RETRY: Duration = Duration::from_millis(100);

/// Until a step-down's result is reported, no other is asked for.
const AWAITING_REPORT: Duration = Duration::from_secs(3600);

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
    /// Compare-and-swap the record from `prev`; `holder` `None` releases it, with
    /// `handover` when this is a planned handover.
    Update {
        purpose: Purpose,
        prev: LeaseRecord,
        holder: Option<String>,
        duration: Duration,
        handover: Option<HandoverNote>,
        deadline: Instant,
    },
    /// We hold the lease now: (with `forward`, first forward the previous holder's
    /// sessions to it,) add the VIP, then announce it.
    TakeOver { forward: Option<Forward> },
    /// The VIP must leave this host: remove it (or park it, on a planned handover), then
    /// report with [`Ownership::vip_removed`].
    StepDown(StepDownReason),
    /// Shutdown complete; the driver exits.
    Stopped,
}

/// The previous holder's sessions to keep forwarding: packets of flows this host does not
/// know go to `address` until `until` (this host's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The VIP the note was written for.
    pub vip: IpAddr,
    pub address: IpAddr,
    pub until: Instant,
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
    /// `lease`: our last successful write. `verify`: a renewal hit a conflict, read the
    /// record before writing again.
    Holding {
        lease: Held,
        verify: bool,
    },
    /// Letting go on purpose: the record still names us; it is renewed until the VIP is
    /// confirmed gone, then released (with `note` on a planned handover). `stop`: then stop
    /// (shutdown), else become a standby again (resigned).
    Releasing {
        lease: Held,
        stop: bool,
        note: Option<HandoverNote>,
    },
    Stopped,
}

/// The lease as this host last wrote it.
#[derive(Debug, Clone)]
struct Held {
    record: LeaseRecord,
    /// When the last successful write was *sent*.
    renewed_at: Instant,
    /// How long after `renewed_at` the VIP must be gone: the renew deadline that went with
    /// that write (a later, longer timing never stretches it).
    deadline_after: Duration,
}

impl Held {
    fn deadline(&self) -> Instant {
        self.renewed_at + self.deadline_after
    }
}

/// Where the VIP is, as far as the driver has reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VipState {
    Absent,
    Present,
    /// It must go; the next [`Decision::StepDown`] is due at `next_try`.
    Removing {
        reason: StepDownReason,
        next_try: Instant,
        failures: u32,
    },
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
    /// A TakeOver the driver has not been told about yet.
    edge: Option<Decision>,
    /// After resigning: no acquiring before this.
    hold_off_until: Option<Instant>,
    vip: VipState,
    /// Send time of the latest probe round every failsafe peer vouched for.
    failsafe: Option<Instant>,
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
            vip: VipState::Absent,
            failsafe: None,
        }
    }

    /// The failsafe's latest unanimous round (its send time), or `None` when the peers do
    /// not (or no longer) all vouch. A holder keeps the VIP until the later of its renew
    /// deadline and `confirmed + renew deadline`.
    pub fn set_failsafe(&mut self, confirmed: Option<Instant>) {
        self.failsafe = confirmed;
    }

    /// A standby vouched to a holder's probe: forget the observed record, so the lease
    /// expires for us only a lease duration after a read that returns from now on.
    pub fn forget_observed(&mut self) {
        if matches!(self.state, State::Standby) {
            self.observed = None;
        }
    }

    /// Whether this host may have the VIP or a claim on the lease: what it must say to a
    /// failsafe probe (a host that may hold never vouches).
    pub fn may_hold(&self) -> bool {
        !matches!(self.state, State::Standby | State::Stopped) || self.vip != VipState::Absent
    }

    /// The holder keeps the VIP only because the failsafe peers vouch (its lease deadline
    /// has passed).
    pub fn held_by_failsafe(&self, now: Instant) -> bool {
        match &self.state {
            State::Holding { lease, .. } => {
                now >= lease.deadline() && now < self.hold_deadline(lease)
            }
            _ => false,
        }
    }

    /// Until when a holder keeps the VIP: its renew deadline, or later by the failsafe.
    fn hold_deadline(&self, lease: &Held) -> Instant {
        let extended = self.failsafe.map(|sent| sent + self.timing.renew_deadline);
        extended.map_or(lease.deadline(), |e| e.max(lease.deadline()))
    }

    /// Reload: new timing from now on. A write already made keeps the deadline it was made
    /// with if that is shorter, so no rival ever sees a record promise less than the
    /// holder's real hold.
    pub fn set_timing(&mut self, timing: Timing) {
        self.timing = timing;
        if let State::Holding { lease, .. } | State::Releasing { lease, .. } = &mut self.state {
            lease.deadline_after = lease.deadline_after.min(timing.renew_deadline);
        }
    }

    /// Removing the VIP failed at least once and has not succeeded since.
    pub fn removal_pending(&self) -> bool {
        matches!(self.vip, VipState::Removing { failures, .. } if failures > 0)
    }

    /// The driver's report on the last [`Decision::StepDown`]: `true` when the VIP is
    /// confirmed gone from the interface.
    pub fn vip_removed(&mut self, now: Instant, removed: bool) {
        if let VipState::Removing {
            reason, failures, ..
        } = self.vip
        {
            self.vip = if removed {
                VipState::Absent
            } else {
                VipState::Removing {
                    reason,
                    next_try: now + REMOVE_RETRY,
                    failures: failures + 1,
                }
            };
        }
    }

    fn remove_vip(&mut self, now: Instant, reason: StepDownReason) {
        self.vip = match self.vip {
            // Already going: keep the retry schedule, a new reason does not change the work.
            removing @ VipState::Removing { .. } => removing,
            VipState::Absent | VipState::Present => VipState::Removing {
                reason,
                next_try: now,
                failures: 0,
            },
        };
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
            State::Holding { lease, .. } => lease.record.holder.as_deref(),
            _ => self
                .observed
                .as_ref()
                .and_then(|o| o.record.as_ref())
                .and_then(|r| r.holder.as_deref()),
        }
    }

    pub fn transitions(&self) -> u32 {
        match &self.state {
            State::Holding { lease, .. } | State::Releasing { lease, .. } => {
                lease.record.transitions
            }
            _ => self
                .observed
                .as_ref()
                .and_then(|o| o.record.as_ref())
                .map_or(0, |r| r.transitions),
        }
    }

    /// Begin shutdown: a holder steps down (VIP first), then releases the record.
    /// Call between store calls; a result still in flight is applied to the release.
    pub fn stop(&mut self, now: Instant) {
        self.stop_with(now, None);
    }

    /// Shutdown as a planned handover: like [`Ownership::stop`], and the release carries
    /// `note` for the next holder.
    pub fn stop_with(&mut self, now: Instant, note: Option<HandoverNote>) {
        self.edge = None;
        self.state = match std::mem::replace(&mut self.state, State::Stopped) {
            State::Holding { lease, .. } => {
                self.remove_vip(now, StepDownReason::Shutdown);
                State::Releasing {
                    lease,
                    stop: true,
                    note,
                }
            }
            State::Releasing { lease, .. } => State::Releasing {
                lease,
                stop: true,
                note,
            },
            State::Standby | State::Stopped => State::Stopped,
        };
    }

    /// The planned handover could not keep the VIP for its sessions (it was removed
    /// outright): release without a note, so no host forwards to a host that has nothing.
    pub fn forget_handover_note(&mut self) {
        if let State::Releasing { note, .. } = &mut self.state {
            *note = None;
        }
    }

    /// Give the lease up because this host cannot serve the VIP (e.g. adding the address
    /// failed): step down, release the record so a peer takes over at its next poll, and do
    /// not take the lease again before `now + hold_off`.
    pub fn resign(&mut self, now: Instant, hold_off: Duration) {
        self.hold_off_until = Some(now + hold_off);
        if let State::Holding { lease, .. } = &self.state {
            self.state = State::Releasing {
                lease: lease.clone(),
                stop: false,
                note: None,
            };
            self.edge = None;
            self.remove_vip(now, StepDownReason::Resigned);
        }
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Decision {
        if let Some(edge) = self.edge.take() {
            return edge;
        }
        if let VipState::Removing {
            reason,
            next_try,
            failures,
        } = self.vip
            && now >= next_try
        {
            self.vip = VipState::Removing {
                reason,
                next_try: now + AWAITING_REPORT,
                failures,
            };
            return Decision::StepDown(reason);
        }
        match &self.state {
            State::Holding { lease, .. } if now >= self.hold_deadline(lease) => {
                self.state = State::Standby;
                self.observed = None;
                self.next_call = now;
                self.remove_vip(now, StepDownReason::DeadlineMissed);
                return self.poll(now);
            }
            State::Releasing { lease, stop, .. }
                if now >= lease.deadline() && self.vip != VipState::Absent =>
            {
                // Neither renewed nor rid of the VIP in time: the lease is lost either way.
                // Keep trying to remove; releasing a record a rival may have taken is moot.
                self.state = if *stop {
                    State::Stopped
                } else {
                    State::Standby
                };
                self.observed = None;
                self.next_call = now;
            }
            _ => {}
        }
        if self.inflight.is_some() {
            // The driver polled without completing its call; nothing new to decide.
            return Decision::Wait(now + self.timing.poll_period);
        }
        let removal_due = match self.vip {
            VipState::Removing { next_try, .. } => Some(next_try),
            _ => None,
        };
        match &self.state {
            State::Stopped => match removal_due {
                Some(at) => Decision::Wait(at),
                None => Decision::Stopped,
            },
            State::Releasing { lease, note, .. } if self.vip == VipState::Absent => {
                let prev = lease.record.clone();
                let handover = *note;
                self.start(now, Some(Purpose::Release));
                Decision::Update {
                    purpose: Purpose::Release,
                    prev,
                    holder: None,
                    duration: self.timing.lease_duration,
                    handover,
                    deadline: now + self.timing.renew_deadline,
                }
            }
            State::Holding { lease, verify } => {
                let (lease, verify) = (lease.clone(), *verify);
                let deadline = self.hold_deadline(&lease);
                self.poll_renewal(now, &lease, deadline, verify, removal_due)
            }
            State::Releasing { lease, .. } => {
                let lease = lease.clone();
                let deadline = lease.deadline();
                self.poll_renewal(now, &lease, deadline, false, removal_due)
            }
            State::Standby => match self.poll_standby(now) {
                Decision::Wait(at) => Decision::Wait(removal_due.map_or(at, |r| r.min(at))),
                other => other,
            },
        }
    }

    /// Holding (or releasing while the VIP is still here): renew every renew period;
    /// `deadline`: when the VIP must be gone without a renewal.
    fn poll_renewal(
        &mut self,
        now: Instant,
        lease: &Held,
        deadline: Instant,
        verify: bool,
        removal_due: Option<Instant>,
    ) -> Decision {
        if now < self.next_call {
            let wake = self.next_call.min(deadline);
            return Decision::Wait(removal_due.map_or(wake, |r| r.min(wake)));
        }
        if verify {
            self.start(now, None);
            return Decision::Get { deadline };
        }
        self.start(now, Some(Purpose::Renew));
        Decision::Update {
            purpose: Purpose::Renew,
            prev: lease.record.clone(),
            holder: Some(self.identity.clone()),
            duration: self.timing.lease_duration,
            handover: None,
            deadline,
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
                handover: None,
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
                    State::Standby => State::Standby,
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
            State::Holding { lease, verify } => match record {
                Some(current) if current.holder.as_deref() == Some(self.identity.as_str()) => {
                    // Our own write whose answer we missed: renew from it right away.
                    lease.record = current;
                    *verify = false;
                    self.next_call = now;
                }
                _ => {
                    self.state = State::Standby;
                    self.next_call = now + self.timing.poll_period;
                    self.remove_vip(now, StepDownReason::Lost);
                }
            },
            State::Releasing { lease, .. } => {
                if let Some(current) = record {
                    lease.record = current;
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
                let lease = Held {
                    record,
                    renewed_at: started,
                    deadline_after: self.timing.renew_deadline,
                };
                if matches!(self.state, State::Stopped) {
                    // Stopped while acquiring: give it straight back, never add the VIP.
                    self.state = State::Releasing {
                        lease,
                        stop: true,
                        note: None,
                    };
                } else if now < lease.deadline() {
                    let forward = self.forward_for(now);
                    self.state = State::Holding {
                        lease,
                        verify: false,
                    };
                    self.next_call = started + self.timing.renew_period;
                    self.vip = VipState::Present;
                    self.edge = Some(Decision::TakeOver { forward });
                } else {
                    let record = lease.record;
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
                State::Holding { lease, .. } | State::Releasing { lease, .. },
                Outcome::Wrote(written),
            ) => {
                lease.renewed_at = started;
                lease.record = written;
                lease.deadline_after = self.timing.renew_deadline;
                self.next_call = started + self.timing.renew_period;
            }
            (State::Holding { verify, .. }, Outcome::Conflict) => {
                // Maybe our own earlier write landed after its answer was lost; read to know.
                *verify = true;
                self.next_call = now;
            }
            (State::Holding { .. } | State::Releasing { .. }, _) => {
                self.next_call = now + self.timing.poll_period;
            }
            _ => {}
        }
    }

    /// The forwarding a takeover owes the previous holder: its handover note, counted from
    /// when this host first saw the released record.
    fn forward_for(&self, now: Instant) -> Option<Forward> {
        let observed = self.observed.as_ref()?;
        let note = observed.record.as_ref()?.handover?;
        let until = observed.since + note.drain;
        (until > now).then_some(Forward {
            vip: note.vip,
            address: note.address,
            until,
        })
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
