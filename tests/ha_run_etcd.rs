//! End to end with the real daemon: two LB hosts run `alive-proxy run` with an `etcd_lock`
//! instance, a backend host runs `alive-backend`, a client connects to the VIP. The client
//! is served through whichever host holds the VIP, and again after the holder's host dies.
//!
//! Run: `cargo test --test ha_run_etcd -- --nocapture`

#[path = "support/ha_lab.rs"]
mod ha_lab;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use ha_lab::{Etcd, in_netns, now_secs};
use support::netns::{Host, Lab};
use support::process::{ChildGuard, spawn_logged};
use support::wait;

const VIP: &str = "192.0.2.100";
const PORT: u16 = 8080;

fn config(dir: &Path, host: &str, etcd: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{host}.yaml"));
    let text = format!(
        r#"admin:
  socket: "{socket}"
instances:
  - vip:
      vip: {VIP}
      interface: "eth0"
      name: "e2e"
      etcd_lock:
        endpoints: [ "{etcd}" ]
    ipvs:
      ips: [ "192.0.2.50" ]
      ports:
        - port: {PORT}
          virtual_server_config: |
            delay_loop 1
            lb_algo rr
            lb_kind NAT
            protocol TCP
          raw_check: |
            TCP_CHECK {{
                connect_timeout 1
                connect_port 1936
            }}
"#,
        socket = dir.join(format!("{host}.sock")).display(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn start_proxy(host: &Host, config: &Path) -> ChildGuard {
    let mut command = host.command_with_hostname(env!("CARGO_BIN_EXE_alive-proxy"));
    command
        .args(["run", "--config", &config.to_string_lossy()])
        .env("RUST_LOG", "info");
    spawn_logged(&format!("{}-alive-proxy", host.name), command)
}

/// One HTTP request to the VIP from the client's namespace; the answering backend's line.
fn request(client: &Host) -> Option<String> {
    in_netns(client, || {
        let addr: SocketAddr = format!("{VIP}:{PORT}").parse().ok()?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        answer
            .lines()
            .find(|l| l.starts_with("backend "))
            .map(str::to_string)
    })
}

#[test]
fn client_is_served_through_the_vip_holder_and_again_after_it_dies() {
    let mut lab = Lab::new();
    let lock = lab.add_host("etcd", &["192.0.2.2/24"]);
    let backend = lab.add_host("alb", &["192.0.2.50/24"]);
    let client = lab.add_host("client", &["192.0.2.200/24"]);
    let lb1 = lab.add_host("lb1", &["192.0.2.11/24"]);
    let lb2 = lab.add_host("lb2", &["192.0.2.12/24"]);
    let etcd = Etcd::start(&lock, "192.0.2.2");
    let _backend = backend.spawn(
        "alive-backend",
        env!("CARGO_BIN_EXE_alive-backend"),
        &[
            "--listen",
            &format!("192.0.2.50:{PORT}"),
            "--health",
            "192.0.2.50:1936",
            "--name",
            "alb",
        ],
    );
    let dir = tempfile::tempdir().expect("config dir");
    let p1 = start_proxy(&lb1, &config(dir.path(), "lb1", &etcd.endpoint));
    wait::until_or_panic(Duration::from_secs(20), "lb1 to hold the VIP", || {
        lb1.has_address(VIP)
    });
    let p2 = start_proxy(&lb2, &config(dir.path(), "lb2", &etcd.endpoint));
    let served = wait::until(Duration::from_secs(20), || request(&client).is_some());
    assert!(
        served,
        "client not served through the VIP\n--- lb1 ---\n{}\n--- lb2 ---\n{}",
        p1.log(),
        p2.log()
    );
    assert!(!lb2.has_address(VIP), "the VIP is on both LB hosts");

    let died = now_secs();
    let started = Instant::now();
    lb1.set_link(false);
    let mut last_failure = None;
    let back = wait::until(Duration::from_secs(15), || {
        let ok = request(&client).is_some();
        if !ok {
            last_failure = Some(started.elapsed());
        }
        ok && last_failure.is_some()
    });
    assert!(
        back,
        "client not served again after lb1 died\n--- lb2 ---\n{}",
        p2.log()
    );
    assert!(lb2.has_address(VIP), "lb2 does not hold the VIP");
    println!(
        "alive-proxy run + etcd: client served again {:.3} s after the holder's host died \
         (last failed request at {:.3} s)",
        now_secs() - died,
        last_failure.map_or(f64::NAN, |d| d.as_secs_f64())
    );
}
