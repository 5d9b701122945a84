//! The data plane's clock: milliseconds on a monotonic base, small enough for an atomic, so
//! per-backend deadlines (suspect marks) and session timers need no lock.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the first call: a cheap monotonic clock that fits in an atomic.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
