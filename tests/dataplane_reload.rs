//! Reload inside the data plane (`Dataplane::apply_plan`): listeners added and removed per
//! worker, established sessions kept, including those of a removed VIP:port.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use alive_proxy::dataplane::DriverChoice;
use support::dataplane::{backend_name, http_get, loopback, plan, service, spawn_backend, start};
use support::ports::free_tcp_port;

fn echo_round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(message)?;
    let mut answer = vec![0u8; message.len()];
    stream.read_exact(&mut answer)?;
    Ok(answer)
}

fn reload_adds_and_removes_listeners_and_keeps_sessions(driver: DriverChoice) {
    let echo = loopback(false, free_tcp_port());
    let http = loopback(false, free_tcp_port());
    let _e = spawn_backend("echo", echo, "echo");
    let _h = spawn_backend("web", http, "http");
    let old_vip = loopback(false, free_tcp_port());
    let new_vip = loopback(false, free_tcp_port());
    let dp = start(&plan(vec![service(old_vip, &[echo])]), driver);

    let mut session = TcpStream::connect_timeout(&old_vip, Duration::from_secs(5))
        .expect("connect to the old VIP");
    session
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(
        echo_round_trip(&mut session, b"before").expect("echo before reload"),
        b"before"
    );

    dp.get()
        .apply_plan(&plan(vec![service(new_vip, &[http])]))
        .expect("valid reload applies");

    let served = support::wait::until(Duration::from_secs(5), || http_get(new_vip, "/").is_ok());
    assert!(served, "the VIP:port added by the reload does not serve");
    let body = http_get(new_vip, "/").expect("request on the new VIP:port");
    assert_eq!(backend_name(&body).as_deref(), Some("web"));
    let closed = support::wait::until(Duration::from_secs(5), || {
        TcpStream::connect_timeout(&old_vip, Duration::from_millis(200)).is_err()
    });
    assert!(closed, "the VIP:port removed by the reload still accepts");
    assert_eq!(
        echo_round_trip(&mut session, b"after")
            .expect("the established session survives the reload"),
        b"after"
    );
}
on_both_drivers!(reload_adds_and_removes_listeners_and_keeps_sessions);

fn reload_that_cannot_bind_changes_nothing(driver: DriverChoice) {
    let web = loopback(false, free_tcp_port());
    let _w = spawn_backend("web", web, "http");
    let vip = loopback(false, free_tcp_port());
    let dp = start(&plan(vec![service(vip, &[web])]), driver);
    // A port held by a socket without SO_REUSEPORT cannot be bound by the reload.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a squatter");
    let taken = squatter.local_addr().expect("squatter addr");
    let result = dp
        .get()
        .apply_plan(&plan(vec![service(vip, &[web]), service(taken, &[web])]));
    assert!(
        result.is_err(),
        "a reload whose listener cannot bind must be rejected"
    );
    let body = http_get(vip, "/").expect("the old config keeps serving");
    assert_eq!(backend_name(&body).as_deref(), Some("web"));
}
on_both_drivers!(reload_that_cannot_bind_changes_nothing);
