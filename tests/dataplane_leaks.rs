//! No descriptor and no relay buffer outlives its session (issue 11): after rounds of
//! sessions ending every way a session ends — clean close, client reset, reset while the
//! relay is blocked on a client that does not read (a buffer is lent then), idle timeout,
//! backend down (connect refused), and the data plane closing them (drain) — the process
//! holds the descriptors it held before and every pooled buffer is back. Also: idle
//! sessions hold no buffer at all while they stay open.
//!
//! The descriptors are counted in /proc/self/fd, so the two drivers' tests take turns
//! (a lock) rather than run side by side in this binary.

#[macro_use]
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use alive_proxy::dataplane::{DataplaneOptions, DriverChoice};
use support::dataplane::{TestDataplane, loopback, plan, read_retrying, service, spawn_backend};
use support::ports::free_tcp_port;
use support::wait;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const ROUNDS: usize = 3;
/// Sessions per ending per round.
const EACH: usize = 8;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn connect(vip: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&vip, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    stream
}

fn reset_on_drop(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

fn ping(stream: &mut TcpStream) {
    stream.write_all(b"ping").expect("send");
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).expect("echo through the proxy");
    assert_eq!(&buf, b"ping");
}

/// Waits until the client's read ends (EOF or reset): the proxy closed the session.
fn ended_by_proxy(stream: &mut TcpStream) {
    let mut buf = [0u8; 16];
    match read_retrying(stream, &mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the session was not closed by the proxy: {other:?}"),
    }
}

struct Lab {
    dp: TestDataplane,
    /// Echo backend, idle timeout 900 s.
    echo: SocketAddr,
    /// Echo backend, idle timeout 300 ms.
    short: SocketAddr,
    /// A backend port nothing listens on.
    down: SocketAddr,
}

fn round(lab: &Lab) {
    let events = lab.dp.stats.events();
    // Clean: request, half-close, the whole answer, FIN both ways.
    for _ in 0..EACH {
        let mut s = connect(lab.echo);
        ping(&mut s);
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("clean end");
    }
    // Idle sessions hold no buffer while they stay open.
    let mut idle: Vec<TcpStream> = (0..EACH)
        .map(|_| {
            let mut s = connect(lab.echo);
            ping(&mut s);
            s
        })
        .collect();
    assert!(
        wait::until(Duration::from_secs(5), || events.relay_buffers_lent() == 0),
        "{} relay buffers lent while every session is idle",
        events.relay_buffers_lent()
    );
    // Client reset.
    for s in idle.drain(..) {
        reset_on_drop(&s);
    }
    // Reset while the proxy is blocked writing to a client that does not read: the
    // direction toward the client holds a buffer until then.
    let mut stuck = Vec::new();
    for _ in 0..EACH {
        let mut s = connect(lab.echo);
        s.set_nonblocking(true).expect("nonblocking");
        let chunk = vec![0x5au8; 64 * 1024];
        let mut sent = 0usize;
        // Until both ways are full (the client's receive queue, the proxy's, the echo's):
        // no write goes through for a while.
        let mut stalled_since: Option<std::time::Instant> = None;
        while sent < 64 << 20 {
            match s.write(&chunk) {
                Ok(n) => {
                    sent += n;
                    stalled_since = None;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let since = *stalled_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > Duration::from_millis(200) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        stuck.push(s);
    }
    assert!(
        wait::until(Duration::from_secs(5), || events.relay_buffers_lent() > 0),
        "no buffer is lent while directions are blocked on clients that do not read"
    );
    for s in stuck {
        reset_on_drop(&s);
    }
    // Idle timeout.
    let mut timed: Vec<TcpStream> = (0..EACH)
        .map(|_| {
            let mut s = connect(lab.short);
            ping(&mut s);
            s
        })
        .collect();
    for s in &mut timed {
        ended_by_proxy(s);
    }
    // Backend down: every connect is refused, the client is reset.
    // (The reset may come before connect(2) returns here.)
    for _ in 0..EACH {
        match TcpStream::connect_timeout(&lab.down, Duration::from_secs(5)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(20)))
                    .expect("read timeout");
                ended_by_proxy(&mut s);
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "connect: {e}"),
        }
    }
    // Drain: the data plane closes what is still open.
    let mut drained: Vec<TcpStream> = (0..EACH)
        .map(|_| {
            let mut s = connect(lab.echo);
            ping(&mut s);
            s
        })
        .collect();
    lab.dp.get().reset_sessions(Duration::ZERO);
    for s in &mut drained {
        ended_by_proxy(s);
    }
    drop((drained, timed));
    wait::until_or_panic(Duration::from_secs(10), "every session to end", || {
        lab.dp.get().live_sessions() == 0
    });
}

fn no_descriptor_or_buffer_outlives_its_session(driver: DriverChoice) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let echo_addr = loopback(false, free_tcp_port());
    let _echo = spawn_backend("echo", echo_addr, "echo");
    let down_backend = loopback(false, free_tcp_port());
    let (echo, short, down) = (
        loopback(false, free_tcp_port()),
        loopback(false, free_tcp_port()),
        loopback(false, free_tcp_port()),
    );
    let mut short_service = service(short, &[echo_addr]);
    short_service.idle_timeout = Duration::from_millis(300);
    let mut down_service = service(down, &[down_backend]);
    down_service.connect_attempts = 1;
    // Copy only: a direction that switched to splice holds a pipe, not a buffer (pipes have
    // their own test, dataplane_pipes.rs). One worker: the drain is a command each worker
    // obeys in its own time, and "no session left" proves one worker obeyed it, not two.
    let dp = support::dataplane::start_with(
        &plan(vec![
            service(echo, &[echo_addr]),
            short_service,
            down_service,
        ]),
        DataplaneOptions {
            workers: 1,
            driver,
            splice_after: None,
            ..DataplaneOptions::default()
        },
    );
    let lab = Lab {
        dp,
        echo,
        short,
        down,
    };
    // The first round opens what a worker opens once (pools, timers, lazily made state).
    round(&lab);
    let before = open_fds();
    for _ in 0..ROUNDS {
        round(&lab);
    }
    let events = lab.dp.stats.events();
    assert!(
        wait::until(Duration::from_secs(10), || open_fds() <= before),
        "{} descriptors open after {ROUNDS} rounds, {before} before",
        open_fds()
    );
    assert_eq!(
        events.relay_buffers_lent(),
        0,
        "relay buffers still lent with no session left"
    );
}
on_both_drivers!(no_descriptor_or_buffer_outlives_its_session);
