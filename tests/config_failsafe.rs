//! `vip.failsafe` and `vip.mode`: what loads, what is refused, what `check` prints.

use alive_proxy::config::{self, LockPlan, Mode, Severity};

fn yaml(extra: &str, lock: &str, peers: &str) -> String {
    format!(
        r#"instances:
  - vip:
      vip: 192.0.2.100
      id: 20
      interface: "eth0"
      name: "vip-1"
{peers}{lock}{extra}    ipvs:
      ips: [ "198.51.100.1" ]
      ports:
        - port: 80
          virtual_server_config: |
            lb_algo rr
            lb_kind NAT
            protocol TCP
"#
    )
}

const PEERS: &str = "      peer: [ \"192.0.2.11\", \"192.0.2.12\" ]\n";
const ETCD: &str = "      etcd_lock:\n        endpoints: [ \"http://192.0.2.3:2379\" ]\n";

fn errors(text: &str, mode: Mode) -> Vec<String> {
    match config::load_str("t.yaml", text, mode) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .diagnostics()
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.headline())
            .collect(),
    }
}

#[test]
fn failsafe_with_a_lock_peers_and_a_key_loads_with_the_default_port() {
    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("failsafe.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("key");
    let extra = format!("      failsafe:\n        key_file: {}\n", key.display());
    let loaded = config::load_str("t.yaml", &yaml(&extra, ETCD, PEERS), Mode::Run).expect("loads");
    let inst = &loaded.plan.instances[0];
    let failsafe = inst.failsafe.as_ref().expect("failsafe on");
    assert_eq!(failsafe.port, 7411);
    assert_eq!(failsafe.key_file, key);
    assert!(matches!(inst.lock, LockPlan::Etcd(_)));
    let text = config::summary::render(&loaded.plan, 0);
    assert!(text.contains("failsafe: on, UDP port 7411"), "{text}");
    // The plan never carries the key itself (check --json prints the plan).
    let json = serde_json::to_string(&loaded.plan).expect("json");
    assert!(!json.contains("0123456789abcdef"), "{json}");
}

#[test]
fn failsafe_is_off_unless_configured() {
    let loaded = config::load_str("t.yaml", &yaml("", ETCD, PEERS), Mode::Run).expect("loads");
    assert_eq!(loaded.plan.instances[0].failsafe, None);
}

#[test]
fn failsafe_without_a_lock_without_peers_or_with_a_bad_key_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let short = dir.path().join("short.key");
    std::fs::write(&short, "too short\n").expect("key");
    let with =
        |path: &str| format!("      failsafe:\n        key_file: {path}\n        port: 7500\n");
    let no_lock = errors(&yaml(&with("/nonexistent"), "", PEERS), Mode::Run);
    assert!(
        no_lock.iter().any(|e| e.contains("failsafe needs a lease")),
        "{no_lock:?}"
    );
    let no_peers = errors(&yaml(&with("/nonexistent"), ETCD, ""), Mode::Run);
    assert!(
        no_peers.iter().any(|e| e.contains("failsafe needs `peer`")),
        "{no_peers:?}"
    );
    let short_key = errors(
        &yaml(&with(&short.to_string_lossy()), ETCD, PEERS),
        Mode::Run,
    );
    assert!(
        short_key.iter().any(|e| e.contains("fewer than 16 bytes")),
        "{short_key:?}"
    );
    let missing = errors(&yaml(&with("/nonexistent/key"), ETCD, PEERS), Mode::Run);
    assert!(
        missing.iter().any(|e| e.contains("cannot be read")),
        "{missing:?}"
    );
    // `check` on another machine: a missing key is a warning there, not an error.
    assert!(errors(&yaml(&with("/nonexistent/key"), ETCD, PEERS), Mode::Check).is_empty());
    let no_key = errors(
        &yaml("      failsafe:\n        port: 7500\n", ETCD, PEERS),
        Mode::Check,
    );
    assert!(
        no_key
            .iter()
            .any(|e| e.contains("failsafe has no `key_file`")),
        "{no_key:?}"
    );
}

#[test]
fn mode_vrrp_runs_vrrp_even_with_a_lock_and_says_the_lock_is_unused() {
    let loaded = config::load_str(
        "t.yaml",
        &yaml("      mode: vrrp\n", ETCD, PEERS),
        Mode::Run,
    )
    .expect("loads");
    match &loaded.plan.instances[0].lock {
        LockPlan::Vrrp(v) => assert_eq!(v.vrid, 20),
        other => panic!("VRRP expected, got {other:?}"),
    }
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.headline()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`mode: vrrp`: the lock is not used")),
        "{warnings:?}"
    );
    let lease = config::load_str(
        "t.yaml",
        &yaml("      mode: lease\n", ETCD, PEERS),
        Mode::Run,
    )
    .expect("loads");
    assert!(matches!(lease.plan.instances[0].lock, LockPlan::Etcd(_)));
    let no_peers = errors(&yaml("      mode: vrrp\n", ETCD, ""), Mode::Run);
    assert!(
        no_peers
            .iter()
            .any(|e| e.contains("`mode: vrrp` without `peer`")),
        "{no_peers:?}"
    );
    // A failsafe kept in the file for later is said to have no effect meanwhile.
    let extra = "      mode: vrrp\n      failsafe:\n        key_file: /nonexistent\n";
    let kept = config::load_str("t.yaml", &yaml(extra, ETCD, PEERS), Mode::Run).expect("loads");
    assert_eq!(kept.plan.instances[0].failsafe, None);
    assert!(
        kept.warnings.iter().any(|w| w
            .headline()
            .contains("`failsafe` has no effect under `mode: vrrp`")),
        "{:?}",
        kept.warnings
            .iter()
            .map(|w| w.headline())
            .collect::<Vec<_>>()
    );
    let unknown = errors(&yaml("      mode: bgp\n", ETCD, PEERS), Mode::Run);
    assert!(
        unknown.iter().any(|e| e.contains("unknown mode `bgp`")),
        "{unknown:?}"
    );
}

#[test]
fn two_instances_of_one_family_need_different_failsafe_ports() {
    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("failsafe.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("key");
    let extra = format!("      failsafe:\n        key_file: {}\n", key.display());
    let one = yaml(&extra, ETCD, PEERS);
    let second = one
        .replacen("instances:\n", "", 1)
        .replace("192.0.2.100", "192.0.2.101")
        .replace("id: 20", "id: 21")
        .replace("vip-1", "vip-2");
    let text = format!("{one}{second}");
    let errs = errors(&text, Mode::Run);
    assert!(
        errs.iter()
            .any(|e| e.contains("failsafe port 7411 is already used by instance `vip-1`")),
        "{errs:?}"
    );
}
