//! Arbitrary bytes as alive.yaml: the YAML loader, the keepalived blocks inside it and the
//! validation must never panic, and every diagnostic must point into the file.
#![no_main]

use alive_proxy::config::{self, Mode, diagnostic::split_lines};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = config::load_str("fuzz.yaml", &text, Mode::Check) {
        let lines = split_lines(&text).len();
        for d in e.diagnostics() {
            assert!(
                d.pos.line >= 1 && d.pos.line <= lines + 1,
                "{}",
                d.headline()
            );
            assert!(d.pos.col >= 1, "{}", d.headline());
            let _ = d.to_string();
        }
    }
});
