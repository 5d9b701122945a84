//! HTTP_GET and SSL_GET over real loopback sockets: each way a response can be wrong takes
//! the backend down, status lists/ranges and multiple urls behave as keepalived documents,
//! SSL_GET accepts a self-signed certificate.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alive_proxy::config::{CheckKind, Plan, UrlCheck};
use alive_proxy::health::{BackendStatus, HealthSupervisor, NoopObserver};
use support::health::*;
use tokio::sync::mpsc;

fn spawn(plan: &Plan, sink: &Arc<RecordingSink>) -> HealthSupervisor {
    let (_passive_tx, passive_rx) = mpsc::unbounded_channel();
    HealthSupervisor::spawn(plan, sink.clone(), passive_rx, Arc::new(NoopObserver))
}

struct Setup {
    server: HttpEndpoint,
    sink: Arc<RecordingSink>,
    supervisor: HealthSupervisor,
    key: alive_proxy::config::BackendKey,
}

async fn start(tls: bool, urls: Vec<UrlCheck>, answers: &[(&str, Answer)]) -> Setup {
    let server = HttpEndpoint::start(tls).await;
    for (path, answer) in answers {
        server.answer(path, answer.clone());
    }
    let http = http(server.addr, urls);
    let kind = if tls {
        CheckKind::Ssl(http)
    } else {
        CheckKind::Http(http)
    };
    let vs = vip_port(80);
    let b = backend(traffic_addr(10), vec![check(kind, Timing::quick())]);
    let key = key(vs, b.addr);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, vec![b])]), &sink);
    Setup {
        server,
        sink,
        supervisor,
        key,
    }
}

impl Setup {
    async fn wait_status(&self, status: BackendStatus, what: &str) -> Duration {
        let since = Instant::now();
        eventually(
            Duration::from_secs(10),
            what,
            || self.sink.status(self.key) == Some(status),
            || format!("calls: {:?}", self.sink.backend_calls(self.key)),
        )
        .await;
        self.sink
            .reported_at(self.key, status, since)
            .map_or(Duration::ZERO, |at| at - since)
    }

    /// Waits until the server has seen `n` more requests, so "still up" means "checked".
    async fn wait_requests(&self, n: usize) {
        let target = self.server.requests().len() + n;
        eventually(
            Duration::from_secs(10),
            "more probes",
            || self.server.requests().len() >= target,
            String::new,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_status_takes_backend_down() {
    let s = start(
        false,
        vec![url("/healthz", vec![], None)],
        &[("/healthz", Answer::new(200, "ok"))],
    )
    .await;
    s.wait_requests(2).await;
    assert_eq!(s.sink.status(s.key), Some(up(1)));
    s.server.answer("/healthz", Answer::new(500, "boom"));
    let took = s.wait_status(BackendStatus::Down, "down on HTTP 500").await;
    println!("HTTP_GET wrong-status detection: {took:?} (interval 200ms, retry 0)");
    s.server.answer("/healthz", Answer::new(204, ""));
    s.wait_status(up(1), "up again on 204 (default 200-299)")
        .await;
    s.supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_takes_backend_down() {
    let digest = md5_hex(b"healthy\n");
    let s = start(
        false,
        vec![url("/", vec![], Some(&digest))],
        &[("/", Answer::new(200, "healthy\n"))],
    )
    .await;
    s.wait_requests(2).await;
    assert_eq!(
        s.sink.status(s.key),
        Some(up(1)),
        "matching MD5 keeps it up"
    );
    s.server.answer("/", Answer::new(200, "unhealthy\n"));
    let took = s
        .wait_status(BackendStatus::Down, "down on digest mismatch")
        .await;
    println!("HTTP_GET wrong-digest detection: {took:?}");
    s.server.answer("/", Answer::new(200, "healthy\n"));
    s.wait_status(up(1), "up again when the body matches").await;
    s.supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_slower_than_connect_timeout_takes_backend_down() {
    let s = start(
        false,
        vec![url("/", vec![], None)],
        &[("/", Answer::new(200, "ok"))],
    )
    .await;
    s.wait_requests(2).await;
    let mut slow = Answer::new(200, "ok");
    slow.delay = Duration::from_secs(2); // connect_timeout is 500 ms
    s.server.answer("/", slow);
    let took = s
        .wait_status(BackendStatus::Down, "down on read timeout")
        .await;
    println!("HTTP_GET timeout detection: {took:?} (connect_timeout 500ms)");
    s.supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_code_lists_and_ranges_accept_only_listed_codes() {
    let urls = vec![url("/", vec![(200, 200), (400, 499), (503, 503)], None)];
    let s = start(false, urls, &[("/", Answer::new(404, "nope"))]).await;
    s.wait_requests(2).await;
    assert_eq!(s.sink.status(s.key), Some(up(1)), "404 is inside 400-499");
    s.server.answer("/", Answer::new(503, "busy"));
    s.wait_requests(2).await;
    assert_eq!(s.sink.status(s.key), Some(up(1)), "503 is listed");
    s.server.answer("/", Answer::new(201, "created"));
    s.wait_status(BackendStatus::Down, "201 is not listed (only 200)")
        .await;
    s.supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_url_is_checked_and_any_failing_url_takes_backend_down() {
    let urls = vec![url("/a", vec![], None), url("/b", vec![], None)];
    let s = start(
        false,
        urls,
        &[("/a", Answer::new(200, "a")), ("/b", Answer::new(200, "b"))],
    )
    .await;
    s.wait_requests(4).await;
    let paths: Vec<String> = s
        .server
        .requests()
        .iter()
        .filter_map(|r| r.split_whitespace().nth(1).map(String::from))
        .collect();
    assert!(
        paths.contains(&"/a".into()) && paths.contains(&"/b".into()),
        "both urls probed: {paths:?}"
    );
    assert_eq!(s.sink.status(s.key), Some(up(1)));
    s.server.answer("/b", Answer::new(503, "b down"));
    s.wait_status(BackendStatus::Down, "down when the second url fails")
        .await;
    s.server.answer("/b", Answer::new(200, "b"));
    s.wait_status(up(1), "up after a full clean pass over both urls")
        .await;
    s.supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_is_keepalived_http_1_0_get_with_host_header() {
    let s = start(
        false,
        vec![url("/healthz", vec![], None)],
        &[("/healthz", Answer::new(200, "ok"))],
    )
    .await;
    s.wait_requests(1).await;
    let request = s.server.requests()[0].clone();
    let expected = format!(
        "GET /healthz HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: {}\r\n\r\n",
        s.server.addr
    );
    assert_eq!(request, expected);
    s.supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_get_accepts_self_signed_certificate_and_checks_status() {
    let s = start(
        true,
        vec![url("/", vec![], None)],
        &[("/", Answer::new(200, "tls ok"))],
    )
    .await;
    s.wait_requests(2).await;
    assert_eq!(
        s.sink.status(s.key),
        Some(up(1)),
        "self-signed certificate must be accepted (SSL_GET does not verify)"
    );
    s.server.answer("/", Answer::new(500, "tls broken"));
    let took = s
        .wait_status(BackendStatus::Down, "SSL_GET down on HTTP 500")
        .await;
    println!("SSL_GET wrong-status detection: {took:?}");
    s.supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_get_against_plain_http_fails_the_handshake() {
    let server = HttpEndpoint::start(false).await;
    server.answer("/", Answer::new(200, "plain"));
    let vs = vip_port(80);
    let kind = CheckKind::Ssl(http(server.addr, vec![url("/", vec![], None)]));
    let b = backend(traffic_addr(11), vec![check(kind, Timing::quick())]);
    let k = key(vs, b.addr);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, vec![b])]), &sink);
    eventually(
        Duration::from_secs(10),
        "down: no TLS there",
        || sink.status(k) == Some(BackendStatus::Down),
        || format!("{:?}", sink.backend_calls(k)),
    )
    .await;
    supervisor.shutdown().await;
}
