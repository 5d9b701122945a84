//! One daemon per admin socket: a second `alive-proxy run` with the same config exits
//! non-zero with a clear error before it binds a listener or touches the VIP, and the first
//! keeps its VIP and keeps serving. (Issue 10, item 6: the second one joined the
//! SO_REUSEPORT group, took half the traffic, and on stop removed the first one's VIP.)
//!
//! The VIP is on a veth in a network namespace, not on `lo`, so that its removal would show.

#[path = "support/ha_lab.rs"]
mod ha_lab;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use ha_lab::in_netns;
use support::netns::{Host, Lab};
use support::process::{ChildGuard, spawn_logged};
use support::wait;

const VIP: &str = "192.0.2.100";
const PORT: u16 = 8080;

/// Single-host mode (no lock): the daemon holds the VIP for as long as it runs.
fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("alive.yaml");
    let text = format!(
        r#"admin:
  socket: "{socket}"
  http: off
instances:
  - vip:
      vip: {VIP}
      interface: "eth0"
      name: "single"
    ipvs:
      ips: [ "192.0.2.50" ]
      ports:
        - port: {PORT}
          virtual_server_config: |
            lb_algo rr
"#,
        socket = dir.join("admin.sock").display(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn start_proxy(host: &Host, config: &Path, name: &str) -> ChildGuard {
    let mut command = host.command_with_hostname(env!("CARGO_BIN_EXE_alive-proxy"));
    command.args([
        "run",
        "--config",
        &config.to_string_lossy(),
        "--workers",
        "1",
    ]);
    spawn_logged(name, command)
}

/// One HTTP request to the VIP from the client's namespace; whether a backend answered.
fn served(client: &Host) -> bool {
    in_netns(client, || {
        let Ok(addr) = format!("{VIP}:{PORT}").parse::<SocketAddr>() else {
            return false;
        };
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        stream.read_to_string(&mut answer).is_ok() && answer.contains("backend alb")
    })
}

#[test]
fn a_second_instance_refuses_to_start_and_the_first_keeps_its_vip_and_serves() {
    let mut lab = Lab::new();
    let backend = lab.add_host("alb", &["192.0.2.50/24"]);
    let client = lab.add_host("client", &["192.0.2.200/24"]);
    let lb1 = lab.add_host("lb1", &["192.0.2.11/24"]);
    let _backend = backend.spawn(
        "alive-backend",
        env!("CARGO_BIN_EXE_alive-backend"),
        &["--listen", &format!("192.0.2.50:{PORT}"), "--name", "alb"],
    );
    let dir = tempfile::tempdir().expect("config dir");
    let config = config(dir.path());
    let mut first = start_proxy(&lb1, &config, "first");
    wait::until_or_panic(
        Duration::from_secs(20),
        "the first instance to serve through the VIP",
        || lb1.has_address(VIP) && served(&client),
    );

    let mut second = start_proxy(&lb1, &config, "second");
    let status = second.wait_exit(Duration::from_secs(30));
    let log = second.log();
    assert!(
        matches!(status, Some(s) if !s.success()),
        "the second instance must exit non-zero, got {status:?}; log:\n{log}"
    );
    assert!(
        log.contains("another alive-proxy") && log.contains("already running"),
        "the error must say another instance runs; log:\n{log}"
    );
    assert!(
        !log.contains("alive-proxy serving") && !log.contains("data-plane worker started"),
        "the second instance started serving before refusing; log:\n{log}"
    );

    assert!(
        !first.has_exited(),
        "the first instance died; log:\n{}",
        first.log()
    );
    assert!(
        lb1.has_address(VIP),
        "the VIP left the first instance's host: {:?}",
        lb1.addresses()
    );
    let still = wait::until(Duration::from_secs(5), || served(&client));
    assert!(
        still,
        "the first instance no longer serves through the VIP; log:\n{}",
        first.log()
    );
    first.terminate(Duration::from_secs(10));
}
