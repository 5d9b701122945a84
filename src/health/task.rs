//! One tokio task per checker: sleep until the state machine's next probe time (or until a
//! passive event pokes it), probe, feed the result in, report what changed to the actor.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{BackendKey, Check};
use crate::health::backend::CheckId;
use crate::health::checker::{CheckerState, ProbeResult};
use crate::health::probe::Probe;

/// Sent to the actor when a checker flips, its dynamic weight changes, or a passive re-probe
/// settles. Never for a plain "still the same" probe.
#[derive(Debug)]
pub struct Report {
    pub key: BackendKey,
    pub check: CheckId,
    pub up: bool,
    pub dynamic_weight: Option<u32>,
    /// The checker flipped (`reason` says why), as opposed to a weight change or a settle.
    pub flipped: bool,
    pub reason: String,
    /// This report ends a passive re-probe of this checker.
    pub passive_settled: bool,
}

pub struct CheckTask {
    pub key: BackendKey,
    pub id: CheckId,
    pub check: Check,
    pub state: CheckerState,
    /// Probe at once instead of after a random warmup (a checker added to a running backend
    /// by a reload).
    pub skip_warmup: bool,
    pub pokes: mpsc::Receiver<()>,
    pub reports: mpsc::UnboundedSender<Report>,
}

impl CheckTask {
    pub async fn run(mut self) {
        let probe = Probe::new(&self.check);
        let warmup = if self.skip_warmup {
            Duration::ZERO
        } else {
            warmup_delay(self.check.warmup)
        };
        let mut next_at = Instant::now() + warmup;
        let mut passive = false;
        loop {
            tokio::select! {
                biased;
                Some(()) = self.pokes.recv() => passive = true,
                () = tokio::time::sleep_until(next_at) => {}
            }
            let url = self.state.current_url();
            let started = Instant::now();
            let result = probe.run(url).await;
            let finished = Instant::now();
            if let ProbeResult::Fail(error) = &result {
                tracing::debug!(backend = %self.key.backend, check = self.state.label(), %error, "probe failed");
            } else if let ProbeResult::NotRun(why) = &result {
                tracing::warn!(backend = %self.key.backend, check = self.state.label(), why, "probe could not run; not counted");
            }
            let step = self
                .state
                .on_result(started.into_std(), finished.into_std(), &result);
            next_at = Instant::from_std(step.next_at);
            let passive_settled = passive && step.settled;
            if passive_settled {
                passive = false;
            }
            if step.transition.is_none() && !step.dynamic_weight_changed && !passive_settled {
                continue;
            }
            let (flipped, reason) = match step.transition {
                Some(transition) => (true, transition.reason),
                None if step.dynamic_weight_changed => (
                    false,
                    match self.state.dynamic_weight() {
                        Some(w) => format!("{} asks for weight {w}", self.state.label()),
                        None => format!("{} restores the configured weight", self.state.label()),
                    },
                ),
                None => (false, passive_reason(self.state.label(), &result)),
            };
            let report = Report {
                key: self.key,
                check: self.id,
                up: self.state.is_up(),
                dynamic_weight: self.state.dynamic_weight(),
                flipped,
                reason,
                passive_settled,
            };
            if self.reports.send(report).is_err() {
                return;
            }
        }
    }
}

fn passive_reason(label: &str, result: &ProbeResult) -> String {
    match result {
        ProbeResult::Fail(error) => format!("re-probe by {label}: {error}"),
        ProbeResult::NotRun(why) => format!("re-probe by {label} could not run: {why}"),
        _ => format!("re-probe by {label} succeeded"),
    }
}

/// keepalived's warmup: a random delay in [0, warmup] before the first probe, so checks of
/// many backends do not all fire at once.
fn warmup_delay(warmup: Duration) -> Duration {
    let millis = u64::try_from(warmup.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::random_range(0..=millis))
}
