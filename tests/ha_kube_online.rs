//! `check --online` (ha::online::check) against the in-tree Kubernetes API server: a usable
//! kubeconfig, missing permissions, an unreachable server, an untrusted server certificate,
//! and an expired client certificate, each reported as what it is.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use alive_proxy::config::plan::{
    AdminPlan, DEFAULT_ADMIN_SOCKET, Instance, KubeLock, LockPlan, Plan,
};
use alive_proxy::ha::online::{self, ConnectionError, KubeconfigReport};
use base64::Engine as _;
use support::kube_api::{Access, ClientSpec, KubeApi};

const NS: &str = "kube-system";

fn plan(kubeconfigs: Vec<PathBuf>) -> Plan {
    Plan {
        source: PathBuf::from("alive.yaml"),
        instances: vec![Instance {
            name: "vip1".into(),
            vip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            id: Some(1),
            interface: "eth0".into(),
            check_interval: Duration::from_secs(1),
            check_timeout: Duration::from_secs(3),
            peers: Vec::new(),
            lock: LockPlan::Kube(KubeLock {
                kubeconfigs,
                lease_name: "alive-proxy-vip1".into(),
                namespace: NS.into(),
            }),
            failsafe: None,
            services: Vec::new(),
        }],
        admin: AdminPlan {
            socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
            http: None,
        },
        identity: None,
    }
}

async fn check_one(path: PathBuf) -> KubeconfigReport {
    let mut reports = online::check(&plan(vec![path])).await;
    assert_eq!(reports.len(), 1, "one report per kubeconfig");
    reports.remove(0)
}

#[tokio::test]
async fn an_admin_kubeconfig_is_ok_with_all_lease_verbs() {
    let api = KubeApi::start();
    let report = check_one(api.admin_kubeconfig(0)).await;
    assert!(report.ok(), "expected ok:\n{report}");
    assert_eq!(report.connection.as_deref(), Ok("v1.32.0-alive-test"));
    let verbs: Vec<&str> = report.permissions.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(verbs, ["get", "create", "update"]);
    assert!(
        !report.expiring(),
        "a one-year certificate is not expiring:\n{report}"
    );
    let json = serde_json::to_value(&report).expect("report serializes for --json");
    assert_eq!(json["instance"], "vip1");
    assert_eq!(json["connection"]["Ok"], "v1.32.0-alive-test", "{json}");
    let text = report.to_string();
    assert!(text.starts_with("ok: instance vip1"), "{text}");
    assert!(text.contains("get ok, create ok, update ok"), "{text}");
    assert!(
        text.contains("client certificate kubernetes-admin"),
        "{text}"
    );
}

#[tokio::test]
async fn missing_lease_permissions_are_reported_per_verb() {
    let api = KubeApi::start();
    api.set_access("lb-reader", Access::verbs(&["get", "list"]));
    let report = check_one(api.kubeconfig(0, &ClientSpec::user("lb-reader"))).await;
    assert!(
        !report.ok(),
        "a read-only user cannot hold a lease:\n{report}"
    );
    assert!(report.connection.is_ok(), "{report}");
    let denied: Vec<&str> = report
        .permissions
        .iter()
        .filter(|(_, p)| p.is_err())
        .map(|(v, _)| v.as_str())
        .collect();
    assert_eq!(denied, ["create", "update"], "{report}");
    assert!(report.to_string().contains("create DENIED"), "{report}");
}

#[tokio::test]
async fn an_unreachable_server_is_reported_unreachable() {
    let api = KubeApi::start();
    let port = support::ports::free_tcp_port();
    let path =
        api.kubeconfig_for_server(&format!("https://127.0.0.1:{port}"), &ClientSpec::admin());
    let report = check_one(path).await;
    assert!(
        matches!(report.connection, Err(ConnectionError::Unreachable(_))),
        "expected unreachable:\n{report}"
    );
    assert!(report.permissions.is_empty());
    assert!(!report.ok());
    assert!(
        report
            .to_string()
            .contains("connection: FAILED: unreachable"),
        "{report}"
    );
}

#[tokio::test]
async fn a_down_server_is_reported_and_does_not_hang() {
    let api = KubeApi::start();
    api.faults(0).set_down(true);
    let report = check_one(api.admin_kubeconfig(0)).await;
    assert!(
        report.connection.is_err(),
        "a down server passed:\n{report}"
    );
    assert!(!report.ok());
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_a_tls_failure() {
    let api = KubeApi::start();
    let other = KubeApi::start();
    let path = api.admin_kubeconfig(0);
    let text = std::fs::read_to_string(&path).expect("kubeconfig");
    let ours = base64::engine::general_purpose::STANDARD.encode(api.ca_pem());
    let theirs = base64::engine::general_purpose::STANDARD.encode(other.ca_pem());
    std::fs::write(&path, text.replace(&ours, &theirs)).expect("rewrite kubeconfig");
    let report = check_one(path).await;
    assert!(
        matches!(report.connection, Err(ConnectionError::Tls(_))),
        "expected a TLS failure:\n{report}"
    );
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused_and_reported_expired() {
    let api = KubeApi::start();
    let report = check_one(api.kubeconfig(0, &ClientSpec::admin().expiring_in(-3 * 86_400))).await;
    assert!(
        matches!(&report.connection, Err(ConnectionError::Refused(msg)) if msg.contains("401")),
        "expected a 401 refusal:\n{report}"
    );
    assert!(report.expiring() && !report.ok(), "{report}");
    assert!(
        report.to_string().contains("EXPIRED 3 days ago"),
        "{report}"
    );
}

#[tokio::test]
async fn a_certificate_expiring_soon_is_ok_but_flagged() {
    let api = KubeApi::start();
    let report = check_one(api.kubeconfig(0, &ClientSpec::admin().expiring_in(10 * 86_400))).await;
    assert!(report.ok(), "still usable for 10 days:\n{report}");
    assert!(report.expiring(), "{report}");
    assert!(report.to_string().contains("EXPIRES in"), "{report}");
}

#[tokio::test]
async fn every_kubeconfig_of_every_instance_is_checked_in_order() {
    let api = KubeApi::start_endpoints(2);
    let (a, b) = (api.admin_kubeconfig(0), api.admin_kubeconfig(1));
    api.faults(1).set_down(true);
    let reports = online::check(&plan(vec![a.clone(), b.clone()])).await;
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0].kubeconfig, a);
    assert!(reports[0].ok(), "{}", reports[0]);
    assert_eq!(reports[1].kubeconfig, b);
    assert!(!reports[1].ok(), "{}", reports[1]);
}

#[test]
fn the_blocking_wrapper_runs_without_a_runtime() {
    let api = KubeApi::start();
    let reports = online::check_blocking(&plan(vec![api.admin_kubeconfig(0)])).expect("runtime");
    assert_eq!(reports.len(), 1);
    assert!(reports[0].ok(), "{}", reports[0]);
}
