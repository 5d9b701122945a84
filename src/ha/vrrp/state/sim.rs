//! Seeded simulation: routers running [`Vrrp`] on one link that delays and loses adverts,
//! with clocks at different rates, host deaths and restarts, link flaps, partitions,
//! graceful stops and priority changes (health). Netlink calls take time, as in the driver.
//!
//! Checked: the VIP is never on two routers at once except while they could not hear each
//! other (extended by one advert interval plus delays, the time to notice the other), and
//! once nothing is disturbed the VIP settles on exactly one router: the best one when every
//! router preempts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;

/// Real time in microseconds.
type Micros = u64;

/// `(router, pair, from, to)`: a period in which a router (all its pairs) or one pair of
/// routers could not hear each other.
type Window = (Option<usize>, Option<(usize, usize)>, Micros, Micros);

const SEC: Micros = 1_000_000;

#[derive(Debug, Clone, Copy)]
pub enum Disruption {
    LinkDown(usize, Micros),
    LinkUp(usize),
    Die(usize, Micros),
    Stop(usize, Micros),
    Restart(usize),
    Partition(usize, usize, Micros),
    Heal(usize, usize),
    Priority(usize, u8),
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Wake(usize, u64),
    /// A netlink call of this host finished; carry on polling.
    Continue(usize, u64),
    Deliver {
        to: usize,
        from: usize,
        priority: u8,
        interval: Duration,
    },
    /// The VIP appears / disappears on a host (`epoch`: of the process that asked).
    Vip(usize, u64, bool),
    Disrupt(Disruption),
}

struct Host {
    settings: Settings,
    fsm: Vrrp,
    addr: IpAddr,
    /// Local elapsed = real elapsed × rate.
    rate: f64,
    running: bool,
    link: bool,
    vip: bool,
    wake_gen: u64,
    /// Process generation: a restart makes a new one; events of the old one are void.
    epoch: u64,
    busy_until: Micros,
}

pub struct Scenario {
    pub priorities: Vec<u8>,
    pub preempt: Vec<bool>,
    pub preempt_delay: Duration,
    pub advert_interval: Duration,
    pub rate_error: f64,
    pub min_delay: Micros,
    pub max_delay: Micros,
    pub loss: f64,
    pub netlink: Micros,
    /// When each router starts.
    pub starts: Vec<Micros>,
    pub disruptions: Vec<(Micros, Disruption)>,
    pub run_for: Micros,
    /// Drop everything to and from router 0 from this time on *without* recording it as a
    /// disconnection: a cut the protocol cannot see, to show the checker catches overlaps.
    pub unrecorded_cut: Option<Micros>,
}

#[derive(Debug, Default)]
pub struct Report {
    /// Overlaps not explained by a disconnection: `(router a, router b, from, to)`.
    pub unexplained: Vec<(usize, usize, Micros, Micros)>,
    pub overlaps: usize,
    /// Who held the VIP at the end.
    pub holders_at_end: Vec<usize>,
    pub takeovers: usize,
    /// Longest time nobody held the VIP after the first takeover.
    pub longest_gap: Micros,
}

struct Sim {
    base: Instant,
    now: Micros,
    seq: u64,
    queue: BinaryHeap<Reverse<(Micros, u64, usize)>>,
    events: Vec<Option<Event>>,
    hosts: Vec<Host>,
    partitions: Vec<(usize, usize)>,
    windows: Vec<Window>,
    open: Vec<Option<Micros>>,
    vip_changes: Vec<(Micros, usize, bool)>,
    rng: StdRng,
    sc: Scenario,
}

impl Sim {
    fn new(sc: Scenario, seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let base = Instant::now();
        let hosts = sc
            .priorities
            .iter()
            .enumerate()
            .map(|(i, &priority)| {
                let settings = Settings {
                    vrid: 51,
                    priority,
                    advert_interval: sc.advert_interval,
                    preempt: sc.preempt[i],
                    preempt_delay: sc.preempt_delay,
                };
                Host {
                    settings,
                    fsm: Vrrp::new(settings),
                    addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11 + i as u8)),
                    rate: 1.0 + rng.random_range(-sc.rate_error..=sc.rate_error),
                    running: false,
                    link: true,
                    vip: false,
                    wake_gen: 0,
                    epoch: 0,
                    busy_until: 0,
                }
            })
            .collect::<Vec<_>>();
        let n = hosts.len();
        let mut sim = Sim {
            base,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            hosts,
            partitions: Vec::new(),
            windows: Vec::new(),
            open: vec![None; n],
            vip_changes: Vec::new(),
            rng,
            sc,
        };
        for i in 0..n {
            // Not running before its start: a window like any other down time.
            sim.open[i] = Some(0);
            let at = sim.sc.starts[i];
            sim.push(at, Event::Disrupt(Disruption::Restart(i)));
        }
        for (at, d) in sim.sc.disruptions.clone() {
            sim.push(at, Event::Disrupt(d));
        }
        sim
    }

    fn push(&mut self, at: Micros, event: Event) {
        self.seq += 1;
        self.events.push(Some(event));
        self.queue
            .push(Reverse((at, self.seq, self.events.len() - 1)));
    }

    fn local(&self, h: usize) -> Instant {
        self.base + Duration::from_micros((self.now as f64 * self.hosts[h].rate) as Micros)
    }

    fn real(&self, h: usize, local: Instant) -> Micros {
        let elapsed = local.saturating_duration_since(self.base).as_micros() as f64;
        // Never `now`: the router asked to wait because `local` is still ahead of it.
        ((elapsed / self.hosts[h].rate).ceil() as Micros).max(self.now + 1)
    }

    fn heard(&self, a: usize, b: usize) -> bool {
        let cut = self
            .sc
            .unrecorded_cut
            .is_some_and(|t| self.now >= t && (a == 0 || b == 0));
        !cut && !self.partitions.contains(&(a.min(b), a.max(b)))
    }

    fn usable(&self, h: usize) -> bool {
        self.hosts[h].running && self.hosts[h].link
    }

    /// Opens or closes router `h`'s disconnection window as it becomes (un)usable.
    fn track(&mut self, h: usize) {
        match (self.usable(h), self.open[h]) {
            (false, None) => self.open[h] = Some(self.now),
            (true, Some(from)) => {
                self.windows.push((Some(h), None, from, self.now));
                self.open[h] = None;
            }
            _ => {}
        }
    }

    fn run(mut self) -> Report {
        let mut handled = 0u64;
        while let Some(Reverse((at, _, idx))) = self.queue.pop() {
            if at > self.sc.run_for {
                break;
            }
            handled += 1;
            assert!(
                handled < 2_000_000,
                "runaway at {at} µs: {:?}",
                self.events[idx]
            );
            self.now = at;
            let Some(event) = self.events[idx].take() else {
                continue;
            };
            self.handle(event);
        }
        self.now = self.sc.run_for;
        for h in 0..self.hosts.len() {
            if let Some(from) = self.open[h] {
                self.windows.push((Some(h), None, from, self.now));
            }
        }
        self.report()
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Wake(h, generation) => {
                if self.hosts[h].wake_gen == generation {
                    self.step(h);
                }
            }
            Event::Continue(h, epoch) => {
                if self.hosts[h].epoch == epoch {
                    self.step(h);
                }
            }
            Event::Vip(h, epoch, on) => {
                if self.hosts[h].epoch == epoch && self.hosts[h].vip != on {
                    self.hosts[h].vip = on;
                    self.vip_changes.push((self.now, h, on));
                }
            }
            Event::Deliver {
                to,
                from,
                priority,
                interval,
            } => {
                if !self.usable(to) || !self.heard(from, to) {
                    return;
                }
                if self.now < self.hosts[to].busy_until {
                    // The driver reads its socket once the netlink call returns.
                    let at = self.hosts[to].busy_until;
                    self.push(at, event);
                    return;
                }
                let local = self.local(to);
                let addr = self.hosts[from].addr;
                self.hosts[to].fsm.advert(local, addr, priority, interval);
                self.step(to);
            }
            Event::Disrupt(d) => self.disrupt(d),
        }
    }

    fn disrupt(&mut self, d: Disruption) {
        match d {
            Disruption::LinkDown(h, dur) => {
                if !self.hosts[h].link {
                    return;
                }
                self.hosts[h].link = false;
                self.track(h);
                let local = self.local(h);
                self.hosts[h].fsm.link_down(local);
                self.step(h);
                self.push(self.now + dur, Event::Disrupt(Disruption::LinkUp(h)));
            }
            Disruption::LinkUp(h) => {
                self.hosts[h].link = true;
                self.track(h);
                let (local, addr) = (self.local(h), self.hosts[h].addr);
                self.hosts[h].fsm.link_up(local, addr);
                self.step(h);
            }
            Disruption::Die(h, dur) => {
                if !self.hosts[h].running {
                    return;
                }
                let host = &mut self.hosts[h];
                host.running = false;
                host.epoch += 1;
                host.wake_gen += 1;
                host.busy_until = 0;
                if host.vip {
                    // A dead host takes its addresses with it.
                    host.vip = false;
                    self.vip_changes.push((self.now, h, false));
                }
                self.track(h);
                self.push(self.now + dur, Event::Disrupt(Disruption::Restart(h)));
            }
            Disruption::Stop(h, dur) => {
                if !self.hosts[h].running {
                    return;
                }
                let local = self.local(h);
                self.hosts[h].fsm.stop(local);
                // Its peers hear nothing more from it once its priority-0 advert is out.
                self.step(h);
                self.push(self.now + dur, Event::Disrupt(Disruption::Restart(h)));
            }
            Disruption::Restart(h) => {
                if self.hosts[h].running {
                    return;
                }
                let host = &mut self.hosts[h];
                host.fsm = Vrrp::new(host.settings);
                host.running = true;
                host.epoch += 1;
                host.busy_until = 0;
                let (link, addr) = (host.link, host.addr);
                self.track(h);
                if link {
                    let local = self.local(h);
                    self.hosts[h].fsm.link_up(local, addr);
                }
                self.step(h);
            }
            Disruption::Partition(a, b, dur) => {
                let pair = (a.min(b), a.max(b));
                if !self.partitions.contains(&pair) {
                    self.partitions.push(pair);
                    self.windows
                        .push((None, Some(pair), self.now, self.now + dur));
                    self.push(self.now + dur, Event::Disrupt(Disruption::Heal(a, b)));
                }
            }
            Disruption::Heal(a, b) => {
                let pair = (a.min(b), a.max(b));
                self.partitions.retain(|p| *p != pair);
            }
            Disruption::Priority(h, p) => {
                // Health outlives a restart: the new process sees the same backends.
                self.hosts[h].settings.priority = p;
                if self.hosts[h].running {
                    let local = self.local(h);
                    self.hosts[h].fsm.set_priority(local, p);
                    self.step(h);
                }
            }
        }
    }

    /// Polls router `h` until it waits, carrying out its decisions like the driver does.
    fn step(&mut self, h: usize) {
        if !self.hosts[h].running || self.now < self.hosts[h].busy_until {
            return;
        }
        for _ in 0..100 {
            let local = self.local(h);
            match self.hosts[h].fsm.poll(local) {
                Decision::Wait(until) => {
                    self.hosts[h].wake_gen += 1;
                    if let Some(until) = until {
                        let at = self.real(h, until);
                        let generation = self.hosts[h].wake_gen;
                        self.push(at, Event::Wake(h, generation));
                    }
                    return;
                }
                Decision::Send { priority } => self.send(h, priority),
                Decision::TakeOver | Decision::StepDown(_) => {
                    let on = self.hosts[h].fsm.holds_vip();
                    let epoch = self.hosts[h].epoch;
                    let done = self.now + self.sc.netlink;
                    self.push(done, Event::Vip(h, epoch, on));
                    self.hosts[h].busy_until = done;
                    self.push(done, Event::Continue(h, epoch));
                    return;
                }
                Decision::Stopped => {
                    self.hosts[h].running = false;
                    self.hosts[h].epoch += 1;
                    self.track(h);
                    return;
                }
            }
        }
        panic!("router {h} never waits");
    }

    fn send(&mut self, from: usize, priority: u8) {
        let interval = self.hosts[from].settings.advert_interval;
        for to in 0..self.hosts.len() {
            if to == from || !self.heard(from, to) {
                continue;
            }
            if self.sc.loss > 0.0 && self.rng.random_bool(self.sc.loss) {
                continue;
            }
            let delay = self.rng.random_range(self.sc.min_delay..=self.sc.max_delay);
            self.push(
                self.now + delay,
                Event::Deliver {
                    to,
                    from,
                    priority,
                    interval,
                },
            );
        }
    }

    fn report(&self) -> Report {
        let n = self.hosts.len();
        let mut intervals: Vec<Vec<(Micros, Micros)>> = vec![Vec::new(); n];
        let mut since: Vec<Option<Micros>> = vec![None; n];
        for &(at, h, on) in &self.vip_changes {
            match (on, since[h]) {
                (true, None) => since[h] = Some(at),
                (false, Some(from)) => {
                    intervals[h].push((from, at));
                    since[h] = None;
                }
                _ => {}
            }
        }
        let mut holders_at_end = Vec::new();
        for h in 0..n {
            if let Some(from) = since[h] {
                intervals[h].push((from, self.now));
                holders_at_end.push(h);
            }
        }
        let interval = self.sc.advert_interval.as_micros() as f64;
        let slowest = interval / (1.0 - self.sc.rate_error);
        // After two routers can hear each other again, the loser hears the winner's next
        // advert within one interval and a delay, and removes its VIP within a netlink call.
        let bound = slowest as Micros + 2 * self.sc.max_delay + 2 * self.sc.netlink + 1000;
        let mut report = Report {
            holders_at_end,
            takeovers: self.vip_changes.iter().filter(|c| c.2).count(),
            ..Report::default()
        };
        for a in 0..n {
            for b in a + 1..n {
                for &(a0, a1) in &intervals[a] {
                    for &(b0, b1) in &intervals[b] {
                        let (o0, o1) = (a0.max(b0), a1.min(b1));
                        if o0 < o1 {
                            report.overlaps += 1;
                            if !self.explained(a, b, o0, o1, bound) {
                                report.unexplained.push((a, b, o0, o1));
                            }
                        }
                    }
                }
            }
        }
        let mut held: Vec<(Micros, i32)> = Vec::new();
        for iv in intervals.iter().flatten() {
            held.push((iv.0, 1));
            held.push((iv.1, -1));
        }
        held.sort();
        let (mut count, mut gap_from) = (0, None::<Micros>);
        for (at, delta) in held {
            if count == 0
                && let Some(from) = gap_from
            {
                report.longest_gap = report.longest_gap.max(at - from);
            }
            count += delta;
            gap_from = (count == 0).then_some(at);
        }
        report
    }

    /// Whether `[o0, o1)` is covered by periods in which `a` and `b` could not hear each
    /// other, each extended by `bound`.
    fn explained(&self, a: usize, b: usize, o0: Micros, o1: Micros, bound: Micros) -> bool {
        let mut spans: Vec<(Micros, Micros)> = self
            .windows
            .iter()
            .filter(|(host, pair, _, _)| {
                host.is_some_and(|h| h == a || h == b) || *pair == Some((a, b))
            })
            .map(|&(_, _, from, to)| (from, to + bound))
            .collect();
        spans.sort();
        let mut covered = o0;
        for (from, to) in spans {
            if from <= covered && to > covered {
                covered = to;
            }
            if covered >= o1 {
                return true;
            }
        }
        false
    }
}

/// Random disruptions over `run_for`, then quiet for the last `quiet`.
fn disruptions(
    rng: &mut StdRng,
    n: usize,
    run_for: Micros,
    quiet: Micros,
) -> Vec<(Micros, Disruption)> {
    let mut out = Vec::new();
    let mut t = 2 * SEC;
    while t < run_for - quiet {
        let h = rng.random_range(0..n);
        let dur = rng.random_range(200_000..3 * SEC);
        let d = match rng.random_range(0..6) {
            0 => Disruption::LinkDown(h, dur),
            1 => Disruption::Die(h, dur),
            2 => Disruption::Stop(h, dur),
            3 => {
                let other = (h + 1 + rng.random_range(0..n - 1)) % n;
                Disruption::Partition(h, other, dur)
            }
            _ => Disruption::Priority(
                h,
                *[50, 100, 150, 200]
                    .get(rng.random_range(0..4))
                    .unwrap_or(&100),
            ),
        };
        out.push((t, d));
        t += rng.random_range(300_000..2 * SEC);
    }
    out
}

fn random_scenario(seed: u64, loss: f64) -> Scenario {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let n = rng.random_range(2..=3);
    let choices = [100u8, 100, 150, 200, 254, 1];
    let priorities = (0..n)
        .map(|_| choices[rng.random_range(0..choices.len())])
        .collect();
    let preempt = (0..n).map(|_| rng.random_bool(0.8)).collect();
    let run_for = 60 * SEC;
    let quiet = 10 * SEC;
    let together = rng.random_bool(0.3);
    let starts = (0..n)
        .map(|_| {
            if together {
                0
            } else {
                rng.random_range(0..SEC)
            }
        })
        .collect();
    Scenario {
        priorities,
        preempt,
        preempt_delay: if rng.random_bool(0.2) {
            Duration::from_millis(500)
        } else {
            Duration::ZERO
        },
        advert_interval: Duration::from_millis(
            *[100u64, 100, 50, 1000]
                .get(rng.random_range(0..4))
                .unwrap_or(&100),
        ),
        rate_error: 0.01,
        min_delay: 50,
        max_delay: rng.random_range(100..3000),
        loss,
        netlink: rng.random_range(300..3000),
        starts,
        disruptions: disruptions(&mut rng, n, run_for, quiet),
        run_for,
        unrecorded_cut: None,
    }
}

fn describe(sc: &Scenario) -> String {
    format!(
        "priorities {:?} preempt {:?} delay {:?} advert {:?} max_delay {} µs netlink {} µs starts {:?}\n  disruptions {:?}",
        sc.priorities,
        sc.preempt,
        sc.preempt_delay,
        sc.advert_interval,
        sc.max_delay,
        sc.netlink,
        sc.starts,
        sc.disruptions
    )
}

/// The router the VIP must settle on when every router preempts, if one priority is the
/// highest (equal priorities do not preempt each other). Priorities set by the
/// disruptions count.
fn best(sc: &Scenario) -> Option<usize> {
    let mut priorities = sc.priorities.clone();
    for (_, d) in &sc.disruptions {
        if let Disruption::Priority(h, p) = d {
            priorities[*h] = *p;
        }
    }
    let top = priorities.iter().copied().max()?;
    let mut best = (0..priorities.len()).filter(|&i| priorities[i] == top);
    match (best.next(), best.next()) {
        (Some(i), None) => Some(i),
        _ => None,
    }
}

#[test]
fn never_two_holders_that_can_hear_each_other_and_one_holder_once_quiet() {
    let mut takeovers = 0;
    for seed in 0..40 {
        let sc = random_scenario(seed, 0.0);
        let what = describe(&sc);
        let all_preempt = sc.preempt.iter().all(|&p| p);
        let want = best(&sc);
        let report = Sim::new(sc, seed).run();
        assert!(
            report.unexplained.is_empty(),
            "seed {seed}: VIP on two routers that could hear each other: {:?}\n  {what}",
            report.unexplained
        );
        assert_eq!(
            report.holders_at_end.len(),
            1,
            "seed {seed}: holders at the end {:?}\n  {what}",
            report.holders_at_end
        );
        if all_preempt && let Some(want) = want {
            assert_eq!(
                report.holders_at_end,
                vec![want],
                "seed {seed}: with preemption the best router must end up master\n  {what}"
            );
        }
        takeovers += report.takeovers;
    }
    assert!(
        takeovers > 200,
        "the scenarios barely moved the VIP: {takeovers}"
    );
}

#[test]
fn with_lost_adverts_the_vip_still_settles_on_one_router() {
    for seed in 100..120 {
        let sc = random_scenario(seed, 0.05);
        let what = describe(&sc);
        let report = Sim::new(sc, seed).run();
        assert_eq!(
            report.holders_at_end.len(),
            1,
            "seed {seed}: holders at the end {:?}\n  {what}",
            report.holders_at_end
        );
    }
}

#[test]
fn routers_started_together_with_equal_priorities_never_both_add_the_vip() {
    for seed in 200..230 {
        let sc = Scenario {
            priorities: vec![100, 100, 100],
            preempt: vec![true; 3],
            preempt_delay: Duration::ZERO,
            advert_interval: Duration::from_millis(100),
            rate_error: 0.0,
            min_delay: 50,
            max_delay: 2000,
            loss: 0.0,
            netlink: 1000,
            starts: vec![0, 0, 0],
            disruptions: Vec::new(),
            run_for: 5 * SEC,
            unrecorded_cut: None,
        };
        let report = Sim::new(sc, seed).run();
        assert_eq!(report.overlaps, 0, "seed {seed}: {report:?}");
        assert_eq!(
            report.holders_at_end,
            vec![2],
            "the highest address wins the tie"
        );
    }
}

#[test]
fn failover_after_a_death_takes_about_the_master_down_interval() {
    let sc = Scenario {
        priorities: vec![200, 100],
        preempt: vec![true, true],
        preempt_delay: Duration::ZERO,
        advert_interval: Duration::from_millis(100),
        rate_error: 0.0,
        min_delay: 100,
        max_delay: 100,
        loss: 0.0,
        netlink: 1000,
        starts: vec![0, SEC],
        disruptions: vec![(5 * SEC, Disruption::Die(0, 2 * SEC))],
        run_for: 10 * SEC,
        unrecorded_cut: None,
    };
    let report = Sim::new(sc, 1).run();
    // Master down for priority 100 at 100 ms: 360.9 ms after the last advert; the death
    // comes up to one interval after it, plus the claim wait and a netlink call.
    assert!(
        report.longest_gap > 250_000 && report.longest_gap < 380_000,
        "gap {} µs",
        report.longest_gap
    );
    assert_eq!(report.overlaps, 0, "{report:?}");
    assert_eq!(
        report.holders_at_end,
        vec![0],
        "the returned router preempts"
    );
}

#[test]
fn the_checker_reports_an_overlap_the_protocol_could_not_prevent() {
    // Router 0 silently loses the link (no link-down event, nothing recorded): the others
    // elect a new master while router 0 keeps its VIP. The checker must call that out.
    let sc = Scenario {
        priorities: vec![200, 100],
        preempt: vec![true, true],
        preempt_delay: Duration::ZERO,
        advert_interval: Duration::from_millis(100),
        rate_error: 0.0,
        min_delay: 100,
        max_delay: 100,
        loss: 0.0,
        netlink: 1000,
        starts: vec![0, SEC],
        disruptions: Vec::new(),
        run_for: 6 * SEC,
        unrecorded_cut: Some(3 * SEC),
    };
    let report = Sim::new(sc, 1).run();
    assert!(!report.unexplained.is_empty(), "{report:?}");
}
