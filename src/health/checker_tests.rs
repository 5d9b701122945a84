//! Deterministic tests of keepalived's counting: no sockets, no sleeps.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{HttpCheck, MiscCheck, TcpCheck, UrlCheck};
use crate::health::error::{IoFailure, ProbeError};

const LOOP: Duration = Duration::from_secs(10);
const RETRY_DELAY: Duration = Duration::from_secs(2);

fn addr() -> SocketAddr {
    "192.0.2.10:1936".parse().unwrap()
}

fn check(kind: CheckKind, retry: u32) -> Check {
    Check {
        kind,
        interval: LOOP,
        connect_timeout: Duration::from_secs(1),
        retry,
        delay_before_retry: RETRY_DELAY,
        warmup: Duration::ZERO,
        origin: "alive.yaml:23:13".into(),
    }
}

fn tcp(retry: u32) -> Check {
    check(
        CheckKind::Tcp(TcpCheck {
            connect: addr(),
            bind: None,
        }),
        retry,
    )
}

fn http(retry: u32, urls: usize) -> Check {
    let url = |i: usize| UrlCheck {
        path: format!("/u{i}"),
        status: vec![(200, 299)],
        digest: None,
        virtualhost: None,
    };
    check(
        CheckKind::Http(HttpCheck {
            connect: addr(),
            bind: None,
            urls: (0..urls).map(url).collect(),
            virtualhost: None,
            http_protocol: "1.0".into(),
        }),
        retry,
    )
}

fn misc(retry: u32) -> Check {
    check(
        CheckKind::Misc(MiscCheck {
            argv: vec!["/bin/check".into()],
            timeout: Duration::from_secs(5),
            dynamic: true,
            user: None,
        }),
        retry,
    )
}

fn refused() -> ProbeResult {
    ProbeResult::Fail(ProbeError::Connect(IoFailure {
        kind: io::ErrorKind::ConnectionRefused,
        message: "Connection refused".into(),
    }))
}

/// Drives a checker with a virtual clock: each probe takes no time and the next one runs
/// exactly when the machine asked.
struct Driver {
    state: CheckerState,
    now: Instant,
}

impl Driver {
    fn new(check: &Check, alpha: bool) -> Driver {
        Driver {
            state: CheckerState::new(check, alpha),
            now: Instant::now(),
        }
    }

    fn feed(&mut self, result: ProbeResult) -> (Step, Duration) {
        let step = self.state.on_result(self.now, self.now, &result);
        let delay = step.next_at - self.now;
        self.now = step.next_at;
        (step, delay)
    }

    fn pass(&mut self) -> (Step, Duration) {
        self.feed(ProbeResult::Pass)
    }

    fn fail(&mut self) -> (Step, Duration) {
        self.feed(refused())
    }
}

fn went(step: &Step) -> Option<bool> {
    step.transition.as_ref().map(|t| t.up)
}

#[test]
fn tcp_first_failure_at_start_takes_checker_down() {
    let mut d = Driver::new(&tcp(3), false);
    let (step, delay) = d.fail();
    assert_eq!(
        went(&step),
        Some(false),
        "one failure is enough before the first success"
    );
    assert_eq!(delay, LOOP);
    assert!(step.settled);
}

#[test]
fn tcp_goes_down_after_retry_plus_one_failures_spaced_by_delay_before_retry() {
    let mut d = Driver::new(&tcp(2), false);
    assert_eq!(
        went(&d.pass().0),
        None,
        "already up at start: no transition"
    );
    let (s1, d1) = d.fail();
    let (s2, d2) = d.fail();
    assert_eq!((went(&s1), d1, s1.settled), (None, RETRY_DELAY, false));
    assert_eq!((went(&s2), d2, s2.settled), (None, RETRY_DELAY, false));
    let (s3, d3) = d.fail();
    assert_eq!(
        went(&s3),
        Some(false),
        "third failure = retry+1 takes it down"
    );
    assert_eq!(d3, LOOP);
    let reason = &s3.transition.unwrap().reason;
    assert!(
        reason.contains("TCP_CHECK to 192.0.2.10:1936 (alive.yaml:23:13) failed after 2 retries")
            && reason.contains("Connection refused"),
        "reason names check, origin, retries and error: {reason}"
    );
}

#[test]
fn tcp_down_checker_is_not_retried_and_one_success_brings_it_back() {
    let mut d = Driver::new(&tcp(1), false);
    d.fail();
    let (step, delay) = d.fail();
    assert_eq!(
        (went(&step), delay),
        (None, LOOP),
        "down: plain delay_loop, no retries"
    );
    assert_eq!(went(&d.pass().0), Some(true));
}

#[test]
fn tcp_success_during_retries_resets_the_count() {
    let mut d = Driver::new(&tcp(1), false);
    d.pass();
    d.fail();
    d.pass();
    let (step, delay) = d.fail();
    assert_eq!(
        (went(&step), delay),
        (None, RETRY_DELAY),
        "count restarted after success"
    );
}

#[test]
fn alpha_starts_down_and_first_success_brings_it_up() {
    let mut d = Driver::new(&tcp(1), true);
    assert!(!d.state.is_up());
    let (step, _) = d.fail();
    assert_eq!(went(&step), None, "already down under alpha");
    assert_eq!(went(&d.pass().0), Some(true));
}

#[test]
fn not_run_probe_is_not_counted() {
    let mut d = Driver::new(&tcp(0), false);
    d.pass();
    let (step, delay) = d.feed(ProbeResult::NotRun("bind failed".into()));
    assert_eq!((went(&step), delay), (None, LOOP));
    assert!(d.state.is_up());
}

#[test]
fn http_checks_one_url_per_delay_loop_and_retries_the_failing_url() {
    let mut d = Driver::new(&http(1, 3), false);
    assert_eq!(d.state.current_url(), 0);
    assert_eq!(d.pass().1, LOOP);
    assert_eq!(d.state.current_url(), 1);
    d.pass();
    d.pass();
    assert_eq!(d.state.current_url(), 0, "wraps after the last url");
    d.pass();
    let (s, delay) = d.fail();
    assert_eq!((went(&s), delay, s.settled), (None, RETRY_DELAY, false));
    assert_eq!(d.state.current_url(), 1, "a retry checks the same url");
    let (s, _) = d.fail();
    assert_eq!(went(&s), Some(false));
}

#[test]
fn http_recovery_rechecks_failed_url_then_every_url() {
    let mut d = Driver::new(&http(0, 2), false);
    d.pass();
    let (s, _) = d.fail();
    assert_eq!(went(&s), Some(false), "url 1 failed with retry 0");
    let (s, delay) = d.fail();
    assert_eq!(
        (went(&s), delay),
        (None, LOOP),
        "down: max(delay_before_retry, delay_loop)"
    );
    assert_eq!(d.state.current_url(), 1);
    assert_eq!(
        went(&d.pass().0),
        None,
        "failed url passes: restart from the first url"
    );
    assert_eq!(d.state.current_url(), 0);
    assert_eq!(went(&d.pass().0), None);
    assert_eq!(went(&d.pass().0), Some(true), "up after a full clean pass");
}

#[test]
fn http_single_url_needs_two_successes_to_recover() {
    let mut d = Driver::new(&http(0, 1), false);
    d.fail();
    assert_eq!(
        went(&d.pass().0),
        None,
        "keepalived clears failed_url first"
    );
    assert_eq!(went(&d.pass().0), Some(true));
}

#[test]
fn http_first_failure_at_start_takes_it_down() {
    let mut d = Driver::new(&http(2, 1), false);
    let (s, _) = d.fail();
    assert_eq!(went(&s), Some(false));
    assert!(s.transition.unwrap().reason.contains("HTTP_GET"));
}

#[test]
fn misc_default_retry_zero_goes_down_on_first_failure() {
    let mut d = Driver::new(&misc(0), false);
    d.pass();
    let (s, _) = d.feed(ProbeResult::Fail(ProbeError::Exit(1)));
    assert_eq!(went(&s), Some(false));
    assert!(
        s.transition
            .unwrap()
            .reason
            .contains("exited with status 1")
    );
}

#[test]
fn misc_dynamic_sets_weight_offset_and_failure_clears_it() {
    let mut d = Driver::new(&misc(0), false);
    let (s, _) = d.feed(ProbeResult::PassWithWeight(10));
    assert!(s.dynamic_weight_changed);
    assert_eq!(d.state.dynamic_weight(), Some(10));
    let (s, _) = d.feed(ProbeResult::PassWithWeight(10));
    assert!(!s.dynamic_weight_changed, "same code: no change");
    let (s, _) = d.feed(ProbeResult::Pass);
    assert!(s.dynamic_weight_changed);
    assert_eq!(d.state.dynamic_weight(), None, "exit 0: configured weight");
    d.feed(ProbeResult::PassWithWeight(20));
    let (s, _) = d.feed(ProbeResult::Fail(ProbeError::Exit(1)));
    assert!(s.dynamic_weight_changed);
    assert_eq!(d.state.dynamic_weight(), None);
    assert_eq!(went(&s), Some(false));
}

#[test]
fn misc_interval_runs_from_the_start_of_the_previous_run() {
    let check = misc(1);
    let mut state = CheckerState::new(&check, false);
    let t0 = Instant::now();
    let step = state.on_result(t0, t0 + Duration::from_secs(3), &ProbeResult::Pass);
    assert_eq!(step.next_at, t0 + LOOP);
    let late = t0 + Duration::from_secs(30);
    let fail = ProbeResult::Fail(ProbeError::Timeout(Duration::from_secs(5)));
    let step = state.on_result(t0, late, &fail);
    assert_eq!(step.next_at, late, "overdue retry runs at once");
    assert!(!step.settled);
}

mod model {
    //! The keepalived rule stated plainly, checked against the machine for any sequence.
    use super::*;
    use proptest::prelude::*;

    fn results() -> impl Strategy<Value = Vec<bool>> {
        proptest::collection::vec(any::<bool>(), 1..60)
    }

    proptest! {
        #[test]
        fn tcp_and_misc_follow_the_retry_rule(retry in 0u32..4, seq in results(), misc_kind in any::<bool>()) {
            let check = if misc_kind { misc(retry) } else { tcp(retry) };
            let mut d = Driver::new(&check, false);
            // The plain rule: before the first result one failure takes it down; after that an
            // up checker goes down on the (retry+1)-th consecutive failure; any success is up.
            let mut up = true;
            let mut first = true;
            let mut streak = 0u32;
            for ok in seq {
                let (step, _) = if ok { d.pass() } else { d.fail() };
                let before = up;
                if ok {
                    up = true;
                    streak = 0;
                } else if up {
                    streak += 1;
                    if first || streak > retry {
                        up = false;
                        streak = 0;
                    }
                }
                first = false;
                prop_assert_eq!(d.state.is_up(), up);
                prop_assert_eq!(went(&step), (before != up).then_some(up));
            }
        }
    }
}
