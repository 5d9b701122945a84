//! The image, run as operators run it: packaged from the host-built binary onto a Debian
//! base made locally (no registry here), started through the `docker` CLI with the seed's
//! exact line and with the least-privilege line of docs/operations.md. In each, a client
//! is served through an IPv4 and an IPv6 VIP by `alive-backend` stand-ins,
//! `alive-proxy stats` answers inside the container, /metrics answers on the host, and
//! `docker stop` ends it at once with exit code 0 and the VIPs removed.
//!
//! `--network=host` under dockerd is the machine's root network namespace: the VIPs go on
//! a veth the test creates there, bridged to a lab of namespaces that holds the client and
//! the backends. Documentation ranges only, and not 192.0.2.0/24: these machines' own eth0
//! is in it. Everything is removed on exit.
//!
//! Skipped (passing, with a printed reason) only when `docker info` fails.
//! Run: `cargo test --test docker_image -- --nocapture`

#[path = "support/ha_lab.rs"]
mod ha_lab;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use support::container::{self, Container, Image, RootLink};
use support::dataplane::{backend_name, http_get};
use support::netns::{Host, Lab};
use support::ports::free_tcp_port;
use support::process::ChildGuard;
use support::wait;

const VIP4: &str = "198.51.100.100";
const VIP6: &str = "2001:db8:15::100";
const BACKENDS4: [&str; 2] = ["198.51.100.11", "198.51.100.12"];
const BACKENDS6: [&str; 2] = ["2001:db8:15::11", "2001:db8:15::12"];
/// The traffic port is the seed's 80 when it is free on the host (see [`traffic_port`]);
/// health is on the ALB's 1936.
const HEALTH_PORT: u16 = 1936;
const LINK4: &str = "198.51.100.1";
const LINK6: &str = "2001:db8:15::1";
/// The log line the data plane writes once when it cannot use io_uring.
const FALLBACK: &str = "io_uring unavailable: the data plane falls back to epoll";

/// The tests in this file share the root namespace's VIPs and port 80.
static SERIAL: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    IoUring,
    Epoll,
}

#[test]
fn seed_docker_run_line_serves_through_the_vips_on_io_uring() {
    run_scenario("seed", Driver::IoUring, |cfg, _| {
        [
            "-dt",
            "--restart=always",
            "--privileged",
            "--network=host",
            "-v",
            &format!("{cfg}:/live/cfg"),
        ]
        .map(String::from)
        .to_vec()
    });
}

#[test]
fn least_privilege_with_the_shipped_seccomp_profile_serves_on_io_uring() {
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/seccomp.json");
    run_scenario("leastpriv", Driver::IoUring, |cfg, _| {
        least_privilege_flags(cfg, &profile)
    });
}

/// Docker >= 25 and containerd >= 2.0 block io_uring in their default profiles; this
/// machine's engine (20.10) still allows it, so the test pins the current default: the
/// shipped profile without its io_uring rule, which is all that sets the two apart.
#[test]
fn least_privilege_under_dockers_default_seccomp_profile_falls_back_to_epoll_and_serves() {
    run_scenario("defaultseccomp", Driver::Epoll, |cfg, scratch| {
        let profile = scratch.join("docker-default-seccomp.json");
        write_profile_without_io_uring(&profile);
        least_privilege_flags(cfg, &profile)
    });
}

/// docs/operations.md's least-privilege line, config mounted read-only.
fn least_privilege_flags(cfg: &str, seccomp_profile: &Path) -> Vec<String> {
    [
        "-d",
        "--restart=always",
        "--network=host",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_ADMIN",
        "--cap-add",
        "NET_RAW",
        "--cap-add",
        "NET_BIND_SERVICE",
        "--security-opt",
        &format!("seccomp={}", seccomp_profile.display()),
        "-v",
        &format!("{cfg}:/live/cfg:ro"),
    ]
    .map(String::from)
    .to_vec()
}

/// docker/seccomp.json minus the io_uring syscalls = Docker's current default profile.
fn write_profile_without_io_uring(path: &Path) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/seccomp.json");
    let text = std::fs::read_to_string(&shipped).expect("read docker/seccomp.json");
    let mut profile: serde_json::Value =
        serde_json::from_str(&text).expect("docker/seccomp.json is JSON");
    let rules = profile["syscalls"]
        .as_array_mut()
        .expect("docker/seccomp.json has a syscalls list");
    let before = rules.len();
    rules.retain(|rule| {
        !rule["names"].as_array().is_some_and(|names| {
            names
                .iter()
                .any(|n| n.as_str().is_some_and(|n| n.starts_with("io_uring")))
        })
    });
    assert_eq!(
        before - rules.len(),
        1,
        "docker/seccomp.json should allow io_uring in exactly one rule of its own"
    );
    std::fs::write(path, profile.to_string()).expect("write the derived seccomp profile");
}

/// The lab: a client and the ALB stand-ins behind a bridge, and the root namespace's link
/// to it, where the container's VIPs go.
struct Site {
    /// The VIPs' and backends' traffic port.
    port: u16,
    // Field order is drop order: backends, then the link, then the namespaces.
    _backends: Vec<ChildGuard>,
    link: RootLink,
    client: Host,
    _lab: Lab,
}

fn build_site() -> Site {
    let mut lab = Lab::new();
    let client = lab.add_host("client", &["198.51.100.200/24", "2001:db8:15::200/64"]);
    let alb = lab.add_host(
        "alb",
        &[
            "198.51.100.11/24",
            "198.51.100.12/24",
            "2001:db8:15::11/64",
            "2001:db8:15::12/64",
        ],
    );
    let link = RootLink::attach(&lab, &[&format!("{LINK4}/24"), &format!("{LINK6}/64")]);
    let port = traffic_port();
    let mut backends = Vec::new();
    for (i, ip) in BACKENDS4.iter().chain(BACKENDS6.iter()).enumerate() {
        let listen = socket(ip, port);
        let health = socket(ip, HEALTH_PORT);
        let name = format!("alb{}", i + 1);
        backends.push(alb.spawn(
            &name,
            env!("CARGO_BIN_EXE_alive-backend"),
            &[
                "--name",
                &name,
                "--listen",
                &listen.to_string(),
                "--health",
                &health.to_string(),
            ],
        ));
        // Reached from the root namespace, as the container will reach them.
        for addr in [listen, health] {
            assert!(
                wait::tcp_listening(addr, Duration::from_secs(10)),
                "backend {name} not reachable on {addr} from the root namespace"
            );
        }
    }
    Site {
        port,
        _backends: backends,
        link,
        client,
        _lab: lab,
    }
}

/// A port below 1024 (so the least-privilege run needs NET_BIND_SERVICE, as in production)
/// that nothing on the host holds for every address: a packaged nginx left running on
/// `*:80` would make the container's VIP listeners fail. 80 when free.
fn traffic_port() -> u16 {
    (80..1024)
        .step_by(100)
        .find(|&port| {
            std::net::TcpListener::bind(socket(LINK4, port)).is_ok()
                && std::net::TcpListener::bind(socket(LINK6, port)).is_ok()
        })
        .expect("some port of 80, 180, ..., 980 is free on the host")
}

fn socket(ip: &str, port: u16) -> SocketAddr {
    let ip: std::net::IpAddr = ip.parse().expect("literal address");
    SocketAddr::new(ip, port)
}

/// The seed's alive.yaml shape: one IPv4 and one IPv6 instance, rr, TCP_CHECK on 1936,
/// no lock (this host holds the VIPs), metrics on a free loopback port.
fn alive_yaml(interface: &str, port: u16, metrics: SocketAddr) -> String {
    let instance = |vip: &str, name: &str, ips: &[&str]| {
        let ips = ips
            .iter()
            .map(|ip| format!("\"{ip}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            r#"  - vip:
      vip: {vip}
      interface: "{interface}"
      name: "{name}"
    ipvs:
      ips: [ {ips} ]
      ports:
        - port: {port}
          virtual_server_config: |
            delay_loop 1
            lb_algo rr
            lb_kind NAT
            protocol TCP
          raw_check: |
            TCP_CHECK {{
                connect_timeout 1
                connect_port {HEALTH_PORT}
            }}
"#
        )
    };
    format!(
        "admin:\n  http: \"{metrics}\"\ninstances:\n{}{}",
        instance(VIP4, "docker-v4", &BACKENDS4),
        instance(VIP6, "docker-v6", &BACKENDS6)
    )
}

/// Packages the image, starts it with `flags(config_dir, scratch_dir)`, and checks
/// everything the module doc promises.
fn run_scenario(label: &str, driver: Driver, flags: impl FnOnce(&str, &Path) -> Vec<String>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = container::engine_unavailable() {
        println!("skipped: no Docker Engine here ({why})");
        return;
    }
    let _machine = container::lock_machine();
    let base = container::ensure_base_image();
    let image = Image::package(Path::new(env!("CARGO_BIN_EXE_alive-proxy")), base, label);
    let site = build_site();

    let scratch = tempfile::tempdir().expect("temporary directory");
    let cfg_dir = scratch.path().join("cfg");
    std::fs::create_dir(&cfg_dir).expect("config directory");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    std::fs::write(
        cfg_dir.join("alive.yaml"),
        alive_yaml(site.link.name(), site.port, metrics),
    )
    .expect("write alive.yaml");
    let cfg = cfg_dir.to_str().expect("UTF-8 temporary path");
    let flags = flags(cfg, scratch.path());
    let (proxy, flags) = start(label, flags, &image);

    let report = |what: &str| {
        format!(
            "{what}\n--- docker run {}\n--- container log:\n{}\n--- addresses on {}: {:?}",
            flags.join(" "),
            proxy.logs(),
            site.link.name(),
            site.link.addresses()
        )
    };
    assert_eq!(
        proxy.net_namespace(),
        container::own_net_namespace(),
        "{}",
        report(
            "the container is not in this test's network namespace: run the test in dockerd's (the root) namespace"
        )
    );
    assert!(
        wait::until(Duration::from_secs(20), || site.link.has_address(VIP4)
            && site.link.has_address(VIP6)),
        "{}",
        report("the container did not put both VIPs on the host's interface")
    );

    for (vip, backends) in [(VIP4, BACKENDS4), (VIP6, BACKENDS6)] {
        let served = served_by(&site.client, socket(vip, site.port), 6);
        let mut seen: Vec<String> = served.iter().flatten().cloned().collect();
        seen.sort();
        seen.dedup();
        assert!(
            served.iter().all(Option::is_some) && seen.len() == backends.len(),
            "{}",
            report(&format!(
                "through {vip}:{}, expected all 6 requests answered by both backends in turn, got {served:?}",
                site.port
            ))
        );
    }

    let stats = proxy.exec(&["alive-proxy", "stats"]);
    let table = String::from_utf8_lossy(&stats.stdout);
    assert!(
        stats.status.success(),
        "{}",
        report(&format!(
            "`docker exec {} alive-proxy stats` failed: {}",
            proxy.name(),
            String::from_utf8_lossy(&stats.stderr)
        ))
    );
    for needle in [
        format!("{VIP4}:{}", site.port),
        format!("[{VIP6}]:{}", site.port),
        format!("{}:{}", BACKENDS4[0], site.port),
        format!("[{}]:{}", BACKENDS6[1], site.port),
    ] {
        assert!(
            table.contains(&needle),
            "`alive-proxy stats` does not list {needle}:\n{table}"
        );
    }

    let metrics_text = http_get(metrics, "/metrics")
        .unwrap_or_else(|e| panic!("{}", report(&format!("GET http://{metrics}/metrics: {e}"))));
    assert!(
        metrics_text.contains("alive_proxy_vip_master") && metrics_text.contains(VIP4),
        "/metrics on the host lacks the VIP's state:\n{metrics_text}"
    );

    let log = proxy.logs();
    let serving = log
        .lines()
        .find(|l| l.contains("alive-proxy serving"))
        .unwrap_or_else(|| panic!("{}", report("no `alive-proxy serving` line")));
    match driver {
        Driver::IoUring => assert!(
            serving.contains("driver=io_uring") && !log.contains(FALLBACK),
            "{}",
            report("expected the io_uring driver")
        ),
        Driver::Epoll => assert!(
            serving.contains("driver=legacy (epoll)") && log.matches(FALLBACK).count() == 1,
            "{}",
            report("expected the epoll fallback, said exactly once")
        ),
    }

    // No live sessions: SIGTERM releases the VIPs and exits at once, well inside the grace
    // period (a SIGKILL after it would show as exit code 137).
    let took = proxy.stop(10);
    assert!(
        took < Duration::from_secs(2),
        "{}",
        report(&format!("docker stop took {took:?}; expected under 2 s"))
    );
    assert_eq!(
        proxy.exit_code(),
        0,
        "{}",
        report("exit code after docker stop")
    );
    assert!(
        !proxy.running() && !site.link.has_address(VIP4) && !site.link.has_address(VIP6),
        "{}",
        report("VIPs left on the interface after docker stop")
    );
    println!("{label}: served, stats answered, docker stop took {took:.2?}");
}

/// `docker run` with `flags`. Where this machine cannot start `--privileged` containers at
/// all (a sandbox whose capability bounding set lacks some: runc then fails with "unable to
/// apply caps"), says so and runs what `--privileged` means with the capabilities it has:
/// every capability but the missing ones, no seccomp, no AppArmor, unmasked /proc and /sys.
fn start(label: &str, flags: Vec<String>, image: &Image) -> (Container, Vec<String>) {
    println!("docker run {} {}", flags.join(" "), image.tag());
    let err = match Container::try_run(label, &as_strs(&flags), image) {
        Ok(proxy) => return (proxy, flags),
        Err(err) => err,
    };
    let missing = container::missing_capabilities();
    assert!(
        flags.iter().any(|f| f == "--privileged")
            && err.contains("unable to apply caps")
            && !missing.is_empty(),
        "docker run {} {}: {err}",
        flags.join(" "),
        image.tag()
    );
    println!(
        "note: this machine cannot start --privileged containers (its capability bounding set \
         lacks {missing:?}); running --privileged's equivalent without them"
    );
    let mut equivalent: Vec<String> = Vec::new();
    for flag in flags {
        if flag != "--privileged" {
            equivalent.push(flag);
            continue;
        }
        equivalent.extend(["--cap-add", "ALL"].map(String::from));
        for cap in &missing {
            equivalent.extend(["--cap-drop".to_string(), cap.to_string()]);
        }
        for opt in [
            "seccomp=unconfined",
            "apparmor=unconfined",
            "systempaths=unconfined",
        ] {
            equivalent.extend(["--security-opt".to_string(), opt.to_string()]);
        }
    }
    println!("docker run {} {}", equivalent.join(" "), image.tag());
    let proxy = Container::run(label, &as_strs(&equivalent), image);
    (proxy, equivalent)
}

fn as_strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

/// `count` requests from `client` to `addr`, each on a new connection: who answered each
/// (None = failed). Waits up to 20 s for the first answer (health, listeners).
fn served_by(client: &Host, addr: SocketAddr, count: usize) -> Vec<Option<String>> {
    ha_lab::in_netns(client, move || {
        wait::until(Duration::from_secs(20), || http_get(addr, "/").is_ok());
        (0..count)
            .map(|_| {
                http_get(addr, "/")
                    .ok()
                    .and_then(|body| backend_name(&body))
            })
            .collect()
    })
}
