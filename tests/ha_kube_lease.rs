//! `KubeLeaseStore` against the in-tree Kubernetes API server: the Lease protocol (create,
//! renew, conflict, release, takeover) and the kubeconfig fallback order.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use alive_proxy::config::plan::KubeLock;
use alive_proxy::ha::lease::kube::{KubeLeaseStore, KubeStoreOptions};
use alive_proxy::ha::lease::{LeaseError, LeaseStore};
use support::kube_api::{Access, ClientSpec, KubeApi};

const NS: &str = "kube-system";
const LEASE: &str = "alive-proxy-vip1";
const TWO_SECONDS: Duration = Duration::from_secs(2);

fn lock(kubeconfigs: Vec<PathBuf>) -> KubeLock {
    KubeLock {
        kubeconfigs,
        lease_name: LEASE.to_string(),
        namespace: NS.to_string(),
    }
}

fn fast() -> KubeStoreOptions {
    KubeStoreOptions {
        request_timeout: Duration::from_millis(500),
        probe_interval: Duration::from_millis(100),
    }
}

fn store(kubeconfigs: Vec<PathBuf>) -> KubeLeaseStore {
    KubeLeaseStore::new(&lock(kubeconfigs), fast())
}

fn stored_spec(api: &KubeApi) -> serde_json::Value {
    api.lease(NS, LEASE).expect("lease stored on the server")["spec"].clone()
}

#[tokio::test]
async fn create_writes_a_client_go_style_lease() {
    let api = KubeApi::start();
    let mut s = store(vec![api.admin_kubeconfig(0)]);
    assert_eq!(s.get().await.expect("get"), None, "no lease yet");
    let rec = s.create("lb1", TWO_SECONDS).await.expect("create");
    assert_eq!(rec.holder.as_deref(), Some("lb1"));
    assert_eq!(rec.duration, TWO_SECONDS);
    assert_eq!(rec.transitions, 0);
    let spec = stored_spec(&api);
    assert_eq!(spec["holderIdentity"], "lb1");
    assert_eq!(spec["leaseDurationSeconds"], 2);
    assert_eq!(spec["leaseTransitions"], 0);
    let renew = spec["renewTime"].as_str().expect("renewTime is a string");
    assert!(
        renew.ends_with('Z') && renew.len() >= 20,
        "renewTime {renew:?} is not RFC 3339"
    );
    assert_eq!(spec["acquireTime"], spec["renewTime"]);
    assert_eq!(
        s.get().await.expect("get"),
        Some(rec),
        "get returns what create wrote"
    );
}

#[tokio::test]
async fn create_of_an_existing_lease_is_a_conflict() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    store(vec![cfg.clone()])
        .create("lb1", TWO_SECONDS)
        .await
        .expect("first create");
    let err = store(vec![cfg]).create("lb2", TWO_SECONDS).await;
    assert!(
        matches!(err, Err(LeaseError::Conflict)),
        "second create: {err:?}"
    );
}

#[tokio::test]
async fn renew_advances_the_version_and_keeps_acquire_time_and_transitions() {
    let api = KubeApi::start();
    let mut s = store(vec![api.admin_kubeconfig(0)]);
    let first = s.create("lb1", TWO_SECONDS).await.expect("create");
    let acquired = stored_spec(&api)["acquireTime"].clone();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let renewed = s
        .update(&first, Some("lb1"), TWO_SECONDS, None)
        .await
        .expect("renew");
    assert_ne!(
        renewed.version, first.version,
        "renew must produce a new version"
    );
    assert_eq!(renewed.transitions, 0);
    let spec = stored_spec(&api);
    assert_eq!(spec["acquireTime"], acquired, "renew moved acquireTime");
    assert_ne!(spec["renewTime"], acquired, "renew did not move renewTime");
}

#[tokio::test]
async fn update_with_a_stale_version_is_a_conflict() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    let mut holder = store(vec![cfg.clone()]);
    let first = holder.create("lb1", TWO_SECONDS).await.expect("create");
    holder
        .update(&first, Some("lb1"), TWO_SECONDS, None)
        .await
        .expect("renew");
    let mut rival = store(vec![cfg]);
    let err = rival.update(&first, Some("lb2"), TWO_SECONDS, None).await;
    assert!(
        matches!(err, Err(LeaseError::Conflict)),
        "stale takeover: {err:?}"
    );
    assert_eq!(
        stored_spec(&api)["holderIdentity"],
        "lb1",
        "the stale write landed"
    );
}

#[tokio::test]
async fn release_empties_the_holder_and_takeover_counts_a_transition() {
    let api = KubeApi::start();
    let cfg = api.admin_kubeconfig(0);
    let mut lb1 = store(vec![cfg.clone()]);
    let first = lb1.create("lb1", TWO_SECONDS).await.expect("create");
    let released = lb1
        .update(&first, None, Duration::from_secs(1), None)
        .await
        .expect("release");
    assert_eq!(released.holder, None);
    assert_eq!(stored_spec(&api)["holderIdentity"], "");

    let mut lb2 = store(vec![cfg]);
    let seen = lb2.get().await.expect("get").expect("lease exists");
    assert_eq!(seen.holder, None, "a released lease reads as unheld");
    let taken = lb2
        .update(&seen, Some("lb2"), TWO_SECONDS, None)
        .await
        .expect("takeover");
    assert_eq!(taken.holder.as_deref(), Some("lb2"));
    assert_eq!(taken.transitions, 1);
    assert_eq!(stored_spec(&api)["leaseTransitions"], 1);
}

#[tokio::test]
async fn a_conflict_storm_is_returned_as_conflict_without_switching_kubeconfig() {
    let api = KubeApi::start_endpoints(2);
    let (a, b) = (api.admin_kubeconfig(0), api.admin_kubeconfig(1));
    let mut s = store(vec![a.clone(), b]);
    let rec = s.create("lb1", TWO_SECONDS).await.expect("create");
    api.faults(0).conflict_next_writes(3);
    for _ in 0..3 {
        let err = s.update(&rec, Some("lb1"), TWO_SECONDS, None).await;
        assert!(
            matches!(err, Err(LeaseError::Conflict)),
            "during the storm: {err:?}"
        );
    }
    assert_eq!(
        s.endpoint(),
        a.display().to_string(),
        "a 409 is an answer, not an outage"
    );
    s.update(&rec, Some("lb1"), TWO_SECONDS, None)
        .await
        .expect("after the storm");
}

#[tokio::test]
async fn first_kubeconfig_down_uses_the_second() {
    let api = KubeApi::start_endpoints(2);
    let (a, b) = (api.admin_kubeconfig(0), api.admin_kubeconfig(1));
    let mut s = store(vec![a.clone(), b.clone()]);
    s.create("lb1", TWO_SECONDS)
        .await
        .expect("create on the first");
    assert_eq!(s.endpoint(), a.display().to_string());
    api.faults(0).set_down(true);
    let before = api.endpoint(1).requests();
    let started = Instant::now();
    let rec = s.get().await.expect("get through the second kubeconfig");
    eprintln!(
        "first kubeconfig down (connections closed): get via the second took {:?}",
        started.elapsed()
    );
    assert_eq!(rec.and_then(|r| r.holder).as_deref(), Some("lb1"));
    assert_eq!(
        s.endpoint(),
        b.display().to_string(),
        "did not switch to the second"
    );
    assert!(
        api.endpoint(1).requests() > before,
        "second API server saw no request"
    );
}

#[tokio::test]
async fn returns_to_the_first_kubeconfig_when_it_works_again() {
    let api = KubeApi::start_endpoints(2);
    let (a, b) = (api.admin_kubeconfig(0), api.admin_kubeconfig(1));
    let mut s = store(vec![a.clone(), b.clone()]);
    let mut rec = s.create("lb1", TWO_SECONDS).await.expect("create");
    api.faults(0).set_down(true);
    rec = s
        .update(&rec, Some("lb1"), TWO_SECONDS, None)
        .await
        .expect("renew via the second");
    assert_eq!(s.endpoint(), b.display().to_string());
    api.faults(0).set_down(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.endpoint() != a.display().to_string() {
        assert!(
            Instant::now() < deadline,
            "never returned to the first kubeconfig"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        rec = s
            .update(&rec, Some("lb1"), TWO_SECONDS, None)
            .await
            .expect("renew");
    }
    let before = api.endpoint(0).requests();
    s.update(&rec, Some("lb1"), TWO_SECONDS, None)
        .await
        .expect("renew on the first");
    assert!(
        api.endpoint(0).requests() > before,
        "first API server saw no request"
    );
}

#[tokio::test]
async fn all_kubeconfigs_down_is_unavailable() {
    let api = KubeApi::start_endpoints(2);
    let (a, b) = (api.admin_kubeconfig(0), api.admin_kubeconfig(1));
    let mut s = store(vec![a, b]);
    api.faults(0).set_down(true);
    api.faults(1).set_down(true);
    let err = s.get().await;
    match err {
        Err(LeaseError::Unavailable(msg)) => {
            assert!(
                msg.contains("kubeconfig-0") && msg.contains("kubeconfig-1"),
                "{msg}"
            )
        }
        other => panic!("expected Unavailable naming both kubeconfigs, got {other:?}"),
    }
}

#[tokio::test]
async fn server_errors_move_to_the_next_kubeconfig() {
    let api = KubeApi::start_endpoints(2);
    let (a, b) = (api.admin_kubeconfig(0), api.admin_kubeconfig(1));
    let mut s = store(vec![a, b.clone()]);
    api.faults(0).set_error_status(Some(503));
    s.create("lb1", TWO_SECONDS)
        .await
        .expect("create via the second");
    assert_eq!(s.endpoint(), b.display().to_string());
}

#[tokio::test]
async fn a_hung_server_times_out_and_the_next_kubeconfig_answers() {
    let api = KubeApi::start_endpoints(2);
    let (a, b) = (api.admin_kubeconfig(0), api.admin_kubeconfig(1));
    let mut s = store(vec![a, b.clone()]);
    api.faults(0).set_slow(Duration::from_secs(30));
    let started = Instant::now();
    let rec = s.get().await.expect("get via the second");
    eprintln!(
        "first kubeconfig hung: get via the second took {:?} (request timeout {:?})",
        started.elapsed(),
        fast().request_timeout
    );
    assert_eq!(rec, None);
    assert_eq!(s.endpoint(), b.display().to_string());
}

#[tokio::test]
async fn an_expired_certificate_falls_back_to_the_next_kubeconfig() {
    let api = KubeApi::start();
    let expired = api.kubeconfig(0, &ClientSpec::admin().expiring_in(-60));
    let good = api.admin_kubeconfig(0);
    let mut s = store(vec![expired, good.clone()]);
    s.create("lb1", TWO_SECONDS)
        .await
        .expect("create with the valid certificate");
    assert_eq!(s.endpoint(), good.display().to_string());
}

#[tokio::test]
async fn refused_everywhere_is_denied() {
    let api = KubeApi::start();
    api.set_access("lb-user", Access::verbs(&["get"]));
    let mut s = store(vec![api.kubeconfig(0, &ClientSpec::user("lb-user"))]);
    assert_eq!(s.get().await.expect("get is allowed"), None);
    let err = s.create("lb1", TWO_SECONDS).await;
    assert!(
        matches!(err, Err(LeaseError::Denied(_))),
        "create without permission: {err:?}"
    );
}

#[tokio::test]
async fn a_missing_kubeconfig_file_is_skipped() {
    let api = KubeApi::start();
    let good = api.admin_kubeconfig(0);
    let missing = api.dir().join("does-not-exist.conf");
    let mut s = store(vec![missing, good.clone()]);
    assert_eq!(s.get().await.expect("get via the existing file"), None);
    assert_eq!(s.endpoint(), good.display().to_string());
}

#[tokio::test]
async fn the_lease_lives_in_the_planned_namespace_and_name() {
    let api = KubeApi::start();
    let mut s = KubeLeaseStore::new(
        &KubeLock {
            kubeconfigs: vec![api.admin_kubeconfig(0)],
            lease_name: "custom-name".into(),
            namespace: "lb-system".into(),
        },
        fast(),
    );
    s.create("lb1", TWO_SECONDS).await.expect("create");
    assert!(
        api.lease("lb-system", "custom-name").is_some(),
        "not at lb-system/custom-name"
    );
    assert!(api.lease(NS, LEASE).is_none());
}
