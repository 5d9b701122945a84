//! The state machine by hand: one behaviour per test, instants built from a fixed base.

use super::*;

const ADV: Duration = Duration::from_millis(100);

fn settings(priority: u8) -> Settings {
    Settings {
        vrid: 51,
        priority,
        advert_interval: ADV,
        preempt: true,
        preempt_delay: Duration::ZERO,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls until Wait, collecting every other decision.
fn drain(fsm: &mut Vrrp, now: Instant) -> (Vec<Decision>, Option<Instant>) {
    let mut out = Vec::new();
    for _ in 0..20 {
        match fsm.poll(now) {
            Decision::Wait(until) => return (out, until),
            d => out.push(d),
        }
    }
    panic!("poll never waited: {out:?}");
}

/// A router at priority `p`, started at `t0` with source 192.0.2.11, drained.
fn started(p: u8, t0: Instant) -> Vrrp {
    let mut fsm = Vrrp::new(settings(p));
    fsm.link_up(t0, ip("192.0.2.11"));
    let (decisions, _) = drain(&mut fsm, t0);
    assert!(
        decisions.is_empty(),
        "a new router only waits: {decisions:?}"
    );
    fsm
}

/// Drives `fsm` from Backup to Master holding the VIP, with no adverts heard (a cold
/// start: the handover wait).
fn master(p: u8, t0: Instant) -> (Vrrp, Instant) {
    let mut fsm = started(p, t0);
    let down = t0 + fsm.master_down_interval();
    let (d, _) = drain(&mut fsm, down);
    assert_eq!(d, vec![Decision::Send { priority: p }]);
    let (d, _) = drain(&mut fsm, down + ADV);
    assert_eq!(d, vec![Decision::Send { priority: p }]);
    let held = down + handover_wait(ADV);
    let (d, _) = drain(&mut fsm, held);
    assert_eq!(d, vec![Decision::TakeOver]);
    assert!(fsm.holds_vip());
    (fsm, held)
}

#[test]
fn timers_follow_rfc_5798() {
    let fsm = Vrrp::new(settings(100));
    // (256 − 100) × 100 ms / 256 = 60.9375 ms
    assert_eq!(fsm.skew_time(), Duration::from_nanos(60_937_500));
    assert_eq!(
        fsm.master_down_interval(),
        Duration::from_nanos(360_937_500)
    );
    let high = Vrrp::new(settings(254));
    assert!(
        high.skew_time() < fsm.skew_time(),
        "higher priority, shorter skew"
    );
}

#[test]
fn a_router_starts_as_backup_and_becomes_master_after_the_master_down_interval() {
    let t0 = Instant::now();
    let mut fsm = started(100, t0);
    assert_eq!(fsm.phase(), Phase::Backup);
    let (_, until) = drain(&mut fsm, t0);
    assert_eq!(until, Some(t0 + fsm.master_down_interval()));
    let (fsm, _) = master(100, t0);
    assert_eq!(fsm.phase(), Phase::Master);
}

#[test]
fn nothing_happens_before_the_link_is_up() {
    let t0 = Instant::now();
    let mut fsm = Vrrp::new(settings(100));
    assert_eq!(fsm.poll(t0 + ms(5000)), Decision::Wait(None));
    assert_eq!(fsm.phase(), Phase::Initialize);
}

#[test]
fn after_a_cold_start_the_new_master_advertises_and_waits_a_handover_before_the_vip() {
    let t0 = Instant::now();
    let mut fsm = started(100, t0);
    let down = t0 + fsm.master_down_interval();
    let (d, _) = drain(&mut fsm, down);
    assert_eq!(d, vec![Decision::Send { priority: 100 }]);
    let (d, _) = drain(&mut fsm, down + ADV);
    assert_eq!(d, vec![Decision::Send { priority: 100 }]);
    assert!(!fsm.holds_vip(), "no VIP during the wait");
    let (d, _) = drain(&mut fsm, down + handover_wait(ADV));
    assert_eq!(d, vec![Decision::TakeOver]);
}

#[test]
fn when_the_master_falls_silent_the_backup_adds_the_vip_after_the_claim_wait_only() {
    let t0 = Instant::now();
    let mut fsm = started(100, t0);
    fsm.advert(t0, ip("192.0.2.12"), 200, ADV);
    let down = t0 + fsm.master_down_interval();
    let (d, until) = drain(&mut fsm, down);
    assert_eq!(d, vec![Decision::Send { priority: 100 }]);
    assert_eq!(until, Some(down + CLAIM_WAIT));
    let (d, _) = drain(&mut fsm, down + CLAIM_WAIT);
    assert_eq!(d, vec![Decision::TakeOver]);
}

#[test]
fn a_rival_heard_during_the_claim_wait_wins_before_either_adds_the_vip() {
    let t0 = Instant::now();
    let mut fsm = started(100, t0);
    let down = t0 + fsm.master_down_interval();
    drain(&mut fsm, down);
    // Same priority from a higher address: it wins the tie.
    fsm.advert(down + ms(1), ip("192.0.2.12"), 100, ADV);
    let (d, _) = drain(&mut fsm, down + ms(1));
    assert_eq!(d, vec![Decision::StepDown(StepDownReason::Superseded)]);
    assert_eq!(fsm.phase(), Phase::Backup);
    let (d, _) = drain(&mut fsm, down + handover_wait(ADV) + ms(1));
    assert!(d.is_empty(), "the loser never adds the VIP: {d:?}");
}

#[test]
fn adverts_with_a_priority_at_least_ours_keep_a_backup_waiting() {
    let t0 = Instant::now();
    let mut fsm = started(100, t0);
    for i in 1..=20 {
        let t = t0 + ADV * i;
        fsm.advert(t, ip("192.0.2.12"), 100, ADV);
        let (d, until) = drain(&mut fsm, t);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(until, Some(t + fsm.master_down_interval()));
    }
    assert_eq!(fsm.master(t0 + ADV * 20), Some(ip("192.0.2.12")));
}

#[test]
fn a_backup_learns_the_masters_advertisement_interval() {
    let t0 = Instant::now();
    let mut fsm = started(100, t0);
    fsm.advert(t0, ip("192.0.2.12"), 200, ms(1000));
    assert_eq!(fsm.master_adver_interval(), ms(1000));
    let (_, until) = drain(&mut fsm, t0);
    assert_eq!(until, Some(t0 + ms(3000) + ms(1000) * 156 / 256));
}

#[test]
fn priority_zero_makes_a_backup_take_over_after_the_skew_time_only() {
    let t0 = Instant::now();
    let mut fsm = started(100, t0);
    fsm.advert(t0, ip("192.0.2.12"), 200, ADV);
    fsm.advert(t0 + ms(50), ip("192.0.2.12"), 0, ADV);
    let (_, until) = drain(&mut fsm, t0 + ms(50));
    assert_eq!(until, Some(t0 + ms(50) + fsm.skew_time()));
    let at = t0 + ms(50) + fsm.skew_time();
    let (d, until) = drain(&mut fsm, at);
    assert_eq!(d, vec![Decision::Send { priority: 100 }]);
    assert_eq!(
        until,
        Some(at + CLAIM_WAIT),
        "a leaving master removed its VIP first: only the claim wait"
    );
}

#[test]
fn with_preemption_a_backup_takes_over_from_a_lower_priority_master_after_it_falls_silent() {
    let t0 = Instant::now();
    let mut fsm = started(200, t0);
    // The lower-priority master keeps advertising: discarded, so the timer runs out.
    let mut t = t0;
    while t < t0 + fsm.master_down_interval() {
        fsm.advert(t, ip("192.0.2.12"), 100, ADV);
        t += ADV;
    }
    let down = t0 + fsm.master_down_interval();
    let (d, _) = drain(&mut fsm, down);
    assert_eq!(d, vec![Decision::Send { priority: 200 }]);
    let (d, _) = drain(&mut fsm, down + CLAIM_WAIT);
    assert!(
        d.is_empty(),
        "a live master gets more than the claim wait: {d:?}"
    );
    // Its advert crossed ours: answered at once, and the wait starts again.
    let crossed = down + ms(20);
    fsm.advert(crossed, ip("192.0.2.12"), 100, ADV);
    let (d, _) = drain(&mut fsm, crossed);
    assert_eq!(d, vec![Decision::Send { priority: 200 }]);
    let (d, _) = drain(&mut fsm, crossed + ADV);
    assert_eq!(d, vec![Decision::Send { priority: 200 }], "adverts go on");
    assert!(!fsm.holds_vip());
    // Silent for the handover wait: it stepped down.
    let (d, _) = drain(&mut fsm, crossed + handover_wait(ADV));
    assert_eq!(d, vec![Decision::TakeOver]);
}

#[test]
fn without_preemption_a_higher_priority_backup_stays_backup() {
    let t0 = Instant::now();
    let mut fsm = Vrrp::new(Settings {
        preempt: false,
        ..settings(200)
    });
    fsm.link_up(t0, ip("192.0.2.11"));
    for i in 0..50 {
        let t = t0 + ADV * i;
        fsm.advert(t, ip("192.0.2.12"), 100, ADV);
        let (d, _) = drain(&mut fsm, t);
        assert!(d.is_empty(), "nopreempt must not take over: {d:?}");
    }
    assert_eq!(fsm.phase(), Phase::Backup);
}

#[test]
fn preempt_delay_holds_preemption_off_after_start() {
    let t0 = Instant::now();
    let mut fsm = Vrrp::new(Settings {
        preempt_delay: ms(2000),
        ..settings(200)
    });
    fsm.link_up(t0, ip("192.0.2.11"));
    let mut t = t0;
    while t < t0 + ms(1900) {
        fsm.advert(t, ip("192.0.2.12"), 100, ADV);
        let (d, _) = drain(&mut fsm, t);
        assert!(
            d.is_empty(),
            "preempted during preempt_delay at {:?}",
            t - t0
        );
        t += ADV;
    }
    // After the delay the lower master's adverts are discarded and the timer runs out.
    while t < t0 + ms(2000) + fsm.master_down_interval() + ADV {
        fsm.advert(t, ip("192.0.2.12"), 100, ADV);
        let (d, _) = drain(&mut fsm, t);
        if d.contains(&Decision::Send { priority: 200 }) {
            assert!(t >= t0 + ms(2000), "preempted too early");
            return;
        }
        t += ADV;
    }
    panic!("never preempted after preempt_delay");
}

#[test]
fn a_master_advertises_every_interval() {
    let t0 = Instant::now();
    let (mut fsm, held) = master(100, t0);
    let down = held - handover_wait(ADV);
    let (d, until) = drain(&mut fsm, held);
    assert!(d.is_empty());
    assert_eq!(until, Some(down + ADV * 2));
    for i in 2..=6 {
        let (d, _) = drain(&mut fsm, down + ADV * i);
        assert_eq!(d, vec![Decision::Send { priority: 100 }], "advert {i}");
    }
}

#[test]
fn a_stalled_master_does_not_burst_to_catch_up() {
    let t0 = Instant::now();
    let (mut fsm, held) = master(100, t0);
    let late = held + ADV * 10;
    let (d, until) = drain(&mut fsm, late);
    assert_eq!(d, vec![Decision::Send { priority: 100 }]);
    assert_eq!(until, Some(late + ADV));
}

#[test]
fn a_master_steps_down_for_a_higher_priority() {
    let t0 = Instant::now();
    let (mut fsm, held) = master(100, t0);
    fsm.advert(held, ip("192.0.2.5"), 150, ADV);
    let (d, _) = drain(&mut fsm, held);
    assert_eq!(d, vec![Decision::StepDown(StepDownReason::Superseded)]);
    assert_eq!(fsm.phase(), Phase::Backup);
    assert_eq!(fsm.master(held), Some(ip("192.0.2.5")));
}

#[test]
fn equal_priorities_are_settled_by_the_higher_source_address() {
    let t0 = Instant::now();
    let (mut fsm, held) = master(100, t0);
    fsm.advert(held, ip("192.0.2.10"), 100, ADV);
    let (d, _) = drain(&mut fsm, held);
    assert_eq!(
        d,
        vec![Decision::Send { priority: 100 }],
        "a lower address loses"
    );
    fsm.advert(held, ip("192.0.2.12"), 100, ADV);
    let (d, _) = drain(&mut fsm, held);
    assert_eq!(d, vec![Decision::StepDown(StepDownReason::Superseded)]);
}

#[test]
fn a_master_answers_a_lower_priority_advert_at_once() {
    let t0 = Instant::now();
    let (mut fsm, held) = master(100, t0);
    let t = held + ms(3);
    fsm.advert(t, ip("192.0.2.99"), 50, ADV);
    let (d, until) = drain(&mut fsm, t);
    assert_eq!(d, vec![Decision::Send { priority: 100 }]);
    assert_eq!(
        until,
        Some(t + ADV),
        "the interval restarts from the answer"
    );
    assert!(fsm.holds_vip());
}

#[test]
fn shutdown_removes_the_vip_then_advertises_priority_zero() {
    let t0 = Instant::now();
    let (mut fsm, held) = master(100, t0);
    fsm.stop(held);
    assert_eq!(fsm.poll(held), Decision::StepDown(StepDownReason::Shutdown));
    assert_eq!(fsm.poll(held), Decision::Send { priority: 0 });
    assert_eq!(fsm.poll(held), Decision::Stopped);
    assert_eq!(fsm.poll(held + ms(1000)), Decision::Stopped);
}

#[test]
fn a_backup_stops_silently() {
    let t0 = Instant::now();
    let mut fsm = started(100, t0);
    fsm.stop(t0);
    assert_eq!(fsm.poll(t0), Decision::Stopped);
}

#[test]
fn link_loss_takes_the_vip_down_and_its_return_starts_a_backup() {
    let t0 = Instant::now();
    let (mut fsm, held) = master(100, t0);
    fsm.link_down(held);
    let (d, until) = drain(&mut fsm, held);
    assert_eq!(d, vec![Decision::StepDown(StepDownReason::LinkDown)]);
    assert_eq!(until, None);
    assert_eq!(fsm.phase(), Phase::Fault);
    let back = held + ms(5000);
    fsm.link_up(back, ip("192.0.2.11"));
    assert_eq!(fsm.phase(), Phase::Backup);
    let (d, until) = drain(&mut fsm, back);
    assert!(d.is_empty());
    assert_eq!(until, Some(back + fsm.master_down_interval()));
}

#[test]
fn a_lowered_priority_is_advertised_at_once() {
    let t0 = Instant::now();
    let (mut fsm, held) = master(100, t0);
    fsm.set_priority(held, 50);
    let (d, _) = drain(&mut fsm, held);
    assert_eq!(d, vec![Decision::Send { priority: 50 }]);
    fsm.set_priority(held, 50);
    let (d, _) = drain(&mut fsm, held);
    assert!(d.is_empty(), "no advert for an unchanged priority");
}

#[test]
fn resigning_steps_down_and_stays_out_for_the_hold_off() {
    let t0 = Instant::now();
    let (mut fsm, held) = master(100, t0);
    fsm.resign(held, ms(1000));
    let (d, until) = drain(&mut fsm, held);
    assert_eq!(
        d,
        vec![
            Decision::StepDown(StepDownReason::Resigned),
            Decision::Send { priority: 0 }
        ]
    );
    assert_eq!(until, Some(held + ms(1000)));
    assert_eq!(fsm.phase(), Phase::Fault);
    let (d, until) = drain(&mut fsm, held + ms(1000));
    assert!(d.is_empty());
    assert_eq!(fsm.phase(), Phase::Backup);
    assert_eq!(until, Some(held + ms(1000) + fsm.master_down_interval()));
}

#[test]
fn adverts_are_ignored_while_the_link_is_down() {
    let t0 = Instant::now();
    let mut fsm = started(100, t0);
    fsm.link_down(t0);
    fsm.advert(t0, ip("192.0.2.12"), 0, ADV);
    assert_eq!(fsm.poll(t0 + ms(5000)), Decision::Wait(None));
    assert_eq!(fsm.phase(), Phase::Fault);
}
