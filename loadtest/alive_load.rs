//! `alive-load`: an open-loop HTTP/1.1 load generator for the load-test harness: requests
//! at a fixed rate over keep-alive connections, latency measured from when each request
//! was *due*, not when it was sent, so a stall shows in the tail instead of silently
//! lowering the rate (coordinated omission, corrected the way wrk2 does it).
//!
//! Why our own: the maintained tools that correct coordinated omission are not in Debian 12
//! (wrk2, oha), and building oha from crates.io costs minutes and hundreds of crates on
//! every fresh machine; `hey` and `wrk` are closed-loop. This is one file on crates the
//! project already has (tokio, hdrhistogram), and the harness needs only its JSON.
//!
//! Model: `--connections K` tasks; task `k` owns every K-th slot of the schedule
//! `t_i = start + i / rate`. It sleeps until its next slot, sends, reads the whole
//! response, records `now - t_i`; a response that comes late delays the next send but not
//! the schedule, so the backlog shows up as latency. A failed request is counted, the
//! connection is reopened, and the schedule goes on. Bounded by `--duration`.
//!
//! ```text
//! alive-load --url http://127.0.0.1:8080/ --rate 20000 --connections 50 --duration 10
//! ```
//! prints one JSON object: target and achieved rate, requests, errors, latency percentiles
//! in milliseconds and the percentile curve for plots.
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Parser, Debug, Clone)]
#[command(name = "alive-load", about = "Open-loop HTTP/1.1 load at a fixed rate")]
struct Args {
    /// `http://HOST:PORT/PATH` (HOST an IP address; IPv6 in brackets).
    #[arg(long)]
    url: String,
    /// Requests per second, all connections together.
    #[arg(long)]
    rate: f64,
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring (connections warm, caches filled).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds a request may take before it counts as an error.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

/// Latencies are recorded in microseconds, up to a minute.
const MAX_MICROS: u64 = 60_000_000;

struct Target {
    addr: SocketAddr,
    request: Vec<u8>,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .map_err(|e| format!("{url}: {authority:?} is not IP:PORT ({e})"))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: alive-load\r\n\r\n");
    Ok(Target {
        addr,
        request: request.into_bytes(),
    })
}

#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Reads one response: headers, then `Content-Length` bytes of body (`buf` keeps any
/// bytes past it, though none come: one request in flight per connection).
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed before a full response"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 * 1024 {
            return Err(bad("response headers over 64 KiB"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 2") && !head.starts_with("http/1.0 2") {
        return Err(bad(head.lines().next().unwrap_or("no status line")));
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| bad("no Content-Length"))?;
    let mut have = buf.len() - header_end;
    while have < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed in the body"));
        }
        have += n;
    }
    Ok(())
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One connection's share of the schedule.
async fn worker(
    target: std::sync::Arc<Target>,
    args: Args,
    index: usize,
    start: Instant,
    mut histogram: Histogram<u64>,
) -> (Histogram<u64>, Tally) {
    let mut tally = Tally::default();
    let period = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let offset = Duration::from_secs_f64(index as f64 / args.rate);
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut due = start + offset;
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    while due < end {
        tokio::time::sleep_until(due).await;
        let result = tokio::time::timeout(timeout, async {
            if stream.is_none() {
                stream = Some(connect(target.addr).await?);
            }
            let conn = stream
                .as_mut()
                .ok_or_else(|| std::io::Error::other("no connection"))?;
            conn.write_all(&target.request).await?;
            read_response(conn, &mut buf).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request timed out",
            ))
        });
        let measured = due >= measure_from;
        match result {
            Ok(()) => {
                if measured {
                    tally.requests += 1;
                    let micros = u64::try_from(due.elapsed().as_micros()).unwrap_or(MAX_MICROS);
                    histogram.saturating_record(micros.clamp(1, MAX_MICROS));
                }
            }
            Err(e) => {
                stream = None;
                if measured {
                    tally.errors += 1;
                    tally.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        due += period;
    }
    (histogram, tally)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn main() -> ExitCode {
    let args = Args::parse();
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(args.rate) || args.connections == 0 || !positive(args.duration) {
        eprintln!("alive-load: --rate, --connections and --duration must be positive");
        return ExitCode::FAILURE;
    }
    let target = match parse_url(&args.url) {
        Ok(t) => std::sync::Arc::new(t),
        Err(e) => {
            eprintln!("alive-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let empty = match Histogram::<u64>::new_with_bounds(1, MAX_MICROS, 3) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("alive-load: histogram: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("alive-load: tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (histogram, tally) = runtime.block_on(async {
        let start = Instant::now() + Duration::from_millis(100);
        let tasks: Vec<_> = (0..args.connections)
            .map(|k| {
                let histogram = empty.clone();
                tokio::spawn(worker(target.clone(), args.clone(), k, start, histogram))
            })
            .collect();
        let mut total = empty.clone();
        let mut tally = Tally::default();
        for task in tasks {
            if let Ok((h, t)) = task.await {
                // Same bounds on both sides: adding cannot overflow them.
                let _ = total.add(&h);
                tally.requests += t.requests;
                tally.errors += t.errors;
                if tally.first_error.is_none() {
                    tally.first_error = t.first_error;
                }
            }
        }
        (total, tally)
    });
    let quantiles = [
        0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
    ];
    let curve: Vec<[f64; 2]> = quantiles
        .iter()
        .map(|q| [*q, ms(histogram.value_at_quantile(*q))])
        .collect();
    let report = serde_json::json!({
        "url": args.url,
        "rate_target": args.rate,
        "rate_achieved": tally.requests as f64 / args.duration,
        "connections": args.connections,
        "duration_s": args.duration,
        "requests": tally.requests,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "latency_ms": {
            "p50": ms(histogram.value_at_quantile(0.5)),
            "p90": ms(histogram.value_at_quantile(0.9)),
            "p99": ms(histogram.value_at_quantile(0.99)),
            "p99_9": ms(histogram.value_at_quantile(0.999)),
            "max": ms(histogram.max()),
            "mean": histogram.mean() / 1000.0,
        },
        "curve": curve,
    });
    println!("{report}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_ipv4_and_ipv6_hosts_parse_to_an_address_and_a_request() {
        let t = parse_url("http://127.0.0.1:8080/x").expect("v4");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("literal"));
        assert!(String::from_utf8_lossy(&t.request).starts_with("GET /x HTTP/1.1\r\n"));
        let t = parse_url("http://[::1]:80").expect("v6");
        assert_eq!(t.addr, "[::1]:80".parse().expect("literal"));
        assert!(parse_url("https://127.0.0.1/").is_err());
        assert!(parse_url("http://example.org/").is_err());
    }
}
