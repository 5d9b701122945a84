//! Deterministic tests of the ownership state machine, driven by hand.

use std::time::{Duration, Instant};

use super::*;
use crate::ha::lease::HandoverNote;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn timing() -> Timing {
    Timing::from_checks(ms(1000), ms(3000))
}

fn record(holder: Option<&str>, version: &str) -> LeaseRecord {
    LeaseRecord {
        holder: holder.map(str::to_owned),
        version: version.to_owned(),
        duration: ms(2000),
        transitions: 0,
        handover: None,
    }
}

/// A host that has just read `rec` at `t0`.
fn standby_after_read(rec: Option<LeaseRecord>, t0: Instant) -> Ownership {
    let mut o = Ownership::new("me".into(), timing(), t0);
    assert!(matches!(o.poll(t0), Decision::Get { .. }));
    o.complete(t0, Outcome::Read(rec));
    o
}

/// A host holding the lease since `t0` (record version "1").
fn holder_at(t0: Instant) -> Ownership {
    let mut o = standby_after_read(None, t0);
    assert!(matches!(o.poll(t0), Decision::Create { .. }));
    o.complete(t0, Outcome::Wrote(record(Some("me"), "1")));
    assert_eq!(o.poll(t0), Decision::TakeOver { forward: None });
    o
}

#[test]
fn absent_record_is_created_then_vip_taken_over() {
    let t0 = Instant::now();
    let o = holder_at(t0);
    assert_eq!(o.role(), Role::Holder);
}

#[test]
fn standby_waits_full_lease_duration_of_unchanged_record_before_acquiring() {
    let t0 = Instant::now();
    let mut o = standby_after_read(Some(record(Some("rival"), "7")), t0);
    let mut now = t0;
    while now < t0 + ms(2000) {
        match o.poll(now) {
            Decision::Wait(until) => now = until,
            Decision::Get { .. } => {
                o.complete(now, Outcome::Read(Some(record(Some("rival"), "7"))))
            }
            other => panic!(
                "acquired or acted at {:?} before expiry: {other:?}",
                now - t0
            ),
        }
    }
    match o.poll(t0 + ms(2000)) {
        Decision::Update {
            purpose: Purpose::Acquire,
            prev,
            ..
        } => assert_eq!(prev.version, "7"),
        other => panic!("expected acquire at expiry, got {other:?}"),
    }
}

#[test]
fn new_version_restarts_the_expiry_clock() {
    let t0 = Instant::now();
    let mut o = standby_after_read(Some(record(Some("rival"), "7")), t0);
    let t1 = t0 + ms(1500);
    assert!(matches!(o.poll(t1), Decision::Get { .. }));
    o.complete(t1, Outcome::Read(Some(record(Some("rival"), "8"))));
    // Old version would have expired at t0+2s; the new one only at t1+2s.
    match o.poll(t0 + ms(2100)) {
        Decision::Get { .. } | Decision::Wait(_) => {}
        other => panic!("acquired on a renewed record: {other:?}"),
    }
}

#[test]
fn longer_duration_in_record_is_honoured() {
    let t0 = Instant::now();
    let mut long = record(Some("rival"), "7");
    long.duration = ms(10_000);
    let mut o = standby_after_read(Some(long.clone()), t0);
    let t1 = t0 + ms(5000);
    assert!(matches!(o.poll(t1), Decision::Get { .. }));
    o.complete(t1, Outcome::Read(Some(long)));
    assert!(
        matches!(o.poll(t1), Decision::Wait(_)),
        "acquired before the holder's own 10 s duration"
    );
}

#[test]
fn released_record_is_acquired_at_once() {
    let t0 = Instant::now();
    let mut o = standby_after_read(Some(record(None, "9")), t0);
    match o.poll(t0) {
        Decision::Update {
            purpose: Purpose::Acquire,
            holder,
            ..
        } => assert_eq!(holder.as_deref(), Some("me")),
        other => panic!("expected acquire of released record, got {other:?}"),
    }
}

#[test]
fn own_stale_record_is_reacquired_at_once() {
    let t0 = Instant::now();
    let mut o = standby_after_read(Some(record(Some("me"), "9")), t0);
    assert!(matches!(
        o.poll(t0),
        Decision::Update {
            purpose: Purpose::Acquire,
            ..
        }
    ));
}

#[test]
fn holder_renews_every_renew_period() {
    let t0 = Instant::now();
    let mut o = holder_at(t0);
    assert_eq!(o.poll(t0), Decision::Wait(t0 + ms(500)));
    match o.poll(t0 + ms(500)) {
        Decision::Update {
            purpose: Purpose::Renew,
            prev,
            deadline,
            ..
        } => {
            assert_eq!(prev.version, "1");
            assert_eq!(
                deadline,
                t0 + ms(1500),
                "renew bounded by the renew deadline"
            );
        }
        other => panic!("expected renew, got {other:?}"),
    }
    o.complete(t0 + ms(510), Outcome::Wrote(record(Some("me"), "2")));
    assert_eq!(o.poll(t0 + ms(510)), Decision::Wait(t0 + ms(1000)));
}

#[test]
fn holder_that_cannot_renew_steps_down_exactly_at_renew_deadline() {
    let t0 = Instant::now();
    let mut o = holder_at(t0);
    let mut now = t0;
    loop {
        match o.poll(now) {
            Decision::Wait(until) => now = until,
            Decision::Update { .. } => o.complete(now, Outcome::Failed),
            Decision::StepDown(reason) => {
                assert_eq!(reason, StepDownReason::DeadlineMissed);
                assert_eq!(now, t0 + ms(1500), "stepped down at the wrong time");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            now <= t0 + ms(1500),
            "still holding after the renew deadline"
        );
    }
    assert!(t0 + timing().renew_deadline < t0 + timing().lease_duration);
}

#[test]
fn renew_conflict_with_own_record_keeps_holding() {
    let t0 = Instant::now();
    let mut o = holder_at(t0);
    let t1 = t0 + ms(500);
    assert!(matches!(o.poll(t1), Decision::Update { .. }));
    o.complete(t1, Outcome::Conflict);
    assert!(matches!(o.poll(t1), Decision::Get { .. }));
    o.complete(t1, Outcome::Read(Some(record(Some("me"), "3"))));
    match o.poll(t1) {
        Decision::Update {
            purpose: Purpose::Renew,
            prev,
            ..
        } => assert_eq!(prev.version, "3"),
        other => panic!("expected renew from the re-read record, got {other:?}"),
    }
    assert_eq!(o.role(), Role::Holder);
}

#[test]
fn renew_conflict_with_rival_record_steps_down() {
    let t0 = Instant::now();
    let mut o = holder_at(t0);
    let t1 = t0 + ms(500);
    assert!(matches!(o.poll(t1), Decision::Update { .. }));
    o.complete(t1, Outcome::Conflict);
    assert!(matches!(o.poll(t1), Decision::Get { .. }));
    o.complete(t1, Outcome::Read(Some(record(Some("rival"), "3"))));
    assert_eq!(o.poll(t1), Decision::StepDown(StepDownReason::Lost));
    assert_eq!(o.role(), Role::Standby);
}

#[test]
fn stop_while_holding_removes_vip_before_releasing() {
    let t0 = Instant::now();
    let mut o = holder_at(t0);
    o.stop(t0);
    assert_eq!(o.poll(t0), Decision::StepDown(StepDownReason::Shutdown));
    o.vip_removed(t0, true);
    match o.poll(t0) {
        Decision::Update {
            purpose: Purpose::Release,
            holder,
            ..
        } => assert_eq!(holder, None),
        other => panic!("expected release after step-down, got {other:?}"),
    }
    o.complete(t0, Outcome::Wrote(record(None, "2")));
    assert_eq!(o.poll(t0), Decision::Stopped);
}

#[test]
fn stop_while_standby_stops_at_once() {
    let t0 = Instant::now();
    let mut o = standby_after_read(Some(record(Some("rival"), "1")), t0);
    o.stop(t0);
    assert_eq!(o.poll(t0), Decision::Stopped);
}

#[test]
fn stop_during_acquire_gives_lease_back_without_taking_vip() {
    let t0 = Instant::now();
    let mut o = standby_after_read(None, t0);
    assert!(matches!(o.poll(t0), Decision::Create { .. }));
    o.stop(t0);
    o.complete(t0, Outcome::Wrote(record(Some("me"), "1")));
    assert!(matches!(
        o.poll(t0),
        Decision::Update {
            purpose: Purpose::Release,
            ..
        }
    ));
}

#[test]
fn acquire_answer_after_deadline_does_not_take_over() {
    let t0 = Instant::now();
    let mut o = standby_after_read(None, t0);
    assert!(matches!(o.poll(t0), Decision::Create { .. }));
    let late = t0 + timing().renew_deadline;
    o.complete(late, Outcome::Wrote(record(Some("me"), "1")));
    assert_ne!(o.poll(late), Decision::TakeOver { forward: None });
    assert_eq!(o.role(), Role::Standby);
}

#[test]
fn resigning_holder_steps_down_releases_and_stays_out_during_hold_off() {
    let t0 = Instant::now();
    let mut o = holder_at(t0);
    o.resign(t0, ms(4000));
    assert_eq!(o.poll(t0), Decision::StepDown(StepDownReason::Resigned));
    o.vip_removed(t0, true);
    match o.poll(t0) {
        Decision::Update {
            purpose: Purpose::Release,
            holder,
            ..
        } => assert_eq!(holder, None),
        other => panic!("expected release, got {other:?}"),
    }
    o.complete(t0, Outcome::Wrote(record(None, "2")));
    assert_eq!(o.role(), Role::Standby);
    let mut now = t0;
    while now < t0 + ms(4000) {
        match o.poll(now) {
            Decision::Get { .. } => o.complete(now, Outcome::Read(Some(record(None, "2")))),
            Decision::Wait(until) => {
                assert!(until > now, "busy loop at {:?}", now - t0);
                now = until;
            }
            other => panic!("acted during the hold-off at {:?}: {other:?}", now - t0),
        }
    }
    let mut acquired = false;
    for _ in 0..4 {
        match o.poll(now) {
            Decision::Get { .. } => o.complete(now, Outcome::Read(Some(record(None, "2")))),
            Decision::Update {
                purpose: Purpose::Acquire,
                ..
            } => {
                acquired = true;
                break;
            }
            Decision::Wait(until) => now = until,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(acquired, "did not take the free lease after the hold-off");
}

#[test]
fn failed_vip_removal_on_stop_keeps_renewing_and_never_releases_until_confirmed() {
    let t0 = Instant::now();
    let mut o = holder_at(t0);
    o.stop(t0);
    assert_eq!(o.poll(t0), Decision::StepDown(StepDownReason::Shutdown));
    o.vip_removed(t0, false);
    assert!(o.removal_pending(), "a failed removal must show");
    let mut now = t0;
    let mut renewals = 0;
    let mut retries = 0;
    let mut version = 1;
    while now < t0 + ms(3000) {
        match o.poll(now) {
            Decision::Wait(until) => now = until,
            Decision::StepDown(StepDownReason::Shutdown) => {
                retries += 1;
                o.vip_removed(now, false);
            }
            Decision::Update {
                purpose: Purpose::Renew,
                ..
            } => {
                renewals += 1;
                version += 1;
                o.complete(
                    now,
                    Outcome::Wrote(record(Some("me"), &version.to_string())),
                );
            }
            other => panic!(
                "released or stopped while the VIP may still be here at {:?}: {other:?}",
                now - t0
            ),
        }
    }
    assert!(renewals >= 5, "kept the lease with {renewals} renewals");
    assert!(retries >= 20, "retried the removal only {retries} times");
    // Once the removal works, the release follows.
    loop {
        match o.poll(now) {
            Decision::Wait(until) => now = until,
            Decision::StepDown(_) => o.vip_removed(now, true),
            Decision::Update {
                purpose: Purpose::Renew,
                ..
            } => o.complete(now, Outcome::Failed),
            Decision::Update {
                purpose: Purpose::Release,
                ..
            } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(!o.removal_pending());
}

#[test]
fn lost_lease_keeps_retrying_a_failed_removal() {
    let t0 = Instant::now();
    let mut o = holder_at(t0);
    let t1 = t0 + ms(500);
    assert!(matches!(o.poll(t1), Decision::Update { .. }));
    o.complete(t1, Outcome::Conflict);
    assert!(matches!(o.poll(t1), Decision::Get { .. }));
    o.complete(t1, Outcome::Read(Some(record(Some("rival"), "3"))));
    assert_eq!(o.poll(t1), Decision::StepDown(StepDownReason::Lost));
    o.vip_removed(t1, false);
    let mut now = t1;
    let mut retried = false;
    for _ in 0..20 {
        match o.poll(now) {
            Decision::Wait(until) => now = until,
            Decision::StepDown(StepDownReason::Lost) => {
                retried = true;
                break;
            }
            Decision::Get { .. } => {
                o.complete(now, Outcome::Read(Some(record(Some("rival"), "3"))))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(retried, "the failed removal was not retried");
    assert!(now <= t1 + REMOVE_RETRY, "retried late: {:?}", now - t1);
}

#[test]
fn planned_stop_writes_the_handover_note_with_the_release() {
    let t0 = Instant::now();
    let mut o = holder_at(t0);
    let note = HandoverNote {
        vip: "192.0.2.100".parse().expect("vip"),
        address: "192.0.2.11".parse().expect("address"),
        drain: ms(30_000),
    };
    o.stop_with(t0, Some(note));
    assert_eq!(o.poll(t0), Decision::StepDown(StepDownReason::Shutdown));
    o.vip_removed(t0, true);
    match o.poll(t0) {
        Decision::Update {
            purpose: Purpose::Release,
            handover,
            ..
        } => assert_eq!(handover, Some(note)),
        other => panic!("expected the release with the note, got {other:?}"),
    }
}

#[test]
fn next_holder_forwards_for_the_drain_left_since_it_first_saw_the_note() {
    let t0 = Instant::now();
    let note = HandoverNote {
        vip: "192.0.2.100".parse().expect("vip"),
        address: "192.0.2.11".parse().expect("address"),
        drain: ms(30_000),
    };
    let released = LeaseRecord {
        handover: Some(note),
        ..record(None, "9")
    };
    let mut o = standby_after_read(Some(released.clone()), t0);
    let t1 = t0 + ms(100);
    assert!(matches!(
        o.poll(t1),
        Decision::Update {
            purpose: Purpose::Acquire,
            ..
        }
    ));
    o.complete(t1, Outcome::Wrote(record(Some("me"), "10")));
    assert_eq!(
        o.poll(t1),
        Decision::TakeOver {
            forward: Some(Forward {
                vip: note.vip,
                address: note.address,
                until: t0 + ms(30_000),
            })
        }
    );
}

#[test]
fn a_longer_timing_on_reload_never_stretches_the_deadline_of_a_write_made_before() {
    let t0 = Instant::now();
    let mut o = holder_at(t0);
    o.set_timing(Timing::from_checks(ms(2000), ms(10_000)));
    let mut now = t0;
    loop {
        match o.poll(now) {
            Decision::Wait(until) => now = until,
            Decision::Update { .. } => o.complete(now, Outcome::Failed),
            Decision::StepDown(reason) => {
                assert_eq!(reason, StepDownReason::DeadlineMissed);
                assert_eq!(now, t0 + ms(1500), "the old write's deadline must hold");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Drives a holder whose store calls all fail until `until`, returning when it steps down.
fn run_failing_holder(o: &mut Ownership, t0: Instant, until: Instant) -> Option<Instant> {
    let mut now = t0;
    for _ in 0..10_000 {
        if now >= until {
            return None;
        }
        match o.poll(now) {
            Decision::Wait(at) => now = at.min(until).max(now + ms(1)),
            Decision::Get { .. } | Decision::Update { .. } => o.complete(now, Outcome::Failed),
            Decision::StepDown(StepDownReason::DeadlineMissed) => return Some(now),
            other => panic!("unexpected {other:?} at {:?}", now - t0),
        }
    }
    panic!("no decision loop should run this long");
}

#[test]
fn failsafe_confirmations_extend_the_hold_by_the_renew_deadline_from_their_send_time() {
    let t0 = Instant::now();
    let mut o = holder_at(t0);
    // Without confirmations: the VIP goes at the renew deadline (1.5 s).
    let mut plain = holder_at(t0);
    assert_eq!(
        run_failing_holder(&mut plain, t0, t0 + ms(10_000)),
        Some(t0 + ms(1500))
    );
    // A round sent at 1.2 s that every peer vouched for: held until 2.7 s, not longer.
    o.set_failsafe(Some(t0 + ms(1200)));
    assert_eq!(run_failing_holder(&mut o, t0, t0 + ms(2000)), None);
    assert!(o.held_by_failsafe(t0 + ms(2000)));
    assert_eq!(o.role(), Role::Holder);
    assert_eq!(
        run_failing_holder(&mut o, t0 + ms(2000), t0 + ms(10_000)),
        Some(t0 + ms(2700))
    );
}

#[test]
fn an_ended_failsafe_drops_the_vip_at_once_when_the_lease_deadline_has_passed() {
    let t0 = Instant::now();
    let mut o = holder_at(t0);
    o.set_failsafe(Some(t0 + ms(1400)));
    assert_eq!(run_failing_holder(&mut o, t0, t0 + ms(2000)), None);
    o.set_failsafe(None);
    assert_eq!(
        o.poll(t0 + ms(2000)),
        Decision::StepDown(StepDownReason::DeadlineMissed)
    );
}

#[test]
fn a_standby_that_vouched_waits_a_whole_lease_from_its_next_read() {
    let t0 = Instant::now();
    let rival = record(Some("rival"), "7");
    let mut o = standby_after_read(Some(rival.clone()), t0);
    // Vouched at 1.5 s; the lock answers again at 1.9 s with the same version.
    o.forget_observed();
    assert!(!o.may_hold());
    let t1 = t0 + ms(1900);
    assert!(matches!(o.poll(t1), Decision::Get { .. }));
    o.complete(t1, Outcome::Read(Some(rival.clone())));
    // Without the vouch it would have expired at 2.0 s; now at 3.9 s.
    let mut now = t1;
    while now < t1 + ms(2000) {
        match o.poll(now) {
            Decision::Wait(at) => now = at,
            Decision::Get { .. } => o.complete(now, Outcome::Read(Some(rival.clone()))),
            other => panic!(
                "acted at {:?} before a lease from its read: {other:?}",
                now - t0
            ),
        }
    }
    assert!(matches!(
        o.poll(t1 + ms(2000)),
        Decision::Update {
            purpose: Purpose::Acquire,
            ..
        }
    ));
}

#[test]
fn a_holder_never_forgets_its_lease_when_asked_to_vouch() {
    let t0 = Instant::now();
    let mut o = holder_at(t0);
    assert!(o.may_hold());
    o.forget_observed();
    assert_eq!(o.role(), Role::Holder);
    assert_eq!(o.observed_holder(), Some("me"));
}
