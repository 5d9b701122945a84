//! What recording one connection's stats costs a data-plane worker: accepted, connect_ok,
//! session_opened, first_byte, bytes both ways, session_closed (backend and service).
//! Goal: under 100 ns. For comparison, the same events recorded the obvious other way:
//! `fetch_add` counters and a `Mutex<hdrhistogram::Histogram>` per quantity.
//!
//! Run: `cargo bench --bench stats_record -- --quick`

use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use alive_proxy::config::BackendKey;
use alive_proxy::stats::StatsRegistry;
use criterion::{Criterion, criterion_group, criterion_main};

/// Durations spread over many buckets, so the bench is not one hot cache line.
fn durations() -> Vec<(Duration, Duration, Duration)> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (
                Duration::from_micros(20 + x % 2_000),
                Duration::from_micros(100 + (x >> 16) % 50_000),
                Duration::from_micros(1_000 + (x >> 32) % 60_000_000),
            )
        })
        .collect()
}

fn record_connection(c: &mut Criterion) {
    let registry = StatsRegistry::new();
    let worker = registry.worker(0);
    let key = BackendKey {
        service: "192.0.2.1:80".parse().expect("literal"),
        backend: "198.51.100.7:80".parse().expect("literal"),
    };
    let service = worker.service(key.service);
    let backend = worker.backend(key);
    let samples = durations();
    let mut i = 0usize;
    c.bench_function("record_connection/single_writer_atomics", |b| {
        b.iter(|| {
            let (connect, ttfb, session) = samples[i & 4095];
            i = i.wrapping_add(1);
            service.accepted();
            backend.connect_ok(black_box(connect));
            backend.session_opened();
            backend.first_byte(black_box(ttfb));
            backend.bytes_to_backend(black_box(517));
            backend.bytes_to_client(black_box(16_384));
            backend.session_closed(black_box(session));
            service.session_closed(black_box(session));
        })
    });
    black_box(registry.snapshot());

    let counters: [AtomicU64; 8] = std::array::from_fn(|_| AtomicU64::new(0));
    let new_histogram = || {
        Mutex::new(
            hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1 << 36, 2).expect("valid bounds"),
        )
    };
    let histograms: [Mutex<hdrhistogram::Histogram<u64>>; 4] =
        std::array::from_fn(|_| new_histogram());
    let record = |h: &Mutex<hdrhistogram::Histogram<u64>>, d: Duration| {
        if let Ok(mut h) = h.lock() {
            h.saturating_record(d.as_micros() as u64);
        }
    };
    let mut j = 0usize;
    c.bench_function("record_connection/fetch_add_and_mutex_hdrhistogram", |b| {
        b.iter(|| {
            let (connect, ttfb, session) = samples[j & 4095];
            j = j.wrapping_add(1);
            counters[0].fetch_add(1, Relaxed);
            counters[1].fetch_add(1, Relaxed);
            record(&histograms[0], black_box(connect));
            counters[2].fetch_add(1, Relaxed);
            record(&histograms[1], black_box(ttfb));
            counters[3].fetch_add(black_box(517), Relaxed);
            counters[4].fetch_add(black_box(16_384), Relaxed);
            counters[5].fetch_add(1, Relaxed);
            record(&histograms[2], black_box(session));
            counters[6].fetch_add(1, Relaxed);
            record(&histograms[3], black_box(session));
        })
    });
}

criterion_group!(benches, record_connection);
criterion_main!(benches);
