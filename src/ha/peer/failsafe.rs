//! The holder's side of the lock-outage failsafe, pure (no I/O, no clock reads): probe
//! rounds, the authenticated answers to them, and the instant up to which the peers'
//! answers let the holder keep the VIP without renewing its lease.
//!
//! # Rule
//! The holder sends a probe round (one nonce, to every peer) every probe period. A round is
//! *unanimous* when every peer answered it with "lock unreachable, not holding, vouched".
//! [`Failsafe::confirmed`] is the send time of the latest unanimous round; the ownership
//! state machine keeps the VIP until `confirmed + renew deadline` when that is later than
//! its lease deadline ([`crate::ha::ownership::Ownership::set_failsafe`]).
//!
//! Any answer saying "lock reachable" or "holding" ends the failsafe at once: rounds sent
//! up to then never count again. A peer that does not answer simply lets the last
//! extension run out.
//!
//! # Why a vouch is as good as a lease write
//! A peer vouches only after receiving the probe, so after the round was sent; and having
//! vouched it takes the lease only once it has seen the record unchanged for the lease
//! duration `L`, counted from a read that returns after the vouch. So no peer takes the
//! lease before `sent + L` on its clock, while the holder lets go at `sent + D` on its own:
//! exactly the lease's argument with the round's send time in place of the last write's
//! (`D·(1+ρ) + t_drop < L·(1−ρ)`, docs/ha.md).

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::wire::Answer;

/// Rounds kept open for late answers; older answers can only extend to a point already
/// passed or superseded.
const OPEN_ROUNDS: usize = 8;

#[derive(Debug, Clone)]
struct Round {
    nonce: u64,
    sent_at: Instant,
    vouched: BTreeSet<IpAddr>,
    /// Asked before a peer answered against the failsafe (or before it was reset): its
    /// answers are still recognised (not counted as strays) but never count.
    dead: bool,
}

/// What an answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; the round is not unanimous yet.
    Counted,
    /// The round is now unanimous: the holder may keep the VIP up to `sent_at + D`.
    Unanimous { sent_at: Instant },
    /// Counted again, for a round already decided, or for a round the failsafe ended
    /// after: nothing changes.
    Duplicate,
    /// The peer can reach the lock or holds the VIP: the failsafe ends now.
    Ended(EndReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    PeerReachesLock,
    PeerHolds,
    /// Neither reachable nor holding, but not vouching (a lease write in flight).
    PeerDeclines,
}

impl EndReason {
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::PeerReachesLock => "a peer can reach the lock",
            EndReason::PeerHolds => "a peer holds the VIP",
            EndReason::PeerDeclines => "a peer declines to vouch (lease write in flight)",
        }
    }
}

/// Why an answer was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Not one of the peers.
    UnknownPeer,
    /// The nonce names no open round (replayed, or far too late).
    NoRound,
}

#[derive(Debug)]
pub struct Failsafe {
    peers: BTreeSet<IpAddr>,
    next_nonce: u64,
    rounds: VecDeque<Round>,
    confirmed: Option<Instant>,
}

impl Failsafe {
    /// `peers`: the other hosts (this host's own addresses already removed); `first_nonce`
    /// random per process, so a reply to an earlier process's round never matches.
    pub fn new(peers: impl IntoIterator<Item = IpAddr>, first_nonce: u64) -> Failsafe {
        Failsafe {
            peers: peers.into_iter().collect(),
            next_nonce: first_nonce,
            rounds: VecDeque::new(),
            confirmed: None,
        }
    }

    /// The peer list changed (reload, addresses): the open rounds were asked of others.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = IpAddr>) {
        let peers: BTreeSet<IpAddr> = peers.into_iter().collect();
        if peers != self.peers {
            self.peers = peers;
            self.rounds.clear();
            self.confirmed = None;
        }
    }

    pub fn peers(&self) -> &BTreeSet<IpAddr> {
        &self.peers
    }

    /// Not holding any more: no open round may count any more.
    pub fn reset(&mut self) {
        self.kill_rounds();
    }

    fn kill_rounds(&mut self) {
        for round in &mut self.rounds {
            round.dead = true;
        }
        self.confirmed = None;
    }

    /// Starts a round sent at `now`; returns its nonce. With no peers nothing can ever be
    /// confirmed (there is nobody to vouch), so the failsafe never extends.
    pub fn begin_round(&mut self, now: Instant) -> u64 {
        let nonce = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        self.rounds.push_back(Round {
            nonce,
            sent_at: now,
            vouched: BTreeSet::new(),
            dead: false,
        });
        while self.rounds.len() > OPEN_ROUNDS {
            self.rounds.pop_front();
        }
        nonce
    }

    /// An authenticated answer from `from` to the round `nonce`.
    pub fn on_answer(
        &mut self,
        from: IpAddr,
        nonce: u64,
        answer: Answer,
    ) -> Result<Verdict, Ignored> {
        if !self.peers.contains(&from) {
            return Err(Ignored::UnknownPeer);
        }
        let Some(at) = self.rounds.iter().position(|r| r.nonce == nonce) else {
            return Err(Ignored::NoRound);
        };
        if !answer.vouch || answer.lock_reachable || answer.holding {
            // Every open round was asked of a host that now says no: none may count later.
            self.kill_rounds();
            let reason = if answer.holding {
                EndReason::PeerHolds
            } else if answer.lock_reachable {
                EndReason::PeerReachesLock
            } else {
                EndReason::PeerDeclines
            };
            return Ok(Verdict::Ended(reason));
        }
        let round = &mut self.rounds[at];
        if round.dead || !round.vouched.insert(from) {
            return Ok(Verdict::Duplicate);
        }
        if !self.peers.iter().all(|p| round.vouched.contains(p)) {
            return Ok(Verdict::Counted);
        }
        let sent_at = round.sent_at;
        if self.confirmed.is_some_and(|c| c >= sent_at) {
            return Ok(Verdict::Duplicate);
        }
        self.confirmed = Some(sent_at);
        Ok(Verdict::Unanimous { sent_at })
    }

    /// The send time of the latest unanimous round since the failsafe last ended.
    pub fn confirmed(&self) -> Option<Instant> {
        self.confirmed
    }

    /// Peers that have not vouched for the newest round sent before `before` (for logs).
    pub fn silent(&self, before: Instant) -> Vec<IpAddr> {
        self.rounds
            .iter()
            .rev()
            .find(|r| r.sent_at <= before && !r.dead)
            .map(|r| {
                self.peers
                    .iter()
                    .filter(|p| !r.vouched.contains(p))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether an extension confirmed at `confirmed` is still running at `now` for a renew
    /// deadline `deadline`.
    pub fn holds_at(&self, now: Instant, deadline: Duration) -> bool {
        self.confirmed.is_some_and(|c| now < c + deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOUCH: Answer = Answer {
        lock_reachable: false,
        holding: false,
        vouch: true,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn two_peers() -> Failsafe {
        Failsafe::new([ip("192.0.2.12"), ip("192.0.2.13")], u64::MAX - 1)
    }

    #[test]
    fn only_a_round_every_peer_vouched_for_confirms_and_it_counts_from_its_send_time() {
        let t0 = Instant::now();
        let mut f = two_peers();
        let n = f.begin_round(t0);
        assert_eq!(
            f.on_answer(ip("192.0.2.12"), n, VOUCH),
            Ok(Verdict::Counted)
        );
        assert_eq!(f.confirmed(), None);
        assert_eq!(
            f.on_answer(ip("192.0.2.12"), n, VOUCH),
            Ok(Verdict::Duplicate)
        );
        assert_eq!(f.confirmed(), None, "one peer twice is not two peers");
        assert_eq!(
            f.on_answer(ip("192.0.2.13"), n, VOUCH),
            Ok(Verdict::Unanimous { sent_at: t0 })
        );
        assert_eq!(f.confirmed(), Some(t0));
        let d = Duration::from_millis(1500);
        assert!(f.holds_at(t0 + d - Duration::from_millis(1), d));
        assert!(!f.holds_at(t0 + d, d));
    }

    #[test]
    fn a_reachable_or_holding_or_declining_peer_ends_it_and_older_rounds_never_count_again() {
        let t0 = Instant::now();
        for (answer, reason) in [
            (
                Answer {
                    lock_reachable: true,
                    ..Answer::default()
                },
                EndReason::PeerReachesLock,
            ),
            (
                Answer {
                    holding: true,
                    ..Answer::default()
                },
                EndReason::PeerHolds,
            ),
            (Answer::default(), EndReason::PeerDeclines),
        ] {
            let mut f = two_peers();
            let first = f.begin_round(t0);
            f.on_answer(ip("192.0.2.12"), first, VOUCH)
                .expect("counted");
            f.on_answer(ip("192.0.2.13"), first, VOUCH)
                .expect("counted");
            assert_eq!(f.confirmed(), Some(t0));
            let second = f.begin_round(t0 + Duration::from_millis(250));
            assert_eq!(
                f.on_answer(ip("192.0.2.12"), second, answer),
                Ok(Verdict::Ended(reason))
            );
            assert_eq!(
                f.confirmed(),
                None,
                "{reason:?} must end the extension at once"
            );
            // A late vouch for a round sent before the refusal does not revive it.
            assert_eq!(
                f.on_answer(ip("192.0.2.13"), second, VOUCH),
                Ok(Verdict::Duplicate)
            );
            assert_eq!(
                f.on_answer(ip("192.0.2.13"), first, VOUCH),
                Ok(Verdict::Duplicate)
            );
            assert_eq!(f.confirmed(), None);
            // A new round can confirm again.
            let third = f.begin_round(t0 + Duration::from_millis(500));
            f.on_answer(ip("192.0.2.12"), third, VOUCH)
                .expect("counted");
            f.on_answer(ip("192.0.2.13"), third, VOUCH)
                .expect("counted");
            assert_eq!(f.confirmed(), Some(t0 + Duration::from_millis(500)));
        }
    }

    #[test]
    fn strangers_replays_and_unknown_rounds_never_extend() {
        let t0 = Instant::now();
        let mut f = two_peers();
        let n = f.begin_round(t0);
        assert_eq!(
            f.on_answer(ip("192.0.2.99"), n, VOUCH),
            Err(Ignored::UnknownPeer)
        );
        assert_eq!(
            f.on_answer(ip("192.0.2.12"), n.wrapping_add(5), VOUCH),
            Err(Ignored::NoRound)
        );
        f.on_answer(ip("192.0.2.12"), n, VOUCH).expect("counted");
        assert_eq!(f.confirmed(), None);
        // Rounds fall out of the window: a very late answer is not counted.
        for i in 1..=OPEN_ROUNDS as u32 {
            f.begin_round(t0 + Duration::from_millis(250) * i);
        }
        assert_eq!(
            f.on_answer(ip("192.0.2.13"), n, VOUCH),
            Err(Ignored::NoRound)
        );
        assert_eq!(f.confirmed(), None);
    }

    #[test]
    fn a_late_answer_to_an_older_round_never_moves_the_confirmation_back() {
        let t0 = Instant::now();
        let mut f = two_peers();
        let a = f.begin_round(t0);
        let b = f.begin_round(t0 + Duration::from_millis(250));
        for peer in ["192.0.2.12", "192.0.2.13"] {
            f.on_answer(ip(peer), b, VOUCH).expect("counted");
        }
        assert_eq!(f.confirmed(), Some(t0 + Duration::from_millis(250)));
        f.on_answer(ip("192.0.2.12"), a, VOUCH).expect("counted");
        assert_eq!(
            f.on_answer(ip("192.0.2.13"), a, VOUCH),
            Ok(Verdict::Duplicate)
        );
        assert_eq!(f.confirmed(), Some(t0 + Duration::from_millis(250)));
    }

    #[test]
    fn without_peers_nothing_is_ever_confirmed_and_reset_forgets() {
        let t0 = Instant::now();
        let mut none = Failsafe::new([], 1);
        let n = none.begin_round(t0);
        assert_eq!(
            none.on_answer(ip("192.0.2.12"), n, VOUCH),
            Err(Ignored::UnknownPeer)
        );
        assert_eq!(none.confirmed(), None);

        let mut f = two_peers();
        let n = f.begin_round(t0);
        f.on_answer(ip("192.0.2.12"), n, VOUCH).expect("counted");
        f.reset();
        assert_eq!(
            f.on_answer(ip("192.0.2.13"), n, VOUCH),
            Ok(Verdict::Duplicate)
        );
        assert_eq!(f.confirmed(), None);
        assert_eq!(f.silent(t0), Vec::<IpAddr>::new());
    }

    #[test]
    fn a_peer_list_change_drops_rounds_asked_of_others() {
        let t0 = Instant::now();
        let mut f = two_peers();
        let n = f.begin_round(t0);
        f.on_answer(ip("192.0.2.12"), n, VOUCH).expect("counted");
        f.set_peers([ip("192.0.2.12")]);
        assert_eq!(
            f.on_answer(ip("192.0.2.12"), n, VOUCH),
            Err(Ignored::NoRound)
        );
        assert_eq!(f.confirmed(), None);
    }
}
