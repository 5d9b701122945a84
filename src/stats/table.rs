//! The `ipvsadm -ln`-like table `alive-proxy stats` prints, rendered from snapshots (pure:
//! snapshot in, text out). With a previous snapshot it adds rates per second, like
//! `ipvsadm -ln --rate`.

use std::fmt::Write;

use super::control::{BgpView, HealthState, unix_seconds};
use super::snapshot::{BackendSnapshot, ServiceSnapshot, StatsSnapshot};
use crate::counters::LatencySummary;

/// `12µs`, `1.3ms`, `2.50s`, `1h02m`: three significant digits at most, unit that fits.
pub fn duration_us(us: u64) -> String {
    let us_f = us as f64;
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..10_000 => format!("{:.2}ms", us_f / 1e3),
        10_000..100_000 => format!("{:.1}ms", us_f / 1e3),
        100_000..1_000_000 => format!("{:.0}ms", us_f / 1e3),
        1_000_000..60_000_000 => format!("{:.2}s", us_f / 1e6),
        60_000_000..3_600_000_000 => format!("{}m{:02}s", us / 60_000_000, us / 1_000_000 % 60),
        _ => format!("{}h{:02}m", us / 3_600_000_000, us / 60_000_000 % 60),
    }
}

/// `512`, `1.5K`, `20.0M`, `3.1G` (powers of 1000, like `ipvsadm --stats`).
pub fn quantity(n: f64) -> String {
    match n {
        n if n < 1e3 => format!("{n:.0}"),
        n if n < 1e6 => format!("{:.1}K", n / 1e3),
        n if n < 1e9 => format!("{:.1}M", n / 1e6),
        n if n < 1e12 => format!("{:.1}G", n / 1e9),
        n => format!("{:.1}T", n / 1e12),
    }
}

fn percentiles(summary: &LatencySummary) -> String {
    if summary.count == 0 {
        return "-".to_owned();
    }
    [
        summary.p50_us,
        summary.p90_us,
        summary.p99_us,
        summary.p999_us,
        summary.max_us,
    ]
    .map(duration_us)
    .join("/")
}

/// Per-second rate of a counter between two snapshots (0 when it went backwards: restart).
fn rate(now: u64, before: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    now.saturating_sub(before) as f64 / seconds
}

fn find_service<'a>(
    snapshot: Option<&'a StatsSnapshot>,
    service: &ServiceSnapshot,
) -> Option<&'a ServiceSnapshot> {
    snapshot?
        .services
        .iter()
        .find(|s| s.vip == service.vip && s.port == service.port)
}

fn find_backend<'a>(
    service: Option<&'a ServiceSnapshot>,
    backend: &BackendSnapshot,
) -> Option<&'a BackendSnapshot> {
    service?.backends.iter().find(|b| b.addr == backend.addr)
}

/// Render the table. `previous` (an earlier snapshot of the same daemon) adds rate columns.
pub fn render(snapshot: &StatsSnapshot, previous: Option<&StatsSnapshot>) -> String {
    let mut out = String::new();
    let elapsed = previous.map_or(0.0, |p| snapshot.taken_at() - p.taken_at());
    header(&mut out, snapshot, previous.is_some(), elapsed);
    for service in &snapshot.services {
        service_lines(&mut out, snapshot, service, previous, elapsed);
    }
    if !snapshot.instances.is_empty() {
        instance_lines(&mut out, snapshot);
    }
    out
}

// Writing to a String cannot fail: the `let _ = writeln!` below ignore that result only.

fn header(out: &mut String, snapshot: &StatsSnapshot, rates: bool, elapsed: f64) {
    let _ = writeln!(
        out,
        "alive-proxy: {} worker{}, up {}{}",
        snapshot.workers,
        if snapshot.workers == 1 { "" } else { "s" },
        duration_us(snapshot.uptime_ms * 1000),
        if rates {
            format!(", rates over {elapsed:.1}s")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "{:<4} {:<30} {:<9} {:>9} {:>7} {:>8} {:>9}{}",
        "Prot",
        "LocalAddress:Port",
        "Scheduler",
        "Accepted",
        "Active",
        "Refused",
        "NoBackend",
        if rates { "   Conn/s" } else { "" }
    );
    let _ = writeln!(
        out,
        "  -> {:<28} {:<7} {:>6} {:>10} {:>9} {:<7} {:>8} {:>8} {:>6} {:>8}  Connect p50/p90/p99/p99.9/max{}",
        "RemoteAddress:Port",
        "Forward",
        "Weight",
        "ActiveConn",
        "InActConn",
        "State",
        "Conns",
        "ConnFail",
        "Retry",
        "Sessions",
        if rates {
            "   Conn/s   InB/s  OutB/s"
        } else {
            ""
        }
    );
}

/// One VIP:port and its backends (`ipvsadm -ln`'s lines), with rates against `previous`.
fn service_lines(
    out: &mut String,
    snapshot: &StatsSnapshot,
    service: &ServiceSnapshot,
    previous: Option<&StatsSnapshot>,
    elapsed: f64,
) {
    let before = find_service(previous, service);
    let cps = before.map(|b| rate(service.accepted, b.accepted, elapsed));
    let _ = writeln!(
        out,
        "{:<4} {:<30} {:<9} {:>9} {:>7} {:>8} {:>9}{}{}",
        "TCP",
        service.addr().to_string(),
        service.scheduler.as_deref().unwrap_or("-"),
        service.accepted,
        service.active,
        service.refused_limit,
        service.no_backend,
        cps.map_or(String::new(), |r| format!(" {:>8}", quantity(r))),
        if service.in_plan {
            ""
        } else {
            "  (removed from config)"
        }
    );
    for backend in &service.backends {
        let then = find_backend(before, backend);
        let rates = match (previous, then) {
            (Some(_), Some(then)) => format!(
                "   {:>6} {:>7} {:>7}",
                quantity(rate(backend.connections, then.connections, elapsed)),
                quantity(rate(
                    backend.bytes_to_backend,
                    then.bytes_to_backend,
                    elapsed
                )),
                quantity(rate(backend.bytes_to_client, then.bytes_to_client, elapsed)),
            ),
            (Some(_), None) => format!("   {:>6} {:>7} {:>7}", "-", "-", "-"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  -> {:<28} {:<7} {:>6} {:>10} {:>9} {:<7} {:>8} {:>8} {:>6} {:>8}  {}{}",
            backend.addr.to_string(),
            "Proxy",
            backend.weight(),
            backend.active,
            0,
            backend.state_name(),
            backend.connections,
            backend.connect_failures,
            backend.retries,
            backend.closed,
            percentiles(&backend.connect_time),
            rates
        );
        // Why a backend takes no traffic is what operators look for; up ones need no line.
        if let Some(health) = backend
            .health
            .as_ref()
            .filter(|h| h.state != HealthState::Up && !h.reason.is_empty())
        {
            let _ = writeln!(
                out,
                "       {} for {}: {}",
                health.state.name(),
                duration_us(
                    ((snapshot.taken_at() - unix_seconds(health.since)).max(0.0) * 1e6) as u64
                ),
                health.reason
            );
        }
    }
}

/// Who holds each VIP, with certificate expiry and the last lock error.
fn instance_lines(out: &mut String, snapshot: &StatsSnapshot) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:<28} {:<7} {:<20} {:>9} {:>11}  Lock",
        "Instance", "VIP", "Role", "Holder", "For", "Transitions"
    );
    for instance in &snapshot.instances {
        let vip = instance.vip.map_or("-".to_owned(), |v| v.to_string());
        let lock = instance.lock.as_deref().unwrap_or("-");
        let Some(state) = &instance.state else {
            let _ = writeln!(
                out,
                "{:<20} {:<28} {:<7} {:<20} {:>9} {:>11}  {lock}",
                instance.name, vip, "-", "-", "-", "-"
            );
            continue;
        };
        let held_for = ((snapshot.taken_at() - unix_seconds(state.since)).max(0.0) * 1e6) as u64;
        let endpoint = state
            .lock_endpoint
            .as_deref()
            .map_or(String::new(), |e| format!(" via {e}"));
        let _ = writeln!(
            out,
            "{:<20} {:<28} {:<7} {:<20} {:>9} {:>11}  {lock}{endpoint}",
            instance.name,
            vip,
            state.role.name(),
            state.holder.as_deref().unwrap_or("-"),
            duration_us(held_for),
            state.transitions,
        );
        for cert in &state.cert_expiry {
            let when = match (cert.not_after, &cert.error) {
                (Some(t), _) => {
                    let days = (unix_seconds(t) - snapshot.taken_at()) / 86_400.0;
                    format!("certificate expires in {days:.0} days")
                }
                (None, Some(err)) => err.clone(),
                (None, None) => "no client certificate".to_owned(),
            };
            let _ = writeln!(out, "    {}: {when}", cert.kubeconfig.display());
        }
        if let Some(err) = &state.last_error {
            let _ = writeln!(out, "    last error: {err}");
        }
        if let Some(bgp) = &instance.bgp {
            bgp_lines(out, bgp, snapshot.taken_at());
        }
        if state.removal_pending {
            let _ = writeln!(
                out,
                "    the VIP cannot be removed from this host (retrying)"
            );
        }
    }
}

/// The lines under a BGP instance in the `stats` table.
fn bgp_lines(out: &mut String, view: &BgpView, taken_at: f64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(duration_us(45), "45µs");
        assert_eq!(duration_us(1_250), "1.25ms");
        assert_eq!(duration_us(42_000), "42.0ms");
        assert_eq!(duration_us(2_500_000), "2.50s");
        assert_eq!(duration_us(62_000_000), "1m02s");
        assert_eq!(duration_us(3_720_000_000), "1h02m");
    }

    #[test]
    fn quantities_use_powers_of_1000() {
        assert_eq!(quantity(999.0), "999");
        assert_eq!(quantity(1_500.0), "1.5K");
        assert_eq!(quantity(20_000_000.0), "20.0M");
    }

    fn snapshot(taken_at_ms: u64, accepted: u64) -> StatsSnapshot {
        StatsSnapshot {
            format: 1,
            taken_at_ms,
            uptime_ms: 10_000,
            workers: 1,
            services: vec![ServiceSnapshot {
                vip: "192.0.2.1".parse().unwrap(),
                port: 80,
                instance: None,
                scheduler: Some("rr".into()),
                in_plan: true,
                accepted,
                active: 0,
                closed: accepted,
                refused_limit: 0,
                no_backend: 0,
                session_duration: LatencySummary::default(),
                backends: Vec::new(),
            }],
            instances: Vec::new(),
            ha_failures: Vec::new(),
            reloads: Default::default(),
        }
    }

    #[test]
    fn watch_shows_connections_per_second_between_snapshots() {
        let before = snapshot(100_000, 1_000);
        let now = snapshot(102_000, 1_500);
        let text = render(&now, Some(&before));
        let service = text
            .lines()
            .find(|l| l.starts_with("TCP"))
            .expect("a service line");
        assert_eq!(
            service.split_whitespace().last(),
            Some("250"),
            "500 connections over 2 s: {service}"
        );
        assert!(text.contains("rates over 2.0s"), "{text}");
    }

    #[test]
    fn rates_ignore_counters_that_went_backwards() {
        assert_eq!(rate(10, 20, 1.0), 0.0);
        assert_eq!(rate(30, 10, 2.0), 10.0);
    }
}
