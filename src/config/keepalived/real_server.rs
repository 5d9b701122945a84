//! `raw_check`: what keepalived puts inside each `real_server IP PORT { ... }` — the real
//! server keywords (check_parser.c, the `real_server` sublevel) and the checker blocks.

use std::time::Duration;

use super::checkers;
use super::grammar::{self, MAX_CONNECT_TIMEOUT, MAX_TIMER, MAX_WEIGHT, forwarding};
use super::parser::Statement;
use super::values::{switch, timer, uint};
use super::{RealServer, note_repeat};
use crate::config::diagnostic::{Diags, Pos};

const MIN_POSITIVE: Duration = Duration::from_micros(1);

/// keepalived keywords valid at this level that alive-proxy refuses, and why.
pub fn rejected(name: &str) -> Option<&'static str> {
    Some(match name {
        "notify_up" | "notify_down" => {
            "alive-proxy runs no notify scripts (yet); watch /metrics or `alive-proxy stats`"
        }
        "smtp_alert" => "alive-proxy sends no e-mail; alert on its /metrics instead",
        "snmp_name" => "alive-proxy has no SNMP agent; use /metrics",
        "real_server" => {
            "raw_check is already the body of each real_server (one per `ipvs.ips` entry); write only what goes inside it"
        }
        _ => return grammar::rejected_checker(name),
    })
}

pub fn parse(statements: &[Statement], _pos: Pos, diags: &mut Diags<'_>) -> RealServer {
    let mut rs = RealServer::default();
    for st in statements {
        keyword(&mut rs, st, diags);
    }
    rs
}

fn keyword(rs: &mut RealServer, st: &Statement, diags: &mut Diags<'_>) {
    let name = st.name();
    match name {
        "weight" => {
            note_repeat(&rs.weight, st, diags);
            if let Some(v) = uint(st, 0, MAX_WEIGHT, "weight WEIGHT", diags) {
                rs.weight = Some(v.value);
            }
        }
        "lvs_method" => forwarding(st, diags),
        "uthreshold" => {
            note_repeat(&rs.uthreshold, st, diags);
            rs.uthreshold =
                uint(st, 0, u32::MAX, "uthreshold CONNECTIONS", diags).or(rs.uthreshold);
        }
        "lthreshold" => {
            note_repeat(&rs.lthreshold, st, diags);
            rs.lthreshold =
                uint(st, 0, u32::MAX, "lthreshold CONNECTIONS", diags).or(rs.lthreshold);
        }
        "inhibit_on_failure" => {
            note_repeat(&rs.inhibit_on_failure, st, diags);
            rs.inhibit_on_failure = switch(st, diags).or(rs.inhibit_on_failure);
        }
        "alpha" => {
            note_repeat(&rs.alpha, st, diags);
            rs.alpha = switch(st, diags).or(rs.alpha);
        }
        "retry" => {
            note_repeat(&rs.timers.retry, st, diags);
            if let Some(v) = uint(st, 1, u32::MAX, "retry COUNT", diags) {
                rs.timers.retry = Some(v.value);
            }
        }
        "delay_before_retry" => {
            note_repeat(&rs.timers.delay_before_retry, st, diags);
            if let Some(t) = timer(st, Duration::ZERO, MAX_TIMER, diags) {
                rs.timers.delay_before_retry = Some(t.value);
            }
        }
        "warmup" => {
            note_repeat(&rs.timers.warmup, st, diags);
            if let Some(t) = timer(st, Duration::ZERO, MAX_TIMER, diags) {
                rs.timers.warmup = Some(t.value);
            }
        }
        "connect_timeout" => {
            note_repeat(&rs.timers.connect_timeout, st, diags);
            if let Some(t) = timer(st, MIN_POSITIVE, MAX_CONNECT_TIMEOUT, diags) {
                rs.timers.connect_timeout = Some(t.value);
            }
        }
        "delay_loop" => {
            note_repeat(&rs.timers.delay_loop, st, diags);
            if let Some(t) = timer(st, MIN_POSITIVE, MAX_TIMER, diags) {
                rs.timers.delay_loop = Some(t.value);
            }
        }
        "virtualhost" => {
            note_repeat(&rs.virtualhost, st, diags);
            if let Some(v) = super::values::string(st, "virtualhost HOSTNAME", diags) {
                rs.virtualhost = Some(v.value);
            }
        }
        _ if grammar::is_checker(name) => {
            if let Some(c) = checkers::parse(st, diags) {
                rs.checkers.push(c);
            }
        }
        _ => {
            if let Some(why) = rejected(name) {
                diags.error(st.pos(), format!("`{name}` is not supported: {why}"), "");
            } else if grammar::rejected(name).is_some() || is_virtual_server_only(name) {
                diags.error(
                    st.pos(),
                    format!("`{name}` belongs in virtual_server_config, not in raw_check"),
                    "a real_server keyword or a checker block here",
                );
            } else {
                diags.error(
                    st.pos(),
                    format!("unknown keyword `{name}` in raw_check"),
                    "a real_server keyword (weight, inhibit_on_failure, uthreshold, lthreshold, ...) or TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK",
                );
            }
        }
    }
}

fn is_virtual_server_only(name: &str) -> bool {
    matches!(
        name,
        "lb_algo"
            | "lvs_sched"
            | "lb_kind"
            | "protocol"
            | "persistence_timeout"
            | "persistence_granularity"
            | "quorum"
            | "hysteresis"
            | "omega"
            | "sorry_server"
            | "sorry_server_lvs_method"
            | "ip_family"
            | "sh-port"
            | "sh-fallback"
            | "mh-port"
            | "mh-fallback"
    )
}
