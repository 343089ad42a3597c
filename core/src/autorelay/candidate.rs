//! One relay candidate: where it came from, what we know of it, and its score.

use std::time::{Duration, Instant};

use multiaddr::Multiaddr;
use smallvec::SmallVec;

use crate::identity::PeerId;

/// Most addresses remembered per candidate (the rest of a longer list is ignored).
pub const MAX_ADDRS_PER_CANDIDATE: usize = 8;
/// Most distinct sources remembered per candidate.
const MAX_SOURCES: usize = 4;
/// Weight of a new RTT sample in the moving average, as 1/`RTT_EWMA_DIV` (TCP's SRTT uses 1/8).
const RTT_EWMA_DIV: u32 = 8;

/// Where a relay candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandidateSource {
    /// The node's bootstrap list. Pinned: never evicted from the pool.
    Bootstrap,
    /// A static (manually configured) relay list. Pinned: never evicted from the pool.
    Static,
    /// A connected peer whose identify lists `/libp2p/circuit/relay/0.2.0/hop`.
    IdentifiedHop,
    /// Any other discovery mechanism (for example DHT provider records under `relay/1.0.0`).
    Other(&'static str),
}

impl CandidateSource {
    /// Whether candidates from this source stay in the pool when it is full.
    #[must_use]
    pub const fn is_pinned(self) -> bool {
        matches!(self, Self::Bootstrap | Self::Static)
    }
}

/// Whether a candidate speaks the HOP protocol, as far as we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopSupport {
    /// Not yet known; candidates are assumed to speak HOP until shown otherwise.
    Unknown,
    /// Identify listed HOP, or a reservation succeeded.
    Yes,
}

/// Why an attempt (dial, then reserve) on a candidate was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// To fill a slot below `min_relays`.
    Fill,
    /// To replace a held relay by a better one.
    Upgrade {
        /// The held relay to release once this one holds a reservation.
        replacing: PeerId,
    },
}

/// Where a candidate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not connected, nothing in flight.
    Idle,
    /// Connected, no reservation, nothing in flight.
    Connected,
    /// We asked the node to dial it.
    Dialing { deadline: Instant, purpose: Purpose },
    /// We asked the node to reserve on it.
    Reserving { deadline: Instant, purpose: Purpose },
    /// We hold a reservation on it.
    Held { since: Instant, expire: Instant },
}

/// Where a candidate stands, as reported by [`super::AutoRelay::candidates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateState {
    /// Not connected, nothing in flight.
    Idle,
    /// Connected, no reservation, nothing in flight.
    Connected,
    /// A dial is in flight.
    Dialing,
    /// A RESERVE is in flight.
    Reserving,
    /// A reservation is held.
    Held,
}

/// A candidate's score: lower is better. It is the smoothed RTT in microseconds, inflated by
/// recent failures and refusals, so it reads roughly as "effective RTT".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Score(pub u64);

/// A read-only view of one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateView {
    /// The candidate.
    pub peer: PeerId,
    /// Its sources, first-seen first.
    pub sources: Vec<CandidateSource>,
    /// Where it stands.
    pub state: CandidateState,
    /// Whether it is known to speak HOP.
    pub hop: HopSupport,
    /// Smoothed RTT, if measured.
    pub rtt: Option<Duration>,
    /// Its score (lower is better).
    pub score: Score,
    /// Consecutive failures (dial, reservation errors, losses) since the last reservation.
    pub failures: u32,
    /// Consecutive refusals since the last reservation.
    pub refusals: u32,
    /// No dial or reserve is started before this instant (backoff or shun), if set.
    pub retry_at: Option<Instant>,
    /// Whether a refusal (not a failure) set `retry_at`.
    pub shunned: bool,
}

/// What AutoRelay knows about one candidate.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) peer: PeerId,
    pub(crate) addrs: SmallVec<[Multiaddr; 2]>,
    pub(crate) sources: SmallVec<[CandidateSource; 2]>,
    pub(crate) hop: HopSupport,
    pub(crate) phase: Phase,
    pub(crate) rtt: Option<Duration>,
    pub(crate) failures: u32,
    pub(crate) refusals: u32,
    pub(crate) retry_at: Option<Instant>,
    pub(crate) shunned: bool,
    pub(crate) ever_connected: bool,
    pub(crate) circuit_addrs: SmallVec<[Multiaddr; 2]>,
}

impl Candidate {
    pub(crate) fn new(peer: PeerId, source: CandidateSource) -> Self {
        let mut sources = SmallVec::new();
        sources.push(source);
        Self {
            peer,
            addrs: SmallVec::new(),
            sources,
            hop: HopSupport::Unknown,
            phase: Phase::Idle,
            rtt: None,
            failures: 0,
            refusals: 0,
            retry_at: None,
            shunned: false,
            ever_connected: false,
            circuit_addrs: SmallVec::new(),
        }
    }

    /// Records a source (bounded; duplicates ignored).
    pub(crate) fn add_source(&mut self, source: CandidateSource) {
        if !self.sources.contains(&source) && self.sources.len() < MAX_SOURCES {
            self.sources.push(source);
        }
    }

    /// Merges newly learnt addresses (bounded; duplicates ignored).
    pub(crate) fn merge_addrs(&mut self, addrs: &[Multiaddr]) {
        for addr in addrs {
            if self.addrs.len() >= MAX_ADDRS_PER_CANDIDATE {
                break;
            }
            if !self.addrs.contains(addr) {
                self.addrs.push(addr.clone());
            }
        }
    }

    pub(crate) fn is_pinned(&self) -> bool {
        self.sources.iter().any(|s| s.is_pinned())
    }

    pub(crate) fn is_held(&self) -> bool {
        matches!(self.phase, Phase::Held { .. })
    }

    pub(crate) fn purpose(&self) -> Option<Purpose> {
        match self.phase {
            Phase::Dialing { purpose, .. } | Phase::Reserving { purpose, .. } => Some(purpose),
            _ => None,
        }
    }

    /// Whether backoff or a shun holds it back at `now`.
    pub(crate) fn is_waiting(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|at| at > now)
    }

    /// Whether an attempt may start on it at `now`.
    pub(crate) fn is_eligible(&self, now: Instant) -> bool {
        let idle = match self.phase {
            Phase::Connected => true,
            Phase::Idle => !self.addrs.is_empty(),
            _ => false,
        };
        idle && !self.is_waiting(now)
    }

    /// Folds an RTT sample into the moving average.
    pub(crate) fn sample_rtt(&mut self, sample: Duration) {
        self.rtt = Some(match self.rtt {
            None => sample,
            Some(avg) => (avg * (RTT_EWMA_DIV - 1) + sample) / RTT_EWMA_DIV,
        });
    }

    /// The score: smoothed RTT (or `unknown_rtt`), plus 50 % per recent failure and 100 % per
    /// recent refusal (a load signal).
    pub(crate) fn score(&self, unknown_rtt: Duration) -> Score {
        let rtt = u64::try_from(self.rtt.unwrap_or(unknown_rtt).as_micros()).unwrap_or(u64::MAX);
        let rtt = rtt.max(1);
        let factor = 100u64
            .saturating_add(50u64.saturating_mul(u64::from(self.failures)))
            .saturating_add(100u64.saturating_mul(u64::from(self.refusals)));
        Score(rtt.saturating_mul(factor) / 100)
    }

    pub(crate) fn state(&self) -> CandidateState {
        match self.phase {
            Phase::Idle => CandidateState::Idle,
            Phase::Connected => CandidateState::Connected,
            Phase::Dialing { .. } => CandidateState::Dialing,
            Phase::Reserving { .. } => CandidateState::Reserving,
            Phase::Held { .. } => CandidateState::Held,
        }
    }

    pub(crate) fn view(&self, unknown_rtt: Duration) -> CandidateView {
        CandidateView {
            peer: self.peer,
            sources: self.sources.to_vec(),
            state: self.state(),
            hop: self.hop,
            rtt: self.rtt,
            score: self.score(unknown_rtt),
            failures: self.failures,
            refusals: self.refusals,
            retry_at: self.retry_at,
            shunned: self.shunned,
        }
    }
}
