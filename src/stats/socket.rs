//! The admin socket protocol: the client sends one line naming a request, the daemon answers
//! with one line of JSON and closes. Requests: `snapshot` → a [`StatsSnapshot`];
//! `ping` → `"pong"`. Anything else → `{"error": "..."}`.
//!
//! Both ends live here: the tokio server the daemon runs and the blocking client
//! `alive-proxy stats` uses. The server answers at most `max_connections` clients at once
//! (more wait in the listen backlog) and gives each [`ANSWER_TIMEOUT`] in all.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::StatsRegistry;
use super::snapshot::StatsSnapshot;
use crate::counters::events::AdminEndpoint;

pub const SNAPSHOT: &str = "snapshot";
pub const PING: &str = "ping";
/// Longer request lines are refused without reading on.
const MAX_REQUEST: u64 = 256;
/// A client that sends no request line for this long is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Request and reply together: a client that does not read its reply is dropped too.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn accept_loop(
    listener: UnixListener,
    registry: Arc<StatsRegistry>,
    max_connections: usize,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let events = registry.events();
    loop {
        // Never closed, so this always yields a slot.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let registry = Arc::clone(&registry);
                let events = Arc::clone(&events);
                events.admin_opened(AdminEndpoint::Socket);
                tokio::spawn(async move {
                    let _slot = slot;
                    if tokio::time::timeout(ANSWER_TIMEOUT, answer(stream, registry))
                        .await
                        .is_err()
                    {
                        events.admin_timed_out(AdminEndpoint::Socket);
                    }
                    events.admin_closed(AdminEndpoint::Socket);
                });
            }
            Err(err) => {
                // EMFILE and friends: back off instead of spinning; the next accept may work.
                tracing::warn!(%err, "admin socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(stream: UnixStream, registry: Arc<StatsRegistry>) {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    let request = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let reply = match request {
        Ok(Ok(_)) => reply(&line, &registry),
        Ok(Err(err)) => error_json(&format!("reading request: {err}")),
        Err(_) => return,
    };
    if let Err(err) = write.write_all(reply.as_bytes()).await {
        tracing::debug!(%err, "admin socket client went away before the reply");
    }
    if let Err(err) = write.shutdown().await {
        tracing::debug!(%err, "admin socket shutdown");
    }
}

/// The daemon's answer to what a client sent (its first line counts): always exactly one
/// line of JSON, whatever the bytes. Pure, so the fuzz target `admin_socket` drives it.
pub fn reply(request: &[u8], registry: &StatsRegistry) -> String {
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    match std::str::from_utf8(line) {
        Ok(text) => respond(text.trim(), registry),
        Err(err) => error_json(&format!("the request is not UTF-8 text: {err}")),
    }
}

fn respond(request: &str, registry: &StatsRegistry) -> String {
    let body = match request {
        SNAPSHOT => serde_json::to_string(&registry.snapshot()),
        PING => Ok("\"pong\"".to_owned()),
        other => return error_json(&format!("unknown request {other:?}; try {SNAPSHOT:?}")),
    };
    match body {
        Ok(mut json) => {
            json.push('\n');
            json
        }
        Err(err) => error_json(&format!("encoding the reply: {err}")),
    }
}

fn error_json(message: &str) -> String {
    let mut json = serde_json::json!({ "error": message }).to_string();
    json.push('\n');
    json
}

/// Each message carries its cause; none is repeated as a `source()`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no alive-proxy daemon is listening on {} ({error}); is `alive-proxy run` running, and is --socket right?", path.display()
    )]
    NoDaemon { path: PathBuf, error: io::Error },
    #[error("admin socket {}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("admin socket {}: unexpected reply: {error}", path.display())]
    Reply {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("admin socket {}: the daemon answered: {message}", path.display())]
    Refused { path: PathBuf, message: String },
}

/// Ask the daemon at `path` for a snapshot (blocking; for the CLI).
pub fn request_snapshot(path: &Path, timeout: Duration) -> Result<StatsSnapshot, ClientError> {
    let line = request(path, SNAPSHOT, timeout)?;
    parse_snapshot_reply(path, &line)
}

/// The client's reading of a reply line to `snapshot`: the snapshot, the daemon's error, or
/// why the line is not a reply. Never panics on any text (fuzz target `admin_socket`).
pub fn parse_snapshot_reply(path: &Path, line: &str) -> Result<StatsSnapshot, ClientError> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|error| ClientError::Reply {
            path: path.to_owned(),
            error,
        })?;
    if let Some(message) = value.get("error").and_then(|m| m.as_str()) {
        return Err(ClientError::Refused {
            path: path.to_owned(),
            message: message.to_owned(),
        });
    }
    serde_json::from_value(value).map_err(|error| ClientError::Reply {
        path: path.to_owned(),
        error,
    })
}

/// Send one request line and read the one-line reply.
pub fn request(path: &Path, request: &str, timeout: Duration) -> Result<String, ClientError> {
    let io_error = |error| ClientError::Io {
        path: path.to_owned(),
        error,
    };
    let mut stream = StdUnixStream::connect(path).map_err(|error| ClientError::NoDaemon {
        path: path.to_owned(),
        error,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(io_error)?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(io_error)?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_one_json_line(answer: &str) -> bool {
        answer.ends_with('\n')
            && answer.matches('\n').count() == 1
            && serde_json::from_str::<serde_json::Value>(answer).is_ok()
    }

    #[test]
    fn every_request_gets_exactly_one_line_of_json() {
        let registry = StatsRegistry::new();
        for request in [
            &b"snapshot\n"[..],
            b"ping",
            b"  ping  \r\n",
            b"\xff\xfe\n",
            b"",
            b"\n\n\n",
            b"snapshot\nping\n",
            b"{\"error\": 1}\n",
        ] {
            let answer = reply(request, &registry);
            assert!(is_one_json_line(&answer), "{request:?} -> {answer:?}");
        }
        let path = Path::new("/run/test.sock");
        assert!(parse_snapshot_reply(path, &reply(b"snapshot\n", &registry)).is_ok());
        assert!(matches!(
            parse_snapshot_reply(path, &reply(b"bogus\n", &registry)),
            Err(ClientError::Refused { .. })
        ));
    }
}
