//! Moving bytes both ways between the client and the backend until both sides are done.
//!
//! Each direction is its own loop: read from one leg, write everything to the other; at EOF
//! it half-closes the other leg (shutdown SHUT_WR) and ends, while the opposite direction
//! goes on (half-close honoured). The first side to finish is recorded in [`HalfClose`] so
//! the session can apply its half-close timeout (`client_fin_timeout`/`server_fin_timeout`). An error on either leg ends the whole relay and names the
//! leg, so the session can reset the other one (RST propagated as RST).
//!
//! Copy first, splice for large flows: small messages are copied through a buffer lent by
//! the worker's [`BufferPool`] for one read-then-write only, while a direction that has moved
//! `splice_after` bytes switches to socket → pipe → socket splice (half the CPU per GiB on
//! bulk; lab notes) when the worker's pipe pool has a pair to lend, and keeps copying
//! otherwise.
//!
//! # Buffer ownership (issue 11)
//! A direction waits for its source to be readable holding no buffer (a PollAdd on io_uring,
//! epoll readiness checked with poll(2) on the legacy driver), then takes a buffer from the
//! pool, reads with a non-blocking `recv(2)`, writes with non-blocking `send(2)` (waiting
//! for writability while the peer does not drain, still holding that one buffer: the
//! direction's backpressure), and drops the buffer back into the pool. The kernel never owns
//! a buffer across an await: both syscalls are synchronous, so a cancelled relay (session
//! closed, timed out) drops its buffer like any other value and the only in-flight io_uring
//! op it leaves is a poll, which monoio cancels. An idle session therefore holds no buffer.

use std::cell::{Cell, UnsafeCell};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use monoio::io::as_fd::{AsReadFd, AsWriteFd};
use monoio::io::splice::{SpliceDestination, SpliceSource};
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf};
use monoio::net::TcpStream;

use super::buffers::BufferPool;
use super::clock::now_ms;
use super::pipes::{PipeLease, PipePool};
use crate::counters::BackendStats;

/// Bytes moved per splice call: one default pipe's capacity (16 pages).
const SPLICE_CHUNK: u32 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    Client,
    Backend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToBackend,
    ToClient,
}

impl Direction {
    fn source(self) -> Leg {
        match self {
            Direction::ToBackend => Leg::Client,
            Direction::ToClient => Leg::Backend,
        }
    }

    fn sink(self) -> Leg {
        match self {
            Direction::ToBackend => Leg::Backend,
            Direction::ToClient => Leg::Client,
        }
    }
}

/// Which side finished sending first; the worker's timeout sweeper reads it to pick the
/// session's fin timeout.
#[derive(Debug, Default)]
pub struct HalfClose {
    first: Cell<Option<Leg>>,
}

impl HalfClose {
    /// `sender` sent its FIN and it was passed on.
    fn finished(&self, sender: Leg) {
        if self.first.get().is_none() {
            self.first.set(Some(sender));
        }
    }

    /// The side that finished sending first, if one has.
    pub fn first_to_finish(&self) -> Option<Leg> {
        self.first.get()
    }
}

/// Which leg failed and how.
#[derive(Debug)]
pub struct RelayError {
    pub leg: Leg,
    pub error: io::Error,
}

/// What one relay needs from its worker and session.
pub struct RelayEnv<'a> {
    pub pipes: &'a Rc<PipePool>,
    /// Switch a direction to splice after this many bytes; `None` = always copy.
    pub splice_after: Option<u64>,
    /// Copy buffers, lent per read-then-write.
    pub buffers: &'a Rc<BufferPool>,
    /// `now_ms()` of the last transfer either way, for the idle timeout.
    pub last_activity: &'a Cell<u64>,
    pub stats: &'a BackendStats,
    /// When the backend connect completed, for time to first byte.
    pub connected_at: Instant,
    pub half_close: &'a HalfClose,
}

impl RelayEnv<'_> {
    /// A direction ended cleanly: its sender's FIN was passed on. The half-close timeout
    /// counts from here.
    fn finished(&self, direction: Direction) {
        self.last_activity.set(now_ms());
        self.half_close.finished(direction.source());
    }

    fn record(&self, direction: Direction, n: u64) {
        self.last_activity.set(now_ms());
        match direction {
            Direction::ToBackend => self.stats.bytes_to_backend(n),
            Direction::ToClient => self.stats.bytes_to_client(n),
        }
    }
}

/// Bytes moved each way by a relay that ended cleanly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub to_backend: u64,
    pub to_client: u64,
}

/// A relay leg: one half of a split monoio stream.
pub type ReadLeg = OwnedReadHalf<TcpStream>;
pub type WriteLeg = OwnedWriteHalf<TcpStream>;

/// Relays until both directions have seen EOF, or until either fails.
pub async fn relay(
    client_read: &mut ReadLeg,
    client_write: &mut WriteLeg,
    backend_read: &mut ReadLeg,
    backend_write: &mut WriteLeg,
    env: &RelayEnv<'_>,
) -> Result<Moved, RelayError> {
    let upstream = pump(client_read, backend_write, Direction::ToBackend, env);
    let downstream = pump(backend_read, client_write, Direction::ToClient, env);
    let (to_backend, to_client) = futures::future::try_join(upstream, downstream).await?;
    Ok(Moved {
        to_backend,
        to_client,
    })
}

/// The stream behind one half, for what monoio offers only on the whole stream: waiting for
/// readiness (`readable`/`writable`, `&self`) and its descriptor.
fn stream_of(shared: &Rc<UnsafeCell<TcpStream>>) -> &TcpStream {
    // SAFETY: monoio's split halves share the stream through this UnsafeCell on a
    // single-threaded runtime; each half's own ops take `&mut` for the length of an op. What
    // is done through this shared reference touches no state those ops change: `as_raw_fd`
    // reads the fd number, and `readable`/`writable` clone the SharedFd's Rc into a poll op
    // (the same thing monoio's own ops do with the fd). The reference cannot outlive the
    // half it came from (same lifetime), which owns one of the Rc's strong counts.
    unsafe { &*shared.get() }
}

/// Runs a byte-count syscall again while a signal interrupts it: the count, or the error.
fn retry_interrupted(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n.unsigned_abs());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// `recv(2)` without waiting: `Ok(0)` at EOF, `WouldBlock` when nothing is there.
fn recv_now(fd: RawFd, buffer: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buffer` is a live, exclusively borrowed slice for the whole (synchronous)
    // call and the kernel writes at most `buffer.len()` bytes into it; `fd` is owned by the
    // caller's stream, open for the call.
    retry_interrupted(|| unsafe {
        libc::recv(
            fd,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            libc::MSG_DONTWAIT,
        )
    })
}

/// `send(2)` without waiting (and without SIGPIPE): how many bytes the socket took.
fn send_now(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a live slice for the whole (synchronous) call and the kernel reads
    // at most `data.len()` bytes from it; `fd` is owned by the caller's stream.
    retry_interrupted(|| unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

/// Writes all of `data` to `to`, waiting for room when the peer does not drain (the buffer
/// holding `data` stays lent meanwhile: that is the direction's backpressure).
async fn send_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    let fd = to.as_raw_fd();
    while !data.is_empty() {
        match send_now(fd, data) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "send took no bytes",
                ));
            }
            Ok(n) => data = &data[n.min(data.len())..],
            // Not relaxed: the legacy driver's readiness is not updated by our own syscalls,
            // so it must look (poll(2)) before trusting a stale "writable".
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => to.writable(false).await?,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

async fn pump(
    from: &mut ReadLeg,
    to: &mut WriteLeg,
    direction: Direction,
    env: &RelayEnv<'_>,
) -> Result<u64, RelayError> {
    let source = |error| RelayError {
        leg: direction.source(),
        error,
    };
    let mut total: u64 = 0;
    let mut splice_tried = false;
    // Whether the last read filled the buffer: more is likely there, so read again before
    // waiting for readiness.
    let mut more_likely = false;
    loop {
        if !more_likely {
            // Wait with no buffer held: an idle direction owns no memory. Not relaxed, for
            // the same reason as in `send_all`.
            stream_of(&from.0).readable(false).await.map_err(source)?;
        }
        let mut buffer = env.buffers.take();
        let n = match recv_now(stream_of(&from.0).as_raw_fd(), &mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            // A spurious wakeup, or the data was shorter than a full buffer after all.
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                more_likely = false;
                continue;
            }
            Err(error) => return Err(source(error)),
        };
        more_likely = n == buffer.len();
        if total == 0 && direction == Direction::ToClient {
            env.stats.first_byte(env.connected_at.elapsed());
        }
        if let Err(error) = send_all(stream_of(&to.0), &buffer[..n]).await {
            return Err(RelayError {
                leg: direction.sink(),
                error,
            });
        }
        drop(buffer);
        total += n as u64;
        env.record(direction, n as u64);
        if let Some(threshold) = env.splice_after
            && total >= threshold
            && !splice_tried
        {
            splice_tried = true;
            if let Some(lease) = env.pipes.take() {
                return splice_rest(from, to, lease, direction, env, total).await;
            }
        }
    }
    half_close(to, direction).await?;
    env.finished(direction);
    Ok(total)
}

/// The rest of a direction through a pipe. The pipe goes back to the pool only when it is
/// known empty (clean EOF); on any error it is closed with the session.
async fn splice_rest<R, W>(
    from: &mut R,
    to: &mut W,
    mut lease: PipeLease,
    direction: Direction,
    env: &RelayEnv<'_>,
    mut total: u64,
) -> Result<u64, RelayError>
where
    R: AsyncReadRent + AsReadFd,
    W: AsyncWriteRent + AsWriteFd,
{
    let Some((pipe_read, pipe_write)) = lease.pipes() else {
        return Err(RelayError {
            leg: direction.source(),
            error: io::Error::other("empty pipe lease"),
        });
    };
    loop {
        let n = match from.splice_to_pipe(pipe_write, SPLICE_CHUNK).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) => {
                return Err(RelayError {
                    leg: direction.source(),
                    error,
                });
            }
        };
        let mut left = n;
        while left > 0 {
            match to.splice_from_pipe(pipe_read, left).await {
                Ok(0) => {
                    let error =
                        io::Error::new(io::ErrorKind::WriteZero, "splice to socket wrote nothing");
                    return Err(RelayError {
                        leg: direction.sink(),
                        error,
                    });
                }
                Ok(m) => left -= m.min(left),
                Err(error) => {
                    return Err(RelayError {
                        leg: direction.sink(),
                        error,
                    });
                }
            }
        }
        total += u64::from(n);
        env.record(direction, u64::from(n));
    }
    lease.release();
    half_close(to, direction).await?;
    env.finished(direction);
    Ok(total)
}

async fn half_close<W: AsyncWriteRent>(to: &mut W, direction: Direction) -> Result<(), RelayError> {
    match to.shutdown().await {
        Ok(()) => Ok(()),
        // The peer is already gone; the other direction will see it.
        Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(()),
        Err(error) => Err(RelayError {
            leg: direction.sink(),
            error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::time::Duration;

    use monoio::io::Splitable;

    use super::*;
    use crate::config::BackendKey;
    use crate::counters::{Counters, LocalEvents};
    use crate::dataplane::buffers::BufferPool;
    use crate::dataplane::driver::{self, DriverChoice};

    /// A connected pair: the std end for the test thread, the monoio end for the relay.
    fn pair() -> (std::net::TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let outside = std::net::TcpStream::connect(addr).expect("connect");
        let (inside, _) = listener.accept().expect("accept");
        inside.set_nonblocking(true).expect("nonblocking");
        let inside = TcpStream::from_std(inside).expect("register with the runtime");
        outside
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        (outside, inside)
    }

    fn drivers() -> Vec<driver::DriverKind> {
        let mut kinds = Vec::new();
        if let Ok((kind, None)) = driver::resolve(DriverChoice::Auto) {
            kinds.push(kind);
        }
        kinds.push(driver::DriverKind::Legacy);
        kinds
    }

    /// The copy path (`stream_of`, `recv_now`, `send_all`) moves bytes exactly both ways
    /// through the pool's buffers, half-closes, and returns every buffer; a relay dropped
    /// while a direction is blocked on a full peer (a buffer lent) gives that buffer back.
    #[test]
    fn copy_path_moves_bytes_and_returns_every_buffer() {
        for kind in drivers() {
            driver::block_on(kind, || async move {
                let events = LocalEvents::new();
                let buffers = BufferPool::new(4096, 4, &events);
                let pipes = PipePool::new(0, Arc::clone(&events));
                let counters = Counters::new();
                let key = BackendKey {
                    service: "127.0.0.1:1".parse().expect("literal"),
                    backend: "127.0.0.1:2".parse().expect("literal"),
                };
                let stats = counters.worker(0).backend(key);
                let last_activity = Cell::new(0);
                let half_close = HalfClose::default();
                let env = RelayEnv {
                    pipes: &pipes,
                    splice_after: None,
                    buffers: &buffers,
                    last_activity: &last_activity,
                    stats: &stats,
                    connected_at: Instant::now(),
                    half_close: &half_close,
                };
                let (mut client, client_in) = pair();
                let (mut backend, backend_in) = pair();
                let (mut cr, mut cw) = client_in.into_split();
                let (mut br, mut bw) = backend_in.into_split();
                // 100 kB each way, more than the 4 kB buffer, then FIN both ways.
                let up: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
                let down: Vec<u8> = up.iter().rev().copied().collect();
                let (up2, down2) = (up.clone(), down.clone());
                let outside = std::thread::spawn(move || {
                    client.write_all(&up2).expect("client sends");
                    client.shutdown(std::net::Shutdown::Write).expect("fin");
                    let mut got = Vec::new();
                    backend.read_to_end(&mut got).ok();
                    backend.write_all(&down2).expect("backend answers");
                    backend.shutdown(std::net::Shutdown::Write).expect("fin");
                    let mut answer = Vec::new();
                    client.read_to_end(&mut answer).ok();
                    (got, answer)
                });
                let moved = relay(&mut cr, &mut cw, &mut br, &mut bw, &env)
                    .await
                    .expect("clean relay");
                let (got, answer) = outside.join().expect("outside thread");
                assert_eq!(got, up, "{kind}: bytes to the backend");
                assert_eq!(answer, down, "{kind}: bytes to the client");
                assert_eq!(moved.to_backend, 100_000);
                assert_eq!(buffers.lent(), 0, "{kind}: every buffer back");

                // A client that never reads: the direction toward it blocks holding a buffer;
                // dropping the relay (a session closed) gives it back.
                let (client, client_in) = pair();
                let (mut backend, backend_in) = pair();
                let (mut cr, mut cw) = client_in.into_split();
                let (mut br, mut bw) = backend_in.into_split();
                let flood = std::thread::spawn(move || {
                    backend
                        .set_write_timeout(Some(Duration::from_millis(500)))
                        .expect("timeout");
                    let chunk = vec![7u8; 64 * 1024];
                    while backend.write_all(&chunk).is_ok() {}
                    backend
                });
                let blocked = relay(&mut cr, &mut cw, &mut br, &mut bw, &env);
                let outcome = monoio::select! {
                    _ = blocked => None,
                    // Read before select! drops the relay (which returns the buffer).
                    lent = async {
                        monoio::time::sleep(Duration::from_millis(1500)).await;
                        buffers.lent()
                    } => Some(lent),
                };
                assert_eq!(outcome, Some(1), "{kind}: one buffer lent while blocked");
                assert_eq!(
                    buffers.lent(),
                    0,
                    "{kind}: the cancelled relay gave it back"
                );
                drop((client, flood.join()));
            })
            .expect("runtime");
        }
    }

    /// How much a session's relay state weighs (printed with --nocapture; the idle memory
    /// budget of issue 11 is 4 kB per connection).
    #[test]
    fn relay_future_size() {
        driver::block_on(driver::DriverKind::Legacy, || async {
            let events = LocalEvents::new();
            let buffers = BufferPool::new(16, 1, &events);
            let pipes = PipePool::new(0, Arc::clone(&events));
            let counters = Counters::new();
            let key = BackendKey {
                service: "127.0.0.1:1".parse().expect("literal"),
                backend: "127.0.0.1:2".parse().expect("literal"),
            };
            let stats = counters.worker(0).backend(key);
            let (last_activity, half_close) = (Cell::new(0), HalfClose::default());
            let env = RelayEnv {
                pipes: &pipes,
                splice_after: None,
                buffers: &buffers,
                last_activity: &last_activity,
                stats: &stats,
                connected_at: Instant::now(),
                half_close: &half_close,
            };
            let (_c, client_in) = pair();
            let (_b, backend_in) = pair();
            let (mut cr, mut cw) = client_in.into_split();
            let (mut br, mut bw) = backend_in.into_split();
            let future = relay(&mut cr, &mut cw, &mut br, &mut bw, &env);
            let size = std::mem::size_of_val(&future);
            println!("relay future: {size} bytes");
            assert!(size < 4096, "relay future {size} bytes");
        })
        .expect("runtime");
    }
}
