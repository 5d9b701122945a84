//! Tells the service manager what `run` is doing, by sd_notify(3): `READY=1` once traffic
//! can be served, `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` when a stop
//! begins, each with a one-line `STATUS=` that `systemctl status` shows. With
//! `Type=notify` (docs/operations.md), `systemctl start` returns when the listeners are
//! up, not when the process exists.
//!
//! Outside systemd (no `NOTIFY_SOCKET`: a container, a shell, the tests) every call does
//! nothing. A notification that cannot be sent is logged and otherwise ignored: serving
//! traffic matters more than reporting on it.

use sd_notify::NotifyState;

/// The listeners are up and every backend has its first health state.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload started; call [`ready`] when it is done, whatever its outcome (an invalid
/// file keeps the running configuration, which is still ready).
pub fn reloading() {
    // systemd's Type=notify-reload wants the time with RELOADING=1; Type=notify ignores it.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A stop began: VIPs are being released, then sessions drain.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(%err, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;
    use std::process::Command;
    use std::time::Duration;

    /// The child half of `ready_and_stopping_reach_notify_socket`: runs in a process of its
    /// own, whose environment names the parent's socket.
    #[test]
    #[ignore = "run by ready_and_stopping_reach_notify_socket in a child process"]
    fn child_sends_ready_then_stopping() {
        super::ready("serving 2 services");
        super::stopping("releasing VIPs");
    }

    #[test]
    fn ready_and_stopping_reach_notify_socket() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind a datagram socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let status = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "notify::tests::child_sends_ready_then_stopping",
                "--ignored",
                "--test-threads=1",
            ])
            .env("NOTIFY_SOCKET", &path)
            .output()
            .expect("run the child test");
        assert!(status.status.success(), "child test failed: {status:?}");
        let mut buf = [0u8; 512];
        let mut received = Vec::new();
        for _ in 0..2 {
            let n = socket.recv(&mut buf).expect("a notification");
            received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(
            received,
            [
                "READY=1\nSTATUS=serving 2 services\n",
                "STOPPING=1\nSTATUS=releasing VIPs\n"
            ]
        );
    }
}
