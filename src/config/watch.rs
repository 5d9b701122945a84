//! Watching the config file: a change is reported only once the file is complete.
//!
//! A writer that truncates and rewrites in place (an editor, `cat > alive.yaml`, a script
//! appending entries) leaves a window in which the file is a prefix of the new version, and
//! a prefix cut at a line boundary is usually valid YAML with fewer ports or instances:
//! applying it removes listeners and releases VIPs that the finished file keeps. So a change
//! is reported only when two reads [`ConfigWatcher::settle`] apart find the same file (same
//! inode, size and mtime) with the same content. A file that stays unreadable or missing that
//! long is a change too: the reload reports why, and the running config keeps serving.
//!
//! This is polling, not inotify, on purpose. inotify's close-write would only shorten the time
//! to notice a change (a reload is not urgent); it cannot tell a complete file from a writer
//! that closes between two appends, so the settle check is needed either way, and polling
//! also follows a ConfigMap's symlink swap and works on filesystems without inotify. Writers
//! that want a change applied at once and never seen half-done write a temporary file in
//! the same directory and `rename(2)` it over alive.yaml (docs/config.md).

use std::hash::{DefaultHasher, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::file::read_config;

/// How long a changed file must stay the same before it is reported.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(1);

/// What identifies a version of the file without reading it: a ConfigMap update swaps a
/// symlink (new inode), an editor rewrites in place (new mtime or size).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
        device: meta.dev(),
    })
}

/// One observation: the stamp, and the content's fingerprint or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    stamp: Option<Stamp>,
    content: Result<u64, String>,
}

fn observe(path: &Path) -> Version {
    let stamp = stamp(path);
    let content = read_config(path)
        .map(|text| {
            let mut hasher = DefaultHasher::new();
            hasher.write(text.as_bytes());
            hasher.finish()
        })
        .map_err(|err| err.to_string());
    Version { stamp, content }
}

/// Reports complete changes of one config file; see the module doc.
#[derive(Debug)]
pub struct ConfigWatcher {
    path: PathBuf,
    poll: Duration,
    settle: Duration,
    /// The stamp of the version last reported (or marked applied).
    applied: Option<Stamp>,
}

impl ConfigWatcher {
    /// Watches `path`, looking every `poll`; the file as it is now counts as applied.
    pub fn new(path: &Path, poll: Duration) -> ConfigWatcher {
        ConfigWatcher {
            path: path.to_owned(),
            poll,
            settle: DEFAULT_SETTLE,
            applied: stamp(path),
        }
    }

    /// How long a changed file must stay the same before it is reported.
    pub fn settle(mut self, settle: Duration) -> ConfigWatcher {
        self.settle = settle;
        self
    }

    /// The file as it is now was applied another way (SIGHUP): not a change to report.
    pub fn mark_applied(&mut self) {
        self.applied = stamp(&self.path);
    }

    /// Resolves once the file differs from the version last applied and has stayed the same,
    /// stamp and content, for the settle interval. Cancel-safe: dropped half-way, nothing is
    /// marked applied.
    pub async fn next_stable_change(&mut self) {
        loop {
            tokio::time::sleep(self.poll).await;
            if stamp(&self.path) == self.applied {
                continue;
            }
            let mut candidate = observe(&self.path);
            loop {
                tokio::time::sleep(self.settle).await;
                let again = observe(&self.path);
                if again == candidate {
                    self.applied = again.stamp;
                    return;
                }
                if again.stamp.is_some() && again.stamp == self.applied {
                    // Changed and changed back: nothing to apply.
                    break;
                }
                tracing::debug!(config = %self.path.display(), "config file still changing; waiting for it to settle");
                candidate = again;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const POLL: Duration = Duration::from_millis(20);
    const SETTLE: Duration = Duration::from_millis(500);

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open for append");
        file.write_all(text.as_bytes()).expect("append");
    }

    /// The clock is tokio's paused one: the writer's pauses and the watcher's polls
    /// interleave the same way on every run, however loaded the machine is.
    #[tokio::test(start_paused = true)]
    async fn a_file_still_being_written_is_reported_only_once_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alive.yaml");
        std::fs::write(&path, "instances: []\n").expect("write");
        let mut watcher = ConfigWatcher::new(&path, POLL).settle(SETTLE);
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                std::fs::write(&path, "instances:\n").expect("truncate and write");
                for port in 0..10 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    append(&path, &format!("  - port: {port}\n"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                append(&path, "# complete\n");
            })
        };
        watcher.next_stable_change().await;
        let seen = std::fs::read_to_string(&path).expect("read");
        assert!(
            seen.ends_with("# complete\n"),
            "a change was reported while the file was being written:\n{seen}"
        );
        writer.await.expect("writer");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchanged_file_is_never_reported_and_a_sighup_reload_is_not_reported_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alive.yaml");
        std::fs::write(&path, "a: 1\n").expect("write");
        let mut watcher = ConfigWatcher::new(&path, POLL).settle(SETTLE);
        let quiet = tokio::time::timeout(Duration::from_secs(10), watcher.next_stable_change());
        assert!(quiet.await.is_err(), "an unchanged file was reported");
        std::fs::write(&path, "a: 22\n").expect("rewrite");
        watcher.mark_applied();
        let quiet = tokio::time::timeout(Duration::from_secs(10), watcher.next_stable_change());
        assert!(
            quiet.await.is_err(),
            "a version marked applied was reported"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_atomic_rename_is_reported_after_one_settle_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alive.yaml");
        std::fs::write(&path, "a: 1\n").expect("write");
        let mut watcher = ConfigWatcher::new(&path, POLL).settle(SETTLE);
        let staged = dir.path().join(".alive.yaml.tmp");
        std::fs::write(&staged, "a: 2\n").expect("write staged");
        std::fs::rename(&staged, &path).expect("rename");
        let started = tokio::time::Instant::now();
        watcher.next_stable_change().await;
        assert!(
            started.elapsed() <= POLL + SETTLE + POLL,
            "reported after {:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_that_disappears_and_stays_gone_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alive.yaml");
        std::fs::write(&path, "a: 1\n").expect("write");
        let mut watcher = ConfigWatcher::new(&path, POLL).settle(SETTLE);
        std::fs::remove_file(&path).expect("remove");
        let reported =
            tokio::time::timeout(Duration::from_secs(10), watcher.next_stable_change()).await;
        assert!(
            reported.is_ok(),
            "a vanished file must reach the reload, which reports it"
        );
    }
}
