//! `virtual_server_config`: keepalived's virtual_server keywords (check_parser.c,
//! `init_check_keywords`), read into [`VirtualServer`]. Keywords a userspace TCP proxy cannot
//! honour are refused with the reason; unknown keywords are errors.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::grammar::{self, MAX_CONNECT_TIMEOUT, MAX_TIMER, MAX_WEIGHT, forwarding, rejected};
use super::parser::Statement;
use super::values::{self, arity, flag, one, timer, uint};
use super::{Granularity, SchedFlag, Sorry, Spanned, VirtualServer, note_repeat};
use crate::config::diagnostic::{Diags, Pos};
use crate::config::plan::{Family, Scheduler};

const MIN_POSITIVE: Duration = Duration::from_micros(1);
/// IPVS_SVC_PERSISTENT_TIMEOUT, used when `persistence_timeout` has no value.
pub const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 360;
/// LVS_MAX_TIMEOUT: 31 days.
const MAX_PERSISTENCE_TIMEOUT: u32 = 86400 * 31;

pub fn parse(statements: &[Statement], pos: Pos, diags: &mut Diags<'_>) -> VirtualServer {
    let mut vs = VirtualServer {
        pos: statements.first().map(|s| s.pos()).unwrap_or(pos),
        ..VirtualServer::default()
    };
    for st in statements {
        keyword(&mut vs, st, diags);
    }
    vs
}

fn keyword(vs: &mut VirtualServer, st: &Statement, diags: &mut Diags<'_>) {
    let known = timer_keyword(vs, st, diags)
        || scheduling_keyword(vs, st, diags)
        || transport_keyword(vs, st, diags)
        || health_keyword(vs, st, diags);
    if !known {
        unknown_keyword(st, diags);
    }
}

/// The checker timers a virtual_server sets for its real servers. `false`: not one of them.
fn timer_keyword(vs: &mut VirtualServer, st: &Statement, diags: &mut Diags<'_>) -> bool {
    let name = st.name();
    match name {
        "delay_loop" => {
            note_repeat(&vs.timers.delay_loop, st, diags);
            if let Some(t) = timer(st, MIN_POSITIVE, MAX_TIMER, diags) {
                vs.timers.delay_loop = Some(t.value);
            }
        }
        "connect_timeout" => {
            note_repeat(&vs.timers.connect_timeout, st, diags);
            if let Some(t) = timer(st, MIN_POSITIVE, MAX_CONNECT_TIMEOUT, diags) {
                vs.timers.connect_timeout = Some(t.value);
            }
        }
        "delay_before_retry" => {
            note_repeat(&vs.timers.delay_before_retry, st, diags);
            if let Some(t) = timer(st, Duration::ZERO, MAX_TIMER, diags) {
                vs.timers.delay_before_retry = Some(t.value);
            }
        }
        "warmup" => {
            note_repeat(&vs.timers.warmup, st, diags);
            if let Some(t) = timer(st, Duration::ZERO, MAX_TIMER, diags) {
                vs.timers.warmup = Some(t.value);
            }
        }
        "retry" => {
            note_repeat(&vs.timers.retry, st, diags);
            if let Some(v) = uint(st, 1, u32::MAX, "retry COUNT", diags) {
                vs.timers.retry = Some(v.value);
            }
        }
        _ => return false,
    }
    true
}

/// Scheduler, its flags and client persistence. `false`: not one of them.
fn scheduling_keyword(vs: &mut VirtualServer, st: &Statement, diags: &mut Diags<'_>) -> bool {
    let name = st.name();
    match name {
        "lb_algo" | "lvs_sched" => {
            note_repeat(&vs.scheduler, st, diags);
            let usage = format!("{name} SCHEDULER");
            if let Some(arg) = one(st, &usage, diags) {
                match Scheduler::from_name(arg.value) {
                    Some(s) => {
                        vs.scheduler = Some(Spanned {
                            value: s,
                            pos: arg.pos,
                        })
                    }
                    None => diags.error(
                        arg.pos,
                        format!("unknown scheduler `{}`", arg.value),
                        scheduler_list(),
                    ),
                }
            }
        }
        "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" => {
            if flag(st, diags) {
                let f = match name {
                    "sh-port" => SchedFlag::ShPort,
                    "sh-fallback" => SchedFlag::ShFallback,
                    "mh-port" => SchedFlag::MhPort,
                    _ => SchedFlag::MhFallback,
                };
                vs.sched_flags.push(Spanned {
                    value: f,
                    pos: st.pos(),
                });
                if matches!(f, SchedFlag::ShPort | SchedFlag::MhPort) {
                    diags.warning(
                        st.pos(),
                        format!(
                            "`{name}` has no effect: alive-proxy hashes the client address only, not its port"
                        ),
                    );
                }
            }
        }
        "persistence_timeout" => {
            note_repeat(&vs.persistence_timeout, st, diags);
            let usage = "persistence_timeout [SECONDS]";
            if arity(st, 0, 1, usage, diags) {
                let value = match st.args.first() {
                    None => Some(Spanned {
                        value: DEFAULT_PERSISTENCE_TIMEOUT,
                        pos: st.pos(),
                    }),
                    Some(tok) => values::uint_value(
                        name,
                        Spanned {
                            value: tok.text().unwrap_or(""),
                            pos: tok.pos,
                        },
                        1,
                        MAX_PERSISTENCE_TIMEOUT,
                        diags,
                    ),
                };
                if value.is_some() {
                    vs.persistence_timeout = value;
                }
            }
        }
        "persistence_granularity" => {
            note_repeat(&vs.persistence_granularity, st, diags);
            if let Some(arg) = one(st, "persistence_granularity NETMASK|PREFIXLEN", diags) {
                vs.persistence_granularity = granularity(arg, diags);
            }
        }
        _ => return false,
    }
    true
}

/// Forwarding method, protocol and address family. `false`: not one of them.
fn transport_keyword(vs: &mut VirtualServer, st: &Statement, diags: &mut Diags<'_>) -> bool {
    let name = st.name();
    match name {
        "lb_kind" | "lvs_method" | "sorry_server_lvs_method" => forwarding(st, diags),
        "protocol" => {
            if let Some(arg) = one(st, "protocol TCP", diags) {
                let upper = arg.value.to_ascii_uppercase();
                match upper.as_str() {
                    "TCP" => {}
                    "UDP" | "SCTP" => diags.error(
                        arg.pos,
                        format!(
                            "`protocol {}` is not supported: alive-proxy proxies TCP only",
                            arg.value
                        ),
                        "TCP",
                    ),
                    _ => diags.error(arg.pos, format!("unknown protocol `{}`", arg.value), "TCP"),
                }
            }
        }
        "ip_family" => {
            if let Some(arg) = one(st, "ip_family inet|inet6", diags) {
                match arg.value {
                    "inet" => {
                        vs.ip_family = Some(Spanned {
                            value: Family::V4,
                            pos: arg.pos,
                        })
                    }
                    "inet6" => {
                        vs.ip_family = Some(Spanned {
                            value: Family::V6,
                            pos: arg.pos,
                        })
                    }
                    other => diags.error(
                        arg.pos,
                        format!("unknown address family `{other}`"),
                        "inet or inet6",
                    ),
                }
            }
        }
        _ => return false,
    }
    true
}

/// Quorum, sorry server and the real servers' health defaults. `false`: not one of them.
fn health_keyword(vs: &mut VirtualServer, st: &Statement, diags: &mut Diags<'_>) -> bool {
    let name = st.name();
    match name {
        "quorum" => {
            note_repeat(&vs.quorum, st, diags);
            vs.quorum = uint(st, 1, u32::MAX, "quorum WEIGHT", diags).or(vs.quorum);
        }
        "hysteresis" => {
            note_repeat(&vs.hysteresis, st, diags);
            vs.hysteresis = uint(st, 0, u32::MAX, "hysteresis WEIGHT", diags).or(vs.hysteresis);
        }
        "alpha" => vs.alpha |= flag(st, diags),
        "omega" => {
            if flag(st, diags) {
                diags.warning(
                    st.pos(),
                    "`omega` has no effect: alive-proxy runs no quorum or notify scripts",
                );
            }
        }
        "inhibit_on_failure" => vs.inhibit_on_failure |= flag(st, diags),
        "sorry_server" => {
            note_repeat(&vs.sorry_server, st, diags);
            if arity(st, 1, 2, "sorry_server IP [PORT]", diags) {
                vs.sorry_server = sorry(st, diags).or(vs.sorry_server);
            }
        }
        "virtualhost" => {
            note_repeat(&vs.virtualhost, st, diags);
            if let Some(v) = values::string(st, "virtualhost HOSTNAME", diags) {
                vs.virtualhost = Some(v.value);
            }
        }
        "weight" => {
            note_repeat(&vs.weight, st, diags);
            if let Some(v) = uint(st, 1, MAX_WEIGHT, "weight WEIGHT", diags) {
                vs.weight = Some(v.value);
            }
        }
        _ => return false,
    }
    true
}

/// Refused, misplaced or unknown.
fn unknown_keyword(st: &Statement, diags: &mut Diags<'_>) {
    let name = st.name();
    if let Some(why) = rejected(name) {
        diags.error(st.pos(), format!("`{name}` is not supported: {why}"), "");
    } else if grammar::is_real_server_keyword(name) {
        diags.error(
            st.pos(),
            format!("`{name}` belongs in raw_check (inside each real_server), not in virtual_server_config"),
            "a virtual_server keyword here",
        );
    } else {
        diags.error(
            st.pos(),
            format!("unknown keyword `{name}` in virtual_server_config"),
            "a keepalived virtual_server keyword (docs/config.md lists them)",
        );
    }
}

fn scheduler_list() -> String {
    let names: Vec<&str> = Scheduler::ALL.iter().map(|s| s.name()).collect();
    format!("one of {}", names.join(", "))
}

fn granularity(arg: Spanned<&str>, diags: &mut Diags<'_>) -> Option<Spanned<Granularity>> {
    let value = if arg.value.contains('.') {
        match arg.value.parse::<Ipv4Addr>() {
            Ok(mask) => {
                let bits = u32::from(mask);
                let prefix = bits.leading_ones();
                if bits.checked_shl(prefix).unwrap_or(0) != 0 {
                    diags.error(
                        arg.pos,
                        format!("netmask `{}` is not contiguous", arg.value),
                        "a netmask such as 255.255.255.0",
                    );
                    return None;
                }
                Granularity::V4(prefix as u8)
            }
            Err(_) => {
                diags.error(
                    arg.pos,
                    format!("invalid persistence_granularity `{}`", arg.value),
                    "an IPv4 netmask such as 255.255.255.0 or an IPv6 prefix length 1..128",
                );
                return None;
            }
        }
    } else {
        let v = values::uint_value("persistence_granularity", arg, 1, 128, diags)?;
        Granularity::V6(v.value as u8)
    };
    Some(Spanned {
        value,
        pos: arg.pos,
    })
}

fn sorry(st: &Statement, diags: &mut Diags<'_>) -> Option<Sorry> {
    let ip_tok = st.args.first()?;
    let ip = values::ip_value(
        "sorry_server",
        Spanned {
            value: ip_tok.text().unwrap_or(""),
            pos: ip_tok.pos,
        },
        diags,
    );
    let port = match st.args.get(1) {
        Some(tok) => Some(
            values::port_value(
                "sorry_server",
                Spanned {
                    value: tok.text().unwrap_or(""),
                    pos: tok.pos,
                },
                diags,
            )?
            .value,
        ),
        None => None,
    };
    Some(Sorry { ip: ip?, port })
}
