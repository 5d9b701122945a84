//! The failsafe peer messages on the wire: layout, HMAC-SHA256 authentication, and the
//! checks a received message must pass before anything reads its content.
//!
//! ```text
//!  0  magic "APF1"                     4  kind (1 probe, 2 reply)   5  flags (reply)
//!  6  epoch u64 (sender's process)    14  seq u64 (sender's, +1 per message)
//! 22  unix time in ms u64             30  nonce u64 (probe: the round; reply: echoed)
//! 38  sender's address, 16 bytes (IPv4 as ::ffff:a.b.c.d)
//! 54  instance name: length (1..=64), bytes    then holder seen: length (0..=64), bytes
//! end HMAC-SHA256 over every byte before it (32)
//! ```
//!
//! Freshness does not rest on the timestamp: a reply counts only when it echoes the nonce
//! of a round its receiver sent (and is recent on the receiver's own clock, see
//! [`super::failsafe`]). The timestamp and the per-sender sequence only keep replayed
//! *probes* from making a standby vouch again ([`ReplayGuard`]); a replayed probe could do
//! no more than that (vouching only delays the standby's own takeover).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use ring::hmac;

const MAGIC: &[u8; 4] = b"APF1";
const HEADER: usize = 54;
const TAG: usize = 32;
/// Instance names are at most this long (the config allows fewer); holder names are cut.
pub const MAX_NAME: usize = 64;
/// Largest message: header, two names with their lengths, the tag.
pub const MAX_MESSAGE: usize = HEADER + 2 * (1 + MAX_NAME) + TAG;
/// Shortest key accepted from the key file.
pub const MIN_KEY: usize = crate::config::plan::FailsafePlan::MIN_KEY;

const FLAG_REACHABLE: u8 = 1;
const FLAG_HOLDING: u8 = 2;
const FLAG_VOUCH: u8 = 4;

/// The shared secret of the LB hosts (the key file's content).
pub struct Key(hmac::Key);

impl Key {
    /// `None` when shorter than [`MIN_KEY`] bytes.
    pub fn new(secret: &[u8]) -> Option<Key> {
        (secret.len() >= MIN_KEY).then(|| Key(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The holder asks: "can you reach the lock, do you hold the VIP?"
    Probe,
    /// A host answers a probe, echoing its nonce.
    Reply(Answer),
}

/// A host's answer about itself, at the moment it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Answer {
    /// Its last lock call succeeded and none has been hanging.
    pub lock_reachable: bool,
    /// It holds the lease or may have the VIP on its interface.
    pub holding: bool,
    /// It cannot reach the lock, does not hold, has no lease write in flight, and promises
    /// not to take the lease before it has seen the record unchanged for a whole lease
    /// duration counted from a read that returns after this answer.
    pub vouch: bool,
}

/// One message, authenticated or to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    pub epoch: u64,
    pub seq: u64,
    pub unix_ms: u64,
    pub nonce: u64,
    /// The sender's own address, which the packet must come from.
    pub from: IpAddr,
    pub instance: String,
    /// The lease holder the sender last saw (diagnostics only).
    pub holder_seen: Option<String>,
}

/// Why a received datagram was dropped; one label each in the counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("malformed")]
    Malformed,
    #[error("bad authentication tag (wrong key or altered)")]
    BadTag,
    #[error("for another instance")]
    OtherInstance,
    #[error("the signed sender is not the packet's source")]
    SourceMismatch,
    #[error("the sender is not in `peer`")]
    UnknownPeer,
    #[error("timestamp outside the accepted window")]
    Stale,
    #[error("replayed (sequence not newer)")]
    Replayed,
    #[error("answers no open round")]
    NoRound,
}

impl Message {
    pub fn encode(&self, key: &Key) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_MESSAGE);
        out.extend_from_slice(MAGIC);
        let (kind, flags) = match self.kind {
            Kind::Probe => (1, 0),
            Kind::Reply(a) => (
                2,
                [
                    (a.lock_reachable, FLAG_REACHABLE),
                    (a.holding, FLAG_HOLDING),
                    (a.vouch, FLAG_VOUCH),
                ]
                .iter()
                .filter(|(set, _)| *set)
                .fold(0, |flags, (_, bit)| flags | bit),
            ),
        };
        out.push(kind);
        out.push(flags);
        for n in [self.epoch, self.seq, self.unix_ms, self.nonce] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(&mapped(self.from).octets());
        push_name(&mut out, &self.instance);
        push_name(&mut out, self.holder_seen.as_deref().unwrap_or(""));
        let tag = hmac::sign(&key.0, &out);
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Checks the tag first (in constant time), then the layout; nothing of an
    /// unauthenticated datagram is interpreted.
    pub fn decode(datagram: &[u8], key: &Key) -> Result<Message, Reject> {
        if datagram.len() < HEADER + 2 + TAG || datagram.len() > MAX_MESSAGE {
            return Err(Reject::Malformed);
        }
        let (body, tag) = datagram.split_at(datagram.len() - TAG);
        hmac::verify(&key.0, body, tag).map_err(|_| Reject::BadTag)?;
        if &body[..4] != MAGIC {
            return Err(Reject::Malformed);
        }
        let flags = body[5];
        let kind = match body[4] {
            1 => Kind::Probe,
            2 => Kind::Reply(Answer {
                lock_reachable: flags & FLAG_REACHABLE != 0,
                holding: flags & FLAG_HOLDING != 0,
                vouch: flags & FLAG_VOUCH != 0,
            }),
            _ => return Err(Reject::Malformed),
        };
        let word = |at: usize| -> Result<u64, Reject> {
            body.get(at..at + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or(Reject::Malformed)
        };
        let addr = <[u8; 16]>::try_from(&body[38..54]).map_err(|_| Reject::Malformed)?;
        let (instance, rest) = take_name(&body[HEADER..])?;
        let (holder, rest) = take_name(rest)?;
        if instance.is_empty() || !rest.is_empty() {
            return Err(Reject::Malformed);
        }
        Ok(Message {
            kind,
            epoch: word(6)?,
            seq: word(14)?,
            unix_ms: word(22)?,
            nonce: word(30)?,
            from: unmapped(Ipv6Addr::from(addr)),
            instance,
            holder_seen: (!holder.is_empty()).then_some(holder),
        })
    }
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    // Cut at a character boundary so the receiver always gets valid UTF-8.
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&name.as_bytes()[..end]);
}

fn take_name(bytes: &[u8]) -> Result<(String, &[u8]), Reject> {
    let (&len, rest) = bytes.split_first().ok_or(Reject::Malformed)?;
    let len = usize::from(len);
    if len > MAX_NAME || rest.len() < len {
        return Err(Reject::Malformed);
    }
    let (name, rest) = rest.split_at(len);
    let name = std::str::from_utf8(name).map_err(|_| Reject::Malformed)?;
    Ok((name.to_owned(), rest))
}

fn mapped(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The canonical form of an address: IPv4-mapped IPv6 as IPv4.
pub fn unmapped(v6: Ipv6Addr) -> IpAddr {
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// What a received datagram must match besides its tag.
pub struct Expect<'a> {
    pub key: &'a Key,
    pub instance: &'a str,
    /// `peer` as configured.
    pub peers: &'a [IpAddr],
}

impl Expect<'_> {
    /// Authenticates and checks a datagram from `source`: tag, instance, signed sender =
    /// source, a configured peer, and (probes) neither replayed nor stale. Replies are
    /// checked for freshness by their nonce ([`super::failsafe`]).
    pub fn accept(
        &self,
        datagram: &[u8],
        source: IpAddr,
        guard: &mut ReplayGuard,
        now_unix_ms: u64,
    ) -> Result<Message, Reject> {
        let message = Message::decode(datagram, self.key)?;
        if message.instance != self.instance {
            return Err(Reject::OtherInstance);
        }
        if message.from != source {
            return Err(Reject::SourceMismatch);
        }
        if !self.peers.contains(&source) {
            return Err(Reject::UnknownPeer);
        }
        if message.kind == Kind::Probe {
            guard.admit(&message, now_unix_ms)?;
        }
        Ok(message)
    }
}

/// Per sender: the newest (epoch, seq) accepted, so a replayed message is refused, and a
/// timestamp window, so a message from an old epoch (a process that has since restarted)
/// cannot be replayed as if it were new.
#[derive(Debug)]
pub struct ReplayGuard {
    window: Duration,
    last: HashMap<IpAddr, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    epoch: u64,
    seq: u64,
    unix_ms: u64,
}

impl ReplayGuard {
    /// `window`: how far a message's timestamp may be from this host's wall clock (the LB
    /// hosts keep their clocks in sync, as the seed's guide already requires).
    pub fn new(window: Duration) -> ReplayGuard {
        ReplayGuard {
            window,
            last: HashMap::new(),
        }
    }

    /// Accepts `message` (and remembers it) when it is newer than anything seen from its
    /// sender and its timestamp is within the window of `now_unix_ms`.
    pub fn admit(&mut self, message: &Message, now_unix_ms: u64) -> Result<(), Reject> {
        let window = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        if message.unix_ms.abs_diff(now_unix_ms) > window {
            return Err(Reject::Stale);
        }
        let newer = match self.last.get(&message.from) {
            None => true,
            Some(seen) if seen.epoch == message.epoch => message.seq > seen.seq,
            // Another epoch: the sender restarted; only a later one is believed.
            Some(seen) => message.unix_ms > seen.unix_ms,
        };
        if !newer {
            return Err(Reject::Replayed);
        }
        self.last.insert(
            message.from,
            Seen {
                epoch: message.epoch,
                seq: message.seq,
                unix_ms: message.unix_ms,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(b"0123456789abcdef0123456789abcdef").expect("long enough")
    }

    fn probe() -> Message {
        Message {
            kind: Kind::Probe,
            epoch: 7,
            seq: 1,
            unix_ms: 1_000_000,
            nonce: 42,
            from: "192.0.2.11".parse().expect("address"),
            instance: "vip-1".into(),
            holder_seen: Some("lb1".into()),
        }
    }

    #[test]
    fn round_trips_probe_and_reply_in_both_families() {
        let key = key();
        let mut m = probe();
        assert_eq!(Message::decode(&m.encode(&key), &key), Ok(m.clone()));
        m.kind = Kind::Reply(Answer {
            lock_reachable: false,
            holding: false,
            vouch: true,
        });
        m.from = "2001:db8::12".parse().expect("address");
        m.holder_seen = None;
        assert_eq!(Message::decode(&m.encode(&key), &key), Ok(m));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(Key::new(b"short").is_none());
    }

    #[test]
    fn any_flipped_bit_or_other_key_fails_authentication() {
        let key = key();
        let bytes = probe().encode(&key);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(Message::decode(&bad, &key).is_err(), "byte {i} flipped");
        }
        let other = Key::new(b"another key of enough length!!").expect("long enough");
        assert_eq!(Message::decode(&bytes, &other), Err(Reject::BadTag));
    }

    #[test]
    fn truncated_extended_and_garbage_datagrams_are_malformed_or_unauthenticated() {
        let key = key();
        let bytes = probe().encode(&key);
        for len in 0..bytes.len() {
            assert!(Message::decode(&bytes[..len], &key).is_err(), "len {len}");
        }
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 200]);
        assert_eq!(Message::decode(&long, &key), Err(Reject::Malformed));
        assert!(Message::decode(&[0xff; 120], &key).is_err());
    }

    #[test]
    fn a_validly_tagged_but_malformed_body_is_refused() {
        let key = key();
        // A body with an unknown kind, signed with the right key (a buggy peer).
        let mut body = probe().encode(&key);
        body.truncate(body.len() - TAG);
        body[4] = 9;
        let tag = hmac::sign(&key.0, &body);
        body.extend_from_slice(tag.as_ref());
        assert_eq!(Message::decode(&body, &key), Err(Reject::Malformed));
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let key = key();
        let mut m = probe();
        m.holder_seen = Some("é".repeat(40));
        let decoded = Message::decode(&m.encode(&key), &key).expect("valid");
        let holder = decoded.holder_seen.expect("holder");
        assert!(holder.len() <= MAX_NAME && holder.chars().all(|c| c == 'é'));
    }

    #[test]
    fn spoofed_sources_strangers_other_instances_and_replayed_probes_are_refused() {
        let key = key();
        let peers: Vec<IpAddr> = ["192.0.2.11", "192.0.2.12"]
            .iter()
            .map(|s| s.parse().expect("address"))
            .collect();
        let expect = Expect {
            key: &key,
            instance: "vip-1",
            peers: &peers,
        };
        let mut guard = ReplayGuard::new(Duration::from_secs(30));
        let m = probe();
        let bytes = m.encode(&key);
        let now = m.unix_ms;
        let other: IpAddr = "192.0.2.12".parse().expect("address");
        // A peer's genuine message re-sent from another peer's address.
        assert_eq!(
            expect.accept(&bytes, other, &mut guard, now),
            Err(Reject::SourceMismatch)
        );
        assert_eq!(
            expect.accept(&bytes, m.from, &mut guard, now),
            Ok(m.clone())
        );
        assert_eq!(
            expect.accept(&bytes, m.from, &mut guard, now),
            Err(Reject::Replayed)
        );
        let mut stranger = m.clone();
        stranger.from = "192.0.2.66".parse().expect("address");
        stranger.seq = 9;
        assert_eq!(
            expect.accept(&stranger.encode(&key), stranger.from, &mut guard, now),
            Err(Reject::UnknownPeer)
        );
        let mut elsewhere = m.clone();
        elsewhere.instance = "vip-2".into();
        elsewhere.seq = 10;
        assert_eq!(
            expect.accept(&elsewhere.encode(&key), m.from, &mut guard, now),
            Err(Reject::OtherInstance)
        );
        // Replies are not sequence-checked here (reordering is normal); their nonce is.
        let mut reply = m.clone();
        reply.kind = Kind::Reply(Answer::default());
        let reply_bytes = reply.encode(&key);
        assert!(expect.accept(&reply_bytes, m.from, &mut guard, now).is_ok());
        assert!(expect.accept(&reply_bytes, m.from, &mut guard, now).is_ok());
    }

    #[test]
    fn replays_and_stale_timestamps_are_refused() {
        let mut guard = ReplayGuard::new(Duration::from_secs(30));
        let m = probe();
        assert_eq!(guard.admit(&m, m.unix_ms), Ok(()));
        assert_eq!(guard.admit(&m, m.unix_ms), Err(Reject::Replayed));
        let mut older = m.clone();
        older.seq = 0;
        assert_eq!(guard.admit(&older, m.unix_ms), Err(Reject::Replayed));
        let mut next = m.clone();
        next.seq = 2;
        assert_eq!(guard.admit(&next, m.unix_ms + 10), Ok(()));
        let mut stale = m.clone();
        stale.seq = 3;
        stale.unix_ms -= 31_000;
        assert_eq!(guard.admit(&stale, m.unix_ms), Err(Reject::Stale));
        // A restarted sender (new epoch) is believed only with a later timestamp.
        let mut old_epoch = m.clone();
        old_epoch.epoch = 6;
        old_epoch.seq = 100;
        assert_eq!(guard.admit(&old_epoch, m.unix_ms), Err(Reject::Replayed));
        let mut restarted = old_epoch.clone();
        restarted.unix_ms = m.unix_ms + 500;
        assert_eq!(guard.admit(&restarted, m.unix_ms + 500), Ok(()));
    }
}
