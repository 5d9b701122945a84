//! Second chance for a draining host's sessions: the drain note among the BGP hosts of a
//! VIP (`vip.peer` in BGP mode).
//!
//! When a host withdraws its route, the router rehashes the flows it sent there onto the
//! remaining hosts, which have no socket for them and would answer with resets. So before
//! withdrawing, the stopping host tells each peer "I drain VIP for N seconds" over UDP
//! ([`NOTE_PORT`]); a peer installs the handover forwarding of [`crate::ha::forward`]
//! (packets of flows that did not start here with a SYN go on, unchanged, to the datagram's
//! source address, which still has the VIP on `lo`) and acknowledges. The stopping host
//! withdraws once every peer acknowledged, or after [`ACK_WAIT`]. Flows that start on the
//! peers with a SYN are theirs and never forwarded.
//!
//! A note is accepted only from an address in the instance's `peer` list and only for the
//! instance's own VIP; it can only make a peer forward mid-stream packets of that VIP to
//! that peer, for at most [`MAX_NOTE_SECS`]. It is plain text, one datagram:
//! `alive-proxy drain v1 <vip> <seconds>`, answered with `alive-proxy drained-ack v1 <vip>`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::broadcast;

/// The UDP port notes go to on every peer.
pub const NOTE_PORT: u16 = 5161;
/// How long a stopping host waits for every peer's acknowledgement before withdrawing.
pub const ACK_WAIT: Duration = Duration::from_millis(500);
/// Resend period while acknowledgements are missing (UDP may drop one).
const RESEND: Duration = Duration::from_millis(100);
/// Longest forwarding a note can ask for (a drain timeout longer than this is cut).
pub const MAX_NOTE_SECS: u32 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note {
    pub vip: IpAddr,
    pub seconds: u32,
}

impl Note {
    pub fn encode(&self) -> String {
        format!("alive-proxy drain v1 {} {}", self.vip, self.seconds)
    }

    pub fn decode(text: &str) -> Option<Note> {
        let mut words = text.split_whitespace();
        let prefix = [words.next()?, words.next()?, words.next()?];
        if prefix != ["alive-proxy", "drain", "v1"] {
            return None;
        }
        let vip = words.next()?.parse().ok()?;
        let seconds: u32 = words.next()?.parse().ok()?;
        words.next().is_none().then_some(Note {
            vip,
            seconds: seconds.min(MAX_NOTE_SECS),
        })
    }
}

fn ack_text(vip: IpAddr) -> String {
    format!("alive-proxy drained-ack v1 {vip}")
}

/// A note as received: who sent it (the address to forward to) and a way to answer.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: SocketAddr,
    pub note: Note,
}

/// The process's one note listener, shared by its BGP instances; started by the first.
fn hub() -> &'static broadcast::Sender<Received> {
    static HUB: OnceLock<broadcast::Sender<Received>> = OnceLock::new();
    HUB.get_or_init(|| {
        let (tx, _) = broadcast::channel(64);
        tokio::spawn(listen(tx.clone()));
        tx
    })
}

/// Notes for every VIP; the caller filters by its own.
pub fn subscribe() -> broadcast::Receiver<Received> {
    hub().subscribe()
}

/// IPv4 peers show up as v4-mapped addresses on the dual-stack socket.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

async fn listen(tx: broadcast::Sender<Received>) {
    // Dual-stack first; IPv4 alone on a host booted with IPv6 disabled.
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), NOTE_PORT);
    let v4 = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), NOTE_PORT);
    let socket = match UdpSocket::bind(v6).await {
        Ok(socket) => socket,
        Err(e6) => match UdpSocket::bind(v4).await {
            Ok(socket) => {
                tracing::warn!(port = NOTE_PORT, "drain notes over IPv4 only: {e6}");
                socket
            }
            Err(e) => {
                tracing::error!(
                    port = NOTE_PORT,
                    "cannot receive drain notes from BGP peers (their draining sessions will be reset here): {e}"
                );
                return;
            }
        },
    };
    let mut buf = [0u8; 256];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!("receiving a drain note: {e}");
                tokio::time::sleep(RESEND).await;
                continue;
            }
        };
        let from = unmapped(from);
        let Some(note) = std::str::from_utf8(&buf[..n]).ok().and_then(Note::decode) else {
            tracing::debug!(%from, "ignoring a datagram that is not a drain note");
            continue;
        };
        // No instance listening (all stopped) is no error.
        let _ = tx.send(Received { from, note });
    }
}

/// Tells a peer that its note was acted on.
pub async fn acknowledge(received: &Received) {
    let bind: SocketAddr = match received.from {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    let sent = async {
        let socket = UdpSocket::bind(bind).await?;
        socket
            .send_to(ack_text(received.note.vip).as_bytes(), received.from)
            .await
    };
    if let Err(e) = sent.await {
        tracing::warn!(to = %received.from, "acknowledging a drain note: {e}");
    }
}

/// Sends `note` to every peer and waits (at most [`ACK_WAIT`]) until each acknowledged.
/// Returns the peers that did not.
pub async fn announce_drain(note: Note, peers: &[IpAddr]) -> Vec<IpAddr> {
    let mut missing: Vec<IpAddr> = peers.to_vec();
    if missing.is_empty() {
        return missing;
    }
    let bind = if note.vip.is_ipv4() {
        SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
    };
    let socket = match UdpSocket::bind(bind).await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!("cannot send drain notes: {e}");
            return missing;
        }
    };
    let text = note.encode();
    let ack = ack_text(note.vip);
    let deadline = tokio::time::Instant::now() + ACK_WAIT;
    let mut buf = [0u8; 256];
    while !missing.is_empty() && tokio::time::Instant::now() < deadline {
        for peer in &missing {
            if let Err(e) = socket
                .send_to(text.as_bytes(), SocketAddr::new(*peer, NOTE_PORT))
                .await
            {
                tracing::debug!(%peer, "sending a drain note: {e}");
            }
        }
        let round = (tokio::time::Instant::now() + RESEND).min(deadline);
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(round, socket.recv_from(&mut buf)).await
        {
            let from = unmapped(from).ip();
            if std::str::from_utf8(&buf[..n]).is_ok_and(|t| t == ack) {
                missing.retain(|p| *p != from);
            }
            if missing.is_empty() {
                break;
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_reject_anything_else() {
        let note = Note {
            vip: "2001:db8:100::100".parse().unwrap(),
            seconds: 20,
        };
        assert_eq!(Note::decode(&note.encode()), Some(note));
        assert_eq!(Note::decode("alive-proxy drain v2 192.0.2.1 5"), None);
        assert_eq!(Note::decode("alive-proxy drain v1 192.0.2.1 5 extra"), None);
        assert_eq!(Note::decode("alive-proxy drain v1 nonsense 5"), None);
        let long = Note::decode("alive-proxy drain v1 192.0.2.1 999999").unwrap();
        assert_eq!(long.seconds, MAX_NOTE_SECS);
    }

    #[test]
    fn v4_mapped_sources_are_unmapped() {
        let mapped: SocketAddr = "[::ffff:192.0.2.12]:5161".parse().unwrap();
        assert_eq!(unmapped(mapped), "192.0.2.12:5161".parse().unwrap());
    }
}
