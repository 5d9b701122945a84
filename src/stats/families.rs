//! Encoding helpers shared by the `/metrics` collectors: one metric family (a descriptor,
//! then one series per label set) of counters, gauges or latency histograms.

use std::collections::HashMap;
use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::registry::Unit;

use crate::counters::LatencySummary;

/// A series' labels, in the order they are written.
pub(crate) type Labels = Vec<(&'static str, String)>;

/// One metric family: a descriptor, then one series per label set.
fn family<T>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric_type: MetricType,
    series: &[(Labels, T)],
    mut write: impl FnMut(&mut prometheus_client::encoding::MetricEncoder, &T) -> fmt::Result,
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, unit, metric_type)?;
    for (labels, value) in series {
        let mut one = metric.encode_family(labels)?;
        write(&mut one, value)?;
    }
    Ok(())
}

pub(crate) fn counters<V: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, V)],
) -> fmt::Result {
    family(
        encoder,
        name,
        help,
        None,
        MetricType::Counter,
        series,
        |m, v| m.encode_counter::<Labels, V, f64>(v, None),
    )
}

pub(crate) fn gauges<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(Labels, V)],
) -> fmt::Result {
    family(
        encoder,
        name,
        help,
        unit,
        MetricType::Gauge,
        series,
        |m, v| m.encode_gauge(v),
    )
}

pub(crate) fn histograms(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, &LatencySummary)],
) -> fmt::Result {
    family(
        encoder,
        name,
        help,
        Some(&Unit::Seconds),
        MetricType::Histogram,
        series,
        |m, summary| {
            // prometheus-client takes per-bucket counts and accumulates them itself.
            let mut below = 0u64;
            let mut buckets: Vec<(f64, u64)> = summary
                .buckets
                .iter()
                .map(|b| {
                    let in_bucket = b.count.saturating_sub(below);
                    below = below.max(b.count);
                    (b.le_us as f64 / 1e6, in_bucket)
                })
                .collect();
            buckets.push((f64::INFINITY, summary.count.saturating_sub(below)));
            m.encode_histogram::<Labels>(
                summary.sum_us as f64 / 1e6,
                summary.count,
                &buckets,
                None::<&HashMap<usize, Exemplar<Labels, f64>>>,
            )
        },
    )
}
