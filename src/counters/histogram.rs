//! Latency histograms: a lock-free single-writer recorder for the hot path, and the merged
//! summary (percentiles via `hdrhistogram`, Prometheus buckets) the control plane reports.
//!
//! The recorder is a fixed log-linear bucket array (the HDR layout: values below 128 µs are
//! exact, every power of two above is split into 64 buckets, so any value is within 1.6 %).
//! Each bucket is an `AtomicU64` that only its owning worker writes, with a plain load and
//! store (no locked instruction), so recording costs a few nanoseconds; the merger reads the
//! same atomics from another thread without stopping the worker. A `Mutex<hdrhistogram::Histogram>`
//! per recorder was measured against it (benches/stats_record.rs) and costs two locked
//! instructions per record.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Values below `1 << SUB_BITS` µs get a bucket each.
const SUB_BITS: u32 = 7;
const SUB_COUNT: usize = 1 << SUB_BITS;
const HALF: usize = SUB_COUNT / 2;
/// 2^36 µs ≈ 19 h; longer sessions are recorded as the largest bucket (their `max` stays exact).
const MAX_EXP: u32 = 36;
pub(crate) const BUCKETS: usize = SUB_COUNT + (MAX_EXP - SUB_BITS) as usize * HALF;

/// Upper bounds of the Prometheus histogram buckets, in microseconds: connect times on a LAN
/// sit in the first few, session durations reach the last.
pub const PROMETHEUS_BOUNDS_US: [u64; 21] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    900_000_000,
    3_600_000_000,
];

/// Add to a counter that only the calling thread ever writes. A load and a store instead of a
/// `fetch_add`: no bus lock, and correct because there is exactly one writer.
#[inline(always)]
pub(crate) fn bump(cell: &AtomicU64, n: u64) {
    cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
}

#[inline(always)]
fn bucket_index(micros: u64) -> usize {
    if micros < SUB_COUNT as u64 {
        return micros as usize;
    }
    let micros = micros.min((1u64 << MAX_EXP) - 1);
    let exp = 63 - micros.leading_zeros();
    let shift = exp - (SUB_BITS - 1);
    let sub = (micros >> shift) as usize;
    SUB_COUNT + (exp - SUB_BITS) as usize * HALF + (sub - HALF)
}

/// The values `[low, low + width)` that land in bucket `index`.
const fn bucket_range(index: usize) -> (u64, u64) {
    if index < SUB_COUNT {
        return (index as u64, 1);
    }
    let offset = index - SUB_COUNT;
    let exp = SUB_BITS + (offset / HALF) as u32;
    let sub = (HALF + offset % HALF) as u64;
    let shift = exp - (SUB_BITS - 1);
    (sub << shift, 1u64 << shift)
}

/// For each bucket, the first Prometheus bound ≥ its lowest value. Bounds are at least 2×
/// apart and buckets at most 1.6 % wide, so a bucket holds at most one bound and one compare
/// finishes the lookup (a table lookup instead of a binary search on the hot path).
const PROMETHEUS_INDEX: [u8; BUCKETS] = {
    let mut table = [0u8; BUCKETS];
    let mut index = 0;
    while index < BUCKETS {
        let (low, _) = bucket_range(index);
        let mut bound = 0;
        while bound < PROMETHEUS_BOUNDS_US.len() && PROMETHEUS_BOUNDS_US[bound] < low {
            bound += 1;
        }
        table[index] = bound as u8;
        index += 1;
    }
    table
};

/// The slot in `Recorder::prometheus` for a value in bucket `index`: the first bound ≥ the
/// value, or one past the last bound.
#[inline(always)]
fn prometheus_slot(index: usize, micros: u64) -> usize {
    let slot = PROMETHEUS_INDEX[index] as usize;
    if slot < PROMETHEUS_BOUNDS_US.len() && micros > PROMETHEUS_BOUNDS_US[slot] {
        slot + 1
    } else {
        slot
    }
}

fn micros_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// One worker's recorder for one quantity. Written only by its owning worker.
pub(crate) struct Recorder {
    buckets: Box<[AtomicU64]>,
    /// Exact per-bound counts for Prometheus (not cumulative; the last slot is above all bounds).
    prometheus: [AtomicU64; PROMETHEUS_BOUNDS_US.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Recorder {
    pub(crate) fn new() -> Recorder {
        Recorder {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            prometheus: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }

    /// Single-writer: call only from the owning worker thread.
    #[inline(always)]
    pub(crate) fn record(&self, duration: Duration) {
        let micros = micros_of(duration);
        let index = bucket_index(micros);
        bump(&self.buckets[index], 1);
        bump(&self.prometheus[prometheus_slot(index, micros)], 1);
        bump(&self.count, 1);
        bump(&self.sum_us, micros);
        if micros > self.max_us.load(Relaxed) {
            self.max_us.store(micros, Relaxed);
        }
    }
}

/// Sums recorders from several workers; then summarises.
pub(crate) struct Merged {
    buckets: Vec<u64>,
    prometheus: [u64; PROMETHEUS_BOUNDS_US.len() + 1],
    count: u64,
    sum_us: u64,
    max_us: u64,
}

impl Merged {
    pub(crate) fn new() -> Merged {
        Merged {
            buckets: vec![0; BUCKETS],
            prometheus: [0; PROMETHEUS_BOUNDS_US.len() + 1],
            count: 0,
            sum_us: 0,
            max_us: 0,
        }
    }

    pub(crate) fn add(&mut self, recorder: &Recorder) {
        for (total, cell) in self.buckets.iter_mut().zip(recorder.buckets.iter()) {
            *total += cell.load(Relaxed);
        }
        for (total, cell) in self.prometheus.iter_mut().zip(recorder.prometheus.iter()) {
            *total += cell.load(Relaxed);
        }
        self.count += recorder.count.load(Relaxed);
        self.sum_us = self.sum_us.wrapping_add(recorder.sum_us.load(Relaxed));
        self.max_us = self.max_us.max(recorder.max_us.load(Relaxed));
    }

    /// Percentiles through `hdrhistogram` (each bucket recorded at its midpoint); Prometheus
    /// buckets from the exact per-bound counts.
    pub(crate) fn summary(&self) -> LatencySummary {
        let mut summary = LatencySummary {
            count: self.count,
            sum_us: self.sum_us,
            max_us: self.max_us,
            ..LatencySummary::default()
        };
        let mut running = 0u64;
        summary.buckets = PROMETHEUS_BOUNDS_US
            .iter()
            .zip(self.prometheus.iter())
            .map(|(&le_us, &n)| {
                running += n;
                Bucket {
                    le_us,
                    count: running,
                }
            })
            .collect();
        // 3 significant figures keep hdrhistogram finer than our buckets, so it adds no error.
        let hdr = hdrhistogram::Histogram::<u64>::new(3);
        let Ok(mut hdr) = hdr else {
            return summary;
        };
        let mut bucketed = 0u64;
        for (index, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            bucketed += n;
            let (low, width) = bucket_range(index);
            let mid = (low + width / 2).min(self.max_us.max(low));
            // Auto-resizing, so it grows instead of failing; clamp should it ever refuse.
            if hdr.record_n(mid, n).is_err() {
                hdr.saturating_record_n(mid, n);
            }
        }
        if bucketed == 0 {
            return summary;
        }
        summary.min_us = hdr.min();
        summary.p50_us = hdr.value_at_quantile(0.50).min(self.max_us);
        summary.p90_us = hdr.value_at_quantile(0.90).min(self.max_us);
        summary.p99_us = hdr.value_at_quantile(0.99).min(self.max_us);
        summary.p999_us = hdr.value_at_quantile(0.999).min(self.max_us);
        summary
    }
}

/// A merged latency distribution, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub sum_us: u64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// Exact (not bucketed).
    pub max_us: u64,
    /// Cumulative counts at [`PROMETHEUS_BOUNDS_US`]; `+Inf` is `count`.
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub le_us: u64,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_maps_into_a_bucket_that_contains_it() {
        let samples = (0..5_000u64)
            .chain((0..36).map(|e| 1u64 << e))
            .chain((1..36).map(|e| (1u64 << e) - 1))
            .chain([123_456, 9_999_999, (1 << 36) - 1]);
        for v in samples {
            let index = bucket_index(v);
            assert!(
                index < BUCKETS,
                "{v} µs mapped past the last bucket ({index})"
            );
            let (low, width) = bucket_range(index);
            assert!(
                low <= v && v < low + width,
                "{v} µs mapped to bucket {index} = [{low}, {})",
                low + width
            );
            assert!(
                width == 1 || (width as f64) / (low as f64) <= 1.0 / 64.0 + 1e-12,
                "bucket {index} is wider than 1/64 of its value"
            );
        }
    }

    #[test]
    fn prometheus_slot_agrees_with_a_search_over_the_bounds() {
        let bounds = PROMETHEUS_BOUNDS_US;
        let samples = (0..300_000u64)
            .step_by(7)
            .chain(bounds.iter().flat_map(|&b| [b - 1, b, b + 1]))
            .chain([u64::MAX, 1 << 36, (1 << 36) - 1, 4_000_000_000]);
        for micros in samples {
            let want = bounds.partition_point(|&le| le < micros);
            let got = prometheus_slot(bucket_index(micros), micros);
            assert_eq!(got, want, "{micros} µs went to slot {got}, not {want}");
        }
    }

    #[test]
    fn values_past_the_range_clamp_into_the_last_bucket() {
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn summary_reports_exact_count_sum_max_and_close_percentiles() {
        let recorder = Recorder::new();
        for ms in 1..=1000u64 {
            recorder.record(Duration::from_millis(ms));
        }
        let mut merged = Merged::new();
        merged.add(&recorder);
        let s = merged.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(s.sum_us, (1..=1000u64).sum::<u64>() * 1000);
        assert_eq!(s.max_us, 1_000_000);
        let near = |got: u64, want: u64| (got as f64 - want as f64).abs() / want as f64 <= 0.02;
        assert!(near(s.p50_us, 500_000), "p50 {} not ≈ 500 ms", s.p50_us);
        assert!(near(s.p90_us, 900_000), "p90 {} not ≈ 900 ms", s.p90_us);
        assert!(near(s.p99_us, 990_000), "p99 {} not ≈ 990 ms", s.p99_us);
        let le_100ms = s
            .buckets
            .iter()
            .find(|b| b.le_us == 100_000)
            .map(|b| b.count);
        assert_eq!(le_100ms, Some(100), "exactly 100 values are ≤ 100 ms");
        let le_1h = s.buckets.last().map(|b| b.count);
        assert_eq!(le_1h, Some(1000));
    }

    #[test]
    fn merging_two_recorders_adds_them() {
        let (a, b) = (Recorder::new(), Recorder::new());
        a.record(Duration::from_micros(10));
        b.record(Duration::from_micros(20));
        b.record(Duration::from_micros(30));
        let mut merged = Merged::new();
        merged.add(&a);
        merged.add(&b);
        let s = merged.summary();
        assert_eq!((s.count, s.sum_us, s.min_us, s.max_us), (3, 60, 10, 30));
    }
}
