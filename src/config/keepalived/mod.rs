//! The keepalived syntax pasted into alive.yaml: `virtual_server_config` is the body of a
//! keepalived `virtual_server IP PORT { ... }` without its real servers, and `raw_check` is
//! the body keepalived's config generator puts inside each `real_server IP PORT { ... }`.
//!
//! [`lexer`] and [`parser`] implement keepalived's lexical rules and block grammar;
//! [`virtual_server`], [`real_server`] and [`checkers`] give the statements their meaning,
//! with keepalived's keyword set and defaults (keepalived/check/check_parser.c, check_api.c,
//! check_tcp.c, check_http.c, check_misc.c). The results are still "raw": defaults are
//! inherited and cross-checked against the VIP and backends in `config::build`.

pub mod checkers;
pub mod grammar;
pub mod lexer;
pub mod parser;
pub mod real_server;
pub mod values;
pub mod virtual_server;

use std::net::IpAddr;
use std::time::Duration;

use super::diagnostic::{Diags, Pos};
use super::plan::{Family, Scheduler, UrlCheck};
use super::yaml::{Scalar, Style};

/// A value and where it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub pos: Pos,
}

/// The checker timings that inherit checker → real server → virtual server → default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timers {
    pub delay_loop: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub retry: Option<u32>,
    pub delay_before_retry: Option<Duration>,
    pub warmup: Option<Duration>,
}

/// `virtual_server_config`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VirtualServer {
    pub timers: Timers,
    pub scheduler: Option<Spanned<Scheduler>>,
    pub sched_flags: Vec<Spanned<SchedFlag>>,
    pub persistence_timeout: Option<Spanned<u32>>,
    pub persistence_granularity: Option<Spanned<Granularity>>,
    pub quorum: Option<Spanned<u32>>,
    pub hysteresis: Option<Spanned<u32>>,
    pub alpha: bool,
    pub inhibit_on_failure: bool,
    pub sorry_server: Option<Sorry>,
    pub virtualhost: Option<String>,
    /// Default weight of the real servers (keepalived's virtual_server `weight`, default 1).
    pub weight: Option<u32>,
    pub ip_family: Option<Spanned<Family>>,
    /// Where the block is in the file (its first token, else the YAML value).
    pub pos: Pos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedFlag {
    ShPort,
    ShFallback,
    MhPort,
    MhFallback,
}

impl SchedFlag {
    pub fn name(self) -> &'static str {
        match self {
            SchedFlag::ShPort => "sh-port",
            SchedFlag::ShFallback => "sh-fallback",
            SchedFlag::MhPort => "mh-port",
            SchedFlag::MhFallback => "mh-fallback",
        }
    }

    pub fn scheduler(self) -> Scheduler {
        match self {
            SchedFlag::ShPort | SchedFlag::ShFallback => Scheduler::Sh,
            SchedFlag::MhPort | SchedFlag::MhFallback => Scheduler::Mh,
        }
    }
}

/// `persistence_granularity`: an IPv4 netmask or an IPv6 prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    V4(u8),
    V6(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sorry {
    pub ip: Spanned<IpAddr>,
    pub port: Option<u16>,
}

/// `raw_check`: the inside of every `real_server` of the port.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RealServer {
    pub timers: Timers,
    pub weight: Option<u32>,
    pub inhibit_on_failure: Option<bool>,
    pub uthreshold: Option<Spanned<u32>>,
    pub lthreshold: Option<Spanned<u32>>,
    pub alpha: Option<bool>,
    pub virtualhost: Option<String>,
    pub checkers: Vec<Checker>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checker {
    pub kind: CheckerKind,
    /// The checker keyword's position (`TCP_CHECK`).
    pub pos: Pos,
    pub timers: Timers,
    pub alpha: Option<bool>,
    pub conn: ConnOpts,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnOpts {
    pub connect_ip: Option<Spanned<IpAddr>>,
    pub connect_port: Option<u16>,
    pub bindto: Option<Spanned<IpAddr>>,
    pub bind_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckerKind {
    Tcp,
    Http(HttpSpec),
    Ssl(HttpSpec),
    Misc(MiscSpec),
}

impl CheckerKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckerKind::Tcp => "TCP_CHECK",
            CheckerKind::Http(_) => "HTTP_GET",
            CheckerKind::Ssl(_) => "SSL_GET",
            CheckerKind::Misc(_) => "MISC_CHECK",
        }
    }

    /// keepalived's per-checker defaults when nothing up the chain sets them
    /// (check_api.c `queue_checker`, check_http.c, check_misc.c).
    pub fn default_retry(&self) -> u32 {
        match self {
            CheckerKind::Misc(_) => 0,
            _ => 1,
        }
    }

    pub fn default_delay_before_retry(&self) -> Duration {
        match self {
            CheckerKind::Http(_) | CheckerKind::Ssl(_) => Duration::from_secs(3),
            _ => Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpSpec {
    pub urls: Vec<UrlCheck>,
    pub virtualhost: Option<String>,
    pub http_protocol: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MiscSpec {
    pub argv: Vec<String>,
    pub timeout: Option<Duration>,
    pub dynamic: bool,
    pub user: Option<String>,
}

/// Lex and parse one pasted block. A folded (`>`) scalar joins lines, which destroys
/// keepalived's line structure, so it is refused.
pub fn statements(scalar: &Scalar, pos: Pos, diags: &mut Diags<'_>) -> Vec<parser::Statement> {
    if scalar.style == Style::Folded {
        diags.error(
            pos,
            "a folded block scalar (`>`) joins the lines of keepalived syntax",
            "a literal block scalar (`|`)",
        );
        return Vec::new();
    }
    let tokens = lexer::lex(&scalar.value, &scalar.origin, diags);
    parser::parse(&scalar.value, &tokens, diags)
}

/// Warn that a keyword given twice keeps its last value, as keepalived does.
pub(crate) fn note_repeat<T>(slot: &Option<T>, st: &parser::Statement, diags: &mut Diags<'_>) {
    if slot.is_some() {
        diags.warning(
            st.pos(),
            format!("`{}` given more than once; the last one wins", st.name()),
        );
    }
}
