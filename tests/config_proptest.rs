//! Robustness of the config loader: arbitrary text, keepalived-like token soup inside the
//! pasted blocks, and random edits of the seed never panic, and every diagnostic points into
//! the file. Cases are bounded for `cargo test`; raise them with PROPTEST_CASES for a long
//! run (see docs/config.md).

use alive_proxy::config::{self, Mode};
use proptest::prelude::*;

const SEED: &str = include_str!("fixtures/config/valid/seed.yaml");

/// Every diagnostic must name a line of the file (or the line just past its end) and a
/// column of at least 1.
fn check_positions(text: &str) {
    let lines = alive_proxy::config::diagnostic::split_lines(text).len();
    if let Err(e) = config::load_str("p.yaml", text, Mode::Check) {
        for d in e.diagnostics() {
            assert!(
                d.pos.line >= 1 && d.pos.line <= lines + 1,
                "{} outside a {lines}-line file",
                d.headline()
            );
            assert!(d.pos.col >= 1, "{}", d.headline());
            let _ = d.to_string();
        }
    }
}

fn keepalived_token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("\n".to_string()),
        Just(" ".to_string()),
        Just("\t".to_string()),
        Just("#".to_string()),
        Just("!".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("\\".to_string()),
        Just("\\\n".to_string()),
        prop::sample::select(vec![
            "TCP_CHECK",
            "HTTP_GET",
            "SSL_GET",
            "MISC_CHECK",
            "url",
            "path",
            "digest",
            "status_code",
            "connect_port",
            "connect_ip",
            "bindto",
            "bind_port",
            "connect_timeout",
            "delay_loop",
            "retry",
            "delay_before_retry",
            "warmup",
            "weight",
            "lb_algo",
            "lb_kind",
            "protocol",
            "quorum",
            "hysteresis",
            "sorry_server",
            "persistence_timeout",
            "persistence_granularity",
            "misc_path",
            "misc_timeout",
            "misc_dynamic",
            "user",
            "alpha",
            "omega",
            "inhibit_on_failure",
            "uthreshold",
            "lthreshold",
            "sh-port",
            "sh-fallback",
            "mh-fallback",
            "ip_family",
            "virtualhost",
            "http_protocol",
            "nb_get_retry",
            "real_server",
            "NAT",
            "DR",
            "TCP",
            "UDP",
            "rr",
            "sh",
            "mh",
            "inet6",
            "0",
            "1",
            "0.5",
            "1.0000001",
            "65535",
            "65536",
            "200-299",
            "99",
            "255.255.255.0",
            "64",
            "192.0.2.1",
            "2001:db8::1",
            "\"/bin/x 'a b'\"",
            "9B3A0C85A887A256D6939DA88AABD8CD",
            "é",
            "\u{0}",
        ])
        .prop_map(str::to_string),
    ]
}

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(keepalived_token(), 0..80).prop_map(|t| t.concat())
}

/// The soup as a literal block scalar at the seed's indentation.
fn as_block(soup: &str) -> String {
    let mut s = String::new();
    for line in soup.split('\n') {
        s.push_str("            ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

fn config_with(vs: &str, rc: &str) -> String {
    format!(
        "instances:\n  - vip:\n      vip: 192.0.2.10\n      interface: eth0\n    ipvs:\n      ips: [ \"198.51.100.1\" ]\n      ports:\n        - port: 80\n          virtual_server_config: |\n{}          raw_check: |\n{}",
        as_block(vs),
        as_block(rc)
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check_positions(&text);
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_positions(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn keepalived_token_soup_never_panics(vs in soup(), rc in soup()) {
        check_positions(&config_with(&vs, &rc));
    }

    #[test]
    fn edited_seed_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, "[ -~\\n\\t{}\"#!:|>-]{0,3}"), 1..6)
    ) {
        let mut text: Vec<char> = SEED.chars().collect();
        for (at, op, insert) in edits {
            let i = at.index(text.len() + 1);
            match op {
                0 => { text.splice(i..i, insert.chars()); }
                1 if i < text.len() => { text.remove(i); }
                _ if i < text.len() => { text.splice(i..i + 1, insert.chars()); }
                _ => {}
            }
        }
        check_positions(&text.into_iter().collect::<String>());
    }
}

#[test]
fn a_valid_soup_free_config_still_loads() {
    // The generator's template itself is valid: failures above come from the soup.
    let text = config_with("lb_algo rr\n", "TCP_CHECK {\n    connect_port 1936\n}\n");
    if let Err(e) = config::load_str("p.yaml", &text, Mode::Check) {
        panic!("template must load:\n{e}");
    }
}
