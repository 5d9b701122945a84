//! MISC_CHECK: run `misc_path` (argv already split as keepalived splits it) in a process group
//! of its own, wait up to `misc_timeout`.
//!
//! Exit 0 passes; with `misc_dynamic`, 2..=255 passes and sets the weight to code − 2; any
//! other exit or a signal fails. On timeout the whole group gets SIGTERM, then SIGKILL after
//! keepalived's 2 s grace, and the child is always reaped: no zombie, no orphaned grandchild.
//! If the probe itself is cancelled (reload, shutdown), the group is killed on drop and
//! tokio reaps the child in the background.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::config::MiscCheck;
use crate::health::checker::ProbeResult;
use crate::health::error::ProbeError;

/// keepalived waits this long between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

pub async fn probe(check: &MiscCheck) -> ProbeResult {
    let Some(program) = check.argv.first() else {
        return ProbeResult::NotRun("misc_path is empty".into());
    };
    let mut command = Command::new(program);
    command
        .args(&check.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(user) = &check.user {
        match lookup_user(user) {
            Some((uid, gid)) => {
                command.uid(uid).gid(gid);
            }
            None => return ProbeResult::NotRun(format!("unknown user {user:?} for misc_path")),
        }
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return ProbeResult::Fail(ProbeError::Spawn {
                program: program.clone(),
                error: e.into(),
            });
        }
    };
    let Some(pid) = child.id() else {
        return ProbeResult::Fail(ProbeError::Timeout(check.timeout));
    };
    let mut group = GroupGuard { pgid: pid };
    match tokio::time::timeout(check.timeout, child.wait()).await {
        Ok(Ok(status)) => {
            group.disarm();
            interpret(status, check.dynamic)
        }
        Ok(Err(e)) => ProbeResult::Fail(ProbeError::Spawn {
            program: program.clone(),
            error: e.into(),
        }),
        Err(_) => {
            terminate(&mut child, &mut group).await;
            ProbeResult::Fail(ProbeError::Timeout(check.timeout))
        }
    }
}

/// SIGTERM to the group, SIGKILL after the grace, then reap. keepalived also SIGKILLs the
/// group after a SIGTERM worked, so the script's own children die too.
async fn terminate(child: &mut Child, group: &mut GroupGuard) {
    group.signal(libc::SIGTERM);
    if tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::info!(
            pid = group.pgid,
            "misc check ignored SIGTERM; sending SIGKILL"
        );
    }
    group.signal(libc::SIGKILL);
    if let Err(error) = child.wait().await {
        tracing::warn!(pid = group.pgid, %error, "could not reap misc check");
    }
    group.disarm();
}

pub fn interpret(status: ExitStatus, dynamic: bool) -> ProbeResult {
    match (status.code(), status.signal()) {
        (Some(0), _) => ProbeResult::Pass,
        (Some(code @ 2..=255), _) if dynamic => {
            ProbeResult::PassWithWeight(u32::try_from(code - 2).unwrap_or(0))
        }
        (Some(code), _) => ProbeResult::Fail(ProbeError::Exit(code)),
        (None, Some(signal)) => ProbeResult::Fail(ProbeError::Signal(signal)),
        (None, None) => ProbeResult::Fail(ProbeError::Exit(-1)),
    }
}

/// Kills the script's whole process group unless disarmed.
struct GroupGuard {
    pgid: u32,
}

impl GroupGuard {
    fn signal(&self, signal: i32) {
        let Ok(pgid) = i32::try_from(self.pgid) else {
            return;
        };
        if pgid <= 1 {
            return;
        }
        // SAFETY: kill(2) on the process group we created for the script (process_group(0)
        // makes the child's pid its group id); no memory is involved.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }

    fn disarm(&mut self) {
        self.pgid = 0;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// `user` → (uid, gid) via getpwnam_r.
fn lookup_user(user: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(user).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain old data; getpwnam_r fills it, pointing into `buf`, which
    // outlives every use of the result below.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the sizes passed.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some((pwd.pw_uid, pwd.pw_gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_as_keepalived_documents() {
        let exit = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(interpret(exit(0), false), ProbeResult::Pass);
        assert!(matches!(
            interpret(exit(1), true),
            ProbeResult::Fail(ProbeError::Exit(1))
        ));
        assert_eq!(interpret(exit(12), true), ProbeResult::PassWithWeight(10));
        assert_eq!(interpret(exit(2), true), ProbeResult::PassWithWeight(0));
        assert!(matches!(
            interpret(exit(12), false),
            ProbeResult::Fail(ProbeError::Exit(12))
        ));
        assert!(matches!(
            interpret(ExitStatus::from_raw(libc::SIGKILL), false),
            ProbeResult::Fail(ProbeError::Signal(9))
        ));
    }

    #[test]
    fn root_user_resolves() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-here"), None);
    }
}
