//! Checker blocks inside `raw_check`: TCP_CHECK, HTTP_GET, SSL_GET (with `url { }` blocks)
//! and MISC_CHECK, with keepalived's keywords (check_api.c `install_checker_common_keywords`,
//! check_tcp.c, check_http.c, check_misc.c).

use std::time::Duration;

use super::grammar::{MAX_CONNECT_TIMEOUT, MAX_TIMER};
use super::lexer::split_command;
use super::parser::Statement;
use super::values::{self, arity, flag, one, switch, timer, uint};
use super::{Checker, CheckerKind, ConnOpts, HttpSpec, MiscSpec, Timers, note_repeat};
use crate::config::diagnostic::Diags;
use crate::config::plan::UrlCheck;

const MIN_POSITIVE: Duration = Duration::from_micros(1);

/// Checker-level keywords keepalived has and alive-proxy refuses, and why.
fn rejected_keyword(name: &str) -> Option<&'static str> {
    Some(match name {
        "bind_if" => "binding probes to an interface is not supported; use bindto with an address",
        "fwmark" => "socket marks on probes are not supported",
        "enable_sni" | "sni_name" => "SSL_GET probes send no SNI yet",
        "fast_recovery" => "not supported: a backend recovers after one successful probe",
        "tls_compliant" => "not supported",
        "regex" | "regex_no_match" | "regex_options" | "regex_min_offset" | "regex_max_offset"
        | "regex_stack" => {
            "alive-proxy does not match bodies against a regex; use digest or status_code"
        }
        _ => return None,
    })
}

/// Read one checker block. `None` when it is unusable (errors already reported).
pub fn parse(st: &Statement, diags: &mut Diags<'_>) -> Option<Checker> {
    let name = st.name();
    if let Some(extra) = st.args.first() {
        diags.error(
            extra.pos,
            format!("unexpected argument {} after `{name}`", extra.describe()),
            format!("`{name} {{`"),
        );
    }
    let Some(block) = &st.block else {
        diags.error(
            st.args_pos(),
            format!("`{name}` needs a `{{ ... }}` block"),
            format!("`{name} {{ ... }}`"),
        );
        return None;
    };
    let mut kind = match name {
        "TCP_CHECK" => CheckerKind::Tcp,
        "HTTP_GET" | "SSL_GET" => {
            let spec = HttpSpec {
                urls: Vec::new(),
                virtualhost: None,
                http_protocol: "1.0".to_string(),
            };
            if name == "SSL_GET" {
                CheckerKind::Ssl(spec)
            } else {
                CheckerKind::Http(spec)
            }
        }
        _ => CheckerKind::Misc(MiscSpec {
            argv: Vec::new(),
            timeout: None,
            dynamic: false,
            user: None,
        }),
    };
    let mut checker = Checker {
        kind: CheckerKind::Tcp,
        pos: st.pos(),
        timers: Timers::default(),
        alpha: None,
        conn: ConnOpts::default(),
    };
    let errors_before = diags.error_count();
    for inner in &block.statements {
        if common(&mut checker, &kind, inner, diags) {
            continue;
        }
        match &mut kind {
            CheckerKind::Http(spec) | CheckerKind::Ssl(spec) => {
                http_keyword(name, spec, inner, diags)
            }
            CheckerKind::Misc(spec) => misc_keyword(spec, inner, diags),
            CheckerKind::Tcp => unknown(name, inner, diags),
        }
    }
    if diags.error_count() > errors_before {
        return None;
    }
    match &kind {
        CheckerKind::Http(spec) | CheckerKind::Ssl(spec) if spec.urls.is_empty() => {
            diags.error(
                st.pos(),
                format!("`{name}` has no `url {{ path ... }}` block"),
                "at least one `url { path /PATH }`",
            );
            return None;
        }
        CheckerKind::Misc(spec) if spec.argv.is_empty() => {
            diags.error(
                st.pos(),
                "`MISC_CHECK` has no `misc_path`",
                "`misc_path \"/path/to/script ARGS\"`",
            );
            return None;
        }
        _ => {}
    }
    checker.kind = kind;
    Some(checker)
}

fn unknown(checker: &str, st: &Statement, diags: &mut Diags<'_>) {
    let name = st.name();
    if let Some(why) = rejected_keyword(name) {
        diags.error(st.pos(), format!("`{name}` is not supported: {why}"), "");
        return;
    }
    let expected = match checker {
        "TCP_CHECK" => {
            "a TCP_CHECK keyword: connect_ip, connect_port, bindto, bind_port, connect_timeout, retry, delay_before_retry, delay_loop, warmup, alpha"
        }
        "MISC_CHECK" => {
            "a MISC_CHECK keyword: misc_path, misc_timeout, misc_dynamic, user, retry, delay_before_retry, delay_loop, warmup, alpha"
        }
        _ => {
            "an HTTP_GET/SSL_GET keyword: url, virtualhost, http_protocol, connect_ip, connect_port, bindto, bind_port, connect_timeout, retry, delay_before_retry, delay_loop, warmup, alpha"
        }
    };
    diags.error(
        st.pos(),
        format!("unknown keyword `{name}` in {checker}"),
        expected,
    );
}

/// Keywords every checker has (and the connection ones, except for MISC_CHECK). Returns
/// true when `st` was one of them.
fn common(
    checker: &mut Checker,
    kind: &CheckerKind,
    st: &Statement,
    diags: &mut Diags<'_>,
) -> bool {
    let connection = !matches!(kind, CheckerKind::Misc(_));
    let t = &mut checker.timers;
    match st.name() {
        "retry" => {
            note_repeat(&t.retry, st, diags);
            t.retry = uint(st, 0, u32::MAX, "retry COUNT", diags)
                .map(|v| v.value)
                .or(t.retry);
        }
        "nb_get_retry" if matches!(kind, CheckerKind::Http(_) | CheckerKind::Ssl(_)) => {
            diags.warning(st.pos(), "`nb_get_retry` is deprecated; use `retry`");
            t.retry = uint(st, 0, u32::MAX, "nb_get_retry COUNT", diags)
                .map(|v| v.value)
                .or(t.retry);
        }
        "delay_before_retry" => {
            note_repeat(&t.delay_before_retry, st, diags);
            t.delay_before_retry = timer(st, Duration::ZERO, MAX_TIMER, diags)
                .map(|v| v.value)
                .or(t.delay_before_retry);
        }
        "warmup" => {
            note_repeat(&t.warmup, st, diags);
            t.warmup = timer(st, Duration::ZERO, MAX_TIMER, diags)
                .map(|v| v.value)
                .or(t.warmup);
        }
        "delay_loop" => {
            note_repeat(&t.delay_loop, st, diags);
            t.delay_loop = timer(st, MIN_POSITIVE, MAX_TIMER, diags)
                .map(|v| v.value)
                .or(t.delay_loop);
        }
        "alpha" => checker.alpha = switch(st, diags).or(checker.alpha),
        "log_all_failures" => {
            if switch(st, diags).is_some() {
                diags.warning(
                    st.pos(),
                    "`log_all_failures` has no effect: alive-proxy logs every state change and counts every failure",
                );
            }
        }
        "connect_timeout" if connection => {
            note_repeat(&t.connect_timeout, st, diags);
            t.connect_timeout = timer(st, MIN_POSITIVE, MAX_CONNECT_TIMEOUT, diags)
                .map(|v| v.value)
                .or(t.connect_timeout);
        }
        "connect_ip" if connection => {
            if let Some(arg) = one(st, "connect_ip IP", diags) {
                checker.conn.connect_ip = values::ip_value("connect_ip", arg, diags);
            }
        }
        "connect_port" if connection => {
            if let Some(arg) = one(st, "connect_port PORT", diags) {
                checker.conn.connect_port =
                    values::port_value("connect_port", arg, diags).map(|p| p.value);
            }
        }
        "bindto" if connection => {
            if let Some(arg) = one(st, "bindto IP", diags) {
                checker.conn.bindto = values::ip_value("bindto", arg, diags);
            }
        }
        "bind_port" if connection => {
            if let Some(arg) = one(st, "bind_port PORT", diags) {
                checker.conn.bind_port =
                    values::port_value("bind_port", arg, diags).map(|p| p.value);
            }
        }
        _ => return false,
    }
    true
}

fn http_keyword(checker: &str, spec: &mut HttpSpec, st: &Statement, diags: &mut Diags<'_>) {
    match st.name() {
        "virtualhost" => {
            if let Some(v) = values::string(st, "virtualhost HOSTNAME", diags) {
                spec.virtualhost = Some(v.value);
            }
        }
        "http_protocol" => {
            if let Some(arg) = one(st, "http_protocol 1.0|1.0C|1.1", diags) {
                match arg.value {
                    "1.0" | "1.1" => spec.http_protocol = arg.value.to_string(),
                    "1.0C" | "1.0c" => spec.http_protocol = "1.0C".to_string(),
                    other => diags.error(
                        arg.pos,
                        format!("unknown http_protocol `{other}`"),
                        "1.0, 1.0C or 1.1",
                    ),
                }
            }
        }
        "url" => {
            if let Some(url) = url_block(st, diags) {
                spec.urls.push(url);
            }
        }
        _ => unknown(checker, st, diags),
    }
}

fn url_block(st: &Statement, diags: &mut Diags<'_>) -> Option<UrlCheck> {
    if let Some(extra) = st.args.first() {
        diags.error(
            extra.pos,
            format!("unexpected argument {} after `url`", extra.describe()),
            "`url {`",
        );
        return None;
    }
    let Some(block) = &st.block else {
        diags.error(
            st.args_pos(),
            "`url` needs a `{ ... }` block",
            "`url { path /PATH }`",
        );
        return None;
    };
    let mut path: Option<String> = None;
    let mut digest: Option<String> = None;
    let mut status: Vec<(u16, u16)> = Vec::new();
    let mut virtualhost: Option<String> = None;
    for inner in &block.statements {
        match inner.name() {
            "path" => {
                note_repeat(&path, inner, diags);
                if let Some(v) = values::string(inner, "path /PATH", diags) {
                    path = Some(v.value);
                }
            }
            "digest" => {
                note_repeat(&digest, inner, diags);
                if let Some(arg) = one(inner, "digest MD5HEX", diags) {
                    if arg.value.len() == 32 && arg.value.bytes().all(|b| b.is_ascii_hexdigit()) {
                        digest = Some(arg.value.to_ascii_lowercase());
                    } else {
                        diags.error(
                            arg.pos,
                            format!("invalid digest `{}`", arg.value),
                            "32 hexadecimal digits (an MD5 sum of the body)",
                        );
                    }
                }
            }
            "status_code" => {
                if arity(inner, 1, usize::MAX, "status_code CODE|FROM-TO ...", diags) {
                    for tok in &inner.args {
                        let text = tok.text().unwrap_or("");
                        match status_range(text) {
                            Some(r) => status.push(r),
                            None => diags.error(
                                tok.pos,
                                format!("invalid status_code `{text}`"),
                                "a code 100..599 or a range such as 200-299",
                            ),
                        }
                    }
                }
            }
            "virtualhost" => {
                if let Some(v) = values::string(inner, "virtualhost HOSTNAME", diags) {
                    virtualhost = Some(v.value);
                }
            }
            name => {
                if let Some(why) = rejected_keyword(name) {
                    diags.error(inner.pos(), format!("`{name}` is not supported: {why}"), "");
                } else {
                    diags.error(
                        inner.pos(),
                        format!("unknown keyword `{name}` in url"),
                        "path, digest, status_code or virtualhost",
                    );
                }
            }
        }
    }
    let Some(path) = path else {
        diags.error(
            st.pos(),
            "`url` has no `path`",
            "`path /PATH` inside `url { }`",
        );
        return None;
    };
    if status.is_empty() {
        status.push((200, 299));
    }
    Some(UrlCheck {
        path,
        status,
        digest,
        virtualhost,
    })
}

/// `200`, or `200-299`, within keepalived's 100..=599.
fn status_range(text: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (a, b),
        None => (text, text),
    };
    let num = |s: &str| -> Option<u16> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 3 {
            return None;
        }
        s.parse().ok().filter(|v| (100..=599).contains(v))
    };
    let (lo, hi) = (num(lo)?, num(hi)?);
    (lo <= hi).then_some((lo, hi))
}

fn misc_keyword(spec: &mut MiscSpec, st: &Statement, diags: &mut Diags<'_>) {
    match st.name() {
        "misc_path" => {
            if !arity(
                st,
                1,
                usize::MAX,
                "misc_path \"/path/to/script ARGS\"",
                diags,
            ) {
                return;
            }
            // An odd number of double quotes was already reported by the lexer: read the
            // command as if it were closed, so it is not reported again as missing.
            if st.raw_args.matches('"').count() % 2 == 1 {
                let closed = format!("{}\"", st.raw_args);
                if let Some(first) = split_command(&closed, false)
                    .ok()
                    .and_then(|w| w.into_iter().next())
                {
                    spec.argv = split_command(&first, true).unwrap_or_default();
                }
                return;
            }
            // keepalived splits the line with quotes kept as grouping, takes the first word
            // and splits that again with escapes (notify.c set_script_params_array).
            let outer = match split_command(&st.raw_args, false) {
                Ok(words) => words,
                Err(why) => {
                    diags.error(
                        st.args_pos(),
                        format!("misc_path cannot be split: {why}"),
                        "a command line with balanced quotes",
                    );
                    return;
                }
            };
            if let (Some(_), Some(extra)) = (outer.first(), st.args.get(1))
                && outer.len() > 1
            {
                diags.error(
                        extra.pos,
                        "misc_path has words after the command; keepalived would silently drop them",
                        "the whole command line in double quotes: misc_path \"/path/to/script ARG ...\"",
                    );
                return;
            }
            match outer.first().map(|w| split_command(w, true)) {
                Some(Ok(argv)) if !argv.is_empty() => spec.argv = argv,
                Some(Err(why)) => diags.error(
                    st.args_pos(),
                    format!("misc_path cannot be split: {why}"),
                    "a command line with balanced quotes",
                ),
                _ => diags.error(
                    st.args_pos(),
                    "misc_path is empty",
                    "misc_path \"/path/to/script ARGS\"",
                ),
            }
        }
        "misc_timeout" => {
            if let Some(v) = uint(st, 0, u32::MAX, "misc_timeout SECONDS", diags) {
                spec.timeout = (v.value > 0).then(|| Duration::from_secs(u64::from(v.value)));
            }
        }
        "misc_dynamic" => spec.dynamic |= flag(st, diags),
        "user" => {
            if arity(st, 1, 2, "user USERNAME [GROUPNAME]", diags) {
                let user = st.args.first().and_then(|t| t.text()).unwrap_or("");
                spec.user = Some(match st.args.get(1).and_then(|t| t.text()) {
                    Some(group) => format!("{user}:{group}"),
                    None => user.to_string(),
                });
            }
        }
        _ => unknown("MISC_CHECK", st, diags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_single_or_ranges_within_100_599() {
        assert_eq!(status_range("200"), Some((200, 200)));
        assert_eq!(status_range("200-299"), Some((200, 299)));
        assert_eq!(status_range("299-200"), None);
        assert_eq!(status_range("600"), None);
        assert_eq!(status_range("2x0"), None);
        assert_eq!(status_range("-"), None);
    }
}
