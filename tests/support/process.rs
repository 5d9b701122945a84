//! Process guards: every child a test starts is killed and reaped when its guard drops,
//! also when the test panics. Children run in their own process group so that daemons which
//! fork (nginx workers, keepalived's VRRP child) die with them.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
    // Keeps the log directory alive as long as the guard.
    _log_dir: tempfile::TempDir,
}

/// Starts `command` in its own process group with stdout and stderr captured in a log file.
/// Panics with the command's name if it cannot be started.
pub fn spawn_logged(name: &str, mut command: Command) -> ChildGuard {
    let log_dir = tempfile::tempdir().expect("create a temporary directory for a child's log");
    let log_path = log_dir.path().join(format!("{name}.log"));
    let log = File::create(&log_path).expect("create a child's log file");
    let log_err = log.try_clone().expect("clone a child's log file handle");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .process_group(0);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {name} ({command:?}): {e}"));
    ChildGuard {
        name: name.to_string(),
        child: Some(child),
        log_path,
        _log_dir: log_dir,
    }
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the child wrote so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends `signal` to the child itself (not its group).
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) with a pid we own; a failure (already gone) is fine.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Waits up to `timeout` for the child to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `timeout` for the child to exit by itself and reaps it with wait4(2):
    /// its exit status and its peak resident set size in KiB (`ru_maxrss`). `None` if it
    /// is still running at the deadline (it is then left to the guard to kill).
    pub fn wait_exit_with_peak_rss(&mut self, timeout: Duration) -> Option<(i32, u64)> {
        let pid = self.child.as_ref()?.id() as libc::pid_t;
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 on our own child with valid out-pointers; WNOHANG never blocks.
            let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if reaped == pid {
                // Reaped here: the std handle must not wait or signal a recycled pid.
                self.child = None;
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    -libc::WTERMSIG(status)
                };
                return Some((code, u64::try_from(usage.ru_maxrss).unwrap_or(0)));
            }
            if reaped < 0 || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then SIGKILL for the whole group if it has not exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(grace);
        self.kill_group();
        status
    }

    /// SIGKILL to the whole process group, then reap.
    pub fn kill_group(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: negative pid = the process group the child leads (process_group(0)).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill_group();
    }
}
