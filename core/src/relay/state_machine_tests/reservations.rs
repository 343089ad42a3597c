//! State-machine test of [`ReservationTable`]: RESERVE from any peer and address, renewals of a
//! held reservation (from the same address, from another address of its IP group, or from
//! another group), removals of held and of unknown reservations, expiry, rate-bucket eviction
//! and time steps, each checked against [`Model`] after every transition (DESIGN §5.1).
//!
//! Regression file (`core/proptest-regressions/relay/state_machine_tests/reservations.txt`):
//! one seed, recorded with the per-IP limit check broken on purpose (`count > max` for
//! `count >= max`; it shrinks to two peers reserving from one IPv4 address, once through its
//! IPv4-mapped IPv6 form, with `max_reservations_per_ip` 1). The same seed also catches an
//! `expire` that keeps a reservation whose deadline is exactly `now`. Both bugs were reverted:
//! the case replays, and passes, before the novel cases of every run.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::select;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

use super::super::limits::{IpGroup, RateLimit, RelayLimits};
use super::super::refusal::RefusalReason;
use super::super::reservations::{Admission, Reservation, ReservationTable};
use super::super::test_model::{
    IP_GROUPS, IPS, ModelRate, PEERS, RateAudit, assert_counters, charge_both, expected_status,
    group_ip, group_of, ip, ip_index, is_rate_refusal, peer, peer_index,
};
use super::{Clock, advance, config, rate_limit};

/// The limits of one case, as plain numbers (0 = unlimited, as in [`RelayLimits`]).
#[derive(Debug, Clone)]
struct Limits {
    /// `max_reservations`.
    max_total: u32,
    /// `max_reservations_per_ip`.
    max_per_ip: u32,
    /// `reservation_ttl`.
    ttl: Duration,
    /// `reservation_rate_per_peer`.
    peer_rate: RateLimit,
    /// `reservation_rate_per_ip`.
    ip_rate: RateLimit,
    /// `rate_limiter_max_keys`.
    max_keys: u32,
}

impl Limits {
    /// The same limits for the table under test.
    fn relay_limits(&self) -> RelayLimits {
        RelayLimits::default()
            .max_reservations(self.max_total)
            .max_reservations_per_ip(self.max_per_ip)
            .reservation_ttl(self.ttl)
            .reservation_rate_per_peer(self.peer_rate)
            .reservation_rate_per_ip(self.ip_rate)
            .rate_limiter_max_keys(self.max_keys)
    }
}

/// One reservation of the model: peer and address indices, virtual times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    /// The peer (index into the test peers).
    peer: usize,
    /// The address of its last admitted RESERVE (index into `IPS`).
    ip: usize,
    /// When that RESERVE was admitted.
    admitted_at: Duration,
    /// When the reservation ends; live while `now < expires_at`.
    expires_at: Duration,
}

/// What the table must answer to the last transition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// A transition without an answer (time, eviction), or none yet.
    Nothing,
    /// RESERVE admitted for a peer without reservation.
    New { expires_at: Duration },
    /// RESERVE renewed from the same address.
    Renewed { expires_at: Duration },
    /// RESERVE renewed from another address (index into `IPS`).
    Replaced {
        previous_ip: usize,
        expires_at: Duration,
    },
    /// RESERVE refused.
    Refused(RefusalReason),
    /// `remove`: the reservation removed, if there was one.
    Removed(Option<Held>),
    /// `expire`: the peers whose reservation ended, sorted by index.
    Expired(Vec<usize>),
}

/// The reference model: reservations in a plain list, counts recomputed by scanning.
#[derive(Debug, Clone)]
struct Model {
    /// The limits of this case.
    limits: Limits,
    /// Virtual time.
    now: Duration,
    /// The reservations, at most one per peer, in no particular order.
    held: Vec<Held>,
    /// The per-peer reservation rate, keyed by peer index.
    peer_rate: ModelRate<usize>,
    /// The per-IP reservation rate, keyed by the hand-written group label of `IPS`.
    ip_rate: ModelRate<usize>,
    /// Every refusal so far, in order.
    refusals: Vec<RefusalReason>,
    /// The answer to the last transition.
    answer: Answer,
}

impl Model {
    /// No reservation yet, at virtual time zero.
    fn new(limits: Limits) -> Self {
        let keys = limits.max_keys as usize;
        Self {
            peer_rate: ModelRate::new(limits.peer_rate, keys),
            ip_rate: ModelRate::new(limits.ip_rate, keys),
            limits,
            now: Duration::ZERO,
            held: Vec::new(),
            refusals: Vec::new(),
            answer: Answer::Nothing,
        }
    }

    /// `peer`'s reservation, if it holds one.
    fn held(&self, peer: usize) -> Option<Held> {
        self.held.iter().find(|h| h.peer == peer).copied()
    }

    /// Reservations held from IP group `group`, counted by scanning.
    fn in_group(&self, group: usize) -> usize {
        self.held.iter().filter(|h| group_of(h.ip) == group).count()
    }

    /// Whether IP group `group` holds `max_reservations_per_ip` reservations.
    fn group_full(&self, group: usize) -> bool {
        let max = self.limits.max_per_ip as usize;
        max != 0 && self.in_group(group) >= max
    }

    /// Drop the reservations whose deadline is at or before `now`; the dropped peers, sorted.
    fn expire(&mut self) -> Vec<usize> {
        let now = self.now;
        let mut gone: Vec<usize> = self
            .held
            .iter()
            .filter(|h| h.expires_at <= now)
            .map(|h| h.peer)
            .collect();
        gone.sort_unstable();
        self.held.retain(|h| h.expires_at > now);
        gone
    }

    /// Count a refusal for `reason` and answer with it.
    fn refuse(&mut self, reason: RefusalReason) -> Answer {
        self.refusals.push(reason);
        Answer::Refused(reason)
    }

    /// RESERVE in the documented order: expiry, rates (both buckets charged only when both
    /// admit), renewal or move, then the total and per-IP counts.
    fn reserve(&mut self, peer: usize, ip: usize) -> Answer {
        let _ = self.expire();
        let now = self.now;
        let group = group_of(ip);
        if let Err(reason) = charge_both(
            now,
            (&mut self.peer_rate, peer),
            (&mut self.ip_rate, group),
            [
                RefusalReason::ReservationRatePerPeer,
                RefusalReason::ReservationRatePerIp,
            ],
        ) {
            return self.refuse(reason);
        }
        let expires_at = now + self.limits.ttl;
        let new = Held {
            peer,
            ip,
            admitted_at: now,
            expires_at,
        };
        if let Some(old) = self.held(peer) {
            if group_of(old.ip) != group && self.group_full(group) {
                return self.refuse(RefusalReason::ReservationsPerIpFull);
            }
            self.held.retain(|h| h.peer != peer);
            self.held.push(new);
            return if old.ip == ip {
                Answer::Renewed { expires_at }
            } else {
                Answer::Replaced {
                    previous_ip: old.ip,
                    expires_at,
                }
            };
        }
        let max = self.limits.max_total as usize;
        if max != 0 && self.held.len() >= max {
            return self.refuse(RefusalReason::ReservationsFull);
        }
        if self.group_full(group) {
            return self.refuse(RefusalReason::ReservationsPerIpFull);
        }
        self.held.push(new);
        Answer::New { expires_at }
    }

    /// Reservation deadlines and rate milestones: where time steps are interesting.
    fn milestones(&self) -> Vec<Duration> {
        let mut m: Vec<Duration> = self.held.iter().map(|h| h.expires_at).collect();
        m.extend(self.peer_rate.milestones(self.now));
        m.extend(self.ip_rate.milestones(self.now));
        m
    }
}

/// The operations on the table.
#[derive(Debug, Clone)]
enum Transition {
    /// RESERVE from any peer at any address.
    Reserve { peer: usize, ip: usize },
    /// RESERVE from a peer that holds a reservation (a renewal, a move, or a new reservation
    /// if it expired meanwhile).
    Renew { peer: usize, ip: usize },
    /// Remove a held reservation (its connection closed).
    Remove { peer: usize },
    /// Remove the reservation of a peer that holds none: a no-op answering `None`.
    RemoveUnknown { peer: usize },
    /// `expire(now)`.
    Expire,
    /// `evict_full_rate_buckets(now)`.
    EvictRateBuckets,
    /// Let virtual time pass.
    Advance(Duration),
}

/// The reference state machine of [`ReservationTable`].
struct ReservationMachine;

impl ReferenceStateMachine for ReservationMachine {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        (
            0..=4u32,
            0..=3u32,
            1_000..=6_000u64,
            rate_limit(1, Duration::from_secs(6)),
            rate_limit(1, Duration::from_secs(6)),
            1..=6u32,
        )
            .prop_map(
                |(max_total, max_per_ip, ttl_ms, peer_rate, ip_rate, max_keys)| {
                    Model::new(Limits {
                        max_total,
                        max_per_ip,
                        ttl: Duration::from_millis(ttl_ms),
                        peer_rate,
                        ip_rate,
                        max_keys,
                    })
                },
            )
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Transition> {
        let held: Vec<Held> = state.held.clone();
        let unheld: Vec<usize> = (0..PEERS).filter(|&p| state.held(p).is_none()).collect();
        // Expire often once a deadline has passed, now and then when none has.
        let due = state.held.iter().any(|h| h.expires_at <= state.now);
        let expire_weight = if due { 8 } else { 1 };
        let mut options: Vec<(u32, BoxedStrategy<Transition>)> = vec![
            (
                3,
                (0..PEERS, 0..IPS.len())
                    .prop_map(|(peer, ip)| Transition::Reserve { peer, ip })
                    .boxed(),
            ),
            (expire_weight, Just(Transition::Expire).boxed()),
            (1, Just(Transition::EvictRateBuckets).boxed()),
            (
                3,
                advance(state.now, state.milestones(), Duration::from_secs(4))
                    .prop_map(Transition::Advance)
                    .boxed(),
            ),
        ];
        if !held.is_empty() {
            options.push((
                3,
                (select(held.clone()), 0..3u8, 0..IPS.len())
                    .prop_map(|(h, how, other)| {
                        // The same address, another address of the same group (if any), or any.
                        let same_group = (0..IPS.len())
                            .find(|&i| i != h.ip && group_of(i) == group_of(h.ip))
                            .unwrap_or(h.ip);
                        let ip = [h.ip, same_group, other][usize::from(how)];
                        Transition::Renew { peer: h.peer, ip }
                    })
                    .boxed(),
            ));
            options.push((
                1,
                select(held)
                    .prop_map(|h| Transition::Remove { peer: h.peer })
                    .boxed(),
            ));
        }
        if !unheld.is_empty() {
            options.push((
                1,
                select(unheld)
                    .prop_map(|peer| Transition::RemoveUnknown { peer })
                    .boxed(),
            ));
        }
        proptest::strategy::Union::new_weighted(options).boxed()
    }

    fn preconditions(state: &Model, transition: &Transition) -> bool {
        match *transition {
            Transition::Renew { peer, .. } | Transition::Remove { peer } => {
                state.held(peer).is_some()
            }
            Transition::RemoveUnknown { peer } => state.held(peer).is_none(),
            _ => true,
        }
    }

    fn apply(mut state: Model, transition: &Transition) -> Model {
        state.answer = match *transition {
            Transition::Reserve { peer, ip } | Transition::Renew { peer, ip } => {
                state.reserve(peer, ip)
            }
            Transition::Remove { peer } | Transition::RemoveUnknown { peer } => {
                let gone = state.held(peer);
                state.held.retain(|h| h.peer != peer);
                Answer::Removed(gone)
            }
            Transition::Expire => Answer::Expired(state.expire()),
            Transition::EvictRateBuckets => Answer::Nothing,
            Transition::Advance(by) => {
                state.now += by;
                Answer::Nothing
            }
        };
        state
    }
}

/// The table under test, its epoch, and the requests its rate limits let through.
struct Sut {
    /// Virtual time.
    clock: Clock,
    /// The table under test.
    table: ReservationTable,
    /// RESERVEs that passed the per-peer rate, by peer index.
    peer_audit: RateAudit<usize>,
    /// RESERVEs that passed the per-IP rate, by group label.
    ip_audit: RateAudit<usize>,
}

impl Sut {
    /// The model's view of a reservation of the table.
    fn held(&self, peer: usize, r: &Reservation) -> Held {
        assert_eq!(r.group, IpGroup::of(r.ip), "group of {peer}'s reservation");
        Held {
            peer,
            ip: ip_index(r.ip),
            admitted_at: self.clock.since(r.admitted_at),
            expires_at: self.clock.since(r.expires_at),
        }
    }
}

/// The test of [`ReservationTable`] against [`ReservationMachine`].
struct ReservationTableTest;

impl StateMachineTest for ReservationTableTest {
    type SystemUnderTest = Sut;
    type Reference = ReservationMachine;

    fn init_test(model: &Model) -> Sut {
        let limits = model.limits.relay_limits();
        assert_eq!(limits.validate(), Ok(()));
        Sut {
            clock: Clock::new(),
            table: ReservationTable::new(limits),
            peer_audit: RateAudit::new(),
            ip_audit: RateAudit::new(),
        }
    }

    fn apply(mut sut: Sut, model: &Model, transition: Transition) -> Sut {
        let now = model.now;
        let got = match transition {
            Transition::Reserve { peer: p, ip: i } | Transition::Renew { peer: p, ip: i } => {
                let got = match sut.table.admit(sut.clock.at(now), peer(p), ip(i)) {
                    Ok(Admission::New { expires_at }) => Answer::New {
                        expires_at: sut.clock.since(expires_at),
                    },
                    Ok(Admission::Renewed { expires_at }) => Answer::Renewed {
                        expires_at: sut.clock.since(expires_at),
                    },
                    Ok(Admission::Replaced {
                        previous_ip,
                        expires_at,
                    }) => Answer::Replaced {
                        previous_ip: ip_index(previous_ip),
                        expires_at: sut.clock.since(expires_at),
                    },
                    Err(refusal) => {
                        assert_eq!(refusal.status, expected_status(refusal.reason));
                        Answer::Refused(refusal.reason)
                    }
                };
                if !matches!(got, Answer::Refused(r) if is_rate_refusal(r)) {
                    sut.peer_audit.record(p, now);
                    sut.ip_audit.record(group_of(i), now);
                }
                got
            }
            Transition::Remove { peer: p } | Transition::RemoveUnknown { peer: p } => {
                let gone = sut.table.remove(&peer(p));
                Answer::Removed(gone.map(|r| sut.held(p, &r)))
            }
            Transition::Expire => {
                let deadline = |p| sut.table.get(&peer(p)).map(|r| r.expires_at);
                let before: Vec<Option<Instant>> = (0..PEERS).map(deadline).collect();
                let gone: Vec<usize> = sut
                    .table
                    .expire(sut.clock.at(now))
                    .iter()
                    .map(peer_index)
                    .collect();
                // Expired in deadline order.
                let deadlines: Vec<Option<Instant>> = gone.iter().map(|&p| before[p]).collect();
                assert!(
                    deadlines.is_sorted(),
                    "expire order {gone:?}: {deadlines:?}"
                );
                let mut gone = gone;
                gone.sort_unstable();
                Answer::Expired(gone)
            }
            Transition::EvictRateBuckets => {
                sut.table.evict_full_rate_buckets(sut.clock.at(now));
                // Eviction leaves exactly the buckets that are still refilling.
                assert_eq!(
                    sut.table.rate_keys(),
                    (model.peer_rate.tracked(now), model.ip_rate.tracked(now))
                );
                Answer::Nothing
            }
            Transition::Advance(_) => Answer::Nothing,
        };
        assert_eq!(got, model.answer, "answer to {transition:?}");
        sut
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        let t = &sut.table;
        let now = model.now;
        let limits = &model.limits;

        // Every reservation and count agrees with the model's plain list.
        assert_eq!(t.len(), model.held.len());
        assert_eq!(t.is_empty(), model.held.is_empty());
        for p in 0..PEERS {
            let got = t.get(&peer(p)).map(|r| sut.held(p, r));
            assert_eq!(got, model.held(p), "reservation of peer {p}");
            let live = model.held(p).is_some_and(|h| now < h.expires_at);
            assert_eq!(
                t.is_reserved(sut.clock.at(now), &peer(p)),
                live,
                "peer {p} live"
            );
        }
        let mut groups = 0;
        for g in 0..IP_GROUPS {
            let n = model.in_group(g);
            assert_eq!(
                t.count_for_ip(IpGroup::of(group_ip(g))) as usize,
                n,
                "group {g}"
            );
            groups += usize::from(n > 0);
        }
        assert_eq!(t.ip_groups(), groups);
        let next = model.held.iter().map(|h| h.expires_at).min();
        assert_eq!(t.next_deadline().map(|d| sut.clock.since(d)), next);
        assert_counters(t.rejections(), &model.refusals);

        // The documented limits hold.
        if limits.max_total != 0 {
            assert!(t.len() <= limits.max_total as usize);
        }
        if limits.max_per_ip != 0 {
            for g in 0..IP_GROUPS {
                assert!(t.count_for_ip(IpGroup::of(group_ip(g))) <= limits.max_per_ip);
            }
        }
        for p in 0..PEERS {
            if let Some(r) = t.get(&peer(p)) {
                assert_eq!(r.expires_at - r.admitted_at, limits.ttl, "TTL of peer {p}");
            }
        }
        sut.peer_audit.assert_within(limits.peer_rate);
        sut.ip_audit.assert_within(limits.ip_rate);
        let (peers, ips) = t.rate_keys();
        assert!((model.peer_rate.tracked(now)..=limits.max_keys as usize).contains(&peers));
        assert!((model.ip_rate.tracked(now)..=limits.max_keys as usize).contains(&ips));
    }
}

prop_state_machine! {
    #![proptest_config(config(256))]

    /// Any sequence of RESERVE, renewal, removal, expiry, eviction and time steps gets the
    /// model's answers and leaves the model's counts, within every limit of DESIGN §5.1.
    #[test]
    fn reservation_table_agrees_with_model_under_any_operation_sequence(
        sequential 1..64 => ReservationTableTest
    );
}
