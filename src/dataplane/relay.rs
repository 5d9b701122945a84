//! Moving bytes both ways between the client and the backend until both sides are done.
//!
//! Each direction is its own loop: read from one leg, write everything to the other; at EOF
//! it half-closes the other leg (shutdown SHUT_WR) and ends, while the opposite direction
//! goes on (half-close honoured). The first side to finish is recorded in [`HalfClose`] so
//! the session can apply its half-close timeout (`client_fin_timeout`/`server_fin_timeout`). An error on either leg ends the whole relay and names the
//! leg, so the session can reset the other one (RST propagated as RST).
//!
//! Copy first, splice for large flows: small messages are cheapest with one owned buffer
//! per direction, while a direction that has moved `splice_after` bytes switches to
//! socket → pipe → socket splice (half the CPU per GiB on bulk; lab notes) when the worker's
//! pipe pool has a pair to lend, and keeps copying otherwise.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Instant;

use monoio::io::as_fd::{AsReadFd, AsWriteFd};
use monoio::io::splice::{SpliceDestination, SpliceSource};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use super::clock::now_ms;
use super::pipes::{PipeLease, PipePool};
use super::signal::Signal;
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

/// Which side finished sending first; the session's timeout watch waits on it.
#[derive(Debug, Default)]
pub struct HalfClose {
    first: Cell<Option<Leg>>,
    signal: Signal,
}

impl HalfClose {
    /// `sender` sent its FIN and it was passed on.
    fn finished(&self, sender: Leg) {
        if self.first.get().is_none() {
            self.first.set(Some(sender));
            self.signal.fire();
        }
    }

    /// The side that finished sending first, if one has.
    pub fn first_to_finish(&self) -> Option<Leg> {
        self.first.get()
    }

    /// Resolves once one side has finished sending.
    pub async fn wait(&self) {
        self.signal.wait().await;
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
    pub buffer_size: usize,
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

/// Relays until both directions have seen EOF, or until either fails.
pub async fn relay<CR, CW, BR, BW>(
    client_read: &mut CR,
    client_write: &mut CW,
    backend_read: &mut BR,
    backend_write: &mut BW,
    env: &RelayEnv<'_>,
) -> Result<Moved, RelayError>
where
    CR: AsyncReadRent + AsReadFd,
    BR: AsyncReadRent + AsReadFd,
    CW: AsyncWriteRent + AsWriteFd,
    BW: AsyncWriteRent + AsWriteFd,
{
    let upstream = pump(client_read, backend_write, Direction::ToBackend, env);
    let downstream = pump(backend_read, client_write, Direction::ToClient, env);
    let (to_backend, to_client) = futures::future::try_join(upstream, downstream).await?;
    Ok(Moved {
        to_backend,
        to_client,
    })
}

async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    direction: Direction,
    env: &RelayEnv<'_>,
) -> Result<u64, RelayError>
where
    R: AsyncReadRent + AsReadFd,
    W: AsyncWriteRent + AsWriteFd,
{
    let mut buffer = Vec::with_capacity(env.buffer_size);
    let mut total: u64 = 0;
    let mut splice_tried = false;
    loop {
        let (result, returned) = from.read(buffer).await;
        buffer = returned;
        let n = match result {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) => {
                return Err(RelayError {
                    leg: direction.source(),
                    error,
                });
            }
        };
        if total == 0 && direction == Direction::ToClient {
            env.stats.first_byte(env.connected_at.elapsed());
        }
        let (result, returned) = to.write_all(buffer).await;
        buffer = returned;
        if let Err(error) = result {
            return Err(RelayError {
                leg: direction.sink(),
                error,
            });
        }
        total += n as u64;
        env.record(direction, n as u64);
        if let Some(threshold) = env.splice_after
            && total >= threshold
            && !splice_tried
        {
            splice_tried = true;
            if let Some(lease) = env.pipes.take() {
                drop(buffer);
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
