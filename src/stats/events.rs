//! `/metrics` for the process-wide event counters the data plane and the admin endpoint
//! keep in [`crate::counters::LocalEvents`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::families::{Labels, counters, gauges};
use crate::counters::events::{
    AdminEndpoint, ConnectCause, During, Exhausted, LocalEvents, SessionTimeout,
};

/// Encodes [`LocalEvents`] on every scrape. Every label combination is present, zeros
/// included, so that `rate()` and `increase()` work from the first scrape.
#[derive(Debug)]
pub struct EventsCollector(pub Arc<LocalEvents>);

fn label(name: &'static str, value: &str) -> Labels {
    vec![(name, value.to_owned())]
}

impl Collector for EventsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let e = &mut encoder;
        let events = &self.0;
        let exhausted: Vec<(Labels, u64)> = During::ALL
            .iter()
            .flat_map(|during| {
                Exhausted::ALL.iter().map(move |resource| {
                    let mut labels = label("resource", resource.label());
                    labels.push(("during", during.label().to_owned()));
                    (labels, events.exhausted_count(*resource, *during))
                })
            })
            .collect();
        counters(
            e,
            "local_exhaustion",
            "Accepts paused and backend connects given up because this host ran out of a resource (process_fds: EMFILE, system_fds: ENFILE, memory, ports: EADDRNOTAVAIL)",
            &exhausted,
        )?;
        let causes: Vec<(Labels, u64)> = ConnectCause::ALL
            .iter()
            .enumerate()
            .map(|(i, cause)| {
                (
                    label("cause", cause.label()),
                    events.connect_failures[i].load(Relaxed),
                )
            })
            .collect();
        counters(
            e,
            "passive_connect_failures",
            "Backend connect failures on client traffic by cause; each marks the backend suspect and asks health for a re-probe",
            &causes,
        )?;
        counters(
            e,
            "passive_events_undelivered",
            "Passive failure reports health was not there to receive",
            &[(Vec::new(), events.passive_undelivered.load(Relaxed))],
        )?;
        let timeouts: Vec<(Labels, u64)> = SessionTimeout::ALL
            .iter()
            .enumerate()
            .map(|(i, timer)| {
                (
                    label("timeout", timer.label()),
                    events.session_timeouts[i].load(Relaxed),
                )
            })
            .collect();
        counters(
            e,
            "sessions_timed_out",
            "Sessions closed by a timer: idle (idle_timeout), client_fin / server_fin (half-closed and the other side silent)",
            &timeouts,
        )?;
        counters(
            e,
            "splice_unavailable",
            "Large flows that kept copying because every splice pipe of their worker was in use",
            &[(Vec::new(), events.splice_unavailable.load(Relaxed))],
        )?;
        gauges(
            e,
            "splice_pipe_pairs",
            "Splice pipe pairs open (two descriptors each), lent or idle",
            None,
            &[(Vec::new(), events.splice_pipes_open())],
        )?;
        gauges(
            e,
            "relay_buffers_lent",
            "Copy buffers lent to relay directions now (an idle session holds none; only a direction holding bytes does)",
            None,
            &[(Vec::new(), events.relay_buffers_lent())],
        )?;
        let per_endpoint = |cells: &[AtomicU64; 2]| -> Vec<(Labels, u64)> {
            AdminEndpoint::ALL
                .iter()
                .enumerate()
                .map(|(i, endpoint)| (label("endpoint", endpoint.label()), cells[i].load(Relaxed)))
                .collect()
        };
        gauges(
            e,
            "admin_connections",
            "Admin connections being served (capped; more wait in the listen backlog)",
            None,
            &per_endpoint(&events.admin_open),
        )?;
        counters(
            e,
            "admin_connections_timed_out",
            "Admin connections closed for outliving their time limit",
            &per_endpoint(&events.admin_timed_out),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_exported_from_the_start_and_counts_show() {
        let events = LocalEvents::new();
        events.exhausted(Exhausted::ProcessFds, During::Accept);
        events.connect_failed(ConnectCause::Refused);
        let mut registry = prometheus_client::registry::Registry::with_prefix("alive_proxy");
        registry.register_collector(Box::new(EventsCollector(Arc::clone(&events))));
        let text = super::super::prometheus::encode_registry(&registry).expect("encode");
        assert!(
            text.contains(
                "alive_proxy_local_exhaustion_total{resource=\"process_fds\",during=\"accept\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "alive_proxy_local_exhaustion_total{resource=\"ports\",during=\"connect\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains("alive_proxy_passive_connect_failures_total{cause=\"refused\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("alive_proxy_admin_connections{endpoint=\"http\"} 0"),
            "{text}"
        );
    }
}
