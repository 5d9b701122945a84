//! The in-tree Kubernetes API test server (tests/support/kube_api.rs) checked against the
//! real client: Debian's `kubectl` with the generated admin.conf-style kubeconfig. If kubectl
//! accepts the server's discovery, objects, errors and authentication, the kube-rs lease
//! store tested against the same server is tested against something faithful.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::kube_api::{Access, ClientSpec, KubeApi};

const NS: &str = "kube-system";

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        format!("stdout: {}\nstderr: {}", self.stdout, self.stderr)
    }
}

/// The installed kubectl's minor version (Debian 12's kubernetes-client is 1.20).
fn kubectl_minor() -> u32 {
    static MINOR: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MINOR.get_or_init(|| {
        let out = Command::new("kubectl")
            .args(["version", "--client", "-o", "json"])
            .output()
            .expect("kubectl must be installed (Debian: kubernetes-client)");
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("kubectl version -o json");
        json["clientVersion"]["minor"]
            .as_str()
            .and_then(|m| m.trim_end_matches('+').parse().ok())
            .expect("kubectl client minor version")
    })
}

/// Whether kubectl validates on the server (1.25+: `fieldValidation`, OpenAPI v3).
/// Older clients validate locally from the protobuf /openapi/v2 document, which the test
/// server does not serve; they get `--validate=false`, as lab-notes prescribes.
fn validates_on_the_server() -> bool {
    kubectl_minor() >= 25
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=20s")
        .args(args);
    let writes = matches!(args.first(), Some(&("create" | "apply" | "replace")));
    if writes && !validates_on_the_server() {
        cmd.arg("--validate=false");
    }
    cmd.env_remove("KUBECONFIG")
        .env("HOME", kubeconfig.parent().unwrap_or(Path::new("/tmp")))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("kubectl must be installed (Debian: kubernetes-client)");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("kubectl stdin");
        pipe.write_all(text.as_bytes())
            .expect("write kubectl stdin");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("kubectl ran");
    Run {
        ok: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn lease_yaml(name: &str, holder: &str, extra_metadata: &str) -> String {
    format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {name}\n  namespace: {NS}\n{extra_metadata}spec:\n  holderIdentity: {holder}\n  leaseDurationSeconds: 15\n"
    )
}

fn holder_of(api: &KubeApi, name: &str) -> Option<String> {
    api.lease(NS, name)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
}

#[test]
fn kubectl_reads_server_version_through_discovery() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    let run = kubectl(&cfg, &["version", "-o", "json"], None);
    assert!(run.ok, "kubectl version failed: {}", run.text());
    assert!(
        run.stdout.contains("v1.32.0-alive-test"),
        "server version missing: {}",
        run.text()
    );
    let run = kubectl(
        &cfg,
        &["api-resources", "--api-group=coordination.k8s.io"],
        None,
    );
    assert!(run.ok, "api-resources failed: {}", run.text());
    assert!(
        run.stdout.contains("leases"),
        "leases not discovered: {}",
        run.text()
    );
}

#[test]
fn kubectl_creates_gets_lists_and_deletes_a_lease() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    let run = kubectl(
        &cfg,
        &["create", "-f", "-"],
        Some(&lease_yaml("vip-a", "lb1", "")),
    );
    assert!(run.ok, "create failed: {}", run.text());
    assert_eq!(holder_of(&api, "vip-a").as_deref(), Some("lb1"));

    let run = kubectl(
        &cfg,
        &[
            "get",
            "lease",
            "vip-a",
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    assert!(run.ok, "get failed: {}", run.text());
    assert_eq!(run.stdout, "lb1", "get returned the wrong holder");

    let run = kubectl(&cfg, &["get", "leases", "-A"], None);
    assert!(
        run.ok && run.stdout.contains("vip-a"),
        "list all: {}",
        run.text()
    );
    let run = kubectl(&cfg, &["get", "leases", "-n", "default"], None);
    assert!(
        run.ok && !run.stdout.contains("vip-a"),
        "a kube-system lease listed in default: {}",
        run.text()
    );

    let run = kubectl(&cfg, &["delete", "lease", "vip-a", "-n", NS], None);
    assert!(run.ok, "delete failed: {}", run.text());
    assert!(
        api.lease(NS, "vip-a").is_none(),
        "lease still stored after delete"
    );
    let run = kubectl(&cfg, &["get", "lease", "vip-a", "-n", NS], None);
    assert!(
        !run.ok && run.stderr.contains("NotFound") && run.stderr.contains("\"vip-a\" not found"),
        "get after delete should be NotFound: {}",
        run.text()
    );
}

#[test]
fn kubectl_apply_creates_then_updates_a_lease() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    let run = kubectl(
        &cfg,
        &["apply", "-f", "-"],
        Some(&lease_yaml("vip-b", "lb1", "")),
    );
    assert!(
        run.ok && run.stdout.contains("created"),
        "apply create: {}",
        run.text()
    );
    let rv1 = api.lease(NS, "vip-b").expect("stored")["metadata"]["resourceVersion"].clone();

    let run = kubectl(
        &cfg,
        &["apply", "-f", "-"],
        Some(&lease_yaml("vip-b", "lb2", "")),
    );
    assert!(
        run.ok && run.stdout.contains("configured"),
        "apply update: {}",
        run.text()
    );
    assert_eq!(holder_of(&api, "vip-b").as_deref(), Some("lb2"));
    let rv2 = api.lease(NS, "vip-b").expect("stored")["metadata"]["resourceVersion"].clone();
    let (a, b): (u64, u64) = (
        rv1.as_str()
            .and_then(|s| s.parse().ok())
            .expect("numeric rv"),
        rv2.as_str()
            .and_then(|s| s.parse().ok())
            .expect("numeric rv"),
    );
    assert!(b > a, "resourceVersion did not increase: {a} -> {b}");

    let run = kubectl(
        &cfg,
        &["apply", "-f", "-"],
        Some(&lease_yaml("vip-b", "lb2", "")),
    );
    assert!(
        run.ok && run.stdout.contains("unchanged"),
        "apply no-op: {}",
        run.text()
    );
}

#[test]
fn kubectl_merge_patch_changes_only_the_patched_field() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    assert!(
        kubectl(
            &cfg,
            &["create", "-f", "-"],
            Some(&lease_yaml("vip-p", "lb1", ""))
        )
        .ok
    );
    let run = kubectl(
        &cfg,
        &[
            "patch",
            "lease",
            "vip-p",
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"holderIdentity":"lb7"}}"#,
        ],
        None,
    );
    assert!(run.ok, "merge patch failed: {}", run.text());
    let lease = api.lease(NS, "vip-p").expect("stored");
    assert_eq!(lease["spec"]["holderIdentity"], "lb7");
    assert_eq!(
        lease["spec"]["leaseDurationSeconds"], 15,
        "patch lost a field"
    );

    let run = kubectl(
        &cfg,
        &[
            "patch",
            "lease",
            "vip-p",
            "-n",
            NS,
            "-p",
            r#"{"spec":{"leaseTransitions":3}}"#,
        ],
        None,
    );
    assert!(run.ok, "strategic merge patch failed: {}", run.text());
    assert_eq!(
        api.lease(NS, "vip-p").expect("stored")["spec"]["leaseTransitions"],
        3
    );
}

#[test]
fn kubectl_replace_with_stale_resource_version_is_a_conflict() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    assert!(
        kubectl(
            &cfg,
            &["create", "-f", "-"],
            Some(&lease_yaml("vip-c", "lb1", ""))
        )
        .ok
    );
    let stale = api.lease(NS, "vip-c").expect("stored")["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let fresh = kubectl(
        &cfg,
        &["replace", "-f", "-"],
        Some(&lease_yaml(
            "vip-c",
            "lb2",
            &format!("  resourceVersion: \"{stale}\"\n"),
        )),
    );
    assert!(
        fresh.ok,
        "replace with the current version failed: {}",
        fresh.text()
    );

    let run = kubectl(
        &cfg,
        &["replace", "-f", "-"],
        Some(&lease_yaml(
            "vip-c",
            "lb3",
            &format!("  resourceVersion: \"{stale}\"\n"),
        )),
    );
    assert!(!run.ok, "replace with a stale resourceVersion succeeded");
    assert!(
        run.stderr.contains("Conflict") && run.stderr.contains("the object has been modified"),
        "expected the API server's conflict message: {}",
        run.text()
    );
    assert_eq!(
        holder_of(&api, "vip-c").as_deref(),
        Some("lb2"),
        "stale write landed"
    );
}

#[test]
fn kubectl_create_of_an_existing_lease_is_already_exists() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    assert!(
        kubectl(
            &cfg,
            &["create", "-f", "-"],
            Some(&lease_yaml("vip-d", "lb1", ""))
        )
        .ok
    );
    let run = kubectl(
        &cfg,
        &["create", "-f", "-"],
        Some(&lease_yaml("vip-d", "lb2", "")),
    );
    assert!(
        !run.ok && run.stderr.contains("AlreadyExists"),
        "second create should be AlreadyExists: {}",
        run.text()
    );
    assert_eq!(holder_of(&api, "vip-d").as_deref(), Some("lb1"));
}

#[test]
fn kubectl_invalid_lease_is_rejected_as_invalid() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    let body = lease_yaml("vip-e", "lb1", "")
        .replace("leaseDurationSeconds: 15", "leaseDurationSeconds: 0");
    let run = kubectl(&cfg, &["create", "-f", "-"], Some(&body));
    assert!(
        !run.ok
            && run.stderr.contains("is invalid")
            && run.stderr.contains("spec.leaseDurationSeconds"),
        "expected 422 Invalid naming the field: {}",
        run.text()
    );
    // Unknown fields are refused only when kubectl asks for server-side strict validation
    // (1.25+); older clients, like the API servers of their time, drop them silently.
    if validates_on_the_server() {
        let run = kubectl(
            &cfg,
            &["create", "-f", "-"],
            Some(&lease_yaml("vip-e", "lb1", "").replace("holderIdentity", "holderIdentityy")),
        );
        assert!(
            !run.ok
                && run
                    .stderr
                    .contains("unknown field \"spec.holderIdentityy\""),
            "strict field validation should name the unknown field: {}",
            run.text()
        );
    }
    assert!(
        api.lease(NS, "vip-e").is_none(),
        "an invalid lease was stored"
    );
}

#[test]
fn kubectl_with_certificate_from_unknown_ca_is_unauthorized() {
    let api = KubeApi::start();
    let cfg = api.kubeconfig(0, &ClientSpec::admin().foreign());
    let run = kubectl(&cfg, &["get", "leases", "-n", NS], None);
    assert!(
        !run.ok,
        "a foreign client certificate was accepted: {}",
        run.text()
    );
    assert!(
        run.stderr.contains("Unauthorized") || run.stderr.contains("provide credentials"),
        "expected 401 Unauthorized: {}",
        run.text()
    );
}

#[test]
fn kubectl_with_expired_certificate_is_unauthorized() {
    let api = KubeApi::start();
    let cfg = api.kubeconfig(0, &ClientSpec::admin().expiring_in(-3600));
    let run = kubectl(&cfg, &["get", "leases", "-n", NS], None);
    assert!(
        !run.ok
            && (run.stderr.contains("Unauthorized") || run.stderr.contains("provide credentials")),
        "an expired client certificate should be 401: {}",
        run.text()
    );
}

#[test]
fn kubectl_auth_can_i_and_forbidden_follow_the_user_policy() {
    let api = KubeApi::start();
    api.set_access("lb-reader", Access::verbs(&["get", "list"]));
    let cfg = api.kubeconfig(0, &ClientSpec::user("lb-reader"));
    let run = kubectl(
        &cfg,
        &[
            "auth",
            "can-i",
            "get",
            "leases.coordination.k8s.io",
            "-n",
            NS,
        ],
        None,
    );
    assert!(
        run.ok && run.stdout.trim() == "yes",
        "can-i get: {}",
        run.text()
    );
    let run = kubectl(
        &cfg,
        &[
            "auth",
            "can-i",
            "create",
            "leases.coordination.k8s.io",
            "-n",
            NS,
        ],
        None,
    );
    assert!(
        !run.ok && run.stdout.trim() == "no",
        "can-i create: {}",
        run.text()
    );

    let run = kubectl(
        &cfg,
        &["create", "-f", "-"],
        Some(&lease_yaml("vip-f", "lb1", "")),
    );
    assert!(
        !run.ok
            && run.stderr.contains("Forbidden")
            && run
                .stderr
                .contains("User \"lb-reader\" cannot create resource \"leases\""),
        "create should be forbidden with the API server's message: {}",
        run.text()
    );
}

#[test]
fn kubectl_fails_while_the_server_is_down_and_recovers_after() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    api.faults(0).set_down(true);
    let run = kubectl(&cfg, &["get", "leases", "-n", NS], None);
    assert!(
        !run.ok,
        "kubectl succeeded against a down server: {}",
        run.text()
    );
    api.faults(0).set_down(false);
    let run = kubectl(&cfg, &["get", "leases", "-n", NS], None);
    assert!(
        run.ok,
        "kubectl failed after the server came back: {}",
        run.text()
    );
}

#[test]
fn kubectl_sees_injected_server_errors() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    api.faults(0).set_error_status(Some(500));
    let run = kubectl(&cfg, &["get", "--raw", "/version"], None);
    assert!(
        !run.ok && run.stderr.contains("injected fault"),
        "expected the injected 500: {}",
        run.text()
    );
    api.faults(0).set_error_status(None);
    let run = kubectl(&cfg, &["get", "--raw", "/version"], None);
    assert!(
        run.ok,
        "still failing after the fault was cleared: {}",
        run.text()
    );
}

#[test]
fn kubectl_write_during_a_conflict_storm_is_a_conflict() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    assert!(
        kubectl(
            &cfg,
            &["create", "-f", "-"],
            Some(&lease_yaml("vip-g", "lb1", ""))
        )
        .ok
    );
    api.faults(0).conflict_next_writes(1);
    let run = kubectl(
        &cfg,
        &["replace", "-f", "-"],
        Some(&lease_yaml("vip-g", "lb2", "")),
    );
    assert!(
        !run.ok && run.stderr.contains("Conflict"),
        "the injected conflict did not reach kubectl: {}",
        run.text()
    );
    let run = kubectl(
        &cfg,
        &["replace", "-f", "-"],
        Some(&lease_yaml("vip-g", "lb2", "")),
    );
    assert!(
        run.ok,
        "the storm should be over after one write: {}",
        run.text()
    );
    assert_eq!(holder_of(&api, "vip-g").as_deref(), Some("lb2"));
}

#[test]
fn kubectl_waits_for_a_slow_server() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    api.faults(0).set_slow(Duration::from_millis(300));
    let run = kubectl(&cfg, &["get", "leases", "-n", NS], None);
    assert!(
        run.ok,
        "a slow (not dead) server should still answer: {}",
        run.text()
    );
    let run = kubectl(
        &cfg,
        &["--request-timeout=100ms", "get", "--raw", "/version"],
        None,
    );
    assert!(
        !run.ok,
        "a 100 ms client timeout should fire on a 300 ms server: {}",
        run.text()
    );
}

#[test]
fn kubectl_and_the_kube_lease_store_read_each_others_writes() {
    use alive_proxy::config::plan::KubeLock;
    use alive_proxy::ha::lease::LeaseStore;
    use alive_proxy::ha::lease::kube::{KubeLeaseStore, KubeStoreOptions};

    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    let lock = KubeLock {
        kubeconfigs: vec![cfg.clone()],
        lease_name: "alive-proxy-vip1".into(),
        namespace: NS.into(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut store = KubeLeaseStore::new(&lock, KubeStoreOptions::default());
    let record = runtime.block_on(async {
        let created = store
            .create("lb1", Duration::from_secs(2))
            .await
            .expect("create");
        store
            .update(&created, Some("lb1"), Duration::from_secs(2), None)
            .await
            .expect("renew")
    });

    let run = kubectl(
        &cfg,
        &[
            "get",
            "lease",
            "alive-proxy-vip1",
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.holderIdentity} {.spec.leaseDurationSeconds} {.spec.leaseTransitions} {.spec.renewTime}",
        ],
        None,
    );
    assert!(run.ok, "kubectl get of the store's lease: {}", run.text());
    let fields: Vec<&str> = run.stdout.split(' ').collect();
    assert_eq!(&fields[..3], ["lb1", "2", "0"], "{}", run.text());
    let renew = fields[3];
    assert!(
        renew.len() == "2026-01-01T00:00:00.000000Z".len() && renew.ends_with('Z'),
        "renewTime {renew:?} is not a MicroTime"
    );

    let run = kubectl(
        &cfg,
        &[
            "patch",
            "lease",
            "alive-proxy-vip1",
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"holderIdentity":"lb2"}}"#,
        ],
        None,
    );
    assert!(run.ok, "kubectl patch: {}", run.text());
    let seen = runtime
        .block_on(store.get())
        .expect("get")
        .expect("lease exists");
    assert_eq!(seen.holder.as_deref(), Some("lb2"));
    assert_ne!(
        seen.version, record.version,
        "kubectl's write must change the version"
    );
}
