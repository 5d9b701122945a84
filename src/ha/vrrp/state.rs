//! The VRRPv3 state machine of one virtual router (RFC 5798 §6), pure: events and this
//! host's monotonic `now` in, decisions out. No sockets, no clock reads.
//!
//! The driver feeds it what happens ([`Vrrp::link_up`], [`Vrrp::link_down`],
//! [`Vrrp::advert`], [`Vrrp::set_priority`], [`Vrrp::stop`], [`Vrrp::resign`]) and then asks
//! [`Vrrp::poll`] until it answers [`Decision::Wait`]: send an advertisement, add the VIP,
//! remove it.
//!
//! # Timing (RFC 5798 §6.1)
//! - `Skew_Time = ((256 − Priority) × Master_Adver_Interval) / 256`
//! - `Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time`
//! - A backup learns `Master_Adver_Interval` from the master's adverts (v3); it starts as
//!   this router's own advertisement interval.
//!
//! # States
//! - **Initialize**: not started, or waiting for the link. `link_up` → Backup.
//! - **Backup**: Master_Down timer running. An advert with priority ≥ ours (or any advert
//!   when preemption is off or still delayed) restarts it; priority 0 shortens it to the
//!   skew time; a lower priority is discarded so that the timer runs out and we preempt.
//!   Expiry → Master.
//! - **Master**: an advert every interval. A higher priority (or an equal one from a higher
//!   address) → Backup at once, VIP removed. A lower priority is answered with an advert at
//!   once (keepalived's "forcing a new election"), so a rival master steps down within one
//!   round trip instead of one interval. Priority 0 from someone else is answered the same
//!   way (RFC §6.4.3).
//! - **Fault**: the link is down (or the VIP could not be added): no VIP, no adverts.
//!
//! # When the VIP is added (beyond the RFC)
//! The RFC's master adds its addresses the moment it becomes master. Here the advert goes
//! first and the VIP follows a little later, so that two routers that become master at the
//! same moment settle who wins before either adds the address:
//! - **Claim wait** ([`CLAIM_WAIT`], 10 ms) after a master fell silent (failover) or left
//!   (priority 0, planned handover). Two backups whose Master_Down timers run out together
//!   (equal or close priorities: skews differ by `adv/256` per priority step) each hear the
//!   other's advert within one network delay; the loser steps down before it ever added the
//!   VIP. Safe while twice the one-way delay between LB hosts stays under 10 ms.
//! - **Handover wait** (1.5 × the old master's interval) when preempting a master that is
//!   still advertising: its next advert would come within one interval, so silence for
//!   longer means it heard ours and removed its VIP. A lower-priority advert during the wait
//!   restarts it. Preemption is never urgent (the old master still serves), so it may take
//!   one interval longer; in exchange the VIP is never on both.
//! - The handover wait (1.5 × our own interval) too after a **cold start**: nothing heard
//!   since the router started or its link came back. A master may exist whose adverts do
//!   not reach us yet (measured: a peer's IPv6 neighbour entry for us failed while our link
//!   was down and retries only every second), while ours do reach it and make it step down
//!   (removing a VIP takes ~15 ms here, longer than the claim wait).
//!
//! # Guarantee
//! Between routers that can hear each other, the VIP is on at most one of them, provided
//! the one-way delay stays under [`CLAIM_WAIT`] / 2, a master removes its VIP within half an
//! advert interval of hearing a better one, and link loss is noticed before the peers'
//! Master_Down timers run out (3 intervals). Routers that cannot hear each other each elect
//! themselves (that is VRRP); when they hear each other again the loser steps down within
//! one interval plus one delay. `sim.rs` checks this under random deaths, link flaps,
//! partitions, stops, priority changes and clock-rate error.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a new master waits between its first advert and adding the VIP when no live
/// master was heard (see the module doc).
pub const CLAIM_WAIT: Duration = Duration::from_millis(10);

/// One virtual router's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub vrid: u8,
    /// Configured priority, 1..=254.
    pub priority: u8,
    pub advert_interval: Duration,
    pub preempt: bool,
    /// No preemption for this long after the router starts or its link comes back.
    pub preempt_delay: Duration,
}

impl Settings {
    pub fn from_plan(plan: &crate::config::VrrpPlan) -> Settings {
        Settings {
            vrid: plan.vrid,
            priority: plan.priority,
            advert_interval: plan.advert_interval,
            preempt: plan.preempt,
            preempt_delay: plan.preempt_delay,
        }
    }
}

/// What the driver must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing until this instant (`None`: until an event).
    Wait(Option<Instant>),
    /// Send an advertisement with this priority now.
    Send { priority: u8 },
    /// Add the VIP and announce it.
    TakeOver,
    /// Remove the VIP before anything else.
    StepDown(StepDownReason),
    /// Stopped; the driver exits.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepDownReason {
    /// A router with a higher priority (or an equal one and a higher address) is master.
    Superseded,
    LinkDown,
    Shutdown,
    /// This host cannot serve the VIP.
    Resigned,
}

/// RFC 5798's states, plus Fault (keepalived's, for a link that is down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Initialize,
    Backup,
    Master,
    Fault,
    Stopped,
}

/// The last advert heard from another router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub from: IpAddr,
    pub priority: u8,
    pub interval: Duration,
    pub at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VipState {
    Held,
    /// Master, the VIP not added yet: at this instant unless a rival speaks first.
    PendingUntil(Instant),
}

#[derive(Debug, Clone, Copy)]
enum State {
    Initialize,
    Backup {
        master_down_at: Instant,
    },
    Master {
        next_advert: Instant,
        vip: VipState,
    },
    /// `retry_at`: after resigning, Backup again at this instant; `None`: when the link
    /// comes back.
    Fault {
        retry_at: Option<Instant>,
    },
    Stopped,
}

#[derive(Debug)]
pub struct Vrrp {
    settings: Settings,
    /// The priority advertised now: the configured one, lowered while no backend is healthy.
    priority: u8,
    /// The source address of our adverts (tie-breaks compare it); `None` until the link is up.
    local: Option<IpAddr>,
    state: State,
    link_up: bool,
    master_adver_interval: Duration,
    heard: Option<Heard>,
    preempt_after: Option<Instant>,
    queue: VecDeque<Decision>,
}

impl Vrrp {
    pub fn new(settings: Settings) -> Vrrp {
        Vrrp {
            settings,
            priority: settings.priority,
            local: None,
            state: State::Initialize,
            link_up: false,
            master_adver_interval: settings.advert_interval,
            heard: None,
            preempt_after: None,
            queue: VecDeque::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Initialize => Phase::Initialize,
            State::Backup { .. } => Phase::Backup,
            State::Master { .. } => Phase::Master,
            State::Fault { .. } => Phase::Fault,
            State::Stopped => Phase::Stopped,
        }
    }

    /// Master with the VIP added (not merely claiming it).
    pub fn holds_vip(&self) -> bool {
        matches!(
            self.state,
            State::Master {
                vip: VipState::Held,
                ..
            }
        )
    }

    /// The advertised priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    pub fn local(&self) -> Option<IpAddr> {
        self.local
    }

    /// Who is master as far as this router knows: itself, or the sender of the last advert
    /// it accepted as a backup (not after a priority-0 advert, nor once that master is
    /// overdue).
    pub fn master(&self, now: Instant) -> Option<IpAddr> {
        match self.state {
            State::Master { .. } => self.local,
            State::Backup { .. } => self
                .heard
                .filter(|h| h.priority != 0 && now < h.at + self.master_down_interval())
                .map(|h| h.from),
            _ => None,
        }
    }

    pub fn heard(&self) -> Option<Heard> {
        self.heard
    }

    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// `((256 − Priority) × Master_Adver_Interval) / 256`
    pub fn skew_time(&self) -> Duration {
        self.master_adver_interval * (256 - u32::from(self.priority)) / 256
    }

    /// `3 × Master_Adver_Interval + Skew_Time`
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval * 3 + self.skew_time()
    }

    /// The link is usable and adverts go out from `local`. From Initialize or Fault this
    /// starts the router as a backup (RFC §6.4.1; a VIP address is never owned here, so
    /// never straight to master).
    pub fn link_up(&mut self, now: Instant, local: IpAddr) {
        self.local = Some(local);
        self.link_up = true;
        match self.state {
            State::Initialize | State::Fault { retry_at: None } => self.enter_backup(now),
            _ => {}
        }
    }

    /// The link went down (or lost its source address): no VIP, no adverts, until it is up.
    pub fn link_down(&mut self, _now: Instant) {
        self.link_up = false;
        match self.state {
            State::Master { .. } => {
                self.queue
                    .push_back(Decision::StepDown(StepDownReason::LinkDown));
                self.state = State::Fault { retry_at: None };
            }
            State::Backup { .. } | State::Initialize => {
                self.state = State::Fault { retry_at: None };
            }
            State::Fault { .. } | State::Stopped => {}
        }
    }

    /// An advert from `from` that passed validation.
    pub fn advert(&mut self, now: Instant, from: IpAddr, priority: u8, interval: Duration) {
        match self.state {
            State::Backup { .. } => {
                self.heard = Some(Heard {
                    from,
                    priority,
                    interval,
                    at: now,
                });
                if priority == 0 {
                    // The master is leaving: take over after the skew only.
                    self.state = State::Backup {
                        master_down_at: now + self.skew_time(),
                    };
                } else if !self.may_preempt(now) || priority >= self.priority {
                    self.master_adver_interval = interval;
                    self.state = State::Backup {
                        master_down_at: now + self.master_down_interval(),
                    };
                }
                // A lower priority while we may preempt: discarded, the timer runs out.
            }
            State::Master { vip, .. } => {
                let wins = priority > self.priority
                    || (priority == self.priority && self.local.is_some_and(|l| from > l));
                if priority != 0 && wins {
                    self.queue
                        .push_back(Decision::StepDown(StepDownReason::Superseded));
                    self.heard = Some(Heard {
                        from,
                        priority,
                        interval,
                        at: now,
                    });
                    self.master_adver_interval = interval;
                    self.state = State::Backup {
                        master_down_at: now + self.master_down_interval(),
                    };
                    return;
                }
                // A rival that would lose, or one leaving: tell it who is master now.
                self.queue.push_back(Decision::Send {
                    priority: self.priority,
                });
                let vip = match vip {
                    VipState::PendingUntil(until) if priority != 0 => {
                        // A live master we did not know of: wait for it to fall silent.
                        VipState::PendingUntil(until.max(now + handover_wait(interval)))
                    }
                    other => other,
                };
                self.state = State::Master {
                    next_advert: now + self.settings.advert_interval,
                    vip,
                };
            }
            State::Initialize | State::Fault { .. } | State::Stopped => {}
        }
    }

    /// The priority to advertise from now on (health lowers it; see `docs/ha.md`).
    pub fn set_priority(&mut self, now: Instant, priority: u8) {
        if priority == self.priority {
            return;
        }
        self.priority = priority;
        if let State::Master { vip, .. } = self.state {
            // Let the backups compare against the new priority now, not in one interval.
            self.queue.push_back(Decision::Send { priority });
            self.state = State::Master {
                next_advert: now + self.settings.advert_interval,
                vip,
            };
        }
    }

    /// Shutdown: a master removes the VIP, then advertises priority 0 so a backup takes
    /// over after its skew time instead of the whole Master_Down_Interval.
    pub fn stop(&mut self, _now: Instant) {
        if let State::Master { .. } = self.state {
            self.queue
                .push_back(Decision::StepDown(StepDownReason::Shutdown));
            self.queue.push_back(Decision::Send { priority: 0 });
        }
        self.state = State::Stopped;
    }

    /// Reload: new settings for the same virtual router (the id does not change here; a
    /// new id is a new instance). The priority itself follows through [`Vrrp::set_priority`].
    pub fn retune(&mut self, _now: Instant, settings: Settings) {
        let priority = self.priority;
        self.settings = Settings {
            vrid: self.settings.vrid,
            ..settings
        };
        self.priority = priority;
    }

    /// This host cannot serve the VIP (adding it failed): step down like a shutdown, then
    /// stay out (Fault) for `hold_off` before becoming a backup again.
    pub fn resign(&mut self, now: Instant, hold_off: Duration) {
        if let State::Master { .. } = self.state {
            self.queue
                .push_back(Decision::StepDown(StepDownReason::Resigned));
            self.queue.push_back(Decision::Send { priority: 0 });
        }
        if !matches!(self.state, State::Stopped) {
            self.state = State::Fault {
                retry_at: Some(now + hold_off),
            };
        }
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Decision {
        if let Some(decision) = self.queue.pop_front() {
            return decision;
        }
        match self.state {
            State::Initialize => Decision::Wait(None),
            State::Backup { master_down_at } if now >= master_down_at => {
                self.become_master(now);
                self.queue.pop_front().unwrap_or(Decision::Wait(Some(now)))
            }
            State::Backup { master_down_at } => Decision::Wait(Some(master_down_at)),
            State::Master { next_advert, vip } => {
                if let VipState::PendingUntil(until) = vip
                    && now >= until
                {
                    self.state = State::Master {
                        next_advert,
                        vip: VipState::Held,
                    };
                    return Decision::TakeOver;
                }
                if now >= next_advert {
                    let mut next = next_advert + self.settings.advert_interval;
                    if next <= now {
                        // Stalled for more than an interval: no burst to catch up.
                        next = now + self.settings.advert_interval;
                    }
                    self.state = State::Master {
                        next_advert: next,
                        vip,
                    };
                    return Decision::Send {
                        priority: self.priority,
                    };
                }
                let wake = match vip {
                    VipState::PendingUntil(until) => next_advert.min(until),
                    VipState::Held => next_advert,
                };
                Decision::Wait(Some(wake))
            }
            State::Fault { retry_at: Some(at) } if now >= at => {
                if self.link_up {
                    self.enter_backup(now);
                } else {
                    self.state = State::Fault { retry_at: None };
                }
                self.poll(now)
            }
            State::Fault { retry_at } => Decision::Wait(retry_at),
            State::Stopped => Decision::Stopped,
        }
    }

    fn may_preempt(&self, now: Instant) -> bool {
        self.settings.preempt && self.preempt_after.is_none_or(|t| now >= t)
    }

    fn enter_backup(&mut self, now: Instant) {
        self.master_adver_interval = self.settings.advert_interval;
        self.heard = None;
        self.preempt_after = Some(now + self.settings.preempt_delay);
        self.state = State::Backup {
            master_down_at: now + self.master_down_interval(),
        };
    }

    fn become_master(&mut self, now: Instant) {
        let wait = match self.heard {
            // Preempting a master that still advertises.
            Some(h) if h.priority != 0 && now < h.at + self.master_down_interval() => {
                handover_wait(h.interval)
            }
            // The master fell silent or left (priority 0): failover, only rivals matter.
            Some(_) => CLAIM_WAIT,
            // Nothing heard since this router started or its link came back: a master may
            // be there whose adverts do not reach us yet (a peer's neighbour entry for us
            // still failed); ours reach it, and it steps down if it loses.
            None => handover_wait(self.settings.advert_interval),
        };
        self.queue.push_back(Decision::Send {
            priority: self.priority,
        });
        self.state = State::Master {
            next_advert: now + self.settings.advert_interval,
            vip: VipState::PendingUntil(now + wait),
        };
    }
}

/// A preempted master advertising every `interval` has heard us once it skipped an advert.
pub fn handover_wait(interval: Duration) -> Duration {
    interval + interval / 2
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sim;
