//! The shared test machinery works: labs connect hosts and clean up after themselves.

mod support;

use std::time::Duration;

use support::netns::Lab;

#[test]
fn lab_hosts_reach_each_other_over_the_bridge_in_both_families() {
    let mut lab = Lab::new();
    let a = lab.add_host("a", &["192.0.2.1/24", "2001:db8::1/64"]);
    lab.add_host("b", &["192.0.2.2/24", "2001:db8::2/64"]);
    let v4 = a.try_run("ping", &["-c", "1", "-W", "2", "192.0.2.2"]);
    assert!(
        v4.status.success(),
        "a could not ping b over IPv4: {}",
        String::from_utf8_lossy(&v4.stdout)
    );
    let v6 = a.try_run("ping", &["-6", "-c", "1", "-W", "2", "2001:db8::2"]);
    assert!(
        v6.status.success(),
        "a could not ping b over IPv6: {}",
        String::from_utf8_lossy(&v6.stdout)
    );
}

#[test]
fn lab_namespaces_are_removed_when_the_lab_drops() {
    let ns = {
        let mut lab = Lab::new();
        lab.add_host("gone", &["198.51.100.1/24"]).ns
    };
    let list = support::netns::run_checked("ip", &["netns", "list"]);
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&ns),
        "namespace {ns} still exists after the lab dropped"
    );
}

#[test]
fn host_command_with_hostname_sees_its_own_host_name() {
    let mut lab = Lab::new();
    let host = lab.add_host("lb7", &["203.0.113.7/24"]);
    let out = host
        .command_with_hostname("hostname")
        .output()
        .expect("run hostname in the lab host");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "lb7",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn child_guard_kills_the_whole_process_group_on_drop() {
    let mut command = std::process::Command::new("sh");
    command.args(["-c", "sleep 300 & echo $! ; wait"]);
    let guard = support::process::spawn_logged("sleeper", command);
    assert!(
        support::wait::until(Duration::from_secs(5), || !guard.log().trim().is_empty()),
        "the child never printed its grandchild's pid"
    );
    let grandchild: i32 = guard.log().trim().parse().expect("a pid");
    drop(guard);
    let gone = support::wait::until(Duration::from_secs(5), || {
        // SAFETY: kill(2) with signal 0 only checks that the pid exists.
        let alive = unsafe { libc::kill(grandchild, 0) };
        alive != 0
    });
    assert!(gone, "grandchild {grandchild} survived its guard");
}
