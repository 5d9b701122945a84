//! PROXY protocol v1 and v2 toward a real peer: nginx with `listen ... proxy_protocol`
//! answers `$proxy_protocol_addr` (and logs it), so a wrong header fails nginx's own parser.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use alive_proxy::config::ProxyProtocol;
use alive_proxy::dataplane::DriverChoice;
use support::dataplane::{http_get, loopback, plan, service, start};
use support::ports::{free_tcp_port, free_tcp_port_dual};
use support::process::{ChildGuard, spawn_logged};
use support::wait;

struct Nginx {
    guard: ChildGuard,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

/// nginx on `listen` expecting a PROXY header on every connection.
fn nginx_with_proxy_protocol(listen: SocketAddr) -> Nginx {
    let dir = tempfile::tempdir().expect("tempdir for nginx");
    let root = dir.path();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {pid};\nerror_log {err} info;\nevents {{ worker_connections 64; }}\n\
         http {{\n  log_format pp '$proxy_protocol_addr $proxy_protocol_port $remote_addr';\n  access_log {acc} pp;\n\
         client_body_temp_path {root}/body; proxy_temp_path {root}/proxy; fastcgi_temp_path {root}/fcgi;\n\
         uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;\n\
         server {{\n    listen {listen} proxy_protocol;\n    location / {{ return 200 \"$proxy_protocol_addr\\n\"; }}\n  }}\n}}\n",
        pid = root.join("nginx.pid").display(),
        err = root.join("error.log").display(),
        acc = root.join("access.log").display(),
        root = root.display(),
    );
    let conf_path = root.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let mut command = Command::new("nginx");
    command
        .arg("-p")
        .arg(root)
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "error_log stderr info;"]);
    let guard = spawn_logged("nginx", command);
    assert!(
        wait::tcp_listening(listen, Duration::from_secs(10)),
        "nginx did not start on {listen}; log:\n{}",
        guard.log()
    );
    Nginx { guard, dir }
}

fn backend_sees_the_client(driver: DriverChoice, version: ProxyProtocol, v6: bool) {
    let port = || {
        if v6 {
            free_tcp_port_dual()
        } else {
            free_tcp_port()
        }
    };
    let backend = loopback(v6, port());
    let nginx = nginx_with_proxy_protocol(backend);
    let vip = loopback(v6, port());
    let mut svc = service(vip, &[backend]);
    svc.proxy_protocol = version;
    let _dp = start(&plan(vec![svc]), driver);
    let body = http_get(vip, "/").unwrap_or_else(|e| {
        panic!(
            "request through the proxy failed: {e}; nginx log:\n{}",
            nginx.guard.log()
        )
    });
    let client_ip = vip.ip().to_string();
    assert_eq!(
        body.trim(),
        client_ip,
        "nginx saw a different client address ({version:?})"
    );
    assert!(
        wait::until(Duration::from_secs(5), || nginx
            .access_log()
            .starts_with(&format!("{client_ip} "))),
        "nginx access log lacks the client address: {:?}",
        nginx.access_log()
    );
}

fn proxy_v1_to_nginx_v4(driver: DriverChoice) {
    backend_sees_the_client(driver, ProxyProtocol::V1, false);
}
on_both_drivers!(proxy_v1_to_nginx_v4);

fn proxy_v2_to_nginx_v4(driver: DriverChoice) {
    backend_sees_the_client(driver, ProxyProtocol::V2, false);
}
on_both_drivers!(proxy_v2_to_nginx_v4);

fn proxy_v1_to_nginx_v6(driver: DriverChoice) {
    backend_sees_the_client(driver, ProxyProtocol::V1, true);
}
on_both_drivers!(proxy_v1_to_nginx_v6);

fn proxy_v2_to_nginx_v6(driver: DriverChoice) {
    backend_sees_the_client(driver, ProxyProtocol::V2, true);
}
on_both_drivers!(proxy_v2_to_nginx_v6);
