//! The merged snapshot as Prometheus metrics (prometheus-client, text format 0.0.4).
//!
//! A custom collector encodes a fresh [`StatsSnapshot`] on every scrape; nothing is kept
//! twice. Names carry the `alive_proxy_` prefix, counters end in `_total`, durations are in
//! seconds. Per-backend series take the labels `vip`, `port`, `backend` and follow
//! node_exporter's IPVS collector where it has an equivalent
//! (`node_ipvs_backend_connections_active` → `alive_proxy_backend_connections_active`,
//! `…_inactive`, `…_weight`, `node_ipvs_connections_total` → `alive_proxy_backend_connections_total`,
//! incoming/outgoing bytes), and HAProxy's exporter for what IPVS lacks (connect errors,
//! retries, status, connect/response time).

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::{Registry, Unit};

use super::StatsRegistry;
use super::admin::Readiness;
use super::control::{HealthState, VipRole, VipView, VrrpView, unix_seconds};
use super::families::{Labels, counters, gauges, histograms};
use super::snapshot::{BackendSnapshot, ServiceSnapshot, StatsSnapshot};
use crate::counters::LatencySummary;
use crate::ha::HaFailure;
use crate::ha::vrrp::packet::DropReason;

/// `Content-Type` of what [`render`] and the `/metrics` endpoint produce.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Encodes a fresh snapshot of the registry on every scrape.
#[derive(Debug)]
pub struct LiveCollector {
    pub registry: Arc<StatsRegistry>,
    pub readiness: Arc<Readiness>,
}

impl Collector for LiveCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        encode_snapshot(
            &self.registry.snapshot(),
            self.readiness.is_ready(),
            encoder,
        )
    }
}

#[derive(Debug)]
struct FixedCollector {
    snapshot: StatsSnapshot,
    ready: bool,
}

impl Collector for FixedCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        encode_snapshot(&self.snapshot, self.ready, encoder)
    }
}

/// A prometheus-client registry serving the live stats under the `alive_proxy` prefix.
pub fn live_registry(registry: Arc<StatsRegistry>, readiness: Arc<Readiness>) -> Registry {
    let mut metrics = Registry::with_prefix("alive_proxy");
    metrics.register_collector(Box::new(super::events::EventsCollector(registry.events())));
    metrics.register_collector(Box::new(LiveCollector {
        registry,
        readiness,
    }));
    metrics
}

/// Encode a registry built by [`live_registry`] as Prometheus text.
pub fn encode_registry(metrics: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, metrics)?;
    Ok(text)
}

/// One snapshot as Prometheus text (what `/metrics` serves).
pub fn render(snapshot: &StatsSnapshot, ready: bool) -> Result<String, fmt::Error> {
    let mut metrics = Registry::with_prefix("alive_proxy");
    metrics.register_collector(Box::new(FixedCollector {
        snapshot: snapshot.clone(),
        ready,
    }));
    encode_registry(&metrics)
}

fn service_labels(service: &ServiceSnapshot) -> Labels {
    vec![
        ("vip", service.vip.to_string()),
        ("port", service.port.to_string()),
    ]
}

fn backend_labels(service: &ServiceSnapshot, backend: &BackendSnapshot) -> Labels {
    let mut labels = service_labels(service);
    labels.push(("backend", backend.addr.to_string()));
    labels
}

fn encode_snapshot(
    snapshot: &StatsSnapshot,
    ready: bool,
    mut encoder: DescriptorEncoder,
) -> fmt::Result {
    let e = &mut encoder;
    let none: Labels = Vec::new();
    gauges(
        e,
        "ready",
        "1 once the config is loaded and listeners are up",
        None,
        &[(none.clone(), u32::from(ready))],
    )?;
    gauges(
        e,
        "workers",
        "Data-plane worker threads",
        None,
        &[(none.clone(), snapshot.workers as u64)],
    )?;
    gauges(
        e,
        "uptime",
        "Time since the process started",
        Some(&Unit::Seconds),
        &[(none, snapshot.uptime_seconds())],
    )?;
    service_metrics(e, &snapshot.services)?;
    backend_metrics(e, &snapshot.services)?;
    vip_metrics(e, snapshot)?;
    encode_control_failures(e, snapshot)
}

/// Per VIP:port: connections, refusals, session lengths.
fn service_metrics(e: &mut DescriptorEncoder, services: &[ServiceSnapshot]) -> fmt::Result {
    let per_service = |f: &dyn Fn(&ServiceSnapshot) -> u64| -> Vec<(Labels, u64)> {
        services.iter().map(|s| (service_labels(s), f(s))).collect()
    };
    counters(
        e,
        "service_connections",
        "Connections accepted on the VIP:port",
        &per_service(&|s| s.accepted),
    )?;
    gauges(
        e,
        "service_connections_active",
        "Accepted connections not yet closed",
        None,
        &per_service(&|s| s.active),
    )?;
    let refused: Vec<(Labels, u64)> = services
        .iter()
        .flat_map(|s| {
            let with = |reason: &str, n: u64| {
                let mut labels = service_labels(s);
                labels.push(("reason", reason.to_owned()));
                (labels, n)
            };
            [
                with("limit", s.refused_limit),
                with("no_backend", s.no_backend),
            ]
        })
        .collect();
    counters(
        e,
        "service_connections_refused",
        "Accepted connections closed at once: max_connections reached (limit) or no backend could take them (no_backend)",
        &refused,
    )?;
    let service_sessions: Vec<(Labels, &LatencySummary)> = services
        .iter()
        .map(|s| (service_labels(s), &s.session_duration))
        .collect();
    histograms(
        e,
        "service_session_duration",
        "Client session length, accept to close",
        &service_sessions,
    )?;
    Ok(())
}

/// Per backend of each VIP:port: connections, health, failures, bytes, latencies.
fn backend_metrics(e: &mut DescriptorEncoder, services: &[ServiceSnapshot]) -> fmt::Result {
    let backends: Vec<(&ServiceSnapshot, &BackendSnapshot)> = services
        .iter()
        .flat_map(|s| s.backends.iter().map(move |b| (s, b)))
        .collect();
    let per_backend = |f: &dyn Fn(&BackendSnapshot) -> u64| -> Vec<(Labels, u64)> {
        backends
            .iter()
            .map(|(s, b)| (backend_labels(s, b), f(b)))
            .collect()
    };
    counters(
        e,
        "backend_connections",
        "Connections established to the backend",
        &per_backend(&|b| b.connections),
    )?;
    gauges(
        e,
        "backend_connections_active",
        "Sessions currently relayed to the backend",
        None,
        &per_backend(&|b| b.active),
    )?;
    gauges(
        e,
        "backend_connections_inactive",
        "Always 0 for a proxy (kept for IPVS dashboards, where it counts non-established connections)",
        None,
        &per_backend(&|_| 0),
    )?;
    gauges(
        e,
        "backend_weight",
        "Weight in force (health's, else configured); 0 drains",
        None,
        &per_backend(&|b| u64::from(b.weight())),
    )?;
    gauges(
        e,
        "backend_up",
        "1 when health reports the backend up (weight > 0), 0 when down or draining",
        None,
        &per_backend(&|b| {
            u64::from(
                b.health
                    .as_ref()
                    .is_some_and(|h| h.state == HealthState::Up),
            )
        }),
    )?;
    counters(
        e,
        "backend_health_transitions",
        "Health state or weight changes",
        &per_backend(&|b| b.health.as_ref().map_or(0, |h| h.transitions)),
    )?;
    counters(
        e,
        "backend_connect_failures",
        "Failed connect attempts to the backend",
        &per_backend(&|b| b.connect_failures),
    )?;
    counters(
        e,
        "backend_retries",
        "Client connections retried on another backend after failing on this one",
        &per_backend(&|b| b.retries),
    )?;
    counters(
        e,
        "backend_resets",
        "Sessions ended by a reset",
        &per_backend(&|b| b.resets),
    )?;
    counters(
        e,
        "backend_incoming_bytes",
        "Bytes relayed client to backend",
        &per_backend(&|b| b.bytes_to_backend),
    )?;
    counters(
        e,
        "backend_outgoing_bytes",
        "Bytes relayed backend to client",
        &per_backend(&|b| b.bytes_to_client),
    )?;
    let latency = |f: &dyn for<'a> Fn(&'a BackendSnapshot) -> &'a LatencySummary| {
        backends
            .iter()
            .map(|(s, b)| (backend_labels(s, b), f(b)))
            .collect::<Vec<_>>()
    };
    histograms(
        e,
        "backend_connect_duration",
        "Time to establish the TCP connection to the backend",
        &latency(&|b| &b.connect_time),
    )?;
    histograms(
        e,
        "backend_first_byte_duration",
        "Time from connect to the backend's first response byte",
        &latency(&|b| &b.first_byte),
    )?;
    histograms(
        e,
        "backend_session_duration",
        "Backend session length, connect to close",
        &latency(&|b| &b.session_duration),
    )?;
    Ok(())
}

/// Per VIP instance: role, transitions, certificate expiry, a removal that keeps failing.
fn vip_metrics(e: &mut DescriptorEncoder, snapshot: &StatsSnapshot) -> fmt::Result {
    let vips: Vec<(Labels, &VipView)> = snapshot
        .instances
        .iter()
        .filter_map(|i| {
            let labels = vec![
                ("instance", i.name.clone()),
                ("vip", i.vip.map(|v| v.to_string()).unwrap_or_default()),
            ];
            Some((labels, i.state.as_ref()?))
        })
        .collect();
    let per_vip = |f: &dyn Fn(&VipView) -> f64| -> Vec<(Labels, f64)> {
        vips.iter()
            .map(|(labels, v)| (labels.clone(), f(v)))
            .collect()
    };
    let master: Vec<(Labels, u64)> = vips
        .iter()
        .map(|(labels, v)| (labels.clone(), u64::from(v.role == VipRole::Master)))
        .collect();
    gauges(
        e,
        "vip_master",
        "1 while this host holds the VIP",
        None,
        &master,
    )?;
    gauges(
        e,
        "vip_role_since_timestamp",
        "When the VIP role last changed (Unix time)",
        Some(&Unit::Seconds),
        &per_vip(&|v| unix_seconds(v.since)),
    )?;
    let transitions: Vec<(Labels, u64)> = vips
        .iter()
        .map(|(labels, v)| (labels.clone(), v.transitions))
        .collect();
    counters(e, "vip_transitions", "VIP role changes", &transitions)?;
    let roles: Vec<(Labels, u64)> = vips
        .iter()
        .flat_map(|(labels, v)| {
            [
                VipRole::Init,
                VipRole::Master,
                VipRole::Backup,
                VipRole::Fault,
            ]
            .into_iter()
            .map(move |role| {
                let mut labels = labels.clone();
                labels.push(("role", role.name().to_owned()));
                (labels, u64::from(v.role == role))
            })
        })
        .collect();
    gauges(
        e,
        "vip_role",
        "1 for the VIP's current role (INIT, MASTER, BACKUP, FAULT), 0 for the others",
        None,
        &roles,
    )?;
    vrrp_metrics(e, snapshot)?;
    super::bgp::metrics(e, snapshot)?;
    let expiry: Vec<(Labels, f64)> = snapshot
        .instances
        .iter()
        .filter_map(|i| Some((i, i.state.as_ref()?)))
        .flat_map(|(i, state)| {
            state.cert_expiry.iter().filter_map(move |cert| {
                let labels = vec![
                    ("instance", i.name.clone()),
                    ("kubeconfig", cert.kubeconfig.display().to_string()),
                ];
                Some((labels, unix_seconds(cert.not_after?)))
            })
        })
        .collect();
    gauges(
        e,
        "kubeconfig_cert_expiry_timestamp",
        "Client certificate notAfter of each kubeconfig (Unix time)",
        Some(&Unit::Seconds),
        &expiry,
    )?;
    let pending: Vec<(Labels, u64)> = vips
        .iter()
        .map(|(labels, v)| (labels.clone(), u64::from(v.removal_pending)))
        .collect();
    gauges(
        e,
        "vip_removal_pending",
        "1 while a VIP that must leave this host cannot be removed (the lease is kept)",
        None,
        &pending,
    )?;
    Ok(())
}

/// HA failures (every kind for every instance, zeros included, so `increase()` alerts
/// work from the first failure) and reload results.
fn encode_control_failures(e: &mut DescriptorEncoder, snapshot: &StatsSnapshot) -> fmt::Result {
    let mut failures: Vec<(Labels, u64)> = Vec::new();
    for instance in &snapshot.instances {
        for kind in HaFailure::ALL {
            let count = snapshot
                .ha_failures
                .iter()
                .find(|f| f.instance == instance.name && f.kind == kind.name())
                .map_or(0, |f| f.count);
            failures.push((
                vec![
                    ("instance", instance.name.clone()),
                    ("kind", kind.name().to_owned()),
                ],
                count,
            ));
        }
    }
    counters(
        e,
        "ha_failures",
        "HA control-loop failures: lease reads/writes, missed deadlines, VIP add/remove/check, announcements, conflicting claims, handover forwarding and parking",
        &failures,
    )?;
    let reloads = vec![
        (
            vec![("result", "success".to_owned())],
            snapshot.reloads.success,
        ),
        (
            vec![("result", "failure".to_owned())],
            snapshot.reloads.failure,
        ),
    ];
    counters(
        e,
        "config_reloads",
        "Configuration reloads by result (failure: the previous configuration kept serving)",
        &reloads,
    )
}

/// `alive_proxy_vrrp_*`: per VRRP instance, labels `instance`, `vip`, `vrid`.
fn vrrp_metrics(e: &mut DescriptorEncoder, snapshot: &StatsSnapshot) -> fmt::Result {
    let vrrp: Vec<(Labels, &VrrpView)> = snapshot
        .instances
        .iter()
        .filter_map(|i| {
            let view = i.vrrp.as_ref()?;
            let labels = vec![
                ("instance", i.name.clone()),
                ("vip", i.vip.map(|v| v.to_string()).unwrap_or_default()),
                ("vrid", view.vrid.to_string()),
            ];
            Some((labels, view))
        })
        .collect();
    let per = |f: &dyn Fn(&VrrpView) -> u64| -> Vec<(Labels, u64)> {
        vrrp.iter().map(|(l, v)| (l.clone(), f(v))).collect()
    };
    gauges(
        e,
        "vrrp_priority",
        "VRRP priority advertised now (lowered while no backend is healthy)",
        None,
        &per(&|v| u64::from(v.priority)),
    )?;
    counters(
        e,
        "vrrp_adverts_received",
        "Valid VRRP advertisements received for this virtual router",
        &per(&|v| v.adverts_received),
    )?;
    counters(
        e,
        "vrrp_adverts_sent",
        "VRRP advertisements sent",
        &per(&|v| v.adverts_sent),
    )?;
    counters(
        e,
        "vrrp_send_errors",
        "VRRP advertisements that could not be sent to every destination",
        &per(&|v| v.send_errors),
    )?;
    let dropped: Vec<(Labels, u64)> = vrrp
        .iter()
        .flat_map(|(labels, view)| {
            DropReason::ALL.into_iter().map(move |reason| {
                let mut labels = labels.clone();
                labels.push(("reason", reason.name().to_owned()));
                (
                    labels,
                    view.dropped.get(reason.name()).copied().unwrap_or(0),
                )
            })
        })
        .collect();
    counters(
        e,
        "vrrp_adverts_dropped",
        "Received VRRP packets dropped, by reason (vrid: another virtual router on the link, not an error)",
        &dropped,
    )
}
