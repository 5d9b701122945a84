//! The peer task of one instance: a UDP socket on the failsafe port, probe rounds while this
//! host holds the lease, answers to the other hosts' probes. It only moves messages and
//! counts failures; the decisions are [`super::failsafe`] (holder side) and
//! [`super::local`] (answering side).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::failsafe::{Failsafe, Verdict};
use super::local::LocalFacts;
use super::wire::{Expect, Key, Kind, MAX_MESSAGE, Message, Reject, ReplayGuard};
use crate::ha::status::{Alarm, HaFailure};
use crate::ha::timing::Timing;

/// How far a probe's timestamp may be from this host's clock.
const REPLAY_WINDOW: Duration = Duration::from_secs(30);
/// At most one warning per kind of failure this often (every failure is still counted).
const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot open the failsafe socket on port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
}

/// What the peer task needs to know that a reload may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    pub timing: Timing,
    /// `peer` as configured; this host's own addresses are dropped at each round.
    pub peers: Vec<IpAddr>,
}

/// The driver's handle on its peer task.
pub struct PeerHandle {
    facts: Arc<Mutex<LocalFacts>>,
    confirmed: watch::Receiver<Option<Instant>>,
    settings: watch::Sender<PeerSettings>,
    task: JoinHandle<()>,
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PeerHandle {
    /// Opens the socket and starts the task.
    pub fn start(
        instance: &str,
        vip: IpAddr,
        port: u16,
        key: Key,
        settings: PeerSettings,
        alarm: Alarm,
    ) -> Result<PeerHandle, PeerError> {
        let socket = bind(vip, port).map_err(|source| PeerError::Bind { port, source })?;
        let facts = Arc::new(Mutex::new(LocalFacts::default()));
        let (confirmed_tx, confirmed) = watch::channel(None);
        let (settings_tx, settings_rx) = watch::channel(settings);
        let task = PeerTask {
            instance: instance.to_owned(),
            port,
            key,
            socket,
            facts: Arc::clone(&facts),
            confirmed: confirmed_tx,
            settings: settings_rx,
            failsafe: Failsafe::new([], rand::random()),
            guard: ReplayGuard::new(REPLAY_WINDOW),
            epoch: rand::random(),
            seq: 0,
            alarm,
            warned: Vec::new(),
            active: false,
        };
        Ok(PeerHandle {
            facts,
            confirmed,
            settings: settings_tx,
            task: tokio::spawn(task.run()),
        })
    }

    pub fn facts(&self) -> MutexGuard<'_, LocalFacts> {
        lock(&self.facts)
    }

    /// The send time of the latest round every peer vouched for.
    pub fn confirmed(&self) -> Option<Instant> {
        *self.confirmed.borrow()
    }

    /// Resolves when [`Self::confirmed`] changes (never, if the task ended).
    pub async fn changed(&mut self) {
        if self.confirmed.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub fn retune(&self, settings: PeerSettings) {
        self.settings.send_if_modified(|s| {
            let changed = *s != settings;
            *s = settings;
            changed
        });
    }
}

fn lock(facts: &Mutex<LocalFacts>) -> MutexGuard<'_, LocalFacts> {
    // The facts stay consistent under a panic elsewhere (plain fields, no invariants
    // spanning a panic point).
    facts.lock().unwrap_or_else(|e| e.into_inner())
}

fn bind(vip: IpAddr, port: u16) -> std::io::Result<UdpSocket> {
    let (domain, any) = match vip {
        IpAddr::V4(_) => (socket2::Domain::IPV4, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        IpAddr::V6(_) => (socket2::Domain::IPV6, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if vip.is_ipv6() {
        // The IPv4 instance has its own socket on the same port.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(any, port).into())?;
    UdpSocket::from_std(StdUdpSocket::from(socket))
}

/// The address this host sends from towards `peer` (the kernel's route lookup), which is
/// `peer` itself when `peer` is one of this host's own addresses.
fn source_towards(peer: IpAddr, port: u16) -> Option<IpAddr> {
    let any = match peer {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = StdUdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    socket.connect(SocketAddr::new(peer, port)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct PeerTask {
    instance: String,
    port: u16,
    key: Key,
    socket: UdpSocket,
    facts: Arc<Mutex<LocalFacts>>,
    confirmed: watch::Sender<Option<Instant>>,
    settings: watch::Receiver<PeerSettings>,
    failsafe: Failsafe,
    guard: ReplayGuard,
    epoch: u64,
    seq: u64,
    alarm: Alarm,
    /// When each kind of failure was last logged at warn level.
    warned: Vec<(&'static str, Instant)>,
    /// An extension was running at the last check (for logging its end once).
    active: bool,
}

impl PeerTask {
    async fn run(mut self) {
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        let mut next_round = Instant::now();
        loop {
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        let datagram = buf[..len].to_vec();
                        self.on_datagram(&datagram, from).await;
                    }
                    Err(e) => {
                        // ICMP errors from earlier sends surface here on Linux; nothing to do.
                        tracing::debug!(instance = %self.instance, "failsafe socket: {e}");
                    }
                },
                () = tokio::time::sleep_until(next_round.into()) => {
                    let period = self.settings.borrow().timing.poll_period;
                    next_round = Instant::now() + period.max(Duration::from_millis(50));
                    self.round().await;
                }
            }
        }
    }

    /// One probe period: while holding, a new round to every peer; otherwise nothing.
    async fn round(&mut self) {
        let now = Instant::now();
        let settings = self.settings.borrow().clone();
        let (holding, holder_seen) = {
            let facts = lock(&self.facts);
            (facts.is_holding(), facts.holder_seen())
        };
        self.check_extension(now, &settings.timing);
        if !holding {
            if self.failsafe.confirmed().is_some() || self.confirmed.borrow().is_some() {
                self.failsafe.reset();
                self.publish();
            }
            return;
        }
        // (peer, our source towards it); `None`: no route, its confirmation cannot come
        // but it is still needed.
        let mut peers: Vec<(IpAddr, Option<IpAddr>)> = Vec::new();
        for &peer in &settings.peers {
            match source_towards(peer, self.port) {
                Some(source) if source == peer => {} // one of this host's own addresses
                Some(source) => peers.push((peer, Some(source))),
                None => {
                    self.warn("peer_route", &format!("no route to peer {peer}"));
                    peers.push((peer, None));
                }
            }
        }
        self.failsafe.set_peers(peers.iter().map(|(p, _)| *p));
        if peers.is_empty() {
            return;
        }
        let nonce = self.failsafe.begin_round(now);
        for (peer, source) in peers {
            if let Some(source) = source {
                let message = self.message(Kind::Probe, nonce, source, holder_seen.clone());
                self.send(&message, peer).await;
            }
        }
    }

    /// Logs (once) an extension that ran out because a peer stopped answering.
    fn check_extension(&mut self, now: Instant, timing: &Timing) {
        let active = self.failsafe.holds_at(now, timing.renew_deadline);
        if self.active && !active {
            let silent = self
                .failsafe
                .silent(now.checked_sub(timing.poll_period).unwrap_or(now));
            self.alarm.raise(HaFailure::FailsafeEnded);
            tracing::warn!(
                instance = %self.instance, ?silent,
                "failsafe: peers stopped confirming; no extension beyond the lease any more"
            );
        }
        self.active = active;
    }

    fn message(
        &mut self,
        kind: Kind,
        nonce: u64,
        from: IpAddr,
        holder_seen: Option<String>,
    ) -> Message {
        self.seq += 1;
        Message {
            kind,
            epoch: self.epoch,
            seq: self.seq,
            unix_ms: unix_ms(),
            nonce,
            from,
            instance: self.instance.clone(),
            holder_seen,
        }
    }

    async fn send(&mut self, message: &Message, to: IpAddr) {
        let bytes = message.encode(&self.key);
        if let Err(e) = self
            .socket
            .send_to(&bytes, SocketAddr::new(to, self.port))
            .await
        {
            self.alarm.raise(HaFailure::PeerSend);
            self.warn("peer_send", &format!("sending to peer {to}: {e}"));
        }
    }

    async fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        let source = match from.ip() {
            IpAddr::V6(v6) => super::wire::unmapped(v6),
            v4 => v4,
        };
        match self.accept(datagram, source) {
            Ok(message) => match message.kind {
                Kind::Probe => self.answer(&message, source).await,
                Kind::Reply(answer) => match self.failsafe.on_answer(source, message.nonce, answer)
                {
                    Ok(verdict) => self.on_verdict(verdict, source),
                    Err(_) => self.reject(Reject::NoRound, source),
                },
            },
            Err(reject) => self.reject(reject, source),
        }
    }

    /// Authenticates and checks a datagram: tag, instance, signed sender = source, a
    /// configured peer, and (probes) not replayed.
    fn accept(&mut self, datagram: &[u8], source: IpAddr) -> Result<Message, Reject> {
        let peers = self.settings.borrow().peers.clone();
        let expect = Expect {
            key: &self.key,
            instance: &self.instance,
            peers: &peers,
        };
        expect.accept(datagram, source, &mut self.guard, unix_ms())
    }

    async fn answer(&mut self, probe: &Message, to: IpAddr) {
        let stall = self.settings.borrow().timing.poll_period;
        let (answer, holder_seen) = {
            let mut facts = lock(&self.facts);
            (facts.answer(Instant::now(), stall), facts.holder_seen())
        };
        let Some(source) = source_towards(to, self.port) else {
            self.warn("peer_route", &format!("no route back to peer {to}"));
            return;
        };
        let reply = self.message(Kind::Reply(answer), probe.nonce, source, holder_seen);
        if answer.vouch {
            tracing::debug!(instance = %self.instance, peer = %to, "failsafe: vouched");
        }
        self.send(&reply, to).await;
    }

    fn on_verdict(&mut self, verdict: Verdict, peer: IpAddr) {
        match verdict {
            Verdict::Unanimous { .. } => {
                if !self.active {
                    tracing::warn!(
                        instance = %self.instance, peers = ?self.failsafe.peers(),
                        "failsafe: every peer confirms it cannot reach the lock either and \
                         does not hold the VIP; keeping the VIP while they do"
                    );
                }
                self.active = true;
                self.publish();
            }
            Verdict::Ended(reason) => {
                if self.active {
                    self.alarm.raise(HaFailure::FailsafeEnded);
                    tracing::warn!(
                        instance = %self.instance, %peer,
                        "failsafe ended: {}", reason.describe()
                    );
                }
                self.active = false;
                self.publish();
            }
            Verdict::Counted | Verdict::Duplicate => {}
        }
    }

    fn publish(&mut self) {
        let confirmed = self.failsafe.confirmed();
        self.confirmed.send_if_modified(|c| {
            let changed = *c != confirmed;
            *c = confirmed;
            changed
        });
    }

    fn reject(&mut self, reject: Reject, source: IpAddr) {
        self.alarm.raise(HaFailure::PeerMessage);
        self.warn(
            "peer_message",
            &format!("dropped a failsafe message from {source}: {reject}"),
        );
    }

    /// Logs at warn level at most once per [`WARN_EVERY`] per kind, else at debug.
    fn warn(&mut self, kind: &'static str, message: &str) {
        let now = Instant::now();
        let due = match self.warned.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, at)) if now.duration_since(*at) < WARN_EVERY => false,
            Some((_, at)) => {
                *at = now;
                true
            }
            None => {
                self.warned.push((kind, now));
                true
            }
        };
        if due {
            tracing::warn!(instance = %self.instance, "{message}");
        } else {
            tracing::debug!(instance = %self.instance, "{message}");
        }
    }
}
