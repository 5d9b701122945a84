//! The registry merges what simulated data-plane workers (one thread each) recorded: every
//! count in the snapshot is exact.

use std::net::SocketAddr;
use std::time::Duration;

use alive_proxy::config::BackendKey;
use alive_proxy::stats::{StatsRegistry, StatsSnapshot};

const WORKERS: usize = 4;
const CONNECTIONS_PER_WORKER: u64 = 10_000;

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address literal")
}

fn service_addr() -> SocketAddr {
    addr("192.0.2.1:80")
}

fn backends() -> [BackendKey; 3] {
    ["198.51.100.1:80", "198.51.100.2:80", "198.51.100.3:80"].map(|b| BackendKey {
        service: service_addr(),
        backend: addr(b),
    })
}

/// One worker's traffic: connection `i` goes to backend `i % 3`, sends `i % 100` bytes,
/// receives 1000; every 10th is retried after a failed connect on the previous backend; the
/// last 5 stay open; 7 are refused for the limit.
fn simulate_worker(registry: &StatsRegistry, worker_id: usize) {
    let worker = registry.worker(worker_id);
    let service = worker.service(service_addr());
    let handles = backends().map(|key| worker.backend(key));
    for i in 0..CONNECTIONS_PER_WORKER {
        service.accepted();
        let backend = &handles[(i % 3) as usize];
        if i % 10 == 0 {
            let failed = &handles[((i + 2) % 3) as usize];
            failed.connect_failed();
            failed.retried();
        }
        backend.connect_ok(Duration::from_micros(50 + i % 200));
        backend.session_opened();
        backend.first_byte(Duration::from_micros(300));
        backend.bytes_to_backend(i % 100);
        backend.bytes_to_client(1000);
        if i < CONNECTIONS_PER_WORKER - 5 {
            backend.session_closed(Duration::from_millis(20));
            service.session_closed(Duration::from_millis(21));
        }
    }
    for _ in 0..7 {
        service.accepted();
        service.refused_limit();
        service.session_closed(Duration::ZERO);
    }
}

fn simulate() -> StatsSnapshot {
    let registry = StatsRegistry::new();
    std::thread::scope(|scope| {
        for id in 0..WORKERS {
            let registry = &registry;
            scope.spawn(move || simulate_worker(registry, id));
        }
    });
    registry.snapshot()
}

#[test]
fn snapshot_counts_exactly_what_simulated_workers_recorded() {
    let snapshot = simulate();
    let workers = WORKERS as u64;
    assert_eq!(snapshot.workers, WORKERS, "one shard per worker");
    assert_eq!(snapshot.services.len(), 1, "one service recorded");
    let service = &snapshot.services[0];
    assert_eq!(service.addr(), service_addr());
    assert_eq!(service.accepted, workers * (CONNECTIONS_PER_WORKER + 7));
    assert_eq!(service.refused_limit, workers * 7);
    assert_eq!(
        service.active,
        workers * 5,
        "5 sessions per worker left open"
    );
    assert_eq!(service.session_duration.count, service.closed);
    assert_eq!(service.backends.len(), 3);

    for (index, backend) in service.backends.iter().enumerate() {
        let mine: Vec<u64> = (0..CONNECTIONS_PER_WORKER)
            .filter(|i| (i % 3) as usize == index)
            .collect();
        let failed_here = (0..CONNECTIONS_PER_WORKER)
            .filter(|i| i % 10 == 0 && ((i + 2) % 3) as usize == index)
            .count() as u64;
        let still_open = (CONNECTIONS_PER_WORKER - 5..CONNECTIONS_PER_WORKER)
            .filter(|i| (i % 3) as usize == index)
            .count() as u64;
        let what = format!("backend {}", backend.addr);
        assert_eq!(
            backend.connections,
            workers * mine.len() as u64,
            "{what}: connections"
        );
        assert_eq!(
            backend.connect_failures,
            workers * failed_here,
            "{what}: failures"
        );
        assert_eq!(backend.retries, workers * failed_here, "{what}: retries");
        assert_eq!(
            backend.bytes_to_backend,
            workers * mine.iter().map(|i| i % 100).sum::<u64>(),
            "{what}: bytes to backend"
        );
        assert_eq!(
            backend.bytes_to_client,
            workers * 1000 * mine.len() as u64,
            "{what}: bytes to client"
        );
        assert_eq!(backend.active, workers * still_open, "{what}: active");
        assert_eq!(
            backend.connect_time.count, backend.connections,
            "{what}: connect histogram"
        );
        assert_eq!(
            backend.first_byte.count, backend.connections,
            "{what}: ttfb histogram"
        );
        assert_eq!(
            backend.connect_time.sum_us,
            workers * mine.iter().map(|i| 50 + i % 200).sum::<u64>(),
            "{what}: connect time sum"
        );
        assert_eq!(backend.connect_time.min_us, 50, "{what}: fastest connect");
        assert_eq!(backend.connect_time.max_us, 249, "{what}: slowest connect");
        assert_eq!(
            backend.first_byte.p99_us, 300,
            "{what}: every ttfb was 300 µs"
        );
    }
}

#[test]
fn snapshot_survives_a_json_round_trip() {
    let snapshot = simulate();
    let json = serde_json::to_string(&snapshot).expect("snapshot serializes");
    let back: StatsSnapshot = serde_json::from_str(&json).expect("snapshot deserializes");
    assert_eq!(back, snapshot);
}

#[test]
fn a_restarted_worker_adds_to_the_totals() {
    let registry = StatsRegistry::new();
    for _ in 0..2 {
        let worker = registry.worker(0);
        worker.service(service_addr()).accepted();
    }
    let snapshot = registry.snapshot();
    assert_eq!(
        snapshot.services[0].accepted, 2,
        "both shards of worker 0 count"
    );
}
