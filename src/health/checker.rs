//! One checker's state machine, exactly as keepalived's checkers count: time and probe
//! results in, transitions and the next probe time out. No I/O, no clock of its own.
//!
//! The counting follows keepalived 2.x (`check_tcp.c` `tcp_epilog`, `check_http.c` `epilog` /
//! `timeout_epilog`, `check_misc.c` `misc_check_child_thread`, `check_data.c` start-up):
//! - a checker starts up, or down with `alpha`; at start-up `retry_it = retry`, so a single
//!   failure is enough to take a checker down before its first success;
//! - once up, it goes down after `retry + 1` consecutive failures, the retries spaced by
//!   `delay_before_retry`; one success brings it back (HTTP: see below);
//! - probes of a checker that is down are not retried, just repeated every `delay_loop`;
//! - a probe that cannot even start for a local reason (socket, bind) is not counted.
//!
//! HTTP_GET/SSL_GET check one url per probe, moving to the next url after each success, one
//! `delay_loop` apart. The checker comes up only after a full pass over all urls with no
//! failure; after going down it first re-checks the url that failed, then every url from
//! the first (keepalived's documented recovery; it has no `fast_recovery` here).
//!
//! MISC_CHECK measures `delay_loop` from the start of the previous run, and with
//! `misc_dynamic` an exit code 2..=255 sets the backend's weight to `code - 2`.

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::{Check, CheckKind};
use crate::health::error::ProbeError;

/// What one probe concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Pass,
    /// MISC_CHECK with `misc_dynamic` exited with 2..=255: passed, weight = code - 2.
    PassWithWeight(u32),
    Fail(ProbeError),
    /// The probe could not start for a local reason (e.g. `bindto` address missing);
    /// keepalived reschedules such a probe without counting it against the backend.
    NotRun(String),
}

/// The part of a step the backend cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub up: bool,
    /// Which check, where it is configured, what happened.
    pub reason: String,
}

/// The result of feeding one probe result into the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// When to probe next.
    pub next_at: Instant,
    /// Set when the checker flipped between up and down.
    pub transition: Option<Transition>,
    /// Set when this checker's misc_dynamic weight changed (see [`CheckerState::dynamic_weight`]).
    pub dynamic_weight_changed: bool,
    /// False while a retry is pending: the probe failed and the checker has not yet decided
    /// whether the backend is down. A passive re-probe is finished once a step settles.
    pub settled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Flavor {
    Tcp,
    Http {
        urls: usize,
        /// keepalived's `url_it`: the url the next probe checks.
        url_it: usize,
        /// keepalived's `failed_url`: set when the checker went down on this url.
        failed_url: Option<usize>,
    },
    Misc,
}

/// One checker of one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckerState {
    label: String,
    flavor: Flavor,
    interval: Duration,
    retry: u32,
    delay_before_retry: Duration,
    is_up: bool,
    has_run: bool,
    retry_it: u32,
    /// The weight a misc_dynamic exit code asked for (keepalived keeps it as `cur_weight`, an
    /// offset from the configured weight; the backend computes that offset).
    dynamic_weight: Option<u32>,
}

impl CheckerState {
    /// A checker as keepalived starts it: up, or down with `alpha`; one failure is enough
    /// until it has run.
    pub fn new(check: &Check, alpha: bool) -> CheckerState {
        let flavor = match &check.kind {
            CheckKind::Tcp(_) => Flavor::Tcp,
            CheckKind::Http(http) | CheckKind::Ssl(http) => Flavor::Http {
                urls: http.urls.len().max(1),
                url_it: 0,
                failed_url: None,
            },
            CheckKind::Misc(_) => Flavor::Misc,
        };
        CheckerState {
            label: label_of(check),
            flavor,
            interval: check.interval,
            retry: check.retry,
            delay_before_retry: check.delay_before_retry,
            is_up: !alpha,
            has_run: false,
            retry_it: check.retry,
            dynamic_weight: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.is_up
    }

    pub fn has_run(&self) -> bool {
        self.has_run
    }

    pub fn dynamic_weight(&self) -> Option<u32> {
        self.dynamic_weight
    }

    /// `CHECK_KIND origin connect-address`, for logs and reasons.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The url (index into the check's `urls`) the next HTTP/SSL probe must fetch.
    pub fn current_url(&self) -> usize {
        match self.flavor {
            Flavor::Http { url_it, .. } => url_it,
            _ => 0,
        }
    }

    /// Feeds one probe result; `started`/`finished` bracket the probe.
    pub fn on_result(&mut self, started: Instant, finished: Instant, result: &ProbeResult) -> Step {
        if let ProbeResult::NotRun(_) = result {
            return Step {
                next_at: finished + self.interval,
                transition: None,
                dynamic_weight_changed: false,
                settled: true,
            };
        }
        match self.flavor {
            Flavor::Tcp => self.tcp_step(finished, result),
            Flavor::Http {
                urls,
                url_it,
                failed_url,
            } => self.http_step(urls, url_it, failed_url, finished, result),
            Flavor::Misc => self.misc_step(started, finished, result),
        }
    }

    /// keepalived `tcp_epilog`.
    fn tcp_step(&mut self, finished: Instant, result: &ProbeResult) -> Step {
        let success = result_passed(result);
        let mut delay = self.interval;
        let mut transition = None;
        let mut settled = true;
        if success || ((self.is_up || !self.has_run) && self.retry_it >= self.retry) {
            let failed_after_retries = self.retry_it;
            self.retry_it = 0;
            if success && (!self.is_up || !self.has_run) {
                transition = self.set_up(true, self.success_reason());
            } else if !success && (self.is_up || !self.has_run) {
                let reason = self.failure_reason(result, failed_after_retries);
                transition = self.set_up(false, reason);
            }
        } else if self.is_up {
            delay = self.delay_before_retry;
            self.retry_it += 1;
            settled = false;
        }
        self.has_run = true;
        Step {
            next_at: finished + delay,
            transition,
            dynamic_weight_changed: false,
            settled,
        }
    }

    /// keepalived `http_handle_response` → `epilog` / `timeout_epilog`.
    fn http_step(
        &mut self,
        urls: usize,
        mut url_it: usize,
        mut failed_url: Option<usize>,
        finished: Instant,
        result: &ProbeResult,
    ) -> Step {
        #[derive(PartialEq)]
        enum Method {
            New,
            Retry,
            Failed,
        }
        let had_run = self.has_run;
        let method = if result_passed(result) {
            Method::New
        } else if self.is_up || !self.has_run {
            self.has_run = true;
            Method::Retry
        } else {
            Method::Failed
        };

        let mut wrapped = false;
        match method {
            Method::New => {
                url_it += 1;
                if url_it >= urls {
                    wrapped = true;
                    url_it = 0;
                }
                self.retry_it = 0;
            }
            Method::Retry => self.retry_it += 1,
            Method::Failed => {}
        }

        let mut transition = None;
        let mut settled = true;
        if method == Method::New && wrapped && failed_url.is_none() {
            if !self.is_up || !self.has_run {
                transition = self.set_up(true, self.success_reason());
                self.has_run = true;
            }
            url_it = 0;
            self.retry_it = 0;
        } else if method == Method::Retry && self.retry_it > self.retry {
            if self.is_up {
                let retries = if had_run { self.retry_it - 1 } else { 0 };
                let reason = self.failure_reason(result, retries);
                transition = self.set_up(false, reason);
            }
            failed_url = Some(url_it);
        } else if method == Method::New && failed_url.is_some() {
            failed_url = None;
            url_it = 0;
            self.retry_it = 0;
        } else if method == Method::Retry {
            settled = false;
        }

        let delay = if method == Method::New {
            if !self.has_run {
                self.retry_it = self.retry;
            }
            self.interval
        } else if failed_url.is_some() {
            self.delay_before_retry.max(self.interval)
        } else {
            self.delay_before_retry
        };
        self.flavor = Flavor::Http {
            urls,
            url_it,
            failed_url,
        };
        Step {
            next_at: finished + delay,
            transition,
            dynamic_weight_changed: false,
            settled,
        }
    }

    /// keepalived `misc_check_child_thread`.
    fn misc_step(&mut self, started: Instant, finished: Instant, result: &ProbeResult) -> Step {
        let mut transition = None;
        let mut dynamic_weight_changed = false;
        let mut settled = true;
        match result {
            ProbeResult::Pass | ProbeResult::PassWithWeight(_) => {
                let weight = match result {
                    ProbeResult::PassWithWeight(weight) => Some(*weight),
                    _ => None,
                };
                if weight != self.dynamic_weight {
                    self.dynamic_weight = weight;
                    dynamic_weight_changed = true;
                }
                if !self.is_up || !self.has_run {
                    transition = self.set_up(true, self.success_reason());
                }
                self.retry_it = 0;
            }
            _ if self.is_up || !self.has_run => {
                if self.retry_it < self.retry {
                    self.retry_it += 1;
                    settled = false;
                } else {
                    self.retry_it = 0;
                    if self.dynamic_weight.take().is_some() {
                        dynamic_weight_changed = true;
                    }
                    let reason = self.failure_reason(result, self.retry);
                    transition = self.set_up(false, reason);
                }
            }
            _ => {}
        }
        self.has_run = true;
        let delay = if self.retry_it > 0 {
            self.delay_before_retry
        } else {
            self.interval
        };
        Step {
            next_at: (started + delay).max(finished),
            transition,
            dynamic_weight_changed,
            settled,
        }
    }

    fn set_up(&mut self, up: bool, reason: String) -> Option<Transition> {
        if self.is_up == up {
            return None;
        }
        self.is_up = up;
        Some(Transition { up, reason })
    }

    fn success_reason(&self) -> String {
        format!("{} succeeded", self.label)
    }

    fn failure_reason(&self, result: &ProbeResult, retries: u32) -> String {
        let error = match result {
            ProbeResult::Fail(error) => error.to_string(),
            other => format!("{other:?}"),
        };
        if self.has_run && retries > 0 {
            let plural = if retries == 1 { "retry" } else { "retries" };
            format!("{} failed after {retries} {plural}: {error}", self.label)
        } else {
            format!("{} failed: {error}", self.label)
        }
    }
}

fn result_passed(result: &ProbeResult) -> bool {
    matches!(result, ProbeResult::Pass | ProbeResult::PassWithWeight(_))
}

/// `TCP_CHECK alive.yaml:23:13 → 192.0.2.10:1936`.
pub fn label_of(check: &Check) -> String {
    struct Target<'a>(&'a CheckKind);
    impl fmt::Display for Target<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self.0 {
                CheckKind::Tcp(tcp) => write!(f, "TCP_CHECK to {}", tcp.connect),
                CheckKind::Http(http) => write!(f, "HTTP_GET to {}", http.connect),
                CheckKind::Ssl(http) => write!(f, "SSL_GET to {}", http.connect),
                CheckKind::Misc(misc) => {
                    write!(f, "MISC_CHECK {}", misc.argv.first().map_or("", |s| s))
                }
            }
        }
    }
    if check.origin.is_empty() {
        Target(&check.kind).to_string()
    } else {
        format!("{} ({})", Target(&check.kind), check.origin)
    }
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
