//! Client traffic for the transition tests (stop, reload, handover): keep-alive HTTP
//! clients that count every failed request, a slow download whose every byte is checked,
//! and one-shot connections that say which LB host proxied them. Each runs on its own
//! threads, inside a lab host's network namespace or in the test's own; all loops are
//! bounded by a stop flag or a byte count and by socket timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns::Host;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Byte `i` of alive-backend's `GET /bytes/N` answer.
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn spawn_in<T: Send + 'static>(
    host: Option<&Host>,
    body: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let host = host.cloned();
    std::thread::spawn(move || {
        if let Some(host) = host {
            host.enter();
        }
        body()
    })
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads one HTTP/1.1 response; returns its body.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(bad("connection closed before a response"));
    }
    if !line.starts_with("HTTP/1.1 200") {
        return Err(bad(&format!("unexpected status line {line:?}")));
    }
    let mut length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed in the headers"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length.ok_or_else(|| bad("no Content-Length"))?];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// What one keep-alive client saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub requests: u64,
    pub errors: Vec<String>,
}

/// `clients` HTTP keep-alive connections, each sending `GET /` every `every` until
/// [`KeepAliveClients::finish`]. A failed request is recorded and the client reconnects.
pub struct KeepAliveClients {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Tally>>,
}

impl KeepAliveClients {
    pub fn start(host: Option<&Host>, addr: SocketAddr, clients: usize, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = Arc::clone(&stop);
                spawn_in(host, move || keep_alive_client(addr, every, &stop))
            })
            .collect();
        KeepAliveClients { stop, threads }
    }

    /// Stops every client (closing its connection) and sums what they saw.
    pub fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Tally::default();
        for thread in self.threads {
            match thread.join() {
                Ok(tally) => {
                    total.requests += tally.requests;
                    total.errors.extend(tally.errors);
                }
                Err(_) => total.errors.push("a client thread panicked".into()),
            }
        }
        total
    }
}

fn keep_alive_client(addr: SocketAddr, every: Duration, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let mut connection: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::SeqCst) {
        let result = (|| {
            if connection.is_none() {
                connection = Some(BufReader::new(connect(addr)?));
            }
            let reader = connection
                .as_mut()
                .ok_or_else(|| std::io::Error::other("no connection"))?;
            reader
                .get_mut()
                .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")?;
            read_response(reader)
        })();
        match result {
            Ok(_) => tally.requests += 1,
            Err(e) => {
                tally
                    .errors
                    .push(format!("request {}: {e}", tally.requests + 1));
                connection = None;
            }
        }
        std::thread::sleep(every);
    }
    tally
}

/// `GET /bytes/N` read slowly (a small receive buffer, a pause per 64 KiB), every byte
/// checked against [`pattern`].
pub struct Download {
    thread: JoinHandle<Result<u64, String>>,
    /// Bytes checked so far.
    progress: Arc<std::sync::atomic::AtomicU64>,
}

impl Download {
    pub fn start(host: Option<&Host>, addr: SocketAddr, size: u64, pause: Duration) -> Download {
        let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = Arc::clone(&progress);
        let thread = spawn_in(host, move || download(addr, size, pause, &seen));
        Download { thread, progress }
    }

    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::SeqCst)
    }

    /// The bytes received and checked, or what went wrong.
    pub fn finish(self) -> Result<u64, String> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err("download thread panicked".into()))
    }
}

fn download(
    addr: SocketAddr,
    size: u64,
    pause: Duration,
    progress: &std::sync::atomic::AtomicU64,
) -> Result<u64, String> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| format!("socket: {e}"))?;
    // A small window keeps the sender from running far ahead of the reader.
    socket
        .set_recv_buffer_size(64 * 1024)
        .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    socket
        .connect_timeout(&addr.into(), IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    reader
        .get_mut()
        .write_all(
            format!("GET /bytes/{size} HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(|e| format!("request: {e}"))?;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("headers: {e}"))?;
        if n == 0 {
            return Err("closed in the headers".into());
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut at = 0u64;
    let mut since_pause = 0usize;
    while at < size {
        let n = reader
            .read(&mut buf)
            .map_err(|e| format!("after {at} of {size} bytes: {e}"))?;
        if n == 0 {
            return Err(format!("connection closed after {at} of {size} bytes"));
        }
        for (k, byte) in buf[..n].iter().enumerate() {
            let i = at + k as u64;
            if *byte != pattern(i) {
                return Err(format!("byte {i} is {byte}, expected {}", pattern(i)));
            }
        }
        at += n as u64;
        progress.store(at, Ordering::SeqCst);
        since_pause += n;
        if since_pause >= 64 * 1024 {
            since_pause = 0;
            std::thread::sleep(pause);
        }
    }
    Ok(at)
}

/// One new connection: `GET /peer`, answered with the address the backend saw the
/// connection come from (the LB host that proxied it).
pub fn peer_through(host: Option<&Host>, addr: SocketAddr) -> Result<String, String> {
    spawn_in(host, move || {
        let stream = connect(addr).map_err(|e| format!("connect: {e}"))?;
        let mut reader = BufReader::new(stream);
        reader
            .get_mut()
            .write_all(b"GET /peer HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
            .map_err(|e| format!("request: {e}"))?;
        let body = read_response(&mut reader).map_err(|e| format!("response: {e}"))?;
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        // "192.0.2.11:40000" or "[2001:db8::11]:40000" → the address alone.
        let ip = text
            .parse::<SocketAddr>()
            .map(|a| a.ip().to_string())
            .unwrap_or(text);
        Ok(ip)
    })
    .join()
    .unwrap_or_else(|_| Err("peer thread panicked".into()))
}

/// New connections every `every` until [`Prober::finish`], each recording when it was
/// made and which LB host served it (or the error).
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Instant, Result<String, String>)>>,
}

impl Prober {
    pub fn start(host: Option<&Host>, addr: SocketAddr, every: Duration) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let host_for_probe = host.cloned();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let at = Instant::now();
                seen.push((at, peer_through(host_for_probe.as_ref(), addr)));
                std::thread::sleep(every);
            }
            seen
        });
        Prober { stop, thread }
    }

    pub fn finish(self) -> Vec<(Instant, Result<String, String>)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}
