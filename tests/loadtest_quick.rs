//! The load-test harness's `--quick` pipeline runs end to end and leaves results that are
//! present and plausible: every arm measured in every phase, requests and bytes counted,
//! errors counted, the failover scenario measured, the plots written. Never their speed
//! (that is what the full run and docs/performance.md are for); the binaries are this
//! build's debug ones.
//!
//! Run: `cargo test --test loadtest_quick -- --nocapture`

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn records<'a>(results: &'a Value, phase: &str) -> &'a Vec<Value> {
    results[phase]
        .as_array()
        .unwrap_or_else(|| panic!("results.json has no {phase} records"))
}

#[test]
fn quick_run_measures_every_arm_in_every_phase_and_writes_the_report() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_alive-proxy"))
        .parent()
        .expect("binary directory");
    assert!(
        Path::new(env!("CARGO_BIN_EXE_alive-load")).exists()
            && Path::new(env!("CARGO_BIN_EXE_alive-backend")).exists()
    );
    let out = tempfile::tempdir().expect("out dir");
    let work = tempfile::tempdir().expect("work dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/bench.py");
    let run = Command::new("python3")
        .arg(&script)
        .args(["--quick", "--no-build", "--no-install", "--binaries"])
        .arg(bin_dir)
        .arg("--out")
        .arg(out.path())
        .env("TMPDIR", work.path())
        .output()
        .expect("run python3 loadtest/bench.py");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench.py --quick failed:\n{stderr}");
    let text = std::fs::read_to_string(out.path().join("results.json")).expect("results.json");
    let results: Value = serde_json::from_str(&text).expect("results.json is JSON");

    let arms = [
        "direct",
        "alive-proxy",
        "haproxy",
        "haproxy-smart",
        "nginx-stream",
    ];
    for arm in arms {
        for workload in ["keepalive", "newconn", "bulk"] {
            let run = records(&results, "closed")
                .iter()
                .find(|r| r["target"] == arm && r["workload"] == workload)
                .unwrap_or_else(|| panic!("no closed-loop run of {workload} on {arm}"));
            let done = if workload == "bulk" {
                run["bytes"].as_f64()
            } else {
                run["requests"].as_f64()
            };
            assert!(
                done.is_some_and(|d| d > 0.0),
                "{arm}/{workload} did nothing: {run}"
            );
            assert!(run["socket_errors"].is_u64(), "errors not counted: {run}");
            if arm != "direct" {
                assert!(
                    run["proxy_cpu_s"].as_f64().is_some_and(|c| c > 0.0),
                    "{arm}/{workload}: no proxy CPU measured: {run}"
                );
            }
        }
        let fractions: Vec<f64> = records(&results, "latency")
            .iter()
            .filter(|r| r["target"] == arm && r["requests"].as_u64().is_some_and(|n| n > 0))
            .filter(|r| r["latency_ms"]["p50"].as_f64().is_some_and(|ms| ms > 0.0))
            .filter_map(|r| r["fraction"].as_f64())
            .collect();
        assert_eq!(fractions.len(), 3, "{arm}: latency runs {fractions:?}");
    }
    for arm in &arms[1..] {
        let memory = records(&results, "memory")
            .iter()
            .find(|r| r["target"] == *arm)
            .unwrap_or_else(|| panic!("no memory figure for {arm}"));
        assert!(
            memory["connections"].as_u64().is_some_and(|n| n >= 400),
            "{arm}: too few idle connections held: {memory}"
        );
        assert!(
            memory["bytes_per_conn"].as_f64().is_some_and(|b| b > 0.0),
            "{arm}: no memory growth measured: {memory}"
        );
    }
    for event in ["death", "sigterm"] {
        let fo = records(&results, "failover")
            .iter()
            .find(|r| r["mode"] == "etcd" && r["event"] == event)
            .unwrap_or_else(|| panic!("no etcd {event} failover measured: {stderr}"));
        assert!(
            fo["outage_s"].as_f64().is_some_and(f64::is_finite),
            "etcd {event}: the client never got through again: {fo}"
        );
        assert!(
            fo["probes"].as_u64().is_some_and(|n| n > 50),
            "etcd {event}: too few probes: {fo}"
        );
        assert!(
            fo["long_connections"].as_u64().is_some_and(|n| n > 0),
            "{fo}"
        );
    }
    let md = std::fs::read_to_string(out.path().join("results.md")).expect("results.md");
    for heading in [
        "## Closed loop",
        "## Latency",
        "## Memory",
        "## Failover",
        "## Plots",
    ] {
        assert!(md.contains(heading), "results.md lacks {heading}:\n{md}");
    }
    for plot in [
        "latency-50pct.svg",
        "per-cpu.svg",
        "failover.svg",
        "memory.svg",
    ] {
        let svg = std::fs::read_to_string(out.path().join(plot)).unwrap_or_default();
        assert!(
            svg.starts_with("<svg") && svg.ends_with("</svg>"),
            "{plot} missing or cut"
        );
    }
}
