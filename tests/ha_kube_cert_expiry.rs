//! Kubeconfig client-certificate expiry: read from real kubeconfigs (rcgen certificates
//! issued by the test cluster's CA), judged against the 30-day warning window, logged, and
//! exported in the stats control state's form.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use alive_proxy::ha::online::kubeconfig::{self, Expiry};
use support::kube_api::{ClientSpec, KubeApi};

const DAY: i64 = 86_400;

fn expiry_of(api: &KubeApi, spec: &ClientSpec) -> Expiry {
    let path = api.kubeconfig(0, spec);
    let cert = kubeconfig::client_cert(&path)
        .expect("kubeconfig readable")
        .expect("kubeconfig has a client certificate");
    Expiry::at(cert.not_after, SystemTime::now())
}

#[test]
fn an_expired_certificate_is_expired() {
    let api = KubeApi::start();
    let e = expiry_of(&api, &ClientSpec::admin().expiring_in(-2 * DAY));
    assert!(matches!(e, Expiry::Expired { .. }), "got {e:?}");
}

#[test]
fn a_certificate_expiring_in_ten_days_is_soon() {
    let api = KubeApi::start();
    match expiry_of(&api, &ClientSpec::admin().expiring_in(10 * DAY)) {
        Expiry::Soon { remaining } => {
            let days = remaining.as_secs() / DAY as u64;
            assert!((9..=10).contains(&days), "remaining {remaining:?}");
        }
        other => panic!("expected Soon, got {other:?}"),
    }
}

#[test]
fn a_certificate_valid_for_a_year_is_fine() {
    let api = KubeApi::start();
    let e = expiry_of(&api, &ClientSpec::admin().expiring_in(365 * DAY));
    assert!(matches!(e, Expiry::Fine { .. }), "got {e:?}");
}

#[test]
fn a_certificate_in_a_separate_file_is_read() {
    let api = KubeApi::start();
    let path = api.kubeconfig(0, &ClientSpec::user("lb-file").files());
    let text = std::fs::read_to_string(&path).expect("kubeconfig");
    assert!(
        text.contains("client-certificate:"),
        "the fixture should reference a file"
    );
    let cert = kubeconfig::client_cert(&path)
        .expect("readable")
        .expect("has a certificate");
    assert_eq!(cert.user, "lb-file");
    assert!(
        cert.subject.contains("CN=lb-file"),
        "subject {}",
        cert.subject
    );
}

#[test]
fn a_token_kubeconfig_has_no_certificate_to_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token.conf");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://192.0.2.1:6443\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\nusers:\n- name: u\n  user:\n    token: abc\n",
    )
    .expect("write");
    assert_eq!(kubeconfig::client_cert(&path).expect("readable"), None);
}

#[test]
fn expiries_export_dates_and_errors_per_kubeconfig() {
    let api = KubeApi::start();
    let good = api.kubeconfig(0, &ClientSpec::admin().expiring_in(100 * DAY));
    let missing = api.dir().join("missing.conf");
    let found = kubeconfig::expiries(&[good.clone(), missing.clone()]);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].kubeconfig, good);
    let not_after = found[0]
        .not_after
        .expect("a date for the readable kubeconfig");
    let days = not_after
        .duration_since(SystemTime::now())
        .expect("in the future")
        .as_secs()
        / DAY as u64;
    assert!((99..=100).contains(&days), "{days} days");
    assert!(found[0].error.is_none());
    assert_eq!(found[1].kubeconfig, missing);
    assert!(
        found[1].not_after.is_none() && found[1].error.is_some(),
        "{:?}",
        found[1]
    );
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn expiring_and_expired_certificates_are_warned_and_fine_ones_are_not() {
    let api = KubeApi::start();
    let expired = api.kubeconfig(0, &ClientSpec::user("old").expiring_in(-DAY));
    let soon = api.kubeconfig(0, &ClientSpec::user("soon").expiring_in(10 * DAY));
    let fine = api.kubeconfig(0, &ClientSpec::user("fine").expiring_in(200 * DAY));
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        kubeconfig::check_and_warn(
            "vip1",
            &[expired.clone(), soon.clone(), fine.clone()],
            SystemTime::now() + Duration::from_secs(1),
        );
    });
    let log = String::from_utf8(captured.0.lock().expect("log").clone()).expect("utf-8 log");
    let line_for = |path: &std::path::Path| {
        log.lines()
            .find(|l| l.contains(&path.display().to_string()))
            .map(String::from)
    };
    let expired_line = line_for(&expired).expect("no warning for the expired certificate");
    assert!(
        expired_line.contains("WARN") && expired_line.contains("EXPIRED"),
        "{expired_line}"
    );
    let soon_line = line_for(&soon).expect("no warning for the certificate expiring in 10 days");
    assert!(
        soon_line.contains("WARN") && soon_line.contains("EXPIRES in"),
        "{soon_line}"
    );
    assert!(
        line_for(&fine).is_none(),
        "a fine certificate was warned about:\n{log}"
    );
}
