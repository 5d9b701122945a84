//! BGP mode in `stats` and `/metrics`: each BGP instance's route and the routing daemon's
//! sessions, from the [`BgpView`] HA reports. Kept apart from the VIP table and the
//! Prometheus encoder, which only call in here.

use std::fmt::{self, Write as _};

use prometheus_client::encoding::DescriptorEncoder;

use super::control::{BgpView, unix_seconds};
use super::families::{Labels, counters, gauges};
use super::snapshot::{InstanceSnapshot, StatsSnapshot};
use super::table::duration_us;

fn bgp_instances(snapshot: &StatsSnapshot) -> Vec<(Labels, &BgpView)> {
    snapshot
        .instances
        .iter()
        .filter_map(|i: &InstanceSnapshot| {
            let view = i.bgp.as_ref()?;
            let labels = vec![
                ("instance", i.name.clone()),
                ("vip", i.vip.map(|v| v.to_string()).unwrap_or_default()),
            ];
            Some((labels, view))
        })
        .collect()
}

/// `alive_proxy_bgp_*`: per BGP instance (labels `instance`, `vip`), sessions also by
/// `protocol` (BIRD's protocol name).
pub(crate) fn metrics(e: &mut DescriptorEncoder, snapshot: &StatsSnapshot) -> fmt::Result {
    let bgp = bgp_instances(snapshot);
    let per = |f: &dyn Fn(&BgpView) -> u64| -> Vec<(Labels, u64)> {
        bgp.iter().map(|(l, v)| (l.clone(), f(v))).collect()
    };
    gauges(
        e,
        "bgp_route_announced",
        "1 while the VIP's route is in alive-proxy's kernel table (BIRD announces this host)",
        None,
        &per(&|v| u64::from(v.announced)),
    )?;
    counters(
        e,
        "bgp_route_changes",
        "Announcements and withdrawals of the VIP's route since start",
        &per(&|v| v.changes),
    )?;
    gauges(
        e,
        "bgp_daemon_up",
        "1 while the routing daemon's control socket answers",
        None,
        &per(&|v| u64::from(v.daemon.is_some())),
    )?;
    let sessions: Vec<(Labels, u64)> = bgp
        .iter()
        .flat_map(|(labels, view)| {
            view.sessions.iter().map(move |s| {
                let mut labels = labels.clone();
                labels.push(("protocol", s.name.clone()));
                (labels, u64::from(s.established()))
            })
        })
        .collect();
    gauges(
        e,
        "bgp_session_established",
        "1 while the routing daemon's BGP session is Established",
        None,
        &sessions,
    )
}

/// The lines under a BGP instance in the `stats` table.
pub(crate) fn lines(out: &mut String, view: &BgpView, taken_at: f64) {
    let for_us = ((taken_at - unix_seconds(view.since)).max(0.0) * 1e6) as u64;
    let _ = writeln!(
        out,
        "    bgp: route {} in table {} for {} ({}), {} changes",
        if view.announced {
            "announced"
        } else {
            "withdrawn"
        },
        view.table,
        duration_us(for_us),
        view.reason,
        view.changes
    );
    match (&view.daemon, &view.daemon_error) {
        (Some(greeting), _) => {
            let _ = writeln!(out, "    daemon: {greeting}");
        }
        (None, Some(error)) => {
            let _ = writeln!(out, "    daemon: unreachable: {error}");
        }
        (None, None) => {}
    }
    for s in &view.sessions {
        let _ = writeln!(
            out,
            "    session {}: {} since {} {}",
            s.name, s.state, s.since, s.info
        );
    }
}
