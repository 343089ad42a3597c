//! State-machine test of the limits: [`RelayLimits`] changed one setter at a time (valid and
//! invalid values) with its validation and the limits derived from it, the
//! [`RateLimiter`]s built from its [`RateLimit`]s (per peer, and per [`IpGroup`] with several
//! addresses sharing a group), and the [`RejectionCounters`] of their refusals, each checked
//! against [`Model`] after every transition (DESIGN §5.1).
//!
//! Regression file (`core/proptest-regressions/relay/state_machine_tests/limits.txt`): two
//! seeds, each recorded with a bug injected on purpose and then reverted: `RateLimiter::check`
//! rounding `retry_after` down (a burst of 2 over an odd number of nanoseconds), and
//! `RelayLimits::validate` refusing equal connection watermarks (`>=` for `>`). Both replay,
//! and pass, before the novel cases of every run.

use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

use super::super::limits::{IpGroup, MAX_RATE_PERIOD, RateLimit, RelayLimits};
use super::super::rate::{RateDecision, RateLimiter};
use super::super::refusal::{RefusalReason, RejectionCounters};
use super::super::test_model::{
    IPS, ModelRate, PEERS, RateAudit, assert_counters, group_of, ip, peer,
};
use super::super::wire::CircuitLimit;
use super::{Clock, advance, config, limited_rate, rate_limit};

/// The four rate limits of [`RelayLimits`], in the order `validate` checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateKind {
    /// `reservation_rate_per_peer`.
    ReservationPerPeer,
    /// `reservation_rate_per_ip`.
    ReservationPerIp,
    /// `circuit_rate_per_peer`.
    CircuitPerPeer,
    /// `circuit_rate_per_ip`.
    CircuitPerIp,
}

impl RateKind {
    /// Every kind, in field order.
    const ALL: [Self; 4] = [
        Self::ReservationPerPeer,
        Self::ReservationPerIp,
        Self::CircuitPerPeer,
        Self::CircuitPerIp,
    ];

    /// The name of the field, as DESIGN §5.1 and `InvalidLimit::key` spell it.
    fn key(self) -> &'static str {
        match self {
            Self::ReservationPerPeer => "reservation_rate_per_peer",
            Self::ReservationPerIp => "reservation_rate_per_ip",
            Self::CircuitPerPeer => "circuit_rate_per_peer",
            Self::CircuitPerIp => "circuit_rate_per_ip",
        }
    }

    /// The index of this rate in [`Fields::rates`].
    fn index(self) -> usize {
        self as usize
    }
}

/// One setter of [`RelayLimits`] and its value.
#[derive(Debug, Clone, Copy)]
enum Setting {
    /// `max_reservations`.
    MaxReservations(u32),
    /// `max_reservations_per_peer`.
    MaxReservationsPerPeer(u32),
    /// `max_reservations_per_ip`.
    MaxReservationsPerIp(u32),
    /// `reservation_ttl`.
    ReservationTtl(Duration),
    /// `max_circuits`.
    MaxCircuits(u32),
    /// `max_circuits_per_peer`.
    MaxCircuitsPerPeer(u32),
    /// `max_circuit_duration`.
    MaxCircuitDuration(Duration),
    /// `max_circuit_bytes`.
    MaxCircuitBytes(u64),
    /// One of the four rates.
    Rate(RateKind, RateLimit),
    /// `rate_limiter_max_keys`.
    RateLimiterMaxKeys(u32),
    /// `request_timeout`.
    RequestTimeout(Duration),
    /// `connection_low_watermark`.
    LowWatermark(u32),
    /// `connection_high_watermark`.
    HighWatermark(u32),
}

/// Every field of [`RelayLimits`], as plain values (named as the fields, the four rates in
/// [`RateKind`] order, the watermarks without their `connection_` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    max_reservations: u32,
    max_reservations_per_peer: u32,
    max_reservations_per_ip: u32,
    reservation_ttl: Duration,
    max_circuits: u32,
    max_circuits_per_peer: u32,
    max_circuit_duration: Duration,
    max_circuit_bytes: u64,
    rates: [RateLimit; 4],
    rate_limiter_max_keys: u32,
    request_timeout: Duration,
    low_watermark: u32,
    high_watermark: u32,
}

impl Fields {
    /// The defaults, copied from the table of DESIGN §5.1, and the key bound of the rate
    /// limiters (8192), which that table does not list.
    fn design_defaults() -> Self {
        Self {
            max_reservations: 1024,
            max_reservations_per_peer: 1,
            max_reservations_per_ip: 8,
            reservation_ttl: Duration::from_secs(3600),
            max_circuits: 1024,
            max_circuits_per_peer: 16,
            max_circuit_duration: Duration::from_secs(30 * 60),
            max_circuit_bytes: 128 << 20,
            rates: [
                RateLimit::new(30, Duration::from_secs(120)),
                RateLimit::new(60, Duration::from_secs(60)),
                RateLimit::new(30, Duration::from_secs(120)),
                RateLimit::new(60, Duration::from_secs(60)),
            ],
            rate_limiter_max_keys: 8192,
            request_timeout: Duration::from_secs(10),
            low_watermark: 100,
            high_watermark: 200,
        }
    }

    /// The fields of `limits` (its fields are crate-visible).
    fn of(limits: &RelayLimits) -> Self {
        Self {
            max_reservations: limits.max_reservations,
            max_reservations_per_peer: limits.max_reservations_per_peer,
            max_reservations_per_ip: limits.max_reservations_per_ip,
            reservation_ttl: limits.reservation_ttl,
            max_circuits: limits.max_circuits,
            max_circuits_per_peer: limits.max_circuits_per_peer,
            max_circuit_duration: limits.max_circuit_duration,
            max_circuit_bytes: limits.max_circuit_bytes,
            rates: [
                limits.reservation_rate_per_peer,
                limits.reservation_rate_per_ip,
                limits.circuit_rate_per_peer,
                limits.circuit_rate_per_ip,
            ],
            rate_limiter_max_keys: limits.rate_limiter_max_keys,
            request_timeout: limits.request_timeout,
            low_watermark: limits.connection_low_watermark,
            high_watermark: limits.connection_high_watermark,
        }
    }

    /// Apply `setting` to its field.
    fn set(&mut self, setting: &Setting) {
        match *setting {
            Setting::MaxReservations(n) => self.max_reservations = n,
            Setting::MaxReservationsPerPeer(n) => self.max_reservations_per_peer = n,
            Setting::MaxReservationsPerIp(n) => self.max_reservations_per_ip = n,
            Setting::ReservationTtl(d) => self.reservation_ttl = d,
            Setting::MaxCircuits(n) => self.max_circuits = n,
            Setting::MaxCircuitsPerPeer(n) => self.max_circuits_per_peer = n,
            Setting::MaxCircuitDuration(d) => self.max_circuit_duration = d,
            Setting::MaxCircuitBytes(n) => self.max_circuit_bytes = n,
            Setting::Rate(kind, rate) => self.rates[kind.index()] = rate,
            Setting::RateLimiterMaxKeys(n) => self.rate_limiter_max_keys = n,
            Setting::RequestTimeout(d) => self.request_timeout = d,
            Setting::LowWatermark(n) => self.low_watermark = n,
            Setting::HighWatermark(n) => self.high_watermark = n,
        }
    }

    /// The first field, in declaration order, whose value the documentation of its setter
    /// rules out; `None` when every value is usable.
    fn first_invalid(&self) -> Option<&'static str> {
        if self.max_reservations_per_peer != 1 {
            return Some("max_reservations_per_peer");
        }
        if self.reservation_ttl < Duration::from_secs(1) {
            return Some("reservation_ttl");
        }
        if self.max_circuit_duration >= Duration::from_secs(u64::from(u32::MAX) + 1) {
            return Some("max_circuit_duration");
        }
        // Limit.duration carries whole seconds, and 0 there would read as unlimited.
        if self.max_circuit_duration != Duration::ZERO
            && self.max_circuit_duration < Duration::from_secs(1)
        {
            return Some("max_circuit_duration");
        }
        for kind in RateKind::ALL {
            let rate = self.rates[kind.index()];
            let burst_without_period = rate.burst != 0 && rate.period == Duration::ZERO;
            if burst_without_period || rate.period > Duration::from_secs(86_400) {
                return Some(kind.key());
            }
        }
        if self.rate_limiter_max_keys == 0 {
            return Some("rate_limiter_max_keys");
        }
        if self.request_timeout == Duration::ZERO {
            return Some("request_timeout");
        }
        if self.high_watermark != 0 && self.low_watermark > self.high_watermark {
            return Some("connection_low_watermark");
        }
        None
    }

    /// The `Limit` a circuit is sent: whole seconds (rounded down, at most `u32::MAX`) and
    /// bytes, each absent when unlimited.
    fn circuit_limit(&self) -> CircuitLimit {
        let secs = self.max_circuit_duration.as_secs();
        CircuitLimit {
            duration_secs: (self.max_circuit_duration != Duration::ZERO)
                .then(|| u32::try_from(secs).unwrap_or(u32::MAX)),
            data_bytes: (self.max_circuit_bytes != 0).then_some(self.max_circuit_bytes),
        }
    }
}

/// A rate-limiter key: a test peer, or a source address (keyed by its IP group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// A test peer (index).
    Peer(usize),
    /// A source address (index into `IPS`).
    Ip(usize),
}

/// What the limiters must answer to the last transition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// A transition without an answer, or none yet.
    Nothing,
    /// `check` or `peek`.
    Decision(RateDecision),
}

/// The reference model: the fields, and token buckets stated plainly for the limiters built
/// from the last valid configuration.
#[derive(Debug, Clone)]
struct Model {
    /// The configuration, changed by every setter call.
    fields: Fields,
    /// Virtual time.
    now: Duration,
    /// Whether the limiters apply the circuit rates (else the reservation rates).
    circuits: bool,
    /// The limiters' key bound.
    max_keys: usize,
    /// The per-peer limiter, keyed by peer index.
    peer_rate: ModelRate<usize>,
    /// The per-IP limiter, keyed by the hand-written group label of `IPS`.
    ip_rate: ModelRate<usize>,
    /// Every refusal counted so far, in order.
    refusals: Vec<RefusalReason>,
    /// The answer to the last transition.
    answer: Answer,
}

impl Model {
    /// The limiters' rates `(per peer, per IP)`.
    fn rates(&self) -> (RateLimit, RateLimit) {
        let (peer, ip) = if self.circuits {
            (RateKind::CircuitPerPeer, RateKind::CircuitPerIp)
        } else {
            (RateKind::ReservationPerPeer, RateKind::ReservationPerIp)
        };
        (
            self.fields.rates[peer.index()],
            self.fields.rates[ip.index()],
        )
    }

    /// Rebuild both limiters from the circuit or the reservation rates.
    fn use_rates(&mut self, circuits: bool) {
        self.circuits = circuits;
        let (peer, ip) = self.rates();
        self.max_keys = self.fields.rate_limiter_max_keys as usize;
        self.peer_rate = ModelRate::new(peer, self.max_keys);
        self.ip_rate = ModelRate::new(ip, self.max_keys);
    }

    /// What the limiter of `key` answers now, without taking a token.
    fn decide(&self, key: Key) -> RateDecision {
        match key {
            Key::Peer(p) => self.peer_rate.decide(self.now, &p),
            Key::Ip(i) => self.ip_rate.decide(self.now, &group_of(i)),
        }
    }

    /// The reason a refusal of `key` with `decision` is counted under.
    fn reason(&self, key: Key, decision: RateDecision) -> RefusalReason {
        match (decision, key, self.circuits) {
            (RateDecision::TableFull, ..) => RefusalReason::RateTableFull,
            (_, Key::Peer(_), false) => RefusalReason::ReservationRatePerPeer,
            (_, Key::Ip(_), false) => RefusalReason::ReservationRatePerIp,
            (_, Key::Peer(_), true) => RefusalReason::CircuitRatePerPeer,
            (_, Key::Ip(_), true) => RefusalReason::CircuitRatePerIp,
        }
    }
}

/// The operations.
#[derive(Debug, Clone, Copy)]
enum Transition {
    /// Call one setter.
    Set(Setting),
    /// Rebuild both limiters from the (valid) configuration: its circuit rates or its
    /// reservation rates, and its key bound.
    UseRates { circuits: bool },
    /// `check`, counting a refusal in the counters as the tables do.
    Check(Key),
    /// `peek`: the answer `check` would give, changing nothing.
    Peek(Key),
    /// `evict_full` on both limiters.
    Evict,
    /// Count a refusal for any reason.
    Record(RefusalReason),
    /// Let virtual time pass.
    Advance(Duration),
}

/// Values for every setter, mostly usable, some that `validate` must refuse.
fn setting() -> impl Strategy<Value = Setting> {
    let secs = |s: u64| Duration::from_secs(s);
    let rate = prop_oneof![
        4 => limited_rate(Duration::from_secs(20)),
        1 => Just(RateLimit::unlimited()),
        1 => (1..=3u32).prop_map(|b| RateLimit::new(b, MAX_RATE_PERIOD)),
        1 => (0..=3u32).prop_map(|b| RateLimit::new(b, MAX_RATE_PERIOD + Duration::from_nanos(1))),
        1 => (1..=3u32).prop_map(|b| RateLimit::new(b, Duration::ZERO)),
    ];
    let kind = proptest::sample::select(RateKind::ALL.to_vec());
    prop_oneof![
        1 => prop_oneof![0..=4u32, any::<u32>()].prop_map(Setting::MaxReservations),
        1 => prop_oneof![3 => Just(1), 1 => 0..=3u32].prop_map(Setting::MaxReservationsPerPeer),
        1 => (0..=10u32).prop_map(Setting::MaxReservationsPerIp),
        1 => prop_oneof![
            4 => (1..=7_200u64).prop_map(secs),
            1 => (0..=1_500u64).prop_map(Duration::from_millis),
            1 => (0..=1u64).prop_map(|early| Duration::from_secs(1) - Duration::from_nanos(early)),
        ]
        .prop_map(Setting::ReservationTtl),
        1 => prop_oneof![0..=4u32, any::<u32>()].prop_map(Setting::MaxCircuits),
        1 => (0..=20u32).prop_map(Setting::MaxCircuitsPerPeer),
        1 => prop_oneof![
            Just(Duration::ZERO),
            (1..=4_000u64).prop_map(Duration::from_millis),
            (0..=1u64, 0..1_000_000_000u32)
                .prop_map(|(s, n)| Duration::new(u64::from(u32::MAX) + s, n)),
        ]
        .prop_map(Setting::MaxCircuitDuration),
        1 => prop_oneof![Just(0), 1..=1_000u64, any::<u64>()].prop_map(Setting::MaxCircuitBytes),
        3 => (kind, rate).prop_map(|(k, r)| Setting::Rate(k, r)),
        1 => prop_oneof![4 => 1..=4u32, 1 => Just(0)].prop_map(Setting::RateLimiterMaxKeys),
        1 => prop_oneof![
            4 => (1..=20_000u64).prop_map(Duration::from_millis),
            1 => Just(Duration::ZERO),
        ]
        .prop_map(Setting::RequestTimeout),
        // Small values as often as large ones, so that the two watermarks often meet.
        1 => prop_oneof![0..=3u32, 0..=300u32].prop_map(Setting::LowWatermark),
        1 => prop_oneof![0..=3u32, 0..=300u32].prop_map(Setting::HighWatermark),
    ]
}

/// A setting that makes field `key` usable again (a small value where the default would never
/// limit anything in a short test).
fn repair(key: &str) -> Setting {
    let small_rate = RateLimit::new(2, Duration::from_secs(5));
    match key {
        "max_reservations_per_peer" => Setting::MaxReservationsPerPeer(1),
        "reservation_ttl" => Setting::ReservationTtl(Duration::from_secs(3600)),
        "max_circuit_duration" => Setting::MaxCircuitDuration(Duration::from_secs(1800)),
        "rate_limiter_max_keys" => Setting::RateLimiterMaxKeys(2),
        "request_timeout" => Setting::RequestTimeout(Duration::from_secs(10)),
        "connection_low_watermark" => Setting::LowWatermark(0),
        rate => {
            let kind = RateKind::ALL
                .into_iter()
                .find(|k| k.key() == rate)
                .expect("every key is a field");
            Setting::Rate(kind, small_rate)
        }
    }
}

/// The reference state machine of the limits.
struct LimitsMachine;

impl ReferenceStateMachine for LimitsMachine {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        // The defaults, then small rates and key bound so that the limiters limit something.
        (
            proptest::array::uniform4(rate_limit(3, Duration::from_secs(20))),
            1..=4u32,
            any::<bool>(),
        )
            .prop_map(|(rates, max_keys, circuits)| {
                let mut fields = Fields::design_defaults();
                for (kind, rate) in RateKind::ALL.into_iter().zip(rates) {
                    fields.set(&Setting::Rate(kind, rate));
                }
                fields.set(&Setting::RateLimiterMaxKeys(max_keys));
                let keys = max_keys as usize;
                let mut model = Model {
                    peer_rate: ModelRate::new(RateLimit::unlimited(), keys),
                    ip_rate: ModelRate::new(RateLimit::unlimited(), keys),
                    fields,
                    now: Duration::ZERO,
                    circuits,
                    max_keys: keys,
                    refusals: Vec::new(),
                    answer: Answer::Nothing,
                };
                model.use_rates(circuits);
                model
            })
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Transition> {
        let key = prop_oneof![
            (0..PEERS).prop_map(Key::Peer),
            (0..IPS.len()).prop_map(Key::Ip),
        ];
        let mut milestones = state.peer_rate.milestones(state.now);
        milestones.extend(state.ip_rate.milestones(state.now));
        let mut options: Vec<(u32, BoxedStrategy<Transition>)> = vec![
            (4, setting().prop_map(Transition::Set).boxed()),
            (6, key.clone().prop_map(Transition::Check).boxed()),
            (2, key.prop_map(Transition::Peek).boxed()),
            (1, Just(Transition::Evict).boxed()),
            (
                1,
                proptest::sample::select(RefusalReason::ALL.to_vec())
                    .prop_map(Transition::Record)
                    .boxed(),
            ),
            (
                3,
                advance(state.now, milestones, Duration::from_millis(1_500))
                    .prop_map(Transition::Advance)
                    .boxed(),
            ),
        ];
        if let Some(key) = state.fields.first_invalid() {
            options.push((3, Just(Transition::Set(repair(key))).boxed()));
        } else {
            options.push((
                2,
                any::<bool>()
                    .prop_map(|circuits| Transition::UseRates { circuits })
                    .boxed(),
            ));
        }
        proptest::strategy::Union::new_weighted(options).boxed()
    }

    fn preconditions(state: &Model, transition: &Transition) -> bool {
        match transition {
            Transition::UseRates { .. } => state.fields.first_invalid().is_none(),
            _ => true,
        }
    }

    fn apply(mut state: Model, transition: &Transition) -> Model {
        state.answer = Answer::Nothing;
        match *transition {
            Transition::Set(ref s) => state.fields.set(s),
            Transition::UseRates { circuits } => state.use_rates(circuits),
            Transition::Check(key) => {
                let decision = state.decide(key);
                if decision == RateDecision::Allowed {
                    match key {
                        Key::Peer(p) => state.peer_rate.charge(state.now, p),
                        Key::Ip(i) => state.ip_rate.charge(state.now, group_of(i)),
                    }
                } else {
                    let reason = state.reason(key, decision);
                    state.refusals.push(reason);
                }
                state.answer = Answer::Decision(decision);
            }
            Transition::Peek(key) => state.answer = Answer::Decision(state.decide(key)),
            Transition::Evict => {}
            Transition::Record(reason) => state.refusals.push(reason),
            Transition::Advance(by) => state.now += by,
        }
        state
    }
}

/// The limits, limiters and counters under test, their epoch, and the requests the limiters
/// let through since they were built.
struct Sut {
    /// Virtual time.
    clock: Clock,
    /// The configuration under test.
    limits: RelayLimits,
    /// The per-peer limiter under test.
    peers: RateLimiter<PeerId>,
    /// The per-IP limiter under test.
    ips: RateLimiter<IpGroup>,
    /// The refusal counters under test.
    counters: RejectionCounters,
    /// Checks the per-peer limiter let through, by peer index.
    peer_audit: RateAudit<usize>,
    /// Checks the per-IP limiter let through, by group label.
    ip_audit: RateAudit<usize>,
}

impl Sut {
    /// Call the setter of `setting`.
    fn set(&mut self, setting: Setting) {
        let l = self.limits.clone();
        self.limits = match setting {
            Setting::MaxReservations(n) => l.max_reservations(n),
            Setting::MaxReservationsPerPeer(n) => l.max_reservations_per_peer(n),
            Setting::MaxReservationsPerIp(n) => l.max_reservations_per_ip(n),
            Setting::ReservationTtl(d) => l.reservation_ttl(d),
            Setting::MaxCircuits(n) => l.max_circuits(n),
            Setting::MaxCircuitsPerPeer(n) => l.max_circuits_per_peer(n),
            Setting::MaxCircuitDuration(d) => l.max_circuit_duration(d),
            Setting::MaxCircuitBytes(n) => l.max_circuit_bytes(n),
            Setting::Rate(RateKind::ReservationPerPeer, r) => l.reservation_rate_per_peer(r),
            Setting::Rate(RateKind::ReservationPerIp, r) => l.reservation_rate_per_ip(r),
            Setting::Rate(RateKind::CircuitPerPeer, r) => l.circuit_rate_per_peer(r),
            Setting::Rate(RateKind::CircuitPerIp, r) => l.circuit_rate_per_ip(r),
            Setting::RateLimiterMaxKeys(n) => l.rate_limiter_max_keys(n),
            Setting::RequestTimeout(d) => l.request_timeout(d),
            Setting::LowWatermark(n) => l.connection_low_watermark(n),
            Setting::HighWatermark(n) => l.connection_high_watermark(n),
        };
    }

    /// Rebuild both limiters from the circuit or the reservation rates of the limits, with
    /// their key bound, and start auditing them afresh.
    fn use_rates(&mut self, circuits: bool) {
        let l = &self.limits;
        let (peer_rate, ip_rate) = if circuits {
            (l.circuit_rate_per_peer, l.circuit_rate_per_ip)
        } else {
            (l.reservation_rate_per_peer, l.reservation_rate_per_ip)
        };
        let keys = l.rate_limiter_max_keys as usize;
        self.peers = RateLimiter::new(peer_rate, keys);
        self.ips = RateLimiter::new(ip_rate, keys);
        self.peer_audit = RateAudit::new();
        self.ip_audit = RateAudit::new();
    }
}

/// The test of the limits against [`LimitsMachine`].
struct LimitsTest;

impl StateMachineTest for LimitsTest {
    type SystemUnderTest = Sut;
    type Reference = LimitsMachine;

    fn init_test(model: &Model) -> Sut {
        // The IP groups: two addresses share a group exactly when their labels say so.
        for (a, (name_a, label_a)) in IPS.iter().enumerate() {
            for (b, (name_b, label_b)) in IPS.iter().enumerate() {
                let same = IpGroup::of(ip(a)) == IpGroup::of(ip(b));
                assert_eq!(same, label_a == label_b, "{name_a} vs {name_b}");
            }
            assert_eq!(IpGroup::from(ip(a)), IpGroup::of(ip(a)));
        }
        // The defaults are DESIGN's; then the model's initial rates and key bound.
        let limits = RelayLimits::default();
        assert_eq!(Fields::of(&limits), Fields::design_defaults());
        let mut sut = Sut {
            clock: Clock::new(),
            // Replaced by `use_rates` below.
            peers: RateLimiter::new(RateLimit::unlimited(), 1),
            ips: RateLimiter::new(RateLimit::unlimited(), 1),
            limits,
            counters: RejectionCounters::default(),
            peer_audit: RateAudit::new(),
            ip_audit: RateAudit::new(),
        };
        for (kind, rate) in RateKind::ALL.into_iter().zip(model.fields.rates) {
            sut.set(Setting::Rate(kind, rate));
        }
        sut.set(Setting::RateLimiterMaxKeys(
            model.fields.rate_limiter_max_keys,
        ));
        sut.use_rates(model.circuits);
        sut
    }

    fn apply(mut sut: Sut, model: &Model, transition: Transition) -> Sut {
        let now = model.now;
        let t = sut.clock.at(now);
        let got = match transition {
            Transition::Set(setting) => {
                sut.set(setting);
                Answer::Nothing
            }
            Transition::UseRates { circuits } => {
                sut.use_rates(circuits);
                Answer::Nothing
            }
            Transition::Check(key) => {
                let decision = match key {
                    Key::Peer(p) => sut.peers.check(t, &peer(p)),
                    Key::Ip(i) => sut.ips.check(t, &IpGroup::of(ip(i))),
                };
                if decision.is_allowed() {
                    match key {
                        Key::Peer(p) => sut.peer_audit.record(p, now),
                        Key::Ip(i) => sut.ip_audit.record(group_of(i), now),
                    }
                } else {
                    sut.counters.record(model.reason(key, decision));
                }
                Answer::Decision(decision)
            }
            Transition::Peek(key) => {
                let (peers, ips) = (sut.peers.len(), sut.ips.len());
                let decision = match key {
                    Key::Peer(p) => sut.peers.peek(t, &peer(p)),
                    Key::Ip(i) => sut.ips.peek(t, &IpGroup::of(ip(i))),
                };
                assert_eq!(
                    (sut.peers.len(), sut.ips.len()),
                    (peers, ips),
                    "peek changed keys"
                );
                Answer::Decision(decision)
            }
            Transition::Evict => {
                sut.peers.evict_full(t);
                sut.ips.evict_full(t);
                // Eviction leaves exactly the buckets that are still refilling.
                assert_eq!(sut.peers.len(), model.peer_rate.tracked(now));
                assert_eq!(sut.ips.len(), model.ip_rate.tracked(now));
                Answer::Nothing
            }
            Transition::Record(reason) => {
                sut.counters.record(reason);
                Answer::Nothing
            }
            Transition::Advance(_) => Answer::Nothing,
        };
        assert_eq!(got, model.answer, "answer to {transition:?}");
        sut
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        let l = &sut.limits;
        let f = &model.fields;
        let now = model.now;

        // Every setter set its own field and nothing else; validation names the first bad key.
        assert_eq!(Fields::of(l), *f);
        match (l.validate(), f.first_invalid()) {
            (Ok(()), None) => {}
            (Err(e), Some(key)) => {
                assert_eq!(e.key, key);
                assert!(e.to_string().contains(&format!("`{key}`")), "{e}");
            }
            (got, want) => panic!("validate: {got:?}, model: {want:?} for {f:?}"),
        }
        // The limits derived from the fields (0 = unlimited).
        let duration = f.max_circuit_duration;
        assert_eq!(
            l.circuit_duration_limit(),
            (duration != Duration::ZERO).then_some(duration)
        );
        let bytes = f.max_circuit_bytes;
        assert_eq!(l.circuit_bytes_limit(), (bytes != 0).then_some(bytes));
        assert_eq!(l.circuit_limit(), f.circuit_limit());
        assert_eq!(
            l.connection_watermarks(),
            (f.low_watermark, f.high_watermark)
        );

        // The limiters: tracked keys within the bound, refill instants, rates kept.
        let keys = model.max_keys;
        for (len, empty, tracked) in [
            (
                sut.peers.len(),
                sut.peers.is_empty(),
                model.peer_rate.tracked(now),
            ),
            (
                sut.ips.len(),
                sut.ips.is_empty(),
                model.ip_rate.tracked(now),
            ),
        ] {
            assert!(tracked <= len && len <= keys, "{tracked} <= {len}");
            assert_eq!(empty, len == 0);
        }
        let t = sut.clock.at(now);
        let after_now = |at: Option<Instant>| at.filter(|&a| a > t).map(|a| sut.clock.since(a));
        assert_eq!(
            after_now(sut.peers.all_full_at()),
            model.peer_rate.all_full_at(now)
        );
        assert_eq!(
            after_now(sut.ips.all_full_at()),
            model.ip_rate.all_full_at(now)
        );
        sut.peer_audit.assert_within(model.peer_rate.limit());
        sut.ip_audit.assert_within(model.ip_rate.limit());

        assert_counters(&sut.counters, &model.refusals);
    }
}

prop_state_machine! {
    #![proptest_config(config(256))]

    /// Any sequence of setter calls, limiter rebuilds, checks, peeks, evictions, refusals and
    /// time steps gets the model's answers: validation, derived limits, rate decisions (with
    /// their exact `retry_after`) and counters.
    #[test]
    fn limits_agree_with_model_under_any_operation_sequence(
        sequential 1..64 => LimitsTest
    );
}
