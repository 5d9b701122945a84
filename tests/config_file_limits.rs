//! Reading the config file under bad input: whatever `--config` points at, `alive-proxy check`
//! answers at once, in bounded memory, with one clear message naming the file.
//! (Issue 10: a 60 KB one-line file made `check` use 1.48 GB; `/dev/zero` grew it to 6 GB;
//! a FIFO blocked it forever.)

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::process::{ChildGuard, spawn_logged};

/// Far more than a refused file may cost, far less than the gigabytes it cost before.
const MAX_RSS_KIB: u64 = 256 * 1024;
/// "At once", with room for a loaded 2-core machine; a blocked reader never gets there.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

fn check(path: &Path) -> ChildGuard {
    let mut command = Command::new(env!("CARGO_BIN_EXE_alive-proxy"));
    command.arg("check").arg("--config").arg(path);
    spawn_logged("alive-proxy-check", command)
}

/// Runs `check` on `path`; returns its exit code, peak RSS (KiB) and output.
fn check_outcome(path: &Path) -> (i32, u64, String) {
    let mut child = check(path);
    let Some((code, rss)) = child.wait_exit_with_peak_rss(ANSWER_WITHIN) else {
        panic!(
            "`alive-proxy check --config {}` still running after {ANSWER_WITHIN:?}; output so far:\n{}",
            path.display(),
            child.log()
        );
    };
    (code, rss, child.log())
}

#[test]
fn a_one_megabyte_single_line_file_is_rejected_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("oneline.yaml");
    let entries = vec!["{}"; 1024 * 1024 / 3].join(",");
    std::fs::write(&path, format!("instances: [{entries}]\n")).expect("write the file");
    let (code, rss, log) = check_outcome(&path);
    assert_eq!(code, 1, "the file must be rejected:\n{log}");
    assert!(
        rss < MAX_RSS_KIB,
        "peak RSS {rss} KiB checking a 1 MB one-line file (bound {MAX_RSS_KIB} KiB)"
    );
    assert!(
        log.len() < 64 * 1024,
        "{} bytes of diagnostics for one file; first 2000:\n{}",
        log.len(),
        &log[..2000.min(log.len())]
    );
    assert!(
        log.contains("oneline.yaml:1:"),
        "the error names file and line:\n{log}"
    );
}

#[test]
fn many_errors_on_one_long_line_are_capped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("many.yaml");
    let entries = vec!["{}"; 20_000].join(",");
    std::fs::write(&path, format!("instances: [{entries}]\n")).expect("write the file");
    let (code, rss, log) = check_outcome(&path);
    assert_eq!(code, 1, "the file must be rejected:\n{log}");
    assert!(rss < MAX_RSS_KIB, "peak RSS {rss} KiB");
    let shown = log.matches(": error: ").count();
    assert_eq!(shown, 50, "errors shown; output:\n{log}");
    assert!(
        log.contains("and 39950 more not shown"),
        "says how many were left out:\n{}",
        log.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
    assert!(
        log.lines().all(|l| l.chars().count() < 300),
        "a long source line is shown as a window, not whole"
    );
}

#[test]
fn dev_zero_is_refused_at_once() {
    let (code, rss, log) = check_outcome(Path::new("/dev/zero"));
    assert_eq!(code, 1, "{log}");
    assert!(rss < MAX_RSS_KIB, "peak RSS {rss} KiB reading /dev/zero");
    assert!(
        log.contains("/dev/zero is a character device, not a regular file"),
        "{log}"
    );
}

#[test]
fn a_fifo_is_refused_at_once_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("alive.yaml");
    let status = Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
    let (code, _, log) = check_outcome(&path);
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(&format!("{} is a FIFO", path.display())),
        "{log}"
    );
}

#[test]
fn a_directory_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, log) = check_outcome(dir.path());
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("is a directory, not a regular file"), "{log}");
}

#[test]
fn a_missing_file_is_reported_with_its_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.yaml");
    for subcommand in ["check", "run"] {
        let out = Command::new(env!("CARGO_BIN_EXE_alive-proxy"))
            .arg(subcommand)
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run alive-proxy");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{subcommand}: {stderr}");
        assert_eq!(
            stderr.matches("No such file or directory").count(),
            1,
            "{subcommand}: the cause is printed once:\n{stderr}"
        );
        assert_eq!(
            stderr.matches("cannot read").count(),
            1,
            "{subcommand}: the context is printed once:\n{stderr}"
        );
    }
}
