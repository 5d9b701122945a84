//! Polling with a deadline: tests wait for conditions, never for fixed sleeps.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Polls `condition` every 20 ms until it returns true or `timeout` passes.
/// Returns whether it became true, so the caller can fail with its own message.
pub fn until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`until`], but panics with `what` when the deadline passes.
pub fn until_or_panic(timeout: Duration, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        until(timeout, condition),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Waits until something accepts TCP connections on `addr`.
pub fn tcp_listening(addr: SocketAddr, timeout: Duration) -> bool {
    until(timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
}
