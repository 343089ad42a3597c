//! AutoRelay (DESIGN §5.2): discovery, scoring, multiple reservations and immediate failover, as
//! a pure state machine.
//!
//! [`AutoRelay`] keeps `min_relays` reservations on distinct relays (never more than
//! `max_relays` held or being acquired). It performs no I/O: the node feeds it what happened and
//! carries out what it asks. Like [`crate::node::Node`], its methods come in four kinds:
//!
//! - **inputs** (`add_candidate`, `on_*`, `handle_timeout`), each with `now`: a candidate was
//!   found, a dial or reservation finished, an RTT was measured, a connection was lost, a
//!   deadline passed. Input time must be monotonic.
//! - **outputs**: [`AutoRelay::poll_action`] until `None`, then [`AutoRelay::poll_timeout`]
//!   ("call `handle_timeout` then"). Drain the actions after every input; they are in the
//!   order they must be carried out.
//! - **getters**: [`AutoRelay::held_relays`], [`AutoRelay::candidates`],
//!   [`AutoRelay::circuit_addrs`], [`AutoRelay::pool`].
//!
//! Every [`AutoRelayAction::Dial`] is answered by `on_connected` or `on_dial_failed`, every
//! [`AutoRelayAction::Reserve`] by `on_reservation_accepted`, `on_reservation_refused`,
//! `on_reservation_failed` or `on_hop_unsupported`. An unanswered one times out after
//! `attempt_timeout` and counts as a failure.
//!
//! # Selection
//!
//! - **Score** ([`Score`], lower is better): the smoothed RTT (EWMA, 1/8 per sample), inflated
//!   by 50 % per recent failure and 100 % per recent refusal. A reservation resets both.
//! - **Backoff**: each failure (dial, reservation error, lost connection, timeout) holds the
//!   candidate back for `backoff_base × 2^(n-1)` (capped at `backoff_max`, half of it jittered
//!   from the seeded RNG). Each refusal (RESERVATION_REFUSED, RESOURCE_LIMIT_EXCEEDED) shuns it
//!   the same way on the `shun_base..shun_max` scale; PERMISSION_DENIED shuns for `shun_max`.
//!   Nothing is blacklisted for ever: a restarted relay comes back when its backoff ends.
//! - **Choice**: among eligible candidates, one of the `best_few` best whose score is within
//!   `tie_band_percent` of the best is drawn at random, so clients with the same view spread.
//! - **Failover**: a lost, drained, refused or expired reservation is withdrawn from the
//!   advertised addresses and replaced at once, at the same `now`, by dials or reservations in
//!   parallel for as many slots as are missing.
//! - **Hysteresis**: a held relay is replaced by a better candidate only if the newcomer scores
//!   at least `switch_margin_percent` better, the held one was kept `min_dwell`, and fewer
//!   than `max_switches_per_hour` voluntary switches started in the last hour. The newcomer
//!   reserves first; only once it holds a reservation is the old relay withdrawn
//!   ([`AutoRelayAction::AddrsChanged`]) and then released ([`AutoRelayAction::Release`]), so
//!   the advertised set never has a gap.
//! - **Discovery**: bootstrap and static candidates are pinned in the bounded
//!   [`CandidatePool`]; peers whose identify lists HOP join it; peers found not to speak HOP
//!   (identify without it, or HOP refused by multistream-select) are dropped and not re-added
//!   from lists for `not_hop_memory`.

mod action;
mod backoff;
mod candidate;
mod config;
mod pool;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use multiaddr::{Multiaddr, Protocol};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::RngCore;
use smallvec::SmallVec;

pub use action::{AutoRelayAction, SwitchReason};
pub use candidate::{
    CandidateSource, CandidateState, CandidateView, HopSupport, MAX_ADDRS_PER_CANDIDATE, Score,
};
pub use config::{AutoRelayConfig, InvalidAutoRelayConfig, MAX_POOL_CAPACITY, MAX_RELAYS_LIMIT};
pub use pool::{AddOutcome, CandidatePool};

use candidate::{Candidate, Phase, Purpose};

use crate::identity::PeerId;
use crate::relay::wire::Status;

/// The window of the switch cap.
const SWITCH_WINDOW: Duration = Duration::from_secs(60 * 60);

/// A reservation AutoRelay holds, as reported by [`AutoRelay::held_relays`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRelay {
    /// The relay.
    pub peer: PeerId,
    /// When the reservation was first granted.
    pub since: Instant,
    /// When it expires unless renewed.
    pub expire: Instant,
    /// Our circuit addresses through it.
    pub circuit_addrs: Vec<Multiaddr>,
}

/// The AutoRelay state machine; see the [module documentation](self) for the contract.
#[derive(Debug)]
pub struct AutoRelay {
    config: AutoRelayConfig,
    rng: ChaCha20Rng,
    pool: CandidatePool,
    actions: VecDeque<AutoRelayAction>,
    /// Held relays lost and not yet replaced, oldest first (at most `max_relays`), so the
    /// replacement's [`AutoRelayAction::Switched`] names its predecessor.
    pending_losses: VecDeque<(PeerId, SwitchReason)>,
    /// When voluntary switches started within the last hour (at most `max_switches_per_hour`).
    switch_starts: VecDeque<Instant>,
    /// The circuit addresses last announced with [`AutoRelayAction::AddrsChanged`].
    advertised: Vec<Multiaddr>,
    /// The latest input time.
    now: Option<Instant>,
}

impl AutoRelay {
    /// A machine with no candidates, using `rng` (a seeded per-purpose generator, see
    /// [`crate::seed::SeedTree::rng`]) for jitter and tie-breaking.
    pub fn new(config: AutoRelayConfig, rng: ChaCha20Rng) -> Result<Self, InvalidAutoRelayConfig> {
        config.validate()?;
        Ok(Self {
            pool: CandidatePool::new(config.pool_capacity),
            pending_losses: VecDeque::with_capacity(config.max_relays),
            switch_starts: VecDeque::new(),
            config,
            rng,
            actions: VecDeque::new(),
            advertised: Vec::new(),
            now: None,
        })
    }

    // ---------------------------------------------------------------- inputs

    /// A relay candidate was found at `addrs` (merged with what is known; at most
    /// [`MAX_ADDRS_PER_CANDIDATE`] are kept).
    pub fn add_candidate(
        &mut self,
        now: Instant,
        peer: PeerId,
        addrs: &[Multiaddr],
        source: CandidateSource,
    ) -> AddOutcome {
        self.begin(now);
        let outcome = self
            .pool
            .add(now, peer, addrs, source, self.config.unknown_rtt);
        self.plan(now);
        outcome
    }

    /// Several candidates found at once (a bootstrap or static list, a DHT query): all are
    /// added before any is chosen, so the choice is drawn among all of them. Returns one
    /// outcome per candidate, in order.
    #[must_use]
    pub fn add_candidates<'a>(
        &mut self,
        now: Instant,
        candidates: impl IntoIterator<Item = (PeerId, &'a [Multiaddr])>,
        source: CandidateSource,
    ) -> Vec<AddOutcome> {
        self.begin(now);
        let unknown = self.config.unknown_rtt;
        let outcomes = candidates
            .into_iter()
            .map(|(peer, addrs)| self.pool.add(now, peer, addrs, source, unknown))
            .collect();
        self.plan(now);
        outcomes
    }

    /// A connection to `peer` is up (ours after a [`AutoRelayAction::Dial`], or any other),
    /// with its handshake RTT.
    pub fn on_connected(&mut self, now: Instant, peer: PeerId, rtt: Duration) {
        self.begin(now);
        let deadline = now + self.config.attempt_timeout;
        if let Some(c) = self.pool.get_mut(&peer) {
            c.ever_connected = true;
            c.sample_rtt(rtt);
            match c.phase {
                Phase::Idle => c.phase = Phase::Connected,
                Phase::Dialing { purpose, .. } => {
                    c.phase = Phase::Reserving { deadline, purpose };
                    self.actions.push_back(AutoRelayAction::Reserve { peer });
                }
                Phase::Connected | Phase::Reserving { .. } | Phase::Held { .. } => {}
            }
        }
        self.plan(now);
    }

    /// Identify completed on a live connection to `peer`. If it lists HOP, an unknown peer
    /// becomes a candidate (source [`CandidateSource::IdentifiedHop`]) at `listen_addrs`. If it
    /// does not, the candidate is dropped, unless a reservation on it is held or in flight (the
    /// HOP exchange itself then decides).
    pub fn on_identified(
        &mut self,
        now: Instant,
        peer: PeerId,
        supports_hop: bool,
        listen_addrs: &[Multiaddr],
    ) {
        self.begin(now);
        if supports_hop {
            let _outcome = self.pool.add(
                now,
                peer,
                listen_addrs,
                CandidateSource::IdentifiedHop,
                self.config.unknown_rtt,
            );
            if let Some(c) = self.pool.get_mut(&peer) {
                c.ever_connected = true;
                if c.phase == Phase::Idle {
                    c.phase = Phase::Connected;
                }
            }
        } else if let Some(c) = self.pool.get(&peer)
            && !matches!(c.phase, Phase::Held { .. } | Phase::Reserving { .. })
        {
            self.pool
                .drop_not_hop(now, peer, now + self.config.not_hop_memory);
        }
        self.plan(now);
    }

    /// `peer` answered the HOP protocol with multistream-select `na`: it is not a relay. The
    /// candidate is dropped (a held reservation on it is treated as lost).
    pub fn on_hop_unsupported(&mut self, now: Instant, peer: PeerId) {
        self.begin(now);
        if let Some(c) = self.pool.get_mut(&peer) {
            if c.is_held() {
                c.phase = Phase::Connected;
                self.lose(peer, SwitchReason::ReservationFailed);
            }
            self.pool
                .drop_not_hop(now, peer, now + self.config.not_hop_memory);
            self.publish_addrs();
        }
        self.plan(now);
    }

    /// A new RTT measurement to `peer` (QUIC RTT estimate or ping).
    pub fn on_rtt_sample(&mut self, now: Instant, peer: PeerId, rtt: Duration) {
        self.begin(now);
        if let Some(c) = self.pool.get_mut(&peer) {
            c.sample_rtt(rtt);
        }
        self.plan(now);
    }

    /// `peer` granted (or renewed) our reservation until `expire`, reachable at
    /// `circuit_addrs` (at most [`MAX_ADDRS_PER_CANDIDATE`] are kept; if empty, they are derived
    /// from the candidate's addresses). Reports on peers that are not candidates are ignored.
    pub fn on_reservation_accepted(
        &mut self,
        now: Instant,
        peer: PeerId,
        expire: Instant,
        circuit_addrs: &[Multiaddr],
    ) {
        self.begin(now);
        let (held, _, attempts) = self.counts();
        // Adopting an unasked reservation must leave room for the attempts in flight.
        let room = held + attempts < self.config.max_relays;
        let Some(c) = self.pool.get_mut(&peer) else {
            self.plan(now);
            return;
        };
        c.hop = HopSupport::Yes;
        c.ever_connected = true;
        c.failures = 0;
        c.refusals = 0;
        c.retry_at = None;
        c.shunned = false;
        c.circuit_addrs = bounded_circuit_addrs(peer, circuit_addrs, &c.addrs);
        match c.phase {
            Phase::Held { since, .. } => {
                c.phase = Phase::Held { since, expire };
                self.publish_addrs();
            }
            Phase::Dialing { purpose, .. } | Phase::Reserving { purpose, .. } => {
                c.phase = Phase::Held { since: now, expire };
                self.publish_addrs();
                self.took(peer, purpose);
            }
            Phase::Idle | Phase::Connected if room => {
                // A reservation we did not ask for (or whose attempt timed out): keep it.
                c.phase = Phase::Held { since: now, expire };
                self.publish_addrs();
                self.took(peer, Purpose::Fill);
            }
            Phase::Idle | Phase::Connected => {
                c.phase = Phase::Connected;
                c.circuit_addrs.clear();
                self.actions.push_back(AutoRelayAction::Release { peer });
            }
        }
        self.plan(now);
    }

    /// `peer` refused our RESERVE (or its renewal) with `status`. Load and policy refusals
    /// (RESERVATION_REFUSED, RESOURCE_LIMIT_EXCEEDED, PERMISSION_DENIED) shun it; any other
    /// status counts as a failure.
    pub fn on_reservation_refused(&mut self, now: Instant, peer: PeerId, status: Status) {
        self.begin(now);
        let shun = match status {
            Status::ReservationRefused | Status::ResourceLimitExceeded => Some(false),
            Status::PermissionDenied => Some(true),
            _ => None,
        };
        if let Some(c) = self.pool.get(&peer)
            && (c.is_held() || matches!(c.phase, Phase::Reserving { .. }))
        {
            match shun {
                Some(longest) => self.shun(now, peer, longest),
                None => self.fail(now, peer),
            }
            self.end_reservation(peer, SwitchReason::Refused);
        }
        self.plan(now);
    }

    /// Our RESERVE (or its renewal) on `peer` failed without a status (stream error, bad
    /// voucher, malformed reply). Counts as a failure.
    pub fn on_reservation_failed(&mut self, now: Instant, peer: PeerId) {
        self.begin(now);
        if let Some(c) = self.pool.get(&peer)
            && (c.is_held() || matches!(c.phase, Phase::Reserving { .. }))
        {
            self.fail(now, peer);
            self.end_reservation(peer, SwitchReason::ReservationFailed);
        }
        self.plan(now);
    }

    /// The connection to `peer` closed. `drained` is true when the relay closed it with the
    /// drain (shutdown) code. A held relay is withdrawn and replaced at once; either way the
    /// relay is retried only after backoff.
    pub fn on_connection_lost(&mut self, now: Instant, peer: PeerId, drained: bool) {
        self.begin(now);
        if let Some(c) = self.pool.get_mut(&peer) {
            match c.phase {
                Phase::Idle => {}
                Phase::Connected => c.phase = Phase::Idle,
                Phase::Dialing { .. } | Phase::Reserving { .. } => {
                    c.phase = Phase::Idle;
                    self.fail(now, peer);
                }
                Phase::Held { .. } => {
                    c.phase = Phase::Idle;
                    c.circuit_addrs.clear();
                    self.fail(now, peer);
                    let why = if drained {
                        SwitchReason::Drained
                    } else {
                        SwitchReason::ConnectionLost
                    };
                    self.lose(peer, why);
                    self.publish_addrs();
                }
            }
        }
        self.plan(now);
    }

    /// Our [`AutoRelayAction::Dial`] to `peer` failed. Counts as a failure.
    pub fn on_dial_failed(&mut self, now: Instant, peer: PeerId) {
        self.begin(now);
        if let Some(c) = self.pool.get_mut(&peer)
            && matches!(c.phase, Phase::Dialing { .. })
        {
            c.phase = Phase::Idle;
            self.fail(now, peer);
        }
        self.plan(now);
    }

    /// Time passed: unanswered attempts time out, unrenewed reservations expire, backoffs end.
    /// Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.begin(now);
        self.plan(now);
    }

    // ---------------------------------------------------------------- outputs

    /// The next action for the node, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<AutoRelayAction> {
        self.actions.pop_front()
    }

    /// When [`AutoRelay::handle_timeout`] should next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let now = self.now?;
        let mut next: Option<Instant> = None;
        let mut consider = |at: Instant| {
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        };
        let upgrades = self.config.max_switches_per_hour > 0;
        for c in self.pool.iter() {
            match c.phase {
                Phase::Dialing { deadline, .. } | Phase::Reserving { deadline, .. } => {
                    consider(deadline);
                }
                Phase::Held { since, expire } => {
                    consider(expire);
                    if upgrades {
                        consider(since + self.config.min_dwell);
                    }
                }
                Phase::Idle | Phase::Connected => {}
            }
            if let Some(at) = c.retry_at {
                consider(at);
            }
        }
        if self.switch_starts.len() >= self.cap()
            && let Some(&oldest) = self.switch_starts.front()
        {
            consider(oldest + SWITCH_WINDOW);
        }
        next
    }

    // ---------------------------------------------------------------- getters

    /// The relays we hold reservations on, in peer order.
    #[must_use]
    pub fn held_relays(&self) -> Vec<HeldRelay> {
        self.pool
            .iter()
            .filter_map(|c| match c.phase {
                Phase::Held { since, expire } => Some(HeldRelay {
                    peer: c.peer,
                    since,
                    expire,
                    circuit_addrs: c.circuit_addrs.to_vec(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Every candidate with its state and score, in peer order.
    #[must_use]
    pub fn candidates(&self) -> Vec<CandidateView> {
        self.pool
            .iter()
            .map(|c| c.view(self.config.unknown_rtt))
            .collect()
    }

    /// One candidate, if known.
    #[must_use]
    pub fn candidate(&self, peer: &PeerId) -> Option<CandidateView> {
        self.pool.get(peer).map(|c| c.view(self.config.unknown_rtt))
    }

    /// The circuit addresses currently advertised (the last [`AutoRelayAction::AddrsChanged`]).
    #[must_use]
    pub fn circuit_addrs(&self) -> &[Multiaddr] {
        &self.advertised
    }

    /// The candidate pool.
    #[must_use]
    pub fn pool(&self) -> &CandidatePool {
        &self.pool
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &AutoRelayConfig {
        &self.config
    }

    // ---------------------------------------------------------------- internals

    /// Records the input time and settles deadlines that have passed.
    fn begin(&mut self, now: Instant) {
        let now = self.now.map_or(now, |last| last.max(now));
        self.now = Some(now);
        let mut timed_out: SmallVec<[PeerId; 4]> = SmallVec::new();
        let mut expired: SmallVec<[PeerId; 4]> = SmallVec::new();
        for c in self.pool.iter_mut() {
            match c.phase {
                Phase::Dialing { deadline, .. } if deadline <= now => {
                    c.phase = Phase::Idle;
                    timed_out.push(c.peer);
                }
                Phase::Reserving { deadline, .. } if deadline <= now => {
                    c.phase = Phase::Connected;
                    timed_out.push(c.peer);
                }
                Phase::Held { expire, .. } if expire <= now => {
                    c.phase = Phase::Connected;
                    c.circuit_addrs.clear();
                    expired.push(c.peer);
                }
                _ => {}
            }
        }
        for peer in timed_out {
            self.fail(now, peer);
        }
        for peer in &expired {
            self.lose(*peer, SwitchReason::Expired);
        }
        if !expired.is_empty() {
            self.publish_addrs();
        }
        while self
            .switch_starts
            .front()
            .is_some_and(|&at| at + SWITCH_WINDOW <= now)
        {
            self.switch_starts.pop_front();
        }
    }

    fn cap(&self) -> usize {
        usize::try_from(self.config.max_switches_per_hour).unwrap_or(usize::MAX)
    }

    /// A reservation on `peer` (held or in flight) ended by refusal or failure; the connection
    /// stays up.
    fn end_reservation(&mut self, peer: PeerId, why: SwitchReason) {
        let Some(c) = self.pool.get_mut(&peer) else {
            return;
        };
        let was_held = c.is_held();
        c.phase = Phase::Connected;
        c.circuit_addrs.clear();
        if was_held {
            self.lose(peer, why);
            self.publish_addrs();
        }
    }

    /// Bookkeeping for a held relay that is gone: remember it for the replacement's report, and
    /// turn an upgrade that was to replace it into a plain fill.
    fn lose(&mut self, peer: PeerId, why: SwitchReason) {
        if self.pending_losses.len() >= self.config.max_relays {
            self.pending_losses.pop_front();
        }
        self.pending_losses.push_back((peer, why));
        for c in self.pool.iter_mut() {
            match &mut c.phase {
                Phase::Dialing { purpose, .. } | Phase::Reserving { purpose, .. }
                    if *purpose == (Purpose::Upgrade { replacing: peer }) =>
                {
                    *purpose = Purpose::Fill;
                }
                _ => {}
            }
        }
    }

    /// `peer` now holds a reservation acquired for `purpose`: report it, and release the relay
    /// it replaces.
    fn took(&mut self, peer: PeerId, purpose: Purpose) {
        let replacing = match purpose {
            Purpose::Upgrade { replacing } => self
                .pool
                .get(&replacing)
                .is_some_and(Candidate::is_held)
                .then_some(replacing),
            Purpose::Fill => None,
        };
        if let Some(old) = replacing {
            self.actions.push_back(AutoRelayAction::Switched {
                from: Some(old),
                to: peer,
                why: SwitchReason::Better,
            });
            if let Some(c) = self.pool.get_mut(&old) {
                c.phase = Phase::Connected;
                c.circuit_addrs.clear();
            }
            // Withdraw first, then release: never advertise a dead address.
            self.publish_addrs();
            self.actions
                .push_back(AutoRelayAction::Release { peer: old });
            return;
        }
        let (from, why) = match self.pending_losses.pop_front() {
            Some((from, why)) => (Some(from), why),
            None => (None, SwitchReason::Initial),
        };
        self.actions.push_back(AutoRelayAction::Switched {
            from,
            to: peer,
            why,
        });
    }

    /// A failure on `peer`: exponential backoff.
    fn fail(&mut self, now: Instant, peer: PeerId) {
        let (base, max) = (self.config.backoff_base, self.config.backoff_max);
        if let Some(c) = self.pool.get_mut(&peer) {
            c.failures = c.failures.saturating_add(1);
            let until = now + backoff::jittered(&mut self.rng, base, max, c.failures);
            if c.retry_at.is_none_or(|at| at < until) {
                c.retry_at = Some(until);
                c.shunned = false;
            }
        }
    }

    /// A refusal from `peer`: shun it, for `shun_max` if `longest`.
    fn shun(&mut self, now: Instant, peer: PeerId, longest: bool) {
        let (base, max) = (self.config.shun_base, self.config.shun_max);
        if let Some(c) = self.pool.get_mut(&peer) {
            c.refusals = c.refusals.saturating_add(1);
            let d = if longest {
                max
            } else {
                backoff::jittered(&mut self.rng, base, max, c.refusals)
            };
            let until = now + d;
            if c.retry_at.is_none_or(|at| at < until) {
                c.retry_at = Some(until);
            }
            c.shunned = true;
        }
    }

    /// Announces the circuit addresses of the held relays if they changed.
    fn publish_addrs(&mut self) {
        let addrs: Vec<Multiaddr> = self
            .pool
            .iter()
            .filter(|c| c.is_held())
            .flat_map(|c| c.circuit_addrs.iter().cloned())
            .collect();
        if addrs == self.advertised {
            return;
        }
        self.advertised.clone_from(&addrs);
        // Consecutive announcements supersede each other; keep the queue bounded.
        if let Some(AutoRelayAction::AddrsChanged { .. }) = self.actions.back() {
            self.actions.pop_back();
        }
        self.actions
            .push_back(AutoRelayAction::AddrsChanged { addrs });
    }

    /// Starts attempts: fills below `min_relays` first, then at most one voluntary upgrade.
    fn plan(&mut self, now: Instant) {
        let now = self.now.map_or(now, |last| last.max(now));
        // Each round starts one attempt or stops; `max_relays` rounds are always enough.
        for _ in 0..self.config.max_relays {
            let (held, fills, attempts) = self.counts();
            if held + fills >= self.config.min_relays || held + attempts >= self.config.max_relays {
                break;
            }
            let Some(peer) = self.choose(now, None) else {
                break;
            };
            self.start(now, peer, Purpose::Fill);
        }
        self.plan_upgrade(now);
    }

    /// (held, fill attempts, all attempts).
    fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for c in self.pool.iter() {
            match c.purpose() {
                Some(Purpose::Fill) => {
                    counts.1 += 1;
                    counts.2 += 1;
                }
                Some(Purpose::Upgrade { .. }) => counts.2 += 1,
                None if c.is_held() => counts.0 += 1,
                None => {}
            }
        }
        counts
    }

    fn plan_upgrade(&mut self, now: Instant) {
        if self.switch_starts.len() >= self.cap() {
            return;
        }
        let (held, fills, attempts) = self.counts();
        if held < self.config.min_relays
            || attempts > fills
            || held + attempts >= self.config.max_relays
        {
            return;
        }
        let unknown = self.config.unknown_rtt;
        let dwell = self.config.min_dwell;
        let Some((worst_score, worst)) = self
            .pool
            .iter()
            .filter_map(|c| match c.phase {
                Phase::Held { since, .. } if since + dwell <= now => {
                    Some((c.score(unknown), c.peer))
                }
                _ => None,
            })
            .max()
        else {
            return;
        };
        let margin = u64::from(100 - self.config.switch_margin_percent);
        let threshold = Score(worst_score.0.saturating_mul(margin) / 100);
        let Some(peer) = self.choose(now, Some(threshold)) else {
            return;
        };
        self.switch_starts.push_back(now);
        self.start(now, peer, Purpose::Upgrade { replacing: worst });
    }

    /// Draws one of the best few eligible candidates scoring at most `at_most`. Equal scores
    /// are ordered at random too, so clients do not agree on a favourite by peer id.
    fn choose(&mut self, now: Instant, at_most: Option<Score>) -> Option<PeerId> {
        let unknown = self.config.unknown_rtt;
        let mut ranked: SmallVec<[(Score, u64, PeerId); 16]> = SmallVec::new();
        for c in self.pool.iter() {
            let score = c.score(unknown);
            if c.is_eligible(now) && at_most.is_none_or(|max| score <= max) {
                ranked.push((score, 0, c.peer));
            }
        }
        for entry in &mut ranked {
            entry.1 = self.rng.next_u64();
        }
        ranked.sort_unstable();
        let &(best, _, _) = ranked.first()?;
        let band = best
            .0
            .saturating_mul(100 + u64::from(self.config.tie_band_percent))
            / 100;
        let few = ranked
            .iter()
            .take(self.config.best_few)
            .take_while(|&&(s, _, _)| s.0 <= band)
            .count();
        let pick = backoff::uniform(&mut self.rng, u64::try_from(few).unwrap_or(1));
        let index = usize::try_from(pick).unwrap_or(0);
        ranked.get(index).map(|&(_, _, peer)| peer)
    }

    /// Starts an attempt on an eligible candidate: reserve if connected, else dial.
    fn start(&mut self, now: Instant, peer: PeerId, purpose: Purpose) {
        let deadline = now + self.config.attempt_timeout;
        let Some(c) = self.pool.get_mut(&peer) else {
            return;
        };
        if c.phase == Phase::Connected {
            c.phase = Phase::Reserving { deadline, purpose };
            self.actions.push_back(AutoRelayAction::Reserve { peer });
        } else {
            c.phase = Phase::Dialing { deadline, purpose };
            self.actions.push_back(AutoRelayAction::Dial {
                peer,
                addrs: c.addrs.to_vec(),
            });
        }
    }
}

/// The circuit addresses to keep for a reservation on `relay`: the reported ones (bounded), or
/// if none were reported, `<addr>/p2p/<relay>/p2p-circuit` for each known relay address.
fn bounded_circuit_addrs(
    relay: PeerId,
    reported: &[Multiaddr],
    relay_addrs: &[Multiaddr],
) -> SmallVec<[Multiaddr; 2]> {
    if !reported.is_empty() {
        return reported
            .iter()
            .take(MAX_ADDRS_PER_CANDIDATE)
            .cloned()
            .collect();
    }
    relay_addrs
        .iter()
        .take(MAX_ADDRS_PER_CANDIDATE)
        .map(|addr| {
            let mut addr = addr.clone();
            if let Some(Protocol::P2p(_)) = addr.iter().last() {
                addr.pop();
            }
            addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit)
        })
        .collect()
}
