//! What keepalived's grammar allows at each level, shared by the level parsers
//! ([`super::virtual_server`], [`super::real_server`], [`super::checkers`]) so none of them
//! reaches into another: value limits, the keyword sets that tell the levels apart, the
//! keywords alive-proxy refuses (and why), and the forwarding method.

use std::time::Duration;

use super::parser::Statement;
use super::values::one;
use crate::config::diagnostic::Diags;

/// keepalived's largest timer accepted for connect_timeout (UINT_MAX µs).
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_micros(u32::MAX as u64);
/// Other timers: keep them within a sane range (about 136 years is not a health check).
pub const MAX_TIMER: Duration = Duration::from_secs(u32::MAX as u64);
/// IPVS_WEIGHT_MAX.
pub const MAX_WEIGHT: u32 = i32::MAX as u32;

pub fn is_checker(name: &str) -> bool {
    matches!(name, "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK")
}

/// keepalived checkers alive-proxy does not implement.
pub fn rejected_checker(name: &str) -> Option<&'static str> {
    match name {
        "SMTP_CHECK" | "PING_CHECK" | "UDP_CHECK" | "DNS_CHECK" | "FILE_CHECK" | "BFD_CHECK" => {
            Some("alive-proxy implements TCP_CHECK, HTTP_GET, SSL_GET and MISC_CHECK")
        }
        _ => None,
    }
}

/// keepalived's real_server keywords (not the checkers).
pub fn is_real_server_keyword(name: &str) -> bool {
    matches!(
        name,
        "weight"
            | "lvs_method"
            | "uthreshold"
            | "lthreshold"
            | "inhibit_on_failure"
            | "notify_up"
            | "notify_down"
            | "alpha"
            | "retry"
            | "delay_before_retry"
            | "warmup"
            | "connect_timeout"
            | "delay_loop"
            | "smtp_alert"
            | "virtualhost"
            | "snmp_name"
    ) || is_checker(name)
}

/// virtual_server-level keywords keepalived has and alive-proxy refuses, and why.
pub fn rejected(name: &str) -> Option<&'static str> {
    Some(match name {
        "ha_suspend" => {
            "alive-proxy keeps probing backends whether or not this host holds the VIP, so a takeover starts with fresh health state"
        }
        "smtp_alert" => "alive-proxy sends no e-mail; alert on its /metrics instead",
        "snmp_name" => "alive-proxy has no SNMP agent; use /metrics",
        "persistence_engine" => {
            "only client-address persistence (persistence_timeout) is supported, no SIP persistence engine"
        }
        "quorum_up" | "quorum_down" => {
            "alive-proxy runs no notify scripts (yet); watch /metrics or `alive-proxy stats`"
        }
        "sorry_server_inhibit" => "not supported yet",
        "ops" => "one-packet scheduling is for UDP; alive-proxy proxies TCP",
        "hashed" | "flag-1" | "flag-2" | "flag-3" => {
            "raw IPVS scheduler flags mean nothing to a userspace proxy; use sh-port, sh-fallback, mh-port or mh-fallback"
        }
        "virtual_server" | "virtual_server_group" => {
            "virtual_server_config is already the body of one virtual_server (the VIP and port come from the YAML)"
        }
        "real_server" => {
            "the real servers are `ipvs.ips` on this port; per-real-server settings go in raw_check"
        }
        _ => return None,
    })
}

/// Why a forwarding method other than NAT cannot work.
pub fn forwarding_error(method: &str) -> Option<&'static str> {
    match method {
        "NAT" => None,
        "DR" => Some(
            "a proxy cannot do direct routing: it terminates the client's TCP connection and opens its own to the backend, so replies must come back through it",
        ),
        "TUN" => Some(
            "a proxy cannot tunnel packets to backends: it terminates the client's TCP connection and opens its own to the backend",
        ),
        _ => Some("unknown forwarding method"),
    }
}

/// Read `lb_kind` / `lvs_method` / `sorry_server_lvs_method`: only NAT is meaningful.
pub fn forwarding(st: &Statement, diags: &mut Diags<'_>) {
    let usage = format!("{} NAT", st.name());
    let Some(arg) = one(st, &usage, diags) else {
        return;
    };
    if let Some(why) = forwarding_error(arg.value) {
        diags.error(
            arg.pos,
            format!("`{} {}` is not supported: {why}", st.name(), arg.value),
            "NAT (alive-proxy connects to backends itself, like IPVS NAT)",
        );
    }
}
