//! Reading a statement's arguments as keepalived reads them: timers with up to six decimal
//! places (`read_timer`), unsigned integers in a range (`read_unsigned_strvec`), the
//! true/false/on/off/yes/no switches (`check_true_false`), addresses and ports. Each reader
//! reports a diagnostic at the offending token and returns `None`.

use std::net::IpAddr;
use std::time::Duration;

use super::Spanned;
use super::parser::Statement;
use crate::config::diagnostic::Diags;

/// Complain about a block after a keyword that takes none. Returns true when there was one.
pub fn reject_block(st: &Statement, diags: &mut Diags<'_>) -> bool {
    if let Some(block) = &st.block {
        diags.error(
            block.open,
            format!("`{}` does not take a `{{ }}` block", st.name()),
            format!("`{}` with its value on one line", st.name()),
        );
        return true;
    }
    false
}

/// Check the argument count; `usage` is how the statement is written, e.g.
/// `delay_loop SECONDS`.
pub fn arity(st: &Statement, min: usize, max: usize, usage: &str, diags: &mut Diags<'_>) -> bool {
    if reject_block(st, diags) {
        return false;
    }
    if st.args.len() < min {
        diags.error(
            st.args_pos(),
            format!("`{}` is missing its value", st.name()),
            format!("`{usage}`"),
        );
        return false;
    }
    if let Some(extra) = st.args.get(max) {
        diags.error(
            extra.pos,
            format!(
                "unexpected extra argument {} to `{}`",
                extra.describe(),
                st.name()
            ),
            format!("`{usage}`"),
        );
        return false;
    }
    true
}

/// The single argument of `KEYWORD VALUE`.
pub fn one<'s>(st: &'s Statement, usage: &str, diags: &mut Diags<'_>) -> Option<Spanned<&'s str>> {
    if !arity(st, 1, 1, usage, diags) {
        return None;
    }
    let tok = st.args.first()?;
    Some(Spanned {
        value: tok.text().unwrap_or(""),
        pos: tok.pos,
    })
}

/// keepalived's timer syntax: seconds with up to six decimal places (`0.5`, `3`, `.25`).
pub fn parse_timer(s: &str) -> Result<Duration, &'static str> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return Err("not a number");
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a non-negative number of seconds");
    }
    if frac.len() > 6 {
        return Err("more than six decimal places");
    }
    let secs: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| "too large")?
    };
    if secs > u64::from(u32::MAX) {
        return Err("too large");
    }
    let micros: u32 = if frac.is_empty() {
        0
    } else {
        let padded = format!("{frac:0<6}");
        padded.parse().map_err(|_| "not a number")?
    };
    Ok(Duration::from_secs(secs) + Duration::from_micros(u64::from(micros)))
}

/// A timer statement (`delay_loop 10`, `connect_timeout 0.5`); `min` is the smallest accepted
/// value (keepalived refuses 0 for delay_loop and connect_timeout).
pub fn timer(
    st: &Statement,
    min: Duration,
    max: Duration,
    diags: &mut Diags<'_>,
) -> Option<Spanned<Duration>> {
    let usage = format!("{} SECONDS", st.name());
    let arg = one(st, &usage, diags)?;
    let expected = if min.is_zero() {
        "a number of seconds such as 3 or 0.5"
    } else {
        "a number of seconds greater than 0, such as 3 or 0.5"
    };
    match parse_timer(arg.value) {
        Ok(d) if d >= min && d <= max => Some(Spanned {
            value: d,
            pos: arg.pos,
        }),
        Ok(d) if d > max => {
            diags.error(
                arg.pos,
                format!(
                    "`{}` value `{}` is too large (at most {} s)",
                    st.name(),
                    arg.value,
                    max.as_secs()
                ),
                expected,
            );
            None
        }
        Ok(_) => {
            diags.error(
                arg.pos,
                format!("`{}` value `{}` is too small", st.name(), arg.value),
                expected,
            );
            None
        }
        Err(why) => {
            diags.error(
                arg.pos,
                format!("invalid `{}` value `{}`: {why}", st.name(), arg.value),
                expected,
            );
            None
        }
    }
}

/// An unsigned integer statement within `min..=max`.
pub fn uint(
    st: &Statement,
    min: u32,
    max: u32,
    usage: &str,
    diags: &mut Diags<'_>,
) -> Option<Spanned<u32>> {
    let arg = one(st, usage, diags)?;
    uint_value(st.name(), arg, min, max, diags)
}

pub fn uint_value(
    name: &str,
    arg: Spanned<&str>,
    min: u32,
    max: u32,
    diags: &mut Diags<'_>,
) -> Option<Spanned<u32>> {
    let expected = format!("an integer from {min} to {max}");
    let parsed = if arg.value.bytes().all(|b| b.is_ascii_digit()) && !arg.value.is_empty() {
        arg.value.parse::<u64>().ok()
    } else {
        None
    };
    match parsed {
        Some(v) if v >= u64::from(min) && v <= u64::from(max) => Some(Spanned {
            value: v as u32,
            pos: arg.pos,
        }),
        Some(_) => {
            diags.error(
                arg.pos,
                format!("`{name}` value `{}` is out of range", arg.value),
                expected,
            );
            None
        }
        None => {
            diags.error(
                arg.pos,
                format!("invalid `{name}` value `{}`", arg.value),
                expected,
            );
            None
        }
    }
}

/// A switch: alone it means true; otherwise true/on/yes or false/off/no.
pub fn switch(st: &Statement, diags: &mut Diags<'_>) -> Option<bool> {
    let usage = format!("{} [true|false]", st.name());
    if !arity(st, 0, 1, &usage, diags) {
        return None;
    }
    let Some(tok) = st.args.first() else {
        return Some(true);
    };
    match tok.text().unwrap_or("") {
        "true" | "on" | "yes" => Some(true),
        "false" | "off" | "no" => Some(false),
        other => {
            diags.error(
                tok.pos,
                format!("invalid `{}` value `{other}`", st.name()),
                "nothing, or one of true, false, on, off, yes, no",
            );
            None
        }
    }
}

/// A flag that takes no argument at all (`alpha` at virtual_server level, `misc_dynamic`).
pub fn flag(st: &Statement, diags: &mut Diags<'_>) -> bool {
    arity(st, 0, 0, st.name(), diags)
}

pub fn ip_value(name: &str, arg: Spanned<&str>, diags: &mut Diags<'_>) -> Option<Spanned<IpAddr>> {
    match arg.value.parse::<IpAddr>() {
        Ok(ip) => Some(Spanned {
            value: ip,
            pos: arg.pos,
        }),
        Err(_) => {
            diags.error(
                arg.pos,
                format!("invalid `{name}` address `{}`", arg.value),
                "an IPv4 or IPv6 address",
            );
            None
        }
    }
}

pub fn port_value(name: &str, arg: Spanned<&str>, diags: &mut Diags<'_>) -> Option<Spanned<u16>> {
    uint_value(name, arg, 1, 65535, diags).map(|v| Spanned {
        value: v.value as u16,
        pos: v.pos,
    })
}

/// A free-text value (`virtualhost`, `path`): exactly one word or quoted string.
pub fn string(st: &Statement, usage: &str, diags: &mut Diags<'_>) -> Option<Spanned<String>> {
    one(st, usage, diags).map(|a| Spanned {
        value: a.value.to_string(),
        pos: a.pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_accept_fractions_like_keepalived() {
        assert_eq!(parse_timer("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_timer("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timer(".25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timer("2."), Ok(Duration::from_secs(2)));
        assert_eq!(
            parse_timer("1.000001"),
            Ok(Duration::from_micros(1_000_001))
        );
        assert!(parse_timer("1.0000001").is_err());
        assert!(parse_timer("-1").is_err());
        assert!(parse_timer(".").is_err());
        assert!(parse_timer("1e3").is_err());
        assert!(parse_timer("99999999999999999999999").is_err());
    }
}
