//! `alive-backend`: the project's stand-in for an ALB node, for tests, the README demo and
//! the load tests. It answers on its traffic port and, optionally, on a separate health
//! port (like the ALB's 1936), and names itself in every answer so a client can see which
//! backend the proxy chose.
//!
//! Modes:
//! - `http` (default): HTTP/1.1 with keep-alive; every response body is
//!   `backend <name> <listen addr>\n`. A request line `GET /peer` answers the address the
//!   connection came from instead (what the backend sees of the client); `GET /bytes/N`
//!   answers N bytes of [`pattern`] (a download whose every byte a client can check).
//! - `echo`: every byte read is written back; EOF from the client half-closes the answer
//!   (for byte-exact bulk and half-close tests).
//! - `sink`: reads until EOF, then answers `<bytes> <fnv1a-64 hex>\n` and closes.
//!
//! A thread per connection: simple, and the proxy, not this, is what is measured.

// Panics are for bugs: what the input, the network or the OS can make fail is handled.
// Tests may unwrap (clippy.toml).
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Http,
    Echo,
    Sink,
}

#[derive(Parser, Debug)]
#[command(
    name = "alive-backend",
    about = "Backend stand-in that names itself in its answers"
)]
struct Args {
    /// Traffic address, e.g. 127.0.0.1:8080 or [::1]:8080.
    #[arg(long)]
    listen: SocketAddr,
    /// Name put in every answer; defaults to the listen address.
    #[arg(long)]
    name: Option<String>,
    /// Optional health port address: answers `HTTP/1.1 200 OK` to anything.
    #[arg(long)]
    health: Option<SocketAddr>,
    #[arg(long, value_enum, default_value = "http")]
    mode: Mode,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let name = args.name.clone().unwrap_or_else(|| args.listen.to_string());
    let listener = match bind(args.listen) {
        Ok(l) => l,
        Err(err) => {
            eprintln!("alive-backend: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let listen = listener.local_addr().unwrap_or(args.listen);
    if let Some(health) = args.health {
        match bind(health) {
            Ok(health_listener) => {
                thread::spawn(move || serve(health_listener, health_answer));
            }
            Err(err) => {
                eprintln!("alive-backend: cannot listen on health {health}: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "alive-backend {name} listening on {listen} mode {:?}",
        args.mode
    );
    let banner: Arc<str> = format!("backend {name} {listen}\n").into();
    match args.mode {
        Mode::Http => serve(listener, move |stream| http(stream, &banner)),
        Mode::Echo => serve(listener, echo),
        Mode::Sink => serve(listener, sink),
    }
    ExitCode::SUCCESS
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn serve<F>(listener: TcpListener, handler: F)
where
    F: Fn(TcpStream) -> io::Result<()> + Send + Sync + Clone + 'static,
{
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let handler = handler.clone();
                thread::spawn(move || {
                    let _ = stream.set_nodelay(true);
                    // A client that resets is normal here (tests kill connections).
                    let _ = handler(stream);
                });
            }
            Err(err) => {
                eprintln!("alive-backend: accept: {err}");
                thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

fn health_answer(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 1024];
    let _ = stream.read(&mut buf)?;
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
}

fn http(stream: TcpStream, banner: &str) -> io::Result<()> {
    let peer = stream.peer_addr()?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut close = request_line.ends_with("HTTP/1.0\r\n");
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let lower = header.to_ascii_lowercase();
            if lower.starts_with("connection:") {
                close = lower.contains("close");
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
        }
        let connection = if close { "close" } else { "keep-alive" };
        if let Some(size) = request_line
            .strip_prefix("GET /bytes/")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
        {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\nConnection: {connection}\r\n\r\n"
            );
            writer.write_all(head.as_bytes())?;
            write_pattern(&mut writer, size)?;
        } else {
            let body = if request_line.starts_with("GET /peer ") {
                format!("{peer}\n")
            } else {
                banner.to_string()
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
                body.len()
            );
            writer.write_all(response.as_bytes())?;
        }
        if close {
            return writer.shutdown(Shutdown::Write);
        }
    }
}

/// Byte `i` of every `/bytes/N` answer: a 251-byte cycle (prime, so it never lines up
/// with buffer sizes and a lost or repeated chunk shows).
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn write_pattern(writer: &mut TcpStream, size: u64) -> io::Result<()> {
    let chunk: Vec<u8> = (0..251 * 256).map(pattern).collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64);
        writer.write_all(&chunk[..n as usize])?;
        left -= n;
    }
    Ok(())
}

fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return writer.shutdown(Shutdown::Write);
        }
        writer.write_all(&buf[..n])?;
    }
}

/// FNV-1a 64: tiny, dependency-free, and plenty to tell two byte streams apart in tests.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn sink(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hash = fnv1a(hash, &buf[..n]);
    }
    stream.write_all(format!("{total} {hash:016x}\n").as_bytes())?;
    stream.shutdown(Shutdown::Write)
}
