//! [`CandidatePool`]: the bounded set of relay candidates, and the memory of peers found not to
//! speak HOP.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use multiaddr::Multiaddr;

use super::candidate::{Candidate, CandidateSource, HopSupport};
use crate::identity::PeerId;

/// What [`super::AutoRelay::add_candidate`] did with a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum AddOutcome {
    /// A new candidate entered the pool.
    Added,
    /// The candidate was known; its addresses and sources were merged.
    Updated,
    /// A new candidate entered the pool after evicting this one.
    AddedEvicting(PeerId),
    /// The pool is full of candidates that may not be evicted for this one; it was ignored.
    PoolFull,
    /// The peer was recently found not to speak HOP; it was ignored.
    NotHop,
}

/// The bounded pool of relay candidates.
///
/// When full, a new candidate evicts the worst unpinned candidate that is neither held nor in
/// flight, preferring shunned ones, then ones never connected, then the highest score. A new
/// unpinned candidate may only evict shunned or never-connected ones; a pinned (bootstrap or
/// static) one may evict any unpinned one. Pinned candidates are never evicted.
#[derive(Debug)]
pub struct CandidatePool {
    capacity: usize,
    by_peer: BTreeMap<PeerId, Candidate>,
    /// Peers that do not speak HOP, with the instant until which re-adding them is refused.
    not_hop: BTreeMap<PeerId, Instant>,
}

impl CandidatePool {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            by_peer: BTreeMap::new(),
            not_hop: BTreeMap::new(),
        }
    }

    /// Most candidates held.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Candidates held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// Whether there are no candidates.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    /// Whether `peer` is a candidate.
    #[must_use]
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.by_peer.contains_key(peer)
    }

    /// Peers remembered as not speaking HOP (bounded by the capacity).
    #[must_use]
    pub fn not_hop_len(&self) -> usize {
        self.not_hop.len()
    }

    pub(crate) fn get(&self, peer: &PeerId) -> Option<&Candidate> {
        self.by_peer.get(peer)
    }

    pub(crate) fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Candidate> {
        self.by_peer.get_mut(peer)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Candidate> {
        self.by_peer.values()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Candidate> {
        self.by_peer.values_mut()
    }

    /// Adds or updates a candidate.
    pub(crate) fn add(
        &mut self,
        now: Instant,
        peer: PeerId,
        addrs: &[Multiaddr],
        source: CandidateSource,
        unknown_rtt: Duration,
    ) -> AddOutcome {
        if let Some(c) = self.by_peer.get_mut(&peer) {
            c.add_source(source);
            c.merge_addrs(addrs);
            if source == CandidateSource::IdentifiedHop {
                c.hop = HopSupport::Yes;
            }
            return AddOutcome::Updated;
        }
        match self.not_hop.get(&peer) {
            // Fresh positive evidence overrides the memory.
            Some(_) if source == CandidateSource::IdentifiedHop => {
                self.not_hop.remove(&peer);
            }
            Some(&until) if until > now => return AddOutcome::NotHop,
            Some(_) => {
                self.not_hop.remove(&peer);
            }
            None => {}
        }
        let mut evicted = None;
        if self.by_peer.len() >= self.capacity {
            let Some(victim) = self.victim(now, source.is_pinned(), unknown_rtt) else {
                return AddOutcome::PoolFull;
            };
            self.by_peer.remove(&victim);
            evicted = Some(victim);
        }
        let mut c = Candidate::new(peer, source);
        c.merge_addrs(addrs);
        if source == CandidateSource::IdentifiedHop {
            c.hop = HopSupport::Yes;
        }
        self.by_peer.insert(peer, c);
        match evicted {
            Some(victim) => AddOutcome::AddedEvicting(victim),
            None => AddOutcome::Added,
        }
    }

    /// The candidate to evict for a newcomer, if any may be.
    fn victim(&self, now: Instant, for_pinned: bool, unknown_rtt: Duration) -> Option<PeerId> {
        self.by_peer
            .values()
            .filter(|c| !c.is_pinned() && !c.is_held() && c.purpose().is_none())
            .map(|c| {
                let class = if c.shunned && c.is_waiting(now) {
                    0u8
                } else if !c.ever_connected {
                    1
                } else {
                    2
                };
                (class, std::cmp::Reverse(c.score(unknown_rtt)), c.peer)
            })
            .filter(|&(class, _, _)| for_pinned || class < 2)
            .min()
            .map(|(_, _, peer)| peer)
    }

    /// Removes `peer` and remembers until `until` that it does not speak HOP.
    pub(crate) fn drop_not_hop(&mut self, now: Instant, peer: PeerId, until: Instant) {
        self.by_peer.remove(&peer);
        self.not_hop.retain(|_, &mut t| t > now);
        if self.not_hop.len() >= self.capacity {
            // Forget the one whose memory ends first.
            if let Some(oldest) = self
                .not_hop
                .iter()
                .min_by_key(|&(p, &t)| (t, *p))
                .map(|(p, _)| *p)
            {
                self.not_hop.remove(&oldest);
            }
        }
        self.not_hop.insert(peer, until);
    }
}
