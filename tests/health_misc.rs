//! MISC_CHECK with real scripts: exit codes, misc_dynamic weights, a hanging script killed at
//! misc_timeout with nothing left behind (no zombie child, no surviving grandchild).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alive_proxy::config::Plan;
use alive_proxy::health::{BackendStatus, HealthSupervisor, NoopObserver};
use support::health::*;
use tokio::sync::mpsc;

fn spawn(plan: &Plan, sink: &Arc<RecordingSink>) -> HealthSupervisor {
    let (_passive_tx, passive_rx) = mpsc::unbounded_channel();
    HealthSupervisor::spawn(plan, sink.clone(), passive_rx, Arc::new(NoopObserver))
}

/// A script that exits with the code written in `code_file`.
fn exit_code_script(dir: &Path) -> (PathBuf, PathBuf) {
    let code = dir.join("code");
    let script = dir.join("check.sh");
    std::fs::write(&code, "0\n").unwrap();
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexit $(cat '{}')\n", code.display()),
    )
    .unwrap();
    set_executable(&script);
    (script, code)
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn set_code(code_file: &Path, code: u8) {
    // Write then rename, so the script never reads a half-written file.
    let tmp = code_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{code}\n")).unwrap();
    std::fs::rename(&tmp, code_file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_zero_is_up_and_exit_one_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (script, code) = exit_code_script(dir.path());
    let vs = vip_port(80);
    let kind = misc(&[script.to_str().unwrap()], Duration::from_secs(5), false);
    let b = backend(traffic_addr(20), vec![check(kind, Timing::quick())]);
    let k = key(vs, b.addr);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, vec![b])]), &sink);
    let ctx = || format!("{:?}", sink.backend_calls(k));
    set_code(&code, 1);
    eventually(
        Duration::from_secs(10),
        "down on exit 1",
        || sink.status(k) == Some(BackendStatus::Down),
        ctx,
    )
    .await;
    set_code(&code, 0);
    eventually(
        Duration::from_secs(10),
        "up on exit 0",
        || sink.status(k) == Some(up(1)),
        ctx,
    )
    .await;
    set_code(&code, 7);
    eventually(
        Duration::from_secs(10),
        "down on exit 7 without misc_dynamic",
        || sink.status(k) == Some(BackendStatus::Down),
        ctx,
    )
    .await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misc_dynamic_exit_codes_set_the_weight() {
    let dir = tempfile::tempdir().unwrap();
    let (script, code) = exit_code_script(dir.path());
    let vs = vip_port(80);
    let kind = misc(&[script.to_str().unwrap()], Duration::from_secs(5), true);
    let mut b = backend(traffic_addr(21), vec![check(kind, Timing::quick())]);
    b.weight = 3;
    let k = key(vs, b.addr);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, vec![b])]), &sink);
    let ctx = || format!("{:?}", sink.backend_calls(k));
    set_code(&code, 12);
    eventually(
        Duration::from_secs(10),
        "weight 10 from exit 12",
        || sink.status(k) == Some(up(10)),
        ctx,
    )
    .await;
    set_code(&code, 2);
    eventually(
        Duration::from_secs(10),
        "weight 0 from exit 2",
        || sink.status(k) == Some(up(0)),
        ctx,
    )
    .await;
    set_code(&code, 0);
    eventually(
        Duration::from_secs(10),
        "configured weight 3 on exit 0",
        || sink.status(k) == Some(up(3)),
        ctx,
    )
    .await;
    set_code(&code, 255);
    eventually(
        Duration::from_secs(10),
        "weight 253 from exit 255",
        || sink.status(k) == Some(up(253)),
        ctx,
    )
    .await;
    set_code(&code, 1);
    eventually(
        Duration::from_secs(10),
        "down on exit 1",
        || sink.status(k) == Some(BackendStatus::Down),
        ctx,
    )
    .await;
    supervisor.shutdown().await;
}

/// Whether `pid` is still a live process (a zombie counts as gone only if someone else
/// is responsible for reaping it; our own child must not be one).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
    state != Some('Z')
}

fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_script_is_killed_at_misc_timeout_with_its_children_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = dir.path().join("hang.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep 600 &\necho \"$$ $!\" > '{}'\nwait\n",
            pids.display()
        ),
    )
    .unwrap();
    set_executable(&script);
    let vs = vip_port(80);
    let misc_timeout = Duration::from_millis(500);
    let kind = misc(&[script.to_str().unwrap()], misc_timeout, false);
    let mut timing = Timing::quick();
    timing.interval = Duration::from_secs(60); // one run only
    let b = backend(traffic_addr(22), vec![check(kind, timing)]);
    let k = key(vs, b.addr);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, vec![b])]), &sink);
    let started = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "down after misc_timeout",
        || sink.status(k) == Some(BackendStatus::Down),
        || format!("{:?}", sink.backend_calls(k)),
    )
    .await;
    let took = started.elapsed();
    println!("MISC_CHECK hanging script: down after {took:?} (misc_timeout {misc_timeout:?})");
    assert!(
        took >= misc_timeout,
        "reported down after {took:?}, before misc_timeout"
    );

    let text = std::fs::read_to_string(&pids).expect("script wrote its pids");
    let mut it = text.split_whitespace().map(|p| p.parse::<u32>().unwrap());
    let (script_pid, sleep_pid) = (it.next().unwrap(), it.next().unwrap());
    eventually(
        Duration::from_secs(5),
        "script reaped and its child killed",
        || !exists(script_pid) && !alive(sleep_pid),
        || {
            format!(
                "script pid {script_pid} exists={}, sleep pid {sleep_pid} alive={}",
                exists(script_pid),
                alive(sleep_pid)
            )
        },
    )
    .await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_script_counts_as_failure() {
    let vs = vip_port(80);
    let kind = misc(
        &["/nonexistent/check-script"],
        Duration::from_secs(1),
        false,
    );
    let b = backend(traffic_addr(23), vec![check(kind, Timing::quick())]);
    let k = key(vs, b.addr);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, vec![b])]), &sink);
    eventually(
        Duration::from_secs(10),
        "down: script cannot start",
        || sink.status(k) == Some(BackendStatus::Down),
        || format!("{:?}", sink.backend_calls(k)),
    )
    .await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_a_running_script() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = dir.path().join("hang.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$$\" > '{}'\nexec sleep 600\n",
            pids.display()
        ),
    )
    .unwrap();
    set_executable(&script);
    let vs = vip_port(80);
    let kind = misc(&[script.to_str().unwrap()], Duration::from_secs(60), false);
    let b = backend(traffic_addr(24), vec![check(kind, Timing::quick())]);
    let sink = RecordingSink::new();
    let supervisor = spawn(&plan(vec![service(vs, vec![b])]), &sink);
    eventually(
        Duration::from_secs(10),
        "script running",
        || pids.exists() && std::fs::read_to_string(&pids).is_ok_and(|s| s.ends_with('\n')),
        String::new,
    )
    .await;
    let pid: u32 = std::fs::read_to_string(&pids)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid), "script should be running");
    supervisor.shutdown().await;
    eventually(
        Duration::from_secs(5),
        "script killed and reaped after shutdown",
        || !exists(pid),
        || format!("pid {pid} alive={}", alive(pid)),
    )
    .await;
}
