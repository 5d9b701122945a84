//! One daemon per admin socket (and so, by default, per host).
//!
//! A second `alive-proxy run` with the same config would join the first one's SO_REUSEPORT
//! groups and take half the connections, and on stop remove the VIPs the first one holds.
//! So `run` first takes an exclusive `flock(2)` on `<admin socket>.lock` and refuses to
//! start, naming the holder's pid, when another process has it. The lock is the kernel's: it
//! goes away with the process however it ends (SIGKILL included), so there is no stale lock
//! to clean up; the file itself is left in place on purpose (unlinking it would let two
//! processes lock two different files of the same name).

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Held for the life of the daemon; dropping it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    path: PathBuf,
    _file: File,
}

impl InstanceLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Each message carries its cause; none is repeated as a `source()`.
#[derive(Debug, thiserror::Error)]
pub enum InstanceLockError {
    #[error(
        "another alive-proxy{} is already running with admin socket {} (lock {} is held); stop it first, or give this instance its own admin.socket",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        socket.display(),
        lock.display()
    )]
    AlreadyRunning {
        socket: PathBuf,
        lock: PathBuf,
        holder: Option<u32>,
    },
    #[error("cannot take the instance lock {}: {error}", lock.display())]
    Io {
        lock: PathBuf,
        error: std::io::Error,
    },
}

/// The lock file that guards `admin_socket`: the same path with `.lock` appended.
pub fn lock_path(admin_socket: &Path) -> PathBuf {
    let mut name = admin_socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the instance lock for `admin_socket`, creating its directory (0700) if needed, and
/// writes this process's pid into it for the next one's error message.
pub fn acquire(admin_socket: &Path) -> Result<InstanceLock, InstanceLockError> {
    let lock = lock_path(admin_socket);
    let io = |error| InstanceLockError::Io {
        lock: lock.clone(),
        error,
    };
    if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            // Best effort: the holder may be writing its pid right now.
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(InstanceLockError::AlreadyRunning {
                socket: admin_socket.to_owned(),
                lock,
                holder,
            });
        }
        Err(TryLockError::Error(error)) => return Err(io(error)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(InstanceLock {
        path: lock,
        _file: file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_socket_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("run/admin.sock");
        let first = acquire(&socket).expect("first lock");
        assert_eq!(first.path(), dir.path().join("run/admin.sock.lock"));
        // flock(2) locks belong to the open file description: a second open in this same
        // process conflicts just as another process would.
        let second = acquire(&socket).expect_err("a second lock must be refused");
        let message = second.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert!(message.contains("admin.sock"), "{message}");
        drop(first);
        acquire(&socket).expect("the lock is free once its holder is gone");
    }

    #[test]
    fn different_sockets_lock_independently() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _a = acquire(&dir.path().join("a.sock")).expect("a");
        let _b = acquire(&dir.path().join("b.sock")).expect("b");
    }
}
