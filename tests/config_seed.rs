//! The seed `alive.yaml`, byte for byte, as operators write it today: it must load into the
//! plan issue 3 describes, and `alive-proxy check` must accept it and say so.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use alive_proxy::config::{self, CheckKind, LockPlan, Mode, Plan, Scheduler, Severity};

const SHARED_SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/seed/alive.yaml");
const FIXTURE_SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/config/valid/seed.yaml"
);

/// The shared seed when this checkout sits next to it, else the copy in the fixtures.
fn seed_path() -> PathBuf {
    if Path::new(SHARED_SEED).exists() {
        PathBuf::from(SHARED_SEED)
    } else {
        PathBuf::from(FIXTURE_SEED)
    }
}

fn load_seed() -> config::Loaded {
    match config::load(&seed_path(), Mode::Check) {
        Ok(loaded) => loaded,
        Err(e) => panic!("the seed must load in check mode:\n{e}"),
    }
}

const KUBECONFIGS: [&str; 3] = [
    "/live/cfg/kubecfg/kubecfg01.conf",
    "/live/cfg/kubecfg/kubecfg02.conf",
    "/live/cfg/kubecfg/kubecfg03.conf",
];

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn assert_instance(
    plan: &Plan,
    index: usize,
    vip: &str,
    id: u8,
    peers: &[&str],
    backends: &[&str],
    tcp_timeout: u64,
) {
    let inst = &plan.instances[index];
    assert_eq!(inst.vip, ip(vip), "VIP of instance {index}");
    assert_eq!(inst.id, Some(id), "id of instance {index}");
    assert_eq!(inst.interface, "eth0");
    assert_eq!(
        inst.check_interval,
        Duration::from_secs(1),
        "check_interval default 1"
    );
    assert_eq!(
        inst.check_timeout,
        Duration::from_secs(3),
        "check_timeout default 3"
    );
    assert_eq!(inst.peers, peers.iter().map(|p| ip(p)).collect::<Vec<_>>());
    match &inst.lock {
        LockPlan::Kube(k) => assert_eq!(
            k.kubeconfigs,
            KUBECONFIGS.iter().map(PathBuf::from).collect::<Vec<_>>(),
            "kubeconfigs in file order"
        ),
        other => panic!("instance {index} should use kube_lock, got {other:?}"),
    }
    assert_eq!(inst.services.len(), 1, "one port per instance");
    let svc = &inst.services[0];
    assert_eq!(svc.port, 80);
    assert_eq!(svc.scheduler, Scheduler::Rr);
    assert_eq!(
        svc.connect_timeout,
        Duration::from_secs(5),
        "keepalived default connect_timeout"
    );
    let addrs: Vec<SocketAddr> = svc.backends.iter().map(|b| b.addr).collect();
    let expected: Vec<SocketAddr> = backends
        .iter()
        .map(|b| SocketAddr::new(ip(b), 80))
        .collect();
    assert_eq!(
        addrs, expected,
        "3 backends on the service port, in file order"
    );
    for b in &svc.backends {
        assert_eq!(b.weight, 1);
        assert_eq!(b.checks.len(), 1, "one TCP_CHECK per backend");
        let check = &b.checks[0];
        assert_eq!(check.interval, Duration::from_secs(10), "delay_loop 10");
        assert_eq!(check.connect_timeout, Duration::from_secs(tcp_timeout));
        assert_eq!(check.retry, 1, "TCP_CHECK default retry");
        assert_eq!(
            check.delay_before_retry,
            Duration::from_secs(1),
            "TCP_CHECK default delay_before_retry"
        );
        match &check.kind {
            CheckKind::Tcp(t) => assert_eq!(t.connect, SocketAddr::new(b.addr.ip(), 1936)),
            other => panic!("expected TCP_CHECK, got {other:?}"),
        }
    }
}

#[test]
fn fixture_copy_is_the_seed_byte_for_byte() {
    if !Path::new(SHARED_SEED).exists() {
        return; // Checked out without ../shared: the copy is all there is.
    }
    let shared = std::fs::read(SHARED_SEED).expect("read shared seed");
    let copy = std::fs::read(FIXTURE_SEED).expect("read fixture seed");
    assert!(
        shared == copy,
        "tests/fixtures/config/valid/seed.yaml differs from ../shared/seed/alive.yaml"
    );
}

#[test]
fn seed_loads_into_both_vips_with_their_backends_and_tcp_checks() {
    let loaded = load_seed();
    let plan = &loaded.plan;
    assert_eq!(plan.instances.len(), 2);
    assert_instance(
        plan,
        0,
        "192.168.128.118",
        20,
        &["192.168.128.116", "192.168.128.75"],
        &["192.168.143.192", "192.168.138.100", "192.168.129.100"],
        10,
    );
    assert_instance(
        plan,
        1,
        "2004::192:168:128:118",
        102,
        &["2004::192:168:128:75", "2004::192:168:128:116"],
        &[
            "2004::192:168:143:192",
            "2004::192:168:138:100",
            "2004::192:168:129:100",
        ],
        1,
    );
    assert_eq!(plan.instances[0].name, "vip-1");
}

#[test]
fn seed_check_mode_warns_about_each_missing_kubeconfig() {
    if KUBECONFIGS.iter().any(|k| Path::new(k).exists()) {
        return; // A real LB host: nothing to warn about.
    }
    let loaded = load_seed();
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.headline()).collect();
    assert_eq!(
        warnings.len(),
        6,
        "one warning per kubeconfig per instance: {warnings:#?}"
    );
    assert!(
        loaded
            .warnings
            .iter()
            .all(|w| w.severity == Severity::Warning)
    );
    assert!(
        warnings[0].ends_with(":16:13: warning: kubeconfig /live/cfg/kubecfg/kubecfg01.conf does not exist; expected a readable kubeconfig file on this host"),
        "first warning names the line of the first kubeconfig: {}",
        warnings[0]
    );
}

#[test]
fn seed_run_mode_refuses_missing_kubeconfigs() {
    if KUBECONFIGS.iter().any(|k| Path::new(k).exists()) {
        return;
    }
    let err = config::load(&seed_path(), Mode::Run)
        .expect_err("run mode must refuse missing kubeconfigs");
    let errors: Vec<_> = err
        .diagnostics()
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert_eq!(errors.len(), 6, "{err}");
    assert!(
        errors[0].message.contains("kubecfg01.conf does not exist"),
        "{err}"
    );
}

#[test]
fn check_command_accepts_the_seed_and_prints_its_plan() {
    let out = Command::new(env!("CARGO_BIN_EXE_alive-proxy"))
        .args(["check", "-c"])
        .arg(seed_path())
        .output()
        .expect("run alive-proxy check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check must exit 0\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for needle in [
        "VIP 192.168.128.118 (IPv4) on interface eth0, id 20",
        "VIP 2004::192:168:128:118 (IPv6) on interface eth0, id 102",
        "scheduler rr",
        "backend 192.168.143.192:80: weight 1",
        "backend [2004::192:168:129:100]:80: weight 1",
        "TCP_CHECK connect 192.168.143.192:1936: delay_loop 10s, connect_timeout 10s",
        "TCP_CHECK connect [2004::192:168:143:192]:1936: delay_loop 10s, connect_timeout 1s",
    ] {
        assert!(
            stdout.contains(needle),
            "summary lacks {needle:?}:\n{stdout}"
        );
    }
    for inst in stdout.split("\ninstance ").skip(1) {
        let order: Vec<usize> = KUBECONFIGS
            .iter()
            .map(|k| {
                inst.find(k)
                    .unwrap_or_else(|| panic!("{k} missing from:\n{inst}"))
            })
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "kubeconfigs out of order:\n{inst}"
        );
    }
    assert_eq!(
        stdout.matches("TCP_CHECK").count(),
        6,
        "3 backends × 2 VIPs:\n{stdout}"
    );
    if !KUBECONFIGS.iter().any(|k| Path::new(k).exists()) {
        assert_eq!(
            stderr.matches("warning: kubeconfig").count(),
            6,
            "missing kubeconfigs are warnings on stderr:\n{stderr}"
        );
    }
}

#[test]
fn check_command_json_prints_the_plan() {
    let out = Command::new(env!("CARGO_BIN_EXE_alive-proxy"))
        .args(["check", "--json", "-c"])
        .arg(seed_path())
        .output()
        .expect("run alive-proxy check --json");
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(plan["instances"].as_array().map(|a| a.len()), Some(2));
    assert_eq!(plan["instances"][0]["services"][0]["scheduler"], "rr");
    assert_eq!(plan["instances"][1]["lock"]["backend"], "kube");
}

#[test]
fn check_command_fails_with_every_error_on_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("alive.yaml");
    let seed = std::fs::read_to_string(seed_path()).expect("read seed");
    let broken =
        seed.replacen("lb_kind NAT", "lb_kind DR", 1)
            .replacen("protocol TCP", "protocol UDP", 1);
    std::fs::write(&path, broken).expect("write broken config");
    let out = Command::new(env!("CARGO_BIN_EXE_alive-proxy"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run alive-proxy check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an invalid file must fail check");
    assert!(
        stderr.contains(":26:21: error: `lb_kind DR` is not supported"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":27:22: error: `protocol UDP` is not supported"),
        "{stderr}"
    );
    assert!(stderr.contains("2 errors in the configuration"), "{stderr}");
}
