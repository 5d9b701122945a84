//! Why a probe failed: the "what error" half of every transition's reason.

use std::io;
use std::time::Duration;

/// A failed probe. Displayed in logs, in the stats reason and in transition reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("connect failed: {0}")]
    Connect(IoFailure),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("sending the request failed: {0}")]
    Send(IoFailure),
    #[error("reading the response failed: {0}")]
    Read(IoFailure),
    #[error("no data within {0:?}")]
    ReadTimeout(Duration),
    #[error("no data received")]
    EmptyResponse,
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    #[error("url {path}: HTTP status {status} not in {expected}")]
    Status {
        path: String,
        status: u16,
        expected: String,
    },
    #[error("url {path}: MD5 digest {got} differs from {expected}")]
    Digest {
        path: String,
        got: String,
        expected: String,
    },
    #[error("could not start {program}: {error}")]
    Spawn { program: String, error: IoFailure },
    #[error("exited with status {0}")]
    Exit(i32),
    #[error("killed by signal {0}")]
    Signal(i32),
    #[error("timed out after {0:?} and was killed")]
    Timeout(Duration),
}

/// An `io::Error` reduced to what can be compared and cloned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IoFailure {
    pub kind: io::ErrorKind,
    pub message: String,
}

impl From<&io::Error> for IoFailure {
    fn from(error: &io::Error) -> IoFailure {
        IoFailure {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

impl From<io::Error> for IoFailure {
    fn from(error: io::Error) -> IoFailure {
        IoFailure::from(&error)
    }
}
