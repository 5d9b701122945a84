//! The fixture folders: every file in tests/fixtures/config/invalid/ must fail with exactly
//! the diagnostics written at its top (`# expect: file:line:col: error: ...`), and every file
//! in tests/fixtures/config/valid/ must load, with a few key values checked per file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alive_proxy::config::{
    self, CheckKind, LockPlan, Mode, OnBackendDown, Plan, ProxyProtocol, Scheduler, Severity,
};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn invalid_fixtures_report_exactly_their_expected_diagnostics() {
    let files = fixtures("invalid");
    assert!(files.len() >= 35, "only {} invalid fixtures", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name");
        let display = format!("invalid/{file_name}");
        let text = read(path);
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        if expected.is_empty() {
            failures.push(format!("{display}: no `# expect:` line"));
            continue;
        }
        let actual: Vec<String> = match config::load_str(&display, &text, Mode::Check) {
            Ok(_) => vec!["(loaded without error)".to_string()],
            Err(e) => e
                .diagnostics()
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| d.headline())
                .collect(),
        };
        if actual != expected {
            failures.push(format!(
                "{display}:\n  expected:\n    {}\n  actual:\n    {}",
                expected.join("\n    "),
                actual.join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_diagnostic_quotes_its_source_line_with_a_caret_under_the_column() {
    for path in fixtures("invalid") {
        let text = read(&path);
        let lines: Vec<&str> = text.lines().collect();
        let Err(err) = config::load_str("f.yaml", &text, Mode::Check) else {
            panic!("{} loaded", path.display());
        };
        for d in err.diagnostics() {
            let line = lines.get(d.pos.line - 1).copied().unwrap_or("");
            assert_eq!(d.source_line, line, "{}: {}", path.display(), d.headline());
            let rendered = d.to_string();
            let caret_line = rendered.lines().last().expect("caret line");
            assert_eq!(
                caret_line.chars().count() - 4,
                d.pos.col,
                "{}: caret not under column {}:\n{rendered}",
                path.display(),
                d.pos.col
            );
        }
    }
}

fn load_valid(name: &str) -> config::Loaded {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config/valid")
        .join(name);
    match config::load(&path, Mode::Check) {
        Ok(l) => l,
        Err(e) => panic!("{name} must load:\n{e}"),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

#[test]
fn every_valid_fixture_loads() {
    let files = fixtures("valid");
    assert!(files.len() >= 10, "only {} valid fixtures", files.len());
    for path in files {
        if let Err(e) = config::load(&path, Mode::Check) {
            panic!("{} must load:\n{e}", path.display());
        }
    }
}

fn only_service(plan: &Plan) -> &config::Service {
    &plan.instances[0].services[0]
}

#[test]
fn quorum_hysteresis_weights_and_inherited_retry() {
    let plan = load_valid("quorum_hysteresis.yaml").plan;
    let svc = only_service(&plan);
    assert_eq!(svc.scheduler, Scheduler::Wrr);
    assert_eq!((svc.quorum, svc.hysteresis), (4, 1));
    for b in &svc.backends {
        assert_eq!(b.weight, 2);
        assert!(
            b.alpha && b.inhibit_on_failure,
            "alpha and inhibit_on_failure from the virtual server"
        );
        assert_eq!(b.checks[0].retry, 3);
        assert_eq!(b.checks[0].delay_before_retry, Duration::from_secs(2));
        assert_eq!(b.checks[0].interval, Duration::from_secs(5));
        assert_eq!(b.checks[0].connect_timeout, Duration::from_secs(2));
    }
}

#[test]
fn sorry_server_persistence_netmask_and_aliases() {
    let plan = load_valid("sorry_server.yaml").plan;
    let svc = only_service(&plan);
    assert_eq!(svc.scheduler, Scheduler::Lc, "lvs_sched is lb_algo");
    assert_eq!(svc.sorry_server, Some(addr("203.0.113.5:8443")));
    let p = svc.persistence.expect("persistence");
    assert_eq!(p.timeout, Duration::from_secs(600));
    assert_eq!(p.granularity_prefix, 24);
    assert_eq!(svc.connect_timeout, Duration::from_secs(3));
    let CheckKind::Tcp(t) = &svc.backends[1].checks[0].kind else {
        panic!("TCP_CHECK")
    };
    assert_eq!(t.connect, addr("198.51.100.22:443"));
}

#[test]
fn http_get_urls_digest_status_ranges_and_virtualhost() {
    let plan = load_valid("http_get_digest_ranges.yaml").plan;
    let check = &only_service(&plan).backends[0].checks[0];
    let CheckKind::Http(h) = &check.kind else {
        panic!("HTTP_GET, got {:?}", check.kind)
    };
    assert_eq!(h.connect, addr("198.51.100.31:8080"));
    assert_eq!(h.http_protocol, "1.1");
    assert_eq!(
        h.virtualhost.as_deref(),
        Some("api.example.com"),
        "inherited from the virtual server"
    );
    assert_eq!(h.urls.len(), 2);
    assert_eq!(h.urls[0].path, "/healthz");
    assert_eq!(
        h.urls[0].digest.as_deref(),
        Some("9b3a0c85a887a256d6939da88aabd8cd")
    );
    assert_eq!(
        h.urls[0].status,
        vec![(200, 299)],
        "keepalived's default status"
    );
    assert_eq!(h.urls[1].path, "/status?full=1");
    assert_eq!(h.urls[1].status, vec![(200, 299), (301, 301), (302, 302)]);
    assert_eq!(h.urls[1].virtualhost.as_deref(), Some("status.example.com"));
    assert_eq!(check.retry, 2, "nb_get_retry");
    assert_eq!(check.delay_before_retry, Duration::from_secs(2));
    assert_eq!(
        check.warmup,
        Duration::from_secs(15),
        "warmup defaults to delay_loop"
    );
}

#[test]
fn ssl_get_on_ipv6_with_http_defaults() {
    let plan = load_valid("ssl_get.yaml").plan;
    let svc = only_service(&plan);
    assert_eq!(svc.scheduler, Scheduler::Sh);
    let p = svc
        .persistence
        .expect("persistence_timeout alone uses keepalived's 360 s");
    assert_eq!(
        (p.timeout, p.granularity_prefix),
        (Duration::from_secs(360), 64)
    );
    let check = &svc.backends[0].checks[0];
    let CheckKind::Ssl(h) = &check.kind else {
        panic!("SSL_GET")
    };
    assert_eq!(h.connect, addr("[2001:db8::101]:443"));
    assert_eq!(h.bind, Some(addr("[2001:db8::1]:0")));
    assert_eq!(h.urls[0].status, vec![(204, 204)]);
    assert_eq!(h.http_protocol, "1.0", "keepalived's default");
    assert_eq!(check.retry, 1);
    assert_eq!(
        check.delay_before_retry,
        Duration::from_secs(3),
        "HTTP/SSL_GET default"
    );
}

#[test]
fn misc_check_splits_quoted_arguments_like_keepalived() {
    let plan = load_valid("misc_check_quoted.yaml").plan;
    let check = &only_service(&plan).backends[0].checks[0];
    let CheckKind::Misc(m) = &check.kind else {
        panic!("MISC_CHECK")
    };
    assert_eq!(
        m.argv,
        vec![
            "/usr/local/bin/pg_check.sh",
            "host=198.51.100.41 port=5432",
            "--quiet"
        ]
    );
    assert_eq!(m.timeout, Duration::from_secs(5));
    assert!(m.dynamic);
    assert_eq!(m.user.as_deref(), Some("nobody:nogroup"));
    assert_eq!(check.retry, 0, "MISC_CHECK default retry");
    assert_eq!(only_service(&plan).scheduler, Scheduler::Fo);
}

#[test]
fn comments_and_braces_anywhere() {
    let loaded = load_valid("comments_and_braces.yaml");
    let svc = only_service(&loaded.plan);
    assert_eq!(svc.scheduler, Scheduler::Rr);
    let b = &svc.backends[0];
    assert_eq!(b.weight, 3);
    assert_eq!(b.checks.len(), 3, "HTTP_GET and two TCP_CHECKs");
    let CheckKind::Http(h) = &b.checks[0].kind else {
        panic!("HTTP_GET first")
    };
    assert_eq!(
        (h.urls[0].path.as_str(), h.urls[0].status.clone()),
        ("/a", vec![(200, 200)])
    );
    let ports: Vec<u16> = b.checks[1..]
        .iter()
        .map(|c| match &c.kind {
            CheckKind::Tcp(t) => t.connect.port(),
            other => panic!("TCP_CHECK expected, got {other:?}"),
        })
        .collect();
    assert_eq!(ports, vec![81, 82]);
    // The origin names the line in alive.yaml where the checker keyword sits.
    assert!(
        b.checks[1]
            .origin
            .ends_with("comments_and_braces.yaml:23:13"),
        "{}",
        b.checks[1].origin
    );
}

#[test]
fn fractions_of_seconds_everywhere() {
    let plan = load_valid("fractions.yaml").plan;
    let inst = &plan.instances[0];
    assert_eq!(inst.check_interval, Duration::from_millis(500));
    assert_eq!(inst.check_timeout, Duration::from_millis(1500));
    let svc = &inst.services[0];
    assert_eq!(svc.scheduler, Scheduler::Mh);
    assert_eq!(svc.connect_timeout, Duration::from_millis(250));
    let c = &svc.backends[0].checks[0];
    assert_eq!(c.interval, Duration::from_millis(500));
    assert_eq!(c.connect_timeout, Duration::from_millis(750));
    assert_eq!(c.delay_before_retry, Duration::from_millis(100));
    assert_eq!(c.warmup, Duration::from_millis(2500));
    assert_eq!(c.retry, 0);
}

#[test]
fn new_optional_keys_and_their_defaults() {
    let loaded = load_valid("new_keys.yaml");
    let plan = &loaded.plan;
    assert_eq!(plan.identity.as_deref(), Some("lb-host-a"));
    assert_eq!(plan.admin.http, None, "http: off");
    let edge = &plan.instances[0];
    match &edge.lock {
        LockPlan::Etcd(e) => {
            assert_eq!(
                e.endpoints,
                vec!["http://192.0.2.50:2379", "https://192.0.2.51:2379"]
            );
            assert_eq!(e.key, "/lb/edge");
        }
        other => panic!("etcd lock expected, got {other:?}"),
    }
    let s80 = &edge.services[0];
    assert_eq!(s80.idle_timeout, Duration::from_secs(120));
    assert_eq!(s80.client_fin_timeout, Duration::from_secs(5));
    assert_eq!(s80.server_fin_timeout, Duration::from_millis(500));
    assert_eq!(s80.proxy_protocol, ProxyProtocol::V2, "true means v2");
    assert!(!s80.transparent);
    assert_eq!(s80.max_connections, 10000);
    assert_eq!(s80.on_backend_down, OnBackendDown::Drain);
    assert_eq!(s80.connect_attempts, 2);
    let s443 = &edge.services[1];
    assert_eq!(s443.proxy_protocol, ProxyProtocol::V1);
    assert_eq!(
        s443.idle_timeout,
        Duration::from_secs(900),
        "default idle_timeout"
    );
    assert_eq!(
        (s443.client_fin_timeout, s443.server_fin_timeout),
        (Duration::from_secs(120), Duration::from_secs(120)),
        "default fin timeouts: IPVS's FIN_WAIT"
    );
    assert_eq!(s443.on_backend_down, OnBackendDown::Close);
    assert_eq!(s443.connect_attempts, 3);
    let second = &plan.instances[1];
    assert_eq!(second.name, "vip-192-0-2-27", "name derived from the VIP");
    match &second.lock {
        LockPlan::Kube(k) => {
            assert_eq!(
                (k.lease_name.as_str(), k.namespace.as_str()),
                ("edge-b", "lb")
            );
        }
        other => panic!("kube lock expected, got {other:?}"),
    }
    assert_eq!(
        loaded.warnings.len(),
        1,
        "the missing kubeconfig: {:?}",
        loaded.warnings
    );
}

#[test]
fn real_server_keywords_and_timing_inheritance() {
    let plan = load_valid("real_server_keywords.yaml").plan;
    let svc = only_service(&plan);
    assert_eq!(svc.scheduler, Scheduler::Sed);
    let b = &svc.backends[1];
    assert_eq!(b.weight, 5);
    assert!(b.inhibit_on_failure);
    assert_eq!((b.upper_threshold, b.lower_threshold), (1000, 800));
    assert!(b.alpha, "a checker with alpha starts the backend down");
    let tcp = &b.checks[0];
    assert_eq!(
        tcp.interval,
        Duration::from_secs(12),
        "real server delay_loop beats the virtual server's"
    );
    assert_eq!(tcp.retry, 4, "virtual server retry");
    assert_eq!(tcp.delay_before_retry, Duration::from_secs(7));
    let CheckKind::Tcp(t) = &tcp.kind else {
        panic!("TCP_CHECK")
    };
    assert_eq!(t.connect, addr("198.51.100.99:25"));
    let misc = &b.checks[1];
    assert_eq!(misc.interval, Duration::from_secs(60));
    let CheckKind::Misc(m) = &misc.kind else {
        panic!("MISC_CHECK")
    };
    assert_eq!(m.argv, vec!["/usr/local/bin/smtp_ok"]);
    assert_eq!(
        m.timeout,
        Duration::from_secs(60),
        "misc_timeout defaults to delay_loop"
    );
}

#[test]
fn keepalived_defaults_when_nothing_is_said() {
    let plan = load_valid("defaults.yaml").plan;
    let inst = &plan.instances[0];
    assert_eq!(inst.name, "vip-192-0-2-29");
    assert_eq!(inst.lock, LockPlan::None);
    assert_eq!(inst.id, None);
    let s = &inst.services[0];
    assert_eq!(s.scheduler, Scheduler::Wlc, "lb_algo defaults to wlc");
    assert_eq!(s.connect_timeout, Duration::from_secs(5));
    assert!(s.backends[0].checks.is_empty());
    let c = &inst.services[1].backends[0].checks[0];
    assert_eq!(
        c.interval,
        Duration::from_secs(60),
        "delay_loop defaults to 60"
    );
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
    assert_eq!((c.retry, c.delay_before_retry), (1, Duration::from_secs(1)));
    assert_eq!(plan.admin.socket, Path::new(config::DEFAULT_ADMIN_SOCKET));
    assert_eq!(plan.admin.http, Some(addr(config::DEFAULT_ADMIN_HTTP)));
}

#[test]
fn peers_without_a_lock_plan_vrrp_with_its_keys_and_keepalived_defaults() {
    let loaded = load_valid("vrrp.yaml");
    let plan = &loaded.plan;
    match &plan.instances[0].lock {
        LockPlan::Vrrp(v) => {
            assert_eq!(v.vrid, 40);
            assert_eq!(v.priority, 150);
            assert_eq!(v.advert_interval, Duration::from_millis(100));
            assert!(!v.preempt, "nopreempt: true");
            assert_eq!(v.preempt_delay, Duration::from_millis(2500));
        }
        other => panic!("VRRP expected, got {other:?}"),
    }
    match &plan.instances[1].lock {
        LockPlan::Vrrp(v) => {
            assert_eq!(v.vrid, 41);
            assert_eq!(v.priority, 100, "keepalived's default priority");
            assert_eq!(v.advert_interval, Duration::from_secs(1));
            assert!(v.preempt);
            assert_eq!(v.preempt_delay, Duration::ZERO);
        }
        other => panic!("VRRP expected, got {other:?}"),
    }
    assert_eq!(
        plan.instances[2].lock,
        LockPlan::None,
        "no lock and no peers: single host"
    );
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.headline()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].ends_with(
            "vrrp.yaml:30:17: warning: `priority` has no effect: VRRP runs only with a `peer` list and no lock, and this VIP is held by this host alone (no lock and no `peer`)"
        ),
        "{warnings:?}"
    );
}

#[test]
fn check_says_what_holds_each_vip() {
    let loaded = load_valid("vrrp.yaml");
    let text = config::summary::render(&loaded.plan, loaded.warnings.len());
    assert!(
        text.contains("held by: VRRPv3 among the peers (no lock): vrid 40, priority 150, advert_int 0.1s, nopreempt"),
        "{text}"
    );
    assert!(
        text.contains("held by: this host alone (single host: no lock and no peers)"),
        "{text}"
    );
    let seed = load_valid("seed.yaml");
    let text = config::summary::render(&seed.plan, 0);
    assert!(
        text.contains("lease: kube Lease kube-system/alive-proxy-vip-1"),
        "{text}"
    );
}

#[test]
fn bgp_block_selects_bgp_mode_with_its_keys_and_defaults() {
    let loaded = load_valid("bgp.yaml");
    let plan = &loaded.plan;
    match &plan.instances[0].lock {
        LockPlan::Bgp(b) => {
            assert_eq!(b.table, 1061);
            assert_eq!(b.hold_down, Duration::from_millis(2500));
            assert_eq!(b.withdraw_wait, Duration::ZERO);
            assert_eq!(b.bird_socket, Path::new("/run/bird/lb.ctl"));
            assert_eq!(b.protocols, ["uplink4", "uplink_b"]);
        }
        other => panic!("BGP expected, got {other:?}"),
    }
    match &plan.instances[1].lock {
        LockPlan::Bgp(b) => {
            assert_eq!(b.table, 161);
            assert_eq!(b.hold_down, Duration::from_secs(5));
            assert_eq!(b.withdraw_wait, Duration::from_secs(5));
            assert_eq!(b.bird_socket, Path::new("/run/bird/bird.ctl"));
            assert!(b.protocols.is_empty());
        }
        other => panic!("BGP expected, got {other:?}"),
    }
    assert_eq!(
        plan.instances[2].lock,
        LockPlan::None,
        "no bgp block: the seed's meaning"
    );
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.headline()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].ends_with("bgp.yaml:10:17: warning: `priority` has no effect: VRRP runs only with a `peer` list and no lock, and this VIP is held by every healthy host over BGP (`bgp`)"),
        "{warnings:?}"
    );
    let text = config::summary::render(plan, loaded.warnings.len());
    assert!(
        text.contains("held by: every healthy host, announced over BGP by BIRD (route in kernel table 1061, hold_down 2.5s, withdraw_wait 0s, control socket /run/bird/lb.ctl)"),
        "{text}"
    );
}
