//! Arbitrary text as the keepalived syntax of `virtual_server_config` and `raw_check`
//! (split at the first NUL byte), pasted into a valid alive.yaml as literal blocks: the
//! keepalived lexer, parser and keyword readers must never panic.
#![no_main]

use alive_proxy::config::{self, Mode};
use libfuzzer_sys::fuzz_target;

fn block(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(|l| format!("            {l}\n"))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (vs, rc) = text.split_once('\0').unwrap_or((&text, ""));
    let yaml = format!(
        "instances:\n  - vip:\n      vip: 192.0.2.10\n      interface: eth0\n    ipvs:\n      ips: [ \"198.51.100.1\", \"198.51.100.2\" ]\n      ports:\n        - port: 80\n          virtual_server_config: |\n{}          raw_check: |\n{}",
        block(vs),
        block(rc)
    );
    let _ = config::load_str("fuzz.yaml", &yaml, Mode::Check);
});
