//! Arbitrary bytes on the admin socket: the daemon's answer is always exactly one line of
//! JSON, and the client's parser takes any line (a real answer or garbage) without panicking,
//! accepting a snapshot only when one was asked for.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use alive_proxy::stats::StatsRegistry;
use alive_proxy::stats::socket::{SNAPSHOT, parse_snapshot_reply, reply};
use libfuzzer_sys::fuzz_target;

fn registry() -> &'static Arc<StatsRegistry> {
    static REGISTRY: OnceLock<Arc<StatsRegistry>> = OnceLock::new();
    REGISTRY.get_or_init(StatsRegistry::new)
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/fuzz/admin.sock");
    let answer = reply(data, registry());
    assert!(answer.ends_with('\n'), "{answer:?}");
    assert_eq!(answer.matches('\n').count(), 1, "{answer:?}");
    let asked_for_snapshot = data
        .split(|&b| b == b'\n')
        .next()
        .and_then(|line| std::str::from_utf8(line).ok())
        .is_some_and(|line| line.trim() == SNAPSHOT);
    assert_eq!(
        parse_snapshot_reply(path, &answer).is_ok(),
        asked_for_snapshot,
        "request {data:?} answered {answer:?}"
    );
    let _ = parse_snapshot_reply(path, &String::from_utf8_lossy(data));
});
