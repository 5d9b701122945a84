//! BGP mode in `/metrics`: each BGP instance's route and the routing daemon's sessions,
//! from the [`BgpView`] HA reports. Kept apart from the Prometheus encoder, which only calls
//! in here (the `stats` table's BGP lines are in `table.rs`).

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use super::control::BgpView;
use super::families::{Labels, counters, gauges};
use super::snapshot::{InstanceSnapshot, StatsSnapshot};

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
