//! BIRD 2's control socket, read-only: the sessions (`show protocols`) and whether BIRD
//! still carries the VIP's route (`show route <prefix> table all`).
//!
//! Why our own ~100 lines instead of the `birdc` crate: the crate is a small single-author
//! project with few releases, while the socket protocol is BIRD's documented, stable
//! interface ("Remote control" in the BIRD User's Guide: a greeting, then per command
//! lines of a 4-digit code, `-` when more lines follow and a space on the last, and lines
//! starting with a space continuing the previous code). Parsing two tables needs no more,
//! and owning it means a BIRD upgrade that adds a column cannot break a dependency. Every
//! query opens its own connection (a BIRD restart needs no reconnection logic) and is
//! bounded by [`QUERY_TIMEOUT`]; nothing here can make BIRD change state.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::ha::status::BgpSession;

/// A healthy BIRD answers in microseconds; a stuck one must not stall the driver.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// More lines than any `show protocols` / `show route <one prefix>` answer has: an answer
/// this long is not what we asked for, and reading stops.
const MAX_LINES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    #[error("cannot connect to BIRD at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("BIRD at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("BIRD at {path} did not answer within {QUERY_TIMEOUT:?}")]
    Timeout { path: PathBuf },
    #[error("BIRD at {path} closed the connection mid-answer")]
    Closed { path: PathBuf },
    #[error("BIRD refused `{command}`: {code} {text}")]
    Refused {
        command: String,
        code: u16,
        text: String,
    },
    #[error("BIRD at {path} sent an answer that is not BIRD's protocol: {line:?}")]
    Garbled { path: PathBuf, line: String },
}

/// One answer line: its code (continuation lines carry the previous one) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub code: u16,
    pub text: String,
}

/// What one reading of BIRD found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdState {
    /// The greeting, e.g. `BIRD 2.0.12 ready.`
    pub greeting: String,
    pub sessions: Vec<BgpSession>,
    /// Whether any BIRD table carries the VIP's host route.
    pub has_route: bool,
}

#[derive(Debug, Clone)]
pub struct Bird {
    socket: PathBuf,
}

impl Bird {
    pub fn new(socket: &Path) -> Bird {
        Bird {
            socket: socket.to_owned(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sessions of `protocols` (all BGP protocols if empty) and whether BIRD has `vip`.
    pub async fn read(&self, vip: IpAddr, protocols: &[String]) -> Result<BirdState, BirdError> {
        let bounded = tokio::time::timeout(QUERY_TIMEOUT, async {
            let mut conn = Connection::open(&self.socket).await?;
            let listed = conn.query("show protocols").await?;
            let has_route = conn.has_route(vip).await?;
            Ok(BirdState {
                greeting: conn.greeting.clone(),
                sessions: parse_protocols(&listed, protocols),
                has_route,
            })
        });
        bounded.await.unwrap_or_else(|_| {
            Err(BirdError::Timeout {
                path: self.socket.clone(),
            })
        })
    }

    /// Whether BIRD still carries the VIP's route (and so may still export it).
    pub async fn has_route(&self, vip: IpAddr) -> Result<bool, BirdError> {
        let bounded = tokio::time::timeout(QUERY_TIMEOUT, async {
            Connection::open(&self.socket).await?.has_route(vip).await
        });
        bounded.await.unwrap_or_else(|_| {
            Err(BirdError::Timeout {
                path: self.socket.clone(),
            })
        })
    }
}

struct Connection {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    greeting: String,
}

impl Connection {
    async fn open(path: &Path) -> Result<Connection, BirdError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| BirdError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let mut conn = Connection {
            path: path.to_owned(),
            reader: BufReader::new(stream),
            greeting: String::new(),
        };
        let hello = conn.answer("(greeting)").await?;
        conn.greeting = hello.last().map(|l| l.text.clone()).unwrap_or_default();
        Ok(conn)
    }

    async fn query(&mut self, command: &str) -> Result<Vec<Line>, BirdError> {
        let stream = self.reader.get_mut();
        stream
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(|source| BirdError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.answer(command).await
    }

    async fn has_route(&mut self, vip: IpAddr) -> Result<bool, BirdError> {
        let prefix = if vip.is_ipv4() { 32 } else { 128 };
        // `table all`: whichever table the operator's kernel protocol imports into.
        match self
            .query(&format!("show route {vip}/{prefix} table all"))
            .await
        {
            Ok(lines) => Ok(lines.iter().any(|l| l.code == 1007)),
            // "8001 Network not found": no table has it.
            Err(BirdError::Refused { code: 8001, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Lines up to and including the last one (code followed by a space).
    async fn answer(&mut self, command: &str) -> Result<Vec<Line>, BirdError> {
        let mut lines = Vec::new();
        let mut code = 0;
        let mut buf = String::new();
        while lines.len() < MAX_LINES {
            buf.clear();
            let n = self
                .reader
                .read_line(&mut buf)
                .await
                .map_err(|source| BirdError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                return Err(BirdError::Closed {
                    path: self.path.clone(),
                });
            }
            let line = buf.trim_end_matches(['\n', '\r']);
            match parse_line(line) {
                Some(Parsed::Continuation(text)) => lines.push(Line {
                    code,
                    text: text.to_owned(),
                }),
                Some(Parsed::Coded {
                    code: c,
                    last,
                    text,
                }) => {
                    code = c;
                    lines.push(Line {
                        code,
                        text: text.to_owned(),
                    });
                    if last {
                        // 8xxx: run-time error, 9xxx: parse error.
                        if code >= 8000 {
                            return Err(BirdError::Refused {
                                command: command.to_owned(),
                                code,
                                text: text.to_owned(),
                            });
                        }
                        return Ok(lines);
                    }
                }
                None => {
                    return Err(BirdError::Garbled {
                        path: self.path.clone(),
                        line: line.chars().take(200).collect(),
                    });
                }
            }
        }
        Err(BirdError::Garbled {
            path: self.path.clone(),
            line: format!("(more than {MAX_LINES} lines)"),
        })
    }
}

enum Parsed<'a> {
    Coded {
        code: u16,
        last: bool,
        text: &'a str,
    },
    Continuation(&'a str),
}

fn parse_line(line: &str) -> Option<Parsed<'_>> {
    if let Some(text) = line.strip_prefix(' ') {
        return Some(Parsed::Continuation(text));
    }
    let (head, rest) = (line.get(..4)?, line.get(4..)?);
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code = head.parse().ok()?;
    let (last, text) = match rest.chars().next() {
        Some('-') => (false, &rest[1..]),
        Some(' ') => (true, &rest[1..]),
        None => (true, ""),
        Some(_) => return None,
    };
    Some(Parsed::Coded { code, last, text })
}

/// `show protocols` rows (code 1002): `name proto table state since info...`, BGP ones
/// only, restricted to `wanted` when it names any.
pub fn parse_protocols(lines: &[Line], wanted: &[String]) -> Vec<BgpSession> {
    lines
        .iter()
        .filter(|l| l.code == 1002)
        .filter_map(|l| {
            let mut words = l.text.split_whitespace();
            let name = words.next()?;
            let proto = words.next()?;
            let _table = words.next()?;
            let state = words.next()?;
            let since = words.next().unwrap_or_default();
            // A long time format prints the date and the time as two words.
            let mut rest: Vec<&str> = words.collect();
            let since = match rest.first() {
                Some(w) if w.contains(':') && !since.contains(':') => {
                    format!("{since} {}", rest.remove(0))
                }
                _ => since.to_owned(),
            };
            (proto == "BGP" && (wanted.is_empty() || wanted.iter().any(|w| w == name))).then(|| {
                BgpSession {
                    name: name.to_owned(),
                    state: state.to_owned(),
                    since,
                    info: rest.join(" "),
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<Line> {
        let mut code = 0;
        text.lines()
            .filter_map(|l| match parse_line(l)? {
                Parsed::Coded { code: c, text, .. } => {
                    code = c;
                    Some(Line {
                        code,
                        text: text.to_owned(),
                    })
                }
                Parsed::Continuation(text) => Some(Line {
                    code,
                    text: text.to_owned(),
                }),
            })
            .collect()
    }

    // Continuation lines start with a space, which `\` line continuations would strip.
    const PROTOCOLS: &str = concat!(
        "2002-Name       Proto      Table      State  Since         Info\n",
        "1002-device1    Device     ---        up     10:00:00.000  \n",
        " kernel4    Kernel     alive4     up     10:00:00.000  \n",
        " up4        BGP        ---        up     10:00:01.234  Established   \n",
        " up6        BGP        ---        start  10:00:00.000  Active        Socket: Connection refused\n",
        "0000 \n",
    );

    #[test]
    fn protocols_lists_bgp_sessions_with_state_and_info() {
        let sessions = parse_protocols(&lines(PROTOCOLS), &[]);
        assert_eq!(sessions.len(), 2, "{sessions:?}");
        assert_eq!(sessions[0].name, "up4");
        assert!(sessions[0].established());
        assert_eq!(sessions[1].state, "start");
        assert_eq!(sessions[1].info, "Active Socket: Connection refused");
        assert!(!sessions[1].established());
    }

    #[test]
    fn protocols_can_be_restricted_by_name() {
        let sessions = parse_protocols(&lines(PROTOCOLS), &["up6".to_owned()]);
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].name, "up6");
    }

    #[test]
    fn long_time_format_keeps_date_and_time_together() {
        let text = "1002-up4 BGP --- up 2026-11-30 10:00:01 Established\n0000 \n";
        let sessions = parse_protocols(&lines(text), &[]);
        assert_eq!(sessions[0].since, "2026-11-30 10:00:01");
        assert_eq!(sessions[0].info, "Established");
    }

    #[test]
    fn lines_parse_codes_last_markers_and_continuations() {
        assert!(matches!(
            parse_line("0001 BIRD 2.0.12 ready."),
            Some(Parsed::Coded {
                code: 1,
                last: true,
                ..
            })
        ));
        assert!(matches!(
            parse_line("1007-198.51.100.100/32  blackhole"),
            Some(Parsed::Coded {
                code: 1007,
                last: false,
                ..
            })
        ));
        assert!(matches!(
            parse_line(" more"),
            Some(Parsed::Continuation("more"))
        ));
        assert!(parse_line("HTTP/1.1 400").is_none());
    }

    #[tokio::test]
    async fn an_absent_socket_is_an_error_not_a_hang() {
        let bird = Bird::new(Path::new("/nonexistent/alive-proxy-test/bird.ctl"));
        let err = bird.read("192.0.2.1".parse().unwrap(), &[]).await;
        assert!(matches!(err, Err(BirdError::Connect { .. })), "{err:?}");
    }
}
