//! State-machine test of [`CircuitTable`]: CONNECT from any peer and address to reserved,
//! unreserved and expired destinations and to oneself, byte accounting in both directions up to
//! and past the limit, closes and expiry of known circuits, closes and byte counts on ids that
//! are no longer (or were never) open, rate-bucket eviction and time steps, each checked against
//! [`Model`] after every transition (DESIGN §4.3, §5.1).
//!
//! Regression file (`core/proptest-regressions/relay/state_machine_tests/circuits.txt`): two
//! seeds, each recorded with a bug injected on purpose and then reverted: the byte limit
//! checked as `total >= limit` (relaying exactly `max_circuit_bytes` then hits it), and the
//! per-destination circuit limit skipped (a second CONNECT to a destination at
//! `max_circuits_per_peer` 1 is admitted). Both replay, and pass, before the novel cases of
//! every run.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::select;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

use super::super::circuits::{Circuit, CircuitId, CircuitTable, Direction, LimitHit};
use super::super::limits::{RateLimit, RelayLimits};
use super::super::refusal::RefusalReason;
use super::super::reservations::ReservationTable;
use super::super::test_model::{
    IPS, ModelRate, PEERS, RateAudit, assert_counters, charge_both, expected_status, group_of, ip,
    ip_index, is_rate_refusal, peer, peer_index,
};
use super::{Clock, advance, config, rate_limit};

/// Lifetime of the destinations' reservations (their table has no other limit).
const RESERVATION_TTL: Duration = Duration::from_secs(10);

/// The limits of one case, as plain numbers (0 = unlimited, as in [`RelayLimits`]).
#[derive(Debug, Clone)]
struct Limits {
    /// `max_circuits`.
    max_total: u32,
    /// `max_circuits_per_peer`.
    max_per_peer: u32,
    /// `max_circuit_duration`.
    duration: Duration,
    /// `max_circuit_bytes`.
    bytes: u64,
    /// `circuit_rate_per_peer`.
    peer_rate: RateLimit,
    /// `circuit_rate_per_ip`.
    ip_rate: RateLimit,
    /// `rate_limiter_max_keys`.
    max_keys: u32,
}

impl Limits {
    /// The same limits for the table under test.
    fn relay_limits(&self) -> RelayLimits {
        RelayLimits::default()
            .max_circuits(self.max_total)
            .max_circuits_per_peer(self.max_per_peer)
            .max_circuit_duration(self.duration)
            .max_circuit_bytes(self.bytes)
            .circuit_rate_per_peer(self.peer_rate)
            .circuit_rate_per_ip(self.ip_rate)
            .rate_limiter_max_keys(self.max_keys)
    }
}

/// One open circuit of the model: peer and address indices, virtual times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Open {
    /// Its id (`CircuitId::get`).
    id: u64,
    /// The peer that sent CONNECT (index).
    src: usize,
    /// Its address (index into `IPS`).
    src_ip: usize,
    /// The target (index).
    dst: usize,
    /// When it was admitted.
    opened_at: Duration,
    /// When it must end; `None` without a duration limit.
    deadline: Option<Duration>,
    /// Bytes relayed, `[source to destination, destination to source]`.
    bytes: [u64; 2],
}

/// The index of `direction` in [`Open::bytes`].
fn index(direction: Direction) -> usize {
    match direction {
        Direction::SrcToDst => 0,
        Direction::DstToSrc => 1,
    }
}

/// What the table must answer to the last transition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// A transition without an answer (time, eviction, reservation), or none yet.
    Nothing,
    /// CONNECT admitted with this id.
    Admitted(u64),
    /// CONNECT refused.
    Refused(RefusalReason),
    /// `record_bytes`.
    Bytes(Result<(), LimitHit>),
    /// `close`: the circuit closed, if it was open.
    Closed(Option<Open>),
    /// `expired`: the circuits whose duration ended, sorted by id.
    Expired(Vec<u64>),
}

/// The reference model: circuits and reservations in plain lists, counts recomputed by scanning.
#[derive(Debug, Clone)]
struct Model {
    /// The limits of this case.
    limits: Limits,
    /// Virtual time.
    now: Duration,
    /// `(peer, expires_at)` of the destinations' reservations.
    reserved: Vec<(usize, Duration)>,
    /// The open circuits, in id order.
    open: Vec<Open>,
    /// The id of the next admitted circuit; ids are never reused.
    next_id: u64,
    /// The per-source-peer circuit rate, keyed by peer index.
    peer_rate: ModelRate<usize>,
    /// The per-IP circuit rate, keyed by the hand-written group label of `IPS`.
    ip_rate: ModelRate<usize>,
    /// Every refusal so far, in order.
    refusals: Vec<RefusalReason>,
    /// The answer to the last transition.
    answer: Answer,
}

impl Model {
    /// No circuit and no reservation yet, at virtual time zero.
    fn new(limits: Limits) -> Self {
        let keys = limits.max_keys as usize;
        Self {
            peer_rate: ModelRate::new(limits.peer_rate, keys),
            ip_rate: ModelRate::new(limits.ip_rate, keys),
            limits,
            now: Duration::ZERO,
            reserved: Vec::new(),
            open: Vec::new(),
            next_id: 0,
            refusals: Vec::new(),
            answer: Answer::Nothing,
        }
    }

    /// The open circuit `id`.
    fn circuit(&self, id: u64) -> Option<Open> {
        self.open.iter().find(|c| c.id == id).copied()
    }

    /// Circuits `peer` takes part in, as source or destination.
    fn involving(&self, peer: usize) -> usize {
        self.open
            .iter()
            .filter(|c| c.src == peer || c.dst == peer)
            .count()
    }

    /// Whether `peer` takes part in `max_circuits_per_peer` circuits.
    fn peer_full(&self, peer: usize) -> bool {
        let max = self.limits.max_per_peer as usize;
        max != 0 && self.involving(peer) >= max
    }

    /// Whether `peer` holds a live reservation.
    fn is_reserved(&self, peer: usize) -> bool {
        self.reserved
            .iter()
            .any(|&(p, exp)| p == peer && self.now < exp)
    }

    /// The ids that are not open: closed ones and a few never issued.
    fn not_open(&self) -> Vec<u64> {
        (0..self.next_id + 3)
            .filter(|&id| self.circuit(id).is_none())
            .collect()
    }

    /// Count a refusal for `reason` and answer with it.
    fn refuse(&mut self, reason: RefusalReason) -> Answer {
        self.refusals.push(reason);
        Answer::Refused(reason)
    }

    /// CONNECT in the documented order: oneself, rates (both buckets charged only when both
    /// admit), the destination's reservation, then the total, source and destination counts.
    fn connect(&mut self, src: usize, src_ip: usize, dst: usize) -> Answer {
        if src == dst {
            return self.refuse(RefusalReason::ConnectToSelf);
        }
        let now = self.now;
        let group = group_of(src_ip);
        if let Err(reason) = charge_both(
            now,
            (&mut self.peer_rate, src),
            (&mut self.ip_rate, group),
            [
                RefusalReason::CircuitRatePerPeer,
                RefusalReason::CircuitRatePerIp,
            ],
        ) {
            return self.refuse(reason);
        }
        if !self.is_reserved(dst) {
            return self.refuse(RefusalReason::NoReservation);
        }
        let max = self.limits.max_total as usize;
        if max != 0 && self.open.len() >= max {
            return self.refuse(RefusalReason::CircuitsFull);
        }
        if self.peer_full(src) {
            return self.refuse(RefusalReason::CircuitsPerSourceFull);
        }
        if self.peer_full(dst) {
            return self.refuse(RefusalReason::CircuitsPerDestinationFull);
        }
        let id = self.next_id;
        self.next_id += 1;
        let duration = self.limits.duration;
        self.open.push(Open {
            id,
            src,
            src_ip,
            dst,
            opened_at: now,
            deadline: (!duration.is_zero()).then_some(now + duration),
            bytes: [0; 2],
        });
        Answer::Admitted(id)
    }

    /// `n` bytes in `direction`: counted unless they take it past the limit, which closes the
    /// circuit.
    fn record_bytes(&mut self, id: u64, direction: Direction, n: u64) -> Result<(), LimitHit> {
        let limit = self.limits.bytes;
        let c = self
            .open
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or(LimitHit::UnknownCircuit)?;
        let total = c.bytes[index(direction)].saturating_add(n);
        if limit != 0 && total > limit {
            self.open.retain(|c| c.id != id);
            return Err(LimitHit::Bytes { direction, limit });
        }
        c.bytes[index(direction)] = total;
        Ok(())
    }

    /// Circuit and reservation deadlines and rate milestones: where time steps are
    /// interesting.
    fn milestones(&self) -> Vec<Duration> {
        let mut m: Vec<Duration> = self.open.iter().filter_map(|c| c.deadline).collect();
        m.extend(self.reserved.iter().map(|&(_, exp)| exp));
        m.extend(self.peer_rate.milestones(self.now));
        m.extend(self.ip_rate.milestones(self.now));
        m
    }
}

/// The operations on the table.
#[derive(Debug, Clone)]
enum Transition {
    /// `peer` reserves (or renews) on the relay, so it can be a destination.
    Reserve { peer: usize },
    /// CONNECT from `src` at address `ip` to `dst`.
    Connect { src: usize, ip: usize, dst: usize },
    /// Count `n` bytes on an open circuit.
    Bytes {
        id: u64,
        direction: Direction,
        n: u64,
    },
    /// Count bytes on an id that is not open: `UnknownCircuit`, nothing changes.
    BytesUnknown { id: u64, n: u64 },
    /// Close an open circuit.
    Close { id: u64 },
    /// Close an id that is not open: `None`, nothing changes.
    CloseUnknown { id: u64 },
    /// `expired(now)`.
    Expire,
    /// `evict_full_rate_buckets(now)`.
    EvictRateBuckets,
    /// Let virtual time pass.
    Advance(Duration),
}

/// The reference state machine of [`CircuitTable`].
struct CircuitMachine;

impl ReferenceStateMachine for CircuitMachine {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        (
            0..=4u32,
            0..=3u32,
            // `validate` refuses a non-zero duration under one second.
            prop_oneof![1 => Just(0), 3 => 1_000..=5_000u64],
            prop_oneof![Just(0), 1..=200u64],
            rate_limit(1, Duration::from_secs(6)),
            rate_limit(1, Duration::from_secs(6)),
            1..=6u32,
        )
            .prop_map(
                |(max_total, max_per_peer, duration_ms, bytes, peer_rate, ip_rate, max_keys)| {
                    Model::new(Limits {
                        max_total,
                        max_per_peer,
                        duration: Duration::from_millis(duration_ms),
                        bytes,
                        peer_rate,
                        ip_rate,
                        max_keys,
                    })
                },
            )
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Transition> {
        let live: Vec<usize> = (0..PEERS).filter(|&p| state.is_reserved(p)).collect();
        let dst = if live.is_empty() {
            (0..PEERS).boxed()
        } else {
            prop_oneof![1 => 0..PEERS, 3 => select(live)].boxed()
        };
        // Mostly to another peer; now and then to oneself.
        let connect = prop_oneof![
            9 => (1..PEERS, 0..IPS.len(), dst).prop_map(|(shift, ip, dst)| Transition::Connect {
                src: (dst + shift) % PEERS,
                ip,
                dst,
            }),
            1 => (0..PEERS, 0..IPS.len()).prop_map(|(p, ip)| Transition::Connect {
                src: p,
                ip,
                dst: p,
            }),
        ];
        // Expire often once a deadline has passed, now and then when none has.
        let due = state
            .open
            .iter()
            .any(|c| c.deadline.is_some_and(|d| d <= state.now));
        let expire_weight = if due { 6 } else { 1 };
        let mut options: Vec<(u32, BoxedStrategy<Transition>)> = vec![
            (
                3,
                (0..PEERS)
                    .prop_map(|peer| Transition::Reserve { peer })
                    .boxed(),
            ),
            (5, connect.boxed()),
            (
                1,
                (select(state.not_open()), 0..100u64)
                    .prop_map(|(id, n)| Transition::BytesUnknown { id, n })
                    .boxed(),
            ),
            (
                1,
                select(state.not_open())
                    .prop_map(|id| Transition::CloseUnknown { id })
                    .boxed(),
            ),
            (expire_weight, Just(Transition::Expire).boxed()),
            (1, Just(Transition::EvictRateBuckets).boxed()),
            (
                4,
                advance(state.now, state.milestones(), Duration::from_secs(4))
                    .prop_map(Transition::Advance)
                    .boxed(),
            ),
        ];
        if !state.open.is_empty() {
            let limit = state.limits.bytes;
            options.push((
                3,
                (select(state.open.clone()), any::<bool>(), 0..5u8, 0..=80u64)
                    .prop_map(move |(c, up, how, small)| {
                        let direction = if up {
                            Direction::SrcToDst
                        } else {
                            Direction::DstToSrc
                        };
                        // Exactly up to the limit, one past it, a huge count, or a few bytes.
                        let left = limit.saturating_sub(c.bytes[index(direction)]);
                        let n = match how {
                            0 if limit != 0 => left,
                            1 if limit != 0 => left + 1,
                            2 if small < 20 => u64::MAX - small,
                            _ => small,
                        };
                        Transition::Bytes {
                            id: c.id,
                            direction,
                            n,
                        }
                    })
                    .boxed(),
            ));
            options.push((
                1,
                select(state.open.clone())
                    .prop_map(|c| Transition::Close { id: c.id })
                    .boxed(),
            ));
        }
        proptest::strategy::Union::new_weighted(options).boxed()
    }

    fn preconditions(state: &Model, transition: &Transition) -> bool {
        match *transition {
            Transition::Bytes { id, .. } | Transition::Close { id } => state.circuit(id).is_some(),
            Transition::BytesUnknown { id, .. } | Transition::CloseUnknown { id } => {
                state.circuit(id).is_none()
            }
            _ => true,
        }
    }

    fn apply(mut state: Model, transition: &Transition) -> Model {
        state.answer = match *transition {
            Transition::Reserve { peer } => {
                let now = state.now;
                // Admitting a RESERVE drops expired reservations, then renews or adds.
                state.reserved.retain(|&(p, exp)| p != peer && exp > now);
                state.reserved.push((peer, now + RESERVATION_TTL));
                Answer::Nothing
            }
            Transition::Connect { src, ip, dst } => state.connect(src, ip, dst),
            Transition::Bytes { id, direction, n } => {
                Answer::Bytes(state.record_bytes(id, direction, n))
            }
            Transition::BytesUnknown { id, n } => {
                Answer::Bytes(state.record_bytes(id, Direction::SrcToDst, n))
            }
            Transition::Close { id } | Transition::CloseUnknown { id } => {
                let gone = state.circuit(id);
                state.open.retain(|c| c.id != id);
                Answer::Closed(gone)
            }
            Transition::Expire => {
                let now = state.now;
                let due = |c: &Open| c.deadline.is_some_and(|d| d <= now);
                let gone: Vec<u64> = state.open.iter().filter(|c| due(c)).map(|c| c.id).collect();
                state.open.retain(|c| !due(c));
                Answer::Expired(gone)
            }
            Transition::EvictRateBuckets => Answer::Nothing,
            Transition::Advance(by) => {
                state.now += by;
                Answer::Nothing
            }
        };
        state
    }
}

/// The table under test, the destinations' reservations, its epoch, and the requests its rate
/// limits let through.
struct Sut {
    /// Virtual time.
    clock: Clock,
    /// The table under test.
    table: CircuitTable,
    /// The destinations' reservations (no limits but the TTL).
    reservations: ReservationTable,
    /// CONNECTs that passed the per-peer rate, by source peer index.
    peer_audit: RateAudit<usize>,
    /// CONNECTs that passed the per-IP rate, by group label.
    ip_audit: RateAudit<usize>,
}

impl Sut {
    /// The model's view of a circuit of the table.
    fn open(&self, id: CircuitId, c: &Circuit) -> Open {
        Open {
            id: id.get(),
            src: peer_index(&c.src),
            src_ip: ip_index(c.src_ip),
            dst: peer_index(&c.dst),
            opened_at: self.clock.since(c.opened_at),
            deadline: c.deadline.map(|d| self.clock.since(d)),
            bytes: [c.bytes(Direction::SrcToDst), c.bytes(Direction::DstToSrc)],
        }
    }
}

/// The test of [`CircuitTable`] against [`CircuitMachine`].
struct CircuitTableTest;

impl StateMachineTest for CircuitTableTest {
    type SystemUnderTest = Sut;
    type Reference = CircuitMachine;

    fn init_test(model: &Model) -> Sut {
        let limits = model.limits.relay_limits();
        assert_eq!(limits.validate(), Ok(()));
        let unlimited = RelayLimits::default()
            .max_reservations(0)
            .max_reservations_per_ip(0)
            .reservation_ttl(RESERVATION_TTL)
            .reservation_rate_per_peer(RateLimit::unlimited())
            .reservation_rate_per_ip(RateLimit::unlimited());
        Sut {
            clock: Clock::new(),
            table: CircuitTable::new(limits),
            reservations: ReservationTable::new(unlimited),
            peer_audit: RateAudit::new(),
            ip_audit: RateAudit::new(),
        }
    }

    fn apply(mut sut: Sut, model: &Model, transition: Transition) -> Sut {
        let now = model.now;
        let t = sut.clock.at(now);
        let got = match transition {
            Transition::Reserve { peer: p } => {
                let admitted = sut.reservations.admit(t, peer(p), ip(0));
                assert!(admitted.is_ok(), "the destinations' table has no limit");
                Answer::Nothing
            }
            Transition::Connect { src, ip: i, dst } => {
                let got = match sut
                    .table
                    .admit(t, peer(src), ip(i), peer(dst), &sut.reservations)
                {
                    Ok(id) => Answer::Admitted(id.get()),
                    Err(refusal) => {
                        assert_eq!(refusal.status, expected_status(refusal.reason));
                        Answer::Refused(refusal.reason)
                    }
                };
                let charged = match got {
                    Answer::Refused(r) => !is_rate_refusal(r) && r != RefusalReason::ConnectToSelf,
                    _ => true,
                };
                if charged {
                    sut.peer_audit.record(src, now);
                    sut.ip_audit.record(group_of(i), now);
                }
                got
            }
            Transition::Bytes { id, direction, n } => Answer::Bytes(sut.table.record_bytes(
                CircuitId::from_raw(id),
                direction,
                n,
            )),
            Transition::BytesUnknown { id, n } => {
                let id = CircuitId::from_raw(id);
                Answer::Bytes(sut.table.record_bytes(id, Direction::SrcToDst, n))
            }
            Transition::Close { id } | Transition::CloseUnknown { id } => {
                let id = CircuitId::from_raw(id);
                let gone = sut.table.close(id);
                Answer::Closed(gone.map(|c| sut.open(id, &c)))
            }
            Transition::Expire => {
                let before: Vec<(CircuitId, Option<Instant>)> =
                    sut.table.iter().map(|(id, c)| (id, c.deadline)).collect();
                let deadline = |id: &CircuitId| {
                    let known = before.iter().find(|(x, _)| x == id);
                    known.and_then(|&(_, d)| d)
                };
                let gone = sut.table.expired(t);
                // Expired in deadline order, and every circuit left still has time.
                let deadlines: Vec<Option<Instant>> = gone.iter().map(deadline).collect();
                assert!(deadlines.is_sorted(), "expiry order {gone:?}");
                for (id, c) in sut.table.iter() {
                    assert!(
                        c.deadline.is_none_or(|d| d > t),
                        "{id:?} outlived its limit"
                    );
                }
                let mut gone: Vec<u64> = gone.iter().map(|id| id.get()).collect();
                gone.sort_unstable();
                Answer::Expired(gone)
            }
            Transition::EvictRateBuckets => {
                sut.table.evict_full_rate_buckets(t);
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

        // Every circuit and count agrees with the model's plain lists.
        assert_eq!(t.len(), model.open.len());
        assert_eq!(t.is_empty(), model.open.is_empty());
        let listed: Vec<Open> = t.iter().map(|(id, c)| sut.open(id, c)).collect();
        assert_eq!(listed, model.open, "open circuits, in id order");
        for id in model.not_open() {
            assert!(t.get(CircuitId::from_raw(id)).is_none(), "{id} is not open");
        }
        let mut involved = 0;
        for p in 0..PEERS {
            let n = model.involving(p);
            assert_eq!(
                t.count_for_peer(&peer(p)) as usize,
                n,
                "circuits of peer {p}"
            );
            involved += usize::from(n > 0);
        }
        assert_eq!(t.peers(), involved);
        let next = model.open.iter().filter_map(|c| c.deadline).min();
        assert_eq!(t.next_deadline().map(|d| sut.clock.since(d)), next);
        assert_counters(t.rejections(), &model.refusals);

        // The documented limits hold.
        if limits.max_total != 0 {
            assert!(t.len() <= limits.max_total as usize);
        }
        if limits.max_per_peer != 0 {
            for p in 0..PEERS {
                assert!(t.count_for_peer(&peer(p)) <= limits.max_per_peer);
            }
        }
        for (id, c) in t.iter() {
            if limits.bytes != 0 {
                let bytes = [c.bytes(Direction::SrcToDst), c.bytes(Direction::DstToSrc)];
                assert!(bytes.iter().all(|&b| b <= limits.bytes), "{id:?}");
            }
            let lifetime = c.deadline.map(|d| d - c.opened_at);
            assert_eq!(
                lifetime,
                (!limits.duration.is_zero()).then_some(limits.duration)
            );
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

    /// Any sequence of CONNECT, byte counts, closes, expiry, eviction and time steps, on open
    /// and on unknown circuits, gets the model's answers and leaves the model's counts, within
    /// every limit of DESIGN §5.1.
    #[test]
    fn circuit_table_agrees_with_model_under_any_operation_sequence(
        sequential 1..64 => CircuitTableTest
    );
}
