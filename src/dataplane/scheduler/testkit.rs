//! Test doubles: a candidate list with settable weights, loads and availability, and a
//! `Service` builder.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::Candidates;
use crate::config::plan::{Backend, OnBackendDown, Persistence, ProxyProtocol, Scheduler, Service};

#[derive(Debug, Clone)]
pub(crate) struct Fake {
    pub weights: Vec<u32>,
    pub active: Vec<u32>,
    pub up: Vec<bool>,
    pub addrs: Vec<SocketAddr>,
}

pub(crate) fn backend_addr(n: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::from([198, 51, 100, n as u8 + 1]), 8080)
}

impl Fake {
    pub fn weights(weights: &[u32]) -> Fake {
        Fake {
            weights: weights.to_vec(),
            active: vec![0; weights.len()],
            up: vec![true; weights.len()],
            addrs: (0..weights.len()).map(backend_addr).collect(),
        }
    }

    pub fn with_active(mut self, active: &[u32]) -> Fake {
        self.active = active.to_vec();
        self
    }

    pub fn set_available(&mut self, i: usize, up: bool) {
        self.up[i] = up;
    }

    pub fn remove(&mut self, i: usize) {
        self.weights.remove(i);
        self.active.remove(i);
        self.up.remove(i);
        self.addrs.remove(i);
    }

    pub fn ids(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }
}

impl Candidates for Fake {
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
        self.up[i] && self.weights[i] > 0
    }
    fn addr(&self, i: usize) -> Option<SocketAddr> {
        Some(self.addrs[i])
    }
}

/// A service on 203.0.113.1:80 with the given algorithm and backend weights.
pub(crate) fn service(
    scheduler: Scheduler,
    weights: &[u32],
    persistence: Option<Persistence>,
) -> Service {
    Service {
        vip: IpAddr::from([203, 0, 113, 1]),
        port: 80,
        scheduler,
        persistence,
        quorum: 1,
        hysteresis: 0,
        sorry_server: None,
        backends: weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Backend {
                addr: backend_addr(i),
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

/// Client addresses spread over 198.18.0.0/15 (the benchmarking range), deterministic.
pub(crate) fn clients(n: u32) -> impl Iterator<Item = IpAddr> {
    (0..n).map(|k| {
        IpAddr::from((0xC612_0000u32 + k.wrapping_mul(2_654_435_761) % 0x0001_FFFF).to_be_bytes())
    })
}
