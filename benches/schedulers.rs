//! `SchedulerState::pick` per algorithm with 3 and 100 backends (one thread; the shared
//! atomics are uncontended here, so this is the per-connection cost floor).

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use alive_proxy::config::plan::{
    Backend, OnBackendDown, Persistence, ProxyProtocol, Scheduler, Service,
};
use alive_proxy::dataplane::scheduler::{Candidates, SchedulerState};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

struct Pool {
    weights: Vec<u32>,
    active: Vec<u32>,
    addrs: Vec<SocketAddr>,
}

impl Candidates for Pool {
    fn len(&self) -> usize {
        self.weights.len()
    }
    fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }
    fn active(&self, i: usize) -> u32 {
        self.active[i]
    }
    fn available(&self, i: usize) -> bool {
        self.weights[i] > 0
    }
    fn addr(&self, i: usize) -> Option<SocketAddr> {
        Some(self.addrs[i])
    }
}

fn pool(n: usize) -> Pool {
    Pool {
        weights: (0..n).map(|i| 1 + (i % 4) as u32).collect(),
        active: (0..n).map(|i| (i * 7 % 13) as u32).collect(),
        addrs: (0..n)
            .map(|i| {
                SocketAddr::new(
                    IpAddr::from([198, 51, 100, (i % 250) as u8 + 1]),
                    8000 + i as u16,
                )
            })
            .collect(),
    }
}

fn service(scheduler: Scheduler, pool: &Pool, persistence: Option<Persistence>) -> Service {
    Service {
        vip: IpAddr::from([203, 0, 113, 1]),
        port: 80,
        scheduler,
        persistence,
        quorum: 1,
        hysteresis: 0,
        sorry_server: None,
        backends: pool
            .addrs
            .iter()
            .zip(&pool.weights)
            .map(|(&addr, &weight)| Backend {
                addr,
                weight,
                inhibit_on_failure: false,
                upper_threshold: 0,
                lower_threshold: 0,
                alpha: false,
                checks: Vec::new(),
            })
            .collect(),
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(900),
        client_fin_timeout: Duration::from_secs(120),
        server_fin_timeout: Duration::from_secs(120),
        proxy_protocol: ProxyProtocol::Off,
        transparent: false,
        max_connections: 0,
        on_backend_down: OnBackendDown::Close,
        connect_attempts: 3,
    }
}

fn clients() -> Vec<IpAddr> {
    (0..1024u32)
        .map(|k| {
            IpAddr::from((0xC612_0000u32 + k.wrapping_mul(2_654_435_761) % 0x1_FFFF).to_be_bytes())
        })
        .collect()
}

fn bench_pick(c: &mut Criterion) {
    let clients = clients();
    let now = Instant::now();
    for n in [3usize, 100] {
        let mut group = c.benchmark_group(format!("pick/{n}-backends"));
        let backends = pool(n);
        let mut cases: Vec<(String, SchedulerState)> = Scheduler::ALL
            .iter()
            .map(|&s| {
                (
                    s.name().to_string(),
                    SchedulerState::new(&service(s, &backends, None)),
                )
            })
            .collect();
        let sticky = Persistence {
            timeout: Duration::from_secs(300),
            granularity_prefix: 32,
        };
        cases.push((
            "rr+persistence".to_string(),
            SchedulerState::new(&service(Scheduler::Rr, &backends, Some(sticky))),
        ));
        for (name, state) in &cases {
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                let mut k = 0usize;
                b.iter(|| {
                    k = (k + 1) & 1023;
                    black_box(state.pick(&backends, clients[k], now))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
